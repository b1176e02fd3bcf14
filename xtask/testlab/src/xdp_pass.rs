//! A two-instruction XDP program (`return XDP_PASS`) attached in native mode to the
//! peer of a veth that xboot's program answers on. Native XDP_TX on a veth needs an XDP
//! program on the peer too (the kernel schedules the peer's NAPI only then; GRO on the
//! peer is not enough on this kernel): the lab's up0 ([`crate::net::build`]) and the
//! storm's fabric end carry it. Loaded with the bpf(2) system call and attached by
//! rtnetlink, so neither the BPF toolchain nor the xboot library is needed. The program
//! lives as long as the link.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_XDP: u32 = 6;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const NLA_F_NESTED: u16 = 1 << 15;

fn load() -> io::Result<OwnedFd> {
    // r0 = XDP_PASS (2); exit.
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0x00, 0, 0, 2, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..58].copy_from_slice(b"storm_pass");
    // SAFETY: bpf(BPF_PROG_LOAD) reads the attribute block and the instructions and
    // license it points to, all alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Loads the pass program and attaches it (native mode) to `ifname` in namespace
/// `netns` (`/run/netns/NAME`), from a thread of its own.
pub fn attach_in(netns: &str, ifname: &str) -> io::Result<()> {
    let path = format!("/run/netns/{netns}");
    let ifname = ifname.to_string();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path)?;
        // SAFETY: setns(2) on a descriptor we hold, for this thread only (CLONE_NEWNET).
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        attach(&ifname)
    })
    .join()
    .map_err(|_| io::Error::other("the attaching thread panicked"))?
}

/// Loads the pass program and attaches it (native mode) to `ifname` of the current
/// namespace.
pub fn attach(ifname: &str) -> io::Result<()> {
    let prog = load()?;
    let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut xdp = vec![];
    attr(&mut xdp, IFLA_XDP_FD, &prog.as_raw_fd().to_ne_bytes());
    attr(&mut xdp, IFLA_XDP_FLAGS, &XDP_FLAGS_DRV_MODE.to_ne_bytes());
    let mut body = vec![0u8; 16]; // ifinfomsg: family, pad, type, index, flags, change
    body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    attr(&mut body, IFLA_XDP | NLA_F_NESTED, &xdp);
    let mut msg = vec![];
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_SETLINK.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    // SAFETY: a netlink socket, owned at once; send/recv use buffers we own.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        if libc::send(sock.as_raw_fd(), msg.as_ptr() as *const _, msg.len(), 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 4096];
        let n = libc::recv(sock.as_raw_fd(), buf.as_mut_ptr() as *mut _, buf.len(), 0);
        if n < 20 {
            return Err(io::Error::other("no netlink answer"));
        }
        // NLMSG_ERROR carries the errno (0 = ack) right after the header.
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if kind == libc::NLMSG_ERROR as u16 && err != 0 {
            return Err(io::Error::from_raw_os_error(-err));
        }
    }
    Ok(())
}
