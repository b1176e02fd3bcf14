//! Incremental validation ([`Inventory::apply`]): conflicts with the running inventory
//! are refused with the whole check's messages, deletions free what they held, and the
//! result always agrees with validating the whole inventory.
use proptest::prelude::*;

use super::*;

fn files() -> (tempfile::TempDir, Roots) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vmlinuz"), b"kernel").unwrap();
    let roots = Roots::new([dir.path().to_path_buf()]);
    (dir, roots)
}

fn image(dir: &tempfile::TempDir, name: &str) -> Image {
    Image {
        name: name.into(),
        kernel: dir.path().join("vmlinuz").display().to_string(),
        ..Default::default()
    }
}

fn mac(n: u8) -> Mac {
    Mac([0x02, 0, 0, 0, 0, n])
}

fn host(name: &str, m: u8, ip: u8) -> Host {
    let mut h = Host::with_interface(name, mac(m), Some(&format!("10.0.0.{ip}/24")));
    h.boot_image = "centos".into();
    h
}

fn base(dir: &tempfile::TempDir, roots: &Roots) -> Inventory {
    Inventory::new(
        vec![host("cn1", 1, 11), host("cn2", 2, 12)],
        vec![image(dir, "centos")],
        roots,
    )
    .unwrap()
}

fn put(hosts: Vec<Host>) -> Change {
    Change {
        put_hosts: hosts,
        ..Default::default()
    }
}

fn messages(r: Result<Inventory, ValidationErrors>) -> Vec<String> {
    r.map(|_| ()).unwrap_err().messages()
}

#[test]
fn a_change_meeting_a_standing_host_is_refused_naming_both() {
    let (dir, roots) = files();
    let inv = base(&dir, &roots);
    let mut twin = host("cn3", 1, 12);
    twin.interfaces[0].mtu = 20;
    assert_eq!(
        messages(inv.apply(&put(vec![twin]), &roots, None)),
        vec![
            "host cn3: interface 0: MTU 20 is out of range (576 to 9216, or 0 for the subnet's)",
            "host cn3: MAC 02:00:00:00:00:01 is also on host cn1",
            "host cn3: address 10.0.0.12 is also used by host cn2",
        ]
    );
    assert_eq!(
        messages(inv.apply(&put(vec![host("CN1", 9, 19)]), &roots, None)),
        vec!["host CN1: same name as host cn1 but for case (names are case-insensitive)"]
    );
    // An edit in place that takes another host's address.
    assert_eq!(
        messages(inv.apply(&put(vec![host("cn1", 1, 12)]), &roots, None)),
        vec!["host cn1: address 10.0.0.12 is also used by host cn2"]
    );
    // Two new hosts of one change meet each other.
    assert_eq!(
        messages(inv.apply(
            &put(vec![host("cn5", 5, 15), host("cn6", 5, 16)]),
            &roots,
            None
        )),
        vec!["host cn6: MAC 02:00:00:00:00:05 is also on host cn5"]
    );
    // The running inventory is untouched by a refused change.
    assert_eq!(inv.lookup_mac(mac(1)).unwrap().host.name, "cn1");
    assert!(inv.lookup_mac(mac(5)).is_none());
    assert_eq!(inv.hosts().len(), 2);
}

#[test]
fn deleting_or_moving_a_host_frees_its_mac_and_address() {
    let (dir, roots) = files();
    let inv = base(&dir, &roots);
    let gone = inv
        .apply(
            &Change {
                delete_hosts: vec!["cn1".into()],
                ..Default::default()
            },
            &roots,
            None,
        )
        .unwrap();
    assert!(gone.lookup_mac(mac(1)).is_none());
    assert!(gone.host("cn1").is_none());
    let reused = gone
        .apply(&put(vec![host("cn9", 1, 11)]), &roots, None)
        .unwrap();
    assert_eq!(reused.lookup_mac(mac(1)).unwrap().host.name, "cn9");
    assert_eq!(reused.host_lease_macs("cn9"), vec![mac(1)]);
    // Two hosts swap their MACs and addresses in one change.
    let swapped = inv
        .apply(
            &put(vec![host("cn1", 2, 12), host("cn2", 1, 11)]),
            &roots,
            None,
        )
        .unwrap();
    assert_eq!(swapped.lookup_mac(mac(1)).unwrap().host.name, "cn2");
    assert_eq!(swapped.lookup_mac(mac(2)).unwrap().host.name, "cn1");
    // An edit keeps the host's place in the inventory order; a new one goes last.
    let names: Vec<&str> = swapped.hosts().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["cn1", "cn2"]);
    // Renaming (delete + put) frees the old name for another host of the same change.
    let renamed = inv
        .apply(
            &Change {
                put_hosts: vec![host("cn7", 1, 11)],
                delete_hosts: vec!["cn1".into()],
                ..Default::default()
            },
            &roots,
            None,
        )
        .unwrap();
    let names: Vec<&str> = renamed.hosts().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["cn2", "cn7"]);
}

