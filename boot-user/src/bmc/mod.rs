//! BMC power control: IPMI v2.0 over LAN (RMCP+) and Redfish, fanned out over a node set.
//!
//! # Layout
//! - [`ipmi`]: RMCP+ protocol modules (pure) and the one-socket engine.
//! - [`redfish`]: ComputerSystem.Reset and the one-time boot override over HTTPS.
//! - [`target`]: which BMC to talk to and how, from the inventory and `[bmc]` config.
//! - [`fanout`]: one action on many BMCs with bounded concurrency, per-node results.
//! - [`cli`]: `xboot bmc power ...`.
pub mod cli;
pub mod fanout;
pub mod ipmi;
pub mod redfish;
pub mod target;
