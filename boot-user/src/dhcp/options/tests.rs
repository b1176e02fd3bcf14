//! Table tests of the option table: each preset, each condition, precedence, the
//! config's errors, and the class keys the XDP program must leave to the slow path.
use std::net::Ipv4Addr;
use std::path::Path;

use dhcproto::v4::{DhcpOption, MessageType};

use super::*;
use crate::config::Config;
use crate::dhcp::boot::PlainUrls;
use crate::dhcp::request::{ClientKind, Request};
use crate::dhcp::{decide, Context, Decision, Settings};
use crate::inventory::{Host, Inventory, Mac};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const URLS: PlainUrls = PlainUrls { port: 8080 };
/// Provisioned, tagged `arista`, `dellztd`, `proxmox` and `rack1`, 10.0.0.5.
const SW1: Mac = Mac([2, 0, 0, 0, 1, 1]);
/// Not provisioned, tagged `arista`, 10.0.1.6.
const SW2: Mac = Mac([2, 0, 0, 0, 1, 2]);
/// Provisioned, no tags, 10.0.0.7.
const CN7: Mac = Mac([2, 0, 0, 0, 1, 7]);

fn inventory() -> Inventory {
    let host = |name: &str, mac, ip: &str, provision, tags: &[&str]| {
        let mut h = Host::with_interface(name, mac, Some(ip));
        h.provision = provision;
        h.tags = tags.iter().map(|t| t.to_string()).collect();
        h
    };
    Inventory::from_parts_unchecked(
        vec![
            host(
                "sw1",
                SW1,
                "10.0.0.5/16",
                true,
                &["arista", "dellztd", "proxmox", "rack1"],
            ),
            host("sw2", SW2, "10.0.1.6/16", false, &["arista"]),
            host("cn7", CN7, "10.0.0.7/16", true, &[]),
        ],
        vec![],
    )
}

/// The settings of a `[dhcp]` section.
fn settings(dhcp: &str) -> Settings {
    let cfg = Config::from_toml(&format!("[dhcp]\n{dhcp}"), Path::new("t.toml")).unwrap();
    assert!(cfg.unknown_keys.is_empty(), "{:?}", cfg.unknown_keys);
    Settings::from_config(&cfg).unwrap()
}

/// Every problem of a `[dhcp]` section, as `key: message`.
fn problems(dhcp: &str) -> Vec<String> {
    match Config::from_toml(&format!("[dhcp]\n{dhcp}"), Path::new("t.toml")) {
        Ok(_) => vec![],
        Err(crate::config::ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(|p| p.to_string()).collect()
        }
        Err(e) => panic!("{e}"),
    }
}

struct Class<'a> {
    vendor: Option<&'a [u8]>,
    user: Option<&'a [u8]>,
    arch: Option<u16>,
}

const PLAIN: Class<'static> = Class {
    vendor: None,
    user: None,
    arch: None,
};

fn vendor(v: &[u8]) -> Class<'_> {
    Class {
        vendor: Some(v),
        ..PLAIN
    }
}

/// The options (code -> data) of the OFFER to `mac`'s DISCOVER with `class`.
fn offer(s: &Settings, mac: Mac, class: &Class<'_>) -> Vec<(u8, Vec<u8>)> {
    let inv = inventory();
    let mut req = Request::new(MessageType::Discover, mac, ClientKind::Os);
    req.vendor_class = class.vendor.map(<[u8]>::to_vec);
    req.user_class = class.user.map(<[u8]>::to_vec);
    req.arch = class.arch;
    let ctx = Context {
        settings: s,
        server_ip: SERVER,
        host: inv.lookup_mac(mac),
        urls: &URLS,
        dns_rotation: 0,
    };
    let Decision::Reply(r) = decide(&req, &ctx) else {
        panic!("no reply to {mac}")
    };
    // Decoded again from the bytes: what a client reads.
    let m = crate::dhcp::wire::parse(&r.bytes()).unwrap();
    m.opts()
        .iter()
        .map(|(c, o)| (u8::from(*c), data_of(o)))
        .collect()
}

/// An option's data bytes as on the wire.
fn data_of(o: &DhcpOption) -> Vec<u8> {
    use dhcproto::Encodable;
    let b = o.to_vec().unwrap();
    b[2..].to_vec()
}

fn get(opts: &[(u8, Vec<u8>)], code: u8) -> Option<String> {
    opts.iter()
        .find(|(c, _)| *c == code)
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
}

/// The plain URLs' boot URL of a host (PlainUrls' token is the host name).
fn url(host: &str, path: &str) -> String {
    format!("http://{SERVER}:8080/boot/{host}/{path}")
}

