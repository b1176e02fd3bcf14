//! testlab: what `cargo xtask demo` and the integration tests share to boot real
//! machines against xboot inside private network namespaces.
//!
//! - [`certs`]: a test CA and the server certificates it signs (openssl), for TLS.
//! - [`etcd`]: the command lines of a local three-member etcd cluster.
//! - [`netns`]: RAII network namespaces (the integration tests' own `netns.rs`, reused).
//! - [`net`]: the PXE lab topology: a server namespace joined by a veth to a client
//!   namespace whose bridge carries the VM's tap.
//! - [`package`]: the iPXE bundle, the Debian package and the OCI image (`cargo xtask
//!   package` and the packaging tests).
//! - [`payload`]: the cached test kernel and busybox initrd built by
//!   `xtask/scripts/payload.sh` (via `cargo xtask setup`).
//! - [`qemu`]: starting a qemu VM (BIOS iPXE, OVMF, or direct kernel boot), waiting for
//!   markers on its serial console, killing it by pid.
//! - [`serial`]: following a serial log file line by line, with arrival times.
//! - [`peers`]: the external programs and files used, from `xtask/peers.txt`; every
//!   process is started through it.
//! - [`serve`]: the generated config and inventory, and an `xboot serve` process.
//! - [`xdp_pass`]: the pass-everything XDP program a veth peer needs for native XDP_TX.
// `testlab::peers` names the same module here and in the integration tests, which
// include `netns.rs` below as a module of their own.
extern crate self as testlab;

#[path = "../../../tests/integration/netns.rs"]
pub mod netns;

pub mod certs;
pub mod etcd;
pub mod net;
pub mod package;
pub mod payload;
pub mod peers;
pub mod qemu;
pub mod serial;
pub mod serve;
pub mod xdp_pass;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// The child processes of `pid` (its main thread's), e.g. what a simulator started.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag instead of ending the process: the waits in
/// [`qemu`] and [`serve`] then fail with "interrupted" and the RAII guards (VM, server,
/// namespaces) tear the lab down as the error propagates. For commands (the demo);
/// test harnesses keep their default handling.
pub fn catch_interrupts() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// True once SIGINT or SIGTERM arrived after [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The workspace root (this crate lives at `xtask/testlab`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}

/// Runs a command and returns its stdout, or an error naming the command with its
/// stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a text file (empty if it cannot be read), for error messages.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A log file for an error message: whole if short, else its first lines (where a
/// start-up error is) and its last `n` lines.
pub fn excerpt(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let head = 10;
    if lines.len() <= head + n {
        return lines.join("\n");
    }
    format!(
        "{}\n[... {} lines ...]\n{}",
        lines[..head].join("\n"),
        lines.len() - head - n,
        lines[lines.len() - n..].join("\n")
    )
}
