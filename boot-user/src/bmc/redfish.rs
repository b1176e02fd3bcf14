//! Redfish power control: `ComputerSystem.Reset` and the one-time boot override to PXE,
//! with basic or session (X-Auth-Token) authentication, over HTTPS (reqwest with rustls;
//! certificate checks on unless `insecure` is set explicitly).
//!
//! Per BMC: [log in,] GET /redfish/v1/Systems, GET the first system, [PATCH its Boot
//! override,] POST the reset action it advertises, [log out]. The reset type is the first
//! of a preference list that the system's `ResetType@Redfish.AllowableValues` allows.
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::target::{Protocol, Target};
use super::{Action, BootMode};

#[derive(Clone, Debug)]
pub struct RedfishOpts {
    /// TCP connect (and TLS handshake start) bound: a dead BMC fails after this.
    pub connect_timeout: Duration,
    /// Whole-request bound: BMCs take seconds to answer a reset.
    pub request_timeout: Duration,
    /// Retries of a request that failed in transport (connect error, timeout).
    pub retries: u32,
    /// Accept any certificate (self-signed BMCs). Off unless asked for.
    pub insecure: bool,
    /// Log in through SessionService and use X-Auth-Token instead of basic auth.
    pub session_auth: bool,
}

impl Default for RedfishOpts {
    fn default() -> Self {
        RedfishOpts {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            retries: 2,
            insecure: false,
            session_auth: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedfishError {
    #[error("authentication failed: HTTP {status} from {url}")]
    Auth { status: u16, url: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("connection refused: {0}")]
    Refused(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("TLS: {0} (set insecure to accept a self-signed BMC certificate)")]
    Tls(String),
    #[error("HTTP {status} from {method} {url}: {message}")]
    Http {
        method: String,
        status: u16,
        url: String,
        message: String,
    },
    #[error("unexpected reply from {url}: {message}")]
    Protocol { url: String, message: String },
    /// The BMC refused the one-time PXE boot override (PATCH of the system's `Boot`),
    /// e.g. 400 `PropertyValueNotInList` for a target it does not offer, or 405/501 from
    /// one that cannot set it: the reset was then not sent.
    #[error("boot override refused: HTTP {status} from PATCH {url}: {message}")]
    BootOverride {
        status: u16,
        url: String,
        message: String,
    },
}

/// Reset types to try for an action, most fitting first.
pub fn reset_preferences(action: Action) -> &'static [&'static str] {
    match action {
        Action::On => &["On", "ForceOn"],
        Action::Off => &["ForceOff"],
        Action::Cycle => &["PowerCycle", "ForceRestart"],
        Action::Reset => &["ForceRestart", "PowerCycle"],
        Action::Soft => &["GracefulShutdown"],
        Action::Status => &[],
    }
}

/// The reset type to send: the first preference the system allows (all are allowed
/// when it does not say).
pub fn choose_reset_type(action: Action, system: &Value) -> Option<&'static str> {
    let allowed = system
        .pointer("/Actions/#ComputerSystem.Reset/ResetType@Redfish.AllowableValues")
        .and_then(Value::as_array);
    reset_preferences(action)
        .iter()
        .copied()
        .find(|p| match allowed {
            Some(list) => list.iter().any(|v| v.as_str() == Some(p)),
            None => true,
        })
}

/// The PATCH body for a one-time PXE boot. The mode is only sent when the system has
/// the property (older BMCs reject unknown ones).
pub fn boot_override(mode: BootMode, system: &Value) -> Value {
    let mut boot = json!({"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe"});
    if system.pointer("/Boot/BootSourceOverrideMode").is_some() {
        let m = match mode {
            BootMode::Efi => "UEFI",
            BootMode::Legacy => "Legacy",
        };
        boot["BootSourceOverrideMode"] = json!(m);
    }
    json!({ "Boot": boot })
}

enum Auth<'a> {
    Basic {
        user: &'a str,
        password: &'a str,
    },
    Token {
        token: String,
        location: Option<String>,
    },
}

/// A Redfish client shared by every BMC of a fan-out (one connection pool).
pub struct Client {
    http: reqwest::Client,
    opts: RedfishOpts,
}