/// Each of Grendel's seven hooks: what it adds, and that it needs its tag or class and
/// a provisioned host.
#[test]
fn every_preset_gives_grendels_option() {
    let s = settings("presets = [\"grendel\"]");
    let sw1 = offer(&s, SW1, &PLAIN);
    assert_eq!(get(&sw1, 67), Some(url("sw1", "kickstart")), "arista");
    assert_eq!(get(&sw1, 240), Some(url("sw1", "kickstart")), "dellztd");
    assert_eq!(
        get(&sw1, 250),
        Some(url("sw1", "provision/proxmox")),
        "proxmox"
    );
    // Not provisioned: no hook at all, whatever the tags and classes.
    let sw2 = offer(&s, SW2, &PLAIN);
    assert_eq!(get(&sw2, 67), None);
    assert_eq!(get(&offer(&s, SW2, &vendor(b"iDRAC")), 43), None);
    // Untagged provisioned host: none of the tag presets.
    let cn7 = offer(&s, CN7, &PLAIN);
    for code in [67, 240, 250, 43, 66] {
        assert_eq!(get(&cn7, code), None, "option {code}");
    }
    for class in [b"NVIDIA".as_slice(), b"Mellanox"] {
        let o = offer(&s, CN7, &vendor(class));
        assert_eq!(
            get(&o, 66),
            Some(format!(
                "http://{SERVER}:8080/repo/onie/,http://{SERVER}:8080/boot/cn7/,"
            )),
            "mellanox {class:?}"
        );
        assert_eq!(
            get(&o, 67),
            Some("onie-installer-mlnx-os.bin,kickstart,".into())
        );
    }
    // Exact class names: a longer one is another vendor.
    assert_eq!(get(&offer(&s, CN7, &vendor(b"NVIDIA-X")), 66), None);
    for user in [
        b"SONiC-ZTP".as_slice(),
        b"\x09SONiC-ZTP",
        b"\x04abcd\x09SONiC-ZTP",
    ] {
        let o = offer(
            &s,
            CN7,
            &Class {
                user: Some(user),
                ..PLAIN
            },
        );
        assert_eq!(get(&o, 67), Some(url("cn7", "kickstart")), "sonic {user:?}");
    }
    let sonic_prefix = Class {
        user: Some(b"SONiC-ZTP2"),
        ..PLAIN
    };
    assert_eq!(get(&offer(&s, CN7, &sonic_prefix), 67), None);
    for eaton in [b"Eaton".as_slice(), b"Eaton Network-M3"] {
        let o = offer(&s, CN7, &vendor(eaton));
        assert_eq!(
            get(&o, 43),
            Some(url("cn7", "kickstart")),
            "eaton {eaton:?}"
        );
    }
    let o = offer(&s, CN7, &vendor(b"iDRAC"));
    assert_eq!(
        get(&o, 43),
        Some(format!(
            "-f idrac-config.json -i {SERVER} -s 5 -n boot/cn7/provision"
        ))
    );
    assert_eq!(get(&offer(&s, CN7, &vendor(b"idrac")), 43), None);
}

/// The default presets are the tag ones; each may be named alone.
#[test]
fn presets_by_name_and_default() {
    let default = settings("");
    let o = offer(&default, SW1, &PLAIN);
    assert!(get(&o, 67).is_some() && get(&o, 240).is_some() && get(&o, 250).is_some());
    assert_eq!(get(&offer(&default, CN7, &vendor(b"iDRAC")), 43), None);
    let idrac = settings("presets = [\"idrac\"]");
    assert!(get(&offer(&idrac, CN7, &vendor(b"iDRAC")), 43).is_some());
    assert_eq!(get(&offer(&idrac, SW1, &PLAIN), 240), None);
    let none = settings("presets = []");
    assert_eq!(get(&offer(&none, SW1, &PLAIN), 240), None);
    assert!(none.options.rules.is_empty());
}

