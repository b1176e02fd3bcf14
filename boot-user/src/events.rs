//! The boot event log: what each host did during its boot (DHCP answered, TFTP file
//! sent, iPXE script fetched, kernel, initrd, postscript, complete), with times.
//! Services record into it; the API and `xboot events NODESET` read it; the demo prints
//! a node's timeline from it. Kept in memory (bounded per host and in hosts) and
//! appended to `state_dir/events.jsonl` so it survives restarts.
//!
//! The file is bounded too: past [`MAX_FILE_BYTES`] it is renamed to `events.jsonl.1`
//! (replacing the one before) and a new one is started, so the events of the last
//! boots take at most twice that on disk; at start only the last [`LOAD_TAIL_BYTES`] of
//! it are read (a file of hundreds of megabytes once took 16 s and 1.9 GB to load
//! whole).
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
    /// The boot this event belongs to: a digest of the boot URL's token, on the image
    /// files served and on `complete` (a `complete` is accepted once per boot, after a
    /// file of that boot was served: see `http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    /// The client's address, on the events that carry `boot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// Bounded in-memory log, newest last.
#[derive(Default)]
pub struct EventLog {
    per_host: Mutex<HashMap<String, VecDeque<Event>>>,
    sink: Mutex<Option<Sink>>,
}

/// The file appended to, its size, and where it rotates.
struct Sink {
    file: std::fs::File,
    path: std::path::PathBuf,
    bytes: u64,
    max_bytes: u64,
}

/// Events kept in memory per host.
const PER_HOST: usize = 256;

/// Hosts with events in memory; past it, events of new names go to the file only (the
/// services record events for inventory hosts, so this only bounds a bug or a flood).
const MAX_HOSTS: usize = 1_000_000;

/// The file is rotated once it would grow past this.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// What is read of the file at start: its end.
pub const LOAD_TAIL_BYTES: u64 = 16 << 20;

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
        Self::with_file_limits(path, MAX_FILE_BYTES, LOAD_TAIL_BYTES)
    }

    /// [`with_file`](Self::with_file) with the rotation size and the loaded tail given.
    pub fn with_file_limits(
        path: &std::path::Path,
        max_bytes: u64,
        tail_bytes: u64,
    ) -> std::io::Result<EventLog> {
        let log = EventLog::default();
        for line in read_tail(path, tail_bytes)?.lines() {
            if let Ok(ev) = serde_json::from_str::<Event>(line) {
                log.push_mem(ev);
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let bytes = file.metadata()?.len();
        *log.sink.lock().unwrap() = Some(Sink {
            file,
            path: path.to_path_buf(),
            bytes,
            max_bytes: max_bytes.max(1),
        });
        Ok(log)
    }

    pub fn record(&self, host: &str, kind: EventKind, detail: impl Into<String>) {
        self.record_event(Event {
            time_ms: now_ms(),
            host: host.to_string(),
            kind,
            detail: detail.into(),
            boot: None,
            peer: None,
        })
    }

    /// Records an event of one boot (`boot`: the token's digest) for the client `peer`.
    pub fn record_boot(
        &self,
        host: &str,
        kind: EventKind,
        detail: impl Into<String>,
        boot: &str,
        peer: &str,
    ) {
        self.record_event(Event {
            time_ms: now_ms(),
            host: host.to_string(),
            kind,
            detail: detail.into(),
            boot: Some(boot.to_string()),
            peer: Some(peer.to_string()),
        })
    }

    fn record_event(&self, ev: Event) {
        if let Some(sink) = self.sink.lock().unwrap().as_mut() {
            if let Ok(line) = serde_json::to_string(&ev) {
                if let Err(e) = sink.append(&line) {
                    tracing::warn!("cannot append boot event to {}: {e}", sink.path.display());
                }
            }
        }
        self.push_mem(ev);
    }

    fn push_mem(&self, ev: Event) {
        let mut m = self.per_host.lock().unwrap();
        if m.len() >= MAX_HOSTS && !m.contains_key(&ev.host) {
            return;
        }
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

impl Sink {
    fn append(&mut self, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        let n = line.len() as u64 + 1;
        if self.bytes > 0 && self.bytes + n > self.max_bytes {
            self.rotate()?;
        }
        writeln!(self.file, "{line}")?;
        self.bytes += n;
        Ok(())
    }

    /// `events.jsonl` -> `events.jsonl.1`, and a new `events.jsonl`.
    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.bytes = 0;
        Ok(())
    }
}

/// The last `max` bytes of `path` (from the first whole line in them), or "" if it does
/// not exist.
fn read_tail(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf)?;
    let from = if start == 0 {
        0
    } else {
        // The first line is cut: skip it.
        buf.iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |i| i + 1)
    };
    Ok(String::from_utf8_lossy(&buf[from..]).into_owned())
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

    /// The file rotates at its size limit (the disk holds at most twice it), and a start
    /// reads only the tail: the newest events, none of a cut first line.
    #[test]
    fn file_rotates_and_only_its_tail_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let log = EventLog::with_file_limits(&p, 10_000, 2_000).unwrap();
        for i in 0..1_000 {
            log.record(&format!("cn{}", i % 7), EventKind::Kernel, format!("k{i}"));
        }
        let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
        let rotated = dir.path().join("events.jsonl.1");
        assert!(size(&p) <= 10_000 && size(&rotated) <= 10_000);
        assert!(size(&p) + size(&rotated) > 10_000);
        drop(log);
        let again = EventLog::with_file_limits(&p, 10_000, 2_000).unwrap();
        let loaded: usize = (0..7)
            .map(|h| again.for_host(&format!("cn{h}")).len())
            .sum();
        assert!(
            loaded > 0 && loaded < 40,
            "{loaded} events loaded from the tail"
        );
        assert_eq!(again.for_host("cn5").last().unwrap().detail, "k999");
    }
}