struct Reply {
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Client {
    pub fn new(opts: RedfishOpts) -> Result<Client, RedfishError> {
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.request_timeout)
            .danger_accept_invalid_certs(opts.insecure)
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| RedfishError::Tls(e.to_string()))?;
        Ok(Client { http, opts })
    }

    /// Runs `action` (after the boot override, if any) on the BMC; for
    /// [`Action::Status`], returns whether the system is powered on.
    pub async fn run(
        &self,
        t: &Target,
        action: Action,
        boot: Option<BootMode>,
    ) -> Result<Option<bool>, RedfishError> {
        let base = base_url(t);
        let auth = self.login(&base, t).await?;
        let result = self.run_authed(&base, &auth, action, boot).await;
        if let Auth::Token {
            location: Some(loc),
            ..
        } = &auth
        {
            let url = absolute(&base, loc);
            let _ = self.send(Method::DELETE, &url, &auth, None, None).await;
        }
        result
    }

    async fn run_authed(
        &self,
        base: &str,
        auth: &Auth<'_>,
        action: Action,
        boot: Option<BootMode>,
    ) -> Result<Option<bool>, RedfishError> {
        let systems_url = format!("{base}/redfish/v1/Systems");
        let systems = self
            .send(Method::GET, &systems_url, auth, None, None)
            .await?;
        let system_path = systems
            .body
            .pointer("/Members/0/@odata.id")
            .and_then(Value::as_str)
            .ok_or_else(|| RedfishError::Protocol {
                url: systems_url.clone(),
                message: "no ComputerSystem member".into(),
            })?;
        let system_url = absolute(base, system_path);
        let system = self
            .send(Method::GET, &system_url, auth, None, None)
            .await?;
        let power_on = system
            .body
            .get("PowerState")
            .and_then(Value::as_str)
            .map(|s| s == "On");
        if action == Action::Status {
            return power_on.map(Some).ok_or_else(|| RedfishError::Protocol {
                url: system_url,
                message: "no PowerState".into(),
            });
        }
        if let Some(mode) = boot {
            let etag = system
                .headers
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = boot_override(mode, &system.body);
            // A refusal ends the node here, before the reset: a node told to boot from
            // the network must not be reset into its disk instead.
            self.send(
                Method::PATCH,
                &system_url,
                auth,
                Some(body),
                etag.as_deref(),
            )
            .await
            .map_err(|e| match e {
                RedfishError::Http {
                    status,
                    url,
                    message,
                    ..
                } => RedfishError::BootOverride {
                    status,
                    url,
                    message,
                },
                e => e,
            })?;
        }
        let reset =
            choose_reset_type(action, &system.body).ok_or_else(|| RedfishError::Protocol {
                url: system_url.clone(),
                message: format!(
                    "allows none of the reset types {:?}",
                    reset_preferences(action)
                ),
            })?;
        let target = system
            .body
            .pointer("/Actions/#ComputerSystem.Reset/target")
            .and_then(Value::as_str)
            .map(|p| absolute(base, p))
            .unwrap_or_else(|| format!("{system_url}/Actions/ComputerSystem.Reset"));
        self.send(
            Method::POST,
            &target,
            auth,
            Some(json!({ "ResetType": reset })),
            None,
        )
        .await?;
        Ok(None)
    }

    async fn login<'a>(&self, base: &str, t: &'a Target) -> Result<Auth<'a>, RedfishError> {
        if !self.opts.session_auth {
            return Ok(Auth::Basic {
                user: &t.user,
                password: &t.password,
            });
        }
        let url = format!("{base}/redfish/v1/SessionService/Sessions");
        let body = json!({"UserName": t.user, "Password": t.password});
        let none = Auth::Token {
            token: String::new(),
            location: None,
        };
        let r = self
            .send(Method::POST, &url, &none, Some(body), None)
            .await?;
        let header = |n: &str| {
            r.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let token = header("x-auth-token").ok_or_else(|| RedfishError::Protocol {
            url: url.clone(),
            message: "no X-Auth-Token in reply".into(),
        })?;
        Ok(Auth::Token {
            token,
            location: header("location"),
        })
    }

    /// One request, retried on transport failures with a growing pause.
    async fn send(
        &self,
        method: Method,
        url: &str,
        auth: &Auth<'_>,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, RedfishError> {
        let mut attempt = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url)
                .header("accept", "application/json");
            req = match auth {
                Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
                Auth::Token { token, .. } if !token.is_empty() => req.header("x-auth-token", token),
                Auth::Token { .. } => req,
            };
            if let Some(b) = &body {
                req = req.json(b);
            }
            if let Some(tag) = if_match {
                req = req.header("if-match", tag);
            }
            match req.send().await {
                Ok(resp) => return reply(method.as_str(), url, resp).await,
                Err(e) if attempt < self.opts.retries && (e.is_timeout() || e.is_connect()) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => return Err(transport_error(url, &e)),
            }
        }
    }
}

