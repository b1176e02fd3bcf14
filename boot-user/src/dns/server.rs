//! The I/O edge: one UDP socket and one TCP listener on `dns.listen`, and the forwarder.
//!
//! Written on tokio with hickory-proto's message codec (which dhcproto already brings in)
//! rather than on hickory-server: the loops are short, and the bounds this server needs
//! are plainest where the sockets are. A connection beyond `dns.max_tcp_connections` is
//! closed at once, a connection idle for [`TCP_IDLE`] is closed, forwarded queries in
//! flight are capped by `dns.max_forwarded` (the next ones get SERVFAIL), and every UDP
//! answer fits the request's EDNS buffer (else it goes out truncated, TC set). On the
//! IPv4 wildcard address each UDP answer leaves from the address its query came to
//! (IP_PKTINFO), as a client expects.
//!
//! Forwarding: the client's bytes go to the first upstream under a fresh random ID, over
//! UDP (and again over TCP when the upstream truncated and the client asked over TCP);
//! an answer counts only with our ID and the same question; on a timeout or an error the
//! next upstream is tried; when none answers the client gets SERVFAIL.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::answer::{self, Outcome, Policy};
use super::stats::{Error, Stats};
use super::zones::{same_names, ZoneSettings, Zones};
use crate::config::{check, DnsConfig};
use crate::inventory::Inventory;
use crate::state::Shared;

/// A TCP connection is closed when no query arrives for this long (RFC 7766 suggests
/// seconds) or a started message is not complete within it.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// The bound sockets: made before privileges are dropped (port 53).
pub struct Sockets {
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
}

impl Sockets {
    pub fn bind(addr: SocketAddr) -> anyhow::Result<Sockets> {
        use anyhow::Context;
        let udp = std::net::UdpSocket::bind(addr)
            .with_context(|| format!("cannot bind DNS (dns.listen) on udp {addr}"))?;
        // The TCP listener on the port UDP got (they differ only with port 0).
        let tcp_addr = udp.local_addr()?;
        let tcp = std::net::TcpListener::bind(tcp_addr)
            .with_context(|| format!("cannot bind DNS (dns.listen) on tcp {tcp_addr}"))?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        Ok(Sockets { udp, tcp })
    }
}

/// Outcome of the synchronous part of a request.
enum Step {
    /// Bytes to send, or nothing.
    Done(Option<Vec<u8>>),
    /// Forward: the parsed request and the size limit of the answer.
    Forward(Box<Message>, usize),
}

/// Where the names the tables hold come from.
#[derive(Clone)]
pub enum Names {
    /// The inventory this server serves (standalone: all of it).
    Served(Arc<Shared>),
    /// Every host of the cluster, whatever segment serves it: a node resolves its peers
    /// on other segments through its own segment's server, and a name does not vanish
    /// from DNS when its host is renumbered into another segment.
    Cluster(Arc<crate::cluster::Cluster>),
}

impl Names {
    fn inventory(&self) -> Arc<Inventory> {
        match self {
            Names::Served(s) => s.inventory(),
            Names::Cluster(c) => c.whole(),
        }
    }

    /// Bumped whenever [`Names::inventory`] may have changed.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            Names::Served(s) => s.subscribe(),
            Names::Cluster(c) => c.subscribe_applied(),
        }
    }
}

pub struct Service {
    names: Names,
    settings: ZoneSettings,
    policy: Policy,
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    forward_slots: Arc<Semaphore>,
    tcp_slots: Arc<Semaphore>,
    /// The tables and the inventory they were built from.
    cache: Mutex<Option<(Arc<Inventory>, Arc<Zones>)>>,
    pub stats: Arc<Stats>,
}

