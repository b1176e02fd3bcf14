//! The XDP tests' shared lab: an inventory, builder settings, the loaded program with its
//! maps synced, hand-encoded requests (options in any order), and the slow path's answer
//! to a frame, as the reference every XDP answer is held to.
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::MessageType;
use ipnet::Ipv4Net;
use xboot::dhcp::frame::{parse_frame, udp_frame};
use xboot::dhcp::{self, iface, wire, Context, Decision, FrameAddrs, PlainUrls, Request, Settings};
use xboot::inventory::{Host, Inventory, Mac};
use xboot::xdp::{Compiler, FastPath, LoadOptions, MapSync, ServedAddr, SyncOptions, TestOutput};

pub const SRV_MAC: Mac = Mac([0x02, 0x5e, 0, 0, 0, 0x01]);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const VLAN: u16 = 42;
pub const VLAN_SERVER: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 1);
pub const RELAY_MAC: Mac = Mac([0x02, 0x52, 0, 0, 0, 0x01]);
pub const RELAY: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// BPF_PROG_TEST_RUN runs on the caller's loopback device.
pub const LO: u32 = 1;
pub const URLS: PlainUrls = PlainUrls { port: 8080 };

pub const CN1: Mac = Mac([2, 0, 0, 0, 0, 1]);
pub const CN2_NO_PROVISION: Mac = Mac([2, 0, 0, 0, 0, 2]);
pub const CN3_FIRMWARE: Mac = Mac([2, 0, 0, 0, 0, 3]);
pub const CN4_NO_IP: Mac = Mac([2, 0, 0, 0, 0, 4]);
pub const CN5_RELAYED: Mac = Mac([2, 0, 0, 0, 0, 5]);
pub const CN6_VLAN: Mac = Mac([2, 0, 0, 0, 0, 6]);
pub const UNKNOWN: Mac = Mac([2, 0, 0, 0, 0, 0x99]);
/// cn1's BMC interface: a lease from its own address, nothing to boot.
pub const CN1_BMC: Mac = Mac([2, 0, 0, 0, 0, 0xb1]);
pub const CN1_BMC_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
/// cn1's bond (Grendel's `bonds`) with a MAC of its own: a lease, nothing to boot.
pub const CN1_BOND: Mac = Mac([2, 0, 0, 0, 0, 0xb0]);
pub const CN1_BOND_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 51);

pub fn host(name: &str, mac: Mac, ip: Option<&str>, provision: bool, firmware: &str) -> Host {
    let mut h = Host::with_interface(name, mac, ip);
    h.provision = provision;
    h.firmware = firmware.into();
    h.interfaces[0].fqdn = format!("{name}.cluster.test");
    h
}

pub fn inventory() -> Inventory {
    let mut cn1 = host("cn1", CN1, Some("10.0.0.5/24"), true, "");
    cn1.interfaces.push(xboot::inventory::Interface {
        mac: Some(CN1_BMC),
        ip: Some(format!("{CN1_BMC_IP}/24")),
        bmc: true,
        ..Default::default()
    });
    cn1.bonds.push(serde_json::json!({
        "mac": CN1_BOND.to_string(),
        "ip": format!("{CN1_BOND_IP}/24"),
        "ifname": "bond0",
        "peers": ["eno1", "eno2"],
    }));
    Inventory::from_parts_unchecked(
        vec![
            cn1,
            host("cn2", CN2_NO_PROVISION, Some("10.0.0.6/24"), false, ""),
            host(
                "cn3",
                CN3_FIRMWARE,
                Some("10.0.0.7/24"),
                true,
                "snponly-x86_64.efi",
            ),
            host("cn4", CN4_NO_IP, None, true, ""),
            host("cn5", CN5_RELAYED, Some("10.9.0.5/24"), true, ""),
            host("cn6", CN6_VLAN, Some("10.42.0.6/24"), true, ""),
        ],
        vec![],
    )
}

