//! The abuse lab: a server namespace running `xboot serve` (userspace DHCP, TFTP, HTTP)
//! and a client namespace on the other end of a veth. The client veth carries the known
//! host cn1's MAC and address, plus [`ATTACK_ADDRS`] more addresses the floods come from.
//!
//! ```text
//! server ns                            client ns
//!  srv0 10.77.0.1/16 <=== veth ===> cl0 52:54:00:77:00:10
//!  (xboot serve)                        10.77.0.50/16 (cn1, primary: its clients' source)
//!                                       10.77.1.1 - 10.77.1.250 (the attackers)
//! ```
//! Also what every phase measures: the server process's memory and descriptors from
//! /proc, its `/metrics`, and the known host's DHCP, TFTP and HTTP, each by a real client.
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use testlab::netns::Netns;
use testlab::payload::Payload;
use testlab::serve::{LabFiles, Server};

pub const SRV_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const HTTP_PORT: u16 = testlab::serve::HTTP_PORT;
pub const CN1: &str = "cn1";
pub const CN1_MAC: &str = "52:54:00:77:00:10";
pub const CN1_IP: &str = "10.77.0.50";
pub const CLIENT_IF: &str = "cl0";
/// Source addresses of the floods: more than a per-source cap's worth of them, so that
/// the global caps are what a flood meets.
pub const ATTACK_ADDRS: u8 = 250;
/// The file the known host fetches by TFTP (what a BIOS PXE ROM loads).
pub const UNDIONLY: &str = "/usr/lib/ipxe/undionly.kpxe";
/// The bench's `provision.header_timeout_secs` (default 10): lowered so the HTTP phase's
/// 20,000 connections drain in seconds rather than a minute; the mechanism is the same.
pub const HEADER_TIMEOUT_SECS: u64 = 3;

pub struct Lab {
    // Field order is drop order: the server is killed before its namespaces go.
    pub server: Server,
    pub xboot: PathBuf,
    pub cli: Netns,
    pub srv: Netns,
    pub attackers: Vec<Ipv4Addr>,
}

impl Lab {
    pub fn start(xboot: &Path, payload: &Payload, dir: &Path) -> anyhow::Result<Lab> {
        let srv = Netns::new("abuse-srv");
        let cli = Netns::new("abuse-cli");
        Netns::veth(
            &srv,
            "srv0",
            &format!("{SRV_IP}/16"),
            &cli,
            CLIENT_IF,
            &format!("{CN1_IP}/16"),
        );
        cli.run(&["ip", "link", "set", CLIENT_IF, "down"]);
        cli.set_mac(CLIENT_IF, CN1_MAC);
        cli.run(&["ip", "link", "set", CLIENT_IF, "up"]);
        let attackers: Vec<Ipv4Addr> = (1..=ATTACK_ADDRS)
            .map(|i| Ipv4Addr::new(10, 77, 1, i))
            .collect();
        let batch = dir.join("attackers.ip");
        std::fs::create_dir_all(dir)?;
        let lines: String = attackers
            .iter()
            .map(|a| format!("addr add {a}/16 dev {CLIENT_IF}\n"))
            .collect();
        std::fs::write(&batch, lines)?;
        cli.run(&["ip", "-batch", &batch.display().to_string()]);
        let files = lab_files(&dir.join("server"), payload)?;
        let server = Server::start(xboot, &srv.name, files, Duration::from_secs(30))
            .map_err(anyhow::Error::msg)?;
        Ok(Lab {
            server,
            xboot: xboot.to_path_buf(),
            cli,
            srv,
            attackers,
        })
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// `GET /metrics` from inside the server namespace.
    pub fn metrics(&self) -> anyhow::Result<String> {
        in_ns(&self.srv.name, || -> anyhow::Result<String> {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, HTTP_PORT))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })?
    }

    /// One sample of a metric (the first line starting with `name` followed by a space).
    pub fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics()?;
        metric_value(&text, name).with_context(|| format!("no {name} in /metrics"))
    }

    /// Lines of the server's log containing `what`.
    pub fn log_lines(&self, what: &str) -> usize {
        std::fs::read_to_string(&self.server.files.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    }

    /// Entries of `xboot discovered`.
    pub fn discovered(&self) -> anyhow::Result<usize> {
        let socket = self.server.files.socket.display().to_string();
        let out = testlab::run(testlab::peers::own(&self.xboot).args([
            "discovered",
            "--json",
            "--socket",
            &socket,
        ]))
        .map_err(anyhow::Error::msg)?;
        let v: serde_json::Value = serde_json::from_str(&out).context("xboot discovered --json")?;
        Ok(v.as_array().map_or(0, Vec::len))
    }

    /// TCP connections in `state` (`established`, `syn-recv`) on the server's HTTP port
    /// (`ss` in its namespace).
    pub fn server_connections(&self, state: &str) -> usize {
        let port = format!(":{HTTP_PORT}");
        let out = self
            .srv
            .cmd(&["ss", "-Htn", "state", state, "sport", "=", &port])
            .output();
        out.map_or(usize::MAX, |o| {
            String::from_utf8_lossy(&o.stdout).lines().count()
        })
    }

    /// The server's soft open-files limit (it raises it to the hard one at start).
    pub fn open_files_limit(&self) -> u64 {
        let limits =
            std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap_or_default();
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
            .unwrap_or(0)
    }
}

pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The lab's generated files (testlab's server config and image), with the inventory
/// holding cn1, the bench's header timeout and `dhcp.mode = "userspace"`.
fn lab_files(dir: &Path, payload: &Payload) -> anyhow::Result<LabFiles> {
    let f = testlab::serve::write_lab_files(dir, payload).map_err(anyhow::Error::msg)?;
    let config = testlab::serve::config_toml(&f).replace(
        "[provision]\n",
        &format!("[provision]\nheader_timeout_secs = {HEADER_TIMEOUT_SECS}\n"),
    );
    if !config.contains("header_timeout_secs") {
        bail!("testlab's config has no [provision] section");
    }
    std::fs::write(&f.config, config)?;
    // The floods are aimed at the userspace path (the DISCOVERs come from unknown MACs,
    // which XDP passes up anyway), as before XDP became the default.
    testlab::serve::set_dhcp_mode(&f, "userspace").map_err(anyhow::Error::msg)?;
    let hosts = serde_json::json!([{
        "name": CN1,
        "provision": true,
        "boot_image": testlab::serve::IMAGE,
        "interfaces": [{ "mac": CN1_MAC, "ip": format!("{CN1_IP}/16") }],
    }]);
    std::fs::write(&f.hosts, serde_json::to_string_pretty(&hosts)?)?;
    Ok(f)
}

/// Moves the calling thread into network namespace `ns` (sockets it opens live there).
pub fn enter(ns: &str) -> anyhow::Result<()> {
    let f = File::open(format!("/run/netns/{ns}")).with_context(|| format!("netns {ns}"))?;
    // SAFETY: setns on a namespace file we hold open; it changes only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside namespace `ns`.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in {ns} panicked"))?
    })
}

/// The server process as /proc shows it.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Mem {
    pub rss_kib: u64,
    /// High-water mark of RSS over the process's life so far.
    pub hwm_kib: u64,
    pub fds: u64,
}

pub fn mem(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Mem {
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        fds,
    }
}

