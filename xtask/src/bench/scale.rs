//! `cargo xtask bench scale [--hosts 1000,10000,100000] [--changes 300] [--mode xdp]`:
//! one server with N hosts (issue 16's single-server targets). Per N, in a network
//! namespace of its own with a veth the XDP program attaches to:
//! - import: `xboot serve` with hosts.json and images.json (into an empty store), seconds
//!   to ready (the API socket answers: the maps are synced before it listens);
//! - cold start from the store alone (no inventory files), seconds to ready;
//! - API changes over the unix socket, one keep-alive connection, one at a time: a tag
//!   added, an address moved to a free one, `provision` toggled, a host deleted and added
//!   again, in turn on random hosts; p50/p99/max of each request's round trip;
//! - the server's RSS after start and after the changes (VmRSS, VmHWM);
//! - the kernel memory of its BPF maps, from the kernel: `memlock` of every map
//!   descriptor in /proc/PID/fdinfo, per map and summed.
//!
//! A separate benchmark rather than a `--hosts` mode of another one: none of the others
//! measures the inventory's own costs (they boot a handful of hosts). Builds xboot in
//! release (or takes `XBOOT_BIN`). Results: `OUT/scale.json` and `OUT/scale.md`. Needs
//! root (namespaces, XDP).
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use testlab::netns::Netns;

use crate::util;

#[derive(clap::Parser, Debug)]
struct Args {
    /// Inventory sizes.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    hosts: Vec<usize>,
    /// API changes timed per size.
    #[arg(long, default_value_t = 300)]
    changes: usize,
    /// `dhcp.mode` of the server (`xdp` measures the kernel maps; `userspace` has none).
    #[arg(long, default_value = "xdp")]
    mode: String,
    #[arg(long, default_value = "target/bench/scale")]
    out: PathBuf,
}

#[derive(Debug, Default, Serialize)]
struct Row {
    hosts: usize,
    mode: String,
    import_s: f64,
    cold_start_s: f64,
    changes: usize,
    change_p50_ms: f64,
    change_p99_ms: f64,
    change_max_ms: f64,
    rss_start_mib: f64,
    rss_after_changes_mib: f64,
    hwm_after_changes_mib: f64,
    /// Sum of the maps' memlock, MiB.
    maps_mib: f64,
    /// (map type, max entries, value size, memlock bytes) per map.
    maps: Vec<(String, u64, u64, u64)>,
}

pub fn run(argv: &[String]) -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::try_parse_from(
        std::iter::once("bench scale".to_string()).chain(argv.iter().cloned()),
    )?;
    if !util::is_root() {
        bail!("bench scale needs root (network namespaces, XDP)");
    }
    let (xboot, out) = util::bench_start(&args.out)?;
    let mut rows = vec![];
    for &n in &args.hosts {
        let row = one_size(&xboot, &out, n, &args).with_context(|| format!("{n} hosts"))?;
        eprintln!("[bench] {row:?}");
        rows.push(row);
    }
    std::fs::write(out.join("scale.json"), serde_json::to_string_pretty(&rows)?)?;
    let md = report(&rows, &xboot);
    std::fs::write(out.join("scale.md"), &md)?;
    println!("{md}\nreport: {}", out.join("scale.md").display());
    Ok(())
}

