//! The XDP fast path, userspace side: loading and attaching the program, compiling reply
//! templates with the slow path's builder, keeping the maps in step with the inventory,
//! and reading its counters and lease events.
//!
//! # Layout
//! - [`loader`]: [`FastPath`]: load (sized maps), attach (native, else generic with a
//!   warning), detach on drop, `test_run` for BPF_PROG_TEST_RUN.
//! - [`compile`]: templates from [`crate::dhcp::decide`], self-checked through
//!   [`emulate`] (the program's assembly logic in Rust).
//! - [`sync`]: inventory -> maps, changing only the entries that changed.
//! - [`stats`]: per-CPU counters summed, Prometheus text, lease events into the log.
//! - [`events`]: the lease events' per-CPU rings, mapped into the daemon.
//! - [`service`]: all of the above as the daemon runs it ([`Service`]).
//!
//! The kernel side (crate `boot-ebpf`) only selects a template and stamps per-request
//! fields; every byte of what a reply says comes from the builder (see ARCHITECTURE.md).
// aya's ProgramError/MapError are large; these errors happen at load and reload, never
// per packet, so their size does not matter.
#![allow(clippy::result_large_err)]
pub mod compile;
pub mod emulate;
pub mod events;
pub mod loader;
pub mod service;
pub mod stats;
pub mod sync;

pub use compile::{Compiler, HostTemplates};
pub use loader::{AttachMode, FastPath, LoadOptions, TestOutput, XdpError};
pub use service::{Service, ServiceError};
pub use stats::{XdpCounters, XdpStats};
pub use sync::{MapSync, ServedAddr, SyncOptions, SyncReport};
