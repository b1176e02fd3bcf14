//! Which reply, if any: the same decisions the slow path makes, reduced to selecting a
//! precompiled template (OFFER, ACK or NAK) or passing the frame up.
//!
//! The client kind comes from `CLASSES`, filled by the slow path's classifier; the only
//! comparisons made here are RFC 2131's: a REQUEST naming another server is left to the
//! slow path (which stays silent), a REQUEST for an address that is not the host's gets
//! the NAK template, and nonsensical relay fields (`boot_common::relay_ok`, the slow
//! path's rule too) are left to the slow path, which stays silent.
use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::programs::XdpContext;
use boot_common::{
    counter, field, reason, HostEntry, MacKey, MAX_KINDS, MSGS, MSG_ACK, MSG_OFFER, PATCH_CAP,
};

use crate::{
    frame::{bounded, Request, PORT_PXE, PORT_SERVER},
    maps::{Patch, CLASSES, HOSTS},
    options::Opts,
    prog::{Verdict, NO_REASON},
};

const DISCOVER: u8 = 1;
const REQUEST: u8 = 3;

/// Our address and MAC where the request came in (the source of the reply).
#[derive(Clone, Copy)]
pub struct Server {
    pub ip: [u8; 4],
    pub mac: [u8; 6],
}

/// The reply chosen for a request.
pub struct Choice {
    pub server: Server,
    pub template: u32,
    /// The NAK template was chosen (its message type must say so).
    pub nak: bool,
    /// The address a REQUEST asked for (option 50, else ciaddr), for the NAK text.
    pub wanted_ip: [u8; 4],
    /// The host's address (yiaddr of templates that stamp it).
    pub host_ip: [u8; 4],
    /// The host's deadline (its patch's token), 0 = none.
    pub valid_until_ns: u64,
    /// Lengths and sums of the host's patch fields (the patch itself is in `Work`).
    pub field_len: [u8; field::COUNT],
    pub field_sum: [u16; field::COUNT],
}

const fn other(r: u32) -> Verdict {
    Verdict::pass(counter::PASSED_OTHER, r)
}

/// The host entry fields one request needs, read at once.
struct HostView {
    ip: [u8; 4],
    server: Server,
    ifindex: u32,
    vlan: u16,
    nak: u32,
    template: u32,
    valid_until_ns: u64,
    field_len: [u8; field::COUNT],
    field_sum: [u16; field::COUNT],
}

