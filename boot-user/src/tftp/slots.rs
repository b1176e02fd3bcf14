//! Admission of transfers: a global cap (`tftp.max_transfers`) and a per-client-address cap
//! (`tftp.max_per_client`) on transfers in progress, so the server's memory and descriptors
//! stay bounded whatever arrives on port 69.
//!
//! A transfer is *unconfirmed* until its client has acknowledged something: a request
//! with a forged source address never is, a real client is within a round trip. At the
//! global cap, a new request takes the place of the oldest unconfirmed transfer, the way
//! a SYN backlog drops its oldest half-open connection; only when every slot is a
//! confirmed transfer is the request refused. A flood of forged requests thus churns among
//! its own slots: to crowd a real client out it would have to send more than
//! `max_transfers` requests within that client's first round trip, and it can never stop
//! a running download.
//!
//! A client's unconfirmed transfer is *superseded* once the same address starts another:
//! EDK2's size probe (an RRQ it aborts with an ERROR after the OACK) is followed at once
//! by the real read from a new port, usually before the probe's ERROR has been handled,
//! so each UEFI node briefly holds two slots. At the cap, a request takes the place of
//! its own address's unanswered transfer first, then of the oldest superseded one, and
//! only then of the oldest unconfirmed: otherwise, with more than `max_transfers / 2` UEFI nodes
//! booting together, new requests evicted other nodes' reads in the instant between
//! their OACK and the client's ACK 0, and those clients, whose ACKs then went to a
//! closed port, waited out their whole retry budget (24 s for EDK2) and failed. A forged
//! request from a client's address can make its unanswered transfer superseded, which
//! gains nothing over the churn a flood causes anyway.
//!
//! A request from the address and port of a transfer in progress is a retransmission
//! (iPXE resends its RRQ after 0.25 s without an answer; a server slow under a storm would
//! otherwise start every transfer twice): it is ignored, the running transfer's own timer
//! resends its first packet.
use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;

use super::stats::Stats;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub max_transfers: usize,
    pub max_per_client: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's address has `max_per_client` transfers running.
    PerClient,
    /// `max_transfers` are running, all confirmed.
    Busy,
    /// A transfer to this address and port is in progress.
    Repeated,
}

struct Live {
    peer: SocketAddr,
    /// Ends the transfer's task when it is evicted (set right after the spawn).
    abort: Option<AbortHandle>,
    /// What the transfer holds until its task takes it (its socket, once the first
    /// packet left before the task ran): dropped at once if the transfer is evicted, so
    /// a flood's evicted transfers close their sockets before new ones open.
    held: Option<Box<dyn Any + Send>>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    live: HashMap<u64, Live>,
    per_ip: HashMap<IpAddr, usize>,
    by_peer: HashMap<SocketAddr, u64>,
    /// Ids of unconfirmed transfers; ids grow with time, so the first is the oldest.
    unconfirmed: BTreeSet<u64>,
    /// The newest transfer of each client address.
    newest: HashMap<IpAddr, u64>,
    /// Unconfirmed transfers whose client address has started a newer one since: the
    /// first to go at the cap.
    superseded: BTreeSet<u64>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Live> {
        let live = self.live.remove(&id)?;
        self.unconfirmed.remove(&id);
        self.superseded.remove(&id);
        self.by_peer.remove(&live.peer);
        let ip = live.peer.ip();
        if self.newest.get(&ip) == Some(&id) {
            self.newest.remove(&ip);
        }
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(live)
    }
}

pub struct Slots {
    caps: Caps,
    stats: Arc<Stats>,
    inner: Mutex<Inner>,
}

/// A transfer's place; dropping it (the transfer ends or its task is aborted) frees it.
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
}

impl Slots {
    pub fn new(caps: Caps, stats: Arc<Stats>) -> Arc<Slots> {
        Arc::new(Slots {
            caps,
            stats,
            inner: Mutex::default(),
        })
    }

