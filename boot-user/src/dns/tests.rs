//! The tables and answers of a small inventory, table-driven: name, type -> rcode and
//! records, as dig would print them.
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::answer::{self, Outcome, Policy};
use super::zones::{reverse_zone, Found, ZoneSettings, Zones};
use crate::inventory::{Host, Interface};

fn nic(ip: &str, fqdn: &str, bmc: bool) -> Interface {
    Interface {
        ip: Some(ip.into()),
        fqdn: fqdn.into(),
        bmc,
        ..Default::default()
    }
}

fn hosts() -> Vec<Host> {
    vec![
        Host {
            name: "cn1".into(),
            interfaces: vec![
                nic(
                    "10.0.0.11/24",
                    "cn1.rack1.cluster.test, cn1-alias.rack1.cluster.test",
                    false,
                ),
                nic("2001:db8::11/64", "cn1.rack1.cluster.test", false),
                nic("10.1.0.11/16", "cn1-bmc.mgmt.cluster.test", true),
            ],
            ..Default::default()
        },
        Host {
            name: "cn2".into(),
            interfaces: vec![
                nic("10.0.0.12/24", "CN2.Rack1.Cluster.Test.", false),
                // Not DNS names: skipped, the rest of the host still served.
                nic("10.0.0.13/24", "bad name!,cn2-b.rack1.cluster.test", false),
            ],
            ..Default::default()
        },
        Host {
            name: "solo".into(),
            interfaces: vec![
                nic("192.0.2.7", "solo", false),
                nic("192.0.2.8/24", "example.test", false),
            ],
            ..Default::default()
        },
    ]
}

fn settings(zones: &[&str]) -> ZoneSettings {
    ZoneSettings {
        ttl: 300,
        zones: zones.iter().map(|z| z.to_string()).collect(),
        nameserver: None,
    }
}

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), t));
    m
}

const FORWARDING: Policy = Policy {
    forwarding: true,
    udp_payload: 1232,
};
const LOCAL_ONLY: Policy = Policy {
    forwarding: false,
    udp_payload: 1232,
};

/// The answer as `rcode [records]`, each record `name type data`; `forward` if forwarded.
fn ask(z: &Zones, m: &Message, p: Policy) -> String {
    match answer::respond(z, m, p) {
        Outcome::Forward => "forward".into(),
        Outcome::Reply(r) => {
            let rec = |r: &hickory_proto::rr::Record| {
                format!("{} {} {}", r.name, r.record_type(), r.data)
            };
            let mut s = format!("{:?}", r.response_code);
            if r.authoritative {
                s.push_str(" aa");
            }
            for a in &r.answers {
                s.push_str(&format!(" [{}]", rec(a)));
            }
            for a in &r.authorities {
                s.push_str(&format!(" auth[{} {}]", a.name, a.record_type()));
            }
            s
        }
    }
}

#[test]
fn zones_are_derived_from_fqdns_and_subnets() {
    let z = Zones::from_hosts(&hosts(), &settings(&[]));
    assert_eq!(
        z.apexes(),
        [
            "0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
            "0.0.10.in-addr.arpa",
            "1.10.in-addr.arpa",
            "2.0.192.in-addr.arpa",
            "mgmt.cluster.test",
            "rack1.cluster.test",
        ]
    );
    assert_eq!(z.skipped.len(), 1, "{:?}", z.skipped);
    assert!(z.skipped[0].contains("host cn2: fqdn \"bad name!\""));
    // A configured zone holds the derived zones below it.
    let z = Zones::from_hosts(&hosts(), &settings(&["Cluster.Test."]));
    assert!(z.apexes().contains(&"cluster.test"), "{:?}", z.apexes());
    assert!(!z.apexes().contains(&"rack1.cluster.test"));
    assert_eq!(
        z.find("rack1.cluster.test"),
        Found::Empty(z.zone_of("cluster.test").unwrap())
    );
}

