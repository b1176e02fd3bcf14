//! `cargo xtask bench NAME [ARGS...]`: benchmarks that show the speed targets (tests
//! never assert timings). Each benchmark is a module here exposing
//! `pub fn run(args: &[String]) -> anyhow::Result<()>`; add it to [`BENCHMARKS`].
//! Setup runs first, so the peers a benchmark drives (perfdhcp, ipmi_sim ...) exist
//! (`XBOOT_BENCH_SETUP=0` skips it on a machine known to be set up).
use anyhow::bail;

mod abuse;
mod bmc;
mod cluster;
mod dhcp;
mod pxe_ipv6;
mod scale;
mod storm;

type Runner = fn(&[String]) -> anyhow::Result<()>;

/// name, what it measures, runner (None: not written yet).
const BENCHMARKS: &[(&str, &str, Option<Runner>)] = &[
    (
        "dhcp",
        "DHCP answers per second: XDP and userspace paths, dnsmasq (own DORA generator)",
        Some(dhcp::run),
    ),
    (
        "bmc",
        "power cycle and status of up to 1,000 ipmi_sim BMCs: xboot vs ipmipower vs ipmitool",
        Some(bmc::run),
    ),
    (
        "storm",
        "boot storms of 10-1,000 simulated nodes, power-on to complete: xboot vs dnsmasq + nginx",
        Some(storm::run),
    ),
    (
        "abuse",
        "server RSS and descriptors under TFTP, probe, HTTP and DHCP floods, a known host booting throughout",
        Some(abuse::run),
    ),
    (
        "scale",
        "one server at 1,000-100,000 hosts: cold start, API change p50/p99, RSS, kernel map memory",
        Some(scale::run),
    ),
    (
        "cluster",
        "3 etcd members, 3 servers, 1,000-100,000 hosts: change to answers, apply cost, cold start, failover",
        Some(cluster::run),
    ),
    (
        "pxe-ipv6",
        "the demo's BIOS PXE boot with IPv6 on and off on the server's interface: the same time",
        Some(pxe_ipv6::run),
    ),
];

pub fn run(name: &str, args: &[String]) -> anyhow::Result<()> {
    let list = || {
        BENCHMARKS
            .iter()
            .map(|(n, what, _)| format!("  {n:<6} {what}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if name == "list" {
        println!("benchmarks:\n{}", list());
        return Ok(());
    }
    match BENCHMARKS.iter().find(|(n, _, _)| *n == name) {
        None => bail!("unknown benchmark {name:?}; available:\n{}", list()),
        Some((_, _, None)) => {
            bail!("benchmark {name:?} is not yet implemented (xtask/src/bench/{name}.rs)")
        }
        Some((_, _, Some(runner))) => {
            // XBOOT_BENCH_SETUP=0: the machine is known to be set up (a benchmark run
            // again, or one that starts only `ip` and xboot).
            if std::env::var("XBOOT_BENCH_SETUP").as_deref() != Ok("0") {
                crate::setup::run()?;
            }
            runner(args)
        }
    }
}
