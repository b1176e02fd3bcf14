//! Which BMC to talk to, and how: a host's interface with `bmc = true` gives the address;
//! the `[bmc]` config section gives protocol and credentials, which the interface's
//! `bmc_config` may override per host (protocol, user, password, port).
use std::net::SocketAddr;

use crate::config::BmcConfig;
use crate::inventory::Inventory;

/// How xboot talks to one BMC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// IPMI v2.0 over LAN (RMCP+), UDP port 623.
    Ipmi,
    /// Redfish over HTTPS (port 443).
    Redfish,
    /// Redfish over plain HTTP (port 80): emulators and labs only.
    RedfishHttp,
}

impl Protocol {
    /// `ipmi`, `redfish` or `redfish-http` (config and per-host override spelling).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "ipmi" => Some(Protocol::Ipmi),
            "redfish" => Some(Protocol::Redfish),
            "redfish-http" => Some(Protocol::RedfishHttp),
            _ => None,
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Ipmi => 623,
            Protocol::Redfish => 443,
            Protocol::RedfishHttp => 80,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ipmi => "ipmi",
            Protocol::Redfish => "redfish",
            Protocol::RedfishHttp => "redfish-http",
        }
    }
}

/// One BMC with everything needed to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The host's inventory name.
    pub name: String,
    pub addr: SocketAddr,
    /// The BMC interface's FQDN, if any: Redfish uses it as the URL host so that the
    /// certificate's name can match.
    pub fqdn: Option<String>,
    pub protocol: Protocol,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("protocol", &self.protocol)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("host {0}: not in the inventory")]
    UnknownHost(String),
    #[error("host {0}: no interface with bmc = true")]
    NoBmc(String),
    #[error("host {host}: BMC interface has no valid ip ({ip:?})")]
    NoAddress { host: String, ip: Option<String> },
    #[error(
        "host {host}: unknown BMC protocol {protocol:?} (expected ipmi, redfish or redfish-http)"
    )]
    Protocol { host: String, protocol: String },
}

/// Every problem found while resolving a node list, so one run reports them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct TargetErrors(pub Vec<TargetError>);

/// The BMC target of each named host, in the order given.
pub fn resolve(
    cfg: &BmcConfig,
    inv: &Inventory,
    names: &[String],
) -> Result<Vec<Target>, TargetErrors> {
    let mut out = Vec::with_capacity(names.len());
    let mut errors = vec![];
    for name in names {
        match resolve_one(cfg, inv, name) {
            Ok(t) => out.push(t),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(TargetErrors(errors))
    }
}

fn resolve_one(cfg: &BmcConfig, inv: &Inventory, name: &str) -> Result<Target, TargetError> {
    let host = inv
        .host(name)
        .ok_or_else(|| TargetError::UnknownHost(name.into()))?;
    let nic = host.bmc().ok_or_else(|| TargetError::NoBmc(name.into()))?;
    let ip = nic.addr().ok_or_else(|| TargetError::NoAddress {
        host: name.into(),
        ip: nic.ip.clone(),
    })?;
    let ov = nic.bmc_config.clone().unwrap_or_default();
    let proto_name = ov.protocol.as_deref().unwrap_or(&cfg.protocol);
    let protocol = Protocol::parse(proto_name).ok_or_else(|| TargetError::Protocol {
        host: name.into(),
        protocol: proto_name.into(),
    })?;
    let port = ov.port.unwrap_or(protocol.default_port());
    Ok(Target {
        name: name.into(),
        addr: SocketAddr::new(ip.into(), port),
        fqdn: Some(nic.fqdn.clone()).filter(|f| !f.is_empty()),
        protocol,
        user: ov.user.unwrap_or_else(|| cfg.user.clone()),
        password: ov.password.unwrap_or_else(|| cfg.password.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Host;

    fn inventory() -> Inventory {
        let hosts: Vec<Host> = serde_json::from_str(
            r#"[
            {"name":"cn1","interfaces":[{"mac":"aa:bb:cc:00:00:01","ip":"10.0.0.1/24"},
                                        {"ip":"10.1.0.1/24","bmc":true}]},
            {"name":"cn2","interfaces":[{"ip":"10.1.0.2","bmc":true,"fqdn":"cn2-bmc.example",
                "bmc_config":{"protocol":"redfish","user":"root","password":"calvin","port":8443}}]},
            {"name":"cn3","interfaces":[{"mac":"aa:bb:cc:00:00:03","ip":"10.0.0.3/24"}]},
            {"name":"cn4","interfaces":[{"bmc":true}]},
            {"name":"cn5","interfaces":[{"ip":"10.1.0.5","bmc":true,"bmc_config":{"protocol":"snmp"}}]}
        ]"#,
        )
        .unwrap();
        Inventory::from_parts_unchecked(hosts, vec![])
    }

    fn cfg() -> BmcConfig {
        BmcConfig {
            user: "admin".into(),
            password: "secret".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let t = resolve(&cfg(), &inventory(), &["cn1".into(), "cn2".into()]).unwrap();
        assert_eq!(t[0].addr, "10.1.0.1:623".parse().unwrap());
        assert_eq!(
            (t[0].protocol, t[0].user.as_str(), t[0].password.as_str()),
            (Protocol::Ipmi, "admin", "secret")
        );
        assert_eq!(t[0].fqdn, None);
        assert_eq!(t[1].addr, "10.1.0.2:8443".parse().unwrap());
        assert_eq!(
            (t[1].protocol, t[1].user.as_str(), t[1].password.as_str()),
            (Protocol::Redfish, "root", "calvin")
        );
        assert_eq!(t[1].fqdn.as_deref(), Some("cn2-bmc.example"));
        assert!(
            !format!("{:?}", t[1]).contains("calvin"),
            "Debug hides the password"
        );
    }

    #[test]
    fn every_error_is_reported_with_the_host_name() {
        let names: Vec<String> = ["cn3", "cn4", "cn5", "nope", "cn1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let err = resolve(&cfg(), &inventory(), &names).unwrap_err();
        assert_eq!(err.0.len(), 4);
        let text = err.to_string();
        for needle in [
            "host cn3: no interface with bmc = true",
            "host cn4: BMC interface has no valid ip",
            "\"snmp\"",
            "host nope: not in",
        ] {
            assert!(text.contains(needle), "{text}");
        }
    }
}