#[test]
fn reverse_zones_round_to_label_boundaries() {
    for (net, want) in [
        ("10.0.0.11/24", "0.0.10.in-addr.arpa"),
        ("10.1.0.11/16", "1.10.in-addr.arpa"),
        ("10.1.2.3/20", "1.10.in-addr.arpa"),
        ("10.1.2.3/32", "2.1.10.in-addr.arpa"),
        ("10.1.2.3/26", "2.1.10.in-addr.arpa"),
        ("10.1.2.3/4", "10.in-addr.arpa"),
        ("2001:db8::1/32", "8.b.d.0.1.0.0.2.ip6.arpa"),
        (
            "2001:db8::1/126",
            "0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
        ),
    ] {
        assert_eq!(reverse_zone(net.parse().unwrap()), want, "{net}");
    }
}

#[test]
fn answers_table() {
    let z = Zones::from_hosts(&hosts(), &settings(&[]));
    use RecordType::*;
    let rows: &[(&str, RecordType, Policy, &str)] = &[
        (
            "cn1.rack1.cluster.test.",
            A,
            FORWARDING,
            "NoError aa [cn1.rack1.cluster.test. A 10.0.0.11]",
        ),
        // Matched without case.
        (
            "CN1.rack1.Cluster.test.",
            A,
            FORWARDING,
            "NoError aa [CN1.rack1.Cluster.test. A 10.0.0.11]",
        ),
        (
            "cn1-alias.rack1.cluster.test.",
            A,
            FORWARDING,
            "NoError aa [cn1-alias.rack1.cluster.test. A 10.0.0.11]",
        ),
        (
            "cn1.rack1.cluster.test.",
            AAAA,
            FORWARDING,
            "NoError aa [cn1.rack1.cluster.test. AAAA 2001:db8::11]",
        ),
        // A name with no address of the asked family: NODATA with the SOA.
        (
            "cn2.rack1.cluster.test.",
            AAAA,
            FORWARDING,
            "NoError aa auth[rack1.cluster.test. SOA]",
        ),
        (
            "cn2.rack1.cluster.test.",
            MX,
            FORWARDING,
            "NoError aa auth[rack1.cluster.test. SOA]",
        ),
        (
            "cn2-b.rack1.cluster.test.",
            A,
            FORWARDING,
            "NoError aa [cn2-b.rack1.cluster.test. A 10.0.0.13]",
        ),
        (
            "cn1-bmc.mgmt.cluster.test.",
            A,
            FORWARDING,
            "NoError aa [cn1-bmc.mgmt.cluster.test. A 10.1.0.11]",
        ),
        // PTR: the first name of the interface.
        (
            "11.0.0.10.in-addr.arpa.",
            PTR,
            FORWARDING,
            "NoError aa [11.0.0.10.in-addr.arpa. PTR cn1.rack1.cluster.test.]",
        ),
        (
            "12.0.0.10.in-addr.arpa.",
            PTR,
            FORWARDING,
            "NoError aa [12.0.0.10.in-addr.arpa. PTR cn2.rack1.cluster.test.]",
        ),
        (
            "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
            PTR,
            FORWARDING,
            "NoError aa [1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR cn1.rack1.cluster.test.]",
        ),
        (
            "99.0.0.10.in-addr.arpa.",
            PTR,
            FORWARDING,
            "NXDomain aa auth[0.0.10.in-addr.arpa. SOA]",
        ),
        (
            "nope.rack1.cluster.test.",
            A,
            FORWARDING,
            "NXDomain aa auth[rack1.cluster.test. SOA]",
        ),
        (
            "a.b.nope.rack1.cluster.test.",
            A,
            LOCAL_ONLY,
            "NXDomain aa auth[rack1.cluster.test. SOA]",
        ),
        (
            "rack1.cluster.test.",
            SOA,
            FORWARDING,
            "NoError aa [rack1.cluster.test. SOA ns.rack1.cluster.test. hostmaster.rack1.cluster.test.",
        ),
        (
            "rack1.cluster.test.",
            NS,
            FORWARDING,
            "NoError aa [rack1.cluster.test. NS ns.rack1.cluster.test.]",
        ),
        (
            "rack1.cluster.test.",
            A,
            FORWARDING,
            "NoError aa auth[rack1.cluster.test. SOA]",
        ),
        (
            "0.0.10.in-addr.arpa.",
            NS,
            FORWARDING,
            "NoError aa [0.0.10.in-addr.arpa. NS ns.mgmt.cluster.test.]",
        ),
        // A single-label name and one under a top-level domain resolve, in no zone.
        ("solo.", A, FORWARDING, "NoError aa [solo. A 192.0.2.7]"),
        (
            "example.test.",
            A,
            FORWARDING,
            "NoError aa [example.test. A 192.0.2.8]",
        ),
        ("other.test.", A, FORWARDING, "forward"),
        ("example.org.", A, FORWARDING, "forward"),
        ("example.org.", A, LOCAL_ONLY, "Refused"),
        ("cluster.test.", SOA, FORWARDING, "forward"),
        (
            "rack1.cluster.test.",
            AXFR,
            FORWARDING,
            "Refused",
        ),
    ];
    for (name, t, policy, want) in rows {
        let got = ask(&z, &query(name, *t), *policy);
        assert!(
            got.to_lowercase().starts_with(&want.to_lowercase()),
            "{name} {t}: got {got}, want {want}"
        );
    }
}

