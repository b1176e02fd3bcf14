//! Types shared by the XDP program (`boot-ebpf`) and the daemon (`boot-user`).
//!
//! Everything here is `#[repr(C)]` and plain old data: these are the keys and values of
//! the BPF maps, so both sides must agree on their layout byte for byte. With the `user`
//! feature each type also implements `aya::Pod` so the daemon can put it in a map.
//!
//! # The fast path's data model
//! - `HOSTS`: [`MacKey`] -> [`HostEntry`]: the host's address, the server address and
//!   interface that answer it, and per client kind and message the id of a precompiled
//!   reply template.
//! - `TEMPLATES`: `u32` id -> [`Template`]: a whole DHCP payload built by the same reply
//!   builder as the slow path, with the per-host bytes (yiaddr, chaddr, the host name,
//!   the boot URL with its token) cut out as zeroed holes that the program fills from
//!   the host entry's [`HostEntry::patch`]: hosts whose replies differ only there share
//!   one template. A template's bytes never change while its id is in use:
//!   a changed reply gets a new id, and the old one is deleted only after no host entry
//!   names it any more (plus a grace period), so the kernel never reads a half-written
//!   template.
//! - `CLASSES`: array indexed by [`ClassKey::index`] (features of options 93/60/77/175)
//!   -> client kind index + 1 (0: not covered), filled by asking the slow path's
//!   classifier, so the kernel has no idea of its own about which client is which.
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
    /// Not a decision: lease events the program could not store (the daemon adds those
    /// it found overwritten).
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
    /// Relay fields that make no sense ([`super::relay_ok`]): the slow path is silent.
    pub const BAD_RELAY: u32 = 19;
    pub const COUNT: u32 = 20;
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
        "bad_relay",
    ];
}

/// The most relay hops a request may have come through (RFC 1542 4.1.1 suggests 16 as
/// the largest configurable maximum).
pub const MAX_RELAY_HOPS: u8 = 16;

/// Whether a request's relay fields make sense for the server address `server`: at
/// most [`MAX_RELAY_HOPS`] hops; no giaddr and no hops (a direct client), or a giaddr
/// that a relay agent can have: not 0.0.0.0/8, loopback, multicast, class E or the
/// limited broadcast, and not the server itself (a reply there would go to the server or
/// the loopback). The slow path and the XDP program both decide with this function, so
/// a nonsensical request gets silence from both.
#[inline(always)]
pub fn relay_ok(giaddr: [u8; 4], hops: u8, server: [u8; 4]) -> bool {
    if hops > MAX_RELAY_HOPS {
        return false;
    }
    if giaddr == [0; 4] {
        return hops == 0;
    }
    let first = giaddr[0];
    !(first == 0 || first == 127 || first >= 224 || giaddr == server)
}

#[cfg(test)]
mod relay_tests {
    use super::*;

    #[test]
    fn relay_fields() {
        let server = [10, 0, 0, 1];
        let rows: [([u8; 4], u8, bool); 13] = [
            ([0, 0, 0, 0], 0, true),
            ([0, 0, 0, 0], 1, false),
            ([10, 9, 0, 1], 1, true),
            ([10, 9, 0, 1], 16, true),
            ([10, 9, 0, 1], 17, false),
            ([10, 9, 0, 1], 255, false),
            ([10, 0, 0, 1], 1, false),
            ([127, 0, 0, 1], 1, false),
            ([255, 255, 255, 255], 1, false),
            ([224, 0, 0, 1], 1, false),
            ([240, 0, 0, 1], 1, false),
            ([0, 1, 2, 3], 1, false),
            ([169, 254, 1, 1], 1, true),
        ];
        for (g, hops, want) in rows {
            assert_eq!(relay_ok(g, hops, server), want, "{g:?} hops {hops}");
        }
    }
}

/// Client kinds the host entry has template slots for (the slow path's classifier maps
/// request features to an index below this).
pub const MAX_KINDS: usize = 8;
/// Message slots per kind.
pub const MSGS: usize = 2;
/// DISCOVER to port 67 -> OFFER.
pub const MSG_OFFER: usize = 0;
/// REQUEST to port 67 for the host's address -> ACK.
pub const MSG_ACK: usize = 1;

