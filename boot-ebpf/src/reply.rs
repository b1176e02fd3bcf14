//! Turns the request frame into the reply, in place. The DHCP message is the template's
//! head, the insert (the request's option 97, or the requested address in a NAK's
//! message), and the template's tail, written straight into the frame; the BOOTP
//! fields that differ per request are stamped into the first 44 bytes and the DNS list
//! rotated. The UDP checksum is the template's precomputed sums plus what changed.
//! Ethernet, IPv4 and UDP headers are addressed per RFC 2131 4.1 exactly as the slow
//! path's frame encoder does.
//!
//! Everything that can fail happens before the frame is touched, so a failure still
//! passes the original request up intact.
use core::{
    ffi::c_void,
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    helpers::generated::{
        bpf_csum_diff, bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
        bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use boot_common::{
    counter, field, insert, reason, stamp, Hole, LeaseEvent, Template, DNS_MAX, ECHO_MAX, HEAD_CAP,
    HOLES, PATCH_CAP, TAIL_CAP,
};

use crate::{
    decide::Choice,
    frame::{bounded, fold, Request, BOOTP_FIXED, PORT_SERVER},
    maps::{self, Out, Patch, Work, IP, MSG, OUT_CAP, PAY_CAP, STATS, TEMPLATES},
    options::Opts,
    prog::{Verdict, NO_REASON},
};

const PORT_CLIENT: u16 = 68;
const MSG_NAK: u8 = 6;
/// RFC 2131 2: every client accepts 576-byte datagrams (548 bytes of DHCP message).
const MIN_DATAGRAM: u32 = 576;
/// Most the frame may grow into its headroom (of XDP's 256 bytes, the kernel keeps room
/// for its own frame descriptor).
const HEAD_GROW_MAX: i32 = 192;
/// Longest insert: option 97 with its code and length bytes.
const INSERT_MAX: u32 = 2 + ECHO_MAX as u32;

const fn other(r: u32) -> Verdict {
    Verdict::pass(counter::PASSED_OTHER, r)
}

/// The template's small fields, copied out at once (into per-CPU memory: the stack
/// is too small for everything the answer needs).
#[repr(C)]
pub struct Head {
    /// The coarse clock when the template was read (one helper call serves the deadline
    /// check and the lease event).
    now_ns: u64,
    head_len: u32,
    tail_len: u32,
    stamp: u16,
    insert: u8,
    msg_type: u8,
    kind: u8,
    dns_n: u8,
    limited: u8,
    yiaddr: [u8; 4],
    dns_off: u16,
    sum_head: u16,
    sum_tail: u16,
    /// Per-host fields to fill in from the host's patch.
    holes: [Hole; HOLES],
}

/// What goes between head and tail for this request.
struct Insert {
    /// Bytes inserted (0: none).
    len: u32,
    /// Their one's complement sum as placed at the end of the head.
    sum: u32,
    /// Offset of the source in `Work::pay` (option 97), or u32::MAX for `Work::ip_text`.
    src: u32,
}

#[inline(always)]
fn swap16(x: u32) -> u32 {
    (x as u16).swap_bytes() as u32
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u32 {
    u16::from_be_bytes([b[at], b[at + 1]]) as u32
}

#[inline(always)]
pub fn send(ctx: &XdpContext, work: &mut Work, choice: &Choice) -> Verdict {
    let Some(t) = TEMPLATES.get_ptr(choice.template) else {
        return other(reason::NO_TEMPLATE);
    };
    work.h = match read_head(t, choice) {
        Ok(h) => h,
        Err(v) => return v,
    };
    let h = &work.h;
    let nak = h.msg_type == MSG_NAK;
    if nak != choice.nak || !holes_ok(h, choice) {
        return other(reason::NO_TEMPLATE);
    }
    let Some(ins) = insert_of(
        &work.o,
        &mut work.pay,
        &mut work.ip_text,
        &mut work.ip_text_len,
        h,
        choice,
    ) else {
        return other(reason::NO_TEMPLATE);
    };
    let total = h.head_len + ins.len + h.tail_len;
    // The slow path's size rule: 576-byte datagrams unless option 57 allows more.
    let max = work.o.max_size as u32;
    let limit = if max > MIN_DATAGRAM {
        max
    } else {
        MIN_DATAGRAM
    } - 28;
    if total > limit || (h.limited != 0 && limit > MIN_DATAGRAM - 28) {
        return other(reason::TOO_BIG);
    }
    first_48(t, h, &work.req, &mut work.out);
    let sum = payload_sum(h, &ins, &work.out) + holes_sum(h, choice);
    headers(&work.req, choice, h, total, sum, nak, &mut work.out);
    let Some(tail_left) = compose(ctx, work, t, &ins) else {
        return other(reason::TOO_BIG);
    };
    if let Err(v) = resize(ctx, work.req.l2 + 28 + total) {
        return v;
    }
    if !write(ctx, work, t, total - tail_left, tail_left) {
        // The frame is already resized, maybe rewritten in part: pass it up; the slow
        // path's parser refuses it, and the client retransmits.
        return other(reason::TOO_BIG);
    }
    let (req, h) = (&work.req, &work.h);
    maps::event(&LeaseEvent {
        time_ns: h.now_ns,
        mac: req.mac,
        msg_type: h.msg_type,
        kind: h.kind,
        ip: if nak { choice.wanted_ip } else { h.yiaddr },
        xid: u32::from_be_bytes(req.xid),
        ifindex: ctx.ingress_ifindex() as u32,
        _pad: 0,
    });
    Verdict::pass(
        if nak { counter::NAK } else { counter::ANSWERED },
        NO_REASON,
    )
}

#[inline(always)]
fn read_head(t: *const Template, choice: &Choice) -> Result<Head, Verdict> {
    let id = choice.template;
    // SAFETY: t is a live map value; the fields are copied out at once.
    let (tid, h, valid_until) = unsafe {
        (
            read_volatile(&(*t).id),
            Head {
                // The tick's resolution (1-4 ms) is plenty for deadlines minutes away and
                // for an event log, and the coarse clock reads no hardware counter (a
                // serializing TSC read costs more than a tenth of the rest of an answer
                // here).
                // SAFETY: no preconditions.
                now_ns: bpf_ktime_get_coarse_ns(),
                head_len: read_volatile(&(*t).head_len) as u32,
                tail_len: read_volatile(&(*t).tail_len) as u32,
                stamp: read_volatile(&(*t).stamp),
                insert: read_volatile(&(*t).insert),
                msg_type: read_volatile(&(*t).msg_type),
                kind: read_volatile(&(*t).kind),
                dns_n: read_volatile(&(*t).dns_n),
                limited: read_volatile(&(*t).limited),
                yiaddr: read_volatile(&(*t).yiaddr),
                dns_off: read_volatile(&(*t).dns_off),
                sum_head: read_volatile(&(*t).sum_head),
                sum_tail: read_volatile(&(*t).sum_tail),
                holes: read_volatile(&(*t).holes),
            },
            read_volatile(&(*t).valid_until_ns),
        )
    };
    if tid != id {
        return Err(other(reason::TORN_ENTRY));
    }
    if h.head_len < BOOTP_FIXED + 1 || h.head_len > HEAD_CAP as u32 || h.tail_len > TAIL_CAP as u32
    {
        return Err(other(reason::NO_TEMPLATE));
    }
    // The coarse clock lags by at most a tick: deadlines are minutes away from the
    // daemon's refresh.
    if valid_until != 0 && h.now_ns > valid_until
        || choice.valid_until_ns != 0 && h.now_ns > choice.valid_until_ns
    {
        return Err(other(reason::STALE_TEMPLATE));
    }
    let mut h = h;
    if h.stamp & stamp::YIADDR != 0 {
        h.yiaddr = choice.host_ip;
    }
    Ok(h)
}

/// Every hole of the template names a field the host has, of the hole's length, inside
/// the head past its first 48 bytes (where `compose` writes).
#[inline(always)]
fn holes_ok(h: &Head, choice: &Choice) -> bool {
    let mut i = 0;
    while i < HOLES {
        let hole = h.holes[i];
        i += 1;
        if hole.len == 0 {
            continue;
        }
        let f = hole.field as usize;
        if f >= field::COUNT
            || choice.field_len[f & 1] != hole.len
            || hole.len as usize > field::CAP[f & 1]
            || (hole.off as u32) < 48
            || hole.off as u32 + hole.len as u32 > h.head_len
        {
            return false;
        }
    }
    true
}

/// One's complement sum of the holes' bytes, from the host's precomputed field sums
/// (made for an even offset: swapped for an odd one).
#[inline(always)]
fn holes_sum(h: &Head, choice: &Choice) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i < HOLES {
        let hole = h.holes[i];
        i += 1;
        if hole.len == 0 {
            continue;
        }
        let v = choice.field_sum[hole.field as usize & 1] as u32;
        s += if hole.off & 1 == 1 { swap16(v) } else { v };
    }
    s
}

/// Fills the holes of the head (already in `out`) from the host's patch (checked by
/// `holes_ok`), byte by byte: the offsets are arbitrary.
#[inline(always)]
fn fill_holes(h: &Head, patch: &Patch, out: &mut Out) {
    let mut i = 0;
    while i < HOLES {
        let hole = h.holes[i];
        i += 1;
        if hole.len == 0 {
            continue;
        }
        let at = MSG as u32 + hole.off as u32;
        let n = hole.len as u32;
        if hole.field == field::NAME {
            let from = field::START[field::NAME as usize] as u32;
            copy_bytes::<{ field::CAP[0] as u32 }>(out, at, n, |k| {
                patch.0[((from + k) as usize) & (PATCH_CAP - 1)]
            });
        } else {
            let from = field::START[field::URL as usize] as u32;
            copy_bytes::<{ field::CAP[1] as u32 }>(out, at, n, |k| {
                patch.0[((from + k) as usize) & (PATCH_CAP - 1)]
            });
        }
    }
}

/// The insert for this request and its checksum contribution.
#[inline(always)]
fn insert_of(
    o: &Opts,
    pay: &mut [u8; PAY_CAP + 128],
    text: &mut [u8; 16],
    text_len: &mut u32,
    h: &Head,
    choice: &Choice,
) -> Option<Insert> {
    let odd = h.head_len & 1 == 1;
    match h.insert {
        insert::ECHO_97 if o.o97.1 != 0 => {
            let off = o.o97.0 & (PAY_CAP as u32 - 1);
            let len = bounded(2 + o.o97.1, 3, INSERT_MAX)?;
            let sum = echo_sum(pay, off, len)?;
            Some(Insert {
                len,
                sum: if odd { swap16(sum) } else { sum },
                src: off,
            })
        }
        insert::REQUESTED_IP_TEXT => {
            ip_text(text, text_len, choice.wanted_ip);
            // SAFETY: this CPU's working memory; 16 bytes, a multiple of 4.
            let len = unsafe { read_volatile(text_len) };
            let s = unsafe {
                bpf_csum_diff(
                    core::ptr::null_mut(),
                    0,
                    text.as_mut_ptr() as *mut u32,
                    16,
                    0,
                )
            };
            if s < 0 {
                return None;
            }
            let sum = fold_csum(s as u32) as u32;
            Some(Insert {
                len,
                sum: if odd { swap16(sum) } else { sum },
                src: u32::MAX,
            })
        }
        _ => Some(Insert {
            len: 0,
            sum: 0,
            src: 0,
        }),
    }
}

/// `bpf_csum_diff` sums native (little-endian) 32-bit words: fold, then swap to
/// big-endian.
#[inline(always)]
fn fold_csum(s: u32) -> u16 {
    fold(s).swap_bytes()
}

/// Sum of the `len` bytes at `pay[off..]` (an option of the request). The helper sums
/// whole words, so the up to 3 bytes after the option are taken out again.
#[inline(always)]
fn echo_sum(pay: &mut [u8; PAY_CAP + 128], off: u32, len: u32) -> Option<u32> {
    let n4 = bounded((len + 3) & !3, 4, INSERT_MAX + 3)?;
    let p = pay.as_mut_ptr();
    // SAFETY: off < PAY_CAP and n4 <= 68 stay inside pay (PAY_CAP + 128 bytes).
    let s = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            p.add(off as usize) as *mut u32,
            n4,
            0,
        )
    };
    if s < 0 {
        return None;
    }
    let mut extra = 0u32;
    let mut k = len;
    while k < n4 {
        let b = pay[((off + k) as usize) & (PAY_CAP - 1)] as u32;
        extra += if k & 1 == 0 { b << 8 } else { b };
        k += 1;
    }
    // One's complement subtraction: add the complement.
    Some(fold(fold_csum(s as u32) as u32 + (0xffff - extra)) as u32)
}

