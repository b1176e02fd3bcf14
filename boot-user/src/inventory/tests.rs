//! Loading, validation, store and startup tests of the inventory.
use std::path::{Path, PathBuf};

use super::load::{self, Format, Kind};
use super::*;

/// The repository's config/ directory.
fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// A temp dir with a kernel and an initrd file in it.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(dir.path().join("initrd.img"), b"initrd").unwrap();
        Files { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    /// The temp dir as the only image root.
    fn roots(&self) -> Roots {
        Roots::new([self.dir.path().to_path_buf()])
    }
    fn image(&self, name: &str) -> Image {
        Image {
            name: name.into(),
            kernel: self.path("vmlinuz"),
            initrd: vec![self.path("initrd.img")],
            cmdline: "console=ttyS0".into(),
            ..Default::default()
        }
    }
}

fn host(name: &str, mac: &str, ip: &str) -> Host {
    Host {
        boot_image: "img".into(),
        ..Host::with_interface(name, mac.parse().unwrap(), Some(ip))
    }
}

#[test]
fn guide_hosts_and_images_json_load() {
    let hosts = load::load_file(&config_dir().join("examples/hosts.json"), Kind::Hosts).unwrap();
    assert!(hosts.warnings.is_empty(), "{:?}", hosts.warnings);
    let h = &hosts.hosts[0];
    assert_eq!(
        (h.name.as_str(), h.provision, h.boot_image.as_str()),
        ("cn1", true, "squareos-9.2")
    );
    assert_eq!(h.firmware, "snponly-x86_64.efi");
    assert_eq!(
        h.interfaces[0].mac.unwrap().to_string(),
        "aa:bb:cc:11:22:33"
    );
    assert_eq!(h.bmc().unwrap().ip.as_deref(), Some("192.168.1.51/32"));

    let images = load::load_file(&config_dir().join("examples/images.json"), Kind::Images).unwrap();
    let im = &images.images[0];
    assert_eq!(im.name, "squareos-9.2");
    assert!(im
        .cmdline
        .contains(r#"BOOTIF=01-{{ $.nic.MAC | toString | replace ":" "-" }}"#));

    // The guide's kernel and initrd live under /var/lib/grendel: absent here, and reported
    // as such, naming the image; the host itself is fine.
    let roots = crate::config::ProvisionConfig::default().image_roots();
    let errs = Inventory::new(hosts.hosts, images.images, &roots).unwrap_err();
    let msgs = errs.messages();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(
        msgs[0].starts_with("image squareos-9.2: kernel /var/lib/grendel/vmlinuz"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].starts_with("image squareos-9.2: initrd[0] /var/lib/grendel/initramfs"),
        "{msgs:?}"
    );
    assert!(msgs[1].ends_with("no such file"), "{msgs:?}");
}

#[test]
fn toml_inventory_matches_json() {
    let t = load::load_file(&config_dir().join("examples/inventory.toml"), Kind::Hosts).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let j = load::load_file(&config_dir().join("examples/hosts.json"), Kind::Hosts).unwrap();
    assert_eq!(t.hosts[0].interfaces[0].mac, j.hosts[0].interfaces[0].mac);
    assert_eq!(t.hosts[0].boot_image, j.hosts[0].boot_image);
    assert_eq!(t.images.len(), 1);
    let bmc = t.hosts[0].bmc().unwrap().bmc_config.as_ref().unwrap();
    assert_eq!(bmc.protocol.as_deref(), Some("redfish"));
}

#[test]
fn grendel_export_keys_are_quiet_and_unknown_keys_warn() {
    let j = r#"[{"id":"2BZ0a","name":"cn1","provision":false,"boot_image":"","firmware":"","tags":[],
        "interfaces":[{"HostID":"2BZ0a","ID":1,"mac":"aa:bb:cc:11:22:33","ip":"10.0.0.1/24","ifname":"",
        "fqdn":"","bmc":false,"vlan":"","mtu":1500,"colour":"blue"}]}]"#;
    let l = load::parse(j, Format::Json, Kind::Hosts, Path::new("/"), "hosts.json").unwrap();
    assert_eq!(
        l.warnings,
        [r#"host cn1: unknown key "interfaces.0.colour" ignored"#]
    );
    let j =
        r#"[{"id":"2BZ0b","name":"img","kernel":"/k","initrd":[],"cmdline":"","user_data":"x"}]"#;
    let l = load::parse(j, Format::Json, Kind::Images, Path::new("/"), "images.json").unwrap();
    assert_eq!(l.images[0].id, "2BZ0b");
    assert!(l.warnings.is_empty());
}

#[test]
fn bad_entries_are_named_and_all_reported() {
    let j = r#"[{"name":"cn1","interfaces":[{"mac":"zz:bb:cc:11:22:33"}]},
               {"name":"cn2","provision":"yes"},
               {"interfaces":[{"mac":"aa:bb"}]},
               {"name":"cn4"}]"#;
    let err = load::parse(j, Format::Json, Kind::Hosts, Path::new("/"), "hosts.json").unwrap_err();
    let LoadError::Entries { errors, .. } = &err else {
        panic!("{err}")
    };
    let msgs = errors.messages();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(
        msgs[0].starts_with("host cn1: invalid MAC address \"zz:bb:cc:11:22:33\""),
        "{msgs:?}"
    );
    assert!(msgs[1].starts_with("host cn2: invalid type"), "{msgs:?}");
    assert!(
        msgs[2].starts_with("host #2: invalid MAC address \"aa:bb\""),
        "{msgs:?}"
    );
    assert!(
        err.to_string()
            .starts_with("invalid inventory file hosts.json: 3 problems:"),
        "{err}"
    );
}

