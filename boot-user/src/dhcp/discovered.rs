//! Machines that asked for an address but are not in the inventory: a bounded table
//! (`xboot discovered` lists it) and the once-per-interval log rate limit. Time is an
//! input, so the table is tested without a clock.
use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use super::request::{ClientKind, Request};
use crate::inventory::Mac;

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
    slots: Mutex<HashMap<Mac, Slot>>,
    capacity: usize,
    log_interval_ms: u64,
}

impl Discovered {
    pub fn new(capacity: usize, log_interval_secs: u64) -> Discovered {
        Discovered {
            slots: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            log_interval_ms: log_interval_secs.saturating_mul(1000),
        }
    }

    /// Records a request from an unknown MAC. Returns true when it should be logged: the
    /// first time, then at most once per log interval per MAC.
    pub fn record(&self, req: &Request, interface: &str, now_ms: u64) -> bool {
        let mut slots = self.slots.lock().unwrap();
        if !slots.contains_key(&req.mac) && slots.len() >= self.capacity {
            if let Some(oldest) = slots
                .values()
                .min_by_key(|s| s.entry.last_seen_ms)
                .map(|s| s.entry.mac)
            {
                slots.remove(&oldest);
            }
        }
        let slot = slots.entry(req.mac).or_insert_with(|| Slot {
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
        if due {
            slot.logged_ms = Some(now_ms);
        }
        due
    }

    /// All entries, first seen first.
    pub fn list(&self) -> Vec<DiscoveredEntry> {
        let mut v: Vec<_> = self
            .slots
            .lock()
            .unwrap()
            .values()
            .map(|s| s.entry.clone())
            .collect();
        v.sort_by_key(|e| (e.first_seen_ms, e.mac));
        v
    }

    /// Forgets a MAC (e.g. once it was added to the inventory).
    pub fn remove(&self, mac: Mac) -> bool {
        self.slots.lock().unwrap().remove(&mac).is_some()
    }

    pub fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
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
            assert_eq!(d.record(&req(1), "eth0", t), want, "t={t}");
        }
        let l = d.list();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].count, l[0].first_seen_ms, l[0].last_seen_ms),
            (6, 0, 200_000)
        );
        assert_eq!(l[0].interface, "eth0");
        assert!(d.record(&req(2), "eth1", 1), "another MAC logs at once");
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
