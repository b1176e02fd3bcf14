//! Keeping the program's maps in step with the inventory.
//!
//! Invariants (what a client sees while the daemon swaps inventories):
//! - A host present before and after a sync is answered throughout: its new templates
//!   are in `TEMPLATES` before its host entry names them, the entry is replaced whole in
//!   one map update, and its old templates' slots are cleared and reused only a grace
//!   period after no entry names them any more (the program reads a template within
//!   microseconds of reading the entry that named it). A slot is written only while no
//!   entry names it, so the program never reads a template being rewritten.
//! - A host deleted from the inventory is never answered again once `sync` returns: its
//!   entry is removed, and the program passes unknown MACs up.
//! - Only what changed is written: a host whose inventory entry and server address are
//!   unchanged (and whose templates are not due for refresh) costs nothing; templates
//!   are shared by content (a 128-bit digest), so a refresh that gives the same bytes
//!   writes nothing either.
//! - Only what changed is looked at: after a change of some hosts ([`MapSync::sync_hosts`],
//!   given their names by [`crate::state::Shared::changed_since`]) the work is those
//!   hosts', whatever the inventory's size; the periodic [`MapSync::refresh`] compiles
//!   only templates due for refresh and hosts that failed before. A whole comparison
//!   ([`MapSync::sync`]) runs at start and after a whole replacement.
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boot_common::{field, HostEntry, MacKey, Template, MAX_KINDS, MSGS};
use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::compile::{
    class_table, CompileError, Compiled, Compiler, Groups, HostTemplates, Verified,
};
use super::loader::{FastPath, XdpError, SHARED_TEMPLATES};
use crate::inventory::{Host, Inventory, Mac};

/// One of our addresses, where the program runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedAddr {
    /// Interface the program is attached to (the parent of a VLAN interface).
    pub ifindex: u32,
    /// 802.1Q VLAN id; 0 untagged.
    pub vlan: u16,
    /// Our MAC there (the source of replies).
    pub mac: Mac,
    pub net: Ipv4Net,
}

impl ServedAddr {
    /// Our addresses on the named interfaces (the program is attached to each) and on
    /// their 802.1Q VLAN interfaces (tagged frames reach the parent's program).
    pub fn for_interfaces(names: &[String]) -> std::io::Result<Vec<ServedAddr>> {
        let all = crate::dhcp::iface::list()?;
        let vlans = std::fs::read_to_string("/proc/net/vlan/config").unwrap_or_default();
        let mut out = vec![];
        for name in names {
            let Some(parent) = all.iter().find(|i| &i.name == name) else {
                return Err(std::io::Error::other(format!("no interface {name}")));
            };
            let mut add = |vlan: u16, i: &crate::dhcp::iface::IfaceInfo| {
                for net in &i.addrs {
                    out.push(ServedAddr {
                        ifindex: parent.index,
                        vlan,
                        mac: i.mac,
                        net: *net,
                    });
                }
            };
            add(0, parent);
            for (child, id) in vlan_children(&vlans, name) {
                if let Some(i) = all.iter().find(|i| i.name == child) {
                    add(id, i);
                }
            }
        }
        Ok(out)
    }
}

/// `(name, vlan id)` of the VLAN interfaces on `parent`, from /proc/net/vlan/config
/// (`eth0.42 | 42 | eth0`).
fn vlan_children(config: &str, parent: &str) -> Vec<(String, u16)> {
    config
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            match f[..] {
                [name, id, p] if p == parent => Some((name.to_string(), id.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
pub struct SyncOptions {
    /// Lifetime of a template that embeds expiring boot-URL tokens: the program passes
    /// it up after this, and `sync` recompiles templates older than half of it. None:
    /// templates never expire.
    pub template_ttl: Option<Duration>,
    /// How long a template no entry names stays in the map before it is deleted.
    pub grace: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            template_ttl: None,
            grace: Duration::from_millis(500),
        }
    }
}

/// Per-host failures a sync logs: a burst, then a line a second, the rest counted (maps
/// that are full fail every host past their size, at every sync).
static HOST_WARNINGS: crate::ratelimit::LogLimit = crate::ratelimit::LogLimit::new(1, 10);

fn host_warning(line: std::fmt::Arguments) {
    use crate::ratelimit::{LogLimit, Verdict};
    if let Verdict::Log { suppressed } = HOST_WARNINGS.check(crate::events::now_ms()) {
        tracing::warn!("{line}{}", LogLimit::note(suppressed));
    }
}

/// What one `sync` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Hosts whose templates could not be compiled or written (they go to the slow path).
    pub failed: usize,
    pub templates_written: usize,
    pub templates_deleted: usize,
}

/// Hosts per chunk of a whole sync's parallel compile (bounds the compiled templates
/// held at once).
const COMPILE_CHUNK: usize = 2048;

/// What a sync does for one MAC.
enum Plan {
    /// No served address for its network.
    NoServer,
    Unchanged,
    /// Compile its templates, answered from this address.
    Compile(ServedAddr),
}

/// Compiles `jobs` (MAC, server address) on every CPU; results in the jobs' order.
fn compile_all(
    c: &Compiler<'_>,
    inv: &Inventory,
    jobs: &[(Mac, Ipv4Addr)],
    verified: &Verified,
    groups: &Groups,
) -> Vec<Result<HostTemplates, CompileError>> {
    let one =
        |(m, s): &(Mac, Ipv4Addr)| c.compile_host_grouped(inv, *m, *s, verified, Some(groups));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || jobs.len() < 64 {
        return jobs.iter().map(one).collect();
    }
    let per = jobs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(per)
            .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a compile thread panicked"))
            .collect()
    })
}

