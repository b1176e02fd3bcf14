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
//!
//! The per-host bytes of a reply (yiaddr, chaddr, the host name in option 12, the boot
//! URL with its token in `file` or option 67) are cut out of the template ([`mask`]):
//! zeroed, and named as stamps and holes that the program fills from the host entry
//! ([`HostPatch`]). Hosts whose replies differ only there then share one template. The
//! self-check replays the masked template with the host's patch, so a cut in the wrong
//! place fails it like any other mistake.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use boot_common::{
    field, insert, stamp, ClassKey, Hole, HEAD_CAP, HOLES, MAX_KINDS, MSGS, MSG_ACK, MSG_OFFER,
    TAIL_CAP,
};
use dhcproto::v4::MessageType;

use super::emulate::{emulate, Probe};
use crate::dhcp::options::OptionTable;
use crate::dhcp::settings::HostNet;
use crate::dhcp::{decide, BootUrls, ClientKind, Context, Decision, Request, Settings};
use crate::inventory::{Inventory, Lookup, Mac};

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
    /// Zero when stamped from the host entry ([`stamp::YIADDR`]).
    pub yiaddr: Ipv4Addr,
    /// Per-host fields cut out of `bytes` (zeros there), by offset.
    pub holes: Vec<Hole>,
    /// `bytes` embed an expiring boot-URL token (one the holes did not take out): the
    /// template expires with it.
    pub expires: bool,
}

/// A host's own bytes, which its templates' holes and stamps are filled with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPatch {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// By `field::*`; empty: none.
    pub fields: [Vec<u8>; field::COUNT],
}

impl Default for HostPatch {
    fn default() -> Self {
        HostPatch {
            mac: Mac::default(),
            ip: Ipv4Addr::UNSPECIFIED,
            fields: Default::default(),
        }
    }
}

impl HostPatch {
    /// `bytes` (a template's message) with the holes filled and yiaddr / chaddr stamped
    /// as `stamp` says; None when a hole does not fit the host's field (the program passes
    /// those requests up).
    pub fn fill(&self, bytes: &mut [u8], stamp_flags: u16, holes: &[Hole]) -> Option<()> {
        for h in holes {
            let v = self.fields.get(h.field as usize)?;
            let (off, len) = (h.off as usize, h.len as usize);
            if len == 0 {
                continue;
            }
            if v.len() != len || off < 48 || len > field::CAP[h.field as usize] {
                return None;
            }
            bytes.get_mut(off..off + len)?.copy_from_slice(v);
        }
        if stamp_flags & stamp::YIADDR != 0 {
            bytes.get_mut(16..20)?.copy_from_slice(&self.ip.octets());
        }
        if stamp_flags & stamp::CHADDR != 0 {
            bytes.get_mut(28..34)?.copy_from_slice(&self.mac.0);
        }
        Some(())
    }
}

/// Cuts the host's own bytes out of `c` (its bytes up to `head_end`, the insertion
/// point): yiaddr and chaddr become stamps, option 12's name and the boot URL (`url`,
/// when the reply was built with it) holes. Undone exactly by [`HostPatch::fill`]. The
/// template expires when a token stays in it: one the reply got other than in the URL
/// (`token`), or the URL when it could not be cut out.
pub fn mask(c: &mut Compiled, p: &HostPatch, url: bool, token: bool, head_end: usize) {
    c.expires = token || url;
    let b = &mut c.bytes;
    if b.len() < 240 {
        return;
    }
    if !p.ip.is_unspecified() && b[16..20] == p.ip.octets() {
        b[16..20].fill(0);
        c.stamp |= stamp::YIADDR;
        c.yiaddr = Ipv4Addr::UNSPECIFIED;
    }
    if b[28..34] == p.mac.0 {
        b[28..34].fill(0);
        c.stamp |= stamp::CHADDR;
    }
    let mut holes = vec![];
    let mut cut = |b: &mut Vec<u8>, off: usize, f: u8| {
        let v = &p.fields[f as usize];
        let len = v.len();
        if len == 0
            || len > field::CAP[f as usize]
            || off < 48
            || off + len > head_end
            || holes.len() == HOLES
            || b.get(off..off + len) != Some(v.as_slice())
        {
            return false;
        }
        b[off..off + len].fill(0);
        holes.push(Hole {
            off: off as u16,
            len: len as u8,
            field: f,
        });
        true
    };
    if let Some((off, len)) = find_option(b, 12) {
        if len == p.fields[field::NAME as usize].len() {
            cut(b, off, field::NAME);
        }
    }
    let mut url_cut = !url;
    if url {
        let n = p.fields[field::URL as usize].len();
        // BOOTP `file` (at 108, NUL-terminated), or option 67.
        if b.get(108 + n) == Some(&0) && n < 128 && cut(b, 108, field::URL) {
            url_cut = true;
        } else if let Some((off, len)) = find_option(b, 67) {
            url_cut = len == n && cut(b, off, field::URL);
        }
    }
    holes.sort_by_key(|h| h.off);
    c.holes = holes;
    c.expires = token || !url_cut;
}

