//! Counters of the userspace DHCP service, read by `xboot status` and `/metrics`.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::reply::{ReplyKind, Silence};

/// Live counters (shared with the API).
#[derive(Default, Debug)]
pub struct Stats {
    pub received: AtomicU64,
    pub offers: AtomicU64,
    pub acks: AtomicU64,
    pub inform_acks: AtomicU64,
    pub proxy_offers: AtomicU64,
    pub boot_acks: AtomicU64,
    pub naks: AtomicU64,
    pub unknown: AtomicU64,
    pub malformed: AtomicU64,
    /// Not answered for any other reason (foreign server, release, BOOTP, ...).
    pub silent: AtomicU64,
    pub released: AtomicU64,
    pub declined: AtomicU64,
    pub send_errors: AtomicU64,
    pub router_advertisements: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub received: u64,
    /// Every reply but NAKs.
    pub answered: u64,
    pub offers: u64,
    pub acks: u64,
    pub inform_acks: u64,
    pub proxy_offers: u64,
    pub boot_acks: u64,
    pub naks: u64,
    pub unknown: u64,
    pub malformed: u64,
    pub silent: u64,
    pub released: u64,
    pub declined: u64,
    pub send_errors: u64,
    pub router_advertisements: u64,
}

impl Stats {
    pub fn reply(&self, kind: ReplyKind) {
        match kind {
            ReplyKind::Offer => &self.offers,
            ReplyKind::Ack => &self.acks,
            ReplyKind::InformAck => &self.inform_acks,
            ReplyKind::ProxyOffer => &self.proxy_offers,
            ReplyKind::BootAck => &self.boot_acks,
            ReplyKind::Nak => &self.naks,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn silence(&self, s: &Silence) {
        match s {
            Silence::UnknownMac => &self.unknown,
            Silence::Released { .. } => &self.released,
            Silence::Declined { .. } => &self.declined,
            _ => &self.silent,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let mut s = StatsSnapshot {
            received: g(&self.received),
            answered: 0,
            offers: g(&self.offers),
            acks: g(&self.acks),
            inform_acks: g(&self.inform_acks),
            proxy_offers: g(&self.proxy_offers),
            boot_acks: g(&self.boot_acks),
            naks: g(&self.naks),
            unknown: g(&self.unknown),
            malformed: g(&self.malformed),
            silent: g(&self.silent),
            released: g(&self.released),
            declined: g(&self.declined),
            send_errors: g(&self.send_errors),
            router_advertisements: g(&self.router_advertisements),
        };
        s.answered = s.offers + s.acks + s.inform_acks + s.proxy_offers + s.boot_acks;
        s
    }
}
