//! `cargo xtask bench dhcp [--hosts N] [--secs S] [--latency-secs S] [--only a,b]`: xboot with the XDP fast
//! path, xboot userspace only, and dnsmasq on the same host set and lab: DORA/s at under
//! 1% drops, latency p50/p99, p99 under HTTP load, the server's own cost per exchange
//! (XDP in-path run time, CPU time of the server's threads), and the XDP program's cost
//! per request. The measuring code is the integration test `xdp::bench::xdp_bench_dhcp`
//! (ignored in normal runs; it drives the library in-process, in namespaces); this runs
//! it in a release build as root and leaves JSON, markdown and SVG in target/bench.
use anyhow::bail;

use crate::util;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("bench dhcp needs root (network namespaces, XDP)");
    }
    let mut cmd = util::cargo();
    cmd.args([
        "test",
        "--release",
        "-p",
        "boot-user",
        "--test",
        "integration",
        "--",
    ])
    .args([
        "--ignored",
        "--nocapture",
        "--exact",
        "xdp::bench::xdp_bench_dhcp",
    ])
    .env("XBOOT_BENCH_OUT", util::target_dir().join("bench"));
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let key = match a.as_str() {
            "--hosts" => "XBOOT_BENCH_HOSTS",
            "--secs" => "XBOOT_BENCH_SECS",
            "--latency-secs" => "XBOOT_BENCH_LATENCY_SECS",
            "--only" => "XBOOT_BENCH_ONLY",
            other => bail!("bench dhcp: unknown argument {other:?} (--hosts N, --secs S, --latency-secs S, --only xboot-xdp,xboot-userspace,dnsmasq)"),
        };
        let Some(v) = it.next() else {
            bail!("bench dhcp: {a} needs a value")
        };
        cmd.env(key, v);
    }
    let took = util::run_step("bench dhcp", &mut cmd)?;
    println!(
        "bench dhcp: done in {}; report in {}",
        util::secs(took),
        util::target_dir().join("bench/dhcp.md").display()
    );
    Ok(())
}
