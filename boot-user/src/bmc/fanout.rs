//! One power action on many BMCs: bounded concurrency, every IPMI session on one shared
//! engine (one socket, one task), Redfish through one shared HTTP client, and a result
//! per node that says why it failed (auth, timeout, unreachable, refused, other).
//!
//! Every node's work has a hard upper bound on top of the protocol timeouts, so a fan-out
//! always ends; nodes finish in any order and results come back in the order given.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::ipmi::{CipherSuite, Control, Engine, IpmiError, Op, SessionConfig, Timing};
use super::redfish::{self, RedfishError, RedfishOpts};
use super::target::{self, Protocol, Target, TargetErrors};
use super::{Action, BootMode};
use crate::config::BmcConfig;
use crate::inventory::Inventory;

#[derive(Clone, Debug)]
pub struct FanoutOpts {
    /// BMCs worked on at once.
    pub concurrency: usize,
    /// IPMI per-packet timeout and retransmits.
    pub timing: Timing,
    /// IPMI cipher suites, in order of preference.
    pub suites: Vec<CipherSuite>,
    /// One-time PXE boot before the action.
    pub boot: Option<BootMode>,
    pub redfish: RedfishOpts,
    /// Local address of the IPMI socket.
    pub bind: SocketAddr,
    /// Power-on stagger (`bmc.fanout` per `bmc.delay`); None: off.
    pub stagger: Option<Stagger>,
}

/// At most `count` BMCs told to power on per `window` (Grendel's `bmc.fanout` and
/// `bmc.delay`): the inrush limit when a thousand nodes start at once. Applies to the
/// actions that start machines ([`Action::boots`]); status and off are never held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stagger {
    pub count: usize,
    pub window: Duration,
}

impl Stagger {
    /// The policy of `bmc.fanout` / `bmc.delay`: off unless both are set.
    pub fn from_config(cfg: &BmcConfig) -> Option<Stagger> {
        (cfg.fanout > 0 && cfg.delay > 0).then(|| Stagger {
            count: cfg.fanout,
            window: Duration::from_secs(cfg.delay),
        })
    }
}

/// The admission side of a [`Stagger`], sans I/O: the start times of the last `count`
/// admitted nodes. A node is admitted at `now` when fewer than `count` started in the
/// window before it, so no window of that length ever holds more than `count` starts,
/// however late some nodes come (a sliding window, not fixed batches: batches would let
/// a late batch and the next one start together).
#[derive(Debug)]
pub struct StaggerWindow {
    policy: Stagger,
    starts: std::collections::VecDeque<Instant>,
}

impl StaggerWindow {
    pub fn new(policy: Stagger) -> StaggerWindow {
        StaggerWindow {
            policy,
            starts: std::collections::VecDeque::new(),
        }
    }

    /// Admits a start at `now` (and records it), or says when to ask again.
    pub fn admit(&mut self, now: Instant) -> Result<(), Instant> {
        let count = self.policy.count.max(1);
        if self.starts.len() >= count {
            let oldest = self.starts[self.starts.len() - count];
            let free_at = oldest + self.policy.window;
            if now < free_at {
                return Err(free_at);
            }
        }
        self.starts.push_back(now);
        while self.starts.len() > count {
            self.starts.pop_front();
        }
        Ok(())
    }
}

impl FanoutOpts {
    /// Options from the `[bmc]` config section (its values are clamped to the ranges the
    /// config check enforces, for a section that was never checked). `bmc.retries`
    /// counts attempts, the first included, as ipmitool's `-R` does: 3 is one try and two
    /// retransmits.
    pub fn from_config(cfg: &BmcConfig) -> FanoutOpts {
        use crate::config::check::{BMC_CONCURRENCY, BMC_RETRIES, BMC_TIMEOUT_MS};
        fn clamp<T: Ord + Copy>(v: T, r: &std::ops::RangeInclusive<T>) -> T {
            v.clamp(*r.start(), *r.end())
        }
        let timeout = Duration::from_millis(clamp(cfg.timeout_ms, &BMC_TIMEOUT_MS));
        let retransmits = clamp(cfg.retries, &BMC_RETRIES) - 1;
        FanoutOpts {
            concurrency: clamp(cfg.concurrency, &BMC_CONCURRENCY),
            timing: Timing {
                timeout,
                retries: retransmits,
            },
            suites: vec![CipherSuite::Suite17, CipherSuite::Suite3],
            boot: None,
            redfish: RedfishOpts {
                connect_timeout: timeout,
                // a reset takes a BMC seconds; only the connect is bound by timeout_ms
                request_timeout: timeout.max(Duration::from_secs(10)),
                retries: retransmits,
                insecure: cfg.insecure,
                session_auth: false,
            },
            bind: "0.0.0.0:0".parse().expect("valid address"),
            stagger: Stagger::from_config(cfg),
        }
    }
}

