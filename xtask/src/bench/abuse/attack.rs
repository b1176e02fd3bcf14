//! The floods, each run on a thread inside the client namespace (see `lab::enter`):
//! un-ACKed TFTP requests, aborted UEFI size probes, silent TCP connections, DHCP
//! DISCOVERs from random MACs as raw frames. Plain sockets and hand-built packets; no
//! server code (the bench drives the real binary from outside).
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use super::lab::{SRV_IP, UNDIONLY};

const TFTP_PORT: u16 = 69;

/// A TFTP read request (RFC 1350, options RFC 2347).
pub fn rrq(file: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0, 1];
    for s in [file, "octet"]
        .into_iter()
        .chain(opts.iter().flat_map(|(k, v)| [*k, *v]))
    {
        b.extend_from_slice(s.as_bytes());
        b.push(0);
    }
    b
}

/// Sends `n` RRQs for undionly.kpxe (iPXE's options: blksize 1468, tsize), spread over
/// `spread`, `n / addrs.len()` from each address in turn (so a per-client cap sees them
/// together), each from its own port; never ACKs. The sockets
/// are returned open (a closed port would answer the server's DATA with ICMP, which a
/// forger's never does).
pub fn tftp_unacked(
    n: usize,
    addrs: &[Ipv4Addr],
    spread: Duration,
) -> anyhow::Result<Vec<UdpSocket>> {
    let req = rrq("undionly.kpxe", &[("blksize", "1468"), ("tsize", "0")]);
    let mut socks = Vec::with_capacity(n);
    let per_addr = n.div_ceil(addrs.len());
    let t0 = Instant::now();
    for i in 0..n {
        let s = UdpSocket::bind((addrs[(i / per_addr) % addrs.len()], 0))
            .context("bind an attacker address")?;
        s.send_to(&req, (SRV_IP, TFTP_PORT))?;
        socks.push(s);
        // Keep to the schedule: request i is due at i/n of the spread.
        let due = spread.mul_f64((i + 1) as f64 / n as f64);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            if i % 64 == 0 {
                std::thread::sleep(wait);
            }
        }
    }
    Ok(socks)
}

/// What the size probes saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Probes {
    pub sent: usize,
    pub oacks: usize,
    /// The tsize the OACKs announced (undionly.kpxe's size, if right).
    pub tsize_ok: usize,
    pub errors_sent: usize,
}

/// EDK2's size probe, `n` times at once: RRQ with tsize 0 + blksize 1468, wait for the
/// OACK. Returns the sockets with the transfer ID each OACK came from, still running.
pub fn size_probes(
    n: usize,
    addrs: &[Ipv4Addr],
) -> anyhow::Result<(Probes, Vec<(UdpSocket, SocketAddr)>)> {
    let req = rrq("undionly.kpxe", &[("tsize", "0"), ("blksize", "1468")]);
    let size = std::fs::metadata(UNDIONLY)?.len();
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let s = UdpSocket::bind((addrs[i % addrs.len()], 0))?;
        s.send_to(&req, (SRV_IP, TFTP_PORT))?;
        socks.push(s);
    }
    let mut p = Probes {
        sent: n,
        ..Probes::default()
    };
    let mut live = Vec::with_capacity(n);
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    for s in socks {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let Ok((len, tid)) = s.recv_from(&mut buf) else {
            continue;
        };
        if buf[..2] != [0, 6] {
            continue;
        }
        p.oacks += 1;
        let text = String::from_utf8_lossy(&buf[2..len]).replace('\0', " ");
        if text.contains(&format!("tsize {size} ")) {
            p.tsize_ok += 1;
        }
        live.push((s, tid));
    }
    Ok((p, live))
}

/// Ends each probe as EDK2 does: ERROR 8 to the transfer's port.
pub fn abort_probes(live: &[(UdpSocket, SocketAddr)], p: &mut Probes) -> anyhow::Result<()> {
    let abort = b"\0\x05\0\x08User aborted the transfer\0";
    let mut buf = [0u8; 2048];
    for (s, tid) in live {
        // What the server re-sent while the probe was held open is not "after the ERROR".
        s.set_nonblocking(true)?;
        while s.recv_from(&mut buf).is_ok() {}
        s.send_to(abort, tid)?;
        p.errors_sent += 1;
    }
    Ok(())
}

/// How the silent connections ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Idle {
    pub opened: usize,
    /// The most open at once (this process's descriptors bound it).
    pub most_open: usize,
    /// Connect failed outright (refused, unreachable).
    pub failed_to_open: usize,
    /// Answered `503` by the per-source cap, then closed.
    pub refused_per_source: usize,
    /// Closed by the server without a byte (the header timeout).
    pub closed_silent: usize,
    /// Anything else received.
    pub other_answer: usize,
    /// Reset, or the connect gave up.
    pub errored: usize,
    /// Still open on this side when the wait ended (see [`idle_connections`]); reset then.
    pub still_open: usize,
    /// From the first connections opened to the last close, seconds.
    pub drain_secs: f64,
}

