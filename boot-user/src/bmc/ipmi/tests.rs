//! Whole sessions in memory: the client state machine against the in-memory BMC, with
//! loss, timeouts, wrong credentials and cipher suite fallback, on a virtual clock.
use std::time::{Duration, Instant};

use super::commands::{Control, Op};
use super::crypto::CipherSuite;
use super::responder::Responder;
use super::session::{IpmiError, NetError, Report, Session, SessionConfig, Stage, Timing};

/// The virtual clock's origin: sessions are created at it and [`run`] starts from it.
fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn cfg(user: &str, password: &str) -> SessionConfig {
    let mut c = SessionConfig::new(user, password);
    c.timing = Timing {
        timeout: Duration::from_millis(100),
        retries: 2,
    };
    c
}

/// Drives `s` against `bmc` until it finishes; `lose(n)` drops the n-th datagram the
/// client sends (1-based). Returns (outcome, datagrams sent, virtual time spent).
fn run(
    s: &mut Session,
    bmc: &mut Responder,
    mut lose: impl FnMut(usize) -> bool,
) -> (Result<Report, IpmiError>, usize, Duration) {
    let start = t0();
    let mut now = start;
    let mut sent = 0;
    let mut outcome = None;
    for _ in 0..1000 {
        while let Some(p) = s.poll_transmit() {
            sent += 1;
            if lose(sent) {
                continue;
            }
            if let Some(r) = bmc.handle(&p) {
                s.handle_datagram(&r, now);
            }
        }
        if let Some(o) = s.take_outcome() {
            outcome = Some(o);
        }
        if s.is_finished() {
            return (
                outcome.expect("a finished session has an outcome"),
                sent,
                now - start,
            );
        }
        now = s
            .poll_timeout()
            .expect("an unfinished session has a deadline");
        s.handle_timeout(now);
    }
    panic!("session did not finish");
}

fn session(c: SessionConfig, ops: Vec<Op>) -> Session {
    Session::new(c, ops, [7; 32], t0())
}

#[test]
fn status_with_both_suites() {
    for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
        let mut bmc = Responder::new("admin", "secret", 1).with_suites(&[suite]);
        bmc.chassis.power_on = true;
        let mut c = cfg("admin", "secret");
        c.suites = vec![suite];
        let mut s = session(c, vec![Op::Status]);
        let (r, sent, _) = run(&mut s, &mut bmc, |_| false);
        let r = r.unwrap();
        assert_eq!(r.suite, suite);
        assert!(r.status.unwrap().power_on);
        // auth caps, open, RAKP 1, RAKP 3, set privilege, status, close
        assert_eq!(sent, 7);
        assert_eq!(bmc.session_count(), 0, "the session was closed");
    }
}

#[test]
fn cycle_to_pxe_sets_boot_flags_then_controls() {
    for (efi, flags1) in [(false, 0x80), (true, 0xa0)] {
        let mut bmc = Responder::new("admin", "secret", 2);
        let ops = vec![Op::BootPxe { efi }, Op::Control(Control::Cycle)];
        let (r, _, _) = run(&mut session(cfg("admin", "secret"), ops), &mut bmc, |_| {
            false
        });
        assert_eq!(r.unwrap().status, None);
        assert_eq!(bmc.chassis.boot_flags, [flags1, 0x04, 0, 0, 0]);
        assert_eq!(bmc.chassis.controls, vec![2]);
    }
}

#[test]
fn falls_back_from_suite_17_to_3() {
    let mut bmc = Responder::new("admin", "secret", 3).with_suites(&[CipherSuite::Suite3]);
    let (r, sent, _) = run(
        &mut session(cfg("admin", "secret"), vec![Op::Status]),
        &mut bmc,
        |_| false,
    );
    assert_eq!(r.unwrap().suite, CipherSuite::Suite3);
    assert_eq!(sent, 8, "one extra Open Session");
}

#[test]
fn no_common_suite() {
    let mut bmc = Responder::new("admin", "secret", 4).with_suites(&[CipherSuite::Suite3]);
    let mut c = cfg("admin", "secret");
    c.suites = vec![CipherSuite::Suite17];
    let (r, _, _) = run(&mut session(c, vec![Op::Status]), &mut bmc, |_| false);
    assert!(matches!(r, Err(IpmiError::NoCipherSuite(_))), "{r:?}");
}

#[test]
fn wrong_password_is_an_auth_error_and_frees_the_bmc_session() {
    let mut bmc = Responder::new("admin", "secret", 5);
    let (r, _, _) = run(
        &mut session(cfg("admin", "nope"), vec![Op::Status]),
        &mut bmc,
        |_| false,
    );
    let Err(IpmiError::Auth(m)) = r else {
        panic!("{r:?}")
    };
    assert!(m.contains("wrong password"), "{m}");
    assert_eq!(bmc.session_count(), 0);
    assert!(bmc.chassis.controls.is_empty());
}

