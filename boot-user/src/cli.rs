//! The `xboot` command line (clap).
pub fn main() -> anyhow::Result<()> { anyhow::bail!("not yet") }
