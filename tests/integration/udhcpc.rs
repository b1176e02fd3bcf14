//! busybox udhcpc as the tests that need a real client's lease run it.
use std::path::Path;
use std::process::Stdio;

use crate::netns::Netns;

/// `busybox udhcpc` on `iface` in `cli`: `tries` discovers a second apart, then it exits
/// (`extra` appended to its arguments); its hook (written in `dir`) appends the lease to
/// `out`. Whether it got a lease, and what `out` holds then (empty when nothing).
pub fn udhcpc(
    cli: &Netns,
    dir: &Path,
    out: &Path,
    iface: &str,
    tries: u32,
    extra: &[&str],
) -> (bool, String) {
    let script = crate::dhcp::lease_script(dir, out);
    let tries = tries.to_string();
    let mut argv = vec![
        "busybox", "udhcpc", "-f", "-q", "-n", "-i", iface, "-s", &script, "-t", &tries, "-T", "1",
    ];
    argv.extend_from_slice(extra);
    let ok = cli
        .cmd(&argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    (ok, std::fs::read_to_string(out).unwrap_or_default())
}
