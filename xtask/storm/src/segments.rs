//! A storm split over K segment servers (`--segment-servers`, issue 16's "makespan
//! against N servers"): the nodes cut into K segments ([`crate::fabric::Segments`]),
//! each its own L2 domain with its own subnet and its own `xboot serve` in its own
//! namespace, all K in cluster mode on one etcd member in the fabric namespace (on the
//! control bridge, data on tmpfs). The inventory is imported once, through segment 0's
//! server; every server serves only its segment's hosts (`[[cluster.segment]]`), the
//! power command goes through segment 0's server to every BMC (the API sees the whole
//! inventory), and each node boots from its own segment's server.
//!
//! One etcd member, not three: on this 2-core machine the members would take CPU from
//! the servers being measured; the cluster tests and `bench cluster` run three.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fabric::{node_name, Segments, CTL_IP};
use crate::node::NodeResult;
use crate::servers::Running;

/// Members of the storm's etcd.
pub const ETCD_MEMBERS: usize = 1;

/// The storm's etcd member, killed by pid and its data removed on drop.
pub struct Etcd {
    child: Child,
    data: PathBuf,
    pub endpoints: Vec<String>,
}

impl Etcd {
    /// Starts the member in `fabric_ns` on [`CTL_IP`], its data in `/dev/shm` (the
    /// member's fsyncs are not what the storm measures), its log at `log`; returns once
    /// `etcdctl endpoint health` says so (60 s at most).
    pub fn start(fabric_ns: &str, tag: &str, log: &Path) -> Result<Etcd, String> {
        let host = CTL_IP.to_string();
        let data = PathBuf::from(format!("/dev/shm/xbst-{}-{tag}-etcd", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let argv = testlab::etcd::member_argv_of(&host, 1, ETCD_MEMBERS, &data, "xboot-storm");
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = testlab::peers::command("ip")
            .args(["netns", "exec", fabric_ns])
            .arg(testlab::peers::program(&argv[0]))
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start etcd (Debian package etcd-server): {e}"))?;
        let endpoints: Vec<String> = (1..=ETCD_MEMBERS)
            .map(|i| testlab::etcd::client_url(&host, i))
            .collect();
        let mut e = Etcd {
            child,
            data,
            endpoints,
        };
        let t0 = Instant::now();
        loop {
            let healthy = testlab::peers::command("ip")
                .args(["netns", "exec", fabric_ns])
                .arg(testlab::peers::program("etcdctl"))
                .args(["--endpoints", &e.endpoints.join(","), "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if healthy {
                return Ok(e);
            }
            if let Ok(Some(st)) = e.child.try_wait() {
                return Err(format!(
                    "etcd exited ({st}) during start-up; its log {}:\n{}",
                    log.display(),
                    testlab::tail(log, 10)
                ));
            }
            if t0.elapsed() > Duration::from_secs(60) || testlab::interrupted() {
                return Err(format!(
                    "etcd not healthy after 60 s; its log {}:\n{}",
                    log.display(),
                    testlab::tail(log, 10)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Waits (`timeout` at most) until every server holds the whole inventory (`hosts`) and
/// serves its own segment's part of it (`served_hosts` of `GET /v1/status`).
pub fn wait_served(servers: &[&Running], seg: &Segments, timeout: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    for (s, r) in servers.iter().enumerate() {
        let Running::Xboot(x) = r else {
            return Err("segment servers are xboot".into());
        };
        let want = (seg.n as u64, seg.range(s).len() as u64);
        loop {
            let st = x.status().ok();
            let got = st.as_ref().map(|v| {
                (
                    v["hosts"].as_u64().unwrap_or(0),
                    v["served_hosts"].as_u64().unwrap_or(0),
                )
            });
            if got == Some(want) {
                break;
            }
            if t0.elapsed() > timeout || testlab::interrupted() {
                return Err(format!(
                    "segment server {s} holds/serves {got:?} hosts, not {want:?}, after {timeout:?}; its log {}",
                    x.files.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// One segment server in a storm.
#[derive(Clone, Debug, Serialize)]
pub struct ServerRun {
    /// `seg<s>`: its `cluster.server_id` and segment name.
    pub id: String,
    pub subnet: String,
    /// Its segment's nodes.
    pub nodes: usize,
    /// `GET /v1/status` before the power command: the whole inventory, and its part.
    pub hosts: u64,
    pub served_hosts: u64,
    /// Its CPU (user + system) during the storm, and per node of its segment.
    pub cpu_s: f64,
    pub cpu_ms_per_node: f64,
    pub rss_kib: u64,
    /// Its segment's nodes that reached `complete`, and the last one's time.
    pub completed: usize,
    pub makespan_s: Option<f64>,
    /// Its segment's nodes it has a `dhcp_ack` event of (it answered them).
    pub answered: usize,
    /// Other segments' nodes it has a boot event of (`power` events aside: the power
    /// command goes through segment 0's server for every node). Should be 0.
    pub foreign: usize,
    /// A few of those, by name.
    pub foreign_names: Vec<String>,
    /// `xboot status --json` after the storm: its DHCP / TFTP / HTTP counters.
    pub status: Option<serde_json::Value>,
}

/// The segment servers of a storm.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentsRun {
    pub servers: usize,
    pub etcd_members: usize,
    /// The inventory's import through segment 0's server until every server serves its
    /// part, seconds.
    pub import_s: f64,
    /// etcd's CPU during the storm.
    pub etcd_cpu_s: f64,
    pub per_server: Vec<ServerRun>,
}

impl SegmentsRun {
    /// Nodes that some server answered outside its segment.
    pub fn foreign(&self) -> usize {
        self.per_server.iter().map(|s| s.foreign).sum()
    }
    /// Nodes whose own server has no `dhcp_ack` of them.
    pub fn unanswered(&self) -> usize {
        self.per_server.iter().map(|s| s.nodes - s.answered).sum()
    }
}

/// Which nodes server `s` answered: its segment's with a `dhcp_ack` event, and other
/// segments' with any event but `power`. `events` are the server's, by host name.
pub fn answered(
    seg: &Segments,
    s: usize,
    events: &[testlab::serve::BootEvent],
) -> (usize, Vec<String>) {
    let own: BTreeSet<String> = seg.range(s).map(node_name).collect();
    let acked: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.kind == "dhcp_ack" && own.contains(&e.host))
        .map(|e| e.host.as_str())
        .collect();
    let foreign: BTreeSet<String> = events
        .iter()
        .filter(|e| e.kind != "power" && !e.host.is_empty() && !own.contains(&e.host))
        .map(|e| e.host.clone())
        .collect();
    (acked.len(), foreign.into_iter().collect())
}

/// Segment `s`'s share of the nodes' results: completed, and its last `complete`.
pub fn segment_nodes(seg: &Segments, s: usize, nodes: &[NodeResult]) -> (usize, Option<f64>) {
    let mine: Vec<&NodeResult> = nodes.iter().filter(|r| seg.of(r.node) == s).collect();
    let completed = mine.iter().filter(|r| r.at("complete").is_some()).count();
    let makespan = mine
        .iter()
        .map(|r| r.at("complete"))
        .try_fold(0.0f64, |m, t| t.map(|t| m.max(t)));
    (completed, makespan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use testlab::serve::BootEvent;

    fn ev(host: &str, kind: &str) -> BootEvent {
        BootEvent {
            time_ms: 1,
            host: host.into(),
            kind: kind.into(),
            detail: String::new(),
        }
    }

    #[test]
    fn a_server_answers_its_own_segment_and_power_events_do_not_count_as_foreign() {
        let seg = Segments::new(20, 2).unwrap();
        // Segment 1 is n0011..n0020.
        let events = vec![
            ev("n0011", "dhcp_offer"),
            ev("n0011", "dhcp_ack"),
            ev("n0011", "dhcp_ack"),
            ev("n0012", "dhcp_ack"),
            ev("n0013", "kernel"),
            // Segment 0's node: powered through this server is fine, a lease is not.
            ev("n0001", "power"),
            ev("n0002", "dhcp_offer"),
        ];
        let (acked, foreign) = answered(&seg, 1, &events);
        assert_eq!(acked, 2);
        assert_eq!(foreign, vec!["n0002".to_string()]);
        let (acked0, foreign0) = answered(&seg, 0, &events);
        assert_eq!(acked0, 0);
        assert_eq!(foreign0, vec!["n0011", "n0012", "n0013"]);
    }

    #[test]
    fn a_segment_makespan_needs_all_its_nodes() {
        let seg = Segments::new(4, 2).unwrap();
        let done = |node: usize, t: f64| {
            let mut r = NodeResult {
                node,
                ..NodeResult::default()
            };
            r.stamps.push(("complete", t));
            r
        };
        let mut nodes = vec![
            done(0, 1.0),
            done(1, 2.5),
            done(2, 3.0),
            NodeResult {
                node: 3,
                ..NodeResult::default()
            },
        ];
        assert_eq!(segment_nodes(&seg, 0, &nodes), (2, Some(2.5)));
        assert_eq!(segment_nodes(&seg, 1, &nodes), (1, None));
        nodes[3] = done(3, 4.0);
        assert_eq!(segment_nodes(&seg, 1, &nodes), (2, Some(4.0)));
    }
}
