//! The fast path's counters (per-CPU arrays summed over CPUs) and lease events (per-CPU
//! rings, `events`), as the daemon reports them: `xboot status`, `/metrics` (Prometheus text),
//! and the boot event log (`xboot events NODESET`).
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::AtomicU64;

use aya::maps::{MapData, PerCpuArray};

use super::events::EventReader;
use boot_common::{counter, reason, LeaseEvent};

use crate::events::{now_ms, EventKind};
use crate::inventory::Mac;
use crate::state::Shared;

/// Read handle on the program's counters; cheap to clone, shared by status and metrics.
pub struct XdpStats {
    pub(crate) stats: PerCpuArray<MapData, u64>,
    pub(crate) reasons: PerCpuArray<MapData, u64>,
    /// Lease events the reader found overwritten before it got to them.
    pub(crate) events_overwritten: Arc<AtomicU64>,
}

/// Counter totals over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct XdpCounters {
    pub answered: u64,
    pub nak: u64,
    pub passed_unknown: u64,
    pub passed_other: u64,
    pub passed_no_room: u64,
    pub malformed: u64,
    pub not_dhcp: u64,
    pub events_lost: u64,
}

impl XdpCounters {
    /// Every frame the program saw (each is counted in exactly one decision).
    pub fn frames(&self) -> u64 {
        self.answered
            + self.nak
            + self.passed_unknown
            + self.passed_other
            + self.passed_no_room
            + self.malformed
            + self.not_dhcp
    }

    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &XdpCounters) -> XdpCounters {
        XdpCounters {
            answered: self.answered - earlier.answered,
            nak: self.nak - earlier.nak,
            passed_unknown: self.passed_unknown - earlier.passed_unknown,
            passed_other: self.passed_other - earlier.passed_other,
            passed_no_room: self.passed_no_room - earlier.passed_no_room,
            malformed: self.malformed - earlier.malformed,
            not_dhcp: self.not_dhcp - earlier.not_dhcp,
            events_lost: self.events_lost - earlier.events_lost,
        }
    }

    fn rows(&self) -> [(&'static str, u64); 7] {
        [
            ("answered", self.answered),
            ("nak", self.nak),
            ("passed_unknown", self.passed_unknown),
            ("passed_other", self.passed_other),
            ("passed_no_room", self.passed_no_room),
            ("malformed", self.malformed),
            ("not_dhcp", self.not_dhcp),
        ]
    }
}

