//! Types shared by the XDP program (`boot-ebpf`) and the daemon (`boot-user`).
//!
//! Everything here is `#[repr(C)]` and plain old data: these are the keys and values of
//! the BPF maps, so both sides must agree on their layout byte for byte. With the `user`
//! feature each type also implements `aya::Pod` so the daemon can put it in a map.
//!
//! # The fast path's data model
//! - `HOSTS`: [`MacKey`] -> [`HostEntry`]: the host's address and, per client kind and
//!   message, the id of a precompiled reply template.
//! - `TEMPLATES`: `u32` id -> [`Template`]: a whole DHCP payload built by the same reply
//!   builder as the slow path. A template's bytes never change while its id is in use:
//!   a changed reply gets a new id, and the old one is deleted only after no host entry
//!   names it any more (plus a grace period), so the kernel never reads a half-written
//!   template.
//! - `CLASSES`: [`ClassKey`] (features of options 93/60/77) -> client kind index, filled
//!   by asking the slow path's classifier, so the kernel has no idea of its own about
//!   which client is which.
//! - `SERVERS`: [`ServerKey`] (ingress ifindex, VLAN, address) -> [`Server`]: our MAC
//!   there. A host's templates name one server address; the program answers only on an
//!   interface that has it.
//! - `STATS` / `REASONS`: per-CPU counters; `EVENTS`: ring buffer of [`LeaseEvent`]s.
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

/// Indices of the per-CPU decision counters (`STATS`). Every frame the XDP program sees
/// is counted in exactly one of the first [`counter::DECISIONS`] counters.
pub mod counter {
    /// OFFER or ACK sent by XDP_TX.
    pub const ANSWERED: u32 = 0;
    /// A DHCP request from a MAC the host map does not know: passed up.
    pub const PASSED_UNKNOWN: u32 = 1;
    /// A well-formed request for a known host that the fast path leaves to the slow
    /// path (INFORM, RELEASE, another server chosen, no template ...). See [`super::reason`].
    pub const PASSED_OTHER: u32 = 2;
    /// A frame to the DHCP ports that does not parse as a DHCP request: passed up.
    pub const MALFORMED: u32 = 3;
    /// DHCPNAK sent by XDP_TX.
    pub const NAK: u32 = 4;
    /// Not DHCP at all (ARP, other UDP ports ...): passed up untouched.
    pub const NOT_DHCP: u32 = 5;
    /// A reply larger than the request whose tail could not be grown: passed up.
    pub const PASSED_NO_ROOM: u32 = 6;
    /// Number of decision counters (the ones that sum to the number of frames).
    pub const DECISIONS: u32 = 7;
    /// Not a decision: lease events lost because the ring buffer was full.
    pub const EVENTS_LOST: u32 = 7;
    pub const COUNT: u32 = 8;
}

/// Why a frame was counted as [`counter::PASSED_OTHER`] or [`counter::MALFORMED`]
/// (indices of the per-CPU `REASONS` array, for diagnostics).
pub mod reason {
    pub const TRUNCATED: u32 = 0;
    pub const BAD_IP: u32 = 1;
    pub const BAD_BOOTP: u32 = 2;
    pub const BAD_OPTIONS: u32 = 3;
    pub const NOT_REQUEST: u32 = 4;
    pub const NO_MSG_TYPE: u32 = 5;
    pub const MSG_OTHER: u32 = 6;
    pub const UNUSUAL: u32 = 7;
    pub const NO_SERVER: u32 = 8;
    pub const FOREIGN_SERVER: u32 = 9;
    pub const NO_CLASS: u32 = 10;
    pub const NO_TEMPLATE: u32 = 11;
    pub const STALE_TEMPLATE: u32 = 12;
    pub const TORN_ENTRY: u32 = 13;
    pub const NO_ADDRESS: u32 = 14;
    pub const TOO_BIG: u32 = 15;
    pub const NOT_FOR_US: u32 = 16;
    pub const BAD_UDP_CHECKSUM: u32 = 17;
    pub const BOOT_SERVER: u32 = 18;
    pub const COUNT: u32 = 19;
    /// Names for logs and metrics, by index.
    pub const NAMES: [&str; COUNT as usize] = [
        "truncated",
        "bad_ip",
        "bad_bootp",
        "bad_options",
        "not_request",
        "no_msg_type",
        "msg_other",
        "unusual",
        "no_server",
        "foreign_server",
        "no_class",
        "no_template",
        "stale_template",
        "torn_entry",
        "no_address",
        "too_big",
        "not_for_us",
        "bad_udp_checksum",
        "boot_server",
    ];
}

