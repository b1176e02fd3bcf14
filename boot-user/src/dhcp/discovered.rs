//! Machines that asked for an address but are not in the inventory: a bounded table
//! (`xboot discovered` lists it) and the log rate limits: once per interval per MAC, and
//! [`GLOBAL_LOG_PER_SEC`] lines a second over all MACs (anyone on the segment can send
//! DISCOVERs from random MACs: 100,000 of them must not write 100,000 lines). Time is an
//! input, so the table is tested without a clock.
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use serde::Serialize;

use super::request::{ClientKind, Request};
use crate::inventory::Mac;
use crate::ratelimit::{LogLimit, Verdict};

/// Unknown-MAC lines logged a second, over all MACs, after a burst of [`GLOBAL_LOG_BURST`].
pub const GLOBAL_LOG_PER_SEC: u32 = 5;
pub const GLOBAL_LOG_BURST: u32 = 50;

/// One unknown MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiscoveredEntry {
    pub mac: Mac,
    /// Unix times, milliseconds.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Requests seen.
    pub count: u64,
    /// Interface the last request came in on.
    pub interface: String,
    pub kind: ClientKind,
    /// Option 12 and option 60 of the last request, if sent.
    pub hostname: Option<String>,
    pub vendor_class: Option<String>,
}

struct Slot {
    entry: DiscoveredEntry,
    logged_ms: Option<u64>,
}

/// The table. At `capacity`, the MAC seen least recently makes room.
pub struct Discovered {
    slots: Mutex<Table>,
    capacity: usize,
    log_interval_ms: u64,
    global: LogLimit,
}

/// The entries, and the same MACs ordered by when they were last seen, so that making
/// room is a lookup, not a scan (a flood of new MACs keeps the table full).
#[derive(Default)]
struct Table {
    by_mac: HashMap<Mac, Slot>,
    by_seen: BTreeSet<(u64, Mac)>,
}

impl Discovered {
    pub fn new(capacity: usize, log_interval_secs: u64) -> Discovered {
        Discovered {
            slots: Mutex::new(Table::default()),
            capacity: capacity.max(1),
            log_interval_ms: log_interval_secs.saturating_mul(1000),
            global: LogLimit::new(GLOBAL_LOG_PER_SEC, GLOBAL_LOG_BURST),
        }
    }

