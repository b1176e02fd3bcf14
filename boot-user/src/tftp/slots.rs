//! Admission of transfers: a global cap (`tftp.max_transfers`) and a per-client-address cap
//! (`tftp.max_per_client`) on transfers in progress, so the server's memory and descriptors
//! stay bounded whatever arrives on port 69.
//!
//! A transfer is *unconfirmed* until its client has acknowledged something: a request
//! with a forged source address never is, a real client is within a round trip. At the
//! global cap a new request may take the place of a transfer that is not progressing,
//! and of no other: a boot server never kills a transfer its client is following to
//! admit another. Not progressing, in the order they go:
//!
//! 1. the newest unconfirmed transfer of the request's own address, which the request
//!    supersedes;
//! 2. the oldest *superseded* transfer: unconfirmed, and its address has started a newer
//!    one since. EDK2's size probe (an RRQ it aborts with an ERROR after the OACK) is
//!    followed at once by the real read from a new port, usually before the probe's
//!    ERROR has been handled, so each UEFI node briefly holds two slots;
//! 3. the oldest unconfirmed transfer whose client has not answered for
//!    [`ANSWER_GRACE`] since it was admitted (the server's own first retransmission
//!    timeout: the transfer is lost or forged).
//!
//! Otherwise the request is refused ([`Refusal::Busy`]) and the caller drops it without
//! an answer: the client's own RRQ retry comes back later (EDK2 after 4 s, six times;
//! iPXE backing off from 0.25 s), while an ERROR would end the boot (EDK2's Mtftp4
//! aborts the boot option on an ERROR to its RRQ).
//!
//! Before (eviction of the oldest unconfirmed transfer whatever its age, as a SYN backlog
//! drops its oldest half-open connection), a storm above the cap evicted other nodes'
//! reads in the instant between their OACK and the client's ACK 0; those clients, whose
//! ACKs then went to a closed port, waited out their whole retry budget (24 s for EDK2)
//! and failed. The price of the grace: a flood of forged requests sending more than
//! `max_transfers` per [`ANSWER_GRACE`] (from more than `max_transfers / max_per_client`
//! addresses) holds new admissions off while it lasts; it still cannot stop a running
//! download, nor one whose client answers within the grace. A forged request from a
//! client's address can make its unanswered transfer superseded, which gains nothing over
//! what a flood does anyway.
//!
//! A request from the address and port of a transfer in progress is a retransmission
//! (iPXE resends its RRQ after 0.25 s without an answer; a server slow under a storm would
//! otherwise start every transfer twice): it is ignored, the running transfer's own timer
//! resends its first packet.
//!
//! The caller passes the time ([`Slots::admit`]): nothing here reads a clock or touches
//! a socket, so the rules are tested with made-up instants.
use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use super::stats::Stats;

/// How long an unconfirmed transfer's client has to answer before the transfer may make
/// way at the cap: the server's default retransmission timeout (a transfer unanswered
/// that long is resent anyway: lost or forged). Long beside a real client's round trip
/// plus the server's own delay under a storm (first answers p99 69-149 ms at 1,000
/// simultaneous requests, README).
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub max_transfers: usize,
    pub max_per_client: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's address has `max_per_client` transfers running.
    PerClient,
    /// `max_transfers` are running, none of them abandoned (each confirmed, or admitted
    /// less than [`ANSWER_GRACE`] ago and not superseded): the request is dropped
    /// without an answer, the client retries.
    Busy,
    /// A transfer to this address and port is in progress.
    Repeated,
}

struct Live {
    peer: SocketAddr,
    /// When it was admitted: an unconfirmed transfer may make way [`ANSWER_GRACE`] later.
    admitted: Instant,
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
    /// The transfer a request from `ip` at `now` may take the place of, and why: `ip`'s
    /// own unconfirmed newest, else the oldest superseded, else the oldest unconfirmed if
    /// its grace is over. None: every transfer is progressing (or may still be).
    fn abandoned(&self, ip: IpAddr, now: Instant) -> Option<(u64, Eviction)> {
        let own = self
            .newest
            .get(&ip)
            .filter(|id| self.unconfirmed.contains(id));
        if let Some(id) = own.or(self.superseded.first()) {
            return Some((*id, Eviction::Superseded));
        }
        let oldest = *self.unconfirmed.first()?;
        let since = now.saturating_duration_since(self.live.get(&oldest)?.admitted);
        (since >= ANSWER_GRACE).then_some((oldest, Eviction::Unanswered))
    }

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

/// Why a transfer made way for a new request at the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Its address started a newer transfer (rules 1 and 2 of the module doc).
    Superseded,
    /// Its client had not answered within [`ANSWER_GRACE`].
    Unanswered,
}

/// A transfer's place; dropping it (the transfer ends or its task is aborted) frees it.
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    /// The transfer that made way for this one, if any.
    evicted: Option<Eviction>,
}

impl Slots {
    pub fn new(caps: Caps, stats: Arc<Stats>) -> Arc<Slots> {
        Arc::new(Slots {
            caps,
            stats,
            inner: Mutex::default(),
        })
    }

