//! Bounds-checked header parsing: Ethernet (+ one 802.1Q tag), IPv4, UDP, BOOTP.
//!
//! Every read goes through `bpf_xdp_load_bytes`, which checks the frame's bounds at run
//! time, so the verifier never has to follow packet pointers at data-dependent offsets.
//! The DHCP message is copied whole into per-CPU memory and its UDP checksum verified
//! (the stack would drop a bad one, so the slow path would never answer it). A sender's
//! checksum offload on veth leaves a partial checksum in the frame: turn it off there
//! (`ethtool -K IF tx off`); real NICs deliver complete checksums.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_csum_diff, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use boot_common::{counter, reason};

use crate::maps::{Work, PAY_CAP};

use crate::prog::{Verdict, NO_REASON};

/// Size of the fixed BOOTP header before the options: 236 bytes and the magic cookie.
pub const BOOTP_FIXED: u32 = 240;
pub const PORT_SERVER: u16 = 67;
pub const PORT_PXE: u16 = 4011;

/// Offsets inside the BOOTP header.
pub mod bootp {
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: usize = 4;
    pub const FLAGS: usize = 10;
    pub const CIADDR: usize = 12;
    pub const GIADDR: usize = 24;
    pub const CHADDR: usize = 28;
}

/// What the program keeps of a request frame (lives in per-CPU memory: the stack is
/// only 512 bytes).
#[repr(C)]
pub struct Request {
    /// Length of the Ethernet header: 14, or 18 with an 802.1Q tag.
    pub l2: u32,
    /// The 802.1Q tag control (priority and VLAN id), 0 when untagged.
    pub tci: u16,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ip_dst: [u8; 4],
    pub dport: u16,
    /// Bytes of the DHCP message (the UDP payload), copied to `Work::pay`.
    pub len: u32,
    // The BOOTP fields in the order that keeps the 4-byte ones at 4-byte aligned offsets:
    // each is then moved as one word, not byte by byte.
    pub xid: [u8; 4],
    pub ciaddr: [u8; 4],
    pub giaddr: [u8; 4],
    pub flags: [u8; 2],
    /// chaddr (hlen is 6).
    pub mac: [u8; 6],
    pub hops: u8,
}

impl Request {
    pub fn vlan(&self) -> u16 {
        self.tci & 0x0fff
    }
}

/// Reads `N` bytes at `off`; false when the frame is shorter.
#[inline(always)]
pub fn load<const N: usize>(ctx: &XdpContext, off: u32, buf: &mut [u8; N]) -> bool {
    // SAFETY: the helper writes at most N bytes into buf and checks the frame's bounds.
    unsafe { bpf_xdp_load_bytes(ctx.ctx, off, buf.as_mut_ptr() as *mut c_void, N as u32) == 0 }
}

#[inline(always)]
fn be16(a: u8, b: u8) -> u16 {
    u16::from_be_bytes([a, b])
}

const fn malformed(r: u32) -> Verdict {
    Verdict::pass(counter::MALFORMED, r)
}
const fn other(r: u32) -> Verdict {
    Verdict::pass(counter::PASSED_OTHER, r)
}
const NOT_DHCP: Verdict = Verdict::pass(counter::NOT_DHCP, NO_REASON);

