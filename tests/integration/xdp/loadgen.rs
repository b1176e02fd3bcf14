//! A DHCP load generator of our own for the benchmark: complete DORA exchanges for many
//! MACs from raw frames in a namespace, batched with sendmmsg/recvmmsg so the generator
//! is not what limits the figure (perfdhcp, one datagram per syscall, tops out far
//! below what the XDP path answers). Open loop: DISCOVERs at a fixed rate; every OFFER
//! is answered with a REQUEST at once; a DISCOVER whose ACK does not come within the
//! drain time counts as dropped. Requests set the broadcast flag, so every server's
//! replies reach the client's packet socket the same way.
//!
//! Kept cheap, since on a small machine it shares the cores with the server: each
//! client's DISCOVER and REQUEST are built once and only the xid is patched per send
//! (with an incremental UDP checksum update); the send sockets receive nothing, and the
//! receive socket gets only incoming UDP to port 68 (a socket filter, outgoing frames
//! ignored); batch buffers are reused, nothing is allocated per frame.
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use xboot::dhcp::frame::udp_frame;
use xboot::inventory::Mac;

use crate::netns::Netns;

/// One host of the load: its MAC and the address it should get.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// What one load step measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadResult {
    pub target_rate: u64,
    pub seconds: f64,
    pub discovers: u64,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    /// OFFERs whose address or server id is not the client's inventory address and
    /// the server: errors, not answered.
    pub wrong_offers: u64,
    /// DISCOVERs actually sent per second (below the target: the generator's limit).
    pub send_rate: f64,
    /// Completed exchanges per second.
    pub dora_per_sec: f64,
    pub loss_pct: f64,
    /// DORA round trip (DISCOVER sent -> ACK read by the generator), which includes the
    /// generator's own wake-up between OFFER and REQUEST.
    pub p50_us: u64,
    pub p99_us: u64,
    /// The server's turnaround, as perfdhcp reports it (discover-offer plus
    /// request-ack delay): each from just before the request's send to the kernel's
    /// receive timestamp of the reply (SO_TIMESTAMPNS), so the generator's own wake-ups
    /// (a client's, on another machine in a real fleet) are left out.
    pub turn_p50_us: u64,
    pub turn_p99_us: u64,
    /// ACKs the server reports having sent during the step (None: it cannot tell):
    /// tells server losses from losses in transit or in the generator.
    pub server_acks: Option<u64>,
    /// CPU time of the server's own threads (or process) during the step, per completed
    /// exchange, in ns (None: not measured).
    pub server_cpu_ns_per_dora: Option<f64>,
    /// The XDP program's mean run time per packet during the step (kernel BPF run-time
    /// statistics), and the packets it ran on (None: no XDP program).
    pub xdp_ns_per_packet: Option<f64>,
    pub xdp_packets: Option<u64>,
    /// Which generator sent: "userspace", "kernel", or the userspace one standing in
    /// for a kernel that refuses live frames.
    pub generator: &'static str,
}

const BATCH: usize = 64;
const XID_BASE: u32 = 0x4000_0000;
/// The request frames: Ethernet (14), IPv4 without options (20), UDP (8), a 300-byte
/// payload.
const FRAME_LEN: usize = boot_common::bench::FRAME_LEN;
const UDP_CSUM: usize = boot_common::bench::UDP_CSUM;
const XID_AT: usize = boot_common::bench::XID;
// Not in the libc crate for every target.
const SO_ATTACH_FILTER: libc::c_int = 26;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

fn ifindex(ifname: &str) -> i32 {
    nix::net::if_::if_nametoindex(ifname).unwrap() as i32
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: &T) -> libc::c_int {
    // SAFETY: v is a valid T for the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as u32,
        )
    }
}

/// An AF_PACKET socket bound to `ifname` for `proto` (host order; 0: receives nothing).
fn packet_socket(ifname: &str, proto: u16) -> OwnedFd {
    // SAFETY: plain socket calls with valid, initialised arguments.
    unsafe {
        // Protocol 0 at creation: nothing is delivered until bind names one.
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto.to_be();
        sll.sll_ifindex = ifindex(ifname);
        if proto != 0 {
            receive_options(&fd);
        }
        let r = libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of_val(&sll) as u32,
        );
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 64 << 20;
        let opt = if proto != 0 {
            libc::SO_RCVBUFFORCE
        } else {
            libc::SO_SNDBUFFORCE
        };
        setsockopt(&fd, libc::SOL_SOCKET, opt, &size);
        fd
    }
}

