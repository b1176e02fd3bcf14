//! The userspace DHCP service: the I/O edge around [`super::reply`].
//!
//! - One UDP socket on the DHCP port per served interface (`SO_BINDTODEVICE`), or one for
//!   all interfaces; `IP_PKTINFO` tells the ingress interface and whether the request was
//!   unicast to us (relays) either way. The same layout on 4011 for the PXE boot server.
//! - Replies to clients without an address (broadcast, or unicast to chaddr/yiaddr) leave
//!   as raw frames ([`super::frame`]) through one `AF_PACKET` socket on the ingress
//!   interface, so no ARP entry is needed; replies to relays, to ciaddr and from the boot
//!   server go through the UDP socket.
//! - Per datagram: parse (malformed: counted, debug log), look the MAC up in the current
//!   inventory snapshot, decide, send, count, record the boot event. Unknown MACs are
//!   counted, kept in [`Discovered`] and logged once per MAC per interval.
//! - [`spawn`] runs the service on its own thread and tokio runtime, so image serving
//!   cannot starve it; [`run`] is the same on the caller's runtime.
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{self as nsock, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinSet;

use super::boot::BootUrls;
use super::discovered::Discovered;
use super::frame::{frame, FrameAddrs};
use super::iface::{self, IfaceCache, IfaceInfo};
use super::ra::{self, RaSocket};
use super::reply::{decide, decide_boot_server, Context, Decision, Destination, Reply, ReplyKind, Silence};
use super::request::Request;
use super::settings::{Settings, SettingsError};
use super::stats::Stats;
use super::wire;
use crate::config::Config;
use crate::events::{now_ms, EventKind};
use crate::inventory::Mac;
use crate::state::Shared;

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// Interfaces to serve; empty = all.
    pub interfaces: Vec<String>,
    /// `dhcp.listen`: a specific address serves the interface holding it.
    pub dhcp: SocketAddrV4,
    /// `pxe.listen` port: the PXE boot server; `None` = no boot server.
    pub boot_port: Option<u16>,
    /// Answer IPv6 Router Solicitations ([`super::ra`]).
    pub router_advertisements: bool,
}

impl Listen {
    /// From `interface`, `dhcp.listen` and `pxe.listen`.
    pub fn from_config(cfg: &Config) -> Result<Listen, SettingsError> {
        let v4 = |key: &str, s: &str| match s.parse::<std::net::SocketAddr>() {
            Ok(std::net::SocketAddr::V4(a)) => Ok(a),
            _ => Err(SettingsError { key: key.into(), message: format!("{s:?} is not an IPv4 address:port") }),
        };
        Ok(Listen {
            interfaces: cfg.interface.names(),
            dhcp: v4("dhcp.listen", &cfg.dhcp.listen)?,
            boot_port: Some(v4("pxe.listen", &cfg.pxe.listen)?.port()).filter(|p| *p != 0),
            router_advertisements: true,
        })
    }
}

/// A UDP socket of the service.
pub struct UdpListener {
    socket: UdpSocket,
    /// Set when bound to one interface.
    ifname: Option<String>,
}

impl UdpListener {
    /// Binds 0.0.0.0:`port` (on `ifname` only, if given) with `IP_PKTINFO`.
    pub fn open(ifname: Option<&str>, port: u16) -> io::Result<UdpListener> {
        let on = ifname.unwrap_or("all interfaces");
        let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("UDP port {port} on {on}: {what}: {e}"));
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| ctx("socket", e))?;
        s.set_reuse_address(true).map_err(|e| ctx("SO_REUSEADDR", e))?;
        s.set_broadcast(true).map_err(|e| ctx("SO_BROADCAST", e))?;
        if let Some(name) = ifname {
            s.bind_device(Some(name.as_bytes())).map_err(|e| ctx("SO_BINDTODEVICE", e))?;
        }
        nsock::setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(|e| ctx("IP_PKTINFO", e.into()))?;
        // Room for a storm: the default ~200 KB holds only a few hundred requests.
        let _ = s.set_recv_buffer_size(4 << 20);
        s.set_nonblocking(true).map_err(|e| ctx("non-blocking", e))?;
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into()).map_err(|e| ctx("bind", e))?;
        Ok(UdpListener { socket: s.into(), ifname: ifname.map(String::from) })
    }

    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.port())
    }
}

