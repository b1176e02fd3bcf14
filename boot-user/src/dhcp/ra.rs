//! IPv6 router advertisements that end iPXE's IPv6 autoconfiguration wait.
//!
//! iPXE configures IPv6 on every interface it opens and, with no router on the link,
//! retransmits Router Solicitations for ~13 s before it fetches anything (peers.md §6:
//! a BIOS PXE boot takes 22 s instead of 7 s). iPXE ends autoconfiguration on the first
//! solicited RA that has neither the M nor the O flag (`ipv6conf_rx_router_advertisement`
//! in iPXE's ndp.c), so xboot answers every solicitation on the served interfaces with a
//! minimal RA: router lifetime 0 (nobody uses xboot as a default router), no M/O flags, no
//! prefix, only the source link-layer address option.
//!
//! Solicitations are read and advertisements sent as whole Ethernet frames on an
//! `AF_PACKET` socket (as the DHCP replies to clients without an address are), not on a
//! raw ICMPv6 socket: that works whatever the interface's IPv6 setting, and boot servers
//! often run with IPv6 disabled (`disable_ipv6=1`), where the kernel drops every IPv6
//! frame before a socket sees it and an ICMPv6 socket cannot send. The source address is
//! the link-local address derived from the interface's MAC (modified EUI-64, RFC 4291
//! §2.5.1), the hop limit 255 (RFC 4861 §6.1.2: receivers drop anything else).
//!
//! Hand-written IPv6/ICMPv6 framing because an RA is 24 fixed bytes behind a 40-byte
//! header and one checksum (`frame::checksum`), and no crate of the workspace speaks
//! NDP. Answers go to all-nodes (ff02::1), so one RA answers every client soliciting at
//! that moment; they are paced to one per [`MIN_INTERVAL`] per interface (a solicitation
//! inside the interval is answered at its end, never dropped), far below RFC 4861's 3 s
//! between multicast RAs, which would add seconds to every boot in a storm.
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

use super::frame::checksum;
use super::iface;
use super::sockets::PacketSocket;
use super::stats::Stats;
use crate::inventory::Mac;

pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Ethernet address of all-nodes and all-routers (RFC 2464 §7: 33:33 + the low 32 bits).
const ALL_NODES_MAC: Mac = Mac([0x33, 0x33, 0, 0, 0, 1]);
const ALL_ROUTERS_MAC: Mac = Mac([0x33, 0x33, 0, 0, 0, 2]);
const ETH_P_IPV6: u16 = 0x86dd;
const NEXT_ICMPV6: u8 = 58;
/// RFC 4861 §6.1: NDP messages are sent, and accepted only, with hop limit 255.
pub const NDP_HOP_LIMIT: u8 = 255;
/// Ethernet + IPv6 header.
const HEADERS: usize = 14 + 40;

/// The RA (ICMPv6 message, checksum field 0): type 134, code 0, hop limit unspecified, no
/// flags, router lifetime 0, reachable/retransmit unspecified, option 1 (source
/// link-layer address) = `mac`.
pub fn advertisement(mac: Mac) -> [u8; 24] {
    let mut ra = [0u8; 24];
    ra[0] = ROUTER_ADVERTISEMENT;
    ra[16] = 1; // option: source link-layer address
    ra[17] = 1; // length in units of 8 bytes
    ra[18..24].copy_from_slice(&mac.0);
    ra
}

/// The link-local address of an interface with this MAC (modified EUI-64).
pub fn link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8..16].copy_from_slice(&[m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    Ipv6Addr::from(a)
}

/// ICMPv6 checksum (RFC 4443 §2.3) of `msg` (its checksum field 0) between `src` and `dst`.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let len = (msg.len() as u32).to_be_bytes();
    checksum(&[
        &src.octets(),
        &dst.octets(),
        &len,
        &[0, 0, 0, NEXT_ICMPV6],
        msg,
    ])
}

