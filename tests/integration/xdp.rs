//! XDP fast path: BPF_PROG_TEST_RUN tables, differential equivalence with the slow path,
//! fuzzing, real clients in namespaces, reload under load. All need root (the program
//! is loaded into the kernel); without it they skip, like the namespace tests.
mod bench;
pub mod clients;
mod differential;
mod fixture;
mod fuzz;
mod kgen;
mod loadgen;
mod modes;
mod reload;
mod report;
mod service;
mod table;

use std::net::Ipv4Addr;

use fixture::*;
use xboot::xdp::loader::{XDP_PASS, XDP_TX};

use crate::netns;

/// The verifier accepts the program on this kernel; its size and its cost per request
/// (mean of single BPF_PROG_TEST_RUN passes: the program rewrites the frame in place, so
/// a repeated run would measure its own reply being passed up).
#[test]
fn xdp_program_verifies_and_costs() {
    if netns::need_root() {
        return;
    }
    let mut lab = Lab::new();
    let verified = lab.fp.verified_instructions().expect("verifier statistics");
    let size = lab.fp.program_size().expect("program info");
    assert!(verified > 0 && size > 0);
    let cn1 = Ipv4Addr::new(10, 0, 0, 5);
    let rows = [
        (
            "BIOS PXE DISCOVER -> OFFER",
            discover("bios", CN1).frame(),
            XDP_TX,
        ),
        (
            "iPXE REQUEST -> ACK",
            selecting("ipxe", CN1, cn1, SERVER).frame(),
            XDP_TX,
        ),
        (
            "udhcpc DISCOVER -> OFFER",
            discover("udhcpc", CN1).frame(),
            XDP_TX,
        ),
        (
            "wrong address -> NAK",
            selecting("udhcpc", CN1, Ipv4Addr::new(10, 0, 0, 99), SERVER).frame(),
            XDP_TX,
        ),
        (
            "unknown MAC -> pass",
            discover("bios", UNKNOWN).frame(),
            XDP_PASS,
        ),
        (
            "not DHCP -> pass",
            discover("none", CN1).frame()[..60].to_vec(),
            XDP_PASS,
        ),
    ];
    eprintln!("XDP program: {size} instructions, {verified} processed by the verifier");
    for (name, frame, action) in rows {
        assert_eq!(lab.run(&frame).action, action, "{name}");
        let c = lab.fp.costs(&frame, 5000).unwrap();
        let mean = c.iter().sum::<std::time::Duration>() / c.len() as u32;
        eprintln!(
            "  {name:<32} min {:>4} ns, median {:>4} ns, mean {:>4} ns",
            c[0].as_nanos(),
            c[c.len() / 2].as_nanos(),
            mean.as_nanos()
        );
    }
    // What `xboot status` and /metrics show.
    let stats = lab.fp.stats();
    let prom = stats.prometheus();
    let answered = stats.counters().answered;
    assert!(answered > 0);
    assert!(
        prom.contains(&format!(
            "xboot_xdp_frames_total{{decision=\"answered\"}} {answered}"
        )),
        "{prom}"
    );
    assert!(prom.contains("# TYPE xboot_xdp_passed_total counter"));
    assert!(
        stats
            .status_text()
            .contains(&format!("answered         {answered}")),
        "{}",
        stats.status_text()
    );
}

