//! The template compiler: asks the slow path's reply builder ([`crate::dhcp::decide`])
//! what it answers a canonical request of each client kind, and turns the answer into a
//! [`Compiled`] template the XDP program can replay with per-request fields stamped in.
//!
//! Nothing here decides what a reply says. The compiler only finds where the per-request
//! parts go (the option 97 echo's sorted position, the requested address in a NAK's
//! message, the DNS list to rotate), and checks its own work: every template is replayed
//! by [`super::emulate`] (the program's logic in Rust) for a probe request with every
//! per-request field set, and must give the builder's bytes for that probe exactly;
//! a template that does not is not installed (those requests go to the slow path).
use std::net::Ipv4Addr;

use boot_common::{
    insert, stamp, ClassKey, HEAD_CAP, MAX_KINDS, MSGS, MSG_ACK, MSG_OFFER, TAIL_CAP,
};
use dhcproto::v4::MessageType;

use super::emulate::{emulate, Probe};
use crate::dhcp::options::OptionTable;
use crate::dhcp::{decide, BootUrls, ClientKind, Context, Decision, Request, Settings};
use crate::inventory::{Inventory, Mac};

/// The canonical NAK is built for this requested address, whose text is then cut out.
const NAK_MARKER: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 1);
/// The slow path's reply size limit without option 57 (576-byte datagrams).
pub const DEFAULT_LIMIT: usize = 548;

/// One template, before it gets an id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Compiled {
    /// The DHCP message for the canonical request.
    pub bytes: Vec<u8>,
    pub stamp: u16,
    /// What the program inserts (`insert::*`) and where, in `bytes`.
    pub insert: Option<(u8, usize)>,
    pub msg_type: u8,
    /// Index in [`ClientKind::TEMPLATES`], 0xff for the NAK.
    pub kind: u8,
    /// Option 6's data offset and server count, when the program rotates it.
    pub dns: Option<(u16, u8)>,
    /// The builder dropped options to fit [`DEFAULT_LIMIT`].
    pub limited: bool,
    pub yiaddr: Ipv4Addr,
}

/// Every template of one boot interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTemplates {
    pub ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    /// `[kind][MSG_*]`; None: that request goes to the slow path.
    pub slots: [[Option<Compiled>; MSGS]; MAX_KINDS],
    pub nak: Option<Compiled>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("MAC {0} is not in the inventory")]
    UnknownMac(Mac),
    #[error("host {host} ({mac}): {what}: the template does not replay the slow path's reply")]
    Mismatch {
        host: String,
        mac: Mac,
        what: String,
    },
}

/// Index of a client kind's template slot. `Unsupported` architectures answer exactly as
/// OS clients do (lease only), so they share the OS slot.
pub fn kind_index(kind: ClientKind) -> usize {
    let kind = if matches!(kind, ClientKind::Unsupported(_)) {
        ClientKind::Os
    } else {
        kind
    };
    ClientKind::TEMPLATES
        .iter()
        .position(|k| *k == kind)
        .expect("every kind has a slot")
}

/// The `CLASSES` map: request features -> template slot, from the slow path's
/// classifier. Features the program cannot reduce to one of these keys (other user
/// classes, `Arch:` vendor classes without option 93) never reach the table. A key a
/// client-class rule of the option table may match has no slot (None): the program
/// passes those requests up, as only the slow path reads the whole options 60/77/93
/// ([`OptionTable::class_may_match`], the rule both sides share).
pub fn class_table(table: &OptionTable) -> Vec<(ClassKey, Option<u32>)> {
    let vendors: [(u8, Option<&[u8]>); 4] = [
        (ClassKey::VENDOR_NONE, None),
        (ClassKey::VENDOR_PXE, Some(b"PXEClient")),
        (ClassKey::VENDOR_HTTP, Some(b"HTTPClient")),
        (ClassKey::VENDOR_OTHER, Some(b"other")),
    ];
    let users: [(u8, Option<&[u8]>); 2] = [
        (ClassKey::USER_NONE, None),
        (ClassKey::USER_IPXE, Some(b"iPXE")),
    ];
    let arches = (0..=ClassKey::MAX_ARCH).map(Some).chain([None]);
    let mut out = vec![];
    for arch in arches {
        for (vendor, vbytes) in vendors {
            for (user, ubytes) in users {
                let kind = crate::dhcp::request::classify(arch, vbytes, ubytes, false);
                let key = ClassKey {
                    arch: arch.unwrap_or(ClassKey::NO_ARCH),
                    vendor,
                    user,
                };
                let slot = (!table.class_may_match(&key)).then(|| kind_index(kind) as u32);
                out.push((key, slot));
            }
        }
    }
    out
}

