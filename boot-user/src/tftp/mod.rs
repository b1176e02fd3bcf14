//! Read-only TFTP server for the iPXE binaries.
//!
//! xboot's own, replacing async-tftp 0.4, which could not be made safe for a boot storm:
//! it pinned an 8 MiB read-ahead buffer and two descriptors per request with no cap on
//! transfers, ignored a client's ERROR (EDK2's size probe, on every UEFI PXE boot, left a
//! transfer re-sending its OACK for five minutes) and duplicate ACKs (a lost block waited
//! for the 3 s timeout), and held its handler lock across each file open, serializing
//! requests (first-reply p99 6 s at 300 clients).
//!
//! # Layout
//! - [`proto`]: the wire format and option negotiation (pure).
//! - [`transfer`]: one transfer as a sans-I/O state machine: packets and timer expiries in,
//!   [`transfer::Action`]s out.
//! - [`slots`]: the caps on transfers, global and per client address; at the global cap,
//!   which transfer that is not progressing makes way, or that the request is dropped.
//! - [`files`]: open files shared by concurrent transfers.
//! - [`root`]: the one function mapping a requested name to a file inside the root.
//! - [`net`]: socket helpers (the request's destination address, the route's MTU).
//! - [`stats`]: counters for `/metrics`.
//! - this module and `session`: the I/O edge. One task reads requests on the server port
//!   and never waits on a file; each admitted transfer gets a task (`session`), its own
//!   ephemeral UDP socket on the address the request was sent to, resolves and opens its
//!   file on the blocking pool (16 at a time; not at all if the name was resolved in the
//!   last second), then reads the blocks it sends with positional reads into one
//!   block-sized buffer: a transfer holds one socket, a share of one file descriptor
//!   and `blksize + 4` bytes. [`spawn`] runs it all on a thread of its own.
//!
//! Timing: each transfer's start is timed in phases ([`stats::Phases`]: in the socket
//! queue, until its task ran, the file's resolution, arrival to first answer), as
//! histograms in `/metrics` and quantiles in `xboot status`.
//!
//! Events: a file sent completely (the last block acknowledged) is a `tftp` boot event of
//! the inventory host whose boot address sent the request; requests from any other
//! address record nothing (a forged source must not push a real host's boot timeline out
//! of its bounded log).
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::inventory::Inventory;
use crate::state::Shared;

pub mod files;
pub mod net;
pub mod proto;
pub mod root;
mod session;
pub mod slots;
pub mod stats;
pub mod transfer;

pub use root::{PathError, Root};
pub use stats::Stats;

use proto::{ErrorCode, Packet};

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("TFTP root {0}")]
    Root(std::io::Error),
    #[error("TFTP socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Serves `root` read-only on `socket` until `shutdown` completes.
