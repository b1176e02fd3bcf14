//! The program's maps (see boot-common for the data model) and counter helpers.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use boot_common::{
    counter, reason, ClassKey, HostEntry, LeaseEvent, MacKey, Server, ServerKey, Template,
};

use crate::{
    frame::Request,
    options::{Opts, Walk},
};

/// Known boot interfaces. The daemon sizes it at load time.
#[map]
pub static HOSTS: HashMap<MacKey, HostEntry> = HashMap::with_max_entries(16384, 0);

/// Reply templates by id. Not preallocated: they are large and their number varies.
#[map]
pub static TEMPLATES: HashMap<u32, Template> =
    HashMap::with_max_entries(262144, BPF_F_NO_PREALLOC);

/// Request features -> client kind index.
#[map]
pub static CLASSES: HashMap<ClassKey, u32> = HashMap::with_max_entries(4096, 0);

/// (ingress ifindex, VLAN) -> our MAC and IP there.
#[map]
pub static SERVERS: HashMap<ServerKey, Server> = HashMap::with_max_entries(256, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(reason::COUNT, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Capacity of the copy of the request's DHCP message (a power of two: indexes are
/// masked with `PAY_CAP - 1`).
pub const PAY_CAP: usize = 2048;
/// Reply assembly buffer: a template plus echoed options at bounded offsets, with slack
/// so that every offset + length the verifier sees stays inside.
pub const OUT_CAP: usize = 1408;

/// Per-CPU working memory: the BPF stack is only 512 bytes.
#[repr(C)]
pub struct Work {
    /// The request's DHCP message, copied once.
    pub pay: [u8; PAY_CAP + 64],
    /// The reply's DHCP message being assembled.
    pub out: [u8; OUT_CAP + 64],
    pub req: Request,
    pub o: Opts,
    pub walk: Walk,
    /// The requested address in dotted decimal, for DHCPNAK messages.
    pub ip_text: [u8; 32],
    pub ip_text_len: u32,
}

#[map]
pub static WORK: PerCpuArray<Work> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(i: u32) {
    if let Some(p) = STATS.get_ptr_mut(i) {
        // SAFETY: per-CPU slot, and XDP does not nest on one CPU.
        unsafe { *p += 1 }
    }
}

#[inline(always)]
pub fn count_reason(i: u32) {
    if let Some(p) = REASONS.get_ptr_mut(i) {
        // SAFETY: as in `count`.
        unsafe { *p += 1 }
    }
}

/// Sends a lease event to the daemon, counting it as lost when the ring is full.
#[inline(always)]
pub fn event(ev: &LeaseEvent) {
    match EVENTS.reserve::<LeaseEvent>(0) {
        Some(mut e) => {
            e.write(*ev);
            e.submit(0);
        }
        None => count(counter::EVENTS_LOST),
    }
}
