//! A DHCP load generator of our own for the benchmark: complete DORA exchanges for many
//! MACs from raw frames in a namespace, batched with sendmmsg/recvmmsg so the generator
//! is not what limits the figure (perfdhcp, one datagram per syscall, tops out far
//! below what the XDP path answers). Open loop: DISCOVERs at a fixed rate; every OFFER
//! is answered with a REQUEST at once; a DISCOVER whose ACK does not come within the
//! drain time counts as dropped. Requests set the broadcast flag, so every server's
//! replies reach the client's packet socket the same way.
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
    /// DISCOVERs actually sent per second (below the target: the generator's limit).
    pub send_rate: f64,
    /// Completed exchanges per second.
    pub dora_per_sec: f64,
    pub loss_pct: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// ACKs the server reports having sent during the step (None: it cannot tell):
    /// tells server losses from losses in transit or in the generator.
    pub server_acks: Option<u64>,
}

const BATCH: usize = 64;
const XID_BASE: u32 = 0x4000_0000;

fn packet_socket(ifname: &str) -> OwnedFd {
    // SAFETY: plain socket calls with valid, initialised arguments.
    unsafe {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = nix::net::if_::if_nametoindex(ifname).unwrap() as i32;
        let r = libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of_val(&sll) as u32,
        );
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 64 << 20;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &size as *const _ as *const libc::c_void,
                4,
            );
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        let tvp = &tv as *const _ as *const libc::c_void;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            tvp,
            std::mem::size_of_val(&tv) as u32,
        );
        fd
    }
}

/// Sends `frames` with as few syscalls as possible.
fn send_all(fd: &OwnedFd, frames: &[Vec<u8>]) -> usize {
    let mut sent = 0;
    for chunk in frames.chunks(BATCH) {
        let mut iov: Vec<libc::iovec> = chunk
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut _,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; each points at one iovec that outlives the call.
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: msgs is valid for its length.
        let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        sent += n.max(0) as usize;
    }
    sent
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

fn frame(mac: Mac, xid: u32, request: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    udp_frame(
        &payload(mac, xid, request),
        mac,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        Mac([0xff; 6]),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        None,
    )
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

fn enter(ns: &Netns) {
    let f = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// Runs DORA exchanges at `rate` DISCOVERs/s for `secs` from `cli`'s `c0`, waiting
/// `drain` for the last answers.
pub fn run(
    cli: &Netns,
    clients: &[Client],
    server: Ipv4Addr,
    rate: u64,
    secs: f64,
    drain: Duration,
) -> LoadResult {
    let total = (rate as f64 * secs) as usize;
    let sent_at: Vec<AtomicU64> = (0..total).map(|_| AtomicU64::new(0)).collect();
    let done: Vec<AtomicU64> = (0..total).map(|_| AtomicU64::new(0)).collect();
    let (offers, naks) = (AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let mut elapsed_send = Duration::ZERO;
    std::thread::scope(|s| {
        let rx = s.spawn(|| {
            enter(cli);
            let (rxs, txs) = (packet_socket("c0"), packet_socket("c0"));
            let mut bufs = vec![[0u8; 1536]; BATCH];
            while !stop.load(Ordering::Relaxed) {
                let n = recv_batch(&rxs, &mut bufs);
                let mut requests = vec![];
                for (buf, len) in bufs.iter().zip(n) {
                    let Some((xid, mt, yiaddr, sid)) = reply_of(&buf[..len]) else {
                        continue;
                    };
                    let Some(seq) = xid
                        .checked_sub(XID_BASE)
                        .map(|s| s as usize)
                        .filter(|s| *s < total)
                    else {
                        continue;
                    };
                    match mt {
                        2 => {
                            offers.fetch_add(1, Ordering::Relaxed);
                            let c = clients[seq % clients.len()];
                            requests.push(frame(c.mac, xid, Some((yiaddr, sid.unwrap_or(server)))));
                        }
                        5 => {
                            let ns = t0.elapsed().as_nanos() as u64;
                            let _ = done[seq].compare_exchange(
                                0,
                                ns,
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
                send_all(&txs, &requests);
            }
        });
        enter_and_send(cli, clients, rate, total, &sent_at, t0, &mut elapsed_send);
        std::thread::sleep(drain);
        stop.store(true, Ordering::Relaxed);
        rx.join().unwrap();
    });
    let mut lat: Vec<u64> = (0..total)
        .filter_map(|i| {
            let (a, b) = (
                sent_at[i].load(Ordering::Relaxed),
                done[i].load(Ordering::Relaxed),
            );
            (b != 0 && a != 0).then(|| (b - a) / 1000)
        })
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let acks = lat.len() as u64;
    let secs_sent = elapsed_send.as_secs_f64().max(1e-6);
    LoadResult {
        target_rate: rate,
        seconds: secs_sent,
        discovers: total as u64,
        offers: offers.load(Ordering::Relaxed),
        acks,
        naks: naks.load(Ordering::Relaxed),
        send_rate: total as f64 / secs_sent,
        dora_per_sec: acks as f64 / secs_sent,
        loss_pct: 100.0 * (1.0 - acks as f64 / total.max(1) as f64),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        server_acks: None,
    }
}

/// The sender: DISCOVERs on schedule, in batches of what is due.
fn enter_and_send(
    cli: &Netns,
    clients: &[Client],
    rate: u64,
    total: usize,
    sent_at: &[AtomicU64],
    t0: Instant,
    elapsed: &mut Duration,
) {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(cli);
            let tx = packet_socket("c0");
            let mut seq = 0usize;
            while seq < total {
                let due = ((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(total);
                if due <= seq {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let batch: Vec<Vec<u8>> = (seq..due)
                    .map(|i| {
                        let c = clients[i % clients.len()];
                        frame(c.mac, XID_BASE + i as u32, None)
                    })
                    .collect();
                let now = t0.elapsed().as_nanos() as u64;
                for a in &sent_at[seq..due] {
                    a.store(now, Ordering::Relaxed);
                }
                send_all(&tx, &batch);
                seq = due;
            }
            *elapsed = t0.elapsed();
        });
    });
}

/// Receives up to BATCH frames; returns their lengths.
fn recv_batch(fd: &OwnedFd, bufs: &mut [[u8; 1536]]) -> Vec<usize> {
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr is valid; each points at one iovec that outlives the call.
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: msgs is valid for its length; the timeout comes from SO_RCVTIMEO.
    let n = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as u32,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    (0..n.max(0) as usize)
        .map(|i| msgs[i].msg_len as usize)
        .collect()
}
