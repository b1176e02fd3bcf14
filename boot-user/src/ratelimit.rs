//! A token bucket for log lines that anyone on the boot network can cause (unknown MACs,
//! oversized requests): a burst is logged, then at most `per_sec` lines a second, and the
//! first line let through after a suppression says how many were dropped. Time is an
//! input (milliseconds), so it is tested without a clock.
use std::sync::Mutex;

/// The bucket; shared by the callers of one kind of line.
pub struct LogLimit {
    inner: Mutex<Bucket>,
    per_sec: u32,
    burst: u32,
}

struct Bucket {
    /// Tokens in thousandths, so that refills at a few lines a second stay exact.
    milli_tokens: u64,
    last_ms: u64,
    suppressed: u64,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` lines were dropped since the last one logged.
    Log { suppressed: u64 },
    /// Drop it (counted).
    Drop,
}

impl LogLimit {
    /// `burst` lines at once, then `per_sec` a second.
    pub const fn new(per_sec: u32, burst: u32) -> LogLimit {
        LogLimit {
            inner: Mutex::new(Bucket {
                milli_tokens: burst as u64 * 1000,
                last_ms: 0,
                suppressed: 0,
            }),
            per_sec,
            burst,
        }
    }

    pub fn check(&self, now_ms: u64) -> Verdict {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now_ms.saturating_sub(b.last_ms);
        b.last_ms = b.last_ms.max(now_ms);
        let cap = u64::from(self.burst) * 1000;
        b.milli_tokens =
            (b.milli_tokens + elapsed.saturating_mul(u64::from(self.per_sec))).min(cap);
        if b.milli_tokens >= 1000 {
            b.milli_tokens -= 1000;
            let suppressed = std::mem::take(&mut b.suppressed);
            Verdict::Log { suppressed }
        } else {
            b.suppressed += 1;
            Verdict::Drop
        }
    }

    /// " (N similar lines suppressed)" for a verdict that had any, else "".
    pub fn note(suppressed: u64) -> String {
        if suppressed == 0 {
            String::new()
        } else {
            format!(" ({suppressed} similar lines suppressed)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_then_reports_what_it_dropped() {
        let l = LogLimit::new(2, 5);
        let logged = (0..100).filter(|_| l.check(1_000) != Verdict::Drop).count();
        assert_eq!(logged, 5, "the burst");
        // Half a second later: one more token (2 a second).
        assert_eq!(l.check(1_500), Verdict::Log { suppressed: 95 });
        assert_eq!(l.check(1_500), Verdict::Drop);
        // A long quiet time refills to the burst, not beyond.
        let later = (0..100)
            .filter(|_| l.check(100_000) != Verdict::Drop)
            .count();
        assert_eq!(later, 5);
    }

    #[test]
    fn time_going_backwards_does_not_refill() {
        let l = LogLimit::new(10, 1);
        assert!(matches!(l.check(10_000), Verdict::Log { .. }));
        assert_eq!(l.check(5_000), Verdict::Drop);
        assert_eq!(l.check(10_000), Verdict::Drop);
    }
}
