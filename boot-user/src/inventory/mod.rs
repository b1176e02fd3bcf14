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
mod tests;

pub use load::{Kind, LoadError, Loaded};
pub use model::{Host, Image, Interface, Mac};
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
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    hosts: Vec<Host>,
    images: Vec<Image>,
    /// MAC -> (host index, interface index); indexes past the host's interfaces are
    /// its bonds (`bond_nics`).
    by_mac: HashMap<Mac, (usize, usize)>,
    /// Per host, its bonds read as interfaces.
    bond_nics: Vec<Vec<Interface>>,
    by_name: HashMap<String, usize>,
    image_by_name: HashMap<String, usize>,
    /// `provision.default_image`: the image of provisioned hosts that name none.
    default_image: Option<String>,
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
        let mut by_mac = HashMap::new();
        let mut by_name = HashMap::new();
        for (hi, h) in hosts.iter().enumerate() {
            by_name.insert(h.name.clone(), hi);
            for (ii, nic) in h.interfaces.iter().enumerate() {
                // BMC NICs too: DHCP gives them a lease (Grendel answers any NIC of its
                // database); what else a MAC gets is up to the service (a BMC boots nothing).
                if let Some(mac) = nic.mac {
                    by_mac.insert(mac, (hi, ii));
                }
            }
        }
        // Bonds after the interfaces: a bond that takes a member's MAC (Linux's default)
        // leaves that MAC to the member's interface.
        let bond_nics: Vec<Vec<Interface>> = hosts
            .iter()
            .map(|h| h.bond_interfaces().unwrap_or_default())
            .collect();
        for (hi, bonds) in bond_nics.iter().enumerate() {
            let base = hosts[hi].interfaces.len();
            for (bi, nic) in bonds.iter().enumerate() {
                if let Some(mac) = nic.mac {
                    by_mac.entry(mac).or_insert((hi, base + bi));
                }
            }
        }
        let image_by_name = images
            .iter()
            .enumerate()
            .map(|(i, im)| (im.name.clone(), i))
            .collect();
        Inventory {
            hosts,
            images,
            by_mac,
            bond_nics,
            by_name,
            image_by_name,
            default_image: None,
        }
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

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
    pub fn images(&self) -> &[Image] {
        &self.images
    }
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.by_name.get(name).map(|&i| &self.hosts[i])
    }
    pub fn image(&self, name: &str) -> Option<&Image> {
        self.image_by_name.get(name).map(|&i| &self.images[i])
    }
    pub fn lookup_mac(&self, mac: Mac) -> Option<Lookup<'_>> {
        let &(hi, ii) = self.by_mac.get(&mac)?;
        let host = &self.hosts[hi];
        let (nic, bond) = match host.interfaces.get(ii) {
            Some(nic) => (nic, false),
            None => (&self.bond_nics[hi][ii - host.interfaces.len()], true),
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
        all.into_iter().map(|((hi, _), mac)| (&self.hosts[hi], mac))
    }
    pub fn into_parts(self) -> (Vec<Host>, Vec<Image>) {
        (self.hosts, self.images)
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
            s.inventory.hosts(),
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
