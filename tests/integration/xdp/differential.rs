//! Differential equivalence: a corpus of requests (every client kind, DISCOVER and
//! REQUEST in each state, wrong address, foreign server, broadcast flag, option 97 or
//! not, shuffled option order, relayed, relay fields that make no sense, VLAN-tagged) through the loaded program with
//! BPF_PROG_TEST_RUN and through the slow path (a BMC interface's lease-only answers among them) (strict parser, classifier, builder,
//! frame encoder). Both replies must decode (dhcproto) to the same message field by
//! field and option by option, with the same addressing, and be the same bytes.
use std::net::Ipv4Addr;

use dhcproto::v4::{Message, MessageType};
use dhcproto::{Decodable, Decoder};
use xboot::dhcp::frame::parse_frame;
use xboot::xdp::loader::{XDP_PASS, XDP_TX};

use super::fixture::*;
use crate::netns;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The program must answer (and equal the slow path).
    Tx,
    /// The program must pass the frame up.
    Pass,
    /// The program must pass the frame up and the slow path be silent.
    Silent,
}

/// Runs one request through both paths and compares. Returns the program's action.
pub fn check(lab: &mut Lab, name: &str, req: &Req, expect: Expect) -> u32 {
    let frame = req.frame();
    let rotation = lab.rotation();
    let want = lab.slow_path(&frame, rotation);
    let out = lab.run(&frame);
    match (out.action, &want, expect) {
        (XDP_TX, _, Expect::Pass | Expect::Silent) => {
            panic!("{name}: the program answered a request it must pass up")
        }
        (XDP_TX, Some(w), _) => compare(name, &out.frame, w),
        (XDP_TX, None, _) => panic!("{name}: the program answered a request the slow path ignores"),
        (XDP_PASS, _, Expect::Pass) => {}
        (XDP_PASS, None, Expect::Silent) => {}
        (XDP_PASS, Some(_), Expect::Silent) => {
            panic!("{name}: the slow path answers a request both paths must leave silent")
        }
        (XDP_PASS, w, Expect::Tx) => panic!(
            "{name}: the program passed it up (slow path answers: {}); counters {:?}, reasons so far {:?}",
            w.is_some(),
            lab.fp.stats().counters(),
            lab.fp.stats().reasons()
        ),
        (a, _, _) => panic!("{name}: unexpected XDP action {a}"),
    }
    if expect == Expect::Tx {
        assert!(
            want.is_some(),
            "{name}: the slow path does not answer this row; fix the corpus"
        );
    }
    out.action
}

/// Addressing, then the decoded message field by field and option by option, then bytes.
pub fn compare(name: &str, got: &[u8], want: &[u8]) {
    let g = parse_frame(got)
        .unwrap_or_else(|e| panic!("{name}: the program's frame does not parse: {e}"));
    let w = parse_frame(want).unwrap();
    assert_eq!(
        (g.dst_mac, g.src_mac, g.vlan, g.src, g.dst, g.ttl),
        (w.dst_mac, w.src_mac, w.vlan, w.src, w.dst, w.ttl),
        "{name}: addressing"
    );
    let gm = Message::decode(&mut Decoder::new(g.payload)).unwrap();
    let wm = Message::decode(&mut Decoder::new(w.payload)).unwrap();
    let fields = |m: &Message| {
        (
            (
                m.opcode(),
                m.htype(),
                m.hops(),
                m.xid(),
                m.secs(),
                m.flags(),
            ),
            (m.ciaddr(), m.yiaddr(), m.siaddr(), m.giaddr()),
            (
                m.chaddr().to_vec(),
                m.sname().map(<[u8]>::to_vec),
                m.fname().map(<[u8]>::to_vec),
            ),
        )
    };
    assert_eq!(fields(&gm), fields(&wm), "{name}: BOOTP fields");
    let gopts: Vec<_> = gm.opts().iter().collect();
    let wopts: Vec<_> = wm.opts().iter().collect();
    for (code, opt) in &wopts {
        assert_eq!(gm.opts().get(**code), Some(*opt), "{name}: option {code:?}");
    }
    assert_eq!(
        gopts.len(),
        wopts.len(),
        "{name}: extra options in {gopts:?}"
    );
    assert_eq!(got, want, "{name}: bytes");
}

const CN1_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