/// The compiler's [`BootUrls`] for one host: the inner URLs, each made once (so every
/// template of the host carries the same token, the one in its patch), and a record of
/// whether the reply being built asked for a token.
struct Pinned<'a> {
    inner: &'a dyn BootUrls,
    script: RefCell<Option<String>>,
    token: RefCell<Option<String>>,
    /// `ipxe_script` was called since the last `take`.
    used_script: Cell<bool>,
    /// `token` was called since the last `take`.
    used_token: Cell<bool>,
}

impl<'a> Pinned<'a> {
    fn new(inner: &'a dyn BootUrls) -> Self {
        Pinned {
            inner,
            script: RefCell::new(None),
            token: RefCell::new(None),
            used_script: Cell::new(false),
            used_token: Cell::new(false),
        }
    }

    /// (script URL used, token used) since the last call.
    fn take(&self) -> (bool, bool) {
        (
            self.used_script.replace(false),
            self.used_token.replace(false),
        )
    }
}

impl BootUrls for Pinned<'_> {
    fn ipxe_script(&self, host: &crate::inventory::Host, mac: Mac, server: Ipv4Addr) -> String {
        self.used_script.set(true);
        self.script
            .borrow_mut()
            .get_or_insert_with(|| self.inner.ipxe_script(host, mac, server))
            .clone()
    }
    fn http_firmware(&self, file: &str, server: Ipv4Addr) -> String {
        self.inner.http_firmware(file, server)
    }
    fn base_url(&self, server: Ipv4Addr) -> String {
        self.inner.base_url(server)
    }
    fn token(&self, host: &crate::inventory::Host, mac: Mac) -> String {
        self.used_token.set(true);
        self.token
            .borrow_mut()
            .get_or_insert_with(|| self.inner.token(host, mac))
            .clone()
    }
}

/// A boot interface's OFFER and ACK templates, `[kind][MSG_*]`; None: that request goes
/// to the slow path. Behind `Arc`s: the hosts of a group ([`Groups`]) name the same ones.
pub type Slots = [[Option<Arc<Compiled>>; MSGS]; MAX_KINDS];

/// Every template of one boot interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTemplates {
    pub ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    pub slots: Slots,
    pub nak: Option<Compiled>,
    /// What the templates' holes and stamps take from the host entry.
    pub patch: HostPatch,
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
    pub urls: &'a (dyn BootUrls + Sync),
}

/// Templates the self-check passed during one sync with one compiler: a host whose
/// masked template equals one of them (its reply differs from that host's only in the
/// holes and stamps) skips the check, which otherwise costs as much again as building
/// the template. Bounded: past [`Verified::MAX`] entries nothing more is remembered.
#[derive(Default)]
pub struct Verified(std::sync::Mutex<std::collections::HashSet<Compiled>>);

impl Verified {
    pub const MAX: usize = 4096;

    fn contains(&self, c: &Compiled) -> bool {
        self.0.lock().expect("not poisoned").contains(c)
    }

    fn add(&self, c: &Compiled) {
        let mut set = self.0.lock().expect("not poisoned");
        if set.len() < Self::MAX {
            set.insert(c.clone());
        }
    }
}

