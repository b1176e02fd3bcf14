//! The program's maps (see boot-common for the data model) and counter helpers.
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::generated::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use boot_common::{
    counter, reason, ClassKey, HostEntry, LeaseEvent, MacKey, Template, EVENT_SLOTS, PATCH_CAP,
};

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

/// Lease events for the daemon: `EVENT_SLOTS` per CPU, CPU `c`'s from `c * EVENT_SLOTS`,
/// each CPU's a ring it alone writes. The daemon maps it read-only and follows
/// `EVENT_HEADS`. The loader sizes both for the machine's CPUs.
#[map]
pub static EVENTS: Array<LeaseEvent> = Array::with_max_entries(EVENT_SLOTS, BPF_F_MMAPABLE);

/// Events written per CPU so far (event `n` of CPU `c` is in slot `n % EVENT_SLOTS`).
#[map]
pub static EVENT_HEADS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Capacity of the copy of the request's DHCP message (a power of two: indexes are
/// masked with `PAY_CAP - 1`).
pub const PAY_CAP: usize = 2048;

/// Layout of `Work::out`: the Ethernet header ends at `IP` (it starts at 2 tagged, 6
/// untagged), then IPv4 + UDP, then the DHCP message at the 8-byte aligned `MSG`.
pub const IP: usize = 20;
pub const MSG: usize = 48;
/// Capacity of `Work::out` (a power of two: offsets are masked with `OUT_CAP - 1`); holds
/// `MSG` plus the longest head, insert and tail (922 bytes).
pub const OUT_CAP: usize = 1024;

/// The reply frame under composition, 8-byte aligned (the head goes in in words).
#[repr(C, align(8))]
pub struct Out(pub [u8; OUT_CAP + 8]);

impl Out {
    /// The 32-bit word (native order) at `at`, a multiple of 4 (masked into the buffer).
    #[inline(always)]
    pub fn word(&self, at: usize) -> u32 {
        // SAFETY: aligned (the buffer is 8-byte aligned, the offset a multiple of 4) and
        // inside the buffer.
        unsafe { core::ptr::read(self.0.as_ptr().add(at & (OUT_CAP - 4)) as *const u32) }
    }

    /// Stores `v` (native order) as the word at `at`, a multiple of 4.
    #[inline(always)]
    pub fn set_word(&mut self, at: usize, v: u32) {
        // SAFETY: as in `word`.
        unsafe { core::ptr::write(self.0.as_mut_ptr().add(at & (OUT_CAP - 4)) as *mut u32, v) }
    }
}

/// The host entry's patch (the bytes its templates' holes are filled with), copied with
/// the rest of the entry (8-byte aligned: it is copied in words).
#[repr(C, align(8))]
pub struct Patch(pub [u8; PATCH_CAP]);

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
    pub patch: Patch,
    /// The reply frame, composed here and written into the frame with one store (each
    /// store is a helper call and a `memcpy` whose start-up costs more than copying a
    /// few hundred bytes in words): headers, then the message at `MSG`. The 8 bytes past
    /// `OUT_CAP` let the store's length bound (`OUT_CAP - 2`) start at offset 6.
    pub out: Out,
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

/// Hands a lease event to the daemon: into this CPU's next slot, then published by
/// advancing this CPU's head. Not the BPF ring buffer: its reserve takes a lock shared by
/// every CPU and measured a seventh of an answer's cost here; these per-CPU rings take
/// plain stores. Nothing wakes the reader either (a wake-up is a self-IPI, a VM exit on
/// virtual machines): it polls (`xdp::events`). A reader that falls a whole ring behind
/// loses the oldest events and counts them.
#[inline(always)]
pub fn event(ev: &LeaseEvent) {
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(head) = EVENT_HEADS.get_ptr_mut(cpu) else {
        count(counter::EVENTS_LOST);
        return;
    };
    // SAFETY: this CPU's head, written by no one else (XDP does not nest on a CPU).
    let n = unsafe { core::ptr::read_volatile(head) };
    let slot = cpu.wrapping_mul(EVENT_SLOTS) + (n as u32 & (EVENT_SLOTS - 1));
    let Some(p) = EVENTS.get_ptr_mut(slot) else {
        count(counter::EVENTS_LOST);
        return;
    };
    // SAFETY: this CPU's slot and head. The event is stored before the head moves:
    // volatile keeps that order in the program, and x86-64 keeps stores in order. (On
    // arm64, whose stores may become visible out of order and where BPF has no barrier
    // for plain stores, a reader could take the slot's previous event for this one.)
    unsafe {
        core::ptr::write_volatile(p, *ev);
        core::ptr::write_volatile(head, n + 1);
    }
}
