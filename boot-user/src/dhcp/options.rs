//! The declarative option table: site options (`[[dhcp.options]]`) and Grendel's vendor
//! hooks (`dhcp.presets`), and which lease replies carry them (pure).
//!
//! # A rule
//! One option code and its value, and conditions, all of which must hold (none: every
//! lease reply):
//!
//! | condition | holds when |
//! | --- | --- |
//! | `subnet` | the host's address is in the network |
//! | `hosts` | the host's name is in the node set |
//! | `tag` | the host carries the tag |
//! | `vendor_class` | option 60 equals the value (a trailing `*`: starts with the rest) |
//! | `user_class` | an entry of option 77 equals the value (RFC 3004's list when its lengths add up, else the whole option as one entry) |
//! | `arch` | the client's architecture (option 93, else a `PXEClient:Arch:` vendor class) is the value |
//! | `provisioned` | the host's `provision` is the value |
//!
//! Values: `text`, `ip` (a list), `hex`, `u8`, `u16`, `u32`, `bool`, or `url` (the host's
//! boot URL `{base}/boot/{token}/{url}`, with a fresh token, as the iPXE script's).
//!
//! # Which rule wins
//! Options go into OFFER, ACK and INFORM-ACK replies after every option the builder
//! makes, replacing one of the same code. When several rules give one code, the presets
//! apply first (in Grendel's order), then the site's rules from the least specific to
//! the most: no condition, `subnet`, a client class (`vendor_class`, `user_class`,
//! `arch`), `tag`, `hosts` (a rule ranks as its most specific condition); among equals
//! the later rule in the file wins.
//!
//! # Presets (Grendel's hooks, for provisioned hosts only, as Grendel does)
//! | preset | when | option |
//! | --- | --- | --- |
//! | `arista` | tag `arista` | 67 = the kickstart URL (Arista ZTP) |
//! | `dellztd` | tag `dellztd` | 240 = the kickstart URL (Dell OS10 ZTD) |
//! | `proxmox` | tag `proxmox` | 250 = the URL of the provision template `proxmox` (Grendel's `/boot/{token}/proxmox` answer file route; xboot serves named templates at `provision/NAME`) |
//! | `mellanox` | option 60 `NVIDIA` or `Mellanox` | 66 = `{base}/repo/onie/,{base}/boot/{token}/,`; 67 = `onie-installer-mlnx-os.bin,kickstart,` (MLNX-OS ZTP: image, config, container) |
//! | `sonic-ztp` | option 77 has `SONiC-ZTP` | 67 = the kickstart URL |
//! | `eaton` | option 60 starts with `Eaton` | 43 = the kickstart URL (Eaton network card ZTP) |
//! | `idrac` | option 60 `iDRAC` | 43 = `-f idrac-config.json -i {server} -s 5 -n boot/{token}/provision` (iDRAC auto config) |
//!
//! `grendel` names all seven. The default is `arista`, `dellztd`, `proxmox` and
//! `sonic-ztp`, which cost the XDP fast path nothing: the first three depend on the host
//! only, so its templates carry them, and the program already leaves every user class
//! but `iPXE` to the slow path. A rule with a client-class condition depends on the
//! request beyond what the program reads (it tells only `PXEClient`, `HTTPClient`, other
//! and no option 60; `iPXE`, other and no option 77; option 93):
//! [`OptionTable::class_may_match`] is the shared rule by which the program's class
//! table leaves every class key such a rule may match to the slow path. `mellanox`,
//! `eaton` and `idrac` would send every request with another option 60 than
//! `PXEClient`/`HTTPClient` (busybox udhcpc's `udhcp 1.x`) there, so they are opt-in.
use std::net::Ipv4Addr;

use boot_common::ClassKey;
use dhcproto::v4::{DhcpOption, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder};
use ipnet::Ipv4Net;

use super::boot::BootUrls;
use crate::config::{DhcpConfig, DhcpOptionConfig};
use crate::inventory::{Host, Mac};

/// Every preset name, in Grendel's order (`grendel` is all of them).
pub const PRESETS: [&str; 7] = [
    "arista",
    "dellztd",
    "proxmox",
    "mellanox",
    "sonic-ztp",
    "eaton",
    "idrac",
];
/// `dhcp.presets` when the config does not say: the host-only ones.
pub const DEFAULT_PRESETS: [&str; 4] = ["arista", "dellztd", "proxmox", "sonic-ztp"];

