//! The servers under test, started in the storm's server namespace on the same
//! inventory and payload: `xboot serve` (testlab's harness and generated config, DHCP in
//! userspace or XDP mode) and the stack a user would pick instead, dnsmasq (static
//! dhcp-host entries, its own TFTP) + nginx (per-MAC iPXE scripts, kernel, initrd,
//! postscript, `return 200` for the completion POST), each stock or tuned.
//!
//! Every process is ours, killed by pid on drop; CPU and RSS are read from /proc.
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde::Serialize;
use testlab::payload::{Payload, PARAM_COMPLETE, PARAM_POSTSCRIPT};
use testlab::serve::{self, Server};

use crate::fabric::{node_ip, node_mac, node_name, Segments, PREFIX, SRV_IP};
use crate::node::mac_string;

pub const HTTP_PORT: u16 = serve::HTTP_PORT;
/// A second image, the same payload as the lab's: the inventory-reload fault switches
/// hosts to it.
pub const IMAGE_B: &str = "test-b";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// xboot, DHCP answered by its userspace server.
    XbootUserspace,
    /// xboot, DHCP answered by the XDP program.
    XbootXdp,
    /// dnsmasq + nginx with package defaults plus what is needed to work.
    DnsmasqStock,
    /// dnsmasq + nginx as a careful admin sets them.
    DnsmasqTuned,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::XbootUserspace,
        Kind::XbootXdp,
        Kind::DnsmasqStock,
        Kind::DnsmasqTuned,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Kind::XbootUserspace => "xboot-userspace",
            Kind::XbootXdp => "xboot-xdp",
            Kind::DnsmasqStock => "dnsmasq+nginx-stock",
            Kind::DnsmasqTuned => "dnsmasq+nginx-tuned",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s || k.name().starts_with(s))
    }
}

/// A running server under test.
pub enum Running {
    Xboot(Server),
    Stack { children: Vec<Child>, dir: PathBuf },
}

