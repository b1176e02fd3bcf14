//! The DHCP benchmark's output: JSON (every number), a short markdown report, and an
//! SVG plot (DORA/s per server, and p99 latency idle and under HTTP load), written by
//! hand: a few rectangles do not need a plotting crate.
use std::fmt::Write as _;
use std::path::Path;

use super::bench::{Cost, LatencyRound, ServerResult, COST_BATCHES, COST_REPEAT};

pub fn write(
    out: &Path,
    hosts: usize,
    json: &serde_json::Value,
    results: &[ServerResult],
    cost: &[Cost],
) {
    std::fs::write(
        out.join("dhcp.json"),
        serde_json::to_string_pretty(json).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("dhcp.svg"), svg(results)).unwrap();
    let mut md = markdown(hosts, results, cost);
    if let Some(stale) = json["stale_namespaces"]
        .as_array()
        .filter(|s| !s.is_empty())
    {
        let names: Vec<&str> = stale.iter().filter_map(|n| n.as_str()).collect();
        let _ = writeln!(
            md,
            "\n**Warning**: lab namespaces left by an interrupted run were present ({}). \
             XDP programs still attached in them can slow the programs measured (a killed \
             benchmark's namespaces made the answered requests' warm cost a third higher \
             here); delete them (`ip netns del NAME`) and measure again.",
            names.join(", ")
        );
    }
    std::fs::write(out.join("dhcp.md"), &md).unwrap();
    println!("{md}");
    eprintln!(
        "bench: wrote {}/dhcp.json, dhcp.md, dhcp.svg",
        out.display()
    );
}