/// Samples [`mem`] every 20 ms until `stop`; the maximum of each figure.
pub fn sample_peak(pid: u32, stop: &AtomicBool) -> Mem {
    let mut peak = Mem::default();
    loop {
        let m = mem(pid);
        peak.rss_kib = peak.rss_kib.max(m.rss_kib);
        peak.hwm_kib = peak.hwm_kib.max(m.hwm_kib);
        peak.fds = peak.fds.max(m.fds);
        if stop.load(Ordering::Relaxed) {
            return peak;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request of the known host: answered or not, how long it took (wall time of the
/// client process, so its start-up is included), what it got.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Answer {
    pub ok: bool,
    pub ms: f64,
    pub attempts: u32,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct KnownHost {
    pub dhcp: Answer,
    pub tftp: Answer,
    pub http: Answer,
}

impl KnownHost {
    pub fn all_ok(&self) -> bool {
        self.dhcp.ok && self.tftp.ok && self.http.ok
    }
}

/// cn1 boots as iPXE would: a lease (asking as iPXE, so the answer's boot file is its
/// script URL), undionly.kpxe by TFTP, the script by HTTP. Each client is tried up to
/// 3 times (a firmware retries too); the figures are of the whole.
pub fn boot_known_host(lab: &Lab, dir: &Path) -> KnownHost {
    let dhcp = retry(|| udhcpc(&lab.cli, dir));
    let url = dhcp
        .detail
        .split_whitespace()
        .find_map(|w| w.strip_prefix("boot_file="))
        .filter(|u| u.starts_with("http://"))
        .map(str::to_string)
        .unwrap_or_else(|| format!("http://{SRV_IP}:{HTTP_PORT}/"));
    let tftp = retry(|| tftp_get(&lab.cli, dir));
    let http = retry(|| curl(&lab.cli, &url));
    KnownHost { dhcp, tftp, http }
}

fn retry(mut once: impl FnMut() -> (bool, String)) -> Answer {
    let t0 = Instant::now();
    let mut a = Answer::default();
    for attempt in 1..=3 {
        let (ok, detail) = once();
        a = Answer {
            ok,
            ms: 0.0,
            attempts: attempt,
            detail,
        };
        if ok {
            break;
        }
    }
    a.ms = t0.elapsed().as_secs_f64() * 1000.0;
    a
}

/// busybox udhcpc, one DISCOVER/REQUEST exchange, user class `iPXE`; the lease's
/// address and boot file.
fn udhcpc(cli: &Netns, dir: &Path) -> (bool, String) {
    let env = dir.join("udhcpc.env");
    let _ = std::fs::remove_file(&env);
    let script = dir.join("udhcpc.sh");
    let body = format!(
        "#!/bin/sh\ncase \"$1\" in bound|renew) echo \"ip=$ip boot_file=$boot_file\" > {} ;; esac\nexit 0\n",
        env.display()
    );
    if std::fs::write(&script, body).is_err() {
        return (false, "cannot write the udhcpc script".into());
    }
    let _ = testlab::run(testlab::peers::command("chmod").arg("+x").arg(&script));
    let script = script.display().to_string();
    let status = cli
        .cmd(&[
            "busybox",
            "udhcpc",
            "-f",
            "-q",
            "-n",
            "-i",
            CLIENT_IF,
            "-s",
            &script,
            "-t",
            "5",
            "-T",
            "1",
            "-x",
            "0x4d:69505845",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let got = std::fs::read_to_string(&env).unwrap_or_default();
    let ok = status.is_ok_and(|s| s.success()) && got.contains(&format!("ip={CN1_IP} "));
    (ok, got.trim().to_string())
}

/// tftp-hpa fetches undionly.kpxe; answered if the copy is byte-identical.
fn tftp_get(cli: &Netns, dir: &Path) -> (bool, String) {
    let local = dir.join("undionly.kpxe");
    let _ = std::fs::remove_file(&local);
    let local_s = local.display().to_string();
    let out = cli
        .cmd(&[
            "tftp",
            "-m",
            "binary",
            &SRV_IP.to_string(),
            "-c",
            "get",
            "undionly.kpxe",
            &local_s,
        ])
        .output();
    let same = std::fs::read(&local).ok() == std::fs::read(UNDIONLY).ok();
    let text = out.map_or_else(
        |e| e.to_string(),
        |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
    );
    let size = std::fs::metadata(&local).map_or(0, |m| m.len());
    (same, format!("{size} bytes {text}").trim().to_string())
}

/// curl GETs `url`; answered if 200.
fn curl(cli: &Netns, url: &str) -> (bool, String) {
    let out = cli
        .cmd(&[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "60",
            url,
        ])
        .output();
    match out {
        Ok(o) => {
            let code = String::from_utf8_lossy(&o.stdout).trim().to_string();
            (code == "200", format!("{code} {url}"))
        }
        Err(e) => (false, e.to_string()),
    }
}