/// The receive socket's filter (before bind, so nothing unfiltered is queued): incoming
/// only, IPv4 UDP to port 68 only (as `tcpdump -dd 'ip and udp dst port 68'`), and a
/// 20 ms receive timeout so the loop sees the stop flag.
fn receive_options(fd: &OwnedFd) {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let mut filter = [
        op(0x28, 0, 0, 12),     // ldh [12]: ethertype
        op(0x15, 0, 8, 0x800),  // IPv4, else drop
        op(0x30, 0, 0, 23),     // ldb [23]: IP protocol
        op(0x15, 0, 6, 17),     // UDP, else drop
        op(0x28, 0, 0, 20),     // ldh [20]: flags and fragment offset
        op(0x45, 4, 0, 0x1fff), // a later fragment: drop
        op(0xb1, 0, 0, 14),     // x = IP header length
        op(0x48, 0, 0, 16),     // ldh [x + 16]: UDP destination port
        op(0x15, 0, 1, 68),     // 68, else drop
        op(0x06, 0, 0, 0xffff), // accept
        op(0x06, 0, 0, 0),      // drop
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    let on: libc::c_int = 1;
    let r = setsockopt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on);
    assert_eq!(r, 0, "SO_TIMESTAMPNS: {}", std::io::Error::last_os_error());
    let r = setsockopt(fd, libc::SOL_SOCKET, SO_ATTACH_FILTER, &prog);
    assert_eq!(
        r,
        0,
        "SO_ATTACH_FILTER: {}",
        std::io::Error::last_os_error()
    );
    let one: libc::c_int = 1;
    let r = setsockopt(fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &one);
    assert_eq!(
        r,
        0,
        "PACKET_IGNORE_OUTGOING: {}",
        std::io::Error::last_os_error()
    );
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 20_000,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv);
}

/// A request payload as a plain OS client (udhcpc) sends it, broadcast flag set.
fn payload(mac: Mac, xid: u32, request: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[10] = 0x80;
    b[28..34].copy_from_slice(&mac.0);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, if request.is_some() { 3 } else { 1 }]);
    b.extend_from_slice(&[61, 7, 1]);
    b.extend_from_slice(&mac.0);
    b.extend_from_slice(&[57, 2, 2, 64, 55, 7, 1, 3, 6, 12, 15, 28, 42]);
    if let Some((ip, server)) = request {
        b.extend_from_slice(&[50, 4]);
        b.extend_from_slice(&ip.octets());
        b.extend_from_slice(&[54, 4]);
        b.extend_from_slice(&server.octets());
    }
    b.push(255);
    b.resize(300, 0);
    b
}

/// A client's DISCOVER (or, with its address and the server, REQUEST) frame.
pub fn frame(mac: Mac, xid: u32, request: Option<(Ipv4Addr, Ipv4Addr)>) -> [u8; FRAME_LEN] {
    udp_frame(
        &payload(mac, xid, request),
        mac,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        Mac([0xff; 6]),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        None,
    )
    .try_into()
    .expect("a request frame is FRAME_LEN bytes")
}

/// A client's two requests, built once with xid 0.
struct Templates {
    discover: [u8; FRAME_LEN],
    request: [u8; FRAME_LEN],
}

fn templates(clients: &[Client], server: Ipv4Addr) -> Vec<Templates> {
    clients
        .iter()
        .map(|c| Templates {
            discover: frame(c.mac, 0, None),
            request: frame(c.mac, 0, Some((c.ip, server))),
        })
        .collect()
}

/// An Internet checksum updated for 16-bit words `old` replaced by `new` (RFC 1624,
/// eqn. 3); a result of 0 is sent as 0xffff, as UDP requires.
fn checksum_update(hc: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut sum = !hc as u32;
    for &m in old {
        sum += !m as u32;
    }
    for &m in new {
        sum += m as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
    }
}

