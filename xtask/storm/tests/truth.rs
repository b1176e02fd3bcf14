//! The truth check inside a storm (in `cargo test --workspace`, so in `cargo xtask
//! test`): 20 simulated UEFI nodes (powered on over 10 s) and two real qemu VMs (TCG)
//! boot at once through one `xboot serve` on the storm's fabric, as `stormsim --truth`
//! runs them ([`storm::vms`]): SeaBIOS + the iPXE ROM to `complete`, and OVMF's own PXE
//! on virtio-net (DHCP, TFTP of snponly.efi, iPXE, HTTP) up to the kernel booting (the
//! payload has no virtio-net driver). A VM that fails where the simulated nodes pass
//! makes the run invalid: the test fails.
//!
//! tcpdump on the server's link gives every request's server turnaround; each request
//! type a VM sent must also have been sent by the simulated nodes, and the table of the
//! VMs' turnarounds against the simulated p1-p99 is printed ([`storm::truth`]). Whether
//! they fall inside is a timing, so the test shows it and the benchmark's report judges
//! it (`stormsim ... --truth`: "valid" / "INVALID"); a test never asserts it.
//! Needs root (namespaces); skipped otherwise.
use std::path::Path;
use std::time::Duration;

use storm::node::{Profile, SimConfig};
use storm::run::{self, Spec};
use storm::servers::Kind;

#[test]
fn storm_20_nodes_with_two_real_machines() {
    if testlab::netns::need_root() {
        return;
    }
    assert!(
        Path::new(testlab::qemu::OVMF).exists(),
        "{} missing: run `cargo xtask setup`",
        testlab::qemu::OVMF
    );
    let spec = Spec {
        n: 20,
        kind: Kind::XbootUserspace,
        sim: SimConfig {
            profile: Profile::Uefi,
            jitter: Duration::from_secs(10),
            boot_delay: Duration::from_millis(500),
            rcvbuf: 2 << 20,
        },
        xboot: run::find_xboot(None).unwrap_or_else(|e| panic!("{e}")),
        dir: Path::new(env!("CARGO_TARGET_TMPDIR")).join("storm-truth"),
        payload: testlab::payload::Payload::cached().unwrap_or_else(|e| panic!("{e}")),
        tag: "tru".into(),
        deadline: Duration::from_secs(120),
        truth: true,
        // The simulator's clock spreads the nodes over 10 s around the VMs' boots.
        power: storm::power::Power::Sim,
        agent: env!("CARGO_BIN_EXE_stormsim").into(),
    };
    let o = run::run(&spec, false).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", storm::report::markdown(&o));
    let failed: Vec<_> = o.nodes.iter().filter(|r| r.failure.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} simulated nodes failed: {:?}\nserver logs: {}",
        failed.len(),
        failed.iter().map(|r| &r.failure).collect::<Vec<_>>(),
        o.logs
    );
    let truth = o.truth.as_ref().expect("the truth VMs ran");
    for v in &truth.vms {
        assert!(
            v.reached_s.is_some(),
            "run invalid: {} failed where {} simulated nodes passed: {}\nserver logs: {}",
            v.name,
            o.n,
            v.error.as_deref().unwrap_or("?"),
            o.logs
        );
    }
    // Each VM's boot is in the capture, and every request type a VM sent was also sent
    // (and answered) for the simulated nodes.
    for (name, ..) in storm::vms::VMS {
        let kinds: Vec<&str> = truth
            .checks
            .iter()
            .filter(|c| c.machine == name)
            .map(|c| c.kind.as_str())
            .collect();
        // The script, the kernel and the initrd (and, to the end, the postscript and the
        // completion POST).
        let mut want = vec![
            "dhcp_discover",
            "dhcp_request",
            "tcp_syn",
            "http_get kernel",
            "http_get initrd",
        ];
        if name == "vm-uefi" {
            want.push("tftp_rrq");
        } else {
            want.extend(["http_get postscript", "http_post complete"]);
        }
        for k in want {
            assert!(
                kinds.iter().any(|x| x.starts_with(k)),
                "{name}: no answered {k} in the capture: {kinds:?}"
            );
        }
    }
    for c in &truth.checks {
        assert!(
            c.samples > 0,
            "{} sent {} but no simulated node did",
            c.machine,
            c.kind
        );
    }
    // Nothing of the lab is left behind.
    let list = testlab::peers::command("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let prefix = format!("xbst-{}-tru-", std::process::id());
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&prefix));
}
