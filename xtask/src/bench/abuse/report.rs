//! The abuse report: `abuse.json` (everything measured) and `abuse.md` (a table per
//! phase: the server's RSS and descriptors before, at the peak and after; the known
//! host's DHCP, TFTP and HTTP; the phase's own figures; the limits in force and why).
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::lab::{KnownHost, Mem};

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scale: f64,
    pub server_open_files_limit: u64,
    pub http_max_connections: u64,
    /// cn1 booted with nothing going on: the reference latencies.
    pub idle: KnownHost,
    pub phases: Vec<Phase>,
    pub total_secs: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub attack: String,
    pub secs: f64,
    pub before: Mem,
    pub peak: Mem,
    pub after: Mem,
    pub known_host: KnownHost,
    pub figures: Vec<Figure>,
    pub limits: Vec<Limit>,
    /// Bounds exceeded (each a failure of the run).
    pub violations: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Figure {
    pub what: String,
    pub value: String,
}

#[derive(Debug, Serialize)]
pub struct Limit {
    pub key: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl Phase {
    pub fn figure(&mut self, what: &str, value: impl ToString) {
        self.figures.push(Figure {
            what: what.into(),
            value: value.to_string(),
        });
    }

    pub fn limit(&mut self, key: &'static str, value: impl ToString, why: &'static str) {
        self.limits.push(Limit {
            key,
            value: value.to_string(),
            why,
        });
    }

    /// Records a violation unless `ok`.
    pub fn bound(&mut self, ok: bool, what: String) {
        if !ok {
            self.violations.push(what);
        }
    }
}

impl Report {
    /// Everything that makes the run fail: the known host not served, bounds exceeded.
    pub fn failures(&self) -> Vec<String> {
        let mut out = vec![];
        for p in &self.phases {
            let k = &p.known_host;
            for (what, a) in [("DHCP", &k.dhcp), ("TFTP", &k.tftp), ("HTTP", &k.http)] {
                if !a.ok {
                    out.push(format!(
                        "{}: cn1's {what} not answered ({})",
                        p.name, a.detail
                    ));
                }
            }
            out.extend(p.violations.iter().map(|v| format!("{}: {v}", p.name)));
        }
        out
    }
}

pub fn write(dir: &Path, r: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("abuse.json"), serde_json::to_string_pretty(r)?)?;
    std::fs::write(dir.join("abuse.md"), markdown(r))?;
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn answer(a: &super::lab::Answer) -> String {
    let tries = if a.attempts > 1 {
        format!(", {} tries", a.attempts)
    } else {
        String::new()
    };
    format!(
        "{} {:.0} ms{tries}",
        if a.ok { "yes" } else { "**NO**" },
        a.ms
    )
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# xboot under abuse (`cargo xtask bench abuse`)\n");
    let _ = writeln!(
        s,
        "Scale {}; the server's open-files limit {} (HTTP connection cap {}); total {:.0} s. \
         Latencies are wall times of the real clients (udhcpc, tftp-hpa, curl) started in the \
         client namespace, process start-up included; \"tries\": a client was run again after \
         failing, as a firmware retries.\n",
        r.scale, r.server_open_files_limit, r.http_max_connections, r.total_secs
    );
    let k = &r.idle;
    let _ = writeln!(
        s,
        "cn1 with no attack: DHCP {}, TFTP {}, HTTP {}.\n",
        answer(&k.dhcp),
        answer(&k.tftp),
        answer(&k.http)
    );
    for p in &r.phases {
        let _ = writeln!(s, "## {}: {}\n", p.name, p.attack);
        let _ = writeln!(s, "| | before | peak | after |\n| --- | --- | --- | --- |");
        let _ = writeln!(
            s,
            "| RSS | {} | {} | {} |",
            mib(p.before.rss_kib),
            mib(p.peak.rss_kib),
            mib(p.after.rss_kib)
        );
        let _ = writeln!(
            s,
            "| RSS high-water (VmHWM) | {} | {} | {} |",
            mib(p.before.hwm_kib),
            mib(p.peak.hwm_kib),
            mib(p.after.hwm_kib)
        );
        let _ = writeln!(
            s,
            "| descriptors | {} | {} | {} |\n",
            p.before.fds, p.peak.fds, p.after.fds
        );
        let k = &p.known_host;
        let _ = writeln!(
            s,
            "cn1 during the attack: DHCP {}, TFTP {}, HTTP {}.\n",
            answer(&k.dhcp),
            answer(&k.tftp),
            answer(&k.http)
        );
        let _ = writeln!(s, "| figure | value |\n| --- | --- |");
        for f in &p.figures {
            let _ = writeln!(s, "| {} | {} |", f.what, f.value);
        }
        let _ = writeln!(s, "\n| limit | value | why |\n| --- | --- | --- |");
        for l in &p.limits {
            let _ = writeln!(s, "| `{}` | {} | {} |", l.key, l.value, l.why);
        }
        if p.violations.is_empty() {
            let _ = writeln!(s, "\nBounds held ({:.1} s).\n", p.secs);
        } else {
            let _ = writeln!(s, "\n**Bounds exceeded:**\n");
            for v in &p.violations {
                let _ = writeln!(s, "- {v}");
            }
            s.push('\n');
        }
    }
    s
}
