//! `cargo run -p xtask --bin bench-bmc -- [ARGS]`: the BMC benchmark on its own, the same
//! code as `cargo xtask bench bmc` (see xtask/src/bench/bmc.rs).
#[path = "../bench/bmc.rs"]
mod bmc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    bmc::run(&args)
}