/// Why a node failed (or `ok`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Ok,
    /// Wrong user or password, or not enough privilege.
    Auth,
    /// The BMC stopped answering (or never did).
    Timeout,
    /// The BMC answered, but with nothing that could be read (garbage, failed integrity
    /// checks): a wrong port, a broken BMC or a man in the middle, not a dead one.
    #[serde(rename = "bad-reply")]
    BadReply,
    /// No route to the BMC.
    Unreachable,
    /// The BMC's address answered that nothing listens on the port.
    Refused,
    /// The BMC refused the one-time PXE boot device (IPMI Set System Boot Options, or
    /// the Redfish boot override PATCH with an HTTP error): the power action was then
    /// not sent, so the node keeps its power state rather than
    /// booting from its disk when a network boot was asked for.
    #[serde(rename = "boot-device")]
    BootDevice,
    /// Anything else; the message says what.
    Other,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Auth => "auth",
            Reason::Timeout => "timeout",
            Reason::BadReply => "bad-reply",
            Reason::Unreachable => "unreachable",
            Reason::Refused => "refused",
            Reason::BootDevice => "boot-device",
            Reason::Other => "other",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResult {
    pub name: String,
    pub bmc: SocketAddr,
    pub protocol: Protocol,
    pub reason: Reason,
    /// `on` / `off` for a status query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<String>,
    /// Empty when ok.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub elapsed_ms: u64,
    /// When the node's work started, ms after the fan-out began (later than 0 when the
    /// power-on stagger held it).
    #[serde(default)]
    pub started_ms: u64,
}