/// The requested address in dotted decimal into `work.ip_text` (zero-padded). The
/// length lives in the map value (volatile), so the verifier does not track the 81
/// possible lengths as separate states.
#[inline(always)]
fn ip_text(text: &mut [u8; 16], text_len: &mut u32, ip: [u8; 4]) {
    let t = text.as_mut_ptr();
    let len = text_len as *mut u32;
    // SAFETY: this CPU's working memory; indexes masked to the 16-byte buffer.
    let put = |c: u8| unsafe {
        let n = read_volatile(len);
        *t.add((n & 15) as usize) = c;
        write_volatile(len, n + 1);
    };
    // Byte by byte: a volatile store of the whole array would be a memset call.
    let mut k = 0;
    while k < 16 {
        unsafe { write_volatile(t.add(k), 0) };
        k += 1;
    }
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

/// The message's first 48 bytes (op .. chaddr, and sname's first 4) into
/// `out[MSG..]`: the template's, stamped.
#[inline(always)]
fn first_48(t: *const Template, h: &Head, req: &Request, out: &mut Out) {
    // SAFETY: the head holds at least 241 bytes; both are 8-byte aligned.
    unsafe {
        let w = read_volatile((*t).head.as_ptr() as *const [u64; 6]);
        write_volatile(out.0.as_mut_ptr().add(MSG) as *mut [u64; 6], w);
    }
    // Words where `Request` keeps the fields at aligned offsets, as the message has them.
    let put = |out: &mut Out, at: usize, v: [u8; 4]| out.set_word(MSG + at, u32::from_ne_bytes(v));
    if h.stamp & stamp::XID != 0 {
        put(out, 4, req.xid);
    }
    if h.stamp & stamp::FLAGS != 0 {
        // SAFETY: MSG + 10 is even, in the 8-byte aligned buffer.
        unsafe {
            let p = out.0.as_mut_ptr().add(MSG + 10);
            core::ptr::write(p as *mut u16, u16::from_ne_bytes(req.flags));
        }
    }
    if h.stamp & stamp::CIADDR != 0 {
        put(out, 12, req.ciaddr);
    }
    if h.stamp & stamp::GIADDR != 0 {
        put(out, 24, req.giaddr);
    }
    if h.stamp & stamp::BCAST_IF_RELAYED != 0 && req.giaddr != [0; 4] {
        out.0[MSG + 10] |= 0x80;
    }
    if h.stamp & stamp::YIADDR != 0 {
        put(out, 16, h.yiaddr);
    }
    if h.stamp & stamp::CHADDR != 0 {
        let mut k = 0;
        while k < 6 {
            out.0[MSG + 28 + k] = req.mac[k];
            k += 1;
        }
    }
}

/// One's complement sum of the reply's DHCP message (big-endian words, unfolded).
#[inline(always)]
fn payload_sum(h: &Head, ins: &Insert, out: &Out) -> u32 {
    // The template has zeros where stamps go: add what was stamped (xid, flags, ciaddr,
    // giaddr), summed as native words and swapped once (RFC 1071: the sum does not
    // depend on byte order but for a final swap).
    let w = |at: usize| out.word(MSG + at);
    let (x, f, c, g) = (w(4), w(8) >> 16, w(12), w(24));
    let mut native =
        (x & 0xffff) + (x >> 16) + f + (c & 0xffff) + (c >> 16) + (g & 0xffff) + (g >> 16);
    if h.stamp & stamp::YIADDR != 0 {
        let y = w(16);
        native += (y & 0xffff) + (y >> 16);
    }
    if h.stamp & stamp::CHADDR != 0 {
        // chaddr's 6 bytes: a word and the first half of the next (native order: the
        // low half).
        let (a, b) = (w(28), w(32));
        native += (a & 0xffff) + (a >> 16) + (b & 0xffff);
    }
    let stamped = fold(native).swap_bytes() as u32;
    let tail = if ins.len & 1 == 1 {
        swap16(h.sum_tail as u32)
    } else {
        h.sum_tail as u32
    };
    let mut s = h.sum_head as u32 + stamped + ins.sum + tail;
    if h.insert == insert::REQUESTED_IP_TEXT {
        // The length byte that ends the head grows by the text's length.
        let at = h.head_len - 1;
        s += if at & 1 == 0 { ins.len << 8 } else { ins.len };
    }
    s
}

/// Destination per RFC 2131 4.1: (MAC, IP, port), as the slow
/// path's `reply::destination` and `frame::endpoint` choose it.
#[inline(always)]
fn destination(
    req: &Request,
    broadcast: bool,
    yiaddr: [u8; 4],
    nak: bool,
) -> ([u8; 6], [u8; 4], u16) {
    const BCAST: ([u8; 6], [u8; 4], u16) = ([0xff; 6], [0xff; 4], PORT_CLIENT);
    if req.giaddr != [0; 4] {
        (req.src_mac, req.giaddr, PORT_SERVER)
    } else if nak {
        BCAST
    } else if req.ciaddr != [0; 4] {
        (req.src_mac, req.ciaddr, PORT_CLIENT)
    } else if broadcast || yiaddr == [0; 4] {
        BCAST
    } else {
        (req.mac, yiaddr, PORT_CLIENT)
    }
}

/// Ethernet, IPv4 and UDP headers into `out[..MSG]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn headers(
    req: &Request,
    choice: &Choice,
    h: &Head,
    total: u32,
    payload_sum: u32,
    nak: bool,
    hdr: &mut Out,
) {
    // The reply's flags, after stamping.
    let broadcast = hdr.0[MSG + 10] & 0x80 != 0;
    // Through the stack: copied straight from the request (in the same map value as
    // `hdr`), the MACs would go through a memmove call.
    let (dmac, dip, dport) = core::hint::black_box(destination(req, broadcast, h.yiaddr, nak));
    let sport = PORT_SERVER;
    let sip = choice.server.ip;
    let put = |b: &mut Out, at: usize, v: &[u8]| {
        let mut k = 0;
        while k < v.len() {
            b.0[at + k] = v[k];
            k += 1;
        }
    };
    if req.l2 == 18 {
        put(hdr, 2, &dmac);
        put(hdr, 8, &choice.server.mac);
        put(hdr, 14, &[0x81, 0]);
        put(hdr, 16, &req.vlan().to_be_bytes()); // VLAN id, priority 0
    } else {
        put(hdr, 6, &dmac);
        put(hdr, 12, &choice.server.mac);
    }
    put(hdr, 18, &[0x08, 0]);
    let ulen = (8 + total) as u16;
    let w = |a: [u8; 4]| be16(&a, 0) + be16(&a, 2);
    let s = 0x4500 + (ulen as u32 + 20) + 0x4000 + 0x4011 + w(sip) + w(dip);
    // UDP checksum: pseudo header (addresses, protocol, length), UDP header, payload.
    let u = w(sip) + w(dip) + 17 + 2 * ulen as u32 + sport as u32 + dport as u32 + payload_sum;
    let mut c = !fold(fold(u) as u32);
    if c == 0 {
        c = 0xffff;
    }
    // IPv4 and UDP in aligned big-endian words (seven stores, not 28 byte stores).
    let word = |b: &mut Out, at: usize, v: u32| b.set_word(at, v.to_be());
    let i = IP;
    word(hdr, i, 0x4500_0000 | (ulen as u32 + 20));
    word(hdr, i + 4, 0x0000_4000); // id 0, DF (RFC 6864: atomic datagram)
    word(hdr, i + 8, 0x4011_0000 | !fold(s) as u32); // TTL 64, UDP, header checksum
    word(hdr, i + 12, u32::from_be_bytes(sip));
    word(hdr, i + 16, u32::from_be_bytes(dip));
    word(hdr, i + 20, (sport as u32) << 16 | dport as u32);
    word(hdr, i + 24, (ulen as u32) << 16 | c as u32);
}

