//! `stormsim`: one boot storm (`run`) or the benchmark sweep (`bench`: sizes x servers,
//! alternating order per round, JSON + markdown + SVG in `--out`). Needs root
//! (namespaces). `cargo xtask bench storm` builds and runs this in release.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use storm::faults::Fault;
use storm::neigh::Limits;
use storm::node::{Profile, SimConfig};
use storm::power::Power;
use storm::report;
use storm::run::{self, Options, Spec};
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
    /// Power-on spread, seconds (0 = all at once), for `--power sim`.
    #[arg(long, env = "XBOOT_STORM_JITTER", default_value_t = 1.0)]
    jitter: f64,
    /// How the nodes get power: ipmi (a BMC per node, ipmi_sim up to 2,000 nodes and
    /// in-memory responders above, told by `xboot bmc power cycle all --pxe` or, for
    /// dnsmasq + nginx, `ipmipower --cycle`), responder (in-memory BMCs at any N), sim
    /// (the simulator's clock within --jitter, no BMC).
    #[arg(long, env = "XBOOT_STORM_POWER", default_value = "ipmi")]
    power: String,
    /// Nodes still booting after this many seconds count as failed.
    #[arg(long, env = "XBOOT_STORM_DEADLINE", default_value_t = 300)]
    deadline: u64,
    /// The xboot binary (default: next to this program).
    #[arg(long, env = "XBOOT_BIN")]
    xboot: Option<PathBuf>,
    #[arg(long, env = "XBOOT_STORM_OUT", default_value = "target/bench/storm")]
    out: PathBuf,
    /// Flood the server's ARP requests to every node port (what the bridges do by
    /// themselves; each copy costs the sender's CPU on veth) instead of sending each to
    /// its node's port.
    #[arg(long, env = "XBOOT_STORM_FLOOD_ARP")]
    flood_arp: bool,
    /// Flood the server's broadcast DHCP replies (UEFI sets the broadcast flag) to
    /// every node port instead of sending each to the port of its `chaddr`.
    #[arg(long, env = "XBOOT_STORM_FLOOD_DHCP")]
    flood_dhcp: bool,
    /// Shape the server's port with a token bucket (tbf, GSO off): `10gbit` for a
    /// 10 GbE head node; `10gbit+gso` keeps GSO/TSO on. Unshaped by default.
    #[arg(long, env = "XBOOT_STORM_UPLINK")]
    uplink: Option<String>,
    /// Boot files: small (the test kernel and initrd), full (the initrd padded to
    /// ~80 MB) or tiny (64 KiB each: the control-plane storm, N = 5,000).
    #[arg(long, env = "XBOOT_STORM_PAYLOAD", default_value = "small")]
    payload: String,
    /// xdp storms: generic (XDP_TX through srv0's own transmit path, no veth artifact)
    /// or native (the pass program on up0 veth needs: GSO off and one shared ring).
    #[arg(long, env = "XBOOT_STORM_XDP_LINK", default_value = "generic")]
    xdp_link: String,
    /// Skip the floor pass (a bare sendfile server on the same fabric after each storm).
    #[arg(long, env = "XBOOT_STORM_NO_FLOOR")]
    no_floor: bool,
    /// Firmware profile(s): bios, uefi (bench: each in turn; run: the first). Both by
    /// default: the BIOS iPXE ROM goes straight to HTTP, so UEFI's storms are the ones
    /// that measure TFTP.
    #[arg(
        long,
        env = "XBOOT_STORM_PROFILES",
        value_delimiter = ',',
        default_value = "bios,uefi"
    )]
    profiles: Vec<String>,
    /// Two real qemu VMs (SeaBIOS + iPXE, OVMF PXE) boot in each xboot storm; their
    /// server turnarounds are checked against the simulated nodes' p1-p99.
    #[arg(long, env = "XBOOT_STORM_TRUTH")]
    truth: bool,
    /// Count the server's system calls and context switches (`perf stat` on its
    /// processes) for the "server work per node" table.
    #[arg(long, env = "XBOOT_STORM_COUNT_SYSCALLS")]
    count_syscalls: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// ipmi_sim's power-on command for node NODE (internal): holds a connection to the
    /// storm's power socket while the node has power.
    #[command(hide = true)]
    PowerAgent { socket: PathBuf, node: usize },
    /// One storm.
    Run {
        #[arg(long, default_value_t = 20)]
        n: usize,
        /// xboot-userspace, xboot-xdp, dnsmasq+nginx-stock, dnsmasq+nginx-tuned.
        #[arg(long, default_value = "xboot-userspace")]
        server: String,
        /// Neighbour-table limits: default (as the host has them) or raised for the run
        /// (restored after); an overflow makes the run invalid.
        #[arg(long, default_value = "default")]
        neigh: String,
        /// A fault: loss-1, loss-5 (percent), kill-S (kill -9 of xboot S seconds in, and a
        /// restart), reload-S (100 hosts changed S seconds in).
        #[arg(long)]
        fault: Option<String>,
        /// Split the nodes over K segment servers (each its own L2 domain, subnet and
        /// xboot, all in cluster mode on one etcd); standalone by default.
        #[arg(long)]
        segment_servers: Option<String>,
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
        /// Neighbour-table limits, each a cell of the sweep: default (as the host has
        /// them; with both, overflows under default are the finding) and raised
        /// (gc_thresh1/2/3 raised for the run, restored after).
        #[arg(
            long,
            env = "XBOOT_STORM_NEIGH",
            value_delimiter = ',',
            default_value = "default,raised"
        )]
        neigh: Vec<String>,
        /// Faults, each a cell: none, loss-1, loss-5, kill-S, reload-S (kill and reload:
        /// xboot only).
        #[arg(
            long,
            env = "XBOOT_STORM_FAULTS",
            value_delimiter = ',',
            default_value = "none"
        )]
        faults: Vec<String>,
        /// Segment servers, each a cell: K (the nodes split over K segments, each its own
        /// L2 domain, subnet and xboot server, all K in cluster mode on one etcd) or
        /// standalone (one server, no cluster mode), e.g. `standalone,1,2,4`.
        #[arg(
            long,
            env = "XBOOT_STORM_SEGMENT_SERVERS",
            value_delimiter = ',',
            default_value = "standalone"
        )]
        segment_servers: Vec<String>,
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

