//! `cargo xtask bench bmc`: wall time to query and to power-cycle N BMCs, N up to 1,000,
//! for xboot vs FreeIPMI's `ipmipower` (one call for all hosts, one event loop) vs
//! `ipmitool` (one process per BMC, all at once), against N OpenIPMI `ipmi_sim`
//! simulators on loopback (127.201.X.Y:623, ~6 MiB each), in one run.
//!
//! Every timed run must succeed for every BMC (checked from each tool's output), or it is
//! reported as failed. Results: `OUT/bmc.json` (every run) and `OUT/bmc.md` (medians).
//! Needs root (port 623) and the Debian packages openipmi, ipmitool, freeipmi-tools.
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use testlab::children;

use anyhow::{bail, Context};
use serde::Serialize;

const USER: &str = "admin";
const PASS: &str = "secret";
/// Get Channel Authentication Capabilities (IPMI v1.5, no session): the readiness probe.
const PROBE: [u8; 23] = [
    0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0x20, 0x18, 0xc8, 0x81, 0x00, 0x38,
    0x8e, 0x04, 0xb5,
];

#[derive(clap::Parser, Debug, Clone)]
pub struct Args {
    /// BMC counts to measure (each uses the first N simulators).
    #[arg(long, value_delimiter = ',', default_value = "10,100,500,1000")]
    pub sizes: Vec<usize>,
    /// Timed runs per (count, operation, tool); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Leave ipmitool (one process per BMC) out above this many BMCs.
    #[arg(long, default_value_t = 1000)]
    pub ipmitool_max: usize,
    /// The xboot binary to run as `XBOOT --config FILE bmc power ...` (default: the
    /// release build, built first).
    #[arg(long)]
    pub xboot: Option<String>,
    #[arg(long, default_value = "target/bench/bmc")]
    pub out: PathBuf,
    /// Also measure the power-on stagger `bmc.fanout = F`, `bmc.delay = D` seconds
    /// (`F/D`): one `xboot bmc power cycle` of the largest N with it, reporting the most
    /// BMCs started in any D-second window (must be at most F) and the wall time.
    #[arg(long, value_name = "F/D")]
    pub stagger: Option<String>,
}

/// `F/D` of `--stagger`.
fn parse_stagger(s: &str) -> anyhow::Result<(usize, u64)> {
    let (f, d) = s
        .split_once('/')
        .context("--stagger takes F/D (BMCs per seconds), e.g. 20/1")?;
    let (f, d): (usize, u64) = (f.trim().parse()?, d.trim().parse()?);
    if f == 0 || d == 0 {
        bail!("--stagger {s}: F and D must be at least 1");
    }
    Ok((f, d))
}

