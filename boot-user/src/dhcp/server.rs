//! The userspace DHCP service: the I/O edge around [`super::reply`].
//!
//! - Sockets ([`super::sockets`]): one UDP socket on the DHCP port per served interface
//!   (`SO_BINDTODEVICE`), or one for all interfaces; `IP_PKTINFO` tells the ingress
//!   interface and whether the request was unicast to us (relays) either way. The same
//!   layout on 4011 for the PXE boot server.
//! - Replies to clients without an address (broadcast, or unicast to chaddr/yiaddr) leave
//!   as raw frames ([`super::frame`]) through one `AF_PACKET` socket on the ingress
//!   interface, so no ARP entry is needed; replies to relays, to ciaddr and from the boot
//!   server go through the UDP socket. Without CAP_NET_RAW the frames' content is
//!   broadcast through the UDP socket instead (`sockets::send_broadcast`).
//! - Per datagram: parse (malformed: counted, debug log), look the MAC up in the current
//!   inventory snapshot, decide, send, count, record the boot event. Unknown MACs are
//!   counted, kept in [`Discovered`] and logged once per MAC per interval.
//! - [`spawn`] runs the service on its own thread and tokio runtime, so image serving
//!   cannot starve it; [`run`] is the same on the caller's runtime.
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinSet;

use super::boot::BootUrls;
use super::discovered::Discovered;
use super::frame::{frame, FrameAddrs};
use super::iface::{self, IfaceCache, IfaceInfo};
use super::ra;
use super::reply::{
    decide, decide_boot_server, Context, Decision, Destination, Reply, ReplyKind, Silence,
};
use super::request::Request;
use super::settings::{Settings, SettingsError};
use super::sockets::{recv_pktinfo, PacketSocket, Sockets, UdpListener};
use super::stats::Stats;
use super::wire;
use crate::events::{now_ms, EventKind};
use crate::ratelimit::{LogLimit, Verdict};

/// Per-packet warnings about known hosts (no address, reply too large): a known MAC can
/// be spoofed, so these are limited over all hosts.
static HOST_WARNINGS: LogLimit = LogLimit::new(2, 20);
use crate::inventory::Mac;
use crate::state::Shared;

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
    pub fn new(
        shared: Arc<Shared>,
        urls: Arc<dyn BootUrls + Send + Sync>,
    ) -> Result<Service, SettingsError> {
        let settings = Settings::from_config(&shared.config)?;
        Ok(Service::with_settings(shared, settings, urls))
    }

    pub fn with_settings(
        shared: Arc<Shared>,
        settings: Settings,
        urls: Arc<dyn BootUrls + Send + Sync>,
    ) -> Service {
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
                tracing::debug!(
                    "dhcp: malformed datagram from {} on {}: {e}",
                    ingress.src,
                    ingress.iface.name
                );
                return None;
            }
        };
        let req = Request::from_message(&msg);
        let inv = self.shared.inventory();
        let host = inv.lookup_mac(req.mac);
        let host_ip = host.and_then(|h| h.nic.addr());
        let Some(server_ip) =
            iface::pick_server_ip(&ingress.iface.addrs, host_ip, ingress.local_dst)
        else {
            self.stats.silent.fetch_add(1, Relaxed);
            tracing::warn!(
                "dhcp: interface {} has no IPv4 address to answer from",
                ingress.iface.name
            );
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
            detail = if detail.is_empty() {
                b.to_string()
            } else {
                format!("{detail} {b}")
            };
        }
        let detail = if detail.is_empty() {
            "via userspace".to_string()
        } else {
            format!("{detail} via userspace")
        };
        // Debug, not info: a boot storm would flood the log; the event log keeps them.
        tracing::debug!("dhcp: {what} to {} on {ifname}: {detail}", r.host);
        self.shared.events.record(&r.host, kind, detail);
    }

    fn report(&self, s: &Silence, req: &Request, ifname: &str) {
        match s {
            Silence::UnknownMac => {
                if let Some(suppressed) = self.discovered.record(req, ifname, now_ms()) {
                    tracing::info!(
                        "dhcp: unknown MAC {} ({}) on {ifname}: not answered{}",
                        req.mac,
                        req.kind,
                        LogLimit::note(suppressed)
                    );
                }
            }
            Silence::Released { host, ip } => {
                tracing::info!("dhcp: {host} released {ip}");
                self.shared.events.record(
                    host,
                    EventKind::DhcpRelease,
                    format!("{ip} via userspace"),
                );
            }
            Silence::Declined { host, ip } => {
                let ip = ip.map_or("its address".to_string(), |i| i.to_string());
                tracing::warn!("dhcp: {host} declined {ip} (address conflict on the link?)");
                self.shared.events.record(
                    host,
                    EventKind::DhcpDecline,
                    format!("{ip} via userspace"),
                );
            }
            Silence::NoAddress { host } => {
                if let Verdict::Log { suppressed } = HOST_WARNINGS.check(now_ms()) {
                    tracing::warn!(
                        "dhcp: {host} ({}) has no IPv4 address in the inventory: not answered{}",
                        req.mac,
                        LogLimit::note(suppressed)
                    );
                }
            }
            Silence::TooLarge { host, size } => {
                // A known MAC (spoofable) asking for a tiny reply size must not write a
                // line per packet.
                if let Verdict::Log { suppressed } = HOST_WARNINGS.check(now_ms()) {
                    tracing::warn!(
                        "dhcp: reply to {host} would be {size} bytes, over the client's limit: not sent{}",
                        LogLimit::note(suppressed)
                    );
                }
            }
            other => tracing::debug!("dhcp: no answer to {} on {ifname}: {other:?}", req.mac),
        }
    }
}

