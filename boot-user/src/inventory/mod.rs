//! The inventory: hosts and boot images (model, loading, validation, persistent store).
//!
//! An [`Inventory`] is immutable once built: a change builds a new one, validates it, and
//! swaps it in whole (see [`crate::state`]), so a reader never sees half an update and an
//! invalid inventory never replaces a valid one.
//!
//! - [`model`]: hosts, interfaces, images (Grendel's JSON model).
//! - [`load`]: reading hosts.json / images.json / TOML inventory files.
//! - [`validate`]: whole-inventory checks returning every problem.
//! - [`store`]: the persistent store under the state dir.
//!
//! At start ([`startup`]) the store's contents are loaded and the inventory files named by
//! the config or flags are imported over them: an entry of a file replaces the stored entry
//! of the same name unless the file holds it exactly as when it was last applied (the
//! store remembers that, [`FileEntries`]: a restart must not undo `complete` or an API
//! edit of an entry the file did not change), entries only in the store (added through
//! the API) stay. The merged
//! inventory is validated, written back to the store, and served. API changes go to the
//! store, so they survive a restart unless a file names the same entry again.
use std::collections::HashMap;
use std::path::Path;

pub mod load;
pub mod model;
pub mod store;
pub mod validate;

#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod tests;

pub use load::{Kind, LoadError, Loaded};
pub use model::{BlobRef, Host, Image, Interface, Mac};
pub use store::{
    AccountTable, Backend, Change, CommitError, Committed, FileEntries, Store, StoreError,
};
pub use validate::{ValidationError, ValidationErrors};

use crate::tftp::root::Roots;

/// Anything that keeps an inventory from loading.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("invalid inventory ({origin}): {errors}")]
    Invalid {
        origin: String,
        errors: ValidationErrors,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A validated set of hosts and images with lookup indexes.
///
/// The hosts and every index over them are persistent maps (`imbl`): a clone shares
/// them, and [`Inventory::apply`] builds the next inventory from a [`Change`] in time
/// proportional to the change, not to the inventory (an API edit at 100,000 hosts
/// copies a few tree nodes, not 100,000 hosts).
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// Inventory order: a host keeps its key when it is replaced, a new one goes last.
    hosts: imbl::OrdMap<u64, Host>,
    next_key: u64,
    images: Vec<Image>,
    /// MAC -> (host key, interface index); indexes past the host's interfaces are its
    /// bonds (`bond_nics`).
    by_mac: imbl::HashMap<Mac, (u64, usize)>,
    /// Per host with bonds, its bonds read as interfaces.
    bond_nics: imbl::HashMap<u64, Vec<Interface>>,
    by_name: imbl::HashMap<String, u64>,
    /// The uniqueness indexes validation keeps for changes: lower-cased names, IPv4 and
    /// IPv6 addresses, each -> host key.
    folded: imbl::HashMap<String, u64>,
    ips: imbl::HashMap<std::net::Ipv4Addr, u64>,
    ips6: imbl::HashMap<std::net::Ipv6Addr, u64>,
    image_by_name: HashMap<String, usize>,
    /// `provision.default_image`: the image of provisioned hosts that name none.
    default_image: Option<String>,
}

/// The hosts of an inventory, in inventory order (a view: iterating costs nothing up
/// front).
#[derive(Clone, Copy)]
pub struct Hosts<'a>(&'a imbl::OrdMap<u64, Host>);

impl<'a> Hosts<'a> {
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &'a Host> + ExactSizeIterator + 'a {
        self.0.values()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn to_vec(&self) -> Vec<Host> {
        self.iter().cloned().collect()
    }
}

impl<'a> IntoIterator for Hosts<'a> {
    type Item = &'a Host;
    type IntoIter = imbl::ordmap::Values<'a, u64, Host, imbl::shared_ptr::DefaultSharedPtr>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.values()
    }
}