    /// A slot for a request from `peer`, evicting the oldest unconfirmed transfer if the
    /// server is full.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Slot, Refusal> {
        let mut inner = self.inner.lock().unwrap();
        if inner.by_peer.contains_key(&peer) {
            return Err(Refusal::Repeated);
        }
        let ip = peer.ip();
        if inner.per_ip.get(&ip).copied().unwrap_or(0) >= self.caps.max_per_client {
            return Err(Refusal::PerClient);
        }
        if inner.live.len() >= self.caps.max_transfers {
            // This client's own unanswered transfer, which this request supersedes,
            // else the oldest superseded one, else the oldest unconfirmed.
            let own = (inner.newest.get(&ip)).filter(|id| inner.unconfirmed.contains(id));
            let oldest = own
                .or(inner.superseded.first())
                .or(inner.unconfirmed.first())
                .copied();
            let Some(victim) = oldest.and_then(|id| inner.remove(id)) else {
                return Err(Refusal::Busy);
            };
            if let Some(a) = victim.abort {
                a.abort();
            }
            self.stats.active.fetch_sub(1, Relaxed);
            self.stats.evicted.fetch_add(1, Relaxed);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.live.insert(
            id,
            Live {
                peer,
                abort: None,
                held: None,
            },
        );
        inner.by_peer.insert(peer, id);
        inner.unconfirmed.insert(id);
        if let Some(prev) = inner.newest.insert(ip, id) {
            if inner.unconfirmed.contains(&prev) {
                inner.superseded.insert(prev);
            }
        }
        *inner.per_ip.entry(ip).or_default() += 1;
        self.stats.active.fetch_add(1, Relaxed);
        Ok(Slot {
            id,
            slots: self.clone(),
        })
    }

    /// Gives slot `id` the handle that ends its task if it is evicted (a task that has
    /// already ended is left alone).
    pub fn attach(&self, id: u64, abort: AbortHandle) {
        if let Some(l) = self.inner.lock().unwrap().live.get_mut(&id) {
            l.abort = Some(abort);
        }
    }

    /// Keeps `held` in slot `id` until its task takes it ([`Slot::take_held`]), or the
    /// transfer is evicted (it is then dropped at once).
    pub fn hold(&self, id: u64, held: Box<dyn Any + Send>) {
        if let Some(l) = self.inner.lock().unwrap().live.get_mut(&id) {
            l.held = Some(held);
        }
    }

    /// Transfers in progress.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Slot {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What [`Slots::hold`] kept for this transfer (None: nothing, or taken).
    pub fn take_held(&self) -> Option<Box<dyn Any + Send>> {
        let mut inner = self.slots.inner.lock().unwrap();
        inner.live.get_mut(&self.id)?.held.take()
    }

