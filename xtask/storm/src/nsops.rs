//! Work that must happen inside a node's network namespace, done by one helper thread
//! that `setns()`es into it: opening sockets (a socket keeps the namespace it was created
//! in for life, so the one event loop then serves it from the main namespace), sysctls,
//! bringing links up, addresses by ioctl and a permanent neighbour entry by rtnetlink (0.2-0.7 ms per node,
//! where `ip -n NS ...` costs ~18 ms per call at 1,000 namespaces).
//!
//! Never touches the namespace of the process itself: only the helper thread moves.
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

/// Handle to the helper thread; jobs run in the order sent.
#[derive(Clone)]
pub struct NsOps {
    tx: mpsc::Sender<(usize, Job)>,
    stats: std::sync::Arc<Stats>,
}

/// What the helper thread has done (nanoseconds).
#[derive(Default)]
struct Stats {
    jobs: std::sync::atomic::AtomicU64,
    busy: std::sync::atomic::AtomicU64,
    switch_ns: std::sync::atomic::AtomicU64,
}

impl NsOps {
    /// Starts the helper thread for the namespaces `names` (index = node number; opened
    /// at each switch from `/run/netns/NAME`).
    pub fn start(names: Vec<String>) -> NsOps {
        let (tx, rx) = mpsc::channel::<(usize, Job)>();
        let stats = std::sync::Arc::new(Stats::default());
        let ours = stats.clone();
        std::thread::Builder::new()
            .name("storm-setns".into())
            .spawn(move || {
                // Only the current namespace is held, not one descriptor per node: a
                // switch opens `/run/netns/NAME`, setns()es and closes it (the thread
                // stays in the namespace), so 5,000 nodes do not hold 5,000 files.
                let mut current = usize::MAX;
                for (idx, job) in rx {
                    if idx != current {
                        let t = std::time::Instant::now();
                        let entered = open_ns(&names[idx]).and_then(|fd| {
                            // SAFETY: setns on a namespace fd we own; it moves only this thread.
                            cvt(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) })
                        });
                        stats.switch_ns.fetch_add(
                            t.elapsed().as_nanos() as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        if let Err(e) = entered {
                            eprintln!("storm: cannot enter netns {}: {e}", names[idx]);
                            // The thread may be nowhere useful now: switch again next time.
                            current = usize::MAX;
                            drop(job);
                            continue;
                        }
                        current = idx;
                    }
                    let t = std::time::Instant::now();
                    job();
                    stats
                        .jobs
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    stats.busy.fetch_add(
                        t.elapsed().as_nanos() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
            })
            .expect("spawn the setns helper thread");
        NsOps { tx, stats: ours }
    }

    /// Jobs run so far, and the helper's seconds in them and in namespace switches.
    pub fn stats(&self) -> (u64, f64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.stats.jobs.load(Relaxed),
            self.stats.busy.load(Relaxed) as f64 / 1e9,
            self.stats.switch_ns.load(Relaxed) as f64 / 1e9,
        )
    }

    /// Runs `f` inside namespace `idx` and returns its result.
    pub async fn run<R: Send + 'static>(
        &self,
        idx: usize,
        f: impl FnOnce() -> io::Result<R> + Send + 'static,
    ) -> io::Result<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.tx
            .send((idx, job))
            .map_err(|_| io::Error::other("setns helper thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("setns helper dropped the job (namespace missing?)"))?
    }

    /// [`NsOps::run`] from a plain thread.
    pub fn run_blocking<R: Send + 'static>(
        &self,
        idx: usize,
        f: impl FnOnce() -> io::Result<R> + Send + 'static,
    ) -> io::Result<R> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.tx
            .send((idx, job))
            .map_err(|_| io::Error::other("setns helper thread is gone"))?;
        rx.recv()
            .map_err(|_| io::Error::other("setns helper dropped the job (namespace missing?)"))?
    }
}

fn open_ns(name: &str) -> io::Result<OwnedFd> {
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    Ok(OwnedFd::from(f))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Writes a sysctl of the current (thread's) namespace, e.g. `net/ipv6/conf/all/disable_ipv6`.
pub fn sysctl(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/{key}"), value)
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    r
}

fn inet_dgram() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets IFF_UP on an interface of the current namespace.
pub fn link_up(name: &str) -> io::Result<()> {
    let s = inet_dgram()?;
    let mut r = ifreq(name);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut r))?;
        r.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &r))?;
    }
    Ok(())
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in is plain old data; it is written whole and reinterpreted as the
    // generic sockaddr the ioctls take (same size).
    unsafe {
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from(ip).to_be();
        std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin)
    }
}

