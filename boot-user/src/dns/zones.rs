//! The lookup tables of one inventory: built once per inventory swap, never changed, read
//! by every query. Pure: no I/O, no clock.
//!
//! Names (Grendel's semantics): each interface's `fqdn` is a comma-separated list of names,
//! every one of which resolves to the interface's address (A for IPv4, AAAA for IPv6);
//! the address's reverse name (PTR) gives the first name of each interface that has it.
//! BMC interfaces are named like the others.
//!
//! Zones (what the server is authoritative for, with an SOA and an NS record each, so a
//! resolver can delegate a stub zone to it):
//! - forward zones: the domain of each name (`cn1.rack1.example.org` -> `rack1.example.org`),
//!   when it has at least two labels (xboot never claims a top-level domain), plus
//!   `dns.zones`; a zone inside another served zone is part of that one
//!   (`dns.zones = ["example.org"]` serves `rack1.example.org` inside it);
//! - reverse zones: each interface's prefix rounded down to a label boundary
//!   (`192.168.0.51/24` -> `0.168.192.in-addr.arpa`; a prefix longer than /24 or written
//!   without one gives its /24; IPv6 on nibbles, /64 at most).
//!
//! Inside a zone, a name that is neither in the inventory nor an ancestor of a name that
//! is (an empty non-terminal) does not exist: NXDOMAIN. Names outside every zone are
//! forwarded. A name of one label (`cn1`) or directly under a top-level domain resolves
//! but makes no zone.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::inventory::{Host, Inventory};

/// What the tables are built with, from `[dns]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneSettings {
    pub ttl: u32,
    /// `dns.zones`, as written.
    pub zones: Vec<String>,
    /// `dns.nameserver`: the SOA MNAME and NS target of every zone; None: `ns.<zone>`.
    pub nameserver: Option<String>,
}

/// The addresses of one name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// One zone apex and its SOA fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// Lower case, no trailing dot.
    pub apex: String,
    /// SOA MNAME and the NS target.
    pub nameserver: String,
    /// SOA RNAME (`hostmaster.<apex>`).
    pub mailbox: String,
}

