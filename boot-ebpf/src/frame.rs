//! Bounds-checked header parsing: Ethernet (+ one 802.1Q tag), IPv4, UDP, BOOTP.
//!
//! Every read goes through `bpf_xdp_load_bytes`, which checks the frame's bounds at run
//! time, so the verifier never has to follow packet pointers at data-dependent offsets.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use boot_common::{counter, reason};

use crate::maps::OPTS_CAP;

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
    pub const SECS: usize = 8;
    pub const FLAGS: usize = 10;
    pub const CIADDR: usize = 12;
    pub const GIADDR: usize = 24;
    pub const CHADDR: usize = 28;
    /// Bytes of the header the program keeps (op .. chaddr).
    pub const KEPT: usize = 44;
}

/// What the program keeps of a request frame (lives in per-CPU scratch: the stack is
/// only 512 bytes).
#[repr(C)]
pub struct Request {
    /// Length of the Ethernet header: 14, or 18 with an 802.1Q tag.
    pub l2: u32,
    /// The 802.1Q tag control (priority and VLAN id), 0 when untagged.
    pub tci: u16,
    pub src_mac: [u8; 6],
    pub ip_src: [u8; 4],
    pub ip_dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    /// Bytes of the options area (after the magic cookie, up to the UDP length).
    pub opts_len: u32,
    /// The BOOTP header from `op` to `chaddr`, raw.
    pub bootp: [u8; bootp::KEPT],
}

impl Request {
    pub fn vlan(&self) -> u16 {
        self.tci & 0x0fff
    }
    pub fn field4(&self, off: usize) -> [u8; 4] {
        [self.bootp[off], self.bootp[off + 1], self.bootp[off + 2], self.bootp[off + 3]]
    }
    pub fn mac(&self) -> [u8; 6] {
        let c = bootp::CHADDR;
        let b = &self.bootp;
        [b[c], b[c + 1], b[c + 2], b[c + 3], b[c + 4], b[c + 5]]
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

/// Parses the headers of a frame addressed to a DHCP server port.
#[inline(always)]
pub fn parse(ctx: &XdpContext, out: &mut Request) -> Result<(), Verdict> {
    let mut eth = [0u8; 18];
    if !load(ctx, 0, &mut eth) {
        return Err(NOT_DHCP);
    }
    let (l2, tci) = match (eth[12], eth[13]) {
        (0x08, 0x00) => (14u32, 0u16),
        (0x81, 0x00) if eth[16] == 0x08 && eth[17] == 0x00 => (18, be16(eth[14], eth[15])),
        _ => return Err(NOT_DHCP),
    };
    let mut h = [0u8; 28];
    if !load(ctx, l2, &mut h) || h[0] >> 4 != 4 || h[9] != 17 {
        return Err(NOT_DHCP);
    }
    let ihl = ((h[0] & 0x0f) as u32) * 4;
    let frag = be16(h[6], h[7]);
    if ihl < 20 || frag & 0x1fff != 0 {
        return Err(NOT_DHCP); // no UDP header to look at
    }
    let mut udp = [h[20], h[21], h[22], h[23], h[24], h[25]];
    if ihl != 20 {
        let mut u = [0u8; 6];
        if !load(ctx, l2 + (ihl & 0x3c), &mut u) {
            return Err(NOT_DHCP);
        }
        udp = u;
    }
    let dport = be16(udp[2], udp[3]);
    if dport != PORT_SERVER && dport != PORT_PXE {
        return Err(NOT_DHCP);
    }
    // Addressed to a DHCP port: from here on a frame is a request, malformed, or unusual.
    if ihl != 20 || frag & 0x2000 != 0 {
        return Err(other(reason::UNUSUAL)); // IP options or a fragment: the slow path copes
    }
    if !ip_header_ok(&h) {
        return Err(malformed(reason::BAD_IP));
    }
    // SAFETY: no preconditions; returns a plain scalar (unlike data_end - data).
    let buff_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as u32;
    let tot = be16(h[2], h[3]) as u32;
    let ulen = be16(udp[4], udp[5]) as u32;
    if tot < 28 || l2 + tot > buff_len || ulen < 8 || ulen > tot - 20 {
        return Err(malformed(reason::TRUNCATED));
    }
    if ulen < 8 + BOOTP_FIXED {
        return Err(malformed(reason::BAD_BOOTP));
    }
    let mut cookie = [0u8; 4];
    let pay = l2 + 28;
    let bootp = &mut out.bootp;
    if !load(ctx, pay, bootp) || !load(ctx, pay + 236, &mut cookie) {
        return Err(malformed(reason::TRUNCATED));
    }
    if cookie != [99, 130, 83, 99] {
        return Err(malformed(reason::BAD_BOOTP));
    }
    if bootp[bootp::OP] != 1 {
        return Err(other(reason::NOT_REQUEST));
    }
    if bootp[bootp::HTYPE] != 1 || bootp[bootp::HLEN] != 6 {
        return Err(other(reason::UNUSUAL));
    }
    let opts_len = ulen - 8 - BOOTP_FIXED;
    if opts_len == 0 {
        return Err(malformed(reason::BAD_OPTIONS)); // not even an END option
    }
    if opts_len > OPTS_CAP as u32 {
        return Err(other(reason::UNUSUAL));
    }
    out.l2 = l2;
    out.tci = tci;
    out.src_mac = [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]];
    out.ip_src = [h[12], h[13], h[14], h[15]];
    out.ip_dst = [h[16], h[17], h[18], h[19]];
    out.sport = be16(udp[0], udp[1]);
    out.dport = dport;
    out.opts_len = opts_len;
    Ok(())
}

/// Version 4, header checksum valid (the stack would drop the frame otherwise, so the
/// slow path would never answer it).
#[inline(always)]
fn ip_header_ok(h: &[u8; 28]) -> bool {
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
