//! DHCP settings prepared once from the config (`[dhcp]`, `dhcp.subnets`), and the network
//! parameters of one host interface derived from them (pure).
//!
//! # Which value a host gets
//! | option | source, first that applies |
//! | --- | --- |
//! | 1 mask | the interface's CIDR prefix; for a bare address (/32), the matching subnet's prefix |
//! | 3 router | matching subnet's `gateway`; `dhcp.router`; `router_octet4` in the host's network (0 = off); `dhcp.gateway` (none of them: no router option) |
//! | 6 DNS | matching subnet's `dns`; `dhcp.dns_servers` (rotated per reply) |
//! | 15 domain | the domain part of the interface's `fqdn`; else the first search domain |
//! | 119 search | matching subnet's `domainSearch`; `dhcp.domain_search` |
//! | 26 MTU | the interface's `mtu`; matching subnet's `mtu`; `dhcp.mtu` |
//! | 28 broadcast | from address and prefix (none for /31 and /32) |
//!
//! A subnet "matches" when its gateway's network (`192.168.0.1/24` -> 192.168.0.0/24) holds
//! the host's address; the first match wins.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::boot::BootFiles;
use super::options::OptionTable;
use crate::config::{check, Config};
use crate::inventory::Interface;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key {key}: {message}")]
pub struct SettingsError {
    pub key: String,
    pub message: String,
}

/// One `dhcp.subnets` entry, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub net: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub domain_search: Vec<String>,
    pub mtu: Option<u16>,
}

/// Everything the reply builder needs from the config, parsed and checked once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub lease_secs: u32,
    pub dns: Vec<Ipv4Addr>,
    pub domain_search: Vec<String>,
    /// Global MTU (`dhcp.mtu`); `None` when 0.
    pub mtu: Option<u16>,
    /// `dhcp.router` (xboot): the router for hosts outside every subnet.
    pub router: Option<Ipv4Addr>,
    pub router_octet4: u8,
    /// `dhcp.gateway` (Grendel): the router when nothing above gives one.
    pub gateway: Option<Ipv4Addr>,
    pub subnets: Vec<Subnet>,
    /// proxyDHCP: boot options only, never an address.
    pub proxy_only: bool,
    pub boot_files: BootFiles,
    /// `dhcp.options` and `dhcp.presets` ([`super::options`]).
    pub options: OptionTable,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease_secs: 86400,
            dns: vec![],
            domain_search: vec![],
            mtu: None,
            router: None,
            router_octet4: 0,
            gateway: None,
            subnets: vec![],
            proxy_only: false,
            boot_files: BootFiles::default(),
            options: OptionTable::default(),
        }
    }
}

/// The network parameters of one host interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostNet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub mask: Ipv4Addr,
    pub broadcast: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub domain_search: Vec<String>,
    pub mtu: Option<u16>,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.into(),
        message: message.into(),
    }
}

fn parse_dns(key: &str, items: &[&str]) -> Result<Vec<Ipv4Addr>, SettingsError> {
    items
        .iter()
        .map(|d| check::dns_server(d).map_err(|m| err(key, m)))
        .collect()
}

fn parse_domains(key: &str, items: &[&str]) -> Result<Vec<String>, SettingsError> {
    items
        .iter()
        .map(|d| check::domain(d).map_err(|m| err(key, m)))
        .collect()
}

fn parse_mtu(key: &str, s: &str) -> Result<Option<u16>, SettingsError> {
    check::mtu(s).map_err(|m| err(key, m))
}