/// Compiles templates with one builder configuration.
pub struct Compiler<'a> {
    pub settings: &'a Settings,
    pub urls: &'a dyn BootUrls,
}

impl Compiler<'_> {
    fn decide(&self, inv: &Inventory, req: &Request, server_ip: Ipv4Addr) -> Option<Vec<u8>> {
        let ctx = Context {
            settings: self.settings,
            server_ip,
            host: inv.lookup_mac(req.mac),
            urls: self.urls,
            dns_rotation: 0,
        };
        match decide(req, &ctx) {
            Decision::Reply(r) => Some(r.bytes()),
            Decision::Silent(_) => None,
        }
    }

    /// All templates of the boot interface `mac`, answered from `server_ip`.
    pub fn compile_host(
        &self,
        inv: &Inventory,
        mac: Mac,
        server_ip: Ipv4Addr,
    ) -> Result<HostTemplates, CompileError> {
        let found = inv.lookup_mac(mac).ok_or(CompileError::UnknownMac(mac))?;
        let ip = found.nic.addr().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut out = HostTemplates {
            ip,
            server_ip,
            slots: Default::default(),
            nak: None,
        };
        if ip.is_unspecified() {
            return Ok(out); // the slow path stays silent; the program passes up
        }
        for (k, kind) in ClientKind::TEMPLATES.iter().enumerate() {
            for slot in [MSG_OFFER, MSG_ACK] {
                let mut req = canonical(mac, *kind, slot, ip, server_ip);
                out.slots[k][slot] =
                    self.compile_one(inv, &mut req, server_ip, k as u8, found.host.name.as_str())?;
            }
        }
        let mut req = Request::new(MessageType::Request, mac, ClientKind::Os);
        req.requested_ip = Some(if ip == NAK_MARKER {
            Ipv4Addr::new(0, 0, 0, 2)
        } else {
            NAK_MARKER
        });
        req.server_id = Some(server_ip);
        out.nak = self.compile_nak(inv, &req, server_ip, &found.host.name)?;
        Ok(out)
    }

    /// OFFER or ACK of one kind; None when the builder stays silent.
    fn compile_one(
        &self,
        inv: &Inventory,
        req: &mut Request,
        server_ip: Ipv4Addr,
        kind: u8,
        host: &str,
    ) -> Result<Option<Compiled>, CompileError> {
        // First with no size limit: when that reply fits 548 bytes anyway, it is also the
        // reply to a client without option 57 (nothing was dropped), and one call does.
        req.max_message_size = Some(u16::MAX);
        let full = self.decide(inv, req, server_ip);
        req.max_message_size = None;
        let Some(full) = full else {
            return Ok(None);
        };
        let (bytes, limited) = if full.len() <= DEFAULT_LIMIT {
            (full, false)
        } else {
            match self.decide(inv, req, server_ip) {
                Some(b) => (b, true),
                None => return Ok(None),
            }
        };
        if !stamp_fields_zero(&bytes) {
            return Err(CompileError::Mismatch {
                host: host.to_string(),
                mac: req.mac,
                what: "the canonical reply has nonzero xid, flags, ciaddr or giaddr".into(),
            });
        }
        let ack = req.msg_type == Some(MessageType::Request);
        let mut c = Compiled {
            stamp: stamp::XID | stamp::FLAGS | stamp::GIADDR | if ack { stamp::CIADDR } else { 0 },
            insert: None,
            msg_type: if ack { 5 } else { 2 },
            kind,
            dns: dns_list(&bytes),
            limited,
            yiaddr: Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]),
            bytes,
        };
        // The builder echoes option 97 at its sorted position; the check proves it (and
        // a builder that does not echo gets a template without the insert).
        c.insert = Some((insert::ECHO_97, insertion_point(&c.bytes, 97)));
        if self.check(inv, req, server_ip, &c, host).is_err() {
            c.insert = None;
            self.check(inv, req, server_ip, &c, host)?;
        }
        Ok(fits(&c).then_some(c))
    }

    /// The NAK, with the requested address's text cut out of option 56.
    fn compile_nak(
        &self,
        inv: &Inventory,
        req: &Request,
        server_ip: Ipv4Addr,
        host: &str,
    ) -> Result<Option<Compiled>, CompileError> {
        let Some(mut bytes) = self.decide(inv, req, server_ip) else {
            return Ok(None);
        };
        let mismatch = |what: &str| CompileError::Mismatch {
            host: host.to_string(),
            mac: req.mac,
            what: what.to_string(),
        };
        let text = req.requested_ip.expect("set by compile_host").to_string();
        let (off, len) =
            find_option(&bytes, 56).ok_or_else(|| mismatch("NAK without option 56"))?;
        if !bytes[off..off + len].starts_with(text.as_bytes()) || len + 15 - text.len() > 255 {
            return Err(mismatch(
                "NAK message does not start with the requested address",
            ));
        }
        bytes.drain(off..off + text.len());
        bytes[off - 1] -= text.len() as u8;
        let c = Compiled {
            bytes,
            stamp: stamp::XID | stamp::FLAGS | stamp::GIADDR | stamp::BCAST_IF_RELAYED,
            insert: Some((insert::REQUESTED_IP_TEXT, off)),
            msg_type: 6,
            kind: 0xff,
            dns: None,
            limited: false,
            yiaddr: Ipv4Addr::UNSPECIFIED,
        };
        self.check(inv, req, server_ip, &c, host)?;
        Ok(fits(&c).then_some(c))
    }

    /// Replays `c` for a probe with every per-request field set and compares it with
    /// what the builder says for that probe.
    fn check(
        &self,
        inv: &Inventory,
        base: &Request,
        server_ip: Ipv4Addr,
        c: &Compiled,
        host: &str,
    ) -> Result<(), CompileError> {
        for probe in probes(base, c.msg_type) {
            let want = self.decide(inv, &probe.request, server_ip);
            let got = emulate(c, &probe);
            // The program passing up is always safe; answering must match exactly.
            if got.is_some() && got != want {
                return Err(CompileError::Mismatch {
                    host: host.to_string(),
                    mac: base.mac,
                    what: format!("message type {} for {}", c.msg_type, probe.name),
                });
            }
        }
        Ok(())
    }
}

