//! One transfer: its socket, negotiation and first packet ([`Server::start_sending`], on
//! the server loop itself when the name was resolved a moment ago, else in the task after
//! the file's resolution on the blocking pool), then its task: [`drive`] runs the
//! [`Transfer`] state machine against the socket and a timer until it finishes, and the
//! outcome is counted, logged and, for a file sent to an inventory host, recorded.
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::proto::{self, ErrorCode, Request};
use super::transfer::{Action, Outcome, Resent, Transfer};
use super::{files, net, slots, who, PathError, Server, Stats};
use crate::events::EventKind;

/// A refusal (file not found, outside the root ...) with the ERROR it is answered with.
struct Refused {
    code: ErrorCode,
    message: String,
}

impl Server {
    /// Resolves and opens the request's file (blocking), and the host of the client.
    fn open(
        &self,
        req: &Request,
        client: SocketAddr,
    ) -> (Option<String>, Result<Arc<files::OpenFile>, Refused>) {
        let host = self.host_for_ip(client.ip());
        let name = &req.filename;
        let file = self.root.resolve(name).map_err(|e| {
            if self.loud(&host) {
                tracing::warn!("TFTP {} ({client}): refused {e}", who(&host));
            }
            // The client learns the kind of refusal only: never where a link leads.
            let (code, message) = match e {
                PathError::NotFound(_) | PathError::NotAFile(_) => {
                    (ErrorCode::FileNotFound, "file not found")
                }
                PathError::DotDot(_)
                | PathError::OutsideRoot { .. }
                | PathError::NotUnderRoots(_) => (ErrorCode::AccessViolation, "access violation"),
            };
            Refused {
                code,
                message: message.into(),
            }
        });
        let opened = file.and_then(|path| {
            let f = self.files.open(&path);
            if let Ok(f) = &f {
                self.files.remember(name, f, Instant::now());
            }
            f.map_err(|e| {
                tracing::warn!("TFTP {} ({client}): cannot open {name:?}: {e}", who(&host));
                Refused {
                    code: ErrorCode::AccessViolation,
                    message: format!("cannot open {name:?}"),
                }
            })
        });
        (host, opened)
    }
}

/// How a transfer's task starts.
pub(super) enum Start {
    /// The request's name was resolved a moment ago: the server loop has sent the first
    /// packet already, and left the [`Begun`] transfer in its slot.
    Sent,
    /// The name is to be resolved and its file opened first (on the blocking pool,
    /// unless resolved a moment ago), then the first packet sent.
    Open(Request),
}

/// A transfer whose first packet (OACK or DATA) is sent.
pub(super) struct Begun {
    sock: UdpSocket,
    req: Request,
    file: Arc<files::OpenFile>,
    oack: Option<Vec<u8>>,
    t: Transfer,
}