/// Resizes the frame to `new_len`: shrink or grow at the tail, else grow into the
/// headroom (drivers keep 256 bytes there for XDP; veth often has no tailroom). Only a
/// failed grow can fail, and it leaves the request intact. The program is loaded
/// without multi-buffer support, so the frame is all in `data..data_end`.
#[inline(always)]
fn resize(ctx: &XdpContext, new_len: u32) -> Result<(), Verdict> {
    // SAFETY: the helpers check their bounds; packet pointers are not used afterwards.
    let ok = unsafe {
        let delta = new_len as i32 - (ctx.data_end() - ctx.data()) as i32;
        delta == 0
            || bpf_xdp_adjust_tail(ctx.ctx, delta) == 0
            || (delta > 0 && delta <= HEAD_GROW_MAX && bpf_xdp_adjust_head(ctx.ctx, -delta) == 0)
    };
    if ok {
        Ok(())
    } else {
        Err(Verdict::pass(counter::PASSED_NO_ROOM, reason::TOO_BIG))
    }
}

#[inline(always)]
fn store(ctx: &XdpContext, off: u32, src: *const u8, len: u32) -> bool {
    // SAFETY: callers pass a source of at least `len` readable bytes; the helper checks
    // the frame's bounds.
    unsafe { bpf_xdp_store_bytes(ctx.ctx, off, src as *mut c_void, len) == 0 }
}