/// Copies template `t` (xid 0) into `out` with `xid`, its UDP checksum updated.
fn stamp(t: &[u8; FRAME_LEN], xid: u32, out: &mut [u8; FRAME_LEN]) {
    out.copy_from_slice(t);
    out[XID_AT..XID_AT + 4].copy_from_slice(&xid.to_be_bytes());
    let hc = u16::from_be_bytes([t[UDP_CSUM], t[UDP_CSUM + 1]]);
    let c = checksum_update(hc, &[0, 0], &[(xid >> 16) as u16, xid as u16]);
    out[UDP_CSUM..UDP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
}

/// Frames to send and their sendmmsg headers, allocated once.
struct TxBatch {
    frames: Box<[[u8; FRAME_LEN]]>,
    _iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    len: usize,
}

impl TxBatch {
    fn new() -> TxBatch {
        let mut frames = vec![[0u8; FRAME_LEN]; BATCH].into_boxed_slice();
        let mut iov: Vec<libc::iovec> = frames
            .iter_mut()
            .map(|f| libc::iovec {
                iov_base: f.as_mut_ptr() as *mut _,
                iov_len: FRAME_LEN,
            })
            .collect();
        let msgs = mmsghdrs(&mut iov);
        // The headers point into frames' and iov's heap buffers, which never move.
        TxBatch {
            frames,
            _iov: iov,
            msgs,
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == BATCH
    }

    fn push(&mut self, t: &[u8; FRAME_LEN], xid: u32) {
        stamp(t, xid, &mut self.frames[self.len]);
        self.len += 1;
    }

    /// Sends what was pushed (with as few syscalls as possible) and empties the batch.
    fn flush(&mut self, fd: &OwnedFd) {
        let mut at = 0;
        while at < self.len {
            // SAFETY: msgs[at..len] are valid headers pointing at live buffers.
            let n = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.msgs[at..].as_mut_ptr(),
                    (self.len - at) as u32,
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            at += n as usize;
        }
        self.len = 0;
    }
}

/// One mmsghdr per iovec, each pointing at it.
fn mmsghdrs(iov: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iov.iter_mut()
        .map(|v| {
            // SAFETY: a zeroed mmsghdr is valid.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect()
}

/// Receive buffers and their recvmmsg headers, allocated once.
struct RxBatch {
    bufs: Box<[[u8; 1536]]>,
    /// Control buffers for the receive timestamps (u64 for alignment).
    ctrl: Box<[[u64; 8]]>,
    _iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl RxBatch {
    fn new() -> RxBatch {
        let mut bufs = vec![[0u8; 1536]; BATCH].into_boxed_slice();
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut _,
                iov_len: b.len(),
            })
            .collect();
        let mut ctrl = vec![[0u64; 8]; BATCH].into_boxed_slice();
        let mut msgs = mmsghdrs(&mut iov);
        for (m, c) in msgs.iter_mut().zip(ctrl.iter_mut()) {
            m.msg_hdr.msg_control = c.as_mut_ptr() as *mut _;
            m.msg_hdr.msg_controllen = std::mem::size_of_val(c);
        }
        RxBatch {
            bufs,
            ctrl,
            _iov: iov,
            msgs,
        }
    }

    /// Receives up to BATCH frames (waiting at most the socket's timeout for the first);
    /// returns how many.
    fn recv(&mut self, fd: &OwnedFd) -> usize {
        // SAFETY: msgs is valid for its length and points at live buffers.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    fn frame(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.msgs[i].msg_len as usize]
    }

    /// The kernel's receive time of frame `i` (CLOCK_REALTIME, ns), if it came with one.
    fn stamp_ns(&mut self, i: usize) -> Option<u64> {
        let h = &mut self.msgs[i].msg_hdr;
        // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG macros
        // walk it within those bounds.
        let r = unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            let mut found = None;
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    found = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
            found
        };
        // recvmmsg shrinks msg_controllen to what it wrote: restore it for the next call.
        h.msg_controllen = std::mem::size_of_val(&self.ctrl[i]);
        r
    }
}

/// CLOCK_REALTIME now, in ns (the clock of the receive timestamps).
fn realtime_ns() -> u64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// (xid, message type, yiaddr, server id) of a DHCP reply frame to port 68, if it is one.
fn reply_of(f: &[u8]) -> Option<(u32, u8, Ipv4Addr, Option<Ipv4Addr>)> {
    if f.len() < 42 + 240 || f[12..14] != [8, 0] || f[23] != 17 || f[36..38] != [0, 68] {
        return None;
    }
    let p = &f[14 + (f[14] & 0xf) as usize * 4 + 8..];
    if p.len() < 241 || p[0] != 2 {
        return None;
    }
    let xid = u32::from_be_bytes(p[4..8].try_into().ok()?);
    let yiaddr = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let (mut mt, mut sid, mut i) = (0, None, 240);
    while i + 1 < p.len() && p[i] != 255 {
        if p[i] == 0 {
            i += 1;
            continue;
        }
        let len = p[i + 1] as usize;
        match (p[i], p.get(i + 2..i + 2 + len)) {
            (53, Some(d)) if len == 1 => mt = d[0],
            (54, Some(d)) if len == 4 => sid = Some(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
            _ => {}
        }
        i += 2 + len;
    }
    Some((xid, mt, yiaddr, sid))
}

/// How the generator's threads are scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Normal priority: for the rate sweep (two busy real-time threads on 2 cores would
    /// starve a userspace server and the figure would be the generator's doing).
    Normal,
    /// SCHED_FIFO: for latency runs. The clients of a real fleet are other machines, so
    /// their own wake-up delays on a loaded CPU are not the server's latency; with the
    /// generator real-time, a delay measured is the server's (or the kernel's) alone.
    Realtime,
}

impl Clock {
    /// Sets the calling thread's scheduling.
    pub fn apply(self) {
        if self == Clock::Realtime {
            let p = libc::sched_param { sched_priority: 10 };
            // SAFETY: sets the calling thread's policy; p is a valid sched_param.
            let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) };
            assert_eq!(r, 0, "SCHED_FIFO: {}", std::io::Error::last_os_error());
        }
    }
}