/// What the DHCP and HTTP services need about the machine behind one MAC.
#[derive(Clone, Copy, Debug)]
pub struct Lookup<'a> {
    pub host: &'a Host,
    pub nic: &'a Interface,
    /// True when `nic` is one of the host's bonds (it gets a lease, nothing to boot).
    pub bond: bool,
    /// None when the host names no image, or an image that does not exist (validation
    /// rejects the latter for provisioned hosts).
    pub image: Option<&'a Image>,
}

impl Inventory {
    /// Builds the indexes. Does not validate: callers use the validating constructor
    /// of the `validate` module for anything that came from outside.
    pub fn from_parts_unchecked(hosts: Vec<Host>, images: Vec<Image>) -> Inventory {
        let mut inv = Inventory {
            images,
            ..Inventory::default()
        };
        inv.index_images();
        for h in hosts {
            let key = inv.next_key;
            inv.next_key += 1;
            inv.insert_host(key, h);
        }
        inv
    }

    fn index_images(&mut self) {
        self.image_by_name = self
            .images
            .iter()
            .enumerate()
            .map(|(i, im)| (im.name.clone(), i))
            .collect();
    }

    /// Puts `h` under `key` (whose previous host, if any, must have been unindexed) and
    /// indexes it. With two entries of one name (an unchecked inventory), the later one
    /// is found by name.
    fn insert_host(&mut self, key: u64, h: Host) {
        self.by_name.insert(h.name.clone(), key);
        self.folded
            .entry(h.name.to_ascii_lowercase())
            .or_insert(key);
        for (ii, nic) in h.interfaces.iter().enumerate() {
            // BMC NICs too: DHCP gives them a lease (Grendel answers any NIC of its
            // database); what else a MAC gets is up to the service (a BMC boots nothing).
            if let Some(mac) = nic.mac {
                self.by_mac.insert(mac, (key, ii));
            }
            if let Some(net) = nic.ipv6() {
                self.ips6.entry(net.addr()).or_insert(key);
            } else if let Some(a) = nic.addr() {
                self.ips.entry(a).or_insert(key);
            }
        }
        // Bonds after the interfaces: a bond that takes a member's MAC (Linux's default)
        // leaves that MAC to the member's interface.
        let bonds = h.bond_interfaces().unwrap_or_default();
        let base = h.interfaces.len();
        for (bi, nic) in bonds.iter().enumerate() {
            if let Some(mac) = nic.mac {
                let own = h.interfaces.iter().any(|i| i.mac == Some(mac));
                if !own {
                    self.by_mac.entry(mac).or_insert((key, base + bi));
                }
            }
        }
        if !bonds.is_empty() {
            self.bond_nics.insert(key, bonds);
        }
        self.hosts.insert(key, h);
    }

    /// Removes the host under `key` and every index entry naming it.
    fn remove_host(&mut self, key: u64) -> Option<Host> {
        let h = self.hosts.remove(&key)?;
        if self.by_name.get(&h.name) == Some(&key) {
            self.by_name.remove(&h.name);
        }
        let lower = h.name.to_ascii_lowercase();
        if self.folded.get(&lower) == Some(&key) {
            self.folded.remove(&lower);
        }
        let bonds = self.bond_nics.remove(&key).unwrap_or_default();
        for nic in h.interfaces.iter().chain(bonds.iter()) {
            if let Some(mac) = nic.mac {
                if self.by_mac.get(&mac).is_some_and(|(k, _)| *k == key) {
                    self.by_mac.remove(&mac);
                }
            }
            if let Some(net) = nic.ipv6() {
                if self.ips6.get(&net.addr()) == Some(&key) {
                    self.ips6.remove(&net.addr());
                }
            } else if let Some(a) = nic.addr() {
                if self.ips.get(&a) == Some(&key) {
                    self.ips.remove(&a);
                }
            }
        }
        Some(h)
    }

    /// Sets `provision.default_image` (empty = none): the image a host without
    /// `boot_image` boots. The hosts keep their empty `boot_image` (in the store and the
    /// API too), so a changed default applies to them at the next start.
    pub fn with_default_image(mut self, default: Option<&str>) -> Inventory {
        self.default_image = default.filter(|d| !d.is_empty()).map(String::from);
        self
    }

