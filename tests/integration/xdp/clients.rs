//! Real DHCP clients get their lease from the XDP program alone, in namespaces:
//!
//! ```text
//! netns srv: s0 10.77.0.1/24, XDP native   <== veth ==>   netns cli: c0 (MAC per test)
//! ```
//! No userspace DHCP server runs, so every answer the clients get is the program's; the
//! counters confirm it. Native XDP_TX on veth only delivers when the peer device has an
//! XDP program too (the kernel schedules the peer's NAPI only then): the client side
//! gets a second, empty instance of the program, which passes everything (its maps are
//! empty). Generic mode would need nothing on the peer; native is what production uses.
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;
use std::time::Duration;

use xboot::dhcp::Settings;
use xboot::inventory::{Inventory, Mac};
use xboot::xdp::{AttachMode, Compiler, FastPath, LoadOptions, MapSync, ServedAddr, SyncOptions};

use super::fixture::{host, URLS};
use crate::dhcp::{assert_dhclient_lease, env_value, lease_script};
use crate::netns::{self, Netns};

pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CN1_MAC: &str = "02:77:00:00:00:01";

/// Runs `f` on a thread inside `ns` (borrowing from the caller).
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::scope(|s| {
        s.spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    })
}

pub fn lab_settings() -> Settings {
    Settings {
        lease_secs: 3600,
        dns: vec![Ipv4Addr::new(10, 77, 0, 53), Ipv4Addr::new(10, 77, 0, 54)],
        domain_search: vec!["cluster.test".into()],
        router_octet4: 254,
        ..Settings::default()
    }
}

/// The server side: the program attached natively to `s0` in `srv`, maps synced to
/// `inv`; and the empty pass-through instance on `c0` in `cli`.
pub struct XdpLab {
    pub srv: Netns,
    pub cli: Netns,
    pub fp: FastPath,
    pub sync: MapSync,
    /// The pass-through instance on the client side (kept attached while the lab lives).
    pub _peer: FastPath,
    pub settings: Settings,
}

impl XdpLab {
    pub fn new(prefix: &str, client_mac: &str, inv: &Inventory) -> XdpLab {
        let srv = Netns::new(&format!("{prefix}-s"));
        let cli = Netns::new(&format!("{prefix}-c"));
        Netns::veth(&srv, "s0", "10.77.0.1/24", &cli, "c0", "10.77.0.2/24");
        cli.set_mac("c0", client_mac);
        let mut fp = FastPath::load(LoadOptions::for_hosts(inv.hosts().len())).unwrap();
        let (mode, served) = in_netns(&srv, || {
            let mode = fp.attach("s0").unwrap();
            (
                mode,
                ServedAddr::for_interfaces(&["s0".to_string()]).unwrap(),
            )
        });
        assert_eq!(mode, AttachMode::Native, "veth supports native XDP");
        assert_eq!(served.len(), 1, "{served:?}");
        let mut peer = FastPath::load(LoadOptions::for_hosts(1)).unwrap();
        assert_eq!(
            in_netns(&cli, || peer.attach("c0").unwrap()),
            AttachMode::Native
        );
        let settings = lab_settings();
        let mut sync = MapSync::new(served, SyncOptions::default());
        let c = Compiler {
            settings: &settings,
            urls: &URLS,
        };
        let r = sync
            .sync(&mut fp, inv, &c, std::time::Instant::now())
            .unwrap();
        assert_eq!(r.failed, 0);
        XdpLab {
            srv,
            cli,
            fp,
            sync,
            _peer: peer,
            settings,
        }
    }
}

pub fn one_host(mac: &str) -> Inventory {
    let mac: Mac = mac.parse().unwrap();
    Inventory::from_parts_unchecked(
        vec![host("cn1", mac, Some("10.77.0.50/24"), true, "")],
        vec![],
    )
}

