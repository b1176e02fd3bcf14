//! `stormsim`: one boot storm (`run`) or the benchmark sweep (`bench`: sizes x servers,
//! alternating order per round, JSON + markdown + SVG in `--out`). Needs root
//! (namespaces). `cargo xtask bench storm` builds and runs this in release.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use storm::node::{Profile, SimConfig};
use storm::report;
use storm::run::{self, Spec};
use storm::servers::Kind;

#[derive(Parser)]
#[command(name = "stormsim", about = "boot-storm simulator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Modelled kernel boot, seconds (the same for every server).
    #[arg(long, env = "XBOOT_STORM_BOOT_DELAY", default_value_t = 3.0)]
    boot_delay: f64,
    /// Power-on spread, seconds (0 = all at once).
    #[arg(long, env = "XBOOT_STORM_JITTER", default_value_t = 1.0)]
    jitter: f64,
    /// Nodes still booting after this many seconds count as failed.
    #[arg(long, env = "XBOOT_STORM_DEADLINE", default_value_t = 300)]
    deadline: u64,
    /// The xboot binary (default: next to this program).
    #[arg(long, env = "XBOOT_BIN")]
    xboot: Option<PathBuf>,
    #[arg(long, env = "XBOOT_STORM_OUT", default_value = "target/bench/storm")]
    out: PathBuf,
    /// Firmware profile(s): bios, uefi (bench: each in turn).
    #[arg(
        long,
        env = "XBOOT_STORM_PROFILES",
        value_delimiter = ',',
        default_value = "bios"
    )]
    profiles: Vec<String>,
    /// Two real qemu VMs (SeaBIOS + iPXE, OVMF PXE) boot in each xboot storm; their
    /// server turnarounds are checked against the simulated nodes' p1-p99.
    #[arg(long, env = "XBOOT_STORM_TRUTH")]
    truth: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// One storm.
    Run {
        #[arg(long, default_value_t = 20)]
        n: usize,
        /// xboot-userspace, xboot-xdp, dnsmasq+nginx-stock, dnsmasq+nginx-tuned.
        #[arg(long, default_value = "xboot-userspace")]
        server: String,
        #[command(flatten)]
        common: Common,
    },
    /// The sweep: every size x server, `rounds` times, order alternating per round.
    Bench {
        #[arg(
            long,
            env = "XBOOT_STORM_SIZES",
            value_delimiter = ',',
            default_value = "10,100,1000"
        )]
        sizes: Vec<usize>,
        #[arg(
            long,
            env = "XBOOT_STORM_SERVERS",
            value_delimiter = ',',
            default_value = "xboot-userspace,dnsmasq+nginx-tuned,dnsmasq+nginx-stock"
        )]
        servers: Vec<String>,
        #[arg(long, env = "XBOOT_STORM_ROUNDS", default_value_t = 1)]
        rounds: usize,
        #[command(flatten)]
        common: Common,
    },
}

fn kind(s: &str) -> anyhow::Result<Kind> {
    Kind::parse(s).with_context(|| {
        format!(
            "unknown server {s:?}; one of {:?}",
            Kind::ALL.map(Kind::name)
        )
    })
}

fn profile(s: &str) -> anyhow::Result<Profile> {
    Profile::parse(s).with_context(|| format!("unknown profile {s:?}: bios or uefi"))
}

fn spec(n: usize, k: Kind, p: Profile, c: &Common, tag: String) -> anyhow::Result<Spec> {
    let xboot = match &c.xboot {
        Some(x) => x.clone(),
        None => run::find_xboot(None).map_err(anyhow::Error::msg)?,
    };
    Ok(Spec {
        n,
        kind: k,
        sim: SimConfig {
            profile: p,
            jitter: Duration::from_secs_f64(c.jitter),
            boot_delay: Duration::from_secs_f64(c.boot_delay),
            rcvbuf: 2 << 20,
        },
        xboot,
        dir: std::path::absolute(c.out.join("work").join(&tag))?,
        payload: testlab::payload::Payload::cached().map_err(anyhow::Error::msg)?,
        tag,
        deadline: Duration::from_secs(c.deadline),
        truth: c.truth && matches!(k, Kind::XbootUserspace | Kind::XbootXdp),
    })
}

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("stormsim needs root (network namespaces)");
    }
    match Cli::parse().cmd {
        Cmd::Run { n, server, common } => {
            let k = kind(&server)?;
            let p = profile(
                common
                    .profiles
                    .first()
                    .map(String::as_str)
                    .unwrap_or("bios"),
            )?;
            let o = run::run(&spec(n, k, p, &common, "r".into())?, false)
                .map_err(anyhow::Error::msg)?;
            std::fs::create_dir_all(&common.out)?;
            println!("{}", report::markdown(&o));
            std::fs::write(common.out.join("run.svg"), report::svg(&o))?;
            std::fs::write(
                common.out.join("run.json"),
                serde_json::to_string_pretty(&o)?,
            )?;
        }
        Cmd::Bench {
            sizes,
            servers,
            rounds,
            common,
        } => {
            let kinds: Vec<Kind> = servers.iter().map(|s| kind(s)).collect::<Result<_, _>>()?;
            bench(&sizes, &kinds, rounds, &common)?;
        }
    }
    Ok(())
}

