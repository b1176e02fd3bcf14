//! A power request as the API and the CLI carry it (serde), and [`power`]: node set in,
//! [`Summary`] out. This is the one call the API handler and `xboot bmc power` make.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fanout::{self, FanoutOpts, NodeResult, Summary};
use super::ipmi::{CipherSuite, Timing};
use super::target::TargetErrors;
use super::{Action, BootMode};
use crate::config::BmcConfig;
use crate::inventory::Inventory;

/// `POST`-able body: which nodes, what to do, and overrides of the `[bmc]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerRequest {
    /// Node set (`cn[001-100],gpu1`).
    pub nodeset: String,
    pub action: Action,
    /// One-time network boot before the action (on, cycle, reset only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// IPMI cipher suite (3 or 17); absent: 17, then 3 if the BMC refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<u8>,
    /// Redfish: accept self-signed certificates (or'ed with `[bmc] insecure`).
    #[serde(default)]
    pub insecure: bool,
    /// Redfish: session (X-Auth-Token) login instead of basic auth.
    #[serde(default)]
    pub redfish_session: bool,
}

impl PowerRequest {
    pub fn new(nodeset: &str, action: Action) -> PowerRequest {
        PowerRequest {
            nodeset: nodeset.into(),
            action,
            boot: None,
            concurrency: None,
            timeout_ms: None,
            retries: None,
            cipher: None,
            insecure: false,
            redfish_session: false,
        }
    }

    /// Fan-out options: `cfg`, overridden by the request.
    pub fn options(&self, cfg: &BmcConfig) -> Result<FanoutOpts, PowerError> {
        if self.boot.is_some() && !self.action.boots() {
            return Err(PowerError::Invalid(format!(
                "a one-time PXE boot needs an action that boots the node (on, cycle or reset), not {}",
                self.action.as_str()
            )));
        }
        let mut o = FanoutOpts::from_config(cfg);
        if let Some(c) = self.concurrency {
            o.concurrency = c.max(1);
        }
        let timeout = self
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(o.timing.timeout);
        o.timing = Timing {
            timeout,
            retries: self.retries.unwrap_or(o.timing.retries),
        };
        o.redfish.connect_timeout = timeout;
        o.redfish.retries = o.timing.retries;
        o.redfish.insecure |= self.insecure;
        o.redfish.session_auth = self.redfish_session;
        if let Some(id) = self.cipher {
            let suite = CipherSuite::from_id(id).ok_or_else(|| {
                PowerError::Invalid(format!("cipher suite {id}: xboot implements 3 and 17"))
            })?;
            o.suites = vec![suite];
        }
        o.boot = self.boot;
        Ok(o)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowerError {
    #[error(transparent)]
    NodeSet(#[from] crate::nodeset::NodeSetError),
    #[error(transparent)]
    Targets(#[from] TargetErrors),
    #[error("{0}")]
    Invalid(String),
}

/// Expands the node set, finds each host's BMC, and runs the action on all of them.
/// Per-node failures are in the summary; an error means nothing was attempted.
pub async fn power(
    cfg: &BmcConfig,
    inv: &Inventory,
    req: &PowerRequest,
    progress: impl Fn(&NodeResult),
) -> Result<Summary, PowerError> {
    let opts = req.options(cfg)?;
    let names = crate::nodeset::expand(&req.nodeset)?;
    Ok(fanout::run_hosts(cfg, inv, &names, req.action, opts, progress).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_defaults() {
        let req: PowerRequest =
            serde_json::from_str(r#"{"nodeset":"cn[1-2]","action":"cycle","boot":"efi"}"#).unwrap();
        assert_eq!(req.boot, Some(BootMode::Efi));
        assert_eq!(
            serde_json::from_value::<PowerRequest>(serde_json::to_value(&req).unwrap()).unwrap(),
            req
        );
        let o = req.options(&BmcConfig::default()).unwrap();
        assert_eq!(o.suites, vec![CipherSuite::Suite17, CipherSuite::Suite3]);
        assert_eq!(o.timing.timeout, Duration::from_millis(1000));
    }

    #[test]
    fn rejects_nonsense() {
        let mut req = PowerRequest::new("cn1", Action::Off);
        req.boot = Some(BootMode::Legacy);
        assert!(req
            .options(&BmcConfig::default())
            .unwrap_err()
            .to_string()
            .contains("not off"));
        let mut req = PowerRequest::new("cn1", Action::On);
        req.cipher = Some(1);
        assert!(matches!(
            req.options(&BmcConfig::default()),
            Err(PowerError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn unknown_hosts_fail_before_any_traffic() {
        let req = PowerRequest::new("cn[1-2]", Action::Status);
        let err = power(&BmcConfig::default(), &Inventory::default(), &req, |_| {})
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host cn1: not in the inventory; host cn2: not in the inventory"
        );
        let bad = PowerRequest::new("cn[", Action::Status);
        assert!(matches!(
            power(&BmcConfig::default(), &Inventory::default(), &bad, |_| {}).await,
            Err(PowerError::NodeSet(_))
        ));
    }
}
