//! Pure: the inventory as etcd holds it, kept up to date from listed and watched keys,
//! and the part of it this server serves ([`Scope`]: the hosts of its segments).
use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use super::plan::{Keys, Kind};
use crate::config::cluster::Segment;
use crate::inventory::{Change, Host, Image, Inventory};

/// The hosts and images under the prefix at `revision`.
#[derive(Clone, Debug, Default)]
pub struct Mirror {
    pub hosts: BTreeMap<String, Host>,
    pub images: BTreeMap<String, Image>,
    /// The etcd revision this is the state at (0: nothing read yet).
    pub revision: u64,
    /// Keys whose value does not decode, with why: left out of the inventory.
    pub unreadable: BTreeMap<String, String>,
}

/// One key's change, as listed or watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub key: String,
    /// None: deleted.
    pub value: Option<Vec<u8>>,
}

impl Mirror {
    /// From a snapshot (the local store's) at `revision`.
    pub fn from_parts(hosts: Vec<Host>, images: Vec<Image>, revision: u64) -> Mirror {
        Mirror {
            hosts: hosts.into_iter().map(|h| (h.name.clone(), h)).collect(),
            images: images.into_iter().map(|i| (i.name.clone(), i)).collect(),
            revision,
            unreadable: BTreeMap::new(),
        }
    }

    /// Applies one event; true if it changed a host or an image. A value that does
    /// not decode, or whose name is not its key's, removes the entry and is recorded in
    /// `unreadable` (logged by the caller): the rest of the inventory is served on.
    pub fn apply(&mut self, keys: &Keys, ev: &Event) -> bool {
        match keys.kind(&ev.key) {
            Kind::Host(name) => {
                self.unreadable.remove(&ev.key);
                let decoded = ev
                    .value
                    .as_deref()
                    .map(|v| decode::<Host>(v, name, |h| &h.name));
                match decoded {
                    None => self.hosts.remove(name).is_some(),
                    Some(Ok(h)) => {
                        self.hosts.insert(name.to_string(), h).as_ref() != self.hosts.get(name)
                    }
                    Some(Err(why)) => {
                        self.unreadable.insert(ev.key.clone(), why);
                        self.hosts.remove(name);
                        true
                    }
                }
            }
            Kind::Image(name) => {
                self.unreadable.remove(&ev.key);
                let decoded = ev
                    .value
                    .as_deref()
                    .map(|v| decode::<Image>(v, name, |i| &i.name));
                match decoded {
                    None => self.images.remove(name).is_some(),
                    Some(Ok(i)) => {
                        self.images.insert(name.to_string(), i).as_ref() != self.images.get(name)
                    }
                    Some(Err(why)) => {
                        self.unreadable.insert(ev.key.clone(), why);
                        self.images.remove(name);
                        true
                    }
                }
            }
            Kind::Other => false,
        }
    }

    pub fn parts(&self) -> (Vec<Host>, Vec<Image>) {
        (
            self.hosts.values().cloned().collect(),
            self.images.values().cloned().collect(),
        )
    }
}

/// The hosts a server serves: those with an address (of an interface or a bond) in one
/// of its segments' subnets. A server that names no segment serves every host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// None: every host.
    subnets: Option<Vec<Ipv4Net>>,
}

impl Scope {
    /// The scope of `segments` (their subnets; one that does not parse was refused by
    /// the config check, and matches nothing here).
    pub fn of(segments: &[Segment]) -> Scope {
        if segments.is_empty() {
            return Scope::default();
        }
        let subnets = segments.iter().flat_map(Segment::nets).collect();
        Scope {
            subnets: Some(subnets),
        }
    }

    /// True when every host is served (no segment named).
    pub fn is_all(&self) -> bool {
        self.subnets.is_none()
    }

    /// Whether this server serves `host`.
    pub fn serves(&self, host: &Host) -> bool {
        let Some(subnets) = &self.subnets else {
            return true;
        };
        let bonds = host.bond_interfaces().unwrap_or_default();
        host.interfaces
            .iter()
            .chain(bonds.iter())
            .filter_map(|nic| nic.addr())
            .any(|a| subnets.iter().any(|n| n.contains(&a)))
    }

