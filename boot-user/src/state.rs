//! The running state shared by every service: config, inventory, event log.
//!
//! The inventory is an `Arc<Inventory>` behind a lock held only to clone or replace the
//! `Arc`: services take a snapshot per request and never block a writer; a writer
//! swaps in a whole, validated inventory, and `changes` tells subscribers (the XDP map
//! loader, for one) that a new one is in place.
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::config::Config;
use crate::events::EventLog;
use crate::inventory::Inventory;

pub struct Shared {
    pub config: Arc<Config>,
    inventory: RwLock<Arc<Inventory>>,
    /// Bumped on every swap; subscribers re-read `inventory()`.
    generation: watch::Sender<u64>,
    pub events: EventLog,
}

impl Shared {
    pub fn new(config: Config, inventory: Inventory, events: EventLog) -> Arc<Shared> {
        let inventory = inventory.with_default_image(config.provision.default_image.as_deref());
        Arc::new(Shared {
            config: Arc::new(config),
            inventory: RwLock::new(Arc::new(inventory)),
            generation: watch::Sender::new(0),
            events,
        })
    }

    /// A consistent snapshot of the inventory.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory.read().unwrap().clone()
    }

    /// Replaces the inventory (already validated by the caller) and notifies subscribers.
    pub fn replace_inventory(&self, inv: Inventory) {
        let inv = inv.with_default_image(self.config.provision.default_image.as_deref());
        *self.inventory.write().unwrap() = Arc::new(inv);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