impl Settings {
    /// Reads `[dhcp]` of the config; errors name the key.
    pub fn from_config(cfg: &Config) -> Result<Settings, SettingsError> {
        let d = &cfg.dhcp;
        let lease = d.lease_duration().map_err(|m| err("dhcp.lease_time", m))?;
        let dns: Vec<&str> = d.dns_servers.iter().map(String::as_str).collect();
        let search: Vec<&str> = d.domain_search.iter().map(String::as_str).collect();
        let mut subnets = Vec::new();
        for (i, s) in d.subnets.iter().enumerate() {
            let key = |k: &str| format!("dhcp.subnets[{i}].{k}");
            let gw = check::gateway(&s.gateway).map_err(|m| err(key("gateway"), m))?;
            subnets.push(Subnet {
                net: gw.trunc(),
                gateway: gw.addr(),
                dns: parse_dns(&key("dns"), &check::split_list(&s.dns).collect::<Vec<_>>())?,
                domain_search: parse_domains(
                    &key("domainSearch"),
                    &check::split_list(&s.domain_search).collect::<Vec<_>>(),
                )?,
                mtu: parse_mtu(&key("mtu"), &s.mtu)?,
            });
        }
        Ok(Settings {
            lease_secs: lease.as_secs().min(u32::MAX as u64) as u32,
            dns: parse_dns("dhcp.dns_servers", &dns)?,
            domain_search: parse_domains("dhcp.domain_search", &search)?,
            mtu: parse_mtu("dhcp.mtu", &d.mtu.to_string())?,
            router: d.router,
            router_octet4: d.router_octet4,
            gateway: d.gateway,
            subnets,
            proxy_only: d.proxy_only,
            boot_files: BootFiles::default(),
            options: OptionTable::from_config(d).map_err(|mut e| {
                let (key, message) = e.swap_remove(0);
                SettingsError { key, message }
            })?,
        })
    }

