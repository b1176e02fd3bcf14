//! Whole exchanges in memory, on a virtual clock: the server's [`Transfer`] against
//! scripted clients (lock-step, EDK2's size probe and windowed download, iPXE's duplicate
//! ACK after a loss), with chosen packets lost.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::super::proto::{self, encode_ack, encode_error, ErrorCode, Limits, Request};
use super::*;

const MS: Duration = Duration::from_millis(1);

fn peer() -> SocketAddr {
    "10.0.0.7:2070".parse().unwrap()
}

fn request(opts: &[(&str, &str)]) -> Request {
    let b = proto::encode_request(proto::RRQ, "f", "octet", opts);
    match proto::parse(&b).unwrap() {
        Packet::Rrq(r) => r,
        p => panic!("{p:?}"),
    }
}

fn start(size: u64, opts: &[(&str, &str)], now: Instant) -> (Transfer, Action) {
    let n = proto::negotiate(&request(opts), size, &Limits::default());
    Transfer::start(peer(), size, &n, Duration::from_secs(120), now)
}

fn blocks(a: &Action) -> (u64, u64) {
    match a {
        Action::SendBlocks { first, last } => (*first, *last),
        a => panic!("expected blocks, got {a:?}"),
    }
}

fn ack(t: &mut Transfer, now: Instant, block: u16) -> Action {
    t.on_packet(now, peer(), &encode_ack(block))
}

/// A lock-step client (windowsize 1): the sizes of the blocks it got, in order.
#[test]
fn normal_lock_step_transfer() {
    let t0 = Instant::now();
    for (size, want_last, last_len) in [(1300, 3, 276), (1024, 3, 0), (0, 1, 0), (511, 1, 511)] {
        let (mut t, a) = start(size, &[], t0);
        let mut now = t0;
        let mut next = blocks(&a);
        let mut got = 0u64;
        loop {
            assert_eq!(next.0, next.1, "windowsize 1");
            let (_, len) = t.block(next.0);
            got += len as u64;
            now += MS;
            match ack(&mut t, now, next.0 as u16) {
                Action::Finish(Outcome::Completed) => break,
                a => next = blocks(&a),
            }
        }
        assert_eq!(next.0, want_last, "size {size}");
        assert_eq!(t.block(want_last).1, last_len, "size {size}");
        assert_eq!(got, size);
        assert_eq!(t.resent(), Resent::default());
        assert!(t.confirmed());
    }
}

/// iPXE misses block 2 and re-ACKs block 1 after 0.25 s: block 2 goes again at once, not
/// after the server's timeout; a second duplicate of the same ACK is left to the timer.
#[test]
fn lost_block_resent_on_duplicate_ack() {
    let t0 = Instant::now();
    let (mut t, a) = start(1500, &[], t0);
    assert_eq!(blocks(&a), (1, 1));
    let a = ack(&mut t, t0 + MS, 1);
    assert_eq!(blocks(&a), (2, 2)); // lost
    let dup_at = t0 + 251 * MS;
    assert_eq!(blocks(&ack(&mut t, dup_at, 1)), (2, 2), "resent at once");
    assert!(
        dup_at - t0 < Duration::from_secs(1),
        "well before the timeout"
    );
    assert_eq!(t.resent().on_duplicate_ack, 1);
    // Lost again; iPXE re-ACKs after 0.5 s: the timer (1 s after the resend) does it.
    assert_eq!(ack(&mut t, dup_at + 500 * MS, 1), Action::Wait);
    assert_eq!(t.next_timeout(), dup_at + Duration::from_secs(1));
    assert_eq!(blocks(&t.on_timeout(t.next_timeout())), (2, 2));
    assert_eq!(t.resent().on_timeout, 1);
    let now = dup_at + Duration::from_millis(1100);
    assert_eq!(blocks(&ack(&mut t, now, 2)), (3, 3));
    assert_eq!(ack(&mut t, now + MS, 3), Action::Finish(Outcome::Completed));
}

/// The Sorcerer's Apprentice: every ACK arrives twice (the network duplicates it, or the
/// client's retransmission crosses our DATA). Each block must still go out once.
#[test]
fn duplicated_acks_do_not_double_the_blocks() {
    let t0 = Instant::now();
    let (mut t, a) = start(100 * 512 + 5, &[], t0);
    let mut now = t0;
    let mut next = blocks(&a);
    let mut sends = 1;
    loop {
        now += MS;
        let a = ack(&mut t, now, next.0 as u16);
        if a == Action::Finish(Outcome::Completed) {
            break;
        }
        let dup = ack(&mut t, now + Duration::from_micros(300), next.0 as u16);
        assert_eq!(
            dup,
            Action::Wait,
            "duplicate right after the window: no resend"
        );
        next = blocks(&a);
        sends += 1;
    }
    assert_eq!(sends, 101);
    assert_eq!(t.resent(), Resent::default());
}

