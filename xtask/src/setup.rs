//! `cargo xtask setup`: runs `xtask/scripts/setup.sh` (Debian packages, rustfmt/clippy,
//! nightly rust-src, bpf-linker, the test kernel and initrd, and every peer of
//! `xtask/peers.txt`), then checks that every peer of that list is here. Idempotent and
//! fast once done; `demo`, `test` and `bench` call it first.
use std::time::Instant;

use anyhow::{bail, Context};

use crate::util;

pub fn run() -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("setup installs Debian packages and creates network namespaces: run it as root");
    }
    let t0 = Instant::now();
    let script = util::root().join("xtask/scripts/setup.sh");
    let status = testlab::peers::command("bash")
        .arg(&script)
        .current_dir(util::root())
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    // Stop here, naming the program and its package, rather than deep inside one test.
    if let Err(e) = testlab::peers::check() {
        bail!("{e}");
    }
    eprintln!("setup: done in {}", util::secs(t0.elapsed()));
    Ok(())
}
