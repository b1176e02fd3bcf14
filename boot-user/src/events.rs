//! The boot event log: what each host did during its boot (DHCP answered, TFTP file
//! sent, iPXE script fetched, kernel, initrd, postscript, complete), with times.
//! Services record into it; the API and `xboot events NODESET` read it; the demo prints
//! a node's timeline from it. Kept in memory (bounded per host) and appended to
//! `state_dir/events.jsonl` so it survives restarts.
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What happened. Stable names: they are the API's and the CLI's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    DhcpOffer,
    DhcpAck,
    DhcpNak,
    DhcpInform,
    DhcpRelease,
    DhcpDecline,
    ProxyOffer,
    Tftp,
    IpxeScript,
    Kernel,
    Initrd,
    LiveImage,
    Postscript,
    Complete,
    Provision,
    Unprovision,
    Power,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time in milliseconds.
    pub time_ms: u64,
    pub host: String,
    pub kind: EventKind,
    /// Free text: the file name, the leased address, who answered (xdp/userspace) ...
    pub detail: String,
}

/// Bounded in-memory log, newest last.
#[derive(Default)]
pub struct EventLog {
    per_host: Mutex<HashMap<String, VecDeque<Event>>>,
    sink: Mutex<Option<std::fs::File>>,
}

/// Events kept in memory per host.
const PER_HOST: usize = 256;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl EventLog {
    /// A log that also appends every event as a JSON line to `path` (and loads the
    /// events already there).
    pub fn with_file(path: &std::path::Path) -> std::io::Result<EventLog> {
        let log = EventLog::default();
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                if let Ok(ev) = serde_json::from_str::<Event>(line) {
                    log.push_mem(ev);
                }
            }
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        *log.sink.lock().unwrap() = Some(f);
        Ok(log)
    }

    pub fn record(&self, host: &str, kind: EventKind, detail: impl Into<String>) {
        let ev = Event {
            time_ms: now_ms(),
            host: host.to_string(),
            kind,
            detail: detail.into(),
        };
        if let Some(f) = self.sink.lock().unwrap().as_mut() {
            use std::io::Write;
            if let Ok(line) = serde_json::to_string(&ev) {
                if let Err(e) = writeln!(f, "{line}") {
                    tracing::warn!("cannot append boot event: {e}");
                }
            }
        }
        self.push_mem(ev);
    }

    fn push_mem(&self, ev: Event) {
        let mut m = self.per_host.lock().unwrap();
        let q = m.entry(ev.host.clone()).or_default();
        if q.len() == PER_HOST {
            q.pop_front();
        }
        q.push_back(ev);
    }

    /// Events of one host, oldest first.
    pub fn for_host(&self, host: &str) -> Vec<Event> {
        self.per_host
            .lock()
            .unwrap()
            .get(host)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let log = EventLog::with_file(&p).unwrap();
        for i in 0..(PER_HOST + 5) {
            log.record("cn1", EventKind::Tftp, format!("f{i}"));
        }
        assert_eq!(log.for_host("cn1").len(), PER_HOST);
        assert_eq!(log.for_host("cn1")[0].detail, "f5");
        let again = EventLog::with_file(&p).unwrap();
        assert_eq!(
            again.for_host("cn1").last().unwrap().detail,
            format!("f{}", PER_HOST + 4)
        );
    }
}