/// Gives `ifname` the address `ip/prefix` (replacing any), and adds a permanent
/// neighbour entry `gw -> gw_mac` (so the node never ARPs for the server).
/// The entry is made by rtnetlink, not by the SIOCSARP ioctl: the kernel creates an
/// entry asked for as permanent over netlink exempt from garbage collection and from
/// the gc_thresh3 cap of the neighbour table all namespaces share, while SIOCSARP
/// creates an ordinary entry first, which fails with ENOBUFS when the server's entries
/// have filled the table (a storm of 1,000 nodes lost nodes to that: the simulator's
/// own ENOBUFS).
/// Runs inside the node's namespace (the neighbour entry's netlink socket is opened
/// here); `ifindex` is `ifname`'s there.
pub fn configure(
    socks: &NodeSockets,
    ifname: &str,
    ifindex: i32,
    ip: Ipv4Addr,
    prefix: u8,
    gw: Ipv4Addr,
    gw_mac: [u8; 6],
) -> io::Result<()> {
    set_address(socks, ifname, ip, prefix)?;
    neigh_permanent(&netlink_route()?, ifindex, gw, gw_mac)
}

/// The address half of [`configure`]: ioctls on the node's :68 socket, so this runs on
/// any thread; the neighbour entry's netlink socket is opened where it is needed (in the
/// namespace) and closed after.
pub fn set_address(socks: &NodeSockets, ifname: &str, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let s = &socks.bootpc;
    let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0));
    let mut r = ifreq(ifname);
    r.ifr_ifru.ifru_addr = sockaddr_in(ip);
    // SAFETY: the ioctls read the ifreq we own.
    unsafe {
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCSIFADDR, &r))?;
        r.ifr_ifru.ifru_netmask = sockaddr_in(mask);
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCSIFNETMASK, &r))?;
    }
    Ok(())
}

/// A NETLINK_ROUTE socket of the current namespace.
pub fn netlink_route() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); owned at once.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: fd was just returned by socket(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The RTM_NEWNEIGH request for a permanent entry `ip -> mac` on `ifindex`.
pub fn newneigh_message(ifindex: i32, ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let attr = |ty: u16, data: &[u8]| {
        let mut a = ((4 + data.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        while !a.len().is_multiple_of(4) {
            a.push(0);
        }
        a
    };
    // struct ndmsg: family, pad1, pad2, ifindex, state, flags, type.
    let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
    body.extend_from_slice(&ifindex.to_ne_bytes());
    body.extend_from_slice(&libc::NUD_PERMANENT.to_ne_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend(attr(libc::NDA_DST, &ip.octets()));
    body.extend(attr(libc::NDA_LLADDR, &mac));
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
    m.extend_from_slice(&libc::RTM_NEWNEIGH.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
    m.extend(body);
    m
}

/// Adds (or replaces) the permanent neighbour entry `ip -> mac` on `ifindex` through the
/// netlink socket `nl`, and reads the kernel's answer (it is queued before send returns).
pub fn neigh_permanent(nl: &OwnedFd, ifindex: i32, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
    let m = newneigh_message(ifindex, ip, mac);
    // SAFETY: send and recv on our socket with buffers of the stated lengths.
    unsafe {
        cvt(libc::send(
            nl.as_raw_fd(),
            m.as_ptr() as *const libc::c_void,
            m.len(),
            0,
        ) as libc::c_int)?;
        let mut buf = [0u8; 512];
        let n = cvt(libc::recv(
            nl.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        ) as libc::c_int)? as usize;
        // nlmsghdr (16) then, for NLMSG_ERROR, the error code (0 = ACK).
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if n >= 20 && ty == libc::NLMSG_ERROR as u16 {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return Err(io::Error::from_raw_os_error(-err));
            }
            return Ok(());
        }
        Err(io::Error::other(format!(
            "unexpected netlink answer type {ty}"
        )))
    }
}

/// An AF_PACKET socket on `ifname` that receives only IPv4 UDP to port 68 (a classic BPF
/// filter, so the node's TCP payload is never cloned to it). Non-blocking.
pub fn dhcp_packet_socket(ifname: &str) -> io::Result<(OwnedFd, i32)> {
    let proto = (libc::ETH_P_IP as u16).to_be() as libc::c_int;
    // SAFETY: plain socket(2); owned at once.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto,
        )
    })?;
    // SAFETY: fd was just returned by socket(2).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // ldh [12]; jeq 0x800; ldb [23]; jeq 17; ldh [20]; jset 0x1fff (fragment); ldxb 4*([14]&0xf);
    // ldh [x+16]; jeq 68; ret all / ret 0.
    let code: [libc::sock_filter; 11] = [
        bpf(0x28, 0, 0, 12),
        bpf(0x15, 0, 8, 0x0800),
        bpf(0x30, 0, 0, 23),
        bpf(0x15, 0, 6, 17),
        bpf(0x28, 0, 0, 20),
        bpf(0x45, 4, 0, 0x1fff),
        bpf(0xb1, 0, 0, 14),
        bpf(0x48, 0, 0, 16),
        bpf(0x15, 0, 1, 68),
        bpf(0x06, 0, 0, 0x40000),
        bpf(0x06, 0, 0, 0),
    ];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr() as *mut libc::sock_filter,
    };
    let name = CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string; setsockopt and bind read the
    // structures we own for the duration of the call.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        cvt(libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        ))?;
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex as i32;
        cvt(libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ))?;
        Ok((fd, ifindex as i32))
    }
}

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Sends a whole Ethernet frame on the AF_PACKET socket `fd`, interface `ifindex`.
pub fn packet_send(fd: RawFd, ifindex: i32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; sendto reads it and the frame.
    unsafe {
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        cvt(libc::sendto(
            fd,
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) as libc::c_int)?;
    }
    Ok(())
}

