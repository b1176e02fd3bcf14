//! One read transfer as a state machine, sans I/O (quiche's shape): the edge feeds it
//! datagrams ([`Transfer::on_packet`]) and timer expiries ([`Transfer::on_timeout`]) and
//! does what the returned [`Action`] says; it asks when to wake it next
//! ([`Transfer::next_timeout`]). It never reads the file: it names blocks, and
//! [`Transfer::block`] says which bytes of the file a block holds.
//!
//! Blocks are numbered from 1 in a `u64`; on the wire the number wraps past 65535 to 0
//! (what tftp-hpa, atftp and iPXE expect), so files of any size can be sent. The OACK, if
//! any, is block 0.
//!
//! Sending: a window of `window` blocks (RFC 7440) is sent, then the client's ACK of block
//! `n` moves the window to `n + 1` at once, whether it acknowledges the whole window or
//! only part of it (the client saw a gap). Loss recovery:
//! - on a timeout, everything not yet acknowledged is sent again, at most
//!   [`MAX_RETRIES`] times in a row before the transfer gives up. Once the client has
//!   acknowledged something, the wait doubles with each resend in a row (RFC 1123
//!   4.2.3.2), up to [`MAX_BACKOFF`] times the timeout: a client known to be there is
//!   given ~31 s (at the default 1 s) to come back, longer than EDK2 itself retries
//!   (4 s x 6), and a congested link gets fewer resends, not more. Before any ACK (a
//!   forged source, a client that went away at once) the wait stays flat, so such a
//!   transfer frees its slot 6 s after its first packet;
//! - a duplicate ACK (the client re-acknowledging the last block it has, as iPXE does
//!   0.25 s after a block it misses) resends from the block after it at once. To keep
//!   clear of the Sorcerer's Apprentice (each duplicate answered by a resend, which the
//!   client acknowledges twice in turn, doubling every block forever) a duplicate is
//!   acted on at most once per ACK value, and only when it arrives a hold-off after the
//!   window was sent (twice the round-trip time, 20 ms at least): a duplicate that crossed
//!   our packets in flight is not a sign of loss.
//!
//! A client ERROR ends the transfer at once (EDK2 aborts its size probe with ERROR 8 after
//! the OACK). Packets from another port than the client's get ERROR 5 and change nothing
//! (RFC 1350: another TID). The whole transfer lives at most `max_lifetime`.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::proto::{self, Negotiated, Packet};

/// Retransmissions in a row (with no progress) before the transfer is given up: with the
/// default 1 s timeout a client that never answered is dropped 6 s after the first packet,
/// one that went silent mid-transfer 31 s after the last it acknowledged (1+2+4+8+8+8 s).
pub const MAX_RETRIES: u32 = 5;
/// Cap of the backoff: the longest wait is this many timeouts.
pub const MAX_BACKOFF: u32 = 8;
/// Least hold-off before a duplicate ACK triggers a resend.
const MIN_DUP_HOLDOFF: Duration = Duration::from_millis(20);

/// What the edge does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to send; wait for a packet or [`Transfer::next_timeout`].
    Wait,
    SendOack,
    /// Send DATA blocks `first..=last`.
    SendBlocks {
        first: u64,
        last: u64,
    },
    /// Send ERROR 5 (unknown transfer ID) to a stranger; the transfer goes on.
    RejectStranger(SocketAddr),
    /// The transfer is over: drop it.
    Finish(Outcome),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Completed,
    /// The client sent an ERROR.
    ClientError { code: u16, message: String },
    /// No progress after [`MAX_RETRIES`] retransmissions.
    TimedOut,
    /// Alive longer than `max_lifetime`.
    TooLong,
}

/// Retransmission counts, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resent {
    pub on_timeout: u64,
    pub on_duplicate_ack: u64,
}

#[derive(Debug)]
pub struct Transfer {
    peer: SocketAddr,
    size: u64,
    blksize: u64,
    window: u64,
    timeout: Duration,
    /// An OACK is to be (or has been) sent, and block 0 (its ACK) is not yet acknowledged.
    oack_pending: bool,
    /// Number of the last block: `size / blksize + 1` (the last is shorter than blksize,
    /// possibly empty).
    last: u64,
    /// Highest block acknowledged (0: none, or the OACK).
    acked: u64,
    /// Highest block sent.
    sent: u64,
    /// When the current window (acked+1..=sent) was last sent.
    sent_at: Instant,
    /// Whether that window went out only once (Karn: only those time the round trip).
    first_send: bool,
    /// Latest round-trip sample, for the duplicate-ACK hold-off.
    rtt: Duration,
    /// The ACK value a duplicate already triggered a resend for.
    dup_resent: Option<u64>,
    retries: u32,
    /// An ACK came from the client's address and port.
    heard: bool,
    deadline: Instant,
    end_of_life: Instant,
    done: bool,
    resent: Resent,
}