/// Each condition alone, each value type, and a rule with no condition.
#[test]
fn site_rules_by_condition_and_value() {
    assert_eq!(
        problems(
            r#"[[dhcp.options]]
code = 229
u8 = 9
url = "provision/ztp"
"#
        ),
        ["dhcp.options[0]: one value only, it has u8, url"]
    );
    let s = settings(
        r#"presets = []
[[dhcp.options]]
code = 42
ip = ["10.0.0.123", "10.0.0.124"]
[[dhcp.options]]
code = 7
ip = ["10.0.9.9"]
subnet = "10.0.1.0/24"
[[dhcp.options]]
code = 224
text = "for sw1"
hosts = "sw[1-1]"
[[dhcp.options]]
code = 225
u16 = 513
tag = "rack1"
[[dhcp.options]]
code = 226
hex = "de:ad:be:ef"
vendor_class = "MSFT*"
[[dhcp.options]]
code = 227
u32 = 7
user_class = "lab"
[[dhcp.options]]
code = 228
bool = true
arch = 7
[[dhcp.options]]
code = 229
url = "provision/ztp"
provisioned = true
"#,
    );
    let raw =
        |o: &[(u8, Vec<u8>)], code: u8| o.iter().find(|(c, _)| *c == code).map(|x| x.1.clone());
    let sw1 = offer(&s, SW1, &PLAIN);
    assert_eq!(raw(&sw1, 42), Some(vec![10, 0, 0, 123, 10, 0, 0, 124]));
    assert_eq!(raw(&sw1, 7), None, "sw1 is outside 10.0.1.0/24");
    assert_eq!(get(&sw1, 224).as_deref(), Some("for sw1"));
    assert_eq!(raw(&sw1, 225), Some(vec![2, 1]));
    assert_eq!(raw(&sw1, 226), None);
    assert_eq!(get(&sw1, 229), Some(url("sw1", "provision/ztp")));
    let sw2 = offer(&s, SW2, &PLAIN);
    assert_eq!(raw(&sw2, 7), Some(vec![10, 0, 9, 9]));
    assert_eq!(raw(&sw2, 224), None);
    assert_eq!(raw(&sw2, 225), None);
    assert_eq!(raw(&sw2, 229), None, "sw2 is not provisioned");
    let msft = offer(&s, SW2, &vendor(b"MSFT 5.0"));
    assert_eq!(raw(&msft, 226), Some(vec![0xde, 0xad, 0xbe, 0xef]));
    let lab = Class {
        user: Some(b"\x03lab"),
        ..PLAIN
    };
    assert_eq!(raw(&offer(&s, SW2, &lab), 227), Some(vec![0, 0, 0, 7]));
    let uefi = Class {
        arch: Some(7),
        ..PLAIN
    };
    assert_eq!(raw(&offer(&s, SW2, &uefi), 228), Some(vec![1]));
    let bios = Class {
        arch: Some(0),
        ..PLAIN
    };
    assert_eq!(raw(&offer(&s, SW2, &bios), 228), None);
}

/// Most specific wins: hosts over tag over class over subnet over everything; among
/// equals the later; and a table option replaces the builder's own (here the router).
#[test]
fn precedence() {
    let s = settings(
        r#"presets = []
[[dhcp.options]]
code = 3
ip = ["10.0.0.250"]
[[dhcp.options]]
code = 224
text = "hosts"
hosts = "sw1"
[[dhcp.options]]
code = 224
text = "tag"
tag = "rack1"
[[dhcp.options]]
code = 224
text = "class"
vendor_class = "X"
[[dhcp.options]]
code = 224
text = "subnet"
subnet = "10.0.0.0/16"
[[dhcp.options]]
code = 224
text = "all"
[[dhcp.options]]
code = 224
text = "all, later"
"#,
    );
    let x = vendor(b"X");
    assert_eq!(get(&offer(&s, SW1, &x), 224).as_deref(), Some("hosts"));
    let mut no_hosts = s.clone();
    no_hosts.options.rules.retain(|r| r.hosts.is_none());
    assert_eq!(get(&offer(&no_hosts, SW1, &x), 224).as_deref(), Some("tag"));
    assert_eq!(get(&offer(&s, CN7, &x), 224).as_deref(), Some("class"));
    assert_eq!(get(&offer(&s, CN7, &PLAIN), 224).as_deref(), Some("subnet"));
    let mut no_subnet = s.clone();
    no_subnet.options.rules.retain(|r| r.subnet.is_none());
    assert_eq!(
        get(&offer(&no_subnet, CN7, &PLAIN), 224).as_deref(),
        Some("all, later")
    );
    let router = offer(&s, CN7, &PLAIN);
    let routers: Vec<_> = router.iter().filter(|(c, _)| *c == 3).collect();
    assert_eq!(routers.len(), 1);
    assert_eq!(routers[0].1, vec![10, 0, 0, 250]);
}