impl Running {
    /// The pids whose CPU and memory count as the server's (nginx: master and workers).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Running::Xboot(s) => vec![s.pid()],
            Running::Stack { children, .. } => {
                let mut v = vec![];
                for c in children {
                    v.push(c.id());
                    v.extend(testlab::children(c.id()));
                }
                v
            }
        }
    }

    pub fn log_hint(&self) -> String {
        match self {
            Running::Xboot(s) => s.files.log.display().to_string(),
            Running::Stack { dir, .. } => dir.display().to_string(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Stack { children, .. } = self {
            for c in children.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Grendel hosts.json for `n` storm nodes.
pub fn hosts_json(n: usize) -> String {
    hosts_json_with(n, false)
}

/// [`hosts_json`], each node with its BMC interface when `bmcs` ([`crate::power`]).
pub fn hosts_json_with(n: usize, bmcs: bool) -> String {
    hosts_json_in(&Segments::one(n), bmcs)
}

/// [`hosts_json_with`] for nodes split over segments: each node's address in its
/// segment's subnet.
pub fn hosts_json_in(seg: &Segments, bmcs: bool) -> String {
    let hosts: Vec<serde_json::Value> = (0..seg.n)
        .map(|i| {
            let mut ifs = vec![serde_json::json!({ "mac": mac_string(node_mac(i)), "ip": format!("{}/{PREFIX}", seg.node_ip(i)) })];
            if bmcs {
                ifs.push(crate::power::bmc_interface(i));
            }
            serde_json::json!({
                "name": node_name(i),
                "provision": true,
                "boot_image": serve::IMAGE,
                "interfaces": ifs,
            })
        })
        .collect();
    serde_json::to_string(&hosts).expect("json serializes")
}

/// Starts `kind` in `netns` for `n` nodes (and `extra` hosts.json entries, xboot only),
/// files under `dir`; with `bmcs`, xboot's inventory names each node's BMC and its config
/// the BMC credentials.
#[allow(clippy::too_many_arguments)]
pub fn start(
    kind: Kind,
    xboot: &Path,
    netns: &str,
    dir: &Path,
    n: usize,
    extra: &[serde_json::Value],
    payload: &Payload,
    bmcs: bool,
) -> Result<Running, String> {
    start_in(kind, xboot, netns, dir, n, extra, payload, bmcs, None)
}

/// A segment server in cluster mode: which segment of which split, and etcd's client URLs.
#[derive(Clone, Debug)]
pub struct SegmentServer {
    pub segments: Segments,
    pub segment: usize,
    pub endpoints: Vec<String>,
}

impl SegmentServer {
    /// Its `server_id` and segment name.
    pub fn id(&self) -> String {
        format!("seg{}", self.segment)
    }

    /// The `[cluster]` section: etcd, this server's id, its one segment's subnet.
    pub fn config(&self) -> String {
        let eps: Vec<String> = self.endpoints.iter().map(|e| format!("{e:?}")).collect();
        format!(
            "\n[cluster]\nendpoints = [{}]\nserver_id = \"{id}\"\n\n[[cluster.segment]]\nname = \"{id}\"\ninterfaces = [\"srv0\"]\nsubnets = [\"{}\"]\n",
            eps.join(", "),
            self.segments.subnet(self.segment),
            id = self.id(),
        )
    }
}

/// [`start`], as segment server `seg` of a cluster when given (xboot only): the lab
/// config with the segment's server address, and its `[cluster]` section. Its
/// hosts.json and images.json hold every segment's nodes (the cluster's inventory is
/// imported from them once, [`import`]); in cluster mode xboot does not read them.
#[allow(clippy::too_many_arguments)]
pub fn start_in(
    kind: Kind,
    xboot: &Path,
    netns: &str,
    dir: &Path,
    n: usize,
    extra: &[serde_json::Value],
    payload: &Payload,
    bmcs: bool,
    seg: Option<&SegmentServer>,
) -> Result<Running, String> {
    if !extra.is_empty() && !matches!(kind, Kind::XbootUserspace | Kind::XbootXdp) {
        return Err(format!("{}: extra hosts are for xboot only", kind.name()));
    }
    if seg.is_some() && !matches!(kind, Kind::XbootUserspace | Kind::XbootXdp) {
        return Err(format!(
            "{}: segment servers are xboot in cluster mode",
            kind.name()
        ));
    }
    match kind {
        Kind::XbootUserspace | Kind::XbootXdp => {
            let files = serve::write_lab_files(dir, payload)?;
            let split = seg.map_or(Segments::one(n), |s| s.segments);
            let mut hosts: Vec<serde_json::Value> =
                serde_json::from_str(&hosts_json_in(&split, bmcs)).map_err(|e| e.to_string())?;
            hosts.extend(extra.iter().cloned());
            std::fs::write(&files.hosts, serde_json::to_string(&hosts).expect("json"))
                .map_err(|e| e.to_string())?;
            let mut images: Vec<serde_json::Value> =
                serde_json::from_str(&serve::images_json(payload)).map_err(|e| e.to_string())?;
            let mut b = images[0].clone();
            b["name"] = IMAGE_B.into();
            images.push(b);
            std::fs::write(
                &files.images,
                serde_json::to_string(&images).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            let mode = if kind == Kind::XbootXdp {
                "xdp"
            } else {
                "userspace"
            };
            serve::set_dhcp_mode(&files, mode)?;
            let mut cfg = std::fs::read_to_string(&files.config).map_err(|e| e.to_string())?;
            if bmcs {
                cfg += &crate::power::bmc_config();
            }
            if let Some(s) = seg {
                // The lab config names the standalone server's address (advertise_url,
                // dns_servers): this segment's server has its own.
                cfg = cfg.replace(
                    &SRV_IP.to_string(),
                    &s.segments.server_ip(s.segment).to_string(),
                );
                cfg += &s.config();
            }
            std::fs::write(&files.config, cfg).map_err(|e| e.to_string())?;
            Server::start(xboot, netns, files, Duration::from_secs(60)).map(Running::Xboot)
        }
        Kind::DnsmasqStock | Kind::DnsmasqTuned => {
            start_stack(kind == Kind::DnsmasqTuned, netns, dir, n, payload)
        }
    }
}

/// Writes the inventory into the cluster once, through `server` (any one of them: the
/// inventory is shared): its images.json, then its hosts.json (`xboot image|host import`).
pub fn import(xboot: &Path, server: &Server) -> Result<(), String> {
    let socket = server.files.socket.display().to_string();
    for (what, file) in [
        ("image", &server.files.images),
        ("host", &server.files.hosts),
    ] {
        let out = testlab::peers::own(xboot)
            .args(["--socket", &socket, what, "import"])
            .arg(file)
            .output()
            .map_err(|e| format!("cannot run xboot {what} import: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "xboot {what} import {}: {}{}",
                file.display(),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

fn write(p: &Path, text: impl AsRef<[u8]>) -> Result<(), String> {
    std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// dnsmasq's config (the storm note §7.1).
pub fn dnsmasq_conf(tuned: bool, dir: &Path, n: usize) -> String {
    let mut c = format!(
        "# generated by the storm bench ({})\nport=0\ninterface=srv0\nbind-interfaces\nleasefile-ro\n\
         pid-file=\nlog-facility={}\nuser=root\n\
         dhcp-range={},static,255.255.0.0\ndhcp-hostsfile={}\ndhcp-lease-max={}\n\
         enable-tftp\ntftp-root=/usr/lib/ipxe\n\
         dhcp-userclass=set:ipxe,iPXE\n\
         dhcp-match=set:efi64,option:client-arch,7\n\
         dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi\n\
         dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe\n\
         dhcp-boot=tag:ipxe,http://{SRV_IP}:{HTTP_PORT}/boot.ipxe\nquiet-dhcp\n",
        if tuned { "tuned" } else { "stock" },
        dir.join("dnsmasq.log").display(),
        crate::fabric::node_ip(0),
        dir.join("hosts.dnsmasq").display(),
        2 * n.max(1000),
    );
    if tuned {
        c += &format!(
            "tftp-max={}\nno-ping\ndhcp-option=tag:ipxe,encap:175,176,1b\n",
            (2 * n).max(50)
        );
    }
    c
}

/// nginx's config: Debian's defaults (stock) or raised connection limits (tuned).
pub fn nginx_conf(tuned: bool, dir: &Path) -> String {
    let (conns, extra) = if tuned {
        (16384, "worker_rlimit_nofile 65536;\n")
    } else {
        (768, "")
    };
    format!(
        "# generated by the storm bench\nuser root;\nworker_processes auto;\ndaemon off;\n\
         pid {pid};\nerror_log {err};\n{extra}\
         events {{ worker_connections {conns}; }}\n\
         http {{\n  default_type application/octet-stream;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_timeout 65;\n\
         \x20 access_log {acc};\n  client_body_temp_path {tmp};\n\
         \x20 server {{\n    listen {SRV_IP}:{HTTP_PORT};\n    root {www};\n\
         \x20   location = /complete {{ return 200; }}\n  }}\n}}\n",
        pid = dir.join("nginx.pid").display(),
        err = dir.join("nginx-error.log").display(),
        acc = dir.join("nginx-access.log").display(),
        tmp = dir.join("tmp").display(),
        www = dir.join("www").display(),
    )
}

fn start_stack(
    tuned: bool,
    netns: &str,
    dir: &Path,
    n: usize,
    payload: &Payload,
) -> Result<Running, String> {
    let _ = std::fs::remove_dir_all(dir);
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("boot")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
    let hosts: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{},{},{}",
                mac_string(node_mac(i)),
                node_ip(i),
                node_name(i)
            )
        })
        .collect();
    write(&dir.join("hosts.dnsmasq"), hosts.join("\n") + "\n")?;
    write(&dir.join("dnsmasq.conf"), dnsmasq_conf(tuned, dir, n))?;
    write(&dir.join("nginx.conf"), nginx_conf(tuned, dir))?;
    let base = format!("http://{SRV_IP}:{HTTP_PORT}");
    write(
        &www.join("boot.ipxe"),
        format!("#!ipxe\nchain {base}/boot/${{net0/mac:hexhyp}}.ipxe\n"),
    )?;
    for i in 0..n {
        let mac = mac_string(node_mac(i));
        write(
            &www.join(format!("boot/{}.ipxe", mac.replace(':', "-"))),
            format!(
                "#!ipxe\nkernel {base}/vmlinuz console=ttyS0 panic=-1 quiet BOOTIF=01-{} grendel.hostname={} \
                 {PARAM_POSTSCRIPT}={base}/postscript.sh {PARAM_COMPLETE}={base}/complete\ninitrd {base}/initrd.gz\nboot\n",
                mac.replace(':', "-"),
                node_name(i)
            ),
        )?;
    }
    for (name, src) in [("vmlinuz", &payload.kernel), ("initrd.gz", &payload.initrd)] {
        let _ = std::fs::remove_file(www.join(name));
        std::os::unix::fs::symlink(src, www.join(name)).map_err(|e| e.to_string())?;
    }
    write(
        &www.join("postscript.sh"),
        format!("#!/bin/sh\necho \"{}\"\n", serve::POSTSCRIPT_MARK),
    )?;
    let spawn = |argv: &[&str], log: &str| -> Result<Child, String> {
        let out = std::fs::File::create(dir.join(log)).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let (prog, args) = argv.split_first().ok_or("an empty argv")?;
        testlab::peers::command("ip")
            .args(["netns", "exec", netns])
            .arg(testlab::peers::program(prog))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {argv:?}: {e}"))
    };
    let conf = dir.join("dnsmasq.conf").display().to_string();
    let nginx = dir.join("nginx.conf").display().to_string();
    let prefix = dir.display().to_string();
    let mut children = vec![spawn(
        &[
            "dnsmasq",
            "--keep-in-foreground",
            &format!("--conf-file={conf}"),
        ],
        "dnsmasq.out",
    )?];
    let running = |children: Vec<Child>| Running::Stack {
        children,
        dir: dir.to_path_buf(),
    };
    match spawn(&["nginx", "-p", &prefix, "-c", &nginx], "nginx.out") {
        Ok(c) => children.push(c),
        Err(e) => {
            drop(running(children));
            return Err(e);
        }
    }
    let r = running(children);
    testlab::net::wait_listening(
        netns,
        &[("udp", 67), ("udp", 69), ("tcp", HTTP_PORT)],
        Duration::from_secs(15),
    )
    .map_err(|e| {
        format!(
            "{e}; dnsmasq: {}; nginx: {}",
            testlab::tail(&dir.join("dnsmasq.out"), 5),
            testlab::tail(&dir.join("nginx.out"), 5)
        )
    })?;
    Ok(r)
}

/// The initrd of the full payload: the test initrd padded with zeros to this size
/// ("~80 MB", a real diskless image's order of size). The kernel unpacks an initramfs
/// past zero padding, so the truth VMs still boot it.
pub const FULL_INITRD_BYTES: u64 = 80_000_000;

/// Which boot files the nodes fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadSize {
    /// A kernel and an initrd of [`SMALL_FILE`] bytes each ([`small_payload`]): the
    /// control-plane storm (N = 5,000).
    Tiny,
    /// The test kernel and its busybox initrd (~9.5 MB together).
    Small,
    /// The test kernel and an initrd padded to [`FULL_INITRD_BYTES`].
    Full,
}

impl PayloadSize {
    pub fn parse(s: &str) -> Option<PayloadSize> {
        match s {
            "tiny" => Some(PayloadSize::Tiny),
            "small" => Some(PayloadSize::Small),
            "full" => Some(PayloadSize::Full),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            PayloadSize::Tiny => "tiny",
            PayloadSize::Small => "small",
            PayloadSize::Full => "full",
        }
    }

    /// `base` as it is (small), the tiny files in `dir`, or `base` with its initrd padded
    /// into `dir` (full; written once, reused while its size is right).
    pub fn payload(self, base: &Payload, dir: &Path) -> Result<Payload, String> {
        match self {
            PayloadSize::Small => return Ok(base.clone()),
            PayloadSize::Tiny => return small_payload(&dir.join("tiny")),
            PayloadSize::Full => {}
        }
        let padded = dir.join("initrd-full.gz");
        let have = std::fs::metadata(&padded).map(|m| m.len()).ok();
        if have != Some(FULL_INITRD_BYTES) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut data = std::fs::read(&base.initrd)
                .map_err(|e| format!("cannot read {}: {e}", base.initrd.display()))?;
            if data.len() as u64 > FULL_INITRD_BYTES {
                return Err(format!(
                    "{} is already over {FULL_INITRD_BYTES} bytes",
                    base.initrd.display()
                ));
            }
            data.resize(FULL_INITRD_BYTES as usize, 0);
            let tmp = padded.with_extension("tmp");
            write(&tmp, &data)?;
            std::fs::rename(&tmp, &padded).map_err(|e| e.to_string())?;
        }
        Ok(Payload {
            initrd: padded,
            ..base.clone()
        })
    }
}

/// Size of each file of the tiny payload ([`small_payload`]).
pub const SMALL_FILE: usize = 64 << 10;

/// The control-plane storm's payload in `dir`: a kernel and an initrd of [`SMALL_FILE`]
/// bytes each (the nodes only download them), so that N = 5,000 measures DHCP, TFTP,
/// the script, the completion and power rather than bulk bytes.
pub fn small_payload(dir: &Path) -> Result<Payload, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.gz");
    for (p, fill) in [(&kernel, 0x4bu8), (&initrd, 0x49u8)] {
        write(p, vec![fill; SMALL_FILE])?;
    }
    Ok(Payload {
        kernel,
        initrd,
        kernel_version: "small".into(),
    })
}

/// utime + stime of `pid` in seconds, and its resident set in KiB.
pub fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime are fields 14, 15 (1-based): 12, 13 after the name and state.
    let cpu = (ticks(11) + ticks(12)) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_name_what_the_profiles_differ_in() {
        let d = Path::new("/x");
        let stock = dnsmasq_conf(false, d, 100);
        let tuned = dnsmasq_conf(true, d, 100);
        assert!(stock.contains("dhcp-hostsfile=/x/hosts.dnsmasq"));
        assert!(!stock.contains("no-ping") && tuned.contains("no-ping"));
        assert!(tuned.contains("tftp-max=200"));
        assert!(nginx_conf(false, d).contains("worker_connections 768;"));
        assert!(nginx_conf(true, d).contains("worker_connections 16384;"));
        let h: serde_json::Value = serde_json::from_str(&hosts_json(2)).unwrap();
        assert_eq!(h[1]["interfaces"][0]["ip"], "10.77.1.2/16");
        assert_eq!(h[1]["name"], "n0002");
        assert_eq!(Kind::parse("xboot-xdp"), Some(Kind::XbootXdp));
        let (cpu, rss) = cpu_and_rss(std::process::id());
        assert!(cpu >= 0.0 && rss > 0);
    }

    #[test]
    fn full_payload_pads_the_initrd_once() {
        let dir = std::env::temp_dir().join(format!("storm-payload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("initrd.gz"), b"\x1f\x8bcpio").unwrap();
        let base = Payload {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.gz"),
            kernel_version: "6.1".into(),
        };
        let small = PayloadSize::Small.payload(&base, &dir.join("p")).unwrap();
        assert_eq!(small.initrd, base.initrd);
        let full = PayloadSize::Full.payload(&base, &dir.join("p")).unwrap();
        assert_eq!(
            (full.kernel.as_path(), full.kernel_version.as_str()),
            (base.kernel.as_path(), "6.1")
        );
        let data = std::fs::read(&full.initrd).unwrap();
        assert_eq!(data.len() as u64, FULL_INITRD_BYTES);
        assert_eq!(&data[..6], b"\x1f\x8bcpio");
        assert!(data[6..].iter().all(|&b| b == 0));
        // Again: the padded file is reused as it is.
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let t = mtime(&full.initrd);
        PayloadSize::Full.payload(&base, &dir.join("p")).unwrap();
        assert_eq!(mtime(&full.initrd), t);
        assert_eq!(PayloadSize::parse("full"), Some(PayloadSize::Full));
        assert_eq!(PayloadSize::parse("huge"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