/// Writes the composed reply (`composed` bytes of message) into the frame with one store,
/// and then the tail's `tail_left` bytes, when they were not composed.
#[inline(always)]
fn write(ctx: &XdpContext, work: &Work, t: *const Template, composed: u32, tail_left: u32) -> bool {
    let l2 = work.req.l2;
    let start = if l2 == 18 { 2 } else { 6 };
    let Some(len) = bounded(
        l2 + 28 + composed,
        14 + 28 + BOOTP_FIXED + 1,
        (OUT_CAP - 2) as u32,
    ) else {
        return false;
    };
    // SAFETY: start + len <= OUT_CAP.
    if !store(ctx, 0, unsafe { work.out.0.as_ptr().add(start) }, len) {
        return false;
    }
    if tail_left == 0 {
        return true;
    }
    let Some(n) = bounded(tail_left, 1, TAIL_CAP as u32) else {
        return false;
    };
    // SAFETY: t is a live map value with TAIL_CAP bytes of tail.
    store(ctx, l2 + 28 + composed, unsafe { (*t).tail.as_ptr() }, n)
}

/// Longest tail composed with the rest; a longer one (a NAK's message text) gets a store
/// of its own.
const TAIL_INLINE: u32 = 16;

/// Copies `n` bytes to `out[at..]` one by one, byte k from `get(k)`: for the short
/// pieces at unaligned offsets (the BPF target splits unaligned wider accesses into bytes
/// anyway).
#[inline(always)]
fn copy_bytes<const MAX: u32>(out: &mut Out, at: u32, n: u32, get: impl Fn(u32) -> u8) {
    let mut k = 0u32;
    while k < MAX {
        if k >= n {
            break;
        }
        out.0[(at + k) as usize & (OUT_CAP - 1)] = get(k);
        k += 1;
    }
}