/// The most entries of `sorted_ms` within any window of `window_ms` (half-open).
fn max_in_window(sorted_ms: &[u64], window_ms: u64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted_ms.len() {
        while sorted_ms[hi] >= sorted_ms[lo] + window_ms {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// One staggered cycle of `n` BMCs: (ok, wall ms, most starts in a window, last start ms).
fn run_stagger(ctx: &Ctx, n: usize, f: usize, d: u64) -> anyhow::Result<String> {
    let base = std::fs::read_to_string(ctx.dir.join("xboot.toml"))?;
    let cfg = ctx.dir.join("xboot-stagger.toml");
    std::fs::write(&cfg, format!("{base}fanout = {f}\ndelay = {d}\n"))?;
    let cmd = format!(
        "{} --config {} bmc power cycle b[0000-{:04}] --json",
        ctx.xboot,
        cfg.display(),
        n - 1
    );
    let start = Instant::now();
    let out = testlab::peers::command("sh")
        .args(["-c", &cmd])
        .stderr(Stdio::inherit())
        .output()?;
    let wall = start.elapsed().as_secs_f64();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut started: Vec<u64> = v["results"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["started_ms"].as_u64()).collect())
        .unwrap_or_default();
    started.sort_unstable();
    let most = max_in_window(&started, d * 1000);
    let ok = v["ok"].as_u64().unwrap_or(0);
    let last = started.last().copied().unwrap_or(0);
    Ok(format!(
        "- stagger {f} per {d} s, cycle of {n} BMCs: {ok}/{n} ok in {wall:.1} s; at most {most} \
         started in any {d} s window (limit {f}: {}); last start at {:.1} s (ideal {:.1} s)",
        if most <= f { "kept" } else { "EXCEEDED" },
        last as f64 / 1e3,
        ((n - 1) / f) as f64 * d as f64
    ))
}

/// One simulator process.
struct Sim {
    addr: SocketAddr,
    child: Child,
}

/// All simulators; killed on drop (their power-on children first), by pid.
struct Fleet {
    sims: Vec<Sim>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in &self.sims {
            for pid in children(s.child.id()) {
                let _ = testlab::peers::command("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
        for s in &mut self.sims {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 201, (i / 250) as u8, (i % 250 + 1) as u8], 623))
}

fn start_fleet(n: usize, dir: &Path) -> anyhow::Result<Fleet> {
    let mut fleet = Fleet {
        sims: Vec::with_capacity(n),
    };
    for i in 0..n {
        let addr = sim_addr(i);
        let d = dir.join(format!("sim{i:04}"));
        std::fs::create_dir_all(d.join("state"))?;
        let ip = addr.ip();
        std::fs::write(
            d.join("lan.conf"),
            format!(
                "name \"b{i}\"\nset_working_mc 0x20\n  startlan 1\n    addr {ip} 623\n    priv_limit admin\n\
                 \x20   allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n\
                 \x20 serial 15 {ip} 9623 codec VM ipmb 0x20\n  startcmd \"/bin/sleep 100000\"\n  startnow false\n\
                 \x20 poweroff_wait 1\n  kill_wait 1\n  user 2 true \"{USER}\" \"{PASS}\" admin 10 none md2 md5 straight\n"
            ),
        )?;
        std::fs::write(
            d.join("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
        )?;
        let child = testlab::peers::command("ipmi_sim")
            .args(["-c", "lan.conf", "-f", "bmc.emu", "-s", "state", "-n"])
            .current_dir(&d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ipmi_sim (Debian package openipmi)")?;
        fleet.sims.push(Sim { addr, child });
    }
    let pids: Vec<String> = fleet
        .sims
        .iter()
        .map(|s| s.child.id().to_string())
        .collect();
    std::fs::write(dir.join("pids"), pids.join("\n"))?;
    wait_ready(&fleet)?;
    Ok(fleet)
}

/// Kills simulators a previous, interrupted run left behind: the pids it recorded whose
/// working directory is still one of its simulator directories.
fn kill_stale(dir: &Path) {
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
    for pid in pids.lines().filter_map(|p| p.parse::<u32>().ok()) {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        if cwd.starts_with(dir) {
            for c in children(pid).into_iter().chain([pid]) {
                let _ = testlab::peers::command("kill")
                    .args(["-9", &c.to_string()])
                    .status();
            }
        }
    }
}

/// Probes every simulator until all answer (60 s at most).
fn wait_ready(fleet: &Fleet) -> anyhow::Result<()> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut pending: std::collections::HashSet<SocketAddr> =
        fleet.sims.iter().map(|s| s.addr).collect();
    let until = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 256];
    while !pending.is_empty() {
        if Instant::now() > until {
            bail!(
                "{} of {} ipmi_sim never answered",
                pending.len(),
                fleet.sims.len()
            );
        }
        for a in &pending {
            let _ = sock.send_to(&PROBE, a);
        }
        let end = Instant::now() + Duration::from_millis(200);
        while Instant::now() < end {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                pending.remove(&from);
            }
        }
    }
    Ok(())
}

#[derive(Serialize, Clone)]
struct Measure {
    n: usize,
    op: &'static str,
    tool: &'static str,
    /// Wall time of each run, ms.
    runs_ms: Vec<f64>,
    median_ms: f64,
    /// Runs in which some BMC failed, with the first failure's text.
    failures: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Xboot,
    XbootSuite3,
    Ipmipower,
    Ipmitool,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Xboot => "xboot",
            Tool::XbootSuite3 => "xboot --cipher 3",
            Tool::Ipmipower => "ipmipower",
            Tool::Ipmitool => "ipmitool x N",
        }
    }
}

struct Ctx {
    xboot: String,
    dir: PathBuf,
}

