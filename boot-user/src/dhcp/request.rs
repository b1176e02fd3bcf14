//! What a DHCP request asks for: the fields the reply builder reads, and the kind of
//! client that sent it (pure, no I/O).
//!
//! # Client kinds (first matching row wins)
//! | test | kind | boots |
//! | --- | --- | --- |
//! | option 77 user class holds `iPXE` (raw, as iPXE sends it, or RFC 3004 length-prefixed), or option 175 present | [`ClientKind::Ipxe`] | the host's iPXE script (HTTP URL) |
//! | option 60 starts with `HTTPClient` (UEFI HTTP boot); arch 11 / 19 | [`ClientKind::HttpArm64`] | ARM64 EFI iPXE over HTTP |
//! | option 60 starts with `HTTPClient`, any other arch | [`ClientKind::HttpX64`] | x86-64 EFI iPXE over HTTP |
//! | arch 16 or 15 (x86 UEFI HTTP) / 19 (ARM64 UEFI HTTP) without the vendor class | `HttpX64` / `HttpArm64` | as above |
//! | arch 0 (option 93, else the `Arch:NNNNN` of a `PXEClient` vendor class) | [`ClientKind::BiosPxe`] | `undionly.kpxe` over TFTP |
//! | arch 7 or 9 | [`ClientKind::UefiX64`] | `ipxe.efi` over TFTP |
//! | arch 11 | [`ClientKind::UefiArm64`] | the ARM64 EFI binary over TFTP |
//! | arch 6 | [`ClientKind::UefiIa32`] | the IA32 EFI binary (`ipxe-i386.efi`) over TFTP |
//! | any other arch | [`ClientKind::Unsupported`] | lease only |
//! | option 60 `PXEClient` without any arch | `BiosPxe` | (pre-RFC 4578 PXE ROMs) |
//! | nothing of the above | [`ClientKind::Os`] | lease only |
use std::net::Ipv4Addr;

use dhcproto::v4::relay::RelayAgentInformation;
use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};

use crate::inventory::Mac;

/// The kind of DHCP client, which decides the boot file. See the module table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// An operating system's DHCP client (udhcpc, dhclient, ...): lease only.
    Os,
    /// PXE firmware on legacy BIOS (arch 0).
    BiosPxe,
    /// UEFI PXE firmware on x86-64 (arch 7, 9).
    UefiX64,
    /// UEFI PXE firmware on ARM64 (arch 11).
    UefiArm64,
    /// UEFI PXE firmware on 32-bit x86 (arch 6).
    UefiIa32,
    /// iPXE itself, any platform.
    Ipxe,
    /// UEFI HTTP boot on x86 (vendor class `HTTPClient`, arch 15/16).
    HttpX64,
    /// UEFI HTTP boot on ARM64 (vendor class `HTTPClient`, arch 19).
    HttpArm64,
    /// PXE firmware of an architecture xboot has no binary for: lease only.
    Unsupported(u16),
}

impl ClientKind {
    /// The kinds that get distinct replies (one XDP template each; `Unsupported` answers
    /// like `Os`).
    pub const TEMPLATES: [ClientKind; 8] = [
        ClientKind::Os,
        ClientKind::BiosPxe,
        ClientKind::UefiX64,
        ClientKind::UefiArm64,
        ClientKind::Ipxe,
        ClientKind::HttpX64,
        ClientKind::HttpArm64,
        ClientKind::UefiIa32,
    ];

    /// True for network-boot firmware and iPXE (what a proxyDHCP or boot server answers).
    pub fn is_netboot(self) -> bool {
        !matches!(self, ClientKind::Os | ClientKind::Unsupported(_))
    }

    /// True for UEFI HTTP boot clients (their reply echoes option 60 `HTTPClient`).
    pub fn is_http_boot(self) -> bool {
        matches!(self, ClientKind::HttpX64 | ClientKind::HttpArm64)
    }
}

impl std::fmt::Display for ClientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKind::Os => write!(f, "os"),
            ClientKind::BiosPxe => write!(f, "bios-pxe"),
            ClientKind::UefiX64 => write!(f, "uefi-x64"),
            ClientKind::UefiArm64 => write!(f, "uefi-arm64"),
            ClientKind::UefiIa32 => write!(f, "uefi-ia32"),
            ClientKind::Ipxe => write!(f, "ipxe"),
            ClientKind::HttpX64 => write!(f, "http-x64"),
            ClientKind::HttpArm64 => write!(f, "http-arm64"),
            ClientKind::Unsupported(a) => write!(f, "arch-{a}"),
        }
    }
}

