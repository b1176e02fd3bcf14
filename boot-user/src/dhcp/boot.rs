//! What a client boots: the boot target per client kind, the per-host `firmware`
//! override, and the [`BootUrls`] the HTTP service supplies (pure).
//!
//! # Firmware override (`host.firmware`, Grendel's build names)
//! | `firmware` | file of the TFTP root (the bundle of xboot's package and image, or Debian's `/usr/lib/ipxe`) | used for |
//! | --- | --- | --- |
//! | `undionly.kpxe` | `undionly.kpxe` | BIOS PXE |
//! | `ipxe.pxe` | `ipxe.pxe` | BIOS PXE |
//! | `snponly-x86_64.efi` | `snponly.efi` | UEFI x86-64 (PXE and HTTP boot) |
//! | `ipxe-x86_64.efi`, `ipxe-amd64.efi`, `ipxe.efi` | `ipxe.efi` | UEFI x86-64 |
//! | `snponly.efi` | `snponly.efi` | UEFI x86-64 |
//! | `ipxe-i386.efi` | `ipxe-i386.efi` (not in Debian's package) | UEFI IA32 (arch 6; the default for IA32 clients) |
//! | `snponly-arm64.efi`, `ipxe-arm64.efi`, `ipxe-aarch64.efi` | `ipxe-arm64.efi` | UEFI ARM64 (Debian builds no SNP-only arm64 iPXE; its full build drives a NIC it has no driver for through the firmware's SNP) |
//! | any other `*.efi` naming `arm64` / `aarch64` | unchanged | UEFI ARM64 |
//! | any other `*.efi` | unchanged | any UEFI client |
//! | any other `*.kpxe`, `*.pxe`, `*.0` | unchanged | BIOS PXE |
//! | anything else | unchanged | every PXE client |
//!
//! An override applies only to clients of the platform it is built for: a host whose
//! `firmware` is `snponly-x86_64.efi` still gets `undionly.kpxe` when it PXE-boots in
//! legacy BIOS mode (Grendel likewise ignores the override for BIOS clients). iPXE clients
//! always get their script, OS clients a lease.
use std::net::Ipv4Addr;

use super::request::ClientKind;
use crate::inventory::{Host, Mac};

/// The URLs the HTTP service hands out. The HTTP module implements it (signed tokens);
/// DHCP only asks. `server` is the address of the interface the request came in on, for
/// URLs that are not configured with an explicit `provision.advertise_url`.
pub trait BootUrls {
    /// URL of `host`'s iPXE script, for the boot NIC `mac`.
    fn ipxe_script(&self, host: &Host, mac: Mac, server: Ipv4Addr) -> String;
    /// HTTP URL of a firmware file (UEFI HTTP boot), `file` being a name of the firmware
    /// directory such as `ipxe.efi`.
    fn http_firmware(&self, file: &str, server: Ipv4Addr) -> String;
    /// The HTTP base URL (`http://10.0.0.1`) for clients that reached us at `server`.
    fn base_url(&self, server: Ipv4Addr) -> String;
    /// A boot token of `host` booting from `mac` (the `{token}` of `/boot/{token}/...`).
    fn token(&self, host: &Host, mac: Mac) -> String;
}

/// Unsigned URLs on a fixed port (`http://SERVER:PORT/...`): for tests, templates and tools
/// that run without the HTTP service. Paths follow the HTTP module's routes only loosely.
#[derive(Clone, Debug)]
pub struct PlainUrls {
    pub port: u16,
}

impl BootUrls for PlainUrls {
    fn ipxe_script(&self, host: &Host, mac: Mac, server: Ipv4Addr) -> String {
        let mac = mac.to_string().replace(':', "-");
        format!(
            "http://{server}:{}/boot/{}/ipxe?mac={mac}",
            self.port, host.name
        )
    }
    fn http_firmware(&self, file: &str, server: Ipv4Addr) -> String {
        format!("http://{server}:{}/firmware/{file}", self.port)
    }
    fn base_url(&self, server: Ipv4Addr) -> String {
        format!("http://{server}:{}", self.port)
    }
    /// The host's name (plain URLs carry no signature).
    fn token(&self, host: &Host, _mac: Mac) -> String {
        host.name.clone()
    }
}

/// Default firmware file per platform (names in the TFTP root / firmware directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFiles {
    pub bios: String,
    pub uefi_x64: String,
    pub uefi_arm64: String,
    pub uefi_ia32: String,
}

impl Default for BootFiles {
    fn default() -> Self {
        BootFiles {
            bios: "undionly.kpxe".into(),
            // snponly.efi drives the NIC through the firmware's own SNP driver (what the
            // deployment guide's `snponly-x86_64.efi` is); Debian 12's ipxe.efi is a
            // symlink out of /usr/lib/ipxe, which the TFTP root refuses to follow.
            uefi_x64: "snponly.efi".into(),
            uefi_arm64: "ipxe-arm64.efi".into(),
            // Grendel's name for its IA32 build (arch 6).
            uefi_ia32: "ipxe-i386.efi".into(),
        }
    }
}

