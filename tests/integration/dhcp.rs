//! The userspace DHCP service against real clients (busybox udhcpc, ISC dhclient, ndisc6's
//! rdisc6) and hand-made datagrams, in private namespaces:
//!
//! ```text
//! netns srv: s0 10.77.0.1/24  <== veth ==>  netns cli: c0 (10.77.0.2/24, MAC per test)
//! ```
//! The service runs in-process: a thread enters the server namespace (`setns`), opens the
//! sockets there and runs `xboot::dhcp::run` until the test drops it.
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use xboot::config::Config;
use xboot::dhcp::{self, wire, Listen, PlainUrls, Service, Sockets};
use xboot::events::{EventKind, EventLog};
use xboot::inventory::{Host, Interface, Inventory, Mac};
use xboot::state::Shared;

use crate::netns::{self, Netns};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const CN1_MAC: &str = "02:77:00:00:00:01";
const CN1_BMC_MAC: &str = "02:77:00:00:00:b1";
const CN1_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 50);
const UNKNOWN_MAC: &str = "02:77:00:00:00:99";

/// Runs `f` on a thread inside `ns`.
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
    .join()
    .expect("thread in namespace panicked")
}

fn enter(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

fn inventory() -> Inventory {
    let host = |name: &str, mac: &str, ip: &str, provision: bool| Host {
        name: name.into(),
        provision,
        interfaces: vec![Interface {
            mac: Some(mac.parse().unwrap()),
            ip: Some(ip.into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut cn1 = host("cn1", CN1_MAC, "10.77.0.50/24", true);
    cn1.interfaces.push(Interface {
        mac: Some(CN1_BMC_MAC.parse().unwrap()),
        ip: Some("10.77.0.60/24".into()),
        bmc: true,
        ..Default::default()
    });
    Inventory::from_parts_unchecked(
        vec![
            cn1,
            host("cn2", "02:77:00:00:00:02", "10.77.0.51/24", false),
        ],
        vec![],
    )
}

fn config(proxy_only: bool) -> Config {
    let mut c = Config::default();
    c.dhcp.lease_time = "1h".into();
    c.dhcp.dns_servers = vec!["10.77.0.53".into(), "10.77.0.54".into()];
    c.dhcp.domain_search = vec!["cluster.test".into()];
    c.dhcp.router_octet4 = 254;
    c.dhcp.proxy_only = proxy_only;
    c
}

/// The service, running in a namespace until dropped.
struct Server {
    service: Arc<Service>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start(ns: &Netns, cfg: Config, listen: Listen) -> Server {
        let shared = Shared::new(cfg, inventory(), EventLog::default());
        let service = Arc::new(Service::new(shared, Arc::new(PlainUrls { port: 8080 })).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let path = format!("/run/netns/{}", ns.name);
        let svc = service.clone();
        let thread = std::thread::spawn(move || {
            enter(&path);
            let sockets = match Sockets::open(&listen) {
                Ok(s) => s,
                Err(e) => {
                    ready_tx.send(Some(e.to_string())).unwrap();
                    return Err(e);
                }
            };
            ready_tx.send(None).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(dhcp::run(sockets, svc, async {
                let _ = stopped.await;
            }))
        });
        if let Some(e) = ready.recv().unwrap() {
            panic!("cannot open the DHCP sockets: {e}");
        }
        Server {
            service,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stats(&self) -> dhcp::StatsSnapshot {
        self.service.stats.snapshot()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let res = self.thread.take().unwrap().join();
        if !std::thread::panicking() {
            res.expect("server thread panicked")
                .expect("server run failed");
        }
    }
}

fn listen_on(ifaces: &[&str]) -> Listen {
    Listen {
        interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
        dhcp: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67),
        boot_port: Some(4011),
        router_advertisements: false,
    }
}

/// The two namespaces, the client end addressed 10.77.0.2 with MAC `mac`.
fn lab(mac: &str) -> (Netns, Netns) {
    let srv = Netns::new("dhcp-s");
    let cli = Netns::new("dhcp-c");
    Netns::veth(&srv, "s0", "10.77.0.1/24", &cli, "c0", "10.77.0.2/24");
    cli.set_mac("c0", mac);
    (srv, cli)
}

/// A hook script that appends the environment to `out` when a lease is bound.
pub fn lease_script(dir: &Path, out: &Path) -> String {
    let p = dir.join("hook.sh");
    let body = format!(
        "#!/bin/sh\ncase \"$1$reason\" in bound|BOUND|REBOOT|RENEW) env >> {} ;; esac\nexit 0\n",
        out.display()
    );
    std::fs::write(&p, body).unwrap();
    netns::run(testlab::peers::command("chmod").args(["+x", p.to_str().unwrap()]));
    p.to_str().unwrap().to_string()
}

/// Checks what dhclient's hook saw for cn1 (address, router, search, server, both DNS
/// servers in either order: they rotate per reply).
pub fn assert_dhclient_lease(env: &str) {
    let v = |k: &str| env_value(env, k).unwrap_or_else(|| panic!("no {k} in\n{env}"));
    assert_eq!(v("new_ip_address"), "10.77.0.50");
    assert_eq!(v("new_routers"), "10.77.0.254");
    assert_eq!(v("new_domain_search"), "cluster.test.");
    assert_eq!(v("new_dhcp_server_identifier"), "10.77.0.1");
    let mut dns: Vec<String> = v("new_domain_name_servers")
        .split_whitespace()
        .map(String::from)
        .collect();
    dns.sort();
    assert_eq!(dns, ["10.77.0.53", "10.77.0.54"]);
}

/// The value of `key` in an `env` dump (quotes removed).
pub fn env_value(env: &str, key: &str) -> Option<String> {
    env.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}="))
            .map(|v| v.trim_matches('\'').to_string())
    })
}

fn udhcpc(cli: &Netns, dir: &Path, extra: &[&str]) -> (bool, String) {
    let out = dir.join(format!("udhcpc{}.env", extra.join("")));
    let script = lease_script(dir, &out);
    let mut argv = vec![
        "busybox", "udhcpc", "-f", "-q", "-n", "-i", "c0", "-s", &script, "-t", "3", "-T", "1",
    ];
    argv.extend_from_slice(extra);
    let status = cli
        .cmd(&argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    (
        status.success(),
        std::fs::read_to_string(&out).unwrap_or_default(),
    )
}

#[test]
fn udhcpc_gets_the_inventory_lease() {
    if netns::need_root() {
        return;
    }
    let (srv, cli) = lab(CN1_MAC);
    let server = Server::start(&srv, config(false), listen_on(&["s0"]));
    let dir = tempfile::tempdir().unwrap();
    // Without and with the broadcast flag (-B): unicast-to-chaddr and broadcast replies.
    for extra in [&[][..], &["-B"][..]] {
        let (ok, env) = udhcpc(&cli, dir.path(), extra);
        assert!(ok, "udhcpc {extra:?} got no lease");
        let v = |k: &str| {
            env_value(&env, k).unwrap_or_else(|| panic!("udhcpc {extra:?}: no {k} in\n{env}"))
        };
        assert_eq!(v("ip"), "10.77.0.50");
        assert_eq!(v("subnet"), "255.255.255.0");
        assert_eq!(v("router"), "10.77.0.254");
        assert_eq!(v("dns").split_whitespace().collect::<Vec<_>>().len(), 2);
        assert!(v("dns").contains("10.77.0.53") && v("dns").contains("10.77.0.54"));
        assert_eq!(v("serverid"), "10.77.0.1");
        assert_eq!(v("hostname"), "cn1");
        assert_eq!(v("lease"), "3600");
        assert_eq!(v("broadcast"), "10.77.0.255");
    }
    let s = server.stats();
    assert!(s.offers >= 2 && s.acks >= 2, "{s:?}");
    assert_eq!((s.naks, s.malformed, s.unknown), (0, 0, 0));
    let events = server.service.shared.events.for_host("cn1");
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::DhcpOffer && e.detail == "10.77.0.50 via userspace"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.kind == EventKind::DhcpAck));
}

/// cn1's BMC interface (a MAC of its own): udhcpc on it gets the BMC's address, the
/// network options, and no boot file or next server (a lease only).
#[test]
fn udhcpc_on_a_bmc_interface_gets_a_lease_only() {
    if netns::need_root() {
        return;
    }
    let (srv, cli) = lab(CN1_BMC_MAC);
    let server = Server::start(&srv, config(false), listen_on(&["s0"]));
    let dir = tempfile::tempdir().unwrap();
    let (ok, env) = udhcpc(&cli, dir.path(), &[]);
    assert!(ok, "udhcpc on the BMC NIC got no lease");
    let v = |k: &str| env_value(&env, k);
    assert_eq!(v("ip").as_deref(), Some("10.77.0.60"), "{env}");
    assert_eq!(v("subnet").as_deref(), Some("255.255.255.0"));
    assert_eq!(v("router").as_deref(), Some("10.77.0.254"));
    assert_eq!(v("serverid").as_deref(), Some("10.77.0.1"));
    assert_eq!(v("boot_file"), None, "{env}");
    assert_eq!(v("siaddr").filter(|s| s != "0.0.0.0"), None, "{env}");
    let s = server.stats();
    assert!(s.offers >= 1 && s.acks >= 1, "{s:?}");
    assert_eq!(s.unknown, 0, "{s:?}");
}

/// Grendel's `dhcp.gateway`: with no subnet and no `router_octet4`, udhcpc and dhclient
/// get it as their router (option 3).
#[test]
fn real_clients_get_the_router_from_dhcp_gateway() {
    if netns::need_root() {
        return;
    }
    let (srv, cli) = lab(CN1_MAC);
    let mut cfg = config(false);
    cfg.dhcp.router_octet4 = 0;
    cfg.dhcp.gateway = Some(Ipv4Addr::new(10, 77, 0, 200));
    let _server = Server::start(&srv, cfg, listen_on(&["s0"]));
    let dir = tempfile::tempdir().unwrap();
    let (ok, env) = udhcpc(&cli, dir.path(), &[]);
    assert!(ok, "udhcpc got no lease");
    assert_eq!(
        env_value(&env, "router").as_deref(),
        Some("10.77.0.200"),
        "{env}"
    );
    let env = dhclient_lease(&cli, dir.path());
    assert_eq!(
        env_value(&env, "new_routers").as_deref(),
        Some("10.77.0.200"),
        "{env}"
    );
}

/// ISC dhclient on c0 in `cli`, its hook and files in `dir`: the variables of its first
/// lease. Foreground (-d), one try (-1): dhclient stays to renew and is killed (by pid)
/// with the namespace.
fn dhclient_lease(cli: &Netns, dir: &Path) -> String {
    dhclient_lease_with(cli, dir, None)
}

/// As [`dhclient_lease`], with `conf` as dhclient.conf (`-cf`) when given.
fn dhclient_lease_with(cli: &Netns, dir: &Path, conf: Option<&str>) -> String {
    let out = dir.join("dhclient.env");
    let script = lease_script(dir, &out);
    let lf = dir.join("lease").to_str().unwrap().to_string();
    let pf = dir.join("pid").to_str().unwrap().to_string();
    let cf = dir.join("dhclient.conf").to_str().unwrap().to_string();
    let mut argv = vec![
        "dhclient", "-d", "-1", "-sf", &script, "-lf", &lf, "-pf", &pf,
    ];
    if let Some(text) = conf {
        std::fs::write(&cf, text).unwrap();
        argv.extend(["-cf", &cf]);
    }
    argv.push("c0");
    cli.spawn(&argv, Stdio::null(), Stdio::null());
    wait_for_file(&out, Duration::from_secs(10));
    std::fs::read_to_string(&out).unwrap()
}

/// The option table reaches a real client: a per-host option (42, NTP servers, for
/// `hosts = "cn1"`), a per-class one (7, log servers, for dhclient's vendor class
/// `lab-class`), an arbitrary code (224, declared in dhclient.conf) for a tag the host
/// lacks (not sent), and Grendel's `idrac` preset when the class is `iDRAC`. dhclient's
/// received options are printed.
#[test]
fn dhclient_gets_per_host_and_per_class_options() {
    if netns::need_root() {
        return;
    }
    let table = Config::from_toml(
        r#"[dhcp]
presets = ["idrac"]
[[dhcp.options]]
code = 42
ip = ["10.77.0.123"]
hosts = "cn[1-3]"
[[dhcp.options]]
code = 7
ip = ["10.77.0.124"]
vendor_class = "lab-class"
[[dhcp.options]]
code = 224
text = "tagged only"
tag = "switch"
[[dhcp.options]]
code = 224
text = "every lease"
"#,
        Path::new("table.toml"),
    )
    .unwrap();
    let mut cfg = config(false);
    cfg.dhcp.options = table.dhcp.options;
    cfg.dhcp.presets = table.dhcp.presets;
    let conf = |class: &str| {
        format!(
            "send vendor-class-identifier \"{class}\";\n\
             option xboot-site code 224 = text;\n\
             request subnet-mask, routers, domain-name-servers, ntp-servers, log-servers, \
             vendor-encapsulated-options, xboot-site;\n"
        )
    };
    let received = |env: &str| -> Vec<String> {
        env.lines()
            .filter(|l| l.starts_with("new_"))
            .map(String::from)
            .collect()
    };
    // One lab per class: dhclient stays on c0 to renew until its namespace goes.
    let lease = |class: &str| {
        let (srv, cli) = lab(CN1_MAC);
        let _server = Server::start(&srv, cfg.clone(), listen_on(&["s0"]));
        let dir = tempfile::tempdir().unwrap();
        dhclient_lease_with(&cli, dir.path(), Some(&conf(class)))
    };
    let env = lease("lab-class");
    eprintln!(
        "dhclient (vendor class lab-class) received:\n{}",
        received(&env).join("\n")
    );
    let v = |env: &str, k: &str| env_value(env, k);
    assert_eq!(v(&env, "new_ip_address").as_deref(), Some("10.77.0.50"));
    assert_eq!(
        v(&env, "new_ntp_servers").as_deref(),
        Some("10.77.0.123"),
        "per host"
    );
    assert_eq!(
        v(&env, "new_log_servers").as_deref(),
        Some("10.77.0.124"),
        "per class"
    );
    assert_eq!(v(&env, "new_xboot_site").as_deref(), Some("every lease"));
    assert_eq!(v(&env, "new_vendor_encapsulated_options"), None);
    // Another class: no log servers; iDRAC's preset (cn1 is provisioned) in option 43.
    let env = lease("iDRAC");
    eprintln!(
        "dhclient (vendor class iDRAC) received:\n{}",
        received(&env).join("\n")
    );
    assert_eq!(v(&env, "new_ntp_servers").as_deref(), Some("10.77.0.123"));
    assert_eq!(v(&env, "new_log_servers"), None, "{env}");
    // dhclient prints an option 43 of printable bytes as text.
    assert_eq!(
        v(&env, "new_vendor_encapsulated_options").as_deref(),
        Some("-f idrac-config.json -i 10.77.0.1 -s 5 -n boot/cn1/provision"),
        "{env}"
    );
}

#[test]
fn dhclient_gets_the_inventory_lease() {
    if netns::need_root() {
        return;
    }
    let (srv, cli) = lab(CN1_MAC);
    // All interfaces (no SO_BINDTODEVICE): the ingress interface comes from IP_PKTINFO.
    let server = Server::start(&srv, config(false), listen_on(&[]));
    let dir = tempfile::tempdir().unwrap();
    let env = dhclient_lease(&cli, dir.path());
    assert_dhclient_lease(&env);
    let v = |k: &str| env_value(&env, k).unwrap_or_else(|| panic!("no {k} in\n{env}"));
    assert_eq!(v("new_subnet_mask"), "255.255.255.0");
    assert_eq!(v("new_interface_mtu"), "1500");
    assert!(server.stats().acks >= 1);
}

#[test]
fn unknown_mac_gets_nothing_and_is_listed() {
    if netns::need_root() {
        return;
    }
    let (srv, cli) = lab(UNKNOWN_MAC);
    let server = Server::start(&srv, config(false), listen_on(&["s0"]));
    let dir = tempfile::tempdir().unwrap();
    let (ok, env) = udhcpc(&cli, dir.path(), &[]);
    assert!(!ok && env.is_empty(), "unknown MAC got a lease: {env}");
    let s = server.stats();
    assert!(s.unknown >= 3, "3 DISCOVERs counted: {s:?}");
    assert_eq!(s.answered + s.naks, 0);
    let d = server.service.discovered.list();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].mac, UNKNOWN_MAC.parse::<Mac>().unwrap());
    assert_eq!(
        (d[0].interface.as_str(), d[0].kind),
        ("s0", dhcp::ClientKind::Os)
    );
    assert!(
        d[0].count >= 3
            && d[0]
                .vendor_class
                .as_deref()
                .is_some_and(|v| v.starts_with("udhcp"))
    );
}

/// A DHCP request as a relay agent at 10.77.0.2 would forward it.
fn relayed(t: MessageType, mac: &str, xid: u32, extra: &[DhcpOption]) -> Vec<u8> {
    relayed_via(RELAY, t, mac, xid, extra)
}

/// A DHCP request as a relay agent at `relay` would forward it.
pub fn relayed_via(
    relay: Ipv4Addr,
    t: MessageType,
    mac: &str,
    xid: u32,
    extra: &[DhcpOption],
) -> Vec<u8> {
    let mac: Mac = mac.parse().unwrap();
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, relay, &mac.0);
    m.set_hops(1);
    m.opts_mut().insert(DhcpOption::MessageType(t));
    for o in extra {
        m.opts_mut().insert(o.clone());
    }
    wire::encode(&m)
}

