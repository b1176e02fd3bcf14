//! `xboot-bmc [--config FILE] --hosts HOSTS.json bmc power ACTION NODES...`: the
//! `xboot bmc` command on its own (config and a Grendel hosts.json, no server), used by
//! `cargo xtask bench bmc` and handy in a lab.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use xboot::bmc::cli::BmcArgs;
use xboot::config::Config;
use xboot::inventory::{Host, Inventory};

#[derive(Parser)]
struct Cli {
    /// xboot config file ([bmc] user, password, protocol, timeouts).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Hosts (Grendel hosts.json): each with an interface with bmc = true.
    #[arg(long)]
    hosts: PathBuf,
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Subcommand)]
enum Top {
    Bmc(BmcArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let text = std::fs::read_to_string(&cli.hosts)
        .with_context(|| format!("reading {}", cli.hosts.display()))?;
    let hosts: Vec<Host> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", cli.hosts.display()))?;
    let inv = Inventory::from_parts_unchecked(hosts, vec![]);
    let Top::Bmc(args) = cli.cmd;
    std::process::exit(xboot::bmc::cli::run(&args, &cfg, &inv)?);
}
