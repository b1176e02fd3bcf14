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
        use crate::config::check::{BMC_CONCURRENCY, BMC_RETRIES, BMC_TIMEOUT_MS};
        fn within<T: PartialOrd + std::fmt::Display>(
            what: &str,
            v: Option<T>,
            r: &std::ops::RangeInclusive<T>,
        ) -> Result<Option<T>, PowerError> {
            match v {
                Some(v) if !r.contains(&v) => Err(PowerError::Invalid(format!(
                    "{what} {v} is out of range ({} to {})",
                    r.start(),
                    r.end()
                ))),
                v => Ok(v),
            }
        }
        let mut o = FanoutOpts::from_config(cfg);
        if let Some(c) = within("concurrency", self.concurrency, &BMC_CONCURRENCY)? {
            o.concurrency = c;
        }
        let timeout = within("timeout_ms", self.timeout_ms, &BMC_TIMEOUT_MS)?
            .map(Duration::from_millis)
            .unwrap_or(o.timing.timeout);
        // `retries` counts attempts, as `bmc.retries` does; the timing counts retransmits.
        let retransmits = within("retries", self.retries, &BMC_RETRIES)?.map(|n| n - 1);
        o.timing = Timing {
            timeout,
            retries: retransmits.unwrap_or(o.timing.retries),
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
    let names = if crate::nodeset::is_all(&req.nodeset) {
        inv.hosts().iter().map(|h| h.name.clone()).collect()
    } else {
        crate::nodeset::expand(&req.nodeset)?
    };
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

    /// `retries` counts attempts (ipmitool's `-R`): 3 is a try and two retransmits;
    /// out-of-range overrides are refused rather than overflowing a duration.
    #[test]
    fn retries_count_attempts_and_overrides_are_bounded() {
        let cfg = BmcConfig::default();
        assert_eq!(cfg.retries, 3);
        let o = PowerRequest::new("cn1", Action::Status)
            .options(&cfg)
            .unwrap();
        assert_eq!((o.timing.retries, o.redfish.retries), (2, 2));
        let mut req = PowerRequest::new("cn1", Action::Status);
        req.retries = Some(1);
        assert_eq!(req.options(&cfg).unwrap().timing.retries, 0);
        for (retries, timeout_ms, concurrency) in [
            (Some(0), None, None),
            (Some(120), None, None),
            (None, Some(u64::MAX), None),
            (None, Some(0), None),
            (None, None, Some(0)),
        ] {
            req.retries = retries;
            req.timeout_ms = timeout_ms;
            req.concurrency = concurrency;
            let err = req.options(&cfg).unwrap_err().to_string();
            assert!(err.contains("out of range"), "{err}");
        }
        // An unchecked section is clamped: 120 attempts is 10.
        let wild = BmcConfig {
            retries: 120,
            timeout_ms: u64::MAX,
            ..BmcConfig::default()
        };
        let o = FanoutOpts::from_config(&wild);
        assert_eq!(o.timing.retries, 9);
        assert_eq!(o.timing.timeout, Duration::from_secs(60));
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