/// One timed run: Ok(wall ms) if every BMC succeeded, Err(text) otherwise.
fn run_once(ctx: &Ctx, tool: Tool, op: &str, n: usize) -> anyhow::Result<Result<f64, String>> {
    let nodeset = format!("b[0000-{:04}]", n - 1);
    let hosts: Vec<String> = (0..n).map(|i| sim_addr(i).ip().to_string()).collect();
    let start = Instant::now();
    let verdict = match tool {
        Tool::Xboot | Tool::XbootSuite3 => {
            let mut cmd = format!(
                "{} --config {} bmc power {op} {nodeset} --json",
                ctx.xboot,
                ctx.dir.join("xboot.toml").display(),
            );
            if tool == Tool::XbootSuite3 {
                cmd += " --cipher 3";
            }
            let out = testlab::peers::command("sh")
                .args(["-c", &cmd])
                .stderr(Stdio::inherit())
                .output()?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            match v["ok"].as_u64() {
                Some(ok) if ok as usize == n && out.status.success() => Ok(ms),
                _ => Err(first_failure(&v).unwrap_or_else(|| {
                    String::from_utf8_lossy(&out.stdout)
                        .chars()
                        .take(300)
                        .collect()
                })),
            }
        }
        Tool::Ipmipower => {
            let flag = if op == "status" { "--stat" } else { "--cycle" };
            let out = testlab::peers::command("ipmipower")
                .args([
                    "-D",
                    "LAN_2_0",
                    "-W",
                    "opensesspriv",
                    "-u",
                    USER,
                    "-p",
                    PASS,
                    "-h",
                    &hosts.join(","),
                    flag,
                ])
                .output()?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let text = String::from_utf8_lossy(&out.stdout);
            let want = if op == "status" {
                [": on", ": off"]
            } else {
                [": ok", ": ok"]
            };
            let good = text
                .lines()
                .filter(|l| want.iter().any(|w| l.ends_with(w)))
                .count();
            if good == n {
                Ok(ms)
            } else {
                Err(format!(
                    "{good}/{n} ok; {}",
                    text.lines()
                        .find(|l| !want.iter().any(|w| l.ends_with(w)))
                        .unwrap_or("")
                ))
            }
        }
        Tool::Ipmitool => {
            let verb = if op == "status" { "status" } else { "cycle" };
            let children: Vec<Child> = hosts
                .iter()
                .map(|h| {
                    testlab::peers::command("ipmitool")
                        .args([
                            "-I", "lanplus", "-C", "3", "-H", h, "-U", USER, "-P", PASS, "chassis",
                            "power", verb,
                        ])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                })
                .collect::<Result<_, _>>()?;
            let mut failed = 0;
            for mut c in children {
                if !c.wait()?.success() {
                    failed += 1;
                }
            }
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if failed == 0 {
                Ok(ms)
            } else {
                Err(format!("{failed}/{n} ipmitool processes failed"))
            }
        }
    };
    Ok(verdict)
}

fn first_failure(v: &serde_json::Value) -> Option<String> {
    let r = v["results"]
        .as_array()?
        .iter()
        .find(|r| r["reason"] != "ok")?;
    Some(format!(
        "{}/{} ok; {}: {} {}",
        v["ok"], v["total"], r["name"], r["reason"], r["message"]
    ))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        f64::NAN
    } else {
        s[s.len() / 2]
    }
}

fn mem_available_kib() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    m.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn write_inputs(dir: &Path, n: usize) -> anyhow::Result<()> {
    let hosts: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"name": format!("b{i:04}"), "interfaces": [{"ip": sim_addr(i).ip().to_string(), "bmc": true}]}))
        .collect();
    std::fs::write(dir.join("hosts.json"), serde_json::to_vec(&hosts)?)?;
    std::fs::write(
        dir.join("xboot.toml"),
        // The inventory comes from the hosts file; the API socket points nowhere, so a
        // server running on this machine is not asked for its inventory instead.
        format!(
            "hosts = \"{}\"\n[api]\nsocket_path = \"{}\"\n\
             [bmc]\nuser = \"{USER}\"\npassword = \"{PASS}\"\nconcurrency = 1024\ntimeout_ms = 1000\nretries = 3\n",
            dir.join("hosts.json").display(),
            dir.join("no-server.sock").display()
        ),
    )?;
    Ok(())
}