#[test]
fn images_a_change_leaves_hosts_without_are_named() {
    let (dir, roots) = files();
    let inv = base(&dir, &roots);
    let delete = Change {
        delete_images: vec!["centos".into()],
        ..Default::default()
    };
    assert_eq!(
        messages(inv.apply(&delete, &roots, None)),
        vec![
            "host cn1: unknown boot_image \"centos\"",
            "host cn2: unknown boot_image \"centos\"",
        ]
    );
    let mut bare = host("cn4", 4, 14);
    bare.boot_image.clear();
    assert_eq!(
        messages(inv.apply(&put(vec![bare.clone()]), &roots, None)),
        vec!["host cn4: provision = true but no boot_image (and no provision.default_image)"]
    );
    let with_default = inv
        .apply(&put(vec![bare.clone()]), &roots, Some("centos"))
        .unwrap();
    assert_eq!(
        with_default
            .boot_image_of(with_default.host("cn4").unwrap())
            .unwrap()
            .name,
        "centos"
    );
    assert_eq!(
        messages(inv.apply(&put(vec![bare]), &roots, Some("rocky"))),
        vec!["provision.default_image \"rocky\" is not an image, and hosts cn4 name no boot_image"]
    );
    let mut broken = image(&dir, "rocky");
    broken.kernel = "/nowhere/vmlinuz".into();
    let r = inv.apply(
        &Change {
            put_images: vec![broken],
            ..Default::default()
        },
        &roots,
        None,
    );
    assert!(messages(r)[0].starts_with("image rocky: kernel /nowhere/vmlinuz"));
}

/// One edit of a small inventory whose hosts draw MACs, addresses and names from small
/// pools, so that conflicts are frequent.
#[derive(Clone, Debug)]
enum Edit {
    Put {
        name: u8,
        upper: bool,
        mac: u8,
        ip: u8,
        mac2: Option<u8>,
    },
    Delete {
        name: u8,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (0u8..8, prop::bool::weighted(0.1), 0u8..10, 0u8..10, prop::option::weighted(0.2, 0u8..10))
            .prop_map(|(name, upper, mac, ip, mac2)| Edit::Put { name, upper, mac, ip, mac2 }),
        1 => (0u8..8).prop_map(|name| Edit::Delete { name }),
    ]
}

fn edit_host(name: u8, upper: bool, m: u8, ip: u8, mac2: Option<u8>) -> Host {
    let name = if upper {
        format!("CN{name}")
    } else {
        format!("cn{name}")
    };
    let mut h = host(&name, m + 1, ip + 1);
    if let Some(m2) = mac2 {
        h.interfaces.push(Interface {
            mac: Some(mac(m2 + 1)),
            ..Default::default()
        });
    }
    h
}

proptest! {
    /// Whatever the edits, the incremental check accepts exactly what the whole check
    /// accepts, and builds the same inventory (order, lookups and all).
    #[test]
    fn incremental_and_whole_validation_agree(changes in prop::collection::vec(prop::collection::vec(edit(), 1..4), 1..12)) {
        let (dir, roots) = files();
        let images = vec![image(&dir, "centos")];
        let mut inv = Inventory::new(vec![], images.clone(), &roots).unwrap();
        for edits in changes {
            let mut change = Change::default();
            for e in edits {
                match e {
                    Edit::Put { name, upper, mac, ip, mac2 } => change.put_hosts.push(edit_host(name, upper, mac, ip, mac2)),
                    Edit::Delete { name } => change.delete_hosts.push(format!("cn{name}")),
                }
            }
            let change = change.effective(&inv);
            // The same change on whole lists: deletions, then upserts by name.
            let mut hosts = inv.hosts().to_vec();
            let mut imgs = images.clone();
            hosts.retain(|h| !change.delete_hosts.contains(&h.name));
            merge(&mut hosts, &mut imgs, Loaded { hosts: change.put_hosts.clone(), ..Default::default() });
            let whole = Inventory::new(hosts.clone(), imgs, &roots);
            let incremental = inv.apply(&change, &roots, None);
            prop_assert_eq!(whole.is_ok(), incremental.is_ok(), "whole {:?} incremental {:?}", whole.as_ref().err(), incremental.as_ref().err());
            if let Ok(next) = incremental {
                prop_assert_eq!(next.hosts().to_vec(), hosts);
                let whole = whole.unwrap();
                for m in 1..=10u8 {
                    let a = next.lookup_mac(mac(m)).map(|l| (l.host.name.clone(), l.nic.clone()));
                    let b = whole.lookup_mac(mac(m)).map(|l| (l.host.name.clone(), l.nic.clone()));
                    prop_assert_eq!(a, b);
                }
                let a: Vec<_> = next.lease_macs().map(|(h, m)| (h.name.clone(), m)).collect();
                let b: Vec<_> = whole.lease_macs().map(|(h, m)| (h.name.clone(), m)).collect();
                prop_assert_eq!(a, b);
                inv = next;
            } else {
                // Every problem names a host of the change.
                for m in incremental.unwrap_err().messages() {
                    prop_assert!(change.put_hosts.iter().any(|h| m.contains(&format!("host {}", h.name))), "{}", m);
                }
            }
        }
    }
}