/// The whole frame of the RA sent from an interface with MAC `mac`: Ethernet to
/// 33:33:00:00:00:01, IPv6 from the MAC's link-local address to ff02::1 with hop limit
/// 255, the [`advertisement`] with its checksum.
pub fn advertisement_frame(mac: Mac) -> Vec<u8> {
    let src = link_local(mac);
    let mut ra = advertisement(mac);
    let sum = icmpv6_checksum(src, ALL_NODES, &ra);
    ra[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(HEADERS + ra.len());
    f.extend_from_slice(&ALL_NODES_MAC.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow label 0
    f.extend_from_slice(&(ra.len() as u16).to_be_bytes());
    f.extend_from_slice(&[NEXT_ICMPV6, NDP_HOP_LIMIT]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&ra);
    f
}

/// A frame carries a valid Router Solicitation: IPv6 without extension headers, hop limit
/// 255, ICMPv6 with a correct checksum, and the checks of [`is_router_solicitation`].
pub fn is_solicitation_frame(f: &[u8]) -> bool {
    if f.len() < HEADERS + 8 || f[12..14] != ETH_P_IPV6.to_be_bytes() {
        return false;
    }
    let ip = &f[14..];
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if ip[0] >> 4 != 6 || ip[6] != NEXT_ICMPV6 || ip[7] != NDP_HOP_LIMIT {
        return false;
    }
    let Some(msg) = ip.get(40..40 + payload_len) else {
        return false;
    };
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&ip[at..at + 16]);
        Ipv6Addr::from(a)
    };
    // Summing the message with its checksum field in gives 0 when the checksum is right.
    icmpv6_checksum(addr(8), addr(24), msg) == 0 && is_router_solicitation(msg)
}

/// RFC 4861 §6.1.1 checks that can be made on the ICMPv6 message alone: type 133, code 0,
/// at least 8 bytes, options of non-zero length that fit.
pub fn is_router_solicitation(icmp: &[u8]) -> bool {
    if icmp.len() < 8 || icmp[0] != ROUTER_SOLICITATION || icmp[1] != 0 {
        return false;
    }
    let mut opts = &icmp[8..];
    while opts.len() >= 2 {
        let len = opts[1] as usize * 8;
        if len == 0 || len > opts.len() {
            return false;
        }
        opts = &opts[len..];
    }
    opts.is_empty()
}

/// When to answer, given solicitations and the pace limit (pure: time is an input).
#[derive(Debug, Default)]
pub struct Pacer {
    last_sent: Option<Instant>,
    pending: bool,
}

impl Pacer {
    /// A solicitation arrived at `now`: true = answer now; false = answer at [`Self::due`].
    pub fn solicited(&mut self, now: Instant) -> bool {
        if self
            .last_sent
            .is_none_or(|t| now.duration_since(t) >= MIN_INTERVAL)
        {
            self.last_sent = Some(now);
            self.pending = false;
            true
        } else {
            self.pending = true;
            false
        }
    }

    /// When a deferred answer is due, if one is pending.
    pub fn due(&self) -> Option<Instant> {
        self.pending.then(|| {
            self.last_sent
                .map_or_else(Instant::now, |t| t + MIN_INTERVAL)
        })
    }

    pub fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.pending = false;
    }
}

/// An `AF_PACKET` socket on one interface that receives the IPv6 frames holding ICMPv6
/// Router Solicitations (a socket filter drops the rest in the kernel) and sends RAs.
pub struct RaSocket {
    packet: PacketSocket,
    pub ifname: String,
    ifindex: u32,
    /// The interface's RA, built once.
    frame: Vec<u8>,
}

impl AsRawFd for RaSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.packet.as_raw_fd()
    }
}