/// A host entry as installed.
struct Installed {
    host: Host,
    server_ip: Ipv4Addr,
    entry: HostEntry,
    ids: Vec<u32>,
    compiled_at: Instant,
}

/// A template in the map, shared by every slot with the same content.
struct Shared {
    id: u32,
    refs: u32,
}

type Digest128 = [u8; 16];

#[derive(Debug, thiserror::Error)]
enum TemplateError {
    #[error(
        "all {0} template slots are in use (sized at start for two per boot interface of \
         dhcp.xdp_max_hosts, else of twice the inventory, and {shared} shared ones; raise \
         dhcp.xdp_max_hosts and restart to resize)",
        shared = SHARED_TEMPLATES
    )]
    Full(u32),
    #[error(transparent)]
    Map(aya::maps::MapError),
}

/// The daemon's record of what is in the maps.
pub struct MapSync {
    servers: Vec<ServedAddr>,
    opts: SyncOptions,
    installed: HashMap<Mac, Installed>,
    /// Host name -> its MACs in `installed`.
    by_host: HashMap<String, Vec<Mac>>,
    /// MACs whose last sync failed (no slot, a map error ...): tried again by `refresh`.
    pending: HashSet<Mac>,
    by_digest: HashMap<Digest128, Shared>,
    digest_of: HashMap<u32, Digest128>,
    /// Templates no entry names, with when they stopped being named.
    retired: VecDeque<(Instant, u32)>,
    /// Slots cleared after their grace period, reused first.
    free: Vec<u32>,
    /// The lowest slot never used (slot 0 means "no template").
    next_id: u32,
    seq: u32,
    classes_written: bool,
}

impl MapSync {
    pub fn new(servers: Vec<ServedAddr>, opts: SyncOptions) -> MapSync {
        MapSync {
            servers,
            opts,
            installed: HashMap::new(),
            by_host: HashMap::new(),
            pending: HashSet::new(),
            by_digest: HashMap::new(),
            digest_of: HashMap::new(),
            retired: VecDeque::new(),
            free: vec![],
            next_id: 1,
            seq: 0,
            classes_written: false,
        }
    }

    /// Hosts currently in the map.
    pub fn hosts(&self) -> usize {
        self.installed.len()
    }

    /// Templates currently in the map (named or waiting for deletion).
    pub fn templates(&self) -> usize {
        self.digest_of.len()
    }

    /// The address replies to `host_ip` come from: the served address whose network
    /// holds it, else the first (as the slow path picks it for broadcast requests).
    pub fn server_for(&self, host_ip: Ipv4Addr) -> Option<&ServedAddr> {
        let addrs: Vec<Ipv4Net> = self.servers.iter().map(|s| s.net).collect();
        let ip = crate::dhcp::iface::pick_server_ip(&addrs, Some(host_ip), None)?;
        self.servers.iter().find(|s| s.net.addr() == ip)
    }

