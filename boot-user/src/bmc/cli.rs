//! `xboot bmc power on|off|cycle|reset|soft|status NODES [--pxe [--efi]] [--json]`:
//! argument parsing, progress bar on a terminal, summary table or JSON, exit code.
use std::io::{IsTerminal, Write};

use clap::{Args, Subcommand, ValueEnum};

use super::fanout::{NodeResult, Reason, Summary};
use super::request::{self, PowerRequest};
use super::{Action, BootMode};
use crate::config::Config;
use crate::inventory::Inventory;

#[derive(Args, Debug, Clone)]
pub struct BmcArgs {
    #[command(subcommand)]
    pub command: BmcCommand,
}

impl BmcArgs {
    /// Whether the command goes through the running server's API.
    pub fn via_server(&self) -> bool {
        let BmcCommand::Power(p) = &self.command;
        p.server
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum BmcCommand {
    /// Power a set of nodes on, off, cycle, reset or soft-off them, or query their state.
    Power(PowerArgs),
}

/// IPMI cipher suites to offer.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherArg {
    /// Suite 17 (SHA-256), then suite 3 if the BMC refuses it.
    Auto,
    #[value(name = "3")]
    Suite3,
    #[value(name = "17")]
    Suite17,
}

#[derive(Args, Debug, Clone)]
pub struct PowerArgs {
    pub action: Action,
    /// Hosts: a node set (`cn[001-100],gpu1`); several arguments are joined.
    #[arg(required = true, value_name = "NODESET")]
    pub nodes: Vec<String>,
    /// Boot from the network once (set before on, cycle or reset).
    #[arg(long)]
    pub pxe: bool,
    /// With --pxe: UEFI network boot instead of legacy BIOS.
    #[arg(long, requires = "pxe")]
    pub efi: bool,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Ask the running server (`POST /v1/bmc/power` on --socket or --api) instead of
    /// driving the BMCs from here: its inventory and `[bmc]` credentials are used, and
    /// each node's outcome is recorded in its event log. No progress bar.
    #[arg(long)]
    pub server: bool,
    /// BMCs worked on at once (default: [bmc] concurrency).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Per-attempt timeout in milliseconds (default: [bmc] timeout_ms).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Retransmits per request (default: [bmc] retries).
    #[arg(long)]
    pub retries: Option<u32>,
    /// IPMI cipher suite.
    #[arg(long, value_enum, default_value = "auto")]
    pub cipher: CipherArg,
    /// Redfish: accept self-signed certificates (default: [bmc] insecure).
    #[arg(long)]
    pub insecure: bool,
    /// Redfish: log in with a session (X-Auth-Token) instead of basic auth.
    #[arg(long)]
    pub redfish_session: bool,
}

impl PowerArgs {
    /// The request these flags describe (what the API carries too).
    pub fn request(&self) -> PowerRequest {
        PowerRequest {
            nodeset: self.nodes.join(","),
            action: self.action,
            boot: self.pxe.then_some(if self.efi {
                BootMode::Efi
            } else {
                BootMode::Legacy
            }),
            concurrency: self.concurrency,
            timeout_ms: self.timeout_ms,
            retries: self.retries,
            cipher: match self.cipher {
                CipherArg::Auto => None,
                CipherArg::Suite3 => Some(3),
                CipherArg::Suite17 => Some(17),
            },
            insecure: self.insecure,
            redfish_session: self.redfish_session,
        }
    }
}

/// Runs `xboot bmc ...` here (not through a server) on its own runtime; returns the
/// process exit code: 0 when every node succeeded, 1 otherwise. Call [`run_async`] from
/// inside a runtime.
pub fn run(args: &BmcArgs, cfg: &Config, inv: &Inventory) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args, cfg, inv))
}

pub async fn run_async(args: &BmcArgs, cfg: &Config, inv: &Inventory) -> anyhow::Result<i32> {
    let BmcCommand::Power(p) = &args.command;
    let req = p.request();
    let total = if crate::nodeset::is_all(&req.nodeset) {
        inv.hosts().len() as u64
    } else {
        crate::nodeset::NodeSet::parse(&req.nodeset)?.len() as u64
    };
    let bar = (!p.json && std::io::stderr().is_terminal()).then(|| progress_bar(total));
    let summary = request::power(&cfg.bmc, inv, &req, |r| {
        if let Some(b) = &bar {
            b.inc(1);
            if !r.ok() {
                b.println(format!("{}: {} ({})", r.name, r.reason.as_str(), r.message));
            }
        }
    })
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    print(&summary, p.json)?;
    Ok(exit_code(&summary))
}

/// `xboot bmc power ... --server`: the same request through the API; prints the
/// summary the server answers and returns the exit code.
pub async fn run_via_api(
    args: &BmcArgs,
    client: &crate::api::client::Client,
) -> anyhow::Result<i32> {
    let BmcCommand::Power(p) = &args.command;
    let body = serde_json::to_value(p.request())?;
    let summary: Summary = serde_json::from_value(client.post("/v1/bmc/power", Some(body)).await?)?;
    print(&summary, p.json)?;
    Ok(exit_code(&summary))
}

