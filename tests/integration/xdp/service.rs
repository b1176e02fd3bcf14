//! The fast path as the daemon runs it ([`xboot::xdp::Service`]): it follows inventory
//! swaps (a deleted host gets nothing, a re-added one its lease again), records lease
//! events, and detaches on shutdown. No userspace DHCP server runs: every lease is the
//! program's. As in `xboot serve`, every thread of the service drops its capabilities
//! once the program is attached: map updates, the event ring and the detach need none.
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use xboot::config::Config;
use xboot::events::{EventKind, EventLog};
use xboot::inventory::Inventory;
use xboot::state::Shared;
use xboot::xdp::{FastPath, LoadOptions, Service, SyncOptions};

use super::clients::{in_netns, one_host};
use super::fixture::URLS;
use crate::netns::{self, Netns};

const CN1_MAC: &str = "02:77:00:00:00:01";

fn config() -> Config {
    let mut c = Config::default();
    c.dhcp.lease_time = "1h".into();
    c.dhcp.dns_servers = vec!["10.77.0.53".into()];
    c.dhcp.router_octet4 = 254;
    c
}

fn udhcpc(cli: &Netns) -> bool {
    cli.cmd(&[
        "busybox",
        "udhcpc",
        "-f",
        "-q",
        "-n",
        "-i",
        "c0",
        "-s",
        "/bin/true",
        "-t",
        "2",
        "-T",
        "1",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .unwrap()
    .success()
}

#[test]
fn xdp_service_follows_inventory_swaps() {
    if netns::need_root() {
        return;
    }
    let srv = Netns::new("xdps-s");
    let cli = Netns::new("xdps-c");
    Netns::veth(&srv, "s0", "10.77.0.1/24", &cli, "c0", "10.77.0.2/24");
    cli.set_mac("c0", CN1_MAC);
    let mut peer = FastPath::load(LoadOptions::for_hosts(1)).unwrap();
    in_netns(&cli, || peer.attach("c0").unwrap());
    let shared = Shared::new(config(), one_host(CN1_MAC), EventLog::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (tx, rx) = std::sync::mpsc::channel();
    let path = format!("/run/netns/{}", srv.name);
    let sh = shared.clone();
    let thread = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(xboot::privileges::drop_all_or_warn)
            .enable_all()
            .build()
            .unwrap();
        let svc = Service::start(
            sh,
            Arc::new(URLS),
            &["s0".to_string()],
            SyncOptions::default(),
        )
        .unwrap();
        xboot::privileges::drop_all().unwrap();
        let eff = caps::read(None, caps::CapSet::Effective).unwrap();
        assert!(eff.is_empty(), "{eff:?}");
        tx.send(svc.stats()).unwrap();
        rt.block_on(svc.run(stopped));
    });
    let stats = rx.recv().unwrap();
    let xdp_on = || {
        String::from_utf8_lossy(&srv.run(&["ip", "link", "show", "s0"]).stdout).contains("prog/xdp")
    };
    assert!(xdp_on(), "attached");

    assert!(
        udhcpc(&cli),
        "lease from XDP: {:?} {:?}",
        stats.counters(),
        stats.reasons()
    );
    let answered = stats.counters().answered;
    assert!(answered >= 2);

    // Deleted: never answered again once the service has synced.
    shared.replace_inventory(Inventory::default());
    std::thread::sleep(Duration::from_millis(300));
    let before = stats.counters();
    assert!(!udhcpc(&cli), "a deleted host got a lease");
    let d = stats.counters().since(&before);
    assert_eq!(d.answered + d.nak, 0, "{d:?}");
    assert!(d.passed_unknown >= 2, "{d:?}");

    // Back again.
    shared.replace_inventory(one_host(CN1_MAC));
    std::thread::sleep(Duration::from_millis(300));
    assert!(udhcpc(&cli), "re-added host got no lease");

    // Lease events reach the boot event log (the reader polls every 20 ms).
    std::thread::sleep(Duration::from_millis(500));
    let events = shared.events.for_host("cn1");
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::DhcpAck && e.detail.starts_with("10.77.0.50 via xdp")),
        "{events:?}"
    );
    stop.send(true).unwrap();
    thread.join().unwrap();
    assert!(!xdp_on(), "detached on shutdown");
}
