//! The test boot payload cached under `target/xboot-cache/` by
//! `xtask/scripts/payload.sh` (run by `cargo xtask setup`): Debian's kernel and a
//! busybox initrd whose `/init` prints the markers below on the serial console.
use std::path::{Path, PathBuf};

/// Printed first by the payload's /init: `XBOOT-BOOTED kernel=K uptime=Ts cmdline=...`.
pub const BOOTED: &str = "XBOOT-BOOTED";
/// Printed by the udhcpc hook: `XBOOT-LEASE ip=A/P router=R dns=D server=S uptime=Ts`.
pub const LEASE: &str = "XBOOT-LEASE";
/// `XBOOT-POSTSCRIPT-FETCHED bytes=N uptime=Ts`.
pub const POSTSCRIPT_FETCHED: &str = "XBOOT-POSTSCRIPT-FETCHED";
/// `XBOOT-POSTSCRIPT-DONE rc=N complete=ok|failed|none uptime=Ts`.
pub const POSTSCRIPT_DONE: &str = "XBOOT-POSTSCRIPT-DONE";
/// `XBOOT-POSTSCRIPT-FAILED <why>`.
pub const POSTSCRIPT_FAILED: &str = "XBOOT-POSTSCRIPT-FAILED";
/// Printed just before `poweroff -f`.
pub const POWEROFF: &str = "XBOOT-POWEROFF";

/// Kernel cmdline parameters the payload reads: the postscript URL to fetch and run,
/// and the URL it POSTs `rc=N` to afterwards.
pub const PARAM_POSTSCRIPT: &str = "xboot.postscript";
pub const PARAM_COMPLETE: &str = "xboot.complete";

/// Paths of the cached payload.
#[derive(Clone, Debug)]
pub struct Payload {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// e.g. `6.1.0-56-amd64`.
    pub kernel_version: String,
}

/// `$XBOOT_CACHE`, or `target/xboot-cache` in the workspace.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XBOOT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/xboot-cache"))
}

impl Payload {
    /// The payload in the default cache directory.
    pub fn cached() -> Result<Payload, String> {
        Payload::load(&cache_dir())
    }

    /// The payload in `dir`, or an error naming the missing file.
    pub fn load(dir: &Path) -> Result<Payload, String> {
        let need = |name: &str| {
            let p = dir.join(name);
            match std::fs::metadata(&p) {
                Ok(m) if m.len() > 0 => Ok(p),
                _ => Err(format!(
                    "test payload file {} is missing: run `cargo xtask setup`",
                    p.display()
                )),
            }
        };
        let kernel = need("vmlinuz")?;
        let initrd = need("initrd.gz")?;
        let version = std::fs::read_to_string(need("kernel-version")?)
            .map_err(|e| format!("cannot read {}/kernel-version: {e}", dir.display()))?;
        Ok(Payload {
            kernel,
            initrd,
            kernel_version: version.trim().to_string(),
        })
    }
}