/// 0 when every node succeeded, else 1.
pub fn exit_code(s: &Summary) -> i32 {
    i32::from(s.failed > 0)
}

/// The summary as a table (or JSON) on stdout.
pub fn print(summary: &Summary, json: bool) -> anyhow::Result<()> {
    let mut out = vec![];
    if json {
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, summary)?;
    }
    // print! (not a raw stdout handle) so that test harnesses capture it
    print!("{}", String::from_utf8_lossy(&out));
    Ok(())
}

fn progress_bar(n: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n);
    let style = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} BMCs {elapsed}")
        .expect("valid template");
    bar.set_style(style);
    bar
}

/// One line per node, then a summary line with the count per failure reason.
pub fn write_table(out: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    let w = s
        .results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:w$}  {:21}  {:12}  {:11}  DETAIL",
        "NODE", "BMC", "PROTOCOL", "RESULT"
    )?;
    for r in &s.results {
        writeln!(
            out,
            "{:w$}  {:21}  {:12}  {:11}  {}",
            r.name,
            r.bmc.to_string(),
            r.protocol.as_str(),
            r.reason.as_str(),
            detail(r)
        )?;
    }
    let mut reasons: Vec<(Reason, usize)> = vec![];
    for r in s.results.iter().filter(|r| !r.ok()) {
        match reasons.iter_mut().find(|(k, _)| *k == r.reason) {
            Some((_, n)) => *n += 1,
            None => reasons.push((r.reason, 1)),
        }
    }
    reasons.sort();
    let why: Vec<String> = reasons
        .iter()
        .map(|(k, n)| format!("{n} {}", k.as_str()))
        .collect();
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({})", why.join(", "))
    };
    let boot = s
        .boot
        .map(|b| format!(" with one-time PXE ({b:?})"))
        .unwrap_or_default();
    writeln!(
        out,
        "power {}{boot}: {} ok, {} failed{why} in {:.2} s",
        s.action.as_str(),
        s.ok,
        s.failed,
        s.elapsed_ms as f64 / 1000.0
    )
}

fn detail(r: &NodeResult) -> String {
    match (r.ok(), &r.power) {
        (true, Some(p)) => format!("power {p}"),
        (true, None) => "done".into(),
        (false, _) => r.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::bmc::ipmi::CipherSuite;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }
    #[derive(clap::Subcommand)]
    enum Top {
        Bmc(BmcArgs),
    }

    fn parse(argv: &[&str]) -> Result<PowerArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("xboot").chain(argv.iter().copied()))?;
        let Top::Bmc(BmcArgs {
            command: BmcCommand::Power(p),
        }) = cli.cmd;
        Ok(p)
    }

    #[test]
    fn parses_and_builds_options() {
        let p = parse(&[
            "bmc",
            "power",
            "cycle",
            "cn[1-2]",
            "cn3",
            "--pxe",
            "--efi",
            "--timeout-ms",
            "200",
            "--cipher",
            "3",
        ])
        .unwrap();
        assert_eq!(p.action, Action::Cycle);
        let req = p.request();
        assert_eq!(
            crate::nodeset::expand(&req.nodeset).unwrap(),
            vec!["cn1", "cn2", "cn3"]
        );
        let o = req.options(&Config::default().bmc).unwrap();
        assert_eq!(o.boot, Some(BootMode::Efi));
        assert_eq!(o.timing.timeout, Duration::from_millis(200));
        assert_eq!(o.suites, vec![CipherSuite::Suite3]);
        assert_eq!(o.concurrency, 1024);
        assert!(
            parse(&["bmc", "power", "status"]).is_err(),
            "nodes are required"
        );
        assert!(
            parse(&["bmc", "power", "on", "cn1", "--efi"]).is_err(),
            "--efi needs --pxe"
        );
        let off = parse(&["bmc", "power", "off", "cn1", "--pxe"]).unwrap();
        assert!(
            off.request().options(&Config::default().bmc).is_err(),
            "--pxe with off"
        );
    }

    #[test]
    fn table_names_failures() {
        let r = |name: &str, reason, message: &str| NodeResult {
            name: name.into(),
            bmc: "127.0.0.1:623".parse().unwrap(),
            protocol: crate::bmc::Protocol::Ipmi,
            reason,
            power: None,
            message: message.into(),
            elapsed_ms: 1,
            started_ms: 0,
        };
        let s = Summary {
            action: Action::Cycle,
            boot: None,
            total: 3,
            ok: 1,
            failed: 2,
            elapsed_ms: 1234,
            results: vec![
                r("cn1", Reason::Ok, ""),
                r("cn2", Reason::Timeout, "no reply"),
                r("cn3", Reason::Auth, "bad"),
            ],
        };
        let mut out = vec![];
        write_table(&mut out, &s).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("cn2   127.0.0.1:623          ipmi          timeout      no reply"),
            "{text}"
        );
        assert!(
            text.ends_with("power cycle: 1 ok, 2 failed (1 auth, 1 timeout) in 1.23 s\n"),
            "{text}"
        );
    }
}
