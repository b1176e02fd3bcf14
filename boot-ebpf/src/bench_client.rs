//! The benchmark's DHCP client, in the kernel (never loaded by the daemon; `cargo xtask
//! bench dhcp` uses it to measure DORA rates).
//!
//! Why: a userspace generator on this class of machine spends ~16 us of CPU per
//! exchange (a packet socket, an skb per frame, a wake-up per reply) on the same cores
//! as the server, so it, not the server, set the measured rate. Here the whole client
//! side stays in XDP:
//! - `bench_send`, run by BPF_PROG_TEST_RUN in live-frames mode on the client's veth,
//!   writes one DISCOVER per run (client `n % clients` for the n-th) and transmits it
//!   (XDP_TX of a live frame is a transmit on that interface, to the server's side).
//! - `bench_reply`, attached to the same veth, answers every OFFER at once with the
//!   REQUEST the userspace generator would send, and counts each ACK (with its round
//!   trip from the DISCOVER) before dropping it. OFFERs and ACKs are checked against
//!   the client's inventory address and the server id; replies to anyone else pass.
//! - `bench_pass` passes everything: attached to the server's side of the veth when the
//!   server has no XDP program of its own (veth only accepts transmitted XDP frames on
//!   a side that runs one).
//! - `bench_cost` times another program per request with repeated test runs (see
//!   there).
//!
//! The frames are the userspace generator's (built there, copied here whole per frame:
//! a live frame's page comes back holding whatever the last program wrote into it).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod prog {
    use core::ffi::c_void;

    use aya_ebpf::{
        bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
        helpers::generated::{
            bpf_csum_diff, bpf_ktime_get_ns, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
            bpf_xdp_store_bytes,
        },
        macros::{map, xdp},
        maps::{Array, PerCpuArray, ProgramArray},
        programs::XdpContext,
    };
    use boot_common::bench::{
        self, counter, Client, Config, CostFrame, Frame, CHADDR, CLIENT_ID_MAC, COST_CAP,
        FRAME_DISCOVER, FRAME_LEN, FRAME_REQUEST, IP_SRC, OPTIONS, REQUESTED_IP, SENT_SLOTS,
        SERVER_ID, UDP_CSUM, XID, XID_BASE, YIADDR,
    };

    #[map]
    static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
    /// Sized by the benchmark for its clients.
    #[map]
    static CLIENTS: Array<Client> = Array::with_max_entries(1, 0);
    #[map]
    static FRAMES: Array<Frame> = Array::with_max_entries(2, 0);
    /// DISCOVER send times (`bpf_ktime_get_ns`) by sequence number; 0 once answered.
    #[map]
    static SENT: Array<u64> = Array::with_max_entries(SENT_SLOTS, 0);
    #[map]
    static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
    /// Round trips DISCOVER -> ACK (see `bench::HIST_FINE`).
    #[map]
    static HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(bench::HIST_BUCKETS, 0);
    /// A reply's options, copied for the walk.
    #[map]
    static SCRATCH: PerCpuArray<[u8; OPT_CAP + 8]> = PerCpuArray::with_max_entries(1, 0);

    const OPT_CAP: usize = 256;

    #[inline(always)]
    fn bump(array: &PerCpuArray<u64>, i: u32) {
        if let Some(p) = array.get_ptr_mut(i) {
            // SAFETY: this CPU's slot; XDP does not nest on one CPU.
            unsafe { *p += 1 }
        }
    }

    #[xdp]
    pub fn bench_send(ctx: XdpContext) -> u32 {
        match send(&ctx) {
            Some(()) => {
                bump(&STATS, counter::DISCOVERS);
                XDP_TX
            }
            None => XDP_ABORTED,
        }
    }

    #[inline(always)]
    fn send(ctx: &XdpContext) -> Option<()> {
        let cfg = CONFIG.get_ptr_mut(0)?;
        // SAFETY: one sender at a time (the benchmark runs one BPF_PROG_TEST_RUN).
        let (seq, n) = unsafe {
            let s = (*cfg).seq;
            (*cfg).seq = s + 1;
            (s, (*cfg).clients)
        };
        if n == 0 || ctx.data_end() - ctx.data() != FRAME_LEN {
            return None;
        }
        let client = CLIENTS.get((seq % n as u64) as u32)?;
        write_frame(
            ctx,
            FRAME_DISCOVER,
            client,
            XID_BASE.wrapping_add(seq as u32),
        )?;
        checksum(ctx)?;
        if let Some(t) = SENT.get_ptr_mut(seq as u32 & (SENT_SLOTS - 1)) {
            // SAFETY: a plain slot; a racing ACK for the same number cannot exist yet.
            unsafe { *t = bpf_ktime_get_ns() }
        }
        Some(())
    }

    /// Copies frame `which` over the (FRAME_LEN-byte) frame and stamps the client's MAC
    /// (source, chaddr, option 61) and `xid`.
    #[inline(always)]
    fn write_frame(ctx: &XdpContext, which: u32, c: &Client, xid: u32) -> Option<()> {
        let f = FRAMES.get(which)?;
        // SAFETY: the helper checks the frame's bounds; the source is FRAME_LEN bytes.
        let r = unsafe {
            bpf_xdp_store_bytes(
                ctx.ctx,
                0,
                f.bytes.as_ptr() as *mut c_void,
                FRAME_LEN as u32,
            )
        };
        if r != 0 {
            return None;
        }
        let p = frame(ctx)?;
        // SAFETY: `frame` checked FRAME_LEN bytes; every offset below is inside.
        unsafe {
            for at in [6, CHADDR, CLIENT_ID_MAC] {
                core::ptr::copy_nonoverlapping(c.mac.as_ptr(), p.add(at), 6);
            }
            core::ptr::copy_nonoverlapping(xid.to_be_bytes().as_ptr(), p.add(XID), 4);
        }
        Some(())
    }

    /// The frame's start, when it has at least FRAME_LEN bytes.
    #[inline(always)]
    fn frame(ctx: &XdpContext) -> Option<*mut u8> {
        let (d, end) = (ctx.data(), ctx.data_end());
        (d + FRAME_LEN <= end).then_some(d as *mut u8)
    }

    /// The UDP checksum of a FRAME_LEN-byte frame: the pseudo header's addresses, UDP
    /// header and payload are contiguous from `IP_SRC` to the end; protocol and length
    /// are added. bpf_csum_diff sums native (little-endian) words, so those two are
    /// added byte-swapped, and the result is stored natively.
    #[inline(always)]
    fn checksum(ctx: &XdpContext) -> Option<()> {
        let p = frame(ctx)?;
        // SAFETY: inside the checked FRAME_LEN bytes; FRAME_LEN - IP_SRC is a multiple
        // of 4 and below the helper's 512-byte limit.
        let s = unsafe {
            core::ptr::write_unaligned(p.add(UDP_CSUM) as *mut u16, 0);
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                p.add(IP_SRC) as *mut u32,
                (FRAME_LEN - IP_SRC) as u32,
                0,
            )
        };
        if s < 0 {
            return None;
        }
        let udp_len = (FRAME_LEN - 34) as u16;
        let mut s = s as u32 as u64 + 17u16.swap_bytes() as u64 + udp_len.swap_bytes() as u64;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let c = match !(s as u16) {
            0 => 0xffff,
            c => c,
        };
        // SAFETY: inside the checked bytes.
        unsafe { core::ptr::write_unaligned(p.add(UDP_CSUM) as *mut u16, c) };
        Some(())
    }

    #[xdp]
    pub fn bench_reply(ctx: XdpContext) -> u32 {
        match reply(&ctx) {
            Ok(()) => XDP_TX,
            Err(Some(c)) => {
                bump(&STATS, c);
                XDP_DROP
            }
            Err(None) => XDP_PASS,
        }
    }

    /// Ok: the OFFER became a REQUEST, to transmit. Err(Some(counter)): counted and
    /// dropped. Err(None): not a reply to this client, passed up.
    #[inline(always)]
    fn reply(ctx: &XdpContext) -> Result<(), Option<u32>> {
        let (d, end) = (ctx.data(), ctx.data_end());
        if d + OPTIONS > end {
            return Err(None);
        }
        let p = d as *const u8;
        // SAFETY: every offset read below is under OPTIONS, checked above.
        let at = |i: usize| unsafe { *p.add(i) };
        // IPv4 without options, UDP to port 68, a BOOTREPLY.
        if at(12) != 8 || at(13) != 0 || at(14) != 0x45 || at(23) != 17 {
            return Err(None);
        }
        if at(36) != 0 || at(37) != 68 || at(42) != 2 {
            return Err(None);
        }
        let xid = [at(XID), at(XID + 1), at(XID + 2), at(XID + 3)];
        let seq = u32::from_be_bytes(xid).wrapping_sub(XID_BASE);
        if seq >= 0x4000_0000 {
            return Err(None);
        }
        let cfg = CONFIG.get(0).ok_or(None)?;
        if cfg.clients == 0 {
            return Err(None);
        }
        let c = CLIENTS.get(seq % cfg.clients).ok_or(None)?;
        let mut same = true;
        for i in 0..6 {
            same &= at(CHADDR + i) == c.mac[i];
        }
        for i in 0..4 {
            same &= at(YIADDR + i) == c.ip[i];
        }
        let len = (end - d) as u32;
        let (kind, server) = message_type(ctx, len).ok_or(Some(counter::OTHER))?;
        match kind {
            2 if same && server == cfg.server => {
                request(ctx, c, u32::from_be_bytes(xid), cfg.server, len)?;
                bump(&STATS, counter::OFFERS);
                bump(&STATS, counter::REQUESTS);
                Ok(())
            }
            5 if same => Err(Some(ack(seq))),
            2 | 5 => Err(Some(counter::WRONG)),
            6 => Err(Some(counter::NAKS)),
            _ => Err(Some(counter::OTHER)),
        }
    }

    /// Options 53 (message type) and 54 (server id) of a reply `len` bytes long.
    #[inline(always)]
    fn message_type(ctx: &XdpContext, len: u32) -> Option<(u8, [u8; 4])> {
        let buf = SCRATCH.get_ptr_mut(0)?;
        let n = len.checked_sub(OPTIONS as u32)?;
        let n = if n > OPT_CAP as u32 {
            OPT_CAP as u32
        } else {
            n
        };
        let n = core::hint::black_box(n);
        if n == 0 || n > OPT_CAP as u32 {
            return None;
        }
        // SAFETY: n bytes fit the scratch buffer; the helper checks the frame's bounds.
        let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, OPTIONS as u32, buf as *mut c_void, n) };
        if r != 0 {
            return None;
        }
        // SAFETY: this CPU's scratch buffer.
        let b = unsafe { &*buf };
        let (mut kind, mut server) = (0u8, [0u8; 4]);
        let mut off = 0u32;
        let mut k = 0;
        while k < 40 && off < n {
            // Masked, and read at small constant distances from it (the buffer has 8
            // bytes of slack), so every index is provably inside.
            let o = core::hint::black_box(off) as usize & (OPT_CAP - 1);
            let code = b[o];
            if code == 255 {
                break;
            }
            if code == 0 {
                off += 1;
                k += 1;
                continue;
            }
            let l = b[o + 1] as u32;
            if off + 2 + l > n {
                break;
            }
            if code == 53 && l == 1 {
                kind = b[o + 2];
            } else if code == 54 && l == 4 {
                server = [b[o + 2], b[o + 3], b[o + 4], b[o + 5]];
            }
            off += 2 + l;
            k += 1;
        }
        Some((kind, server))
    }

    /// Rewrites the OFFER (`len` bytes) into the client's REQUEST for its address.
    #[inline(always)]
    fn request(
        ctx: &XdpContext,
        c: &Client,
        xid: u32,
        server: [u8; 4],
        len: u32,
    ) -> Result<(), Option<u32>> {
        let delta = FRAME_LEN as i32 - len as i32;
        // SAFETY: the helper checks its bounds; no packet pointer is kept across it.
        if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            return Err(Some(counter::OTHER));
        }
        write_frame(ctx, FRAME_REQUEST, c, xid).ok_or(Some(counter::OTHER))?;
        let p = frame(ctx).ok_or(Some(counter::OTHER))?;
        // SAFETY: inside the checked FRAME_LEN bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(c.ip.as_ptr(), p.add(REQUESTED_IP), 4);
            core::ptr::copy_nonoverlapping(server.as_ptr(), p.add(SERVER_ID), 4);
        }
        checksum(ctx).ok_or(Some(counter::OTHER))
    }

    /// Counts an ACK for sequence number `seq`: its round trip, once.
    #[inline(always)]
    fn ack(seq: u32) -> u32 {
        let Some(t) = SENT.get_ptr_mut(seq & (SENT_SLOTS - 1)) else {
            return counter::UNMATCHED;
        };
        // SAFETY: a plain slot (a duplicate ACK on another CPU at the same instant could
        // be counted twice; the server under test never sends one).
        let sent = unsafe { *t };
        if sent == 0 {
            return counter::UNMATCHED;
        }
        // SAFETY: as above.
        unsafe { *t = 0 };
        // SAFETY: no preconditions.
        let us = (unsafe { bpf_ktime_get_ns() }).saturating_sub(sent) / 1000;
        let fine = bench::HIST_FINE as u64;
        let bucket = if us < fine {
            us
        } else {
            (fine + (us >> 10)).min(bench::HIST_BUCKETS as u64 - 1)
        };
        bump(&HIST, bucket as u32);
        counter::ACKS
    }

    #[xdp]
    pub fn bench_pass(_ctx: XdpContext) -> u32 {
        XDP_PASS
    }

    /// The program `bench_cost` times (slot 0).
    #[map]
    static TARGET: ProgramArray = ProgramArray::with_max_entries(1, 0);
    #[map]
    static COST_FRAME: Array<CostFrame> = Array::with_max_entries(1, 0);

    /// A program's warm cost per request from repeated BPF_PROG_TEST_RUN runs. Repeated
    /// runs hand a program the frame its previous run left, which for an answering
    /// program is its own reply; so this writes the request back first, then tail-calls
    /// the program. In live-frames mode the frame's bounds are reset before each run;
    /// its bytes are not. The kernel's run-time statistics of this program include the
    /// tail-called one; the same harness calling `bench_pass` is the part to subtract.
    #[xdp]
    pub fn bench_cost(ctx: XdpContext) -> u32 {
        let Some(f) = COST_FRAME.get(0) else {
            return XDP_ABORTED;
        };
        let len = core::hint::black_box(f.len);
        if len < 14 || len > COST_CAP as u32 || (ctx.data_end() - ctx.data()) as u32 != len {
            return XDP_ABORTED;
        }
        // SAFETY: the source holds COST_CAP >= len bytes; the helper checks the frame.
        let r = unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, f.bytes.as_ptr() as *mut c_void, len) };
        if r != 0 {
            return XDP_ABORTED;
        }
        // SAFETY: a tail call does not return on success; slot 0 holds an XDP program.
        unsafe { TARGET.tail_call(&ctx, 0) };
        XDP_ABORTED
    }
}

// The panic handler is the library's.
#[cfg(target_arch = "bpf")]
use boot_ebpf as _;

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