/// `cargo xtask bench bmc [ARGS...]` (see [`Args`]).
pub fn run(argv: &[String]) -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::try_parse_from(
        std::iter::once("bench bmc".to_string()).chain(argv.iter().cloned()),
    )?;
    let max = args.sizes.iter().copied().max().context("no sizes")?;
    if max > 62_500 {
        bail!("at most 62500 BMCs (127.201.0.0/16)");
    }
    let need_kib = max as u64 * 8 * 1024 + (2 << 20);
    if mem_available_kib() < need_kib {
        bail!(
            "{max} ipmi_sim need about {} MiB; only {} MiB available",
            need_kib >> 10,
            mem_available_kib() >> 10
        );
    }
    std::fs::create_dir_all(&args.out)?;
    let out = std::fs::canonicalize(&args.out)?;
    let xboot = match &args.xboot {
        Some(x) => x.clone(),
        None => crate::util::build_release_xboot()?.display().to_string(),
    };
    let simdir = out.join("sims");
    kill_stale(&simdir);
    let _ = std::fs::remove_dir_all(&simdir);
    write_inputs(&out, max)?;
    eprintln!("bench bmc: starting {max} ipmi_sim on 127.201.0.0/16");
    let t = Instant::now();
    let fleet = start_fleet(max, &simdir)?;
    let rss: u64 = fleet.sims.iter().map(|s| rss_kib(s.child.id())).sum();
    eprintln!(
        "bench bmc: {max} simulators up in {:.1} s, {} MiB RSS",
        t.elapsed().as_secs_f64(),
        rss >> 10
    );
    let ctx = Ctx {
        xboot,
        dir: out.clone(),
    };
    let mut results = vec![];
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    for &n in &sizes {
        for op in ["status", "cycle"] {
            let tools: Vec<Tool> = [
                Tool::Xboot,
                Tool::XbootSuite3,
                Tool::Ipmipower,
                Tool::Ipmitool,
            ]
            .into_iter()
            .filter(|t| *t != Tool::Ipmitool || n <= args.ipmitool_max)
            .collect();
            for m in measure(&ctx, &tools, op, n, args.runs)? {
                eprintln!(
                    "  n={n:5} {op:6} {:18} median {:9.1} ms  {:?}",
                    m.tool, m.median_ms, m.failures
                );
                results.push(m);
            }
        }
    }
    // every machine must be on again after the last cycle (ipmi_sim restarts them on its
    // ~1 s tick, a thousand forks under load take a while)
    let powered = || {
        fleet
            .sims
            .iter()
            .filter(|s| !children(s.child.id()).is_empty())
            .count()
    };
    let until = Instant::now() + Duration::from_secs(15);
    while powered() < max && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    let on = powered();
    let stagger = match args.stagger.as_deref().map(parse_stagger).transpose()? {
        Some((f, d)) => {
            let line = run_stagger(&ctx, max, f, d)?;
            eprintln!("bench bmc: {line}");
            Some(line)
        }
        None => None,
    };
    drop(fleet);
    let mut report = report(&results, max, rss, on, &sizes);
    if let Some(line) = stagger {
        let _ = writeln!(
            report,
            "\nPower-on stagger (`bmc.fanout` / `bmc.delay`):\n{line}"
        );
    }
    std::fs::write(out.join("bmc.md"), &report)?;
    let json = serde_json::json!({"bmcs": max, "sim_rss_kib": rss, "cores": num_cpus(), "results": results});
    std::fs::write(out.join("bmc.json"), serde_json::to_vec_pretty(&json)?)?;
    println!("{report}");
    eprintln!(
        "bench bmc: wrote {} and {}",
        out.join("bmc.json").display(),
        out.join("bmc.md").display()
    );
    Ok(())
}

