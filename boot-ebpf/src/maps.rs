//! The program's maps (see boot-common for the data model) and counter helpers.
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use boot_common::{counter, reason, ClassKey, HostEntry, LeaseEvent, MacKey, Template};

use crate::{
    frame::Request,
    options::{Opts, Walk},
    reply::Head,
};

/// Known boot interfaces. The daemon sizes it at load time.
#[map]
pub static HOSTS: HashMap<MacKey, HostEntry> = HashMap::with_max_entries(16384, 0);

/// Reply templates by slot (the id a host entry names; 0 is never used). An array, not
/// a hash: the lookup is inlined by the verifier into an index computation, where a
/// hash lookup is a call, a hash and a bucket walk (a cache miss or two per answer in
/// the NIC path). The daemon sizes it at load time and hands out slots.
#[map]
pub static TEMPLATES: Array<Template> = Array::with_max_entries(1024, 0);

/// `ClassKey::index()` -> client kind index + 1 (0: not covered).
#[map]
pub static CLASSES: Array<u32> = Array::with_max_entries(ClassKey::TABLE, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(reason::COUNT, 0);

/// Lease events for the daemon (1 MiB: some 25,000 events, over 100 ms of answers at
/// 250,000 a second, against a 20 ms poll).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Capacity of the copy of the request's DHCP message (a power of two: indexes are
/// masked with `PAY_CAP - 1`).
pub const PAY_CAP: usize = 2048;

/// Layout of `Work::hdr`: the Ethernet header ends at `IP` (it starts at 2 tagged, 6
/// untagged), then IPv4 + UDP, then the message's first 44 bytes at an 8-byte aligned
/// offset.
pub const IP: usize = 20;
pub const B44: usize = 48;
pub const HDR_LEN: usize = 96;

/// Per-CPU working memory: the BPF stack is only 512 bytes.
#[repr(C)]
pub struct Work {
    /// The request's DHCP message, copied once (with slack: masked offsets plus a
    /// bounded length stay inside).
    pub pay: [u8; PAY_CAP + 128],
    pub req: Request,
    pub o: Opts,
    pub walk: Walk,
    /// The chosen template's small fields.
    pub h: Head,
    /// The reply's headers, contiguous so one store writes them: Ethernet, IPv4 + UDP
    /// at `IP`, the DHCP message's first 44 bytes (op .. chaddr, stamped) at `B44`.
    pub hdr: [u8; HDR_LEN],
    /// The rotated DNS list.
    pub dns: [u8; 32],
    /// The requested address in dotted decimal, zero-padded, for DHCPNAK messages.
    pub ip_text: [u8; 16],
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

/// Sends a lease event to the daemon, counting it as lost when the ring is full. The
/// program never wakes the reader: a wake-up is a self-IPI (irq_work), and on a virtual
/// machine whose APIC is emulated by traps that VM exit measured over a tenth of the
/// program's whole in-path cost, even done once per 64 events. The reader
/// polls the ring on a short timer instead (`xdp::stats::record_events`), and the ring
/// holds far more than a poll interval's worth of events at any rate the NIC reaches.
#[inline(always)]
pub fn event(ev: &LeaseEvent) {
    if EVENTS
        .output::<LeaseEvent>(ev, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count(counter::EVENTS_LOST);
    }
}