async fn reply(method: &str, url: &str, resp: reqwest::Response) -> Result<Reply, RedfishError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.map_err(|e| transport_error(url, &e))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(RedfishError::Auth {
            status: status.as_u16(),
            url: url.into(),
        });
    }
    if !status.is_success() {
        let message = error_message(&body).unwrap_or_else(|| {
            let t: String = text.chars().take(200).collect();
            if t.trim().is_empty() {
                status.canonical_reason().unwrap_or("no message").into()
            } else {
                t
            }
        });
        return Err(RedfishError::Http {
            method: method.into(),
            status: status.as_u16(),
            url: url.into(),
            message,
        });
    }
    Ok(Reply { headers, body })
}

/// A Redfish error body's words: the first extended message with its registry id
/// (`Base.1.8.PropertyValueNotInList: The value ...`), else the error's own message.
fn error_message(body: &Value) -> Option<String> {
    let ext = body.pointer("/error/@Message.ExtendedInfo/0");
    let text = ext
        .and_then(|e| e.get("Message"))
        .or_else(|| body.pointer("/error/message"))
        .and_then(Value::as_str)?;
    Some(
        match ext.and_then(|e| e.get("MessageId")).and_then(Value::as_str) {
            Some(id) if !text.contains(id) => format!("{id}: {text}"),
            _ => text.to_owned(),
        },
    )
}

/// Sorts a transport failure into refused / unreachable / timeout / TLS.
fn transport_error(url: &str, e: &reqwest::Error) -> RedfishError {
    let mut chain = vec![e.to_string()];
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut kind = None;
    while let Some(s) = src {
        chain.push(s.to_string());
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            kind = kind.or(Some(io.kind()));
        }
        src = s.source();
    }
    let text = format!(
        "{url}: {}",
        chain.last().map(String::as_str).unwrap_or_default()
    );
    use std::io::ErrorKind as K;
    match kind {
        _ if e.is_timeout() => RedfishError::Timeout(text),
        Some(K::ConnectionRefused) => RedfishError::Refused(text),
        Some(K::HostUnreachable | K::NetworkUnreachable) => RedfishError::Unreachable(text),
        _ if chain
            .iter()
            .any(|c| c.to_lowercase().contains("certificate")) =>
        {
            RedfishError::Tls(text)
        }
        Some(K::TimedOut) => RedfishError::Timeout(text),
        _ if e.is_connect() => RedfishError::Unreachable(text),
        _ => RedfishError::Protocol {
            url: url.into(),
            message: chain.join(": "),
        },
    }
}

fn base_url(t: &Target) -> String {
    let scheme = if t.protocol == Protocol::RedfishHttp {
        "http"
    } else {
        "https"
    };
    match &t.fqdn {
        Some(host) => format!("{scheme}://{host}:{}", t.addr.port()),
        None => format!("{scheme}://{}", t.addr),
    }
}