impl Server {
    /// Starts sending `file` for `req`, without waiting: its socket, the negotiation, and
    /// the first packet sent (a fresh socket's send queue is empty, so it is never full;
    /// were it, the transfer's timer sends it again). The first answer is timed. None:
    /// the transfer failed (counted and logged).
    pub(super) fn start_sending(
        &self,
        req: Request,
        file: Arc<files::OpenFile>,
        peer: SocketAddr,
        local: IpAddr,
        at: super::Arrival,
    ) -> Option<Begun> {
        let sock = match transfer_socket(local) {
            Ok(s) => s,
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                if self.loud(&None) {
                    tracing::warn!("TFTP {peer}: cannot open a transfer socket on {local}: {e}");
                }
                return None;
            }
        };
        let max_blksize = match proto::asked_blksize(&req) {
            Some(b) if b > u64::from(proto::SAFE_BLKSIZE) => net::route_blksize(local, peer),
            _ => proto::MAX_BLKSIZE,
        };
        let limits = proto::Limits {
            max_blksize,
            ..proto::Limits::default()
        };
        let n = proto::negotiate(&req, file.len, &limits);
        tracing::debug!(
            "TFTP {peer}: sending {:?} ({} bytes, blksize {}, windowsize {})",
            req.filename,
            file.len,
            n.blksize,
            n.window
        );
        let (t, first) = Transfer::start(peer, file.len, &n, self.max_lifetime, Instant::now());
        let mut block = vec![0u8; t.max_packet()];
        let sent = match first {
            Action::SendOack => send_now(&sock, n.oack.as_deref().unwrap_or_default(), peer),
            Action::SendBlocks { first, last } => (first..=last).try_for_each(|b| {
                let buf = read_block(&t, &file, b, &mut block)?;
                send_now(&sock, buf, peer)
            }),
            _ => Ok(()),
        };
        self.stats.phases.first_reply.record(at.arrived.elapsed());
        if let Err(e) = sent {
            self.stats.failed.fetch_add(1, Relaxed);
            tracing::warn!("TFTP {peer}: {:?} failed: {e}", req.filename);
            return None;
        }
        Some(Begun {
            sock,
            req,
            file,
            oack: n.oack,
            t,
        })
    }

    /// One transfer's task, from its start to its last packet.
    pub(super) async fn transfer(
        self: Arc<Self>,
        start: Start,
        peer: SocketAddr,
        local: IpAddr,
        slot: slots::Slot,
        at: super::Arrival,
    ) {
        let begun = Instant::now();
        self.stats
            .phases
            .started
            .record(begun.saturating_duration_since(at.read));
        let (b, host) = match start {
            Start::Sent => {
                // None: evicted before it ran (the task is being aborted).
                let Some(b) = slot.take_held().and_then(|h| h.downcast::<Begun>().ok()) else {
                    return;
                };
                let host = self.host_for_ip(peer.ip());
                (*b, host)
            }
            Start::Open(req) => {
                let Some((req, host, file)) = self.open_in_turn(req, peer).await else {
                    return;
                };
                self.stats.phases.opened.record(begun.elapsed());
                let file = match file {
                    Ok(f) => f,
                    Err(r) => {
                        self.stats.refused_file.fetch_add(1, Relaxed);
                        if let Ok(sock) = transfer_socket(local) {
                            let _ = send_now(&sock, &proto::encode_error(r.code, &r.message), peer);
                        }
                        self.stats.phases.first_reply.record(at.arrived.elapsed());
                        return;
                    }
                };
                let Some(b) = self.start_sending(req, file, peer, local, at) else {
                    return;
                };
                (b, host)
            }
        };
        let Begun {
            sock,
            req,
            file,
            oack,
            mut t,
        } = b;
        let Ok(sock) = tokio::net::UdpSocket::from_std(sock) else {
            self.stats.failed.fetch_add(1, Relaxed);
            return;
        };
        let outcome = drive(
            &sock,
            &mut t,
            Action::Wait,
            &file,
            oack.as_deref(),
            &slot,
            &self.stats,
        )
        .await;
        let name = &req.filename;
        match outcome {
            Ok(o) => {
                self.stats.outcome(&o);
                self.log_outcome(&o, &host, peer, name);
                if let (Outcome::Completed, Some(h)) = (&o, &host) {
                    let detail = format!("{name} ({} bytes)", file.len);
                    self.shared.events.record(h, EventKind::Tftp, detail);
                }
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                tracing::warn!("TFTP {} ({peer}): {name:?} failed: {e}", who(&host));
                let _ = sock
                    .send_to(&proto::encode_error(ErrorCode::NotDefined, &e), peer)
                    .await;
            }
        }
    }

    /// Resolves and opens `req`'s file on the blocking pool in its turn: at most
    /// OPENS_AT_ONCE at once (the pool is shared with other work); a request that waited
    /// looks at the resolved names again first, so a storm's thousand requests for one
    /// name resolve it once. Also the client's host. None: the runtime is shutting down.
    async fn open_in_turn(
        self: &Arc<Self>,
        req: Request,
        peer: SocketAddr,
    ) -> Option<(
        Request,
        Option<String>,
        Result<Arc<files::OpenFile>, Refused>,
    )> {
        let _turn = self.opening.acquire().await.ok()?;
        if let Some(f) = self.files.by_name(&req.filename, Instant::now()) {
            let host = self.host_for_ip(peer.ip());
            return Some((req, host, Ok(f)));
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let (host, file) = this.open(&req, peer);
            (req, host, file)
        })
        .await
        .ok()
    }

    fn log_outcome(&self, o: &Outcome, host: &Option<String>, peer: SocketAddr, name: &str) {
        let who = who(host);
        match o {
            Outcome::Completed => tracing::debug!("TFTP {who} ({peer}): sent {name:?}"),
            // EDK2's size probe (tsize in the OACK, then ERROR 8): every UEFI PXE boot.
            Outcome::ClientError { code: 8, message } => {
                tracing::debug!("TFTP {who} ({peer}): {name:?} ended by the client (8: {message})")
            }
            Outcome::ClientError { code, message } => {
                tracing::info!(
                    "TFTP {who} ({peer}): {name:?} ended by the client's ERROR {code}: {message}"
                )
            }
            Outcome::TimedOut => {
                tracing::info!("TFTP {who} ({peer}): {name:?}: no answer from the client, given up")
            }
            Outcome::TooLong => tracing::warn!(
                "TFTP {who} ({peer}): {name:?}: cut off after {:?} (tftp.max_transfer_secs)",
                self.max_lifetime
            ),
        }
    }
}

