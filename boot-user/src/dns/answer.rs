//! The answer to one query: request message + tables in, a reply or "forward it" out.
//! Sans-I/O; the size limit of the transport is applied by [`fit`].
//!
//! - One question, opcode QUERY, class IN; anything else gets FORMERR, NOTIMP or REFUSED.
//! - Names of the tables get AA answers; inside a zone an unknown name is NXDOMAIN and a
//!   known name without the asked type is NODATA, both with the zone's SOA (negative TTL:
//!   the SOA minimum, `min(ttl, 60)` s, so a host added later is not hidden for long by
//!   resolvers' negative caches); the apex answers SOA and NS.
//! - A name in no zone is forwarded when upstreams are configured and the client asked for
//!   recursion (RD); else REFUSED. Zone transfers are REFUSED.
//! - EDNS: a request with OPT gets OPT back advertising `dns.max_udp_payload`; version > 0
//!   gets BADVERS (RFC 6891).
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::zones::{normalize, Found, Zone, Zones};

/// How the server answers besides the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Upstreams are configured.
    pub forwarding: bool,
    /// The EDNS buffer size advertised in replies.
    pub udp_payload: u16,
}

/// What to do with one request.
#[derive(Debug)]
pub enum Outcome {
    Reply(Box<Message>),
    /// Send it to an upstream (the caller keeps the request bytes).
    Forward,
}

/// SOA timers (seconds): refresh, retry, expire. Only secondaries use them; xboot has none
/// (zone transfers are refused), they are the usual values.
const SOA_TIMERS: (i32, i32, i32) = (3600, 600, 86400);
/// Upper bound of the negative-caching TTL (SOA minimum).
const NEGATIVE_TTL: u32 = 60;

fn dns_name(n: &str) -> Name {
    Name::from_str(&format!("{n}.")).unwrap_or_else(|_| Name::root())
}

fn soa_record(z: &Zone, zones: &Zones) -> Record {
    let (refresh, retry, expire) = SOA_TIMERS;
    Record::from_rdata(
        dns_name(&z.apex),
        zones.ttl,
        RData::SOA(SOA::new(
            dns_name(&z.nameserver),
            dns_name(&z.mailbox),
            zones.serial,
            refresh,
            retry,
            expire,
            zones.ttl.min(NEGATIVE_TTL),
        )),
    )
}

/// The SOA for the authority section of a negative answer: its TTL is the SOA minimum
/// (RFC 2308).
fn negative_soa(z: &Zone, zones: &Zones) -> Record {
    let mut r = soa_record(z, zones);
    r.ttl = zones.ttl.min(NEGATIVE_TTL);
    r
}

fn ns_record(z: &Zone, zones: &Zones) -> Record {
    Record::from_rdata(
        dns_name(&z.apex),
        zones.ttl,
        RData::NS(NS(dns_name(&z.nameserver))),
    )
}

/// A response to `req` with its question, RD copied and OPT if it had one.
fn reply_to(req: &Message, policy: Policy, rcode: ResponseCode) -> Message {
    let mut m = Message::response(req.id, req.op_code);
    m.metadata.recursion_desired = req.recursion_desired;
    m.metadata.checking_disabled = req.checking_disabled;
    m.metadata.recursion_available = policy.forwarding;
    m.metadata.response_code = rcode;
    m.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(policy.udp_payload);
        m.edns = Some(e);
    }
    m
}

/// The answer to a parsed request.
pub fn respond(zones: &Zones, req: &Message, policy: Policy) -> Outcome {
    let reply = |rcode| Outcome::Reply(Box::new(reply_to(req, policy, rcode)));
    if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return reply(ResponseCode::BADVERS);
    }
    if req.op_code != OpCode::Query {
        return reply(ResponseCode::NotImp);
    }
    let [q] = req.queries.as_slice() else {
        return reply(ResponseCode::FormErr);
    };
    let qtype = q.query_type;
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return reply(ResponseCode::Refused);
    }
    let outside = || {
        if policy.forwarding && req.recursion_desired {
            Outcome::Forward
        } else {
            reply(ResponseCode::Refused)
        }
    };
    let Some(name) = normalize(&q.name.to_ascii()) else {
        // Not a host name (a root query, odd bytes): nothing of ours.
        return outside();
    };
    let found = zones.find(&name);
    if found == Found::Outside {
        return outside();
    }
    if q.query_class != DNSClass::IN {
        return reply(ResponseCode::Refused);
    }
    let mut m = reply_to(req, policy, ResponseCode::NoError);
    m.metadata.authoritative = true;
    let owner = q.name.clone();
    let ttl = zones.ttl;
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    let apex_records = |m: &mut Message, z: &Zone| {
        if wants(RecordType::SOA) {
            m.answers.push(soa_record(z, zones));
        }
        if wants(RecordType::NS) {
            m.answers.push(ns_record(z, zones));
        }
    };
    let zone =
        match found {
            Found::Host(addrs, zone) => {
                if wants(RecordType::A) {
                    m.answers.extend(
                        addrs
                            .v4
                            .iter()
                            .map(|a| Record::from_rdata(owner.clone(), ttl, RData::A(A(*a)))),
                    );
                }
                if wants(RecordType::AAAA) {
                    m.answers.extend(
                        addrs
                            .v6
                            .iter()
                            .map(|a| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(*a)))),
                    );
                }
                if let Some(z) = zone.filter(|z| z.apex == name) {
                    apex_records(&mut m, z);
                }
                zone
            }
            Found::Reverse(ptrs, zone) => {
                if wants(RecordType::PTR) {
                    m.answers.extend(ptrs.iter().map(|n| {
                        Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(dns_name(n))))
                    }));
                }
                if let Some(z) = zone.filter(|z| z.apex == name) {
                    apex_records(&mut m, z);
                }
                zone
            }
            Found::Apex(z) => {
                apex_records(&mut m, z);
                Some(z)
            }
            Found::Empty(z) => Some(z),
            Found::Missing(z) => {
                m.metadata.response_code = ResponseCode::NXDomain;
                Some(z)
            }
            Found::Outside => unreachable!("handled above"),
        };
    if m.answers.is_empty() {
        if let Some(z) = zone {
            m.authorities.push(negative_soa(z, zones));
        }
    }
    Outcome::Reply(Box::new(m))
}

/// The reply to bytes that do not parse as a DNS message: FORMERR with the request's ID
/// and opcode when at least its header is there and it is a query; else nothing (a
/// response or noise is never answered: no reflection).
pub fn formerr(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = bytes.get(..12)?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let opcode_rd = header[2] & 0x79;
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&header[..2]);
    out[2] = 0x80 | opcode_rd;
    out[3] = ResponseCode::FormErr.low();
    Some(out)
}

/// `msg` encoded within `limit` bytes: whole if it fits, else its header (TC set) and
/// question only (RFC 2181 9: a client retries over TCP). None if it cannot be encoded.
pub fn fit(msg: &Message, limit: usize) -> Option<Vec<u8>> {
    let full = msg.to_vec().ok()?;
    if full.len() <= limit {
        return Some(full);
    }
    let mut t = msg.truncate();
    t.metadata.message_type = MessageType::Response;
    t.to_vec().ok().filter(|b| b.len() <= limit)
}

/// The UDP size limit of an answer to `req`: its EDNS buffer (at least 512, RFC 6891),
/// at most `max`.
pub fn udp_limit(req: &Message, max: u16) -> usize {
    let asked = req.edns.as_ref().map_or(512, |e| e.max_payload().max(512));
    usize::from(asked.min(max))
}