/// An `AF_PACKET` socket that only sends (protocol 0: it receives nothing).
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    pub fn open() -> io::Result<PacketSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("AF_PACKET socket: {e}")));
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(PacketSocket { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Sends a whole Ethernet frame on interface `ifindex` without blocking.
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame shorter than an Ethernet header"));
        }
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        sa.sll_ifindex = ifindex as i32;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: buffer and address are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Every socket the service uses, opened by the caller (in the right network namespace,
/// with the privileges needed) before the service starts.
pub struct Sockets {
    pub dhcp: Vec<UdpListener>,
    pub boot: Vec<UdpListener>,
    pub raw: PacketSocket,
    pub ra: Vec<RaSocket>,
}

impl Sockets {
    /// Opens the sockets `listen` asks for. An RA responder that cannot be opened (IPv6
    /// disabled on the interface) is a warning, not an error.
    pub fn open(listen: &Listen) -> io::Result<Sockets> {
        let mut names = listen.interfaces.clone();
        if names.is_empty() && !listen.dhcp.ip().is_unspecified() {
            let want = *listen.dhcp.ip();
            let owner = iface::list()?.into_iter().find(|i| i.addrs.iter().any(|a| a.addr() == want));
            let owner = owner.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("dhcp.listen: no interface has address {want}"))
            })?;
            names.push(owner.name);
        }
        let per_iface = |port: u16| -> io::Result<Vec<UdpListener>> {
            if names.is_empty() {
                Ok(vec![UdpListener::open(None, port)?])
            } else {
                names.iter().map(|n| UdpListener::open(Some(n), port)).collect()
            }
        };
        let dhcp = per_iface(listen.dhcp.port())?;
        let boot = match listen.boot_port {
            Some(p) => per_iface(p)?,
            None => vec![],
        };
        let mut ra = vec![];
        if listen.router_advertisements {
            let ra_names = if names.is_empty() {
                iface::list()?.into_iter().map(|i| i.name).filter(|n| n != "lo").collect()
            } else {
                names.clone()
            };
            for n in ra_names {
                match RaSocket::open(&n) {
                    Ok(s) => ra.push(s),
                    Err(e) => tracing::warn!("{e} (iPXE will wait for IPv6 autoconfiguration)"),
                }
            }
        }
        Ok(Sockets { dhcp, boot, raw: PacketSocket::open()?, ra })
    }
}

/// Which port a datagram came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dhcp,
    BootServer,
}

/// Where a datagram came from.
#[derive(Clone, Debug)]
pub struct Ingress {
    pub iface: IfaceInfo,
    /// IP destination of the datagram (our address when unicast to us; broadcast else).
    pub local_dst: Option<Ipv4Addr>,
    pub src: SocketAddrV4,
}

/// What to send back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A whole frame for the ingress interface (AF_PACKET).
    Frame(Vec<u8>),
    /// A datagram from the socket the request came in on.
    Udp { to: SocketAddrV4, payload: Vec<u8> },
}

/// The service's state: inventory, settings, URLs, counters, discovered machines.
pub struct Service {
    pub shared: Arc<Shared>,
    pub settings: Settings,
    pub urls: Arc<dyn BootUrls + Send + Sync>,
    pub stats: Arc<Stats>,
    pub discovered: Arc<Discovered>,
    /// Replies sent so far: the DNS rotation offset.
    rotation: AtomicUsize,
    ifaces: Mutex<IfaceCache>,
}

/// Unknown MACs remembered by the discovered table.
pub const DISCOVERED_CAPACITY: usize = 4096;

impl Service {
    /// Settings from `shared.config`; errors name the config key.
    pub fn new(shared: Arc<Shared>, urls: Arc<dyn BootUrls + Send + Sync>) -> Result<Service, SettingsError> {
        let settings = Settings::from_config(&shared.config)?;
        Ok(Service::with_settings(shared, settings, urls))
    }

    pub fn with_settings(shared: Arc<Shared>, settings: Settings, urls: Arc<dyn BootUrls + Send + Sync>) -> Service {
        let interval = shared.config.dhcp.unknown_log_interval_secs;
        Service {
            shared,
            settings,
            urls,
            stats: Arc::default(),
            discovered: Arc::new(Discovered::new(DISCOVERED_CAPACITY, interval)),
            rotation: AtomicUsize::new(0),
            ifaces: Mutex::default(),
        }
    }