/// Sends `datagrams` from `from` (in the client namespace) to `to`, then collects the
/// replies until none has come for `wait` (a window long enough for a loaded machine,
/// not a speed check).
pub fn exchange(
    cli: &Netns,
    from: SocketAddrV4,
    to: SocketAddrV4,
    datagrams: Vec<Vec<u8>>,
    wait: Duration,
) -> Vec<(SocketAddrV4, Message)> {
    in_netns(cli, move || {
        let s = bind_reuse(from);
        for d in &datagrams {
            s.send_to(d, to).unwrap();
        }
        s.set_read_timeout(Some(wait)).unwrap();
        let mut got = vec![];
        let mut buf = [0u8; 2048];
        while let Ok((n, std::net::SocketAddr::V4(src))) = s.recv_from(&mut buf) {
            got.push((
                src,
                wire::parse(&buf[..n]).expect("server sent a malformed reply"),
            ));
        }
        got
    })
}

/// A UDP socket on `addr` with SO_REUSEADDR: the socket of the previous exchange on the
/// same port is sometimes not yet released when the next binds (EADDRINUSE otherwise).
fn bind_reuse(addr: SocketAddrV4) -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&addr.into())
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s.into()
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

#[test]
fn relay_requests_are_answered_to_giaddr() {
    if netns::need_root() {
        return;
    }
    let (srv, cli) = lab("02:77:00:00:00:fe");
    let server = Server::start(&srv, config(false), listen_on(&["s0"]));
    let relay = SocketAddrV4::new(RELAY, 67);
    let to = SocketAddrV4::new(SERVER, 67);
    let sid = DhcpOption::ServerIdentifier(SERVER);
    let want_ip = DhcpOption::RequestedIpAddress(CN1_IP);
    let wrong_ip = DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 99));
    let rows = [
        (
            "discover",
            relayed(MessageType::Discover, CN1_MAC, 1, &[]),
            Some((MessageType::Offer, CN1_IP)),
        ),
        (
            "request",
            relayed(MessageType::Request, CN1_MAC, 2, &[sid.clone(), want_ip]),
            Some((MessageType::Ack, CN1_IP)),
        ),
        (
            "wrong address",
            relayed(MessageType::Request, CN1_MAC, 3, &[sid, wrong_ip]),
            Some((MessageType::Nak, Ipv4Addr::UNSPECIFIED)),
        ),
        (
            "unknown",
            relayed(MessageType::Discover, UNKNOWN_MAC, 4, &[]),
            None,
        ),
    ];
    for (what, d, want) in rows {
        let got = exchange(&cli, relay, to, vec![d], Duration::from_millis(700));
        match want {
            None => assert!(got.is_empty(), "{what}: {got:?}"),
            Some((t, yiaddr)) => {
                assert_eq!(got.len(), 1, "{what}: {got:?}");
                let (src, m) = &got[0];
                assert_eq!(
                    *src,
                    SocketAddrV4::new(SERVER, 67),
                    "{what}: from the server port"
                );
                assert_eq!(m.opts().msg_type(), Some(t), "{what}");
                assert_eq!((m.yiaddr(), m.giaddr()), (yiaddr, RELAY), "{what}");
            }
        }
    }
    // Option 82 comes back to the relay as it was sent (RFC 3046).
    let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
    info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(
        b"swp12".to_vec(),
    ));
    let d = relayed(
        MessageType::Discover,
        CN1_MAC,
        5,
        &[DhcpOption::RelayAgentInformation(info.clone())],
    );
    let got = exchange(&cli, relay, to, vec![d], Duration::from_millis(700));
    assert_eq!(got.len(), 1);
    assert_eq!(
        opt(&got[0].1, OptionCode::RelayAgentInformation),
        Some(&DhcpOption::RelayAgentInformation(info))
    );
    assert_eq!(server.stats().naks, 1);
}