#[inline(always)]
pub fn decide(
    ctx: &XdpContext,
    req: &Request,
    opts: &Opts,
    patch: &mut Patch,
) -> Result<Choice, Verdict> {
    let slot = match (req.dport, opts.msg_type) {
        (_, 0) => return Err(other(reason::NO_MSG_TYPE)),
        (PORT_SERVER, DISCOVER) => MSG_OFFER,
        (PORT_SERVER, REQUEST) => MSG_ACK,
        // The boot server's ACK echoes the boot item of the request's option 43, and it
        // only serves proxyDHCP setups: always the slow path's.
        (PORT_PXE, _) => return Err(other(reason::BOOT_SERVER)),
        _ => return Err(other(reason::MSG_OTHER)), // INFORM, RELEASE, DECLINE ...
    };
    let kind = opts
        .class
        .index()
        .and_then(|i| CLASSES.get(i))
        .map(|k| unsafe { read_volatile(k) })
        // 0 (not covered) when the key is out of the table: an absent Option's payload
        // is undefined, and LLVM may test it anyway from whatever the stack slot held (a
        // packet pointer, which the verifier refuses to shift).
        .unwrap_or(0);
    let mac = req.mac;
    let Some(entry) = HOSTS.get_ptr(&MacKey::new(mac)) else {
        return Err(Verdict::pass(counter::PASSED_UNKNOWN, NO_REASON));
    };
    // Stored as kind + 1; 0 is a key the classifier was not asked about.
    if kind < 1 || kind > MAX_KINDS as u32 {
        return Err(other(reason::NO_CLASS));
    }
    let kind = kind - 1;
    let Some(kind) = bounded(kind, 0, MAX_KINDS as u32 - 1) else {
        return Err(other(reason::NO_CLASS));
    };
    let Some(host) = read_host(entry, mac, kind as usize, slot, patch) else {
        return Err(other(reason::TORN_ENTRY));
    };
    if host.ifindex != ctx.ingress_ifindex() as u32 || host.vlan != req.vlan() {
        return Err(other(reason::NO_SERVER)); // the host is served from another interface
    }
    let server = host.server;
    if !boot_common::relay_ok(req.giaddr, req.hops, server.ip) {
        return Err(other(reason::BAD_RELAY));
    }
    // What the stack would not deliver to the slow path's socket is not ours either.
    let ip_ok = req.ip_dst == [255; 4] || req.ip_dst == server.ip;
    let mac_ok = req.dst_mac == [0xff; 6] || req.dst_mac == server.mac;
    if !ip_ok || !mac_ok {
        return Err(other(reason::NOT_FOR_US));
    }
    let mut template = host.template;
    let mut nak = false;
    let mut wanted_ip = [0; 4];
    if slot != MSG_OFFER {
        if opts.server_id.is_some_and(|sid| sid != server.ip) {
            return Err(other(reason::FOREIGN_SERVER));
        }
        if slot == MSG_ACK {
            let wanted = opts.requested_ip.unwrap_or(req.ciaddr);
            if wanted == [0; 4] {
                return Err(other(reason::NO_ADDRESS));
            }
            if wanted != host.ip {
                template = host.nak;
                nak = true;
            }
            wanted_ip = wanted;
        }
    }
    if template == 0 {
        return Err(other(reason::NO_TEMPLATE));
    }
    Ok(Choice {
        server,
        template,
        nak,
        wanted_ip,
        host_ip: host.ip,
        valid_until_ns: host.valid_until_ns,
        field_len: host.field_len,
        field_sum: host.field_sum,
    })
}

/// Copies what this request needs out of the host entry (its patch into `patch`), and
/// checks that the copy is of one whole entry for this MAC (the daemon replaces entries
/// while we run).
#[inline(always)]
fn read_host(
    p: *const HostEntry,
    mac: [u8; 6],
    kind: usize,
    slot: usize,
    patch: &mut Patch,
) -> Option<HostView> {
    // SAFETY: p is a live map value; volatile keeps the reads in this order, so that a
    // concurrent rewrite shows up as seq != seq_end or as another MAC.
    unsafe {
        let seq = read_volatile(&(*p).seq);
        let emac = read_volatile(&(*p).mac);
        let v = HostView {
            ip: read_volatile(&(*p).ip),
            server: Server {
                ip: read_volatile(&(*p).server_ip),
                mac: read_volatile(&(*p).server_mac),
            },
            ifindex: read_volatile(&(*p).ifindex),
            vlan: read_volatile(&(*p).vlan),
            nak: read_volatile(&(*p).nak),
            template: read_volatile(&(*p).tmpl[kind & (MAX_KINDS - 1)][slot % MSGS]),
            valid_until_ns: read_volatile(&(*p).valid_until_ns),
            field_len: read_volatile(&(*p).field_len),
            field_sum: read_volatile(&(*p).field_sum),
        };
        // The patch in words (both 8-byte aligned), between the sequence numbers.
        let src = (*p).patch.as_ptr() as *const u64;
        let dst = patch.0.as_mut_ptr() as *mut u64;
        let mut i = 0;
        while i < PATCH_CAP / 8 {
            write_volatile(dst.add(i), read_volatile(src.add(i)));
            i += 1;
        }
        let seq_end = read_volatile(&(*p).seq_end);
        (seq == seq_end && emac == mac).then_some(v)
    }
}