/// Codes a rule may not set: the protocol's own (53 message type, 54 server id, 51/58/59
/// lease times from `dhcp.lease_time`, 52 overload, 82 and 97 echoes), and what only
/// clients send (50, 55, 57, 61), and pad/end.
const RESERVED: [u8; 13] = [0, 50, 51, 52, 53, 54, 55, 57, 58, 59, 61, 82, 97];

/// A piece of a value known only per reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    /// The HTTP base URL clients of this server use.
    Base,
    /// A fresh boot token of the host and MAC.
    Token,
    /// The server identifier (the address the request came in on).
    Server,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Bytes(Vec<u8>),
    Text(Vec<Part>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassPattern {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
}

impl ClassPattern {
    fn parse(s: &str) -> ClassPattern {
        match s.strip_suffix('*') {
            Some(p) => ClassPattern::Prefix(p.as_bytes().to_vec()),
            None => ClassPattern::Exact(s.as_bytes().to_vec()),
        }
    }
    fn matches(&self, v: &[u8]) -> bool {
        match self {
            ClassPattern::Exact(e) => v == e.as_slice(),
            ClassPattern::Prefix(p) => v.starts_with(p),
        }
    }
    /// Whether some option 60 this pattern matches falls in the XDP program's vendor
    /// category `cat` (`ClassKey::VENDOR_*`: by prefix `PXEClient`, `HTTPClient`, else
    /// other).
    fn may_be(&self, cat: u8) -> bool {
        let of = |v: &[u8]| {
            if v.starts_with(b"PXEClient") {
                ClassKey::VENDOR_PXE
            } else if v.starts_with(b"HTTPClient") {
                ClassKey::VENDOR_HTTP
            } else {
                ClassKey::VENDOR_OTHER
            }
        };
        match self {
            ClassPattern::Exact(e) => of(e) == cat,
            ClassPattern::Prefix(p) => {
                // Strings starting with p: p's own category, and those of the known
                // prefixes that start with p.
                of(p) == cat
                    || [&b"PXEClient"[..], b"HTTPClient"]
                        .iter()
                        .any(|k| k.starts_with(p) && of(k) == cat)
            }
        }
    }
}

/// One rule of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Where it comes from: `dhcp.options[2]`, `preset idrac`.
    pub origin: String,
    pub code: u8,
    pub value: Value,
    pub subnet: Option<Ipv4Net>,
    pub hosts: Option<String>,
    pub tag: Option<String>,
    pub vendor_class: Option<ClassPattern>,
    pub user_class: Option<Vec<u8>>,
    pub arch: Option<u16>,
    pub provisioned: Option<bool>,
}

impl Rule {
    /// The conditions on the host hold (those on the request are checked apart).
    fn holds_for_host(&self, host: &Host, addr: Ipv4Addr) -> bool {
        self.provisioned.is_none_or(|p| p == host.provision)
            && self.subnet.is_none_or(|n| n.contains(&addr))
            && self.tag.as_ref().is_none_or(|t| host.tags.contains(t))
            && self.hosts.as_ref().is_none_or(|h| {
                crate::nodeset::select(h, std::slice::from_ref(&host.name))
                    .is_ok_and(|sel| !sel.matched.is_empty())
            })
    }

    fn new(origin: &str, code: u8, value: Value) -> Rule {
        Rule {
            origin: origin.to_string(),
            code,
            value,
            subnet: None,
            hosts: None,
            tag: None,
            vendor_class: None,
            user_class: None,
            arch: None,
            provisioned: None,
        }
    }

    fn has_class(&self) -> bool {
        self.vendor_class.is_some() || self.user_class.is_some() || self.arch.is_some()
    }

    /// The rank of its most specific condition (see the module docs).
    fn rank(&self) -> u8 {
        if self.hosts.is_some() {
            4
        } else if self.tag.is_some() {
            3
        } else if self.has_class() {
            2
        } else if self.subnet.is_some() {
            1
        } else {
            0
        }
    }
}

/// What a reply is for: the request's class options and the host.
pub struct Subject<'a> {
    pub host: &'a Host,
    pub mac: Mac,
    /// The leased address.
    pub addr: Ipv4Addr,
    pub vendor_class: Option<&'a [u8]>,
    pub user_class: Option<&'a [u8]>,
    pub arch: Option<u16>,
    pub server: Ipv4Addr,
    pub urls: &'a dyn BootUrls,
}

/// The rules in the order they apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionTable {
    pub rules: Vec<Rule>,
}

