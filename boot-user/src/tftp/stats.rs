//! Counters of the TFTP server, for `/metrics` and `xboot status`, and the time each
//! transfer's phases took (histograms): where a slow first reply lost its time.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::transfer::Outcome;

#[derive(Default, Debug)]
pub struct Stats {
    /// Transfers running now (a gauge).
    pub active: AtomicU64,
    /// Datagrams on the server port.
    pub requests: AtomicU64,
    pub started: AtomicU64,
    pub completed: AtomicU64,
    /// Ended by the client's ERROR (EDK2's size probe ends so, with ERROR 8).
    pub client_errors: AtomicU64,
    pub timed_out: AtomicU64,
    /// Cut off at `tftp.max_transfer_secs`.
    pub too_long: AtomicU64,
    /// Ended by a failed read or send.
    pub failed: AtomicU64,
    /// Transfers that were not progressing, ended to make room for a new request at the
    /// global cap (the two below together).
    pub evicted: AtomicU64,
    /// ... because their address had started a newer transfer (EDK2's size probe).
    pub evicted_superseded: AtomicU64,
    /// ... because their client had not answered within `slots::ANSWER_GRACE`.
    pub evicted_unanswered: AtomicU64,
    /// Requests dropped without an answer at the global cap, every transfer progressing.
    pub refused_busy: AtomicU64,
    pub refused_per_client: AtomicU64,
    /// No such file, outside the root, not a regular file.
    pub refused_file: AtomicU64,
    /// Malformed packets, unknown modes, write requests.
    pub refused_bad: AtomicU64,
    /// RRQs from the address and port of a transfer in progress (retransmissions), ignored.
    pub repeated: AtomicU64,
    pub resent_timeout: AtomicU64,
    pub resent_duplicate_ack: AtomicU64,
    /// Per-transfer phase times.
    pub phases: Phases,
}

/// How long the phases of a transfer's start took, each a histogram. A request's
/// arrival is the kernel's receive timestamp (`SO_TIMESTAMPNS`), so time spent waiting
/// in the socket's queue counts.
#[derive(Default, Debug)]
pub struct Phases {
    /// Arrival -> read by the server loop (socket queue and the loop's scheduling).
    pub queued: Histogram,
    /// Read -> the transfer's task running (task scheduling).
    pub started: Histogram,
    /// Task running -> file resolved and open (a turn at opening, the blocking pool; a
    /// name resolved in the last second takes no time).
    pub opened: Histogram,
    /// Arrival -> the first answer (OACK, DATA or ERROR) handed to the kernel.
    pub first_reply: Histogram,
}

impl Phases {
    fn all(&self) -> [(&'static str, &Histogram); 4] {
        [
            ("queued", &self.queued),
            ("started", &self.started),
            ("opened", &self.opened),
            ("first_reply", &self.first_reply),
        ]
    }
}

/// Upper bounds of the histogram buckets, in microseconds (Prometheus' `le`), the last
/// bucket being everything above.
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A histogram of durations with fixed buckets ([`BUCKETS_US`]), lock-free.
#[derive(Default, Debug)]
pub struct Histogram {
    /// Per bucket (not cumulative), the last one above the largest bound.
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.partition_point(|b| *b < us);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The bucket bound at or below which a fraction `q` of the samples fall, in
    /// microseconds (None: no samples; `u64::MAX`: above the largest bound).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BUCKETS_US.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }

    /// Prometheus histogram lines of `name` with `label` (`key="value"`).
    fn prometheus(&self, out: &mut String, name: &str, label: &str) {
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = match BUCKETS_US.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".into(),
            };
            let _ = writeln!(out, "{name}_bucket{{{label},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{label}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{label}}} {cumulative}");
    }

    /// `{count, p50_ms, p90_ms, p99_ms}` (quantiles as bucket bounds; null above the
    /// largest), for `xboot status`.
    fn summary(&self) -> serde_json::Value {
        let ms = |q| {
            self.quantile_us(q)
                .filter(|us| *us != u64::MAX)
                .map(|us| us as f64 / 1e3)
        };
        serde_json::json!({
            "count": self.count(),
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
        })
    }
}

impl Stats {
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    pub fn outcome(&self, o: &Outcome) {
        match o {
            Outcome::Completed => &self.completed,
            Outcome::ClientError { .. } => &self.client_errors,
            Outcome::TimedOut => &self.timed_out,
            Outcome::TooLong => &self.too_long,
        }
        .fetch_add(1, Relaxed);
    }

