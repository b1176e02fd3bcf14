//! One IPMI v2.0 (RMCP+) client session as a sans-I/O state machine: Get Channel
//! Authentication Capabilities, Open Session (cipher suite fallback), RAKP 1-4, Set
//! Session Privilege Level, the requested commands, Close Session; with retransmits.
//!
//! The caller owns the socket and the clock: it feeds datagrams ([`Session::handle_datagram`])
//! and timer expiries ([`Session::handle_timeout`]) in, takes datagrams out
//! ([`Session::poll_transmit`]) and reads the result ([`Session::take_outcome`]). This
//! module never does I/O and never reads the clock, so whole exchanges run in memory in
//! tests. Randomness (session IDs, RAKP random, AES IVs) comes from a seeded generator.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};

use super::commands::{self, ChassisStatus, Op, NETFN_APP, PRIV_ADMIN, ROLE_NAME_ONLY};
use super::crypto::{CipherSuite, Handshake, Keys};
use super::rakp::{self, OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp34};
use super::rmcp::{self, payload, Packet};

pub use super::error::{IpmiError, NetError, Stage};

/// Per-packet timeout and retransmits. Attempt `k` (0-based) waits `timeout * 1.5^k`, at
/// most [`MAX_BACKOFF`] times `timeout` (from the fifth attempt on): a BMC that is slow
/// gets more time, one that is dead is not waited for without end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub timeout: Duration,
    /// Retransmits after the first attempt (`bmc.retries` counts attempts: this is one
    /// less).
    pub retries: u32,
}

/// Longest wait of one attempt, in multiples of [`Timing::timeout`].
pub const MAX_BACKOFF: f64 = 4.0;

impl Timing {
    pub fn attempt_timeout(&self, attempt: u32) -> Duration {
        let factor = 1.5f64.powi(attempt.min(8) as i32).min(MAX_BACKOFF);
        Duration::try_from_secs_f64(self.timeout.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }

    /// How long a BMC that never answers takes to fail: every attempt of one packet.
    pub fn dead_bmc_bound(&self) -> Duration {
        // The waits grow for four attempts, then stay at the cap.
        let growing: Duration = (0..=self.retries.min(3))
            .map(|k| self.attempt_timeout(k))
            .fold(Duration::ZERO, Duration::saturating_add);
        let capped = self.retries.saturating_sub(3);
        growing.saturating_add(self.attempt_timeout(4).saturating_mul(capped))
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            timeout: Duration::from_millis(1000),
            retries: 3,
        }
    }
}

/// What a session needs to know besides the commands.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub user: String,
    pub password: String,
    /// Cipher suites to offer, in order; the next is tried when the BMC rejects one.
    pub suites: Vec<CipherSuite>,
    /// Privilege requested in Open Session, RAKP 1 and Set Session Privilege Level.
    pub privilege: u8,
    pub timing: Timing,
}

impl SessionConfig {
    pub fn new(user: &str, password: &str) -> SessionConfig {
        SessionConfig {
            user: user.into(),
            password: password.into(),
            suites: vec![CipherSuite::Suite17, CipherSuite::Suite3],
            privilege: PRIV_ADMIN,
            timing: Timing::default(),
        }
    }
}

/// What a successful session learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub suite: CipherSuite,
    /// Set when the commands included [`Op::Status`].
    pub status: Option<ChassisStatus>,
}

pub struct Session {
    cfg: SessionConfig,
    ops: Vec<Op>,
    rng: rand::rngs::StdRng,
    stage: Stage,
    suite_idx: usize,
    console_sid: u32,
    bmc_sid: u32,
    console_rand: [u8; 16],
    tag: u8,
    keys: Option<Keys>,
    out_seq: u32,
    rq_seq: u8,
    /// Cleartext packet of the current handshake step, resent as is.
    handshake_pkt: Vec<u8>,
    /// Request of the current session step, re-encrypted with a new sequence number on
    /// every (re)transmission.
    request: Option<(u8, u8, Vec<u8>)>,
    /// The RAKP 4 integrity check value the BMC must send.
    expected_icv: Vec<u8>,
    attempt: u32,
    deadline: Option<Instant>,
    /// Datagrams from the BMC that could not be read at a stage (stage, how many, why the
    /// last one): a stage that ends unanswered after those failed on bad replies, not on
    /// silence.
    bad: Option<(Stage, u32, String)>,
    outbox: VecDeque<Vec<u8>>,
    outcome: Option<Result<Report, IpmiError>>,
    delivered: bool,
    status: Option<ChassisStatus>,
}

