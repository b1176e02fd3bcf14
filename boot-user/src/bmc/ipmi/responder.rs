//! A small BMC: the managed-system side of RMCP+ (Open Session, RAKP 2 and 4, AuthCode,
//! AES) with a simulated chassis (power state, boot flags). Sans-I/O ([`Responder::handle`]
//! maps one datagram to at most one reply) plus [`serve`], which runs it on a UDP socket.
//!
//! It exists for tests and benchmarks: it lets a whole client session run in memory, it
//! lets ipmitool check our cipher suite 17 (ipmi_sim only implements suite 3), and it is a
//! light stand-in when a benchmark wants more BMCs than ipmi_sim processes fit in memory.
//! It is not a BMC for production use.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::{Rng, RngCore, SeedableRng};

use super::commands::{self, NETFN_APP, NETFN_CHASSIS};
use super::crypto::{CipherSuite, Handshake, Keys};
use super::rakp::{OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp34};
use super::rmcp::{self, payload, Packet, Request};

/// The simulated machine behind the BMC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chassis {
    pub power_on: bool,
    /// Boot flags parameter (5) as last set, without the parameter selector.
    pub boot_flags: [u8; 5],
    /// Every Chassis Control argument received, in order.
    pub controls: Vec<u8>,
}

struct Srv {
    console_sid: u32,
    suite: CipherSuite,
    console_rand: [u8; 16],
    bmc_rand: [u8; 16],
    role: u8,
    user: Vec<u8>,
    keys: Option<Keys>,
    out_seq: u32,
}

pub struct Responder {
    /// (user, password, maximum privilege)
    users: Vec<(String, String, u8)>,
    guid: [u8; 16],
    suites: Vec<CipherSuite>,
    sessions: HashMap<u32, Srv>,
    rng: rand::rngs::StdRng,
    pub chassis: Chassis,
}

impl Responder {
    /// A BMC with one ADMINISTRATOR user that accepts cipher suites 3 and 17.
    pub fn new(user: &str, password: &str, seed: u64) -> Responder {
        Responder {
            users: vec![(user.into(), password.into(), commands::PRIV_ADMIN)],
            guid: *b"xboot-responder!",
            suites: vec![CipherSuite::Suite3, CipherSuite::Suite17],
            sessions: HashMap::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            chassis: Chassis::default(),
        }
    }

    /// Restricts the cipher suites accepted (to test the client's fallback).
    pub fn with_suites(mut self, suites: &[CipherSuite]) -> Responder {
        self.suites = suites.to_vec();
        self
    }

    /// Open sessions (for tests: a finished client must leave none).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The reply to one datagram, if it deserves one.
    pub fn handle(&mut self, d: &[u8]) -> Option<Vec<u8>> {
        match rmcp::decode(d).ok()? {
            Packet::V15 { msg, .. } => {
                let req = rmcp::decode_request(msg).ok()?;
                if (req.netfn, req.cmd) != (NETFN_APP, commands::CMD_AUTH_CAPABILITIES) {
                    return None;
                }
                // channel 1; IPMI v2.0 extended data; MD5 + none; v1.5 and v2.0
                let data = [0x01, 0x80 | 0x05, 0x04, 0x03, 0, 0, 0, 0];
                Some(rmcp::encode_v15(&rmcp::encode_response(&req, 0, &data)))
            }
            Packet::V20(p) => match p.payload_type {
                payload::OPEN_SESSION_REQUEST => self.open_session(p.payload),
                payload::RAKP1 => self.rakp1(p.payload),
                payload::RAKP3 => self.rakp3(p.payload),
                payload::IPMI => self.message(&p),
                _ => None,
            },
        }
    }

    fn open_session(&mut self, b: &[u8]) -> Option<Vec<u8>> {
        let (req, suite) = OpenSessionRequest::decode(b).ok()?;
        let mut resp = OpenSessionResponse {
            tag: req.tag,
            status: 0,
            max_priv: if req.max_priv == 0 {
                commands::PRIV_ADMIN
            } else {
                req.max_priv
            },
            console_sid: req.console_sid,
            bmc_sid: 0,
            suite,
        };
        match suite.filter(|s| self.suites.contains(s)) {
            None => resp.status = 0x11,
            Some(suite) => {
                let bmc_sid = self.rng.gen_range(1..=u32::MAX);
                resp.bmc_sid = bmc_sid;
                let srv = Srv {
                    console_sid: req.console_sid,
                    suite,
                    console_rand: [0; 16],
                    bmc_rand: [0; 16],
                    role: 0,
                    user: vec![],
                    keys: None,
                    out_seq: 0,
                };
                self.sessions.insert(bmc_sid, srv);
            }
        }
        Some(rmcp::encode_v20(
            payload::OPEN_SESSION_RESPONSE,
            0,
            0,
            &resp.encode(),
            None,
        ))
    }

    fn handshake<'a>(&self, bmc_sid: u32, s: &'a Srv, password: &'a str) -> Handshake<'a> {
        Handshake {
            suite: s.suite,
            password: password.as_bytes(),
            console_sid: s.console_sid,
            bmc_sid,
            console_rand: s.console_rand,
            bmc_rand: s.bmc_rand,
            bmc_guid: self.guid,
            role: s.role,
            user: &s.user,
        }
    }

    fn password_of(&self, user: &[u8]) -> Option<(String, u8)> {
        self.users
            .iter()
            .find(|(u, _, _)| u.as_bytes() == user)
            .map(|(_, p, l)| (p.clone(), *l))
    }