/// EDK2's size probe: RRQ with tsize and blksize, OACK, ERROR 8. The transfer ends at
/// once and never sends its OACK again.
#[test]
fn error_8_after_oack_ends_the_transfer() {
    let t0 = Instant::now();
    let (mut t, a) = start(80_000, &[("tsize", "0"), ("blksize", "1468")], t0);
    assert_eq!(a, Action::SendOack);
    assert!(!t.confirmed());
    let err = encode_error(ErrorCode::OptionsRefused, "User aborted the transfer");
    let a = t.on_packet(t0 + MS, peer(), &err);
    assert_eq!(
        a,
        Action::Finish(Outcome::ClientError {
            code: 8,
            message: "User aborted the transfer".into()
        })
    );
    assert_eq!(t.on_timeout(t0 + Duration::from_secs(10)), Action::Wait);
}

/// A tsize-only probe gets the size in its OACK (the edge encodes the negotiated OACK).
#[test]
fn tsize_only_probe() {
    let n = proto::negotiate(&request(&[("tsize", "0")]), 80_000, &Limits::default());
    assert_eq!(n.oack.as_deref(), Some(&b"\0\x06tsize\x0080000\0"[..]));
    assert_eq!((n.blksize, n.window), (512, 1));
    let t0 = Instant::now();
    let (mut t, a) = Transfer::start(peer(), 80_000, &n, Duration::from_secs(120), t0);
    assert_eq!(a, Action::SendOack);
    let a = t.on_packet(
        t0 + MS,
        peer(),
        &encode_error(ErrorCode::OptionsRefused, ""),
    );
    assert!(matches!(
        a,
        Action::Finish(Outcome::ClientError { code: 8, .. })
    ));
}

/// A client that never answers: MAX_RETRIES resends, then the transfer gives up.
#[test]
fn silent_client_times_out() {
    let t0 = Instant::now();
    let (mut t, a) = start(80_000, &[("tsize", "0")], t0);
    assert_eq!(a, Action::SendOack);
    assert_eq!(t.on_timeout(t0 + 999 * MS), Action::Wait, "not due yet");
    let mut oacks = 1;
    loop {
        let due = t.next_timeout();
        match t.on_timeout(due) {
            Action::SendOack => oacks += 1,
            Action::Finish(Outcome::TimedOut) => {
                assert_eq!(due - t0, Duration::from_secs(6));
                break;
            }
            a => panic!("{a:?}"),
        }
    }
    assert_eq!(oacks, 1 + MAX_RETRIES);
    // Data phase too, with a negotiated timeout of 2 s: the client acknowledged the OACK,
    // so the waits back off (2, 4, 8, 16, 16, 16 s).
    let (mut t, a) = start(80_000, &[("timeout", "2")], t0);
    assert_eq!(a, Action::SendOack);
    let a = ack(&mut t, t0 + MS, 0);
    assert_eq!(blocks(&a), (1, 1));
    for _ in 0..MAX_RETRIES {
        assert_eq!(blocks(&t.on_timeout(t.next_timeout())), (1, 1));
    }
    let due = t.next_timeout();
    assert_eq!(due - (t0 + MS), Duration::from_secs(62));
    assert_eq!(t.on_timeout(due), Action::Finish(Outcome::TimedOut));
}

/// A client heard from that goes quiet mid-transfer (its link congested, EDK2 waiting
/// 4 s between its own retries): the resends back off 1, 2, 4, 8, 8 s, a late ACK still
/// finds the transfer and moves it on, and progress brings the wait back to the timeout.
#[test]
fn resends_back_off_once_the_client_was_heard() {
    let t0 = Instant::now();
    let (mut t, a) = start(10 * 1468, &[("blksize", "1468"), ("windowsize", "4")], t0);
    assert_eq!(a, Action::SendOack);
    let a = ack(&mut t, t0, 0);
    assert_eq!(blocks(&a), (1, 4));
    let mut at = t0;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let due = t.next_timeout();
        waits.push(due - at);
        at = due;
        assert_eq!(blocks(&t.on_timeout(due)), (1, 4));
    }
    waits.push(t.next_timeout() - at);
    let secs: Vec<u64> = waits.iter().map(|w| w.as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 8]);
    assert_eq!(t.resent().on_timeout, 4);
    // 20 s without progress: the flat 1 s x 5 would have given up at 6 s.
    let late = t0 + Duration::from_secs(20);
    assert!(late < t.next_timeout());
    assert_eq!(blocks(&ack(&mut t, late, 4)), (5, 8));
    assert_eq!(
        t.next_timeout() - late,
        Duration::from_secs(1),
        "progress resets it"
    );
    assert_eq!(blocks(&ack(&mut t, late + MS, 8)), (9, 11));
    assert_eq!(
        ack(&mut t, late + 2 * MS, 11),
        Action::Finish(Outcome::Completed)
    );
}