/// Platform a firmware file is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Bios,
    UefiX64,
    UefiArm64,
    UefiIa32,
    /// An EFI binary of unknown architecture.
    AnyUefi,
    Any,
}

impl Platform {
    fn fits(self, client: Platform) -> bool {
        self == client
            || self == Platform::Any
            || (self == Platform::AnyUefi && client != Platform::Bios)
    }
}

/// The override table of the module docs: TFTP file name and platform of a `firmware` value.
pub fn firmware_file(name: &str) -> (String, Platform) {
    let name = name.trim();
    let (file, platform) = match name {
        "undionly.kpxe" | "ipxe.pxe" => (name, Platform::Bios),
        "snponly-x86_64.efi" | "snponly.efi" => ("snponly.efi", Platform::UefiX64),
        "ipxe-x86_64.efi" | "ipxe-amd64.efi" | "ipxe.efi" => ("ipxe.efi", Platform::UefiX64),
        "snponly-arm64.efi" | "ipxe-arm64.efi" | "ipxe-aarch64.efi" => {
            ("ipxe-arm64.efi", Platform::UefiArm64)
        }
        "ipxe-i386.efi" => (name, Platform::UefiIa32),
        n if n.ends_with(".efi") && (n.contains("arm64") || n.contains("aarch64")) => {
            (n, Platform::UefiArm64)
        }
        n if n.ends_with(".efi") => (n, Platform::AnyUefi),
        n if n.ends_with(".kpxe") || n.ends_with(".pxe") || n.ends_with(".0") => {
            (n, Platform::Bios)
        }
        n => (n, Platform::Any),
    };
    (file.to_string(), platform)
}

/// What the reply tells the client to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootTarget {
    /// Nothing: an address only (OS clients, `provision = false`, unsupported firmware).
    LeaseOnly,
    /// A firmware file over TFTP from this server.
    Tftp { file: String },
    /// UEFI HTTP boot: an EFI binary by URL (the reply echoes option 60 `HTTPClient`).
    HttpFirmware { url: String },
    /// iPXE: the host's script by URL.
    Script { url: String },
}

impl BootTarget {
    /// The file name or URL, if any (for logs and events).
    pub fn name(&self) -> Option<&str> {
        match self {
            BootTarget::LeaseOnly => None,
            BootTarget::Tftp { file } => Some(file),
            BootTarget::HttpFirmware { url } | BootTarget::Script { url } => Some(url),
        }
    }
}