#[test]
fn malformed_datagrams_get_no_answer_and_the_server_keeps_serving() {
    if netns::need_root() {
        return;
    }
    let (srv, cli) = lab("02:77:00:00:00:fe");
    let server = Server::start(&srv, config(false), listen_on(&["s0"]));
    let good = relayed(MessageType::Discover, CN1_MAC, 0xabcd, &[]);
    let with_opts = |opts: &[u8]| {
        let mut d = good[..240].to_vec();
        d.extend_from_slice(opts);
        d
    };
    let mut bad_magic = good.clone();
    bad_magic[236] = 0;
    let mut bad_hlen = good.clone();
    bad_hlen[2] = 200;
    let garbage: Vec<u8> = (0..600u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let bad = vec![
        vec![],
        b"hello".to_vec(),
        good[..100].to_vec(),
        good[..239].to_vec(),
        bad_magic,
        bad_hlen,
        garbage,
        with_opts(&[53, 1, 1, 12, 40, b'x']), // option longer than the packet
        with_opts(&[53, 2, 1, 1, 255]),       // message type of length 2
        with_opts(&[53, 1, 1, 50, 3, 10, 77, 0, 255]), // requested IP of 3 bytes
        with_opts(&[53, 1, 1, 94, 2, 1, 2, 255]), // NII of 2 bytes
        with_opts(&[53, 1, 1, 12, 2, 0xff, 0xfe, 255]), // hostname not UTF-8
    ];
    let n_bad = bad.len() as u64;
    let mut all = bad;
    all.push(good);
    let got = exchange(
        &cli,
        SocketAddrV4::new(RELAY, 67),
        SocketAddrV4::new(SERVER, 67),
        all,
        Duration::from_millis(3000),
    );
    assert_eq!(got.len(), 1, "only the good request is answered: {got:?}");
    assert_eq!(got[0].1.xid(), 0xabcd);
    assert_eq!(got[0].1.yiaddr(), CN1_IP);
    let s = server.stats();
    assert_eq!(s.malformed, n_bad, "{s:?}");
    assert_eq!(s.offers, 1);
}

#[test]
fn proxy_offer_and_pxe_boot_server() {
    if netns::need_root() {
        return;
    }
    let (srv, cli) = lab("02:77:00:00:00:fe");
    let server = Server::start(&srv, config(true), listen_on(&["s0"]));
    let bios = [
        DhcpOption::ClientSystemArchitecture(0.into()),
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
        DhcpOption::ClientMachineIdentifier(vec![0; 17]),
    ];
    // proxyDHCP: a PXE DISCOVER gets boot options without an address; an OS client nothing.
    let got = exchange(
        &cli,
        SocketAddrV4::new(RELAY, 67),
        SocketAddrV4::new(SERVER, 67),
        vec![
            relayed(MessageType::Discover, CN1_MAC, 1, &bios),
            relayed(MessageType::Discover, CN1_MAC, 2, &[]),
        ],
        Duration::from_millis(3000),
    );
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0].1;
    assert_eq!(
        (m.xid(), m.yiaddr(), m.siaddr()),
        (1, Ipv4Addr::UNSPECIFIED, SERVER)
    );
    assert_eq!(
        opt(m, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(
        m.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "undionly.kpxe"
    );
    assert!(
        opt(m, OptionCode::ClientMachineIdentifier).is_some(),
        "97 echoed"
    );
    // Boot server: a REQUEST to 4011 from the configured client is answered to its sender.
    let uefi = [
        DhcpOption::ClientSystemArchitecture(7.into()),
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003000".to_vec()),
        DhcpOption::VendorExtensions(vec![71, 4, 0x80, 0, 0, 0, 255]),
    ];
    let mut req = wire::parse(&relayed(MessageType::Request, CN1_MAC, 3, &uefi)).unwrap();
    req.set_giaddr(Ipv4Addr::UNSPECIFIED).set_ciaddr(RELAY);
    let from = SocketAddrV4::new(RELAY, 4011);
    let got = exchange(
        &cli,
        from,
        SocketAddrV4::new(SERVER, 4011),
        vec![wire::encode(&req)],
        Duration::from_millis(3000),
    );
    assert_eq!(got.len(), 1, "{got:?}");
    let (src, m) = &got[0];
    assert_eq!(*src, SocketAddrV4::new(SERVER, 4011));
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(
        m.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "snponly.efi"
    );
    assert_eq!(
        opt(m, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![
            6, 1, 8, 71, 4, 0x80, 0, 0, 0, 255
        ]))
    );
    let s = server.stats();
    assert_eq!((s.proxy_offers, s.boot_acks), (1, 1), "{s:?}");
}

#[test]
fn router_solicitation_gets_a_lifetime_zero_advertisement() {
    router_advertisement_reaches_rdisc6(true);
}

/// The same with IPv6 disabled on the server's interface (as on many boot servers): the
/// responder reads and sends whole Ethernet frames, so the kernel's IPv6 setting does
/// not matter; the client (IPv6 on) checks hop limit and checksum as any host does.
#[test]
fn router_advertisement_without_ipv6_on_the_server() {
    router_advertisement_reaches_rdisc6(false);
}

/// rdisc6 in the client namespace solicits on c0 and reads the answer: router lifetime
/// 0, no M/O flags, no prefix, the server's MAC, from the link-local address derived
/// from that MAC (whether or not the server's interface has IPv6 enabled).
fn router_advertisement_reaches_rdisc6(server_ipv6: bool) {
    if netns::need_root() {
        return;
    }
    let (srv, cli) = lab(CN1_MAC);
    let mut ends = vec![(&cli, "c0")];
    if server_ipv6 {
        ends.push((&srv, "s0"));
    }
    for (ns, ifname) in &ends {
        // No duplicate address detection, so the link-local address is usable at once.
        ns.run(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{ifname}.accept_dad=0"),
        ]);
        ns.run(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=0",
            &format!("net.ipv6.conf.{ifname}.disable_ipv6=0"),
        ]);
    }
    if !server_ipv6 {
        srv.run(&["sysctl", "-qw", "net.ipv6.conf.s0.disable_ipv6=1"]);
        let v6 = srv.run(&["ip", "-6", "addr", "show", "dev", "s0"]);
        assert!(v6.stdout.is_empty(), "s0 still has IPv6: {v6:?}");
    }
    for (ns, ifname) in &ends {
        wait_link_local(ns, ifname);
    }
    let server = Server::start(
        &srv,
        config(false),
        Listen {
            router_advertisements: true,
            ..listen_on(&["s0"])
        },
    );
    let out = cli
        .cmd(&["rdisc6", "-1", "-r", "3", "-w", "1000", "c0"])
        .output()
        .expect("rdisc6 (package ndisc6)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "no RA: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // rdisc6 prints "Key   :   value".
    let field = |key: &str| {
        let line = text.lines().find(|l| l.trim_start().starts_with(key));
        let line = line.unwrap_or_else(|| panic!("no {key:?} in {text}"));
        line.split_once(':').unwrap().1.trim().to_lowercase()
    };
    assert!(field("Router lifetime").starts_with("0 "), "{text}");
    assert_eq!(field("Stateful address conf."), "no", "{text}");
    assert_eq!(field("Stateful other conf."), "no", "{text}");
    assert!(!text.contains("Prefix"), "no prefix advertised: {text}");
    let mac = mac_of(&srv, "s0");
    assert_eq!(field("Source link-layer address"), mac, "{text}");
    let from = xboot::dhcp::ra::link_local(mac.parse().unwrap());
    assert!(text.contains(&format!("from {from}")), "{text}");
    assert!(server.stats().router_advertisements >= 1);
}