    /// The client answered: the transfer can no longer be evicted.
    pub fn confirm(&self) {
        let mut inner = self.slots.inner.lock().unwrap();
        inner.unconfirmed.remove(&self.id);
        inner.superseded.remove(&self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.slots.inner.lock().unwrap().remove(self.id).is_some() {
            self.slots.stats.active.fetch_sub(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client `n`'s address, from a port of its own per call.
    fn ip(n: u8) -> SocketAddr {
        use std::sync::atomic::{AtomicU16, Ordering};
        static PORT: AtomicU16 = AtomicU16::new(1000);
        SocketAddr::from(([10, 0, 0, n], PORT.fetch_add(1, Ordering::Relaxed)))
    }

    #[test]
    fn caps_and_eviction() {
        let stats = Arc::new(Stats::default());
        let caps = Caps {
            max_transfers: 4,
            max_per_client: 2,
        };
        let slots = Slots::new(caps, stats.clone());
        let a1 = slots.admit(ip(1)).unwrap();
        let _a2 = slots.admit(ip(1)).unwrap();
        assert_eq!(slots.admit(ip(1)).err(), Some(Refusal::PerClient));
        let b1 = slots.admit(ip(2)).unwrap();
        let _b2 = slots.admit(ip(2)).unwrap();
        assert_eq!(stats.active(), 4);
        // a1 and b1 confirmed (live downloads); a2 is the oldest unconfirmed.
        a1.confirm();
        b1.confirm();
        let c1 = slots.admit(ip(3)).unwrap();
        assert_eq!(stats.evicted.load(Relaxed), 1);
        assert_eq!(slots.len(), 4);
        // ip(1) lost its evicted slot: it may start another, evicting b2.
        let a3 = slots.admit(ip(1)).unwrap();
        assert_eq!(stats.evicted.load(Relaxed), 2, "b2 evicted in turn");
        // c1 and a3 confirmed too: full of live transfers, refused.
        c1.confirm();
        a3.confirm();
        assert_eq!(slots.admit(ip(4)).err(), Some(Refusal::Busy));
        drop(c1);
        assert_eq!((slots.len(), stats.active()), (3, 3));
        assert!(slots.admit(ip(4)).is_ok());
        drop(_a2);
        assert_eq!(stats.active(), 3, "an evicted slot's drop changes nothing");
    }

    /// EDK2 at the cap: B's size probe, then A's probe and A's read from a new port
    /// (before the probe's ERROR is handled). A new request takes the place of A's
    /// abandoned probe, and B's read that of B's probe, never of A's read (whose OACK
    /// is on its way), although A's read is older than those requests.
    #[test]
    fn at_the_cap_a_superseded_probe_goes_before_a_read() {
        let stats = Arc::new(Stats::default());
        let caps = Caps {
            max_transfers: 3,
            max_per_client: 8,
        };
        let slots = Slots::new(caps, stats.clone());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let c: IpAddr = [10, 0, 0, 3].into();
        let probe_b = slots.admit(SocketAddr::new(b, 1000)).unwrap();
        let probe_a = slots.admit(SocketAddr::new(a, 1000)).unwrap();
        let read_a = slots.admit(SocketAddr::new(a, 1001)).unwrap();
        let live = |id: u64| slots.inner.lock().unwrap().live.contains_key(&id);
        // Full: C's probe evicts A's superseded probe, not B's (the oldest).
        let probe_c = slots.admit(SocketAddr::new(c, 1000)).unwrap();
        assert_eq!(stats.evicted.load(Relaxed), 1);
        assert!(!live(probe_a.id()), "A's probe made way");
        assert!(live(probe_b.id()) && live(read_a.id()) && live(probe_c.id()));
        // B's read takes the place of B's own probe, not of A's read.
        let read_b = slots.admit(SocketAddr::new(b, 1001)).unwrap();
        assert!(!live(probe_b.id()), "B's probe made way");
        assert!(live(read_a.id()) && live(read_b.id()) && live(probe_c.id()));
        // Nothing superseded: the oldest unconfirmed goes, as before.
        let d = slots
            .admit(SocketAddr::new([10, 0, 0, 4].into(), 1000))
            .unwrap();
        assert!(!live(read_a.id()), "then the oldest unconfirmed");
        // A confirmed transfer is never superseded: C's read leaves C's answered probe.
        probe_c.confirm();
        let read_c = slots.admit(SocketAddr::new(c, 1001)).unwrap();
        assert!(live(probe_c.id()) && live(read_c.id()) && live(d.id()));
        assert!(!live(read_b.id()));
        assert_eq!(stats.evicted.load(Relaxed), 4);
        drop((probe_a, probe_b, read_a, probe_c, read_b, read_c, d));
        let inner = slots.inner.lock().unwrap();
        assert!(inner.live.is_empty() && inner.newest.is_empty() && inner.superseded.is_empty());
    }

    #[test]
    fn a_repeated_request_is_not_a_second_transfer() {
        let caps = Caps {
            max_transfers: 4,
            max_per_client: 4,
        };
        let slots = Slots::new(caps, Arc::default());
        let peer: SocketAddr = "10.0.0.1:2000".parse().unwrap();
        let s = slots.admit(peer).unwrap();
        assert_eq!(slots.admit(peer).err(), Some(Refusal::Repeated));
        assert!(slots.admit("10.0.0.1:2001".parse().unwrap()).is_ok());
        drop(s);
        assert!(
            slots.admit(peer).is_ok(),
            "a new request once the first is over"
        );
    }
}
