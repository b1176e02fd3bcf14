//! One storm: a fresh fabric for N nodes, one server under test started in it, every
//! node powered on at once (within the jitter) and driven to `complete` on one
//! current-thread runtime, the server's CPU and memory sampled at 10 Hz; then teardown
//! (server first, then every namespace).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use testlab::payload::Payload;

use crate::fabric::{node_mac, node_name, Fabric};
use crate::faults::{self, Fault};
use crate::neigh::{self, Limits, NeighGuard};
use crate::node::{Node, NodeResult, Recovery, SimConfig, STAGES};
use crate::power::{self, Power};
use crate::servers::{self, Kind, Running};

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub n: usize,
    pub kind: Kind,
    pub sim: SimConfig,
    /// The `xboot` binary.
    pub xboot: PathBuf,
    /// Work files (configs, logs) go here.
    pub dir: PathBuf,
    pub payload: Payload,
    /// Names the run's namespaces (letters and digits).
    pub tag: String,
    /// Give up on nodes still running after this long.
    pub deadline: Duration,
    /// Two real qemu VMs boot in the same storm and are checked against the nodes
    /// ([`crate::vms`]; xboot only).
    pub truth: bool,
    /// How the nodes get power ([`crate::power`]): BMCs told by the server's power
    /// command, or the simulator's clock.
    pub power: Power,
    /// The stormsim binary: ipmi_sim's power-on command (`stormsim power-agent`).
    pub agent: PathBuf,
}

/// What a storm varies besides the server and the size (the bench's variables).
#[derive(Clone, Debug)]
pub struct Options {
    /// The kernel's neighbour-table limits during the storm.
    pub neigh: Limits,
    /// Whether the limits are a variable of the sweep (see [`neigh::Record`]).
    pub neigh_variable: bool,
    /// A fault injected into the storm (see [`crate::faults`]).
    pub fault: Option<Fault>,
    /// The server's ARP requests flooded to every node port, as the bridges do by
    /// themselves (false: sent to the one port, [`crate::fabric::arp_to_port_rules`]).
    pub flood_arp: bool,
    /// The server's broadcast DHCP replies flooded to every node port (false: sent to
    /// the port owning `chaddr`, [`crate::fabric::dhcp_to_port_rules`]).
    pub flood_dhcp: bool,
    /// The server's port shaped to this rate (tbf, GSO off).
    pub uplink: Option<crate::fabric::Uplink>,
    /// How xboot's XDP program runs on the veth (xdp storms).
    pub xdp_link: XdpLink,
    /// After the storm, the floor pass ([`crate::floor`]) on the same fabric.
    pub floor: bool,
    /// The nodes split over this many segment servers, xboot in cluster mode on one
    /// etcd ([`crate::segments`]); None: one standalone server.
    pub segments: Option<usize>,
    /// Count the server's system calls and context switches ([`crate::counters`]).
    pub count_syscalls: bool,
}

/// Where an xdp storm's XDP_TX replies go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpLink {
    /// Generic (skb) mode on srv0: XDP_TX through srv0's own transmit path, GSO kept
    /// ([`Fabric::xdp_generic_link`]).
    Generic,
    /// Native mode, with the pass program on up0 that veth needs for it: the artifact
    /// (GSO off, one 256-frame ring for bulk TCP and XDP_TX), kept to show it.
    Native,
}

impl XdpLink {
    pub fn parse(s: &str) -> Option<XdpLink> {
        match s {
            "generic" => Some(XdpLink::Generic),
            "native" => Some(XdpLink::Native),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            XdpLink::Generic => "generic",
            XdpLink::Native => "native",
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            neigh: Limits::Default,
            neigh_variable: false,
            fault: None,
            flood_arp: false,
            flood_dhcp: false,
            uplink: None,
            xdp_link: XdpLink::Generic,
            floor: true,
            segments: None,
            count_syscalls: false,
        }
    }
}

/// One sample of the server's cost.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub t: f64,
    pub cpu_s: f64,
    pub rss_kib: u64,
    /// Bytes srv0 has sent since the power command.
    #[serde(default)]
    pub tx_bytes: u64,
    /// How late the simulator's loop woke a 10 ms timer, at most, since the sample
    /// before (ms): a node's request or answer waits about as long for the loop, so the
    /// stage times are the server's only while this stays small.
    #[serde(default)]
    pub loop_lag_ms: f64,
}

/// Packets the lab itself lost during the storm (validity: all 0). The simulator's
/// side: what the node kernels dropped of what it sent, and the send calls that
/// failed; the fabric's: frames its bridges' ports could not pass on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LabDrops {
    /// Node eth0 transmit drops (the fabric port's receive backlog was full).
    pub node_tx_dropped: u64,
    /// `Udp.SndbufErrors` in the node namespaces.
    pub node_udp_sndbuf_errors: u64,
    /// `Ip.OutDiscards` in the node namespaces.
    pub node_ip_out_discards: u64,
    /// sendto() errors the simulator saw (DHCP frames, TFTP datagrams).
    pub send_errors: u64,
    /// Transmit drops of the fabric namespace's ports, both ways.
    pub fabric_tx_dropped: u64,
    /// Of those, frames on their way to a node (node ports, spine to leaf).
    pub fabric_tx_dropped_to_nodes: u64,
}

impl LabDrops {
    /// Everything the simulator's side lost.
    pub fn simulator(&self) -> u64 {
        self.node_tx_dropped
            + self.node_udp_sndbuf_errors
            + self.node_ip_out_discards
            + self.send_errors
    }
}

