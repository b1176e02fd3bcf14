//! `complete` bound to one boot (pure: decided from the host's boot events).
//!
//! A token is learned by anyone who sends a DHCP request with a host's MAC, so a token
//! alone must not un-provision a host. A boot is identified by the digest of its token
//! ([`boot_tag`]); serving a file of the image (kernel, initrd, live image) with that
//! token starts the boot and binds it to the client it was served to. `complete` is then
//! accepted once, from that client's address or one of the host's own addresses; a
//! second one, one before any file was served, or one from elsewhere is refused. A
//! later boot with the same token (the XDP path hands out one token for a while) starts
//! again at its first file. The state is the boot events (`boot`, `peer`), which are
//! appended to `events.jsonl` as they happen and loaded at start, so it survives a
//! restart.
//!
//! What this cannot stop: someone who has the token and fetches a file of the image
//! first owns that boot. The address of every `complete` is in its event.
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::events::{Event, EventKind};

/// The boot identifier of `token`: 24 hex digits of its SHA-256 (the token itself is
/// not written to the event log).
pub fn boot_tag(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..12])
}

/// Where one boot stands, from the host's events (oldest first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootState {
    /// No file of the image was served with this token (since its last `complete`).
    NotStarted,
    /// A file was served; `to` is the client the first one went to.
    Started { to: String },
    /// This boot reported `complete` already.
    Completed { from: String },
}

fn is_image_file(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Kernel | EventKind::Initrd | EventKind::LiveImage
    )
}

/// The state of the boot `tag` after `events`.
pub fn boot_state(events: &[Event], tag: &str) -> BootState {
    let mut state = BootState::NotStarted;
    for e in events.iter().filter(|e| e.boot.as_deref() == Some(tag)) {
        let peer = e.peer.clone().unwrap_or_default();
        match (&state, e.kind) {
            (BootState::Started { .. }, k) if is_image_file(k) => {}
            (_, k) if is_image_file(k) => state = BootState::Started { to: peer },
            (_, EventKind::Complete) => state = BootState::Completed { from: peer },
            _ => {}
        }
    }
    state
}

/// Why a `complete` from `from` is refused, if it is: `host_addrs` are the host's own
/// addresses (a node may report from another of its interfaces).
pub fn refusal(state: &BootState, from: IpAddr, host_addrs: &[IpAddr]) -> Option<String> {
    match state {
        BootState::NotStarted => Some(
            "no boot in progress with this token: complete is accepted once per boot, after \
             a file of the image was served with it"
                .into(),
        ),
        BootState::Completed { from } => {
            Some(format!("this boot already reported complete (from {from})"))
        }
        BootState::Started { to } => {
            let from = from.to_canonical();
            let ok = to.parse::<IpAddr>().map(|t| t.to_canonical()) == Ok(from)
                || host_addrs.iter().any(|a| a.to_canonical() == from);
            (!ok).then(|| {
                format!(
                    "complete from {from}: this boot's files went to {to}, and {from} is not \
                     one of the host's addresses"
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, tag: &str, peer: &str) -> Event {
        Event {
            time_ms: 0,
            host: "cn1".into(),
            kind,
            detail: String::new(),
            boot: Some(tag.into()),
            peer: Some(peer.into()),
        }
    }

    #[test]
    fn one_complete_per_boot_after_its_files() {
        let a = boot_tag("token-a");
        let b = boot_tag("token-b");
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let host = [ip("10.0.0.7")];
        let mut events = vec![Event {
            boot: None,
            peer: None,
            ..ev(EventKind::IpxeScript, &a, "")
        }];
        // Nothing served yet: refused.
        let s = boot_state(&events, &a);
        assert_eq!(s, BootState::NotStarted);
        assert!(refusal(&s, ip("10.0.0.5"), &host).is_some());
        // Kernel served to .5 (then initrd to someone else: the first client owns it).
        events.push(ev(EventKind::Kernel, &a, "10.0.0.5"));
        events.push(ev(EventKind::Initrd, &a, "10.0.0.66"));
        events.push(ev(EventKind::Kernel, &b, "10.0.0.9"));
        let s = boot_state(&events, &a);
        assert_eq!(
            s,
            BootState::Started {
                to: "10.0.0.5".into()
            }
        );
        assert_eq!(refusal(&s, ip("10.0.0.5"), &host), None);
        assert_eq!(refusal(&s, ip("::ffff:10.0.0.5"), &host), None);
        assert_eq!(refusal(&s, ip("10.0.0.7"), &host), None, "a host address");
        let other = refusal(&s, ip("10.0.0.66"), &host).unwrap();
        assert!(other.contains("went to 10.0.0.5"), "{other}");
        // Completed: a replay is refused; the other boot is unaffected.
        events.push(ev(EventKind::Complete, &a, "10.0.0.5"));
        let s = boot_state(&events, &a);
        assert!(refusal(&s, ip("10.0.0.5"), &host)
            .unwrap()
            .contains("already reported complete (from 10.0.0.5)"));
        assert!(matches!(boot_state(&events, &b), BootState::Started { .. }));
        // The same token boots again (re-provisioned): a new boot at its first file.
        events.push(ev(EventKind::LiveImage, &a, "10.0.0.8"));
        assert_eq!(
            boot_state(&events, &a),
            BootState::Started {
                to: "10.0.0.8".into()
            }
        );
    }

    /// The binding is the boot events, kept in `events.jsonl`: after a restart a
    /// started boot can complete, a completed one cannot again.
    #[test]
    fn survives_a_restart() {
        use crate::events::EventLog;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let (a, b) = (boot_tag("a"), boot_tag("b"));
        {
            let log = EventLog::with_file(&path).unwrap();
            log.record_boot("cn1", EventKind::Kernel, "kernel", &a, "10.0.0.5");
            log.record_boot("cn1", EventKind::Kernel, "kernel", &b, "10.0.0.5");
            log.record_boot("cn1", EventKind::Complete, "from", &b, "10.0.0.5");
        }
        let log = EventLog::with_file(&path).unwrap();
        let events = log.for_host("cn1");
        assert_eq!(
            boot_state(&events, &a),
            BootState::Started {
                to: "10.0.0.5".into()
            }
        );
        assert_eq!(
            boot_state(&events, &b),
            BootState::Completed {
                from: "10.0.0.5".into()
            }
        );
    }
}