/// The corpus: (name, request, expectation).
fn corpus() -> Vec<(String, Req, Expect)> {
    use Expect::*;
    let mut rows = vec![];
    let hosts = [
        ("cn1", CN1, CN1_IP),
        ("cn2", CN2_NO_PROVISION, Ipv4Addr::new(10, 0, 0, 6)),
        ("cn3", CN3_FIRMWARE, Ipv4Addr::new(10, 0, 0, 7)),
        // A BMC interface: every client kind gets the lease only, in both paths.
        ("cn1-bmc", CN1_BMC, CN1_BMC_IP),
        // A bond with a MAC of its own: the same.
        ("cn1-bond", CN1_BOND, CN1_BOND_IP),
    ];
    for (h, mac, ip) in hosts {
        for kind in KINDS {
            let n = |what: &str| format!("{h} {kind} {what}");
            let d = discover(kind, mac);
            rows.push((n("DISCOVER"), d.clone(), Tx));
            rows.push((
                n("DISCOVER broadcast"),
                Req {
                    flags: 0x8000,
                    ..d.clone()
                },
                Tx,
            ));
            let mut shuffled = d.clone();
            shuffled.opts.reverse();
            shuffled.xid = 0xfeed_beef;
            shuffled.pad_to = 548;
            rows.push((n("DISCOVER options reversed, padded to 548"), shuffled, Tx));
            rows.push((n("DISCOVER without 97"), d.clone().without(97), Tx));
            let s = selecting(kind, mac, ip, SERVER);
            rows.push((n("REQUEST selecting"), s.clone(), Tx));
            rows.push((
                n("REQUEST selecting broadcast"),
                Req {
                    flags: 0x8000,
                    ..s.clone()
                },
                Tx,
            ));
            let reboot = s.clone().without(54);
            rows.push((n("REQUEST init-reboot"), reboot.clone(), Tx));
            let renew = s.clone().without(54).without(50).unicast_from(ip);
            rows.push((n("REQUEST renewing"), renew.clone(), Tx));
            let rebind = Req {
                ciaddr: ip,
                ..s.clone().without(54).without(50)
            };
            rows.push((n("REQUEST rebinding"), rebind, Tx));
            let wrong = selecting(kind, mac, Ipv4Addr::new(10, 0, 0, 199), SERVER);
            rows.push((n("REQUEST wrong address -> NAK"), wrong, Tx));
            let wrong_reboot =
                selecting(kind, mac, Ipv4Addr::new(192, 168, 1, 1), SERVER).without(54);
            rows.push((
                n("REQUEST init-reboot wrong address -> NAK"),
                wrong_reboot,
                Tx,
            ));
            let wrong_renew = s
                .clone()
                .without(54)
                .without(50)
                .unicast_from(Ipv4Addr::new(10, 0, 0, 77));
            rows.push((n("REQUEST renewing wrong ciaddr -> NAK"), wrong_renew, Tx));
            let foreign = selecting(kind, mac, ip, Ipv4Addr::new(10, 0, 0, 2));
            rows.push((n("REQUEST foreign server -> silence"), foreign, Pass));
        }
    }
    // Relayed (cn5 behind RELAY) and VLAN-tagged (cn6 on VLAN 42).
    let cn5_ip = Ipv4Addr::new(10, 9, 0, 5);
    for kind in ["bios", "ipxe", "udhcpc"] {
        rows.push((
            format!("cn5 {kind} relayed DISCOVER"),
            discover(kind, CN5_RELAYED).relayed(),
            Tx,
        ));
        rows.push((
            format!("cn5 {kind} relayed REQUEST"),
            selecting(kind, CN5_RELAYED, cn5_ip, SERVER).relayed(),
            Tx,
        ));
        let wrong = selecting(kind, CN5_RELAYED, Ipv4Addr::new(10, 9, 0, 99), SERVER).relayed();
        rows.push((format!("cn5 {kind} relayed NAK"), wrong, Tx));
        let tag = |r: Req| Req {
            vlan: Some(VLAN),
            ..r
        };
        let cn6_ip = Ipv4Addr::new(10, 42, 0, 6);
        rows.push((
            format!("cn6 {kind} VLAN DISCOVER"),
            tag(discover(kind, CN6_VLAN)),
            Tx,
        ));
        rows.push((
            format!("cn6 {kind} VLAN REQUEST"),
            tag(selecting(kind, CN6_VLAN, cn6_ip, VLAN_SERVER)),
            Tx,
        ));
        rows.push((
            format!("cn1 {kind} on the wrong VLAN"),
            tag(discover(kind, CN1)),
            Pass,
        ));
    }
    // Relay fields that make no sense: both paths silent (the program passes them up).
    for (what, giaddr, hops) in [
        ("giaddr the server itself", SERVER, 1),
        ("giaddr loopback", Ipv4Addr::LOCALHOST, 1),
        ("giaddr broadcast", Ipv4Addr::BROADCAST, 1),
        ("giaddr multicast", Ipv4Addr::new(224, 0, 0, 9), 1),
        ("giaddr class E", Ipv4Addr::new(240, 0, 0, 1), 1),
        ("giaddr in 0.0.0.0/8", Ipv4Addr::new(0, 1, 2, 3), 1),
        ("no giaddr but hops 1", Ipv4Addr::UNSPECIFIED, 1),
        ("17 hops", RELAY, 17),
        ("255 hops", RELAY, 255),
    ] {
        for (host, mac, ip) in [("cn1", CN1, CN1_IP), ("cn5", CN5_RELAYED, cn5_ip)] {
            let edit = |r: Req| Req {
                giaddr,
                hops,
                ..r.relayed()
            };
            rows.push((
                format!("{host} relayed DISCOVER, {what} -> silence"),
                edit(discover("bios", mac)),
                Silent,
            ));
            rows.push((
                format!("{host} relayed REQUEST, {what} -> silence"),
                edit(selecting("ipxe", mac, ip, SERVER)),
                Silent,
            ));
        }
    }
    rows.push((
        "cn5 relayed DISCOVER, 16 hops".into(),
        Req {
            hops: 16,
            ..discover("bios", CN5_RELAYED).relayed()
        },
        Tx,
    ));
    // What the slow path answers or ignores, and the program leaves to it.
    rows.push((
        "unknown MAC DISCOVER".into(),
        discover("bios", UNKNOWN),
        Pass,
    ));
    rows.push((
        "unknown MAC REQUEST".into(),
        selecting("udhcpc", UNKNOWN, CN1_IP, SERVER),
        Pass,
    ));
    rows.push((
        "host without address".into(),
        discover("bios", CN4_NO_IP),
        Pass,
    ));
    for (t, what) in [
        (MessageType::Inform, "INFORM"),
        (MessageType::Release, "RELEASE"),
        (MessageType::Decline, "DECLINE"),
    ] {
        let r = Req::new(
            CN1,
            t,
            vec![
                (50, CN1_IP.octets().to_vec()),
                (54, SERVER.octets().to_vec()),
            ],
        )
        .unicast_from(CN1_IP);
        rows.push((format!("cn1 {what}"), r, Pass));
    }
    rows.push((
        "REQUEST without any address".into(),
        Req::new(CN1, MessageType::Request, vec![]),
        Pass,
    ));
    rows
}

