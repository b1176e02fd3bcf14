//! Row-by-row tests of the reply builder ([`super::reply`]), from bytes on the wire to the
//! frame sent back.
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};

use super::boot::PlainUrls;
use super::frame::{frame, parse_frame, FrameAddrs, BROADCAST_MAC};
use super::reply::*;
use super::request::{ClientKind, Request, BROADCAST_FLAG};
use super::settings::{Settings, Subnet};
use super::wire;
use crate::inventory::{Host, Inventory, Mac};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CN1: Mac = Mac([2, 0, 0, 0, 0, 1]);
const CN2_NO_PROVISION: Mac = Mac([2, 0, 0, 0, 0, 2]);
const CN3_SUBNET: Mac = Mac([2, 0, 0, 0, 0, 3]);
const CN4_NO_IP: Mac = Mac([2, 0, 0, 0, 0, 4]);
const UNKNOWN: Mac = Mac([2, 0, 0, 0, 0, 0x99]);
/// cn1's BMC interface (a MAC, an address): a lease, nothing to boot.
const CN1_BMC: Mac = Mac([2, 0, 0, 0, 0, 0xb1]);
/// cn1's bond (Grendel's `bonds`, a MAC of its own): a lease, nothing to boot.
const CN1_BOND: Mac = Mac([2, 0, 0, 0, 0, 0xb0]);
const CN1_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const URLS: PlainUrls = PlainUrls { port: 8080 };

fn host(name: &str, mac: Mac, ip: Option<&str>, provision: bool, firmware: &str) -> Host {
    let mut h = Host::with_interface(name, mac, ip);
    h.provision = provision;
    h.firmware = firmware.into();
    h.interfaces[0].fqdn = format!("{name}.cluster.test");
    h
}

fn inventory() -> Inventory {
    let mut cn1 = host("cn1", CN1, Some("10.0.0.5/24"), true, "");
    cn1.interfaces.push(crate::inventory::Interface {
        mac: Some(CN1_BMC),
        ip: Some("10.0.0.50/24".into()),
        bmc: true,
        ..Default::default()
    });
    cn1.bonds.push(serde_json::json!({
        "mac": CN1_BOND.to_string(), "ip": "10.0.0.51/24", "ifname": "bond0",
        "peers": ["eno1", "eno2"],
    }));
    Inventory::from_parts_unchecked(
        vec![
            cn1,
            host("cn2", CN2_NO_PROVISION, Some("10.0.0.6/24"), false, ""),
            host(
                "cn3",
                CN3_SUBNET,
                Some("192.168.0.51/24"),
                true,
                "snponly-x86_64.efi",
            ),
            host("cn4", CN4_NO_IP, None, true, ""),
        ],
        vec![],
    )
}

fn settings() -> Settings {
    Settings {
        lease_secs: 3600,
        dns: vec![
            Ipv4Addr::new(10, 0, 0, 53),
            Ipv4Addr::new(10, 0, 0, 54),
            Ipv4Addr::new(10, 0, 0, 55),
        ],
        domain_search: vec!["cluster.test".into()],
        mtu: Some(1500),
        router_octet4: 254,
        subnets: vec![Subnet {
            net: "192.168.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(192, 168, 0, 1),
            dns: vec![Ipv4Addr::new(192, 168, 0, 100)],
            domain_search: vec!["example.com".into()],
            mtu: Some(9000),
        }],
        ..Default::default()
    }
}

fn decide_with(req: &Request, s: &Settings, rotation: usize) -> Decision {
    let inv = inventory();
    let ctx = Context {
        settings: s,
        server_ip: SERVER,
        host: inv.lookup_mac(req.mac),
        urls: &URLS,
        dns_rotation: rotation,
    };
    decide(req, &ctx)
}

fn reply(req: &Request) -> Reply {
    match decide_with(req, &settings(), 0) {
        Decision::Reply(r) => *r,
        Decision::Silent(s) => panic!("expected a reply to {req:?}, got silence {s:?}"),
    }
}

fn silence(req: &Request) -> Silence {
    match decide_with(req, &settings(), 0) {
        Decision::Silent(s) => s,
        Decision::Reply(r) => panic!("expected silence for {req:?}, got {r:?}"),
    }
}

fn req(t: MessageType, mac: Mac, kind: ClientKind) -> Request {
    Request {
        xid: 0x1234_5678,
        ..Request::new(t, mac, kind)
    }
}

fn selecting(mac: Mac, ip: Ipv4Addr, kind: ClientKind) -> Request {
    Request {
        requested_ip: Some(ip),
        server_id: Some(SERVER),
        ..req(MessageType::Request, mac, kind)
    }
}

fn opt(m: &Message, code: u8) -> Option<&DhcpOption> {
    m.opts().get(OptionCode::from(code))
}

fn file(m: &Message) -> Option<String> {
    m.fname_str()
        .map(|r| r.unwrap().trim_end_matches('\0').to_string())
}