/// Waits until `path` exists and is not empty.
fn wait_for_file(path: &Path, max: Duration) {
    let t0 = std::time::Instant::now();
    while std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        assert!(
            t0.elapsed() < max,
            "nothing in {} after {max:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The hook may still be writing: give it a moment to finish.
    std::thread::sleep(Duration::from_millis(50));
}

/// Waits (up to 5 s) until `ifname` has a usable IPv6 link-local address.
fn wait_link_local(ns: &Netns, ifname: &str) {
    for _ in 0..100 {
        let out = ns.run(&["ip", "-6", "addr", "show", "dev", ifname, "scope", "link"]);
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("fe80::") && !text.contains("tentative") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{ifname} got no IPv6 link-local address");
}

fn mac_of(ns: &Netns, ifname: &str) -> String {
    let out = ns.run(&["cat", &format!("/sys/class/net/{ifname}/address")]);
    String::from_utf8_lossy(&out.stdout).trim().to_lowercase()
}

/// A tiny HTTP responder in `ns` at 10.77.0.1:8080: answers every GET with an iPXE script
/// and reports each request line (with the time since `t0`) on the returned channel.
fn script_server(
    ns: &Netns,
    t0: std::time::Instant,
) -> std::sync::mpsc::Receiver<(Duration, String)> {
    use std::io::{BufRead, BufReader, Write};
    let (tx, rx) = std::sync::mpsc::channel();
    let path = format!("/run/netns/{}", ns.name);
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        enter(&path);
        let l = std::net::TcpListener::bind((SERVER, 8080)).unwrap();
        ready_tx.send(()).unwrap();
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            let mut line = String::new();
            let _ = BufReader::new(&c).read_line(&mut line);
            let body = "#!ipxe\necho XBOOT-SCRIPT\nsleep 30\n";
            let _ = write!(
                c,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if tx.send((t0.elapsed(), line.trim().to_string())).is_err() {
                return;
            }
        }
    });
    ready.recv().unwrap();
    rx
}