/// Host `i`'s MAC and address (10.64.0.0/10 holds 4 million).
fn mac(i: usize) -> String {
    format!(
        "02:5c:{:02x}:{:02x}:{:02x}:{:02x}",
        (i >> 24) & 0xff,
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

fn ip(i: usize) -> String {
    let a = (10u32 << 24 | 64 << 16) + 16 + i as u32;
    format!("{}/10", std::net::Ipv4Addr::from(a))
}

fn host(i: usize, addr: usize) -> serde_json::Value {
    serde_json::json!({
        "name": format!("cn{i}"),
        "provision": true,
        "boot_image": "img",
        "interfaces": [{ "mac": mac(i), "ip": ip(addr) }],
    })
}

fn one_size(xboot: &Path, out: &Path, n: usize, args: &Args) -> anyhow::Result<Row> {
    let dir = out.join(format!("n{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("images"))?;
    std::fs::write(dir.join("images/vmlinuz"), b"kernel")?;
    let q = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("a string");
    let hosts: Vec<serde_json::Value> = (0..n).map(|i| host(i, i)).collect();
    std::fs::write(dir.join("hosts.json"), serde_json::to_string(&hosts)?)?;
    let images = serde_json::json!([{ "name": "img", "kernel": dir.join("images/vmlinuz").display().to_string(), "cmdline": "console=ttyS0" }]);
    std::fs::write(dir.join("images.json"), images.to_string())?;
    let config = |with_files: bool| {
        let files = if with_files {
            format!(
                "hosts = {}\nimages = {}\n",
                q(&dir.join("hosts.json")),
                q(&dir.join("images.json"))
            )
        } else {
            String::new()
        };
        format!(
            "interface = \"srv0\"\nstate_dir = {state}\n{files}\n[dhcp]\nmode = \"{mode}\"\n\
             listen = \"0.0.0.0:67\"\n\n[tftp]\nlisten = \"0.0.0.0:69\"\nroot = {images}\n\n\
             [provision]\nlisten = \"0.0.0.0:8080\"\nadvertise_url = \"http://10.64.0.1:8080\"\n\
             image_roots = [{images}]\n\n[api]\nsocket_path = {socket}\n",
            state = q(&dir.join("state")),
            mode = args.mode,
            images = q(&dir.join("images")),
            socket = q(&dir.join("api.socket")),
        )
    };
    let ns = Netns::new("scale");
    let peer = Netns::new("scalep");
    Netns::veth(&ns, "srv0", "10.64.0.1/10", &peer, "up0", "");
    let socket = dir.join("api.socket");
    let mut row = Row {
        hosts: n,
        mode: args.mode.clone(),
        ..Row::default()
    };

    std::fs::write(dir.join("import.toml"), config(true))?;
    let (pid, secs) = start(&ns, xboot, &dir, "import", &socket)?;
    row.import_s = secs;
    stop(pid)?;
    std::fs::write(dir.join("cold.toml"), config(false))?;
    let (pid, secs) = start(&ns, xboot, &dir, "cold", &socket)?;
    row.cold_start_s = secs;
    row.rss_start_mib = status_kib(pid, "VmRSS")? as f64 / 1024.0;
    row.maps = maps(pid)?;
    row.maps_mib = row.maps.iter().map(|m| m.3).sum::<u64>() as f64 / (1 << 20) as f64;

    let mut api = Api::connect(&socket)?;
    let mut times = vec![];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_addr = n; // free addresses above the inventory's
    for k in 0..args.changes {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let i = (rng % n as u64) as usize;
        let t0 = Instant::now();
        match k % 5 {
            0 => api.call(
                "POST",
                &format!("/v1/hosts/tag?nodeset=cn{i}"),
                r#"{"tags":["bench"]}"#,
            )?,
            1 => {
                next_addr += 1;
                api.call(
                    "PUT",
                    &format!("/v1/hosts/cn{i}"),
                    &host(i, next_addr).to_string(),
                )?
            }
            2 => api.call("POST", &format!("/v1/hosts/unprovision?nodeset=cn{i}"), "")?,
            3 => api.call("POST", &format!("/v1/hosts/provision?nodeset=cn{i}"), "")?,
            _ => {
                api.call("DELETE", &format!("/v1/hosts/cn{i}"), "")?;
                times.push(t0.elapsed());
                let t0 = Instant::now();
                next_addr += 1;
                api.call("POST", "/v1/hosts", &host(i, next_addr).to_string())?;
                times.push(t0.elapsed());
                continue;
            }
        }
        times.push(t0.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| ms(times[((times.len() - 1) as f64 * p).round() as usize]);
    row.changes = times.len();
    row.change_p50_ms = pct(0.5);
    row.change_p99_ms = pct(0.99);
    row.change_max_ms = ms(*times.last().expect("changes were made"));
    // Let the map sync and the old inventories' release finish before reading RSS.
    std::thread::sleep(Duration::from_secs(2));
    row.rss_after_changes_mib = status_kib(pid, "VmRSS")? as f64 / 1024.0;
    row.hwm_after_changes_mib = status_kib(pid, "VmHWM")? as f64 / 1024.0;
    stop(pid)?;
    Ok(row)
}

/// Starts `xboot serve --config DIR/NAME.toml` in `ns`; returns its pid and the seconds
/// until its API socket accepted a connection.
fn start(
    ns: &Netns,
    xboot: &Path,
    dir: &Path,
    name: &str,
    socket: &Path,
) -> anyhow::Result<(u32, f64)> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let config = dir.join(format!("{name}.toml")).display().to_string();
    let t0 = Instant::now();
    let pid = ns.spawn(
        &[&xboot.display().to_string(), "serve", "--config", &config],
        Stdio::null(),
        Stdio::from(log),
    );
    loop {
        if UnixStream::connect(socket).is_ok() {
            return Ok((pid, t0.elapsed().as_secs_f64()));
        }
        if !Path::new(&format!("/proc/{pid}")).exists() || testlab::interrupted() {
            bail!(
                "xboot serve ({name}) stopped; see {}",
                dir.join(format!("{name}.log")).display()
            );
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("xboot serve ({name}) not ready after 600 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, and waits until the process is gone (the store is free again).
fn stop(pid: u32) -> anyhow::Result<()> {
    // SAFETY: kill(2) on the pid of a child this benchmark started (not yet reaped).
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie whose threads are all gone (reaped when the namespace drops).
        if state.is_empty()
            || state.contains(") Z ")
                && std::fs::read_dir(format!("/proc/{pid}/task"))
                    .map(|d| d.count() <= 1)
                    .unwrap_or(true)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("xboot serve (pid {pid}) did not stop after SIGTERM")
}

fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// The BPF maps the process holds, as the kernel accounts them: (type, max entries,
/// value size, memlock bytes) from /proc/PID/fdinfo.
pub(super) fn maps(pid: u32) -> anyhow::Result<Vec<(String, u64, u64, u64)>> {
    let mut out = vec![];
    let mut seen = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(e?.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let (Some(ty), Some(id)) = (field("map_type"), field("map_id")) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let num = |k: &str| field(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        // enum bpf_map_type
        let ty = match ty.as_str() {
            "1" => "hash".to_string(),
            "2" => "array".to_string(),
            "6" => "percpu_array".to_string(),
            other => format!("type {other}"),
        };
        out.push((ty, num("max_entries"), num("value_size"), num("memlock")));
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.3));
    Ok(out)
}

/// One keep-alive HTTP/1.1 connection to the API's unix socket (a hand-written request
/// line and Content-Length framing: the round trip measured is the server's, with no
/// client process or library start-up in it).
pub(super) struct Api {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Api {
    pub(super) fn connect(path: &Path) -> anyhow::Result<Api> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Api { s, buf: vec![] })
    }

    /// A request that must be answered 200.
    pub(super) fn call(&mut self, method: &str, path: &str, body: &str) -> anyhow::Result<()> {
        let (status, answer) = self.request(method, path, body)?;
        if status != 200 {
            bail!("{method} {path}: {status} {answer}");
        }
        Ok(())
    }

    /// A request; its status and body.
    pub(super) fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        write!(
            self.s,
            "{method} {path} HTTP/1.1\r\nHost: xboot\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        self.read_response()
    }

    fn read_response(&mut self) -> anyhow::Result<(u16, String)> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .context("bad status line")?;
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    let got = self.s.read(&mut chunk)?;
                    if got == 0 {
                        bail!("the API closed the connection");
                    }
                    self.buf.extend_from_slice(&chunk[..got]);
                }
                let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).to_string();
                self.buf.drain(..end + 4 + len);
                return Ok((status, body));
            }
            let got = self.s.read(&mut chunk)?;
            if got == 0 {
                bail!("the API closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }
}

fn report(rows: &[Row], xboot: &Path) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# bench scale: one server, N hosts\n");
    let _ = writeln!(md, "Binary: `{}`. API changes one at a time over one keep-alive unix-socket connection (tag, address move, unprovision, provision, delete + add).\n", xboot.display());
    let _ = writeln!(md, "| hosts | mode | import s | cold start s | changes | change p50 ms | p99 ms | max ms | RSS start MiB | RSS after MiB | HWM MiB | BPF maps MiB |");
    let _ = writeln!(
        md,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.1} |",
            r.hosts, r.mode, r.import_s, r.cold_start_s, r.changes, r.change_p50_ms, r.change_p99_ms,
            r.change_max_ms, r.rss_start_mib, r.rss_after_changes_mib, r.hwm_after_changes_mib, r.maps_mib
        );
    }
    let _ = writeln!(
        md,
        "\nLargest maps (type, max entries, value size, memlock MiB) at the largest N:\n"
    );
    if let Some(r) = rows.last() {
        for (ty, max, val, mem) in r.maps.iter().take(4) {
            let _ = writeln!(
                md,
                "- {ty}: {max} x {val} B = {:.1} MiB",
                *mem as f64 / (1 << 20) as f64
            );
        }
    }
    md
}