    /// The counters and phase summaries as JSON (`xboot status`).
    pub fn snapshot(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let phases: serde_json::Map<String, serde_json::Value> = self
            .phases
            .all()
            .into_iter()
            .map(|(k, h)| (k.to_string(), h.summary()))
            .collect();
        serde_json::json!({
            "active": g(&self.active),
            "requests": g(&self.requests),
            "started": g(&self.started),
            "completed": g(&self.completed),
            "client_errors": g(&self.client_errors),
            "timed_out": g(&self.timed_out),
            "failed": g(&self.failed),
            "evicted": g(&self.evicted),
            "evicted_superseded": g(&self.evicted_superseded),
            "evicted_unanswered": g(&self.evicted_unanswered),
            "refused": {
                "busy": g(&self.refused_busy),
                "per_client": g(&self.refused_per_client),
                "file": g(&self.refused_file),
                "bad_request": g(&self.refused_bad),
            },
            "repeated": g(&self.repeated),
            "resent_timeout": g(&self.resent_timeout),
            "resent_duplicate_ack": g(&self.resent_duplicate_ack),
            "phases": phases,
        })
    }

    /// Prometheus text format.
    pub fn prometheus(&self) -> String {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let mut out = String::new();
        out.push_str("# HELP xboot_tftp_transfers_active TFTP transfers in progress.\n");
        out.push_str("# TYPE xboot_tftp_transfers_active gauge\n");
        let _ = writeln!(out, "xboot_tftp_transfers_active {}", g(&self.active));
        out.push_str("# HELP xboot_tftp_requests_total Datagrams received on the TFTP port.\n");
        out.push_str("# TYPE xboot_tftp_requests_total counter\n");
        let _ = writeln!(out, "xboot_tftp_requests_total {}", g(&self.requests));
        out.push_str("# HELP xboot_tftp_repeated_requests_total RRQs repeated by a client whose transfer is in progress (ignored).\n");
        out.push_str("# TYPE xboot_tftp_repeated_requests_total counter\n");
        let _ = writeln!(
            out,
            "xboot_tftp_repeated_requests_total {}",
            g(&self.repeated)
        );
        out.push_str("# HELP xboot_tftp_transfers_total TFTP transfers by how they ended (started: begun).\n");
        out.push_str("# TYPE xboot_tftp_transfers_total counter\n");
        for (k, c) in [
            ("started", &self.started),
            ("completed", &self.completed),
            ("client_error", &self.client_errors),
            ("timed_out", &self.timed_out),
            ("too_long", &self.too_long),
            ("failed", &self.failed),
            ("evicted", &self.evicted),
        ] {
            let _ = writeln!(
                out,
                "xboot_tftp_transfers_total{{outcome=\"{k}\"}} {}",
                g(c)
            );
        }
        out.push_str("# HELP xboot_tftp_evicted_total TFTP transfers ended at the global cap to admit a request, by why they were not progressing.\n");
        out.push_str("# TYPE xboot_tftp_evicted_total counter\n");
        for (k, c) in [
            ("superseded", &self.evicted_superseded),
            ("unanswered", &self.evicted_unanswered),
        ] {
            let _ = writeln!(out, "xboot_tftp_evicted_total{{why=\"{k}\"}} {}", g(c));
        }
        out.push_str("# HELP xboot_tftp_refused_total TFTP requests refused: busy (at the global cap, every transfer progressing) dropped without an answer so the client retries; the others answered with an ERROR.\n");
        out.push_str("# TYPE xboot_tftp_refused_total counter\n");
        for (k, c) in [
            ("busy", &self.refused_busy),
            ("per_client", &self.refused_per_client),
            ("file", &self.refused_file),
            ("bad_request", &self.refused_bad),
        ] {
            let _ = writeln!(out, "xboot_tftp_refused_total{{reason=\"{k}\"}} {}", g(c));
        }
        out.push_str(
            "# HELP xboot_tftp_retransmissions_total Windows of DATA (or OACKs) sent again.\n",
        );
        out.push_str("# TYPE xboot_tftp_retransmissions_total counter\n");
        for (k, c) in [
            ("timeout", &self.resent_timeout),
            ("duplicate_ack", &self.resent_duplicate_ack),
        ] {
            let _ = writeln!(
                out,
                "xboot_tftp_retransmissions_total{{cause=\"{k}\"}} {}",
                g(c)
            );
        }
        out.push_str("# HELP xboot_tftp_phase_seconds Time of each phase of a transfer's start (queued: in the socket queue; started: until its task ran; opened: file resolution; first_reply: arrival to first answer).\n");
        out.push_str("# TYPE xboot_tftp_phase_seconds histogram\n");
        for (k, h) in self.phases.all() {
            h.prometheus(
                &mut out,
                "xboot_tftp_phase_seconds",
                &format!("phase=\"{k}\""),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_quantiles_and_text() {
        let h = Histogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for ms in [0.05, 0.3, 3.0, 3.0, 40.0, 20_000.0] {
            h.record(Duration::from_secs_f64(ms / 1e3));
        }
        assert_eq!(h.count(), 6);
        // Ranks: 0.05 ms -> 100 us, 0.3 -> 500, 3 -> 5,000 (twice), 40 -> 50,000, 20 s ->
        // above the largest bound.
        assert_eq!(h.quantile_us(0.0), Some(100));
        assert_eq!(h.quantile_us(0.5), Some(5_000));
        assert_eq!(h.quantile_us(0.8), Some(50_000));
        assert_eq!(h.quantile_us(0.99), Some(u64::MAX));
        let mut text = String::new();
        h.prometheus(&mut text, "m", "phase=\"x\"");
        assert!(
            text.contains("m_bucket{phase=\"x\",le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("m_bucket{phase=\"x\",le=\"0.005\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("m_bucket{phase=\"x\",le=\"10\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("m_bucket{phase=\"x\",le=\"+Inf\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("m_count{phase=\"x\"} 6\n"), "{text}");
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("m_sum{phase=\"x\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 20.04635).abs() < 1e-6, "{sum}");
        let s = h.summary();
        assert_eq!(s["count"], 6);
        assert_eq!(s["p50_ms"], 5.0);
        assert!(s["p99_ms"].is_null(), "above the largest bound: {s}");
    }

    #[test]
    fn phases_are_in_the_metrics_and_the_snapshot() {
        let st = Stats::default();
        st.phases.first_reply.record(Duration::from_millis(7));
        st.phases.opened.record(Duration::from_micros(40));
        let text = st.prometheus();
        for phase in ["queued", "started", "opened", "first_reply"] {
            assert!(
                text.contains(&format!(
                    "xboot_tftp_phase_seconds_count{{phase=\"{phase}\"}}"
                )),
                "{phase}: {text}"
            );
        }
        assert!(
            text.contains("xboot_tftp_phase_seconds_bucket{phase=\"first_reply\",le=\"0.01\"} 1\n")
        );
        assert!(text
            .contains("xboot_tftp_phase_seconds_bucket{phase=\"first_reply\",le=\"0.005\"} 0\n"));
        let snap = st.snapshot();
        assert_eq!(snap["phases"]["first_reply"]["p50_ms"], 10.0);
        assert_eq!(snap["phases"]["opened"]["p99_ms"], 0.1);
        assert_eq!(snap["phases"]["queued"]["count"], 0);
    }

    /// Evictions by why and refusals by reason, in both `/metrics` and `xboot status`.
    #[test]
    fn evictions_and_refusals_are_counted_in_both() {
        let st = Stats::default();
        for (c, n) in [
            (&st.evicted_superseded, 3),
            (&st.evicted_unanswered, 2),
            (&st.evicted, 5),
            (&st.refused_busy, 7),
            (&st.refused_per_client, 1),
        ] {
            c.store(n, Relaxed);
        }
        let text = st.prometheus();
        for line in [
            "xboot_tftp_evicted_total{why=\"superseded\"} 3\n",
            "xboot_tftp_evicted_total{why=\"unanswered\"} 2\n",
            "xboot_tftp_transfers_total{outcome=\"evicted\"} 5\n",
            "xboot_tftp_refused_total{reason=\"busy\"} 7\n",
            "xboot_tftp_refused_total{reason=\"per_client\"} 1\n",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        let snap = st.snapshot();
        assert_eq!(
            (
                snap["evicted"].as_u64(),
                snap["evicted_superseded"].as_u64()
            ),
            (Some(5), Some(3))
        );
        assert_eq!(snap["evicted_unanswered"], 2);
        assert_eq!(snap["refused"]["busy"], 7);
        assert_eq!(snap["refused"]["per_client"], 1);
        assert_eq!(snap["refused"]["file"], 0);
    }
}