/// What the boot part of a reply says.
#[derive(Debug, PartialEq, Eq)]
struct Boot {
    file: Option<String>,
    siaddr: Ipv4Addr,
    tftp_server: bool,
    class: Option<Vec<u8>>,
    ipxe_no_proxy_wait: bool,
}

fn boot_of(m: &Message) -> Boot {
    Boot {
        file: file(m),
        siaddr: m.siaddr(),
        tftp_server: opt(m, 66) == Some(&DhcpOption::TFTPServerName(b"10.0.0.1".to_vec())),
        class: match opt(m, 60) {
            Some(DhcpOption::ClassIdentifier(v)) => Some(v.clone()),
            _ => None,
        },
        ipxe_no_proxy_wait: matches!(opt(m, 175), Some(DhcpOption::Unknown(u)) if u.data() == [176, 1, 1]),
    }
}

fn tftp(f: &str) -> Boot {
    Boot {
        file: Some(f.into()),
        siaddr: SERVER,
        tftp_server: true,
        class: None,
        ipxe_no_proxy_wait: false,
    }
}

fn url(u: &str, class: Option<&[u8]>, ipxe: bool) -> Boot {
    let class = class.map(<[u8]>::to_vec);
    Boot {
        file: Some(u.into()),
        siaddr: Ipv4Addr::UNSPECIFIED,
        tftp_server: false,
        class,
        ipxe_no_proxy_wait: ipxe,
    }
}

fn lease_only() -> Boot {
    Boot {
        file: None,
        siaddr: Ipv4Addr::UNSPECIFIED,
        tftp_server: false,
        class: None,
        ipxe_no_proxy_wait: false,
    }
}

/// Every row of the option-93/77 table (request.rs): OFFER and ACK carry the same boot
/// options.
#[test]
fn boot_options_per_client_kind() {
    let script = "http://10.0.0.1:8080/boot/cn1/ipxe?mac=02-00-00-00-00-01";
    let rows = [
        (ClientKind::Os, lease_only()),
        (ClientKind::BiosPxe, tftp("undionly.kpxe")),
        (ClientKind::UefiX64, tftp("snponly.efi")),
        (ClientKind::UefiArm64, tftp("ipxe-arm64.efi")),
        (ClientKind::Ipxe, url(script, None, true)),
        (
            ClientKind::HttpX64,
            url(
                "http://10.0.0.1:8080/firmware/snponly.efi",
                Some(b"HTTPClient"),
                false,
            ),
        ),
        (
            ClientKind::HttpArm64,
            url(
                "http://10.0.0.1:8080/firmware/ipxe-arm64.efi",
                Some(b"HTTPClient"),
                false,
            ),
        ),
        (ClientKind::UefiIa32, tftp("ipxe-i386.efi")),
        (ClientKind::Unsupported(2), lease_only()),
    ];
    for (kind, want) in rows {
        let offer = reply(&req(MessageType::Discover, CN1, kind));
        assert_eq!(offer.kind, ReplyKind::Offer);
        assert_eq!(offer.message.yiaddr(), CN1_IP, "{kind}");
        assert_eq!(boot_of(&offer.message), want, "OFFER to {kind}");
        let ack = reply(&selecting(CN1, CN1_IP, kind));
        assert_eq!(ack.kind, ReplyKind::Ack);
        assert_eq!(boot_of(&ack.message), want, "ACK to {kind}");
        assert!(
            opt(&offer.message, 43).is_none(),
            "no option 43 in a plain OFFER ({kind})"
        );
    }
}

