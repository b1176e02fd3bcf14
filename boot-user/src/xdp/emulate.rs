//! The XDP program's message assembly, in Rust: what the kernel does to a template for
//! one request (inserts, DNS rotation, stamped fields, size rule). The compiler replays
//! every template through it against the slow path's builder before installing it, and
//! the BPF_PROG_TEST_RUN tests hold the program to the same results. Pure.
use std::net::Ipv4Addr;

use boot_common::{insert, stamp, ECHO_MAX};

use super::compile::{Compiled, DEFAULT_LIMIT};
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
        Probe { name, request, rotation: 0 }
    }
}

/// The DHCP message the program sends for `p` with template `c`, or None when it passes
/// the request up instead.
pub fn emulate(c: &Compiled, p: &Probe) -> Option<Vec<u8>> {
    let r = &p.request;
    if r.machine_id.as_ref().is_some_and(|id| id.is_empty() || id.len() > ECHO_MAX) {
        return None; // the option walk passes such requests up
    }
    let mut out = Vec::with_capacity(c.bytes.len() + 80);
    let (what, at) = c.insert.unwrap_or((insert::NONE, c.bytes.len()));
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
