//! The sockets of the DHCP service, opened by the caller before the service starts (in
//! the right network namespace, with the privileges needed): UDP on the DHCP and PXE
//! ports per served interface (or one for all, the ingress interface then coming from
//! `IP_PKTINFO`), one send-only `AF_PACKET` socket for replies to clients without an
//! address, and the router-advertisement responders. Without CAP_NET_RAW (a container
//! granted NET_ADMIN only, as ClusterFactory's chart does) there is no `AF_PACKET`
//! socket: those replies are broadcast over the UDP socket instead ([`send_broadcast`]),
//! which every DHCP client accepts (RFC 2131 §4.1).
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{self as nsock, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, Socket, Type};

use super::iface;
use super::ra::RaSocket;
use super::settings::SettingsError;
use crate::config::Config;

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
        let v4 = |key: &str, s: &str| {
            crate::config::check::ipv4_listen(s).map_err(|message| SettingsError {
                key: key.into(),
                message,
            })
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
    pub(crate) socket: UdpSocket,
    /// Set when bound to one interface.
    pub(crate) ifname: Option<String>,
}

impl UdpListener {
    /// Binds 0.0.0.0:`port` (on `ifname` only, if given) with `IP_PKTINFO`.
    pub fn open(ifname: Option<&str>, port: u16) -> io::Result<UdpListener> {
        let on = ifname.unwrap_or("all interfaces");
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("UDP port {port} on {on}: {what}: {e}"))
        };
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| ctx("socket", e))?;
        s.set_reuse_address(true)
            .map_err(|e| ctx("SO_REUSEADDR", e))?;
        s.set_broadcast(true).map_err(|e| ctx("SO_BROADCAST", e))?;
        if let Some(name) = ifname {
            s.bind_device(Some(name.as_bytes()))
                .map_err(|e| ctx("SO_BINDTODEVICE", e))?;
        }
        nsock::setsockopt(&s, sockopt::Ipv4PacketInfo, &true)
            .map_err(|e| ctx("IP_PKTINFO", e.into()))?;
        // Room for a storm: the default ~200 KB holds only a few hundred requests.
        let _ = s.set_recv_buffer_size(4 << 20);
        s.set_nonblocking(true)
            .map_err(|e| ctx("non-blocking", e))?;
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
            .map_err(|e| ctx("bind", e))?;
        Ok(UdpListener {
            socket: s.into(),
            ifname: ifname.map(String::from),
        })
    }

    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.port())
    }
}

/// An `AF_PACKET` socket that sends whole Ethernet frames. The one [`PacketSocket::open`]
/// makes only sends (protocol 0: it receives nothing); the RA responder's also receives
/// ([`super::ra::RaSocket`]).
pub struct PacketSocket {
    fd: OwnedFd,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
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
        Ok(PacketSocket {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// An `AF_PACKET` socket opened and set up elsewhere.
    pub(crate) fn from_fd(fd: OwnedFd) -> PacketSocket {
        PacketSocket { fd }
    }

    /// [`PacketSocket::open`], or `None` with a warning when raw sockets are not allowed
    /// (no CAP_NET_RAW).
    pub fn open_optional() -> io::Result<Option<PacketSocket>> {
        match PacketSocket::open() {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                tracing::warn!(
                    "{e} (no CAP_NET_RAW): DHCP replies to clients without an address are broadcast over UDP instead of sent to their MAC"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a whole Ethernet frame on interface `ifindex` without blocking.
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame shorter than an Ethernet header",
            ));
        }
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        // IPv6 for RAs, else IPv4 (DHCP replies, tagged or not).
        let proto = match u16::from_be_bytes([frame[12], frame[13]]) {
            p @ 0x86dd => p,
            _ => libc::ETH_P_IP as u16,
        };
        sa.sll_protocol = proto.to_be();
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
    /// `None` without CAP_NET_RAW (see the module docs).
    pub raw: Option<PacketSocket>,
    pub ra: Vec<RaSocket>,
}

impl Sockets {
    /// Opens the sockets `listen` asks for. An RA responder that cannot be opened is a
    /// warning, not an error.
    pub fn open(listen: &Listen) -> io::Result<Sockets> {
        let mut names = listen.interfaces.clone();
        if names.is_empty() && !listen.dhcp.ip().is_unspecified() {
            let want = *listen.dhcp.ip();
            let owner = iface::list()?
                .into_iter()
                .find(|i| i.addrs.iter().any(|a| a.addr() == want));
            let owner = owner.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("dhcp.listen: no interface has address {want}"),
                )
            })?;
            names.push(owner.name);
        }
        let per_iface = |port: u16| -> io::Result<Vec<UdpListener>> {
            if names.is_empty() {
                Ok(vec![UdpListener::open(None, port)?])
            } else {
                names
                    .iter()
                    .map(|n| UdpListener::open(Some(n), port))
                    .collect()
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
                // Ethernet interfaces only: loopback and L3 devices (tun, wireguard) have
                // no link-layer address to send an RA frame from.
                iface::list()?
                    .into_iter()
                    .filter(|i| i.name != "lo" && i.mac != crate::inventory::Mac::default())
                    .map(|i| i.name)
                    .collect()
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
        Ok(Sockets {
            dhcp,
            boot,
            raw: PacketSocket::open_optional()?,
            ra,
        })
    }
}

/// Sends the content of a reply `frame` (made for a [`PacketSocket`]) as a UDP broadcast
/// out of interface `ifindex`, from the frame's source address, to its destination port:
/// the way to reach a client without an address when raw sockets are not allowed.
/// `IP_PKTINFO` picks the interface, so it needs no privilege even on a socket bound to
/// all interfaces.
pub fn send_broadcast(s: &UdpSocket, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    let f = super::frame::parse_frame(frame)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let info = libc::in_pktinfo {
        ipi_ifindex: ifindex as i32,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(*f.src.ip()).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let to = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::BROADCAST, f.dst.port()));
    nsock::sendmsg(
        s.as_raw_fd(),
        &[io::IoSlice::new(f.payload)],
        &[nsock::ControlMessage::Ipv4PacketInfo(&info)],
        MsgFlags::MSG_DONTWAIT,
        Some(&to),
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// recvmsg with the IP_PKTINFO control message.
pub(crate) fn recv_pktinfo(
    s: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddrV4, Option<libc::in_pktinfo>)> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let msg = nsock::recvmsg::<SockaddrIn>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut info = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::Ipv4PacketInfo(p) = c {
            info = Some(p);
        }
    }
    let src = msg
        .address
        .map_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), |a| {
            SocketAddrV4::new(a.ip(), a.port())
        });
    Ok((msg.bytes, src, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_from_config() {
        let mut cfg = Config {
            interface: crate::config::Interfaces::Many(vec!["eth0".into(), "eth1".into()]),
            ..Default::default()
        };
        let l = Listen::from_config(&cfg).unwrap();
        assert_eq!(
            (l.interfaces.len(), l.dhcp.port(), l.boot_port),
            (2, 67, Some(4011))
        );
        cfg.dhcp.listen = "[::]:67".into();
        assert_eq!(Listen::from_config(&cfg).unwrap_err().key, "dhcp.listen");
    }
}