/// Runs every tool `runs` times, round-robin (run 1 of each tool, then run 2 ...), so
/// that load from outside the benchmark falls on all tools alike.
fn measure(
    ctx: &Ctx,
    tools: &[Tool],
    op: &'static str,
    n: usize,
    runs: usize,
) -> anyhow::Result<Vec<Measure>> {
    let mut runs_ms = vec![vec![]; tools.len()];
    let mut failures = vec![vec![]; tools.len()];
    for round in 0..=runs {
        for (i, &tool) in tools.iter().enumerate() {
            if op == "cycle" {
                // ipmi_sim acts on a ~1 s tick and merges a cycle into a pending one; let
                // the previous cycle and its process restarts finish first
                std::thread::sleep(Duration::from_millis(1500 + 2 * n as u64));
            }
            let r = run_once(ctx, tool, op, n)?;
            // round 0 is an untimed warm-up (page cache, the simulators' first session)
            match r {
                _ if round == 0 => {}
                Ok(ms) => runs_ms[i].push(ms),
                Err(e) => failures[i].push(e),
            }
        }
    }
    Ok(tools
        .iter()
        .enumerate()
        .map(|(i, t)| Measure {
            n,
            op,
            tool: t.name(),
            median_ms: median(&runs_ms[i]),
            runs_ms: runs_ms[i].clone(),
            failures: failures[i].clone(),
        })
        .collect())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn report(results: &[Measure], max: usize, rss: u64, on: usize, sizes: &[usize]) -> String {
    let tools = [
        Tool::Xboot,
        Tool::XbootSuite3,
        Tool::Ipmipower,
        Tool::Ipmitool,
    ];
    let mut s = String::new();
    let _ = writeln!(s, "# BMC fan-out benchmark\n");
    let _ = writeln!(
        s,
        "{max} OpenIPMI ipmi_sim on loopback ({} MiB RSS in all), {} cores. Wall time of one call \
         for all N BMCs, median of the timed runs; every run must succeed for all N.\n",
        rss >> 10,
        num_cpus()
    );
    let _ = writeln!(
        s,
        "| N | operation | {} | xboot / ipmipower |",
        tools.map(|t| t.name()).join(" | ")
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let mut verdicts = vec![];
    for &n in sizes {
        for op in ["status", "cycle"] {
            let get = |t: Tool| {
                results
                    .iter()
                    .find(|m| m.n == n && m.op == op && m.tool == t.name())
            };
            let cell = |t: Tool| match get(t) {
                None => "-".to_string(),
                Some(m) if !m.failures.is_empty() => {
                    format!("{:.1} ms ({} failed)", m.median_ms, m.failures.len())
                }
                Some(m) => format!("{:.1} ms", m.median_ms),
            };
            let ratio = match (get(Tool::Xboot), get(Tool::Ipmipower)) {
                (Some(x), Some(p)) => {
                    let x3 = get(Tool::XbootSuite3).map_or(f64::NAN, |m| m.median_ms);
                    verdicts.push((
                        n,
                        op,
                        x.median_ms <= p.median_ms,
                        x.median_ms,
                        x3 <= p.median_ms,
                    ));
                    format!("{:.2}", x.median_ms / p.median_ms)
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {n} | {op} | {} | {ratio} |",
                tools.map(cell).join(" | ")
            );
        }
    }
    let _ = writeln!(s, "\nTargets:");
    let yes = |b: bool| if b { "yes" } else { "NO" };
    let _ = writeln!(
        s,
        "- xboot (defaults: suite 17, then 3) at least as fast as ipmipower at every N: {}",
        yes(verdicts.iter().all(|v| v.2))
    );
    let _ = writeln!(
        s,
        "- xboot --cipher 3 (ipmipower's suite, no fallback round trip) at least as fast at every N: {}",
        yes(verdicts.iter().all(|v| v.4))
    );
    for (_, op, _, ms, _) in verdicts.iter().filter(|v| v.0 == 1000) {
        let _ = writeln!(
            s,
            "- 1,000 BMCs {op} under 5 s: {} ({ms:.0} ms)",
            if *ms < 5000.0 { "yes" } else { "NO" }
        );
    }
    let _ = writeln!(s, "- after the last cycle, machines powered on: {on}/{max}");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn stagger_arguments_and_window_count() {
        assert_eq!(super::parse_stagger("20/1").unwrap(), (20, 1));
        assert!(super::parse_stagger("20").is_err());
        assert!(super::parse_stagger("0/1").is_err());
        assert_eq!(super::max_in_window(&[0, 0, 1000, 1000, 2001], 1000), 2);
        assert_eq!(super::max_in_window(&[0, 10, 20, 999], 1000), 4);
        assert_eq!(super::max_in_window(&[], 1000), 0);
    }
}
