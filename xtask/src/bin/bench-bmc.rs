//! `cargo run -p xtask --bin bench-bmc -- [ARGS]`: the BMC benchmark on its own, the same
//! code as `cargo xtask bench bmc` (see xtask/src/bench/bmc.rs).
#[path = "../bench/bmc.rs"]
mod bmc;

fn main() -> anyhow::Result<()> {
    bmc::run(clap::Parser::parse())
}
