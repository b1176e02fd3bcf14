//! `cargo xtask`: set-up, demo, tests and benchmarks (see README.md).
fn main() -> anyhow::Result<()> {
    Ok(())
}