/// Client kinds the host entry has template slots for (the slow path's classifier maps
/// request features to an index below this).
pub const MAX_KINDS: usize = 8;
/// Message slots per kind.
pub const MSGS: usize = 3;
/// DISCOVER to port 67 -> OFFER.
pub const MSG_OFFER: usize = 0;
/// REQUEST to port 67 for the host's address -> ACK.
pub const MSG_ACK: usize = 1;
/// REQUEST to the PXE boot server port 4011 -> ACK.
pub const MSG_BOOT_ACK: usize = 2;

/// Value of the host map. Replaced whole by the daemon; the program copies it to its
/// stack at once and checks `seq == seq_end` to detect a torn read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostEntry {
    pub seq: u32,
    /// The key again: a reader that raced with the element's reuse for another host
    /// sees a different MAC and passes the frame up.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The host's address on this MAC: a REQUEST for another address gets a NAK.
    pub ip: [u8; 4],
    /// The server identifier (option 54) the templates were built with; the program
    /// answers only on an interface whose server address is this one.
    pub server_ip: [u8; 4],
    /// Template of the DHCPNAK for this host (0 = none: pass up).
    pub nak: u32,
    /// Template ids, `[kind][MSG_*]`; 0 = none (pass up).
    pub tmpl: [[u32; MSGS]; MAX_KINDS],
    pub seq_end: u32,
}

/// Features of a request that select the client kind: option 93 (its only
/// architecture), option 60 (vendor class prefix), option 77 (user class) and 175. The
/// program passes up requests whose kind these do not determine (several architectures,
/// an `Arch:` vendor class without option 93, other user classes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClassKey {
    /// Option 93's first value; [`ClassKey::NO_ARCH`] when absent.
    pub arch: u16,
    /// One of `VENDOR_*`.
    pub vendor: u8,
    /// One of `USER_*`.
    pub user: u8,
}

impl ClassKey {
    pub const NO_ARCH: u16 = 0xffff;
    pub const VENDOR_NONE: u8 = 0;
    /// Option 60 starts with `PXEClient`.
    pub const VENDOR_PXE: u8 = 1;
    /// Option 60 starts with `HTTPClient`.
    pub const VENDOR_HTTP: u8 = 2;
    pub const VENDOR_OTHER: u8 = 3;
    pub const USER_NONE: u8 = 0;
    /// Option 77 is `iPXE` (raw, or as one RFC 3004 entry), or option 175 is present.
    pub const USER_IPXE: u8 = 1;
    pub const USER_OTHER: u8 = 2;
}

/// Key of the server map: one of our addresses where a request can come in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServerKey {
    /// The interface the program is attached to.
    pub ifindex: u32,
    /// 802.1Q VLAN id, 0 for untagged frames.
    pub vlan: u16,
    pub _pad: u16,
    /// An address of ours on that interface and VLAN.
    pub ip: [u8; 4],
}

/// Our identity at one address: the source of every reply sent from it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Server {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    pub ip: [u8; 4],
}

/// Capacity of a template: the whole DHCP message (BOOTP header and options). The
/// slow path keeps replies within 548 bytes unless the client's option 57 allows more.
pub const TEMPLATE_CAP: usize = 576;
/// Longest option echoed from the request (data bytes).
pub const ECHO_MAX: usize = 64;
/// Insertion slots per template.
pub const INSERTS: usize = 2;
/// Most DNS servers a template may rotate.
pub const DNS_MAX: usize = 8;

/// Template flags: which per-request fields the program copies into the reply.
pub mod stamp {
    pub const XID: u16 = 1 << 0;
    pub const SECS: u16 = 1 << 1;
    pub const FLAGS: u16 = 1 << 2;
    pub const CIADDR: u16 = 1 << 3;
    pub const GIADDR: u16 = 1 << 4;
    pub const CHADDR: u16 = 1 << 5;
    pub const HOPS: u16 = 1 << 6;
    /// Set the broadcast bit when giaddr is set (RFC 2131 4.3.2 for DHCPNAK).
    pub const BCAST_IF_RELAYED: u16 = 1 << 7;
}

