//! The four phases. Each runs its flood on a thread in the client namespace while a
//! sampler follows the server in /proc (and, where named, a gauge of `/metrics`), boots
//! cn1 in the middle of the flood, waits for the server to shed what the flood left, and
//! checks the bounds the server promises (config/README.md, the tftp and http module
//! docs), recording each one exceeded.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

use super::attack;
use super::lab::{self, KnownHost, Lab, Mem};
use super::report::{Phase, Report};
use super::Opts;

const MAX_TRANSFERS: u64 = 4096;
const MAX_PER_CLIENT: u64 = 8;
const PER_SOURCE: u64 = 64;
const DISCOVERED_CAPACITY: usize = 4096;
const LOG_BURST: u64 = 50;
const LOG_PER_SEC: u64 = 5;
/// A sanity ceiling on RSS for every phase (the defects of issue 19 reached 2.4 to
/// 4.1 GB); the bounds proper are on descriptors and counts.
const RSS_CEILING_KIB: u64 = 256 * 1024;
const ACTIVE: &str = "xboot_tftp_transfers_active";

pub fn run_all(lab: &Lab, opts: &Opts, dir: &Path, nofile: u64) -> anyhow::Result<Report> {
    let limit = lab.open_files_limit();
    let mut rep = Report {
        scale: opts.scale,
        server_open_files_limit: limit,
        http_max_connections: 4096.min(limit / 4),
        idle: lab::boot_known_host(lab, dir),
        ..Report::default()
    };
    let n = |full: f64| ((full * opts.scale).round() as usize).max(1);
    for name in &opts.only {
        if testlab::interrupted() {
            bail!("interrupted");
        }
        let t0 = Instant::now();
        let mut p = match name.as_str() {
            "tftp" => tftp(lab, dir, n(10_000.0))?,
            "probes" => probes(lab, dir, n(300.0))?,
            "http" => http(lab, dir, n(20_000.0), rep.http_max_connections, nofile)?,
            _ => dhcp(lab, dir, n(100_000.0))?,
        };
        p.secs = t0.elapsed().as_secs_f64();
        p.bound(
            p.peak.rss_kib <= RSS_CEILING_KIB,
            format!(
                "peak RSS {} KiB over the {RSS_CEILING_KIB} KiB ceiling",
                p.peak.rss_kib
            ),
        );
        let log = std::fs::read_to_string(&lab.server.files.log).unwrap_or_default();
        p.bound(
            !log.contains("panicked"),
            "the server's log shows a panic".into(),
        );
        p.bound(
            Path::new(&format!("/proc/{}", lab.pid())).exists(),
            "the server is gone".into(),
        );
        println!(
            "bench abuse: {name}: RSS {} -> {} -> {} KiB, fds {} -> {} -> {}, cn1 served: {}",
            p.before.rss_kib,
            p.peak.rss_kib,
            p.after.rss_kib,
            p.before.fds,
            p.peak.fds,
            p.after.fds,
            p.known_host.all_ok()
        );
        rep.phases.push(p);
    }
    Ok(rep)
}

/// What [`under_attack`] measured.
struct Measured<T> {
    before: Mem,
    peak: Mem,
    /// The peak of the `/metrics` gauge followed, if any.
    gauge_peak: f64,
    out: T,
}