    /// The part of `whole` this server serves: its hosts, every image. `whole` is valid,
    /// so any part of its hosts is too (nothing is checked again).
    pub fn part(&self, whole: &Inventory) -> Inventory {
        if self.is_all() {
            return whole.clone();
        }
        let hosts = whole
            .hosts()
            .iter()
            .filter(|h| self.serves(h))
            .cloned()
            .collect();
        Inventory::from_parts_unchecked(hosts, whole.images().to_vec())
    }

    /// The change `change` (of the whole inventory) makes of the part this server
    /// serves (`served`): hosts put that it serves are put, hosts put that it no longer
    /// serves (moved to another segment's subnet) or deleted are deleted if it served
    /// them, images as they are. At the change's cost, not the inventory's.
    pub fn change(&self, served: &Inventory, change: &Change) -> Change {
        let had = |name: &str| served.host(name).is_some();
        let mut out = Change {
            put_images: change.put_images.clone(),
            delete_images: change.delete_images.clone(),
            ..Change::default()
        };
        for h in &change.put_hosts {
            if self.serves(h) {
                out.put_hosts.push(h.clone());
            } else if had(&h.name) {
                out.delete_hosts.push(h.name.clone());
            }
        }
        for n in &change.delete_hosts {
            if had(n) {
                out.delete_hosts.push(n.clone());
            }
        }
        out
    }

