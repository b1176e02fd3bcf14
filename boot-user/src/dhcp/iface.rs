//! The machine's network interfaces as the DHCP server sees them (index, name, MAC, IPv4
//! addresses, from getifaddrs), cached, and the choice of the server address a client
//! is answered from.
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use crate::inventory::Mac;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceInfo {
    pub index: u32,
    pub name: String,
    pub mac: Mac,
    pub addrs: Vec<Ipv4Net>,
}

/// Every interface of the current network namespace.
pub fn list() -> io::Result<Vec<IfaceInfo>> {
    let mut by_name: BTreeMap<String, IfaceInfo> = BTreeMap::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let name = ifa.interface_name.clone();
        let entry = by_name.entry(name.clone()).or_insert_with(|| IfaceInfo {
            index: nix::net::if_::if_nametoindex(name.as_str()).unwrap_or(0),
            name,
            mac: Mac::default(),
            addrs: vec![],
        });
        let Some(addr) = ifa.address else { continue };
        if let Some(link) = addr.as_link_addr() {
            if let Some(m) = link.addr() {
                entry.mac = Mac(m);
            }
        } else if let Some(sin) = addr.as_sockaddr_in() {
            let prefix = ifa
                .netmask
                .and_then(|m| {
                    m.as_sockaddr_in()
                        .map(|m| u32::from(m.ip()).count_ones() as u8)
                })
                .unwrap_or(32);
            if let Ok(net) = Ipv4Net::new(sin.ip(), prefix) {
                entry.addrs.push(net);
            }
        }
    }
    Ok(by_name.into_values().filter(|i| i.index != 0).collect())
}

/// The interface with this name, if it exists.
pub fn by_name(name: &str) -> io::Result<Option<IfaceInfo>> {
    Ok(list()?.into_iter().find(|i| i.name == name))
}

/// The address to answer from (and to name in option 54), among the ingress interface's
/// `addrs`: the one the request was sent to when it was unicast to us (relays), else the
/// one whose network holds the client's address, else the first.
pub fn pick_server_ip(
    addrs: &[Ipv4Net],
    host_ip: Option<Ipv4Addr>,
    local_dst: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    if let Some(d) = local_dst.filter(|d| addrs.iter().any(|a| a.addr() == *d)) {
        return Some(d);
    }
    if let Some(h) = host_ip {
        if let Some(a) = addrs.iter().find(|a| a.contains(&h)) {
            return Some(a.addr());
        }
    }
    addrs.first().map(|a| a.addr())
}

/// Interfaces by index, re-read when an unknown index shows up or every `max_age`.
pub struct IfaceCache {
    ifaces: HashMap<u32, IfaceInfo>,
    read_at: Option<Instant>,
    max_age: Duration,
}

impl Default for IfaceCache {
    fn default() -> Self {
        IfaceCache {
            ifaces: HashMap::new(),
            read_at: None,
            max_age: Duration::from_secs(5),
        }
    }
}

impl IfaceCache {
    pub fn get(&mut self, index: u32) -> Option<IfaceInfo> {
        let now = Instant::now();
        let stale = self
            .read_at
            .is_none_or(|t| now.duration_since(t) > self.max_age);
        // An unknown index is worth one re-read per 100 ms, not one per packet.
        let missing = !self.ifaces.contains_key(&index)
            && self
                .read_at
                .is_none_or(|t| now.duration_since(t) > Duration::from_millis(100));
        if stale || missing {
            match list() {
                Ok(l) => self.ifaces = l.into_iter().map(|i| (i.index, i)).collect(),
                Err(e) => tracing::warn!("dhcp: cannot list network interfaces: {e}"),
            }
            self.read_at = Some(now);
        }
        self.ifaces.get(&index).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ip_choice_rows() {
        let addrs: Vec<Ipv4Net> = vec![
            "10.0.0.1/24".parse().unwrap(),
            "192.168.0.3/24".parse().unwrap(),
        ];
        let ip = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        let rows = [
            (
                "relayed to the second address",
                None,
                ip("192.168.0.3"),
                ip("192.168.0.3"),
            ),
            (
                "broadcast, host in the second network",
                ip("192.168.0.51"),
                ip("255.255.255.255"),
                ip("192.168.0.3"),
            ),
            (
                "host in the first network",
                ip("10.0.0.5"),
                None,
                ip("10.0.0.1"),
            ),
            ("host elsewhere", ip("172.16.0.5"), None, ip("10.0.0.1")),
            ("nothing known", None, None, ip("10.0.0.1")),
        ];
        for (what, host, dst, want) in rows {
            assert_eq!(pick_server_ip(&addrs, host, dst), want, "{what}");
        }
        assert_eq!(pick_server_ip(&[], ip("10.0.0.5"), None), None);
    }

    #[test]
    fn loopback_is_listed() {
        let lo = list()
            .unwrap()
            .into_iter()
            .find(|i| i.name == "lo")
            .expect("lo exists");
        assert!(lo.addrs.iter().any(|a| a.addr() == Ipv4Addr::LOCALHOST));
        assert_eq!(lo.addrs[0].prefix_len(), 8);
    }
}
