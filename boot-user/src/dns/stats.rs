//! DNS counters, exposed on `/metrics`.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const TYPES: [&str; 7] = ["A", "AAAA", "PTR", "SOA", "NS", "ANY", "other"];
const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other",
];

/// Kinds of error counted under `xboot_dns_errors_total{kind}`.
#[derive(Clone, Copy, Debug)]
pub enum Error {
    /// A datagram or TCP message that is not a DNS query.
    Malformed,
    /// No upstream answered a forwarded query (the client got SERVFAIL).
    ForwardFailed,
    /// A query to forward found `dns.max_forwarded` in flight (SERVFAIL).
    ForwardBusy,
    /// A TCP connection found `dns.max_tcp_connections` open (closed at once).
    TcpRefused,
    /// A socket error while reading or answering.
    Io,
}

const ERRORS: [&str; 5] = [
    "malformed",
    "forward_failed",
    "forward_busy",
    "tcp_refused",
    "io",
];

#[derive(Debug, Default)]
pub struct Stats {
    queries: [AtomicU64; TYPES.len()],
    answers: [AtomicU64; RCODES.len()],
    errors: [AtomicU64; ERRORS.len()],
    forwarded: AtomicU64,
    truncated: AtomicU64,
    tcp_queries: AtomicU64,
    table_builds: AtomicU64,
    tables_kept: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub fn query(&self, t: RecordType, tcp: bool) {
        let i = match t {
            RecordType::A => 0,
            RecordType::AAAA => 1,
            RecordType::PTR => 2,
            RecordType::SOA => 3,
            RecordType::NS => 4,
            RecordType::ANY => 5,
            _ => 6,
        };
        bump(&self.queries[i]);
        if tcp {
            bump(&self.tcp_queries);
        }
    }

    pub fn answer(&self, rcode: ResponseCode) {
        let i = match rcode {
            ResponseCode::NoError => 0,
            ResponseCode::FormErr => 1,
            ResponseCode::ServFail => 2,
            ResponseCode::NXDomain => 3,
            ResponseCode::NotImp => 4,
            ResponseCode::Refused => 5,
            ResponseCode::BADVERS => 6,
            _ => 7,
        };
        bump(&self.answers[i]);
    }

    pub fn error(&self, e: Error) {
        bump(&self.errors[e as usize]);
    }

    pub fn forwarded(&self) {
        bump(&self.forwarded);
    }

    pub fn truncated(&self) {
        bump(&self.truncated);
    }

    pub fn table_built(&self) {
        bump(&self.table_builds);
    }

    /// An inventory change that touched no name or address: the tables were kept.
    pub fn table_kept(&self) {
        bump(&self.tables_kept);
    }

    /// (tables built, changes that kept the tables), for tests.
    pub fn tables(&self) -> (u64, u64) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (load(&self.table_builds), load(&self.tables_kept))
    }

    /// The count of answers with this rcode name (`NXDOMAIN`), for tests and the API.
    pub fn answers_with(&self, rcode: &str) -> u64 {
        RCODES
            .iter()
            .position(|r| *r == rcode)
            .map_or(0, |i| self.answers[i].load(Ordering::Relaxed))
    }

    /// Prometheus text format.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let family = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        family(&mut out, "xboot_dns_queries_total", "DNS queries by type.");
        for (t, c) in TYPES.iter().zip(&self.queries) {
            let _ = writeln!(out, "xboot_dns_queries_total{{type=\"{t}\"}} {}", load(c));
        }
        family(&mut out, "xboot_dns_answers_total", "DNS answers by rcode.");
        for (r, c) in RCODES.iter().zip(&self.answers) {
            let _ = writeln!(out, "xboot_dns_answers_total{{rcode=\"{r}\"}} {}", load(c));
        }
        family(&mut out, "xboot_dns_errors_total", "DNS errors by kind.");
        for (k, c) in ERRORS.iter().zip(&self.errors) {
            let _ = writeln!(out, "xboot_dns_errors_total{{kind=\"{k}\"}} {}", load(c));
        }
        for (name, help, c) in [
            (
                "xboot_dns_forwarded_total",
                "DNS queries forwarded to an upstream.",
                &self.forwarded,
            ),
            (
                "xboot_dns_truncated_total",
                "UDP answers sent truncated (TC) to fit the client's buffer.",
                &self.truncated,
            ),
            (
                "xboot_dns_tcp_queries_total",
                "DNS queries received over TCP.",
                &self.tcp_queries,
            ),
            (
                "xboot_dns_table_builds_total",
                "DNS tables built (one per inventory change of a name or an address).",
                &self.table_builds,
            ),
            (
                "xboot_dns_tables_kept_total",
                "Inventory changes that touched no name or address: the tables were kept.",
                &self.tables_kept,
            ),
        ] {
            family(&mut out, name, help);
            let _ = writeln!(out, "{name} {}", load(c));
        }
        out
    }
}