    /// The name of the image `host` boots: its `boot_image`, else the default image.
    pub fn boot_image_name<'a>(&'a self, host: &'a Host) -> &'a str {
        match (&host.boot_image, &self.default_image) {
            (b, Some(d)) if b.is_empty() => d,
            (b, _) => b,
        }
    }

    /// The image `host` boots ([`Inventory::boot_image_name`]), if it exists.
    pub fn boot_image_of(&self, host: &Host) -> Option<&Image> {
        self.image(self.boot_image_name(host))
    }

    /// The validating constructor: every problem is reported, naming its entry. Host
    /// addresses are checked against this machine's own ([`server_addresses`]), image
    /// files against `image_roots`.
    pub fn new(
        hosts: Vec<Host>,
        images: Vec<Image>,
        image_roots: &Roots,
    ) -> Result<Inventory, ValidationErrors> {
        Inventory::new_with_default(hosts, images, image_roots, None)
    }

    /// [`Inventory::new`] with `provision.default_image` (see
    /// [`Inventory::with_default_image`]): provisioned hosts without `boot_image` are
    /// valid when it names an image.
    pub fn new_with_default(
        hosts: Vec<Host>,
        images: Vec<Image>,
        image_roots: &Roots,
        default_image: Option<&str>,
    ) -> Result<Inventory, ValidationErrors> {
        validate::validate_with_default(
            &hosts,
            &images,
            &server_addresses(),
            image_roots,
            default_image,
        )?;
        Ok(Inventory::from_parts_unchecked(hosts, images).with_default_image(default_image))
    }