    fn iface(&self, index: u32) -> Option<IfaceInfo> {
        self.ifaces.lock().unwrap().get(index)
    }

    /// Handles one datagram: returns what to send, having counted, logged and recorded it.
    pub fn handle(&self, datagram: &[u8], ingress: &Ingress, role: Role) -> Option<Outgoing> {
        self.stats.received.fetch_add(1, Relaxed);
        let msg = match wire::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed.fetch_add(1, Relaxed);
                tracing::debug!("dhcp: malformed datagram from {} on {}: {e}", ingress.src, ingress.iface.name);
                return None;
            }
        };
        let req = Request::from_message(&msg);
        let inv = self.shared.inventory();
        let host = inv.lookup_mac(req.mac);
        let host_ip = host.and_then(|h| h.nic.addr());
        let Some(server_ip) = iface::pick_server_ip(&ingress.iface.addrs, host_ip, ingress.local_dst) else {
            self.stats.silent.fetch_add(1, Relaxed);
            tracing::warn!("dhcp: interface {} has no IPv4 address to answer from", ingress.iface.name);
            return None;
        };
        let ctx = Context {
            settings: &self.settings,
            server_ip,
            host,
            urls: self.urls.as_ref(),
            dns_rotation: self.rotation.load(Relaxed),
        };
        let decision = match role {
            Role::Dhcp => decide(&req, &ctx),
            Role::BootServer => decide_boot_server(&req, &ctx, ingress.src),
        };
        match decision {
            Decision::Reply(r) => {
                self.rotation.fetch_add(1, Relaxed);
                self.stats.reply(r.kind);
                self.record(&r, &ingress.iface.name);
                Some(outgoing(&r, ingress, server_ip))
            }
            Decision::Silent(s) => {
                self.stats.silence(&s);
                self.report(&s, &req, &ingress.iface.name);
                None
            }
        }
    }

    fn record(&self, r: &Reply, ifname: &str) {
        let (kind, what) = match r.kind {
            ReplyKind::Offer => (EventKind::DhcpOffer, "OFFER"),
            ReplyKind::Ack => (EventKind::DhcpAck, "ACK"),
            ReplyKind::Nak => (EventKind::DhcpNak, "NAK"),
            ReplyKind::InformAck => (EventKind::DhcpInform, "INFORM ACK"),
            ReplyKind::ProxyOffer => (EventKind::ProxyOffer, "proxy OFFER"),
            ReplyKind::BootAck => (EventKind::ProxyOffer, "boot server ACK"),
        };
        let mut detail = match r.kind {
            ReplyKind::Nak => match r.message.opts().get(dhcproto::v4::OptionCode::Message) {
                Some(dhcproto::v4::DhcpOption::Message(m)) => m.clone(),
                _ => String::new(),
            },
            ReplyKind::Offer | ReplyKind::Ack => r.message.yiaddr().to_string(),
            _ => String::new(),
        };
        if let Some(b) = r.boot.name() {
            // Keep signed tokens out of the event log.
            let b = b.split('?').next().unwrap_or(b);
            detail = if detail.is_empty() { b.to_string() } else { format!("{detail} {b}") };
        }
        let detail = if detail.is_empty() { "via userspace".to_string() } else { format!("{detail} via userspace") };
        tracing::info!("dhcp: {what} to {} on {ifname}: {detail}", r.host);
        self.shared.events.record(&r.host, kind, detail);
    }

    fn report(&self, s: &Silence, req: &Request, ifname: &str) {
        match s {
            Silence::UnknownMac => {
                if self.discovered.record(req, ifname, now_ms()) {
                    tracing::info!("dhcp: unknown MAC {} ({}) on {ifname}: not answered", req.mac, req.kind);
                }
            }
            Silence::Released { host, ip } => {
                tracing::info!("dhcp: {host} released {ip}");
                self.shared.events.record(host, EventKind::DhcpRelease, format!("{ip} via userspace"));
            }
            Silence::Declined { host, ip } => {
                let ip = ip.map_or("its address".to_string(), |i| i.to_string());
                tracing::warn!("dhcp: {host} declined {ip} (address conflict on the link?)");
                self.shared.events.record(host, EventKind::DhcpDecline, format!("{ip} via userspace"));
            }
            Silence::NoAddress { host } => {
                tracing::warn!("dhcp: {host} ({}) has no IPv4 address in the inventory: not answered", req.mac);
            }
            Silence::TooLarge { host, size } => {
                tracing::warn!("dhcp: reply to {host} would be {size} bytes, over the client's limit: not sent");
            }
            other => tracing::debug!("dhcp: no answer to {} on {ifname}: {other:?}", req.mac),
        }
    }
}