/// The maps brought to the corpus's inventory by an incremental sync of the hosts that
/// changed (cn1 with its BMC and bond added, cn3 with another address and firmware
/// changed back, a host deleted) answer the whole corpus exactly as the slow path does,
/// as after a whole sync.
#[test]
fn xdp_replies_after_an_incremental_sync_equal_the_slow_path() {
    if netns::need_root() {
        return;
    }
    let full = inventory();
    let mut before: Vec<xboot::inventory::Host> = full.hosts().iter().skip(1).cloned().collect();
    before[1].interfaces[0].ip = Some("10.0.0.99/24".into());
    before[1].firmware.clear();
    before.push(host(
        "gone1",
        xboot::inventory::Mac([2, 0x99, 0, 0, 0, 1]),
        Some("10.0.0.98/24"),
        true,
        "",
    ));
    let mut lab = Lab::with(
        xboot::inventory::Inventory::from_parts_unchecked(before, vec![]),
        settings(),
    );
    let names: Vec<String> = ["cn1", "cn3", "gone1"].map(String::from).to_vec();
    let c = xboot::xdp::Compiler {
        settings: &lab.settings,
        urls: &URLS,
    };
    let r = lab
        .sync
        .sync_hosts(&mut lab.fp, &full, &names, &c, std::time::Instant::now())
        .unwrap();
    assert_eq!(
        (r.added, r.changed, r.removed, r.failed),
        (3, 1, 1, 0),
        "{r:?}"
    );
    lab.inv = full;
    assert_eq!(lab.sync.hosts(), 8);
    let (mut tx, rows) = (0, corpus());
    for (name, req, expect) in &rows {
        if check(&mut lab, name, req, *expect) == XDP_TX {
            tx += 1;
        }
    }
    assert!(tx > 300, "{tx}");
}