impl Transfer {
    /// A transfer of a `size`-byte file to `peer` with the negotiated parameters; the
    /// first action sends the OACK or the first window.
    pub fn start(
        peer: SocketAddr,
        size: u64,
        n: &Negotiated,
        max_lifetime: Duration,
        now: Instant,
    ) -> (Transfer, Action) {
        let blksize = u64::from(n.blksize.max(1));
        let mut t = Transfer {
            peer,
            size,
            blksize,
            window: u64::from(n.window.max(1)),
            timeout: n.timeout,
            oack_pending: n.oack.is_some(),
            last: size / blksize + 1,
            acked: 0,
            sent: 0,
            sent_at: now,
            first_send: true,
            rtt: Duration::ZERO,
            dup_resent: None,
            retries: 0,
            heard: false,
            deadline: now + n.timeout,
            end_of_life: now + max_lifetime,
            done: false,
            resent: Resent::default(),
        };
        let a = if t.oack_pending {
            Action::SendOack
        } else {
            t.send_window(now, true)
        };
        (t, a)
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Byte offset and length of block `n` (1-based) in the file.
    pub fn block(&self, n: u64) -> (u64, usize) {
        let off = (n - 1) * self.blksize;
        let len = self.size.saturating_sub(off).min(self.blksize);
        (off, len as usize)
    }

    /// Largest DATA packet this transfer sends.
    pub fn max_packet(&self) -> usize {
        self.blksize as usize + 4
    }

    pub fn resent(&self) -> Resent {
        self.resent
    }

    /// Whether the client has acknowledged anything yet (a forged source never does).
    pub fn confirmed(&self) -> bool {
        self.heard
    }

    /// When [`Transfer::on_timeout`] is due.
    pub fn next_timeout(&self) -> Instant {
        self.deadline.min(self.end_of_life)
    }

    /// Sends the blocks from `acked + 1`, a window's worth.
    fn send_window(&mut self, now: Instant, fresh: bool) -> Action {
        let first = self.acked + 1;
        let last = (self.acked + self.window).min(self.last);
        self.sent = last;
        self.sent_at = now;
        self.first_send = fresh;
        self.deadline = now + self.wait();
        Action::SendBlocks { first, last }
    }

    /// How long to wait for an ACK of what was just sent: the timeout, doubled for each
    /// resend in a row once the client has been heard from (see the module's doc).
    fn wait(&self) -> Duration {
        if !self.heard {
            return self.timeout;
        }
        self.timeout * (1u32 << self.retries.min(MAX_BACKOFF.ilog2()))
    }

    fn finish(&mut self, o: Outcome) -> Action {
        self.done = true;
        Action::Finish(o)
    }

    pub fn on_packet(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Action {
        if self.done {
            return Action::Wait;
        }
        if now >= self.end_of_life {
            return self.finish(Outcome::TooLong);
        }
        let pkt = proto::parse(bytes);
        if from != self.peer {
            // Never answer an ERROR (two servers would bounce errors forever).
            return match pkt {
                Ok(Packet::Error { .. }) => Action::Wait,
                _ => Action::RejectStranger(from),
            };
        }
        match pkt {
            Ok(Packet::Ack(wire)) => self.on_ack(now, wire),
            Ok(Packet::Error { code, message }) => {
                self.finish(Outcome::ClientError { code, message })
            }
            // Anything else from the client is ignored (a repeated RRQ, stray DATA).
            _ => Action::Wait,
        }
    }

    /// The block in `acked..=sent` whose wire number is `wire`: the window is far
    /// shorter than 65536 blocks, so at most one matches.
    fn unwrap_block(&self, wire: u16) -> Option<u64> {
        let base = self.acked;
        let delta = u64::from(wire.wrapping_sub(base as u16));
        (base + delta <= self.sent).then_some(base + delta)
    }

    fn on_ack(&mut self, now: Instant, wire: u16) -> Action {
        self.heard = true;
        if self.oack_pending {
            if wire != 0 {
                return Action::Wait;
            }
            self.oack_pending = false;
            self.retries = 0;
            return self.send_window(now, true);
        }
        let Some(n) = self.unwrap_block(wire) else {
            // Older than the window, or a block never sent.
            return Action::Wait;
        };
        if n > self.acked {
            if self.first_send {
                self.rtt = now.saturating_duration_since(self.sent_at);
            }
            self.acked = n;
            self.retries = 0;
            self.dup_resent = None;
            if n == self.last {
                return self.finish(Outcome::Completed);
            }
            return self.send_window(now, true);
        }
        // A duplicate of the last ACK with blocks outstanding: the next block was lost.
        let holdoff = (self.rtt * 2).max(MIN_DUP_HOLDOFF).min(self.timeout / 2);
        if self.sent > self.acked
            && self.dup_resent != Some(n)
            && now.saturating_duration_since(self.sent_at) >= holdoff
        {
            self.dup_resent = Some(n);
            self.resent.on_duplicate_ack += 1;
            return self.send_window(now, false);
        }
        Action::Wait
    }

    pub fn on_timeout(&mut self, now: Instant) -> Action {
        if self.done || now < self.next_timeout() {
            return Action::Wait;
        }
        if now >= self.end_of_life {
            return self.finish(Outcome::TooLong);
        }
        if self.retries >= MAX_RETRIES {
            return self.finish(Outcome::TimedOut);
        }
        self.retries += 1;
        self.resent.on_timeout += 1;
        if self.oack_pending {
            self.deadline = now + self.timeout;
            return Action::SendOack;
        }
        self.send_window(now, false)
    }
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