pub async fn run(
    socket: UdpSocket,
    root: &Path,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TftpError> {
    run_with_stats(socket, root, shared, Arc::default(), shutdown).await
}

/// [`run`], counting into `stats` (for `/metrics`).
pub async fn run_with_stats(
    socket: UdpSocket,
    root: &Path,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TftpError> {
    let here = tokio::runtime::Handle::current();
    run_on(socket, root, shared, stats, shutdown, here).await
}

/// [`run_with_stats`], the transfers' tasks on the runtime of `transfers` (the loop
/// reading requests on the caller's).
async fn run_on(
    socket: UdpSocket,
    root: &Path,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
    transfers: tokio::runtime::Handle,
) -> Result<(), TftpError> {
    let root = Root::new(root).map_err(TftpError::Root)?;
    for (link, target) in root.escaping_links() {
        tracing::warn!(
            "TFTP root {}: {} links to {}, outside the root: it will not be served (copy the file in instead)",
            root.dir().display(),
            link.display(),
            target.display()
        );
    }
    let local = socket.local_addr()?;
    let pktinfo = net::want_destination(&socket)?;
    let stamped = net::want_timestamps(&socket).is_ok();
    net::grow_receive_queue(&socket);
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let cfg = &shared.config.tftp;
    let caps = slots::Caps {
        max_transfers: cfg.max_transfers.max(1),
        max_per_client: cfg.max_per_client.max(1),
    };
    let server = Arc::new(Server {
        root,
        files: files::Files::default(),
        slots: slots::Slots::new(caps, stats.clone()),
        max_lifetime: Duration::from_secs(cfg.max_transfer_secs.max(1)),
        stats,
        shared,
        refusal_log: LogGate::default(),
        busy_log: LogGate::default(),
        evict_log: LogGate::default(),
        hosts: Mutex::default(),
        opening: tokio::sync::Semaphore::new(OPENS_AT_ONCE),
        transfers,
    });
    tracing::info!(
        "TFTP serving {} on {local} (at most {} transfers, {} per client)",
        server.root.dir().display(),
        caps.max_transfers,
        caps.max_per_client
    );
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 4096];
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = r {
                    if e.is_panic() {
                        tracing::error!("TFTP transfer panicked: {e}");
                    }
                }
            }
            r = socket.async_io(tokio::io::Interest::READABLE, || {
                net::recv_timestamped(&socket, &mut buf, pktinfo, stamped)
            }) => match r {
                Ok(got) => {
                    let read = Instant::now();
                    if let Some(q) = got.queued {
                        server.stats.phases.queued.record(q);
                    }
                    let at = Arrival {
                        arrived: got.queued.and_then(|q| read.checked_sub(q)).unwrap_or(read),
                        read,
                    };
                    let dst = got.dst.unwrap_or(local.ip());
                    server.on_datagram(&socket, &mut tasks, &buf[..got.len], got.src, dst, at);
                }
                Err(e) => {
                    tracing::warn!("TFTP receive on {local}: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    // Dropping the set aborts every transfer (and frees its slot).
    drop(tasks);
    Ok(())
}

/// When a request arrived (the kernel's timestamp) and when the server loop read it.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    arrived: Instant,
    read: Instant,
}

/// Runs [`run_with_stats`] on threads of its own, so that a storm's HTTP downloads, which
/// keep the main runtime's workers busy, cannot delay the first answer to a read
/// request: on the shared runtime a request waited behind hundreds of ready download
/// tasks (first-reply p99 0.2-0.5 s at 1,000 nodes with the server's CPU half idle). The
/// loop reading requests has a thread to itself (`xboot-tftp`) and sends each first
/// packet, so a new request never queues behind the running transfers, whose tasks run
/// on a second thread (`xboot-tftp-data`, with the blocking pool for opening files).
/// The threads hold no capabilities. The returned future completes with the server's
/// result when the loop ends.
pub fn spawn(
    socket: UdpSocket,
    root: std::path::PathBuf,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl Future<Output = Result<(), TftpError>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("xboot-tftp".into())
        .spawn(move || {
            crate::privileges::drop_all_or_warn();
            let runtimes = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .on_thread_start(crate::privileges::drop_all_or_warn)
                .thread_name("xboot-tftp-data")
                .build()
                .and_then(|data| {
                    let intake = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    Ok((intake, data))
                });
            let r = match runtimes {
                Ok((intake, data)) => {
                    let r = intake.block_on(run_on(
                        socket,
                        &root,
                        shared,
                        stats,
                        shutdown,
                        data.handle().clone(),
                    ));
                    data.shutdown_background();
                    r
                }
                Err(e) => Err(TftpError::Socket(e)),
            };
            let _ = tx.send(r);
        })?;
    Ok(async move {
        rx.await.unwrap_or_else(|_| {
            Err(TftpError::Socket(std::io::Error::other(
                "the TFTP thread panicked",
            )))
        })
    })
}

/// What every transfer shares.
struct Server {
    root: Root,
    files: files::Files,
    slots: Arc<slots::Slots>,
    /// `tftp.max_transfer_secs`.
    max_lifetime: Duration,
    stats: Arc<Stats>,
    shared: Arc<Shared>,
    /// Refusals of a flood are logged once a second, not once per request.
    refusal_log: LogGate,
    /// Requests dropped at the global cap, likewise (a gate of their own, so a flood's
    /// malformed packets cannot hide that the server is full).
    busy_log: LogGate,
    /// Transfers evicted at the global cap, likewise.
    evict_log: LogGate,
    hosts: Mutex<HostIndex>,
    /// Turns for resolving and opening files on the blocking pool.
    opening: tokio::sync::Semaphore,
    /// Where transfers' tasks run.
    transfers: tokio::runtime::Handle,
}

/// Files resolved and opened on the blocking pool at once.
const OPENS_AT_ONCE: usize = 16;

/// Boot addresses (not BMCs) of an inventory's hosts -> host name: the names events are
/// recorded under. Built once per inventory (a storm's thousand requests against ten
/// thousand hosts would otherwise parse every host's addresses per request).
#[derive(Default)]
struct HostIndex {
    built_for: Option<Arc<Inventory>>,
    by_ip: HashMap<IpAddr, String>,
}

impl HostIndex {
    fn build(inv: &Inventory) -> HashMap<IpAddr, String> {
        let mut by_ip = HashMap::new();
        for h in inv.hosts() {
            for nic in h.interfaces.iter().filter(|n| !n.bmc) {
                if let Some(a) = nic.addr() {
                    by_ip.entry(IpAddr::V4(a)).or_insert_with(|| h.name.clone());
                }
            }
        }
        by_ip
    }
}

impl Server {
    /// The inventory host with `ip` on a boot interface.
    fn host_for_ip(&self, ip: IpAddr) -> Option<String> {
        let inv = self.shared.inventory();
        let mut index = self.hosts.lock().unwrap();
        if !index
            .built_for
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(b, &inv))
        {
            index.by_ip = HostIndex::build(&inv);
            index.built_for = Some(inv);
        }
        index.by_ip.get(&ip).cloned()
    }
}

/// Who a log line is about: the host's name, or "unknown host".
fn who(host: &Option<String>) -> &str {
    host.as_deref().unwrap_or("unknown host")
}

impl Server {
    /// Whether a refusal is logged: always for an inventory host, at most once a second
    /// for anyone else (a flood must not flood the log).
    fn loud(&self, host: &Option<String>) -> bool {
        host.is_some() || self.refusal_log.pass().is_some()
    }
}

impl Server {
    /// One datagram on the server port: a request to admit, or something to refuse. Never
    /// waits: answers are sent with `try_send_to` (dropped if the socket queue is full,
    /// the client retries).
    fn on_datagram(
        self: &Arc<Self>,
        socket: &tokio::net::UdpSocket,
        tasks: &mut JoinSet<()>,
        bytes: &[u8],
        src: SocketAddr,
        dst: IpAddr,
        at: Arrival,
    ) {
        self.stats.requests.fetch_add(1, Relaxed);
        let refuse = |code: ErrorCode, msg: &str| {
            let _ = socket.try_send_to(&proto::encode_error(code, msg), src);
            self.stats.phases.first_reply.record(at.arrived.elapsed());
        };
        let req = match proto::parse(bytes) {
            Ok(Packet::Rrq(req)) => req,
            Ok(Packet::Wrq(req)) => {
                self.stats.refused_bad.fetch_add(1, Relaxed);
                if let Some(n) = self.refusal_log.pass() {
                    tracing::info!(
                        "TFTP {src}: write request for {:?} refused (read-only server; {n} refusals in the last second)",
                        req.filename
                    );
                }
                return refuse(ErrorCode::AccessViolation, "read-only server");
            }
            // An ERROR, ACK or DATA on the server port belongs to no transfer; answering an
            // ERROR could start an error ping-pong with another server.
            Ok(p) => {
                tracing::debug!("TFTP {src}: ignored {p:?} on the server port");
                return;
            }
            Err(e) => {
                self.stats.refused_bad.fetch_add(1, Relaxed);
                if let Some(n) = self.refusal_log.pass() {
                    tracing::info!(
                        "TFTP {src}: bad request: {e} ({n} refusals in the last second)"
                    );
                }
                let (code, msg) = e.reply();
                return refuse(code, &msg);
            }
        };
        let slot = match self.slots.admit(src, at.read) {
            Ok(s) => s,
            Err(slots::Refusal::Repeated) => {
                self.stats.repeated.fetch_add(1, Relaxed);
                tracing::debug!(
                    "TFTP {src}: repeated request for {:?} ignored",
                    req.filename
                );
                return;
            }
            // No answer: the client's own retry comes back (EDK2 after 4 s, iPXE backing
            // off from 0.25 s), where an ERROR would end its boot (EDK2 gives up the boot
            // option on an ERROR to its RRQ).
            Err(slots::Refusal::Busy) => {
                self.stats.refused_busy.fetch_add(1, Relaxed);
                if let Some(n) = self.busy_log.pass() {
                    tracing::warn!(
                        "TFTP {src}: {:?} dropped unanswered, the client will retry: {} transfers in progress (tftp.max_transfers), none abandoned ({n} dropped in the last second)",
                        req.filename,
                        self.slots.len()
                    );
                }
                return;
            }
            Err(slots::Refusal::PerClient) => {
                self.stats.refused_per_client.fetch_add(1, Relaxed);
                let msg = "too many transfers from this address";
                if let Some(n) = self.refusal_log.pass() {
                    tracing::warn!(
                        "TFTP {src}: {:?} refused: {msg} (tftp.max_per_client; {n} refusals in the last second)",
                        req.filename
                    );
                }
                return refuse(ErrorCode::NotDefined, msg);
            }
        };
        if let Some(why) = slot.evicted() {
            if let Some(n) = self.evict_log.pass() {
                let why = match why {
                    slots::Eviction::Superseded => "superseded by a newer request from its address",
                    slots::Eviction::Unanswered => "its client silent for the answer grace",
                };
                tracing::info!(
                    "TFTP {src}: at tftp.max_transfers, a transfer {why} made way for {:?} ({n} in the last second)",
                    req.filename
                );
            }
        }
        self.stats.started.fetch_add(1, Relaxed);
        // The first packet leaves from here when the name was resolved a moment ago: the
        // first answer then waits for no task. Not when this request evicted a transfer
        // (the server is full: a flood): its task opens the socket, after the evicted
        // transfers' tasks have ended and closed theirs, so descriptors stay bounded.
        let full = slot.evicted().is_some();
        let cached = (!full)
            .then(|| self.files.by_name(&req.filename, Instant::now()))
            .flatten();
        let start = match cached {
            Some(file) => match self.start_sending(req, file, src, dst, at) {
                Some(b) => {
                    self.slots.hold(slot.id(), Box::new(b));
                    session::Start::Sent
                }
                None => return,
            },
            None => session::Start::Open(req),
        };
        let (server, id) = (self.clone(), slot.id());
        let abort = tasks.spawn_on(
            async move { server.transfer(start, src, dst, slot, at).await },
            &self.transfers,
        );
        self.slots.attach(id, abort);
    }
}

/// Lets a log line through at most once a second, with the count of calls since.
#[derive(Default)]
struct LogGate {
    last_ms: AtomicU64,
    count: AtomicU64,
}

impl LogGate {
    fn pass(&self) -> Option<u64> {
        let n = self.count.fetch_add(1, Relaxed) + 1;
        let now = crate::events::now_ms();
        let last = self.last_ms.load(Relaxed);
        if now.saturating_sub(last) < 1000
            || self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            return None;
        }
        self.count.store(0, Relaxed);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Host, Interface, Mac};

    #[test]
    fn host_index_has_boot_addresses_only() {
        let mut cn1 = Host::with_interface("cn1", Mac([2, 0, 0, 0, 0, 1]), Some("10.0.0.1/24"));
        cn1.interfaces.push(Interface {
            ip: Some("10.9.0.1/24".into()),
            bmc: true,
            ..Interface::default()
        });
        let cn2 = Host::with_interface("cn2", Mac([2, 0, 0, 0, 0, 2]), Some("10.0.0.2"));
        let bare = Host::with_interface("bare", Mac([2, 0, 0, 0, 0, 3]), None);
        let inv = Inventory::from_parts_unchecked(vec![cn1, cn2, bare], vec![]);
        let idx = HostIndex::build(&inv);
        let at = |a: &str| idx.get(&a.parse::<IpAddr>().unwrap()).cloned();
        assert_eq!(at("10.0.0.1").as_deref(), Some("cn1"));
        assert_eq!(at("10.0.0.2").as_deref(), Some("cn2"));
        assert_eq!(at("10.9.0.1"), None, "a BMC address is not a boot address");
        assert_eq!(idx.len(), 2);
    }
}
