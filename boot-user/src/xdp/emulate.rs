//! The XDP program's message assembly, in Rust: what the kernel does to a template for
//! one request (inserts, DNS rotation, stamped fields, size rule). The compiler replays
//! every template through it against the slow path's builder before installing it, and
//! the BPF_PROG_TEST_RUN tests hold the program to the same results. Pure.
use std::net::Ipv4Addr;

use boot_common::{insert, stamp, ECHO_MAX};

use super::compile::{Compiled, HostPatch, DEFAULT_LIMIT};
use crate::dhcp::Request;

/// A request as the compiler's self-check presents it to a template.
#[derive(Clone, Debug)]
pub struct Probe {
    pub name: &'static str,
    pub request: Request,
    /// How far the program rotates the DNS list (its per-CPU reply count).
    pub rotation: usize,
}

impl Probe {
    pub fn new(name: &'static str, request: Request) -> Probe {
        Probe {
            name,
            request,
            rotation: 0,
        }
    }
}

/// The DHCP message the program sends for `p` with template `c` and the host entry's
/// `patch`, or None when it passes the request up instead.
pub fn emulate(c: &Compiled, p: &Probe, patch: &HostPatch) -> Option<Vec<u8>> {
    let r = &p.request;
    if r.machine_id
        .as_ref()
        .is_some_and(|id| id.is_empty() || id.len() > ECHO_MAX)
    {
        return None; // the option walk passes such requests up
    }
    let mut out = Vec::with_capacity(c.bytes.len() + 80);
    let (what, at) = c.insert.unwrap_or((insert::NONE, c.bytes.len()));
    if c.holes.iter().any(|h| h.off as usize + h.len as usize > at) {
        return None; // holes are in the head only
    }
    out.extend_from_slice(c.bytes.get(..at)?);
    match what {
        insert::ECHO_97 => {
            if let Some(id) = &r.machine_id {
                out.extend_from_slice(&[97, id.len() as u8]);
                out.extend_from_slice(id);
            }
        }
        insert::REQUESTED_IP_TEXT => {
            let wanted = r.requested_ip.unwrap_or(r.ciaddr);
            if wanted.is_unspecified() {
                return None;
            }
            let text = wanted.to_string().into_bytes();
            let last = out.last_mut()?;
            *last = last.checked_add(text.len() as u8)?;
            out.extend_from_slice(&text);
        }
        _ => {}
    }
    out.extend_from_slice(c.bytes.get(at..)?);
    if let Some((off, n)) = c.dns {
        let (off, n) = (off as usize, n as usize);
        let list: Vec<u8> = c.bytes.get(off..off + 4 * n)?.to_vec();
        for i in 0..n {
            let j = (i + p.rotation) % n;
            out[off + 4 * i..off + 4 * i + 4].copy_from_slice(&list[4 * j..4 * j + 4]);
        }
    }
    patch.fill(&mut out, c.stamp, &c.holes)?;
    stamp_fields(&mut out, c.stamp, r);
    let limit = r.max_message_size.unwrap_or(0).max(576) as usize - 28;
    if out.len() > limit || (c.limited && limit > DEFAULT_LIMIT) {
        return None;
    }
    Some(out)
}