/// Value of the host map. Replaced whole by the daemon; the program copies it to its
/// stack at once and checks `seq == seq_end` to detect a torn read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostEntry {
    pub seq: u32,
    /// The key again: a reader that raced with the element's reuse for another host
    /// sees a different MAC and passes the frame up.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The host's address on this MAC: a REQUEST for another address gets a NAK.
    pub ip: [u8; 4],
    /// The server identifier (option 54) the templates were built with, and where that
    /// address is ours: the program answers only requests that came in there.
    pub server_ip: [u8; 4],
    pub ifindex: u32,
    /// 802.1Q VLAN id (0 untagged).
    pub vlan: u16,
    /// Our MAC there: the source of replies.
    pub server_mac: [u8; 6],
    /// Template of the DHCPNAK for this host (0 = none: pass up).
    pub nak: u32,
    /// Template ids, `[kind][MSG_*]`; 0 = none (pass up).
    pub tmpl: [[u32; MSGS]; MAX_KINDS],
    /// Length of each per-host field in `patch` (`field::*`; 0: the host has none).
    pub field_len: [u8; field::COUNT],
    /// One's complement sum (folded) of each field as placed at an even offset; the
    /// program swaps its bytes for a hole at an odd offset.
    pub field_sum: [u16; field::COUNT],
    pub _pad3: [u8; 6],
    /// CLOCK_MONOTONIC deadline in ns after which this host's answers must not be sent
    /// (its patch embeds an expiring boot-URL token); 0 = never.
    pub valid_until_ns: u64,
    /// The per-host bytes the templates' holes are filled with: field `f` at
    /// `field::START[f]`, at most `field::CAP[f]` bytes.
    pub patch: [u8; PATCH_CAP],
    pub seq_end: u32,
    pub _pad4: u32,
}

impl Default for HostEntry {
    fn default() -> Self {
        HostEntry {
            seq: 0,
            mac: [0; 6],
            _pad: [0; 2],
            ip: [0; 4],
            server_ip: [0; 4],
            ifindex: 0,
            vlan: 0,
            server_mac: [0; 6],
            nak: 0,
            tmpl: [[0; MSGS]; MAX_KINDS],
            field_len: [0; field::COUNT],
            field_sum: [0; field::COUNT],
            _pad3: [0; 6],
            valid_until_ns: 0,
            patch: [0; PATCH_CAP],
            seq_end: 0,
            _pad4: 0,
        }
    }
}

/// Per-host fields of [`HostEntry::patch`] that template holes name.
pub mod field {
    /// The host name (option 12).
    pub const NAME: u8 = 0;
    /// The boot URL (BOOTP `file` or option 67), which carries the host's token.
    pub const URL: u8 = 1;
    pub const COUNT: usize = 2;
    /// Where each field starts in the patch.
    pub const START: [usize; COUNT] = [0, 64];
    /// Longest value of each field (a longer one stays in the host's own templates).
    pub const CAP: [usize; COUNT] = [64, 192];
}

/// Bytes of per-host patch in a host entry.
pub const PATCH_CAP: usize = 256;
/// Holes per template.
pub const HOLES: usize = 4;

/// Where a template has a per-host field: `len` bytes at message offset `off` (in the
/// head, past the first 48 bytes), to be filled with field `field` of the host entry's
/// patch, whose length must be `len`. `len` 0: no hole.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hole {
    pub off: u16,
    pub len: u8,
    pub field: u8,
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
    /// Highest option 93 value the class table covers (others go to the slow path).
    pub const MAX_ARCH: u16 = 63;
    /// Entries of the class table (an array: the lookup is an address computation).
    pub const TABLE: u32 = (Self::MAX_ARCH as u32 + 2) * 8;

    /// Slot in the class table; None for keys it does not cover.
    #[inline(always)]
    pub fn index(&self) -> Option<u32> {
        let arch = match self.arch {
            Self::NO_ARCH => Self::MAX_ARCH as u32 + 1,
            a if a <= Self::MAX_ARCH => a as u32,
            _ => return None,
        };
        if self.vendor > Self::VENDOR_OTHER || self.user > Self::USER_IPXE {
            return None;
        }
        Some(arch * 8 + self.vendor as u32 * 2 + self.user as u32)
    }

    pub const NO_ARCH: u16 = 0xffff;
    pub const VENDOR_NONE: u8 = 0;
    /// Option 60 starts with `PXEClient`.
    pub const VENDOR_PXE: u8 = 1;
    /// Option 60 starts with `HTTPClient`.
    pub const VENDOR_HTTP: u8 = 2;
    pub const VENDOR_OTHER: u8 = 3;
    pub const USER_NONE: u8 = 0;
    /// Option 77 is `iPXE` (raw, or as one RFC 3004 entry), or there is no option 77
    /// and option 175 is present. Any other option 77 is `USER_OTHER`, 175 or not.
    pub const USER_IPXE: u8 = 1;
    pub const USER_OTHER: u8 = 2;
}

/// Capacity of a template's head: the DHCP message up to the insertion point (all of
/// it when there is none). The slow path keeps replies within 548 bytes unless the
/// client's option 57 allows more, and templates are built for 548.
pub const HEAD_CAP: usize = 552;
/// Capacity of a template's tail: the message after the insertion point.
pub const TAIL_CAP: usize = 256;
/// Longest option echoed from the request (data bytes).
pub const ECHO_MAX: usize = 64;
/// Most DNS servers a template may rotate.
pub const DNS_MAX: usize = 8;

