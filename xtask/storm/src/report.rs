//! The storm's report (pure: outcomes in, text out): per-stage table (reached, p50, p90,
//! p99, max), makespan, failures by node/stage/reason, server CPU-seconds and RSS, as
//! markdown; nodes per stage over time as an SVG (stacked areas, 10 Hz).
use std::fmt::Write as _;

use serde::Serialize;

use crate::node::{NodeResult, STAGES};
use crate::run::Outcome;

/// Stage durations: (name, from milestone, to milestone).
pub const SPANS: [(&str, &str, &str); 14] = [
    // From the power command (the storm's clock starts there) to the node's power-on
    // by its BMC; with `--power sim`, the node's jitter.
    ("power (command -> on)", "command", "power_on"),
    ("firmware DHCP", "power_on", "fw_ack"),
    // The read request goes out at once after the lease (EDK2: the size probe's).
    ("TFTP first reply", "fw_ack", "tftp_first"),
    ("TFTP (iPXE binary)", "fw_ack", "tftp_done"),
    ("iPXE DHCP", "tftp_done", "ipxe_ack"),
    // From iPXE's lease: the second one on UEFI, the first on BIOS (see [`spans`]).
    ("iPXE script", "ipxe_ack", "script"),
    ("kernel", "script", "kernel"),
    ("initrd", "kernel", "initrd"),
    ("boot (modelled)", "initrd", "booted"),
    ("OS DHCP", "booted", "os_ack"),
    // The simulator configuring the node's address (ioctls, a netlink message): the
    // lab's time, not the server's.
    ("OS address (lab)", "os_ack", "os_configured"),
    ("postscript", "os_configured", "postscript"),
    ("complete POST", "postscript", "complete"),
    ("power on -> complete", "power_on", "complete"),
];