/// Sends `buf` on a non-blocking socket now; a full send queue drops it (as the network
/// could), other errors are returned.
fn send_now(sock: &UdpSocket, buf: &[u8], peer: SocketAddr) -> Result<(), String> {
    match sock.send_to(buf, peer) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(format!("send: {e}")),
    }
}

/// Block `n` of `file` as a DATA packet in `buf`.
fn read_block<'a>(
    t: &Transfer,
    file: &files::OpenFile,
    n: u64,
    buf: &'a mut [u8],
) -> Result<&'a [u8], String> {
    let (off, len) = t.block(n);
    let buf = &mut buf[..4 + len];
    buf[..4].copy_from_slice(&proto::data_header(n as u16));
    file.file
        .read_exact_at(&mut buf[4..], off)
        .map_err(|e| format!("read at {off}: {e} (file changed?)"))?;
    Ok(buf)
}

/// A transfer's own UDP socket (its TID) on the address the request was sent to (or any
/// address, if that one cannot be bound: a subnet's broadcast address), non-blocking.
fn transfer_socket(local: IpAddr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::new(local, 0)).or_else(|e| {
        if e.kind() != std::io::ErrorKind::AddrNotAvailable {
            return Err(e);
        }
        let any = match local {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        UdpSocket::bind(SocketAddr::new(any, 0))
    })?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Runs `t` until it finishes: does its actions, feeds it packets and timer expiries.
/// Err: the file could not be read (it shrank) or the socket failed.
async fn drive(
    sock: &tokio::net::UdpSocket,
    t: &mut Transfer,
    first: Action,
    file: &files::OpenFile,
    oack: Option<&[u8]>,
    slot: &slots::Slot,
    stats: &Stats,
) -> Result<Outcome, String> {
    let peer = t.peer();
    let mut block = vec![0u8; t.max_packet()];
    let mut rx = [0u8; 1024];
    let mut action = first;
    let mut confirmed = false;
    let mut counted = Resent::default();
    loop {
        if t.resent() != counted {
            let r = t.resent();
            let add = |c: &std::sync::atomic::AtomicU64, n: u64| c.fetch_add(n, Relaxed);
            add(&stats.resent_timeout, r.on_timeout - counted.on_timeout);
            add(
                &stats.resent_duplicate_ack,
                r.on_duplicate_ack - counted.on_duplicate_ack,
            );
            counted = r;
        }
        match action {
            Action::Wait => {}
            Action::SendOack => {
                let oack = oack.unwrap_or_default();
                sock.send_to(oack, peer)
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
            Action::SendBlocks { first, last } => {
                for n in first..=last {
                    let buf = read_block(t, file, n, &mut block)?;
                    sock.send_to(buf, peer)
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                }
            }
            Action::RejectStranger(to) => {
                let err = proto::encode_error(ErrorCode::UnknownTid, "unknown transfer ID");
                let _ = sock.try_send_to(&err, to);
            }
            Action::Finish(o) => return Ok(o),
        }
        if !confirmed && t.confirmed() {
            confirmed = true;
            slot.confirm();
        }
        let due = tokio::time::Instant::from_std(t.next_timeout());
        action = tokio::select! {
            r = sock.recv_from(&mut rx) => match r {
                Ok((len, from)) => t.on_packet(Instant::now(), from, &rx[..len]),
                // Unconnected UDP reports no ICMP errors; anything else is transient.
                Err(_) => Action::Wait,
            },
            () = tokio::time::sleep_until(due) => t.on_timeout(Instant::now()),
        };
    }
}