    /// Brings the maps to `inv`. `now` decides which templates are due for refresh.
    pub fn sync(
        &mut self,
        fp: &mut FastPath,
        inv: &Inventory,
        c: &Compiler<'_>,
        now: Instant,
    ) -> Result<SyncReport, XdpError> {
        let mut report = self.begin(fp, c, now)?;
        let mut seen = HashMap::new();
        self.pending.clear();
        let all: Vec<(&Host, Mac)> = inv.lease_macs().collect();
        let mut batch = Batch::default();
        // In chunks: the hosts to compile of a chunk are compiled on every CPU (the
        // builder and the self-check are most of a sync's time), then written in order.
        for chunk in all.chunks(COMPILE_CHUNK) {
            let plans: Vec<Plan> = chunk
                .iter()
                .map(|(host, mac)| self.plan(inv, host, *mac, now))
                .collect();
            let jobs: Vec<(Mac, Ipv4Addr)> = chunk
                .iter()
                .zip(&plans)
                .filter_map(|((_, mac), p)| match p {
                    Plan::Compile(s) => Some((*mac, s.net.addr())),
                    _ => None,
                })
                .collect();
            let mut compiled =
                compile_all(c, inv, &jobs, &batch.verified, &batch.groups).into_iter();
            for ((host, mac), plan) in chunk.iter().zip(plans) {
                seen.insert(*mac, ());
                let t = match &plan {
                    Plan::Compile(_) => compiled.next().expect("one result per job"),
                    _ => Err(CompileError::UnknownMac(*mac)), // not used
                };
                self.apply(
                    fp,
                    host,
                    *mac,
                    plan,
                    t,
                    now,
                    &mut batch.digests,
                    &mut report,
                );
            }
        }
        let gone: Vec<Mac> = self
            .installed
            .keys()
            .filter(|m| !seen.contains_key(*m))
            .copied()
            .collect();
        for mac in gone {
            if let Err(e) = fp.hosts.remove(&MacKey::new(mac.0)) {
                tracing::warn!("XDP: cannot remove host {mac}: {e}");
                report.failed += 1;
                continue;
            }
            let old = self.uninstall(mac).expect("listed above");
            self.release(&old.ids, now);
            report.removed += 1;
        }
        report.templates_deleted += self.collect(fp, now);
        Ok(report)
    }

    /// Brings the maps to `inv` for the hosts `names` only: those that changed (put or
    /// deleted) since the inventory the maps were last synced with. Costs those hosts'
    /// work, whatever the inventory's size.
    pub fn sync_hosts(
        &mut self,
        fp: &mut FastPath,
        inv: &Inventory,
        names: &[String],
        c: &Compiler<'_>,
        now: Instant,
    ) -> Result<SyncReport, XdpError> {
        let mut report = self.begin(fp, c, now)?;
        let mut old = HashSet::new();
        let mut new = Vec::new();
        for n in names {
            old.extend(self.by_host.get(n).into_iter().flatten().copied());
            new.extend(inv.host_lease_macs(n));
        }
        let kept: HashSet<Mac> = new.iter().copied().collect();
        // MACs that left a changed host first: one that moved to another changed host
        // is then installed for its new owner.
        for mac in old.iter().filter(|m| !kept.contains(m)) {
            self.pending.remove(mac);
            if self.installed.contains_key(mac) {
                self.remove_host(fp, *mac, now);
                report.removed += 1;
            }
        }
        let mut batch = Batch::default();
        for mac in new {
            if let Some(l) = inv.lookup_mac(mac) {
                self.pending.remove(&mac);
                self.sync_host(fp, inv, c, l.host, mac, now, &mut batch, &mut report);
            }
        }
        report.templates_deleted += self.collect(fp, now);
        Ok(report)
    }

    /// The periodic part of keeping the maps current, for the inventory they were last
    /// synced with: clears retired templates past their grace period, recompiles the
    /// templates due for refresh (tokens about to expire) and tries again the hosts that
    /// failed. Compiles nothing else.
    pub fn refresh(
        &mut self,
        fp: &mut FastPath,
        inv: &Inventory,
        c: &Compiler<'_>,
        now: Instant,
    ) -> Result<SyncReport, XdpError> {
        let mut report = self.begin(fp, c, now)?;
        let mut todo: Vec<Mac> = self.pending.drain().collect();
        if let Some(ttl) = self.opts.template_ttl {
            todo.extend(
                self.installed
                    .iter()
                    .filter(|(_, i)| now.duration_since(i.compiled_at) >= ttl / 2)
                    .map(|(m, _)| *m),
            );
        }
        // A refresh of every host (their tokens due at once) builds each group's
        // templates once, as a whole sync does.
        let mut batch = Batch::default();
        for mac in todo {
            match inv.lookup_mac(mac) {
                Some(l) => self.sync_host(fp, inv, c, l.host, mac, now, &mut batch, &mut report),
                None => {
                    if self.installed.contains_key(&mac) {
                        self.remove_host(fp, mac, now);
                        report.removed += 1;
                    }
                }
            }
        }
        report.templates_deleted += self.collect(fp, now);
        Ok(report)
    }

    /// Records `mac` as installed for its host.
    fn install(&mut self, mac: Mac, i: Installed) -> Option<Installed> {
        let name = i.host.name.clone();
        let prev = self.installed.insert(mac, i);
        if let Some(p) = &prev {
            self.unindex(mac, &p.host.name.clone());
        }
        let macs = self.by_host.entry(name).or_default();
        if !macs.contains(&mac) {
            macs.push(mac);
        }
        prev
    }

