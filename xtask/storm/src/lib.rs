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
//! - [`servers`]: the servers under test: `xboot serve` (userspace or XDP DHCP) and
//!   dnsmasq + nginx (stock, tuned).
//! - [`xdp_pass`]: the pass-everything XDP program the server veth's peer needs for
//!   native XDP_TX (xboot's xdp mode).
//! - [`neigh`]: the kernel's neighbour-table limits as a variable of the storm (raised
//!   for a run and restored by an RAII guard) and its overflow counter.
//! - [`hostsysctl`]: other host-wide limits a run raises and restores (the backlog).
//! - [`run`]: one storm end to end; [`report`]: tables, JSON summary and SVG plots.
//! - `main.rs` (`stormsim`): `run` one storm, or `bench` a sweep of alternating runs.
//!
//! # Not yet (issue 14)
//! Power through ipmi_sim (nodes power on from the simulator's clock, within
//! `--jitter`); the qemu truth VMs and the packet fingerprint test (the profiles' packets
//! are typed from the firmware sources, not generated from captures); 5,000 nodes and the responder BMCs; the
//! shaped uplink; the broadcast-to-port rewrite of DHCP replies (EDK2's broadcast-flag
//! replies are still flooded to every node port; the server's ARP requests are not); the floor run
//! (bare sendfile server) and floor ratios; the ~80 MB padded initrd (the cached test
//! initrd is 1.2 MB); per-node TCP_INFO; ISC dhcpd + tftpd-hpa + Apache.
pub mod fabric;
pub mod faults;
pub mod hostsysctl;
pub mod http;
pub mod neigh;
pub mod node;
pub mod nsops;
pub mod report;
pub mod run;
pub mod script;
pub mod servers;
pub mod wire;
pub mod xdp_pass;
