//! Socket helpers of the TFTP edge: the request's destination address (IP_PKTINFO) when
//! the server port is bound to 0.0.0.0, so each transfer answers from the address the
//! client spoke to; the kernel's receive timestamp of each request (the time it waited in
//! the queue is a phase of the transfer's start); the route's MTU for large blksize asks;
//! a larger receive queue for bursts of requests.
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, SystemTime};

use nix::sys::socket::{self as nsock, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage};

use super::proto::{MAX_BLKSIZE, MIN_BLKSIZE, SAFE_BLKSIZE};

/// Asks for IP_PKTINFO on an IPv4 socket bound to the wildcard address; false when the
/// socket is bound to one address (that one is the reply address) or is IPv6.
pub fn want_destination(s: &UdpSocket) -> io::Result<bool> {
    let local = s.local_addr()?;
    if !(local.is_ipv4() && local.ip().is_unspecified()) {
        return Ok(false);
    }
    nsock::setsockopt(s, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
    Ok(true)
}

/// Asks the kernel to stamp each datagram with its arrival time (`SO_TIMESTAMPNS`).
pub fn want_timestamps(s: &UdpSocket) -> io::Result<()> {
    nsock::setsockopt(s, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// A datagram read by [`recv_timestamped`].
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub len: usize,
    pub src: SocketAddr,
    /// The local address it was sent to (with IP_PKTINFO).
    pub dst: Option<IpAddr>,
    /// How long it waited between its arrival and this read (with [`want_timestamps`]).
    pub queued: Option<Duration>,
}

/// Room for ~4,000 queued requests (a storm's RRQs arrive together); the kernel clamps
/// the size to `net.core.rmem_max` unless the process may force it.
pub fn grow_receive_queue(s: &UdpSocket) {
    const BYTES: usize = 4 << 20;
    if nsock::setsockopt(s, sockopt::RcvBufForce, &BYTES).is_err() {
        let _ = nsock::setsockopt(s, sockopt::RcvBuf, &BYTES);
    }
}

/// Non-blocking receive of one datagram with its source and, if `pktinfo`, the local
/// address it was sent to.
pub fn recv_with_destination(
    s: &impl AsRawFd,
    buf: &mut [u8],
    pktinfo: bool,
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let r = recv_timestamped(s, buf, pktinfo, false)?;
    Ok((r.len, r.src, r.dst))
}

/// [`recv_with_destination`], with the time the datagram waited when `stamped` (the
/// socket asked for timestamps).
pub fn recv_timestamped(
    s: &impl AsRawFd,
    buf: &mut [u8],
    pktinfo: bool,
    stamped: bool,
) -> io::Result<Received> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo, libc::timespec);
    let msg = nsock::recvmsg::<SockaddrStorage>(
        s.as_raw_fd(),
        &mut iov,
        (pktinfo || stamped).then_some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut dst = None;
    let mut queued = None;
    if pktinfo || stamped {
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmTimestampns(t) = c {
                let at = SystemTime::UNIX_EPOCH
                    + Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec().max(0) as u32);
                // A clock stepped back since the arrival reads as no wait.
                queued = Some(SystemTime::now().duration_since(at).unwrap_or_default());
            }
            if let ControlMessageOwned::Ipv4PacketInfo(p) = c {
                // The header's destination, unless the request was a broadcast: then
                // ipi_spec_dst, the local address the route answers from.
                let header = Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr));
                let spec = Ipv4Addr::from(u32::from_be(p.ipi_spec_dst.s_addr));
                let a = if header.is_broadcast() || header.is_multicast() {
                    spec
                } else {
                    header
                };
                dst = Some(IpAddr::V4(a));
            }
        }
    }
    let src = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        })
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    Ok(Received {
        len: msg.bytes,
        src,
        dst,
        queued,
    })
}

/// The largest blksize whose DATA fits the route to `peer` unfragmented (IP_MTU of a
/// probe socket connected to it), at least [`SAFE_BLKSIZE`]: the edge probes only
/// for asks above that.
pub fn route_blksize(local: IpAddr, peer: SocketAddr) -> u16 {
    let probe = || -> io::Result<u16> {
        let s = UdpSocket::bind(SocketAddr::new(local, 0))?;
        s.connect(peer)?;
        let (level, name, headers) = match peer {
            SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU, 20 + 8 + 4),
            SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU, 40 + 8 + 4),
        };
        let mut mtu: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the fd is open for the duration of the call, `mtu` and `len` are valid
        // for writes and `len` is the size of `mtu`.
        let r = unsafe {
            libc::getsockopt(
                s.as_fd().as_raw_fd(),
                level,
                name,
                (&mut mtu as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((i64::from(mtu) - headers).clamp(MIN_BLKSIZE.into(), MAX_BLKSIZE.into()) as u16)
    };
    probe().unwrap_or(SAFE_BLKSIZE).max(SAFE_BLKSIZE)
}
