//! DHCP and PXE: pure request classification and reply building; the userspace server.
//!
//! # Layout
//! - [`wire`]: strict parsing (a TLV walk in front of dhcproto) and encoding.
//! - [`request`]: the fields of a request that matter, and the client kind (BIOS PXE,
//!   UEFI, ARM64, iPXE, UEFI HTTP boot, OS).
//! - [`settings`]: `[dhcp]` of the config, parsed once; a host's network parameters.
//! - [`options`]: the declarative option table (`dhcp.options`, `dhcp.presets`).
//! - [`boot`]: what a client boots (per kind, per-host firmware override), [`BootUrls`].
//! - [`reply`]: [`decide`] / [`decide_boot_server`], the one source of truth for replies.
//! - [`frame`]: Ethernet/IPv4/UDP framing of replies (what the XDP path must match).
//! - [`discovered`], [`stats`]: unknown machines seen, and the service's counters.
//! - [`iface`], [`sockets`], [`server`]: the I/O edge (interfaces, sockets, the service
//!   loop).
//! - [`ra`]: the IPv6 router-advertisement responder that spares iPXE a 13 s wait.
//!
//! Everything up to [`frame`] is pure: no sockets, no clock. The XDP template compiler calls
//! [`decide`] with synthetic [`Request`]s ([`Request::new`], one per [`ClientKind::TEMPLATES`]
//! entry) and [`frame`] to get the bytes it stores in its maps.
pub mod boot;
pub mod discovered;
pub mod frame;
pub mod iface;
pub mod options;
pub mod ra;
pub mod reply;
pub mod request;
pub mod server;
pub mod settings;
pub mod sockets;
pub mod stats;
pub mod wire;

#[cfg(test)]
mod reply_tests;

pub use boot::{BootTarget, BootUrls, PlainUrls};
pub use discovered::{Discovered, DiscoveredEntry};
pub use frame::{frame, FrameAddrs};
pub use reply::{
    decide, decide_boot_server, Context, Decision, Destination, Reply, ReplyKind, Silence,
};
pub use request::{ClientKind, Request};
pub use server::{run, spawn, Service};
pub use settings::Settings;
pub use sockets::{Listen, Sockets};
pub use stats::{Stats, StatsSnapshot};
