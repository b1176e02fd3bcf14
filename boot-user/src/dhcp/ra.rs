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
//! Hand-written ICMPv6 because an RA is 24 fixed bytes and the kernel fills in the
//! checksum of raw ICMPv6 sockets (RFC 3542 §3.1); no crate of the workspace speaks NDP.
//! Answers go to all-nodes (ff02::1), so one RA answers every client soliciting at that
//! moment; they are paced to one per [`MIN_INTERVAL`] per interface (a solicitation
//! inside the interval is answered at its end, never dropped), far below RFC 4861's 3 s
//! between multicast RAs, which would add seconds to every boot in a storm.
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

use super::iface;
use super::stats::Stats;
use crate::inventory::Mac;

pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The RA (ICMPv6 message, checksum left 0 for the kernel): type 134, code 0, hop limit
/// unspecified, no flags, router lifetime 0, reachable/retransmit unspecified, option 1
/// (source link-layer address) = `mac`.
pub fn advertisement(mac: Mac) -> [u8; 24] {
    let mut ra = [0u8; 24];
    ra[0] = ROUTER_ADVERTISEMENT;
    ra[16] = 1; // option: source link-layer address
    ra[17] = 1; // length in units of 8 bytes
    ra[18..24].copy_from_slice(&mac.0);
    ra
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

/// A raw ICMPv6 socket receiving Router Solicitations on one interface.
pub struct RaSocket {
    socket: Socket,
    pub ifname: String,
    ifindex: u32,
    mac: Mac,
}

impl std::os::fd::AsRawFd for RaSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

impl RaSocket {
    /// Opens the responder socket of `ifname`: bound to the device, member of all-routers,
    /// hop limit 255 (RFC 4861 requires it on every NDP message).
    pub fn open(ifname: &str) -> io::Result<RaSocket> {
        let info = iface::by_name(ifname)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}"))
        })?;
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("RA responder on {ifname}: {what}: {e}"))
        };
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
            .map_err(|e| ctx("socket", e))?;
        s.bind_device(Some(ifname.as_bytes()))
            .map_err(|e| ctx("bind to device", e))?;
        s.join_multicast_v6(&ALL_ROUTERS, info.index)
            .map_err(|e| ctx("join ff02::2", e))?;
        s.set_multicast_hops_v6(255)
            .map_err(|e| ctx("hop limit", e))?;
        s.set_unicast_hops_v6(255)
            .map_err(|e| ctx("hop limit", e))?;
        s.set_multicast_if_v6(info.index)
            .map_err(|e| ctx("multicast interface", e))?;
        s.set_multicast_loop_v6(false)
            .map_err(|e| ctx("multicast loop", e))?;
        s.set_nonblocking(true)
            .map_err(|e| ctx("non-blocking", e))?;
        Ok(RaSocket {
            socket: s,
            ifname: ifname.to_string(),
            ifindex: info.index,
            mac: info.mac,
        })
    }

    fn send(&self) -> io::Result<()> {
        let to = SocketAddrV6::new(ALL_NODES, 0, 0, self.ifindex);
        self.socket
            .send_to(&advertisement(self.mac), &to.into())
            .map(drop)
    }
}

/// Answers solicitations until the task is dropped.
pub async fn serve(ra: RaSocket, stats: Arc<Stats>) -> io::Result<()> {
    // SAFETY: `ra` owns its socket, which stays open as long as the AsyncFd holds it.
    let fd = unsafe { AsyncFd::register_with_interest(ra, Interest::READABLE) }?;
    let mut pacer = Pacer::default();
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let due = pacer.due();
        tokio::select! {
            guard = fd.readable() => {
                let mut guard = guard?;
                while let Ok(res) = guard.try_io(|s| s.get_ref().socket.recv(&mut buf)) {
                    let n = match res {
                        Ok(n) => n,
                        Err(e) => { tracing::debug!("RA responder: recv: {e}"); break; }
                    };
                    // SAFETY: recv initialised the first n bytes.
                    let msg: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
                    if is_router_solicitation(msg) && pacer.solicited(Instant::now()) {
                        send(fd.get_ref(), &stats);
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