impl Service {
    /// The service `[dns]` describes, with its listen address; None when `dns.listen` is
    /// empty. The config was checked at load: a bad value here is an error all the same.
    pub fn from_config(
        names: Names,
        cfg: &DnsConfig,
    ) -> anyhow::Result<Option<(Arc<Service>, SocketAddr)>> {
        let Some(listen) = check::dns_listen(&cfg.listen).map_err(anyhow::Error::msg)? else {
            return Ok(None);
        };
        let upstreams = cfg
            .forward
            .items()
            .into_iter()
            .map(check::dns_upstream)
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        let svc = Service {
            names,
            settings: ZoneSettings {
                ttl: cfg.ttl,
                zones: cfg.zones.clone(),
                nameserver: cfg.nameserver.clone(),
            },
            policy: Policy {
                forwarding: !upstreams.is_empty(),
                udp_payload: cfg.max_udp_payload,
            },
            upstreams,
            timeout: Duration::from_millis(cfg.forward_timeout_ms),
            forward_slots: Arc::new(Semaphore::new(cfg.max_forwarded)),
            tcp_slots: Arc::new(Semaphore::new(cfg.max_tcp_connections)),
            cache: Mutex::new(None),
            stats: Arc::new(Stats::default()),
        };
        Ok(Some((Arc::new(svc), listen)))
    }

    /// The tables of the current inventory: built on the first query after a swap (and by
    /// the watcher in [`Service::run`] right after it), once per inventory.
    pub fn tables(&self) -> Arc<Zones> {
        let inv = self.names.inventory();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((built_from, zones)) = cache.as_mut() {
            if Arc::ptr_eq(built_from, &inv) {
                return zones.clone();
            }
            if same_names(built_from, &inv) {
                *built_from = inv;
                self.stats.table_kept();
                return zones.clone();
            }
        }
        let zones = Arc::new(Zones::build(&inv, &self.settings));
        self.stats.table_built();
        for s in zones.skipped.iter().take(10) {
            tracing::warn!(target: "xboot::dns", "{s}: not served");
        }
        if zones.skipped.len() > 10 {
            tracing::warn!(target: "xboot::dns", "... and {} more names not served", zones.skipped.len() - 10);
        }
        let apexes = zones.apexes();
        let more = match apexes.len() {
            n if n > 8 => format!(" and {} more", n - 8),
            _ => String::new(),
        };
        tracing::info!(
            target: "xboot::dns",
            "DNS tables: {} names, {} zones: {}{more}",
            zones.len(),
            apexes.len(),
            apexes[..apexes.len().min(8)].join(", ")
        );
        *cache = Some((inv, zones.clone()));
        zones
    }

    /// The synchronous part: parse, answer from the tables or decide to forward.
    fn decide(&self, bytes: &[u8], udp_limit: Option<u16>) -> Step {
        let req = match Message::from_vec(bytes) {
            Ok(m) if m.message_type == hickory_proto::op::MessageType::Query => m,
            Ok(_) => {
                // A response sent to us: never answered.
                self.stats.error(Error::Malformed);
                return Step::Done(None);
            }
            Err(_) => {
                self.stats.error(Error::Malformed);
                let r = answer::formerr(bytes);
                if r.is_some() {
                    self.stats.answer(ResponseCode::FormErr);
                }
                return Step::Done(r);
            }
        };
        if let Some(q) = req.queries.first() {
            self.stats.query(q.query_type, udp_limit.is_none());
        }
        let limit = match udp_limit {
            Some(max) => answer::udp_limit(&req, max),
            None => usize::from(u16::MAX),
        };
        match answer::respond(&self.tables(), &req, self.policy) {
            Outcome::Reply(m) => Step::Done(self.encode(&m, limit)),
            Outcome::Forward => Step::Forward(Box::new(req), limit),
        }
    }

    fn encode(&self, m: &Message, limit: usize) -> Option<Vec<u8>> {
        let out = answer::fit(m, limit);
        match &out {
            Some(b) => {
                if b.len() >= 4 && b[2] & 0x02 != 0 {
                    self.stats.truncated();
                }
                self.stats.answer(m.response_code);
            }
            None => self.stats.error(Error::Io),
        }
        out
    }

