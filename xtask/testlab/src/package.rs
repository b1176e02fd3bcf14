//! The deployable forms of xboot, shared by `cargo xtask package` and the tests: the iPXE
//! bundle (current iPXE from Debian 13's `ipxe` package, a `deb` peer unpacked into the
//! set-up cache), the Debian package (cargo-deb, over a binary cargo has built) and the
//! OCI image (umoci, from scratch, without a registry or a container engine).
use std::path::{Path, PathBuf};

use crate::{peers, run};

/// Where the package and the image install the bundle (the default `tftp.root` when it
/// exists).
pub const FIRMWARE_DIR: &str = "usr/share/xboot/firmware";

/// The bundle: each file's name in the firmware directory, and the `deb` peer it is a
/// copy of. The names are the ones xboot's firmware table maps Grendel's onto
/// (`undionly.kpxe`, `ipxe.pxe`, `snponly-x86_64.efi` -> `snponly.efi`, `ipxe-x86_64.efi`
/// -> `ipxe.efi`, `snponly-arm64.efi` -> `ipxe-arm64.efi`; see `dhcp::boot`).
pub const FIRMWARE: [(&str, &str); 5] = [
    (
        "undionly.kpxe",
        "cache:deb/trixie/ipxe/usr/lib/ipxe/undionly.kpxe",
    ),
    ("ipxe.pxe", "cache:deb/trixie/ipxe/usr/lib/ipxe/ipxe.pxe"),
    (
        "snponly.efi",
        "cache:deb/trixie/ipxe/usr/lib/ipxe/snponly.efi",
    ),
    (
        "ipxe.efi",
        "cache:deb/trixie/ipxe/usr/lib/ipxe/ipxe-amd64.efi",
    ),
    (
        "ipxe-arm64.efi",
        "cache:deb/trixie/ipxe/usr/lib/ipxe/ipxe-arm64.efi",
    ),
];

/// The ports xboot serves (DHCP, TFTP, HTTP, PXE boot server), declared by the image.
pub const PORTS: [&str; 4] = ["67/udp", "69/udp", "80/tcp", "4011/udp"];

/// The directories ClusterFactory's chart mounts into the pod (the sealed config, the
/// inventory ConfigMap, the image files), plus the state directory and the API socket's
/// directories of the defaults and of the guide's grendel.toml.
pub const IMAGE_DIRS: [&str; 7] = [
    "secret",
    "config",
    "var/lib/grendel",
    "var/lib/xboot",
    "var/run/xboot",
    "var/run/grendel",
    "tmp",
];

/// The image's tag in its OCI layout.
pub const IMAGE_TAG: &str = "xboot";

/// The iPXE version of the bundle (Debian's package version).
pub fn ipxe_version() -> Result<String, String> {
    let file = peers::file(FIRMWARE[0].1);
    // cache:deb/SUITE/PACKAGE/usr/lib/ipxe/FILE -> cache:deb/SUITE/PACKAGE/VERSION
    let root = file.ancestors().nth(4).ok_or("bad bundle path")?;
    std::fs::read_to_string(root.join("VERSION"))
        .map(|v| v.trim().to_string())
        .map_err(|e| format!("{}: {e} (run `cargo xtask setup`)", root.display()))
}

/// Copies the bundle into `dest` (created, emptied first): regular files only, symlinks
/// resolved (Debian's `ipxe.efi` is one, and the TFTP root serves no link that leaves
/// it), and `VERSION` naming the iPXE build.
pub fn bundle(dest: &Path) -> Result<(), String> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    for (name, peer) in FIRMWARE {
        let src = peers::file(peer);
        let real = src
            .canonicalize()
            .map_err(|e| format!("{}: {e}", src.display()))?;
        std::fs::copy(&real, dest.join(name))
            .map_err(|e| format!("copy {} -> {name}: {e}", real.display()))?;
    }
    std::fs::write(
        dest.join("VERSION"),
        format!("iPXE {} (Debian trixie's ipxe package)\n", ipxe_version()?),
    )
    .map_err(|e| e.to_string())
}

/// A binary cargo built, with the profile and target directory it was built in.
#[derive(Clone, Debug)]
pub struct Built {
    /// `<target>/<profile dir>/xboot`.
    pub binary: PathBuf,
}

impl Built {
    pub fn new(binary: impl Into<PathBuf>) -> Built {
        Built {
            binary: binary.into(),
        }
    }

    fn profile_dir(&self) -> &Path {
        self.binary
            .parent()
            .expect("a binary in a profile directory")
    }

    fn target_dir(&self) -> &Path {
        self.profile_dir()
            .parent()
            .expect("a profile directory in a target directory")
    }

    /// Cargo's name of the profile (`dev` builds into `debug`).
    fn profile(&self) -> String {
        match self.profile_dir().file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".into(),
            Some(other) => other.into(),
            None => "release".into(),
        }
    }
}

/// The package's version: the xboot crate's (boot-user's manifest, compiled in).
pub fn version() -> &'static str {
    include_str!("../../../boot-user/Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("boot-user/Cargo.toml has a version")
}