#[test]
fn xdp_replies_equal_the_slow_path() {
    if netns::need_root() {
        return;
    }
    let mut lab = Lab::new();
    assert_eq!(
        lab.sync.hosts(),
        8,
        "every interface with a MAC (boot, BMC, bond) has an entry"
    );
    let before = lab.fp.stats().counters();
    let rows = corpus();
    let (mut tx, mut pass) = (0, 0);
    for (name, req, expect) in &rows {
        match check(&mut lab, name, req, *expect) {
            XDP_TX => tx += 1,
            _ => pass += 1,
        }
    }
    let c = lab.fp.stats().counters().since(&before);
    eprintln!("differential corpus: {} requests, {tx} answered by XDP (equal to the slow path), {pass} passed up; {c:?}", rows.len());
    assert_eq!(c.frames(), rows.len() as u64, "every frame counted once");
    assert_eq!(c.answered + c.nak, tx as u64);
    assert!(c.nak >= 5 * 10 * 3 + 3, "NAK rows answered in XDP: {c:?}");
    assert!(tx > 300, "{tx}");
    // The BMC's and the bond's PXE DISCOVER, answered in XDP: their own address, no boot
    // file, no server.
    for (mac, ip) in [(CN1_BMC, CN1_BMC_IP), (CN1_BOND, CN1_BOND_IP)] {
        let out = lab.run(&discover("bios", mac).frame());
        assert_eq!(out.action, XDP_TX);
        let f = parse_frame(&out.frame).expect("a frame");
        let m = Message::decode(&mut Decoder::new(f.payload)).unwrap();
        assert_eq!(m.yiaddr(), ip);
        assert_eq!(m.siaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(m.fname().is_none_or(|f| f.iter().all(|b| *b == 0)), "{m:?}");
        assert!(m
            .opts()
            .get(dhcproto::v4::OptionCode::BootfileName)
            .is_none());
    }
}

/// Grendel's `dhcp.gateway` as the hosts' router (no subnet, no `router_octet4`): the
/// program's replies, compiled from the slow path's builder, carry the same option 3.
#[test]
fn xdp_replies_equal_the_slow_path_with_dhcp_gateway() {
    if netns::need_root() {
        return;
    }
    let gateway = Ipv4Addr::new(10, 0, 0, 200);
    let settings = xboot::dhcp::settings::Settings {
        router_octet4: 0,
        gateway: Some(gateway),
        ..settings()
    };
    let mut lab = Lab::with(inventory(), settings);
    let mut tx = 0;
    for (name, req, expect) in &corpus() {
        if check(&mut lab, name, req, *expect) == XDP_TX {
            tx += 1;
        }
    }
    assert!(tx > 300, "{tx}");
    // And the option is there: cn1's OFFER names the gateway as its router.
    let frame = Req::new(CN1, MessageType::Discover, vec![]).frame();
    let out = lab.run(&frame);
    assert_eq!(out.action, XDP_TX);
    let f = parse_frame(&out.frame).expect("a frame");
    let m = Message::decode(&mut Decoder::new(f.payload)).unwrap();
    assert_eq!(
        m.opts().get(dhcproto::v4::OptionCode::Router),
        Some(&dhcproto::v4::DhcpOption::Router(vec![gateway]))
    );
}

/// The option table: Grendel's seven presets and a site rule per condition. Options of
/// the host alone (everything, `subnet`, `hosts`, `tag`, the tag presets) are in the
/// program's templates, which answer exactly as the slow path; requests a client-class
/// rule may concern (here: option 60 neither `PXEClient` nor `HTTPClient` for the
/// vendor presets, arch 7 for a site rule) are
/// passed up by the class table, and the slow path gives them the class's options.
/// iPXE (option 77 `iPXE`) stays in XDP: the `sonic-ztp` preset cannot match it.
#[test]
fn xdp_replies_equal_the_slow_path_with_the_option_table() {
    if netns::need_root() {
        return;
    }
    let cfg = xboot::config::Config::from_toml(
        r#"[dhcp]
presets = ["grendel"]
[[dhcp.options]]
code = 42
ip = ["10.0.0.123"]
[[dhcp.options]]
code = 7
ip = ["10.0.0.124"]
subnet = "10.0.0.0/24"
[[dhcp.options]]
code = 224
text = "cn1 only"
hosts = "cn1"
[[dhcp.options]]
code = 225
u16 = 513
tag = "rack1"
[[dhcp.options]]
code = 226
u8 = 7
arch = 7
"#,
        std::path::Path::new("table.toml"),
    )
    .unwrap();
    let settings = xboot::dhcp::settings::Settings {
        options: xboot::dhcp::options::OptionTable::from_config(&cfg.dhcp).unwrap(),
        ..settings()
    };
    let mut hosts = inventory().hosts().to_vec();
    let tag = |h: &mut xboot::inventory::Host, tags: &[&str]| {
        h.tags = tags.iter().map(|t| t.to_string()).collect();
    };
    for h in &mut hosts {
        match h.name.as_str() {
            "cn1" => tag(h, &["arista", "rack1"]),
            "cn2" => tag(h, &["arista"]), // not provisioned: no preset
            "cn3" => tag(h, &["dellztd", "proxmox"]),
            _ => {}
        }
    }
    let inv = xboot::inventory::Inventory::from_parts_unchecked(hosts, vec![]);
    let mut lab = Lab::with(inv, settings);
    let passed_kinds = ["uefi", "udhcpc"];
    let (mut tx, mut pass) = (0, 0);
    let rows = corpus();
    for (name, req, expect) in &rows {
        let kind = name.split(' ').nth(1).unwrap_or("");
        let expect = match expect {
            Expect::Tx if passed_kinds.contains(&kind) => Expect::Pass,
            e => *e,
        };
        match check(&mut lab, name, req, expect) {
            XDP_TX => tx += 1,
            _ => pass += 1,
        }
    }
    eprintln!(
        "option table corpus: {} requests, {tx} answered by XDP (equal to the slow path), {pass} passed up",
        rows.len()
    );
    assert!(tx > 200, "{tx}");
    let decoded = |frame: &[u8]| {
        let f = parse_frame(frame).expect("a frame");
        Message::decode(&mut Decoder::new(f.payload)).unwrap()
    };
    let text = |m: &Message, code: u8| {
        m.opts()
            .iter()
            .find(|(c, _)| u8::from(**c) == code)
            .map(|(_, o)| {
                use dhcproto::Encodable;
                String::from_utf8_lossy(&o.to_vec().unwrap()[2..]).into_owned()
            })
    };
    // Host-level options, from XDP.
    let out = lab.run(&discover("dhclient", CN1).frame());
    assert_eq!(out.action, XDP_TX);
    let m = decoded(&out.frame);
    assert_eq!(
        text(&m, 67).as_deref(),
        Some("http://10.0.0.1:8080/boot/cn1/kickstart"),
        "arista"
    );
    assert_eq!(text(&m, 224).as_deref(), Some("cn1 only"));
    assert_eq!(text(&m, 225).as_deref(), Some("\x02\x01"));
    assert_eq!(text(&m, 42).as_deref(), Some("\x0a\x00\x00\x7b"));
    assert_eq!(text(&m, 7).as_deref(), Some("\x0a\x00\x00\x7c"));
    let out = lab.run(&discover("dhclient", CN3_FIRMWARE).frame());
    assert_eq!(out.action, XDP_TX);
    let m = decoded(&out.frame);
    assert_eq!(
        text(&m, 240).as_deref(),
        Some("http://10.0.0.1:8080/boot/cn3/kickstart")
    );
    assert_eq!(
        text(&m, 250).as_deref(),
        Some("http://10.0.0.1:8080/boot/cn3/provision/proxmox")
    );
    let out = lab.run(&discover("dhclient", CN2_NO_PROVISION).frame());
    assert_eq!(out.action, XDP_TX);
    assert_eq!(text(&decoded(&out.frame), 67), None);
    // Class options: passed up, answered by the slow path with them.
    let idrac = Req::new(CN1, MessageType::Discover, vec![(60, b"iDRAC".to_vec())]);
    let frame = idrac.frame();
    assert_eq!(lab.run(&frame).action, XDP_PASS);
    let want = lab.slow_path(&frame, lab.rotation()).expect("an OFFER");
    assert_eq!(
        text(&decoded(&want), 43).as_deref(),
        Some("-f idrac-config.json -i 10.0.0.1 -s 5 -n boot/cn1/provision")
    );
    // Any user class but `iPXE`, even beside iPXE's 175: the slow path's (SONiC's ZTP
    // preset here), while iPXE itself was answered by XDP above.
    let mut sonic = discover("ipxe", CN1);
    for (code, data) in &mut sonic.opts {
        if *code == 77 {
            *data = b"SONiC-ZTP".to_vec();
        }
    }
    let frame = sonic.frame();
    assert_eq!(lab.run(&frame).action, XDP_PASS);
    let want = lab.slow_path(&frame, lab.rotation()).expect("an OFFER");
    assert_eq!(
        text(&decoded(&want), 67).as_deref(),
        Some("http://10.0.0.1:8080/boot/cn1/kickstart"),
        "sonic-ztp"
    );
    let uefi = discover("uefi", CN1).frame();
    assert_eq!(lab.run(&uefi).action, XDP_PASS);
    let want = lab.slow_path(&uefi, lab.rotation()).expect("an OFFER");
    assert_eq!(text(&decoded(&want), 226).as_deref(), Some("\x07"));
}

/// Hosts that share templates (one subnet and image; names of one length) and hosts
/// that differ in name length, address and boot URL (PlainUrls puts the name and MAC in
/// it, as a token would be): every kind's DISCOVER and REQUEST, with and without option
/// 97, broadcast, renewing and a wrong address (NAK), through the program and the slow
/// path, byte for byte. The templates are shared: a host of a name length already
/// present adds only its NAK. cn12 and cn13 take their group's templates without
/// building them (cn10 built them, cn11 built them too and they agreed).
#[test]
fn xdp_hosts_sharing_templates_equal_the_slow_path() {
    if netns::need_root() {
        return;
    }
    use xboot::inventory::{Inventory, Mac};
    let hosts: Vec<(&str, Mac, Ipv4Addr)> = vec![
        (
            "cn10",
            Mac([2, 0x10, 0, 0, 0, 10]),
            Ipv4Addr::new(10, 0, 0, 10),
        ),
        (
            "cn11",
            Mac([2, 0x10, 0, 0, 0, 11]),
            Ipv4Addr::new(10, 0, 0, 11),
        ),
        (
            "cn12",
            Mac([2, 0x10, 0xab, 0, 1, 12]),
            Ipv4Addr::new(10, 0, 0, 212),
        ),
        (
            "cn13",
            Mac([2, 0x10, 0x7f, 0xfe, 9, 13]),
            Ipv4Addr::new(10, 0, 0, 254),
        ),
        (
            "cn100",
            Mac([2, 0x10, 0, 0, 1, 0]),
            Ipv4Addr::new(10, 0, 0, 100),
        ),
        ("n7", Mac([2, 0x10, 0, 0, 0, 7]), Ipv4Addr::new(10, 0, 0, 3)),
        (
            "a-much-longer-node-name-0001",
            Mac([2, 0x10, 0, 0, 0, 0xaa]),
            Ipv4Addr::new(10, 0, 0, 201),
        ),
    ];
    let inv = |n: usize| {
        Inventory::from_parts_unchecked(
            hosts[..n]
                .iter()
                .map(|(name, mac, ip)| host(name, *mac, Some(&format!("{ip}/24")), true, ""))
                .collect(),
            vec![],
        )
    };
    let one = Lab::with(inv(1), settings()).sync.templates();
    let three = Lab::with(inv(3), settings()).sync.templates();
    assert_eq!(three, one + 2, "cn11 and cn12 add their NAKs only");
    let mut lab = Lab::with(inv(hosts.len()), settings());
    // Four name lengths: four sets of shared templates, and a NAK per host.
    assert_eq!(
        lab.sync.templates(),
        4 * (one - 1) + hosts.len(),
        "{} hosts ({one} templates for one)",
        hosts.len()
    );
    let mut tx = 0;
    for (h, mac, ip) in &hosts {
        for kind in KINDS {
            let n = |what: &str| format!("{h} {kind} {what}");
            let d = discover(kind, *mac);
            let s = selecting(kind, *mac, *ip, SERVER);
            let rows = [
                (n("DISCOVER"), d.clone()),
                (
                    n("DISCOVER broadcast"),
                    Req {
                        flags: 0x8000,
                        ..d.clone()
                    },
                ),
                (n("DISCOVER without 97"), d.clone().without(97)),
                (n("REQUEST selecting"), s.clone()),
                (
                    n("REQUEST renewing"),
                    s.clone().without(54).without(50).unicast_from(*ip),
                ),
                (
                    n("REQUEST wrong address -> NAK"),
                    selecting(kind, *mac, Ipv4Addr::new(10, 0, 0, 199), SERVER),
                ),
            ];
            for (name, req) in rows {
                check(&mut lab, &name, &req, Expect::Tx);
                tx += 1;
            }
        }
    }
    assert_eq!(tx, hosts.len() * KINDS.len() * 6);
}