/// Percentiles of one stage over the nodes that went through it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Dist {
    pub reached: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentile of sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn dist(mut v: Vec<f64>) -> Dist {
    v.sort_by(f64::total_cmp);
    Dist {
        reached: v.len(),
        p50: pct(&v, 50.0),
        p90: pct(&v, 90.0),
        p99: pct(&v, 99.0),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// When the span from milestone `a` began for `r`: a BIOS iPXE ROM handed its script's
/// URL in the first lease has no second (iPXE) lease, so its script span starts at the
/// firmware's ACK, which was iPXE's.
fn span_start(r: &NodeResult, a: &str) -> Option<f64> {
    r.at(a).or_else(|| match a {
        "command" => Some(0.0),
        "ipxe_ack" if r.at("tftp_done").is_none() => r.at("fw_ack"),
        _ => None,
    })
}

/// Per-span distributions of one storm.
pub fn spans(nodes: &[NodeResult]) -> Vec<(&'static str, Dist)> {
    SPANS
        .iter()
        .map(|(name, a, b)| {
            let v = nodes
                .iter()
                .filter_map(|r| Some(r.at(b)? - span_start(r, a)?))
                .collect();
            (*name, dist(v))
        })
        .collect()
}

/// A storm's summary as it goes into the JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub n: usize,
    pub server: &'static str,
    pub profile: &'static str,
    pub completed: usize,
    pub failed: usize,
    pub makespan_s: Option<f64>,
    pub last_complete_s: Option<f64>,
    pub server_cpu_s: f64,
    pub server_cpu_ms_per_node: f64,
    pub server_peak_rss_mib: f64,
    pub dhcp_sent: [u32; 3],
    pub tftp_retransmits: u32,
    pub dhcp_send_errors: u32,
    pub spans: Vec<(&'static str, Dist)>,
    /// (stage, reason) -> count.
    pub failures: Vec<(String, String, usize)>,
    /// Neighbour-table limits (`default`, `raised`) and the overflows counted.
    pub neigh_limits: &'static str,
    pub neigh_overflows: u64,
    /// Nodes that rebooted after a failure (fault runs), and reboots in all.
    pub nodes_rebooted: usize,
    pub reboots: usize,
    /// HTTP requests the booted OS retried (fault runs).
    pub os_http_retries: u32,
    /// Every validity check held (see [`validity`]).
    pub valid: bool,
    /// The checks that failed, one line each.
    pub invalid: Vec<String>,
}

/// One validity check of a storm: what it says, and whether it held.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The checks that decide whether a storm measured the server (and not the lab):
/// no softnet backlog drops, no neighbour-table overflow unless the default limits are
/// the variable under test, the simulator under its core.
pub fn validity(o: &Outcome) -> Vec<Check> {
    let mut v = lab_validity(o);
    if let Some(sg) = &o.segments {
        v.extend(segment_checks(sg));
    }
    v
}

/// A storm over segment servers: each server answered its own segment's nodes, every
/// one of them, and no other (its events), and served exactly its segment's hosts.
pub fn segment_checks(sg: &crate::segments::SegmentsRun) -> Vec<Check> {
    let per = |f: &dyn Fn(&crate::segments::ServerRun) -> String| {
        sg.per_server.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    vec![
        Check {
            name: "each segment server served its segment's hosts only",
            ok: sg
                .per_server
                .iter()
                .all(|s| s.served_hosts == s.nodes as u64),
            detail: per(&|s| format!("{} {}/{} of {}", s.id, s.served_hosts, s.nodes, s.hosts)),
        },
        Check {
            name: "no server answered another segment's node",
            ok: sg.foreign() == 0,
            detail: per(&|s| match s.foreign {
                0 => format!("{} 0", s.id),
                k => format!("{} {k} ({})", s.id, s.foreign_names.join(" ")),
            }),
        },
        Check {
            name: "every node leased by its own segment's server",
            ok: sg.unanswered() == 0,
            detail: per(&|s| format!("{} {}/{}", s.id, s.answered, s.nodes)),
        },
    ]
}

/// The simulator's loop lag (p99) a storm is valid under: the power-on burst of 1,000
/// nodes lags the one-thread loop by a few hundred ms for a moment; seconds distort
/// every stage.
const LOOP_LAG_OK_MS: f64 = 500.0;

/// The checks that the lab measured the server (see [`validity`]).
fn lab_validity(o: &Outcome) -> Vec<Check> {
    // How late the simulator's loop woke its timer (0 with no sample).
    let lag = match o.samples.is_empty() {
        true => Dist::default(),
        false => dist(o.samples.iter().map(|s| s.loop_lag_ms).collect()),
    };
    let wall = o.nodes.iter().map(|r| r.end).fold(0.0f64, f64::max);
    let nr = &o.neigh;
    let neigh_detail = format!(
        "{} (table_fulls {} -> {}), limits {} (gc_thresh1/2/3 = {}/{}/{}){}",
        nr.overflows(),
        nr.table_fulls_before,
        nr.table_fulls_after,
        nr.limits.name(),
        nr.gc_thresh[0],
        nr.gc_thresh[1],
        nr.gc_thresh[2],
        if nr.invalidates() || nr.overflows() == 0 {
            ""
        } else {
            ": the default limits are the variable, so overflows are the finding"
        },
    );
    vec![
        Check {
            name: "softnet backlog drops (host-wide)",
            ok: o.softnet_drops == 0,
            detail: format!(
                "{} (netdev_max_backlog {})",
                o.softnet_drops, o.netdev_max_backlog
            ),
        },
        Check {
            name: "neighbour-table overflows (host-wide)",
            ok: !nr.invalidates(),
            detail: neigh_detail,
        },
        Check {
            name: "simulator lost no packet",
            ok: o.lab_drops.simulator() == 0,
            detail: format!(
                "{} (node eth0 transmit drops {}, node UDP send-buffer errors {}, node IP output discards {}, failed sends {})",
                o.lab_drops.simulator(),
                o.lab_drops.node_tx_dropped,
                o.lab_drops.node_udp_sndbuf_errors,
                o.lab_drops.node_ip_out_discards,
                o.lab_drops.send_errors,
            ),
        },
        Check {
            name: "fabric lost no frame",
            ok: o.lab_drops.fabric_tx_dropped == 0,
            detail: format!(
                "bridge-port transmit drops {} ({} towards nodes, {} towards the server)",
                o.lab_drops.fabric_tx_dropped,
                o.lab_drops.fabric_tx_dropped_to_nodes,
                o.lab_drops.fabric_tx_dropped - o.lab_drops.fabric_tx_dropped_to_nodes
            ),
        },
        Check {
            // All namespaces share one tcp_mem: here the nodes' receive queues count
            // against the server's limit, which a real server's do not, so a storm that
            // enters pressure (windows shrunk, segments dropped) measures the lab's
            // shared limit as much as the server. (Counted where the socket that
            // entered it lives: the server namespace's count is the one read.)
            name: "no TCP memory pressure (tcp_mem, host-wide)",
            ok: o.server_net.get("TcpExt.TCPMemoryPressures").copied().unwrap_or(0) == 0,
            detail: format!(
                "{} entries into pressure from the server namespace",
                o.server_net.get("TcpExt.TCPMemoryPressures").copied().unwrap_or(0)
            ),
        },
        Check {
            name: "simulator CPU under its core",
            ok: o.simulator_cpu_s < 0.9 * wall.max(0.001),
            detail: format!("{:.2} s of CPU in {wall:.2} s", o.simulator_cpu_s),
        },
        Check {
            name: "simulator's loop prompt",
            ok: lag.p99 < LOOP_LAG_OK_MS,
            detail: format!(
                "a 10 ms timer of its loop woke late by p50 {:.0}, p99 {:.0}, max {:.0} ms \
                 per 0.1 s (each node's requests and answers wait as long; valid under \
                 {LOOP_LAG_OK_MS:.0} ms)",
                lag.p50, lag.p99, lag.max
            ),
        },
        Check {
            name: "simulator within its open-files limit",
            // 0 = not sampled (a storm shorter than a sample): nothing to hold against it.
            ok: o.sim_fds.peak < o.sim_fds.limit || o.sim_fds.limit == 0,
            detail: format!(
                "peak {} of {} descriptors (server: {}); spares per node {} TFTP + {} TCP; \
                 setns helper {} jobs, {:.2} s ({:.2} s switching)",
                o.sim_fds.peak,
                o.sim_fds.limit,
                o.sim_fds.server_peak,
                o.sim_fds.spare_tftp,
                o.sim_fds.spare_tcp,
                o.sim_fds.helper_jobs,
                o.sim_fds.helper_busy_s,
                o.sim_fds.helper_switch_s
            ),
        },
    ]
}

pub fn summarize(o: &Outcome) -> Summary {
    let checks = validity(o);
    let completed = o
        .nodes
        .iter()
        .filter(|r| r.at("complete").is_some())
        .count();
    let mut failures: Vec<(String, String, usize)> = vec![];
    for r in &o.nodes {
        if let Some((stage, reason, _)) = &r.failure {
            match failures
                .iter_mut()
                .find(|(s, re, _)| s == stage && re == reason)
            {
                Some(f) => f.2 += 1,
                None => failures.push((stage.clone(), reason.clone(), 1)),
            }
        }
    }
    let mut dhcp = [0; 3];
    for r in &o.nodes {
        for (d, s) in dhcp.iter_mut().zip(r.dhcp_sent) {
            *d += s;
        }
    }
    Summary {
        n: o.n,
        server: o.server,
        profile: o.profile,
        completed,
        failed: o.n - completed,
        makespan_s: o.makespan_s,
        last_complete_s: o
            .nodes
            .iter()
            .filter_map(|r| r.at("complete"))
            .max_by(f64::total_cmp),
        server_cpu_s: o.server_cpu_s,
        server_cpu_ms_per_node: o.server_cpu_s * 1e3 / o.n.max(1) as f64,
        server_peak_rss_mib: o.server_peak_rss_kib as f64 / 1024.0,
        dhcp_sent: dhcp,
        tftp_retransmits: o.nodes.iter().map(|r| r.tftp_retransmits).sum(),
        dhcp_send_errors: o.nodes.iter().map(|r| r.dhcp_send_errors).sum(),
        spans: spans(&o.nodes),
        failures,
        neigh_limits: o.neigh.limits.name(),
        neigh_overflows: o.neigh.overflows(),
        nodes_rebooted: o.nodes.iter().filter(|r| !r.reboots.is_empty()).count(),
        reboots: o.nodes.iter().map(|r| r.reboots.len()).sum(),
        os_http_retries: o.nodes.iter().map(|r| r.os_http_retries).sum(),
        valid: checks.iter().all(|c| c.ok),
        invalid: checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect(),
    }
}

fn secs(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 1.0 {
        format!("{:.0} ms", v * 1e3)
    } else {
        format!("{v:.2} s")
    }
}

/// Markdown for one storm: headline, stage table, failures (each listed, up to 50).
pub fn markdown(o: &Outcome) -> String {
    let s = summarize(o);
    let mut m = String::new();
    let _ = writeln!(
        m,
        "### {} - N = {} ({} profile, neighbour limits {}){}\n\n- completed {}/{}; makespan {}; server CPU {:.2} s ({:.1} ms/node), peak RSS {:.1} MiB; set-up {:.1} s\n\
         - DHCP packets sent (firmware / iPXE / OS): {} / {} / {}; TFTP retransmissions: {}; DHCP sends refused by the node's kernel: {}; boot delay {} s{}\n",
        o.server,
        o.n,
        o.profile,
        o.neigh.limits.name(),
        if s.valid { "" } else { " - INVALID" },
        s.completed,
        o.n,
        s.makespan_s.map(secs).unwrap_or_else(|| "- (failures)".into()),
        s.server_cpu_s,
        s.server_cpu_ms_per_node,
        s.server_peak_rss_mib,
        o.setup_s,
        s.dhcp_sent[0],
        s.dhcp_sent[1],
        s.dhcp_sent[2],
        s.tftp_retransmits,
        s.dhcp_send_errors,
        o.boot_delay_s,
        match o.power {
            None => format!(", power-on jitter {} s", o.jitter_s),
            Some(_) => String::new(),
        },
    );
    let net = |k: &str| o.server_net.get(k).copied().unwrap_or(0);
    let _ = writeln!(
        m,
        "- server namespace: TCP segments retransmitted {}, RTOs {}, listen-queue overflows {}, UDP receive-buffer drops {}; \
         server ARP requests {}; host load average at start {:.1}",
        net("Tcp.RetransSegs"),
        net("TcpExt.TCPTimeouts"),
        net("TcpExt.ListenOverflows"),
        net("Udp.RcvbufErrors"),
        match o.arp_redirected {
            Some(k) => format!("sent to their node's port: {k}"),
            None => "flooded to every port".into(),
        },
        o.loadavg_1m,
    );
    let _ = writeln!(m, "- server work: {}", work_line(o));
    let _ = writeln!(
        m,
        "- server's broadcast DHCP replies {}; payload {:.1} MB per node; uplink {}{}",
        match o.dhcp_redirected {
            Some(k) => format!("sent to their node's port: {k}"),
            None => "flooded to every port".into(),
        },
        o.payload_bytes as f64 / 1e6,
        o.uplink
            .as_deref()
            .map(|u| format!(
                "shaped to {u} (tbf on srv0, GSO {})",
                if u.ends_with("+gso") { "on" } else { "off" }
            ))
            .unwrap_or_else(|| "unshaped".into()),
        o.xdp_link
            .map(|l| format!(
                "; XDP on srv0 in {} mode: XDP_TX errors {}, srv0 transmit drops {}",
                l.name(),
                o.server_port.xdp_tx_errors,
                o.server_port.tx_dropped
            ))
            .unwrap_or_default(),
    );
    if let Some(line) = floor_line(o) {
        let _ = writeln!(m, "{line}");
    }
    if let Some(sg) = &o.segments {
        let _ = writeln!(
            m,
            "- segment servers: {} xboot in cluster mode on {} etcd member(s) (etcd CPU {:.2} s), inventory imported \
             through seg0 and served by all in {:.1} s; the power command through seg0",
            sg.servers, sg.etcd_members, sg.etcd_cpu_s, sg.import_s
        );
        for x in &sg.per_server {
            let _ = writeln!(
                m,
                "  - {} ({}): {}/{} completed, makespan {}, CPU {:.2} s ({:.1} ms/node), RSS {:.1} MiB; \
                 leased {} of its nodes, answered {} of other segments'",
                x.id,
                x.subnet,
                x.completed,
                x.nodes,
                x.makespan_s.map(secs).unwrap_or_else(|| "-".into()),
                x.cpu_s,
                x.cpu_ms_per_node,
                x.rss_kib as f64 / 1024.0,
                x.answered,
                x.foreign
            );
        }
    }
    let _ = writeln!(
        m,
        "- validity: {}",
        if s.valid { "valid" } else { "**INVALID**" }
    );
    for c in validity(o) {
        let _ = writeln!(
            m,
            "  - [{}] {}: {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    if let Some(f) = &o.fault {
        let _ = writeln!(
            m,
            "- fault `{}`{}{}{}: {}; nodes rebooted {} ({} reboots), OS HTTP retries {}",
            f.fault,
            f.at_s.map(|t| format!(" at {t:.2} s")).unwrap_or_default(),
            f.restart_s
                .map(|t| format!(", server listening again {t:.2} s later"))
                .unwrap_or_default(),
            if f.dropped != [0, 0] {
                format!(
                    ", frames dropped to / from the server {} / {}",
                    f.dropped[0], f.dropped[1]
                )
            } else {
                String::new()
            },
            if f.at_s.is_some() {
                format!(
                    "{} (nodes past their script then: {}, completed without a reboot: {})",
                    f.detail, f.past_script, f.past_script_finished
                )
            } else {
                f.detail.clone()
            },
            s.nodes_rebooted,
            s.reboots,
            s.os_http_retries,
        );
        let mut why: Vec<(String, usize)> = vec![];
        for r in &o.nodes {
            for (stage, reason, _) in &r.reboots {
                let key = format!("{stage} / {}", reason.split(':').next().unwrap_or(reason));
                match why.iter_mut().find(|(k, _)| *k == key) {
                    Some(w) => w.1 += 1,
                    None => why.push((key, 1)),
                }
            }
        }
        for (k, c) in why {
            let _ = writeln!(m, "  - reboot after `{k}`: {c}");
        }
    }
    m.push('\n');
    if let Some(p) = &o.power {
        let _ = writeln!(
            m,
            "- power: {} BMCs (up in {:.1} s{}); `{}` returned after {} ({}/{} BMCs ok, exit {}, {:.2} s of its CPU); nodes powered {}/{}{}{}\n",
            p.bmcs,
            p.setup_s,
            if p.bmc_rss_mib > 0.0 {
                format!(", {:.0} MiB RSS", p.bmc_rss_mib)
            } else {
                String::new()
            },
            p.command,
            secs(p.wall_s),
            p.ok,
            p.total,
            p.exit_code,
            p.cpu_s,
            p.powered,
            o.n,
            if p.abandoned > 0 {
                format!(", {} given up on", p.abandoned)
            } else {
                String::new()
            },
            if p.failures.is_empty() {
                String::new()
            } else {
                format!("; first failures: {}", p.failures.join("; "))
            },
        );
    } else {
        let _ = writeln!(
            m,
            "- power: the simulator's clock (`--power sim`, jitter {} s)\n",
            o.jitter_s
        );
    }
    if let Some(st) = &o.server_status {
        let _ = writeln!(
            m,
            "- xboot counters: XDP answered {}, userspace DHCP offers {} / acks {}\n",
            st["counters"]["xdp"]["answered"],
            st["counters"]["dhcp"]["offers"],
            st["counters"]["dhcp"]["acks"],
        );
    }
    let _ = writeln!(
        m,
        "| stage | reached | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|"
    );
    for (name, d) in &s.spans {
        let _ = writeln!(
            m,
            "| {name} | {} | {} | {} | {} | {} |",
            d.reached,
            secs(d.p50),
            secs(d.p90),
            secs(d.p99),
            secs(d.max)
        );
    }
    if !s.failures.is_empty() {
        let _ = writeln!(m, "\nFailures by stage and reason:\n");
        for (stage, reason, k) in &s.failures {
            let _ = writeln!(m, "- {k} x `{reason}` in stage `{stage}`");
        }
        let _ = writeln!(m, "\nFailed nodes:\n");
        for r in o.nodes.iter().filter(|r| r.failure.is_some()).take(50) {
            let (stage, reason, detail) = r.failure.as_ref().expect("filtered");
            let _ = writeln!(
                m,
                "- {} ({}) at {:.2} s: {stage} / {reason}: {detail}",
                r.name, r.mac, r.end
            );
        }
    }
    if let Some(t) = &o.truth {
        let _ = writeln!(m, "\n{}", t.markdown());
    }
    m
}

/// The floor's line of the markdown: data phase, floor, ratio, egress.
/// The server's work per node in counts: srv0's packets and bytes per packet, TCP
/// segments out, and (when counted) system calls and context switches.
pub fn work_line(o: &Outcome) -> String {
    let w = work(o);
    let mut line = format!(
        "srv0 sent {:.1} packets/node ({:.0} B/packet), TCP segments out {:.1}/node",
        w.packets, w.bytes_per_packet, w.segments
    );
    if let (Some(sys), Some(cs)) = (w.syscalls, w.context_switches) {
        line += &format!(", system calls {sys:.1}/node, context switches {cs:.1}/node");
    }
    line
}

/// [`work_line`]'s figures, per node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Work {
    pub packets: f64,
    pub bytes_per_packet: f64,
    pub segments: f64,
    pub syscalls: Option<f64>,
    pub context_switches: Option<f64>,
}

pub fn work(o: &Outcome) -> Work {
    let n = o.n.max(1) as f64;
    let tx = o.server_tx;
    Work {
        packets: tx.packets as f64 / n,
        bytes_per_packet: tx.bytes as f64 / tx.packets.max(1) as f64,
        segments: o.server_net.get("Tcp.OutSegs").copied().unwrap_or(0) as f64 / n,
        syscalls: o.server_work.map(|w| w.syscalls as f64 / n),
        context_switches: o.server_work.map(|w| w.context_switches as f64 / n),
    }
}

/// One row per run, in the order they ran: the server's CPU and work per node, for
/// comparing servers (and binaries) by counts where seconds are noisy.
pub fn work_table(outcomes: &[Outcome]) -> String {
    let mut m = String::from(
        "## Server work per node\n\nOne row per run, in run order. Packets: srv0's transmit \
         count (GSO packets: bytes per packet shows how large the server's sends let them grow).\n\n\
         | N | server | completed | makespan s | server CPU ms/node | srv0 packets/node | B/packet | TCP segments out/node | system calls/node | context switches/node | load at start |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for o in outcomes {
        let s = summarize(o);
        let w = work(o);
        let _ = writeln!(
            m,
            "| {} | {} | {}/{} | {} | {:.2} | {:.1} | {:.0} | {:.1} | {} | {} | {:.1} |",
            o.n,
            o.server,
            s.completed,
            o.n,
            o.makespan_s.map_or("-".to_string(), |v| format!("{v:.1}")),
            s.server_cpu_ms_per_node,
            w.packets,
            w.bytes_per_packet,
            w.segments,
            opt(w.syscalls),
            opt(w.context_switches),
            o.loadavg_1m,
        );
    }
    m + "\n"
}

pub fn floor_line(o: &Outcome) -> Option<String> {
    let f = o.floor.as_ref()?;
    let gb = |s: Option<f64>| match s {
        Some(s) if s > 0.0 => format!("{:.2} Gbit/s", f.bytes as f64 * 8.0 / s / 1e9),
        _ => "-".into(),
    };
    Some(format!(
        "- data phase (first kernel request to last initrd byte) {}, {}; floor (bare sendfile server, the same {:.2} GB to every node at once, same fabric, after the storm) {}, {}{}; **floor ratio {}**",
        o.data_phase_s.map(secs).unwrap_or_else(|| "-".into()),
        gb(o.data_phase_s),
        f.bytes as f64 / 1e9,
        secs(f.seconds),
        gb(Some(f.seconds)),
        if f.failed > 0 {
            format!(
                " ({} floor nodes failed: {})",
                f.failed,
                f.first_error.as_deref().unwrap_or("?")
            )
        } else {
            String::new()
        },
        o.floor_ratio
            .map(|r| format!("{r:.2}x"))
            .unwrap_or_else(|| "- (a node missed the data phase, or the floor failed)".into()),
    ))
}

/// Server egress per sample interval, Gbit/s: (time, rate) from the samples' byte
/// counts (the first sample's interval starts at 0).
pub fn egress_gbit(samples: &[crate::run::Sample]) -> Vec<(f64, f64)> {
    let mut prev = (0.0, 0u64);
    samples
        .iter()
        .filter_map(|s| {
            let dt = s.t - prev.0;
            let db = s.tx_bytes.saturating_sub(prev.1);
            prev = (s.t, s.tx_bytes);
            (dt > 0.0).then(|| (s.t, db as f64 * 8.0 / dt / 1e9))
        })
        .collect()
}

/// The egress panel: server egress Gbit/s at 10 Hz, the floor's mean rate as a line
/// (and the uplink's rate when shaped).
fn egress_panel(o: &Outcome, top: f64, left: f64, pw: f64, ph: f64, end: f64) -> String {
    let mut s = String::new();
    let series = egress_gbit(&o.samples);
    let floor = o
        .floor
        .as_ref()
        .map(|f| f.gbit_s())
        .filter(|g| g.is_finite());
    let uplink = o
        .uplink
        .as_deref()
        .and_then(crate::fabric::Uplink::parse)
        .map(|u| u.bits_per_s as f64 / 1e9);
    let peak = series
        .iter()
        .map(|p| p.1)
        .chain(floor)
        .chain(uplink)
        .fold(0.0f64, f64::max);
    let ymax = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        .into_iter()
        .find(|m| *m >= peak * 1.05)
        .unwrap_or(peak * 1.1);
    let x = |t: f64| left + pw * (t / end).min(1.0);
    let y = |g: f64| top + ph - ph * (g / ymax).min(1.0);
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"{:.1}\" font-size=\"13\">server egress, Gbit/s (10 Hz)</text>\n\
         <rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>",
        top - 8.0
    );
    if !series.is_empty() {
        let pts: Vec<String> = series
            .iter()
            .map(|(t, g)| format!("{:.1},{:.1}", x(*t), y(*g)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.2\" points=\"{}\"/>",
            pts.join(" ")
        );
    }
    for (label, g, color) in [("floor", floor, "#d62728"), ("uplink", uplink, "#2ca02c")] {
        if let Some(g) = g {
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-dasharray=\"6,3\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{label} {g:.2}</text>",
                left + pw,
                y(g),
                y(g),
                left + pw + 6.0,
                y(g) + 4.0
            );
        }
    }
    for frac in [0.0, 0.5, 1.0] {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.1}</text>",
            left - 4.0,
            top + ph - ph * frac + 4.0,
            ymax * frac
        );
    }
    s
}

