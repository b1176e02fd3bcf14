//! `cargo xtask bench cluster [--hosts 1000,10000,100000] [--modes userspace,xdp]
//! [--edits 40] [--rate 200]`: cluster mode at N hosts (issue 16's cluster targets). Per N
//! and `dhcp.mode` (the modes in turn at each N, so both see the same load), in
//! namespaces of its own:
//!
//! ```text
//! netns hub: bridge br0 10.64.0.1/10; etcd members m1..m3 on 10.64.0.1:2379N (data on tmpfs)
//!   |-- netns s1..s3: xboot serve, 10.64.0.11..13/10, one [[cluster.segment]]; in xdp
//!   |                 mode its XDP program on sN (generic mode: see PORT_XDP_MTU)
//!   '-- netns cli: c0 10.64.0.2/10, the DHCP relay the probes come from (giaddr), which
//!                  forwards each DISCOVER to the servers asked (a relay with helper addresses)
//! ```
//! - load: N hosts written through s1's API in requests of 5,000 (each split by the
//!   server into etcd transactions of `cluster.max_txn_ops`), then until every server
//!   holds N; in xdp mode each server is then restarted on its snapshot, as its maps are
//!   sized for the inventory it starts with (they started empty);
//! - change -> answered by every server: an address moved (a change checked against the
//!   whole inventory) and `unprovision` (field-only) through s1's API, one at a time; a
//!   1,000-host batch of address moves. "Answered" is a real relayed DHCP exchange with
//!   each server: the time from the API request to the first OFFER with the new address
//!   (or, for `unprovision`, with no boot file), per server; reported is the slowest
//!   server's, p50/p99/max. In xdp mode the OFFER comes from the BPF maps, so this is
//!   the time to the maps updated; who answered (the program's `answered` counter, the
//!   slow path's `offers`, frames the program passed up) is read from each server's
//!   `/v1/status` around the probes and the streams, and reported as XDP's share;
//! - apply cost: 200 address moves back to back (no probes): each follower's CPU time
//!   per change (/proc/PID/stat) and the validation time its follower reports per batch
//!   (`/v1/status` `counters.cluster`), against N;
//! - cold start of s3 from its local snapshot (a change made while it was down): seconds
//!   to its API answering and to its DHCP answering the change;
//! - DHCP failover: DISCOVERs at `--rate` per second relayed to s1 and s2, s1 SIGKILLed:
//!   DISCOVERs no server answered within 1 s;
//! - etcd leader SIGKILLed during the same stream and a run of writes through s1: the
//!   unanswered DISCOVERs, and the longest time between two committed writes;
//! - at the end, each server's RSS and, in xdp mode, the kernel memory of its BPF maps
//!   (memlock of each map it holds, as `bench scale` reads it).
//!
//! Builds xboot in release (or takes `XBOOT_BIN`). Results: `OUT/cluster.json`,
//! `OUT/cluster.md`, `OUT/cluster.svg`. Needs root (namespaces, XDP).
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use serde::Serialize;
use testlab::netns::Netns;

use super::scale::Api;
use crate::util;

#[derive(clap::Parser, Debug)]
struct Args {
    /// Inventory sizes.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    hosts: Vec<usize>,
    /// Single edits timed per kind and size.
    #[arg(long, default_value_t = 40)]
    edits: usize,
    /// 1,000-host batches timed per size.
    #[arg(long, default_value_t = 3)]
    batches: usize,
    /// DISCOVERs per second of the failover streams.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// The servers' `dhcp.mode`s, each measured at every size (alternating per size).
    #[arg(long, value_delimiter = ',', default_value = "userspace,xdp")]
    modes: Vec<Mode>,
    #[arg(long, default_value = "target/bench/cluster")]
    out: PathBuf,
}

/// The servers' DHCP path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Default)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Every answer from the userspace server (from the inventory).
    #[default]
    Userspace,
    /// xboot's XDP program on the namespace interface, answering from its BPF maps.
    Xdp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Userspace => "userspace",
            Mode::Xdp => "xdp",
        }
    }
}

/// MTU of the hub's ends of the servers' veths in xdp mode: above what native XDP on a
/// veth accepts of its peer, so xboot's attach falls back to generic (skb) mode, whose
/// XDP_TX leaves through the server's own transmit path. Native XDP_TX on veth would
/// need an XDP program on the bridge port. Frames stay at 1,500 bytes (the bridge takes
/// the least MTU of its ports).
const PORT_XDP_MTU: &str = "9000";

const SERVERS: usize = 3;
const HUB: &str = "10.64.0.1";
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 2);
/// Hosts per API request of the load.
const CHUNK: usize = 5000;
const BATCH: usize = 1000;
/// Changes of the apply-cost run.
const COST_CHANGES: usize = 200;
/// Bound of every wait for convergence (a loaded machine).
const CONVERGE: Duration = Duration::from_secs(120);

fn server_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 64, 0, 11 + i as u8)
}