/// Sums [`crate::nsops::node_drops`] over the nodes, and the fabric's transmit drops.
fn lab_drops(fabric: &Fabric, n: usize) -> ([u64; 3], [u64; 2]) {
    let mut sum = [0u64; 3];
    for i in 0..n {
        if let Ok(d) = fabric.ops.run_blocking(i, crate::nsops::node_drops) {
            for (s, v) in sum.iter_mut().zip(d) {
                *s += v;
            }
        }
    }
    let mut fab = [0u64; 2];
    if let Ok(m) = fabric
        .ops
        .run_blocking(fabric.fabric_idx(), crate::nsops::dev_drops)
    {
        for (name, (_, tx)) in m {
            fab[0] += tx;
            // p<i> (to node i) and ts<k> (spine to leaf k) carry frames towards nodes.
            if name.starts_with('p') || name.starts_with("ts") {
                fab[1] += tx;
            }
        }
    }
    (sum, fab)
}

/// What srv0's driver dropped during a storm.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PortDrops {
    /// veth's `xdp_tx_errors` (its ethtool statistics, all queues): XDP_TX replies
    /// that found the peer's ring full.
    pub xdp_tx_errors: u64,
    /// srv0's transmit drops (/proc/net/dev).
    pub tx_dropped: u64,
}

/// srv0's counters for [`PortDrops`], read in the server namespace.
fn port_counters(fabric: &Fabric) -> [u64; 2] {
    let xdp = testlab::peers::command("ip")
        .args(["netns", "exec", &fabric.server_ns])
        .arg(testlab::peers::program("ethtool"))
        .args(["-S", "srv0"])
        .output()
        .map(|o| xdp_tx_errors(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or(0);
    let tx = fabric
        .ops
        .run_blocking(fabric.server_idx(), crate::nsops::dev_drops)
        .ok()
        .and_then(|m| m.get("srv0").map(|d| d.1))
        .unwrap_or(0);
    [xdp, tx]
}

/// The sum of every `...xdp_tx_errors` line of `ethtool -S` (veth has one per queue).
pub fn xdp_tx_errors(ethtool_s: &str) -> u64 {
    ethtool_s
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .ends_with("xdp_tx_errors")
                .then(|| v.trim().parse::<u64>().ok())?
        })
        .sum()
}

/// A finished storm.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub n: usize,
    pub server: &'static str,
    pub profile: &'static str,
    pub boot_delay_s: f64,
    pub jitter_s: f64,
    pub setup_s: f64,
    pub nodes: Vec<NodeResult>,
    /// Power command to the last `complete` (None if a node failed).
    pub makespan_s: Option<f64>,
    /// Server CPU (user + system) during the storm, all its processes.
    pub server_cpu_s: f64,
    pub server_peak_rss_kib: u64,
    pub samples: Vec<Sample>,
    /// The server's boot events per node (xboot only), when asked for.
    #[serde(skip)]
    pub events: Vec<testlab::serve::BootEvent>,
    /// Where the server's logs are.
    pub logs: String,
    /// Changes of the server namespace's SNMP/TCP counters during the storm (non-zero
    /// ones: UDP receive-buffer drops, TCP retransmissions ...).
    pub server_net: std::collections::BTreeMap<String, u64>,
    /// Host-wide softnet backlog drops and neighbour-table overflows during the storm
    /// (validity checks: both should be 0).
    pub softnet_drops: u64,
    pub neigh_table_fulls: u64,
    /// The neighbour-table limits of the storm and its overflow counter.
    pub neigh: neigh::Record,
    /// Packets the lab (simulator, fabric) lost.
    pub lab_drops: LabDrops,
    /// net.core.netdev_max_backlog during the storm.
    pub netdev_max_backlog: u64,
    /// The fault injected, and what it did.
    pub fault: Option<faults::Record>,
    /// ARP requests of the server sent to their node's port instead of flooded (None:
    /// flooded, the rewrite was off).
    pub arp_redirected: Option<u64>,
    /// Broadcast DHCP replies sent to their node's port (None: flooded).
    pub dhcp_redirected: Option<u64>,
    /// The payload's bytes per node (kernel + initrd).
    pub payload_bytes: u64,
    /// The server's port shaped to this rate (`10gbit`), if it was.
    pub uplink: Option<String>,
    /// What srv0 sent during the storm (packets here are GSO packets: bytes per packet
    /// is how large the server's sends let them grow).
    pub server_tx: crate::counters::Tx,
    /// The server's system calls and context switches during the storm
    /// (`--count-syscalls`).
    pub server_work: Option<crate::counters::Work>,
    /// xdp storms: how the XDP program ran on the veth.
    pub xdp_link: Option<XdpLink>,
    /// srv0 during the storm: frames its driver dropped (XDP_TX errors of veth's
    /// ethtool counters, transmit drops).
    pub server_port: PortDrops,
    /// The floor pass after the storm.
    pub floor: Option<crate::floor::Floor>,
    /// The storm's data phase ([`crate::floor::data_phase`]) and its ratio to the floor.
    pub data_phase_s: Option<f64>,
    pub floor_ratio: Option<f64>,
    /// `xboot status --json` after the storm (xboot only): its DHCP/XDP counters.
    pub server_status: Option<serde_json::Value>,
    /// CPU the simulator itself used during the storm (user + system, seconds): if it
    /// nears the storm's wall time, the run measured the simulator.
    pub simulator_cpu_s: f64,
    /// The simulator's descriptors (its limit, peak, spares, setns helper).
    pub sim_fds: SimFds,
    /// The host's 1-minute load average when the storm started (other work on the
    /// machine makes a run noisy: it should be near 0).
    pub loadavg_1m: f64,
    /// The truth VMs' boots and turnaround checks, when they were in the storm.
    pub truth: Option<crate::vms::TruthOutcome>,
    /// sim, or the BMCs the nodes had (ipmi_sim, responder).
    pub power_mode: &'static str,
    /// The power command and what it did (None: the simulator's clock).
    pub power: Option<power::Record>,
    /// The segment servers, when the storm was split over them (`server_cpu_s` is then
    /// all of theirs; the samples too).
    pub segments: Option<crate::segments::SegmentsRun>,
}