/// Option 77's entries: RFC 3004's length-prefixed list when the lengths add up to the
/// option exactly, else the whole option as one entry (clients such as ISC dhclient send
/// a bare string).
pub fn user_class_entries(v: &[u8]) -> Vec<&[u8]> {
    let mut out = vec![];
    let mut rest = v;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || len > tail.len() {
            return vec![v];
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    if out.is_empty() {
        vec![v]
    } else {
        out
    }
}

fn url_value(path: &str) -> Value {
    Value::Text(vec![
        Part::Base,
        Part::Lit("/boot/".into()),
        Part::Token,
        Part::Lit(format!("/{}", path.trim_start_matches('/'))),
    ])
}

/// The rules of one preset.
fn preset(name: &str) -> Vec<Rule> {
    let origin = format!("preset {name}");
    let provisioned = |mut r: Rule| {
        r.provisioned = Some(true);
        r
    };
    let tagged = |code, tag: &str, path: &str| {
        let mut r = Rule::new(&origin, code, url_value(path));
        r.tag = Some(tag.into());
        vec![provisioned(r)]
    };
    let vendor = |code, pat: &str, value: Value| {
        let mut r = Rule::new(&origin, code, value);
        r.vendor_class = Some(ClassPattern::parse(pat));
        provisioned(r)
    };
    match name {
        "arista" => tagged(67, "arista", "kickstart"),
        "dellztd" => tagged(240, "dellztd", "kickstart"),
        "proxmox" => tagged(250, "proxmox", "provision/proxmox"),
        "mellanox" => {
            let urls = Value::Text(vec![
                Part::Base,
                Part::Lit("/repo/onie/,".into()),
                Part::Base,
                Part::Lit("/boot/".into()),
                Part::Token,
                Part::Lit("/,".into()),
            ]);
            let files = Value::Bytes(b"onie-installer-mlnx-os.bin,kickstart,".to_vec());
            ["NVIDIA", "Mellanox"]
                .iter()
                .flat_map(|c| [vendor(66, c, urls.clone()), vendor(67, c, files.clone())])
                .collect()
        }
        "sonic-ztp" => {
            let mut r = Rule::new(&origin, 67, url_value("kickstart"));
            r.user_class = Some(b"SONiC-ZTP".to_vec());
            vec![provisioned(r)]
        }
        "eaton" => vec![vendor(43, "Eaton*", url_value("kickstart"))],
        "idrac" => vec![vendor(
            43,
            "iDRAC",
            Value::Text(vec![
                Part::Lit("-f idrac-config.json -i ".into()),
                Part::Server,
                Part::Lit(" -s 5 -n boot/".into()),
                Part::Token,
                Part::Lit("/provision".into()),
            ]),
        )],
        _ => vec![],
    }
}

/// The typed option of `code` with `data`, as a decoder reads it from a reply (so a
/// decoded reply equals the one built); None when it is no valid value of that option.
fn typed(code: u8, data: &[u8]) -> Option<DhcpOption> {
    let len = u8::try_from(data.len()).ok()?;
    let bytes = [&[code, len][..], data].concat();
    let opt = DhcpOption::decode(&mut Decoder::new(&bytes)).ok()?;
    (u8::from(OptionCode::from(&opt)) == code).then_some(opt)
}

/// The option `code` carrying `data`: typed when it decodes as such, else raw.
pub fn option(code: u8, data: Vec<u8>) -> DhcpOption {
    typed(code, &data)
        .unwrap_or_else(|| DhcpOption::Unknown(UnknownOption::new(OptionCode::from(code), data)))
}

fn int(key: &str, v: i64, max: u64) -> Result<u64, (String, String)> {
    u64::try_from(v)
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| (key.to_string(), format!("{v} is not in 0..={max}")))
}