#[test]
fn file_syntax_errors() {
    let table: &[(&str, Format, &str)] = &[
        (
            "[{",
            Format::Json,
            "invalid inventory file f: EOF while parsing",
        ),
        ("42", Format::Json, "expected a JSON array"),
        (
            r#"{"hosts": {}}"#,
            Format::Json,
            "\"hosts\" must be an array",
        ),
        (
            "[[hosts]]\nname = \"cn1\"",
            Format::Toml,
            "unknown key \"hosts\" (expected [[host]] and [[image]] tables)",
        ),
        ("host = 3", Format::Toml, "must be an array of tables"),
        (
            "[[host]\n",
            Format::Toml,
            "invalid inventory file f: TOML parse error",
        ),
    ];
    for (text, format, want) in table {
        let err = load::parse(text, *format, Kind::Hosts, Path::new("/"), "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let f = Files::new();
    let toml = "[[image]]\nname = \"img\"\nkernel = \"vmlinuz\"\ninitrd = [\"./initrd.img\"]\n";
    let p = f.dir.path().join("images.toml");
    std::fs::write(&p, toml).unwrap();
    let l = load::load_file(&p, Kind::Images).unwrap();
    assert_eq!(l.images[0].kernel, f.path("vmlinuz"));
    assert_eq!(l.images[0].initrd[0], f.path("initrd.img"));
    Inventory::new(
        vec![host("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24")],
        l.images,
        &f.roots(),
    )
    .unwrap();
}

/// Each validation error, named, in one table: (description, hosts, images, expected message).
#[test]
fn validation_errors_each_named() {
    let f = Files::new();
    let img = || vec![f.image("img")];
    let h = host;
    let mut two_macs = h("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24");
    two_macs.interfaces.push(Interface {
        mac: Some("aa:bb:cc:00:00:01".parse().unwrap()),
        ..Default::default()
    });
    let mut no_image = h("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24");
    no_image.boot_image.clear();
    let mut not_provisioned = h("cn2", "aa:bb:cc:00:00:02", "10.0.0.2/24");
    not_provisioned.provision = false;
    not_provisioned.boot_image = "gone".into();
    let missing = |what: &str| {
        let mut i = f.image("img");
        match what {
            "kernel" => i.kernel = f.path("nope"),
            "initrd" => i.initrd.push(f.path("nope.img")),
            "liveimg" => i.liveimg = f.path("root.squashfs"),
            "dir" => i.kernel = f.dir.path().display().to_string(),
            "relative" => i.kernel = "vmlinuz".into(),
            _ => i.kernel.clear(),
        }
        vec![i]
    };
    let with_cmdline = |c: &str| Image {
        cmdline: c.into(),
        ..f.image("img")
    };
    let with_postscript = |p: &str| {
        let mut i = f.image("img");
        i.provision_templates.insert("postscript".into(), p.into());
        i
    };
    #[rustfmt::skip]
    let table: Vec<(&str, Vec<Host>, Vec<Image>, String)> = vec![
        ("valid", vec![h("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24"), not_provisioned.clone()], img(), String::new()),
        ("empty name", vec![h("", "aa:bb:cc:00:00:01", "10.0.0.1/24")], img(), "host #0: empty name".into()),
        ("invalid hostname", vec![h("cn_1", "aa:bb:cc:00:00:01", "10.0.0.1/24")], img(),
            "host \"cn_1\": invalid hostname: character '_' is not allowed (letters, digits, '-' and '.')".into()),
        ("hyphen", vec![h("-cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24")], img(),
            "host \"-cn1\": invalid hostname: label \"-cn1\" starts or ends with '-'".into()),
        ("duplicate name", vec![h("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24"), h("cn1", "aa:bb:cc:00:00:02", "10.0.0.2/24")],
            img(), "host cn1: defined more than once".into()),
        ("two hosts on one MAC", vec![h("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24"), h("cn2", "aa:bb:cc:00:00:01", "10.0.0.2/24")],
            img(), "host cn2: MAC aa:bb:cc:00:00:01 is also on host cn1".into()),
        ("one MAC twice on a host", vec![two_macs], img(), "host cn1: MAC aa:bb:cc:00:00:01 is on two of its interfaces".into()),
        ("duplicate IP", vec![h("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24"), h("cn2", "aa:bb:cc:00:00:02", "10.0.0.1/16")],
            img(), "host cn2: address 10.0.0.1 is also used by host cn1".into()),
        ("bad CIDR", vec![h("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/33")], img(),
            "host cn1: interface 0: bad CIDR \"10.0.0.1/33\": invalid IP address syntax".into()),
        ("bad address", vec![h("cn1", "aa:bb:cc:00:00:01", "10.0.0.300")], img(),
            "host cn1: interface 0: bad address \"10.0.0.300\": invalid IPv4 address syntax".into()),
        ("no boot_image", vec![no_image], img(), "host cn1: provision = true but no boot_image (and no provision.default_image)".into()),
        ("unknown boot_image", vec![h("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24")], vec![f.image("other")],
            "host cn1: unknown boot_image \"img\"".into()),
        ("no kernel", vec![], missing("none"), "image img: no kernel".into()),
        ("missing kernel", vec![], missing("kernel"), format!("image img: kernel {}: no such file", f.path("nope"))),
        ("missing initrd", vec![], missing("initrd"), format!("image img: initrd[1] {}: no such file", f.path("nope.img"))),
        ("missing liveimg", vec![], missing("liveimg"), format!("image img: liveimg {}: no such file", f.path("root.squashfs"))),
        ("kernel is a dir", vec![], missing("dir"), format!("image img: kernel {}: not a regular file", f.dir.path().display())),
        ("relative path", vec![], missing("relative"), "image img: kernel path \"vmlinuz\" is not absolute".into()),
        ("duplicate image", vec![], vec![f.image("img"), f.image("img")], "image img: defined more than once".into()),
        ("empty image name", vec![], vec![f.image("")], "image #0: empty name".into()),
        ("cmdline syntax", vec![], vec![with_cmdline("BOOTIF={{ $.nic.MAC ")],
            "image img: cmdline template: line 1, column 8: unclosed action".into()),
        ("cmdline field", vec![], vec![with_cmdline("x={{ $.host.Nmae }}")],
            "image img: cmdline template: line 1, column 6: unknown field".into()),
        ("cmdline function", vec![], vec![with_cmdline("x={{ $.host.Name | shout }}")],
            "image img: cmdline template: line 1, column 20: unknown function".into()),
        ("postscript syntax", vec![], vec![with_postscript("#!/bin/sh\n{{ if }}")],
            "image img: provision_templates.postscript template: line 2".into()),
    ];
    for (what, hosts, images, want) in table {
        match Inventory::new(hosts, images, &f.roots()) {
            Ok(_) => assert!(want.is_empty(), "{what}: accepted, want {want:?}"),
            // Template messages are checked by prefix: the wording after the position is
            // the template module's.
            Err(e) if what.contains("cmdline") || what.contains("postscript") => {
                assert_eq!(e.0.len(), 1, "{what}: {e}");
                assert!(e.messages()[0].starts_with(&want), "{what}: {e}");
            }
            Err(e) => assert_eq!(e.messages(), std::slice::from_ref(&want), "{what}"),
        }
    }
}

/// Leases no host can use are refused, each naming its host and interface: subnet network
/// and broadcast addresses, /0, addresses that are not a host's, the server's own
/// address, broadcast, zero and multicast MACs, MTUs out of range; and names that differ
/// only in case.
#[test]
fn impossible_leases_are_refused() {
    let f = Files::new();
    let h = host;
    let with_mtu = |mtu: u16| {
        let mut x = h("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24");
        x.interfaces[0].mtu = mtu;
        x
    };
    #[rustfmt::skip]
    let table: Vec<(Host, &str)> = vec![
        (h("cn1", "aa:bb:cc:00:00:01", "10.0.0.0/24"), "host cn1: interface 0: address 10.0.0.0/24 is the network address of 10.0.0.0/24"),
        (h("cn1", "aa:bb:cc:00:00:01", "10.0.0.255/24"), "host cn1: interface 0: address 10.0.0.255/24 is the broadcast address of 10.0.0.0/24"),
        (h("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/0"), "host cn1: interface 0: address 10.0.0.1/0 has prefix /0"),
        (h("cn1", "aa:bb:cc:00:00:01", "255.255.255.255"), "host cn1: interface 0: address 255.255.255.255 is the broadcast address, not a host's"),
        (h("cn1", "aa:bb:cc:00:00:01", "0.0.0.0/24"), "host cn1: interface 0: address 0.0.0.0/24 is the unspecified address"),
        (h("cn1", "aa:bb:cc:00:00:01", "224.0.0.5/24"), "host cn1: interface 0: address 224.0.0.5/24 is a multicast address"),
        (h("cn1", "aa:bb:cc:00:00:01", "127.0.0.2/8"), "host cn1: interface 0: address 127.0.0.2/8 is a loopback address"),
        (h("cn1", "aa:bb:cc:00:00:01", "192.0.2.1/24"), "host cn1: interface 0: address 192.0.2.1/24 is this server's own address"),
        (h("cn1", "ff:ff:ff:ff:ff:ff", "10.0.0.1/24"), "host cn1: interface 0: MAC ff:ff:ff:ff:ff:ff is the broadcast address"),
        (h("cn1", "00:00:00:00:00:00", "10.0.0.1/24"), "host cn1: interface 0: MAC 00:00:00:00:00:00 is all zeros"),
        (h("cn1", "01:00:5e:00:00:01", "10.0.0.1/24"), "host cn1: interface 0: MAC 01:00:5e:00:00:01 is a multicast address"),
        (with_mtu(10), "host cn1: interface 0: MTU 10 is out of range (576 to 9216, or 0 for the subnet's)"),
        (with_mtu(9217), "host cn1: interface 0: MTU 9217 is out of range"),
    ];
    let server = [std::net::Ipv4Addr::new(192, 0, 2, 1)];
    for (bad, want) in table {
        let errs =
            validate::validate_for(&[bad], &[f.image("img")], &server, &f.roots()).unwrap_err();
        assert_eq!(errs.0.len(), 1, "{want}: {errs}");
        assert!(
            errs.to_string().starts_with(want),
            "got {errs}, want {want}"
        );
    }
    // Fine: a /31 (both addresses usable), a bare address, the MTUs at the edges.
    let ok = vec![
        h("cn1", "aa:bb:cc:00:00:01", "10.0.0.0/31"),
        h("cn2", "aa:bb:cc:00:00:02", "10.0.1.0"),
        with_mtu(576),
    ];
    let mut ok = ok;
    ok[2].name = "cn3".into();
    ok[2].interfaces[0].ip = Some("10.0.2.1/24".into());
    ok[2].interfaces[0].mac = "aa:bb:cc:00:00:03".parse().ok();
    // A BMC's address without a MAC is where xboot reaches it, not a lease: a lab's BMC
    // on loopback.
    let mut bmc = h("cn4", "aa:bb:cc:00:00:04", "127.0.0.9/8");
    bmc.interfaces[0].bmc = true;
    bmc.interfaces[0].mac = None;
    ok.push(bmc.clone());
    validate::validate_for(&ok, &[f.image("img")], &server, &f.roots()).unwrap();
    // With a MAC, the BMC gets its address by DHCP: held to the lease rules.
    bmc.interfaces[0].mac = "aa:bb:cc:00:00:04".parse().ok();
    let errs = validate::validate_for(&[bmc], &[f.image("img")], &server, &f.roots())
        .unwrap_err()
        .to_string();
    assert!(
        errs.starts_with("host cn4: interface 0: address 127.0.0.9/8 is a loopback address"),
        "{errs}"
    );

    let errs = Inventory::new(
        vec![
            h("cn9", "aa:bb:cc:00:00:01", "10.0.0.1/24"),
            h("CN9", "aa:bb:cc:00:00:02", "10.0.0.2/24"),
        ],
        vec![f.image("img")],
        &f.roots(),
    )
    .unwrap_err();
    assert_eq!(
        errs.to_string(),
        "host CN9: same name as host cn9 but for case (names are case-insensitive)"
    );
}

#[test]
fn validation_returns_all_errors() {
    let f = Files::new();
    let hosts = vec![
        host("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24"),
        host("cn2", "aa:bb:cc:00:00:01", "10.0.0.1/24"),
        host("cn3", "aa:bb:cc:00:00:03", "bad"),
    ];
    let mut im = f.image("img");
    im.kernel = f.path("nope");
    let errs = Inventory::new(hosts, vec![im], &f.roots()).unwrap_err();
    assert_eq!(errs.0.len(), 4, "{errs}");
    assert!(
        errs.to_string()
            .starts_with("4 problems:\n  - host cn2: MAC"),
        "{errs}"
    );
}

/// A file with a recorded blob (cluster mode: fetched by its hash from the server that
/// has it) need not be here; its path must still be absolute without '..', and the
/// digest well-formed. The other files are checked as always.
#[test]
fn a_file_known_by_its_blob_need_not_be_here() {
    let f = Files::new();
    let blob = |path: &str, sha: &str| model::BlobRef {
        path: path.into(),
        sha256: sha.into(),
        size: 6,
        server: "s1".into(),
    };
    let sha = "ab".repeat(32);
    let mut im = f.image("img");
    im.kernel = "/elsewhere/vmlinuz".into();
    im.blobs = vec![blob("/elsewhere/vmlinuz", &sha)];
    let hosts = vec![host("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24")];
    Inventory::new(hosts.clone(), vec![im.clone()], &f.roots()).unwrap();
    // Serialized with its blobs, read back equal.
    let back: Image = serde_json::from_value(serde_json::to_value(&im).unwrap()).unwrap();
    assert_eq!(back, im);

    im.initrd = vec!["/elsewhere/initrd".into(), "/a/../etc/passwd".into()];
    im.blobs = vec![
        blob("/elsewhere/vmlinuz", "AB"),
        blob("/a/../etc/passwd", &sha),
    ];
    let errs = Inventory::new(hosts, vec![im], &f.roots())
        .unwrap_err()
        .to_string();
    assert!(errs.starts_with("3 problems:"), "{errs}");
    assert!(errs.contains("initrd[0] /elsewhere/initrd"), "{errs}");
    assert!(
        errs.contains("initrd[1] /a/../etc/passwd has a '..' component"),
        "{errs}"
    );
    assert!(
        errs.contains("blob of /elsewhere/vmlinuz: sha256 \"AB\" is not 64 lower-case hex digits"),
        "{errs}"
    );
}

#[test]
fn store_round_trip_and_reopen() {
    let f = Files::new();
    let state = tempfile::tempdir().unwrap();
    let mut h1 = host("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24");
    h1.tags = vec!["gpu".into()];
    h1.interfaces.push(Interface {
        ip: Some("10.1.0.1/32".into()),
        bmc: true,
        ..Default::default()
    });
    let hosts = vec![h1.clone(), host("cn2", "aa:bb:cc:00:00:02", "10.0.0.2/24")];
    let images = vec![f.image("img")];
    {
        let s = Store::open(state.path()).unwrap();
        s.apply(&Change::diff(&[], &[], &hosts, &images)).unwrap();
        assert_eq!(s.load().unwrap(), (hosts.clone(), images.clone()));
        // Delete one, change the other.
        let mut h1b = h1.clone();
        h1b.provision = false;
        let change = Change::diff(&hosts, &images, std::slice::from_ref(&h1b), &images);
        assert_eq!(change.put_hosts, [h1b.clone()]);
        assert_eq!(change.delete_hosts, ["cn2"]);
        assert!(change.put_images.is_empty());
        s.apply(&change).unwrap();
        // A second opener of the same state dir is refused while this one lives.
        let err = Store::open(state.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another xboot process"), "{err}");
    }
    let s = Store::open(state.path()).unwrap();
    let (hosts, images2) = s.load().unwrap();
    assert_eq!(hosts.len(), 1);
    assert!(!hosts[0].provision);
    assert_eq!(hosts[0].tags, ["gpu"]);
    assert_eq!(images2, images);
}

/// A damaged store file is refused with an error naming it, never a panic: truncated
/// at several lengths, its header overwritten, or not a store at all.
#[test]
fn damaged_store_is_refused_not_a_panic() {
    let state = tempfile::tempdir().unwrap();
    {
        let s = Store::open(state.path()).unwrap();
        let hosts = vec![host("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24")];
        s.apply(&Change::diff(&[], &[], &hosts, &[])).unwrap();
    }
    let file = state.path().join(store::FILE_NAME);
    let good = std::fs::read(&file).unwrap();
    let mut damaged: Vec<(String, Vec<u8>)> = [0, 5, 9, 64, 320, 512, 4096, good.len() / 2]
        .iter()
        .filter(|&&n| n < good.len())
        .map(|&n| (format!("truncated to {n}"), good[..n].to_vec()))
        .collect();
    for (from, to) in [(9, 40), (9, 200), (40, 600), (0, 4)] {
        let mut bytes = good.clone();
        bytes[from..to].iter_mut().for_each(|b| *b = 0xa5);
        damaged.push((format!("bytes {from}..{to} overwritten"), bytes));
    }
    damaged.push(("text".into(), b"not a database at all\n".repeat(400)));
    // A sound database holding a record that does not decode: refused when it is read,
    // which must come before any write.
    {
        std::fs::write(&file, &good).unwrap();
        let db = redb::Database::create(&file).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let def = redb::TableDefinition::<&str, &[u8]>::new("hosts");
            let mut t = tx.open_table(def).unwrap();
            t.insert("cn9", b"{not json".as_slice()).unwrap();
        }
        tx.commit().unwrap();
        drop(db);
        damaged.push((
            "a record that does not decode".into(),
            std::fs::read(&file).unwrap(),
        ));
    }
    let mut wrong = Vec::new();
    for (what, bytes) in damaged {
        std::fs::write(&file, &bytes).unwrap();
        for (opener, r) in [
            (
                "open",
                std::panic::catch_unwind(|| Store::open(state.path()).and_then(|s| s.load())),
            ),
            (
                "open_existing",
                std::panic::catch_unwind(|| {
                    Store::open_existing(state.path()).and_then(|s| s.unwrap().load())
                }),
            ),
        ] {
            let what = format!("{what} ({opener})");
            let refused = match r {
                Err(_) => {
                    wrong.push(format!("{what}: the store panicked"));
                    false
                }
                Ok(Ok(_)) if what.starts_with("bytes") => false, // redb repaired it from its copy
                Ok(Ok(l)) => {
                    wrong.push(format!("{what}: opened and loaded {l:?}"));
                    false
                }
                Ok(Err(e)) if !e.to_string().contains("inventory.redb") => {
                    wrong.push(format!("{what}: {e}"));
                    true
                }
                Ok(Err(_)) => true,
            };
            // A refused file is left as it was, for the operator to recover from.
            if refused && std::fs::read(&file).unwrap() != bytes {
                wrong.push(format!("{what}: refused, but the file was changed"));
            }
            std::fs::write(&file, &bytes).unwrap();
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Reading a store without a server (`check-config`) changes no byte of it.
#[test]
fn reading_a_store_writes_nothing() {
    let state = tempfile::tempdir().unwrap();
    {
        let s = Store::open(state.path()).unwrap();
        let hosts = vec![host("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24")];
        s.apply(&Change::diff(&[], &[], &hosts, &[])).unwrap();
    }
    let file = state.path().join(store::FILE_NAME);
    let before = std::fs::read(&file).unwrap();
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    {
        let s = Store::open_existing(state.path()).unwrap().unwrap();
        assert_eq!(s.load().unwrap().0.len(), 1);
    }
    assert!(
        std::fs::read(&file).unwrap() == before,
        "the store was written"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn startup_merges_files_over_store() {
    let f = Files::new();
    let state = tempfile::tempdir().unwrap();
    let store = Store::open(state.path()).unwrap();
    // The store holds cn1 (edited through the API) and cn9 (added through the API).
    let mut cn1 = host("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24");
    cn1.provision = false;
    let stored = vec![cn1, host("cn9", "aa:bb:cc:00:00:09", "10.0.0.9/24")];
    store
        .apply(&Change::diff(&[], &[], &stored, &[f.image("img")]))
        .unwrap();
    // The file names cn1 and cn2.
    let file = f.dir.path().join("hosts.json");
    let file_hosts = vec![
        host("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24"),
        host("cn2", "aa:bb:cc:00:00:02", "10.0.0.2/24"),
    ];
    std::fs::write(&file, load::hosts_to_json(&file_hosts)).unwrap();

    let s = startup(Some(&store), Some(&file), None, &f.roots(), None).unwrap();
    let names: Vec<&str> = s
        .inventory
        .hosts()
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["cn1", "cn9", "cn2"]);
    assert!(
        s.inventory.host("cn1").unwrap().provision,
        "the file wins for cn1"
    );
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    assert!(
        s.warnings[0].starts_with("host cn1: the entry from"),
        "{:?}",
        s.warnings
    );
    assert_eq!(
        store.load().unwrap().0.len(),
        3,
        "merged result written back"
    );

    // A file that makes the merged inventory invalid stops the start and leaves the store.
    let bad = vec![host("cn3", "aa:bb:cc:00:00:09", "10.0.0.3/24")];
    std::fs::write(&file, load::hosts_to_json(&bad)).unwrap();
    let err = startup(Some(&store), Some(&file), None, &f.roots(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("host cn3: MAC aa:bb:cc:00:00:09 is also on host cn9"),
        "{err}"
    );
    assert_eq!(store.load().unwrap().0.len(), 3);

    // A restart with the file unchanged keeps what changed since in the store (cn1
    // reported complete): only an entry the file changed wins again.
    std::fs::write(&file, load::hosts_to_json(&file_hosts)).unwrap();
    startup(Some(&store), Some(&file), None, &f.roots(), None).unwrap();
    let mut done = store.load().unwrap().0;
    done.iter_mut().for_each(|h| h.provision = h.name != "cn1");
    store
        .apply(&Change::diff(&store.load().unwrap().0, &[], &done, &[]))
        .unwrap();
    let s = startup(Some(&store), Some(&file), None, &f.roots(), None).unwrap();
    assert!(!s.inventory.host("cn1").unwrap().provision, "complete kept");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let mut edited = file_hosts.clone();
    edited[0].tags = vec!["rack1".into()];
    std::fs::write(&file, load::hosts_to_json(&edited)).unwrap();
    let s = startup(Some(&store), Some(&file), None, &f.roots(), None).unwrap();
    let cn1 = s.inventory.host("cn1").unwrap();
    assert!(
        cn1.provision && cn1.tags == ["rack1"],
        "the edited entry wins"
    );
}

#[test]
fn exports_round_trip() {
    let f = Files::new();
    let hosts = vec![host("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24")];
    let images = vec![f.image("img")];
    let j = load::parse(
        &load::hosts_to_json(&hosts),
        Format::Json,
        Kind::Hosts,
        Path::new("/"),
        "x",
    )
    .unwrap();
    assert_eq!(j.hosts, hosts);
    let j = load::parse(
        &load::images_to_json(&images),
        Format::Json,
        Kind::Images,
        Path::new("/"),
        "x",
    )
    .unwrap();
    assert_eq!(j.images, images);
    let t = load::to_toml(&hosts, &images).unwrap();
    let back = load::parse(&t, Format::Toml, Kind::Hosts, Path::new("/"), "x").unwrap();
    assert_eq!((back.hosts, back.images), (hosts, images));
}

/// Unreadable entries and whole-inventory problems are reported together.
#[test]
fn plan_reports_unreadable_entries_and_validation_together() {
    let f = Files::new();
    let hosts = f.dir.path().join("hosts.json");
    std::fs::write(
        &hosts,
        r#"[{"name":"cn1","interfaces":[{"mac":"zz"}]},
            {"name":"cn2","provision":true,"boot_image":"broken","interfaces":[{"mac":"aa:bb:cc:00:00:02"}]},
            {"name":"cn3","interfaces":[{"mac":"aa:bb:cc:00:00:02"}]}]"#,
    )
    .unwrap();
    let images = f.dir.path().join("images.json");
    std::fs::write(&images, r#"[{"name":"broken","kernel":42}]"#).unwrap();
    let err = plan(
        (vec![], vec![]),
        None,
        Some(&hosts),
        Some(&images),
        &Roots::default(),
        &FileEntries::default(),
        None,
    )
    .unwrap_err();
    let InventoryError::Invalid { errors, origin } = &err else {
        panic!("{err}")
    };
    assert!(
        origin.contains("hosts.json + ") && origin.ends_with("images.json"),
        "{origin}"
    );
    let msgs = errors.messages();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(
        msgs[0].starts_with("host cn1: invalid MAC address \"zz\""),
        "{msgs:?}"
    );
    assert!(
        msgs[1].starts_with("image broken: invalid type"),
        "{msgs:?}"
    );
    assert_eq!(
        msgs[2],
        "host cn3: MAC aa:bb:cc:00:00:02 is also on host cn2"
    );
}

#[test]
fn a_name_twice_in_one_file_is_an_error() {
    let j = r#"[{"name":"cn1"},{"name":"cn2"},{"name":"cn1","provision":true}]"#;
    let err = load::parse(j, Format::Json, Kind::Hosts, Path::new("/"), "h.json").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid inventory file h.json: host cn1: defined more than once"
    );
    let t = "[[image]]\nname = \"a\"\n[[image]]\nname = \"a\"\n";
    let err = load::parse(t, Format::Toml, Kind::Hosts, Path::new("/"), "i.toml").unwrap_err();
    assert!(
        err.to_string().ends_with("image a: defined more than once"),
        "{err}"
    );
}

mod props {
    use proptest::prelude::*;

    use super::*;

    /// A Grendel hosts.json entry with values of any shape where the fields are.
    fn host_json() -> impl Strategy<Value = String> {
        let text = prop_oneof![
            "[a-zA-Z0-9.:/_-]{0,20}".prop_map(|s| format!("{s:?}")),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("null".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            prop::sample::select(vec![
                "\"10.0.0.0/24\"",
                "\"255.255.255.255\"",
                "\"10.0.0.1/0\"",
                "\"ff:ff:ff:ff:ff:ff\"",
                "\"aa:bb:cc:00:00:01\"",
                "65536",
                "\"9000\"",
                "\"10\"",
                "true",
            ])
            .prop_map(str::to_string),
        ];
        (text.clone(), text.clone(), text.clone(), text.clone(), text).prop_map(
            |(name, ip, mac, mtu, bmc)| {
                format!(
                    r#"{{"name":{name},"provision":false,"interfaces":[{{"ip":{ip},"mac":{mac},"mtu":{mtu},"bmc":{bmc}}}]}}"#
                )
            },
        )
    }

    proptest! {
        /// Any values in a hosts file are read, or refused naming their entry, and the
        /// result validated, without a panic.
        #[test]
        fn any_host_values_never_panic(hosts in prop::collection::vec(host_json(), 0..6)) {
            let text = format!("[{}]", hosts.join(","));
            if let Ok(loaded) = load::parse_lenient(&text, Format::Json, Kind::Hosts, Path::new("/"), "p") {
                let _ = validate::validate(&loaded.hosts, &loaded.images, &Roots::default());
                let _ = Inventory::new(loaded.hosts, loaded.images, &Roots::default());
            }
        }
    }
}

/// A Grendel v0.2 fixture (written for these tests from Grendel's model: numeric ids,
/// KSUID uids, `null` for empty lists, `""` for a BMC without a MAC).
fn grendel_fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/inventory/testdata")
            .join(name),
    )
    .unwrap()
}

#[test]
fn grendel_dump_imports_hosts_and_images_and_skips_users() {
    let f = Files::new();
    let text = grendel_fixture("grendel-dump.json");
    let loaded = load::parse(&text, Format::Json, Kind::Hosts, f.dir.path(), "dump").unwrap();
    let names: Vec<&str> = loaded.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["tux01", "tux02", "gpu01"]);
    assert_eq!(loaded.images.len(), 1);
    assert_eq!(loaded.images[0].kernel, f.path("vmlinuz"));
    let tux01 = &loaded.hosts[0];
    assert_eq!(
        (tux01.id.as_str(), tux01.uid.as_str()),
        ("1", "2aB3cD4eF5gH6iJ7kL8mN9oP0qR")
    );
    assert_eq!(tux01.tags, ["compute", "rack:a1"]);
    assert_eq!(tux01.interfaces[0].id, "1");
    // `"mac": ""` is a BMC reached by IP only.
    assert_eq!(tux01.bmc().unwrap().mac, None);
    assert!(loaded.hosts[1].tags.is_empty(), "tags: null reads as none");
    assert_eq!(loaded.hosts[2].bonds.len(), 1);
    // One warning: the two users, named; no unknown-key warning for id/uid.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("2 users skipped (admin, operator)"),
        "{:?}",
        loaded.warnings
    );
    // The whole dump is a valid inventory.
    let inv = Inventory::new(loaded.hosts, loaded.images, &f.roots()).unwrap();
    assert_eq!(inv.host("gpu01").unwrap().interfaces[0].vlan, "120");
    // gpu01's bond has a MAC of its own: indexed for DHCP, with its address.
    let bond = inv
        .lookup_mac("52:54:00:b0:00:0f".parse().unwrap())
        .unwrap();
    assert_eq!(bond.host.name, "gpu01");
    assert!(bond.bond && !bond.nic.bmc);
    assert_eq!(
        (bond.nic.ifname.as_str(), bond.nic.ip.as_deref()),
        ("bond0", Some("10.20.2.21/24"))
    );
    assert!(inv
        .lease_macs()
        .any(|(h, m)| h.name == "gpu01" && m == bond.nic.mac.unwrap()));
}

/// Bonds are checked like interfaces: readable, their MAC on no other host (a member's
/// MAC is fine), their address a host's.
#[test]
fn bonds_are_validated() {
    let f = Files::new();
    let with_bond = |name: &str, mac: &str, bond: serde_json::Value| {
        let mut h = Host::with_interface(name, mac.parse().unwrap(), Some("10.0.0.5/24"));
        h.provision = false;
        h.bonds.push(bond);
        h
    };
    let ok = with_bond(
        "cn1",
        "aa:bb:cc:00:00:01",
        serde_json::json!({"mac": "aa:bb:cc:00:00:01", "ip": "10.0.0.6/24", "peers": ["eno1"]}),
    );
    validate::validate_for(std::slice::from_ref(&ok), &[], &[], &f.roots()).unwrap();
    let rows = [
        (
            serde_json::json!({"mac": "not-a-mac"}),
            "host cn2: bond 0: ",
        ),
        (
            serde_json::json!({"mac": "aa:bb:cc:00:00:01"}),
            "host cn2: MAC aa:bb:cc:00:00:01 is also on host cn1",
        ),
        (
            serde_json::json!({"mac": "aa:bb:cc:00:00:09", "ip": "127.0.0.3/8"}),
            "host cn2: bond 0: address 127.0.0.3/8 is a loopback address",
        ),
    ];
    for (bond, want) in rows {
        let bad = with_bond("cn2", "aa:bb:cc:00:00:02", bond);
        let errs = validate::validate_for(&[ok.clone(), bad], &[], &[], &f.roots())
            .unwrap_err()
            .to_string();
        assert!(errs.contains(want), "got {errs}, want {want}");
    }
}

#[test]
fn grendel_numeric_ids_and_uids_round_trip() {
    let text = grendel_fixture("grendel-node-show.json");
    let loaded = load::parse(&text, Format::Json, Kind::Hosts, Path::new("/"), "show").unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let out: serde_json::Value = serde_json::from_str(&load::hosts_to_json(&loaded.hosts)).unwrap();
    let h = &out[0];
    // Numbers stay numbers, the KSUID stays text.
    assert_eq!(h["id"], serde_json::json!(12));
    assert_eq!(h["uid"], serde_json::json!("2bC4dE5fG6hI7jK8lM9nO0pQ1rS"));
    assert_eq!(h["interfaces"][0]["id"], serde_json::json!(40));
    // Read back: the same hosts.
    let again = load::parse(
        &out.to_string(),
        Format::Json,
        Kind::Hosts,
        Path::new("/"),
        "again",
    )
    .unwrap();
    assert_eq!(again.hosts, loaded.hosts);
    // A KSUID id (older Grendel) is kept as text.
    let ksuid: Host =
        serde_json::from_str(r#"{"id": "1zQ8mV2kP0aB3cD4eF5gH6iJ7kL", "name": "x"}"#).unwrap();
    assert_eq!(
        serde_json::to_value(&ksuid).unwrap()["id"],
        serde_json::json!("1zQ8mV2kP0aB3cD4eF5gH6iJ7kL")
    );
}

#[test]
fn dump_restores_to_the_same_inventory() {
    let f = Files::new();
    let loaded = load::parse(
        &grendel_fixture("grendel-dump.json"),
        Format::Json,
        Kind::Hosts,
        f.dir.path(),
        "dump",
    )
    .unwrap();
    let inv = Inventory::new(loaded.hosts, loaded.images, &f.roots()).unwrap();
    let dump = load::to_dump(&inv.hosts().to_vec(), inv.images());
    assert_eq!(dump["Users"], serde_json::json!([]));
    let back = load::from_json_value(dump, Kind::Hosts, "dump").unwrap();
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    assert_eq!(back.hosts, inv.hosts().to_vec());
    assert_eq!(back.images, inv.images());
}

#[test]
fn malformed_dumps_are_refused_with_the_reason() {
    for (text, want) in [
        (r#"{"Hosts": {"name": "a"}}"#, "\"Hosts\" must be an array"),
        (r#"{"Users": 3, "Hosts": []}"#, "\"Users\" must be an array"),
        (r#"{"Hosts": [{"name": "a", "id": [1]}]}"#, "host a"),
    ] {
        let e = load::parse(text, Format::Json, Kind::Hosts, Path::new("/"), "d").unwrap_err();
        assert!(e.to_string().contains(want), "{text}: {e}");
    }
}

/// `provision.default_image`: a provisioned host without `boot_image` boots it (DHCP,
/// HTTP and XDP all resolve it through `lookup_mac` / `boot_image_of`); the host keeps its
/// empty `boot_image`; a default naming no image is one error naming the key and the hosts.
#[test]
fn default_image_boots_hosts_without_boot_image() {
    let f = Files::new();
    let mut h1 = host("cn1", "aa:bb:cc:00:00:01", "10.0.0.1/24");
    h1.boot_image.clear();
    let mut h2 = host("cn2", "aa:bb:cc:00:00:02", "10.0.0.2/24");
    h2.boot_image.clear();
    let h3 = host("cn3", "aa:bb:cc:00:00:03", "10.0.0.3/24");
    let images = vec![f.image("img"), f.image("rocky")];
    let hosts = vec![h1, h2, h3];
    // Without a default: refused, as before.
    let e = Inventory::new(hosts.clone(), images.clone(), &f.roots()).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    // With one: valid, and the lookups give the default to cn1/cn2 only.
    let inv = Inventory::new_with_default(hosts.clone(), images.clone(), &f.roots(), Some("rocky"))
        .unwrap();
    let l = inv
        .lookup_mac("aa:bb:cc:00:00:01".parse().unwrap())
        .unwrap();
    assert_eq!(l.image.map(|i| i.name.as_str()), Some("rocky"));
    assert_eq!(l.host.boot_image, "", "the host itself is unchanged");
    let l = inv
        .lookup_mac("aa:bb:cc:00:00:03".parse().unwrap())
        .unwrap();
    assert_eq!(l.image.map(|i| i.name.as_str()), Some("img"));
    assert_eq!(inv.boot_image_name(inv.host("cn2").unwrap()), "rocky");
    // A default that is no image: one error for the key, naming the hosts relying on it.
    let e = Inventory::new_with_default(hosts.clone(), images.clone(), &f.roots(), Some("gone"))
        .unwrap_err();
    assert_eq!(
        e.messages(),
        ["provision.default_image \"gone\" is not an image, and hosts cn[1-2] name no boot_image"]
    );
    // ... and no error when every host names its image.
    Inventory::new_with_default(
        vec![hosts[2].clone()],
        images.clone(),
        &f.roots(),
        Some("gone"),
    )
    .unwrap();
    // An empty default is none.
    assert!(Inventory::new_with_default(hosts, images, &f.roots(), Some("")).is_err());
}