fn stamp_fields(out: &mut [u8], flags: u16, r: &Request) {
    let ip = |a: Ipv4Addr| a.octets();
    if flags & stamp::XID != 0 {
        out[4..8].copy_from_slice(&r.xid.to_be_bytes());
    }
    if flags & stamp::FLAGS != 0 {
        out[10..12].copy_from_slice(&r.flags.to_be_bytes());
    }
    if flags & stamp::CIADDR != 0 {
        out[12..16].copy_from_slice(&ip(r.ciaddr));
    }
    if flags & stamp::GIADDR != 0 {
        out[24..28].copy_from_slice(&ip(r.giaddr));
    }
    if flags & stamp::BCAST_IF_RELAYED != 0 && !r.giaddr.is_unspecified() {
        out[10] |= 0x80;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::{decide, ClientKind, Context, Decision, PlainUrls, Settings};
    use crate::inventory::{Host, Inventory, Mac};
    use crate::xdp::compile::Compiler;
    use boot_common::{MSG_ACK, MSG_OFFER};
    use dhcproto::v4::MessageType;

    const MAC: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

    /// The program's assembly (in Rust) against the builder, per kind and per request
    /// variant: the same check the compiler does at run time, as a table.
    #[test]
    fn templates_replay_the_builder() {
        let host = Host::with_interface("cn1", MAC, Some("10.0.0.5/24"));
        let inv = Inventory::from_parts_unchecked(vec![host], vec![]);
        let s = Settings {
            dns: ["10.0.0.53", "10.0.0.54", "10.0.0.55"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect(),
            ..Settings::default()
        };
        let urls = PlainUrls { port: 8080 };
        let t = Compiler {
            settings: &s,
            urls: &urls,
        }
        .compile_host(&inv, MAC, SERVER)
        .unwrap();
        let want = |r: &Request, rotation: usize| {
            let ctx = Context {
                settings: &s,
                server_ip: SERVER,
                host: inv.lookup_mac(MAC),
                urls: &urls,
                dns_rotation: rotation,
            };
            match decide(r, &ctx) {
                Decision::Reply(r) => Some(r.bytes()),
                Decision::Silent(_) => None,
            }
        };
        let mut rows = 0;
        for (k, kind) in ClientKind::TEMPLATES.iter().enumerate() {
            for (slot, mt) in [
                (MSG_OFFER, MessageType::Discover),
                (MSG_ACK, MessageType::Request),
            ] {
                let c = t.slots[k][slot].as_ref().unwrap();
                for (xid, flags, giaddr, id, rotation) in [
                    (1u32, 0u16, Ipv4Addr::UNSPECIFIED, None, 0usize),
                    (
                        0xdead_beef,
                        0x8000,
                        Ipv4Addr::UNSPECIFIED,
                        Some(vec![0u8; 17]),
                        1,
                    ),
                    (7, 0, Ipv4Addr::new(10, 9, 0, 1), Some(vec![1, 2, 3]), 2),
                    (8, 0x8000, Ipv4Addr::new(10, 9, 0, 1), Some(vec![5; 64]), 4),
                ] {
                    let mut r = Request::new(mt, MAC, *kind);
                    r.xid = xid;
                    r.flags = flags;
                    r.giaddr = giaddr;
                    r.machine_id = id;
                    if mt == MessageType::Request {
                        r.requested_ip = Some(IP);
                        r.server_id = Some(SERVER);
                    }
                    let p = Probe {
                        name: "row",
                        request: r.clone(),
                        rotation,
                    };
                    assert_eq!(
                        emulate(c, &p, &t.patch),
                        want(&r, rotation),
                        "{kind:?} {mt:?} xid {xid:#x}"
                    );
                    rows += 1;
                }
            }
        }
        let nak = t.nak.as_ref().unwrap();
        for wanted in ["10.0.0.6", "192.168.100.200", "1.2.3.4"] {
            let mut r = Request::new(MessageType::Request, MAC, ClientKind::Os);
            r.requested_ip = Some(wanted.parse().unwrap());
            r.giaddr = Ipv4Addr::new(10, 9, 0, 1);
            assert_eq!(
                emulate(nak, &Probe::new("nak", r.clone()), &t.patch),
                want(&r, 0),
                "NAK for {wanted}"
            );
        }
        assert_eq!(rows, 64);
    }

    #[test]
    fn out_of_range_requests_are_passed_up() {
        let c = Compiled {
            bytes: vec![0; 300],
            stamp: 0,
            insert: Some((insert::ECHO_97, 290)),
            msg_type: 2,
            kind: 0,
            dns: None,
            limited: true,
            yiaddr: IP,
            holes: vec![],
            expires: false,
        };
        let none = HostPatch::default();
        let mut r = Request::new(MessageType::Discover, MAC, ClientKind::Os);
        r.machine_id = Some(vec![]);
        assert_eq!(emulate(&c, &Probe::new("empty 97", r.clone()), &none), None);
        r.machine_id = None;
        r.max_message_size = Some(1500);
        assert_eq!(
            emulate(
                &c,
                &Probe::new("limited, client allows more", r.clone()),
                &none
            ),
            None
        );
        r.max_message_size = None;
        assert!(emulate(&c, &Probe::new("limited, default size", r), &none).is_some());
    }
}