    /// Records a request from an unknown MAC. Returns `Some(suppressed)` when it should
    /// be logged: the first time, then at most once per log interval per MAC, and only
    /// as the global limit allows (`suppressed`: lines it dropped since the last one).
    pub fn record(&self, req: &Request, interface: &str, now_ms: u64) -> Option<u64> {
        let mut table = self.slots.lock().unwrap();
        let Table { by_mac, by_seen } = &mut *table;
        if !by_mac.contains_key(&req.mac) && by_mac.len() >= self.capacity {
            if let Some((_, oldest)) = by_seen.pop_first() {
                by_mac.remove(&oldest);
            }
        }
        let slot = by_mac.entry(req.mac).or_insert_with(|| Slot {
            entry: DiscoveredEntry {
                mac: req.mac,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                count: 0,
                interface: String::new(),
                kind: req.kind,
                hostname: None,
                vendor_class: None,
            },
            logged_ms: None,
        });
        let e = &mut slot.entry;
        if e.count > 0 {
            by_seen.remove(&(e.last_seen_ms, e.mac));
        }
        by_seen.insert((now_ms, e.mac));
        e.last_seen_ms = now_ms;
        e.count += 1;
        e.interface = interface.to_string();
        e.kind = req.kind;
        e.hostname = req.hostname.clone().or(e.hostname.take());
        if let Some(v) = &req.vendor_class {
            e.vendor_class = Some(String::from_utf8_lossy(v).into_owned());
        }
        let due = slot
            .logged_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= self.log_interval_ms);
        if !due {
            return None;
        }
        match self.global.check(now_ms) {
            Verdict::Log { suppressed } => {
                // Only a line that is logged starts the MAC's interval: a MAC whose
                // first line was dropped is logged as soon as the global limit allows.
                slot.logged_ms = Some(now_ms);
                Some(suppressed)
            }
            Verdict::Drop => None,
        }
    }

    /// All entries, first seen first.
    pub fn list(&self) -> Vec<DiscoveredEntry> {
        let mut v: Vec<_> = self
            .slots
            .lock()
            .unwrap()
            .by_mac
            .values()
            .map(|s| s.entry.clone())
            .collect();
        v.sort_by_key(|e| (e.first_seen_ms, e.mac));
        v
    }

    /// Forgets a MAC (e.g. once it was added to the inventory).
    pub fn remove(&self, mac: Mac) -> bool {
        let mut t = self.slots.lock().unwrap();
        match t.by_mac.remove(&mac) {
            Some(slot) => {
                t.by_seen.remove(&(slot.entry.last_seen_ms, mac));
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.lock().unwrap().by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::MessageType;

    fn req(last: u8) -> Request {
        Request::new(
            MessageType::Discover,
            Mac([2, 0, 0, 0, 0, last]),
            ClientKind::BiosPxe,
        )
    }

    #[test]
    fn counts_and_rate_limits_logs() {
        let d = Discovered::new(10, 60);
        // (time ms, should log)
        let rows = [
            (0, true),
            (1_000, false),
            (59_999, false),
            (60_000, true),
            (60_001, false),
            (200_000, true),
        ];
        for (t, want) in rows {
            assert_eq!(d.record(&req(1), "eth0", t).is_some(), want, "t={t}");
        }
        let l = d.list();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].count, l[0].first_seen_ms, l[0].last_seen_ms),
            (6, 0, 200_000)
        );
        assert_eq!(l[0].interface, "eth0");
        assert!(
            d.record(&req(2), "eth1", 1).is_some(),
            "another MAC logs at once"
        );
    }

    /// 100,000 DISCOVERs from random MACs over 10 s write a burst and then a few lines a
    /// second, the first after a gap counting what it dropped; every MAC is still counted
    /// in the (bounded) table.
    #[test]
    fn many_macs_are_logged_at_a_global_rate() {
        let d = Discovered::new(4096, 60);
        let mut logged = vec![];
        for i in 0..100_000u32 {
            let [a, b, c, e] = i.to_be_bytes();
            let r = Request::new(
                MessageType::Discover,
                Mac([2, a, b, c, e, 1]),
                ClientKind::BiosPxe,
            );
            let t = u64::from(i) / 10; // 10 s in all
            if let Some(s) = d.record(&r, "eth0", t) {
                logged.push(s);
            }
        }
        let max = GLOBAL_LOG_BURST as usize + 10 * GLOBAL_LOG_PER_SEC as usize + 1;
        assert!(logged.len() <= max, "{} lines", logged.len());
        assert!(logged.len() >= GLOBAL_LOG_BURST as usize);
        let total: u64 = logged.iter().sum::<u64>() + logged.len() as u64;
        // The lines dropped after the last one logged are still pending.
        assert!(total > 95_000, "suppressed lines are counted: {total}");
        assert_eq!(d.len(), 4096);
    }

    #[test]
    fn bounded_evicting_least_recently_seen() {
        let d = Discovered::new(3, 60);
        for (i, t) in [(1, 10), (2, 20), (3, 30)] {
            d.record(&req(i), "eth0", t);
        }
        d.record(&req(1), "eth0", 40); // 1 is fresh again: 2 is now the stalest
        d.record(&req(4), "eth0", 50);
        let macs: Vec<u8> = d.list().iter().map(|e| e.mac.0[5]).collect();
        assert_eq!(macs, vec![1, 3, 4]);
        assert!(d.remove(Mac([2, 0, 0, 0, 0, 3])));
        assert_eq!(d.len(), 2);
    }
}
