//! Turns the request frame into the reply, in place: assembles the DHCP message in
//! per-CPU scratch (template bytes, options echoed from the request at the template's
//! insertion points, per-request BOOTP fields), checksums it, resizes the frame and
//! writes Ethernet, IPv4 and UDP headers addressed per RFC 2131 4.1.
//!
//! Everything that can fail happens before the frame is touched, so a failure still
//! passes the original request up intact.
use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    helpers::generated::{
        bpf_csum_diff, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_xdp_adjust_tail,
        bpf_xdp_get_buff_len, bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use boot_common::{
    counter, reason, stamp, EchoSlot, LeaseEvent, Template, ECHO_SLOTS, TEMPLATE_CAP,
};

use crate::{
    decide::Choice,
    frame::{bootp, bounded, fold, Request, BOOTP_FIXED, PORT_PXE, PORT_SERVER},
    maps::{self, Work, TEMPLATES},
    options::Opts,
    prog::Verdict,
};

const PORT_CLIENT: u16 = 68;
const MSG_NAK: u8 = 6;
/// Largest assembled message: a full template and two echoed options, rounded up.
const OUT_MAX: u32 = 768;

const fn other(r: u32) -> Verdict {
    Verdict::pass(counter::PASSED_OTHER, r)
}

/// The template's small fields, copied to the stack.
struct Head {
    len: u32,
    stamp: u16,
    echo: [EchoSlot; ECHO_SLOTS],
    msg_type: u8,
    kind: u8,
    yiaddr: [u8; 4],
}

#[inline(always)]
pub fn send(ctx: &XdpContext, work: &mut Work, choice: &Choice) -> Verdict {
    let Some(t) = TEMPLATES.get_ptr(&choice.template) else {
        return other(reason::NO_TEMPLATE);
    };
    let head = match read_head(t, choice.template) {
        Ok(h) => h,
        Err(v) => return v,
    };
    let out = work.out.as_mut_ptr();
    let opts_buf = work.opts.as_ptr();
    let req = &work.req;
    let opts = &work.o;
    let Some(total) = assemble(out, t, &head, opts, opts_buf) else {
        return other(reason::NO_TEMPLATE);
    };
    // The template must still be the one we started from (ids are never reused while
    // a host entry names them; this catches a reader stalled past the grace period).
    if unsafe { read_volatile(&(*t).id) } != choice.template {
        return other(reason::TORN_ENTRY);
    }
    stamp_fields(out, &head, req);
    let Some(sum) = payload_sum(out, total) else {
        return other(reason::TOO_BIG);
    };
    let nak = head.msg_type == MSG_NAK;
    let (eth, ip) = headers(req, choice, &head, out, total, sum, nak);
    if let Err(v) = write_frame(ctx, req, &eth, &ip, out, total) {
        return v;
    }
    let xid = req.field4(bootp::XID);
    maps::event(&LeaseEvent {
        // SAFETY: no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        mac: req.mac(),
        msg_type: head.msg_type,
        kind: head.kind,
        ip: head.yiaddr,
        xid: u32::from_be_bytes(xid),
        ifindex: ctx.ingress_ifindex() as u32,
        _pad: 0,
    });
    let c = if nak { counter::NAK } else { counter::ANSWERED };
    Verdict::pass(c, crate::prog::NO_REASON)
}

#[inline(always)]
fn read_head(t: *const Template, id: u32) -> Result<Head, Verdict> {
    // SAFETY: t is a live map value; the fields are copied out at once.
    let (tid, head, valid_until) = unsafe {
        (
            read_volatile(&(*t).id),
            Head {
                len: read_volatile(&(*t).len) as u32,
                stamp: read_volatile(&(*t).stamp),
                echo: read_volatile(&(*t).echo),
                msg_type: read_volatile(&(*t).msg_type),
                kind: read_volatile(&(*t).kind),
                yiaddr: read_volatile(&(*t).yiaddr),
            },
            read_volatile(&(*t).valid_until_ns),
        )
    };
    if tid != id {
        return Err(other(reason::TORN_ENTRY));
    }
    if head.len < BOOTP_FIXED + 1 || head.len > TEMPLATE_CAP as u32 {
        return Err(other(reason::NO_TEMPLATE));
    }
    // SAFETY: no preconditions.
    if valid_until != 0 && unsafe { bpf_ktime_get_ns() } > valid_until {
        return Err(other(reason::STALE_TEMPLATE));
    }
    Ok(head)
}

/// Copies `n` bytes from kernel memory `src` to `out[at..]`, within bounds the verifier
/// can see.
#[inline(always)]
fn copy(out: *mut u8, at: u32, src: *const u8, n: u32) -> bool {
    let (Some(at), Some(n)) = (bounded(at, 0, OUT_MAX), bounded(n, 0, TEMPLATE_CAP as u32)) else {
        return false;
    };
    // SAFETY: at + n <= OUT_MAX + TEMPLATE_CAP < OUT_CAP; src is a map value or scratch
    // and the helper faults safely anyway.
    unsafe {
        bpf_probe_read_kernel(out.add(at as usize) as *mut c_void, n, src as *const c_void) == 0
    }
}

/// Template bytes with the request's echoed options inserted. Returns the length.
#[inline(always)]
fn assemble(out: *mut u8, t: *const Template, h: &Head, o: &Opts, ob: *const u8) -> Option<u32> {
    // SAFETY: t is a live map value.
    let tb = unsafe { (*t).buf.as_ptr() };
    let mut pos_t = 0u32;
    let mut pos_o = 0u32;
    let mut i = 0;
    while i < ECHO_SLOTS {
        let e = h.echo[i];
        i += 1;
        let (src, n) = match e.code {
            61 => o.o61,
            97 => o.o97,
            _ => (0, 0),
        };
        if n == 0 {
            continue;
        }
        let at = e.off as u32;
        if at < pos_t || at > h.len {
            return None;
        }
        // SAFETY (both adds): offsets below TEMPLATE_CAP / OPTS_CAP, checked above and by
        // the option walk.
        if !copy(out, pos_o, unsafe { tb.add(pos_t as usize) }, at - pos_t) {
            return None;
        }
        pos_o += at - pos_t;
        pos_t = at;
        if !copy(out, pos_o, unsafe { ob.add((src & 2047) as usize) }, 2 + n) {
            return None;
        }
        pos_o += 2 + n;
    }
    let rest = h.len - pos_t;
    if !copy(out, pos_o, unsafe { tb.add(pos_t as usize) }, rest) {
        return None;
    }
    Some(pos_o + rest)
}

/// Writes the per-request BOOTP fields the template asks for.
#[inline(always)]
fn stamp_fields(out: *mut u8, h: &Head, req: &Request) {
    let put = |from: usize, n: usize| {
        let mut k = 0;
        while k < n {
            // SAFETY: constant offsets below 44.
            unsafe { *out.add(from + k) = req.bootp[from + k] };
            k += 1;
        }
    };
    if h.stamp & stamp::HOPS != 0 {
        put(bootp::HOPS, 1);
    }
    if h.stamp & stamp::XID != 0 {
        put(bootp::XID, 4);
    }
    if h.stamp & stamp::SECS != 0 {
        put(bootp::SECS, 2);
    }
    if h.stamp & stamp::FLAGS != 0 {
        put(bootp::FLAGS, 2);
    }
    if h.stamp & stamp::CIADDR != 0 {
        put(bootp::CIADDR, 4);
    }
    if h.stamp & stamp::GIADDR != 0 {
        put(bootp::GIADDR, 4);
    }
    if h.stamp & stamp::CHADDR != 0 {
        put(bootp::CHADDR, 16);
    }
    if h.stamp & stamp::BCAST_IF_RELAYED != 0 && req.field4(bootp::GIADDR) != [0; 4] {
        // SAFETY: constant offset.
        unsafe { *out.add(bootp::FLAGS) |= 0x80 };
    }
}

/// One's complement sum of the message as a big-endian 16-bit value.
#[inline(always)]
fn payload_sum(out: *mut u8, total: u32) -> Option<u32> {
    let total = bounded(total, BOOTP_FIXED, OUT_MAX - 4)?;
    // Zero the bytes up to the next multiple of 4 (bpf_csum_diff works on 32-bit words).
    let mut k = 0;
    while k < 3 {
        // SAFETY: total + 2 < OUT_MAX < OUT_CAP.
        unsafe { *out.add((total + k) as usize) = 0 };
        k += 1;
    }
    let total4 = (total + 3) & !3;
    let first = if total4 > 512 { 512 } else { total4 };
    // SAFETY: both ranges are inside out (<= OUT_MAX bytes), sizes multiples of 4.
    let s1 = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, out as *mut u32, first, 0) };
    let mut s2 = 0i64;
    if total4 > 512 {
        let n = total4 - 512;
        s2 = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, out.add(512) as *mut u32, n, 0) };
    }
    if s1 < 0 || s2 < 0 {
        return None;
    }
    // bpf_csum_diff sums native (little-endian) words: fold, then swap to big-endian.
    let s = (s1 as u32 as u64) + (s2 as u32 as u64);
    let s = ((s & 0xffff_ffff) + (s >> 32)) as u32;
    Some(fold(s).swap_bytes() as u32)
}