/// Template slots are fixed at load time. When a sync finds none free, the host it
/// could not write is left to the slow path (its requests pass up, nothing half-written
/// is answered), the hosts already in are untouched, and once a removed host's slots
/// are past their grace period a later sync installs the waiting host.
#[test]
fn xdp_template_slots_run_out_to_the_slow_path() {
    if netns::need_root() {
        return;
    }
    use xboot::inventory::{Inventory, Mac};
    use xboot::xdp::{Compiler, FastPath, LoadOptions, MapSync, SyncOptions};
    let settings = settings();
    let c = Compiler {
        settings: &settings,
        urls: &URLS,
    };
    let now = std::time::Instant::now;
    let one = |mac: Mac, name: &str, ip: &str| host(name, mac, Some(ip), true, "");
    let (a, b) = (CN1, Mac([2, 0, 0, 0, 0, 0x42]));
    let inv_a = Inventory::from_parts_unchecked(vec![one(a, "cn1", "10.0.0.5/24")], vec![]);
    let inv_ab = Inventory::from_parts_unchecked(
        vec![one(a, "cn1", "10.0.0.5/24"), one(b, "cn42", "10.0.0.42/24")],
        vec![],
    );
    let inv_b = Inventory::from_parts_unchecked(vec![one(b, "cn42", "10.0.0.42/24")], vec![]);
    // How many slots one such host takes.
    let per_host = {
        let mut fp = FastPath::load(LoadOptions::for_hosts(1)).unwrap();
        let mut sync = MapSync::new(served(LO), SyncOptions::default());
        sync.sync(&mut fp, &inv_a, &c, now()).unwrap();
        sync.templates() as u32
    };
    assert!(per_host > 0);
    // Room for one host (slot 0 is never used).
    let mut fp = FastPath::load(LoadOptions {
        max_hosts: 1024,
        max_templates: per_host + 1,
    })
    .unwrap();
    let opts = SyncOptions {
        grace: std::time::Duration::ZERO,
        ..SyncOptions::default()
    };
    let mut sync = MapSync::new(served(LO), opts);
    let r = sync.sync(&mut fp, &inv_a, &c, now()).unwrap();
    assert_eq!((r.added, r.failed), (1, 0), "{r:?}");
    let answers = |fp: &mut FastPath, mac: Mac| {
        fp.test_run(&discover("bios", mac).frame())
            .expect("BPF_PROG_TEST_RUN")
            .action
    };
    let r = sync.sync(&mut fp, &inv_ab, &c, now()).unwrap();
    assert_eq!((r.failed, r.unchanged), (1, 1), "{r:?}");
    assert_eq!(
        answers(&mut fp, a),
        XDP_TX,
        "the host already in still answered"
    );
    assert_eq!(answers(&mut fp, b), XDP_PASS, "no slot: the slow path's");
    // cn1 leaves; its slots are freed at the end of this sync (grace 0), so cn42 gets
    // them on the next one (the daemon syncs every second).
    let r = sync.sync(&mut fp, &inv_b, &c, now()).unwrap();
    assert_eq!((r.removed, r.failed), (1, 1), "{r:?}");
    assert_eq!(
        answers(&mut fp, a),
        XDP_PASS,
        "a removed host is not answered"
    );
    let r = sync.sync(&mut fp, &inv_b, &c, now()).unwrap();
    assert_eq!((r.added, r.failed), (1, 0), "{r:?}");
    assert_eq!(answers(&mut fp, b), XDP_TX);
    let reply = fp.test_run(&discover("bios", b).frame()).unwrap().frame;
    let udp = xboot::dhcp::frame::parse_frame(&reply).expect("a UDP frame");
    let msg = xboot::dhcp::wire::parse(udp.payload).expect("a DHCP message");
    assert_eq!(
        msg.yiaddr(),
        Ipv4Addr::new(10, 0, 0, 42),
        "cn42's own template"
    );
}

/// Every answer leaves one lease event, read back in order; a reader that falls more
/// than a ring behind gets the newest ring's worth (less one) and counts the rest as
/// lost (in the counters too), and nothing is replayed.
#[test]
fn xdp_lease_events_in_order_and_overruns_counted() {
    if netns::need_root() {
        return;
    }
    let mut lab = Lab::new(); // the test runs on CPU 0 (pinned)
    let mut events = lab.fp.take_events().expect("the event rings");
    let answer = |lab: &mut Lab, xid: u32| {
        let mut req = discover("bios", CN1);
        req.xid = xid;
        assert_eq!(lab.run(&req.frame()).action, XDP_TX);
    };
    for xid in 1..=3 {
        answer(&mut lab, xid);
    }
    let mut got = vec![];
    assert_eq!(events.drain(|e| got.push(e)), 0);
    let xids: Vec<u32> = got.iter().map(|e| e.xid).collect();
    assert_eq!(xids, [1, 2, 3]);
    assert!(got
        .iter()
        .all(|e| e.mac == CN1.0 && e.msg_type == 2 && e.ip == [10, 0, 0, 5]));
    let ring = boot_common::EVENT_SLOTS;
    for xid in 0..ring + 100 {
        answer(&mut lab, 1000 + xid);
    }
    got.clear();
    // The oldest slot is given up too: the program could be rewriting it for the next
    // event while the reader copies it.
    assert_eq!(events.drain(|e| got.push(e)), 101);
    assert_eq!(got.len(), ring as usize - 1);
    assert_eq!(got.first().unwrap().xid, 1101);
    assert_eq!(got.last().unwrap().xid, 1000 + ring + 99);
    assert!(got.windows(2).all(|w| w[1].xid == w[0].xid + 1));
    assert_eq!(lab.fp.stats().counters().events_lost, 101);
    assert_eq!(events.drain(|_| panic!("nothing new")), 0);
}