    /// A slot for a request from `peer` arriving at `now`, in the place of a transfer
    /// that is not progressing if the server is full (the module doc's rules). `now`
    /// must not go back between calls (ids and admission times grow together, so the
    /// first unconfirmed id is the oldest).
    pub fn admit(self: &Arc<Self>, peer: SocketAddr, now: Instant) -> Result<Slot, Refusal> {
        let mut inner = self.inner.lock().unwrap();
        if inner.by_peer.contains_key(&peer) {
            return Err(Refusal::Repeated);
        }
        let ip = peer.ip();
        if inner.per_ip.get(&ip).copied().unwrap_or(0) >= self.caps.max_per_client {
            return Err(Refusal::PerClient);
        }
        let mut evicted = None;
        if inner.live.len() >= self.caps.max_transfers {
            let Some((victim, why)) = inner.abandoned(ip, now) else {
                return Err(Refusal::Busy);
            };
            if let Some(a) = inner.remove(victim).and_then(|v| v.abort) {
                a.abort();
            }
            self.stats.active.fetch_sub(1, Relaxed);
            self.stats.evicted.fetch_add(1, Relaxed);
            match why {
                Eviction::Superseded => &self.stats.evicted_superseded,
                Eviction::Unanswered => &self.stats.evicted_unanswered,
            }
            .fetch_add(1, Relaxed);
            evicted = Some(why);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.live.insert(
            id,
            Live {
                peer,
                admitted: now,
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
            evicted,
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

    /// The transfer that made way for this one at the cap, if any.
    pub fn evicted(&self) -> Option<Eviction> {
        self.evicted
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

    fn slots(max_transfers: usize, max_per_client: usize) -> (Arc<Slots>, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let caps = Caps {
            max_transfers,
            max_per_client,
        };
        (Slots::new(caps, stats.clone()), stats)
    }

    fn live(slots: &Slots, s: &Slot) -> bool {
        slots.inner.lock().unwrap().live.contains_key(&s.id())
    }

    #[test]
    fn caps_and_eviction() {
        let (slots, stats) = slots(4, 2);
        let t0 = Instant::now();
        let a1 = slots.admit(ip(1), t0).unwrap();
        let b1 = slots.admit(ip(2), t0).unwrap();
        let a2 = slots.admit(ip(1), t0).unwrap();
        assert_eq!(slots.admit(ip(1), t0).err(), Some(Refusal::PerClient));
        let b2 = slots.admit(ip(2), t0).unwrap();
        assert_eq!(stats.active(), 4);
        // a1 and b1 confirmed (live downloads); a2 and b2 (which superseded them) not.
        a1.confirm();
        b1.confirm();
        // Full, nothing superseded, the unconfirmed within their grace: refused.
        let t = t0 + ANSWER_GRACE / 2;
        assert_eq!(slots.admit(ip(3), t).err(), Some(Refusal::Busy));
        // Past a2's grace it makes way (the oldest unconfirmed), and b2 for the next.
        let t = t0 + ANSWER_GRACE;
        let c1 = slots.admit(ip(3), t).unwrap();
        assert_eq!(c1.evicted(), Some(Eviction::Unanswered));
        assert!(!live(&slots, &a2) && live(&slots, &b2));
        let d1 = slots.admit(ip(4), t).unwrap();
        assert!(!live(&slots, &b2));
        assert_eq!(stats.evicted_unanswered.load(Relaxed), 2);
        assert_eq!(slots.len(), 4);
        // c1 and d1 are young: refused again, however long the confirmed ones have run.
        let t = t0 + ANSWER_GRACE * 100;
        c1.confirm();
        d1.confirm();
        assert_eq!(slots.admit(ip(5), t).err(), Some(Refusal::Busy));
        assert_eq!(
            stats.evicted.load(Relaxed),
            2,
            "a confirmed transfer never goes"
        );
        drop(b1);
        assert_eq!((slots.len(), stats.active()), (3, 3));
        let e = slots.admit(ip(5), t).unwrap();
        assert_eq!(e.evicted(), None, "a free place");
        drop((a2, b2));
        assert_eq!(stats.active(), 4, "an evicted slot's drop changes nothing");
    }

    /// The storm of issue 14, at the cap of 3: node B's read was OACKed but its ACK 0 has
    /// not been handled yet when new requests arrive; those are dropped (their clients
    /// retry), never admitted in B's read's place, until B's read has been silent for
    /// the whole grace.
    #[test]
    fn at_the_cap_a_read_awaiting_its_first_ack_is_not_evicted() {
        let (slots, stats) = slots(3, 8);
        let t0 = Instant::now();
        let a = slots.admit(ip(1), t0).unwrap();
        let c = slots.admit(ip(3), t0).unwrap();
        a.confirm();
        c.confirm();
        let read_b = slots.admit(ip(2), t0 + Duration::from_millis(5)).unwrap();
        for ms in [6, 50, 500, 1004] {
            let t = t0 + Duration::from_millis(ms);
            assert_eq!(slots.admit(ip(4), t).err(), Some(Refusal::Busy), "{ms} ms");
            assert!(live(&slots, &read_b), "{ms} ms");
        }
        assert_eq!(stats.evicted.load(Relaxed), 0);
        // B answers: progressing, for good.
        read_b.confirm();
        let t = t0 + Duration::from_secs(60);
        assert_eq!(slots.admit(ip(4), t).err(), Some(Refusal::Busy));
        // A node whose read never got an answer makes way once its grace is over.
        drop(c);
        let lost = slots.admit(ip(5), t).unwrap();
        assert_eq!(slots.admit(ip(4), t).err(), Some(Refusal::Busy));
        let d = slots.admit(ip(4), t + ANSWER_GRACE).unwrap();
        assert_eq!(d.evicted(), Some(Eviction::Unanswered));
        assert!(!live(&slots, &lost) && live(&slots, &read_b) && live(&slots, &a));
    }

    /// EDK2 at the cap: B's size probe, then A's probe and A's read from a new port
    /// (before the probe's ERROR is handled). A new request takes the place of A's
    /// abandoned probe, and B's read that of B's probe, at once (no grace: a superseded
    /// probe is abandoned), never of A's read (whose OACK is on its way).
    #[test]
    fn at_the_cap_a_superseded_probe_goes_before_a_read() {
        let (slots, stats) = slots(3, 8);
        let now = Instant::now();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let c: IpAddr = [10, 0, 0, 3].into();
        let admit = |ip: IpAddr, port: u16| slots.admit(SocketAddr::new(ip, port), now);
        let probe_b = admit(b, 1000).unwrap();
        let probe_a = admit(a, 1000).unwrap();
        let read_a = admit(a, 1001).unwrap();
        // Full: C's probe evicts A's superseded probe, not B's (the oldest).
        let probe_c = admit(c, 1000).unwrap();
        assert_eq!(probe_c.evicted(), Some(Eviction::Superseded));
        assert!(!live(&slots, &probe_a), "A's probe made way");
        assert!(live(&slots, &probe_b) && live(&slots, &read_a));
        // B's read takes the place of B's own probe, not of A's read.
        let read_b = admit(b, 1001).unwrap();
        assert!(!live(&slots, &probe_b), "B's probe made way");
        assert!(live(&slots, &read_a) && live(&slots, &read_b) && live(&slots, &probe_c));
        // Nothing superseded, nothing past its grace: D is refused, A's read stays.
        let d = SocketAddr::new([10, 0, 0, 4].into(), 1000);
        assert_eq!(slots.admit(d, now).err(), Some(Refusal::Busy));
        // A confirmed transfer is never superseded: C's read evicts nothing of C's.
        probe_c.confirm();
        assert_eq!(admit(c, 1001).err(), Some(Refusal::Busy));
        assert!(live(&slots, &probe_c) && live(&slots, &read_a) && live(&slots, &read_b));
        assert_eq!(stats.evicted_superseded.load(Relaxed), 2);
        assert_eq!(stats.evicted.load(Relaxed), 2);
        drop((probe_a, probe_b, read_a, probe_c, read_b));
        let inner = slots.inner.lock().unwrap();
        assert!(inner.live.is_empty() && inner.newest.is_empty() && inner.superseded.is_empty());
        assert!(inner.by_peer.is_empty() && inner.per_ip.is_empty());
    }

    /// Forged requests above `max_transfers` per grace hold admissions off while they
    /// last (the price of the grace, module doc), and churn among their own slots; a
    /// confirmed transfer among them is never touched.
    #[test]
    fn a_flood_churns_among_its_own_slots() {
        let (slots, stats) = slots(16, 1);
        let t0 = Instant::now();
        let real = slots.admit(ip(200), t0).unwrap();
        real.confirm();
        let mut held = Vec::new();
        let mut busy = 0;
        // 64 forged requests every 100 ms, from 64 addresses, for 3 s.
        for round in 0..30u32 {
            let t = t0 + Duration::from_millis(100) * round;
            for k in 0..64u8 {
                let peer = SocketAddr::new([10, 1, round as u8, k].into(), 7);
                match slots.admit(peer, t) {
                    Ok(s) => held.push(s),
                    Err(Refusal::Busy) => busy += 1,
                    Err(e) => panic!("{e:?}"),
                }
                assert!(slots.len() <= 16);
            }
        }
        assert!(live(&slots, &real));
        // 15 places turn over once a grace: 15 first, then 15 per second for 2 s.
        assert_eq!(stats.evicted_unanswered.load(Relaxed), 30);
        assert_eq!(busy, 30 * 64 - 45);
    }

    #[test]
    fn a_repeated_request_is_not_a_second_transfer() {
        let (slots, _) = slots(4, 4);
        let now = Instant::now();
        let peer: SocketAddr = "10.0.0.1:2000".parse().unwrap();
        let s = slots.admit(peer, now).unwrap();
        assert_eq!(slots.admit(peer, now).err(), Some(Refusal::Repeated));
        assert!(slots.admit("10.0.0.1:2001".parse().unwrap(), now).is_ok());
        drop(s);
        assert!(
            slots.admit(peer, now).is_ok(),
            "a new request once the first is over"
        );
    }
}