/// Parses the headers of a frame addressed to a DHCP server port and copies the DHCP
/// message into `work.pay`.
#[inline(always)]
pub fn parse(ctx: &XdpContext, work: &mut Work) -> Result<(), Verdict> {
    // Headers by direct access (a frame shorter than 46 bytes holds no DHCP message);
    // the message itself is copied with one helper call below.
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 46 > end {
        return Err(NOT_DHCP);
    }
    // SAFETY (the reads below): the frame has at least 46 bytes, and l2 + 28 <= 46.
    let at = |i: u32| unsafe { *((data + i as usize) as *const u8) };
    let (l2, tci) = match (at(12), at(13)) {
        (0x08, 0x00) => (14u32, 0u16),
        (0x81, 0x00) if at(16) == 0x08 && at(17) == 0x00 => (18, be16(at(14), at(15))),
        _ => return Err(NOT_DHCP),
    };
    let ip = |i: u32| at(l2 + i);
    if ip(0) >> 4 != 4 || ip(9) != 17 {
        return Err(NOT_DHCP);
    }
    let ihl = ((ip(0) & 0x0f) as u32) * 4;
    let frag = be16(ip(6), ip(7));
    if ihl < 20 || frag & 0x1fff != 0 {
        return Err(NOT_DHCP); // no UDP header to look at
    }
    let mut udp = [
        ip(20),
        ip(21),
        ip(22),
        ip(23),
        ip(24),
        ip(25),
        ip(26),
        ip(27),
    ];
    if ihl != 20 && !load(ctx, l2 + (ihl & 0x3c), &mut udp) {
        return Err(NOT_DHCP);
    }
    let dport = be16(udp[2], udp[3]);
    if dport != PORT_SERVER && dport != PORT_PXE {
        return Err(NOT_DHCP);
    }
    // Addressed to a DHCP port: from here on a frame is a request, malformed, or unusual.
    if ihl != 20 || frag & 0x2000 != 0 {
        return Err(other(reason::UNUSUAL)); // IP options or a fragment: the slow path copes
    }
    let mut h = [0u8; 20];
    let mut i = 0;
    while i < 20 {
        h[i] = ip(i as u32);
        i += 1;
    }
    if !ip_header_ok(&h) {
        return Err(malformed(reason::BAD_IP));
    }
    let tot = be16(ip(2), ip(3)) as u32;
    let ulen = be16(udp[4], udp[5]) as u32;
    // A UDP length short of the IP payload is legal (the stack trims), but unusual
    // enough to leave to the slow path. A datagram longer than the frame fails the copy
    // below.
    if tot < 28 || ulen < 8 || ulen > tot - 20 {
        return Err(malformed(reason::TRUNCATED));
    }
    if ulen != tot - 20 {
        return Err(other(reason::UNUSUAL));
    }
    if ulen < 8 + BOOTP_FIXED + 1 {
        return Err(malformed(reason::BAD_BOOTP)); // not even one option byte
    }
    let Some(n) = bounded(ulen - 8, BOOTP_FIXED + 1, PAY_CAP as u32) else {
        return Err(other(reason::UNUSUAL)); // a jumbo request
    };
    // SAFETY: writes n <= PAY_CAP bytes into pay (PAY_CAP + 128 long).
    let r =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, l2 + 28, work.pay.as_mut_ptr() as *mut c_void, n) };
    if r != 0 {
        return Err(malformed(reason::TRUNCATED));
    }
    let udp_sum = be16(udp[6], udp[7]);
    if udp_sum != 0 {
        let pseudo = sum_words(&[
            ip(12),
            ip(13),
            ip(14),
            ip(15),
            ip(16),
            ip(17),
            ip(18),
            ip(19),
        ]) + 17
            + ulen
            + sum_words(&udp);
        match sum_bytes::<{ PAY_CAP as u32 }>(work.pay.as_mut_ptr(), n) {
            Some(s) if fold(s + pseudo) == 0xffff => {}
            _ => return Err(malformed(reason::BAD_UDP_CHECKSUM)),
        }
    }
    let p = &work.pay;
    if [p[236], p[237], p[238], p[239]] != [99, 130, 83, 99] {
        return Err(malformed(reason::BAD_BOOTP));
    }
    if p[bootp::OP] != 1 {
        return Err(other(reason::NOT_REQUEST));
    }
    if p[bootp::HTYPE] != 1 || p[bootp::HLEN] != 6 {
        return Err(other(reason::UNUSUAL));
    }
    let (xid, ciaddr, giaddr) = (
        word(&work.pay, bootp::XID),
        word(&work.pay, bootp::CIADDR),
        word(&work.pay, bootp::GIADDR),
    );
    let flags = half(&work.pay, bootp::FLAGS);
    let hops = p[bootp::HOPS];
    let (m, a) = (
        word(&work.pay, bootp::CHADDR),
        half(&work.pay, bootp::CHADDR + 4),
    );
    let mac = [m[0], m[1], m[2], m[3], a[0], a[1]];
    let req = &mut work.req;
    req.xid = xid;
    req.flags = flags;
    req.hops = hops;
    req.ciaddr = ciaddr;
    req.giaddr = giaddr;
    req.mac = mac;
    req.l2 = l2;
    req.tci = tci;
    req.dst_mac = [at(0), at(1), at(2), at(3), at(4), at(5)];
    req.src_mac = [at(6), at(7), at(8), at(9), at(10), at(11)];
    req.ip_dst = [ip(16), ip(17), ip(18), ip(19)];
    req.dport = dport;
    req.len = n;
    Ok(())
}

