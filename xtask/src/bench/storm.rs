//! `cargo xtask bench storm [--sizes 10,100,1000] [--servers a,b] [--rounds R]
//! [--neigh default,raised] [--faults none,loss-1,...] [--profiles bios,uefi] [--flood-arp]
//! [--flood-dhcp] [--uplink 10gbit] [--payload small|full] [--xdp-link generic|native]
//! [--no-floor] [--power ipmi|responder|sim] [--boot-delay S] [--jitter S] [--truth]`: boot storms of N simulated nodes (each in
//! its own network namespace, one event loop; `xtask/storm`) against xboot and dnsmasq +
//! nginx, alternating runs. Builds `xboot` and the simulator `stormsim` in release and
//! runs the sweep; the same knobs as env vars (`XBOOT_STORM_SIZES`, `XBOOT_STORM_SERVERS`,
//! `XBOOT_STORM_ROUNDS`, `XBOOT_STORM_NEIGH`, `XBOOT_STORM_FAULTS`, `XBOOT_STORM_PROFILES`,
//! `XBOOT_STORM_BOOT_DELAY`, `XBOOT_STORM_JITTER`, `XBOOT_STORM_TRUTH`: two qemu VMs in
//! each xboot storm, checked against the nodes; `XBOOT_STORM_POWER`).
//! `--power` defaults to `ipmi`: a BMC per node (an OpenIPMI ipmi_sim each up to 2,000
//! nodes, xboot's in-memory responders above) told by `xboot bmc power cycle all --pxe`
//! (`ipmipower --cycle` for dnsmasq + nginx); the report's first stage starts at that
//! command. `sim` powers the nodes from the simulator's clock within `--jitter`.
//! `--neigh`: the kernel's neighbour-table limits as a variable (default = as the host
//! has them, raised = gc_thresh1/2/3 raised for each run and restored after, also on
//! Ctrl-C); each run prints its validity checks. `--profiles` defaults to `bios,uefi`:
//! the BIOS iPXE ROM goes straight to HTTP, so the UEFI storms are the ones that measure
//! TFTP. After each storm a bare sendfile server sends every node the same files on the
//! same fabric (the floor; `--no-floor` skips it) and the report gives the floor ratio.
//! `--uplink RATE` shapes the server's port (tbf, GSO off); `--payload full` pads the
//! initrd to 80 MB; `--flood-dhcp` floods the server's broadcast DHCP replies instead of
//! sending each to its node's port; xboot-xdp runs its program in generic mode on the veth
//! unless `--xdp-link native` (the veth artifact: GSO off, one ring shared with XDP_TX).
//! `--segment-servers standalone,1,2,4` (`XBOOT_STORM_SEGMENT_SERVERS`) splits each xboot
//! storm over K segment servers (each its own L2 domain, subnet and xboot, all in cluster
//! mode on one etcd) and adds the "segment servers" tables.
//! Leaves
//! `storm.json`, `storm.md` and one SVG per run in target/bench/storm.
use anyhow::bail;

use crate::util;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("bench storm needs root (network namespaces)");
    }
    util::run_step(
        "build xboot and stormsim (release)",
        util::cargo().args([
            "build",
            "--release",
            "-p",
            "boot-user",
            "--bin",
            "xboot",
            "-p",
            "storm",
            "--bin",
            "stormsim",
        ]),
    )?;
    let release = util::target_dir().join("release");
    let out = util::target_dir().join("bench/storm");
    let took = util::run_step(
        "bench storm",
        testlab::peers::own(release.join("stormsim"))
            .arg("bench")
            .args(args)
            .env("XBOOT_BIN", release.join("xboot"))
            .env("XBOOT_STORM_OUT", &out)
            .current_dir(util::root()),
    )?;
    println!(
        "bench storm: done in {}; report in {}",
        util::secs(took),
        out.join("storm.md").display()
    );
    Ok(())
}