/// What an [`Insert`] slot inserts.
pub mod insert {
    pub const NONE: u8 = 0;
    /// The request's option 61, whole (code, length, data), if present.
    pub const ECHO_61: u8 = 61;
    /// The request's option 97, whole, if present.
    pub const ECHO_97: u8 = 97;
    /// The requested address (option 50, else ciaddr) in dotted decimal, inside an
    /// option whose length byte is the byte just before the slot (the DHCPNAK message).
    pub const REQUESTED_IP_TEXT: u8 = 0xfe;
}

/// Bytes the program inserts into the template's bytes at `off`, so the result is
/// byte-identical to the slow path's encoding (which keeps options sorted by code).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Insert {
    /// One of `insert::*`.
    pub what: u8,
    pub _pad: u8,
    /// Offset in the template's bytes; slots are in increasing offset order.
    pub off: u16,
}

/// A precompiled reply: a DHCP message as the slow path's builder encodes it for a
/// canonical request, plus where the per-request fields go.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    /// Equal to the map key; checked by the program.
    pub id: u32,
    /// Bytes used in `buf`.
    pub len: u16,
    /// `stamp::*` flags.
    pub stamp: u16,
    pub inserts: [Insert; INSERTS],
    /// DHCP message type of the reply (2 OFFER, 5 ACK, 6 NAK), for counters and events.
    pub msg_type: u8,
    /// Client kind index (for events); 0xff for NAK.
    pub kind: u8,
    /// DNS servers (option 6) at `dns_off`, rotated per reply like the slow path does;
    /// 0 = no rotation.
    pub dns_n: u8,
    /// 1 when the builder dropped options to fit 548 bytes: a client that allows larger
    /// replies (option 57) would get more, so the program passes it up.
    pub limited: u8,
    /// The address offered (yiaddr), for events and addressing.
    pub yiaddr: [u8; 4],
    pub dns_off: u16,
    pub _pad: [u8; 6],
    /// CLOCK_MONOTONIC deadline in ns after which the template must not be sent (it
    /// embeds expiring boot-URL tokens); 0 = never.
    pub valid_until_ns: u64,
    pub buf: [u8; TEMPLATE_CAP],
}

impl Default for Template {
    fn default() -> Self {
        Template {
            id: 0,
            len: 0,
            stamp: 0,
            inserts: [Insert::default(); INSERTS],
            msg_type: 0,
            kind: 0,
            dns_n: 0,
            limited: 0,
            yiaddr: [0; 4],
            dns_off: 0,
            _pad: [0; 6],
            valid_until_ns: 0,
            buf: [0; TEMPLATE_CAP],
        }
    }
}

/// One reply sent by the fast path, for the daemon's event log.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub time_ns: u64,
    pub mac: [u8; 6],
    /// DHCP message type sent (2 OFFER, 5 ACK, 6 NAK).
    pub msg_type: u8,
    pub kind: u8,
    pub ip: [u8; 4],
    pub xid: u32,
    pub ifindex: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is repr(C), has only explicit padding fields, and any
    // bit pattern is a valid value.
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::HostEntry {}
    unsafe impl aya::Pod for super::ClassKey {}
    unsafe impl aya::Pod for super::ServerKey {}
    unsafe impl aya::Pod for super::Server {}
    unsafe impl aya::Pod for super::Template {}
    unsafe impl aya::Pod for super::LeaseEvent {}
}

// Layout checks: both sides compile these, so a change that adds implicit padding fails
// the build instead of corrupting a map.
const _: () = assert!(core::mem::size_of::<MacKey>() == 8);
const _: () = assert!(core::mem::size_of::<HostEntry>() == 28 + 4 * MSGS * MAX_KINDS);
const _: () = assert!(core::mem::size_of::<ClassKey>() == 4);
const _: () = assert!(core::mem::size_of::<ServerKey>() == 12);
const _: () = assert!(core::mem::size_of::<Server>() == 12);
const _: () = assert!(core::mem::size_of::<Template>() == 40 + TEMPLATE_CAP);
const _: () = assert!(core::mem::size_of::<LeaseEvent>() == 32);
