//! Whether the kernel's neighbour (ARP) table can hold every node of a segment.
//!
//! Linux keeps at most `net.ipv4.neigh.default.gc_thresh3` entries (1,024 by default).
//! During a boot storm the server talks to every node of a segment at once (TFTP, HTTP,
//! unicast DHCP replies), so each needs an entry; past the limit the kernel logs
//! "neighbour table overflow" and drops packets to some nodes, whose firmware then
//! waits out its retry timers. The boot-storm lab hit it at 1,000 nodes; a real server
//! with more than ~1,000 nodes on one segment hits the same cap. This module only
//! decides (pure); `serve` reads the limit and logs the warning.
use std::collections::HashMap;

use ipnet::Ipv4Net;

use crate::inventory::Host;

/// Where the limit is read from.
pub const GC_THRESH3: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";

/// Warn from this share of the limit on.
const WARN_AT_PERCENT: usize = 75;

/// The warning to log, if the largest subnet of boot interfaces comes near `limit`.
pub fn pressure<'a>(hosts: impl IntoIterator<Item = &'a Host>, limit: usize) -> Option<String> {
    let mut per_subnet: HashMap<Ipv4Net, usize> = HashMap::new();
    for nic in hosts.into_iter().flat_map(|h| &h.interfaces) {
        if nic.bmc {
            continue;
        }
        if let Some(net) = nic.ipv4() {
            *per_subnet.entry(net.trunc()).or_default() += 1;
        }
    }
    let (subnet, n) = per_subnet.into_iter().max_by_key(|(net, n)| (*n, *net))?;
    if n * 100 < limit * WARN_AT_PERCENT {
        return None;
    }
    Some(format!(
        "{n} boot interfaces in {subnet}, and the kernel's neighbour table holds at most \
         {limit} entries (net.ipv4.neigh.default.gc_thresh3): in a boot storm the server \
         needs one per node, and past the limit it drops packets to some of them. Raise \
         net.ipv4.neigh.default.gc_thresh1/2/3 above the number of nodes of one segment \
         (e.g. 2x: gc_thresh3 = {})",
        (n * 2).next_power_of_two()
    ))
}

/// The limit of this machine, if it can be read.
pub fn limit() -> Option<usize> {
    std::fs::read_to_string(GC_THRESH3)
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize, subnet: u8) -> Vec<Host> {
        (0..n)
            .map(|i| {
                serde_json::from_value(serde_json::json!({
                    "name": format!("cn{subnet}-{i}"),
                    "interfaces": [
                        {"ip": format!("10.{subnet}.{}.{}/16", i / 250, i % 250 + 1),
                         "mac": format!("02:00:00:{subnet:02x}:{:02x}:{:02x}", i / 256, i % 256)},
                        {"ip": format!("10.200.{}.{}/16", i / 250, i % 250 + 1), "bmc": true}
                    ]
                }))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn warns_when_one_segment_nears_the_table() {
        // 700 + 700 nodes on two segments: each is under 75% of 1,024.
        let mut two = hosts(700, 1);
        two.extend(hosts(700, 2));
        assert_eq!(pressure(&two, 1024), None);
        // 800 on one segment (BMC interfaces do not count): warned, with a value to set.
        let w = pressure(&hosts(800, 1), 1024).unwrap();
        assert!(w.starts_with("800 boot interfaces in 10.1.0.0/16"), "{w}");
        assert!(w.contains("gc_thresh3 = 2048"), "{w}");
        assert_eq!(pressure(&hosts(800, 1), 8192), None);
        assert_eq!(pressure(&[], 1024), None);
    }
}