/// The boot target of `host` for a client of `kind`.
pub fn boot_target(
    kind: ClientKind,
    host: &Host,
    mac: Mac,
    files: &BootFiles,
    urls: &dyn BootUrls,
    server: Ipv4Addr,
) -> BootTarget {
    if !host.provision {
        return BootTarget::LeaseOnly;
    }
    let pick = |default: &str, platform: Platform| -> String {
        if host.firmware.trim().is_empty() {
            return default.to_string();
        }
        match firmware_file(&host.firmware) {
            (file, p) if p.fits(platform) => file,
            _ => default.to_string(),
        }
    };
    match kind {
        ClientKind::Os | ClientKind::Unsupported(_) => BootTarget::LeaseOnly,
        ClientKind::Ipxe => BootTarget::Script {
            url: urls.ipxe_script(host, mac, server),
        },
        ClientKind::BiosPxe => BootTarget::Tftp {
            file: pick(&files.bios, Platform::Bios),
        },
        ClientKind::UefiX64 => BootTarget::Tftp {
            file: pick(&files.uefi_x64, Platform::UefiX64),
        },
        ClientKind::UefiArm64 => BootTarget::Tftp {
            file: pick(&files.uefi_arm64, Platform::UefiArm64),
        },
        ClientKind::UefiIa32 => BootTarget::Tftp {
            file: pick(&files.uefi_ia32, Platform::UefiIa32),
        },
        ClientKind::HttpX64 => BootTarget::HttpFirmware {
            url: urls.http_firmware(&pick(&files.uefi_x64, Platform::UefiX64), server),
        },
        ClientKind::HttpArm64 => BootTarget::HttpFirmware {
            url: urls.http_firmware(&pick(&files.uefi_arm64, Platform::UefiArm64), server),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn target(kind: ClientKind, firmware: &str, provision: bool) -> BootTarget {
        let host = Host {
            name: "cn1".into(),
            provision,
            firmware: firmware.into(),
            ..Default::default()
        };
        boot_target(
            kind,
            &host,
            Mac([2, 0, 0, 0, 0, 1]),
            &BootFiles::default(),
            &PlainUrls { port: 80 },
            SERVER,
        )
    }

    fn tftp(f: &str) -> BootTarget {
        BootTarget::Tftp { file: f.into() }
    }

    /// Kind x override -> target, row by row.
    #[test]
    fn boot_target_rows() {
        let http = |f: &str| BootTarget::HttpFirmware {
            url: format!("http://10.0.0.1:80/firmware/{f}"),
        };
        let script = BootTarget::Script {
            url: "http://10.0.0.1:80/boot/cn1/ipxe?mac=02-00-00-00-00-01".into(),
        };
        let rows = [
            (ClientKind::BiosPxe, "", true, tftp("undionly.kpxe")),
            (ClientKind::UefiX64, "", true, tftp("snponly.efi")),
            (ClientKind::UefiArm64, "", true, tftp("ipxe-arm64.efi")),
            (ClientKind::Ipxe, "", true, script.clone()),
            (ClientKind::HttpX64, "", true, http("snponly.efi")),
            (ClientKind::HttpArm64, "", true, http("ipxe-arm64.efi")),
            (ClientKind::Os, "", true, BootTarget::LeaseOnly),
            (ClientKind::UefiIa32, "", true, tftp("ipxe-i386.efi")),
            (ClientKind::Unsupported(2), "", true, BootTarget::LeaseOnly),
            (ClientKind::UefiIa32, "", false, BootTarget::LeaseOnly),
            // IA32 takes IA32 and unknown-arch EFI overrides, no x86-64 or BIOS one.
            (
                ClientKind::UefiIa32,
                "ipxe-i386.efi",
                true,
                tftp("ipxe-i386.efi"),
            ),
            (ClientKind::UefiIa32, "custom.efi", true, tftp("custom.efi")),
            (
                ClientKind::UefiIa32,
                "snponly-x86_64.efi",
                true,
                tftp("ipxe-i386.efi"),
            ),
            (
                ClientKind::UefiIa32,
                "undionly.kpxe",
                true,
                tftp("ipxe-i386.efi"),
            ),
            // provision = false: lease only, whatever the client.
            (ClientKind::BiosPxe, "", false, BootTarget::LeaseOnly),
            (ClientKind::Ipxe, "", false, BootTarget::LeaseOnly),
            (ClientKind::HttpX64, "", false, BootTarget::LeaseOnly),
            // Overrides, applied by platform.
            (
                ClientKind::UefiX64,
                "snponly-x86_64.efi",
                true,
                tftp("snponly.efi"),
            ),
            (
                ClientKind::HttpX64,
                "snponly-x86_64.efi",
                true,
                http("snponly.efi"),
            ),
            (
                ClientKind::BiosPxe,
                "snponly-x86_64.efi",
                true,
                tftp("undionly.kpxe"),
            ),
            (ClientKind::BiosPxe, "ipxe.pxe", true, tftp("ipxe.pxe")),
            (
                ClientKind::UefiX64,
                "undionly.kpxe",
                true,
                tftp("snponly.efi"),
            ),
            (
                ClientKind::UefiX64,
                "ipxe-x86_64.efi",
                true,
                tftp("ipxe.efi"),
            ),
            (
                ClientKind::UefiArm64,
                "snponly-x86_64.efi",
                true,
                tftp("ipxe-arm64.efi"),
            ),
            // Grendel's arm64 name: the bundle's (Debian's) full arm64 build.
            (
                ClientKind::UefiArm64,
                "snponly-arm64.efi",
                true,
                tftp("ipxe-arm64.efi"),
            ),
            (
                ClientKind::UefiArm64,
                "ipxe-aarch64.efi",
                true,
                tftp("ipxe-arm64.efi"),
            ),
            (
                ClientKind::UefiArm64,
                "other-arm64.efi",
                true,
                tftp("other-arm64.efi"),
            ),
            (
                ClientKind::UefiX64,
                "ipxe-amd64.efi",
                true,
                tftp("ipxe.efi"),
            ),
            (ClientKind::UefiX64, "custom.efi", true, tftp("custom.efi")),
            (
                ClientKind::UefiArm64,
                "custom.efi",
                true,
                tftp("custom.efi"),
            ),
            (
                ClientKind::BiosPxe,
                "custom.efi",
                true,
                tftp("undionly.kpxe"),
            ),
            (
                ClientKind::UefiX64,
                "ipxe-i386.efi",
                true,
                tftp("snponly.efi"),
            ),
            (ClientKind::Ipxe, "snponly-x86_64.efi", true, script),
        ];
        for (kind, fw, provision, want) in rows {
            assert_eq!(
                target(kind, fw, provision),
                want,
                "{kind} firmware={fw:?} provision={provision}"
            );
        }
    }
}