/// A non-blocking UDP socket bound to `0.0.0.0:port` (0: any).
pub fn udp_socket(port: u16) -> io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    s.set_nonblocking(true)?;
    s.set_reuse_address(true)?;
    s.bind(&std::net::SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    Ok(s.into())
}

/// A non-blocking, unconnected TCP socket whose receive buffer (the advertised window)
/// is capped at `rcvbuf` bytes (forced past rmem_max; the kernel doubles the value).
pub fn tcp_socket(rcvbuf: usize) -> io::Result<std::net::TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    if rcvbuf > 0 {
        let v = (rcvbuf / 2) as libc::c_int;
        // SAFETY: setsockopt reads the int we own.
        cvt(unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &v as *const _ as *const libc::c_void,
                4,
            )
        })?;
    }
    Ok(s.into())
}

/// The SNMP and extended TCP counters of the current thread's namespace
/// (`/proc/thread-self/net/{snmp,netstat}`), as `Proto.Field -> value`.
pub fn net_counters() -> io::Result<std::collections::BTreeMap<String, u64>> {
    let mut m = std::collections::BTreeMap::new();
    for file in ["snmp", "netstat"] {
        let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))?;
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let mut n = names.split_whitespace();
            let mut v = values.split_whitespace();
            let proto = n.next().unwrap_or("").trim_end_matches(':').to_string();
            v.next();
            for (k, val) in n.zip(v) {
                if let Ok(x) = val.parse::<u64>() {
                    m.insert(format!("{proto}.{k}"), x);
                }
            }
        }
    }
    Ok(m)
}

/// Receive and transmit drops per interface of the current thread's namespace
/// (`/proc/thread-self/net/dev`): `name -> (rx_drop, tx_drop)`. A veth counts a frame
/// its peer could not take (the receiving CPU's backlog full) as a transmit drop of
/// the sender: the sendto() that queued it saw ENOBUFS (AF_PACKET), or nothing at all
/// (UDP hides it, TCP retransmits).
pub fn dev_drops() -> io::Result<std::collections::BTreeMap<String, (u64, u64)>> {
    Ok(parse_dev_drops(&std::fs::read_to_string(
        "/proc/thread-self/net/dev",
    )?))
}

pub fn parse_dev_drops(text: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    dev_rows(text)
        .filter_map(|(name, f)| {
            Some((
                name.to_string(),
                (*f.get(DEV_DROP)?, *f.get(DEV_TX + DEV_DROP)?),
            ))
        })
        .collect()
}

/// Where a field of `/proc/net/dev` is in a row of [`dev_rows`]: the receive fields
/// (bytes packets errs drop fifo frame compressed multicast), then the transmit ones from
/// [`DEV_TX`] (bytes packets errs drop ...).
pub const DEV_BYTES: usize = 0;
pub const DEV_PACKETS: usize = 1;
pub const DEV_DROP: usize = 3;
pub const DEV_TX: usize = 8;

/// The interface rows of `/proc/net/dev` text: (name, its counters in order).
pub fn dev_rows(text: &str) -> impl Iterator<Item = (&str, Vec<u64>)> + '_ {
    text.lines().filter_map(|l| {
        let (name, rest) = l.split_once(':')?;
        let f = rest
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        Some((name.trim(), f))
    })
}

/// What a node's kernel dropped of what the simulator sent through it: eth0's transmit
/// drops, UDP send-buffer errors (`Udp.SndbufErrors`: ENOBUFS the kernel does not
/// return to a UDP sender) and IP output discards. Runs in the node's namespace.
pub fn node_drops() -> io::Result<[u64; 3]> {
    let tx = dev_drops()?.get("eth0").map(|d| d.1).unwrap_or(0);
    let c = net_counters()?;
    let g = |k: &str| c.get(k).copied().unwrap_or(0);
    Ok([tx, g("Udp.SndbufErrors"), g("Ip.OutDiscards")])
}