/// Every bad entry is refused, naming its key; all of them at once.
#[test]
fn bad_entries_name_their_key() {
    let p = problems(
        r#"presets = ["grendel", "cisco"]
[[dhcp.options]]
code = 53
u8 = 1
[[dhcp.options]]
code = 300
text = "x"
[[dhcp.options]]
code = 42
[[dhcp.options]]
code = 42
ip = ["10.0.0"]
[[dhcp.options]]
code = 43
hex = "zz"
[[dhcp.options]]
code = 1
text = "abc"
[[dhcp.options]]
code = 42
ip = ["10.0.0.1"]
subnet = "10.0.0.0/33"
hosts = "cn[1-"
[[dhcp.options]]
code = 200
u8 = 256
[[dhcp.options]]
text = "no code"
[[dhcp.options]]
code = 43
url = "../etc"
tag = ""
"#,
    );
    let keys: Vec<&str> = p.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "dhcp.presets[1]",
            "dhcp.options[0].code",
            "dhcp.options[1].code",
            "dhcp.options[2]",
            "dhcp.options[3].ip",
            "dhcp.options[4].hex",
            "dhcp.options[5].text",
            "dhcp.options[6].subnet",
            "dhcp.options[6].hosts",
            "dhcp.options[7].u8",
            "dhcp.options[8].code",
            "dhcp.options[9].url",
            "dhcp.options[9].tag",
        ],
        "{p:#?}"
    );
    assert!(p[0].contains("unknown preset \"cisco\""), "{}", p[0]);
    assert!(p[1].contains("protocol's own"), "{}", p[1]);
    assert!(p[6].contains("not a valid value of option 1"), "{}", p[6]);
}

/// The shared rule of the XDP class table: no class rule, no key left to the slow path;
/// each class rule, exactly the keys whose requests it may hold for.
#[test]
fn class_keys_left_to_the_slow_path() {
    let keys = || {
        let arches = (0..=ClassKey::MAX_ARCH).chain([ClassKey::NO_ARCH]);
        arches.flat_map(|arch| {
            (0..=ClassKey::VENDOR_OTHER).flat_map(move |vendor| {
                [ClassKey::USER_NONE, ClassKey::USER_IPXE].map(|user| ClassKey {
                    arch,
                    vendor,
                    user,
                })
            })
        })
    };
    let passed = |dhcp: &str| -> Vec<ClassKey> {
        let s = settings(dhcp);
        keys().filter(|k| s.options.class_may_match(k)).collect()
    };
    assert!(
        passed("").is_empty(),
        "the default presets cost XDP nothing"
    );
    assert!(passed("presets = [\"arista\", \"dellztd\", \"proxmox\"]").is_empty());
    let idrac = passed("presets = [\"idrac\"]");
    assert!(!idrac.is_empty());
    assert!(idrac.iter().all(|k| k.vendor == ClassKey::VENDOR_OTHER));
    assert_eq!(
        idrac.len(),
        keys()
            .filter(|k| k.vendor == ClassKey::VENDOR_OTHER)
            .count()
    );
    // The program leaves every user class but `iPXE` to the slow path already.
    assert!(passed("presets = [\"sonic-ztp\"]").is_empty());
    let ipxe =
        passed("presets = []\n[[dhcp.options]]\ncode = 224\nu8 = 1\nuser_class = \"iPXE\"\n");
    assert!(!ipxe.is_empty());
    assert!(ipxe.iter().all(|k| k.user == ClassKey::USER_IPXE));
    let arch = passed("presets = []\n[[dhcp.options]]\ncode = 224\nu8 = 1\narch = 7\n");
    assert!(arch.iter().all(|k| k.arch == 7));
    assert_eq!(arch.len(), 8);
    let pxe = passed("presets = []\n[[dhcp.options]]\ncode = 224\nu8 = 1\nvendor_class = \"PXEClient:Arch:00007*\"\n");
    assert!(pxe.iter().all(|k| k.vendor == ClassKey::VENDOR_PXE));
    let any =
        passed("presets = []\n[[dhcp.options]]\ncode = 224\nu8 = 1\nvendor_class = \"PXE*\"\n");
    assert!(any
        .iter()
        .all(|k| matches!(k.vendor, ClassKey::VENDOR_PXE | ClassKey::VENDOR_OTHER)));
    assert!(any.iter().any(|k| k.vendor == ClassKey::VENDOR_PXE));
    assert!(any.iter().any(|k| k.vendor == ClassKey::VENDOR_OTHER));
}

#[test]
fn user_class_entries_follow_rfc3004_when_they_add_up() {
    assert_eq!(user_class_entries(b"SONiC-ZTP"), [b"SONiC-ZTP".as_slice()]);
    assert_eq!(user_class_entries(b"\x02ab\x01c"), [b"ab".as_slice(), b"c"]);
    assert_eq!(user_class_entries(b"\x05ab"), [b"\x05ab".as_slice()]);
    assert_eq!(user_class_entries(b""), [b"".as_slice()]);
}