/// Builds the Debian package of `built` into `out` with cargo-deb (no build of its own:
/// the binary, with its XDP program, is cargo's) and returns its path. The bundle is
/// staged into `<target>/<profile>/xboot-firmware` first, where boot-user's
/// `[package.metadata.deb]` assets take it from.
pub fn deb(built: &Built, out: &Path) -> Result<PathBuf, String> {
    peers::program("cargo-deb");
    bundle(&built.profile_dir().join("xboot-firmware"))?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let profile = built.profile();
    run(peers::command("cargo")
        .args([
            "deb",
            "-p",
            "boot-user",
            "--no-build",
            "--offline",
            "--fast",
        ])
        .args(["--strip", "--no-dbgsym", "--profile", &profile, "-o"])
        .arg(out)
        .env("CARGO_TARGET_DIR", built.target_dir())
        .current_dir(crate::workspace_root()))?;
    let arch = run(peers::command("dpkg").arg("--print-architecture"))?;
    let arch = arch.trim().to_string();
    let deb = out.join(format!("xboot_{}-1_{arch}.deb", version()));
    if !deb.is_file() {
        return Err(format!("cargo deb made no {}", deb.display()));
    }
    Ok(deb)
}

/// An OCI image layout made by [`image`].
#[derive(Clone, Debug)]
pub struct Image {
    /// The OCI image layout directory (`umoci --image LAYOUT:xboot`).
    pub layout: PathBuf,
    /// The same as one tar file (an `oci-archive`: `podman load -i`, `skopeo copy
    /// oci-archive:FILE ...`).
    pub archive: PathBuf,
}

impl Image {
    /// `LAYOUT:TAG`, as umoci names an image.
    pub fn reference(&self) -> String {
        format!("{}:{IMAGE_TAG}", self.layout.display())
    }
}

/// Builds the OCI image of `built` from scratch under `out`: the binary (stripped) and the
/// shared libraries it links, the iPXE bundle at [`FIRMWARE_DIR`], the CA certificates,
/// and the directories ClusterFactory's chart mounts ([`IMAGE_DIRS`]). Entrypoint
/// `/usr/bin/xboot`, command `serve` (the chart passes its own arguments).
pub fn image(built: &Built, out: &Path) -> Result<Image, String> {
    let layout = out.join("xboot-oci");
    let work = out.join("xboot-oci-build");
    for d in [&layout, &work] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let umoci = |args: &[&str]| run(peers::command("umoci").args(args));
    let layout_s = layout.display().to_string();
    let reference = format!("{layout_s}:{IMAGE_TAG}");
    let bundle_dir = work.display().to_string();
    umoci(&["init", "--layout", &layout_s])?;
    umoci(&["new", "--image", &reference])?;
    umoci(&["unpack", "--image", &reference, &bundle_dir])?;
    let rootfs = work.join("rootfs");
    fill_rootfs(built, &rootfs)?;
    umoci(&["repack", "--image", &reference, &bundle_dir])?;
    let version = version();
    let mut config = vec![
        "config".to_string(),
        "--image".into(),
        reference.clone(),
        "--config.entrypoint".into(),
        "/usr/bin/xboot".into(),
        "--config.cmd".into(),
        "serve".into(),
        "--config.env".into(),
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".into(),
        "--config.workingdir".into(),
        "/".into(),
        "--config.label".into(),
        "org.opencontainers.image.title=xboot".into(),
        "--config.label".into(),
        format!("org.opencontainers.image.version={version}"),
        "--config.label".into(),
        format!("io.xboot.ipxe.version={}", ipxe_version()?),
    ];
    for port in PORTS {
        config.push("--config.exposedports".into());
        config.push(port.into());
    }
    run(peers::command("umoci").args(&config))?;
    umoci(&["gc", "--layout", &layout_s])?;
    std::fs::remove_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let archive = out.join(format!("xboot_{version}.oci.tar"));
    run(peers::command("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."))?;
    Ok(Image { layout, archive })
}

/// The image's files (see [`image`]).
fn fill_rootfs(built: &Built, rootfs: &Path) -> Result<(), String> {
    let mkdir = |d: &Path| std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()));
    let copy = |from: &Path, to: &Path| {
        mkdir(to.parent().expect("a file in a directory"))?;
        std::fs::copy(from, to)
            .map(|_| ())
            .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
    };
    let bin = rootfs.join("usr/bin/xboot");
    copy(&built.binary, &bin)?;
    run(peers::command("strip").arg(&bin))?;
    for lib in libraries(&built.binary)? {
        copy(
            &lib,
            &rootfs.join(lib.strip_prefix("/").expect("an absolute path")),
        )?;
    }
    bundle(&rootfs.join(FIRMWARE_DIR))?;
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    copy(
        &peers::path(ca.to_str().expect("a UTF-8 path")),
        &rootfs.join("etc/ssl/certs/ca-certificates.crt"),
    )?;
    for d in IMAGE_DIRS {
        mkdir(&rootfs.join(d))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The shared libraries `binary` loads, the dynamic loader included, as ldd resolves
/// them on this machine.
pub fn libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = run(peers::command("ldd").arg(binary))?;
    Ok(parse_ldd(&out))
}

/// The absolute paths of ldd's output (`libc.so.6 => /lib/.../libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`); the kernel's vDSO has none.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=>").map_or(l, |(_, p)| p.trim());
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    /// Every bundled file is a `deb` peer of the list, and the bundle's names are what
    /// xboot's firmware table maps Grendel's build names onto.
    #[test]
    fn the_bundle_is_listed_and_named_as_xboot_maps_them() {
        for (name, peer) in FIRMWARE {
            let p = peers::find(peer).unwrap_or_else(|| panic!("{peer} not in peers.txt"));
            assert_eq!(p.from, "deb", "{name}");
        }
        let names: Vec<&str> = FIRMWARE.iter().map(|(n, _)| *n).collect();
        for want in [
            "undionly.kpxe",
            "ipxe.pxe",
            "snponly.efi",
            "ipxe.efi",
            "ipxe-arm64.efi",
        ] {
            assert!(names.contains(&want), "{want}");
        }
    }
}