fn markdown(hosts: usize, results: &[ServerResult], cost: &[Cost]) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# DHCP benchmark\n");
    let _ = writeln!(m, "{hosts} static hosts, one veth lab, 2 shared cores; load average at the end: {}. DORA/s: the in-kernel client (DISCOVERs written by BPF_PROG_TEST_RUN in live-frames mode, OFFERs turned into REQUESTs and ACKs counted by XDP on the client's veth); latency at 1000/s: the userspace raw-frame generator. Both check every OFFER and ACK against the client's inventory address and the server id.\n", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    let _ = writeln!(
        m,
        "| server | DORA/s (<1% drops) | DORA round trip p50 / p99 at 1000/s (us) | p99 under HTTP load (us) | server turnaround p50 / p99 (us) | turnaround p99 under HTTP load (us) |"
    );
    let _ = writeln!(m, "| --- | --- | --- | --- | --- | --- |");
    for r in results {
        let bound = if r.generator_bound {
            " (send limit: the shared cores sent no faster)"
        } else {
            ""
        };
        let http = r.under_http.as_ref().map_or("-".to_string(), |h| {
            format!("{} ({:.2}% lost)", h.p99_us, h.loss_pct)
        });
        let http_turn = r
            .under_http
            .as_ref()
            .map_or("-".to_string(), |h| h.turn_p99_us.to_string());
        let _ = writeln!(
            m,
            "| {} | {:.0}{bound} | {} / {} | {http} | {} / {} | {http_turn} |",
            r.name,
            r.dora_per_sec,
            r.idle.p50_us,
            r.idle.p99_us,
            r.idle.turn_p50_us,
            r.idle.turn_p99_us
        );
    }
    let get = |n: &str| results.iter().find(|r| r.name == n);
    if let (Some(x), Some(u), Some(d)) = (get("xboot-xdp"), get("xboot-userspace"), get("dnsmasq"))
    {
        let _ = writeln!(
            m,
            "\nxdp / userspace: {:.1}x; xdp / dnsmasq: {:.1}x (targets: 10x each).",
            x.dora_per_sec / u.dora_per_sec.max(1.0),
            x.dora_per_sec / d.dora_per_sec.max(1.0)
        );
        if let (Some(xh), Some(uh)) = (&x.under_http, &u.under_http) {
            let _ = writeln!(
                m,
                "p99 under HTTP load / idle (target for xdp: within 2x): server turnaround: \
                 xdp {:.1}x, userspace {:.1}x; DORA round trip: xdp {:.1}x, userspace {:.1}x.",
                xh.turn_p99_us as f64 / x.idle.turn_p99_us.max(1) as f64,
                uh.turn_p99_us as f64 / u.idle.turn_p99_us.max(1) as f64,
                xh.p99_us as f64 / x.idle.p99_us.max(1) as f64,
                uh.p99_us as f64 / u.idle.p99_us.max(1) as f64
            );
            if let (Some(xk), Some(uk)) = (&x.kernel_under_http, &u.kernel_under_http) {
                let _ = writeln!(
                    m,
                    "DORA round trip from the in-kernel client at 1000/s (no client wake-up \
                     in it), p99 idle -> under HTTP load: xdp {} -> {} us ({:.1}x), userspace \
                     {} -> {} us ({:.1}x).",
                    x.kernel_idle.p99_us,
                    xk.p99_us,
                    xk.p99_us as f64 / x.kernel_idle.p99_us.max(1) as f64,
                    u.kernel_idle.p99_us,
                    uk.p99_us,
                    uk.p99_us as f64 / u.kernel_idle.p99_us.max(1) as f64
                );
            }
            let _ = writeln!(
                m,
                "(Server turnaround, as perfdhcp reports it: discover-offer plus request-ack \
                 delay, each from just before the generator sends to the kernel's receive \
                 timestamp of the reply. The round trip adds the generator's own wake-up \
                 between OFFER and REQUEST: on this kernel (no preemption) a woken thread \
                 waits for the HTTP server's system calls on its core to finish, which a \
                 client on its own machine never does.)"
            );
            let _ = writeln!(
                m,
                "(Latency runs: the generators' threads run SCHED_FIFO, standing for clients on \
                 other machines, and the in-kernel client writes one DISCOVER per call, so a \
                 late wake-up of its pacing thread never sends a burst; the HTTP load is 4 curl loops downloading a 256 MiB file from \
                 a Python server in the server's namespace, over a second veth pair.)"
            );
            let _ = writeln!(
                m,
                "\nLatency rounds (idle: the HTTP server stopped, its clients' connections \
                 open; then resumed), p99 in us, idle -> under HTTP load, and each measure's \
                 median ratio; the figures above are the first setup's median rounds. The \
                 HTTP load's TCP runs upstream Linux's default congestion control, CUBIC, \
                 set on the lab's routes rather than inherited from the host (whose kernel \
                 here defaults to BBR). BBR: the same load \
                 with BBR, which paces its sends with a high-resolution timer on devices \
                 without the fq qdisc (veth here), one timer interrupt per paced burst \
                 (~18,000/s here), each a VM exit and a softirq that lands on whatever the \
                 CPU is doing. Confined: the HTTP server and its clients moved to CPU 1 \
                 (taskset) and the DHCP generators kept on CPU 0 (on veth a frame's \
                 receive path, the XDP program included, runs on the sender's CPU), as an \
                 administrator keeps the image server off the core that takes the DHCP NIC \
                 queue's interrupts; here the clients' share of the load, which belongs to \
                 other machines, goes with it. After each setup, what the HTTP server sent \
                 during its loaded runs and how busy both CPUs were:\n"
            );
            for r in [x, u] {
                for set in &r.latency {
                    let rounds: Vec<String> = set
                        .rounds
                        .iter()
                        .map(|l| {
                            format!(
                                "{} -> {} / {} -> {}",
                                l.kernel_idle.p99_us,
                                l.kernel_under_http.p99_us,
                                l.idle.turn_p99_us,
                                l.under_http.turn_p99_us,
                            )
                        })
                        .collect();
                    let range = |f: fn(&LatencyRound) -> f64| {
                        let v = set.rounds.iter().map(f);
                        let lo = v.clone().fold(f64::INFINITY, f64::min);
                        (lo, v.fold(0.0, f64::max))
                    };
                    let gbit = range(|l| l.http_gbit_s);
                    let busy = range(|l| l.cpu_busy * 100.0);
                    let _ = writeln!(
                        m,
                        "- {}, {}: in-kernel round trip {:.1}x, turnaround {:.1}x (rounds, \
                         in-kernel / turnaround: {}; HTTP {:.1}-{:.1} Gbit/s, CPUs \
                         {:.0}-{:.0}% busy)",
                        r.name,
                        set.setup,
                        set.kernel_ratio,
                        set.turnaround_ratio,
                        rounds.join("; "),
                        gbit.0,
                        gbit.1,
                        busy.0,
                        busy.1
                    );
                }
            }
        }
    }
    server_cost(&mut m, results);
    let _ = writeln!(
        m,
        "\nXDP program cost per request (BPF_PROG_TEST_RUN): single passes, median / min, \
         each after a system call (cold caches, the test run's own timing included); and \
         repeated: the mean of {COST_REPEAT} runs in one call (warm caches), each on the \
         request written back by a harness that then tail-calls the program, the harness's \
         own share subtracted (kernel run-time statistics); the least of {COST_BATCHES} such \
         batches, and their median (noise from the machine's neighbours only adds):\n"
    );
    for c in cost {
        let _ = writeln!(
            m,
            "- {}: {} ns / {} ns; repeated {} ns (median of batches {} ns)",
            c.request, c.median, c.min, c.repeated, c.repeated_median
        );
    }
    let _ = writeln!(m, "\nRate sweep (in-kernel client; target -> sent/completed per second, loss, DORA round trip p99 in us):\n");
    for r in results {
        let steps: Vec<String> = r
            .sweep
            .iter()
            .map(|s| {
                let wrong = match s.wrong_offers {
                    0 => String::new(),
                    n => format!(", {n} wrong OFFERs"),
                };
                format!(
                    "{}->{:.0}/{:.0} ({:.1}%, {}{wrong})",
                    s.target_rate, s.send_rate, s.dora_per_sec, s.loss_pct, s.p99_us
                )
            })
            .collect();
        let _ = writeln!(m, "- {}: {}", r.name, steps.join(", "));
    }
    let _ = writeln!(m, "\n![DORA/s and p99](dhcp.svg)");
    m
}

