//! The inventory: hosts and boot images (model, loading, validation, persistent store).
//!
//! An [`Inventory`] is immutable once built: a change builds a new one, validates it, and
//! swaps it in whole (see [`crate::state`]), so a reader never sees half an update and an
//! invalid inventory never replaces a valid one.
use std::collections::HashMap;

pub mod model;

pub use model::{Host, Image, Interface, Mac};

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
        let image_by_name = images.iter().enumerate().map(|(i, im)| (im.name.clone(), i)).collect();
        Inventory { hosts, images, by_mac, by_name, image_by_name }
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
        Some(Lookup { host, nic: &host.interfaces[ii], image: self.image(&host.boot_image) })
    }
    pub fn into_parts(self) -> (Vec<Host>, Vec<Image>) {
        (self.hosts, self.images)
    }
}