/// The same table from real DISCOVER layouts (peers.md §6), through parse and classify.
#[test]
fn real_client_discovers() {
    let pxe_bios = b"PXEClient:Arch:00000:UNDI:002001";
    let ovmf = b"PXEClient:Arch:00007:UNDI:003000";
    let http = b"HTTPClient:Arch:00016:UNDI:003000";
    type Row<'a> = (
        &'a str,
        Option<u16>,
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        bool,
        bool,
        ClientKind,
    );
    let rows: [Row; 6] = [
        (
            "iPXE BIOS ROM",
            Some(0),
            Some(pxe_bios),
            Some(b"iPXE"),
            true,
            false,
            ClientKind::Ipxe,
        ),
        (
            "OVMF native PXE",
            Some(7),
            Some(ovmf),
            None,
            false,
            true,
            ClientKind::UefiX64,
        ),
        (
            "OVMF HTTP boot",
            Some(16),
            Some(http),
            None,
            false,
            true,
            ClientKind::HttpX64,
        ),
        (
            "udhcpc",
            None,
            Some(b"udhcp 1.35.0"),
            None,
            false,
            false,
            ClientKind::Os,
        ),
        ("dhclient", None, None, None, false, false, ClientKind::Os),
        (
            "BIOS PXE ROM",
            Some(0),
            Some(pxe_bios),
            None,
            false,
            false,
            ClientKind::BiosPxe,
        ),
    ];
    for (name, arch, vendor, user, has175, bcast, kind) in rows {
        let mut m = Message::new_with_id(
            7,
            [0; 4].into(),
            [0; 4].into(),
            [0; 4].into(),
            [0; 4].into(),
            &CN1.0,
        );
        if bcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Discover));
        o.insert(DhcpOption::MaxMessageSize(1472));
        if let Some(a) = arch {
            o.insert(DhcpOption::ClientSystemArchitecture(a.into()));
            o.insert(DhcpOption::ClientMachineIdentifier([0u8; 17].to_vec()));
        }
        if let Some(v) = vendor {
            o.insert(DhcpOption::ClassIdentifier(v.to_vec()));
        }
        if let Some(u) = user {
            o.insert(DhcpOption::UserClass(u.to_vec()));
        }
        if has175 {
            let u =
                dhcproto::v4::UnknownOption::new(OptionCode::Unknown(175), vec![0xeb, 3, 1, 0, 0]);
            o.insert(DhcpOption::Unknown(u));
        }
        let r = Request::from_message(&wire::parse(&wire::encode(&m)).unwrap());
        assert_eq!(r.kind, kind, "{name}");
        let offer = reply(&r);
        let want = if bcast {
            Destination::Broadcast
        } else {
            Destination::Unicast {
                mac: CN1,
                ip: CN1_IP,
            }
        };
        assert_eq!(offer.destination, want, "{name}");
        assert_eq!(offer.message.xid(), 7);
        assert_eq!(
            opt(&offer.message, 97).is_some(),
            arch.is_some(),
            "{name}: option 97 echoed iff sent"
        );
    }
}

#[test]
fn lease_options_of_a_plain_host() {
    let m = reply(&req(MessageType::Discover, CN1, ClientKind::Os)).message;
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(m.chaddr(), &CN1.0);
    assert_eq!(m.xid(), 0x1234_5678);
    let rows: Vec<(u8, DhcpOption)> = vec![
        (1, DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0))),
        (3, DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 254)])),
        (6, DhcpOption::DomainNameServer(settings().dns)),
        (12, DhcpOption::Hostname("cn1".into())),
        (15, DhcpOption::DomainName("cluster.test".into())),
        (26, DhcpOption::InterfaceMtu(1500)),
        (28, DhcpOption::BroadcastAddr(Ipv4Addr::new(10, 0, 0, 255))),
        (51, DhcpOption::AddressLeaseTime(3600)),
        (53, DhcpOption::MessageType(MessageType::Offer)),
        (54, DhcpOption::ServerIdentifier(SERVER)),
        (58, DhcpOption::Renewal(1800)),
        (59, DhcpOption::Rebinding(3150)),
        (
            119,
            DhcpOption::DomainSearch(vec![dhcproto::Name::from_ascii("cluster.test.").unwrap()]),
        ),
    ];
    for (code, want) in &rows {
        assert_eq!(opt(&m, *code), Some(want), "option {code}");
    }
    let codes: Vec<u8> = m.opts().iter().map(|(c, _)| u8::from(*c)).collect();
    assert_eq!(
        codes,
        rows.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        "exactly these, in code order"
    );
}

#[test]
fn subnet_host_gets_subnet_values_and_firmware_override() {
    let m = reply(&req(MessageType::Discover, CN3_SUBNET, ClientKind::UefiX64)).message;
    assert_eq!(m.yiaddr(), Ipv4Addr::new(192, 168, 0, 51));
    assert_eq!(
        opt(&m, 3),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(192, 168, 0, 1)]))
    );
    assert_eq!(
        opt(&m, 6),
        Some(&DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            192, 168, 0, 100
        )]))
    );
    assert_eq!(opt(&m, 26), Some(&DhcpOption::InterfaceMtu(9000)));
    assert_eq!(file(&m).as_deref(), Some("snponly.efi"));
    let bios = reply(&req(MessageType::Discover, CN3_SUBNET, ClientKind::BiosPxe)).message;
    assert_eq!(
        file(&bios).as_deref(),
        Some("undionly.kpxe"),
        "EFI override ignored for BIOS"
    );
}