    pub fn hosts(&self) -> Hosts<'_> {
        Hosts(&self.hosts)
    }
    /// The hosts that differ between `self` and `newer`, in inventory order, as (before,
    /// after): (Some, Some) changed, (None, Some) added, (Some, None) removed. Parts of the
    /// two maps that are shared (an inventory made from the other by a change) are
    /// skipped without being visited, so the cost is about the change's, not the
    /// inventory's.
    pub fn changed_hosts<'a>(
        &'a self,
        newer: &'a Inventory,
    ) -> impl Iterator<Item = (Option<&'a Host>, Option<&'a Host>)> + 'a {
        use imbl::ordmap::DiffItem;
        self.hosts.diff(&newer.hosts).map(|d| match d {
            DiffItem::Add(_, h) => (None, Some(h)),
            DiffItem::Update { old, new } => (Some(old.1), Some(new.1)),
            DiffItem::Remove(_, h) => (Some(h), None),
        })
    }
    pub fn images(&self) -> &[Image] {
        &self.images
    }
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.by_name.get(name).and_then(|k| self.hosts.get(k))
    }
    pub fn image(&self, name: &str) -> Option<&Image> {
        self.image_by_name.get(name).map(|&i| &self.images[i])
    }
    pub fn lookup_mac(&self, mac: Mac) -> Option<Lookup<'_>> {
        let &(key, ii) = self.by_mac.get(&mac)?;
        let host = self.hosts.get(&key)?;
        let (nic, bond) = match host.interfaces.get(ii) {
            Some(nic) => (nic, false),
            None => (
                self.bond_nics.get(&key)?.get(ii - host.interfaces.len())?,
                true,
            ),
        };
        Some(Lookup {
            host,
            nic,
            bond,
            image: self.boot_image_of(host),
        })
    }
    /// Every MAC DHCP answers (interfaces, BMC ones included, and bonds), with its host.
    pub fn lease_macs(&self) -> impl Iterator<Item = (&Host, Mac)> + '_ {
        let mut all: Vec<_> = self.by_mac.iter().map(|(m, &at)| (at, *m)).collect();
        all.sort_unstable(); // the inventory's order, whatever the map's
        all.into_iter()
            .filter_map(|((key, _), mac)| Some((self.hosts.get(&key)?, mac)))
    }
    /// The MACs DHCP answers for the host named `name` ([`Inventory::lease_macs`] of that
    /// host only): none when there is no such host.
    pub fn host_lease_macs(&self, name: &str) -> Vec<Mac> {
        let Some(&key) = self.by_name.get(name) else {
            return Vec::new();
        };
        let Some(h) = self.hosts.get(&key) else {
            return Vec::new();
        };
        let bonds = self.bond_nics.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let mut out: Vec<Mac> = Vec::new();
        for mac in h.interfaces.iter().chain(bonds).filter_map(|n| n.mac) {
            if self.by_mac.get(&mac).is_some_and(|(k, _)| *k == key) && !out.contains(&mac) {
                out.push(mac);
            }
        }
        out
    }
    pub fn into_parts(self) -> (Vec<Host>, Vec<Image>) {
        (self.hosts.values().cloned().collect(), self.images)
    }

    /// The inventory `change` makes of this one, validated incrementally: the changed
    /// entries are checked on their own and against the uniqueness indexes (names
    /// without regard to case, MACs, addresses), so the cost is the change's, not the
    /// inventory's (only deleting or renaming an image looks at every host). This
    /// inventory must be valid (every inventory served is); the result is then exactly
    /// as valid as [`Inventory::new_with_default`] would find it, with every problem of
    /// the change reported, each naming its entry. Upserts replace the entry of the same
    /// name in place, new entries go last; a name in both `put_*` and `delete_*` is put.
    pub fn apply(
        &self,
        change: &Change,
        image_roots: &Roots,
        default_image: Option<&str>,
    ) -> Result<Inventory, ValidationErrors> {
        self.apply_for(change, &server_addresses(), image_roots, default_image)
    }

    /// [`Inventory::apply`] with the server's addresses given.
    pub fn apply_for(
        &self,
        change: &Change,
        server: &[std::net::Ipv4Addr],
        image_roots: &Roots,
        default_image: Option<&str>,
    ) -> Result<Inventory, ValidationErrors> {
        let default_image = default_image.filter(|d| !d.is_empty());
        let mut inv = self.clone();
        let mut errs = Vec::new();
        // Images: few; rebuilt whole.
        let images_changed = !change.put_images.is_empty() || !change.delete_images.is_empty();
        if images_changed {
            let put: HashMap<&str, &Image> = change
                .put_images
                .iter()
                .map(|i| (i.name.as_str(), i))
                .collect();
            inv.images.retain(|i| {
                put.contains_key(i.name.as_str()) || !change.delete_images.contains(&i.name)
            });
            let mut done = std::collections::HashSet::new();
            for im in inv.images.iter_mut() {
                if let Some(new) = put.get(im.name.as_str()) {
                    *im = (*new).clone();
                    done.insert(im.name.clone());
                }
            }
            for im in &change.put_images {
                if done.insert(im.name.clone()) {
                    inv.images.push(put[im.name.as_str()].clone());
                }
            }
            inv.index_images();
            let last: Vec<Image> = put.values().map(|i| (*i).clone()).collect();
            validate::check_images_in(&last, &inv.images, image_roots, &mut errs);
            errs.extend(validate::check_templates(&last, image_roots.templates()));
        }
        // Hosts: unindex what goes or is replaced, then check and index the new entries
        // one by one (a conflict among them is found like one with a standing host).
        let mut put: Vec<&Host> = Vec::new();
        let mut at: HashMap<&str, usize> = HashMap::new();
        for h in &change.put_hosts {
            match at.get(h.name.as_str()) {
                Some(&i) => put[i] = h,
                None => {
                    at.insert(&h.name, put.len());
                    put.push(h);
                }
            }
        }
        for name in &change.delete_hosts {
            if at.contains_key(name.as_str()) {
                continue;
            }
            if let Some(key) = inv.by_name.get(name).copied() {
                inv.remove_host(key);
            }
        }
        let mut keys = Vec::with_capacity(put.len());
        for h in &put {
            let key = match inv.by_name.get(&h.name).copied() {
                Some(key) => {
                    inv.remove_host(key);
                    key
                }
                None => {
                    inv.next_key += 1;
                    inv.next_key - 1
                }
            };
            keys.push(key);
        }
        let mut relying = Vec::new();
        for (h, key) in put.iter().zip(keys) {
            validate::check_host(
                || inv.hosts.range(..key).count(),
                h,
                &inv.image_by_name,
                server,
                &mut IndexClaims(&inv),
                &mut errs,
            );
            if h.provision && h.boot_image.is_empty() {
                relying.push(h.name.clone());
            }
            inv.insert_host(key, (*h).clone());
        }
        // A deleted or renamed image (or a default that is no image any more) leaves
        // the provisioned hosts that boot it without one: the one check that reads every
        // host, and only when images went away.
        let gone_images: Vec<&String> = change
            .delete_images
            .iter()
            .filter(|n| inv.image(n).is_none())
            .collect();
        if !gone_images.is_empty() {
            let changed: std::collections::HashSet<&str> =
                put.iter().map(|h| h.name.as_str()).collect();
            for h in inv.hosts.values() {
                if !h.provision || changed.contains(h.name.as_str()) {
                    continue;
                }
                if h.boot_image.is_empty() {
                    if default_image.is_some_and(|d| gone_images.iter().any(|g| *g == d)) {
                        relying.push(h.name.clone());
                    }
                } else if gone_images.contains(&&h.boot_image) {
                    errs.push(ValidationError::UnknownImage {
                        host: h.name.clone(),
                        image: h.boot_image.clone(),
                    });
                }
            }
        }
        if let Some(d) = default_image {
            // As the whole check: the default stands in for a missing boot_image, and a
            // default that is no image is one error naming the key and its users.
            errs.retain(|e| !matches!(e, ValidationError::NoBootImage { .. }));
            if inv.image(d).is_none() && !relying.is_empty() {
                let names: Vec<&str> = relying.iter().map(String::as_str).collect();
                errs.push(ValidationError::UnknownDefaultImage {
                    image: d.to_string(),
                    hosts: crate::nodeset::fold(&names),
                });
            }
        }
        if !errs.is_empty() {
            return Err(ValidationErrors(errs));
        }
        Ok(inv.with_default_image(default_image))
    }
}

