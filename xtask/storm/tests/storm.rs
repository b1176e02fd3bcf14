//! Small storms in `cargo test --workspace` (so in `cargo xtask test`): 20 simulated
//! nodes (BIOS, then UEFI) boot at once through `xboot serve` (the debug build next to this test),
//! every one reaches `complete`, and the server's event log shows each node's stages.
//! They are powered through the real path: `xboot bmc power cycle all --pxe` to a BMC per
//! node, one OpenIPMI ipmi_sim each for the BIOS storm (its power-on command tells the
//! simulator), xboot's in-memory responder BMCs for the UEFI storm (what storms above
//! 2,000 nodes use).
//! A third storm splits 20 BIOS nodes over 2 segment servers (xboot in cluster mode on
//! one etcd): every node completes, each server leased exactly its own segment's nodes.
//! Needs root (namespaces); skipped otherwise. Timings are printed, never asserted.
use std::time::Duration;

use storm::node::{Profile, SimConfig};
use storm::power::Power;
use storm::run::{self, Spec};
use storm::servers::Kind;

const N: usize = 20;

fn spec(kind: Kind, profile: Profile, power: Power, tag: &str) -> Option<Spec> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for network namespaces");
        return None;
    }
    let xboot = run::find_xboot(None).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("storm-{tag}"));
    Some(Spec {
        n: N,
        kind,
        sim: SimConfig {
            profile,
            jitter: Duration::from_millis(500),
            boot_delay: Duration::from_millis(500),
            rcvbuf: 2 << 20,
        },
        xboot,
        dir,
        payload: testlab::payload::Payload::cached().unwrap_or_else(|e| panic!("{e}")),
        tag: tag.into(),
        deadline: Duration::from_secs(120),
        truth: false,
        power,
        agent: env!("CARGO_BIN_EXE_stormsim").into(),
    })
}

#[test]
fn storm_20_bios_nodes_through_xboot() {
    storm_20(Profile::Bios, Power::Ipmi, "t20b");
}

#[test]
fn storm_20_uefi_nodes_through_xboot() {
    storm_20(Profile::Uefi, Power::Responder, "t20u");
}

fn storm_20(profile: Profile, power: Power, tag: &str) {
    let Some(spec) = spec(Kind::XbootUserspace, profile, power, tag) else {
        return;
    };
    let o = run::run(&spec, true).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", storm::report::markdown(&o));
    // The power command reached every BMC and every BMC powered its node.
    let p = o.power.as_ref().expect("powered through BMCs");
    let bmcs = power.bmcs(N).expect("BMCs").name();
    assert_eq!((o.power_mode, p.bmcs.as_str()), (bmcs, bmcs));
    // ipmi_sim refuses the boot flags (see `storm::power::Command::pxe`).
    let pxe = if power == Power::Responder {
        " --pxe"
    } else {
        ""
    };
    assert_eq!(p.command, format!("xboot bmc power cycle all{pxe} --json"));
    assert_eq!(
        (p.ok, p.total, p.exit_code, p.powered, p.abandoned),
        (N, N, 0, N, 0),
        "{:?}",
        p.failures
    );
    assert_every_node_completed(&o);
    for r in &o.nodes {
        for stage in profile.stages() {
            assert!(r.at(stage).is_some(), "{} never reached {stage}", r.name);
        }
    }
    // The server saw every stage of every node, in boot order. TFTP's event (UEFI) is recorded
    // when the transfer task has taken the node's last ACK, and the node moves on as
    // soon as it sent it: on a loaded machine the node's next DHCP or even its script
    // request can be recorded first (seen here: 40 ms later), so TFTP is only required
    // after the first lease.
    let want = [
        "dhcp_offer",
        "dhcp_ack",
        "ipxe_script",
        "kernel",
        "initrd",
        "postscript",
        "complete",
    ];
    for r in &o.nodes {
        let kinds: Vec<&str> = o
            .events
            .iter()
            .filter(|e| e.host == r.name)
            .map(|e| e.kind.as_str())
            .collect();
        let ack = kinds.iter().position(|k| *k == "dhcp_ack");
        let tftp = kinds.iter().position(|k| *k == "tftp");
        // A BIOS iPXE ROM is handed its script by HTTP at once: no TFTP.
        assert!(
            profile == Profile::Bios || matches!((ack, tftp), (Some(a), Some(t)) if a < t),
            "{}: no tftp event after the first lease in {kinds:?}",
            r.name
        );
        let mut at = 0;
        for k in want {
            match kinds[at..].iter().position(|x| *x == k) {
                Some(i) => at += i,
                None => panic!(
                    "{}: no {k} event after {:?} in {kinds:?}",
                    r.name,
                    &kinds[..at]
                ),
            }
        }
    }
    assert_lab_removed(tag);
}

/// 20 nodes split over 2 segment servers (xboot in cluster mode on one etcd, each its
/// own L2 domain and subnet): the inventory imported once through the first, the power
/// command through the first to every BMC, every node completes, and each server
/// leased its own segment's nodes, all of them, and answered no other.
#[test]
fn storm_20_bios_nodes_over_2_segment_servers() {
    let tag = "t20k";
    let Some(spec) = spec(Kind::XbootUserspace, Profile::Bios, Power::Responder, tag) else {
        return;
    };
    let opts = run::Options {
        segments: Some(2),
        ..run::Options::default()
    };
    let o = run::run_with(&spec, false, &opts).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", storm::report::markdown(&o));
    let p = o.power.as_ref().expect("powered through BMCs");
    assert_eq!(p.command, "xboot bmc power cycle all --pxe --json");
    assert_eq!((p.ok, p.total, p.powered), (N, N, N), "{:?}", p.failures);
    assert_every_node_completed(&o);
    let sg = o.segments.as_ref().expect("a segment-server storm");
    assert_eq!((sg.servers, sg.per_server.len()), (2, 2));
    for (s, x) in sg.per_server.iter().enumerate() {
        // Each holds the whole inventory, serves its half, leased all of it and
        // answered nothing of the other half; and the nodes' addresses are its subnet's.
        assert_eq!(
            (x.nodes, x.hosts, x.served_hosts, x.completed),
            (N / 2, N as u64, (N / 2) as u64, N / 2),
            "{}",
            x.id
        );
        assert_eq!(x.answered, N / 2, "{}", x.id);
        assert_eq!(x.foreign, 0, "{}: {:?}", x.id, x.foreign_names);
        assert_eq!(x.subnet, format!("10.{}.0.0/16", 77 + s));
        assert!(x.cpu_s > 0.0, "{} used no CPU", x.id);
    }
    // The per-server checks are part of the storm's validity.
    let checks = storm::report::validity(&o);
    for name in [
        "each segment server served its segment's hosts only",
        "no server answered another segment's node",
        "every node leased by its own segment's server",
    ] {
        let c = checks.iter().find(|c| c.name == name).expect(name);
        assert!(c.ok, "{name}: {}", c.detail);
    }
    assert_lab_removed(tag);
}

/// No simulated node of `o` failed (else their failures and the server's logs).
fn assert_every_node_completed(o: &run::Outcome) {
    let failed: Vec<_> = o.nodes.iter().filter(|r| r.failure.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} nodes failed: {:?}\nserver logs: {}",
        failed.len(),
        failed.iter().map(|r| &r.failure).collect::<Vec<_>>(),
        o.logs
    );
}

/// Nothing of the storm `tag`'s lab is left behind: none of its namespaces.
fn assert_lab_removed(tag: &str) {
    let list = testlab::peers::command("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let prefix = format!("xbst-{}-{tag}-", std::process::id());
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&prefix));
}