/// One `[[dhcp.options]]` entry, checked.
fn site_rule(i: usize, c: &DhcpOptionConfig) -> Result<Rule, Vec<(String, String)>> {
    let key = |k: &str| format!("dhcp.options[{i}].{k}");
    let mut errs = vec![];
    let code = match int(&key("code"), c.code, 254) {
        Ok(0) => {
            errs.push((key("code"), "missing (1 to 254)".into()));
            0
        }
        Ok(n) if RESERVED.contains(&(n as u8)) => {
            errs.push((
                key("code"),
                format!("option {n} is the protocol's own; it cannot be set"),
            ));
            0
        }
        Ok(n) => n as u8,
        Err(e) => {
            errs.push(e);
            0
        }
    };
    let mut values: Vec<(&str, Result<Value, String>)> = vec![];
    if let Some(t) = &c.text {
        values.push(("text", Ok(Value::Bytes(t.as_bytes().to_vec()))));
    }
    if let Some(ips) = &c.ip {
        let v: Result<Vec<u8>, String> = ips
            .iter()
            .map(|s| {
                s.trim()
                    .parse::<Ipv4Addr>()
                    .map(|a| a.octets())
                    .map_err(|_| format!("{s:?} is not an IPv4 address"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.concat());
        values.push((
            "ip",
            v.and_then(|b| {
                if b.is_empty() {
                    Err("an empty list".into())
                } else {
                    Ok(Value::Bytes(b))
                }
            }),
        ));
    }
    if let Some(h) = &c.hex {
        let clean: String = h.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
        values.push((
            "hex",
            hex::decode(&clean)
                .map(Value::Bytes)
                .map_err(|e| format!("{h:?} is not hex ({e})")),
        ));
    }
    for (name, v, max, width) in [
        ("u8", c.u8, u8::MAX as u64, 1),
        ("u16", c.u16, u16::MAX as u64, 2),
        ("u32", c.u32, u32::MAX as u64, 4),
    ] {
        if let Some(v) = v {
            let r = int(&key(name), v, max)
                .map(|n| Value::Bytes(n.to_be_bytes()[8 - width..].to_vec()))
                .map_err(|e| e.1);
            values.push((name, r));
        }
    }
    if let Some(b) = c.boolean {
        values.push(("bool", Ok(Value::Bytes(vec![b as u8]))));
    }
    if let Some(u) = &c.url {
        let ok = !u.is_empty() && !u.contains(char::is_whitespace) && !u.contains("..");
        values.push((
            "url",
            if ok {
                Ok(url_value(u))
            } else {
                Err(format!(
                    "{u:?} is not a boot URL path (kickstart, provision/NAME)"
                ))
            },
        ));
    }
    let value = match values.len() {
        0 => {
            errs.push((
                format!("dhcp.options[{i}]"),
                "no value (one of text, ip, hex, u8, u16, u32, bool, url)".into(),
            ));
            None
        }
        1 => match values.pop().expect("one") {
            (name, Err(m)) => {
                errs.push((key(name), m));
                None
            }
            (name, Ok(v)) => {
                if let Value::Bytes(b) = &v {
                    if b.len() > 255 {
                        errs.push((key(name), format!("{} bytes (255 at most)", b.len())));
                    } else if code != 0 && typed(code, b).is_none() {
                        errs.push((key(name), format!("not a valid value of option {code}")));
                    }
                }
                Some(v)
            }
        },
        _ => {
            let names: Vec<&str> = values.iter().map(|v| v.0).collect();
            errs.push((
                format!("dhcp.options[{i}]"),
                format!("one value only, it has {}", names.join(", ")),
            ));
            None
        }
    };
    let mut rule = Rule::new(&format!("dhcp.options[{i}]"), code, Value::Bytes(vec![]));
    if let Some(s) = &c.subnet {
        match s.trim().parse::<Ipv4Net>() {
            Ok(n) => rule.subnet = Some(n.trunc()),
            Err(_) => errs.push((key("subnet"), format!("{s:?} is not an IPv4 network"))),
        }
    }
    if let Some(h) = &c.hosts {
        match crate::nodeset::select(h, &[""; 0]) {
            Ok(_) => rule.hosts = Some(h.clone()),
            Err(e) => errs.push((key("hosts"), e.to_string())),
        }
    }
    for (name, v) in [
        ("tag", &c.tag),
        ("vendor_class", &c.vendor_class),
        ("user_class", &c.user_class),
    ] {
        if v.as_deref().is_some_and(|s| s.is_empty() || s.len() > 255) {
            errs.push((key(name), "must be 1 to 255 bytes".into()));
        }
    }
    rule.tag = c.tag.clone();
    rule.vendor_class = c.vendor_class.as_deref().map(ClassPattern::parse);
    rule.user_class = c.user_class.as_ref().map(|s| s.as_bytes().to_vec());
    if let Some(a) = c.arch {
        match int(&key("arch"), a, u16::MAX as u64) {
            Ok(a) => rule.arch = Some(a as u16),
            Err(e) => errs.push(e),
        }
    }
    rule.provisioned = c.provisioned;
    match value {
        Some(v) if errs.is_empty() => {
            rule.value = v;
            Ok(rule)
        }
        _ => Err(errs),
    }
}

impl OptionTable {
    /// `dhcp.presets` and `dhcp.options`, checked; every problem names its key.
    pub fn from_config(d: &DhcpConfig) -> Result<OptionTable, Vec<(String, String)>> {
        let mut errs = vec![];
        let mut names: Vec<&str> = vec![];
        for (i, p) in d.presets.iter().enumerate() {
            match p.as_str() {
                "grendel" => names.extend(PRESETS),
                p if PRESETS.contains(&p) => names.push(p),
                _ => errs.push((
                    format!("dhcp.presets[{i}]"),
                    format!(
                        "unknown preset {p:?} (known: grendel, {})",
                        PRESETS.join(", ")
                    ),
                )),
            }
        }
        let mut rules: Vec<Rule> = PRESETS
            .iter()
            .filter(|p| names.contains(p))
            .flat_map(|p| preset(p))
            .collect();
        let mut site = vec![];
        for (i, c) in d.options.iter().enumerate() {
            match site_rule(i, c) {
                Ok(r) => site.push(r),
                Err(mut e) => errs.append(&mut e),
            }
        }
        // Stable: among rules of one rank, the file's order.
        site.sort_by_key(Rule::rank);
        rules.extend(site);
        if errs.is_empty() {
            Ok(OptionTable { rules })
        } else {
            Err(errs)
        }
    }

    /// The rules that hold for `s`, in the order they apply.
    fn matching<'a>(&'a self, s: &'a Subject<'_>) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| {
            r.holds_for_host(s.host, s.addr)
                && r.arch.is_none_or(|a| s.arch == Some(a))
                && r.vendor_class
                    .as_ref()
                    .is_none_or(|p| s.vendor_class.is_some_and(|v| p.matches(v)))
                && r.user_class.as_ref().is_none_or(|want| {
                    s.user_class
                        .is_some_and(|v| user_class_entries(v).contains(&want.as_slice()))
                })
        })
    }

    /// Per rule, in table order, whether its conditions on the host (`provisioned`,
    /// `subnet`, `tag`, `hosts`) hold for `host` at `addr`: all the table reads of a
    /// host (the XDP compiler groups hosts by it; the other conditions are the
    /// request's).
    pub fn host_rules(&self, host: &Host, addr: Ipv4Addr) -> Vec<bool> {
        self.rules
            .iter()
            .map(|r| r.holds_for_host(host, addr))
            .collect()
    }

    /// The options of the table for `s`: one per code, the last rule to give it winning;
    /// a value over 255 bytes (a long URL) is left out.
    pub fn options_for(&self, s: &Subject<'_>) -> Vec<DhcpOption> {
        let mut out: Vec<(u8, Vec<u8>)> = vec![];
        let mut token = None;
        for r in self.matching(s) {
            let data = match &r.value {
                Value::Bytes(b) => b.clone(),
                Value::Text(parts) => {
                    let mut t = String::new();
                    for p in parts {
                        match p {
                            Part::Lit(l) => t.push_str(l),
                            Part::Base => t.push_str(&s.urls.base_url(s.server)),
                            Part::Server => t.push_str(&s.server.to_string()),
                            Part::Token => {
                                t.push_str(token.get_or_insert_with(|| s.urls.token(s.host, s.mac)))
                            }
                        }
                    }
                    t.into_bytes()
                }
            };
            out.retain(|(c, _)| *c != r.code);
            if data.len() <= 255 {
                out.push((r.code, data));
            }
        }
        out.into_iter().map(|(c, d)| option(c, d)).collect()
    }

    /// Whether a rule with a client-class condition may hold for a request whose class
    /// features the XDP program reads as `key` (for some host): then the program's class
    /// table sends that key to the slow path, which alone sees the whole option 60, 77
    /// and 93. Conservative: "may" is true whenever the key does not rule it out.
    pub fn class_may_match(&self, key: &ClassKey) -> bool {
        self.rules.iter().filter(|r| r.has_class()).any(|r| {
            // Without option 93 the slow path reads the arch of a `PXEClient:Arch:`
            // vendor class, a request the program passes up whatever its key.
            let arch = r.arch.is_none_or(|a| key.arch == a);
            let vendor = r.vendor_class.as_ref().is_none_or(|p| p.may_be(key.vendor));
            // USER_IPXE is an option 77 whose one entry is `iPXE`, or none (175 alone);
            // USER_NONE no option 77; other user classes are never in the table.
            let user = r
                .user_class
                .as_ref()
                .is_none_or(|u| key.user == ClassKey::USER_IPXE && u.as_slice() == b"iPXE");
            arch && vendor && user
        })
    }
}

#[cfg(test)]
mod tests;