/// REQUEST rows: (what, request, expected decision kind / silence, destination).
#[test]
fn request_rows() {
    let other = Ipv4Addr::new(10, 0, 0, 77);
    let foreign = Ipv4Addr::new(10, 0, 0, 2);
    let os = ClientKind::Os;
    let base = req(MessageType::Request, CN1, os);
    type Outcome = Result<(ReplyKind, Destination), Silence>;
    let rows: Vec<(&str, Request, Outcome)> = vec![
        (
            "selecting, right address",
            selecting(CN1, CN1_IP, os),
            Ok((
                ReplyKind::Ack,
                Destination::Unicast {
                    mac: CN1,
                    ip: CN1_IP,
                },
            )),
        ),
        (
            "selecting, wrong address",
            selecting(CN1, other, os),
            Ok((ReplyKind::Nak, Destination::Broadcast)),
        ),
        (
            "selecting another server",
            Request {
                server_id: Some(foreign),
                ..selecting(CN1, CN1_IP, os)
            },
            Err(Silence::ForeignServer {
                host: "cn1".into(),
                server: foreign,
            }),
        ),
        (
            "init-reboot, right",
            Request {
                requested_ip: Some(CN1_IP),
                ..base.clone()
            },
            Ok((
                ReplyKind::Ack,
                Destination::Unicast {
                    mac: CN1,
                    ip: CN1_IP,
                },
            )),
        ),
        (
            "init-reboot, wrong",
            Request {
                requested_ip: Some(other),
                ..base.clone()
            },
            Ok((ReplyKind::Nak, Destination::Broadcast)),
        ),
        (
            "renewing, right",
            Request {
                ciaddr: CN1_IP,
                ..base.clone()
            },
            Ok((ReplyKind::Ack, Destination::Client(CN1_IP))),
        ),
        (
            "renewing, wrong",
            Request {
                ciaddr: other,
                ..base.clone()
            },
            Ok((ReplyKind::Nak, Destination::Broadcast)),
        ),
        (
            "rebinding with broadcast flag",
            Request {
                ciaddr: CN1_IP,
                flags: BROADCAST_FLAG,
                ..base.clone()
            },
            Ok((ReplyKind::Ack, Destination::Client(CN1_IP))),
        ),
        (
            "no address at all",
            base.clone(),
            Ok((ReplyKind::Nak, Destination::Broadcast)),
        ),
        (
            "unknown MAC",
            selecting(UNKNOWN, CN1_IP, os),
            Err(Silence::UnknownMac),
        ),
        (
            "host without address",
            selecting(CN4_NO_IP, CN1_IP, os),
            Err(Silence::NoAddress { host: "cn4".into() }),
        ),
    ];
    for (what, r, want) in rows {
        let got = match decide_with(&r, &settings(), 0) {
            Decision::Reply(rep) => Ok((rep.kind, rep.destination)),
            Decision::Silent(s) => Err(s),
        };
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn nak_says_why_and_carries_no_lease() {
    let nak = reply(&selecting(
        CN1,
        Ipv4Addr::new(10, 0, 0, 77),
        ClientKind::BiosPxe,
    ))
    .message;
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(opt(&nak, 54), Some(&DhcpOption::ServerIdentifier(SERVER)));
    match opt(&nak, 56) {
        Some(DhcpOption::Message(s)) => {
            assert!(s.contains("10.0.0.77") && s.contains("cn1"), "{s}")
        }
        o => panic!("no option 56: {o:?}"),
    }
    assert_eq!(
        (nak.yiaddr(), nak.ciaddr(), nak.siaddr()),
        (
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED
        )
    );
    assert!(file(&nak).is_none() && opt(&nak, 51).is_none() && opt(&nak, 1).is_none());
}

#[test]
fn renewal_ack_echoes_ciaddr() {
    let ack = reply(&Request {
        ciaddr: CN1_IP,
        ..req(MessageType::Request, CN1, ClientKind::Os)
    })
    .message;
    assert_eq!((ack.ciaddr(), ack.yiaddr()), (CN1_IP, CN1_IP));
}

#[test]
fn inform_gets_ack_without_lease() {
    let r = reply(&Request {
        ciaddr: CN1_IP,
        ..req(MessageType::Inform, CN1, ClientKind::Ipxe)
    });
    assert_eq!(r.kind, ReplyKind::InformAck);
    assert_eq!(r.destination, Destination::Client(CN1_IP));
    let m = &r.message;
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!((m.yiaddr(), m.ciaddr()), (Ipv4Addr::UNSPECIFIED, CN1_IP));
    for code in [51, 58, 59, 175] {
        assert!(opt(m, code).is_none(), "INFORM reply has option {code}");
    }
    assert!(opt(m, 1).is_some() && opt(m, 6).is_some());
    assert!(file(m).is_none());
}

#[test]
fn unknown_mac_is_never_answered() {
    for t in [
        MessageType::Discover,
        MessageType::Request,
        MessageType::Inform,
        MessageType::Release,
    ] {
        for kind in ClientKind::TEMPLATES {
            assert_eq!(
                silence(&req(t, UNKNOWN, kind)),
                Silence::UnknownMac,
                "{t:?} {kind}"
            );
        }
    }
}

#[test]
fn provision_false_gets_lease_only() {
    for kind in ClientKind::TEMPLATES {
        let r = reply(&req(MessageType::Discover, CN2_NO_PROVISION, kind));
        assert_eq!(r.message.yiaddr(), Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(boot_of(&r.message), lease_only(), "{kind}");
    }
}

/// A BMC NIC with a MAC gets its own address (not the boot NIC's), and nothing to boot,
/// whatever its firmware says it is; a REQUEST for it is ACKed, one for the boot NIC's
/// address NAKed. The boot server and proxyDHCP stay silent for it.
#[test]
fn bmc_interface_gets_lease_only() {
    for (mac, ip) in [
        (CN1_BMC, Ipv4Addr::new(10, 0, 0, 50)),
        (CN1_BOND, Ipv4Addr::new(10, 0, 0, 51)),
    ] {
        lease_only_rows(mac, ip);
    }
    let bmc_ip = Ipv4Addr::new(10, 0, 0, 50);
    for kind in ClientKind::TEMPLATES {
        let offer = reply(&req(MessageType::Discover, CN1_BMC, kind));
        assert_eq!(offer.kind, ReplyKind::Offer);
        assert_eq!(offer.message.yiaddr(), bmc_ip, "{kind}");
        assert_eq!(boot_of(&offer.message), lease_only(), "{kind}");
        assert_eq!(offer.boot, super::boot::BootTarget::LeaseOnly);
        let ack = reply(&selecting(CN1_BMC, bmc_ip, kind));
        assert_eq!((ack.kind, ack.message.yiaddr()), (ReplyKind::Ack, bmc_ip));
        assert_eq!(boot_of(&ack.message), lease_only(), "{kind}");
        let nak = reply(&selecting(CN1_BMC, CN1_IP, kind));
        assert_eq!(nak.kind, ReplyKind::Nak, "{kind}");
    }
    // The boot NIC of the same host still boots.
    let boot = reply(&req(MessageType::Discover, CN1, ClientKind::BiosPxe));
    assert_eq!(boot_of(&boot.message), tftp("undionly.kpxe"));
    let proxy = Settings {
        proxy_only: true,
        ..settings()
    };
    let d = req(MessageType::Discover, CN1_BMC, ClientKind::BiosPxe);
    assert!(matches!(
        decide_with(&d, &proxy, 0),
        Decision::Silent(Silence::NotNetboot { .. })
    ));
}

/// OFFER and ACK with `ip` and no boot options for every kind; a NAK for another address.
fn lease_only_rows(mac: Mac, ip: Ipv4Addr) {
    for kind in ClientKind::TEMPLATES {
        let offer = reply(&req(MessageType::Discover, mac, kind));
        assert_eq!((offer.kind, offer.message.yiaddr()), (ReplyKind::Offer, ip));
        assert_eq!(boot_of(&offer.message), lease_only(), "{mac} {kind}");
        let ack = reply(&selecting(mac, ip, kind));
        assert_eq!((ack.kind, ack.message.yiaddr()), (ReplyKind::Ack, ip));
        assert_eq!(boot_of(&ack.message), lease_only(), "{mac} {kind}");
        assert_eq!(reply(&selecting(mac, CN1_IP, kind)).kind, ReplyKind::Nak);
    }
}

#[test]
fn release_and_decline_are_silent_but_named() {
    let rel = Request {
        ciaddr: CN1_IP,
        ..req(MessageType::Release, CN1, ClientKind::Os)
    };
    assert_eq!(
        silence(&rel),
        Silence::Released {
            host: "cn1".into(),
            ip: CN1_IP
        }
    );
    let dec = Request {
        requested_ip: Some(CN1_IP),
        ..req(MessageType::Decline, CN1, ClientKind::Os)
    };
    assert_eq!(
        silence(&dec),
        Silence::Declined {
            host: "cn1".into(),
            ip: Some(CN1_IP)
        }
    );
}

#[test]
fn non_requests_are_silent() {
    let os = ClientKind::Os;
    assert_eq!(
        silence(&Request {
            msg_type: None,
            ..req(MessageType::Discover, CN1, os)
        }),
        Silence::NotDhcp
    );
    assert_eq!(
        silence(&Request {
            is_request: false,
            ..req(MessageType::Discover, CN1, os)
        }),
        Silence::NotDhcp
    );
    assert_eq!(
        silence(&Request {
            ethernet: false,
            ..req(MessageType::Discover, CN1, os)
        }),
        Silence::NotEthernet
    );
    assert_eq!(
        silence(&req(MessageType::Offer, CN1, os)),
        Silence::Ignored(MessageType::Offer)
    );
}

#[test]
fn relay_rows() {
    let relay = Ipv4Addr::new(10, 9, 0, 1);
    let offer = reply(&Request {
        giaddr: relay,
        hops: 1,
        ..req(MessageType::Discover, CN1, ClientKind::BiosPxe)
    });
    assert_eq!(offer.destination, Destination::Relay(relay));
    assert_eq!(offer.message.giaddr(), relay);
    assert_eq!(offer.message.hops(), 0);
    assert!(!offer.message.flags().broadcast());
    let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
    info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(
        b"eth1/3".to_vec(),
    ));
    let nak = reply(&Request {
        giaddr: relay,
        relay_info: Some(info.clone()),
        ..selecting(CN1, Ipv4Addr::new(10, 0, 0, 77), ClientKind::Os)
    });
    let echoed = Some(&DhcpOption::RelayAgentInformation(info));
    assert_eq!(opt(&nak.message, 82), echoed, "option 82 echoed");
    assert!(opt(&offer.message, 82).is_none());
    assert_eq!(nak.destination, Destination::Relay(relay));
    assert!(
        nak.message.flags().broadcast(),
        "relayed NAK asks the relay to broadcast"
    );
}

/// Relay fields that make no sense get silence, for known and unknown MACs alike; the
/// XDP program passes the same requests up (the differential corpus checks it).
#[test]
fn nonsensical_relay_fields_are_silent() {
    let relay = Ipv4Addr::new(10, 9, 0, 1);
    for (giaddr, hops) in [
        (SERVER, 1),
        (Ipv4Addr::LOCALHOST, 1),
        (Ipv4Addr::BROADCAST, 1),
        (Ipv4Addr::new(224, 0, 0, 9), 1),
        (Ipv4Addr::new(240, 0, 0, 1), 1),
        (Ipv4Addr::new(0, 0, 0, 9), 1),
        (Ipv4Addr::UNSPECIFIED, 1),
        (relay, 17),
        (relay, 255),
    ] {
        for mac in [CN1, Mac([2, 0, 0, 0, 0, 0x77])] {
            let r = Request {
                giaddr,
                hops,
                ..req(MessageType::Discover, mac, ClientKind::BiosPxe)
            };
            assert_eq!(
                silence(&r),
                Silence::BadRelay { giaddr, hops },
                "{giaddr} hops {hops}"
            );
        }
    }
    // At the limit, and a relay with hops 0: answered.
    let r = reply(&Request {
        giaddr: relay,
        hops: 16,
        ..req(MessageType::Discover, CN1, ClientKind::BiosPxe)
    });
    assert_eq!(r.destination, Destination::Relay(relay));
}

#[test]
fn broadcast_flag_rows() {
    for (flags, want) in [
        (
            0,
            Destination::Unicast {
                mac: CN1,
                ip: CN1_IP,
            },
        ),
        (BROADCAST_FLAG, Destination::Broadcast),
    ] {
        let r = reply(&Request {
            flags,
            ..req(MessageType::Discover, CN1, ClientKind::UefiX64)
        });
        assert_eq!(r.destination, want);
        assert_eq!(u16::from(r.message.flags()), flags, "flags copied");
    }
}

#[test]
fn option_97_echo() {
    let uuid: Vec<u8> = (0..17).collect();
    let with = reply(&Request {
        machine_id: Some(uuid.clone()),
        ..req(MessageType::Discover, CN1, ClientKind::UefiX64)
    });
    assert_eq!(
        opt(&with.message, 97),
        Some(&DhcpOption::ClientMachineIdentifier(uuid))
    );
    let without = reply(&req(MessageType::Discover, CN1, ClientKind::UefiX64));
    assert!(opt(&without.message, 97).is_none());
}

#[test]
fn router_octet4_zero_means_no_router_option() {
    let s = Settings {
        router_octet4: 0,
        ..settings()
    };
    let Decision::Reply(r) = decide_with(&req(MessageType::Discover, CN1, ClientKind::Os), &s, 0)
    else {
        panic!()
    };
    assert!(opt(&r.message, 3).is_none());
}

#[test]
fn dns_rotation_is_an_input() {
    let d = settings().dns;
    for (rotation, first) in [(0, d[0]), (1, d[1]), (2, d[2]), (3, d[0]), (4, d[1])] {
        let Decision::Reply(r) = decide_with(
            &req(MessageType::Discover, CN1, ClientKind::Os),
            &settings(),
            rotation,
        ) else {
            panic!()
        };
        match opt(&r.message, 6) {
            Some(DhcpOption::DomainNameServer(v)) => {
                assert_eq!(v[0], first, "rotation {rotation}");
                assert_eq!(v.len(), 3);
            }
            o => panic!("{o:?}"),
        }
    }
}

#[test]
fn replies_are_deterministic() {
    for kind in ClientKind::TEMPLATES {
        let r = req(MessageType::Discover, CN1, kind);
        assert_eq!(reply(&r).bytes(), reply(&r).bytes(), "{kind}");
    }
}

#[test]
fn long_urls_go_to_option_67() {
    struct LongUrls;
    impl super::boot::BootUrls for LongUrls {
        fn ipxe_script(&self, _: &Host, _: Mac, _: Ipv4Addr) -> String {
            format!("http://10.0.0.1/ipxe?token={}", "x".repeat(150))
        }
        fn http_firmware(&self, f: &str, _: Ipv4Addr) -> String {
            format!("http://10.0.0.1/{f}")
        }
    }
    let inv = inventory();
    let s = settings();
    let r = req(MessageType::Discover, CN1, ClientKind::Ipxe);
    let ctx = Context {
        settings: &s,
        server_ip: SERVER,
        host: inv.lookup_mac(CN1),
        urls: &LongUrls,
        dns_rotation: 0,
    };
    let Decision::Reply(rep) = decide(&r, &ctx) else {
        panic!()
    };
    assert!(file(&rep.message).is_none());
    match opt(&rep.message, 67) {
        Some(DhcpOption::BootfileName(b)) => assert_eq!(b.len(), 177),
        o => panic!("{o:?}"),
    }
}

#[test]
fn oversized_replies_drop_optional_options() {
    let long: Vec<String> = (0..20)
        .map(|i| format!("{i}-{}.example.com", "d".repeat(30)))
        .collect();
    let s = Settings {
        domain_search: long,
        ..settings()
    };
    let Decision::Reply(r) = decide_with(&req(MessageType::Discover, CN1, ClientKind::Os), &s, 0)
    else {
        panic!()
    };
    assert!(r.bytes().len() <= 548);
    assert!(opt(&r.message, 119).is_none() && opt(&r.message, 1).is_some());
    // A client that accepts more keeps everything.
    let big = Request {
        max_message_size: Some(1500),
        ..req(MessageType::Discover, CN1, ClientKind::Os)
    };
    let Decision::Reply(r) = decide_with(&big, &s, 0) else {
        panic!()
    };
    assert!(opt(&r.message, 119).is_some());
}

/// proxyDHCP rows: (kind, answered?, option 43 present).
#[test]
fn proxy_only_rows() {
    let s = Settings {
        proxy_only: true,
        ..settings()
    };
    let rows = [
        (ClientKind::BiosPxe, Some((b"PXEClient".as_slice(), true))),
        (ClientKind::UefiX64, Some((b"PXEClient".as_slice(), false))),
        (
            ClientKind::UefiArm64,
            Some((b"PXEClient".as_slice(), false)),
        ),
        (ClientKind::Ipxe, Some((b"PXEClient".as_slice(), false))),
        (ClientKind::HttpX64, Some((b"HTTPClient".as_slice(), false))),
        (ClientKind::UefiIa32, Some((b"PXEClient".as_slice(), false))),
        (ClientKind::Os, None),
        (ClientKind::Unsupported(2), None),
    ];
    for (kind, want) in rows {
        let d = decide_with(&req(MessageType::Discover, CN1, kind), &s, 0);
        match (d, want) {
            (Decision::Reply(r), Some((class, has43))) => {
                assert_eq!(r.kind, ReplyKind::ProxyOffer);
                assert_eq!(r.destination, Destination::Broadcast);
                let m = &r.message;
                assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED, "{kind}: no address");
                assert!(opt(m, 51).is_none() && opt(m, 1).is_none() && opt(m, 3).is_none());
                assert_eq!(
                    opt(m, 60),
                    Some(&DhcpOption::ClassIdentifier(class.to_vec())),
                    "{kind}"
                );
                assert_eq!(opt(m, 43).is_some(), has43, "{kind}");
                assert!(file(m).is_some());
            }
            (Decision::Silent(Silence::NotNetboot { .. }), None) => {}
            (d, w) => panic!("{kind}: got {d:?}, want {w:?}"),
        }
    }
    let bios = decide_with(&req(MessageType::Discover, CN1, ClientKind::BiosPxe), &s, 0);
    let Decision::Reply(r) = bios else { panic!() };
    assert_eq!(
        opt(&r.message, 43),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    for t in [MessageType::Request, MessageType::Inform] {
        assert!(matches!(
            decide_with(&req(t, CN1, ClientKind::BiosPxe), &s, 0),
            Decision::Silent(Silence::NotNetboot { .. })
        ));
    }
    assert!(matches!(
        decide_with(
            &req(MessageType::Discover, CN2_NO_PROVISION, ClientKind::BiosPxe),
            &s,
            0
        ),
        Decision::Silent(_)
    ));
}

#[test]
fn boot_server_rows() {
    let inv = inventory();
    let s = settings();
    let sender = SocketAddrV4::new(CN1_IP, 68);
    let go = |r: &Request| {
        let ctx = Context {
            settings: &s,
            server_ip: SERVER,
            host: inv.lookup_mac(r.mac),
            urls: &URLS,
            dns_rotation: 0,
        };
        decide_boot_server(r, &ctx, sender)
    };
    let item = vec![0x80, 0x00, 0x00, 0x00];
    let r = Request {
        ciaddr: CN1_IP,
        pxe_boot_item: Some(item.clone()),
        ..req(MessageType::Request, CN1, ClientKind::UefiX64)
    };
    let Decision::Reply(ack) = go(&r) else {
        panic!()
    };
    assert_eq!(
        (ack.kind, ack.destination, ack.src_port()),
        (ReplyKind::BootAck, Destination::Peer(sender), 4011)
    );
    let m = &ack.message;
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(
        (m.yiaddr(), m.ciaddr(), m.siaddr()),
        (Ipv4Addr::UNSPECIFIED, CN1_IP, SERVER)
    );
    assert_eq!(
        opt(m, 60),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(
        opt(m, 43),
        Some(&DhcpOption::VendorExtensions(vec![
            6, 1, 8, 71, 4, 0x80, 0, 0, 0, 255
        ]))
    );
    assert_eq!(file(m).as_deref(), Some("snponly.efi"));
    let ipxe = go(&Request {
        ciaddr: CN1_IP,
        ..req(MessageType::Request, CN1, ClientKind::Ipxe)
    });
    assert!(
        matches!(ipxe, Decision::Reply(ref r) if file(&r.message).unwrap().contains("/boot/cn1/ipxe"))
    );
    assert!(matches!(
        go(&req(MessageType::Request, CN1, ClientKind::Os)),
        Decision::Silent(Silence::NotNetboot { .. })
    ));
    assert!(matches!(
        go(&req(MessageType::Discover, CN1, ClientKind::UefiX64)),
        Decision::Silent(Silence::Ignored(_))
    ));
    assert_eq!(
        go(&req(MessageType::Request, UNKNOWN, ClientKind::UefiX64)),
        Decision::Silent(Silence::UnknownMac)
    );
}

/// Frames per destination (RFC 2131 §4.1), parsed back with checksums verified.
#[test]
fn frames_per_destination() {
    let server_mac = Mac([2, 0, 0, 0, 0, 0xaa]);
    let peer_mac = Mac([2, 0, 0, 0, 0, 0xbb]);
    let addrs = FrameAddrs {
        server_mac,
        server_ip: SERVER,
        peer_mac,
        vlan: None,
    };
    let relay = Ipv4Addr::new(10, 9, 0, 1);
    let rows = [
        (
            "unicast offer",
            req(MessageType::Discover, CN1, ClientKind::Os),
            CN1,
            SocketAddrV4::new(CN1_IP, 68),
        ),
        (
            "broadcast flag",
            Request {
                flags: BROADCAST_FLAG,
                ..req(MessageType::Discover, CN1, ClientKind::Os)
            },
            BROADCAST_MAC,
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
        ),
        (
            "nak",
            selecting(CN1, Ipv4Addr::new(10, 0, 0, 77), ClientKind::Os),
            BROADCAST_MAC,
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
        ),
        (
            "relay",
            Request {
                giaddr: relay,
                ..req(MessageType::Discover, CN1, ClientKind::Os)
            },
            peer_mac,
            SocketAddrV4::new(relay, 67),
        ),
        (
            "renew",
            Request {
                ciaddr: CN1_IP,
                ..req(MessageType::Request, CN1, ClientKind::Os)
            },
            peer_mac,
            SocketAddrV4::new(CN1_IP, 68),
        ),
    ];
    for (what, r, mac, dst) in rows {
        let rep = reply(&r);
        let f = frame(&rep, &addrs);
        let p = parse_frame(&f).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            (p.dst_mac, p.dst, p.src_mac, p.src),
            (mac, dst, server_mac, SocketAddrV4::new(SERVER, 67)),
            "{what}"
        );
        assert_eq!(p.payload, &rep.bytes()[..], "{what}");
        assert_eq!(wire::parse(p.payload).unwrap(), rep.message, "{what}");
    }
}

#[test]
fn summary_names_the_essentials() {
    let s = reply(&req(MessageType::Discover, CN1, ClientKind::BiosPxe)).summary();
    for part in [
        "OFFER",
        "10.0.0.5",
        "mask 255.255.255.0",
        "router 10.0.0.254",
        "file undionly.kpxe",
        "next-server 10.0.0.1",
    ] {
        assert!(s.contains(part), "{part:?} missing from {s}");
    }
}

/// Every reply decodes back to exactly the message built (what the XDP equivalence test
/// relies on when it compares decoded frames with `Reply::message`).
#[test]
fn replies_round_trip_through_the_wire() {
    let relay = Ipv4Addr::new(10, 9, 0, 1);
    for kind in ClientKind::TEMPLATES {
        let uuid = Some(vec![0u8; 17]);
        let rows = [
            req(MessageType::Discover, CN1, kind),
            Request {
                machine_id: uuid.clone(),
                giaddr: relay,
                ..selecting(CN1, CN1_IP, kind)
            },
            Request {
                ciaddr: CN1_IP,
                ..req(MessageType::Inform, CN1, kind)
            },
            selecting(CN1, Ipv4Addr::new(10, 0, 0, 77), kind),
        ];
        for r in rows {
            let rep = reply(&r);
            assert_eq!(
                wire::parse(&rep.bytes()).unwrap(),
                rep.message,
                "{kind} {:?}",
                rep.kind
            );
        }
    }
}
