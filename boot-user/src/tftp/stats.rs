//! Counters of the TFTP server, for `/metrics`.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
    /// Unanswered transfers dropped to make room for a new request at the global cap.
    pub evicted: AtomicU64,
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
        out.push_str("# HELP xboot_tftp_refused_total TFTP requests answered with an ERROR.\n");
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
        out
    }
}
