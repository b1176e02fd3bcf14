//! storm: the boot-storm simulator and benchmark (`cargo xtask bench storm`, and the
//! N = 20 storm of `cargo xtask test`).
//!
//! # Layout
//! - [`fabric`]: the network: one namespace per node (veth with the inventory's MAC,
//!   IPv6 off) on isolated ports of leaf bridges (≤ 96 ports) under a spine, the server
//!   in its own namespace on the spine; everything deleted on drop.
//! - [`faults`]: loss on the fabric (nftables), `kill -9` + restart of xboot, an
//!   inventory reload, each reported; nodes then reboot after a failure.
//! - [`nsops`]: the helper thread that `setns()`es into a node's namespace to open its
//!   sockets and configure it; the sockets are then served from the one event loop.
//! - [`node`]: one node's boot as an async state machine (firmware DHCP, TFTP, iPXE
//!   DHCP, script, kernel, initrd, modelled boot, OS DHCP, postscript, complete), with
//!   time stamps per milestone and a failure reason.
//! - [`wire`] (DHCP frames), [`script`] (iPXE-script interpreter), [`http`] (keep-alive
//!   client): the protocol pieces the nodes use; `wire` and `script` never do I/O.
//! - [`power`]: the nodes' power: a BMC per node (OpenIPMI ipmi_sim whose power-on
//!   command tells the simulator, or in-memory responders above 2,000 nodes) told by
//!   the server's BMC client (`xboot bmc power cycle all --pxe`; `ipmipower` for the
//!   baseline), or the simulator's clock (`--power sim`).
//! - [`segments`]: a storm split over K segment servers (`--segment-servers`): each
//!   segment its own L2 domain, subnet and `xboot serve`, all K in cluster mode on one
//!   etcd; per-server CPU and which nodes each answered.
//! - [`servers`]: the servers under test: `xboot serve` (userspace or XDP DHCP) and
//!   dnsmasq + nginx (stock, tuned); the payload (small, or the initrd padded to 80 MB).
//! - [`floor`]: the floor pass after each storm (a bare sendfile server on the same
//!   fabric sends every node the same files at once) and the floor ratio.
//! - [`xdp_pass`]: the pass-everything XDP program the server veth's peer needs for
//!   native XDP_TX (xboot's xdp mode).
//! - [`fingerprint`]: what a booting machine sends, reduced per packet type to the
//!   fields its firmware decides (pcap in, prints and differences out); the test
//!   `tests/fingerprint.rs` holds the simulator's packets to real firmware's under qemu.
//! - [`truth`]: the server's turnaround per request from a capture, and real machines'
//!   turnarounds against the simulated nodes' p1-p99 (`tests/truth.rs`: two qemu VMs in
//!   a 20-node storm).
//! - [`vms`]: the two truth VMs of a storm (`--truth`), each behind its own ipmi_sim,
//!   and the capture on the server's link.
//! - [`neigh`]: the kernel's neighbour-table limits as a variable of the storm (raised
//!   for a run and restored by an RAII guard) and its overflow counter.
//! - [`hostsysctl`]: other host-wide limits a run raises and restores (the backlog).
//! - [`counters`]: the server's work in counts (srv0's packets and bytes sent, and with
//!   `--count-syscalls` its system calls and context switches by `perf stat`).
//! - [`run`]: one storm end to end; [`report`]: tables, JSON summary and SVG plots.
//! - `main.rs` (`stormsim`): `run` one storm, or `bench` a sweep of alternating runs.
//!
//! # Not yet (issue 14)
//! The truth VMs powered by the storm's power command (they are powered by ipmitool to
//! their own ipmi_sim just before it); CPU caps for the truth VMs; the UEFI truth VM to `complete` (the payload has no virtio-net
//! driver, so it stops at the kernel); truth VMs in dnsmasq storms; a 5,000-node run (the
//! simulator's descriptors need a hard limit over this machine's 20,000); per-node TCP_INFO; ISC dhcpd + tftpd-hpa + Apache.
pub mod counters;
pub mod fabric;
pub mod faults;
pub mod fingerprint;
pub mod floor;
pub mod hostsysctl;
pub mod http;
pub mod neigh;
pub mod node;
pub mod nsops;
pub mod power;
pub mod report;
pub mod run;
pub mod script;
pub mod segments;
pub mod servers;
pub mod truth;
pub mod vms;
pub mod wire;
pub use testlab::xdp_pass;