/// Host-wide counters the storm's validity depends on: softnet backlog drops (all
/// CPUs) and neighbour-table overflows (`table_fulls`, the kernel's table is shared by
/// every namespace).
pub fn global_counters() -> (u64, u64) {
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum();
    let fulls = crate::neigh::table_fulls();
    (softnet, fulls)
}

/// The sockets one node's boot starts with, opened inside its namespace before the
/// storm (the NIC exists before power-on), so the storm waits less for the setns helper:
/// measured, 1,000 nodes queueing for it at power-on added ~6 s to the firmware DHCP.
/// Two are always there ([`FIXED_FDS`]); the TFTP and TCP spares only as far as the
/// open-files limit allows ([`Spares::within`]): past them a node opens its sockets
/// through the helper when it needs them, and closes each when done, so a storm of N
/// nodes holds about 3 N descriptors (5,000 nodes under this machine's hard limit of 20,000).
pub struct NodeSockets {
    /// AF_PACKET on eth0 (DHCP before and after an address) and its ifindex.
    pub packet: Option<(OwnedFd, i32)>,
    /// Bound to :68 (as dhclient does), so unicast DHCP replies draw no ICMP; also the
    /// socket of the address ioctls (any AF_INET socket of the namespace will do).
    pub bootpc: std::net::UdpSocket,
    /// TFTP client sockets, one per read request (EDK2 uses a new port for the second).
    pub tftp: Vec<std::net::UdpSocket>,
    /// Unconnected TCP sockets: the boot files' keep-alive connection, the OS's
    /// postscript, spares for reconnects.
    pub tcp: Vec<std::net::TcpStream>,
}

/// Descriptors every node holds for the whole storm (packet socket, :68).
pub const FIXED_FDS: u64 = 2;
/// Descriptors a node holds at once beyond [`FIXED_FDS`] when it opens its sockets as it
/// goes: one TFTP socket or one TCP connection.
pub const INFLIGHT_FDS: u64 = 1;

/// How many TFTP and TCP sockets a node opens before the storm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spares {
    pub tftp: usize,
    pub tcp: usize,
}

impl Spares {
    /// What a boot uses at most without a retry: UEFI's probe and read plus one, the
    /// keep-alive connection, postscript, completion plus one.
    pub const FULL: Spares = Spares { tftp: 3, tcp: 4 };

    /// As many of [`Spares::FULL`] as `spare_fds` descriptors per node allow.
    pub fn within(spare_fds: u64) -> Spares {
        let k = spare_fds.min((Self::FULL.tftp + Self::FULL.tcp) as u64) as usize;
        let tftp = k.div_ceil(2).min(Self::FULL.tftp);
        Spares {
            tftp,
            tcp: (k - tftp).min(Self::FULL.tcp),
        }
    }
}

/// Opens a node's [`NodeSockets`] (run inside its namespace).
pub fn node_sockets(rcvbuf: usize, spares: Spares) -> io::Result<NodeSockets> {
    Ok(NodeSockets {
        packet: Some(dhcp_packet_socket("eth0")?),
        bootpc: udp_socket(68)?,
        tftp: (0..spares.tftp)
            .map(|_| udp_socket(0))
            .collect::<io::Result<_>>()?,
        tcp: (0..spares.tcp)
            .map(|_| tcp_socket(rcvbuf))
            .collect::<io::Result<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_follow_the_descriptors_left() {
        assert_eq!(Spares::within(0), Spares { tftp: 0, tcp: 0 });
        assert_eq!(Spares::within(1), Spares { tftp: 1, tcp: 0 });
        assert_eq!(Spares::within(4), Spares { tftp: 2, tcp: 2 });
        assert_eq!(Spares::within(7), Spares::FULL);
        assert_eq!(Spares::within(1_000), Spares::FULL);
    }

    #[test]
    fn newneigh_request_layout() {
        let m = newneigh_message(7, Ipv4Addr::new(10, 77, 0, 1), [2, 0, 0, 0, 0, 9]);
        // header 16 + ndmsg 12 + NDA_DST 8 + NDA_LLADDR 12 (10 padded to 4).
        assert_eq!(m.len(), 48);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 48);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), libc::RTM_NEWNEIGH);
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        assert_eq!(u16::from_ne_bytes([m[24], m[25]]), libc::NUD_PERMANENT);
        assert_eq!(&m[32..36], &[10, 77, 0, 1]);
        assert_eq!(&m[40..46], &[2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn dev_drops_parsed() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n\
  eth0: 9000000    7000    0    3    0     0          0         0   120000    1500    0   17    0     0       0          0\n";
        let m = parse_dev_drops(text);
        assert_eq!(m.get("eth0"), Some(&(3, 17)));
        assert_eq!(m.get("lo"), Some(&(0, 0)));
        assert_eq!(m.len(), 2);
    }
}