fn outgoing(r: &Reply, ingress: &Ingress, server_ip: Ipv4Addr) -> Outgoing {
    let udp = |to: SocketAddrV4| Outgoing::Udp {
        to,
        payload: r.bytes(),
    };
    match r.destination {
        Destination::Broadcast | Destination::Unicast { .. } => {
            let addrs = FrameAddrs {
                server_mac: ingress.iface.mac,
                server_ip,
                peer_mac: Mac::default(),
                vlan: None,
            };
            Outgoing::Frame(frame(r, &addrs))
        }
        Destination::Relay(ip) => udp(SocketAddrV4::new(ip, super::reply::SERVER_PORT)),
        Destination::Client(ip) => udp(SocketAddrV4::new(ip, super::reply::CLIENT_PORT)),
        Destination::Peer(sa) => udp(sa),
    }
}

/// Runs the service on the current tokio runtime until `shutdown` completes.
pub async fn run(
    sockets: Sockets,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
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
    std::thread::Builder::new()
        .name("xboot-dhcp".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(run(sockets, service, shutdown))
        })
}

async fn serve_udp(
    l: UdpListener,
    svc: Arc<Service>,
    raw: Arc<Option<PacketSocket>>,
    role: Role,
) -> io::Result<()> {
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
        let index = info
            .map(|i| i.ipi_ifindex as u32)
            .or(bound_index)
            .unwrap_or(0);
        let Some(iface) = svc.iface(index) else {
            tracing::debug!("dhcp: datagram from {src} on unknown interface {index}");
            continue;
        };
        let local_dst = info.map(|i| Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr)));
        let ingress = Ingress {
            iface,
            local_dst,
            src,
        };
        let sent = match svc.handle(&buf[..len], &ingress, role) {
            None => continue,
            Some(Outgoing::Frame(f)) => match raw.as_ref() {
                Some(raw) => raw.send(ingress.iface.index, &f),
                None => super::sockets::send_broadcast(fd.get_ref(), ingress.iface.index, &f),
            },
            Some(Outgoing::Udp { to, payload }) => fd.get_ref().send_to(&payload, to).map(drop),
        };
        if let Err(e) = sent {
            svc.stats.send_errors.fetch_add(1, Relaxed);
            tracing::warn!("dhcp: cannot send reply on {}: {e}", ingress.iface.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::dhcp::boot::PlainUrls;
    use crate::dhcp::frame::parse_frame;
    use crate::events::EventLog;
    use crate::inventory::{Host, Inventory};
    use dhcproto::v4::{DhcpOption, Message, MessageType};

    const MAC: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const IFACE_MAC: Mac = Mac([2, 0, 0, 0, 0, 0xaa]);

    fn service() -> Service {
        let host = Host::with_interface("cn1", MAC, Some("10.0.0.5/24"));
        let inv = Inventory::from_parts_unchecked(vec![host], vec![]);
        let shared = Shared::new(Config::default(), inv, EventLog::default());
        Service::new(shared, Arc::new(PlainUrls { port: 80 })).unwrap()
    }

    fn ingress() -> Ingress {
        Ingress {
            iface: IfaceInfo {
                index: 7,
                name: "eth0".into(),
                mac: IFACE_MAC,
                addrs: vec!["10.0.0.1/24".parse().unwrap()],
            },
            local_dst: Some(Ipv4Addr::BROADCAST),
            src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        }
    }

    fn datagram(t: MessageType, mac: Mac, giaddr: Ipv4Addr, opts: &[DhcpOption]) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(9, z, z, z, giaddr, &mac.0);
        m.opts_mut().insert(DhcpOption::MessageType(t));
        for o in opts {
            m.opts_mut().insert(o.clone());
        }
        wire::encode(&m)
    }

    #[test]
    fn discover_becomes_a_frame_to_the_client() {
        let svc = service();
        let out = svc.handle(
            &datagram(MessageType::Discover, MAC, Ipv4Addr::UNSPECIFIED, &[]),
            &ingress(),
            Role::Dhcp,
        );
        let Some(Outgoing::Frame(f)) = out else {
            panic!("{out:?}")
        };
        let p = parse_frame(&f).unwrap();
        assert_eq!((p.dst_mac, p.src_mac), (MAC, IFACE_MAC));
        assert_eq!(
            (p.src, p.dst),
            (
                SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 67),
                SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 68)
            )
        );
        assert_eq!(svc.stats.snapshot().offers, 1);
        let ev = svc.shared.events.for_host("cn1");
        assert_eq!(
            (ev[0].kind, ev[0].detail.as_str()),
            (EventKind::DhcpOffer, "10.0.0.5 via userspace")
        );
    }

    #[test]
    fn relayed_request_goes_back_by_udp() {
        let svc = service();
        let relay = Ipv4Addr::new(10, 9, 0, 1);
        let opts = [DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 5))];
        let out = svc.handle(
            &datagram(MessageType::Request, MAC, relay, &opts),
            &ingress(),
            Role::Dhcp,
        );
        let Some(Outgoing::Udp { to, payload }) = out else {
            panic!("{out:?}")
        };
        assert_eq!(to, SocketAddrV4::new(relay, 67));
        assert_eq!(
            wire::parse(&payload).unwrap().opts().msg_type(),
            Some(MessageType::Ack)
        );
    }

    #[test]
    fn counts_malformed_unknown_and_release() {
        let svc = service();
        assert_eq!(svc.handle(b"junk", &ingress(), Role::Dhcp), None);
        let unknown = Mac([2, 0, 0, 0, 0, 0x42]);
        for _ in 0..3 {
            assert_eq!(
                svc.handle(
                    &datagram(MessageType::Discover, unknown, Ipv4Addr::UNSPECIFIED, &[]),
                    &ingress(),
                    Role::Dhcp
                ),
                None
            );
        }
        let release = datagram(MessageType::Release, MAC, Ipv4Addr::UNSPECIFIED, &[]);
        assert_eq!(svc.handle(&release, &ingress(), Role::Dhcp), None);
        let s = svc.stats.snapshot();
        assert_eq!(
            (s.received, s.malformed, s.unknown, s.released, s.answered),
            (5, 1, 3, 1, 0)
        );
        let d = svc.discovered.list();
        assert_eq!(
            (d.len(), d[0].mac, d[0].count, d[0].interface.as_str()),
            (1, unknown, 3, "eth0")
        );
        assert_eq!(
            svc.shared.events.for_host("cn1")[0].kind,
            EventKind::DhcpRelease
        );
    }

    #[test]
    fn no_address_on_the_interface_means_no_answer() {
        let svc = service();
        let mut ing = ingress();
        ing.iface.addrs.clear();
        assert_eq!(
            svc.handle(
                &datagram(MessageType::Discover, MAC, Ipv4Addr::UNSPECIFIED, &[]),
                &ing,
                Role::Dhcp
            ),
            None
        );
        assert_eq!(svc.stats.snapshot().silent, 1);
    }
}