fn enter(ns: &Netns) {
    let f = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// Runs DORA exchanges at `rate` DISCOVERs/s for `secs` from `cli`'s `c0`, waiting
/// `drain` for the last answers. Client `i % clients.len()` sends exchange `i`, and
/// requests its inventory address from `server`.
pub fn run(
    cli: &Netns,
    clients: &[Client],
    server: Ipv4Addr,
    rate: u64,
    secs: f64,
    drain: Duration,
    clock: Clock,
) -> LoadResult {
    let total = (rate as f64 * secs) as usize;
    let tpl = templates(clients, server);
    // Per exchange, all CLOCK_REALTIME ns (the clock of the receive stamps; 0: not
    // seen): the DISCOVER's send, the OFFER's receive stamp, the REQUEST's send, the
    // ACK's receive stamp, and when the generator read the ACK.
    let zeros = || (0..total).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
    let (d_sent, o_rx, r_sent, a_rx, done) = (zeros(), zeros(), zeros(), zeros(), zeros());
    let (offers, naks, wrong) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let mut elapsed_send = Duration::ZERO;
    std::thread::scope(|s| {
        let rx = s.spawn(|| {
            enter(cli);
            clock.apply();
            let (rxs, txs) = (
                packet_socket("c0", libc::ETH_P_IP as u16),
                packet_socket("c0", 0),
            );
            let (mut rxb, mut requests) = (RxBatch::new(), TxBatch::new());
            let mut pushed = Vec::with_capacity(BATCH);
            while !stop.load(Ordering::Relaxed) {
                for i in 0..rxb.recv(&rxs) {
                    let stamp = rxb.stamp_ns(i).unwrap_or(0);
                    let Some((xid, mt, yiaddr, sid)) = reply_of(rxb.frame(i)) else {
                        continue;
                    };
                    let Some(seq) = xid
                        .checked_sub(XID_BASE)
                        .map(|s| s as usize)
                        .filter(|s| *s < total)
                    else {
                        continue;
                    };
                    let c = seq % clients.len();
                    match mt {
                        2 => {
                            offers.fetch_add(1, Ordering::Relaxed);
                            if yiaddr != clients[c].ip || sid.is_some_and(|s| s != server) {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            } else if !requests.is_full() {
                                let _ = o_rx[seq].compare_exchange(
                                    0,
                                    stamp,
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                );
                                requests.push(&tpl[c].request, xid);
                                pushed.push(seq);
                            }
                        }
                        5 => {
                            let _ = done[seq].compare_exchange(
                                0,
                                realtime_ns(),
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                            let _ = a_rx[seq].compare_exchange(
                                0,
                                stamp,
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                        }
                        6 => {
                            naks.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                let now = realtime_ns();
                for &seq in &pushed {
                    let _ =
                        r_sent[seq].compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                }
                pushed.clear();
                requests.flush(&txs);
            }
        });
        send_discovers(cli, &tpl, rate, &d_sent, t0, &mut elapsed_send, clock);
        std::thread::sleep(drain);
        stop.store(true, Ordering::Relaxed);
        rx.join().unwrap();
    });
    let mut lat: Vec<u64> = (0..total)
        .filter_map(|i| {
            let (a, b) = (
                d_sent[i].load(Ordering::Relaxed),
                done[i].load(Ordering::Relaxed),
            );
            (b != 0 && a != 0 && b >= a).then(|| (b - a) / 1000)
        })
        .collect();
    lat.sort_unstable();
    let mut turn: Vec<u64> = (0..total)
        .filter_map(|i| {
            let at = |v: &[AtomicU64]| v[i].load(Ordering::Relaxed);
            let (d, o, r, a) = (at(&d_sent), at(&o_rx), at(&r_sent), at(&a_rx));
            let ok = d != 0 && o >= d && r != 0 && a >= r;
            ok.then(|| (o - d + a - r) / 1000)
        })
        .collect();
    turn.sort_unstable();
    let acks = lat.len() as u64;
    let secs_sent = elapsed_send.as_secs_f64().max(1e-6);
    LoadResult {
        target_rate: rate,
        seconds: secs_sent,
        discovers: total as u64,
        offers: offers.load(Ordering::Relaxed),
        acks,
        naks: naks.load(Ordering::Relaxed),
        wrong_offers: wrong.load(Ordering::Relaxed),
        send_rate: total as f64 / secs_sent,
        dora_per_sec: acks as f64 / secs_sent,
        loss_pct: 100.0 * (1.0 - acks as f64 / total.max(1) as f64),
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
        turn_p50_us: percentile(&turn, 0.5),
        turn_p99_us: percentile(&turn, 0.99),
        generator: "userspace",
        ..Default::default()
    }
}

/// The `p` quantile of sorted values (0 when there are none).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = (sorted.len() as f64 * p) as usize;
    sorted
        .get(i.min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// The sender: DISCOVERs on schedule, in batches of what is due.
fn send_discovers(
    cli: &Netns,
    tpl: &[Templates],
    rate: u64,
    sent_at: &[AtomicU64],
    t0: Instant,
    elapsed: &mut Duration,
    clock: Clock,
) {
    let total = sent_at.len();
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(cli);
            clock.apply();
            let tx = packet_socket("c0", 0);
            let mut batch = TxBatch::new();
            let mut seq = 0usize;
            while seq < total {
                let due = ((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(total);
                if due <= seq {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                while seq < due {
                    let end = (seq + BATCH).min(due);
                    for i in seq..end {
                        batch.push(&tpl[i % tpl.len()].discover, XID_BASE + i as u32);
                    }
                    let now = realtime_ns();
                    for a in &sent_at[seq..end] {
                        a.store(now, Ordering::Relaxed);
                    }
                    batch.flush(&tx);
                    seq = end;
                }
            }
            *elapsed = t0.elapsed();
        });
    });
}

/// The per-send xid patch leaves the frame exactly as building it whole would.
#[test]
fn stamped_frames_equal_built_ones() {
    let mac = Mac([2, 0xbb, 0, 0, 1, 2]);
    let (ip, server) = (Ipv4Addr::new(10, 77, 1, 3), Ipv4Addr::new(10, 77, 0, 1));
    let mut out = [0u8; FRAME_LEN];
    let mut x: u32 = 0x9e37_79b9;
    let xids = (0..20_000u32)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        })
        .chain([0, 1, 0xffff, 0x1_0000, 0xffff_ffff, XID_BASE, XID_BASE + 1]);
    let (d, r) = (frame(mac, 0, None), frame(mac, 0, Some((ip, server))));
    for xid in xids {
        stamp(&d, xid, &mut out);
        assert_eq!(out, frame(mac, xid, None), "DISCOVER xid {xid:#x}");
        stamp(&r, xid, &mut out);
        assert_eq!(
            out,
            frame(mac, xid, Some((ip, server))),
            "REQUEST xid {xid:#x}"
        );
    }
}