/// Raises this process's open-files limit to `want` (the storm's descriptors:
/// [`fds_needed`]) and returns the soft limit it then has. A hard limit below it can only
/// be raised with CAP_SYS_RESOURCE (this machine's root has no such capability, and
/// its hard limit is 20,000): refused then with what to do, before any namespace is
/// made, rather than failing part-way through the set-up.
fn raise_nofile(want: u64) -> Result<u64, String> {
    // SAFETY: getrlimit/setrlimit on our own process with a struct we own.
    let (cur, max) = unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
        }
        // As far as the hard limit goes (the spare sockets use what is left over).
        let mut up = r;
        up.rlim_cur = r.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
            r.rlim_cur = r.rlim_max;
        }
        if r.rlim_cur >= want {
            return Ok(r.rlim_cur);
        }
        up.rlim_cur = want;
        up.rlim_max = want;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
            return Ok(want);
        }
        (r.rlim_cur, r.rlim_max)
    };
    Err(format!(
        "this storm needs {want} open files and this process may have at most {max} (soft limit \
         {cur}; raising the hard limit needs CAP_SYS_RESOURCE): run it with `ulimit -Hn {want}` \
         set first, or fewer nodes"
    ))
}

/// Descriptors a storm of `n` nodes needs at least: per node the fixed sockets and one in
/// use at a time ([`crate::nsops::FIXED_FDS`], [`crate::nsops::INFLIGHT_FDS`]), and 1,024
/// for the rest (runtime, server pipes, BMC socket, captures).
pub fn fds_needed(n: usize) -> u64 {
    (crate::nsops::FIXED_FDS + crate::nsops::INFLIGHT_FDS) * n as u64 + 1024
}

/// The simulator's descriptors in one storm.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SimFds {
    /// Open-files limit of the simulator.
    pub limit: u64,
    /// Most descriptors open at a 100 ms sample of the storm.
    pub peak: u64,
    /// The same of the server's processes (summed).
    pub server_peak: u64,
    /// TFTP and TCP sockets each node opened before the storm (the rest were opened
    /// through the setns helper as needed).
    pub spare_tftp: usize,
    pub spare_tcp: usize,
    /// Jobs of the setns helper during the storm, the seconds it spent in them and in
    /// namespace switches.
    pub helper_jobs: u64,
    pub helper_busy_s: f64,
    pub helper_switch_s: f64,
}