#[test]
fn header_rules() {
    let z = Zones::from_hosts(&hosts(), &settings(&[]));
    // No recursion asked: not forwarded.
    let mut m = query("example.org.", RecordType::A);
    m.metadata.recursion_desired = false;
    assert_eq!(ask(&z, &m, FORWARDING), "Refused");
    // Two questions, no question.
    let mut m = query("solo.", RecordType::A);
    m.add_query(Query::query(
        Name::from_str("solo.").unwrap(),
        RecordType::AAAA,
    ));
    assert_eq!(ask(&z, &m, FORWARDING), "FormErr");
    let mut m = query("solo.", RecordType::A);
    m.queries.clear();
    assert_eq!(ask(&z, &m, FORWARDING), "FormErr");
    // Not a query.
    let mut m = query("solo.", RecordType::A);
    m.metadata.op_code = OpCode::Update;
    assert_eq!(ask(&z, &m, FORWARDING), "NotImp");
    // Class CH for one of our names.
    let mut m = query("solo.", RecordType::A);
    m.queries[0].query_class = DNSClass::CH;
    assert_eq!(ask(&z, &m, FORWARDING), "Refused");
    // EDNS version 1.
    let mut m = query("solo.", RecordType::A);
    let mut e = Edns::new();
    e.set_version(1);
    m.edns = Some(e);
    assert_eq!(ask(&z, &m, FORWARDING), "BADVERS");
    // EDNS 0: OPT in the reply, recursion available only with upstreams.
    let mut m = query("solo.", RecordType::A);
    m.edns = Some(Edns::new());
    for (p, ra) in [(FORWARDING, true), (LOCAL_ONLY, false)] {
        let Outcome::Reply(r) = answer::respond(&z, &m, p) else {
            panic!("not answered")
        };
        assert_eq!(r.edns.as_ref().unwrap().max_payload(), 1232);
        assert_eq!(r.recursion_available, ra);
        assert!(r.recursion_desired);
        assert_eq!(r.id, m.id);
    }
}

#[test]
fn ttl_serial_and_negative_ttl() {
    let mut s = settings(&[]);
    s.ttl = 86400;
    let z = Zones::from_hosts(&hosts(), &s);
    let Outcome::Reply(r) = answer::respond(
        &z,
        &query("nope.rack1.cluster.test.", RecordType::A),
        FORWARDING,
    ) else {
        panic!()
    };
    assert_eq!(r.authorities[0].ttl, 60, "negative TTL capped");
    let Outcome::Reply(r) = answer::respond(&z, &query("solo.", RecordType::A), FORWARDING) else {
        panic!()
    };
    assert_eq!(r.answers[0].ttl, 86400);
    // The serial follows the content, and only the content.
    let again = Zones::from_hosts(&hosts(), &s);
    assert_eq!(z.serial, again.serial);
    let mut more = hosts();
    more[0].interfaces[0]
        .fqdn
        .push_str(",new.rack1.cluster.test");
    assert_ne!(Zones::from_hosts(&more, &s).serial, z.serial);
}