    fn rakp1(&mut self, b: &[u8]) -> Option<Vec<u8>> {
        let r1 = Rakp1::decode(b).ok()?;
        let known = self.password_of(&r1.user);
        let mut bmc_rand = [0u8; 16];
        self.rng.fill_bytes(&mut bmc_rand);
        let s = self.sessions.get_mut(&r1.bmc_sid)?;
        let mut r2 = Rakp2 {
            tag: r1.tag,
            status: 0,
            console_sid: s.console_sid,
            bmc_rand,
            bmc_guid: self.guid,
            code: vec![],
        };
        match known {
            None => r2.status = 0x0d,
            Some((_, max)) if r1.role & 0x0f > max => r2.status = 0x09,
            Some((password, _)) => {
                s.console_rand = r1.console_rand;
                s.bmc_rand = bmc_rand;
                s.role = r1.role;
                s.user = r1.user;
                let s = &self.sessions[&r1.bmc_sid];
                r2.code = self.handshake(r1.bmc_sid, s, &password).rakp2_code();
            }
        }
        if r2.status != 0 {
            self.sessions.remove(&r1.bmc_sid);
        }
        Some(rmcp::encode_v20(payload::RAKP2, 0, 0, &r2.encode(), None))
    }

    fn rakp3(&mut self, b: &[u8]) -> Option<Vec<u8>> {
        let r3 = Rakp34::decode(b).ok()?;
        let s = self.sessions.get(&r3.sid)?;
        if r3.status != 0 {
            self.sessions.remove(&r3.sid);
            return None;
        }
        let (password, _) = self.password_of(&s.user)?;
        let hs = self.handshake(r3.sid, s, &password);
        let mut r4 = Rakp34 {
            tag: r3.tag,
            status: 0,
            sid: s.console_sid,
            code: vec![],
        };
        if hs.rakp3_code() != r3.code {
            r4.status = 0x0f;
            self.sessions.remove(&r3.sid);
        } else {
            let sik = hs.sik();
            r4.code = hs.rakp4_icv(&sik);
            let keys = Keys::derive(hs.suite, &sik);
            self.sessions.get_mut(&r3.sid)?.keys = Some(keys);
        }
        Some(rmcp::encode_v20(payload::RAKP4, 0, 0, &r4.encode(), None))
    }

    fn message(&mut self, p: &rmcp::V20<'_>) -> Option<Vec<u8>> {
        let s = self.sessions.get(&p.session_id)?;
        let keys = s.keys.as_ref()?;
        if !p.authenticated || !p.encrypted || keys.auth_code(p.covered) != p.auth_code {
            return None;
        }
        let req = rmcp::decode_request(&keys.decrypt(p.payload)?).ok()?;
        let (cc, data) = self.execute(&req);
        let mut iv = [0u8; 16];
        self.rng.fill_bytes(&mut iv);
        let s = self.sessions.get_mut(&p.session_id)?;
        s.out_seq = s.out_seq.wrapping_add(1);
        let msg = rmcp::encode_response(&req, cc, &data);
        let keys = s.keys.as_ref()?;
        let reply = rmcp::encode_v20(
            payload::IPMI,
            s.console_sid,
            s.out_seq,
            &msg,
            Some((keys, iv)),
        );
        if (req.netfn, req.cmd) == (NETFN_APP, commands::CMD_CLOSE_SESSION) {
            self.sessions.remove(&p.session_id);
        }
        Some(reply)
    }

    /// Runs one command: (completion code, reply data).
    fn execute(&mut self, req: &Request) -> (u8, Vec<u8>) {
        let c = &mut self.chassis;
        match (req.netfn, req.cmd, req.data.as_slice()) {
            (NETFN_APP, commands::CMD_SET_SESSION_PRIVILEGE, [p, ..]) => (0, vec![*p]),
            (NETFN_APP, commands::CMD_CLOSE_SESSION, _) => (0, vec![]),
            // Get Device ID (ipmitool asks for it): a minimal IPMI 2.0 BMC
            (NETFN_APP, 0x01, _) => (0, vec![0x20, 0x01, 0x01, 0x00, 0x02, 0xbf, 0, 0, 0, 0, 0]),
            (NETFN_CHASSIS, commands::CMD_CHASSIS_STATUS, _) => {
                (0, vec![c.power_on as u8, 0, 0, 0x40])
            }
            (NETFN_CHASSIS, commands::CMD_CHASSIS_CONTROL, [arg, ..]) => {
                c.controls.push(*arg);
                match arg & 0x0f {
                    0 | 5 => c.power_on = false,
                    1..=3 => c.power_on = true,
                    _ => return (0xcc, vec![]),
                }
                (0, vec![])
            }
            (NETFN_CHASSIS, commands::CMD_SET_BOOT_OPTIONS, [sel, rest @ ..]) => match sel & 0x7f {
                5 if rest.len() >= 5 => {
                    c.boot_flags.copy_from_slice(&rest[..5]);
                    (0, vec![])
                }
                0 | 3 | 4 => (0, vec![]),
                _ => (0xcc, vec![]),
            },
            (NETFN_CHASSIS, commands::CMD_GET_BOOT_OPTIONS, [sel, ..]) if sel & 0x7f == 5 => {
                let mut v = vec![0x01, 0x05];
                v.extend_from_slice(&c.boot_flags);
                (0, v)
            }
            _ => (0xc1, vec![]),
        }
    }
}

/// Answers datagrams on `socket` with `bmc` until the socket fails. One task per BMC
/// address; cancel it (drop or abort the task) to stop.
pub async fn serve(
    socket: tokio::net::UdpSocket,
    bmc: Arc<Mutex<Responder>>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        let reply = bmc.lock().expect("responder lock").handle(&buf[..n]);
        if let Some(r) = reply {
            socket.send_to(&r, peer).await?;
        }
    }
}
