//! The running state shared by every service: config, inventory, event log.
//!
//! The inventory is an `Arc<Inventory>` behind a lock held only to clone or replace the
//! `Arc`: services take a snapshot per request and never block a writer; a writer
//! swaps in a whole, validated inventory, and `changes` tells subscribers (the XDP map
//! loader, for one) that a new one is in place.
//!
//! A swap made from a change ([`Shared::apply_inventory`]) also records which hosts it
//! touched, so a subscriber that follows every generation (the XDP map sync) updates
//! only those ([`Shared::changed_since`]); a whole replacement
//! ([`Shared::replace_inventory`]) or a gap in the record means "everything".
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use crate::config::Config;
use crate::events::EventLog;
use crate::inventory::{Change, Inventory};

/// Swaps remembered for [`Shared::changed_since`]: a subscriber further behind than
/// this re-reads everything.
const DELTAS_KEPT: usize = 4096;

/// What one swap changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// These hosts (by name: put or deleted); images unchanged.
    Hosts(Vec<String>),
    /// Anything: a whole replacement, or images changed.
    All,
}

impl Delta {
    /// The delta of `change`.
    pub fn of(change: &Change) -> Delta {
        Delta::of_all(std::slice::from_ref(change))
    }

    /// The delta of `changes` made one after the other.
    pub fn of_all<C: std::borrow::Borrow<Change>>(changes: &[C]) -> Delta {
        let changes = || changes.iter().map(|c| c.borrow());
        if changes().any(|c| !c.put_images.is_empty() || !c.delete_images.is_empty()) {
            return Delta::All;
        }
        let mut names: Vec<String> = changes()
            .flat_map(|c| {
                c.put_hosts
                    .iter()
                    .map(|h| h.name.clone())
                    .chain(c.delete_hosts.iter().cloned())
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        Delta::Hosts(names)
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    /// The inventory and its generation, swapped together.
    inventory: RwLock<(Arc<Inventory>, u64)>,
    /// Bumped on every swap; subscribers re-read `inventory()`.
    generation: watch::Sender<u64>,
    /// The deltas of the last swaps, by generation.
    deltas: Mutex<VecDeque<(u64, Delta)>>,
    pub events: EventLog,
}

impl Shared {
    pub fn new(config: Config, inventory: Inventory, events: EventLog) -> Arc<Shared> {
        let inventory = inventory.with_default_image(config.provision.default_image.as_deref());
        Arc::new(Shared {
            config: Arc::new(config),
            inventory: RwLock::new((Arc::new(inventory), 0)),
            generation: watch::Sender::new(0),
            deltas: Mutex::new(VecDeque::new()),
            events,
        })
    }

    /// A consistent snapshot of the inventory.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory.read().unwrap().0.clone()
    }

    /// The inventory with its generation (0 at start, one more per swap).
    pub fn inventory_at(&self) -> (Arc<Inventory>, u64) {
        let g = self.inventory.read().unwrap();
        (g.0.clone(), g.1)
    }

    /// Replaces the inventory (already validated by the caller) and notifies subscribers.
    pub fn replace_inventory(&self, inv: Inventory) {
        self.swap(inv, Delta::All);
    }

    /// Swaps in `inv`, made from the current inventory by `change` (validated by
    /// [`Inventory::apply`]), and records what changed for [`Shared::changed_since`].
    pub fn apply_inventory(&self, inv: Inventory, change: &Change) {
        self.swap(inv, Delta::of(change));
    }

    /// [`Shared::apply_inventory`] of `changes` made in order: one swap.
    pub fn apply_changes(&self, inv: Inventory, changes: &[Arc<Change>]) {
        self.swap(inv, Delta::of_all(changes));
    }

    fn swap(&self, inv: Inventory, delta: Delta) {
        let inv = inv.with_default_image(self.config.provision.default_image.as_deref());
        let old = {
            let mut g = self.inventory.write().unwrap();
            let generation = g.1 + 1;
            let mut d = self.deltas.lock().unwrap();
            if d.len() == DELTAS_KEPT {
                d.pop_front();
            }
            d.push_back((generation, delta));
            drop(d);
            std::mem::replace(&mut *g, (Arc::new(inv), generation))
        };
        self.generation.send_modify(|g| *g += 1);
        // The old inventory is dropped here, outside the lock (its last reference may
        // be this one: freeing 100,000 hosts is no work for the lock's holders).
        drop(old);
    }

    /// The hosts changed by the swaps after generation `since` up to `to` (sorted), or
    /// None when one of them replaced everything or is no longer remembered.
    pub fn changed_since(&self, since: u64, to: u64) -> Option<Vec<String>> {
        let d = self.deltas.lock().unwrap();
        let first = d.front()?.0;
        if since + 1 < first {
            return None;
        }
        let mut names = BTreeSet::new();
        for (g, delta) in d.iter().filter(|(g, _)| *g > since && *g <= to) {
            let _ = g;
            match delta {
                Delta::All => return None,
                Delta::Hosts(n) => names.extend(n.iter().cloned()),
            }
        }
        Some(names.into_iter().collect())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Host, Mac};

    fn shared() -> Arc<Shared> {
        Shared::new(Config::default(), Inventory::default(), EventLog::default())
    }

    #[test]
    fn changes_are_remembered_per_generation_and_a_replacement_means_everything() {
        let s = shared();
        let put = |name: &str, n: u8| Change {
            put_hosts: vec![Host::with_interface(name, Mac([2, 0, 0, 0, 0, n]), None)],
            ..Default::default()
        };
        assert_eq!(s.changed_since(0, 0), None); // nothing recorded: unknown
        let inv = s.inventory();
        s.apply_inventory((*inv).clone(), &put("cn2", 2));
        s.apply_inventory((*inv).clone(), &put("cn1", 1));
        assert_eq!(s.inventory_at().1, 2);
        assert_eq!(
            s.changed_since(0, 2),
            Some(vec!["cn1".to_string(), "cn2".to_string()])
        );
        assert_eq!(s.changed_since(1, 2), Some(vec!["cn1".to_string()]));
        assert_eq!(s.changed_since(2, 2), Some(vec![]));
        s.replace_inventory((*inv).clone());
        assert_eq!(s.changed_since(1, 3), None);
        assert_eq!(s.changed_since(3, 3), Some(vec![]));
        let images = Change {
            put_images: vec![Default::default()],
            ..Default::default()
        };
        s.apply_inventory((*inv).clone(), &images);
        assert_eq!(s.changed_since(3, 4), None);
    }
}