/// Template flags: which per-request fields the program copies into the reply (the
/// template has zeros there, so the checksum only adds them).
pub mod stamp {
    pub const XID: u16 = 1 << 0;
    pub const FLAGS: u16 = 1 << 1;
    pub const CIADDR: u16 = 1 << 2;
    pub const GIADDR: u16 = 1 << 3;
    /// Set the broadcast bit when giaddr is set (RFC 2131 4.3.2 for DHCPNAK).
    pub const BCAST_IF_RELAYED: u16 = 1 << 4;
    /// yiaddr is the host entry's address (the template's `yiaddr` is zero).
    pub const YIADDR: u16 = 1 << 5;
    /// chaddr's first 6 bytes are the request's (the host entry's key).
    pub const CHADDR: u16 = 1 << 6;
}

/// What the program inserts between a template's head and tail.
pub mod insert {
    pub const NONE: u8 = 0;
    /// The request's option 97, whole (code, length, data), if present.
    pub const ECHO_97: u8 = 97;
    /// The requested address (option 50, else ciaddr) in dotted decimal; the head ends
    /// with the length byte of the option holding it (the DHCPNAK message), which the
    /// program increases by the text's length.
    pub const REQUESTED_IP_TEXT: u8 = 0xfe;
}

/// A precompiled reply: the DHCP message the slow path's builder encodes for a
/// canonical request, split where per-request bytes get inserted (dhcproto keeps
/// options sorted by code, so an echoed option 97 goes in the middle), with the
/// one's complement sums of both parts so the program only adds what it changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    /// Equal to the map key; checked by the program.
    pub id: u32,
    pub head_len: u16,
    pub tail_len: u16,
    /// `stamp::*` flags.
    pub stamp: u16,
    /// `insert::*`.
    pub insert: u8,
    /// DHCP message type of the reply (2 OFFER, 5 ACK, 6 NAK), for counters and events.
    pub msg_type: u8,
    /// Client kind index (for events); 0xff for NAK.
    pub kind: u8,
    /// DNS servers (option 6) at `dns_off` in the head, rotated per reply like the slow
    /// path does; 0 = no rotation.
    pub dns_n: u8,
    /// 1 when the builder dropped options to fit 548 bytes: a client that allows larger
    /// replies (option 57) would get more, so the program passes it up.
    pub limited: u8,
    pub _pad: u8,
    /// The address offered (yiaddr), for events and addressing.
    pub yiaddr: [u8; 4],
    pub dns_off: u16,
    /// One's complement sum (big-endian 16-bit words) of the head, from offset 0.
    pub sum_head: u16,
    /// Same for the tail, as it sits right after the head (offset `head_len`).
    pub sum_tail: u16,
    pub _pad2: [u8; 6],
    /// CLOCK_MONOTONIC deadline in ns after which the template must not be sent (it
    /// embeds expiring boot-URL tokens); 0 = never.
    pub valid_until_ns: u64,
    /// Per-host fields to fill in (zeros in `head` and in `sum_head`).
    pub holes: [Hole; HOLES],
    pub head: [u8; HEAD_CAP],
    pub tail: [u8; TAIL_CAP],
}

impl Default for Template {
    fn default() -> Self {
        Template {
            id: 0,
            head_len: 0,
            tail_len: 0,
            stamp: 0,
            insert: 0,
            msg_type: 0,
            kind: 0,
            dns_n: 0,
            limited: 0,
            _pad: 0,
            yiaddr: [0; 4],
            dns_off: 0,
            sum_head: 0,
            sum_tail: 0,
            _pad2: [0; 6],
            valid_until_ns: 0,
            holes: [Hole::default(); HOLES],
            head: [0; HEAD_CAP],
            tail: [0; TAIL_CAP],
        }
    }
}

/// Lease event slots per CPU in the program's `EVENTS` array (a power of two): the daemon
/// reads every 20 ms, and 8,192 slots hold that long at 400,000 answers a second on one
/// CPU.
pub const EVENT_SLOTS: u32 = 8192;

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