    /// A slot for one forwarded query, or None (counted) when `dns.max_forwarded` are in
    /// flight: taken before any task is started for it.
    fn forward_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slot = self.forward_slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.stats.error(Error::ForwardBusy);
        }
        slot
    }

    /// Forwards `bytes` (the request `req`) holding `_slot`, and returns the answer for
    /// the client.
    async fn forward(
        &self,
        _slot: tokio::sync::OwnedSemaphorePermit,
        bytes: &[u8],
        req: &Message,
        limit: usize,
        tcp: bool,
    ) -> Option<Vec<u8>> {
        self.stats.forwarded();
        let id: u16 = rand::random();
        let mut query = bytes.to_vec();
        query[..2].copy_from_slice(&id.to_be_bytes());
        for up in &self.upstreams {
            let mut got = exchange_udp(*up, &query, id, req, self.timeout).await;
            if tcp && got.as_ref().is_ok_and(|(m, _)| m.truncation) {
                got = exchange_tcp(*up, &query, id, req, self.timeout).await;
            }
            match got {
                Ok((mut m, mut raw)) => {
                    raw[..2].copy_from_slice(&req.id.to_be_bytes());
                    self.stats.answer(m.response_code);
                    if raw.len() <= limit {
                        return Some(raw);
                    }
                    m.metadata.id = req.id;
                    self.stats.truncated();
                    return answer::fit(&m, limit);
                }
                Err(e) => {
                    tracing::debug!(target: "xboot::dns", "upstream {up}: {e}");
                }
            }
        }
        self.stats.error(Error::ForwardFailed);
        self.servfail(req, limit)
    }

    fn servfail(&self, req: &Message, limit: usize) -> Option<Vec<u8>> {
        let mut m = Message::response(req.id, req.op_code);
        m.metadata.recursion_desired = req.recursion_desired;
        m.metadata.recursion_available = self.policy.forwarding;
        m.metadata.response_code = ResponseCode::ServFail;
        m.queries = req.queries.clone();
        self.encode(&m, limit)
    }

    /// Serves until `stop` resolves.
    pub async fn run(
        self: Arc<Self>,
        sockets: Sockets,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let udp = Arc::new(UdpSocket::from_std(sockets.udp)?);
        let tcp = TcpListener::from_std(sockets.tcp)?;
        tracing::info!(target: "xboot::dns", "DNS listening on {} (udp, tcp)", udp.local_addr()?);
        self.tables();
        let mut changes = self.names.subscribe();
        let watcher = {
            let svc = self.clone();
            async move {
                while changes.changed().await.is_ok() {
                    // A build reads every host: off the runtime's workers.
                    let svc = svc.clone();
                    let _ = tokio::task::spawn_blocking(move || svc.tables()).await;
                }
            }
        };
        tokio::select! {
            _ = stop => Ok(()),
            _ = watcher => Ok(()),
            r = self.clone().udp_loop(udp) => r,
            r = self.clone().tcp_loop(tcp) => r,
        }
    }

    async fn udp_loop(self: Arc<Self>, sock: Arc<UdpSocket>) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 65_535];
        let max = self.policy.udp_payload;
        // On 0.0.0.0 each answer leaves from the address its query came to (a client
        // drops an answer from another address).
        let pktinfo = {
            match sock.local_addr()? {
                SocketAddr::V4(a) if a.ip().is_unspecified() => {
                    nix::sys::socket::setsockopt(
                        &*sock,
                        nix::sys::socket::sockopt::Ipv4PacketInfo,
                        &true,
                    )?;
                    true
                }
                _ => false,
            }
        };
        loop {
            let got = sock
                .async_io(tokio::io::Interest::READABLE, || {
                    crate::tftp::net::recv_with_destination(&*sock, &mut buf, pktinfo)
                })
                .await;
            let (n, peer, dst) = match got {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors of earlier sends surface here; nothing to stop for.
                    tracing::debug!(target: "xboot::dns", "udp receive: {e}");
                    self.stats.error(Error::Io);
                    continue;
                }
            };
            let bytes = &buf[..n];
            match self.decide(bytes, Some(max)) {
                Step::Done(Some(out)) => {
                    if send_from(&sock, &out, peer, dst).await.is_err() {
                        self.stats.error(Error::Io);
                    }
                }
                Step::Done(None) => {}
                Step::Forward(req, limit) => {
                    let Some(slot) = self.forward_slot() else {
                        if let Some(out) = self.servfail(&req, limit) {
                            if send_from(&sock, &out, peer, dst).await.is_err() {
                                self.stats.error(Error::Io);
                            }
                        }
                        continue;
                    };
                    let (svc, sock, bytes) = (self.clone(), sock.clone(), bytes.to_vec());
                    tokio::spawn(async move {
                        if let Some(out) = svc.forward(slot, &bytes, &req, limit, false).await {
                            if send_from(&sock, &out, peer, dst).await.is_err() {
                                svc.stats.error(Error::Io);
                            }
                        }
                    });
                }
            }
        }
    }

    async fn tcp_loop(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(target: "xboot::dns", "tcp accept: {e}");
                    self.stats.error(Error::Io);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.tcp_slots.clone().try_acquire_owned() else {
                self.stats.error(Error::TcpRefused);
                drop(stream);
                continue;
            };
            let svc = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = svc.connection(stream).await {
                    tracing::debug!(target: "xboot::dns", "tcp connection: {e}");
                }
            });
        }
    }

    /// One TCP connection: length-prefixed queries answered in order until the client
    /// closes or stays silent for [`TCP_IDLE`].
    async fn connection(&self, mut stream: TcpStream) -> std::io::Result<()> {
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            }
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            };
            let out = match self.decide(&msg, None) {
                Step::Done(out) => out,
                Step::Forward(req, limit) => match self.forward_slot() {
                    Some(slot) => self.forward(slot, &msg, &req, limit, true).await,
                    None => self.servfail(&req, limit),
                },
            };
            let Some(out) = out else {
                // Not a query: the connection is not worth keeping.
                return Ok(());
            };
            let mut framed = Vec::with_capacity(out.len() + 2);
            framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
            framed.extend_from_slice(&out);
            match tokio::time::timeout(TCP_IDLE, stream.write_all(&framed)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            }
        }
    }
}