/// The fields of a request that decide the reply. Plain data: the XDP template compiler
/// builds synthetic ones with [`Request::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Option 53; `None` for a plain BOOTP request (not answered).
    pub msg_type: Option<MessageType>,
    /// False when the op field says BOOTREPLY (another server's answer seen on the wire).
    pub is_request: bool,
    /// True for Ethernet (htype 1, hlen 6): the only hardware xboot serves.
    pub ethernet: bool,
    pub mac: Mac,
    pub xid: u32,
    /// The flags field as sent (bit 15: broadcast).
    pub flags: u16,
    pub hops: u8,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// First entry of option 93, or the arch of a `PXEClient:Arch:NNNNN` vendor class.
    pub arch: Option<u16>,
    /// Option 60, raw.
    pub vendor_class: Option<Vec<u8>>,
    /// Option 77, raw.
    pub user_class: Option<Vec<u8>>,
    /// Option 97 (client machine UUID), echoed in replies.
    pub machine_id: Option<Vec<u8>>,
    /// Option 57.
    pub max_message_size: Option<u16>,
    /// Option 43 sub-option 71 (PXE boot item) of a boot-server request, echoed in the ACK.
    pub pxe_boot_item: Option<Vec<u8>>,
    /// Option 12, for the discovered-machines table.
    pub hostname: Option<String>,
    /// Option 82 (RFC 3046) as a relay agent added it: echoed in every reply.
    pub relay_info: Option<RelayAgentInformation>,
    pub kind: ClientKind,
}

/// Bit 15 of the flags field.
pub const BROADCAST_FLAG: u16 = 0x8000;

impl Request {
    /// A request with only the given fields set (the rest empty): for templates and tests.
    pub fn new(msg_type: MessageType, mac: Mac, kind: ClientKind) -> Request {
        Request {
            msg_type: Some(msg_type),
            is_request: true,
            ethernet: true,
            mac,
            xid: 0,
            flags: 0,
            hops: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            requested_ip: None,
            server_id: None,
            arch: None,
            vendor_class: None,
            user_class: None,
            machine_id: None,
            max_message_size: None,
            pxe_boot_item: None,
            hostname: None,
            relay_info: None,
            kind,
        }
    }

    /// Reads the fields of a parsed message (see [`super::wire::parse`]) and classifies it.
    pub fn from_message(m: &Message) -> Request {
        let opts = m.opts();
        let raw = |code: OptionCode| match opts.get(code) {
            Some(DhcpOption::Unknown(u)) => Some(u.data().to_vec()),
            _ => None,
        };
        let chaddr = m.chaddr();
        let mut mac = [0u8; 6];
        let ethernet = m.htype() == HType::Eth && chaddr.len() == 6;
        if ethernet {
            mac.copy_from_slice(chaddr);
        }
        let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(v)) => Some(v.clone()),
            _ => None,
        };
        let user_class = match opts.get(OptionCode::UserClass) {
            Some(DhcpOption::UserClass(v)) => Some(v.clone()),
            _ => None,
        };
        let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
            _ => vendor_class.as_deref().and_then(arch_from_vendor_class),
        };
        let has_ipxe_opts = opts.get(OptionCode::Unknown(175)).is_some();
        let kind = classify(
            arch,
            vendor_class.as_deref(),
            user_class.as_deref(),
            has_ipxe_opts,
        );
        Request {
            msg_type: opts.msg_type(),
            is_request: m.opcode() == Opcode::BootRequest,
            ethernet,
            mac: Mac(mac),
            xid: m.xid(),
            flags: u16::from(m.flags()),
            hops: m.hops(),
            ciaddr: m.ciaddr(),
            giaddr: m.giaddr(),
            requested_ip: match opts.get(OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
                _ => None,
            },
            server_id: match opts.get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
                _ => None,
            },
            arch,
            vendor_class,
            user_class,
            machine_id: match opts.get(OptionCode::ClientMachineIdentifier) {
                Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
                _ => raw(OptionCode::ClientMachineIdentifier),
            },
            max_message_size: match opts.get(OptionCode::MaxMessageSize) {
                Some(DhcpOption::MaxMessageSize(n)) => Some(*n),
                _ => None,
            },
            pxe_boot_item: match opts.get(OptionCode::VendorExtensions) {
                Some(DhcpOption::VendorExtensions(v)) => sub_option(v, 71).map(<[u8]>::to_vec),
                _ => None,
            },
            hostname: match opts.get(OptionCode::Hostname) {
                Some(DhcpOption::Hostname(h)) => Some(h.clone()),
                _ => None,
            },
            relay_info: match opts.get(OptionCode::RelayAgentInformation) {
                Some(DhcpOption::RelayAgentInformation(r)) => Some(r.clone()),
                _ => None,
            },
            kind,
        }
    }

    pub fn broadcast(&self) -> bool {
        self.flags & BROADCAST_FLAG != 0
    }
}