    fn uninstall(&mut self, mac: Mac) -> Option<Installed> {
        let old = self.installed.remove(&mac)?;
        self.unindex(mac, &old.host.name);
        Some(old)
    }

    fn unindex(&mut self, mac: Mac, name: &str) {
        if let Some(macs) = self.by_host.get_mut(name) {
            macs.retain(|m| *m != mac);
            if macs.is_empty() {
                self.by_host.remove(name);
            }
        }
    }

    /// What every sync starts with: the class table written, and the slots of retired
    /// templates past their grace period freed before anything new is written.
    fn begin(
        &mut self,
        fp: &mut FastPath,
        c: &Compiler<'_>,
        now: Instant,
    ) -> Result<SyncReport, XdpError> {
        self.write_static(fp, c)?;
        Ok(SyncReport {
            templates_deleted: self.collect(fp, now),
            ..SyncReport::default()
        })
    }

    /// The class table (written once).
    fn write_static(&mut self, fp: &mut FastPath, c: &Compiler<'_>) -> Result<(), XdpError> {
        if self.classes_written {
            return Ok(());
        }
        for (key, kind) in class_table(&c.settings.options) {
            let Some(i) = key.index() else { continue };
            fp.classes
                .set(i, kind.map_or(0, |k| k + 1), 0)
                .map_err(|source| XdpError::Map {
                    name: "CLASSES",
                    source: Box::new(source),
                })?;
        }
        self.classes_written = true;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn sync_host(
        &mut self,
        fp: &mut FastPath,
        inv: &Inventory,
        c: &Compiler<'_>,
        host: &Host,
        mac: Mac,
        now: Instant,
        batch: &mut Batch,
        report: &mut SyncReport,
    ) {
        let plan = self.plan(inv, host, mac, now);
        let t = match &plan {
            Plan::Compile(s) => {
                c.compile_host_grouped(inv, mac, s.net.addr(), &batch.verified, Some(&batch.groups))
            }
            _ => Err(CompileError::UnknownMac(mac)), // not used
        };
        self.apply(fp, host, mac, plan, t, now, &mut batch.digests, report);
    }

    /// What a sync of `mac` has to do.
    fn plan(&self, inv: &Inventory, host: &Host, mac: Mac, now: Instant) -> Plan {
        let ip = inv
            .lookup_mac(mac)
            .and_then(|l| l.nic.addr())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let Some(server) = self.server_for(ip).cloned() else {
            return Plan::NoServer;
        };
        let server_ip = server.net.addr();
        let due = |i: &Installed| {
            self.opts
                .template_ttl
                .is_some_and(|ttl| now.duration_since(i.compiled_at) >= ttl / 2)
        };
        let old = self.installed.get(&mac);
        if old.is_some_and(|i| i.host == *host && i.server_ip == server_ip && !due(i)) {
            return Plan::Unchanged;
        }
        Plan::Compile(server)
    }

    /// Carries out `plan` for `mac`, with its templates `compiled` when it compiles.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        fp: &mut FastPath,
        host: &Host,
        mac: Mac,
        plan: Plan,
        compiled: Result<HostTemplates, CompileError>,
        now: Instant,
        digests: &mut Digests,
        report: &mut SyncReport,
    ) {
        let server = match plan {
            Plan::NoServer => {
                report.failed += 1; // no address to answer from: the slow path decides
                self.pending.insert(mac);
                return;
            }
            Plan::Unchanged => {
                report.unchanged += 1;
                return;
            }
            Plan::Compile(s) => s,
        };
        let server_ip = server.net.addr();
        let old_entry = self.installed.get(&mac).map(|i| i.entry);
        let templates = match compiled {
            Ok(t) => t,
            Err(e) => {
                host_warning(format_args!("XDP: {e}; the slow path answers this host"));
                self.remove_host(fp, mac, now);
                self.pending.insert(mac);
                report.failed += 1;
                return;
            }
        };
        let valid_until = self
            .opts
            .template_ttl
            .map(|ttl| monotonic_ns() + ttl.as_nanos() as u64);
        let Some((entry, ids)) = self.write_templates(
            fp,
            mac,
            &templates,
            &server,
            valid_until,
            now,
            digests,
            report,
        ) else {
            self.pending.insert(mac);
            report.failed += 1;
            return;
        };
        let entry = match old_entry.filter(|e| same_entry(e, &entry)) {
            Some(e) => {
                report.unchanged += 1;
                e
            }
            None => {
                self.seq = self.seq.wrapping_add(1);
                let entry = HostEntry {
                    seq: self.seq,
                    seq_end: self.seq,
                    ..entry
                };
                if let Err(e) = fp.hosts.insert(MacKey::new(mac.0), entry, 0) {
                    host_warning(format_args!(
                        "XDP: cannot write host {} ({mac}): {e}; the slow path answers it \
                         (the maps hold {} boot interfaces: dhcp.xdp_max_hosts)",
                        host.name, fp.sizes.max_hosts
                    ));
                    self.release(&ids, now);
                    self.pending.insert(mac);
                    report.failed += 1;
                    return;
                }
                if old_entry.is_none() {
                    report.added += 1;
                } else {
                    report.changed += 1;
                }
                entry
            }
        };
        let prev = self.install(
            mac,
            Installed {
                host: host.clone(),
                server_ip,
                entry,
                ids,
                compiled_at: now,
            },
        );
        if let Some(prev) = prev {
            self.release(&prev.ids, now);
        }
    }