#[test]
fn xdp_udhcpc_gets_its_lease_from_xdp() {
    if netns::need_root() {
        return;
    }
    let lab = XdpLab::new("xdpu", CN1_MAC, &one_host(CN1_MAC));
    let stats = lab.fp.stats();
    let dir = tempfile::tempdir().unwrap();
    for extra in [&[][..], &["-B"][..]] {
        let before = stats.counters();
        let out = dir.path().join(format!("udhcpc{}.env", extra.len()));
        let (ok, env) = crate::udhcpc::udhcpc(&lab.cli, dir.path(), &out, "c0", 3, extra);
        let c = stats.counters().since(&before);
        assert!(
            ok,
            "udhcpc {extra:?} got no lease; XDP counters {c:?}, reasons {:?}",
            stats.reasons()
        );
        let v = |k: &str| env_value(&env, k).unwrap_or_else(|| panic!("no {k} in\n{env}"));
        assert_eq!(v("ip"), "10.77.0.50");
        assert_eq!(v("subnet"), "255.255.255.0");
        assert_eq!(v("router"), "10.77.0.254");
        assert_eq!(v("serverid"), "10.77.0.1");
        assert_eq!(v("hostname"), "cn1");
        assert_eq!(v("lease"), "3600");
        // OFFER and ACK, both from XDP (nothing else answers in this lab).
        assert!(c.answered >= 2, "{c:?}");
        assert_eq!(c.nak + c.malformed, 0, "{c:?}");
    }
}

#[test]
fn xdp_dhclient_gets_its_lease_from_xdp() {
    if netns::need_root() {
        return;
    }
    let lab = XdpLab::new("xdpd", CN1_MAC, &one_host(CN1_MAC));
    let stats = lab.fp.stats();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dhclient.env");
    let script = lease_script(dir.path(), &out);
    let lf = dir.path().join("lease").to_str().unwrap().to_string();
    let pf = dir.path().join("pid").to_str().unwrap().to_string();
    let st = lab
        .cli
        .cmd(&[
            "dhclient", "-1", "-sf", &script, "-lf", &lf, "-pf", &pf, "c0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let c = stats.counters();
    assert!(
        st.success(),
        "dhclient got no lease; XDP counters {c:?}, reasons {:?}",
        stats.reasons()
    );
    let env = std::fs::read_to_string(&out).unwrap();
    assert_dhclient_lease(&env);
    assert!(c.answered >= 2, "{c:?}");
}

#[test]
fn xdp_answers_relayed_requests_to_the_relay() {
    if netns::need_root() {
        return;
    }
    // The relay is a UDP socket at 10.77.0.2:67 in the client namespace. Its frames leave
    // with a partial checksum (veth offload) unless offload is off on c0; real NICs
    // deliver complete checksums.
    let lab = XdpLab::new("xdpr", "02:77:00:00:00:fe", &one_host(CN1_MAC));
    lab.cli.run(&["ethtool", "-K", "c0", "tx", "off"]);
    let stats = lab.fp.stats();
    let relay = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 67);
    let mut req = super::fixture::discover("bios", CN1_MAC.parse().unwrap());
    req.giaddr = *relay.ip();
    req.hops = 1;
    let payload = req.payload();
    let got = in_netns(&lab.cli, || {
        let s = std::net::UdpSocket::bind(relay).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.send_to(&payload, SocketAddrV4::new(SERVER, 67)).unwrap();
        let mut buf = [0u8; 1500];
        s.recv_from(&mut buf)
            .ok()
            .map(|(n, from)| (buf[..n].to_vec(), from))
    });
    let got = got.unwrap_or_else(|| {
        panic!(
            "no reply at the relay: {:?} {:?}",
            stats.counters(),
            stats.reasons()
        )
    });
    assert_eq!(
        got.1,
        std::net::SocketAddr::V4(SocketAddrV4::new(SERVER, 67))
    );
    let m = xboot::dhcp::wire::parse(&got.0).unwrap();
    assert_eq!(m.opts().msg_type(), Some(dhcproto::v4::MessageType::Offer));
    assert_eq!(
        (m.yiaddr(), m.giaddr()),
        (Ipv4Addr::new(10, 77, 0, 50), *relay.ip())
    );
    assert_eq!(stats.counters().answered, 1);
}
