//! `cargo xtask package`: the Debian package (cargo-deb) and the OCI image (umoci) of a
//! release build, with the bundled iPXE (see `testlab::package`). Set-up first, as the
//! other commands: the bundle is a `deb` peer of `xtask/peers.txt`.
use std::path::PathBuf;

use anyhow::anyhow;

use crate::{setup, util};

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the .deb, the OCI layout and its archive [default: <target>/package].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Package the debug build instead of building a release (quicker, larger).
    #[arg(long)]
    dev: bool,
    /// The Debian package only, no OCI image.
    #[arg(long)]
    no_image: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    setup::run()?;
    let binary = if args.dev {
        util::run_step(
            "build xboot",
            util::cargo().args(["build", "-q", "-p", "boot-user", "--bin", "xboot"]),
        )?;
        util::target_dir().join("debug/xboot")
    } else {
        util::build_release_xboot()?
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| util::target_dir().join("package"));
    let built = testlab::package::Built::new(binary);
    let deb = testlab::package::deb(&built, &out).map_err(|e| anyhow!(e))?;
    eprintln!("package: {}", deb.display());
    if !args.no_image {
        let image = testlab::package::image(&built, &out).map_err(|e| anyhow!(e))?;
        eprintln!(
            "package: OCI image {} (layout {})",
            image.archive.display(),
            image.reference()
        );
    }
    Ok(())
}