/// Percentiles of a sample, milliseconds.
#[derive(Debug, Default, Serialize, Clone)]
struct Dist {
    n: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn dist(mut v: Vec<Duration>) -> Dist {
    if v.is_empty() {
        return Dist::default();
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |p: f64| ms(v[((v.len() - 1) as f64 * p).round() as usize]);
    Dist {
        n: v.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: ms(*v.last().expect("not empty")),
    }
}

/// A DISCOVER stream's outcome.
#[derive(Debug, Default, Serialize, Clone)]
struct Stream {
    sent: usize,
    /// Answered by no server within 1 s.
    unanswered: usize,
    /// OFFERs per server (index = server).
    offers: Vec<usize>,
    /// The longest time with no OFFER received from any server, ms.
    longest_silence_ms: f64,
}

/// The OFFERs one server sent during a phase, by the path that sent them, and the frames
/// its XDP program passed up to the slow path (the XDP figures 0 in userspace mode).
#[derive(Debug, Default, Serialize, Clone, Copy, PartialEq)]
struct Answers {
    xdp: u64,
    slow: u64,
    /// Passed up as not the program's to answer (unknown MAC, a reason of `/metrics`).
    passed: u64,
    /// Passed up as malformed (a bad checksum among them).
    malformed: u64,
}

impl Answers {
    /// The running totals in a `/v1/status` answer: `counters.xdp` (null in userspace
    /// mode) and the slow path's `counters.dhcp.offers`.
    fn of(status: &serde_json::Value) -> Answers {
        let c = &status["counters"];
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let x = &c["xdp"];
        Answers {
            xdp: n(&x["answered"]),
            slow: n(&c["dhcp"]["offers"]),
            passed: n(&x["passed_unknown"]) + n(&x["passed_other"]) + n(&x["passed_no_room"]),
            malformed: n(&x["malformed"]),
        }
    }

    fn since(self, earlier: Answers) -> Answers {
        Answers {
            xdp: self.xdp.saturating_sub(earlier.xdp),
            slow: self.slow.saturating_sub(earlier.slow),
            passed: self.passed.saturating_sub(earlier.passed),
            malformed: self.malformed.saturating_sub(earlier.malformed),
        }
    }

    fn plus(self, o: Answers) -> Answers {
        Answers {
            xdp: self.xdp + o.xdp,
            slow: self.slow + o.slow,
            passed: self.passed + o.passed,
            malformed: self.malformed + o.malformed,
        }
    }

    /// The share of the OFFERs the XDP program sent, percent (None: no OFFER).
    fn xdp_percent(self) -> Option<f64> {
        let all = self.xdp + self.slow;
        (all > 0).then(|| self.xdp as f64 * 100.0 / all as f64)
    }
}

#[derive(Debug, Default, Serialize)]
struct Row {
    hosts: usize,
    mode: Mode,
    /// Per server, how XDP is attached to its interface (`xdpgeneric`, `xdp`), from
    /// `ip link`; empty in userspace mode.
    xdp_link: Vec<String>,
    /// xdp mode: per server, seconds to its API answering when restarted on the loaded
    /// snapshot (the maps sized and synced for N hosts).
    xdp_restart_s: Vec<f64>,
    /// Per server, whether it stopped on SIGTERM within 30 s for that restart (else
    /// SIGKILLed).
    xdp_restart_sigterm: Vec<bool>,
    load_avg_start: String,
    load_s: f64,
    converge_s: f64,
    /// Change -> the slowest server answers it.
    move_all: Dist,
    unprovision_all: Dist,
    /// Per server (s1 is the writer).
    move_per_server: Vec<Dist>,
    unprovision_per_server: Vec<Dist>,
    /// 1,000 addresses moved in one request -> both of the batch's first and last
    /// host answered by every server, ms.
    batch_ms: Vec<f64>,
    /// The writer's API round trip in the apply-cost run.
    cost_api: Dist,
    /// Per follower (s2, s3): CPU ms per change, validation us per batch, hosts per batch.
    follower_cpu_ms_per_change: Vec<f64>,
    validate_us_per_batch: Vec<f64>,
    hosts_per_batch: Vec<f64>,
    cold_ready_s: f64,
    cold_caught_up_s: f64,
    failover: Stream,
    leader_kill: Stream,
    leader_write_gap_ms: f64,
    leader_writes: usize,
    leader_writes_refused: usize,
    /// Who answered the probes of the single edits and batches, per server.
    answers_edits: Vec<Answers>,
    /// Who answered the failover stream at s2 (s1 is killed in it).
    answers_failover: Answers,
    /// Who answered the leader-kill stream, at s1 and s2.
    answers_leader_kill: Vec<Answers>,
    rss_mib: Vec<f64>,
    /// Per server, the kernel memory of its BPF maps (memlock), MiB.
    maps_mib: Vec<f64>,
    /// s1's maps (type, max entries, value size, memlock bytes), largest first.
    maps_s1: Vec<(String, u64, u64, u64)>,
}

pub fn run(argv: &[String]) -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::try_parse_from(
        std::iter::once("bench cluster".to_string()).chain(argv.iter().cloned()),
    )?;
    if !util::is_root() {
        bail!("bench cluster needs root (network namespaces)");
    }
    let (xboot, out) = util::bench_start(&args.out)?;
    let mut rows = vec![];
    for &n in &args.hosts {
        for &mode in &args.modes {
            let row = one_size(&xboot, &out, n, mode, &args)
                .with_context(|| format!("{n} hosts, {} mode", mode.name()))?;
            eprintln!("[bench] {row:?}");
            rows.push(row);
            std::fs::write(
                out.join("cluster.json"),
                serde_json::to_string_pretty(&rows)?,
            )?;
        }
    }
    let md = report(&rows, &xboot, &args);
    std::fs::write(out.join("cluster.md"), &md)?;
    std::fs::write(out.join("cluster.svg"), svg(&rows))?;
    println!("{md}\nreport: {}", out.join("cluster.md").display());
    Ok(())
}

/// Host `i`'s MAC, and address number `a` (10.64.1.0 on: 4 million in 10.64.0.0/10).
fn mac(i: usize) -> [u8; 6] {
    [
        0x02,
        0x5d,
        (i >> 24) as u8,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ]
}

fn mac_str(i: usize) -> String {
    mac(i)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn addr(a: usize) -> Ipv4Addr {
    Ipv4Addr::from((10u32 << 24 | 64 << 16 | 1 << 8) + a as u32)
}

fn host(i: usize, a: usize, provision: bool) -> serde_json::Value {
    serde_json::json!({
        "name": format!("cn{i}"),
        "provision": provision,
        "boot_image": "img",
        "interfaces": [{ "mac": mac_str(i), "ip": format!("{}/10", addr(a)) }],
    })
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The namespaces, the etcd members and the servers of one size.
struct Lab {
    dir: PathBuf,
    /// etcd's data (tmpfs: the members' fsyncs are not what is measured).
    etcd_dir: PathBuf,
    hub: Netns,
    cli: Netns,
    servers: Vec<Netns>,
    etcd: Vec<Option<u32>>,
    xboot: PathBuf,
    mode: Mode,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for pid in self.etcd.iter().flatten() {
            kill(*pid, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.etcd_dir);
    }
}

fn endpoints() -> Vec<String> {
    testlab::etcd::endpoints(HUB)
}

fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child this benchmark started (not yet reaped: the
    // namespace guard holds it).
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Whether `pid` has exited (gone, or a zombie with no thread left). A killed process's
/// first thread shows as a zombie while its other threads still exit, and its files (the
/// store's lock among them) are closed only when the last one has.
fn dead(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match stat.rsplit_once(") ").map(|(_, r)| r.chars().next()) {
        None => true,
        Some(Some('Z')) => {
            std::fs::read_dir(format!("/proc/{pid}/task")).map_or(true, |d| d.count() <= 1)
        }
        Some(_) => false,
    }
}

fn wait_dead(pid: u32) -> anyhow::Result<()> {
    if !wait_dead_for(pid, Duration::from_secs(30)) {
        bail!("pid {pid} did not stop");
    }
    Ok(())
}

/// Whether `pid` exited within `limit`.
fn wait_dead_for(pid: u32, limit: Duration) -> bool {
    let t0 = Instant::now();
    while !dead(pid) {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

impl Lab {
    fn new(xboot: &Path, dir: PathBuf, mode: Mode) -> anyhow::Result<Lab> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("img"))?;
        std::fs::write(dir.join("img/vmlinuz"), b"kernel")?;
        let etcd_dir = PathBuf::from(format!(
            "/dev/shm/xboot-bench-cluster-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&etcd_dir);
        let hub = Netns::new("bc-hub");
        hub.run(&["ip", "link", "add", "br0", "type", "bridge"]);
        hub.run(&["ip", "addr", "add", &format!("{HUB}/10"), "dev", "br0"]);
        hub.run(&["ip", "link", "set", "br0", "up"]);
        let attach = |ns: &Netns, port: &str, ifname: &str, cidr: &str| {
            Netns::veth(&hub, port, "", ns, ifname, cidr);
            hub.run(&["ip", "link", "set", port, "master", "br0"]);
        };
        let cli = Netns::new("bc-cli");
        attach(&cli, "p-c0", "c0", &format!("{RELAY}/10"));
        // The relay is a UDP socket: its frames would leave the veth with a partial
        // checksum (offload), which the XDP program refuses as malformed and the stack
        // accepts; a relay's NIC sends complete ones. Off in both modes, for equal frames.
        cli.run(&["ethtool", "-K", "c0", "tx", "off"]);
        let mut servers = vec![];
        for i in 0..SERVERS {
            let ns = Netns::new(&format!("bc-s{}", i + 1));
            attach(
                &ns,
                &format!("p-s{}", i + 1),
                &format!("s{}", i + 1),
                &format!("{}/10", server_ip(i)),
            );
            if mode == Mode::Xdp {
                let port = format!("p-s{}", i + 1);
                hub.run(&["ip", "link", "set", &port, "mtu", PORT_XDP_MTU]);
            }
            servers.push(ns);
        }
        let lab = Lab {
            dir,
            etcd_dir,
            hub,
            cli,
            servers,
            etcd: vec![None; 3],
            xboot: xboot.to_path_buf(),
            mode,
        };
        for i in 0..SERVERS {
            lab.write_config(i)?;
        }
        Ok(lab)
    }

    fn sdir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("s{}", i + 1))
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.sdir(i).join("api.socket")
    }

    fn write_config(&self, i: usize) -> anyhow::Result<()> {
        let d = self.sdir(i);
        std::fs::create_dir_all(d.join("state"))?;
        let eps: Vec<String> = endpoints().iter().map(|e| format!("{e:?}")).collect();
        let n = i + 1;
        let config = format!(
            r#"interface = "s{n}"
state_dir = "{d}/state"
[dhcp]
mode = "{mode}"
listen = "0.0.0.0:67"
lease_time = "1h"
router_octet4 = 1
[tftp]
listen = "0.0.0.0:69"
root = "{img}"
[provision]
listen = "0.0.0.0:8080"
token_ttl = 3600
advertise_url = "http://{ip}:8080"
image_roots = ["{img}"]
[api]
socket_path = "{d}/api.socket"
[cluster]
endpoints = [{eps}]
server_id = "s{n}"
[[cluster.segment]]
name = "{seg}"
interfaces = ["s{n}"]
subnets = ["10.64.0.0/10"]
"#,
            d = d.display(),
            img = self.dir.join("img").display(),
            ip = server_ip(i),
            eps = eps.join(", "),
            seg = if i < 2 { "A" } else { "B" },
            mode = self.mode.name(),
        );
        std::fs::write(d.join("xboot.toml"), config)?;
        Ok(())
    }

    /// Starts the members not running and waits until the cluster is healthy.
    fn start_etcd(&mut self) -> anyhow::Result<()> {
        for i in 1..=testlab::etcd::MEMBERS {
            if self.etcd[i - 1].is_some() {
                continue;
            }
            let data = self.etcd_dir.join(format!("m{i}"));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(format!("etcd-m{i}.log")))?;
            let mut argv = testlab::etcd::member_argv(HUB, i, &data, "xboot-bench-cluster");
            argv.extend(
                ["--heartbeat-interval", "100", "--election-timeout", "1000"].map(String::from),
            );
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let pid = self.hub.spawn(&argv, Stdio::null(), log.into());
            self.etcd[i - 1] = Some(pid);
        }
        let t0 = Instant::now();
        loop {
            let ok = self
                .hub
                .cmd(&[
                    "etcdctl",
                    "--endpoints",
                    &endpoints().join(","),
                    "endpoint",
                    "health",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if t0.elapsed() > CONVERGE {
                bail!("etcd members not healthy; see {}", self.dir.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The index (0..3) of the member that leads now.
    fn leader(&self) -> anyhow::Result<usize> {
        let out = self.hub.run(&[
            "etcdctl",
            "--endpoints",
            &endpoints().join(","),
            "endpoint",
            "status",
            "-w",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let all = v.as_array().context("etcdctl endpoint status")?;
        let leader = all[0]["Status"]["leader"].as_u64().context("no leader")?;
        all.iter()
            .find(|m| m["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .and_then(|m| {
                endpoints()
                    .iter()
                    .position(|e| Some(e.as_str()) == m["Endpoint"].as_str())
            })
            .context("the leader is none of the endpoints")
    }

    /// Starts server `i`; returns its pid and the seconds until its API answered.
    fn start(&self, i: usize) -> anyhow::Result<(u32, f64)> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.sdir(i).join("serve.log"))?;
        let config = self.sdir(i).join("xboot.toml").display().to_string();
        let t0 = Instant::now();
        let pid = self.servers[i].spawn(
            &[
                &self.xboot.display().to_string(),
                "serve",
                "--config",
                &config,
            ],
            Stdio::null(),
            Stdio::from(log),
        );
        loop {
            if UnixStream::connect(self.socket(i)).is_ok() {
                return Ok((pid, t0.elapsed().as_secs_f64()));
            }
            if dead(pid) || testlab::interrupted() {
                bail!(
                    "xboot s{} stopped; see {}",
                    i + 1,
                    self.sdir(i).join("serve.log").display()
                );
            }
            if t0.elapsed() > Duration::from_secs(600) {
                bail!("xboot s{} not ready after 600 s", i + 1);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// How XDP is attached to server `i`'s interface, from `ip link`; an error when it
    /// is not.
    fn xdp_link(&self, i: usize) -> anyhow::Result<String> {
        let ifname = format!("s{}", i + 1);
        let out = self.servers[i].run(&["ip", "link", "show", "dev", &ifname]);
        let text = String::from_utf8_lossy(&out.stdout);
        xdp_attach(&text).with_context(|| {
            format!(
                "no XDP program on {ifname} ({}); see {}",
                text.trim(),
                self.sdir(i).join("serve.log").display()
            )
        })
    }

    fn api(&self, i: usize) -> anyhow::Result<Api> {
        Api::connect(&self.socket(i))
    }

    /// A UDP socket on the relay's address in the client namespace.
    fn relay_socket(&self) -> anyhow::Result<UdpSocket> {
        let ns = self.cli.name.clone();
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<UdpSocket> {
                let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
                use std::os::fd::AsRawFd;
                // SAFETY: setns(2) on a namespace file held open, for this thread only; the
                // socket made here stays in that namespace wherever it is used.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns {ns}: {}", std::io::Error::last_os_error());
                }
                Ok(UdpSocket::bind(SocketAddrV4::new(RELAY, 67))?)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("setns thread panicked"))?
        })
    }
}

/// The XDP attachment `ip link show` names in its first line (`xdp`: native, `xdpgeneric`,
/// `xdpoffload`, `xdpmulti`), or None.
fn xdp_attach(ip_link: &str) -> Option<String> {
    ip_link
        .lines()
        .next()?
        .split_whitespace()
        .find(|w| w.starts_with("xdp"))
        .map(String::from)
}

/// `GET /v1/status` of a server.
fn status(api: &mut Api) -> anyhow::Result<serde_json::Value> {
    let (code, body) = api.request("GET", "/v1/status", "")?;
    if code != 200 {
        bail!("status: {code} {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Relayed DHCP exchanges from the relay's socket.
struct Probe {
    sock: UdpSocket,
    xid: u32,
}

fn discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, RELAY, &mac);
    m.set_hops(1);
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    m.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(0.into()));
    m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    m.to_vec().expect("a DISCOVER encodes")
}

/// The boot file an OFFER names (header or option 67), empty for none.
fn boot_file(m: &Message) -> String {
    let f = m.fname_str().and_then(Result::ok).unwrap_or_default();
    let f = f.trim_end_matches('\0');
    match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) if f.is_empty() => String::from_utf8_lossy(b).into(),
        _ => f.to_string(),
    }
}

impl Probe {
    fn new(sock: UdpSocket) -> anyhow::Result<Probe> {
        sock.set_read_timeout(Some(Duration::from_millis(2)))?;
        Ok(Probe { sock, xid: 1 })
    }

    /// Asks every server in turn until each has offered `mac` an answer that `ok`
    /// accepts; per server, the time from `t0` to the first such OFFER.
    fn wait_all(
        &mut self,
        mac: [u8; 6],
        ok: impl Fn(&Message) -> bool,
        t0: Instant,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut done: Vec<Option<Duration>> = vec![None; SERVERS];
        let mut asked: HashMap<u32, usize> = HashMap::new();
        let mut buf = [0u8; 1500];
        while done.iter().any(Option::is_none) {
            if t0.elapsed() > CONVERGE {
                bail!("servers {done:?} never answered the change for {mac:02x?}");
            }
            for (k, d) in done.iter().enumerate() {
                if d.is_none() {
                    self.xid = self.xid.wrapping_add(1);
                    asked.insert(self.xid, k);
                    self.sock.send_to(
                        &discover(mac, self.xid),
                        SocketAddrV4::new(server_ip(k), 67),
                    )?;
                }
            }
            let round = Instant::now();
            while round.elapsed() < Duration::from_millis(3) {
                let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                    continue;
                };
                if let Some(&k) = asked.get(&m.xid()) {
                    if done[k].is_none() && ok(&m) {
                        done[k] = Some(t0.elapsed());
                    }
                }
            }
        }
        Ok(done.into_iter().flatten().collect())
    }

    /// DISCOVERs for `macs` (in turn) at `rate` per second for `secs`, each relayed to
    /// every server of `to`; `during` runs meanwhile on this thread's caller's behalf
    /// (started at once, on another thread).
    fn stream<T: Send>(
        &mut self,
        macs: &[[u8; 6]],
        to: &[usize],
        rate: u32,
        secs: f64,
        during: impl FnOnce() -> T + Send,
    ) -> anyhow::Result<(Stream, T)> {
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let total = (secs * rate as f64) as usize;
        let mut sent_at: HashMap<u32, Instant> = HashMap::new();
        let mut answered: HashMap<u32, bool> = HashMap::new();
        let mut offers = vec![0usize; SERVERS];
        let mut last_offer = Instant::now();
        let mut silence = Duration::ZERO;
        let mut buf = [0u8; 1500];
        let sock = &self.sock;
        sock.set_read_timeout(Some(Duration::from_millis(1)))?;
        let first_xid = self.xid.wrapping_add(1);
        let out = std::thread::scope(|s| -> anyhow::Result<T> {
            let side = s.spawn(during);
            let t0 = Instant::now();
            let mut sent = 0usize;
            let end_of_drain = |now: Instant| now > t0 + Duration::from_secs_f64(secs + 1.0);
            loop {
                let now = Instant::now();
                if sent < total && now >= t0 + period * sent as u32 {
                    let xid = first_xid.wrapping_add(sent as u32);
                    let d = discover(macs[sent % macs.len()], xid);
                    for &k in to {
                        sock.send_to(&d, SocketAddrV4::new(server_ip(k), 67))?;
                    }
                    sent_at.insert(xid, now);
                    sent += 1;
                    continue;
                }
                if sent == total && end_of_drain(now) {
                    break;
                }
                if let Ok((n, src)) = sock.recv_from(&mut buf) {
                    let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                        continue;
                    };
                    let Some(at) = sent_at.get(&m.xid()) else {
                        continue;
                    };
                    let now = Instant::now();
                    if now.duration_since(*at) <= Duration::from_secs(1) {
                        answered.insert(m.xid(), true);
                    }
                    if let std::net::SocketAddr::V4(a) = src {
                        if let Some(k) = (0..SERVERS).find(|&k| server_ip(k) == *a.ip()) {
                            offers[k] += 1;
                        }
                    }
                    silence = silence.max(now.duration_since(last_offer));
                    last_offer = now;
                }
            }
            side.join()
                .map_err(|_| anyhow::anyhow!("the action during the stream panicked"))
        })?;
        self.xid = first_xid.wrapping_add(total as u32);
        sock.set_read_timeout(Some(Duration::from_millis(2)))?;
        Ok((
            Stream {
                sent: total,
                unanswered: total - answered.len(),
                offers,
                longest_silence_ms: silence.as_secs_f64() * 1000.0,
            },
            out,
        ))
    }
}

fn offers_ip(ip: Ipv4Addr) -> impl Fn(&Message) -> bool {
    move |m| m.yiaddr() == ip
}

fn one_size(xboot: &Path, out: &Path, n: usize, mode: Mode, args: &Args) -> anyhow::Result<Row> {
    let mut lab = Lab::new(xboot, out.join(format!("{}-n{n}", mode.name())), mode)?;
    let mut row = Row {
        hosts: n,
        mode,
        load_avg_start: load_avg(),
        ..Row::default()
    };
    lab.start_etcd()?;
    let mut pids = vec![];
    for i in 0..SERVERS {
        pids.push(lab.start(i)?.0);
        if mode == Mode::Xdp {
            lab.xdp_link(i)?;
        }
    }
    let answers = |lab: &Lab, k: usize| -> anyhow::Result<Answers> {
        Ok(Answers::of(&status(&mut lab.api(k)?)?))
    };
    let mut w = lab.api(0)?;
    let img = lab.dir.join("img/vmlinuz").display().to_string();
    w.call(
        "POST",
        "/v1/hosts",
        &serde_json::json!({"hosts": [], "images": [{"name": "img", "kernel": img}]}).to_string(),
    )?;

    // Load, in requests of CHUNK hosts.
    let t0 = Instant::now();
    for start in (0..n).step_by(CHUNK) {
        let hosts: Vec<_> = (start..n.min(start + CHUNK))
            .map(|i| host(i, i, true))
            .collect();
        w.call(
            "POST",
            "/v1/hosts",
            &serde_json::json!({ "hosts": hosts }).to_string(),
        )?;
    }
    row.load_s = t0.elapsed().as_secs_f64();
    for i in 0..SERVERS {
        let mut a = lab.api(i)?;
        while status(&mut a)?["hosts"].as_u64() != Some(n as u64) {
            if t0.elapsed() > Duration::from_secs(1800) {
                bail!("s{} never held {n} hosts", i + 1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    row.converge_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "[bench] {n} hosts loaded in {:.1} s, on every server after {:.1} s",
        row.load_s, row.converge_s
    );
    // A server sizes its BPF maps for the inventory it holds at start (host entries for
    // twice its hosts, at least 1,024) and cannot grow them: past that, hosts stay with
    // the slow path. These started empty, so in xdp mode each is restarted on its
    // snapshot of N hosts before anything is timed. SIGKILLed if it has not stopped 30 s
    // after SIGTERM: with maps too small a server retries every host each sync (and logs
    // each failure), and stops only after the sync under way (tens of seconds at
    // 100,000 hosts); its store commits per change, so a kill loses nothing.
    if mode == Mode::Xdp {
        for (i, pid) in pids.iter_mut().enumerate() {
            kill(*pid, libc::SIGTERM);
            let stopped = wait_dead_for(*pid, Duration::from_secs(30));
            if !stopped {
                kill(*pid, libc::SIGKILL);
                wait_dead(*pid)?;
            }
            row.xdp_restart_sigterm.push(stopped);
            let (p, ready) = lab.start(i)?;
            *pid = p;
            row.xdp_restart_s.push(ready);
            row.xdp_link.push(lab.xdp_link(i)?);
        }
        w = lab.api(0)?;
        eprintln!(
            "[bench] restarted to size the maps for {n} hosts: API after {:?} s, stopped on SIGTERM {:?}",
            row.xdp_restart_s, row.xdp_restart_sigterm
        );
    }

    let mut probe = Probe::new(lab.relay_socket()?)?;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ n as u64;
    let mut pick = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut next_addr = n;
    let mut addr_of: HashMap<usize, usize> = HashMap::new();
    let mut unprovisioned = std::collections::HashSet::new();

    // Single edits, each until every server answers it.
    let before_edits: Vec<Answers> = (0..SERVERS)
        .map(|k| answers(&lab, k))
        .collect::<anyhow::Result<_>>()?;
    let (mut mv, mut un) = (vec![vec![]; SERVERS], vec![vec![]; SERVERS]);
    let (mut mv_all, mut un_all) = (vec![], vec![]);
    for _ in 0..args.edits {
        let i = pick();
        next_addr += 1;
        addr_of.insert(i, next_addr);
        let prov = !unprovisioned.contains(&i);
        let t0 = Instant::now();
        w.call(
            "PUT",
            &format!("/v1/hosts/cn{i}"),
            &host(i, next_addr, prov).to_string(),
        )?;
        let per = probe.wait_all(mac(i), offers_ip(addr(next_addr)), t0)?;
        mv_all.push(*per.iter().max().expect("servers"));
        for (k, d) in per.into_iter().enumerate() {
            mv[k].push(d);
        }

        let j = loop {
            let j = pick();
            if !unprovisioned.contains(&j) {
                break j;
            }
        };
        unprovisioned.insert(j);
        let t0 = Instant::now();
        w.call("POST", &format!("/v1/hosts/unprovision?nodeset=cn{j}"), "")?;
        let per = probe.wait_all(mac(j), |m| boot_file(m).is_empty(), t0)?;
        un_all.push(*per.iter().max().expect("servers"));
        for (k, d) in per.into_iter().enumerate() {
            un[k].push(d);
        }
    }
    row.move_all = dist(mv_all);
    row.unprovision_all = dist(un_all);
    row.move_per_server = mv.into_iter().map(dist).collect();
    row.unprovision_per_server = un.into_iter().map(dist).collect();
    eprintln!(
        "[bench] single edits: move {:?}, unprovision {:?}",
        row.move_all, row.unprovision_all
    );

    // 1,000-host batches of address moves.
    for b in 0..args.batches {
        let first = (b * BATCH * 7) % n.saturating_sub(BATCH).max(1);
        let ids: Vec<usize> = (first..(first + BATCH).min(n)).collect();
        let hosts: Vec<_> = ids
            .iter()
            .map(|&i| {
                next_addr += 1;
                addr_of.insert(i, next_addr);
                host(i, next_addr, !unprovisioned.contains(&i))
            })
            .collect();
        let t0 = Instant::now();
        w.call(
            "POST",
            "/v1/hosts",
            &serde_json::json!({ "hosts": hosts }).to_string(),
        )?;
        let mut worst = Duration::ZERO;
        for &i in [ids[0], *ids.last().expect("a batch")].iter() {
            let per = probe.wait_all(mac(i), offers_ip(addr(addr_of[&i])), t0)?;
            worst = worst.max(*per.iter().max().expect("servers"));
        }
        row.batch_ms.push(worst.as_secs_f64() * 1000.0);
    }
    eprintln!("[bench] 1,000-host batches: {:?} ms", row.batch_ms);
    for (k, b) in before_edits.into_iter().enumerate() {
        row.answers_edits.push(answers(&lab, k)?.since(b));
    }
    eprintln!("[bench] probes answered: {:?}", row.answers_edits);

    // Apply cost: changes back to back, no probes; the followers' CPU and validation.
    let followers = [1usize, 2];
    let stats_of = |lab: &Lab, k: usize| -> anyhow::Result<serde_json::Value> {
        Ok(status(&mut lab.api(k)?)?["counters"]["cluster"].clone())
    };
    let before: Vec<(u64, serde_json::Value)> = followers
        .iter()
        .map(|&k| -> anyhow::Result<(u64, serde_json::Value)> {
            Ok((cpu_ticks(pids[k]), stats_of(&lab, k)?))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut times = vec![];
    for _ in 0..COST_CHANGES {
        let i = pick();
        next_addr += 1;
        addr_of.insert(i, next_addr);
        let t0 = Instant::now();
        w.call(
            "PUT",
            &format!("/v1/hosts/cn{i}"),
            &host(i, next_addr, !unprovisioned.contains(&i)).to_string(),
        )?;
        times.push(t0.elapsed());
    }
    let target = stats_of(&lab, 0)?["applied_revision"].as_u64().unwrap_or(0);
    for &k in &followers {
        let t0 = Instant::now();
        while stats_of(&lab, k)?["applied_revision"].as_u64().unwrap_or(0) < target {
            if t0.elapsed() > CONVERGE {
                bail!("s{} never applied revision {target}", k + 1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    for (&k, (ticks, st)) in followers.iter().zip(before) {
        let now = stats_of(&lab, k)?;
        let d = |f: &str| now[f].as_f64().unwrap_or(0.0) - st[f].as_f64().unwrap_or(0.0);
        let cpu = (cpu_ticks(pids[k]) - ticks) as f64 / hz * 1000.0;
        row.follower_cpu_ms_per_change
            .push(cpu / COST_CHANGES as f64);
        let batches = d("batches").max(1.0);
        row.validate_us_per_batch
            .push(d("validate_seconds_total") / batches * 1e6);
        row.hosts_per_batch.push(d("hosts_changed") / batches);
    }
    row.cost_api = dist(times);
    eprintln!(
        "[bench] apply cost: follower CPU {:?} ms/change, validation {:?} us/batch",
        row.follower_cpu_ms_per_change, row.validate_us_per_batch
    );

    // Cold start of s3 from its snapshot, with a change made while it was down.
    kill(pids[2], libc::SIGTERM);
    wait_dead(pids[2])?;
    let i = pick();
    next_addr += 1;
    addr_of.insert(i, next_addr);
    w.call(
        "PUT",
        &format!("/v1/hosts/cn{i}"),
        &host(i, next_addr, !unprovisioned.contains(&i)).to_string(),
    )?;
    let t0 = Instant::now();
    let (pid, ready) = lab.start(2)?;
    pids[2] = pid;
    row.cold_ready_s = ready;
    let per = probe.wait_all(mac(i), offers_ip(addr(next_addr)), t0)?;
    row.cold_caught_up_s = per[2].as_secs_f64();
    eprintln!(
        "[bench] cold start: API after {ready:.2} s, the change answered after {:.2} s",
        row.cold_caught_up_s
    );

    // Failover: one of the two servers of segment A killed under a DISCOVER stream.
    let macs: Vec<[u8; 6]> = (0..256).map(|_| mac(pick())).collect();
    let s1 = pids[0];
    let before = answers(&lab, 1)?;
    let (st, ()) = probe.stream(&macs, &[0, 1], args.rate, 4.0, move || {
        std::thread::sleep(Duration::from_millis(1500));
        kill(s1, libc::SIGKILL);
    })?;
    row.failover = st;
    row.answers_failover = answers(&lab, 1)?.since(before);
    wait_dead(s1)?;
    eprintln!("[bench] failover: {:?}", row.failover);
    let (pid, _) = lab.start(0)?;
    pids[0] = pid;
    let mut w = lab.api(0)?;

    // etcd leader killed under the stream and a run of writes through s1.
    let leader = lab.leader()?;
    let member = lab.etcd[leader].expect("the leader runs");
    let mut moves: Vec<(usize, usize)> = vec![];
    for _ in 0..2000 {
        let i = pick();
        next_addr += 1;
        moves.push((i, next_addr));
    }
    let provs: Vec<bool> = moves
        .iter()
        .map(|(i, _)| !unprovisioned.contains(i))
        .collect();
    let secs = 6.0;
    let before: Vec<Answers> = (0..2)
        .map(|k| answers(&lab, k))
        .collect::<anyhow::Result<_>>()?;
    let (st, writes) = probe.stream(&macs, &[0, 1], args.rate, secs, move || {
        let t0 = Instant::now();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            kill(member, libc::SIGKILL);
        });
        let mut ok_at = vec![Duration::ZERO];
        let mut refused = 0usize;
        for ((i, a), p) in moves.iter().zip(provs) {
            if t0.elapsed().as_secs_f64() > secs {
                break;
            }
            loop {
                match w.request(
                    "PUT",
                    &format!("/v1/hosts/cn{i}"),
                    &host(*i, *a, p).to_string(),
                ) {
                    Ok((200, _)) => break,
                    _ => refused += 1,
                }
                if t0.elapsed().as_secs_f64() > secs + 20.0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            ok_at.push(t0.elapsed());
        }
        let _ = killer.join();
        (ok_at, refused)
    })?;
    row.leader_kill = st;
    for (k, b) in before.into_iter().enumerate() {
        row.answers_leader_kill.push(answers(&lab, k)?.since(b));
    }
    let (ok_at, refused) = writes;
    row.leader_writes = ok_at.len() - 1;
    row.leader_writes_refused = refused;
    row.leader_write_gap_ms = ok_at
        .windows(2)
        .map(|p| (p[1] - p[0]).as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    eprintln!(
        "[bench] leader kill: {:?}, {} writes, longest gap {:.0} ms",
        row.leader_kill, row.leader_writes, row.leader_write_gap_ms
    );
    wait_dead(member)?;
    lab.etcd[leader] = None;
    lab.start_etcd()?;

    row.rss_mib = pids.iter().map(|&p| rss_mib(p)).collect();
    if mode == Mode::Xdp {
        for (k, &p) in pids.iter().enumerate() {
            let maps = super::scale::maps(p)?;
            row.maps_mib
                .push(maps.iter().map(|m| m.3).sum::<u64>() as f64 / (1 << 20) as f64);
            if k == 0 {
                row.maps_s1 = maps;
            }
        }
    }
    for &p in &pids {
        kill(p, libc::SIGTERM);
    }
    for &p in &pids {
        wait_dead(p)?;
    }
    Ok(row)
}

/// The XDP program's share of the OFFERs of a phase, percent with the counts, for the
/// report ("-" for none sent).
fn share(a: Answers) -> String {
    match a.xdp_percent() {
        Some(p) => format!("{p:.0}% ({}/{})", a.xdp, a.xdp + a.slow),
        None => "-".into(),
    }
}

fn report(rows: &[Row], xboot: &Path, args: &Args) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# bench cluster: 3 etcd members, {SERVERS} xboot servers, N hosts\n"
    );
    let _ = writeln!(
        md,
        "Binary: `{}`. Servers in each `dhcp.mode` of the mode column (xdp: the program on \
         each server's veth, generic mode); \"answered\" = the first relayed \
         DHCP OFFER from a server carrying the change (new address, or no boot file after \
         `unprovision`), timed from the API request to s1; the slowest of the {SERVERS} \
         servers. In xdp mode that OFFER comes from the BPF maps: \"XDP share\" is the \
         program's part of the OFFERs the servers sent (their counters), over the edits' \
         probes and over the failover and leader-kill streams. etcd data on tmpfs. Failover \
         streams: {} DISCOVERs/s relayed to s1 and s2.\n",
        xboot.display(),
        args.rate
    );
    let _ = writeln!(md, "| hosts | mode | load avg | load s | on all s | move p50/p99/max ms | unprovision p50/p99/max ms | 1,000-batch ms | follower CPU ms/change | validate us/batch | cold start s (API / change) | failover unanswered | leader kill unanswered | write gap ms | XDP share: edits / streams | RSS MiB | BPF maps MiB |");
    let _ = writeln!(md, "|{}", "---|".repeat(17));
    let f = |v: &[f64], p: usize| {
        if v.is_empty() {
            return "-".to_string();
        }
        v.iter()
            .map(|x| format!("{x:.p$}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let sum = |v: &[Answers]| v.iter().fold(Answers::default(), |a, b| a.plus(*b));
    for r in rows {
        let streams = sum(&r.answers_leader_kill).plus(r.answers_failover);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {} | {} | {} | {:.2} / {:.2} | {}/{} | {}/{} | {:.0} | {} / {} | {} | {} |",
            r.hosts,
            r.mode.name(),
            r.load_avg_start,
            r.load_s,
            r.converge_s,
            r.move_all.p50_ms,
            r.move_all.p99_ms,
            r.move_all.max_ms,
            r.unprovision_all.p50_ms,
            r.unprovision_all.p99_ms,
            r.unprovision_all.max_ms,
            f(&r.batch_ms, 0),
            f(&r.follower_cpu_ms_per_change, 2),
            f(&r.validate_us_per_batch, 0),
            r.cold_ready_s,
            r.cold_caught_up_s,
            r.failover.unanswered,
            r.failover.sent,
            r.leader_kill.unanswered,
            r.leader_kill.sent,
            r.leader_write_gap_ms,
            share(sum(&r.answers_edits)),
            share(streams),
            f(&r.rss_mib, 0),
            f(&r.maps_mib, 1),
        );
    }
    let _ = writeln!(
        md,
        "\nPer server (s1 is the writer), move p50/p99 ms; XDP's OFFERs / the slow path's / \
         frames XDP passed up / malformed, in the edits' probes:\n"
    );
    for r in rows {
        let per: Vec<String> = r
            .move_per_server
            .iter()
            .zip(
                r.answers_edits
                    .iter()
                    .chain(std::iter::repeat(&Answers::default())),
            )
            .map(|(d, a)| {
                format!(
                    "{:.1}/{:.1} ({}/{}/{}/{})",
                    d.p50_ms, d.p99_ms, a.xdp, a.slow, a.passed, a.malformed
                )
            })
            .collect();
        let link = if r.xdp_link.is_empty() {
            String::new()
        } else {
            format!(", attached {}", r.xdp_link.join("/"))
        };
        let _ = writeln!(
            md,
            "- {} hosts, {}{link}: {}",
            r.hosts,
            r.mode.name(),
            per.join(", ")
        );
    }
    if let Some(r) = rows.iter().rfind(|r| !r.maps_s1.is_empty()) {
        let _ = writeln!(
            md,
            "\ns1's largest BPF maps at {} hosts (type, max entries, value size, memlock MiB):\n",
            r.hosts
        );
        for (ty, max, value, bytes) in r.maps_s1.iter().take(4) {
            let _ = writeln!(
                md,
                "- {ty}, {max}, {value}, {:.1}",
                *bytes as f64 / (1 << 20) as f64
            );
        }
    }
    let _ = writeln!(md, "\n![change to answers](cluster.svg)");
    md
}

/// The sizes measured, in the order first met.
fn sizes(rows: &[Row]) -> Vec<usize> {
    let mut out: Vec<usize> = vec![];
    for r in rows {
        if !out.contains(&r.hosts) {
            out.push(r.hosts);
        }
    }
    out
}

/// Change -> answered by every server (p99) per N and mode, and follower CPU per change.
fn svg(rows: &[Row]) -> String {
    let (w, h) = (760.0, 340.0);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>\n"
    );
    let ns = sizes(rows);
    let panel = |s: &mut String, x0: f64, title: &str, series: &[(String, &str, Vec<f64>)]| {
        let (pw, ph, top) = (300.0, 200.0, 40.0);
        let max = series
            .iter()
            .flat_map(|(_, _, v)| v.iter().copied())
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.15;
        let _ = writeln!(s, "<text x='{}' y='20' font-size='13'>{title}</text>", x0);
        let _ = writeln!(
            s,
            "<line x1='{x0}' y1='{}' x2='{}' y2='{}' stroke='black'/>",
            top + ph,
            x0 + pw,
            top + ph
        );
        let _ = writeln!(
            s,
            "<text x='{}' y='{}' text-anchor='end'>{max:.1}</text>",
            x0 - 2.0,
            top + 4.0
        );
        let groups = ns.len().max(1) as f64;
        let gw = pw / groups;
        let bw = gw / (series.len() as f64 + 1.0);
        for (g, n) in ns.iter().enumerate() {
            let gx = x0 + g as f64 * gw;
            let _ = writeln!(
                s,
                "<text x='{}' y='{}' text-anchor='middle'>{n}</text>",
                gx + gw / 2.0,
                top + ph + 14.0,
            );
            for (k, (_, color, v)) in series.iter().enumerate() {
                let val = v.get(g).copied().unwrap_or(0.0);
                let bh = val / max * ph;
                let _ = writeln!(
                    s,
                    "<rect x='{:.1}' y='{:.1}' width='{:.1}' height='{:.1}' fill='{color}'><title>{val:.2}</title></rect>",
                    gx + bw * (k as f64 + 0.5),
                    top + ph - bh,
                    bw * 0.9,
                    bh
                );
            }
        }
        for (k, (name, color, _)) in series.iter().enumerate() {
            let y = top + ph + 30.0 + k as f64 * 13.0;
            let _ = writeln!(
                s,
                "<rect x='{x0}' y='{}' width='10' height='10' fill='{color}'/>",
                y - 9.0
            );
            let _ = writeln!(s, "<text x='{}' y='{y}'>{name}</text>", x0 + 14.0);
        }
    };
    let modes: Vec<Mode> = [Mode::Userspace, Mode::Xdp]
        .into_iter()
        .filter(|m| rows.iter().any(|r| r.mode == *m))
        .collect();
    // One value per size of `mode`'s rows (0 where that size was not run in it).
    let col = |mode: Mode, f: &dyn Fn(&Row) -> f64| -> Vec<f64> {
        ns.iter()
            .map(|n| {
                rows.iter()
                    .find(|r| r.hosts == *n && r.mode == mode)
                    .map_or(0.0, f)
            })
            .collect()
    };
    let shade = |m: Mode, light: &'static str, dark: &'static str| match m {
        Mode::Userspace => light,
        Mode::Xdp => dark,
    };
    let mut change = vec![];
    let mut cost = vec![];
    for &m in &modes {
        let name = m.name();
        change.push((
            format!("move p99, {name}"),
            shade(m, "#9ecae1", "#3182bd"),
            col(m, &|r: &Row| r.move_all.p99_ms),
        ));
        change.push((
            format!("unprovision p99, {name}"),
            shade(m, "#fdae6b", "#e6550d"),
            col(m, &|r: &Row| r.unprovision_all.p99_ms),
        ));
        cost.push((
            format!("CPU ms/change, {name}"),
            shade(m, "#a1d99b", "#31a354"),
            col(m, &|r: &Row| mean(&r.follower_cpu_ms_per_change)),
        ));
    }
    panel(
        &mut s,
        50.0,
        "change -> every server answers, ms (hosts)",
        &change,
    );
    panel(&mut s, 430.0, "follower CPU per change (hosts)", &cost);
    s.push_str("</svg>\n");
    s
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_status() {
        let status = |xdp: serde_json::Value, offers: u64| serde_json::json!({"counters": {"dhcp": {"offers": offers}, "xdp": xdp}});
        let before = Answers::of(&status(
            serde_json::json!({"answered": 10, "passed_unknown": 1, "passed_other": 2, "passed_no_room": 0, "malformed": 1}),
            3,
        ));
        let after = Answers::of(&status(
            serde_json::json!({"answered": 40, "passed_unknown": 1, "passed_other": 5, "passed_no_room": 1, "malformed": 3}),
            13,
        ));
        let d = after.since(before);
        assert_eq!(
            d,
            Answers {
                xdp: 30,
                slow: 10,
                passed: 4,
                malformed: 2,
            }
        );
        assert_eq!(d.xdp_percent(), Some(75.0));
        assert_eq!(share(d), "75% (30/40)");
        // Userspace mode: no XDP counters, every OFFER from the slow path.
        let u = Answers::of(&status(serde_json::Value::Null, 7));
        assert_eq!((u.xdp, u.slow, u.passed, u.malformed), (0, 7, 0, 0));
        assert_eq!(u.xdp_percent(), Some(0.0));
        assert_eq!(Answers::default().xdp_percent(), None);
        assert_eq!(share(Answers::default()), "-");
        // A restarted server's counters begin again: never a negative count.
        assert_eq!(before.since(after), Answers::default());
    }

    #[test]
    fn xdp_attachment_from_ip_link() {
        let generic = "4: s1@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdpgeneric qdisc noqueue state UP mode DEFAULT group default qlen 1000\n    link/ether 02:11:22:33:44:55 brd ff:ff:ff:ff:ff:ff link-netns bc-hub\n    prog/xdp id 42 name xboot_dhcp tag 0123456789abcdef jited";
        assert_eq!(xdp_attach(generic).as_deref(), Some("xdpgeneric"));
        let native = "4: s1@if5: <UP> mtu 1500 xdp qdisc noqueue state UP";
        assert_eq!(xdp_attach(native).as_deref(), Some("xdp"));
        // The program line alone is not an attachment of the first line's interface.
        let none = "4: s1@if5: <UP> mtu 1500 qdisc noqueue state UP\n    prog/xdp id 1";
        assert_eq!(xdp_attach(none), None);
        assert_eq!(xdp_attach(""), None);
    }

    #[test]
    fn sizes_in_order_once() {
        let row = |hosts, mode| Row {
            hosts,
            mode,
            ..Row::default()
        };
        let rows = [
            row(1000, Mode::Userspace),
            row(1000, Mode::Xdp),
            row(10, Mode::Userspace),
            row(10, Mode::Xdp),
        ];
        assert_eq!(sizes(&rows), vec![1000, 10]);
        let svg = svg(&rows);
        assert!(svg.contains("move p99, userspace") && svg.contains("move p99, xdp"));
    }
}