#[test]
fn answers_fit_the_udp_limit_or_are_truncated() {
    // One name with 100 addresses: 1.6 KB of answers.
    let host = Host {
        name: "big".into(),
        interfaces: (0..100)
            .map(|i| {
                nic(
                    &format!("10.9.{}.{}/24", i / 200, i % 200 + 1),
                    "big.x.test",
                    false,
                )
            })
            .collect(),
        ..Default::default()
    };
    let z = Zones::from_hosts(&[host], &settings(&[]));
    let m = query("big.x.test.", RecordType::A);
    let Outcome::Reply(r) = answer::respond(&z, &m, FORWARDING) else {
        panic!()
    };
    assert_eq!(r.answers.len(), 100);
    // No EDNS: 512 bytes.
    let limit = answer::udp_limit(&m, 1232);
    assert_eq!(limit, 512);
    let out = answer::fit(&r, limit).unwrap();
    assert!(out.len() <= 512);
    let back = Message::from_vec(&out).unwrap();
    assert!(back.truncation);
    assert!(back.answers.is_empty());
    assert_eq!(back.queries, m.queries);
    assert_eq!(back.id, m.id);
    // A 4096-byte EDNS buffer, capped by the server's 1232: still truncated; over TCP
    // (65535) whole.
    let mut e = m.clone();
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    e.edns = Some(edns);
    assert_eq!(answer::udp_limit(&e, 1232), 1232);
    assert_eq!(answer::udp_limit(&e, 4096), 4096);
    let whole = Message::from_vec(&answer::fit(&r, 65535).unwrap()).unwrap();
    assert!(!whole.truncation);
    assert_eq!(whole.answers.len(), 100);
}

#[test]
fn garbage_gets_formerr_only_when_it_is_a_query() {
    assert_eq!(answer::formerr(b"short"), None);
    let mut q = [0u8; 12];
    q[0] = 0xab;
    q[1] = 0xcd;
    q[2] = 0x01; // RD
    let r = answer::formerr(&q).unwrap();
    assert_eq!(&r[..4], &[0xab, 0xcd, 0x81, 0x01]);
    q[2] = 0x80; // a response: never answered
    assert_eq!(answer::formerr(&q), None);
}

#[test]
fn an_ipv6_interface_passes_validation_and_a_duplicate_does_not() {
    let mut h = hosts();
    h.truncate(1);
    let ok = crate::inventory::validate::validate(&h, &[], &crate::tftp::root::Roots::default());
    assert!(ok.is_ok(), "{ok:?}");
    h[0].interfaces.push(nic("2001:db8::11", "", false));
    let err = crate::inventory::validate::validate(&h, &[], &crate::tftp::root::Roots::default())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("address 2001:db8::11 is also used"),
        "{err}"
    );
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// No datagram panics the answer path; an answer fits the UDP limit; bytes that
        /// do not parse get at most a 12-byte FORMERR header.
        #[test]
        fn any_datagram_is_answered_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let z = Zones::from_hosts(&hosts(), &settings(&[]));
            match Message::from_vec(&bytes) {
                Ok(m) => {
                    if let Outcome::Reply(r) = answer::respond(&z, &m, FORWARDING) {
                        if let Some(b) = answer::fit(&r, 512) {
                            prop_assert!(b.len() <= 512);
                        }
                    }
                }
                Err(_) => {
                    if let Some(r) = answer::formerr(&bytes) {
                        prop_assert_eq!(r.len(), 12);
                    }
                }
            }
        }

        /// A valid query with bytes changed after its header: still no panic.
        #[test]
        fn mutated_queries(at in 12usize..40, to in any::<u8>(), t in 0u16..300) {
            let z = Zones::from_hosts(&hosts(), &settings(&[]));
            let mut b = query("cn1.rack1.cluster.test.", RecordType::from(t)).to_vec().unwrap();
            if at < b.len() {
                b[at] = to;
            }
            if let Ok(m) = Message::from_vec(&b) {
                let _ = answer::respond(&z, &m, LOCAL_ONLY);
            }
        }

        /// Any fqdn and address text builds tables (what is not a name is skipped).
        #[test]
        fn any_fqdn_text_builds(fqdn in "[a-zA-Z0-9.,_ -]{0,80}", ip in "[0-9a-f.:/]{0,20}") {
            let h = Host {
                name: "x".into(),
                interfaces: vec![nic(&ip, &fqdn, false)],
                ..Default::default()
            };
            let z = Zones::from_hosts(&[h], &settings(&["zone.test"]));
            for apex in z.apexes() {
                prop_assert!(apex.contains('.'));
            }
        }
    }
}