impl NodeResult {
    pub fn ok(&self) -> bool {
        self.reason == Reason::Ok
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootMode>,
    pub total: usize,
    pub ok: usize,
    pub failed: usize,
    pub elapsed_ms: u64,
    /// In the order the targets were given.
    pub results: Vec<NodeResult>,
}

/// Runs `action` on every target; `progress` sees each result as it arrives.
pub async fn run(
    targets: Vec<Target>,
    action: Action,
    opts: FanoutOpts,
    progress: impl Fn(&NodeResult),
) -> Summary {
    let start = Instant::now();
    let needs_ipmi = targets.iter().any(|t| t.protocol == Protocol::Ipmi);
    let needs_redfish = targets.iter().any(|t| t.protocol != Protocol::Ipmi);
    let engine = if needs_ipmi {
        Some(Engine::bind(opts.bind).map_err(|e| e.to_string()))
    } else {
        None
    };
    let http = if needs_redfish {
        Some(redfish::Client::new(opts.redfish.clone()).map_err(|e| e.to_string()))
    } else {
        None
    };
    let window = opts
        .stagger
        .filter(|_| action.boots())
        .map(|s| std::sync::Mutex::new(StaggerWindow::new(s)));
    let (engine, http, opts, window) = (&engine, &http, &opts, &window);
    let total = targets.len();
    let mut results: Vec<(usize, NodeResult)> =
        futures::stream::iter(targets.into_iter().enumerate())
            .map(|(i, t)| async move {
                let mut admitted = Instant::now();
                if let Some(w) = window {
                    // Asked in order (the stream starts the nodes in order); a node
                    // waits outside the lock.
                    loop {
                        admitted = Instant::now();
                        let verdict = w.lock().expect("not poisoned").admit(admitted);
                        match verdict {
                            Ok(()) => break,
                            Err(at) => tokio::time::sleep_until(at.into()).await,
                        }
                    }
                }
                let started_ms = admitted.duration_since(start).as_millis() as u64;
                let mut r = one(t, action, opts, engine, http).await;
                r.started_ms = started_ms;
                (i, r)
            })
            .buffer_unordered(opts.concurrency.max(1))
            .inspect(|(_, r)| progress(r))
            .collect()
            .await;
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<NodeResult> = results.into_iter().map(|(_, r)| r).collect();
    let ok = results.iter().filter(|r| r.ok()).count();
    Summary {
        action,
        boot: opts.boot,
        total,
        ok,
        failed: total - ok,
        elapsed_ms: start.elapsed().as_millis() as u64,
        results,
    }
}

/// Resolves host names against the inventory and runs the fan-out: the entry point for
/// the API and the CLI.
pub async fn run_hosts(
    cfg: &BmcConfig,
    inv: &Inventory,
    names: &[String],
    action: Action,
    opts: FanoutOpts,
    progress: impl Fn(&NodeResult),
) -> Result<Summary, TargetErrors> {
    let targets = target::resolve(cfg, inv, names)?;
    Ok(run(targets, action, opts, progress).await)
}

/// The IPMI commands for an action.
pub fn ipmi_ops(action: Action, boot: Option<BootMode>) -> Vec<Op> {
    let mut ops = vec![];
    if let (Some(mode), true) = (boot, action.boots()) {
        ops.push(Op::BootPxe {
            efi: mode == BootMode::Efi,
        });
    }
    ops.push(match action {
        Action::On => Op::Control(Control::On),
        Action::Off => Op::Control(Control::Off),
        Action::Cycle => Op::Control(Control::Cycle),
        Action::Reset => Op::Control(Control::Reset),
        Action::Soft => Op::Control(Control::Soft),
        Action::Status => Op::Status,
    });
    ops
}

type Shared<T> = Option<Result<T, String>>;

async fn one(
    t: Target,
    action: Action,
    opts: &FanoutOpts,
    engine: &Shared<Engine>,
    http: &Shared<redfish::Client>,
) -> NodeResult {
    let start = Instant::now();
    let outcome: Result<Option<bool>, (Reason, String)> = match t.protocol {
        Protocol::Ipmi => {
            let ops = ipmi_ops(action, opts.boot);
            // every step of a session is bounded by the dead-BMC bound; this caps the sum
            let cap = opts.timing.dead_bmc_bound() * (ops.len() as u32 + 8);
            match engine.as_ref().expect("engine made for IPMI targets") {
                Err(e) => Err((Reason::Other, format!("cannot open the IPMI socket: {e}"))),
                Ok(engine) => {
                    let mut cfg = SessionConfig::new(&t.user, &t.password);
                    cfg.suites = opts.suites.clone();
                    cfg.timing = opts.timing;
                    capped(cap, engine.execute(t.addr, cfg, ops))
                        .await
                        .and_then(|r| match r {
                            Ok(report) => Ok(report.status.map(|s| s.power_on)),
                            Err(e) => Err(ipmi_reason(&e)),
                        })
                }
            }
        }
        Protocol::Redfish | Protocol::RedfishHttp => {
            let r = &opts.redfish;
            let cap = (r.request_timeout.saturating_add(Duration::from_secs(1)))
                .saturating_mul(r.retries.saturating_add(1))
                .saturating_mul(6);
            match http.as_ref().expect("client made for Redfish targets") {
                Err(e) => Err((Reason::Other, format!("cannot build the HTTP client: {e}"))),
                Ok(client) => capped(cap, client.run(&t, action, opts.boot))
                    .await
                    .and_then(|r| r.map_err(|e| redfish_reason(&e))),
            }
        }
    };
    let (reason, power, message) = match outcome {
        Ok(p) => (
            Reason::Ok,
            p.map(|on| if on { "on" } else { "off" }.to_string()),
            String::new(),
        ),
        Err((reason, message)) => (reason, None, message),
    };
    NodeResult {
        name: t.name,
        bmc: t.addr,
        protocol: t.protocol,
        reason,
        power,
        message,
        elapsed_ms: start.elapsed().as_millis() as u64,
        started_ms: 0,
    }
}

async fn capped<T>(
    cap: Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, (Reason, String)> {
    tokio::time::timeout(cap, f).await.map_err(|_| {
        (
            Reason::Timeout,
            format!("no result within {} ms", cap.as_millis()),
        )
    })
}

pub fn ipmi_reason(e: &IpmiError) -> (Reason, String) {
    // Set System Boot Options is sent before the power action, and a refusal ends the
    // session there: say so, whatever completion code the BMC chose (OpenIPMI's
    // ipmi_sim without a chassis script answers 0xcc, "invalid data field").
    if let IpmiError::Completion { cmd, .. } = e {
        if *cmd == (Op::BootPxe { efi: false }).name() {
            return (
                Reason::BootDevice,
                format!(
                    "boot device not supported by this BMC ({e}); the power action was not sent"
                ),
            );
        }
    }
    let reason = match e {
        IpmiError::Timeout { .. } => Reason::Timeout,
        IpmiError::BadReply { .. } => Reason::BadReply,
        IpmiError::Auth(_) => Reason::Auth,
        IpmiError::Refused => Reason::Refused,
        IpmiError::Unreachable(_) => Reason::Unreachable,
        _ => Reason::Other,
    };
    (reason, e.to_string())
}

pub fn redfish_reason(e: &RedfishError) -> (Reason, String) {
    if let RedfishError::BootOverride { .. } = e {
        return (
            Reason::BootDevice,
            format!("{e}; the power action was not sent"),
        );
    }
    let reason = match e {
        RedfishError::Auth { .. } => Reason::Auth,
        RedfishError::Timeout(_) => Reason::Timeout,
        RedfishError::Refused(_) => Reason::Refused,
        RedfishError::Unreachable(_) => Reason::Unreachable,
        _ => Reason::Other,
    };
    (reason, e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::bmc::ipmi::responder::{self, Responder};

    /// The sliding window: `count` starts, then the next only when the oldest of the last
    /// `count` is `window` old, however the requests are spread.
    #[test]
    fn stagger_window_admits_count_per_window() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = StaggerWindow::new(Stagger {
            count: 2,
            window: Duration::from_secs(1),
        });
        assert_eq!(w.admit(s(0)), Ok(()));
        assert_eq!(w.admit(s(0)), Ok(()));
        assert_eq!(w.admit(s(10)), Err(s(1000)));
        assert_eq!(w.admit(s(1000)), Ok(()));
        // A late node (1500) and the next (2000): 1000 + 1000 frees one slot at 2000.
        assert_eq!(w.admit(s(1500)), Ok(()));
        assert_eq!(w.admit(s(1600)), Err(s(2000)));
        assert_eq!(w.admit(s(2000)), Ok(()));
        assert_eq!(w.admit(s(2000)), Err(s(2500)));
        // Property: in any admitted sequence, no window holds more than `count` starts.
        let mut w = StaggerWindow::new(Stagger {
            count: 3,
            window: Duration::from_millis(100),
        });
        let mut admitted = Vec::new();
        let mut now = t0;
        for k in 0..200u64 {
            now += Duration::from_millis((k * 37) % 23);
            match w.admit(now) {
                Ok(()) => admitted.push(now),
                Err(at) => {
                    assert!(at > now);
                    now = at;
                    w.admit(now).unwrap();
                    admitted.push(now);
                }
            }
        }
        for (i, a) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|b| **b < *a + Duration::from_millis(100))
                .count();
            assert!(within <= 3, "{within} starts within 100 ms of start {i}");
        }
        // The config: Grendel's keys are read (no unknown-key warning), off unless both
        // are set, and a window beyond a day is refused naming the key.
        let c = crate::config::Config::from_toml(
            "[bmc]\nfanout = 5\ndelay = 20\n",
            std::path::Path::new("grendel.toml"),
        )
        .unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert_eq!(
            FanoutOpts::from_config(&c.bmc).stagger.map(|s| s.count),
            Some(5)
        );
        let e = crate::config::Config::from_toml(
            "[bmc]\nfanout = 5\ndelay = 100000\n",
            std::path::Path::new("grendel.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("bmc.delay"), "{e}");
        let mut cfg = BmcConfig::default();
        assert_eq!(Stagger::from_config(&cfg), None);
        cfg.fanout = 5;
        assert_eq!(Stagger::from_config(&cfg), None);
        cfg.delay = 20;
        assert_eq!(
            Stagger::from_config(&cfg),
            Some(Stagger {
                count: 5,
                window: Duration::from_secs(20)
            })
        );
    }

    #[test]
    fn ops_per_action() {
        assert_eq!(
            ipmi_ops(Action::Status, Some(BootMode::Efi)),
            vec![Op::Status]
        );
        assert_eq!(
            ipmi_ops(Action::Cycle, Some(BootMode::Legacy)),
            vec![Op::BootPxe { efi: false }, Op::Control(Control::Cycle)]
        );
        assert_eq!(
            ipmi_ops(Action::Soft, None),
            vec![Op::Control(Control::Soft)]
        );
    }

    fn target(name: &str, addr: SocketAddr, password: &str) -> Target {
        Target {
            name: name.into(),
            addr,
            fqdn: None,
            protocol: Protocol::Ipmi,
            user: "admin".into(),
            password: password.into(),
        }
    }

    /// In-memory BMCs on loopback, one engine: results in order, reasons per node.
    #[tokio::test]
    async fn fanout_over_in_memory_bmcs() {
        let mut targets = vec![];
        let mut bmcs = vec![];
        for i in 0..20 {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let bmc = Arc::new(Mutex::new(Responder::new("admin", "secret", i)));
            targets.push(target(
                &format!("n{i:02}"),
                sock.local_addr().unwrap(),
                "secret",
            ));
            tokio::spawn(responder::serve(sock, bmc.clone()));
            bmcs.push(bmc);
        }
        targets[3].password = "wrong".into();
        // a socket that never answers: a dead BMC
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        targets.push(target("dead", dead.local_addr().unwrap(), "secret"));
        let mut opts = FanoutOpts::from_config(&BmcConfig::default());
        opts.timing = Timing {
            timeout: Duration::from_millis(50),
            retries: 1,
        };
        opts.boot = Some(BootMode::Efi);
        opts.concurrency = 8;
        let seen = Mutex::new(0);
        let s = run(targets, Action::On, opts, |_| *seen.lock().unwrap() += 1).await;
        assert_eq!((s.total, s.ok, s.failed), (21, 19, 2));
        assert_eq!(*seen.lock().unwrap(), 21);
        assert_eq!(s.results[0].name, "n00");
        assert_eq!(s.results[3].reason, Reason::Auth);
        assert_eq!(s.results[20].reason, Reason::Timeout);
        for (i, b) in bmcs.iter().enumerate() {
            let c = &b.lock().unwrap().chassis;
            assert_eq!(c.power_on, i != 3, "bmc {i}");
        }
        assert_eq!(bmcs[0].lock().unwrap().chassis.boot_flags[0], 0xa0);
    }

    /// Closed ports among live BMCs: each ICMP error is pinned on its own BMC (from the
    /// socket's error queue), never on the next datagram sent to another one.
    #[tokio::test]
    async fn closed_ports_do_not_fail_their_neighbours() {
        // All bound before any is closed: a port closed early could be handed out again
        // to a later responder, and its "closed" BMC would answer.
        let mut socks = vec![];
        for _ in 0..40u64 {
            socks.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let mut targets = vec![];
        for (i, sock) in (0..40u64).zip(socks) {
            let addr = sock.local_addr().unwrap();
            if i % 2 == 0 {
                drop(sock); // nothing listens there any more
            } else {
                let bmc = Arc::new(Mutex::new(Responder::new("admin", "secret", i)));
                tokio::spawn(responder::serve(sock, bmc));
            }
            targets.push(target(&format!("n{i:02}"), addr, "secret"));
        }
        let mut opts = FanoutOpts::from_config(&BmcConfig::default());
        opts.timing = Timing {
            timeout: Duration::from_millis(300),
            retries: 1,
        };
        let s = run(targets, Action::Status, opts, |_| {}).await;
        for (i, r) in s.results.iter().enumerate() {
            let want = if i % 2 == 0 {
                Reason::Refused
            } else {
                Reason::Ok
            };
            assert_eq!(r.reason, want, "{r:?}");
        }
    }

    /// A Redfish BMC refusing the one-time PXE boot override: the node is reported as
    /// `boot-device` with the BMC's own words, and the reset is never sent. A small
    /// responder stands in for the BMC because no real peer here refuses: sushy-tools'
    /// fake driver (the one the integration tests run) stores any `Boot` PATCH it gets,
    /// and its libvirt driver, which does check the target, needs a libvirtd.
    #[tokio::test]
    async fn redfish_refusing_the_boot_override_is_named_and_not_reset() {
        use axum::http::StatusCode as S;
        use axum::routing::{get, post};
        use serde_json::json;

        let not_in_list = json!({"error": {
            "code": "Base.1.8.GeneralError",
            "message": "A general error has occurred.",
            "@Message.ExtendedInfo": [{
                "MessageId": "Base.1.8.PropertyValueNotInList",
                "Message": "The value Pxe for the property BootSourceOverrideTarget is not in the list of acceptable values.",
            }]}})
        .to_string();
        // The last: the same BMC accepting the override (the responder does reset).
        let cases: [(S, String, &str); 4] = [
            (S::BAD_REQUEST, not_in_list, "HTTP 400"),
            (S::METHOD_NOT_ALLOWED, String::new(), "HTTP 405"),
            (
                S::NOT_IMPLEMENTED,
                "boot override not implemented".into(),
                "HTTP 501",
            ),
            (S::NO_CONTENT, String::new(), ""),
        ];
        let wants = [
            "Base.1.8.PropertyValueNotInList: The value Pxe for the property BootSourceOverrideTarget is not in the list",
            "Method Not Allowed",
            "boot override not implemented",
            "",
        ];
        for ((status, body, code), want) in cases.into_iter().zip(wants) {
            let resets = Arc::new(Mutex::new(0u32));
            let r = resets.clone();
            let system = json!({
                "PowerState": "On",
                "Boot": {"BootSourceOverrideTarget": "None", "BootSourceOverrideMode": "UEFI"},
                "Actions": {"#ComputerSystem.Reset": {
                    "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"}},
            });
            let app = axum::Router::new()
                .route(
                    "/redfish/v1/Systems",
                    get(|| async {
                        axum::Json(json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]}))
                    }),
                )
                .route(
                    "/redfish/v1/Systems/1",
                    get(move || async move { axum::Json(system) }).patch(move || async move {
                        (status, [("content-type", "application/json")], body)
                    }),
                )
                .route(
                    "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                    post(move || async move {
                        *r.lock().unwrap() += 1;
                        S::NO_CONTENT
                    }),
                );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            let t = Target {
                name: "rf1".into(),
                addr,
                fqdn: None,
                protocol: Protocol::RedfishHttp,
                user: "admin".into(),
                password: "secret".into(),
            };
            let mut opts = FanoutOpts::from_config(&BmcConfig::default());
            opts.boot = Some(BootMode::Efi);
            let s = run(vec![t], Action::Cycle, opts, |_| {}).await;
            server.abort();
            let n = &s.results[0];
            if status.is_success() {
                assert_eq!(
                    (n.reason, *resets.lock().unwrap()),
                    (Reason::Ok, 1),
                    "{n:?}"
                );
                continue;
            }
            assert_eq!(n.reason, Reason::BootDevice, "{code}: {n:?}");
            assert!(
                n.message.contains(code) && n.message.contains(want),
                "{n:?}"
            );
            assert!(n.message.contains("power action was not sent"), "{n:?}");
            assert_eq!(*resets.lock().unwrap(), 0, "{code}: the reset was sent");
        }
    }
}
