//! `cargo xtask`: set-up, demo, tests and benchmarks (see README.md).
//!
//! - `cargo xtask setup`: installs what building and testing need (idempotent).
//! - `cargo xtask test`: setup, fmt, clippy, build, the whole test suite (as CI runs it).
//! - `cargo xtask demo`: a real PXE boot of a qemu VM against `xboot serve` in a private
//!   namespace lab, with the node's boot timeline.
//! - `cargo xtask bench NAME`: the benchmarks (see `bench/mod.rs`).
//! - `cargo xtask package`: the Debian package and the OCI image (see `package.rs`).
//!
//! xtask must build on a fresh machine before setup has run, so it depends on nothing
//! that needs the BPF toolchain (not on boot-user).
use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod package;
mod setup;
mod test;
mod util;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "xboot's developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install Debian packages, toolchain components, bpf-linker and the test payload.
    Setup,
    /// Setup, fmt check, clippy, build and every test (needs root, as CI).
    Test(test::Args),
    /// PXE-boot a qemu VM from `xboot serve` in a namespace lab and print its timeline.
    Demo(demo::Args),
    /// Build the Debian package and the OCI image (release, with the bundled iPXE).
    Package(package::Args),
    /// Run a benchmark: `cargo xtask bench NAME [ARGS...]`.
    Bench {
        /// Benchmark name (`cargo xtask bench list` lists them).
        name: String,
        /// Passed to the benchmark.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    let result = match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::Test(args) => test::run(&args),
        Cmd::Demo(args) => demo::run(&args),
        Cmd::Package(args) => package::run(&args),
        Cmd::Bench { name, args } => bench::run(&name, &args),
    };
    // The error chain only: a backtrace of xtask itself would bury the message.
    if let Err(e) = result {
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("caused by: {cause}");
        }
        std::process::exit(1);
    }
}