impl Session {
    /// A session that will run `ops` in order; the first datagram is ready at once.
    /// `seed` feeds the session IDs, the RAKP random number and the AES IVs: give it
    /// 32 bytes from the OS generator (tests give fixed bytes).
    pub fn new(cfg: SessionConfig, ops: Vec<Op>, seed: [u8; 32], now: Instant) -> Session {
        let mut rng = rand::rngs::StdRng::from_seed(seed);
        let console_sid = rng.gen_range(1..=u32::MAX);
        let mut s = Session {
            cfg,
            ops,
            rng,
            stage: Stage::AuthCapabilities,
            suite_idx: 0,
            console_sid,
            bmc_sid: 0,
            console_rand: [0; 16],
            tag: 0,
            keys: None,
            out_seq: 0,
            rq_seq: 0,
            handshake_pkt: vec![],
            request: None,
            expected_icv: vec![],
            attempt: 0,
            deadline: None,
            bad: None,
            outbox: VecDeque::new(),
            outcome: None,
            delivered: false,
            status: None,
        };
        let (netfn, cmd, data) = commands::auth_capabilities_request(s.cfg.privilege);
        let pkt = rmcp::encode_v15(&rmcp::encode_request(netfn, cmd, 0, &data));
        s.send_handshake(pkt, now);
        s
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next; None once finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The result, once known (exactly once). The session may still have a Close
    /// Session to finish after this; keep feeding it until [`Session::is_finished`].
    pub fn take_outcome(&mut self) -> Option<Result<Report, IpmiError>> {
        if self.delivered {
            return None;
        }
        let o = self.outcome.clone()?;
        self.delivered = true;
        Some(o)
    }

    pub fn is_finished(&self) -> bool {
        self.stage == Stage::Done
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    fn suite(&self) -> CipherSuite {
        self.cfg.suites[self.suite_idx]
    }

    fn send_handshake(&mut self, pkt: Vec<u8>, now: Instant) {
        self.outbox.push_back(pkt.clone());
        self.handshake_pkt = pkt;
        self.request = None;
        self.arm(now, 0);
    }

    fn arm(&mut self, now: Instant, attempt: u32) {
        self.attempt = attempt;
        let wait = self.cfg.timing.attempt_timeout(attempt);
        // A wait past what the clock can count is a wait without end: a day will do.
        self.deadline = Some(
            now.checked_add(wait)
                .unwrap_or_else(|| now + Duration::from_secs(86_400)),
        );
    }

    /// Notes a datagram from the BMC that could not be read at the current stage.
    fn note_bad(&mut self, why: impl Into<String>) {
        match &mut self.bad {
            Some((stage, count, last)) if *stage == self.stage => {
                *count += 1;
                *last = why.into();
            }
            _ => self.bad = Some((self.stage, 1, why.into())),
        }
    }

    fn send_request(&mut self, req: (u8, u8, Vec<u8>), now: Instant) {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        self.request = Some(req);
        self.transmit_request();
        self.arm(now, 0);
    }

    fn transmit_request(&mut self) {
        let (netfn, cmd, data) = self.request.as_ref().expect("a request is pending");
        let msg = rmcp::encode_request(*netfn, *cmd, self.rq_seq, data);
        self.out_seq = self.out_seq.wrapping_add(1).max(1);
        let mut iv = [0u8; 16];
        self.rng.fill_bytes(&mut iv);
        let keys = self.keys.as_ref().expect("session keys are set");
        let pkt = rmcp::encode_v20(
            payload::IPMI,
            self.bmc_sid,
            self.out_seq,
            &msg,
            Some((keys, iv)),
        );
        self.outbox.push_back(pkt);
    }

    /// Records the result (unless one is already known) and stops.
    fn finish(&mut self, result: Result<Report, IpmiError>) {
        self.outcome.get_or_insert(result);
        self.stage = Stage::Done;
        self.deadline = None;
    }

    /// Ends the session with an error, closing it first if it is established.
    fn fail(&mut self, err: IpmiError, now: Instant) {
        let established = matches!(self.stage, Stage::SetPrivilege | Stage::Command(_));
        self.outcome.get_or_insert(Err(err));
        if established {
            self.start_close(now);
        } else {
            self.finish(self.outcome.clone().expect("set above"));
        }
    }

    fn start_close(&mut self, now: Instant) {
        self.stage = Stage::Close;
        let data = self.bmc_sid.to_le_bytes().to_vec();
        self.send_request((NETFN_APP, commands::CMD_CLOSE_SESSION, data), now);
    }

    /// An ICMP error for the BMC's address: fatal unless we are only closing.
    pub fn handle_net_error(&mut self, e: NetError, now: Instant) {
        if self.stage == Stage::Done {
            return;
        }
        if self.stage == Stage::Close {
            // the result is known already; the close just cannot be confirmed
            return self.finish(Err(IpmiError::Refused));
        }
        let err = match e {
            NetError::PortUnreachable => IpmiError::Refused,
            NetError::Unreachable(m) => IpmiError::Unreachable(m),
        };
        self.stage = Stage::Done;
        self.fail(err, now);
    }

    /// The deadline passed: retransmit, move to the next cipher suite, or give up.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if d <= now => {}
            _ => return,
        }
        if self.attempt < self.cfg.timing.retries {
            let next = self.attempt + 1;
            if self.request.is_some() {
                self.transmit_request();
            } else {
                self.outbox.push_back(self.handshake_pkt.clone());
            }
            self.arm(now, next);
            return;
        }
        if self.stage == Stage::OpenSession && self.suite_idx + 1 < self.cfg.suites.len() {
            // Some BMCs drop an Open Session with algorithms they do not know.
            self.suite_idx += 1;
            return self.open_session(now);
        }
        if self.stage == Stage::Close {
            // the result is known already; the BMC will expire the session itself
            return self.finish(Err(IpmiError::Protocol("Close Session unanswered".into())));
        }
        let attempts = self.attempt + 1;
        let err = match self.bad.take() {
            Some((stage, count, last)) if stage == self.stage => IpmiError::BadReply {
                stage,
                attempts,
                count,
                last,
            },
            _ => IpmiError::Timeout {
                stage: self.stage,
                attempts,
            },
        };
        self.stage = Stage::Done;
        self.fail(err, now);
    }