/// What the reply builder reads of a boot interface besides the bytes that the
/// templates' holes and stamps carry (name, MAC, address, boot URL): hosts with equal
/// keys get equal masked templates, so a whole sync builds them once per key
/// ([`Groups`]). The builder's reads (`dhcp::reply`, `dhcp::boot`,
/// `dhcp::settings::host_net`, `dhcp::options`): the interface's network as `host_net`
/// derives it (all of it but the address itself), whether the interface is a BMC's or
/// a bond, the host's `provision` and `firmware`, which option-table rules hold for it
/// (their host conditions: [`crate::dhcp::options::OptionTable::host_rules`]), the
/// server address, and the lengths of the name and the boot URL (they place what
/// follows, and decide which options fit). The name, MAC and address enter a reply
/// nowhere else; the boot token can (an option-table `{token}`), and a template with it
/// is never shared. Nothing else of a host is read: its ids, its tags but through the
/// rules, its other interfaces, its image. Two checks hold the list to the builder: a
/// group's templates are shared only once two of its hosts compiled on their own gave
/// them equal ([`Groups`]), and the test `grouped_compile_equals_per_host` compiles
/// randomized inventories both ways, template for template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupKey {
    server_ip: Ipv4Addr,
    /// `host_net` with the address zeroed.
    net: HostNet,
    bmc: bool,
    bond: bool,
    provision: bool,
    firmware: String,
    rules: Vec<bool>,
    name_len: usize,
    url_len: usize,
}

impl GroupKey {
    /// None for an interface the builder gives no network (it stays silent).
    fn of(
        settings: &Settings,
        found: &Lookup<'_>,
        server_ip: Ipv4Addr,
        p: &HostPatch,
    ) -> Option<Self> {
        let net = settings.host_net(found.nic)?;
        let rules = settings.options.host_rules(found.host, net.addr);
        Some(GroupKey {
            server_ip,
            net: HostNet {
                addr: Ipv4Addr::UNSPECIFIED,
                ..net
            },
            bmc: found.nic.bmc,
            bond: found.bond,
            provision: found.host.provision,
            firmware: found.host.firmware.clone(),
            rules,
            name_len: p.fields[field::NAME as usize].len(),
            url_len: p.fields[field::URL as usize].len(),
        })
    }
}

/// The OFFER and ACK templates of each [`GroupKey`] met in one whole sync with one
/// compiler: a host of a group whose templates are known takes them and builds only its
/// NAK (which names it). What a group's first host compiled is shared only once a
/// second host, of another name, MAC and address, compiled on its own gives the same
/// templates; a group whose templates keep something of a host (a token, a name longer
/// than its hole) or whose first two hosts disagree has every host compile its own.
#[derive(Default)]
pub struct Groups {
    groups: Mutex<HashMap<GroupKey, Group>>,
    /// Hosts that took their group's templates.
    taken: std::sync::atomic::AtomicUsize,
}

#[derive(Clone)]
enum Group {
    /// One host compiled these; the next one compiles too, to compare.
    First(Slots),
    Shared(Slots),
    /// Every host compiles its own.
    Own,
}

impl Groups {
    fn shared(&self, key: &GroupKey) -> Option<Slots> {
        let s = match self.groups.lock().expect("not poisoned").get(key) {
            Some(Group::Shared(s)) => s.clone(),
            _ => return None,
        };
        self.taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(s)
    }

    /// Records what a host of `key` compiled on its own.
    fn record(&self, key: GroupKey, t: &HostTemplates) {
        let mut groups = self.groups.lock().expect("not poisoned");
        let next = match groups.get(&key) {
            None if shareable(t) => Group::First(t.slots.clone()),
            None => Group::Own,
            Some(Group::First(s)) if *s == t.slots => Group::Shared(s.clone()),
            Some(Group::First(_)) => Group::Own,
            Some(_) => return,
        };
        groups.insert(key, next);
    }

    /// Groups whose templates are shared.
    pub fn shared_count(&self) -> usize {
        let groups = self.groups.lock().expect("not poisoned");
        groups
            .values()
            .filter(|g| matches!(g, Group::Shared(_)))
            .count()
    }