    /// The subnet whose network holds `addr`, if any.
    pub fn subnet_for(&self, addr: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.net.contains(&addr))
    }

    /// The parameters of `nic` (see the module table); `None` when it has no address.
    pub fn host_net(&self, nic: &Interface) -> Option<HostNet> {
        let cidr = nic.ipv4()?;
        let addr = cidr.addr();
        let subnet = self.subnet_for(addr);
        let prefix = match (cidr.prefix_len(), subnet) {
            (32, Some(s)) => s.net.prefix_len(),
            (p, _) => p,
        };
        let net = Ipv4Net::new(addr, prefix).expect("prefix comes from a valid network");
        let router = subnet.map(|s| s.gateway).or(self.router).or_else(|| {
            (self.router_octet4 != 0).then(|| {
                let o = net.network().octets();
                Ipv4Addr::new(o[0], o[1], o[2], self.router_octet4)
            })
        });
        let router = router.or(self.gateway);
        let dns = subnet.map(|s| s.dns.clone()).filter(|v| !v.is_empty());
        let search = subnet
            .map(|s| s.domain_search.clone())
            .filter(|v| !v.is_empty());
        let search = search.unwrap_or_else(|| self.domain_search.clone());
        let domain = nic
            .fqdn
            .split_once('.')
            .map(|(_, d)| d.trim_end_matches('.').to_string())
            .filter(|d| !d.is_empty())
            .or_else(|| search.first().cloned());
        Some(HostNet {
            addr,
            prefix,
            mask: net.netmask(),
            broadcast: (prefix <= 30).then(|| net.broadcast()),
            router,
            dns: dns.unwrap_or_else(|| self.dns.clone()),
            domain,
            domain_search: search,
            mtu: crate::inventory::model::MTU_RANGE
                .contains(&nic.mtu)
                .then_some(nic.mtu)
                .or(subnet.and_then(|s| s.mtu))
                .or(self.mtu),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SubnetConfig;

    fn nic(ip: &str) -> Interface {
        Interface {
            ip: Some(ip.into()),
            ..Default::default()
        }
    }

    fn settings() -> Settings {
        let mut cfg = Config::default();
        cfg.dhcp.dns_servers = vec!["10.0.0.53".into(), "10.0.0.54".into()];
        cfg.dhcp.domain_search = vec!["global.test".into()];
        cfg.dhcp.router_octet4 = 254;
        cfg.dhcp.subnets = vec![SubnetConfig {
            gateway: "192.168.0.1/24".into(),
            dns: "192.168.0.100, 192.168.0.101".into(),
            domain_search: "example.com,lab.example.com".into(),
            mtu: "9000".into(),
        }];
        Settings::from_config(&cfg).unwrap()
    }

    /// Grendel's `dhcp.gateway`: the router of hosts outside every subnet, after
    /// `router` and `router_octet4`; a subnet's own gateway still wins.
    #[test]
    fn dhcp_gateway_is_the_last_router_fallback() {
        let cfg = Config::from_toml(
            "[dhcp]\ngateway = \"10.9.0.254\"\nsubnets = [{gateway = \"192.168.0.1/24\"}]\n",
            std::path::Path::new("/etc/grendel/grendel.toml"),
        )
        .unwrap();
        assert!(cfg.unknown_keys.is_empty(), "{:?}", cfg.unknown_keys);
        // A bad one is refused, naming the key.
        let e = Config::from_toml(
            "[dhcp]\ngateway = \"10.9.0\"\n",
            std::path::Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("dhcp.gateway"), "{e}");
        let s = Settings::from_config(&cfg).unwrap();
        assert_eq!(s.gateway, Some(Ipv4Addr::new(10, 9, 0, 254)));
        let router = |s: &Settings, ip: &str| s.host_net(&nic(ip)).unwrap().router;
        assert_eq!(
            router(&s, "10.9.0.5/24"),
            Some(Ipv4Addr::new(10, 9, 0, 254))
        );
        assert_eq!(
            router(&s, "192.168.0.5/24"),
            Some(Ipv4Addr::new(192, 168, 0, 1))
        );
        let mut octet = s.clone();
        octet.router_octet4 = 1;
        assert_eq!(
            router(&octet, "10.9.0.5/24"),
            Some(Ipv4Addr::new(10, 9, 0, 1))
        );
        let mut explicit = s.clone();
        explicit.router = Some(Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(
            router(&explicit, "10.9.0.5/24"),
            Some(Ipv4Addr::new(10, 9, 0, 2))
        );
        let mut none = s;
        none.gateway = None;
        assert_eq!(router(&none, "10.9.0.5/24"), None);
    }

    #[test]
    fn grendel_guide_subnet_applies() {
        let n = settings().host_net(&nic("192.168.0.51/24")).unwrap();
        assert_eq!(n.mask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(n.router, Some(Ipv4Addr::new(192, 168, 0, 1)));
        assert_eq!(
            n.dns,
            vec![
                Ipv4Addr::new(192, 168, 0, 100),
                Ipv4Addr::new(192, 168, 0, 101)
            ]
        );
        assert_eq!(n.domain.as_deref(), Some("example.com"));
        assert_eq!(n.mtu, Some(9000));
        assert_eq!(n.broadcast, Some(Ipv4Addr::new(192, 168, 0, 255)));
    }

    #[test]
    fn bare_address_takes_the_subnet_prefix() {
        let n = settings().host_net(&nic("192.168.0.52")).unwrap();
        assert_eq!(n.prefix, 24);
    }

    #[test]
    fn outside_subnets_uses_globals_and_octet4() {
        let n = settings().host_net(&nic("10.0.0.5/16")).unwrap();
        assert_eq!(n.router, Some(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!(n.dns.len(), 2);
        assert_eq!(n.domain_search, vec!["global.test".to_string()]);
        assert_eq!(n.mtu, Some(1500));
        assert_eq!(n.broadcast, Some(Ipv4Addr::new(10, 0, 255, 255)));
    }

    #[test]
    fn octet4_zero_means_no_router() {
        let s = Settings {
            router_octet4: 0,
            ..settings()
        };
        assert_eq!(s.host_net(&nic("10.0.0.5/24")).unwrap().router, None);
        let s = Settings {
            router: Some(Ipv4Addr::new(10, 0, 0, 9)),
            ..s
        };
        assert_eq!(
            s.host_net(&nic("10.0.0.5/24")).unwrap().router,
            Some(Ipv4Addr::new(10, 0, 0, 9))
        );
    }

    #[test]
    fn nic_mtu_and_fqdn_win() {
        let mut i = nic("192.168.0.9/24");
        i.mtu = 1400;
        i.fqdn = "cn9.rack1.example.org".into();
        let n = settings().host_net(&i).unwrap();
        assert_eq!(n.mtu, Some(1400));
        assert_eq!(n.domain.as_deref(), Some("rack1.example.org"));
        assert!(settings().host_net(&Interface::default()).is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut cfg = Config::default();
        cfg.dhcp.subnets = vec![SubnetConfig {
            gateway: "10.0.0.1/24".into(),
            dns: "nope".into(),
            ..Default::default()
        }];
        assert_eq!(
            Settings::from_config(&cfg).unwrap_err().key,
            "dhcp.subnets[0].dns"
        );
        cfg.dhcp.subnets[0].dns.clear();
        cfg.dhcp.subnets[0].mtu = "12".into();
        assert_eq!(
            Settings::from_config(&cfg).unwrap_err().key,
            "dhcp.subnets[0].mtu"
        );
    }
}