fn limits(s: &str) -> anyhow::Result<Limits> {
    Limits::parse(s).with_context(|| format!("unknown neighbour limits {s:?}: default or raised"))
}

fn fault(s: &str) -> anyhow::Result<Option<Fault>> {
    if s == "none" {
        return Ok(None);
    }
    Fault::parse(s)
        .map(Some)
        .with_context(|| format!("unknown fault {s:?}: none, loss-P, kill-S, reload-S"))
}

/// `standalone` (None) or a number of segment servers.
fn segment_servers(s: &str) -> anyhow::Result<Option<usize>> {
    if s == "standalone" {
        return Ok(None);
    }
    let k: usize = s
        .parse()
        .ok()
        .filter(|k| (1..=storm::fabric::MAX_SEGMENTS).contains(k))
        .with_context(|| {
            format!(
                "bad segment servers {s:?}: standalone or 1 to {}",
                storm::fabric::MAX_SEGMENTS
            )
        })?;
    Ok(Some(k))
}

fn profile(s: &str) -> anyhow::Result<Profile> {
    Profile::parse(s).with_context(|| format!("unknown profile {s:?}: bios or uefi"))
}

fn payload(c: &Common) -> anyhow::Result<testlab::payload::Payload> {
    let size = storm::servers::PayloadSize::parse(&c.payload)
        .with_context(|| format!("bad --payload {:?}: small, full or tiny", c.payload))?;
    size.payload(
        &testlab::payload::Payload::cached().map_err(anyhow::Error::msg)?,
        &std::path::absolute(c.out.join("work/payload"))?,
    )
    .map_err(anyhow::Error::msg)
}

fn power(s: &str) -> anyhow::Result<Power> {
    Power::parse(s).with_context(|| format!("unknown power {s:?}: ipmi, responder or sim"))
}

