//! Types shared by the XDP program (`boot-ebpf`) and the daemon (`boot-user`).
//!
//! Everything here is `#[repr(C)]` and plain old data: these are the keys and values of
//! the BPF maps, so both sides must agree on their layout byte for byte. With the `user`
//! feature each type also implements `aya::Pod` so the daemon can put it in a map.
#![no_std]

/// Key of the host map: the client's hardware address, padded to 8 bytes so the key has
/// no implicit padding (the verifier and the hash both see all 8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl MacKey {
    pub const fn new(mac: [u8; 6]) -> Self {
        Self { mac, _pad: [0; 2] }
    }
}

/// Indices of the per-CPU decision counters. Every exit of the XDP program is counted
/// in exactly one of these.
pub mod counter {
    pub const ANSWERED: u32 = 0;
    pub const PASSED_UNKNOWN: u32 = 1;
    pub const PASSED_OTHER: u32 = 2;
    pub const MALFORMED: u32 = 3;
    pub const NAK: u32 = 4;
    pub const NOT_DHCP: u32 = 5;
    pub const COUNT: u32 = 6;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), no padding beyond explicit fields, all bit patterns valid.
    unsafe impl aya::Pod for super::MacKey {}
}