fn outgoing(r: &Reply, ingress: &Ingress, server_ip: Ipv4Addr) -> Outgoing {
    let udp = |to: SocketAddrV4| Outgoing::Udp { to, payload: r.bytes() };
    match r.destination {
        Destination::Broadcast | Destination::Unicast { .. } => {
            let addrs = FrameAddrs { server_mac: ingress.iface.mac, server_ip, peer_mac: Mac::default(), vlan: None };
            Outgoing::Frame(frame(r, &addrs))
        }
        Destination::Relay(ip) => udp(SocketAddrV4::new(ip, super::reply::SERVER_PORT)),
        Destination::Client(ip) => udp(SocketAddrV4::new(ip, super::reply::CLIENT_PORT)),
        Destination::Peer(sa) => udp(sa),
    }
}

/// Runs the service on the current tokio runtime until `shutdown` completes.
pub async fn run(sockets: Sockets, service: Arc<Service>, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let raw = Arc::new(sockets.raw);
    let mut tasks = JoinSet::new();
    for l in sockets.dhcp {
        tasks.spawn(serve_udp(l, service.clone(), raw.clone(), Role::Dhcp));
    }
    for l in sockets.boot {
        tasks.spawn(serve_udp(l, service.clone(), raw.clone(), Role::BootServer));
    }
    for r in sockets.ra {
        tasks.spawn(ra::serve(r, service.stats.clone()));
    }
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            Some(done) = tasks.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(io::Error::other(format!("dhcp task failed: {e}"))),
            },
        }
    };
    tasks.shutdown().await;
    result
}

/// Runs the service on a thread of its own (with its own single-threaded runtime).
pub fn spawn(
    sockets: Sockets,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    std::thread::Builder::new().name("xboot-dhcp".into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(run(sockets, service, shutdown))
    })
}

async fn serve_udp(l: UdpListener, svc: Arc<Service>, raw: Arc<PacketSocket>, role: Role) -> io::Result<()> {
    let bound_index = match &l.ifname {
        Some(n) => Some(nix::net::if_::if_nametoindex(n.as_str()).map_err(io::Error::from)?),
        None => None,
    };
    // SAFETY: the UdpSocket is moved into the AsyncFd, which keeps it open while registered.
    let fd = unsafe { AsyncFd::register_with_interest(l.socket, Interest::READABLE) }?;
    let mut buf = vec![0u8; 4096];
    loop {
        let mut guard = fd.readable().await?;
        let (len, src, info) = match guard.try_io(|s| recv_pktinfo(s.get_ref(), &mut buf)) {
            Err(_would_block) => continue,
            Ok(Err(e)) => {
                tracing::warn!("dhcp: receive error: {e}");
                continue;
            }
            Ok(Ok(got)) => got,
        };
        let index = info.map(|i| i.ipi_ifindex as u32).or(bound_index).unwrap_or(0);
        let Some(iface) = svc.iface(index) else {
            tracing::debug!("dhcp: datagram from {src} on unknown interface {index}");
            continue;
        };
        let local_dst = info.map(|i| Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr)));
        let ingress = Ingress { iface, local_dst, src };
        let sent = match svc.handle(&buf[..len], &ingress, role) {
            None => continue,
            Some(Outgoing::Frame(f)) => raw.send(ingress.iface.index, &f),
            Some(Outgoing::Udp { to, payload }) => fd.get_ref().send_to(&payload, to).map(drop),
        };
        if let Err(e) = sent {
            svc.stats.send_errors.fetch_add(1, Relaxed);
            tracing::warn!("dhcp: cannot send reply on {}: {e}", ingress.iface.name);
        }
    }
}

/// recvmsg with the IP_PKTINFO control message.
fn recv_pktinfo(s: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4, Option<libc::in_pktinfo>)> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let msg = nsock::recvmsg::<SockaddrIn>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
        .map_err(io::Error::from)?;
    let mut info = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::Ipv4PacketInfo(p) = c {
            info = Some(p);
        }
    }
    let src = msg.address.map_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), |a| SocketAddrV4::new(a.ip(), a.port()));
    Ok((msg.bytes, src, info))
}