pub fn settings() -> Settings {
    Settings {
        lease_secs: 3600,
        dns: ["10.0.0.53", "10.0.0.54", "10.0.0.55"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
        domain_search: vec!["cluster.test".into()],
        router_octet4: 254,
        mtu: Some(1500),
        ..Settings::default()
    }
}

pub fn served(ifindex: u32) -> Vec<ServedAddr> {
    vec![
        ServedAddr {
            ifindex,
            vlan: 0,
            mac: SRV_MAC,
            net: "10.0.0.1/24".parse().unwrap(),
        },
        ServedAddr {
            ifindex,
            vlan: VLAN,
            mac: SRV_MAC,
            net: "10.42.0.1/24".parse().unwrap(),
        },
    ]
}

/// Pins the calling thread to CPU 0, so test runs use CPU 0's counters (the DNS
/// rotation index) and the test can predict them.
pub fn pin_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

/// The program loaded (not attached) with its maps synced to an inventory.
pub struct Lab {
    pub fp: FastPath,
    pub sync: MapSync,
    pub inv: Inventory,
    pub settings: Settings,
}

impl Lab {
    pub fn new() -> Lab {
        Lab::with(inventory(), settings())
    }

    pub fn with(inv: Inventory, settings: Settings) -> Lab {
        pin_cpu0();
        let mut fp = FastPath::load(LoadOptions::for_hosts(inv.hosts().len()))
            .expect("load the XDP program");
        let mut sync = MapSync::new(served(LO), SyncOptions::default());
        let compiler = Compiler {
            settings: &settings,
            urls: &URLS,
        };
        let r = sync
            .sync(&mut fp, &inv, &compiler, std::time::Instant::now())
            .unwrap();
        assert_eq!(r.failed, 0, "{r:?}");
        Lab {
            fp,
            sync,
            inv,
            settings,
        }
    }

    pub fn run(&mut self, frame: &[u8]) -> TestOutput {
        self.fp.test_run(frame).expect("BPF_PROG_TEST_RUN")
    }

    /// The DNS rotation the program applies to its next reply on CPU 0.
    pub fn rotation(&self) -> usize {
        self.fp.stats().answered_on(0) as usize
    }

    /// The frame the slow path sends for `frame` (None: it stays silent), with the
    /// builder's DNS rotation set to `rotation`.
    pub fn slow_path(&self, frame: &[u8], rotation: usize) -> Option<Vec<u8>> {
        slow_path(&self.inv, &self.settings, frame, rotation)
    }
}

/// Our addresses on the interface (VLAN) a frame arrived on.
fn ingress_addrs(vlan: Option<u16>) -> Vec<Ipv4Net> {
    served(LO)
        .into_iter()
        .filter(|s| s.vlan == vlan.unwrap_or(0))
        .map(|s| s.net)
        .collect()
}

/// The slow path end to end on one request frame: strict parse, classify, decide, frame.
pub fn slow_path(
    inv: &Inventory,
    settings: &Settings,
    frame: &[u8],
    rotation: usize,
) -> Option<Vec<u8>> {
    let f = parse_frame(frame).ok()?;
    if f.dst.port() != 67 {
        return None;
    }
    let msg = wire::parse(f.payload).ok()?;
    let req = Request::from_message(&msg);
    let host = inv.lookup_mac(req.mac);
    let local_dst = (!f.dst.ip().is_broadcast()).then_some(*f.dst.ip());
    let addrs = ingress_addrs(f.vlan);
    if local_dst.is_some_and(|d| !addrs.iter().any(|a| a.addr() == d)) {
        return None; // not addressed to us: the stack would not deliver it
    }
    let host_ip = host.and_then(|l| l.nic.addr());
    let server_ip = iface::pick_server_ip(&addrs, host_ip, local_dst)?;
    let ctx = Context {
        settings,
        server_ip,
        host,
        urls: &URLS,
        dns_rotation: rotation,
    };
    match dhcp::decide(&req, &ctx) {
        Decision::Reply(r) => Some(dhcp::frame(
            &r,
            &FrameAddrs {
                server_mac: SRV_MAC,
                server_ip,
                peer_mac: f.src_mac,
                vlan: f.vlan,
            },
        )),
        Decision::Silent(_) => None,
    }
}

/// A request, encoded by hand so options come in exactly the order given.
#[derive(Clone, Debug)]
pub struct Req {
    pub mac: Mac,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub hops: u8,
    pub secs: u16,
    /// Options in wire order (53 included), without END.
    pub opts: Vec<(u8, Vec<u8>)>,
    /// Pad the message with zeros to this length (PXE ROMs send 548 bytes).
    pub pad_to: usize,
    pub src_mac: Mac,
    pub src: SocketAddrV4,
    pub dst_mac: Mac,
    pub dst: SocketAddrV4,
    pub vlan: Option<u16>,
}

impl Req {
    /// A broadcast request from a client without an address.
    pub fn new(mac: Mac, msg: MessageType, opts: Vec<(u8, Vec<u8>)>) -> Req {
        let mut all = vec![(53, vec![u8::from(msg)])];
        all.extend(opts);
        Req {
            mac,
            xid: 0x5eed_0001,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            hops: 0,
            secs: 3,
            opts: all,
            pad_to: 300,
            src_mac: mac,
            src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            dst_mac: Mac([0xff; 6]),
            dst: SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
            vlan: None,
        }
    }

    pub fn without(mut self, code: u8) -> Req {
        self.opts.retain(|(c, _)| *c != code);
        self
    }

    /// Unicast to the server from `ip` (renewing).
    pub fn unicast_from(mut self, ip: Ipv4Addr) -> Req {
        self.ciaddr = ip;
        self.src = SocketAddrV4::new(ip, 68);
        self.dst_mac = SRV_MAC;
        self.dst = SocketAddrV4::new(SERVER, 67);
        self
    }

    /// Relayed by RELAY: giaddr set, from the relay's MAC and port 67, to the server.
    pub fn relayed(mut self) -> Req {
        self.giaddr = RELAY;
        self.hops = 1;
        self.src_mac = RELAY_MAC;
        self.src = SocketAddrV4::new(RELAY, 67);
        self.dst_mac = SRV_MAC;
        self.dst = SocketAddrV4::new(SERVER, 67);
        self
    }

    pub fn payload(&self) -> Vec<u8> {
        let mut b = vec![0u8; 240];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[3] = self.hops;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[8..10].copy_from_slice(&self.secs.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[24..28].copy_from_slice(&self.giaddr.octets());
        b[28..34].copy_from_slice(&self.mac.0);
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        for (code, data) in &self.opts {
            b.push(*code);
            b.push(data.len() as u8);
            b.extend_from_slice(data);
        }
        b.push(255);
        if b.len() < self.pad_to {
            b.resize(self.pad_to, 0);
        }
        b
    }

    pub fn frame(&self) -> Vec<u8> {
        udp_frame(
            &self.payload(),
            self.src_mac,
            self.src,
            self.dst_mac,
            self.dst,
            self.vlan,
        )
    }
}

/// Option 97 as PXE clients send it: type 0 and a 16-byte GUID.
pub fn guid(seed: u8) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend((0..16).map(|i| seed.wrapping_mul(31).wrapping_add(i)));
    v
}

/// The options each kind of client sends with a DISCOVER (after 53), as captured from
/// real clients (peers.md) and firmware.
pub fn client_opts(kind: &str, mac: Mac) -> Vec<(u8, Vec<u8>)> {
    let prl = vec![
        1, 3, 6, 12, 15, 28, 42, 43, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135,
    ];
    let pxe = |arch: u16, vendor: &str| {
        vec![
            (57, 1472u16.to_be_bytes().to_vec()),
            (93, arch.to_be_bytes().to_vec()),
            (94, vec![1, 2, 1]),
            (97, guid(mac.0[5])),
            (60, vendor.as_bytes().to_vec()),
            (55, prl.clone()),
        ]
    };
    match kind {
        "bios" => pxe(0, "PXEClient:Arch:00000:UNDI:002001"),
        "uefi" => pxe(7, "PXEClient:Arch:00007:UNDI:003016"),
        "arm64" => pxe(11, "PXEClient:Arch:00011:UNDI:003016"),
        "ia32" => pxe(6, "PXEClient:Arch:00006:UNDI:003016"),
        "unsupported" => pxe(2, "PXEClient:Arch:00002:UNDI:003016"),
        "http" => pxe(16, "HTTPClient:Arch:00016:UNDI:003001"),
        "ipxe" => {
            let mut o = pxe(0, "PXEClient:Arch:00000:UNDI:002001");
            o.push((77, b"iPXE".to_vec()));
            o.push((
                175,
                vec![177, 5, 1, 0x80, 0x86, 0x10, 0x0e, 235, 3, 1, 0, 0, 23, 1, 1],
            ));
            o
        }
        "udhcpc" => vec![
            (57, 576u16.to_be_bytes().to_vec()),
            (55, vec![1, 3, 6, 12, 15, 28, 42]),
            (60, b"udhcp 1.35.0".to_vec()),
            (61, [&[1u8][..], &mac.0].concat()),
        ],
        "dhclient" => vec![
            (12, b"node".to_vec()),
            (55, vec![1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42]),
        ],
        other => panic!("no client kind {other}"),
    }
}

pub const KINDS: [&str; 10] = [
    "bios",
    "uefi",
    "arm64",
    "ia32",
    "unsupported",
    "http",
    "ipxe",
    "udhcpc",
    "dhclient",
    "none",
];

/// A DISCOVER of `kind` ("none": option 53 only).
pub fn discover(kind: &str, mac: Mac) -> Req {
    let opts = if kind == "none" {
        vec![]
    } else {
        client_opts(kind, mac)
    };
    Req::new(mac, MessageType::Discover, opts)
}

/// A REQUEST in SELECTING state of `kind`, for `ip` from `server`.
pub fn selecting(kind: &str, mac: Mac, ip: Ipv4Addr, server: Ipv4Addr) -> Req {
    let mut opts = if kind == "none" {
        vec![]
    } else {
        client_opts(kind, mac)
    };
    opts.push((50, ip.octets().to_vec()));
    opts.push((54, server.octets().to_vec()));
    Req::new(mac, MessageType::Request, opts)
}
