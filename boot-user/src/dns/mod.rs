//! Authoritative DNS for the inventory's names (Grendel's `[dns]`), with forwarding of
//! everything else to `dns.forward`.
//!
//! - [`zones`]: the lookup tables of one inventory (A, AAAA, PTR, zone apexes), pure and
//!   built once per inventory swap;
//! - [`answer`]: one query against the tables, sans-I/O: a reply, or "forward it";
//! - [`server`]: the UDP and TCP edge, the bounds (TCP connections, forwarded queries in
//!   flight, UDP answer size) and the forwarder;
//! - [`stats`]: counters for `/metrics`.
pub mod answer;
pub mod server;
pub mod stats;
pub mod zones;

#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod tests;

pub use server::{Names, Service, Sockets};
pub use stats::Stats;