    /// The part of `whole` this server serves, and the change from the part it served
    /// (`old`) to it: hosts that entered the scope or changed in it are put, those that
    /// left it (deleted, or moved to another segment's subnet) deleted, images as in
    /// `whole`. The served inventory is swapped with this change, so that the XDP maps
    /// are updated for its hosts only; an empty change needs no swap.
    pub fn served(&self, old: &Inventory, whole: &Inventory) -> (Inventory, Change) {
        let new = self.part(whole);
        let change = Change::diff(
            &old.hosts().to_vec(),
            old.images(),
            &new.hosts().to_vec(),
            new.images(),
        );
        (new, change)
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    v: &[u8],
    name: &str,
    name_of: impl Fn(&T) -> &String,
) -> Result<T, String> {
    let t: T = serde_json::from_slice(v).map_err(|e| format!("not a valid entry: {e}"))?;
    if name_of(&t) != name {
        return Err(format!("names {:?}, not the key's {name:?}", name_of(&t)));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, value: Option<&str>) -> Event {
        Event {
            key: key.into(),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn events_change_hosts_and_images_and_nothing_else() {
        let keys = Keys::new("/x/");
        let mut m = Mirror::default();
        assert!(m.apply(
            &keys,
            &ev("/x/hosts/cn1", Some(r#"{"name":"cn1","provision":true}"#))
        ));
        // The same value again changes nothing.
        assert!(!m.apply(
            &keys,
            &ev("/x/hosts/cn1", Some(r#"{"name":"cn1","provision":true}"#))
        ));
        assert!(m.hosts["cn1"].provision);
        assert!(m.apply(
            &keys,
            &ev("/x/images/img", Some(r#"{"name":"img","kernel":"/k"}"#))
        ));
        assert!(!m.apply(&keys, &ev("/x/idx/mac/02:00:00:00:00:01", Some("cn1"))));
        assert!(!m.apply(&keys, &ev("/x/servers/s1", Some("{}"))));
        assert!(m.apply(&keys, &ev("/x/hosts/cn1", None)));
        assert!(!m.apply(&keys, &ev("/x/hosts/cn1", None)));
        assert!(m.hosts.is_empty());
        assert_eq!(m.parts().1[0].kernel, "/k");
    }

    #[test]
    fn an_unreadable_value_is_left_out_and_named() {
        let keys = Keys::new("/x/");
        let mut m = Mirror::default();
        m.apply(&keys, &ev("/x/hosts/cn1", Some(r#"{"name":"cn1"}"#)));
        assert!(m.apply(&keys, &ev("/x/hosts/cn1", Some("{not json"))));
        assert!(m.hosts.is_empty());
        assert!(m.unreadable["/x/hosts/cn1"].contains("not a valid entry"));
        // A value naming another host than its key.
        m.apply(&keys, &ev("/x/hosts/cn2", Some(r#"{"name":"cn3"}"#)));
        assert!(m.unreadable["/x/hosts/cn2"].contains("not the key's"));
        // Fixed: readable again.
        m.apply(&keys, &ev("/x/hosts/cn1", Some(r#"{"name":"cn1"}"#)));
        assert!(!m.unreadable.contains_key("/x/hosts/cn1"));
        assert_eq!(m.hosts.len(), 1);
    }

    fn host(name: &str, n: u8, ip: &str) -> Host {
        let mut h = Host::with_interface(name, crate::inventory::Mac([2, 0, 0, 0, 0, n]), None);
        h.interfaces[0].ip = Some(ip.into());
        h
    }

    fn segment(name: &str, subnets: &[&str]) -> Segment {
        Segment {
            name: name.into(),
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_scope_serves_the_hosts_of_its_segments_only() {
        let a = Scope::of(&[segment("A", &["10.50.0.0/24", "10.51.0.0/16"])]);
        assert!(!a.is_all());
        assert!(a.serves(&host("a1", 1, "10.50.0.100/24")));
        assert!(a.serves(&host("a2", 2, "10.51.7.9/16")));
        assert!(!a.serves(&host("b1", 3, "10.60.0.100/24")));
        // No address, or an IPv6 one only: in no segment.
        assert!(!a.serves(&Host::with_interface(
            "x",
            crate::inventory::Mac([2, 0, 0, 0, 0, 9]),
            None
        )));
        assert!(!a.serves(&host("v6", 4, "fd00::5/64")));
        // A second interface in the segment is enough (a BMC NIC, say).
        let mut two = host("b2", 5, "10.60.0.5/24");
        two.interfaces.push(crate::inventory::Interface {
            ip: Some("10.50.0.205/24".into()),
            bmc: true,
            ..Default::default()
        });
        assert!(a.serves(&two));
        // No segment named: every host.
        let all = Scope::of(&[]);
        assert!(all.is_all() && all.serves(&host("b1", 3, "10.60.0.100/24")));
        // A segment without a subnet serves nothing.
        assert!(!Scope::of(&[segment("E", &[])]).serves(&host("a1", 1, "10.50.0.1/24")));
    }

    #[test]
    fn the_served_part_changes_by_the_hosts_that_enter_leave_or_change_in_it() {
        let a = Scope::of(&[segment("A", &["10.50.0.0/24"])]);
        let whole = |hosts: Vec<Host>| Inventory::from_parts_unchecked(hosts, vec![]);
        let w1 = whole(vec![
            host("a1", 1, "10.50.0.101/24"),
            host("a2", 2, "10.50.0.102/24"),
            host("b1", 3, "10.60.0.101/24"),
        ]);
        let (p1, c1) = a.served(&Inventory::default(), &w1);
        let names = |i: &Inventory| i.hosts().iter().map(|h| h.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&p1), ["a1", "a2"]);
        assert!(p1
            .lookup_mac(crate::inventory::Mac([2, 0, 0, 0, 0, 3]))
            .is_none());
        assert_eq!(c1.put_hosts.len(), 2);
        // b1 edited: nothing this server serves changed.
        let w2 = whole(vec![
            host("a1", 1, "10.50.0.101/24"),
            host("a2", 2, "10.50.0.102/24"),
            host("b1", 3, "10.60.0.111/24"),
        ]);
        let (p2, c2) = a.served(&p1, &w2);
        assert!(c2.is_empty(), "{c2:?}");
        assert_eq!(names(&p2), ["a1", "a2"]);
        // a2 moved to B, b1 moved to A, a1 edited.
        let w3 = whole(vec![
            host("a1", 1, "10.50.0.121/24"),
            host("a2", 2, "10.60.0.102/24"),
            host("b1", 3, "10.50.0.111/24"),
        ]);
        let (p3, c3) = a.served(&p2, &w3);
        assert_eq!(names(&p3), ["a1", "b1"]);
        let put: Vec<&str> = c3.put_hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(put, ["a1", "b1"]);
        assert_eq!(c3.delete_hosts, ["a2"]);
        assert_eq!(
            crate::state::Delta::of(&c3),
            crate::state::Delta::Hosts(vec!["a1".into(), "a2".into(), "b1".into()])
        );
        // Every host, without segments: the part is the whole.
        let (all, _) = Scope::default().served(&p3, &w3);
        assert_eq!(names(&all), ["a1", "a2", "b1"]);
    }
}