    /// Writes the templates `t` needs (those not already in the map) and returns the
    /// host entry naming them, with one reference taken per slot.
    #[allow(clippy::too_many_arguments)]
    fn write_templates(
        &mut self,
        fp: &mut FastPath,
        mac: Mac,
        t: &HostTemplates,
        server: &ServedAddr,
        valid_until: Option<u64>,
        now: Instant,
        digests: &mut Digests,
        report: &mut SyncReport,
    ) -> Option<(HostEntry, Vec<u32>)> {
        let mut entry = HostEntry {
            mac: mac.0,
            ip: t.ip.octets(),
            server_ip: t.server_ip.octets(),
            ifindex: server.ifindex,
            vlan: server.vlan,
            server_mac: server.mac.0,
            valid_until_ns: valid_until.unwrap_or(0),
            ..Default::default()
        };
        for (f, v) in t.patch.fields.iter().enumerate() {
            // A longer value is in no hole (the templates keep it).
            if v.len() <= field::CAP[f] {
                let at = field::START[f];
                entry.patch[at..at + v.len()].copy_from_slice(v);
                entry.field_len[f] = v.len() as u8;
                entry.field_sum[f] = ones_sum(v, 0);
            }
        }
        let mut ids = vec![];
        let mut failed = false;
        let mut take = |this: &mut MapSync, c: Option<&Compiled>, d: Option<Digest128>| -> u32 {
            let Some(c) = c else { return 0 };
            match this.acquire(fp, c, valid_until, d, report) {
                Ok(id) => {
                    ids.push(id);
                    id
                }
                Err(e) => {
                    host_warning(format_args!(
                        "XDP: cannot write a template for {mac}: {e}; the slow path answers it"
                    ));
                    failed = true;
                    0
                }
            }
        };
        for k in 0..MAX_KINDS {
            for m in 0..MSGS {
                let c = t.slots[k][m].as_ref();
                let d = c.and_then(|c| digests.of(c));
                entry.tmpl[k][m] = take(self, c.map(|c| &**c), d);
            }
        }
        entry.nak = take(self, t.nak.as_ref(), None);
        if failed {
            self.release(&ids, now);
            return None;
        }
        Some((entry, ids))
    }

    /// The id of a template with this content, writing it if it is new. `known`: its
    /// digest, when it neither expires nor was hashed before ([`Digests`]).
    fn acquire(
        &mut self,
        fp: &mut FastPath,
        c: &Compiled,
        valid_until: Option<u64>,
        known: Option<Digest128>,
        report: &mut SyncReport,
    ) -> Result<u32, TemplateError> {
        // Only a template that embeds a token expires; the host entry does in any case.
        let valid_until = valid_until.filter(|_| c.expires);
        let digest = match known {
            Some(d) if valid_until.is_none() => d,
            _ => digest(c, valid_until),
        };
        if let Some(s) = self.by_digest.get_mut(&digest) {
            s.refs += 1;
            return Ok(s.id);
        }
        let slots = fp.templates.len();
        let id = self.fresh_id(slots).ok_or(TemplateError::Full(slots))?;
        let t = to_template(c, id, valid_until.unwrap_or(0));
        if let Err(e) = fp.templates.set(id, t, 0) {
            self.free.push(id);
            return Err(TemplateError::Map(e));
        }
        report.templates_written += 1;
        self.by_digest.insert(digest, Shared { id, refs: 1 });
        self.digest_of.insert(id, digest);
        Ok(id)
    }