/// The rest of the message into `out`: the head after its first 48 bytes, the rotated
/// DNS list, the insert, and a short tail. Returns the bytes of tail still to store.
#[inline(always)]
fn compose(ctx: &XdpContext, work: &mut Work, t: *const Template, ins: &Insert) -> Option<u32> {
    let l2 = work.req.l2;
    let Work {
        out,
        h,
        ip_text,
        patch,
        ..
    } = work;
    let m = MSG as u32;
    // SAFETY: t is a live map value.
    let (head, tail) = unsafe { ((*t).head.as_ptr(), (*t).tail.as_ptr()) };
    let rest = bounded(h.head_len - 48, 0, HEAD_CAP as u32 - 48)?;
    // The head in aligned words (both sides are 8-byte aligned at 48); up to 7 bytes
    // past it are written over below, or lie past the reply.
    // SAFETY: head + 48 has HEAD_CAP - 48 bytes; out has MSG + HEAD_CAP + 8.
    unsafe {
        let src = head.add(48) as *const u64;
        let dst = out.0.as_mut_ptr().add(MSG + 48) as *mut u64;
        // Four words a step (up to 31 bytes too many: into the template's tail field,
        // and over what is written next).
        let mut i = 0u32;
        while i < (HEAD_CAP as u32 - 48) / 8 {
            if 8 * i >= rest {
                break;
            }
            // Volatile: a plain loop would become a memcpy call of variable length,
            // which BPF does not have.
            let mut k = 0;
            while k < 4 {
                let w = (i + k) as usize;
                write_volatile(dst.add(w), *src.add(w));
                k += 1;
            }
            i += 4;
        }
    }
    if h.dns_n != 0 && !rotate_dns(t, h, out) {
        return None;
    }
    fill_holes(h, patch, out);
    let head_len = bounded(h.head_len, BOOTP_FIXED + 1, HEAD_CAP as u32)?;
    if ins.len != 0 {
        let n = bounded(ins.len, 1, INSERT_MAX)?;
        if ins.src == u32::MAX {
            let n = bounded(n, 1, 16)?;
            copy_bytes::<16>(out, m + head_len, n, |k| ip_text[(k & 15) as usize]);
            // The length byte that ends the head grows by the text's length.
            // SAFETY: head_len - 1 < HEAD_CAP.
            let lb = unsafe { *head.add(head_len as usize - 1) };
            out.0[(m + head_len - 1) as usize & (OUT_CAP - 1)] = lb.wrapping_add(n as u8);
        } else {
            // Option 97 straight from the request frame, not yet written over: one helper
            // call costs less than moving its bytes one by one.
            let at = bounded(m + head_len, m + BOOTP_FIXED + 1, m + HEAD_CAP as u32)?;
            let from = l2 + 28 + (ins.src & (PAY_CAP as u32 - 1));
            // SAFETY: at + n <= MSG + HEAD_CAP + INSERT_MAX < OUT_CAP; the helper checks the
            // frame's bounds.
            let r = unsafe {
                bpf_xdp_load_bytes(
                    ctx.ctx,
                    from,
                    out.0.as_mut_ptr().add(at as usize) as *mut c_void,
                    n,
                )
            };
            if r != 0 {
                return None;
            }
        }
    }
    let tail_len = bounded(h.tail_len, 0, TAIL_CAP as u32)?;
    if tail_len > TAIL_INLINE {
        return Some(tail_len);
    }
    copy_bytes::<TAIL_INLINE>(out, m + head_len + ins.len, tail_len, |k| {
        // SAFETY: k < TAIL_INLINE <= TAIL_CAP.
        unsafe { *tail.add((k & (TAIL_INLINE - 1)) as usize) }
    });
    Some(0)
}

/// Option 6's servers rotated left by this CPU's reply count, as the slow path rotates
/// them per reply, over their place in `out` (option 6 is in the head: it sorts before
/// every insert).
#[inline(always)]
fn rotate_dns(t: *const Template, h: &Head, out: &mut Out) -> bool {
    let n = h.dns_n as u32;
    let Some(off) = bounded(
        h.dns_off as u32,
        BOOTP_FIXED,
        (HEAD_CAP - 4 * DNS_MAX) as u32,
    ) else {
        return false;
    };
    if n < 2 || n > DNS_MAX as u32 || off + 4 * n > h.head_len {
        return false;
    }
    // SAFETY: t is a live map value.
    let head = unsafe { (*t).head.as_ptr() };
    let r = STATS
        .get_ptr(counter::ANSWERED)
        .map(|c| unsafe { *c })
        .unwrap_or(0) as u32;
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
            let at = (MSG as u32 + off + 4 * i + k) as usize & (OUT_CAP - 1);
            // SAFETY: off + 4 * 8 <= HEAD_CAP.
            out.0[at] = unsafe { *head.add((off + 4 * j + k) as usize) };
            k += 1;
        }
        i += 1;
    }
    true
}