/// The storm variables of `c` besides the neighbour limits and the fault.
fn options(
    c: &Common,
    neigh: Limits,
    neigh_variable: bool,
    fault: Option<Fault>,
) -> anyhow::Result<Options> {
    Ok(Options {
        neigh,
        neigh_variable,
        fault,
        flood_arp: c.flood_arp,
        flood_dhcp: c.flood_dhcp,
        uplink: c
            .uplink
            .as_deref()
            .map(|u| {
                storm::fabric::Uplink::parse(u).with_context(|| {
                    format!("bad --uplink {u:?}: a rate such as 10gbit or 500mbit")
                })
            })
            .transpose()?,
        xdp_link: storm::run::XdpLink::parse(&c.xdp_link)
            .with_context(|| format!("bad --xdp-link {:?}: generic or native", c.xdp_link))?,
        floor: !c.no_floor,
        segments: None,
        count_syscalls: c.count_syscalls,
    })
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
        payload: payload(c)?,
        tag,
        deadline: Duration::from_secs(c.deadline),
        truth: c.truth && matches!(k, Kind::XbootUserspace | Kind::XbootXdp),
        power: power(&c.power)?,
        agent: std::env::current_exe()?,
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // ipmi_sim's power-on command: ends on SIGTERM (ipmi_sim's power-off), so before the
    // interrupt handlers below.
    if let Cmd::PowerAgent { socket, node } = &cli.cmd {
        return storm::power::agent(socket, *node)
            .with_context(|| format!("power agent of node {node} on {}", socket.display()));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("stormsim needs root (network namespaces)");
    }
    // Ctrl-C ends the storm and unwinds through the lab's guards (namespaces, server,
    // raised neighbour limits) instead of killing the process with them in place.
    testlab::catch_interrupts();
    match cli.cmd {
        Cmd::PowerAgent { .. } => unreachable!("handled above"),
        Cmd::Run {
            n,
            server,
            neigh,
            fault: f,
            segment_servers: segs,
            common,
        } => {
            let k = kind(&server)?;
            let mut opts = options(
                &common,
                limits(&neigh)?,
                false,
                f.as_deref().map(fault).transpose()?.flatten(),
            )?;
            opts.segments = segs.as_deref().map(segment_servers).transpose()?.flatten();
            let p = profile(
                common
                    .profiles
                    .first()
                    .map(String::as_str)
                    .unwrap_or("bios"),
            )?;
            let o = run::run_with(&spec(n, k, p, &common, "r".into())?, false, &opts)
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
            neigh,
            faults,
            segment_servers: segs,
            common,
        } => {
            let kinds: Vec<Kind> = servers.iter().map(|s| kind(s)).collect::<Result<_, _>>()?;
            let neigh: Vec<Limits> = neigh.iter().map(|s| limits(s)).collect::<Result<_, _>>()?;
            let faults: Vec<Option<Fault>> =
                faults.iter().map(|s| fault(s)).collect::<Result<_, _>>()?;
            let segs: Vec<Option<usize>> = segs
                .iter()
                .map(|s| segment_servers(s))
                .collect::<Result<_, _>>()?;
            bench(&sizes, &kinds, &neigh, &faults, &segs, rounds, &common)?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench(
    sizes: &[usize],
    kinds: &[Kind],
    neigh: &[Limits],
    faults: &[Option<Fault>],
    segs: &[Option<usize>],
    rounds: usize,
    c: &Common,
) -> anyhow::Result<()> {
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
    let pl = payload(c)?;
    let mib =
        |p: &std::path::Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    md += &format!(
        "Payload: {} (kernel {:.2} MiB + initrd {:.2} MiB).\n\n",
        c.payload,
        mib(&pl.kernel),
        mib(&pl.initrd)
    );
    md += &format!(
        "Profiles: bios = BIOS with an iPXE ROM: iPXE's DHCP -> HTTP (the script's URL in the first lease, no TFTP); \
         uefi = EDK2 PXE -> snponly.efi (TFTP size probe, then the read) -> iPXE's DHCP -> HTTP. Boot delay {} s. {} \
         Runs alternate their order per round (A B, then B A) over the cells server x neighbour-table \
         limits ({}: default = as the host has them, raised = gc_thresh1/2/3 raised for the run and restored \
         after). A run is INVALID when a validity check fails (softnet backlog drops, neighbour-table \
         overflows unless the default limits are the variable under test, the simulator at its core's \
         limit). The server's ARP requests are {}; its broadcast DHCP replies are {}. Payload {}; uplink {}{}. \
         After each storm, with its server stopped, a bare sendfile server sends every node the same kernel and initrd \
         on the same fabric at once: the floor; floor ratio = the storm's data phase (first kernel request to last \
         initrd byte) / the floor.\n\n",
        c.boot_delay,
        match power(&c.power)? {
            Power::Sim => format!("Power: the simulator's clock, each node within {} s (no BMC).", c.jitter),
            p => format!(
                "Power: a BMC per node on the server namespace's loopback ({}), told by the server's \
                 BMC client at t = 0: `xboot bmc power cycle all --pxe` for xboot, FreeIPMI's `ipmipower --cycle` \
                 for dnsmasq + nginx (which has no BMC client; ipmipower sets no boot device). The first stage, \
                 power, runs from that command to the node's power-on.",
                match p {
                    Power::Responder => "xboot's in-memory responder BMCs, which power a node on the moment a Chassis Control arrives".to_string(),
                    _ => format!(
                        "one OpenIPMI ipmi_sim each, whose power-on command tells the simulator, up to {} nodes; \
                         above, xboot's in-memory responder BMCs, which power a node on the moment a Chassis Control arrives",
                        storm::power::RESPONDER_ABOVE
                    ),
                }
            ),
        },
        neigh.iter().map(|l| l.name()).collect::<Vec<_>>().join(", "),
        if c.flood_arp {
            "flooded to every node port (--flood-arp)"
        } else {
            "sent to their node's port by the fabric (a switch floods in hardware; on veth each copy costs the sender CPU)"
        },
        if c.flood_dhcp {
            "flooded to every node port (--flood-dhcp)"
        } else {
            "sent to the port of their chaddr"
        },
        c.payload,
        c.uplink
            .as_deref()
            .map(|u| format!(
                "shaped to {u} (tbf on srv0, GSO {})",
                if u.ends_with("+gso") { "on" } else { "off" }
            ))
            .unwrap_or_else(|| "unshaped".into()),
        if kinds.contains(&Kind::XbootXdp) {
            format!("; xboot-xdp's program on srv0 in {} mode", c.xdp_link)
        } else {
            String::new()
        },
    );
    if faults.iter().any(Option::is_some) {
        md += &format!(
            "Faults: {}. In a fault run a node that fails before its kernel boots reboots from power-on (a firmware \
             whose boot order retries the network, up to {} times) and the booted OS retries a refused or reset HTTP \
             request for {} s; kill and reload run against xboot only.\n\n",
            faults
                .iter()
                .map(|f| f.map(|f| f.name()).unwrap_or_else(|| "none".into()))
                .collect::<Vec<_>>()
                .join(", "),
            storm::faults::REBOOTS,
            storm::faults::OS_RETRY.as_secs(),
        );
    }
    if segs.iter().any(Option::is_some) {
        md += &format!(
            "Segment servers: {}. K segment servers = the nodes cut into K runs of consecutive nodes (whole racks \
             but the last), each its own L2 domain (its own spine and leaves), its own subnet 10.(77+s).0.0/16 and \
             its own `xboot serve` in its own namespace with `[[cluster.segment]]` naming that subnet; all K in \
             cluster mode on one etcd member (tmpfs) reached over a control bridge; the inventory imported once \
             through seg0's server, the power command (`xboot bmc power cycle all`) through seg0's server to every \
             node's BMC. No floor pass in those runs. The servers share this machine's 2 cores.\n\n",
            segs.iter()
                .map(|k| k.map_or("standalone".to_string(), |k| k.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let opts_of = |l: Limits, f: Option<Fault>, k: Option<usize>| {
        options(c, l, neigh.len() > 1, f).map(|mut o| {
            o.segments = k;
            o
        })
    };
    let profiles: Vec<Profile> = c
        .profiles
        .iter()
        .map(|p| profile(p))
        .collect::<Result<_, _>>()?;
    for &n in sizes {
        for &p in &profiles {
            for round in 0..rounds {
                let xboot = |k: Kind| matches!(k, Kind::XbootUserspace | Kind::XbootXdp);
                // Segment servers are xboot in cluster mode, without faults.
                let mut order: Vec<(Kind, Limits, usize, Option<usize>)> = kinds
                    .iter()
                    .flat_map(|&k| {
                        neigh.iter().flat_map(move |&l| {
                            (0..faults.len())
                                .filter(move |&fi| {
                                    xboot(k) || !faults[fi].is_some_and(|f| f.xboot_only())
                                })
                                .flat_map(move |fi| {
                                    segs.iter()
                                        .filter(move |g| {
                                            g.is_none() || (xboot(k) && faults[fi].is_none())
                                        })
                                        .map(move |&g| (k, l, fi, g))
                                })
                        })
                    })
                    .collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for (k, l, fi, g) in order {
                    if testlab::interrupted() {
                        bail!("interrupted");
                    }
                    let f = faults[fi];
                    let fname = f.map(|f| f.name()).unwrap_or_else(|| "none".into());
                    // The server by its index: xboot-userspace and xboot-xdp share an initial
                    // (and their work directories did).
                    let tag = format!(
                        "{n}{}{}{}{fi}{round}{}",
                        &p.name()[..1],
                        Kind::ALL.iter().position(|x| *x == k).unwrap_or(9),
                        &l.name()[..1],
                        g.map_or(String::new(), |g| format!("k{g}")),
                    );
                    let gname =
                        g.map_or("standalone".to_string(), |g| format!("{g} segment servers"));
                    eprintln!(
                        "storm: N = {n}, {}, {}, neighbour limits {}, fault {fname}, {gname} (round {})",
                        p.name(),
                        k.name(),
                        l.name(),
                        round + 1
                    );
                    let o = match run::run_with(&spec(n, k, p, c, tag)?, false, &opts_of(l, f, g)?)
                    {
                        Ok(o) => o,
                        Err(e) => {
                            eprintln!("storm: N = {n}, {}: {e}", k.name());
                            md += &format!("### {} - N = {n}: did not run: {e}\n\n", k.name());
                            continue;
                        }
                    };
                    let s = report::summarize(&o);
                    eprintln!(
                        "storm:   completed {}/{n}, makespan {:?} s, server CPU {:.2} s, neighbour overflows {}{}",
                        s.completed,
                        s.makespan_s,
                        s.server_cpu_s,
                        s.neigh_overflows,
                        if s.valid {
                            String::new()
                        } else {
                            format!("; INVALID: {}", s.invalid.join("; "))
                        }
                    );
                    std::fs::write(
                        c.out.join(format!(
                            "storm-{n}-{}-{}-{}-{fname}{}-r{round}.svg",
                            p.name(),
                            k.name().replace('+', "-"),
                            l.name(),
                            g.map_or(String::new(), |g| format!("-k{g}")),
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
    md += &report::segment_tables(&outcomes);
    md += &report::work_table(&outcomes);
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

/// One row per (N, profile, server, neighbour limits): median and range over the rounds
/// of makespan and server CPU, stage p50/p99 of the median run, how many runs were valid.
fn comparison(outcomes: &[run::Outcome]) -> String {
    let mut m = String::from(
        "## Comparison\n\nMedian (min-max) over the runs of each cell; stage p50/p99 in seconds from the run with the median makespan.\n\n\
         | N | profile | server | power | neighbour limits | fault | runs (valid) | completed (min) | makespan s | server CPU s | server CPU ms/node | power p50/p99 | fw DHCP p50/p99 | TFTP first reply p50/p99 | TFTP p50/p99 | iPXE DHCP p50/p99 | files p50/p99 | data phase s | floor s | floor ratio | neighbour overflows (max) |\n\
         |---:|---|---|---|---|---|---:|---:|---|---|---|---|---|---|---|---|---|---|---|---|---:|\n",
    );
    let fault_of = |o: &run::Outcome| {
        o.fault
            .as_ref()
            .map(|f| f.fault.clone())
            .unwrap_or_else(|| "none".into())
    };
    let k_of = |o: &run::Outcome| o.segments.as_ref().map(|s| s.servers);
    #[allow(clippy::type_complexity)]
    let mut keys: Vec<(usize, &str, &str, Option<usize>, &str, &str, String)> = outcomes
        .iter()
        .map(|o| {
            (
                o.n,
                o.profile,
                o.server,
                k_of(o),
                o.power_mode,
                o.neigh.limits.name(),
                fault_of(o),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    for (n, profile, server_kind, k, power, limits, fault) in keys {
        let runs: Vec<&run::Outcome> = outcomes
            .iter()
            .filter(|o| {
                o.n == n
                    && o.profile == profile
                    && o.server == server_kind
                    && k_of(o) == k
                    && o.power_mode == power
                    && o.neigh.limits.name() == limits
                    && fault_of(o) == fault
            })
            .collect();
        let server = match k {
            Some(k) => format!("{server_kind} x{k} (cluster)"),
            None => server_kind.to_string(),
        };
        let sums: Vec<report::Summary> = runs.iter().map(|o| report::summarize(o)).collect();
        // Runs with failures have no makespan: they sort last (NaN), so the median is
        // the median of what happened, failures included.
        let mut by_makespan: Vec<usize> = (0..runs.len()).collect();
        by_makespan.sort_by(|&a, &b| {
            let k = |i: usize| runs[i].makespan_s.unwrap_or(f64::INFINITY);
            k(a).total_cmp(&k(b))
        });
        let med = by_makespan[by_makespan.len() / 2];
        let s = &sums[med];
        let range = |v: Vec<f64>| {
            let mut v = v;
            v.sort_by(f64::total_cmp);
            let f = |x: f64| {
                if x.is_finite() {
                    format!("{x:.2}")
                } else {
                    "-".into()
                }
            };
            format!("{} ({}-{})", f(v[v.len() / 2]), f(v[0]), f(v[v.len() - 1]))
        };
        let span = |name: &str| {
            s.spans
                .iter()
                .find(|(n, _)| *n == name)
                // A stage no node passed (a BIOS boot has no TFTP): "-".
                .map(|(_, d)| match d.reached {
                    0 => "-".to_string(),
                    _ => format!("{:.2}/{:.2}", d.p50, d.p99),
                })
                .unwrap_or_default()
        };
        let files = {
            let v = runs[med]
                .nodes
                .iter()
                .filter_map(|r| Some(r.at("initrd")? - r.at("script")?))
                .collect();
            let d = report::dist(v);
            format!("{:.2}/{:.2}", d.p50, d.p99)
        };
        m += &format!(
            "| {n} | {profile} | {server} | {power} | {limits} | {fault} | {} ({}) | {}/{n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            runs.len(),
            sums.iter().filter(|s| s.valid).count(),
            sums.iter().map(|s| s.completed).min().unwrap_or(0),
            range(runs.iter().map(|o| o.makespan_s.unwrap_or(f64::INFINITY)).collect()),
            range(runs.iter().map(|o| o.server_cpu_s).collect()),
            range(sums.iter().map(|s| s.server_cpu_ms_per_node).collect()),
            span("power (command -> on)"),
            span("firmware DHCP"),
            span("TFTP first reply"),
            span("TFTP (iPXE binary)"),
            span("iPXE DHCP"),
            files,
            range(runs.iter().map(|o| o.data_phase_s.unwrap_or(f64::INFINITY)).collect()),
            range(
                runs.iter()
                    .map(|o| o.floor.as_ref().map(|f| f.seconds).unwrap_or(f64::NAN))
                    .collect()
            ),
            range(runs.iter().map(|o| o.floor_ratio.unwrap_or(f64::INFINITY)).collect()),
            sums.iter().map(|s| s.neigh_overflows).max().unwrap_or(0),
        );
    }
    m
}