/// The module table, as a function of the options that decide it.
pub fn classify(
    arch: Option<u16>,
    vendor_class: Option<&[u8]>,
    user_class: Option<&[u8]>,
    has_ipxe_options: bool,
) -> ClientKind {
    if has_ipxe_options || user_class.is_some_and(is_ipxe_user_class) {
        return ClientKind::Ipxe;
    }
    let vendor = vendor_class.unwrap_or_default();
    if vendor.starts_with(b"HTTPClient") {
        return match arch {
            Some(11 | 19) => ClientKind::HttpArm64,
            _ => ClientKind::HttpX64,
        };
    }
    match arch {
        Some(0) => ClientKind::BiosPxe,
        Some(7 | 9) => ClientKind::UefiX64,
        Some(11) => ClientKind::UefiArm64,
        Some(6) => ClientKind::UefiIa32,
        Some(15 | 16) => ClientKind::HttpX64,
        Some(19) => ClientKind::HttpArm64,
        Some(a) => ClientKind::Unsupported(a),
        None if vendor.starts_with(b"PXEClient") => ClientKind::BiosPxe,
        None => ClientKind::Os,
    }
}

/// True when option 77 names iPXE: iPXE sends the 4 raw bytes `iPXE` (not RFC 3004's
/// length-prefixed list); RFC 3004 clients would send `\x04iPXE` among other classes.
pub fn is_ipxe_user_class(v: &[u8]) -> bool {
    if v == b"iPXE" {
        return true;
    }
    let mut rest = v;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// `PXEClient:Arch:00007:UNDI:003010` -> 7 (PXE 2.1 vendor class; used when option 93 is
/// missing).
pub fn arch_from_vendor_class(v: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(v).ok()?;
    let rest = s
        .strip_prefix("PXEClient:Arch:")
        .or_else(|| s.strip_prefix("HTTPClient:Arch:"))?;
    rest.get(..5)?.parse().ok()
}

/// Finds sub-option `code` in an encapsulated option body (RFC 2132 §8.4 layout).
pub fn sub_option(body: &[u8], code: u8) -> Option<&[u8]> {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            0 => i += 1,
            255 => return None,
            c => {
                let len = *body.get(i + 1)? as usize;
                let data = body.get(i + 2..i + 2 + len)?;
                if c == code {
                    return Some(data);
                }
                i += 2 + len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the module's table.
    #[test]
    fn classification_rows() {
        let pxe = |a: &str| format!("PXEClient:Arch:{a}:UNDI:002001").into_bytes();
        let http = |a: &str| format!("HTTPClient:Arch:{a}:UNDI:003000").into_bytes();
        type Row<'a> = (
            &'a str,
            Option<u16>,
            Option<Vec<u8>>,
            Option<&'a [u8]>,
            bool,
            ClientKind,
        );
        let rows: Vec<Row> = vec![
            (
                "iPXE BIOS ROM",
                Some(0),
                Some(pxe("00000")),
                Some(b"iPXE"),
                true,
                ClientKind::Ipxe,
            ),
            (
                "iPXE EFI, raw user class only",
                Some(7),
                Some(pxe("00007")),
                Some(b"iPXE"),
                false,
                ClientKind::Ipxe,
            ),
            (
                "iPXE, RFC 3004 user class",
                Some(0),
                None,
                Some(b"\x03foo\x04iPXE"),
                false,
                ClientKind::Ipxe,
            ),
            (
                "iPXE, option 175 only",
                Some(0),
                None,
                None,
                true,
                ClientKind::Ipxe,
            ),
            (
                "other user class",
                Some(0),
                Some(pxe("00000")),
                Some(b"\x05other"),
                false,
                ClientKind::BiosPxe,
            ),
            (
                "BIOS PXE",
                Some(0),
                Some(pxe("00000")),
                None,
                false,
                ClientKind::BiosPxe,
            ),
            (
                "UEFI x64 (7)",
                Some(7),
                Some(pxe("00007")),
                None,
                false,
                ClientKind::UefiX64,
            ),
            (
                "UEFI x64 (9)",
                Some(9),
                Some(pxe("00009")),
                None,
                false,
                ClientKind::UefiX64,
            ),
            (
                "UEFI ARM64",
                Some(11),
                Some(pxe("00011")),
                None,
                false,
                ClientKind::UefiArm64,
            ),
            (
                "UEFI HTTP x64",
                Some(16),
                Some(http("00016")),
                None,
                false,
                ClientKind::HttpX64,
            ),
            (
                "UEFI HTTP x86 (15)",
                Some(15),
                Some(http("00015")),
                None,
                false,
                ClientKind::HttpX64,
            ),
            (
                "UEFI HTTP ARM64",
                Some(19),
                Some(http("00019")),
                None,
                false,
                ClientKind::HttpArm64,
            ),
            (
                "HTTP arch without vendor class",
                Some(16),
                None,
                None,
                false,
                ClientKind::HttpX64,
            ),
            (
                "ARM64 HTTP arch without vendor class",
                Some(19),
                None,
                None,
                false,
                ClientKind::HttpArm64,
            ),
            (
                "UEFI IA32",
                Some(6),
                Some(pxe("00006")),
                None,
                false,
                ClientKind::UefiIa32,
            ),
            (
                "EFI Itanium (2): no binary",
                Some(2),
                Some(pxe("00002")),
                None,
                false,
                ClientKind::Unsupported(2),
            ),
            (
                "old PXE ROM without arch",
                None,
                Some(b"PXEClient".to_vec()),
                None,
                false,
                ClientKind::BiosPxe,
            ),
            (
                "udhcpc",
                None,
                Some(b"udhcp 1.35.0".to_vec()),
                None,
                false,
                ClientKind::Os,
            ),
            ("dhclient", None, None, None, false, ClientKind::Os),
        ];
        for (name, arch, vendor, user, has175, want) in rows {
            assert_eq!(
                classify(arch, vendor.as_deref(), user, has175),
                want,
                "row {name}"
            );
        }
    }

    #[test]
    fn arch_from_vendor_class_rows() {
        assert_eq!(
            arch_from_vendor_class(b"PXEClient:Arch:00007:UNDI:003010"),
            Some(7)
        );
        assert_eq!(
            arch_from_vendor_class(b"HTTPClient:Arch:00016:UNDI:003000"),
            Some(16)
        );
        assert_eq!(arch_from_vendor_class(b"PXEClient"), None);
        assert_eq!(arch_from_vendor_class(b"PXEClient:Arch:0"), None);
        assert_eq!(arch_from_vendor_class(b"udhcp 1.35.0"), None);
    }

    #[test]
    fn user_class_forms() {
        assert!(is_ipxe_user_class(b"iPXE"));
        assert!(is_ipxe_user_class(b"\x04iPXE"));
        assert!(!is_ipxe_user_class(b"iPXE2"));
        assert!(!is_ipxe_user_class(b"\x09iPXE"));
        assert!(!is_ipxe_user_class(b""));
    }

    #[test]
    fn sub_options() {
        let body = [6, 1, 8, 71, 4, 0x80, 0, 0, 0, 255];
        assert_eq!(sub_option(&body, 71), Some(&[0x80, 0, 0, 0][..]));
        assert_eq!(sub_option(&body, 6), Some(&[8][..]));
        assert_eq!(sub_option(&body, 9), None);
        assert_eq!(sub_option(&[71, 9, 1], 71), None);
    }

    #[test]
    fn from_message_reads_fields() {
        let bytes = {
            let mut m = Message::new(
                [0, 0, 0, 0].into(),
                [0, 0, 0, 0].into(),
                [0, 0, 0, 0].into(),
                [10, 1, 0, 1].into(),
                &[2, 0, 0, 0, 0, 9],
            );
            m.set_flags(dhcproto::v4::Flags::default().set_broadcast());
            let o = m.opts_mut();
            o.insert(DhcpOption::MessageType(MessageType::Request));
            o.insert(DhcpOption::RequestedIpAddress([10, 0, 0, 5].into()));
            o.insert(DhcpOption::ServerIdentifier([10, 0, 0, 1].into()));
            o.insert(DhcpOption::ClientMachineIdentifier(vec![0; 17]));
            o.insert(DhcpOption::ClassIdentifier(
                b"PXEClient:Arch:00007:UNDI:003000".to_vec(),
            ));
            o.insert(DhcpOption::ClientSystemArchitecture(7.into()));
            super::super::wire::encode(&m)
        };
        let r = Request::from_message(&super::super::wire::parse(&bytes).unwrap());
        assert_eq!(r.msg_type, Some(MessageType::Request));
        assert_eq!(r.mac, Mac([2, 0, 0, 0, 0, 9]));
        assert!(r.broadcast() && r.ethernet && r.is_request);
        assert_eq!(r.giaddr, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(r.requested_ip, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(r.server_id, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(r.machine_id, Some(vec![0; 17]));
        assert_eq!(r.kind, ClientKind::UefiX64);
    }
}