/// Destination per RFC 2131 4.1 (and PXE for port 4011): (MAC, IP, port).
#[inline(always)]
fn destination(req: &Request, out: *const u8, yiaddr: [u8; 4], nak: bool) -> ([u8; 6], [u8; 4], u16) {
    const BCAST: ([u8; 6], [u8; 4], u16) = ([0xff; 6], [0xff; 4], PORT_CLIENT);
    let giaddr = req.field4(bootp::GIADDR);
    let ciaddr = req.field4(bootp::CIADDR);
    // SAFETY: constant offset; the reply's flags after stamping.
    let broadcast = unsafe { *out.add(bootp::FLAGS) } & 0x80 != 0;
    if req.dport == PORT_PXE {
        (req.src_mac, req.ip_src, req.sport)
    } else if giaddr != [0; 4] {
        (req.src_mac, giaddr, PORT_SERVER)
    } else if nak {
        BCAST
    } else if ciaddr != [0; 4] {
        (req.mac(), ciaddr, PORT_CLIENT)
    } else if broadcast || yiaddr == [0; 4] {
        BCAST
    } else {
        (req.mac(), yiaddr, PORT_CLIENT)
    }
}

/// Ethernet header (18 bytes, 14 used when untagged) and IPv4 + UDP headers.
#[inline(always)]
fn headers(
    req: &Request,
    choice: &Choice,
    h: &Head,
    out: *const u8,
    total: u32,
    payload_sum: u32,
    nak: bool,
) -> ([u8; 18], [u8; 28]) {
    let (dmac, dip, dport) = destination(req, out, h.yiaddr, nak);
    let sport = if req.dport == PORT_PXE { PORT_PXE } else { PORT_SERVER };
    let sip = choice.server.ip;
    let smac = choice.server.mac;
    let mut eth = [0u8; 18];
    eth[..6].copy_from_slice(&dmac);
    eth[6..12].copy_from_slice(&smac);
    if req.l2 == 18 {
        eth[12] = 0x81;
        eth[14..16].copy_from_slice(&req.tci.to_be_bytes());
        eth[16] = 0x08;
    } else {
        eth[12] = 0x08;
    }
    let ulen = (8 + total) as u16;
    let tot = ulen + 20;
    let mut ip = [0u8; 28];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&tot.to_be_bytes());
    ip[6] = 0x40; // DF; id 0 (RFC 6864: atomic datagram)
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&sip);
    ip[16..20].copy_from_slice(&dip);
    let mut s = 0u32;
    let mut i = 0;
    while i < 20 {
        s += u16::from_be_bytes([ip[i], ip[i + 1]]) as u32;
        i += 2;
    }
    ip[10..12].copy_from_slice(&(!fold(s)).to_be_bytes());
    ip[20..22].copy_from_slice(&sport.to_be_bytes());
    ip[22..24].copy_from_slice(&dport.to_be_bytes());
    ip[24..26].copy_from_slice(&ulen.to_be_bytes());
    // UDP checksum: pseudo header (addresses, protocol, length), UDP header, payload.
    let w = |a: [u8; 4]| u16::from_be_bytes([a[0], a[1]]) as u32 + u16::from_be_bytes([a[2], a[3]]) as u32;
    let s = w(sip) + w(dip) + 17 + 2 * ulen as u32 + sport as u32 + dport as u32 + payload_sum;
    let mut c = !fold(s);
    if c == 0 {
        c = 0xffff;
    }
    ip[26..28].copy_from_slice(&c.to_be_bytes());
    (eth, ip)
}