impl Change {
    /// This change without what would change nothing in `inv`: upserts of entries equal
    /// to the ones there, deletions of entries it does not have (or that the change also
    /// puts); upserts of one name keep the last.
    pub fn effective(self, inv: &Inventory) -> Change {
        fn last_by_name<T>(items: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
            let mut at: HashMap<String, usize> = HashMap::new();
            let mut out: Vec<Option<T>> = Vec::with_capacity(items.len());
            for t in items {
                match at.get(name(&t)) {
                    Some(&i) => out[i] = Some(t),
                    None => {
                        at.insert(name(&t).to_string(), out.len());
                        out.push(Some(t));
                    }
                }
            }
            out.into_iter().flatten().collect()
        }
        let put_hosts: Vec<Host> = last_by_name(self.put_hosts, |h| &h.name)
            .into_iter()
            .filter(|h| inv.host(&h.name) != Some(h))
            .collect();
        let put_images: Vec<Image> = last_by_name(self.put_images, |i| &i.name)
            .into_iter()
            .filter(|i| inv.image(&i.name) != Some(i))
            .collect();
        let put: std::collections::HashSet<&str> =
            put_hosts.iter().map(|h| h.name.as_str()).collect();
        let mut delete_hosts = self.delete_hosts;
        delete_hosts.sort_unstable();
        delete_hosts.dedup();
        delete_hosts.retain(|n| inv.host(n).is_some() && !put.contains(n.as_str()));
        let mut delete_images = self.delete_images;
        delete_images.sort_unstable();
        delete_images.dedup();
        delete_images
            .retain(|n| inv.image(n).is_some() && !put_images.iter().any(|i| &i.name == n));
        Change {
            put_hosts,
            delete_hosts,
            put_images,
            delete_images,
        }
    }
}