    /// Hosts that took their group's templates (built none but their NAK).
    pub fn taken(&self) -> usize {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whether a host's OFFER and ACK templates keep nothing of it: no token, and its name,
/// where the reply has option 12, cut out.
fn shareable(t: &HostTemplates) -> bool {
    let name = &t.patch.fields[field::NAME as usize];
    t.slots.iter().flatten().flatten().all(|c| {
        !c.expires
            && (name.is_empty()
                || find_option(&c.bytes, 12).is_none()
                || c.holes.iter().any(|h| h.field == field::NAME))
    })
}

impl Compiler<'_> {
    /// All templates of the boot interface `mac`, answered from `server_ip`.
    pub fn compile_host(
        &self,
        inv: &Inventory,
        mac: Mac,
        server_ip: Ipv4Addr,
    ) -> Result<HostTemplates, CompileError> {
        self.compile_host_grouped(inv, mac, server_ip, &Verified::default(), None)
    }

    /// [`Compiler::compile_host`], skipping the self-check of templates in `verified`
    /// (and adding those it checks), and taking a group's templates from `groups` when
    /// they are known ([`GroupKey`]) and recording them when not.
    pub fn compile_host_grouped(
        &self,
        inv: &Inventory,
        mac: Mac,
        server_ip: Ipv4Addr,
        verified: &Verified,
        groups: Option<&Groups>,
    ) -> Result<HostTemplates, CompileError> {
        let found = inv.lookup_mac(mac).ok_or(CompileError::UnknownMac(mac))?;
        let ip = found.nic.addr().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let pinned = Pinned::new(self.urls);
        let url = if ip.is_unspecified() {
            vec![]
        } else {
            pinned.ipxe_script(found.host, mac, server_ip).into_bytes()
        };
        pinned.take();
        let this = HostCompiler {
            settings: self.settings,
            urls: &pinned,
            verified,
        };
        let mut out = HostTemplates {
            ip,
            server_ip,
            slots: Default::default(),
            nak: None,
            patch: HostPatch {
                mac,
                ip,
                fields: [found.host.name.as_bytes().to_vec(), url],
            },
        };
        if ip.is_unspecified() {
            return Ok(out); // the slow path stays silent; the program passes up
        }
        let key = groups.and_then(|_| GroupKey::of(self.settings, &found, server_ip, &out.patch));
        if let (Some(g), Some(k)) = (groups, &key) {
            if let Some(slots) = g.shared(k) {
                out.slots = slots;
                // The group's first two hosts' NAKs passed the self-check.
                out.nak =
                    this.compile_nak(inv, found.host, &pinned, &out.patch, server_ip, false)?;
                return Ok(out);
            }
        }
        this.compile_templates(inv, found.host, &pinned, &mut out)?;
        if let (Some(g), Some(k)) = (groups, key) {
            g.record(k, &out);
        }
        Ok(out)
    }
}

/// The compiler for one host: its URLs pinned.
struct HostCompiler<'a> {
    settings: &'a Settings,
    urls: &'a dyn BootUrls,
    verified: &'a Verified,
}