/// The stage a node is in at time `t`: its last milestone reached by then, `failed`
/// after it failed, `off` before power-on.
fn state_at(r: &NodeResult, t: f64) -> usize {
    if r.failure.is_some() && t >= r.end {
        return STAGES.len() + 1;
    }
    r.stamps
        .iter()
        .filter(|(_, at)| *at <= t)
        .filter_map(|(s, _)| STAGES.iter().position(|x| x == s))
        .max()
        .map(|i| i + 1)
        .unwrap_or(0)
}

const COLORS: [&str; 15] = [
    "#dddddd", "#8c564b", "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a",
    "#9467bd", "#c5b0d5", "#17becf", "#bcbd22", "#7f7f7f", "#2f2f2f", "#d62728",
];

/// Nodes per stage over time (stacked areas, 10 Hz), with a legend.
pub fn svg(o: &Outcome) -> String {
    let end = o.nodes.iter().map(|r| r.end).fold(1.0f64, f64::max).ceil();
    let steps = (end * 10.0) as usize + 1;
    let labels: Vec<&str> = std::iter::once("off")
        .chain(STAGES.iter().copied())
        .chain(["failed"])
        .collect();
    // counts[t][state]
    let counts: Vec<Vec<usize>> = (0..steps)
        .map(|k| {
            let t = k as f64 / 10.0;
            let mut c = vec![0; labels.len()];
            for r in &o.nodes {
                c[state_at(r, t)] += 1;
            }
            c
        })
        .collect();
    let (w, h, left, top, pw, ph) = (900.0, 640.0, 60.0, 30.0, 640.0, 340.0);
    let x = |k: usize| left + pw * k as f64 / (steps - 1).max(1) as f64;
    let n = o.n.max(1) as f64;
    let y = |c: usize| top + ph - ph * c as f64 / n;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <text x=\"{left}\" y=\"18\" font-size=\"13\">{} - N = {}: nodes per stage over time ({} profile)</text>\n",
        o.server, o.n, o.profile
    );
    // Stack bottom-up in reverse boot order, so finished nodes sit at the bottom.
    let order: Vec<usize> = (0..labels.len()).rev().collect();
    let mut below = vec![0usize; steps];
    for &st in &order {
        let above: Vec<usize> = (0..steps).map(|k| below[k] + counts[k][st]).collect();
        if above.iter().zip(&below).any(|(a, b)| a != b) {
            let mut pts: Vec<String> = (0..steps)
                .map(|k| format!("{:.1},{:.1}", x(k), y(above[k])))
                .collect();
            pts.extend(
                (0..steps)
                    .rev()
                    .map(|k| format!("{:.1},{:.1}", x(k), y(below[k]))),
            );
            let _ = writeln!(
                s,
                "<polygon fill=\"{}\" stroke=\"none\" points=\"{}\"/>",
                COLORS[st % COLORS.len()],
                pts.join(" ")
            );
        }
        below = above;
    }
    // Axes and ticks.
    let _ = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>"
    );
    let tick = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]
        .into_iter()
        .find(|t| end / t <= 10.0)
        .unwrap_or(300.0);
    let mut t = 0.0;
    while t <= end {
        let px = left + pw * t * 10.0 / (steps - 1).max(1) as f64;
        let _ = writeln!(
            s,
            "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.0}</text>",
            top + ph + 14.0
        );
        t += tick;
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since the power command</text>",
        left + pw / 2.0,
        top + ph + 30.0
    );
    for frac in [0.0, 0.5, 1.0] {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text>",
            left - 4.0,
            top + ph - ph * frac + 4.0,
            n * frac
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\">last milestone reached:</text>",
        left + pw + 16.0,
        top - 6.0
    );
    for (i, l) in labels.iter().enumerate() {
        let ly = top + 12.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{l}</text>",
            left + pw + 16.0,
            ly - 9.0,
            COLORS[i % COLORS.len()],
            left + pw + 30.0,
            ly
        );
    }
    s += &egress_panel(
        o,
        top + ph + 60.0,
        left,
        pw,
        160.0,
        (steps - 1).max(1) as f64 / 10.0,
    );
    s += "</svg>\n";
    s
}

