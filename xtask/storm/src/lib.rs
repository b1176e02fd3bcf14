//! storm: the boot-storm simulator and benchmark (`cargo xtask bench storm`, and the
//! N = 20 storm of `cargo xtask test`).
//!
//! # Layout
//! - [`fabric`]: the network: one namespace per node (veth with the inventory's MAC,
//!   IPv6 off) on isolated ports of leaf bridges (≤ 96 ports) under a spine, the server
//!   in its own namespace on the spine; everything deleted on drop.
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
//! - [`run`]: one storm end to end; [`report`]: tables, JSON summary and SVG plots.
//! - `main.rs` (`stormsim`): `run` one storm, or `bench` a sweep of alternating runs.
pub mod fabric;
pub mod http;
pub mod node;
pub mod nsops;
pub mod report;
pub mod run;
pub mod script;
pub mod servers;
pub mod wire;
pub mod xdp_pass;