fn absolute(base: &str, path: &str) -> String {
    if path.starts_with("http://") || path.starts_with("https://") {
        path.into()
    } else {
        format!("{base}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_type_follows_allowable_values() {
        let sys = json!({"Actions": {"#ComputerSystem.Reset": {
            "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "ForceRestart", "GracefulShutdown"]}}});
        assert_eq!(choose_reset_type(Action::Cycle, &sys), Some("ForceRestart"));
        assert_eq!(choose_reset_type(Action::On, &sys), Some("On"));
        assert_eq!(
            choose_reset_type(Action::Soft, &sys),
            Some("GracefulShutdown")
        );
        assert_eq!(choose_reset_type(Action::Status, &sys), None);
        assert_eq!(
            choose_reset_type(Action::Cycle, &json!({})),
            Some("PowerCycle")
        );
        let none = json!({"Actions": {"#ComputerSystem.Reset": {"ResetType@Redfish.AllowableValues": ["Nmi"]}}});
        assert_eq!(choose_reset_type(Action::Off, &none), None);
    }

    #[test]
    fn boot_override_mode_only_when_supported() {
        let old = boot_override(
            BootMode::Efi,
            &json!({"Boot": {"BootSourceOverrideTarget": "None"}}),
        );
        assert_eq!(
            old,
            json!({"Boot": {"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe"}})
        );
        let new = boot_override(
            BootMode::Legacy,
            &json!({"Boot": {"BootSourceOverrideMode": "UEFI"}}),
        );
        assert_eq!(new["Boot"]["BootSourceOverrideMode"], "Legacy");
    }

    #[test]
    fn urls() {
        let mut t = Target {
            name: "cn1".into(),
            addr: "10.0.0.1:8000".parse().unwrap(),
            fqdn: None,
            protocol: Protocol::RedfishHttp,
            user: String::new(),
            password: String::new(),
        };
        assert_eq!(base_url(&t), "http://10.0.0.1:8000");
        t.protocol = Protocol::Redfish;
        t.fqdn = Some("cn1-bmc".into());
        assert_eq!(base_url(&t), "https://cn1-bmc:8000");
        assert_eq!(absolute("https://a", "/redfish/v1"), "https://a/redfish/v1");
        assert_eq!(absolute("https://a", "https://b/x"), "https://b/x");
    }

    /// Session login against a minimal Redfish service (sushy-tools has no
    /// SessionService): the token replaces basic auth on every request, and the session
    /// is deleted at the end.
    #[tokio::test]
    async fn session_auth_uses_the_token_and_logs_out() {
        use axum::http::{HeaderMap, StatusCode as S};
        use axum::routing::{get, post};
        use std::sync::{Arc, Mutex};

        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let authed = |h: &HeaderMap| {
            h.get("x-auth-token").is_some_and(|v| v == "tok") && h.get("authorization").is_none()
        };
        let l = log.clone();
        let app = axum::Router::new()
            .route(
                "/redfish/v1/SessionService/Sessions",
                post(|body: axum::Json<Value>| async move {
                    assert_eq!(body["UserName"], "admin");
                    let h = [
                        ("x-auth-token", "tok"),
                        ("location", "/redfish/v1/SessionService/Sessions/1"),
                    ];
                    (S::CREATED, h, "{}")
                }),
            )
            .route(
                "/redfish/v1/SessionService/Sessions/1",
                axum::routing::delete(move || async move {
                    l.lock().unwrap().push("logout".into());
                    S::NO_CONTENT
                }),
            )
            .route(
                "/redfish/v1/Systems",
                get(move |h: HeaderMap| async move {
                    if !authed(&h) {
                        return (S::UNAUTHORIZED, axum::Json(json!({})));
                    }
                    (
                        S::OK,
                        axum::Json(json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]})),
                    )
                }),
            )
            .route(
                "/redfish/v1/Systems/1",
                get(move |h: HeaderMap| async move {
                    assert!(authed(&h));
                    axum::Json(json!({"PowerState": "On"}))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let t = Target {
            name: "n".into(),
            addr,
            fqdn: None,
            protocol: Protocol::RedfishHttp,
            user: "admin".into(),
            password: "pw".into(),
        };
        let client = Client::new(RedfishOpts {
            session_auth: true,
            ..RedfishOpts::default()
        })
        .unwrap();
        assert_eq!(client.run(&t, Action::Status, None).await, Ok(Some(true)));
        assert_eq!(*log.lock().unwrap(), vec!["logout".to_string()]);
        let basic = Client::new(RedfishOpts::default()).unwrap();
        let err = basic.run(&t, Action::Status, None).await.unwrap_err();
        assert!(
            matches!(err, RedfishError::Auth { status: 401, .. }),
            "{err:?}"
        );
        server.abort();
    }
}