/// The request a template is compiled for: DISCOVER, or REQUEST in SELECTING state.
fn canonical(
    mac: Mac,
    kind: ClientKind,
    slot: usize,
    ip: Ipv4Addr,
    server_ip: Ipv4Addr,
) -> Request {
    if slot == MSG_OFFER {
        return Request::new(MessageType::Discover, mac, kind);
    }
    let mut r = Request::new(MessageType::Request, mac, kind);
    r.requested_ip = Some(ip);
    r.server_id = Some(server_ip);
    r
}

/// `base` with every per-request field set, for the self-check: a relayed request with
/// the broadcast flag, option 97, ciaddr for an ACK, another requested address for a NAK.
fn probes(base: &Request, msg_type: u8) -> Vec<Probe> {
    let mut a = base.clone();
    a.xid = 0x1234_5678;
    a.flags = 0x8000;
    a.hops = 1;
    a.giaddr = Ipv4Addr::new(10, 11, 12, 13);
    a.machine_id = Some((0..17).collect());
    match msg_type {
        5 => a.ciaddr = base.requested_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        6 => a.requested_ip = Some(Ipv4Addr::new(192, 168, 100, 200)),
        _ => {}
    }
    vec![Probe::new("a probe with every per-request field set", a)]
}

/// The canonical request has xid, flags, ciaddr and giaddr zero, and so must the reply:
/// the program adds the stamped values to the template's checksum.
fn stamp_fields_zero(msg: &[u8]) -> bool {
    msg.len() >= 240 && msg[4..16].iter().chain(&msg[24..28]).all(|b| *b == 0)
}

