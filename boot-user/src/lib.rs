//! xboot: a network boot server for bare-metal fleets.
//!
//! # Layout
//! - [`config`]: the TOML config (a superset of Grendel's grendel.toml).
//! - [`inventory`]: hosts and images (model, loading, validation, persistent store).
//! - [`neigh`]: whether the kernel's neighbour table holds every node of a segment.
//! - [`nodeset`]: ClusterShell-style node sets (`cn[001-100]`).
//! - [`template`]: the kernel cmdline / iPXE / postscript template engine.
//! - [`dhcp`]: DHCP and PXE: pure request classification and reply building, and the
//!   userspace server around it.
//! - [`tftp`]: read-only TFTP of the iPXE binaries.
//! - [`dns`]: authoritative DNS for the inventory's names, forwarding the rest.
//! - [`http`]: boot scripts, kernels, initrds, live images, postscripts, signed tokens.
//! - [`tls`]: rustls certificates for the HTTP server and the API, reloaded on SIGHUP.
//! - [`events`]: the per-host boot event log.
//! - [`ratelimit`]: the token bucket for log lines strangers can cause.
//! - [`state`]: the running inventory shared by every service.
//! - [`api`], [`cli`]: REST API on a unix socket, and the `xboot` command line.
//! - [`serve`]: `xboot serve`: loads config and inventory, starts the services.
//! - [`xdp`]: loading the XDP fast path and filling its maps.
//! - [`bmc`]: BMC power control (IPMI v2.0 over LAN, Redfish) and its fan-out.
//!
//! See ARCHITECTURE.md at the repository root for the data flow and invariants.
pub mod api;
pub mod bmc;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dhcp;
pub mod dns;
pub mod events;
pub mod http;
pub mod inventory;
pub mod neigh;
pub mod nodeset;
pub mod privileges;
pub mod ratelimit;
pub mod reload;
pub mod serve;
pub mod state;
pub mod template;
pub mod tftp;
pub mod tls;
pub mod xdp;
