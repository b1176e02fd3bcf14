//! The XDP program: answers DHCP and PXE for known hosts in the NIC path.
//!
//! For a UDP frame to port 67 (or 4011) it parses Ethernet (optionally one 802.1Q tag),
//! IPv4, UDP and the BOOTP header ([`frame`]), walks the options with `bpf_loop`
//! ([`options`]), looks the client MAC up in `HOSTS`, picks a precompiled reply template
//! ([`decide`]) and rewrites the frame in place into the reply ([`reply`]), sent with
//! XDP_TX. Everything it cannot answer exactly as the slow path would goes up with
//! XDP_PASS; every frame is counted once in `STATS` ([`finish`] is the only exit).
//!
//! Invariants (stated as absences): this program never composes reply content of its
//! own (every byte of a DHCP message comes from a template or from the request), never
//! drops a frame, and never keeps a map value pointer across a helper call that could
//! let the value change under it without checking it afterwards.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod decide;
#[cfg(target_arch = "bpf")]
mod frame;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod options;
#[cfg(target_arch = "bpf")]
mod reply;

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        bindings::xdp_action::{XDP_PASS, XDP_TX},
        macros::xdp,
        programs::XdpContext,
    };
    use boot_common::counter;

    use crate::{decide, frame, maps, options, reply};

    /// What happened to a frame: the action and the counter (and, for passes, why).
    pub struct Verdict {
        pub counter: u32,
        /// `boot_common::reason::*`, or `NO_REASON`.
        pub reason: u32,
    }

    pub const NO_REASON: u32 = u32::MAX;

    impl Verdict {
        pub const fn pass(counter: u32, reason: u32) -> Verdict {
            Verdict { counter, reason }
        }
    }

    #[xdp]
    pub fn xboot(ctx: XdpContext) -> u32 {
        finish(handle(&ctx))
    }

    /// The only exit: counts the decision and returns the action.
    #[inline(always)]
    fn finish(v: Verdict) -> u32 {
        maps::count(v.counter);
        if v.reason != NO_REASON {
            maps::count_reason(v.reason);
        }
        if v.counter == counter::ANSWERED || v.counter == counter::NAK {
            XDP_TX
        } else {
            XDP_PASS
        }
    }

    #[inline(always)]
    fn handle(ctx: &XdpContext) -> Verdict {
        let Some(work) = maps::WORK.get_ptr_mut(0) else {
            return Verdict::pass(counter::PASSED_OTHER, boot_common::reason::UNUSUAL);
        };
        // SAFETY: this CPU's working memory; XDP does not nest on one CPU.
        let work = unsafe { &mut *work };
        if let Err(v) = frame::parse(ctx, work) {
            return v;
        }
        if let Err(v) = options::walk(work) {
            return v;
        }
        let choice = match decide::decide(ctx, &work.req, &work.o, &mut work.patch) {
            Ok(c) => c,
            Err(v) => return v,
        };
        reply::send(ctx, work, &choice)
    }
}

// The panic handler is the library's.
#[cfg(target_arch = "bpf")]
use boot_ebpf as _;

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