/// The benchmark's in-kernel DHCP client (program `bench-client`, built beside the
/// server's program and used only by `cargo xtask bench dhcp`): what it and the
/// benchmark share. Its frames are the load generator's, 342 bytes: Ethernet, IPv4 (no
/// options), UDP, a 300-byte BOOTP message.
pub mod bench {
    pub const FRAME_LEN: usize = 342;
    /// Offsets in the frame: IPv4 source (the UDP pseudo header's addresses, then the
    /// UDP header and payload, run contiguously to the end), UDP checksum, xid, yiaddr,
    /// chaddr, the MAC inside option 61, option 50's and 54's addresses (REQUEST), the
    /// first option.
    pub const IP_SRC: usize = 26;
    pub const UDP_CSUM: usize = 40;
    pub const XID: usize = 46;
    pub const YIADDR: usize = 58;
    pub const CHADDR: usize = 70;
    pub const CLIENT_ID_MAC: usize = 288;
    pub const REQUESTED_IP: usize = 309;
    pub const SERVER_ID: usize = 315;
    pub const OPTIONS: usize = 282;
    /// xids the client uses: `XID_BASE + sequence number`. The userspace generator's
    /// are below it, and replies to those are passed up untouched.
    pub const XID_BASE: u32 = 0x8000_0000;
    /// Send times kept, by sequence number modulo this (a power of two).
    pub const SENT_SLOTS: u32 = 1 << 20;
    /// Round-trip histogram: 1 us buckets below `HIST_FINE`, then 1,024 us buckets.
    pub const HIST_FINE: u32 = 1024;
    pub const HIST_BUCKETS: u32 = 2048;

    /// Counters (a per-CPU array).
    pub mod counter {
        pub const DISCOVERS: u32 = 0;
        pub const OFFERS: u32 = 1;
        pub const REQUESTS: u32 = 2;
        pub const ACKS: u32 = 3;
        pub const NAKS: u32 = 4;
        /// OFFERs or ACKs for the wrong client, address or server.
        pub const WRONG: u32 = 5;
        /// ACKs for no outstanding DISCOVER (a duplicate or a late one).
        pub const UNMATCHED: u32 = 6;
        /// Replies of another type, or that could not be turned into a REQUEST.
        pub const OTHER: u32 = 7;
        pub const COUNT: u32 = 8;
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Config {
        /// Clients in `CLIENTS`; the DISCOVER with sequence number n is client n % clients.
        pub clients: u32,
        /// The server's address (option 54 expected, and sent in REQUESTs).
        pub server: [u8; 4],
        /// Next sequence number (advanced by the sending program).
        pub seq: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Client {
        pub mac: [u8; 6],
        pub _pad: [u8; 2],
        /// The address the inventory gives it.
        pub ip: [u8; 4],
    }

    /// The client's frames, built in userspace for client 0 with xid 0: the program
    /// copies one and stamps the client's fields and the checksum.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct Frame {
        pub bytes: [u8; FRAME_LEN],
        pub _pad: [u8; 2],
    }
    pub const FRAME_DISCOVER: u32 = 0;
    pub const FRAME_REQUEST: u32 = 1;

    /// Largest request `bench_cost` restores.
    pub const COST_CAP: usize = 1020;

    /// The request `bench_cost` writes over the frame before each run.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct CostFrame {
        pub len: u32,
        pub bytes: [u8; COST_CAP],
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is repr(C), has only explicit padding fields, and any
    // bit pattern is a valid value.
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::HostEntry {}
    unsafe impl aya::Pod for super::ClassKey {}
    unsafe impl aya::Pod for super::Template {}
    unsafe impl aya::Pod for super::LeaseEvent {}
    unsafe impl aya::Pod for super::bench::Config {}
    unsafe impl aya::Pod for super::bench::Client {}
    unsafe impl aya::Pod for super::bench::Frame {}
    unsafe impl aya::Pod for super::bench::CostFrame {}
}

// Layout checks: both sides compile these, so a change that adds implicit padding fails
// the build instead of corrupting a map.
const _: () = assert!(core::mem::size_of::<MacKey>() == 8);
const _: () =
    assert!(core::mem::size_of::<HostEntry>() == 40 + 4 * MSGS * MAX_KINDS + 24 + PATCH_CAP);
const _: () = assert!(core::mem::offset_of!(HostEntry, valid_until_ns) % 8 == 0);
const _: () = assert!(field::START[1] + field::CAP[1] == PATCH_CAP);
const _: () = assert!(field::START[0] + field::CAP[0] == field::START[1]);
const _: () = assert!(core::mem::size_of::<ClassKey>() == 4);
const _: () = assert!(core::mem::size_of::<Template>() == 40 + 4 * HOLES + HEAD_CAP + TAIL_CAP);
const _: () = assert!(core::mem::offset_of!(Template, head) % 8 == 0);
const _: () = assert!(core::mem::size_of::<LeaseEvent>() == 32);
const _: () = assert!(core::mem::size_of::<bench::Config>() == 16);
const _: () = assert!(core::mem::size_of::<bench::Client>() == 12);
const _: () = assert!(core::mem::size_of::<bench::Frame>() == bench::FRAME_LEN + 2);
const _: () = assert!(core::mem::size_of::<bench::CostFrame>() == 4 + bench::COST_CAP);