/// Opens `n` TCP connections to the HTTP port, `n / addrs.len()` from each address in
/// turn (so one address's connections arrive together, as a per-source cap sees them),
/// at most `at_once` open at a time (more as the server closes some), never sends a
/// byte, and waits until every one is closed, or none has been for `quiet` and
/// `server_holds()` (connections established or half-open on the server's port) is 0,
/// or `wait` has passed. Connections still open then were never accepted: with the
/// server's accept queue full its kernel dropped their handshake (SYN cookies keep no
/// state), and a client that never sends never learns it.
pub fn idle_connections(
    n: usize,
    at_once: usize,
    addrs: &[Ipv4Addr],
    port: u16,
    quiet: Duration,
    wait: Duration,
    server_holds: &dyn Fn() -> usize,
) -> anyhow::Result<Idle> {
    let mut idle = Idle::default();
    let mut open: Vec<OwnedFd> = Vec::with_capacity(at_once);
    let per_addr = n.div_ceil(addrs.len());
    let mut next = 0;
    let mut top_up = |open: &mut Vec<OwnedFd>, idle: &mut Idle| {
        while next < n && open.len() < at_once {
            match connect_nonblocking(addrs[(next / per_addr) % addrs.len()], port) {
                Ok(fd) => {
                    open.push(fd);
                    idle.opened += 1;
                }
                Err(_) => idle.failed_to_open += 1,
            }
            next += 1;
        }
        idle.most_open = idle.most_open.max(open.len());
    };
    top_up(&mut open, &mut idle);
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let mut last_close = t0;
    let mut last_asked = t0;
    while !open.is_empty() && t0.elapsed() < wait && !testlab::interrupted() {
        if last_close.elapsed() >= quiet && last_asked.elapsed() >= Duration::from_secs(1) {
            if server_holds() == 0 {
                break;
            }
            last_asked = Instant::now();
        }
        let mut polls: Vec<libc::pollfd> = open
            .iter()
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            })
            .collect();
        // SAFETY: `polls` is a valid array of pollfd for its length.
        let r = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 200) };
        if r <= 0 {
            continue;
        }
        let mut keep = Vec::with_capacity(open.len());
        for (fd, p) in open.into_iter().zip(&polls) {
            if p.revents == 0 {
                keep.push(fd);
                continue;
            }
            // SAFETY: reading into a buffer of the given length on a descriptor we own.
            let got = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match got {
                0 => idle.closed_silent += 1,
                n if n > 0 && buf.starts_with(b"HTTP/1.1 503") => idle.refused_per_source += 1,
                n if n > 0 => idle.other_answer += 1,
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        keep.push(fd);
                        continue;
                    }
                    idle.errored += 1;
                }
            }
            idle.drain_secs = t0.elapsed().as_secs_f64();
            last_close = Instant::now();
        }
        open = keep;
        top_up(&mut open, &mut idle);
    }
    idle.still_open = open.len();
    // Reset them (SO_LINGER 0), so that no late handshake hands the server one more.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    for fd in &open {
        // SAFETY: setsockopt on a descriptor we own, with a linger value of its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    drop(open);
    Ok(idle)
}

fn connect_nonblocking(src: Ipv4Addr, port: u16) -> std::io::Result<OwnedFd> {
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned by the OwnedFd from here on, with
    // sockaddr_in values of the stated length.
    unsafe {
        let raw = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let a = sin(src, 0);
        if libc::bind(raw, (&a as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let d = sin(SRV_IP, port);
        if libc::connect(raw, (&d as *const libc::sockaddr_in).cast(), len) != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(fd)
    }
}

/// Sends `n` DHCPDISCOVERs from random locally administered MACs as raw broadcast
/// frames on `ifname`, at about `per_sec`. Returns how many were sent.
pub fn dhcp_discovers(
    ifname: &str,
    n: usize,
    per_sec: f64,
    skip_mac: [u8; 6],
) -> anyhow::Result<usize> {
    let c_if = std::ffi::CString::new(ifname)?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c_if.as_ptr()) };
    if index == 0 {
        bail!("no interface {ifname}");
    }
    // SAFETY: socket(2); the descriptor is owned from here on.
    let fd = unsafe {
        let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(raw)
    };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let mut rng = XorShift::seeded();
    let t0 = Instant::now();
    let mut sent = 0;
    for i in 0..n {
        let r = rng.next();
        let mut mac = [
            0x02,
            (r >> 8) as u8,
            (r >> 16) as u8,
            (r >> 24) as u8,
            (r >> 32) as u8,
            (r >> 40) as u8,
        ];
        if mac == skip_mac {
            mac[1] ^= 1;
        }
        let frame = discover_frame(mac, (r >> 32) as u32);
        // SAFETY: the frame buffer and sockaddr_ll of the stated lengths.
        let ok = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ok > 0 {
            sent += 1;
        }
        if i % 100 == 99 {
            let due = Duration::from_secs_f64((i + 1) as f64 / per_sec);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    Ok(sent)
}

/// Ethernet + IPv4 + UDP 68 -> 67 + BOOTP DISCOVER (broadcast flag, options 53, 55).
pub fn discover_frame(mac: [u8; 6], xid: u32) -> Vec<u8> {
    let mut bootp = vec![0u8; 236];
    bootp[..3].copy_from_slice(&[1, 1, 6]);
    bootp[4..8].copy_from_slice(&xid.to_be_bytes());
    bootp[10] = 0x80;
    bootp[28..34].copy_from_slice(&mac);
    bootp.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 55, 4, 1, 3, 6, 67, 255]);
    let udp_len = 8 + bootp.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[16..20].copy_from_slice(&[255; 4]);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&67u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    f.extend_from_slice(&bootp);
    f
}

/// The Internet checksum (RFC 1071).
fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// xorshift64: random-enough MACs without a dependency.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        XorShift(t | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrq_bytes() {
        assert_eq!(
            rrq("a", &[("tsize", "0")]),
            b"\0\x01a\0octet\0tsize\x000\0".to_vec()
        );
    }

    #[test]
    fn discover_frame_is_well_formed() {
        let mac = [2, 1, 2, 3, 4, 5];
        let f = discover_frame(mac, 7);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum verifies");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, f.len() - 14);
        assert_eq!(&f[34..38], &[0, 68, 0, 67]);
        assert_eq!(&f[42 + 28..42 + 34], &mac, "chaddr");
        assert_eq!(&f[42 + 236..42 + 243], &[99, 130, 83, 99, 53, 1, 1]);
    }
}