/// Descriptors process `pid` has open ("self": this one).
fn open_fds(pid: &str) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Waits (30 s at most) until the kernel has freed the deleted namespaces: their memory
/// (SUnreclaim) stops shrinking, so the next storm does not share the CPU with it.
fn settle() {
    let sunreclaim = || {
        std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("SUnreclaim:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    let mut last = sunreclaim();
    while t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        let now = sunreclaim();
        if last.saturating_sub(now) < 2048 {
            return;
        }
        last = now;
    }
}

/// The SNMP/TCP counters of every server namespace, summed.
fn server_net_counters(fabric: &Fabric) -> std::collections::BTreeMap<String, u64> {
    let mut sum = std::collections::BTreeMap::new();
    for s in 0..fabric.servers_ns.len() {
        let m = fabric
            .ops
            .run_blocking(fabric.server_idx_of(s), crate::nsops::net_counters)
            .unwrap_or_default();
        for (k, v) in m {
            *sum.entry(k).or_insert(0) += v;
        }
    }
    sum
}

fn server_cost(pids: &[u32]) -> (f64, u64) {
    pids.iter()
        .map(|&p| servers::cpu_and_rss(p))
        .fold((0.0, 0), |(c, r), (c2, r2)| (c + c2, r + r2))
}

/// Runs one storm; `events` = also read the server's events of every node (xboot).
pub fn run(spec: &Spec, events: bool) -> Result<Outcome, String> {
    run_with(spec, events, &Options::default())
}

/// [`run`] with the sweep's variables.
pub fn run_with(spec: &Spec, events: bool, opts: &Options) -> Result<Outcome, String> {
    let fd_limit = raise_nofile(fds_needed(spec.n))?;
    // What is left over goes to spare sockets opened before the storm (all of them up to
    // ~2,000 nodes here, none at 5,000).
    let spares = crate::nsops::Spares::within(
        fd_limit.saturating_sub(fds_needed(spec.n)) / spec.n.max(1) as u64,
    );
    // Raised for the whole run (set-up included: the server ARPs for its nodes as they
    // come), restored when this returns, fails or unwinds.
    let _neigh_guard = match opts.neigh {
        Limits::Raised => Some(
            NeighGuard::raise(spec.n)
                .map_err(|e| format!("cannot raise the neighbour-table limits: {e}"))?,
        ),
        Limits::Default => None,
    };
    // The lab's own queue (see hostsysctl): raised for every run, restored after.
    let backlog = crate::hostsysctl::AtLeast::raise(
        std::path::Path::new(crate::hostsysctl::NETDEV_MAX_BACKLOG),
        crate::hostsysctl::backlog_for(spec.n),
    )
    .map_err(|e| format!("cannot raise the backlog: {e}"))?;
    let gc_thresh = neigh::read(std::path::Path::new(neigh::SYSCTL_DIR))
        .map_err(|e| format!("cannot read the neighbour-table limits: {e}"))?;
    let seg = match opts.segments {
        Some(k) => {
            if spec.truth || opts.fault.is_some() {
                return Err("a storm over segment servers has no truth VMs and no fault".into());
            }
            if !matches!(spec.kind, Kind::XbootUserspace | Kind::XbootXdp) {
                return Err(format!(
                    "{}: segment servers are xboot in cluster mode",
                    spec.kind.name()
                ));
            }
            Some(crate::fabric::Segments::new(spec.n, k)?)
        }
        None => None,
    };
    let t_setup = Instant::now();
    let fabric = match seg {
        Some(s) => Fabric::build_in(s, true, &spec.tag)?,
        None => Fabric::build(spec.n, &spec.tag)?,
    };
    if spec.truth {
        crate::vms::attach(&fabric.fabric_ns)?;
    }
    let extra = if spec.truth {
        crate::vms::hosts(testlab::serve::IMAGE)
    } else {
        vec![]
    };
    std::fs::create_dir_all(&spec.dir).map_err(|e| format!("{}: {e}", spec.dir.display()))?;
    if spec.kind == Kind::XbootXdp {
        match opts.xdp_link {
            XdpLink::Native => fabric
                .ops
                .run_blocking(fabric.fabric_idx(), || crate::xdp_pass::attach("up0"))
                .map_err(|e| format!("XDP pass program on up0: {e}"))?,
            XdpLink::Generic => fabric.xdp_generic_link()?,
        }
    }
    if !opts.flood_arp {
        fabric.arp_to_port()?;
    }
    if !opts.flood_dhcp {
        fabric.dhcp_to_port()?;
    }
    if let Some(u) = opts.uplink {
        fabric.shape(u)?;
    }
    if let Some(f) = opts.fault {
        if f.xboot_only() && !matches!(spec.kind, Kind::XbootUserspace | Kind::XbootXdp) {
            return Err(format!("fault {} needs xboot", f.name()));
        }
        if let Fault::Loss { permille } = f {
            faults::install_loss(&fabric.fabric_ns, permille)?;
        }
    }
    let bmcs = spec.power.bmcs(spec.n);
    // Segment servers: etcd first, then each server (empty), then the inventory written
    // once through segment 0's, until each serves its part.
    let etcd = match seg {
        Some(_) => Some(crate::segments::Etcd::start(
            &fabric.fabric_ns,
            &spec.tag,
            &spec.dir.join("etcd.log"),
        )?),
        None => None,
    };
    let seg_server = |s: usize| {
        seg.zip(etcd.as_ref())
            .map(|(segments, e)| servers::SegmentServer {
                segments,
                segment: s,
                endpoints: e.endpoints.clone(),
            })
    };
    let mut server = servers::start_in(
        spec.kind,
        &spec.xboot,
        &fabric.server_ns,
        &spec.dir.join("server"),
        spec.n,
        &extra,
        &spec.payload,
        bmcs.is_some(),
        seg_server(0).as_ref(),
    )?;
    let mut others: Vec<Running> = vec![];
    let mut import_s = 0.0;
    if let Some(sg) = seg {
        for s in 1..sg.k {
            others.push(servers::start_in(
                spec.kind,
                &spec.xboot,
                &fabric.servers_ns[s],
                &spec.dir.join(format!("server{s}")),
                spec.n,
                &[],
                &spec.payload,
                bmcs.is_some(),
                seg_server(s).as_ref(),
            )?);
        }
        let t_import = Instant::now();
        if let Running::Xboot(x) = &server {
            servers::import(&spec.xboot, x)?;
        }
        let all: Vec<&Running> = std::iter::once(&server).chain(others.iter()).collect();
        crate::segments::wait_served(&all, &sg, Duration::from_secs(300))?;
        import_s = t_import.elapsed().as_secs_f64();
    }
    let other_pids = |o: &[Running]| o.iter().flat_map(Running::pids).collect::<Vec<u32>>();
    let setup_s = t_setup.elapsed().as_secs_f64();
    // The setns helper's results wake their node from another thread, into the
    // runtime's remote queue; by default that queue is taken from once per 31 polls
    // while any task is ready, so in a storm (1,000 nodes' timers and sockets) a
    // node waited seconds for its finished neighbour entry. Taken from first.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .global_queue_interval(1)
        .build()
        .map_err(|e| e.to_string())?;
    let pids = server.pids();
    let (cpu0, _) = server_cost(&pids);
    let others_cpu0: Vec<f64> = others.iter().map(|r| server_cost(&r.pids()).0).collect();
    let etcd_cpu0 = etcd
        .as_ref()
        .map_or(0.0, |e| servers::cpu_and_rss(e.pid()).0);
    let (soft0, full0) = crate::nsops::global_counters();
    let loadavg_1m = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    // Every node's sockets, opened in its namespace before the power command.
    let t_socks = Instant::now();
    let mut socks = Vec::with_capacity(spec.n);
    for i in 0..spec.n {
        let rcvbuf = spec.sim.rcvbuf;
        socks.push(
            fabric
                .ops
                .run_blocking(i, move || crate::nsops::node_sockets(rcvbuf, spares))
                .map_err(|e| format!("node {i}: sockets: {e}"))?,
        );
    }
    let setup_s = setup_s + t_socks.elapsed().as_secs_f64();
    // A BMC per node, answering before the power command.
    let fleet = match bmcs {
        Some(b) => Some(power::Fleet::start(
            b,
            spec.n,
            &fabric.server_ns,
            &fabric.ops,
            fabric.server_idx(),
            &spec.dir.join("bmcs"),
            &spec.agent,
        )?),
        None => None,
    };
    let setup_s = setup_s + fleet.as_ref().map_or(0.0, |f| f.setup_s);
    // The server namespace's counters from here: the BMCs' start-up (the readiness
    // probes, answered from the same namespace) is the lab's traffic, not the storm's,
    // so the report's UDP receive-buffer drops are the server's and the BMCs' during
    // the storm.
    let net0 = server_net_counters(&fabric);
    let command = fleet.as_ref().map(|_| power::Command {
        client: match &server {
            Running::Xboot(_) => power::Client::Xboot,
            Running::Stack { .. } => power::Client::Ipmipower,
        },
        server_ns: fabric.server_ns.clone(),
        xboot: spec.xboot.clone(),
        config: match &server {
            Running::Xboot(s) => s.files.config.clone(),
            Running::Stack { .. } => PathBuf::new(),
        },
        n: spec.n,
        // The truth VMs are in the inventory without a BMC (their ipmi_sim is powered
        // by ipmitool): the nodes' set then, not `all`.
        nodeset: if spec.truth {
            format!("n[0001-{:04}]", spec.n)
        } else {
            "all".into()
        },
        pxe: bmcs == Some(power::Bmcs::Responder),
    });
    // The truth VMs power on with the nodes (they boot on after the nodes are done;
    // their wait is in `finish`, after the storm's figures are taken).
    let vms = match spec.truth {
        true => Some(crate::vms::TruthVms::start(
            &fabric.fabric_ns,
            &fabric.server_ns,
            &spec.dir.join("truth"),
            testlab::serve::HTTP_PORT,
        )?),
        false => None,
    };
    let (node_drops0, fabric_drops0) = lab_drops(&fabric, spec.n);
    let port0 = port_counters(&fabric);
    let tx0 = fabric.server_tx();
    let counting = match opts.count_syscalls {
        true => Some(crate::counters::Counting::start(&pids, &spec.dir)?),
        false => None,
    };
    let sim0 = servers::cpu_and_rss(std::process::id()).0;
    let helper0 = fabric.ops.stats();
    let t0 = Instant::now();
    let (nodes, samples, mut fault, cpu_killed, mut power_rec, (fds_peak, server_fds_peak)) = rt
        .block_on(storm(
            spec,
            opts,
            &fabric,
            &mut server,
            &other_pids(&others),
            t0,
            socks,
            fleet.as_ref(),
            command,
        ));
    if let (Some(r), Some(f)) = (power_rec.as_mut(), fleet.as_ref()) {
        r.bmcs = f.bmcs.name().into();
        r.setup_s = f.setup_s;
        r.bmc_rss_mib = f.rss_kib as f64 / 1024.0;
        r.powered = f.powered();
    }
    drop(fleet);
    if let (Some(rec), Some(Fault::Loss { .. })) = (fault.as_mut(), opts.fault) {
        rec.dropped = faults::loss_counters(&fabric.fabric_ns).unwrap_or_default();
    }
    let simulator_cpu_s = servers::cpu_and_rss(std::process::id()).0 - sim0;
    let helper = fabric.ops.stats();
    let sim_fds = SimFds {
        limit: fd_limit,
        peak: fds_peak,
        server_peak: server_fds_peak,
        spare_tftp: spares.tftp,
        spare_tcp: spares.tcp,
        helper_jobs: helper.0 - helper0.0,
        helper_busy_s: helper.1 - helper0.1,
        helper_switch_s: helper.2 - helper0.2,
    };
    if testlab::interrupted() {
        return Err("interrupted".into());
    }
    let server_work = counting.map(|c| c.finish()).transpose()?;
    let server_tx = fabric.server_tx().since(tx0);
    let pids = server.pids();
    let (cpu1, rss1) = server_cost(&pids);
    let others_cost1: Vec<(f64, u64)> = others.iter().map(|r| server_cost(&r.pids())).collect();
    let etcd_cpu1 = etcd
        .as_ref()
        .map_or(0.0, |e| servers::cpu_and_rss(e.pid()).0);
    let (soft1, full1) = crate::nsops::global_counters();
    let (node_drops1, fabric_drops1) = lab_drops(&fabric, spec.n);
    let port1 = port_counters(&fabric);
    let net1 = server_net_counters(&fabric);
    let server_net = net1
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(*net0.get(k).unwrap_or(&0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect();
    let server_status = match &server {
        Running::Xboot(s) => testlab::peers::own(&spec.xboot)
            .args(["status", "--json", "--socket"])
            .arg(&s.files.socket)
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok()),
        _ => None,
    };
    let makespan_s = nodes
        .iter()
        .map(|r| r.at("complete"))
        .try_fold(0.0f64, |m, t| t.map(|t| m.max(t)));
    let events = match (&server, events) {
        (Running::Xboot(s), true) => {
            let set = format!("n[0001-{:04}]", spec.n);
            s.events(&set)?
        }
        _ => vec![],
    };
    let truth = match vms {
        Some(v) => Some(v.finish(spec.deadline.max(Duration::from_secs(300)))?),
        None => None,
    };
    let segments_run = match seg {
        Some(sg) => {
            let all: Vec<&Running> = std::iter::once(&server).chain(others.iter()).collect();
            let set = format!("n[0001-{:04}]", spec.n);
            let mut per_server = vec![];
            for (s, r) in all.iter().enumerate() {
                let Running::Xboot(x) = r else { continue };
                let status = x.status().ok();
                let evs = x.events(&set)?;
                let (answered, foreign) = crate::segments::answered(&sg, s, &evs);
                let (completed, makespan_s) = crate::segments::segment_nodes(&sg, s, &nodes);
                let (cpu_s, rss_kib) = match s {
                    0 => (cpu1 - cpu0, rss1),
                    s => (
                        others_cost1[s - 1].0 - others_cpu0[s - 1],
                        others_cost1[s - 1].1,
                    ),
                };
                let n_s = sg.range(s).len();
                per_server.push(crate::segments::ServerRun {
                    id: format!("seg{s}"),
                    subnet: sg.subnet(s),
                    nodes: n_s,
                    hosts: status
                        .as_ref()
                        .and_then(|v| v["hosts"].as_u64())
                        .unwrap_or(0),
                    served_hosts: status
                        .as_ref()
                        .and_then(|v| v["served_hosts"].as_u64())
                        .unwrap_or(0),
                    cpu_s,
                    cpu_ms_per_node: cpu_s * 1e3 / n_s.max(1) as f64,
                    rss_kib,
                    completed,
                    makespan_s,
                    answered,
                    foreign: foreign.len(),
                    foreign_names: foreign.into_iter().take(5).collect(),
                    status,
                });
            }
            Some(crate::segments::SegmentsRun {
                servers: sg.k,
                etcd_members: crate::segments::ETCD_MEMBERS,
                import_s,
                etcd_cpu_s: etcd_cpu1 - etcd_cpu0,
                per_server,
            })
        }
        None => None,
    };
    let others_cpu_s: f64 = others_cost1
        .iter()
        .zip(&others_cpu0)
        .map(|(c1, c0)| c1.0 - c0)
        .sum();
    drop(others);
    drop(etcd);
    let arp_redirected = (!opts.flood_arp).then(|| fabric.arp_redirected());
    let send_errors = nodes
        .iter()
        .map(|r| u64::from(r.dhcp_send_errors + r.tftp_send_errors))
        .sum();
    let dhcp_redirected = (!opts.flood_dhcp).then(|| fabric.dhcp_redirected());
    let logs = server.log_hint();
    drop(server);
    // The floor pass is the standalone fabric's (one server namespace, one subnet).
    let floor = match opts.floor && seg.is_none() {
        true => {
            let files = vec![
                ("/vmlinuz".to_string(), spec.payload.kernel.clone()),
                ("/initrd.gz".to_string(), spec.payload.initrd.clone()),
            ];
            let f = crate::floor::run(&fabric, &rt, &files, spec.sim.rcvbuf, spec.deadline)?;
            Some(f)
        }
        false => None,
    };
    drop(fabric);
    settle();
    let data_phase_s = crate::floor::data_phase(&nodes);
    let floor_ratio = floor.as_ref().and_then(|f| crate::floor::ratio(&nodes, f));
    let payload_bytes = [&spec.payload.kernel, &spec.payload.initrd]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    Ok(Outcome {
        n: spec.n,
        server: spec.kind.name(),
        profile: spec.sim.profile.name(),
        boot_delay_s: spec.sim.boot_delay.as_secs_f64(),
        jitter_s: spec.sim.jitter.as_secs_f64(),
        setup_s,
        makespan_s,
        // A killed server's CPU up to its death, plus its successor's.
        server_cpu_s: others_cpu_s
            + match cpu_killed {
                Some(k) => k - cpu0 + cpu1,
                None => cpu1 - cpu0,
            },
        server_peak_rss_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        samples,
        nodes,
        events,
        logs,
        server_net,
        softnet_drops: soft1 - soft0,
        neigh_table_fulls: full1.saturating_sub(full0),
        neigh: neigh::Record {
            limits: opts.neigh,
            variable: opts.neigh_variable,
            gc_thresh,
            table_fulls_before: full0,
            table_fulls_after: full1,
        },
        netdev_max_backlog: backlog.value,
        fault,
        arp_redirected,
        dhcp_redirected,
        payload_bytes,
        uplink: opts.uplink.map(|u| u.name()),
        server_tx,
        server_work,
        xdp_link: (spec.kind == Kind::XbootXdp).then_some(opts.xdp_link),
        server_port: PortDrops {
            xdp_tx_errors: port1[0].saturating_sub(port0[0]),
            tx_dropped: port1[1].saturating_sub(port0[1]),
        },
        floor,
        data_phase_s,
        floor_ratio,
        lab_drops: LabDrops {
            node_tx_dropped: node_drops1[0].saturating_sub(node_drops0[0]),
            node_udp_sndbuf_errors: node_drops1[1].saturating_sub(node_drops0[1]),
            node_ip_out_discards: node_drops1[2].saturating_sub(node_drops0[2]),
            send_errors,
            fabric_tx_dropped: fabric_drops1[0].saturating_sub(fabric_drops0[0]),
            fabric_tx_dropped_to_nodes: fabric_drops1[1].saturating_sub(fabric_drops0[1]),
        },
        server_status,
        simulator_cpu_s,
        sim_fds,
        loadavg_1m,
        truth,
        power_mode: bmcs.map_or("sim", power::Bmcs::name),
        power: power_rec,
        segments: segments_run,
    })
}

/// The storm's nodes, sampled at 10 Hz, with the fault (kill, reload) struck on time.
/// With BMCs (`fleet`), `command` is sent at `t0` and each node boots when its BMC gives
/// it power. Returns the nodes, the samples, the fault's record, after a kill the killed
/// server's CPU seconds, and the power command's record.
#[allow(clippy::too_many_arguments)]
async fn storm(
    spec: &Spec,
    opts: &Options,
    fabric: &Fabric,
    server: &mut Running,
    others: &[u32],
    t0: Instant,
    socks: Vec<crate::nsops::NodeSockets>,
    fleet: Option<&power::Fleet>,
    command: Option<power::Command>,
) -> (
    Vec<NodeResult>,
    Vec<Sample>,
    Option<faults::Record>,
    Option<f64>,
    Option<power::Record>,
    (u64, u64),
) {
    // The power command first: the nodes' lines keep what their BMCs did meanwhile.
    let mut power_cmd = command.map(|c| tokio::task::spawn_blocking(move || c.run(t0)));
    let mut power_rec: Option<power::Record> = None;
    let mut abandon: Option<tokio::time::Instant> = None;
    let recovery = match opts.fault {
        Some(_) => Recovery {
            reboots: faults::REBOOTS,
            os_retry: faults::OS_RETRY,
        },
        None => Recovery::default(),
    };
    let progress: std::sync::Arc<[std::sync::atomic::AtomicU8]> = (0..spec.n)
        .map(|_| std::sync::atomic::AtomicU8::new(0))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, socks) in socks.into_iter().enumerate() {
        let node = Node::new(
            i,
            node_name(i),
            node_mac(i),
            fabric.ops.clone(),
            spec.sim.clone(),
            t0,
            socks,
        )
        .with_recovery(recovery)
        .with_progress(progress.clone());
        let node = match fleet {
            Some(f) => node.with_power(f.line(i)),
            None => node,
        };
        set.spawn(node.run());
    }
    let mut record = opts.fault.map(|f| faults::Record {
        fault: f.name(),
        ..faults::Record::default()
    });
    // Kill and reload strike at their time.
    let mut strike = match opts.fault {
        Some(Fault::Kill { after_s }) | Some(Fault::Reload { after_s, .. }) => {
            Some(tokio::time::Instant::from_std(t0) + Duration::from_secs_f64(after_s))
        }
        _ => None,
    };
    let mut restart: Option<tokio::task::JoinHandle<Result<testlab::serve::Server, String>>> = None;
    let mut killed_at = None;
    let mut cpu_killed = None;
    let mut past_script: Vec<usize> = vec![];
    let script_idx = STAGES.iter().position(|s| *s == "script").unwrap_or(0) as u8;
    let mut samples = vec![];
    let mut results: Vec<NodeResult> = Vec::with_capacity(spec.n);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // The loop's lag: a task that wakes every 10 ms notes how late it was woken (the
    // largest since the last sample). The nodes' tasks wait in the same queue.
    let lag_us = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let probe = {
        let lag_us = lag_us.clone();
        tokio::spawn(async move {
            loop {
                let due = tokio::time::Instant::now() + Duration::from_millis(10);
                tokio::time::sleep_until(due).await;
                let late = due.elapsed().as_micros() as u64;
                lag_us.fetch_max(late, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    // Segment servers but segment 0's (`others`) count with it.
    let all_pids = |server: &Running| [server.pids(), others.to_vec()].concat();
    let mut cpu_base = server_cost(&all_pids(&*server)).0;
    let tx_base = fabric.server_tx().bytes;
    let deadline = tokio::time::Instant::now() + spec.deadline;
    let mut fds_peak = open_fds("self");
    let mut server_fds_peak = 0;
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                Some(Ok(res)) => results.push(res),
                Some(Err(e)) => eprintln!("storm: a node task died: {e}"),
                None => break,
            },
            _ = tick.tick() => {
                let loop_lag_ms = lag_us.swap(0, std::sync::atomic::Ordering::Relaxed) as f64 / 1e3;
                let (cpu, rss) = server_cost(&all_pids(&*server));
                let t = t0.elapsed().as_secs_f64();
                let tx = fabric
                    .ops
                    .run(fabric.server_idx(), crate::counters::server_tx)
                    .await
                    .map_or(0, |t| t.bytes);
                samples.push(Sample {
                    t,
                    cpu_s: cpu - cpu_base,
                    rss_kib: rss,
                    tx_bytes: tx.saturating_sub(tx_base),
                    loop_lag_ms,
                });
                fds_peak = fds_peak.max(open_fds("self"));
                server_fds_peak = server_fds_peak
                    .max(all_pids(&*server).iter().map(|p| open_fds(&p.to_string())).sum());
                // Ctrl-C (stormsim catches it): end the storm; the caller's guards
                // (server, namespaces, neighbour limits) then tear the lab down.
                if testlab::interrupted() {
                    set.abort_all();
                    break;
                }
            }
            _ = async { tokio::time::sleep_until(strike.expect("guarded")).await }, if strike.is_some() => {
                strike = None;
                let at = t0.elapsed().as_secs_f64();
                past_script = (0..spec.n)
                    .filter(|&i| progress[i].load(std::sync::atomic::Ordering::Relaxed) >= script_idx)
                    .collect();
                let rec = record.as_mut().expect("a fault to strike");
                rec.at_s = Some(at);
                rec.past_script = past_script.len();
                if let Running::Xboot(s) = &*server {
                    let pid = s.pid() as libc::pid_t;
                    match opts.fault {
                        Some(Fault::Kill { .. }) => {
                            let (cpu, _) = server_cost(&server.pids());
                            cpu_killed = Some(cpu);
                            // SAFETY: kill(2) on our own child's pid (not reaped yet).
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                            killed_at = Some(Instant::now());
                            let (xboot, netns, files) =
                                (spec.xboot.clone(), fabric.server_ns.clone(), s.files.clone());
                            restart = Some(tokio::task::spawn_blocking(move || {
                                restart_xboot(pid, &xboot, &netns, files)
                            }));
                        }
                        Some(Fault::Reload { hosts, .. }) => {
                            rec.detail = match reload_xboot(pid, &s.files, hosts) {
                                Ok(()) => format!("{hosts} hosts switched to image {}; SIGHUP", servers::IMAGE_B),
                                Err(e) => format!("reload failed: {e}"),
                            };
                        }
                        _ => {}
                    }
                }
            }
            r = async { restart.as_mut().expect("guarded").await }, if restart.is_some() => {
                restart = None;
                let rec = record.as_mut().expect("a fault was struck");
                match r {
                    Ok(Ok(new)) => {
                        rec.restart_s = killed_at.map(|k| k.elapsed().as_secs_f64());
                        rec.detail = format!("kill -9 of pid {}, restarted as pid {}", server.pids().first().copied().unwrap_or(0), new.pid());
                        *server = Running::Xboot(new);
                        // Samples go on from the killed server's last figure, adding the
                        // new process's whole CPU (its start-up included).
                        cpu_base -= cpu_killed.unwrap_or(0.0);
                    }
                    Ok(Err(e)) => rec.detail = format!("kill -9, restart failed: {e}"),
                    Err(e) => rec.detail = format!("kill -9, restart task failed: {e}"),
                }
            }
            r = async { power_cmd.as_mut().expect("guarded").await }, if power_cmd.is_some() => {
                power_cmd = None;
                power_rec = Some(r.unwrap_or_else(|e| power::Record {
                    failures: vec![format!("power command task: {e}")],
                    ..power::Record::default()
                }));
                abandon = Some(tokio::time::Instant::now() + power::POWER_GRACE);
            }
            _ = async { tokio::time::sleep_until(abandon.expect("guarded")).await }, if abandon.is_some() => {
                abandon = None;
                if let (Some(f), Some(r)) = (fleet, power_rec.as_mut()) {
                    r.abandoned = f.abandon_unpowered();
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                set.abort_all();
                break;
            }
        }
    }
    probe.abort();
    // A power command still running at the deadline (or Ctrl-C) is waited for: its
    // thread cannot be aborted.
    if let Some(c) = power_cmd.take() {
        power_rec = c.await.ok();
    }
    // Nodes still running at the deadline.
    let done: std::collections::HashSet<usize> = results.iter().map(|r| r.node).collect();
    for i in (0..spec.n).filter(|i| !done.contains(i)) {
        let unpowered = fleet.is_some_and(|f| !f.ever_powered(i));
        results.push(NodeResult {
            node: i,
            name: node_name(i),
            mac: crate::node::mac_string(node_mac(i)),
            failure: Some(match unpowered {
                true => (
                    "off".into(),
                    "no_power".into(),
                    format!("its BMC had not powered it on after {:?}", spec.deadline),
                ),
                false => (
                    "unknown".into(),
                    "deadline".into(),
                    format!("still booting after {:?}", spec.deadline),
                ),
            }),
            end: spec.deadline.as_secs_f64(),
            ..NodeResult::default()
        });
    }
    results.sort_by_key(|r| r.node);
    if let Some(rec) = record.as_mut() {
        rec.past_script_finished = past_script
            .iter()
            .filter(|&&i| results[i].at("complete").is_some() && results[i].reboots.is_empty())
            .count();
    }
    (
        results,
        samples,
        record,
        cpu_killed,
        power_rec,
        (fds_peak, server_fds_peak),
    )
}

/// After `kill -9` of `pid`: waits until it has died (its ports are free), keeps its log
/// as `xboot.log.killed`, and starts xboot again on the same files (config, inventory,
/// state directory with the token key).
fn restart_xboot(
    pid: libc::pid_t,
    xboot: &Path,
    netns: &str,
    files: testlab::serve::LabFiles,
) -> Result<testlab::serve::Server, String> {
    // Dead = every thread gone: the leader turns zombie when it exits, while its other
    // threads may still hold the sockets and the inventory store's lock.
    let dead = || {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_string()));
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        match state.as_deref() {
            None => true,
            Some("Z") | Some("X") => threads <= 1,
            _ => false,
        }
    };
    let t0 = Instant::now();
    while !dead() {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!("pid {pid} still alive 10 s after SIGKILL"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::rename(&files.log, files.log.with_extension("log.killed"));
    testlab::serve::Server::start(xboot, netns, files, Duration::from_secs(60))
}

/// Rewrites the hosts file with `hosts` hosts on the second image (atomically: a new
/// file renamed over it) and sends SIGHUP to xboot.
fn reload_xboot(
    pid: libc::pid_t,
    files: &testlab::serve::LabFiles,
    hosts: usize,
) -> Result<(), String> {
    let text = std::fs::read_to_string(&files.hosts).map_err(|e| e.to_string())?;
    let changed = faults::changed_hosts(&text, hosts, servers::IMAGE_B)?;
    let tmp = files.hosts.with_extension("json.new");
    std::fs::write(&tmp, changed).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &files.hosts).map_err(|e| e.to_string())?;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    Ok(())
}

/// The `xboot` binary next to the running executable's target directory (`target/
/// {debug,release}/xboot`), or `$XBOOT_BIN`.
pub fn find_xboot(profile_dir: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("XBOOT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cands = vec![];
    if let Some(d) = profile_dir {
        cands.push(d.join("xboot"));
    }
    for up in exe.ancestors().skip(1).take(3) {
        cands.push(up.join("xboot"));
    }
    cands.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "no xboot binary in {cands:?}: build it (cargo build -p boot-user) or set XBOOT_BIN"
        )
    })
}