    /// A free slot below `slots`, if any.
    fn fresh_id(&mut self, slots: u32) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        if self.next_id >= slots {
            return None;
        }
        self.next_id += 1;
        Some(self.next_id - 1)
    }

    /// Drops one reference per id; templates left unnamed are retired (deleted later).
    fn release(&mut self, ids: &[u32], now: Instant) {
        for id in ids {
            let Some(d) = self.digest_of.get(id) else {
                continue;
            };
            let Some(s) = self.by_digest.get_mut(d) else {
                continue;
            };
            s.refs -= 1;
            if s.refs == 0 {
                self.by_digest.remove(&self.digest_of[id]);
                self.retired.push_back((now, *id));
            }
        }
    }

    fn remove_host(&mut self, fp: &mut FastPath, mac: Mac, now: Instant) {
        if let Some(old) = self.uninstall(mac) {
            let _ = fp.hosts.remove(&MacKey::new(mac.0));
            self.release(&old.ids, now);
        }
    }

    /// Clears the slots of templates retired at least a grace period ago and makes them
    /// free (a cleared slot names no id, so a stale reference would be refused rather
    /// than answered). Returns how many.
    pub fn collect(&mut self, fp: &mut FastPath, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&(at, id)) = self.retired.front() {
            if now.duration_since(at) < self.opts.grace {
                break;
            }
            self.retired.pop_front();
            self.digest_of.remove(&id);
            match fp.templates.set(id, Template::default(), 0) {
                Ok(()) => {
                    n += 1;
                    self.free.push(id);
                }
                // Not reused: a later write there could not be trusted either.
                Err(e) => tracing::warn!("XDP: cannot clear template slot {id}: {e}"),
            }
        }
        n
    }
}

/// What the hosts compiled in one sync share: the templates the self-check passed
/// ([`Verified`]), each group's templates ([`Groups`]) and their digests ([`Digests`]).
#[derive(Default)]
struct Batch {
    verified: Verified,
    groups: Groups,
    digests: Digests,
}

/// The digests of the templates a group's hosts share in one whole sync, by the address
/// of their one `Arc` ([`Groups`] hands every host of a group the same): each is hashed
/// once, not once per host. Holds the `Arc`s, so no address is reused while it is a key.
/// Only templates that do not expire (their digest does not depend on the sync's time)
/// and that more than one host names.
#[derive(Default)]
struct Digests(HashMap<*const Compiled, (Arc<Compiled>, Digest128)>);

impl Digests {
    fn of(&mut self, c: &Arc<Compiled>) -> Option<Digest128> {
        if c.expires || Arc::strong_count(c) < 2 {
            return None;
        }
        let (_, d) = self
            .0
            .entry(Arc::as_ptr(c))
            .or_insert_with(|| (c.clone(), digest(c, None)));
        Some(*d)
    }
}

/// Entries equal apart from their sequence numbers.
fn same_entry(a: &HostEntry, b: &HostEntry) -> bool {
    HostEntry {
        seq: 0,
        seq_end: 0,
        ..*a
    } == HostEntry {
        seq: 0,
        seq_end: 0,
        ..*b
    }
}