    fn open_session(&mut self, now: Instant) {
        self.stage = Stage::OpenSession;
        self.tag = self.tag.wrapping_add(1);
        let req = OpenSessionRequest {
            tag: self.tag,
            max_priv: self.cfg.privilege,
            console_sid: self.console_sid,
            suite: self.suite(),
        };
        let pkt = rmcp::encode_v20(payload::OPEN_SESSION_REQUEST, 0, 0, &req.encode(), None);
        self.send_handshake(pkt, now);
    }

    /// A datagram from the BMC's address. Replies that do not belong to the current
    /// step (late duplicates of retransmitted requests) are ignored.
    pub fn handle_datagram(&mut self, d: &[u8], now: Instant) {
        let pkt = match rmcp::decode(d) {
            Ok(p) => p,
            Err(e) => return self.note_bad(e.to_string()),
        };
        match (self.stage, pkt) {
            (Stage::AuthCapabilities, Packet::V15 { msg, .. }) => {
                self.on_auth_capabilities(msg, now)
            }
            (Stage::OpenSession, Packet::V20(p))
                if p.payload_type == payload::OPEN_SESSION_RESPONSE =>
            {
                self.on_open_session(p.payload, now)
            }
            (Stage::Rakp1, Packet::V20(p)) if p.payload_type == payload::RAKP2 => {
                self.on_rakp2(p.payload, now)
            }
            (Stage::Rakp3, Packet::V20(p)) if p.payload_type == payload::RAKP4 => {
                self.on_rakp4(p.payload, now)
            }
            (Stage::SetPrivilege | Stage::Command(_) | Stage::Close, Packet::V20(p))
                if p.payload_type == payload::IPMI && p.session_id == self.console_sid =>
            {
                let keys = self.keys.as_ref().expect("established");
                let msg =
                    if !p.authenticated || !p.encrypted || keys.auth_code(p.covered) != p.auth_code
                    {
                        Err("a session packet failed its integrity check".to_string())
                    } else {
                        keys.decrypt(p.payload)
                            .ok_or_else(|| "a session packet did not decrypt".to_string())
                    };
                let msg = match msg {
                    Ok(m) => m,
                    Err(why) => return self.note_bad(why),
                };
                let r = match rmcp::decode_response(&msg) {
                    Ok(r) => r,
                    Err(e) => return self.note_bad(e.to_string()),
                };
                match &self.request {
                    Some((netfn, cmd, _))
                        if r.rq_seq == self.rq_seq && r.cmd == *cmd && r.netfn == *netfn =>
                    {
                        self.on_response(r.cc, &r.data, now)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn on_auth_capabilities(&mut self, msg: &[u8], now: Instant) {
        let Ok(r) = rmcp::decode_response(msg) else {
            return;
        };
        if r.cmd != commands::CMD_AUTH_CAPABILITIES {
            return;
        }
        if r.cc != 0 || !commands::supports_v20(&r.data) {
            return self.fail(IpmiError::NoV20, now);
        }
        self.open_session(now);
    }

    fn on_open_session(&mut self, b: &[u8], now: Instant) {
        let Ok(r) = OpenSessionResponse::decode(b) else {
            return self.note_bad("an unreadable Open Session response");
        };
        if r.tag != self.tag || !self.is_ours(r.console_sid, r.status) {
            return;
        }
        if rakp::is_algorithm_status(r.status) {
            if self.suite_idx + 1 < self.cfg.suites.len() {
                self.suite_idx += 1;
                return self.open_session(now);
            }
            let tried: Vec<String> = self.cfg.suites.iter().map(|s| s.id().to_string()).collect();
            let msg = format!(
                "tried {}; last answer: {}",
                tried.join(", "),
                rakp::status_text(r.status)
            );
            return self.fail(IpmiError::NoCipherSuite(msg), now);
        }
        if r.status != 0 {
            return self.fail(auth_status("Open Session", r.status), now);
        }
        if r.suite != Some(self.suite()) {
            let e = format!(
                "BMC answered Open Session with other algorithms than {}",
                self.suite()
            );
            return self.fail(IpmiError::Protocol(e), now);
        }
        self.bmc_sid = r.bmc_sid;
        self.rng.fill_bytes(&mut self.console_rand);
        self.tag = self.tag.wrapping_add(1);
        self.stage = Stage::Rakp1;
        let m = Rakp1 {
            tag: self.tag,
            bmc_sid: self.bmc_sid,
            console_rand: self.console_rand,
            role: self.role(),
            user: self.cfg.user.as_bytes().to_vec(),
        };
        let pkt = rmcp::encode_v20(payload::RAKP1, 0, 0, &m.encode(), None);
        self.send_handshake(pkt, now);
    }

    /// A handshake reply is ours if it names our session ID, or is an error reply cut
    /// short before the ID (the message tag was checked already).
    fn is_ours(&self, console_sid: u32, status: u8) -> bool {
        console_sid == self.console_sid || (status != 0 && console_sid == 0)
    }

    fn role(&self) -> u8 {
        self.cfg.privilege | ROLE_NAME_ONLY
    }

    fn handshake(&self, r2: &Rakp2) -> Handshake<'_> {
        Handshake {
            suite: self.suite(),
            password: self.cfg.password.as_bytes(),
            console_sid: self.console_sid,
            bmc_sid: self.bmc_sid,
            console_rand: self.console_rand,
            bmc_rand: r2.bmc_rand,
            bmc_guid: r2.bmc_guid,
            role: self.role(),
            user: self.cfg.user.as_bytes(),
        }
    }

    fn on_rakp2(&mut self, b: &[u8], now: Instant) {
        let Ok(r2) = Rakp2::decode(b) else {
            return self.note_bad("an unreadable RAKP 2");
        };
        if r2.tag != self.tag || !self.is_ours(r2.console_sid, r2.status) {
            return;
        }
        if r2.status != 0 {
            return self.fail(auth_status("RAKP 2", r2.status), now);
        }
        let hs = self.handshake(&r2);
        if hs.rakp2_code() != r2.code {
            // Tell the BMC to drop the half-open session, then report.
            let m = Rakp34 {
                tag: self.tag.wrapping_add(1),
                status: 0x0f,
                sid: self.bmc_sid,
                code: vec![],
            };
            self.outbox
                .push_back(rmcp::encode_v20(payload::RAKP3, 0, 0, &m.encode(), None));
            let e = format!(
                "wrong password for user {:?} (RAKP 2 code mismatch)",
                self.cfg.user
            );
            return self.fail(IpmiError::Auth(e), now);
        }
        let code = hs.rakp3_code();
        let sik = hs.sik();
        let icv = hs.rakp4_icv(&sik);
        self.keys = Some(Keys::derive(self.suite(), &sik));
        self.expected_icv = icv;
        self.tag = self.tag.wrapping_add(1);
        self.stage = Stage::Rakp3;
        let m = Rakp34 {
            tag: self.tag,
            status: 0,
            sid: self.bmc_sid,
            code,
        };
        let pkt = rmcp::encode_v20(payload::RAKP3, 0, 0, &m.encode(), None);
        self.send_handshake(pkt, now);
    }

    fn on_rakp4(&mut self, b: &[u8], now: Instant) {
        let Ok(r4) = Rakp34::decode(b) else {
            return self.note_bad("an unreadable RAKP 4");
        };
        if r4.tag != self.tag || !self.is_ours(r4.sid, r4.status) {
            return;
        }
        if r4.status != 0 {
            return self.fail(auth_status("RAKP 4", r4.status), now);
        }
        if r4.code != self.expected_icv {
            let e = "RAKP 4 integrity check value mismatch (BMC key or password differs)";
            return self.fail(IpmiError::Auth(e.into()), now);
        }
        self.stage = Stage::SetPrivilege;
        let req = (
            NETFN_APP,
            commands::CMD_SET_SESSION_PRIVILEGE,
            vec![self.cfg.privilege],
        );
        self.send_request(req, now);
    }

    fn on_response(&mut self, cc: u8, data: &[u8], now: Instant) {
        match self.stage {
            Stage::SetPrivilege if cc != 0 => {
                let e = format!(
                    "Set Session Privilege Level: {}",
                    commands::completion_text(cc)
                );
                self.fail(IpmiError::Auth(e), now)
            }
            Stage::SetPrivilege => self.next_command(0, now),
            Stage::Command(i) => {
                let op = self.ops[i];
                if cc == 0xd4 {
                    let e = format!("{}: {}", op.name(), commands::completion_text(cc));
                    return self.fail(IpmiError::Auth(e), now);
                }
                if cc != 0 {
                    return self.fail(IpmiError::Completion { cmd: op.name(), cc }, now);
                }
                if op == Op::Status {
                    match ChassisStatus::parse(data) {
                        Some(s) => self.status = Some(s),
                        None => {
                            return self
                                .fail(IpmiError::Protocol("empty chassis status".into()), now)
                        }
                    }
                }
                self.next_command(i + 1, now)
            }
            // the result was recorded before the close started
            Stage::Close => self.finish(Err(IpmiError::Protocol("closed".into()))),
            _ => {}
        }
    }

    fn next_command(&mut self, i: usize, now: Instant) {
        if let Some(op) = self.ops.get(i) {
            self.stage = Stage::Command(i);
            let req = op.request();
            return self.send_request(req, now);
        }
        self.outcome = Some(Ok(Report {
            suite: self.suite(),
            status: self.status,
        }));
        self.start_close(now);
    }
}

fn auth_status(step: &str, status: u8) -> IpmiError {
    IpmiError::Auth(format!(
        "{step}: {} (status {status:#04x})",
        rakp::status_text(status)
    ))
}