/// EDK2's download: blksize 1468, windowsize 4; one block of a window lost, the client
/// ACKs the last block it has in order and the server goes on from the next (RFC 7440).
#[test]
fn windowsize_4_blksize_1468() {
    let t0 = Instant::now();
    let size = 10 * 1468 + 100;
    let (mut t, a) = start(size, &[("blksize", "1468"), ("windowsize", "4")], t0);
    assert_eq!(a, Action::SendOack);
    assert_eq!(t.max_packet(), 1472);
    let now = t0 + MS;
    assert_eq!(blocks(&ack(&mut t, now, 0)), (1, 4));
    assert_eq!(t.block(4), (3 * 1468, 1468));
    assert_eq!(blocks(&ack(&mut t, now + MS, 4)), (5, 8));
    // Block 7 lost: the client ACKs 6 (after its own timeout).
    assert_eq!(blocks(&ack(&mut t, now + 300 * MS, 6)), (7, 10));
    // A late ACK of 5 is older than the window now: ignored.
    assert_eq!(ack(&mut t, now + 301 * MS, 5), Action::Wait);
    assert_eq!(blocks(&ack(&mut t, now + 302 * MS, 10)), (11, 11));
    assert_eq!(t.block(11), (10 * 1468, 100));
    assert_eq!(
        ack(&mut t, now + 303 * MS, 11),
        Action::Finish(Outcome::Completed)
    );
    assert_eq!(t.resent(), Resent::default());
}

/// Past block 65535 the wire number wraps to 0 and the transfer goes on.
#[test]
fn block_numbers_roll_over() {
    let t0 = Instant::now();
    let blocks_n: u64 = 70_000;
    let size = blocks_n * 8 + 3;
    let (mut t, a) = start(size, &[("blksize", "8"), ("windowsize", "16")], t0);
    assert_eq!(a, Action::SendOack);
    let mut a = ack(&mut t, t0, 0);
    let mut now = t0;
    let mut total = 0u64;
    let mut saw_wrap = false;
    loop {
        let (first, last) = blocks(&a);
        for n in first..=last {
            total += t.block(n).1 as u64;
        }
        saw_wrap |= first <= 65536 && 65536 <= last;
        now += MS;
        a = ack(&mut t, now, last as u16);
        if a == Action::Finish(Outcome::Completed) {
            assert_eq!(last, blocks_n + 1);
            break;
        }
    }
    assert!(saw_wrap);
    assert_eq!(total, size);
}

/// Packets from another port are answered with ERROR 5 and change nothing; an ERROR
/// from a stranger is not answered.
#[test]
fn stranger_gets_error_5() {
    let t0 = Instant::now();
    let (mut t, a) = start(2000, &[], t0);
    assert_eq!(blocks(&a), (1, 1));
    let stranger: SocketAddr = "10.0.0.7:2071".parse().unwrap();
    assert_eq!(
        t.on_packet(t0 + MS, stranger, &encode_ack(1)),
        Action::RejectStranger(stranger)
    );
    let err = encode_error(ErrorCode::NotDefined, "x");
    assert_eq!(t.on_packet(t0 + MS, stranger, &err), Action::Wait);
    assert!(!t.confirmed());
    assert_eq!(blocks(&ack(&mut t, t0 + 2 * MS, 1)), (2, 2));
}

/// A client that keeps the transfer going by trickling ACKs is cut off at max_lifetime.
#[test]
fn lifetime_is_capped() {
    let t0 = Instant::now();
    let n = proto::negotiate(&request(&[]), 1 << 20, &Limits::default());
    let (mut t, _) = Transfer::start(peer(), 1 << 20, &n, Duration::from_secs(10), t0);
    let mut now = t0;
    for b in 1..=10u16 {
        now += Duration::from_millis(900);
        assert_eq!(
            blocks(&ack(&mut t, now, b)),
            (u64::from(b) + 1, u64::from(b) + 1)
        );
    }
    assert_eq!(t.next_timeout(), t0 + Duration::from_secs(10));
    assert_eq!(
        t.on_timeout(t0 + Duration::from_secs(10)),
        Action::Finish(Outcome::TooLong)
    );
}