/// A real iPXE ROM (SeaBIOS + Debian's e1000 ROM under qemu) gets its lease from the
/// service and fetches the script URL it was given, without the ProxyDHCP and IPv6
/// autoconfiguration waits (option 175.176 and the RA responder). Prints the timeline.
/// Measured here (TCG): script fetched ~4 s after qemu start, 18.8 s with the RA
/// responder off (iPXE's IPv6 autoconfiguration timeout). This iPXE build (Debian's
/// 2019 ROM) still spends ~1 s between OFFER and REQUEST whatever the OFFER says.
#[test]
fn ipxe_rom_fetches_its_script() {
    if netns::need_root() {
        return;
    }
    let srv = Netns::new("dhcp-q");
    srv.run(&[
        "sysctl",
        "-qw",
        "net.ipv6.conf.default.accept_dad=0",
        "net.ipv6.conf.all.disable_ipv6=0",
        "net.ipv6.conf.default.disable_ipv6=0",
    ]);
    srv.run(&["ip", "tuntap", "add", "tap0", "mode", "tap"]);
    srv.run(&["ip", "addr", "add", "10.77.0.1/24", "dev", "tap0"]);
    srv.run(&["ip", "link", "set", "tap0", "up"]);
    let server = Server::start(
        &srv,
        config(false),
        Listen {
            router_advertisements: true,
            ..listen_on(&["tap0"])
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let t0 = std::time::Instant::now();
    let requests = script_server(&srv, t0);
    let serial_arg = format!("file:{}", serial.display());
    let nic = format!("e1000,netdev=n0,mac={CN1_MAC},bootindex=1");
    srv.spawn(
        &[
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "128",
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
            "-serial",
            &serial_arg,
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device",
            &nic,
            "-boot",
            "n",
        ],
        Stdio::null(),
        Stdio::null(),
    );
    let (at, line) = requests
        .recv_timeout(Duration::from_secs(90))
        .expect("iPXE never fetched its script");
    assert_eq!(line, "GET /boot/cn1/ipxe?mac=02-77-00-00-00-01 HTTP/1.1");
    let events = server.service.shared.events.for_host("cn1");
    let ms = |e: &xboot::events::Event| e.time_ms.saturating_sub(events[0].time_ms);
    eprintln!(
        "iPXE ROM timeline (script fetched {:.1} s after qemu start):",
        at.as_secs_f64()
    );
    for e in &events {
        eprintln!("  +{:>5} ms {:?} {}", ms(e), e.kind, e.detail);
    }
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::DhcpAck && e.detail.contains("/boot/cn1/ipxe")),
        "{events:?}"
    );
    let s = server.stats();
    assert!(
        s.router_advertisements >= 1,
        "iPXE's router solicitation was answered: {s:?}"
    );
    assert_eq!((s.naks, s.unknown, s.malformed), (0, 0, 0), "{s:?}");
}