/// Resizes the frame to the reply and writes it. Only a failed grow can fail before the
/// frame changes; it leaves the request intact for the slow path.
#[inline(always)]
fn write_frame(
    ctx: &XdpContext,
    req: &Request,
    eth: &[u8; 18],
    ip: &[u8; 28],
    out: *mut u8,
    total: u32,
) -> Result<(), Verdict> {
    let new_len = req.l2 + 28 + total;
    // SAFETY: no preconditions.
    let cur = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as u32;
    let delta = new_len as i32 - cur as i32;
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        let c = if delta > 0 { counter::PASSED_NO_ROOM } else { counter::PASSED_OTHER };
        return Err(Verdict::pass(c, reason::TOO_BIG));
    }
    let Some(total) = bounded(total, 1, OUT_MAX) else {
        return Err(other(reason::TOO_BIG));
    };
    // SAFETY: every source is a stack array or scratch of at least the length given; the
    // helper checks the frame's bounds.
    unsafe {
        let c = ctx.ctx;
        let e = eth.as_ptr() as *mut c_void;
        let r1 = if req.l2 == 18 { bpf_xdp_store_bytes(c, 0, e, 18) } else { bpf_xdp_store_bytes(c, 0, e, 14) };
        let r2 = bpf_xdp_store_bytes(c, req.l2, ip.as_ptr() as *mut c_void, 28);
        let r3 = bpf_xdp_store_bytes(c, req.l2 + 28, out as *mut c_void, total);
        if r1 != 0 || r2 != 0 || r3 != 0 {
            return Err(other(reason::TOO_BIG));
        }
    }
    Ok(())
}