/// Head and tail fit the template's buffers (else those requests go to the slow path).
fn fits(c: &Compiled) -> bool {
    let at = c.insert.map_or(c.bytes.len(), |(_, at)| at);
    at <= HEAD_CAP && c.bytes.len() - at <= TAIL_CAP
}

/// (data offset, length) of the first option `code` in a DHCP message.
pub fn find_option(msg: &[u8], code: u8) -> Option<(usize, usize)> {
    let mut i = 240;
    while i < msg.len() {
        match msg[i] {
            0 => i += 1,
            255 => return None,
            c => {
                let len = *msg.get(i + 1)? as usize;
                if c == code {
                    return Some((i + 2, len));
                }
                i += 2 + len;
            }
        }
    }
    None
}

/// Where dhcproto would put option `code`: options are sorted by code, except 82
/// which goes last, before END.
pub fn insertion_point(msg: &[u8], code: u8) -> usize {
    let mut i = 240;
    while i < msg.len() {
        match msg[i] {
            0 => i += 1,
            c if c == 255 || c == 82 || c > code => return i,
            _ => i += 2 + msg.get(i + 1).copied().unwrap_or(0) as usize,
        }
    }
    msg.len()
}

/// Option 6's list, when the program can rotate it (2 to 8 servers).
fn dns_list(msg: &[u8]) -> Option<(u16, u8)> {
    let (off, len) = find_option(msg, 6)?;
    let n = len / 4;
    (len % 4 == 0 && (2..=boot_common::DNS_MAX).contains(&n)).then_some((off as u16, n as u8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::request::classify;
    use crate::dhcp::PlainUrls;
    use crate::inventory::Host;

    const MAC: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn inventory(provision: bool) -> Inventory {
        let mut host = Host::with_interface("cn1", MAC, Some("10.0.0.5/24"));
        host.provision = provision;
        host.interfaces[0].fqdn = "cn1.cluster.test".into();
        Inventory::from_parts_unchecked(vec![host], vec![])
    }

    fn settings() -> Settings {
        Settings {
            dns: vec![Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(10, 0, 0, 54)],
            domain_search: vec!["cluster.test".into()],
            router_octet4: 254,
            ..Settings::default()
        }
    }

    #[test]
    fn class_table_agrees_with_the_classifier() {
        let table = class_table(&OptionTable::default());
        assert_eq!(table.len(), (ClassKey::MAX_ARCH as usize + 2) * 8);
        let mut seen = std::collections::HashSet::new();
        for (key, slot) in &table {
            assert!(seen.insert(key.index().expect("every table key has a slot")));
            let vendor: Option<&[u8]> = match key.vendor {
                ClassKey::VENDOR_PXE => Some(b"PXEClient"),
                ClassKey::VENDOR_HTTP => Some(b"HTTPClient"),
                ClassKey::VENDOR_OTHER => Some(b"MSFT 5.0"),
                _ => None,
            };
            let user: Option<&[u8]> = (key.user == ClassKey::USER_IPXE).then_some(b"\x04iPXE");
            let arch = (key.arch != ClassKey::NO_ARCH).then_some(key.arch);
            assert_eq!(
                slot.expect("no rule: every key has a slot") as usize,
                kind_index(classify(arch, vendor, user, false)),
                "{key:?}"
            );
        }
        let idx = |arch, vendor, user| {
            table
                .iter()
                .find(|(k, _)| *k == ClassKey { arch, vendor, user })
                .unwrap()
                .1
                .unwrap()
        };
        assert_eq!(
            idx(0, ClassKey::VENDOR_PXE, 0),
            kind_index(ClientKind::BiosPxe) as u32
        );
        assert_eq!(
            idx(7, ClassKey::VENDOR_PXE, 1),
            kind_index(ClientKind::Ipxe) as u32
        );
        assert_eq!(
            idx(16, ClassKey::VENDOR_HTTP, 0),
            kind_index(ClientKind::HttpX64) as u32
        );
        assert_eq!(
            idx(6, ClassKey::VENDOR_PXE, 0),
            kind_index(ClientKind::UefiIa32) as u32
        );
        assert_eq!(
            idx(2, ClassKey::VENDOR_PXE, 0),
            kind_index(ClientKind::Os) as u32
        );
        assert_eq!(
            idx(ClassKey::NO_ARCH, ClassKey::VENDOR_OTHER, 0),
            kind_index(ClientKind::Os) as u32
        );
    }

    #[test]
    fn option_positions() {
        let mut m = vec![0u8; 240];
        m.extend_from_slice(&[53, 1, 2, 0, 54, 4, 10, 0, 0, 1, 119, 2, 1, 0, 255]);
        assert_eq!(find_option(&m, 54), Some((246, 4)));
        assert_eq!(find_option(&m, 6), None);
        assert_eq!(insertion_point(&m, 97), 250); // before 119
        assert_eq!(insertion_point(&m, 120), 254); // before END
        m[250] = 82; // 82 always goes last
        assert_eq!(insertion_point(&m, 97), 250);
    }

    #[test]
    fn every_kind_gets_templates_and_the_nak_cuts_the_address() {
        let (inv, s) = (inventory(true), settings());
        let c = Compiler {
            settings: &s,
            urls: &PlainUrls { port: 8080 },
        };
        let t = c.compile_host(&inv, MAC, SERVER).unwrap();
        assert_eq!((t.ip, t.server_ip), (Ipv4Addr::new(10, 0, 0, 5), SERVER));
        for (k, kind) in ClientKind::TEMPLATES.iter().enumerate() {
            for (slot, msg) in [(MSG_OFFER, 2), (MSG_ACK, 5)] {
                let tm = t.slots[k][slot]
                    .as_ref()
                    .unwrap_or_else(|| panic!("{kind:?} {slot}"));
                assert_eq!(tm.msg_type, msg);
                assert_eq!(tm.insert.map(|i| i.0), Some(insert::ECHO_97), "{kind:?}");
                assert_eq!(
                    tm.dns,
                    find_option(&tm.bytes, 6).map(|(o, _)| (o as u16, 2))
                );
                assert!(!tm.limited);
            }
        }
        let nak = t.nak.unwrap();
        let (what, at) = nak.insert.unwrap();
        assert_eq!(what, insert::REQUESTED_IP_TEXT);
        assert!(
            nak.bytes[at..].starts_with(b" is not the address of cn1"),
            "{:?}",
            &nak.bytes[at..]
        );
    }

    #[test]
    fn lease_only_hosts_share_one_reply_across_kinds() {
        let (inv, s) = (inventory(false), settings());
        let c = Compiler {
            settings: &s,
            urls: &PlainUrls { port: 8080 },
        };
        let t = c.compile_host(&inv, MAC, SERVER).unwrap();
        let offers: std::collections::HashSet<_> = t
            .slots
            .iter()
            .filter_map(|k| k[MSG_OFFER].clone())
            .map(|c| c.bytes)
            .collect();
        assert_eq!(
            offers.len(),
            1,
            "provision = false: the same lease for every client kind"
        );
    }

    #[test]
    fn a_host_without_address_gets_no_template() {
        let mut inv = inventory(true).into_parts().0;
        inv[0].interfaces[0].ip = None;
        let inv = Inventory::from_parts_unchecked(inv, vec![]);
        let s = settings();
        let c = Compiler {
            settings: &s,
            urls: &PlainUrls { port: 8080 },
        };
        let t = c.compile_host(&inv, MAC, SERVER).unwrap();
        assert!(t.slots.iter().flatten().all(Option::is_none) && t.nak.is_none());
        assert_eq!(
            c.compile_host(&inv, Mac([9; 6]), SERVER),
            Err(CompileError::UnknownMac(Mac([9; 6])))
        );
    }
}