/// What a running inventory's indexes say others hold, for checking a change (the hosts
/// of the change are indexed after their own check, so they meet each other too).
struct IndexClaims<'a>(&'a Inventory);

impl IndexClaims<'_> {
    fn name_of(&self, key: u64, host: &str) -> Option<String> {
        let other = &self.0.hosts.get(&key)?.name;
        (other != host).then(|| other.clone())
    }
}

impl validate::Claims for IndexClaims<'_> {
    fn name(&mut self, folded: &str, host: &str) -> Option<String> {
        self.name_of(*self.0.folded.get(folded)?, host)
    }
    fn mac(&mut self, mac: Mac, host: &str) -> Option<String> {
        self.name_of(self.0.by_mac.get(&mac)?.0, host)
    }
    fn ip(&mut self, ip: std::net::Ipv4Addr, _host: &str) -> Option<String> {
        let k = *self.0.ips.get(&ip)?;
        self.0.hosts.get(&k).map(|h| h.name.clone())
    }
    fn ip6(&mut self, ip: std::net::Ipv6Addr, _host: &str) -> Option<String> {
        let k = *self.0.ips6.get(&ip)?;
        self.0.hosts.get(&k).map(|h| h.name.clone())
    }
}

/// This machine's IPv4 addresses (every interface), which no host may be given; none if
/// they cannot be read. Unit tests see none, so that their results do not depend on the
/// machine running them (the check itself is tested through [`validate::validate_for`]).
pub fn server_addresses() -> Vec<std::net::Ipv4Addr> {
    if cfg!(test) {
        return Vec::new();
    }
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| Some(ifa.address?.as_sockaddr_in()?.ip()))
        .collect()
}

/// Replaces entries of `base` by those of `over` with the same name and appends the others.
/// Returns the entries that were replaced by a different version.
pub fn merge(base: &mut Vec<Host>, base_images: &mut Vec<Image>, over: Loaded) -> Vec<String> {
    let mut replaced = merge_by(base, over.hosts, |h| &h.name);
    replaced.iter_mut().for_each(|n| *n = format!("host {n}"));
    let images = merge_by(base_images, over.images, |i| &i.name);
    replaced.extend(images.into_iter().map(|n| format!("image {n}")));
    replaced
}

/// Upserts `over` into `base` by name (indexed: imports of thousands of entries stay
/// linear); returns the names whose entry changed.
fn merge_by<T: PartialEq>(
    base: &mut Vec<T>,
    over: Vec<T>,
    name: impl Fn(&T) -> &String,
) -> Vec<String> {
    let mut index: HashMap<String, usize> = base
        .iter()
        .enumerate()
        .map(|(i, t)| (name(t).clone(), i))
        .collect();
    let mut replaced = Vec::new();
    for t in over {
        match index.get(name(&t)) {
            Some(&i) => {
                if base[i] != t {
                    replaced.push(name(&t).clone());
                }
                base[i] = t;
            }
            None => {
                index.insert(name(&t).clone(), base.len());
                base.push(t);
            }
        }
    }
    replaced
}

/// The inventory a server starts with, and what to tell the operator about it.
#[derive(Debug)]
pub struct Startup {
    pub inventory: Inventory,
    /// Unknown keys in the files, entries of the files that replaced stored ones.
    pub warnings: Vec<String>,
    /// What the files hold (to remember as [`FileEntries`]).
    pub file_hosts: Vec<Host>,
    pub file_images: Vec<Image>,
}