/// The classic BPF filter of the responder socket: IPv6 (ethertype at 12), next header
/// ICMPv6 (byte 20), ICMPv6 type 133 (byte 54), else the frame is not queued. The frame
/// is checked in full by [`is_solicitation_frame`] afterwards.
fn solicitation_filter() -> [libc::sock_filter; 8] {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let ld_h = libc::BPF_LD | libc::BPF_H | libc::BPF_ABS;
    let ld_b = libc::BPF_LD | libc::BPF_B | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    // A false comparison jumps to the last instruction (drop): jf counts the
    // instructions skipped.
    [
        op(ld_h, 0, 0, 12),
        op(jeq, 0, 5, ETH_P_IPV6 as u32),
        op(ld_b, 0, 0, 20),
        op(jeq, 0, 3, NEXT_ICMPV6 as u32),
        op(ld_b, 0, 0, HEADERS as u32),
        op(jeq, 0, 1, ROUTER_SOLICITATION as u32),
        op(ret, 0, 0, 0xffff),
        op(ret, 0, 0, 0),
    ]
}

impl RaSocket {
    /// Opens the responder socket of `ifname`: `AF_PACKET` bound to the interface for
    /// IPv6 frames, the solicitation filter attached, and the all-routers group's
    /// Ethernet address added to the interface's multicast filter (a NIC drops multicast
    /// frames it was not told to accept). Needs CAP_NET_RAW, not IPv6.
    pub fn open(ifname: &str) -> io::Result<RaSocket> {
        let info = iface::by_name(ifname)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}"))
        })?;
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("RA responder on {ifname}: {what}: {e}"))
        };
        if info.mac == Mac::default() {
            return Err(ctx(
                "interface",
                io::Error::new(io::ErrorKind::Unsupported, "no Ethernet address"),
            ));
        }
        let check = |what: &str, rc: libc::c_int| {
            if rc < 0 {
                Err(ctx(what, io::Error::last_os_error()))
            } else {
                Ok(())
            }
        };
        // Protocol 0 until the filter is on, so no frame is queued unfiltered; bind
        // then sets the protocol.
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        check("AF_PACKET socket", fd)?;
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let filter = solicitation_filter();
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: prog points at `filter`, alive for the call; the kernel copies it.
        check("socket filter", unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as u32,
            )
        })?;
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ETH_P_IPV6.to_be();
        sa.sll_ifindex = info.index as i32;
        // SAFETY: sa is a valid sockaddr_ll of the given length.
        check("bind", unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        // SAFETY: packet_mreq is plain data; zeroed is a valid value.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = info.index as i32;
        mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&ALL_ROUTERS_MAC.0);
        // SAFETY: mreq is valid for the given length.
        check("join 33:33:00:00:00:02", unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as u32,
            )
        })?;
        Ok(RaSocket {
            packet: PacketSocket::from_fd(fd),
            ifname: ifname.to_string(),
            ifindex: info.index,
            frame: advertisement_frame(info.mac),
        })
    }

    fn send(&self) -> io::Result<()> {
        self.packet.send(self.ifindex, &self.frame)
    }

    /// Reads one queued frame: `Some(true)` for a Router Solicitation received from the
    /// link (not one of the socket's own sent frames), `None` when none is queued.
    fn recv_solicitation(&self, buf: &mut [u8]) -> io::Result<Option<bool>> {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the given lengths.
        let n = unsafe {
            libc::recvfrom(
                self.packet.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        let incoming = from.sll_pkttype != libc::PACKET_OUTGOING;
        Ok(Some(incoming && is_solicitation_frame(&buf[..n as usize])))
    }
}

/// Answers solicitations until the task is dropped.
pub async fn serve(ra: RaSocket, stats: Arc<Stats>) -> io::Result<()> {
    // SAFETY: `ra` owns its socket, which stays open as long as the AsyncFd holds it.
    let fd = unsafe { AsyncFd::register_with_interest(ra, Interest::READABLE) }?;
    let mut pacer = Pacer::default();
    let mut buf = vec![0u8; 2048];
    loop {
        let due = pacer.due();
        tokio::select! {
            guard = fd.readable() => {
                let mut guard = guard?;
                loop {
                    match fd.get_ref().recv_solicitation(&mut buf) {
                        Ok(Some(true)) => {
                            if pacer.solicited(Instant::now()) {
                                send(fd.get_ref(), &stats);
                            }
                        }
                        Ok(Some(false)) => {}
                        Ok(None) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => {
                            tracing::debug!("RA responder on {}: recv: {e}", fd.get_ref().ifname);
                            guard.clear_ready();
                            break;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                pacer.sent(Instant::now());
                send(fd.get_ref(), &stats);
            }
        }
    }
}

fn send(ra: &RaSocket, stats: &Stats) {
    match ra.send() {
        Ok(()) => {
            stats.router_advertisements.fetch_add(1, Relaxed);
            tracing::debug!("sent a router advertisement on {}", ra.ifname);
        }
        Err(e) => {
            stats.send_errors.fetch_add(1, Relaxed);
            tracing::warn!("cannot send a router advertisement on {}: {e}", ra.ifname);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_layout() {
        let ra = advertisement(Mac([2, 0, 0, 0, 0, 0xaa]));
        assert_eq!(ra[0], 134);
        assert_eq!(ra[1], 0, "code");
        assert_eq!(ra[5] & 0xc0, 0, "no M/O flags");
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(&ra[16..24], &[1, 1, 2, 0, 0, 0, 0, 0xaa]);
    }

    /// The RA frame of 52:54:00:12:34:56, field by field; the checksum computed
    /// independently (Python, RFC 4443's pseudo-header).
    #[test]
    fn advertisement_frame_layout() {
        let mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let f = advertisement_frame(mac);
        let src: Ipv6Addr = "fe80::5054:ff:fe12:3456".parse().unwrap();
        assert_eq!(link_local(mac), src);
        let rows: [(&str, std::ops::Range<usize>, Vec<u8>); 15] = [
            ("destination MAC", 0..6, vec![0x33, 0x33, 0, 0, 0, 1]),
            ("source MAC", 6..12, mac.0.to_vec()),
            ("ethertype", 12..14, vec![0x86, 0xdd]),
            ("version, class, flow", 14..18, vec![0x60, 0, 0, 0]),
            ("payload length", 18..20, vec![0, 24]),
            ("next header, hop limit", 20..22, vec![58, 255]),
            ("source address", 22..38, src.octets().to_vec()),
            ("destination address", 38..54, ALL_NODES.octets().to_vec()),
            ("type, code", 54..56, vec![134, 0]),
            ("checksum", 56..58, vec![0x70, 0xae]),
            ("hop limit unspecified, no M/O flags", 58..60, vec![0, 0]),
            ("router lifetime 0", 60..62, vec![0, 0]),
            ("reachable, retransmit unspecified", 62..70, vec![0; 8]),
            ("source link-layer address option", 70..72, vec![1, 1]),
            ("its MAC", 72..78, mac.0.to_vec()),
        ];
        for (what, at, want) in rows {
            assert_eq!(&f[at.clone()], &want[..], "{what} ({at:?})");
        }
        assert_eq!(f.len(), 14 + 40 + 24);
        assert_eq!(icmpv6_checksum(src, ALL_NODES, &f[54..]), 0);
    }

    /// A Router Solicitation as a client sends it (fe80::ff:fe00:1 to ff02::2, hop limit
    /// 255, source link-layer address option; checksum computed independently), and what
    /// breaks it.
    #[test]
    fn solicitation_frame_rows() {
        let client = Mac([2, 0, 0, 0, 0, 1]);
        let mut rs = vec![0x33, 0x33, 0, 0, 0, 2];
        rs.extend_from_slice(&client.0);
        rs.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 16, 58, 255]);
        rs.extend_from_slice(&link_local(client).octets());
        rs.extend_from_slice(&"ff02::2".parse::<Ipv6Addr>().unwrap().octets());
        rs.extend_from_slice(&[133, 0, 0x7b, 0x2c, 0, 0, 0, 0, 1, 1]);
        rs.extend_from_slice(&client.0);
        let change = |at: usize, v: u8| {
            let mut f = rs.clone();
            f[at] = v;
            f
        };
        let rows: [(&str, Vec<u8>, bool); 9] = [
            ("valid", rs.clone(), true),
            ("with Ethernet padding", [&rs[..], &[0; 6]].concat(), true),
            ("IPv4 ethertype", change(13, 0x00), false),
            ("hop limit 64", change(21, 64), false),
            ("UDP next header", change(20, 17), false),
            ("bad checksum", change(57, 0x2d), false),
            ("an RA", change(54, 134), false),
            ("payload length past the frame", change(19, 40), false),
            ("truncated", rs[..60].to_vec(), false),
        ];
        for (what, f, want) in rows {
            assert_eq!(is_solicitation_frame(&f), want, "{what}");
        }
        // Our own RA is not a solicitation.
        assert!(!is_solicitation_frame(&advertisement_frame(client)));
        // Hostile input: no truncation is taken for a solicitation, and no changed byte
        // makes the parser panic.
        for n in 0..rs.len() {
            assert!(!is_solicitation_frame(&rs[..n]), "truncated to {n}");
        }
        for at in 0..rs.len() {
            for v in [0u8, 0x7f, 0xff] {
                let _ = is_solicitation_frame(&change(at, v));
            }
        }
    }

    /// The socket filter, run by a small interpreter of the three instruction kinds it
    /// uses: it keeps solicitations and drops other IPv6 and ICMPv6 frames.
    #[test]
    fn socket_filter_keeps_only_solicitations() {
        let run = |f: &[u8]| -> u32 {
            let prog = solicitation_filter();
            let (mut pc, mut acc) = (0usize, 0u32);
            loop {
                let i = prog[pc];
                let code = i.code as u32;
                if code == libc::BPF_RET | libc::BPF_K {
                    return i.k;
                } else if code == libc::BPF_LD | libc::BPF_H | libc::BPF_ABS {
                    let k = i.k as usize;
                    acc = u16::from_be_bytes([f[k], f[k + 1]]) as u32;
                } else if code == libc::BPF_LD | libc::BPF_B | libc::BPF_ABS {
                    acc = f[i.k as usize] as u32;
                } else {
                    assert_eq!(code, libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K);
                    pc += if acc == i.k { i.jt } else { i.jf } as usize;
                }
                pc += 1;
            }
        };
        let mut rs = advertisement_frame(Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(run(&rs), 0, "an RA is dropped");
        rs[54] = ROUTER_SOLICITATION;
        assert_ne!(run(&rs), 0, "a solicitation is kept");
        rs[20] = 17;
        assert_eq!(run(&rs), 0, "not ICMPv6");
        rs[12] = 8;
        assert_eq!(run(&rs), 0, "not IPv6");
    }

    #[test]
    fn solicitation_rows() {
        let rows: [(&[u8], bool); 7] = [
            (&[133, 0, 0, 0, 0, 0, 0, 0], true),
            (&[133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1], true),
            (&[133, 1, 0, 0, 0, 0, 0, 0], false),
            (&[134, 0, 0, 0, 0, 0, 0, 0], false),
            (&[133, 0, 0, 0], false),
            (&[133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 1], false),
            (&[133, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 0, 0, 0, 0, 1], false),
        ];
        for (msg, want) in rows {
            assert_eq!(is_router_solicitation(msg), want, "{msg:?}");
        }
    }

    #[test]
    fn pacer_defers_never_drops() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        assert!(p.solicited(t0));
        assert_eq!(p.due(), None);
        assert!(!p.solicited(t0 + Duration::from_millis(10)));
        assert!(!p.solicited(t0 + Duration::from_millis(20)));
        assert_eq!(
            p.due(),
            Some(t0 + MIN_INTERVAL),
            "two deferred solicitations, one answer"
        );
        p.sent(t0 + MIN_INTERVAL);
        assert_eq!(p.due(), None);
        assert!(p.solicited(t0 + MIN_INTERVAL * 2));
    }
}