#[test]
fn unknown_user_is_an_auth_error() {
    let mut bmc = Responder::new("admin", "secret", 6);
    let (r, _, _) = run(
        &mut session(cfg("root", "secret"), vec![Op::Status]),
        &mut bmc,
        |_| false,
    );
    let Err(IpmiError::Auth(m)) = r else {
        panic!("{r:?}")
    };
    assert!(m.contains("unauthorized name"), "{m}");
}

#[test]
fn dead_bmc_times_out_within_the_bound() {
    let mut bmc = Responder::new("admin", "secret", 7);
    let c = cfg("admin", "secret");
    let bound = c.timing.dead_bmc_bound();
    let (r, sent, spent) = run(&mut session(c, vec![Op::Status]), &mut bmc, |_| true);
    assert_eq!(
        r,
        Err(IpmiError::Timeout {
            stage: Stage::AuthCapabilities,
            attempts: 3
        })
    );
    assert_eq!(sent, 3);
    assert_eq!(spent, bound);
    assert_eq!(bound, Duration::from_millis(100 + 150 + 225));
}

#[test]
fn every_step_survives_one_lost_datagram() {
    for lost in 1..=7 {
        let mut bmc = Responder::new("admin", "secret", 8);
        let ops = vec![Op::Control(Control::On)];
        let (r, sent, _) = run(&mut session(cfg("admin", "secret"), ops), &mut bmc, |n| {
            n == lost
        });
        assert!(r.is_ok(), "lost datagram {lost}: {r:?}");
        assert_eq!(sent, 8, "lost datagram {lost}");
        assert!(bmc.chassis.power_on);
    }
}

#[test]
fn duplicate_and_foreign_datagrams_are_ignored() {
    let mut bmc = Responder::new("admin", "secret", 9);
    let mut s = session(cfg("admin", "secret"), vec![Op::Status]);
    let now = t0();
    let first = s.poll_transmit().unwrap();
    let reply = bmc.handle(&first).unwrap();
    s.handle_datagram(&reply, now);
    assert_eq!(s.stage(), Stage::OpenSession);
    s.handle_datagram(&reply, now); // late duplicate
    s.handle_datagram(b"garbage", now);
    assert_eq!(s.stage(), Stage::OpenSession);
    assert_eq!(
        s.poll_transmit().map(|p| p[5]),
        Some(0x10),
        "one Open Session request"
    );
    assert!(s.poll_transmit().is_none());
}

#[test]
fn icmp_refused_fails_at_once() {
    let mut s = session(cfg("admin", "secret"), vec![Op::Status]);
    s.handle_net_error(NetError::PortUnreachable, t0());
    assert!(s.is_finished());
    assert_eq!(s.take_outcome(), Some(Err(IpmiError::Refused)));
    assert_eq!(s.take_outcome(), None, "delivered once");
}

/// A BMC that answers only garbage fails as a bad reply, not as silence; one that goes
/// quiet after garbage at an earlier stage still times out.
#[test]
fn garbage_replies_are_bad_replies_not_timeouts() {
    let mut s = session(cfg("admin", "secret"), vec![Op::Status]);
    let mut now = t0();
    while !s.is_finished() {
        while s.poll_transmit().is_some() {
            s.handle_datagram(b"\x06\x00\xffgarbage", now);
        }
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
    }
    let err = s.take_outcome().unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            IpmiError::BadReply {
                stage: Stage::AuthCapabilities,
                attempts: 3,
                count: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with(
        "no valid reply to Get Channel Authentication Capabilities after 3 attempts: 3 unreadable"
    ));

    let mut bmc = Responder::new("admin", "secret", 9);
    let mut s = session(cfg("admin", "secret"), vec![Op::Status]);
    let first = s.poll_transmit().unwrap();
    s.handle_datagram(b"garbage", t0());
    s.handle_datagram(&bmc.handle(&first).unwrap(), t0());
    let (r, _, _) = run(&mut s, &mut bmc, |_| true);
    assert_eq!(
        r,
        Err(IpmiError::Timeout {
            stage: Stage::OpenSession,
            attempts: 3
        })
    );
}

/// Backoff grows by 1.5 per attempt up to 4 x the timeout; any number of retries is a
/// finite bound (200 retries panicked on a duration overflow).
#[test]
fn backoff_is_capped() {
    let t = Timing {
        timeout: Duration::from_secs(1),
        retries: 200,
    };
    let waits: Vec<u128> = (0..7).map(|k| t.attempt_timeout(k).as_millis()).collect();
    assert_eq!(waits, [1000, 1500, 2250, 3375, 4000, 4000, 4000]);
    assert_eq!(t.attempt_timeout(u32::MAX), Duration::from_secs(4));
    assert_eq!(
        t.dead_bmc_bound(),
        Duration::from_millis(1000 + 1500 + 2250 + 3375 + 197 * 4000)
    );
    let huge = Timing {
        timeout: Duration::MAX,
        retries: u32::MAX,
    };
    assert_eq!(huge.dead_bmc_bound(), Duration::MAX);
}