/// Runs `attack` on a thread in the client namespace while sampling the server; returns
/// with the attack's result once it is done. `gauge`: a `/metrics` line to follow.
fn under_attack<T: Send>(
    lab: &Lab,
    gauge: Option<&str>,
    attack: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<Measured<T>> {
    let before = lab::mem(lab.pid());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| lab::sample_peak(lab.pid(), &stop));
        let gauge_sampler = s.spawn(|| {
            let mut peak: f64 = 0.0;
            let Some(g) = gauge else { return peak };
            loop {
                if let Ok(v) = lab.metric(g) {
                    peak = peak.max(v);
                }
                if stop.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let ns = lab.cli.name.clone();
        let out = s
            .spawn(move || {
                lab::enter(&ns)?;
                attack()
            })
            .join();
        stop.store(true, Ordering::Relaxed);
        let peak = sampler.join().unwrap_or_default();
        let gauge_peak = gauge_sampler.join().unwrap_or(0.0);
        let out = out.map_err(|_| anyhow::anyhow!("the attack thread panicked"))??;
        Ok(Measured {
            before,
            peak,
            gauge_peak,
            out,
        })
    })
}

/// Runs `flood` on this thread and boots cn1 on another, `after` into it.
fn boot_during<T>(
    lab: &Lab,
    dir: &Path,
    after: Duration,
    flood: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, KnownHost)> {
    std::thread::scope(|s| {
        let boot = s.spawn(|| {
            std::thread::sleep(after);
            lab::boot_known_host(lab, dir)
        });
        let out = flood();
        let known = boot.join().unwrap_or_default();
        Ok((out?, known))
    })
}

/// Polls `cond` every 10 ms for up to `limit`; the time it took to hold, if it did.
fn time_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if cond() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit || testlab::interrupted() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn counter(lab: &Lab, line: &str) -> f64 {
    lab.metric(line).unwrap_or(f64::NAN)
}

fn tftp_limits(p: &mut Phase) {
    p.limit("tftp.max_transfers", MAX_TRANSFERS, "Each transfer holds one UDP socket and one block buffer (blksize + 4 bytes; a file's descriptor is shared), so ~4,100 descriptors and 6 MB of buffers at blksize 1468, while a 2,000-node UEFI power-on (a size probe and a download each) fits.");
    p.limit(
        "tftp.max_per_client",
        MAX_PER_CLIENT,
        "A firmware runs one or two transfers at a time (EDK2: the size probe, then the download).",
    );
    p.limit("eviction at the cap", "silent >= 1 s", "A new request takes the place of the oldest transfer whose client has not answered for 1 s: a forged source never answers, a real client does within its round trip.");
    p.limit("silent client", "5 resends, 1 s apart (6 s)", "Client timeouts are accepted only in 1..=5 s; a transfer outlives its client's silence by 5 retransmissions at most.");
    p.limit("tftp.max_transfer_secs", 120, "A client trickling ACKs cannot hold a slot forever; 120 s is a 100 MB file at lock-step speed on a LAN.");
}

/// 1. Un-ACKed read requests from 250 addresses, 40 ports each (at full scale).
fn tftp(lab: &Lab, dir: &Path, n: usize) -> anyhow::Result<Phase> {
    let mut p = Phase {
        name: "tftp",
        attack: format!(
            "{n} un-ACKed TFTP read requests (undionly.kpxe, blksize 1468, tsize) over 4 s, {} from each of {} addresses in turn, each from its own port",
            n.div_ceil(lab.attackers.len()),
            lab.attackers.len()
        ),
        ..Phase::default()
    };
    let c = |k: &str| counter(lab, k);
    let (evicted0, per_client0, busy0, timed_out0) = (
        c("xboot_tftp_transfers_total{outcome=\"evicted\"}"),
        c("xboot_tftp_refused_total{reason=\"per_client\"}"),
        c("xboot_tftp_refused_total{reason=\"busy\"}"),
        c("xboot_tftp_transfers_total{outcome=\"timed_out\"}"),
    );
    let m = under_attack(lab, Some(ACTIVE), || {
        boot_during(lab, dir, Duration::from_millis(1500), || {
            attack::tftp_unacked(n, &lab.attackers, Duration::from_secs(4))
        })
    })?;
    let (socks, known) = m.out;
    let drained = time_until(Duration::from_secs(20), || {
        lab.metric(ACTIVE).is_ok_and(|v| v == 0.0)
    });
    drop(socks);
    let after = lab::mem(lab.pid());
    let peak_active = m.gauge_peak as u64;
    p.figure("requests sent", n);
    p.figure("transfers active at the peak (/metrics)", peak_active);
    p.figure(
        "refused, per-client cap (ERROR 0)",
        c("xboot_tftp_refused_total{reason=\"per_client\"}") - per_client0,
    );
    p.figure(
        "refused, server busy (dropped unanswered)",
        c("xboot_tftp_refused_total{reason=\"busy\"}") - busy0,
    );
    p.figure(
        "evicted at the global cap",
        c("xboot_tftp_transfers_total{outcome=\"evicted\"}") - evicted0,
    );
    p.figure(
        "timed out (silent client)",
        c("xboot_tftp_transfers_total{outcome=\"timed_out\"}") - timed_out0,
    );
    p.figure(
        "all transfers gone after the flood",
        drained.map_or("no, after 20 s".into(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        }),
    );
    tftp_limits(&mut p);
    p.bound(
        peak_active <= MAX_TRANSFERS,
        format!("{peak_active} transfers at once, over tftp.max_transfers {MAX_TRANSFERS}"),
    );
    let fd_cap = m.before.fds + MAX_TRANSFERS + 32;
    p.bound(
        m.peak.fds <= fd_cap,
        format!(
            "{} descriptors at the peak, over {fd_cap} (before + one per transfer + 32)",
            m.peak.fds
        ),
    );
    p.bound(
        drained.is_some(),
        "transfers still active 20 s after the flood".into(),
    );
    (p.before, p.peak, p.after, p.known_host) = (m.before, m.peak, after, known);
    Ok(p)
}

/// 2. Aborted UEFI size probes: the transfers must end at the client's ERROR.
fn probes(lab: &Lab, dir: &Path, n: usize) -> anyhow::Result<Phase> {
    let mut p = Phase {
        name: "probes",
        attack: format!(
            "{n} UEFI size probes at once (RRQ tsize 0 + blksize 1468, OACK, then ERROR 8 as EDK2 sends it) from {} addresses",
            lab.attackers.len().min(n)
        ),
        ..Phase::default()
    };
    let m = under_attack(lab, None, || {
        let (mut seen, live) = attack::size_probes(n, &lab.attackers)?;
        let active_held = lab.metric(ACTIVE)?;
        // cn1 boots while the probes' transfers are all open.
        let known = lab::boot_known_host(lab, dir);
        attack::abort_probes(&live, &mut seen)?;
        let to_zero = time_until(Duration::from_secs(10), || {
            lab.metric(ACTIVE).is_ok_and(|v| v == 0.0)
        });
        // The server resends on a 1 s timeout: a transfer that ignored the ERROR would
        // have sent its OACK again within 1.5 s.
        std::thread::sleep(Duration::from_millis(1500));
        let mut resent = 0;
        let mut buf = [0u8; 2048];
        for (s, _) in &live {
            s.set_nonblocking(true)?;
            while s.recv_from(&mut buf).is_ok() {
                resent += 1;
            }
        }
        anyhow::Ok((seen, active_held, known, to_zero, resent))
    })?;
    let (seen, active_held, known, to_zero, resent) = m.out;
    let after = lab::mem(lab.pid());
    p.figure(
        "OACKs received",
        format!(
            "{} of {} (tsize right in {})",
            seen.oacks, seen.sent, seen.tsize_ok
        ),
    );
    p.figure("transfers active before the ERRORs (/metrics)", active_held);
    p.figure(
        "active transfers at 0 after the last ERROR",
        to_zero.map_or("no, after 10 s".into(), |d| {
            format!("in {} ms", d.as_millis())
        }),
    );
    p.figure("datagrams sent after the ERROR (within 1.5 s)", resent);
    p.limit("client ERROR", "ends the transfer", "EDK2 probes the size (RRQ tsize, OACK, ERROR 8) on every UEFI PXE boot: a transfer that outlived it would hold a slot and re-send its OACK for minutes.");
    tftp_limits(&mut p);
    p.bound(
        seen.oacks == seen.sent,
        format!(
            "{} of {} probes got no OACK",
            seen.sent - seen.oacks,
            seen.sent
        ),
    );
    // Under the server's 1 s retransmission timeout: ended by the ERROR, not by silence.
    p.bound(
        to_zero.is_some_and(|d| d < Duration::from_secs(1)),
        format!("active transfers not at 0 within 1 s of the ERRORs ({to_zero:?})"),
    );
    p.bound(
        resent == 0,
        format!("{resent} datagrams sent after the client's ERROR"),
    );
    (p.before, p.peak, p.after, p.known_host) = (m.before, m.peak, after, known);
    Ok(p)
}

/// 3. Silent TCP connections to the HTTP port.
fn http(lab: &Lab, dir: &Path, n: usize, cap: u64, nofile: u64) -> anyhow::Result<Phase> {
    // This process's own descriptors bound how many it holds at once (the rest are
    // opened as the server closes earlier ones); 512 left for everything else.
    let at_once = (nofile.saturating_sub(512) as usize).clamp(1, n);
    let addrs = &lab.attackers;
    let mut p = Phase {
        name: "http",
        attack: format!(
            "{n} TCP connections to the HTTP port that never send a byte, {} from each of {} addresses in turn",
            n.div_ceil(addrs.len()),
            addrs.len()
        ),
        ..Phase::default()
    };
    let wait = Duration::from_secs(120);
    // Twice the header timeout with no close, and the server's kernel holding nothing
    // more (late handshakes complete as it re-sends SYN-ACKs, for up to a minute).
    let quiet = Duration::from_secs(2 * lab::HEADER_TIMEOUT_SECS + 2);
    let m = under_attack(lab, None, || {
        boot_during(lab, dir, Duration::from_secs(2), || {
            attack::idle_connections(n, at_once, addrs, lab::HTTP_PORT, quiet, wait, &|| {
                lab.server_connections("established") + lab.server_connections("syn-recv")
            })
        })
    })?;
    let (idle, known) = m.out;
    // A handshake completed in the last moments is closed within the header timeout.
    let header = Duration::from_secs(lab::HEADER_TIMEOUT_SECS + 2);
    let released = time_until(header, || lab.server_connections("established") == 0);
    let settled = time_until(Duration::from_secs(10), || {
        lab::mem(lab.pid()).fds <= m.before.fds + 2
    });
    let after = lab::mem(lab.pid());
    let held = lab.server_connections("established");
    p.figure("connections opened", idle.opened);
    p.figure(
        "open at once on the client side, at most",
        format!("{} (its open-files limit is {nofile})", idle.most_open),
    );
    p.figure(
        "answered 503 by the per-source cap",
        idle.refused_per_source,
    );
    p.figure(
        "closed silently by the server (header timeout)",
        idle.closed_silent,
    );
    p.figure(
        "other answers / resets / connect failures",
        format!(
            "{} / {} / {}",
            idle.other_answer, idle.errored, idle.failed_to_open
        ),
    );
    p.figure(
        "never accepted (handshake dropped by the server's kernel at a full accept queue; open only on the client side)",
        idle.still_open,
    );
    p.figure(
        "connections established on the server's port (ss) at 0, after the wait ended",
        released.map_or(format!("no: {held} after {header:?}"), |d| {
            format!("in {} ms", d.as_millis())
        }),
    );
    p.figure(
        "all closed by the server after",
        format!("{:.1} s", idle.drain_secs),
    );
    p.figure(
        "descriptors back to before + 2",
        settled.map_or("no, after 10 s".into(), |d| {
            format!("in {} ms", d.as_millis())
        }),
    );
    p.limit("provision.max_connections", cap, "4096, or a quarter of the open-files limit if less (a download holds a socket and a file). At the cap the server stops accepting: newcomers wait in the kernel's accept queue, which holds no descriptor of the server's.");
    p.limit("provision.max_connections_per_source", PER_SOURCE, "A booting node holds one or two connections, so one address cannot take the slots of a boot storm; the excess is answered 503 and closed.");
    p.limit("provision.header_timeout_secs", format!("{} (bench; default 10)", lab::HEADER_TIMEOUT_SECS), "Seconds to send a whole request head, from accept and after each response: silent and slowloris clients are closed after it. Lowered here so 20,000 connections drain in seconds; the mechanism is the default's.");
    p.limit(
        "provision.idle_timeout_secs",
        60,
        "No byte moving either way while no handler works (a stalled download or body).",
    );
    let fd_cap = m.before.fds + cap + 16;
    p.bound(
        m.peak.fds <= fd_cap,
        format!(
            "{} descriptors at the peak, over {fd_cap} (before + the connection cap + 16)",
            m.peak.fds
        ),
    );
    p.bound(
        held == 0,
        format!("the server still holds {held} connections {header:?} after the drain"),
    );
    p.bound(
        idle.other_answer == 0,
        format!(
            "{} silent connections got an answer other than 503",
            idle.other_answer
        ),
    );
    p.bound(
        settled.is_some(),
        format!(
            "{} descriptors 10 s after the last close (before: {})",
            after.fds, m.before.fds
        ),
    );
    (p.before, p.peak, p.after, p.known_host) = (m.before, m.peak, after, known);
    Ok(p)
}

/// 4. DISCOVERs from random unknown MACs.
fn dhcp(lab: &Lab, dir: &Path, n: usize) -> anyhow::Result<Phase> {
    const RATE: f64 = 25_000.0;
    let mut p = Phase {
        name: "dhcp",
        attack: format!(
            "{n} DHCPDISCOVERs from random unknown MACs, raw broadcast frames at ~{RATE:.0}/s"
        ),
        ..Phase::default()
    };
    const UNKNOWN: &str = "xboot_dhcp_userspace_total{counter=\"unknown\"}";
    let unknown0 = counter(lab, UNKNOWN);
    let lines0 = lab.log_lines("unknown MAC");
    let t0 = Instant::now();
    let cn1 = [0x52, 0x54, 0x00, 0x77, 0x00, 0x10];
    let m = under_attack(lab, None, || {
        boot_during(lab, dir, Duration::from_secs(1), || {
            attack::dhcp_discovers(lab::CLIENT_IF, n, RATE, cn1)
        })
    })?;
    let (sent, known) = m.out;
    // Let the server's queue drain and its log reach the file.
    std::thread::sleep(Duration::from_secs(2));
    let secs = t0.elapsed().as_secs_f64();
    let lines = lab.log_lines("unknown MAC") - lines0;
    let discovered = lab.discovered()?;
    let after = lab::mem(lab.pid());
    let seen = counter(lab, UNKNOWN) - unknown0;
    let allowed = LOG_BURST + LOG_PER_SEC * secs.ceil() as u64;
    p.figure("frames sent", sent);
    p.figure("unknown-MAC requests the server counted", seen);
    p.figure(
        format!("unknown-MAC log lines (over {secs:.1} s)").as_str(),
        lines,
    );
    p.figure("log lines the global limit allows in that time", allowed);
    p.figure("discovered table entries", discovered);
    p.limit("unknown-MAC log, all MACs", format!("{LOG_PER_SEC}/s after a burst of {LOG_BURST}"), "Anyone on the segment can send DISCOVERs from random MACs: 100,000 of them must not write 100,000 lines; a suppressed count is logged with the next line.");
    p.limit("dhcp.unknown_log_interval_secs", 60, "One line per unknown MAC at most this often; every request is still counted and listed by `xboot discovered`.");
    p.limit("discovered table", DISCOVERED_CAPACITY, "Bounded; at capacity the MAC seen least recently makes room, so a flood of new MACs costs a fixed amount of memory.");
    p.bound(
        lines as u64 <= allowed,
        format!("{lines} unknown-MAC log lines, over {allowed}"),
    );
    p.bound(
        discovered <= DISCOVERED_CAPACITY,
        format!("{discovered} discovered entries, over {DISCOVERED_CAPACITY}"),
    );
    (p.before, p.peak, p.after, p.known_host) = (m.before, m.peak, after, known);
    Ok(p)
}