/// What a name is inside the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// A name with addresses (and possibly also a zone apex).
    Host(&'a Addresses, Option<&'a Zone>),
    /// A reverse name with the names pointing at it.
    Reverse(&'a [String], Option<&'a Zone>),
    /// A zone apex that is not also a host name.
    Apex(&'a Zone),
    /// Exists only as the ancestor of names (NOERROR, no data) inside this zone.
    Empty(&'a Zone),
    /// Inside this zone and not there.
    Missing(&'a Zone),
    /// In no zone: someone else's name.
    Outside,
}

/// The tables of one inventory.
#[derive(Clone, Debug, Default)]
pub struct Zones {
    pub ttl: u32,
    names: HashMap<String, Addresses>,
    reverse: HashMap<String, Vec<String>>,
    zones: HashMap<String, Zone>,
    /// Ancestors of names that lie inside a zone (empty non-terminals included).
    interior: HashSet<String>,
    /// The SOA serial: changes with the content (a hash of it, so a rebuild of the same
    /// inventory keeps it).
    pub serial: u32,
    /// Names that could not be served, each with why (logged once per build).
    pub skipped: Vec<String>,
}

/// Lower case without the trailing dot; None if not a usable DNS name.
pub fn normalize(name: &str) -> Option<String> {
    let n = name.trim().strip_suffix('.').unwrap_or(name.trim());
    if n.is_empty() || n.len() > 253 {
        return None;
    }
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    n.split('.').all(ok_label).then(|| n.to_ascii_lowercase())
}

/// `a.b.c` -> `b.c`.
fn parent(name: &str) -> Option<&str> {
    name.split_once('.').map(|(_, p)| p)
}

/// The reverse name of an address, no trailing dot.
pub fn reverse_name(ip: IpAddr) -> String {
    let n = hickory_proto::rr::Name::from(ip).to_ascii();
    n.strip_suffix('.').unwrap_or(&n).to_ascii_lowercase()
}

/// The reverse zone of an interface's network: whole labels, /8 to /24 for IPv4 (an
/// address without a prefix or a longer prefix gives its /24), /4 to /64 in nibbles for
/// IPv6.
pub fn reverse_zone(net: IpNet) -> String {
    let labels: Vec<String> = match net {
        IpNet::V4(n) => {
            let bits = (n.prefix_len().clamp(8, 32) / 8 * 8).min(24);
            let o = n.addr().octets();
            o[..usize::from(bits / 8)]
                .iter()
                .rev()
                .map(u8::to_string)
                .chain(["in-addr".into(), "arpa".into()])
                .collect()
        }
        IpNet::V6(n) => {
            let bits = (n.prefix_len().clamp(4, 128) / 4 * 4).min(64);
            let o = n.addr().octets();
            let nibbles: Vec<u8> = o.iter().flat_map(|b| [b >> 4, b & 15]).collect();
            nibbles[..usize::from(bits / 4)]
                .iter()
                .rev()
                .map(|d| format!("{d:x}"))
                .chain(["ip6".into(), "arpa".into()])
                .collect()
        }
    };
    labels.join(".")
}

/// An interface's address as written: IPv4 (as the rest of xboot reads it) or IPv6
/// (Grendel's `ip` is a prefix of either family), with or without a prefix length.
pub fn interface_net(ip: &str) -> Option<IpNet> {
    let t = ip.trim();
    if let Ok(n) = crate::inventory::model::parse_cidr(t) {
        return Some(IpNet::V4(n));
    }
    crate::inventory::model::parse_ipv6(t).map(IpNet::V6)
}

/// Whether the tables of `new` are those of `old`: every host that differs between them
/// differs in nothing the tables read (a `complete`, a tag, an image or firmware change),
/// no host came or went. At the change's cost ([`Inventory::changed_hosts`]), so a storm
/// of field-only changes does not rebuild the tables of the whole inventory each time.
pub fn same_names(old: &Inventory, new: &Inventory) -> bool {
    old.changed_hosts(new).all(|pair| match pair {
        (Some(a), Some(b)) => {
            a.name == b.name
                && a.interfaces.len() == b.interfaces.len()
                && a.interfaces
                    .iter()
                    .zip(&b.interfaces)
                    .all(|(x, y)| x.fqdn == y.fqdn && x.ip == y.ip)
        }
        _ => false,
    })
}

impl Zones {
    /// The tables of `inventory`.
    pub fn build(inventory: &Inventory, settings: &ZoneSettings) -> Zones {
        Self::from_hosts(inventory.hosts(), settings)
    }

    pub fn from_hosts<'a>(
        hosts: impl IntoIterator<Item = &'a Host>,
        settings: &ZoneSettings,
    ) -> Zones {
        let mut z = Zones {
            ttl: settings.ttl,
            ..Default::default()
        };
        // Forward zone apexes and reverse zone apexes, sorted for a stable result.
        let mut apexes: BTreeSet<String> = BTreeSet::new();
        for configured in &settings.zones {
            match normalize(configured) {
                Some(n) => {
                    apexes.insert(n);
                }
                None => z
                    .skipped
                    .push(format!("dns.zones {configured:?}: not a DNS name")),
            }
        }
        for h in hosts {
            for nic in &h.interfaces {
                let names: Vec<&str> = nic
                    .fqdn
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .collect();
                let net = nic.ip.as_deref().and_then(interface_net);
                if nic.ip.is_some() && net.is_none() {
                    continue;
                }
                let mut first = None;
                for raw in names {
                    let Some(name) = normalize(raw) else {
                        z.skipped
                            .push(format!("host {}: fqdn {raw:?} is not a DNS name", h.name));
                        continue;
                    };
                    if let Some(p) = parent(&name).filter(|p| p.contains('.')) {
                        apexes.insert(p.to_string());
                    }
                    let entry = z.names.entry(name.clone()).or_default();
                    match net.map(|n| n.addr()) {
                        Some(IpAddr::V4(a)) if !entry.v4.contains(&a) => entry.v4.push(a),
                        Some(IpAddr::V6(a)) if !entry.v6.contains(&a) => entry.v6.push(a),
                        _ => {}
                    }
                    first.get_or_insert(name);
                }
                if let (Some(net), Some(name)) = (net, first) {
                    apexes.insert(reverse_zone(net));
                    let ptrs = z.reverse.entry(reverse_name(net.addr())).or_default();
                    if !ptrs.contains(&name) {
                        ptrs.push(name);
                    }
                }
            }
        }
        // A zone inside another served zone belongs to it.
        let outer: Vec<String> = apexes
            .iter()
            .filter(|a| !ancestors(a).any(|p| apexes.contains(p)))
            .cloned()
            .collect();
        let first_forward = outer.iter().find(|a| !a.ends_with(".arpa")).cloned();
        for apex in outer {
            let nameserver = settings
                .nameserver
                .as_deref()
                .and_then(normalize)
                .unwrap_or_else(|| {
                    let base = if apex.ends_with(".arpa") {
                        first_forward.clone().unwrap_or_else(|| "localhost".into())
                    } else {
                        apex.clone()
                    };
                    format!("ns.{base}")
                });
            let mailbox = format!("hostmaster.{apex}");
            z.zones.insert(
                apex.clone(),
                Zone {
                    apex,
                    nameserver,
                    mailbox,
                },
            );
        }
        let mut interior = HashSet::new();
        for name in z.names.keys().chain(z.reverse.keys()) {
            for a in ancestors(name) {
                if z.zones.contains_key(a) {
                    break;
                }
                interior.insert(a.to_string());
            }
        }
        z.interior = interior;
        z.serial = z.content_serial();
        z
    }

    /// The zone a name falls in (the nearest apex at or above it).
    pub fn zone_of(&self, name: &str) -> Option<&Zone> {
        std::iter::once(name)
            .chain(ancestors(name))
            .find_map(|a| self.zones.get(a))
    }

    /// What `name` (normalized) is.
    pub fn find(&self, name: &str) -> Found<'_> {
        let zone = self.zone_of(name);
        if let Some(a) = self.names.get(name) {
            return Found::Host(a, zone);
        }
        if let Some(p) = self.reverse.get(name) {
            return Found::Reverse(p, zone);
        }
        match zone {
            None => Found::Outside,
            Some(z) if z.apex == name => Found::Apex(z),
            Some(z) if self.interior.contains(name) => Found::Empty(z),
            Some(z) => Found::Missing(z),
        }
    }

    /// Every zone apex, sorted.
    pub fn apexes(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.zones.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    /// Names served (forward and reverse).
    pub fn len(&self) -> usize {
        self.names.len() + self.reverse.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A serial from the content (FNV-1a over the sorted records), never 0.
    fn content_serial(&self) -> u32 {
        let mut lines: Vec<String> = self
            .names
            .iter()
            .map(|(n, a)| format!("{n} {:?} {:?}", a.v4, a.v6))
            .chain(self.reverse.iter().map(|(n, p)| format!("{n} {p:?}")))
            .chain(self.zones.values().map(|z| format!("{z:?}")))
            .collect();
        lines.push(self.ttl.to_string());
        lines.sort();
        let mut h: u32 = 0x811c_9dc5;
        for b in lines.iter().flat_map(|l| l.bytes().chain([b'\n'])) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h.max(1)
    }
}

/// The proper ancestors of a name, nearest first (`a.b.c` -> `b.c`, `c`).
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(parent(name), |n| parent(n))
}