/// The bench's "segment servers" tables: one row per (N, profile, server, K) with K =
/// standalone for the plain runs; the median run by makespan of each cell.
pub fn segment_tables(outcomes: &[Outcome]) -> String {
    let k_of = |o: &Outcome| o.segments.as_ref().map(|s| s.servers);
    if outcomes.iter().all(|o| k_of(o).is_none()) {
        return String::new();
    }
    let mut keys: Vec<(usize, &str, &str, Option<usize>)> = outcomes
        .iter()
        .map(|o| (o.n, o.profile, o.server, k_of(o)))
        .collect();
    keys.sort();
    keys.dedup();
    let mut m = String::from(
        "\n## Segment servers\n\nThe nodes split over K segments, each its own L2 domain, subnet and xboot server (own \
         namespace), all K in cluster mode on one etcd member; K = standalone is one server without cluster mode. All \
         servers share this machine's 2 cores, so makespan cannot fall with K as it would with a machine per server: \
         server CPU (all servers, and per node) is the figure that carries over. Median run by makespan of each cell.\n\n\
         | N | profile | server | K | runs (valid) | completed | makespan s | server CPU s (all) | ms/node | CPU s per server | \
         makespan s per segment | etcd CPU s | import s | leased by own server | foreign answers |\n\
         |---:|---|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|\n",
    );
    let mut stages =
        String::from("\nPer-stage p50/p99 (seconds) of the same runs:\n\n| N | profile | K |");
    let names: Vec<&str> = crate::report::SPANS.iter().map(|(n, _, _)| *n).collect();
    for n in &names {
        stages += &format!(" {n} |");
    }
    stages += "\n|---:|---|---|";
    stages += &"---|".repeat(names.len());
    stages += "\n";
    for (n, profile, server, k) in keys {
        let mut runs: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.n == n && o.profile == profile && o.server == server && k_of(o) == k)
            .collect();
        runs.sort_by(|a, b| {
            let f = |o: &Outcome| o.makespan_s.unwrap_or(f64::INFINITY);
            f(a).total_cmp(&f(b))
        });
        let o = runs[runs.len() / 2];
        let s = summarize(o);
        let valid = runs.iter().filter(|o| summarize(o).valid).count();
        let kname = k.map_or("standalone".to_string(), |k| k.to_string());
        let f2 = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let (per_cpu, per_span, etcd, import, leased, foreign) = match &o.segments {
            Some(sg) => (
                sg.per_server
                    .iter()
                    .map(|x| format!("{:.2}", x.cpu_s))
                    .collect::<Vec<_>>()
                    .join(" / "),
                sg.per_server
                    .iter()
                    .map(|x| f2(x.makespan_s))
                    .collect::<Vec<_>>()
                    .join(" / "),
                format!("{:.2}", sg.etcd_cpu_s),
                format!("{:.1}", sg.import_s),
                format!(
                    "{}/{n}",
                    sg.per_server.iter().map(|x| x.answered).sum::<usize>()
                ),
                sg.foreign().to_string(),
            ),
            None => (
                format!("{:.2}", o.server_cpu_s),
                f2(o.makespan_s),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
        };
        m += &format!(
            "| {n} | {profile} | {server} | {kname} | {} ({valid}) | {}/{n} | {} | {:.2} | {:.1} | {per_cpu} | {per_span} | {etcd} | {import} | {leased} | {foreign} |\n",
            runs.len(),
            s.completed,
            f2(o.makespan_s),
            o.server_cpu_s,
            s.server_cpu_ms_per_node,
        );
        stages += &format!("| {n} | {profile} | {kname} |");
        for (_, d) in &s.spans {
            stages += &match d.reached {
                0 => " - |".to_string(),
                _ => format!(" {:.2}/{:.2} |", d.p50, d.p99),
            };
        }
        stages += "\n";
    }
    m + &stages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(pct(&v, 50.0), 50.0);
        assert_eq!(pct(&v, 99.0), 99.0);
        assert_eq!(pct(&[3.0], 99.0), 3.0);
        let d = dist(vec![2.0, 1.0]);
        assert_eq!((d.reached, d.p50, d.max), (2, 1.0, 2.0));
    }

    fn outcome(neigh: crate::neigh::Record) -> Outcome {
        Outcome {
            n: 1,
            server: "xboot-userspace",
            profile: "bios",
            boot_delay_s: 3.0,
            jitter_s: 1.0,
            setup_s: 1.0,
            nodes: vec![NodeResult {
                stamps: vec![("power_on", 0.1), ("complete", 5.0)],
                end: 5.0,
                ..NodeResult::default()
            }],
            makespan_s: Some(5.0),
            server_cpu_s: 0.5,
            server_peak_rss_kib: 1024,
            samples: vec![],
            events: vec![],
            logs: String::new(),
            server_net: Default::default(),
            softnet_drops: 0,
            neigh_table_fulls: neigh.overflows(),
            neigh,
            lab_drops: Default::default(),
            netdev_max_backlog: 1000,
            fault: None,
            arp_redirected: Some(0),
            dhcp_redirected: Some(0),
            payload_bytes: 0,
            uplink: None,
            server_tx: Default::default(),
            server_work: None,
            xdp_link: None,
            server_port: Default::default(),
            floor: None,
            data_phase_s: None,
            floor_ratio: None,
            server_status: None,
            simulator_cpu_s: 1.0,
            sim_fds: Default::default(),
            loadavg_1m: 0.0,
            truth: None,
            power_mode: "sim",
            segments: None,
            power: None,
        }
    }

    /// The neighbour record of a storm with raised limits and no overflow.
    fn raised() -> crate::neigh::Record {
        crate::neigh::Record {
            limits: crate::neigh::Limits::Raised,
            variable: false,
            gc_thresh: [128, 512, 1024],
            table_fulls_before: 0,
            table_fulls_after: 0,
        }
    }

    /// Work per node is counts over N (bytes per packet over packets), and the table
    /// and the run's line show system calls only when they were counted.
    #[test]
    fn server_work_per_node() {
        let mut o = outcome(raised());
        o.server_tx = crate::counters::Tx {
            packets: 3 * o.n as u64,
            bytes: 3 * o.n as u64 * 30_000,
        };
        o.server_net.insert("Tcp.OutSegs".into(), 60 * o.n as u64);
        let line = work_line(&o);
        assert!(
            line.contains("3.0 packets/node (30000 B/packet), TCP segments out 60.0/node"),
            "{line}"
        );
        assert!(!line.contains("system calls"), "{line}");
        assert!(work_table(std::slice::from_ref(&o)).contains("| 3.0 | 30000 | 60.0 | - | - |"));
        o.server_work = Some(crate::counters::Work {
            syscalls: 25 * o.n as u64,
            context_switches: 2 * o.n as u64,
        });
        let w = work(&o);
        assert_eq!((w.syscalls, w.context_switches), (Some(25.0), Some(2.0)));
        assert!(work_line(&o).contains("system calls 25.0/node, context switches 2.0/node"));
        assert!(markdown(&o).contains("- server work: srv0 sent 3.0 packets/node"));
    }

    #[test]
    fn power_stage_and_command_in_the_report() {
        let mut o = outcome(raised());
        assert!(markdown(&o).contains("- power: the simulator's clock (`--power sim`, jitter 1 s)"));
        o.power_mode = "ipmi_sim";
        o.power = Some(crate::power::Record {
            bmcs: "ipmi_sim".into(),
            command: "xboot bmc power cycle all --pxe --json".into(),
            setup_s: 2.0,
            bmc_rss_mib: 6.0,
            wall_s: 0.25,
            cpu_s: 0.05,
            ok: 1,
            total: 1,
            exit_code: 0,
            failures: vec![],
            powered: 1,
            abandoned: 0,
        });
        let m = markdown(&o);
        assert!(
            m.contains("- power: ipmi_sim BMCs (up in 2.0 s, 6 MiB RSS); `xboot bmc power cycle all --pxe --json` returned after 250 ms (1/1 BMCs ok, exit 0, 0.05 s of its CPU); nodes powered 1/1\n"),
            "{m}"
        );
        // The power stage runs from the command (t = 0) to the node's power-on.
        let p = &summarize(&o).spans[0];
        assert_eq!(
            (p.0, p.1.reached, p.1.p50),
            ("power (command -> on)", 1, 0.1)
        );
        assert!(m.contains("| power (command -> on) | 1 | 100 ms |"), "{m}");
    }

    #[test]
    fn segment_servers_are_checked_and_tabled() {
        use crate::segments::{SegmentsRun, ServerRun};
        let server = |s: usize, served: u64, answered: usize, foreign: usize| ServerRun {
            id: format!("seg{s}"),
            subnet: format!("10.{}.0.0/16", 77 + s),
            nodes: 10,
            hosts: 20,
            served_hosts: served,
            cpu_s: 0.5 + s as f64,
            cpu_ms_per_node: 50.0,
            rss_kib: 1024,
            completed: 10,
            makespan_s: Some(2.0),
            answered,
            foreign,
            foreign_names: (0..foreign).map(|i| format!("n{:04}", i + 1)).collect(),
            status: None,
        };
        let rec = crate::neigh::Record {
            limits: crate::neigh::Limits::Raised,
            variable: false,
            gc_thresh: [128, 512, 1024],
            table_fulls_before: 0,
            table_fulls_after: 0,
        };
        let mut o = outcome(rec);
        o.n = 20;
        o.makespan_s = Some(2.0);
        o.segments = Some(SegmentsRun {
            servers: 2,
            etcd_members: 1,
            import_s: 0.25,
            etcd_cpu_s: 0.125,
            per_server: vec![server(0, 10, 10, 0), server(1, 10, 10, 0)],
        });
        assert!(summarize(&o).valid, "{:?}", summarize(&o).invalid);
        let t = segment_tables(&[o.clone()]);
        assert!(t.contains("## Segment servers"), "{t}");
        assert!(
            t.contains("| 20 | bios | xboot-userspace | 2 | 1 (1) | 1/20 |"),
            "{t}"
        );
        assert!(
            t.contains("| 0.50 / 1.50 | 2.00 / 2.00 | 0.12 | 0.2 | 20/20 | 0 |"),
            "{t}"
        );
        // One server leased a node of the other segment and missed one of its own.
        o.segments.as_mut().unwrap().per_server[1] = server(1, 10, 9, 1);
        let s = summarize(&o);
        assert_eq!(s.invalid.len(), 2, "{:?}", s.invalid);
        assert_eq!(
            s.invalid[0],
            "no server answered another segment's node: seg0 0, seg1 1 (n0001)"
        );
        assert_eq!(
            s.invalid[1],
            "every node leased by its own segment's server: seg0 10/10, seg1 9/10"
        );
        // No segment run: no table.
        o.segments = None;
        assert_eq!(segment_tables(&[o]), "");
    }

    #[test]
    fn validity_names_what_failed() {
        use crate::neigh::{Limits, Record};
        let rec = |limits, variable, after| Record {
            limits,
            variable,
            gc_thresh: [128, 512, 1024],
            table_fulls_before: 10,
            table_fulls_after: after,
        };
        let o = outcome(rec(Limits::Raised, true, 10));
        let s = summarize(&o);
        assert!(s.valid, "{:?}", s.invalid);
        assert_eq!((s.neigh_limits, s.neigh_overflows), ("raised", 0));
        // Overflows under raised limits: invalid, and the report says why.
        let o = outcome(rec(Limits::Raised, true, 25));
        let s = summarize(&o);
        assert!(!s.valid);
        assert_eq!(s.invalid.len(), 1);
        assert!(
            s.invalid[0].starts_with("neighbour-table overflows"),
            "{:?}",
            s.invalid
        );
        assert!(
            s.invalid[0].contains("15 (table_fulls 10 -> 25)"),
            "{:?}",
            s.invalid
        );
        assert!(markdown(&o).contains("INVALID"));
        // Under default limits that are the variable: a finding, not invalid.
        let o = outcome(rec(Limits::Default, true, 25));
        assert!(summarize(&o).valid);
        assert!(markdown(&o).contains("overflows are the finding"));
        // Default limits that are not the variable: invalid.
        assert!(!summarize(&outcome(rec(Limits::Default, false, 25))).valid);
        // Softnet drops and a saturated simulator are each named.
        let mut o = outcome(rec(Limits::Raised, true, 10));
        o.softnet_drops = 3;
        o.simulator_cpu_s = 4.9;
        let s = summarize(&o);
        assert_eq!(s.invalid.len(), 2, "{:?}", s.invalid);
        assert!(s.invalid[0].starts_with("softnet backlog drops"));
        assert!(s.invalid[1].starts_with("simulator CPU"));
        // The host's tcp_mem in pressure: the nodes' queues share it here.
        let mut o = outcome(rec(Limits::Raised, true, 10));
        o.server_net.insert("TcpExt.TCPMemoryPressures".into(), 1);
        let s = summarize(&o);
        assert_eq!(s.invalid.len(), 1, "{:?}", s.invalid);
        assert!(
            s.invalid[0].starts_with("no TCP memory pressure (tcp_mem, host-wide): 1 entries"),
            "{:?}",
            s.invalid
        );
        // A simulator loop that took its samples late: its nodes waited as long.
        let mut o = outcome(rec(Limits::Raised, true, 10));
        o.samples = (0..100)
            .map(|i| crate::run::Sample {
                t: i as f64 / 10.0,
                cpu_s: 0.0,
                rss_kib: 0,
                tx_bytes: 0,
                loop_lag_ms: if i < 95 { 1.0 } else { 900.0 },
            })
            .collect();
        let s = summarize(&o);
        assert_eq!(s.invalid.len(), 1, "{:?}", s.invalid);
        assert!(
            s.invalid[0].starts_with(
                "simulator's loop prompt: a 10 ms timer of its loop woke late by p50 1, p99 900, max 900 ms"
            ),
            "{:?}",
            s.invalid
        );
        o.samples.truncate(95);
        assert!(summarize(&o).valid);
        // The lab losing packets: the simulator's side and the fabric's, each named.
        let mut o = outcome(rec(Limits::Raised, true, 10));
        o.lab_drops.node_tx_dropped = 2;
        o.lab_drops.send_errors = 1;
        o.lab_drops.fabric_tx_dropped = 4;
        o.lab_drops.fabric_tx_dropped_to_nodes = 1;
        let s = summarize(&o);
        assert_eq!(s.invalid.len(), 2, "{:?}", s.invalid);
        assert!(
            s.invalid[0].starts_with("simulator lost no packet: 3 (node eth0 transmit drops 2"),
            "{:?}",
            s.invalid
        );
        assert!(
            s.invalid[1]
                .contains("bridge-port transmit drops 4 (1 towards nodes, 3 towards the server)"),
            "{:?}",
            s.invalid
        );
    }

    #[test]
    fn script_span_of_a_boot_without_tftp_starts_at_the_first_lease() {
        let bios = NodeResult {
            stamps: vec![("power_on", 0.0), ("fw_ack", 1.0), ("script", 1.5)],
            ..NodeResult::default()
        };
        let uefi = NodeResult {
            stamps: vec![
                ("power_on", 0.0),
                ("fw_ack", 4.0),
                ("tftp_done", 5.0),
                ("ipxe_ack", 6.0),
                ("script", 6.25),
            ],
            ..NodeResult::default()
        };
        let script = |nodes: &[NodeResult]| {
            spans(nodes)
                .into_iter()
                .find(|(n, _)| *n == "iPXE script")
                .map(|(_, d)| (d.reached, d.p50))
        };
        assert_eq!(script(std::slice::from_ref(&bios)), Some((1, 0.5)));
        assert_eq!(script(std::slice::from_ref(&uefi)), Some((1, 0.25)));
        // A node that fetched by TFTP but has no iPXE lease has no script span.
        let stuck = NodeResult {
            stamps: vec![
                ("power_on", 0.0),
                ("fw_ack", 1.0),
                ("tftp_done", 2.0),
                ("script", 3.0),
            ],
            ..NodeResult::default()
        };
        assert_eq!(script(&[stuck]).map(|(reached, _)| reached), Some(0));
    }

    #[test]
    fn states_over_time() {
        let r = NodeResult {
            stamps: vec![("power_on", 0.5), ("fw_ack", 1.0)],
            failure: Some(("fw_ack".into(), "tftp_timeout".into(), String::new())),
            end: 3.0,
            ..NodeResult::default()
        };
        assert_eq!(state_at(&r, 0.1), 0);
        assert_eq!(state_at(&r, 0.7), 1);
        assert_eq!(state_at(&r, 2.0), 2);
        assert_eq!(state_at(&r, 3.0), STAGES.len() + 1);
    }

    #[test]
    fn egress_rates_and_the_floor_in_the_plot() {
        use crate::run::Sample;
        let sample = |t: f64, tx_bytes: u64| Sample {
            t,
            cpu_s: 0.0,
            rss_kib: 0,
            tx_bytes,
            loop_lag_ms: 0.0,
        };
        // 125 MB in the first 0.1 s = 10 Gbit/s, then nothing, then 62.5 MB in 0.1 s.
        let v = egress_gbit(&[
            sample(0.1, 125_000_000),
            sample(0.2, 125_000_000),
            sample(0.3, 187_500_000),
        ]);
        assert_eq!(v.len(), 3);
        assert!(
            (v[0].1 - 10.0).abs() < 1e-9 && v[1].1 == 0.0 && (v[2].1 - 5.0).abs() < 1e-9,
            "{v:?}"
        );
        let mut o = outcome(crate::neigh::Record {
            limits: crate::neigh::Limits::Raised,
            variable: false,
            gc_thresh: [1, 2, 3],
            table_fulls_before: 0,
            table_fulls_after: 0,
        });
        o.samples = vec![sample(0.1, 125_000_000), sample(0.2, 250_000_000)];
        o.floor = Some(crate::floor::Floor {
            seconds: 2.0,
            nodes_done: 1,
            bytes: 2_000_000_000,
            ..Default::default()
        });
        o.data_phase_s = Some(2.4);
        o.floor_ratio = Some(1.2);
        o.uplink = Some("10gbit".into());
        let svg = svg(&o);
        assert!(svg.contains(">floor 8.00</text>"), "{svg}");
        assert!(svg.contains(">uplink 10.00</text>"), "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
        let md = markdown(&o);
        assert!(md.contains("**floor ratio 1.20x**"), "{md}");
        assert!(md.contains("shaped to 10gbit"), "{md}");
    }
}