impl XdpStats {
    fn sum(map: &PerCpuArray<MapData, u64>, i: u32) -> u64 {
        map.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Totals over all CPUs.
    pub fn counters(&self) -> XdpCounters {
        let s = |i| Self::sum(&self.stats, i);
        XdpCounters {
            answered: s(counter::ANSWERED),
            nak: s(counter::NAK),
            passed_unknown: s(counter::PASSED_UNKNOWN),
            passed_other: s(counter::PASSED_OTHER),
            passed_no_room: s(counter::PASSED_NO_ROOM),
            malformed: s(counter::MALFORMED),
            not_dhcp: s(counter::NOT_DHCP),
            events_lost: s(counter::EVENTS_LOST)
                + self
                    .events_overwritten
                    .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// One CPU's count of answered replies (the DNS rotation index on that CPU).
    pub fn answered_on(&self, cpu: usize) -> u64 {
        self.stats
            .get(&counter::ANSWERED, 0)
            .ok()
            .and_then(|v| v.get(cpu).copied())
            .unwrap_or(0)
    }

    /// Why frames were passed up (or called malformed), by reason name; zeros left out.
    pub fn reasons(&self) -> Vec<(&'static str, u64)> {
        (0..reason::COUNT)
            .map(|i| (reason::NAMES[i as usize], Self::sum(&self.reasons, i)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The counters in Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let c = self.counters();
        let mut out = String::new();
        out.push_str(
            "# HELP xboot_xdp_frames_total Frames seen by the XDP fast path, by decision.\n",
        );
        out.push_str("# TYPE xboot_xdp_frames_total counter\n");
        for (name, v) in c.rows() {
            let _ = writeln!(out, "xboot_xdp_frames_total{{decision=\"{name}\"}} {v}");
        }
        out.push_str("# HELP xboot_xdp_passed_total Frames passed to the slow path or malformed, by reason.\n");
        out.push_str("# TYPE xboot_xdp_passed_total counter\n");
        for i in 0..reason::COUNT {
            let v = Self::sum(&self.reasons, i);
            let _ = writeln!(
                out,
                "xboot_xdp_passed_total{{reason=\"{}\"}} {v}",
                reason::NAMES[i as usize]
            );
        }
        out.push_str("# HELP xboot_xdp_events_lost_total Lease events overwritten before the daemon read them.\n");
        out.push_str("# TYPE xboot_xdp_events_lost_total counter\n");
        let _ = writeln!(out, "xboot_xdp_events_lost_total {}", c.events_lost);
        out
    }

    /// A few lines for `xboot status`.
    pub fn status_text(&self) -> String {
        let c = self.counters();
        let mut out = format!("XDP fast path: {} frames\n", c.frames());
        for (name, v) in c.rows() {
            let _ = writeln!(out, "  {name:<16} {v}");
        }
        let reasons = self.reasons();
        if !reasons.is_empty() {
            let list: Vec<String> = reasons.iter().map(|(n, v)| format!("{n}={v}")).collect();
            let _ = writeln!(out, "  pass reasons     {}", list.join(" "));
        }
        out
    }
}

/// A lease event with wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub time_ms: u64,
    pub mac: Mac,
    pub kind: EventKind,
    pub ip: std::net::Ipv4Addr,
    pub xid: u32,
    pub ifindex: u32,
}

impl Lease {
    /// Converts a ring buffer record; `offset_ms` = wall clock - CLOCK_MONOTONIC.
    pub fn from_raw(ev: &LeaseEvent, offset_ms: i64) -> Option<Lease> {
        let kind = match ev.msg_type {
            2 => EventKind::DhcpOffer,
            5 => EventKind::DhcpAck,
            6 => EventKind::DhcpNak,
            _ => return None,
        };
        Some(Lease {
            time_ms: ((ev.time_ns / 1_000_000) as i64 + offset_ms).max(0) as u64,
            mac: Mac(ev.mac),
            kind,
            ip: ev.ip.into(),
            xid: ev.xid,
            ifindex: ev.ifindex,
        })
    }
}

fn clock_offset_ms() -> i64 {
    now_ms() as i64 - (super::sync::monotonic_ns() / 1_000_000) as i64
}

/// Reads lease events until `shutdown` and records them in the boot event log (host
/// names from the current inventory). The same (host, message) repeated within a second
/// is recorded once: under a DHCP storm the log keeps one line per exchange step, not
/// one per retransmission.
pub async fn record_events(
    mut ring: EventReader,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let offset = clock_offset_ms();
    let mut last: HashMap<(Mac, EventKind), u64> = HashMap::new();
    // The program never wakes the reader (see boot-ebpf's `maps::event`): poll. An empty
    // ring costs two loads; the ring holds over 100 ms of events at line rate.
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    drain(&mut ring, &shared, offset, &mut last);
                    return Ok(());
                }
            }
            _ = poll.tick() => drain(&mut ring, &shared, offset, &mut last),
        }
    }
}

/// Records every event the rings hold (see [`record_events`]).
fn drain(
    ring: &mut EventReader,
    shared: &Shared,
    offset: i64,
    last: &mut HashMap<(Mac, EventKind), u64>,
) {
    let inv = shared.inventory();
    ring.drain(|raw| {
        let Some(ev) = Lease::from_raw(&raw, offset) else {
            return;
        };
        let prev = last.insert((ev.mac, ev.kind), ev.time_ms);
        if prev.is_some_and(|t| ev.time_ms.saturating_sub(t) < 1000) {
            return;
        }
        let host = inv
            .lookup_mac(ev.mac)
            .map(|l| l.host.name.clone())
            .unwrap_or_else(|| ev.mac.to_string());
        shared.events.record(
            &host,
            ev.kind,
            format!("{} via xdp xid {:#x}", ev.ip, ev.xid),
        );
    });
    if last.len() > 100_000 {
        last.clear();
    }
}