fn bench(sizes: &[usize], kinds: &[Kind], rounds: usize, c: &Common) -> anyhow::Result<()> {
    std::fs::create_dir_all(&c.out)?;
    // A previous sweep's plots would read as this one's.
    for e in std::fs::read_dir(&c.out)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("storm-") && name.ends_with(".svg") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let mut outcomes = vec![];
    let mut md = String::from("# Boot storm\n\n");
    md += &format!(
        "Profiles: bios = BIOS PXE ROM -> undionly.kpxe (TFTP) -> iPXE -> HTTP; uefi = EDK2 PXE -> snponly.efi \
         (TFTP size probe, then the read) -> iPXE -> HTTP. Boot delay {} s, power-on jitter {} s. \
         Runs alternate their server order per round (A B, then B A).\n\n",
        c.boot_delay, c.jitter
    );
    let profiles: Vec<Profile> = c
        .profiles
        .iter()
        .map(|p| profile(p))
        .collect::<Result<_, _>>()?;
    for &n in sizes {
        for &p in &profiles {
            for round in 0..rounds {
                let mut order: Vec<Kind> = kinds.to_vec();
                if round % 2 == 1 {
                    order.reverse();
                }
                for k in order {
                    let tag = format!(
                        "{n}{}{}{round}",
                        &p.name()[..1],
                        k.name().chars().next().unwrap_or('x')
                    );
                    eprintln!(
                        "storm: N = {n}, {}, {} (round {})",
                        p.name(),
                        k.name(),
                        round + 1
                    );
                    let o = match run::run(&spec(n, k, p, c, tag)?, false) {
                        Ok(o) => o,
                        Err(e) => {
                            eprintln!("storm: N = {n}, {}: {e}", k.name());
                            md += &format!("### {} - N = {n}: did not run: {e}\n\n", k.name());
                            continue;
                        }
                    };
                    let s = report::summarize(&o);
                    eprintln!(
                        "storm:   completed {}/{n}, makespan {:?} s, server CPU {:.2} s",
                        s.completed, s.makespan_s, s.server_cpu_s
                    );
                    std::fs::write(
                        c.out.join(format!(
                            "storm-{n}-{}-{}-r{round}.svg",
                            p.name(),
                            k.name().replace('+', "-")
                        )),
                        report::svg(&o),
                    )?;
                    md += &report::markdown(&o);
                    md += "\n";
                    outcomes.push(o);
                }
            }
        }
    }
    md += &comparison(&outcomes);
    let summaries: Vec<report::Summary> = outcomes.iter().map(report::summarize).collect();
    std::fs::write(
        c.out.join("storm.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "summaries": summaries,
            "runs": outcomes,
        }))?,
    )?;
    std::fs::write(c.out.join("storm.md"), &md)?;
    println!("{md}");
    eprintln!("storm: report in {}", c.out.join("storm.md").display());
    Ok(())
}

/// One row per (N, server): median makespan over rounds, and stage p50/p99 of the
/// median run.
fn comparison(outcomes: &[run::Outcome]) -> String {
    let mut m = String::from(
        "## Comparison\n\n| N | profile | server | runs | completed | makespan (median, range) | fw DHCP p50/p99 | TFTP p50/p99 | iPXE DHCP p50/p99 | files p50/p99 | server CPU s |\n|---:|---|---|---:|---:|---|---|---|---|---|---:|\n",
    );
    let mut keys: Vec<(usize, &str, &str)> = outcomes
        .iter()
        .map(|o| (o.n, o.profile, o.server))
        .collect();
    keys.dedup();
    keys.sort();
    keys.dedup();
    for (n, profile, server) in keys {
        let runs: Vec<&run::Outcome> = outcomes
            .iter()
            .filter(|o| o.n == n && o.profile == profile && o.server == server)
            .collect();
        let mut ms: Vec<f64> = runs
            .iter()
            .map(|o| o.makespan_s.unwrap_or(f64::NAN))
            .collect();
        ms.sort_by(f64::total_cmp);
        let med = runs[runs.len() / 2];
        let s = report::summarize(med);
        let span = |name: &str| {
            s.spans
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, d)| format!("{:.2}/{:.2}", d.p50, d.p99))
                .unwrap_or_default()
        };
        let files = {
            let v = med
                .nodes
                .iter()
                .filter_map(|r| Some(r.at("initrd")? - r.at("script")?))
                .collect();
            let d = report::dist(v);
            format!("{:.2}/{:.2}", d.p50, d.p99)
        };
        m += &format!(
            "| {n} | {profile} | {server} | {} | {}/{n} | {:.2} ({:.2}-{:.2}) | {} | {} | {} | {} | {:.2} |\n",
            runs.len(),
            s.completed,
            ms[ms.len() / 2],
            ms[0],
            ms[ms.len() - 1],
            span("firmware DHCP"),
            span("TFTP (iPXE binary)"),
            span("iPXE DHCP"),
            files,
            s.server_cpu_s,
        );
    }
    m
}