/// The 4 bytes at `at` (a multiple of 4) of the request's message, in one load.
#[inline(always)]
pub fn word(pay: &[u8; PAY_CAP + 128], at: usize) -> [u8; 4] {
    // SAFETY: `pay` is at the start of the 8-byte aligned `Work`; at + 4 <= 240.
    unsafe { core::ptr::read(pay.as_ptr().add(at) as *const u32) }.to_ne_bytes()
}

/// The 2 bytes at `at` (even) of the request's message, in one load.
#[inline(always)]
pub fn half(pay: &[u8; PAY_CAP + 128], at: usize) -> [u8; 2] {
    // SAFETY: as in `word`.
    unsafe { core::ptr::read(pay.as_ptr().add(at) as *const u16) }.to_ne_bytes()
}

/// Sum of big-endian 16-bit words.
#[inline(always)]
fn sum_words<const N: usize>(b: &[u8; N]) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i + 1 < N {
        s += be16(b[i], b[i + 1]) as u32;
        i += 2;
    }
    s
}

/// One's complement sum (folded to 16 bits, big-endian) of `buf[..n]`, n <= CAP (a
/// multiple of 512; `buf` must have CAP + 3 bytes). Zeroes the bytes after `n` up to a
/// multiple of 4 (bpf_csum_diff takes whole words).
#[inline(always)]
pub fn sum_bytes<const CAP: u32>(buf: *mut u8, n: u32) -> Option<u32> {
    let n = bounded(n, 1, CAP)?;
    let mut k = 0;
    while k < 3 {
        // SAFETY: n + 2 < PAY_CAP + 64.
        unsafe { *buf.add((n + k) as usize) = 0 };
        k += 1;
    }
    let n4 = (n + 3) & !3;
    let mut acc = 0u64;
    let mut c = 0u32;
    while c < CAP / 512 {
        let start = c * 512;
        if start < n4 {
            let size = if n4 - start > 512 { 512 } else { n4 - start };
            let size = bounded(size, 4, 512)?;
            // SAFETY: start + size <= PAY_CAP, size a multiple of 4.
            let s = unsafe {
                bpf_csum_diff(
                    core::ptr::null_mut(),
                    0,
                    buf.add(start as usize) as *mut u32,
                    size,
                    0,
                )
            };
            if s < 0 {
                return None;
            }
            acc += s as u32 as u64;
        }
        c += 1;
    }
    let s = ((acc & 0xffff_ffff) + (acc >> 32)) as u32;
    // bpf_csum_diff sums native (little-endian) words: fold, then swap to big-endian.
    Some(fold(s).swap_bytes() as u32)
}

/// Version 4, header checksum valid (the stack would drop the frame otherwise, so the
/// slow path would never answer it).
#[inline(always)]
fn ip_header_ok(h: &[u8; 20]) -> bool {
    let mut s = 0u32;
    let mut i = 0;
    while i < 20 {
        s += be16(h[i], h[i + 1]) as u32;
        i += 2;
    }
    fold(s) == 0xffff
}

/// `x` when `lo <= x <= hi`, with the comparison kept where the verifier sees it: LLVM
/// drops checks it can prove from earlier ones, but the verifier may have lost that
/// knowledge across a spill, so the value is laundered through `black_box` first.
#[inline(always)]
pub fn bounded(x: u32, lo: u32, hi: u32) -> Option<u32> {
    let x = core::hint::black_box(x);
    if x < lo || x > hi {
        None
    } else {
        Some(x)
    }
}

/// Folds a 32-bit one's complement sum to 16 bits.
#[inline(always)]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}
