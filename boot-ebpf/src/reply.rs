//! Turns the request frame into the reply, in place: assembles the DHCP message in
//! per-CPU memory (template bytes, with the request's echoed options or the requested
//! address inserted at the template's insertion points, DNS servers rotated, per-request
//! BOOTP fields stamped), checksums it, resizes the frame and writes Ethernet, IPv4 and
//! UDP headers addressed per RFC 2131 4.1 exactly as the slow path's frame encoder does.
//!
//! Everything that can fail happens before the frame is touched, so a failure still
//! passes the original request up intact.
use core::{
    ffi::c_void,
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    helpers::generated::{
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
        bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use boot_common::{
    counter, insert, reason, stamp, Insert, LeaseEvent, Template, DNS_MAX, INSERTS, TEMPLATE_CAP,
};

use crate::{
    decide::Choice,
    frame::{bootp, bounded, fold, sum_bytes, Request, BOOTP_FIXED, PORT_PXE, PORT_SERVER},
    maps::{self, Work, PAY_CAP, STATS, TEMPLATES},
    prog::{Verdict, NO_REASON},
};

const PORT_CLIENT: u16 = 68;
const MSG_NAK: u8 = 6;
/// Largest assembled message: a full template and two inserts, rounded up.
const OUT_MAX: u32 = 768;
/// Most the frame may grow into its headroom (of XDP's 256 bytes, the kernel keeps room
/// for its own frame descriptor).
const HEAD_GROW_MAX: i32 = 192;
/// RFC 2131 2: every client accepts 576-byte datagrams (548 bytes of DHCP message).
const MIN_DATAGRAM: u32 = 576;

const fn other(r: u32) -> Verdict {
    Verdict::pass(counter::PASSED_OTHER, r)
}

/// The template's small fields, copied to the stack.
struct Head {
    len: u32,
    stamp: u16,
    inserts: [Insert; INSERTS],
    msg_type: u8,
    kind: u8,
    dns_n: u8,
    limited: u8,
    yiaddr: [u8; 4],
    dns_off: u16,
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
    let nak = head.msg_type == MSG_NAK;
    if nak != choice.nak {
        return other(reason::NO_TEMPLATE);
    }
    if nak {
        ip_text(work, choice.wanted_ip);
    }
    let Some(total) = assemble(work, t, &head) else {
        return other(reason::NO_TEMPLATE);
    };
    if !rotate_dns(work.out.as_mut_ptr(), t, &head) {
        return other(reason::NO_TEMPLATE);
    }
    // The template must still be the one we started from (ids are never reused while
    // a host entry names them; this catches a reader stalled past the grace period).
    if unsafe { read_volatile(&(*t).id) } != choice.template {
        return other(reason::TORN_ENTRY);
    }
    // The slow path's size rule: 576-byte datagrams unless option 57 allows more.
    let limit = if (work.o.max_size as u32) > MIN_DATAGRAM { work.o.max_size as u32 } else { MIN_DATAGRAM } - 28;
    if total > limit || (head.limited != 0 && limit > MIN_DATAGRAM - 28) {
        return other(reason::TOO_BIG);
    }
    let out = work.out.as_mut_ptr();
    stamp_fields(out, &head, &work.req);
    let Some(sum) = sum_bytes::<1024>(out, total) else {
        return other(reason::TOO_BIG);
    };
    let req = &work.req;
    let (eth, ip) = headers(req, choice, &head, out, total, sum, nak);
    if let Err(v) = write_frame(ctx, req, &eth, &ip, out, total) {
        return v;
    }
    maps::event(&LeaseEvent {
        // SAFETY: no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        mac: req.mac(),
        msg_type: head.msg_type,
        kind: head.kind,
        ip: if nak { choice.wanted_ip } else { head.yiaddr },
        xid: u32::from_be_bytes(req.field4(bootp::XID)),
        ifindex: ctx.ingress_ifindex() as u32,
        _pad: 0,
    });
    let c = if nak { counter::NAK } else { counter::ANSWERED };
    Verdict::pass(c, NO_REASON)
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
                inserts: read_volatile(&(*t).inserts),
                msg_type: read_volatile(&(*t).msg_type),
                kind: read_volatile(&(*t).kind),
                dns_n: read_volatile(&(*t).dns_n),
                limited: read_volatile(&(*t).limited),
                yiaddr: read_volatile(&(*t).yiaddr),
                dns_off: read_volatile(&(*t).dns_off),
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

/// The requested address in dotted decimal into `work.ip_text`. The length lives in the
/// map value (volatile), so the verifier does not track 81 different lengths.
#[inline(always)]
fn ip_text(work: &mut Work, ip: [u8; 4]) {
    let t = work.ip_text.as_mut_ptr();
    let len = &mut work.ip_text_len as *mut u32;
    // SAFETY: this CPU's working memory; indexes masked to the 32-byte buffer.
    let put = |c: u8| unsafe {
        let n = read_volatile(len);
        *t.add((n & 31) as usize) = c;
        write_volatile(len, n + 1);
    };
    unsafe { write_volatile(len, 0) };
    let mut i = 0;
    while i < 4 {
        let v = ip[i];
        if v >= 100 {
            put(b'0' + v / 100);
        }
        if v >= 10 {
            put(b'0' + (v / 10) % 10);
        }
        put(b'0' + v % 10);
        if i < 3 {
            put(b'.');
        }
        i += 1;
    }
}

/// Copies `n` bytes from kernel memory `src` to `out[at..]`, within bounds the verifier
/// can see.
#[inline(always)]
fn copy(out: *mut u8, at: u32, src: *const u8, n: u32) -> bool {
    let (Some(at), Some(n)) = (bounded(at, 0, OUT_MAX), bounded(n, 0, TEMPLATE_CAP as u32)) else {
        return false;
    };
    // SAFETY: at + n <= OUT_MAX + TEMPLATE_CAP < OUT_CAP; src is a map value and the
    // helper faults safely anyway.
    unsafe {
        bpf_probe_read_kernel(out.add(at as usize) as *mut c_void, n, src as *const c_void) == 0
    }
}

/// Template bytes with the inserts applied. Returns the message length.
#[inline(always)]
fn assemble(work: &mut Work, t: *const Template, h: &Head) -> Option<u32> {
    let out = work.out.as_mut_ptr();
    // SAFETY: t is a live map value.
    let tb = unsafe { (*t).buf.as_ptr() };
    let mut pos_t = 0u32;
    let mut pos_o = 0u32;
    let mut i = 0;
    while i < INSERTS {
        let slot = h.inserts[i];
        i += 1;
        let (src, n, patch_len) = match slot.what {
            insert::ECHO_61 if work.o.o61.1 != 0 => (work.o.o61.0, 2 + work.o.o61.1, false),
            insert::ECHO_97 if work.o.o97.1 != 0 => (work.o.o97.0, 2 + work.o.o97.1, false),
            insert::REQUESTED_IP_TEXT => (u32::MAX, unsafe { read_volatile(&work.ip_text_len) }, true),
            _ => continue,
        };
        let at = slot.off as u32;
        if at < pos_t.max(1) || at > h.len {
            return None;
        }
        // SAFETY (adds below): offsets bounded by TEMPLATE_CAP and PAY_CAP masks.
        if !copy(out, pos_o, unsafe { tb.add((pos_t & 1023) as usize) }, at - pos_t) {
            return None;
        }
        pos_o += at - pos_t;
        pos_t = at;
        let from = if src == u32::MAX {
            work.ip_text.as_ptr()
        } else {
            unsafe { work.pay.as_ptr().add(src as usize & (PAY_CAP - 1)) }
        };
        if !copy(out, pos_o, from, n) {
            return None;
        }
        if patch_len {
            // The option holding the text (its length byte ends the chunk before).
            let lb = bounded(pos_o - 1, 0, OUT_MAX)?;
            // SAFETY: lb < OUT_MAX.
            unsafe { *out.add(lb as usize) += n as u8 };
        }
        pos_o += n;
    }
    let rest = h.len - pos_t;
    if !copy(out, pos_o, unsafe { tb.add((pos_t & 1023) as usize) }, rest) {
        return None;
    }
    Some(pos_o + rest)
}

/// Rotates option 6's servers left by this CPU's reply count, as the slow path rotates
/// them per reply. The compiler puts the list before every insertion point, so its
/// offset is the same in the template and in the message.
#[inline(always)]
fn rotate_dns(out: *mut u8, t: *const Template, h: &Head) -> bool {
    let n = h.dns_n as u32;
    if n == 0 {
        return true;
    }
    let Some(off) = bounded(h.dns_off as u32, BOOTP_FIXED, (TEMPLATE_CAP - 4 * DNS_MAX) as u32) else {
        return false;
    };
    if n > DNS_MAX as u32 {
        return false;
    }
    let r = STATS.get_ptr(counter::ANSWERED).map(|p| unsafe { *p }).unwrap_or(0) as u32;
    // SAFETY: t is a live map value.
    let tb = unsafe { (*t).buf.as_ptr() };
    let mut i = 0u32;
    while i < DNS_MAX as u32 {
        if i >= n {
            break;
        }
        let Some(j) = bounded((i + r) % n, 0, DNS_MAX as u32 - 1) else {
            return false;
        };
        let mut k = 0;
        while k < 4 {
            // SAFETY: off + 4 * 8 <= TEMPLATE_CAP, inside both buffers.
            unsafe { *out.add((off + 4 * i + k) as usize) = *tb.add((off + 4 * j + k) as usize) };
            k += 1;
        }
        i += 1;
    }
    true
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

/// Destination per RFC 2131 4.1 (and PXE for port 4011): (MAC, IP, port), as the slow
/// path's `reply::destination` and `frame::endpoint` choose it.
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
        (req.src_mac, ciaddr, PORT_CLIENT)
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
    let mut eth = [0u8; 18];
    eth[..6].copy_from_slice(&dmac);
    eth[6..12].copy_from_slice(&choice.server.mac);
    if req.l2 == 18 {
        eth[12] = 0x81;
        eth[14..16].copy_from_slice(&req.vlan().to_be_bytes()); // VLAN id, priority 0
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
    let Some(total) = bounded(total, 1, OUT_MAX) else {
        return Err(other(reason::TOO_BIG));
    };
    let new_len = req.l2 + 28 + total;
    // SAFETY: no preconditions.
    let cur = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as u32;
    let delta = new_len as i32 - cur as i32;
    // Grow at the tail, else into the headroom (drivers keep 256 bytes there for XDP;
    // veth often has no tailroom): the whole frame is rewritten anyway.
    // SAFETY: the helpers check their bounds; packet pointers are not used afterwards.
    let resized = unsafe {
        delta == 0
            || bpf_xdp_adjust_tail(ctx.ctx, delta) == 0
            || (delta > 0 && delta <= HEAD_GROW_MAX && bpf_xdp_adjust_head(ctx.ctx, -delta) == 0)
    };
    if !resized {
        let c = if delta > 0 { counter::PASSED_NO_ROOM } else { counter::PASSED_OTHER };
        return Err(Verdict::pass(c, reason::TOO_BIG));
    }
    // SAFETY: every source is a stack array or working memory of at least the length
    // given; the helper checks the frame's bounds.
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