/// The content address of a template: everything [`to_template`] makes its map value
/// from (the sums follow from the bytes), hashed without building the value.
fn digest(c: &Compiled, valid_until: Option<u64>) -> Digest128 {
    let mut h = Sha256::new();
    let (what, at) = c
        .insert
        .unwrap_or((boot_common::insert::NONE, c.bytes.len()));
    let (dns_off, dns_n) = c.dns.unwrap_or((0, 0));
    h.update([
        what,
        c.msg_type,
        c.kind,
        c.limited as u8,
        dns_n,
        c.holes.len() as u8,
    ]);
    h.update(c.stamp.to_le_bytes());
    h.update((at as u32).to_le_bytes());
    h.update(dns_off.to_le_bytes());
    h.update(c.yiaddr.octets());
    h.update(valid_until.unwrap_or(0).to_le_bytes());
    for hole in &c.holes {
        h.update(hole.off.to_le_bytes());
        h.update([hole.len, hole.field]);
    }
    h.update(&c.bytes);
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The map value for a compiled template: head and tail split at the insertion point,
/// with their checksums.
pub fn to_template(c: &Compiled, id: u32, valid_until_ns: u64) -> Template {
    let (what, at) = c
        .insert
        .unwrap_or((boot_common::insert::NONE, c.bytes.len()));
    let (head, tail) = c.bytes.split_at(at);
    let mut t = Template {
        id,
        head_len: head.len() as u16,
        tail_len: tail.len() as u16,
        stamp: c.stamp,
        insert: what,
        msg_type: c.msg_type,
        kind: c.kind,
        dns_n: c.dns.map_or(0, |d| d.1),
        limited: c.limited as u8,
        yiaddr: c.yiaddr.octets(),
        dns_off: c.dns.map_or(0, |d| d.0),
        sum_head: ones_sum(head, 0),
        sum_tail: ones_sum(tail, head.len()),
        valid_until_ns,
        ..Default::default()
    };
    for (slot, h) in t.holes.iter_mut().zip(&c.holes) {
        *slot = *h;
    }
    t.head[..head.len()].copy_from_slice(head);
    t.tail[..tail.len()].copy_from_slice(tail);
    t
}

/// One's complement sum (folded, not complemented) of `bytes` placed at `offset` in a
/// message: big-endian 16-bit words, a byte at an odd offset being a low byte.
pub fn ones_sum(bytes: &[u8], offset: usize) -> u16 {
    let mut s: u32 = 0;
    for (i, b) in bytes.iter().enumerate() {
        s += if (offset + i).is_multiple_of(2) {
            (*b as u32) << 8
        } else {
            *b as u32
        };
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec to write into; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_config_rows() {
        let cfg = "VLAN Dev name    | VLAN ID\nName-Type: VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD\n\
                   eth0.42        | 42  | eth0\neth1.7         | 7  | eth1\n";
        assert_eq!(
            vlan_children(cfg, "eth0"),
            vec![("eth0.42".to_string(), 42)]
        );
        assert!(vlan_children(cfg, "eth2").is_empty());
    }
}

#[cfg(test)]
mod sum_tests {
    use super::*;

    /// The template sums are the Internet checksum's, split anywhere.
    #[test]
    fn split_sums_add_up() {
        let msg: Vec<u8> = (0..301u32).map(|i| (i * 37 + 11) as u8).collect();
        let whole = !crate::dhcp::frame::checksum(&[&msg]);
        for at in [0, 1, 2, 150, 151, 300, 301] {
            let (a, b) = msg.split_at(at);
            let s = ones_sum(a, 0) as u32 + ones_sum(b, at) as u32;
            let s = ((s & 0xffff) + (s >> 16)) as u16;
            assert_eq!(s, whole, "split at {at}");
        }
    }
}

/// The program's stamping of per-host fields, with BPF_PROG_TEST_RUN (needs root; skipped
/// otherwise): a template with a name hole at an even and at an odd offset and a URL hole
/// in BOOTP `file`, filled from host entries of several lengths, yiaddr and chaddr from
/// the entry, and the UDP checksum from the precomputed field sums. Hand-made maps: the
/// compiler is not involved, so this holds the program alone to the layout.
#[cfg(test)]
mod stamp_tests {
    use std::net::SocketAddrV4;

    use boot_common::{field, stamp, ClassKey, Hole, HostEntry, MacKey, MSG_OFFER};

    use super::*;
    use crate::dhcp::frame::udp_frame;
    use crate::xdp::compile::{Compiled, HostPatch};
    use crate::xdp::loader::{LoadOptions, XDP_PASS, XDP_TX};

    const SRV_MAC: Mac = Mac([2, 0x5e, 0, 0, 0, 1]);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    /// An OFFER template: option 12 with `name_len` zeros at an offset of parity `odd`,
    /// and `url_len` zeros in `file`.
    fn template(name_len: usize, url_len: usize, odd: bool) -> Compiled {
        let mut b = vec![0u8; 240];
        b[0] = 2;
        b[1] = 1;
        b[2] = 6;
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&[53, 1, 2, 54, 4]);
        b.extend_from_slice(&SERVER.octets());
        if (b.len() + 2) % 2 != odd as usize {
            b.push(0); // a pad: option 12's data moves to the offset's other parity
        }
        b.extend_from_slice(&[12, name_len as u8]);
        let name_at = b.len();
        b.resize(name_at + name_len, 0);
        b.extend_from_slice(&[15, 4, b'x', b'.', b't', b'k', 255]);
        let mut holes = vec![Hole {
            off: 108,
            len: url_len as u8,
            field: field::URL,
        }];
        holes.push(Hole {
            off: name_at as u16,
            len: name_len as u8,
            field: field::NAME,
        });
        Compiled {
            bytes: b,
            stamp: stamp::XID | stamp::FLAGS | stamp::GIADDR | stamp::YIADDR | stamp::CHADDR,
            insert: None,
            msg_type: 2,
            kind: 0,
            dns: None,
            limited: false,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            holes,
            expires: false,
        }
    }

    fn entry(p: &HostPatch, id: u32, valid_until_ns: u64) -> HostEntry {
        let mut e = HostEntry {
            seq: 7,
            seq_end: 7,
            mac: p.mac.0,
            ip: p.ip.octets(),
            server_ip: SERVER.octets(),
            ifindex: 1, // BPF_PROG_TEST_RUN's ingress: the loopback device
            server_mac: SRV_MAC.0,
            valid_until_ns,
            ..Default::default()
        };
        e.tmpl[0][MSG_OFFER] = id;
        for (f, v) in p.fields.iter().enumerate() {
            let at = field::START[f];
            e.patch[at..at + v.len()].copy_from_slice(v);
            e.field_len[f] = v.len() as u8;
            e.field_sum[f] = ones_sum(v, 0);
        }
        e
    }

    /// A DISCOVER from `mac` with option 53 only (class: no arch, no vendor, no user).
    fn discover(mac: Mac, xid: u32) -> Vec<u8> {
        let mut b = vec![0u8; 240];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&xid.to_be_bytes());
        b[28..34].copy_from_slice(&mac.0);
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&[53, 1, 1, 255]);
        b.resize(300, 0);
        udp_frame(
            &b,
            mac,
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            Mac([0xff; 6]),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
            None,
        )
    }

    #[test]
    fn holes_and_per_host_stamps_are_filled_in_the_kernel() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
            return;
        }
        let mut fp = FastPath::load(LoadOptions::for_hosts(1)).expect("load the program");
        let key = ClassKey {
            arch: ClassKey::NO_ARCH,
            vendor: ClassKey::VENDOR_NONE,
            user: ClassKey::USER_NONE,
        };
        fp.classes.set(key.index().unwrap(), 1, 0).unwrap();
        let mut id = 1;
        let mut rows = 0;
        for odd in [false, true] {
            for (name, url) in [
                ("a", "u"),
                ("cn7", "http://10.0.0.1:8080/boot/cn7/ipxe"),
                ("node-0042", "http://10.0.0.1/boot/tok"),
                (&"n".repeat(64)[..], &"v".repeat(127)[..]),
            ] {
                let c = template(name.len(), url.len(), odd);
                assert_eq!(c.holes[1].off % 2 == 1, odd);
                fp.templates.set(id, to_template(&c, id, 0), 0).unwrap();
                for (i, ip) in [Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 3, 200)]
                    .into_iter()
                    .enumerate()
                {
                    let mac = Mac([2, 0, 0, 0, id as u8, i as u8]);
                    let p = HostPatch {
                        mac,
                        ip,
                        fields: [name.as_bytes().to_vec(), url.as_bytes().to_vec()],
                    };
                    fp.hosts
                        .insert(MacKey::new(mac.0), entry(&p, id, 0), 0)
                        .unwrap();
                    let xid = 0x1234_5600 + rows;
                    let out = fp.test_run(&discover(mac, xid)).unwrap();
                    assert_eq!(out.action, XDP_TX, "{name} {url} odd {odd}");
                    let mut want = c.bytes.clone();
                    p.fill(&mut want, c.stamp, &c.holes).unwrap();
                    want[4..8].copy_from_slice(&xid.to_be_bytes());
                    let frame = udp_frame(
                        &want,
                        SRV_MAC,
                        SocketAddrV4::new(SERVER, 67),
                        mac,
                        SocketAddrV4::new(ip, 68),
                        None,
                    );
                    assert_eq!(out.frame, frame, "{name} {url} odd {odd}: the frame");
                    rows += 1;
                }
                id += 1;
            }
        }
        assert_eq!(rows, 16);
        // A host whose field does not fit the hole, and one past its deadline: passed up
        // untouched.
        let c = template(3, 4, true);
        fp.templates.set(id, to_template(&c, id, 0), 0).unwrap();
        let mac = Mac([2, 0, 0, 0, 0xee, 1]);
        let mut p = HostPatch {
            mac,
            ip: Ipv4Addr::new(10, 0, 0, 9),
            fields: [b"cn10".to_vec(), b"http".to_vec()],
        };
        fp.hosts
            .insert(MacKey::new(mac.0), entry(&p, id, 0), 0)
            .unwrap();
        let req = discover(mac, 1);
        let out = fp.test_run(&req).unwrap();
        assert_eq!((out.action, &out.frame), (XDP_PASS, &req), "name too long");
        p.fields[0] = b"cn1".to_vec();
        fp.hosts
            .insert(MacKey::new(mac.0), entry(&p, id, 1), 0)
            .unwrap();
        let out = fp.test_run(&req).unwrap();
        assert_eq!((out.action, &out.frame), (XDP_PASS, &req), "expired");
        fp.hosts
            .insert(MacKey::new(mac.0), entry(&p, id, 0), 0)
            .unwrap();
        assert_eq!(fp.test_run(&req).unwrap().action, XDP_TX);
    }
}
