//! Pure: the inventory as etcd holds it, kept up to date from listed and watched keys.
use std::collections::BTreeMap;

use super::plan::{Keys, Kind};
use crate::inventory::{Host, Image};

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
}