/// Reads the inventory files given (hosts, then images), merges them over the store's
/// contents (files win by name), validates the result and, if valid, writes it back to the
/// store in one transaction. With no store, the files alone make the inventory. Image
/// files must be inside `image_roots`.
pub fn startup(
    store: Option<&Store>,
    hosts_file: Option<&Path>,
    images_file: Option<&Path>,
    image_roots: &Roots,
    default_image: Option<&str>,
) -> Result<Startup, InventoryError> {
    let (old_hosts, old_images) = match store {
        Some(s) => s.load()?,
        None => (Vec::new(), Vec::new()),
    };
    let remembered = match store {
        Some(s) => s.file_entries()?,
        None => FileEntries::default(),
    };
    let label = store.map(|s| s.path().display().to_string());
    let s = plan(
        (old_hosts.clone(), old_images.clone()),
        label.as_deref(),
        hosts_file,
        images_file,
        image_roots,
        &remembered,
        default_image,
    )?;
    if let Some(store) = store {
        store.apply(&Change::diff(
            &old_hosts,
            &old_images,
            &s.inventory.hosts().to_vec(),
            s.inventory.images(),
        ))?;
        store.set_file_entries(&s.file_hosts, &s.file_images)?;
    }
    Ok(s)
}

/// The inventory [`startup`] would serve, without writing anything: `stored` is the store's
/// contents (`store_label` names it in messages; None: no store).
pub fn plan(
    stored: (Vec<Host>, Vec<Image>),
    store_label: Option<&str>,
    hosts_file: Option<&Path>,
    images_file: Option<&Path>,
    image_roots: &Roots,
    remembered: &FileEntries,
    default_image: Option<&str>,
) -> Result<Startup, InventoryError> {
    let (mut hosts, mut images) = stored;
    let stored_hosts: std::collections::HashSet<String> =
        hosts.iter().map(|h| h.name.clone()).collect();
    let stored_images: std::collections::HashSet<String> =
        images.iter().map(|i| i.name.clone()).collect();
    let (mut file_hosts, mut file_images) = (Vec::new(), Vec::new());
    let mut warnings = Vec::new();
    let mut unreadable = Vec::new();
    let mut unreadable_images = Vec::new();
    let mut origin: Vec<String> = store_label.map(str::to_string).into_iter().collect();
    for (file, kind) in [(hosts_file, Kind::Hosts), (images_file, Kind::Images)] {
        let Some(file) = file else { continue };
        let mut loaded = load::read_file(file, kind)?;
        file_hosts.extend(loaded.hosts.iter().cloned());
        file_images.extend(loaded.images.iter().cloned());
        // An entry the file holds as it did when last applied keeps its stored state
        // (`provision` cleared by `complete`, API edits): only a changed entry wins.
        loaded.hosts.retain(|h| {
            !(stored_hosts.contains(&h.name) && remembered.hosts.get(&h.name) == Some(h))
        });
        loaded.images.retain(|i| {
            !(stored_images.contains(&i.name) && remembered.images.get(&i.name) == Some(i))
        });
        warnings.append(&mut loaded.warnings);
        unreadable.append(&mut loaded.errors);
        unreadable_images.append(&mut loaded.unreadable_images);
        for r in merge(&mut hosts, &mut images, loaded) {
            warnings.push(format!(
                "{r}: the entry from {} replaces the stored one",
                file.display()
            ));
        }
        origin.push(file.display().to_string());
    }
    let origin = if origin.is_empty() {
        "empty".to_string()
    } else {
        origin.join(" + ")
    };
    // Unreadable entries first, then what the readable ones get wrong as a whole (a host
    // naming an unreadable image is not reported again).
    let mut errors = unreadable;
    if let Err(e) = validate::validate_with_default(
        &hosts,
        &images,
        &server_addresses(),
        image_roots,
        default_image,
    ) {
        errors.extend(e.0.into_iter().filter(|e| {
            !matches!(e, ValidationError::UnknownImage { image, .. } if unreadable_images.contains(image))
        }));
    }
    if !errors.is_empty() {
        return Err(InventoryError::Invalid {
            origin,
            errors: ValidationErrors(errors),
        });
    }
    Ok(Startup {
        inventory: Inventory::from_parts_unchecked(hosts, images).with_default_image(default_image),
        warnings,
        file_hosts,
        file_images,
    })
}