impl HostCompiler<'_> {
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

    fn compile_templates(
        &self,
        inv: &Inventory,
        host: &crate::inventory::Host,
        pinned: &Pinned<'_>,
        out: &mut HostTemplates,
    ) -> Result<(), CompileError> {
        let (mac, ip, server_ip) = (out.patch.mac, out.ip, out.server_ip);
        let found_name = host.name.as_str();
        for (k, kind) in ClientKind::TEMPLATES.iter().enumerate() {
            for slot in [MSG_OFFER, MSG_ACK] {
                let mut req = canonical(mac, *kind, slot, ip, server_ip);
                out.slots[k][slot] = self
                    .compile_one(
                        inv, &mut req, server_ip, k as u8, found_name, pinned, &out.patch,
                    )?
                    .map(Arc::new);
            }
        }
        out.nak = self.compile_nak(inv, host, pinned, &out.patch, server_ip, true)?;
        Ok(())
    }

    /// OFFER or ACK of one kind; None when the builder stays silent.
    #[allow(clippy::too_many_arguments)]
    fn compile_one(
        &self,
        inv: &Inventory,
        req: &mut Request,
        server_ip: Ipv4Addr,
        kind: u8,
        host: &str,
        pinned: &Pinned<'_>,
        patch: &HostPatch,
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
        let (script, token) = pinned.take();
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
            holes: vec![],
            expires: script || token,
        };
        let whole = c.clone();
        // The builder echoes option 97 at its sorted position; the check proves it (and
        // a builder that does not echo gets a template without the insert).
        let at = insertion_point(&c.bytes, 97);
        c.insert = Some((insert::ECHO_97, at));
        mask(&mut c, patch, script, token, at);
        if !self.verified.contains(&c) {
            if self.check(inv, req, server_ip, &c, host, patch).is_err() {
                c = whole;
                let end = c.bytes.len();
                mask(&mut c, patch, script, token, end);
                if !self.verified.contains(&c) {
                    self.check(inv, req, server_ip, &c, host, patch)?;
                }
            }
            self.verified.add(&c);
        }
        pinned.take();
        Ok(fits(&c).then_some(c))
    }

    /// The NAK, with the requested address's text cut out of option 56; self-checked
    /// when `check`.
    fn compile_nak(
        &self,
        inv: &Inventory,
        host: &crate::inventory::Host,
        pinned: &Pinned<'_>,
        patch: &HostPatch,
        server_ip: Ipv4Addr,
        check: bool,
    ) -> Result<Option<Compiled>, CompileError> {
        let mut req = Request::new(MessageType::Request, patch.mac, ClientKind::Os);
        req.requested_ip = Some(if patch.ip == NAK_MARKER {
            Ipv4Addr::new(0, 0, 0, 2)
        } else {
            NAK_MARKER
        });
        req.server_id = Some(server_ip);
        let (req, host) = (&req, host.name.as_str());
        let Some(mut bytes) = self.decide(inv, req, server_ip) else {
            return Ok(None);
        };
        let (script, token) = pinned.take();
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
        let mut c = Compiled {
            bytes,
            stamp: stamp::XID | stamp::FLAGS | stamp::GIADDR | stamp::BCAST_IF_RELAYED,
            insert: Some((insert::REQUESTED_IP_TEXT, off)),
            msg_type: 6,
            kind: 0xff,
            dns: None,
            limited: false,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            holes: vec![],
            expires: script || token,
        };
        mask(&mut c, patch, script, token, off);
        if check {
            self.check(inv, req, server_ip, &c, host, patch)?;
        }
        pinned.take();
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
        patch: &HostPatch,
    ) -> Result<(), CompileError> {
        for probe in probes(base, c.msg_type) {
            let want = self.decide(inv, &probe.request, server_ip);
            let got = emulate(c, &probe, patch);
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
            .map(|c| c.bytes.clone())
            .collect();
        assert_eq!(
            offers.len(),
            1,
            "provision = false: the same lease for every client kind"
        );
    }

    /// Hosts of one subnet and image whose names have the same length share every
    /// template but the NAK (it names the host and its address); the holes are the name,
    /// the boot URL, and the stamps yiaddr and chaddr. Another name length is another
    /// template.
    #[test]
    fn hosts_of_a_group_share_their_masked_templates() {
        let macs = [Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 7, 2]), MAC3];
        const MAC3: Mac = Mac([2, 0, 0, 0, 0, 3]);
        let hosts = [
            ("cn1", "10.0.0.5/24"),
            ("cn2", "10.0.0.99/24"),
            ("cn10", "10.0.0.7/24"),
        ]
        .iter()
        .zip(macs)
        .map(|((n, ip), mac)| {
            let mut h = Host::with_interface(n, mac, Some(ip));
            h.provision = true;
            h
        })
        .collect();
        let inv = Inventory::from_parts_unchecked(hosts, vec![]);
        let s = settings();
        let c = Compiler {
            settings: &s,
            urls: &PlainUrls { port: 8080 },
        };
        let t: Vec<HostTemplates> = macs
            .iter()
            .map(|m| c.compile_host(&inv, *m, SERVER).unwrap())
            .collect();
        assert_eq!(t[1].patch.fields[field::NAME as usize], b"cn2");
        let url = String::from_utf8(t[1].patch.fields[field::URL as usize].clone()).unwrap();
        assert!(url.contains("/boot/cn2/ipxe"), "{url}");
        let ipxe = kind_index(ClientKind::Ipxe);
        for k in 0..MAX_KINDS {
            for slot in [MSG_OFFER, MSG_ACK] {
                let [a, b, c] = [0, 1, 2].map(|i| t[i].slots[k][slot].clone().unwrap());
                assert_eq!(a, b, "kind {k} slot {slot}: shared");
                assert_ne!(a, c, "kind {k} slot {slot}: another name length");
                assert!(a.stamp & stamp::YIADDR != 0 && a.stamp & stamp::CHADDR != 0);
                assert_eq!(a.yiaddr, Ipv4Addr::UNSPECIFIED);
                assert!(!a.expires);
                let fields: Vec<u8> = a.holes.iter().map(|h| h.field).collect();
                if k == ipxe {
                    assert_eq!(fields, [field::URL, field::NAME], "{:?}", a.holes);
                } else {
                    assert_eq!(fields, [field::NAME], "{:?}", a.holes);
                }
                // Filled, each host's template is its own reply.
                let mut bytes = a.bytes.clone();
                t[1].patch.fill(&mut bytes, a.stamp, &a.holes).unwrap();
                assert_eq!(&bytes[16..20], &[10, 0, 0, 99]);
                assert_eq!(&bytes[28..34], &macs[1].0);
            }
        }
        assert_ne!(t[0].nak, t[1].nak, "a NAK names its host");
    }

    /// Boot URLs as the HTTP service makes them: a token of fixed length that depends on
    /// the host and the MAC (here a hash, not a signature).
    struct TokenUrls;

    impl BootUrls for TokenUrls {
        fn ipxe_script(&self, host: &Host, mac: Mac, server: Ipv4Addr) -> String {
            format!("http://{server}:8080/boot/{}/ipxe", self.token(host, mac))
        }
        fn http_firmware(&self, file: &str, server: Ipv4Addr) -> String {
            format!("http://{server}:8080/firmware/{file}")
        }
        fn base_url(&self, server: Ipv4Addr) -> String {
            format!("http://{server}:8080")
        }
        fn token(&self, host: &Host, mac: Mac) -> String {
            use sha2::Digest;
            let d = sha2::Sha256::digest(format!("{}/{mac}", host.name));
            d[..12].iter().map(|b| format!("{b:02x}")).collect()
        }
    }

    /// A randomized inventory: names of many lengths (past the 64-byte hole, and long
    /// enough to move the URL into option 67), provisioned or not, firmware overrides,
    /// tags the presets and the rules read, BMC interfaces, addresses in three subnets
    /// (one /32 inside a configured subnet) or none, FQDNs, MTUs; half of the hosts
    /// alike but for name, MAC and address.
    fn random_inventory(seed: u64) -> Inventory {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut hosts = vec![];
        for i in 0..160u32 {
            let name = match rnd(6) {
                0 | 1 => format!("cn{}", 10 + rnd(90)),
                2 => format!("node-{:04}", i),
                3 => format!("x{i}"),
                4 => format!("{}-{i}", "long".repeat(1 + rnd(20) as usize)),
                _ => format!("cn{i}"),
            };
            let name = format!("{name}-{i}"); // unique
            let net = rnd(4);
            let ip = match net {
                0 => Some(format!("10.0.0.{}/24", 2 + i % 250)),
                1 => Some(format!("10.0.1.{}/24", 2 + i % 250)),
                2 => Some(format!("10.0.2.{}/32", 2 + i % 250)),
                _ => (rnd(4) != 0).then(|| format!("10.0.3.{}/23", 2 + i % 250)),
            };
            let mac = Mac([2, 0x42, 0, (i >> 8) as u8, i as u8, 1]);
            let mut h = Host::with_interface(&name, mac, ip.as_deref());
            h.id = format!("{}", rnd(1_000_000));
            h.provision = rnd(5) != 0;
            h.firmware = [
                "",
                "",
                "snponly-x86_64.efi",
                "undionly.kpxe",
                "ipxe-arm64.efi",
            ][rnd(5) as usize]
                .into();
            for t in ["arista", "gpu", "rack1", "proxmox", "other"] {
                if rnd(6) == 0 {
                    h.tags.push(t.into());
                }
            }
            let nic = &mut h.interfaces[0];
            nic.fqdn = match rnd(4) {
                0 => format!("{name}.other.example"),
                1 => String::new(),
                _ => format!("{name}.cluster.test"),
            };
            nic.mtu = [0, 0, 0, 0, 9000][rnd(5) as usize];
            if rnd(5) == 0 {
                let mut bmc = h.interfaces[0].clone();
                bmc.mac = Some(Mac([2, 0x43, 0, (i >> 8) as u8, i as u8, 2]));
                bmc.ip = Some(format!("10.0.1.{}/24", 2 + (i + 100) % 250));
                bmc.bmc = true;
                h.interfaces.push(bmc);
            }
            if rnd(2) == 0 {
                // Half the hosts alike but for name, MAC and address, as racks are.
                let mut plain = Host::with_interface(
                    &format!("cn{i:03}"),
                    mac,
                    Some(&format!("10.0.0.{}/24", 2 + i % 250)),
                );
                plain.interfaces[0].fqdn = format!("cn{i:03}.cluster.test");
                plain.id = h.id;
                h = plain;
            }
            hosts.push(h);
        }
        Inventory::from_parts_unchecked(hosts, vec![])
    }

    fn random_settings() -> Settings {
        let cfg = crate::config::Config::from_toml(
            r#"[dhcp]
dns_servers = ["10.0.0.53", "10.0.0.54"]
domain_search = ["cluster.test"]
router_octet4 = 254
subnets = [
    {gateway = "10.0.2.1/24", dns = "10.0.2.53", domainSearch = "two.test", mtu = "1400"},
]
[[dhcp.options]]
code = 224
text = "for some"
hosts = "cn[10-40]-[0-159]"
[[dhcp.options]]
code = 225
u16 = 513
tag = "gpu"
[[dhcp.options]]
code = 7
ip = ["10.0.9.9"]
subnet = "10.0.1.0/24"
[[dhcp.options]]
code = 229
url = "provision/ztp"
tag = "rack1"
[[dhcp.options]]
code = 230
text = "lease only"
provisioned = false
"#,
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        Settings::from_config(&cfg).unwrap()
    }

    /// The grouped compile of a whole sync ([`Groups`]) gives every host exactly what
    /// compiling it alone gives (every template byte, hole, stamp and flag, the NAK, the
    /// patch), for randomized inventories, in order and in reverse (another host first
    /// in its group), with plain URLs (name and MAC in the URL) and token URLs; and it
    /// shares: most hosts take their group's templates.
    #[test]
    fn grouped_compile_equals_per_host() {
        let s = random_settings();
        let (mut shared, mut taken) = (0, 0);
        for seed in 1..=6u64 {
            let inv = random_inventory(seed);
            let plain = PlainUrls { port: 8080 };
            let urls: &(dyn BootUrls + Sync) = if seed % 2 == 0 { &plain } else { &TokenUrls };
            let c = Compiler { settings: &s, urls };
            let mut macs: Vec<Mac> = inv.lease_macs().map(|(_, m)| m).collect();
            if seed % 3 == 0 {
                macs.reverse();
            }
            let server = |m: Mac| {
                let ip = inv.lookup_mac(m).and_then(|l| l.nic.addr());
                match ip.map(|i| i.octets()[2]) {
                    Some(1) => Ipv4Addr::new(10, 0, 1, 1),
                    _ => SERVER,
                }
            };
            let (verified, groups) = (Verified::default(), Groups::default());
            for m in &macs {
                let alone = c.compile_host(&inv, *m, server(*m));
                let grouped =
                    c.compile_host_grouped(&inv, *m, server(*m), &verified, Some(&groups));
                assert_eq!(grouped, alone, "seed {seed}, {m}");
            }
            assert!(groups.shared_count() > 0, "seed {seed}: no group shared");
            shared += groups.shared_count();
            taken += groups.taken();
        }
        assert!(
            shared >= 12 && taken >= 100,
            "{shared} groups shared, {taken} hosts took theirs"
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
