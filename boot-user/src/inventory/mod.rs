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
//! of the same name, entries only in the store (added through the API) stay. The merged
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
pub use store::{Change, Store, StoreError};
pub use validate::{ValidationError, ValidationErrors};

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
    /// Boot-interface MAC -> (host index, interface index).
    by_mac: HashMap<Mac, (usize, usize)>,
    by_name: HashMap<String, usize>,
    image_by_name: HashMap<String, usize>,
}

/// What the DHCP and HTTP services need about the machine behind one MAC.
#[derive(Clone, Copy, Debug)]
pub struct Lookup<'a> {
    pub host: &'a Host,
    pub nic: &'a Interface,
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
                if let (false, Some(mac)) = (nic.bmc, nic.mac) {
                    by_mac.insert(mac, (hi, ii));
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
            by_name,
            image_by_name,
        }
    }

    /// The validating constructor: every problem is reported, naming its entry.
    pub fn new(hosts: Vec<Host>, images: Vec<Image>) -> Result<Inventory, ValidationErrors> {
        validate::validate(&hosts, &images)?;
        Ok(Inventory::from_parts_unchecked(hosts, images))
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
        Some(Lookup {
            host,
            nic: &host.interfaces[ii],
            image: self.image(&host.boot_image),
        })
    }
    pub fn into_parts(self) -> (Vec<Host>, Vec<Image>) {
        (self.hosts, self.images)
    }
}

/// Replaces entries of `base` by those of `over` with the same name and appends the others.
/// Returns the entries that were replaced by a different version.
pub fn merge(base: &mut Vec<Host>, base_images: &mut Vec<Image>, over: Loaded) -> Vec<String> {
    let mut replaced = Vec::new();
    for h in over.hosts {
        match base.iter_mut().find(|b| b.name == h.name) {
            Some(slot) => {
                if *slot != h {
                    replaced.push(format!("host {}", h.name));
                }
                *slot = h;
            }
            None => base.push(h),
        }
    }
    for i in over.images {
        match base_images.iter_mut().find(|b| b.name == i.name) {
            Some(slot) => {
                if *slot != i {
                    replaced.push(format!("image {}", i.name));
                }
                *slot = i;
            }
            None => base_images.push(i),
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
}

/// Reads the inventory files given (hosts, then images), merges them over the store's
/// contents (files win by name), validates the result and, if valid, writes it back to the
/// store in one transaction. With no store, the files alone make the inventory.
pub fn startup(
    store: Option<&Store>,
    hosts_file: Option<&Path>,
    images_file: Option<&Path>,
) -> Result<Startup, InventoryError> {
    let (old_hosts, old_images) = match store {
        Some(s) => s.load()?,
        None => (Vec::new(), Vec::new()),
    };
    let label = store.map(|s| s.path().display().to_string());
    let s = plan(
        (old_hosts.clone(), old_images.clone()),
        label.as_deref(),
        hosts_file,
        images_file,
    )?;
    if let Some(store) = store {
        store.apply(&Change::diff(
            &old_hosts,
            &old_images,
            s.inventory.hosts(),
            s.inventory.images(),
        ))?;
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
) -> Result<Startup, InventoryError> {
    let (mut hosts, mut images) = stored;
    let mut warnings = Vec::new();
    let mut origin: Vec<String> = store_label.map(str::to_string).into_iter().collect();
    for (file, kind) in [(hosts_file, Kind::Hosts), (images_file, Kind::Images)] {
        let Some(file) = file else { continue };
        let loaded = load::load_file(file, kind)?;
        warnings.extend(loaded.warnings.iter().cloned());
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
    validate::validate(&hosts, &images)
        .map_err(|errors| InventoryError::Invalid { origin, errors })?;
    Ok(Startup {
        inventory: Inventory::from_parts_unchecked(hosts, images),
        warnings,
    })
}
