//! IPMI v2.0 over LAN (RMCP+, "lanplus"): sans-I/O protocol modules and the one-socket
//! engine that drives many sessions at once.
//!
//! # Why not a crate
//! `ipmi` 0.1, `ipmi-rs` 0.6 and `ruipmi` 0.6 were read before writing this: each binds
//! one UDP socket per client and runs the handshake inside its own I/O calls, and none
//! offers cipher suite 17 together with a sans-I/O session, so none can share one socket
//! among thousands of sessions driven by one event loop.
//!
//! # Layout
//! - [`crypto`]: cipher suites 3 and 17, RAKP codes, session keys, AuthCode, AES-CBC.
//! - [`rmcp`]: RMCP, session headers, IPMI LAN messages.
//! - [`rakp`]: Open Session and RAKP 1-4 payloads.
//! - [`commands`]: the IPMI commands xboot sends and their replies.
//! - [`session`]: one client session as a state machine (no I/O, no clock); [`error`]:
//!   why one failed.
//! - [`engine`]: one UDP socket and one task driving every session.
//! - [`responder`]: an in-memory BMC (the managed-system side), for tests and benchmarks.
pub mod commands;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod rakp;
pub mod responder;
pub mod rmcp;
pub mod session;
#[cfg(test)]
mod tests;

pub use commands::{ChassisStatus, Control, Op};
pub use crypto::CipherSuite;
pub use engine::Engine;
pub use session::{IpmiError, Report, Session, SessionConfig, Timing};
