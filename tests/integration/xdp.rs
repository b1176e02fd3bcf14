//! XDP fast path: BPF_PROG_TEST_RUN tables, differential equivalence with the slow path,
//! fuzzing, real clients in namespaces, reload under load. All need root (the program
//! is loaded into the kernel); without it they skip, like the namespace tests.
mod bench;
pub mod clients;
mod differential;
mod fixture;
mod fuzz;
mod loadgen;
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
