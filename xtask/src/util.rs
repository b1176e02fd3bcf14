//! Small helpers shared by the xtask commands: the workspace root, running cargo and
//! other commands with a clear error naming the step, timing.
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub fn root() -> PathBuf {
    testlab::workspace_root()
}

/// `cargo` as the one running xtask (so the same toolchain), in the workspace root.
pub fn cargo() -> Command {
    let mut c = testlab::peers::own(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Runs a command with inherited output; fails naming `step` if it fails.
pub fn run_step(step: &str, cmd: &mut Command) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("{step}: cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{step} failed ({status}): {cmd:?}");
    }
    Ok(t0.elapsed())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `12.3s` / `850ms`.
pub fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// What a benchmark that drives `xboot serve` starts with: Ctrl-C handled (the lab is
/// removed), the binary (`XBOOT_BIN`, else a release build) and the output folder `out`
/// (under the workspace root) made.
pub fn bench_start(out: &std::path::Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    testlab::catch_interrupts();
    let xboot = match std::env::var_os("XBOOT_BIN") {
        Some(b) => PathBuf::from(b),
        None => build_release_xboot()?,
    };
    let out = root().join(out);
    std::fs::create_dir_all(&out)?;
    Ok((xboot, out))
}

/// Builds the `xboot` binary in release (quietly) and returns its absolute path: the
/// benchmarks drive the binary users run.
pub fn build_release_xboot() -> anyhow::Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "-q",
        "-p",
        "boot-user",
        "--bin",
        "xboot",
    ]);
    run_step("build xboot (release)", &mut cmd)?;
    let p = target_dir().join("release/xboot");
    p.canonicalize().with_context(|| p.display().to_string())
}