/// Sends `out` to `peer`, from `from` when the socket is on the wildcard address
/// (IP_PKTINFO's `ipi_spec_dst`).
async fn send_from(
    sock: &UdpSocket,
    out: &[u8],
    peer: SocketAddr,
    from: Option<std::net::IpAddr>,
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let Some(std::net::IpAddr::V4(src)) = from else {
        return sock.send_to(out, peer).await.map(drop);
    };
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let to = SockaddrStorage::from(peer);
    sock.async_io(tokio::io::Interest::WRITABLE, || {
        let iov = [std::io::IoSlice::new(out)];
        sendmsg(
            sock.as_raw_fd(),
            &iov,
            &[ControlMessage::Ipv4PacketInfo(&info)],
            MsgFlags::MSG_DONTWAIT,
            Some(&to),
        )
        .map_err(std::io::Error::from)
    })
    .await
    .map(drop)
}

/// Whether `m` answers our query: our ID, a response, the same question.
fn answers(m: &Message, id: u16, req: &Message) -> bool {
    let same = |a: &hickory_proto::op::Query, b: &hickory_proto::op::Query| {
        a.query_type == b.query_type
            && a.query_class == b.query_class
            && a.name.to_ascii().eq_ignore_ascii_case(&b.name.to_ascii())
    };
    m.id == id
        && m.message_type == hickory_proto::op::MessageType::Response
        && m.queries.len() == req.queries.len()
        && m.queries.iter().zip(&req.queries).all(|(a, b)| same(a, b))
}

type Exchange = Result<(Message, Vec<u8>), String>;

async fn exchange_udp(
    up: SocketAddr,
    query: &[u8],
    id: u16,
    req: &Message,
    t: Duration,
) -> Exchange {
    let local: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let sock = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    sock.connect(up).await.map_err(|e| e.to_string())?;
    sock.send(query).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_535];
    let deadline = tokio::time::Instant::now() + t;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        // Anything else on this port (a late or forged datagram) is ignored.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if answers(&m, id, req) {
                return Ok((m, buf[..n].to_vec()));
            }
        }
    }
}

async fn exchange_tcp(
    up: SocketAddr,
    query: &[u8],
    id: u16,
    req: &Message,
    t: Duration,
) -> Exchange {
    let work = async {
        let mut s = TcpStream::connect(up).await.map_err(|e| e.to_string())?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        s.write_all(&framed).await.map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        let m = Message::from_vec(&buf).map_err(|e| e.to_string())?;
        if answers(&m, id, req) {
            Ok((m, buf))
        } else {
            Err("an answer to another question".to_string())
        }
    };
    tokio::time::timeout(t, work)
        .await
        .map_err(|_| "timed out".to_string())?
}