/// The server's own cost per exchange: what one dedicated core could answer, as opposed
/// to the measured DORA/s, where generator and server share the cores.
fn server_cost(m: &mut String, results: &[ServerResult]) {
    if results.iter().all(|r| r.cost_per_dora_ns.is_none()) {
        return;
    }
    let _ = writeln!(m, "\nServer cost per DORA, at each server's best step (not the headline: the DORA/s above are measured, with the generator on the same cores; this is what the server itself spends):\n");
    let _ = writeln!(m, "| server | ns per DORA | measured as |");
    let _ = writeln!(m, "| --- | --- | --- |");
    for r in results {
        let Some(cost) = r.cost_per_dora_ns else {
            continue;
        };
        let best = r.sweep.iter().find(|s| s.target_rate == r.best_rate);
        let how = match best.and_then(|s| s.xdp_ns_per_packet.map(|ns| (s, ns))) {
            Some((s, ns)) => format!(
                "2 x {ns:.0} ns: the XDP program's run time per packet (kernel BPF run-time statistics) at the {}/s step; {:.0} ns/packet over the whole sweep; the server's userspace threads meanwhile: {:.0} ns/DORA",
                s.target_rate,
                r.xdp_ns_per_packet.unwrap_or(f64::NAN),
                s.server_cpu_ns_per_dora.unwrap_or(f64::NAN)
            ),
            None => format!(
                "CPU time of the server's {} / completed DORAs at the {}/s step",
                if r.name == "dnsmasq" { "process" } else { "threads" },
                r.best_rate
            ),
        };
        let _ = writeln!(m, "| {} | {cost:.0} | {how} |", r.name);
    }
    let get = |n: &str| results.iter().find(|r| r.name == n);
    let cost = |n: &str| get(n).and_then(|r| r.cost_per_dora_ns);
    if let (Some(x), Some(u)) = (cost("xboot-xdp"), cost("xboot-userspace")) {
        let _ = writeln!(
            m,
            "\nuserspace / xdp cost per DORA: {:.1}x, the capacity ratio on a dedicated core (a different figure from the measured DORA/s ratio above, which stays the headline). The XDP figure leaves out the driver's work around the program (veth ring, XDP_TX) and includes the statistics' own timing; the userspace figure includes its syscalls but not the kernel's receive path in softirq.",
            u / x
        );
        if let Some(t) = xdp_threads(get("xboot-xdp")) {
            let _ = writeln!(
                m,
                "With the XDP server's userspace threads added (lease event rings, map upkeep): {:.0} ns per DORA, ratio {:.1}x.",
                x + t,
                u / (x + t)
            );
        }
    }
}

/// CPU time per DORA of the XDP server's userspace threads at its best step.
pub fn xdp_threads(r: Option<&ServerResult>) -> Option<f64> {
    let r = r?;
    let best = r.sweep.iter().find(|s| s.target_rate == r.best_rate)?;
    best.xdp_ns_per_packet?;
    best.server_cpu_ns_per_dora
}

fn svg(results: &[ServerResult]) -> String {
    let (w, h, bar) = (640.0, 300.0, 60.0);
    let max_rate = results.iter().map(|r| r.dora_per_sec).fold(1.0, f64::max);
    let max_p99 = results
        .iter()
        .flat_map(|r| [r.idle.p99_us, r.under_http.as_ref().map_or(0, |u| u.p99_us)])
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut s = format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>\n");
    let _ = writeln!(s, "<text x='10' y='16' font-size='13'>DORA/s (&lt;1% drops)</text><text x='330' y='16' font-size='13'>p99 latency, us (idle / HTTP load)</text>");
    for (i, r) in results.iter().enumerate() {
        let x = 20.0 + i as f64 * (bar + 30.0);
        let bh = 220.0 * r.dora_per_sec / max_rate;
        let _ = writeln!(
            s,
            "<rect x='{x}' y='{}' width='{bar}' height='{bh}' fill='#4a7ab5'/>",
            250.0 - bh
        );
        let _ = writeln!(
            s,
            "<text x='{x}' y='{}'>{:.0}</text>",
            245.0 - bh,
            r.dora_per_sec
        );
        let _ = writeln!(s, "<text x='{x}' y='265'>{}</text>", r.name);
        let x2 = 330.0 + i as f64 * (bar + 30.0);
        for (j, v) in [Some(r.idle.p99_us), r.under_http.as_ref().map(|u| u.p99_us)]
            .into_iter()
            .enumerate()
        {
            let Some(v) = v else { continue };
            let bh = 220.0 * v as f64 / max_p99;
            let color = if j == 0 { "#7ab54a" } else { "#b54a4a" };
            let xx = x2 + j as f64 * bar / 2.0;
            let _ = writeln!(
                s,
                "<rect x='{xx}' y='{}' width='{}' height='{bh}' fill='{color}'/>",
                250.0 - bh,
                bar / 2.0 - 2.0
            );
            let _ = writeln!(s, "<text x='{xx}' y='{}'>{v}</text>", 245.0 - bh);
        }
        let _ = writeln!(s, "<text x='{x2}' y='265'>{}</text>", r.name);
    }
    s.push_str("</svg>\n");
    s
}
