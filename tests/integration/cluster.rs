//! Cluster mode (`[cluster]`) against a real etcd: three members (Debian's etcd-server)
//! and two `xboot serve` on one segment, all in namespaces the test makes:
//!
//! ```text
//! netns hub: bridge br0 10.50.0.1/24; etcd members m1..m3 on 10.50.0.1:2379N (peers :2380N)
//!   |-- netns s1: xboot, s1 10.50.0.11/24 (userspace DHCP, HTTP :8080)
//!   |-- netns s2: xboot, s2 10.50.0.12/24
//!   '-- netns cli: c0 10.50.0.2/24 (the relay agent of the hand-made DHCP exchanges, curl)
//!                  c1 (no address, cn1's MAC: busybox udhcpc)
//! ```
//! The waits for a change to reach a server are bounded liveness checks (tens of
//! seconds on a loaded machine), never speed checks.
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};

use crate::dhcp::{env_value, exchange, lease_script, relayed_via};
use crate::netns::{self, Netns};

const XBOOT: &str = env!("CARGO_BIN_EXE_xboot");
const HUB: &str = "10.50.0.1";
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 2);
const CN1_MAC: &str = "02:50:00:00:00:01";
/// The bound on every wait for something to converge.
const CONVERGE: Duration = Duration::from_secs(30);

/// The namespaces, the etcd members and the servers' files.
struct Lab {
    dir: tempfile::TempDir,
    hub: Netns,
    cli: Netns,
    servers: Vec<Netns>,
    /// The members' pids while they run (killed by pid, or with `hub` on drop).
    etcd: Vec<Option<u32>>,
}

fn endpoints() -> Vec<String> {
    testlab::etcd::endpoints(HUB)
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let hub = Netns::new("cl-hub");
        hub.run(&["ip", "link", "add", "br0", "type", "bridge"]);
        hub.run(&["ip", "addr", "add", &format!("{HUB}/24"), "dev", "br0"]);
        hub.run(&["ip", "link", "set", "br0", "up"]);
        let cli = Netns::new("cl-cli");
        let attach = |ns: &Netns, port: &str, ifname: &str, cidr: &str| {
            Netns::veth(&hub, port, "", ns, ifname, cidr);
            hub.run(&["ip", "link", "set", port, "master", "br0"]);
        };
        attach(&cli, "p-c0", "c0", &format!("{RELAY}/24"));
        attach(&cli, "p-c1", "c1", "");
        cli.set_mac("c1", CN1_MAC);
        let mut servers = Vec::new();
        for i in 1..=2 {
            let ns = Netns::new(&format!("cl-s{i}"));
            attach(
                &ns,
                &format!("p-s{i}"),
                &format!("s{i}"),
                &format!("10.50.0.1{i}/24"),
            );
            servers.push(ns);
        }
        let img = dir.path().join("img");
        std::fs::create_dir_all(&img).unwrap();
        std::fs::write(img.join("vmlinuz"), b"kernel bytes").unwrap();
        std::fs::write(img.join("initrd.img"), b"initrd bytes").unwrap();
        let mut lab = Lab {
            dir,
            hub,
            cli,
            servers,
            etcd: vec![None; 3],
        };
        for i in 1..=2 {
            lab.write_config(i);
        }
        lab.start_etcd();
        lab
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn write_config(&self, i: usize) {
        let d = self.path(&format!("s{i}"));
        std::fs::create_dir_all(d.join("state")).unwrap();
        let eps: Vec<String> = endpoints().iter().map(|e| format!("{e:?}")).collect();
        let config = format!(
            r#"interface = "s{i}"
state_dir = "{d}/state"
[dhcp]
mode = "userspace"
listen = "0.0.0.0:67"
lease_time = "1h"
router_octet4 = 1
[tftp]
listen = "0.0.0.0:69"
root = "/usr/lib/ipxe"
[provision]
listen = "0.0.0.0:8080"
token_ttl = 3600
advertise_url = "http://10.50.0.1{i}:8080"
image_roots = ["{img}"]
[api]
socket_path = "{d}/api.socket"
[cluster]
endpoints = [{eps}]
server_id = "s{i}"
timeout_ms = 2000
[[cluster.segment]]
name = "A"
interfaces = ["s{i}"]
subnets = ["10.50.0.0/24"]
"#,
            d = d.display(),
            img = self.path("img").display(),
            eps = eps.join(", "),
        );
        std::fs::write(d.join("xboot.toml"), config).unwrap();
    }

    fn socket(&self, i: usize) -> String {
        self.path(&format!("s{i}/api.socket")).display().to_string()
    }

    /// Starts the members not running (a first start, or again on their data dirs) and
    /// waits until each is healthy.
    fn start_etcd(&mut self) {
        for i in 1..=testlab::etcd::MEMBERS {
            if self.etcd[i - 1].is_some() {
                continue;
            }
            let data = self.path(&format!("etcd/m{i}"));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(&format!("etcd-m{i}.log")))
                .unwrap();
            let argv = testlab::etcd::member_argv(HUB, i, &data, "xboot-cluster-test");
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let pid = self.hub.spawn(&argv, Stdio::null(), log.into());
            self.etcd[i - 1] = Some(pid);
        }
        let eps = endpoints().join(",");
        let t0 = Instant::now();
        loop {
            let ok = self
                .hub
                .cmd(&["etcdctl", "--endpoints", &eps, "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                t0.elapsed() < CONVERGE,
                "etcd members not healthy: {}",
                self.etcd_logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn etcd_logs(&self) -> String {
        (1..=3)
            .map(|i| {
                std::fs::read_to_string(self.path(&format!("etcd-m{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILLs every member (their data dirs stay).
    fn kill_etcd(&mut self) {
        for m in 0..3 {
            if self.etcd[m].is_some() {
                self.kill_member(m);
            }
        }
    }

    /// etcdctl in the hub namespace.
    fn etcdctl(&self, args: &[&str]) -> String {
        let eps = endpoints().join(",");
        let mut argv = vec!["etcdctl", "--endpoints", &eps];
        argv.extend_from_slice(args);
        String::from_utf8(self.hub.run(&argv).stdout).unwrap()
    }

    /// etcd's current revision.
    fn etcd_revision(&self) -> u64 {
        let out = self.etcdctl(&["get", "--prefix", "/xboot/v1/meta/", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_u64().unwrap()
    }

    fn start(&self, i: usize) -> Xboot {
        let config = self.path(&format!("s{i}/xboot.toml"));
        let log = self.path(&format!("s{i}/serve.log"));
        let child = self.servers[i - 1]
            .cmd(&[XBOOT, "serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let mut x = Xboot {
            child,
            log,
            socket: self.socket(i),
        };
        let t0 = Instant::now();
        while !x.cli(&["status"]).status.success() {
            if let Ok(Some(st)) = x.child.try_wait() {
                panic!("xboot s{i} exited ({st}): {}", x.log());
            }
            assert!(
                t0.elapsed() < CONVERGE,
                "xboot s{i} never answered: {}",
                x.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        x
    }

    fn write(&self, name: &str, v: serde_json::Value) -> String {
        let p = self.path(name);
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        p.display().to_string()
    }

    fn images(&self) -> String {
        let img = self.path("img");
        self.write(
            "images.json",
            serde_json::json!([{
                "name": "img",
                "kernel": img.join("vmlinuz"),
                "initrd": [img.join("initrd.img")],
                "cmdline": "console=ttyS0",
            }]),
        )
    }

    fn hosts(&self, ip: &str) -> String {
        self.write(
            "hosts.json",
            serde_json::json!([{
                "name": "cn1",
                "provision": true,
                "boot_image": "img",
                "interfaces": [{"mac": CN1_MAC, "ip": ip}],
            }]),
        )
    }

    /// A relayed DHCP exchange from the client namespace with server `i`.
    fn dhcp(&self, i: usize, datagram: Vec<u8>) -> Vec<Message> {
        exchange(
            &self.cli,
            SocketAddrV4::new(RELAY, 67),
            SocketAddrV4::new(Ipv4Addr::new(10, 50, 0, 10 + i as u8), 67),
            vec![datagram],
            Duration::from_secs(2),
        )
        .into_iter()
        .map(|(_, m)| m)
        .collect()
    }

    /// Server `i`'s OFFER to an iPXE DISCOVER from cn1's MAC (None: no answer).
    fn offer(&self, i: usize) -> Option<Message> {
        let d = relayed_via(
            RELAY,
            MessageType::Discover,
            CN1_MAC,
            0x5000 + i as u32,
            &[
                DhcpOption::ClientSystemArchitecture(0.into()),
                DhcpOption::UserClass(b"iPXE".to_vec()),
            ],
        );
        self.dhcp(i, d).into_iter().next()
    }

    /// Waits until server `i` offers cn1 `ip`.
    fn wait_offer(&self, i: usize, ip: Ipv4Addr, x: &Xboot) -> Message {
        let t0 = Instant::now();
        loop {
            if let Some(m) = self.offer(i).filter(|m| m.yiaddr() == ip) {
                return m;
            }
            assert!(
                t0.elapsed() < CONVERGE,
                "server s{i} never offered {ip}: {}",
                x.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One boot of cn1 through server `i` up to `complete`: the kernel fetched with the
    /// token of `i`'s OFFER (at `ip`), then `complete` POSTed; returns its status and body.
    fn complete(&self, i: usize, ip: Ipv4Addr, x: &Xboot) -> (String, String) {
        let offer = self.wait_offer(i, ip, x);
        let base = boot_url(&offer).trim_end_matches("/ipxe").to_string();
        let (_, code) = self.curl(&[&format!("{base}/kernel"), "-o", "/dev/null"]);
        assert_eq!(code, "200", "{}", x.log());
        let (body, code) = self.curl(&["-X", "POST", &format!("{base}/complete")]);
        (code, body)
    }

    /// The index (0..3) of the member that leads now.
    fn leader(&self) -> usize {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let all = v.as_array().unwrap();
        let leader = all[0]["Status"]["leader"].as_u64().unwrap();
        all.iter()
            .position(|m| m["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .and_then(|at| {
                let ep = all[at]["Endpoint"].as_str()?;
                endpoints().iter().position(|e| e == ep)
            })
            .unwrap_or_else(|| panic!("no leader in {out}"))
    }

    /// SIGKILLs member `m` (0..3).
    fn kill_member(&mut self, m: usize) {
        let pid = self.etcd[m].take().expect("the member runs");
        netns::run(testlab::peers::command("kill").args(["-9", &pid.to_string()]));
        // Dead once it is a zombie (the namespace's owner reaps it): its ports are free
        // for the member started again on them.
        let t0 = Instant::now();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            if matches!(state, None | Some(Some('Z'))) {
                return;
            }
            assert!(t0.elapsed() < CONVERGE, "etcd member {pid} never died");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn curl(&self, args: &[&str]) -> (String, String) {
        let mut argv = vec!["curl", "-sS", "-m", "10", "-w", "\n%{http_code}"];
        argv.extend_from_slice(args);
        let out = self.cli.cmd(&argv).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (body.to_string(), code.to_string())
    }
}

/// One `xboot serve` (SIGTERM, then SIGKILL, on drop).
struct Xboot {
    child: Child,
    log: PathBuf,
    socket: String,
}

impl Xboot {
    fn cli(&self, args: &[&str]) -> std::process::Output {
        testlab::peers::own(XBOOT)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "xboot {args:?}: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn host(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.cli(&["host", "show", name]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits until this server has no host `name`.
    fn wait_host_gone(&self, name: &str) {
        let t0 = Instant::now();
        while self.host(name).is_some() {
            assert!(
                t0.elapsed() < CONVERGE,
                "host {name} never went: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `pred` holds for host `name` as this server has it.
    fn wait_host(&self, name: &str, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let t0 = Instant::now();
        while !self.host(name).is_some_and(|h| pred(&h)) {
            assert!(
                t0.elapsed() < CONVERGE,
                "host {name} never {what}: {:?}\n{}",
                self.host(name),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Xboot {
    fn drop(&mut self) {
        // Already reaped (killed by the test): its pid may be another process's now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_id(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// What a lease is: the address and the options other than the server's own.
fn lease(m: &Message) -> Vec<String> {
    let mut out = vec![m.yiaddr().to_string()];
    for code in [
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::AddressLeaseTime,
        OptionCode::Hostname,
    ] {
        out.push(format!("{:?}", m.opts().get(code)));
    }
    out
}

fn boot_url(m: &Message) -> String {
    let f = m
        .fname_str()
        .unwrap()
        .unwrap_or_default()
        .trim_end_matches('\0')
        .to_string();
    match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) if f.is_empty() => String::from_utf8_lossy(b).to_string(),
        _ => f,
    }
}

/// An edit through one server's API reaches the other's answers; both answer a
/// DISCOVER with the same lease; a REQUEST naming one is acknowledged by it alone; a
/// boot URL signed by one is served by the other (the shared token key); real udhcpc
/// gets its lease with two servers answering; `complete` on one clears `provision` on
/// both.
#[test]
fn two_servers_share_one_inventory_in_etcd() {
    if netns::need_root() {
        return;
    }
    let lab = Lab::new();
    let s1 = lab.start(1);
    let s2 = lab.start(2);
    // Imported through s2, served by s1.
    s2.ok(&["image", "import", &lab.images()]);
    s2.ok(&["host", "import", &lab.hosts("10.50.0.100/24")]);
    s1.wait_host("cn1", "reached s1", |h| h["provision"] == true);
    let ip = Ipv4Addr::new(10, 50, 0, 100);
    let o1 = lab.wait_offer(1, ip, &s1);
    let o2 = lab.wait_offer(2, ip, &s2);
    assert_eq!(lease(&o1), lease(&o2));
    assert_eq!(server_id(&o1), Some(Ipv4Addr::new(10, 50, 0, 11)));
    assert_eq!(server_id(&o2), Some(Ipv4Addr::new(10, 50, 0, 12)));
    // The REQUEST names s1: s1 acknowledges, s2 is silent.
    let request = relayed_via(
        RELAY,
        MessageType::Request,
        CN1_MAC,
        0x5100,
        &[
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 50, 0, 11)),
            DhcpOption::RequestedIpAddress(ip),
        ],
    );
    let acks = lab.dhcp(1, request.clone());
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(acks[0].yiaddr(), ip);
    assert!(
        lab.dhcp(2, request).is_empty(),
        "s2 answered a REQUEST naming s1"
    );

    // The boot script URL s1 offers works on s1 and, with s1's token, on s2.
    let url = boot_url(&o1);
    assert!(
        url.starts_with("http://10.50.0.11:8080/boot/") && url.ends_with("/ipxe"),
        "{url}"
    );
    let (script, code) = lab.curl(&[&url]);
    assert_eq!(code, "200", "{script}");
    assert!(script.contains("kernel"), "{script}");
    let on_s2 = url.replace("10.50.0.11", "10.50.0.12");
    let (script2, code) = lab.curl(&[&on_s2]);
    assert_eq!(
        code,
        "200",
        "s2 refused s1's token: {script2}\n{}",
        s2.log()
    );
    assert_eq!(script2.replace("10.50.0.12", "10.50.0.11"), script);

    // An edit through s1 reaches s2's answers, and real udhcpc gets it.
    s1.ok(&["host", "import", &lab.hosts("10.50.0.101/24")]);
    let new_ip = Ipv4Addr::new(10, 50, 0, 101);
    lab.wait_offer(2, new_ip, &s2);
    lab.wait_offer(1, new_ip, &s1);
    let env_file = lab.path("udhcpc.env");
    let script = lease_script(lab.dir.path(), &env_file);
    let st = lab
        .cli
        .cmd(&[
            "busybox", "udhcpc", "-f", "-q", "-n", "-i", "c1", "-s", &script, "-t", "5", "-T", "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "udhcpc got no lease");
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert_eq!(
        env_value(&env, "ip").as_deref(),
        Some("10.50.0.101"),
        "{env}"
    );
    let sid = env_value(&env, "serverid").unwrap();
    assert!(
        ["10.50.0.11", "10.50.0.12"].contains(&sid.as_str()),
        "{sid}"
    );

    // `complete` through s2 (after a file of the boot was served to this client by s2).
    let (code, body) = lab.complete(2, new_ip, &s2);
    assert_eq!(code, "200", "{body}\n{}", s2.log());
    s1.wait_host("cn1", "saw the completion", |h| h["provision"] == false);
    assert_eq!(s2.host("cn1").unwrap()["provision"], false);
    // s1 applied it as a change of that one host (not a whole inventory).
    let st: serde_json::Value =
        serde_json::from_str(&s1.ok(&["status", "--json"])).expect("status JSON");
    let applied = &st["counters"]["cluster"];
    assert_eq!(applied["last_batch_hosts"], 1, "{st}");
    assert!(applied["batches"].as_u64() >= Some(3), "{st}");

    // A conflicting edit is refused with every problem, on either server: a second host
    // with cn1's MAC.
    let dup = lab.write(
        "dup.json",
        serde_json::json!([{"name": "cn2", "interfaces": [{"mac": CN1_MAC, "ip": "10.50.0.102/24"}]}]),
    );
    let out = s1.cli(&["host", "import", &dup]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(CN1_MAC),
        "{out:?}"
    );
    assert!(s2.host("cn2").is_none());

    // `xboot cluster status` names both servers, current.
    // In the servers' namespace: etcd listens on the hub's bridge address only.
    let status = || {
        let config = lab.path("s1/xboot.toml");
        let out = lab.servers[0]
            .cmd(&[
                XBOOT,
                "cluster",
                "status",
                "--json",
                "--config",
                config.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["id"].as_str().map(String::from))
            .collect()
    };
    let v = status();
    assert_eq!(v["hosts"], 1, "{v}");
    assert_eq!(ids(&v), ["s1", "s2"], "{v}");
    // A server that stops takes its record with it.
    drop(s2);
    let v = status();
    assert_eq!(ids(&v), ["s1"], "{v}");
}

/// A server restarted while every etcd member is down serves from its snapshot; one
/// restarted after its snapshot's revision was compacted lists etcd again and serves
/// what etcd holds.
#[test]
fn a_server_starts_from_its_snapshot_and_lists_again_after_compaction() {
    if netns::need_root() {
        return;
    }
    let mut lab = Lab::new();
    let s1 = lab.start(1);
    let s2 = lab.start(2);
    s1.ok(&["image", "import", &lab.images()]);
    s1.ok(&["host", "import", &lab.hosts("10.50.0.100/24")]);
    let ip = Ipv4Addr::new(10, 50, 0, 100);
    lab.wait_offer(2, ip, &s2);

    // etcd gone, s2 restarted: it serves its snapshot.
    drop(s2);
    lab.kill_etcd();
    let s2 = lab.start(2);
    let o = lab.wait_offer(2, ip, &s2);
    assert_eq!(server_id(&o), Some(Ipv4Addr::new(10, 50, 0, 12)));
    assert_eq!(s2.host("cn1").unwrap()["boot_image"], "img");
    // Writes need etcd: a clear 503, nothing changed.
    let out = s2.cli(&["host", "import", &lab.hosts("10.50.0.105/24")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable"), "{err}");
    assert_eq!(
        s2.host("cn1").unwrap()["interfaces"][0]["ip"],
        "10.50.0.100/24"
    );
    drop(s2);

    // etcd back; a change through s1, then the history compacted past s2's snapshot.
    lab.start_etcd();
    let t0 = Instant::now();
    while !s1
        .cli(&["host", "import", &lab.hosts("10.50.0.102/24")])
        .status
        .success()
    {
        assert!(
            t0.elapsed() < CONVERGE,
            "s1 never wrote again: {}",
            s1.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rev = lab.etcd_revision();
    lab.etcdctl(&["compact", &rev.to_string()]);
    let s2 = lab.start(2);
    lab.wait_offer(2, Ipv4Addr::new(10, 50, 0, 102), &s2);
    let log = s2.log();
    assert!(log.contains("was compacted"), "{log}");
    assert!(log.contains("listed 1 hosts and 1 images"), "{log}");

    // A new etcd cluster (the old one's data gone): its revisions are behind both
    // servers' snapshots; both list it again and serve what it holds.
    drop(s2);
    lab.kill_etcd();
    std::fs::remove_dir_all(lab.path("etcd")).unwrap();
    lab.start_etcd();
    s1.wait_host_gone("cn1");
    s1.ok(&["image", "import", &lab.images()]);
    s1.ok(&["host", "import", &lab.hosts("10.50.0.103/24")]);
    let s2 = lab.start(2);
    lab.wait_offer(2, Ipv4Addr::new(10, 50, 0, 103), &s2);
    assert!(
        s2.log().contains("behind this server's snapshot"),
        "{}",
        s2.log()
    );
    drop(s1);
}

/// The etcd leader killed during a run of writes: every write is eventually committed
/// and reaches the other server (no revision missed), DHCP is answered throughout. Two
/// of three members killed: writes get a clear 503, DHCP goes on, a `complete` is
/// queued and written once the members are back.
#[test]
fn etcd_leader_loss_and_quorum_loss() {
    if netns::need_root() {
        return;
    }
    let mut lab = Lab::new();
    let s1 = lab.start(1);
    let s2 = lab.start(2);
    s1.ok(&["image", "import", &lab.images()]);
    s1.ok(&["host", "import", &lab.hosts("10.50.0.100/24")]);
    let ip = Ipv4Addr::new(10, 50, 0, 100);
    lab.wait_offer(2, ip, &s2);

    let leader = lab.leader();
    lab.kill_member(leader);
    let mut refused = 0;
    for n in 0..10 {
        let tag = format!("t{n}");
        let t0 = Instant::now();
        loop {
            let out = s1.cli(&["host", "tag", "cn1", &tag]);
            if out.status.success() {
                break;
            }
            refused += 1;
            let err = String::from_utf8_lossy(&out.stderr);
            // Either way the tag is written again: a tag is idempotent.
            assert!(
                outcome(&err).is_some(),
                "not a clear refusal (no outcome): {err}"
            );
            assert!(
                t0.elapsed() < CONVERGE,
                "writes never resumed: {}",
                s1.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // DHCP from the other server goes on between the writes.
        assert_eq!(lab.offer(2).map(|m| m.yiaddr()), Some(ip), "s2 went silent");
    }
    let all: Vec<String> = (0..10).map(|n| format!("t{n}")).collect();
    s2.wait_host("cn1", "got every tag", |h| {
        h["tags"]
            .as_array()
            .is_some_and(|t| all.iter().all(|x| t.iter().any(|y| y == x)))
    });
    eprintln!("writes refused while a leader was elected: {refused}");

    // Quorum lost: two members down.
    let second = (0..3).find(|m| lab.etcd[*m].is_some()).unwrap();
    lab.kill_member(second);
    let out = s1.cli(&["host", "tag", "cn1", "late"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let late = outcome(&err).unwrap_or_else(|| panic!("no outcome in the refusal: {err}"));
    eprintln!("the write during the quorum loss: {late}: {err}");
    assert_eq!(lab.offer(1).map(|m| m.yiaddr()), Some(ip), "s1 went silent");
    assert_eq!(lab.offer(2).map(|m| m.yiaddr()), Some(ip), "s2 went silent");
    // `complete` is answered (queued durably), and written when etcd is back.
    let (code, body) = lab.complete(2, ip, &s2);
    assert_eq!(code, "200", "{body}\n{}", s2.log());
    assert!(s2.log().contains("completion queued"), "{}", s2.log());
    assert_eq!(s1.host("cn1").unwrap()["provision"], true);
    // Every member down: nothing can take the write (no connection is made).
    let last = (0..3).find(|m| lab.etcd[*m].is_some()).unwrap();
    lab.kill_member(last);
    let out = s1.cli(&["host", "tag", "cn1", "gone"]);
    assert!(!out.status.success());
    let gone_err = String::from_utf8_lossy(&out.stderr).to_string();
    let gone = outcome(&gone_err).unwrap_or_else(|| panic!("no outcome: {gone_err}"));
    eprintln!("the write with every member down: {gone}: {gone_err}");
    lab.start_etcd();
    s1.wait_host("cn1", "got the queued completion", |h| {
        h["provision"] == false
    });
    s2.wait_host("cn1", "wrote its queued completion", |h| {
        h["provision"] == false
    });
    // The tag refused with 503 while quorum was lost may still commit once it is back
    // (etcd can keep a proposal it did not answer in time) when the answer said its
    // outcome is unknown; never when it said it was not applied. Whatever etcd decided,
    // both servers serve the same.
    let tags = |x: &Xboot| x.host("cn1").unwrap()["tags"].clone();
    let t0 = Instant::now();
    while tags(&s1) != tags(&s2) {
        assert!(t0.elapsed() < CONVERGE, "{} vs {}", tags(&s1), tags(&s2));
        std::thread::sleep(Duration::from_millis(200));
    }
    let has = |x: &Xboot, tag: &str| tags(x).as_array().unwrap().iter().any(|t| t == tag);
    // Settled: the followers have applied everything etcd holds.
    std::thread::sleep(Duration::from_secs(2));
    for (tag, said, err) in [("late", late, &err), ("gone", gone, &gone_err)] {
        match said {
            "not_applied" => assert!(
                !has(&s1, tag) && !has(&s2, tag),
                "a write said not applied was: {err}"
            ),
            _ => assert!(
                err.contains("may still be applied (outcome unknown"),
                "{err}"
            ),
        }
    }
}

/// The outcome a CLI error names (`[outcome: X]`), checked against its words.
fn outcome(err: &str) -> Option<&'static str> {
    if err.contains("[outcome: not_applied]") {
        assert!(err.contains("was not applied"), "{err}");
        return Some("not_applied");
    }
    if err.contains("[outcome: unknown]") {
        assert!(err.contains("may still be applied"), "{err}");
        return Some("unknown");
    }
    None
}

/// One node's boot as a PXE ROM behind a relay that forwards to both servers does it:
/// DISCOVER to both, REQUEST naming the first that offered (to both: the other must be
/// silent), the kernel from the server that acknowledged, `complete` there; any step
/// that fails starts over from the DISCOVER. Returns the server (1 or 2) that served the
/// boot, or why it never completed.
fn boot_node(lab: &Lab, mac: &str, xid: u32) -> Result<usize, String> {
    let mut why = String::new();
    for attempt in 0..20u32 {
        let xid = xid + attempt * 0x100;
        let discover = relayed_via(
            RELAY,
            MessageType::Discover,
            mac,
            xid,
            &[
                DhcpOption::ClientSystemArchitecture(0.into()),
                DhcpOption::UserClass(b"iPXE".to_vec()),
            ],
        );
        let Some((i, offer)) = (1..=2).find_map(|i| {
            let m = lab.dhcp(i, discover.clone()).into_iter().next()?;
            Some((i, m))
        }) else {
            why = "no OFFER".into();
            continue;
        };
        let request = relayed_via(
            RELAY,
            MessageType::Request,
            mac,
            xid,
            &[
                DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 50, 0, 10 + i as u8)),
                DhcpOption::RequestedIpAddress(offer.yiaddr()),
                DhcpOption::ClientSystemArchitecture(0.into()),
                DhcpOption::UserClass(b"iPXE".to_vec()),
            ],
        );
        let other = 3 - i;
        if !lab.dhcp(other, request.clone()).is_empty() {
            return Err(format!("s{other} answered a REQUEST naming s{i}"));
        }
        let acks = lab.dhcp(i, request);
        let Some(ack) = acks
            .first()
            .filter(|a| a.opts().msg_type() == Some(MessageType::Ack))
        else {
            why = format!("no ACK from s{i}");
            continue;
        };
        let base = boot_url(ack).trim_end_matches("/ipxe").to_string();
        let (_, code) = lab.curl(&[&format!("{base}/kernel"), "-o", "/dev/null"]);
        if code != "200" {
            why = format!("kernel from s{i}: {code}");
            continue;
        }
        let (body, code) = lab.curl(&["-X", "POST", &format!("{base}/complete")]);
        if code == "200" {
            return Ok(i);
        }
        why = format!("complete on s{i}: {code} {body}");
    }
    Err(why)
}

/// One of the two servers of the segment SIGKILLed while nodes boot through both: every
/// node completes, those caught by the kill through the other server.
#[test]
fn a_server_killed_during_boots_leaves_them_to_the_other() {
    if netns::need_root() {
        return;
    }
    let lab = Lab::new();
    let mut s1 = lab.start(1);
    let s2 = lab.start(2);
    s1.ok(&["image", "import", &lab.images()]);
    let macs: Vec<String> = (0..8).map(|n| format!("02:50:00:00:01:{n:02x}")).collect();
    let hosts: Vec<serde_json::Value> = macs
        .iter()
        .enumerate()
        .map(|(n, mac)| {
            serde_json::json!({
                "name": format!("n{n}"),
                "provision": true,
                "boot_image": "img",
                "interfaces": [{"mac": mac, "ip": format!("10.50.0.{}/24", 120 + n)}],
            })
        })
        .collect();
    s1.ok(&[
        "host",
        "import",
        &lab.write("nodes.json", serde_json::json!(hosts)),
    ]);
    s2.wait_host("n7", "reached s2", |h| h["provision"] == true);
    let lab = std::sync::Arc::new(lab);
    let boots: Vec<_> = macs
        .iter()
        .enumerate()
        .map(|(n, mac)| {
            let (lab, mac) = (lab.clone(), mac.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300 * n as u64));
                boot_node(&lab, &mac, 0x6000 + n as u32)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    s1.child.kill().unwrap();
    s1.child.wait().unwrap();
    let served: Vec<Result<usize, String>> = boots.into_iter().map(|b| b.join().unwrap()).collect();
    for (n, r) in served.iter().enumerate() {
        assert!(r.is_ok(), "n{n} never completed: {r:?}\n{}", s2.log());
    }
    assert!(served.contains(&Ok(2)), "{served:?}");
    for n in 0..8 {
        s2.wait_host(&format!("n{n}"), "completed", |h| h["provision"] == false);
    }
}

// Segments: three servers on two segments.

/// Segment B's relay address (the client namespace's c2, on br1).
const RELAY_B: Ipv4Addr = Ipv4Addr::new(10, 60, 0, 2);
/// A host of segment B (the client namespace's c3 takes its MAC, on br1).
const CN2_MAC: &str = "02:60:00:00:00:02";
const S1: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 11);
const S2: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 12);
const S3: Ipv4Addr = Ipv4Addr::new(10, 60, 0, 13);

impl Lab {
    /// [`Lab::new`]'s segment A (10.50.0.0/24 on br0: s1 with the XDP fast path,
    /// `dhcp.mode = "xdp"`, s2 userspace), and segment B: the hub's second bridge br1
    /// 10.60.0.1/24 with s3 10.60.0.13/24 (XDP; it reaches etcd through the hub's br1
    /// address) and the client namespace's c2 10.60.0.2/24 (B's relay agent) and c3 (no
    /// address, cn2's MAC: busybox udhcpc). The hub ends of s1's and s3's veths carry a
    /// pass-everything XDP program, so that native XDP_TX answers are delivered.
    fn two_segments() -> Lab {
        let mut lab = Lab::new();
        lab.hub.run(&["ip", "link", "add", "br1", "type", "bridge"]);
        lab.hub
            .run(&["ip", "addr", "add", "10.60.0.1/24", "dev", "br1"]);
        lab.hub.run(&["ip", "link", "set", "br1", "up"]);
        let attach = |ns: &Netns, port: &str, ifname: &str, cidr: &str| {
            Netns::veth(&lab.hub, port, "", ns, ifname, cidr);
            lab.hub.run(&["ip", "link", "set", port, "master", "br1"]);
        };
        attach(&lab.cli, "p-c2", "c2", &format!("{RELAY_B}/24"));
        attach(&lab.cli, "p-c3", "c3", "");
        lab.cli.set_mac("c3", CN2_MAC);
        let s3 = Netns::new("cl-s3");
        attach(&s3, "p-s3", "s3", &format!("{S3}/24"));
        s3.run(&["ip", "route", "add", "10.50.0.0/24", "via", "10.60.0.1"]);
        lab.servers.push(s3);
        // The relays are UDP sockets: their frames leave a veth with a partial checksum
        // (offload) unless it is off, and XDP takes a frame as it is on the wire (a real
        // NIC delivers complete checksums).
        for relay in ["c0", "c2"] {
            lab.cli.run(&["ethtool", "-K", relay, "tx", "off"]);
        }
        for port in ["p-s1", "p-s3"] {
            testlab::xdp_pass::attach_in(&lab.hub.name, port)
                .unwrap_or_else(|e| panic!("XDP_PASS on {port}: {e}"));
        }
        lab.write_config(3);
        let edit = |i: usize, edits: &[(&str, &str)]| {
            let p = lab.path(&format!("s{i}/xboot.toml"));
            let mut c = std::fs::read_to_string(&p).unwrap();
            for (from, to) in edits {
                assert!(c.contains(from), "{from:?} not in {c}");
                c = c.replace(from, to);
            }
            std::fs::write(p, c).unwrap();
        };
        // DNS on every server: each answers for the whole cluster's names.
        for i in 1..=3 {
            let p = lab.path(&format!("s{i}/xboot.toml"));
            let c = std::fs::read_to_string(&p).unwrap();
            std::fs::write(p, format!("{c}[dns]\nlisten = \"0.0.0.0:53\"\n")).unwrap();
        }
        let xdp = ("mode = \"userspace\"", "mode = \"xdp\"");
        edit(1, &[xdp]);
        edit(
            3,
            &[
                xdp,
                ("10.50.0.13", "10.60.0.13"),
                ("name = \"A\"", "name = \"B\""),
                ("10.50.0.0/24", "10.60.0.0/24"),
            ],
        );
        lab
    }

    /// A relayed DHCP exchange from the client namespace: `relay`:67 to `server`:67.
    fn dhcp_via(&self, relay: Ipv4Addr, server: Ipv4Addr, datagram: Vec<u8>) -> Vec<Message> {
        exchange(
            &self.cli,
            SocketAddrV4::new(relay, 67),
            SocketAddrV4::new(server, 67),
            vec![datagram],
            Duration::from_secs(2),
        )
        .into_iter()
        .map(|(_, m)| m)
        .collect()
    }

    /// `server`'s OFFER to an iPXE DISCOVER from `mac` relayed by `relay` (None: silence).
    fn offer_via(&self, relay: Ipv4Addr, server: Ipv4Addr, mac: &str) -> Option<Message> {
        let d = relayed_via(
            relay,
            MessageType::Discover,
            mac,
            0x7000 + server.octets()[3] as u32,
            &[
                DhcpOption::ClientSystemArchitecture(0.into()),
                DhcpOption::UserClass(b"iPXE".to_vec()),
            ],
        );
        self.dhcp_via(relay, server, d).into_iter().next()
    }

    /// Waits until `server` offers `mac` the address `ip`.
    fn wait_offer_via(
        &self,
        relay: Ipv4Addr,
        server: Ipv4Addr,
        mac: &str,
        ip: Ipv4Addr,
        x: &Xboot,
    ) -> Message {
        let t0 = Instant::now();
        loop {
            if let Some(m) = self
                .offer_via(relay, server, mac)
                .filter(|m| m.yiaddr() == ip)
            {
                return m;
            }
            assert!(
                t0.elapsed() < CONVERGE,
                "{server} never offered {ip} to {mac}: {}",
                x.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `server` is silent to a DISCOVER from `mac`.
    fn wait_silent(&self, relay: Ipv4Addr, server: Ipv4Addr, mac: &str, x: &Xboot) {
        let t0 = Instant::now();
        while let Some(m) = self.offer_via(relay, server, mac) {
            assert!(
                t0.elapsed() < CONVERGE,
                "{server} still offers {} to {mac}: {}",
                m.yiaddr(),
                x.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn segment_hosts(&self, cn1_ip: &str, cn2_ip: &str) -> String {
        self.write(
            "segment-hosts.json",
            serde_json::json!([
                {"name": "cn1", "provision": true, "boot_image": "img",
                 "interfaces": [{"mac": CN1_MAC, "ip": cn1_ip, "fqdn": "cn1.lab.test"}]},
                {"name": "cn2", "provision": true, "boot_image": "img",
                 "interfaces": [{"mac": CN2_MAC, "ip": cn2_ip, "fqdn": "cn2.lab.test"}]},
            ]),
        )
    }

    /// Waits until `server`'s DNS answers `name` with the one address `want` (dig, from
    /// the client namespace).
    fn wait_dns(&self, server: Ipv4Addr, name: &str, want: &str, x: &Xboot) {
        let at = format!("@{server}");
        let t0 = Instant::now();
        loop {
            let out = self
                .cli
                .cmd(&["dig", &at, "+short", "+tries=1", "+time=2", name, "A"])
                .output()
                .unwrap();
            let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if got == want {
                return;
            }
            assert!(
                t0.elapsed() < CONVERGE,
                "{server} answers {name} with {got:?}, not {want}: {}",
                x.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// busybox udhcpc on the client namespace's `ifname`: the lease's environment.
    fn udhcpc(&self, ifname: &str) -> Option<String> {
        let env_file = self.path(&format!("udhcpc-{ifname}.env"));
        let _ = std::fs::remove_file(&env_file);
        let script = lease_script(self.dir.path(), &env_file);
        let st = self
            .cli
            .cmd(&[
                "busybox", "udhcpc", "-f", "-q", "-n", "-i", ifname, "-s", &script, "-t", "5",
                "-T", "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        st.success()
            .then(|| std::fs::read_to_string(&env_file).unwrap())
    }
}

impl Xboot {
    /// The service counters of `xboot status` (`dhcp`, `xdp`, `tftp`).
    fn counters(&self) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["status", "--json"])).unwrap();
        v["counters"].clone()
    }

    /// The XDP program's `answered` and `passed_unknown` counters.
    fn xdp(&self) -> (u64, u64) {
        let c = self.counters();
        let n = |k: &str| {
            c["xdp"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("no xdp.{k} (XDP not attached?): {c}\n{}", self.log()))
        };
        (n("answered"), n("passed_unknown"))
    }
}

/// Three servers on two segments: s1 (XDP) and s2 (userspace) serve A's hosts, s3
/// (XDP) B's; every API sees and edits every host. An edit through B's API reaches A's
/// XDP map and answers; both A servers offer the same lease; a REQUEST naming one is
/// acknowledged by it alone; B is silent to A's hosts (its program passes them up as
/// unknown: they are not in its map) and A to B's; real udhcpc gets its lease on each
/// segment; a host whose address moves to B's subnet moves to B's servers; `xboot cluster
/// status` shows each server's segment and the hosts it serves. DNS answers every
/// segment's names on every server (dig).
#[test]
fn three_servers_on_two_segments_serve_their_own_hosts() {
    if netns::need_root() {
        return;
    }
    let lab = Lab::two_segments();
    let s1 = lab.start(1);
    let s2 = lab.start(2);
    let s3 = lab.start(3);
    assert!(s1.log().contains("XDP attached to s1"), "{}", s1.log());
    assert!(s3.log().contains("XDP attached to s3"), "{}", s3.log());

    // Imported through B's server; every server's API has both hosts.
    s3.ok(&["image", "import", &lab.images()]);
    s3.ok(&[
        "host",
        "import",
        &lab.segment_hosts("10.50.0.100/24", "10.60.0.100/24"),
    ]);
    for s in [&s1, &s2, &s3] {
        s.wait_host("cn1", "reached every API", |h| h["provision"] == true);
        s.wait_host("cn2", "reached every API", |h| h["provision"] == true);
    }
    // Each serves one of them.
    for s in [&s1, &s2, &s3] {
        let v: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
        assert_eq!(
            (&v["hosts"], &v["served_hosts"]),
            (&2.into(), &1.into()),
            "{v}"
        );
    }

    // DNS names are the cluster's, not the segment's: each server answers for both.
    for (s, ip) in [(&s1, S1), (&s3, S3)] {
        lab.wait_dns(ip, "cn1.lab.test", "10.50.0.100", s);
        lab.wait_dns(ip, "cn2.lab.test", "10.60.0.100", s);
    }

    // A's servers offer cn1 the same lease, s1's through its XDP map.
    let ip1 = Ipv4Addr::new(10, 50, 0, 100);
    let o1 = lab.wait_offer_via(RELAY, S1, CN1_MAC, ip1, &s1);
    let o2 = lab.wait_offer_via(RELAY, S2, CN1_MAC, ip1, &s2);
    assert_eq!(lease(&o1), lease(&o2));
    assert_eq!(server_id(&o1), Some(S1));
    assert_eq!(server_id(&o2), Some(S2));
    let c1 = s1.counters();
    assert!(c1["xdp"]["answered"].as_u64().unwrap() >= 1, "{c1}");
    assert_eq!(c1["dhcp"]["offers"], 0, "s1's OFFERs are XDP's: {c1}");

    // A REQUEST naming one A server is acknowledged by it alone, either way round.
    for (named, other) in [(S1, S2), (S2, S1)] {
        let request = relayed_via(
            RELAY,
            MessageType::Request,
            CN1_MAC,
            0x7100 + named.octets()[3] as u32,
            &[
                DhcpOption::ServerIdentifier(named),
                DhcpOption::RequestedIpAddress(ip1),
            ],
        );
        assert!(
            lab.dhcp_via(RELAY, other, request.clone()).is_empty(),
            "{other} answered a REQUEST naming {named}"
        );
        let acks = lab.dhcp_via(RELAY, named, request);
        assert_eq!(acks.len(), 1, "{named}");
        assert_eq!(acks[0].opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(acks[0].yiaddr(), ip1);
    }

    // B serves cn2 (through XDP), is silent to cn1: not in its map, so its program
    // passes the DISCOVER up as unknown, and userspace has no such host either.
    let ip2 = Ipv4Addr::new(10, 60, 0, 100);
    lab.wait_offer_via(RELAY_B, S3, CN2_MAC, ip2, &s3);
    let (answered, unknown) = s3.xdp();
    assert!(answered >= 1);
    assert!(
        lab.offer_via(RELAY_B, S3, CN1_MAC).is_none(),
        "s3 offered cn1"
    );
    let (answered_after, unknown_after) = s3.xdp();
    assert_eq!(answered_after, answered, "s3's map answered cn1");
    assert!(
        unknown_after > unknown,
        "cn1 not passed up as unknown by s3"
    );
    // And A is silent to cn2 (s1's map has no cn2 either).
    let (_, unknown1) = s1.xdp();
    assert!(
        lab.offer_via(RELAY, S1, CN2_MAC).is_none(),
        "s1 offered cn2"
    );
    assert!(
        lab.offer_via(RELAY, S2, CN2_MAC).is_none(),
        "s2 offered cn2"
    );
    assert!(s1.xdp().1 > unknown1, "cn2 not passed up as unknown by s1");

    // Real clients, one per segment.
    let env = lab.udhcpc("c1").expect("udhcpc on A got no lease");
    assert_eq!(
        env_value(&env, "ip").as_deref(),
        Some("10.50.0.100"),
        "{env}"
    );
    let sid = env_value(&env, "serverid").unwrap();
    assert!(
        ["10.50.0.11", "10.50.0.12"].contains(&sid.as_str()),
        "{sid}"
    );
    let (before, _) = s3.xdp();
    let env = lab.udhcpc("c3").expect("udhcpc on B got no lease");
    assert_eq!(
        env_value(&env, "ip").as_deref(),
        Some("10.60.0.100"),
        "{env}"
    );
    assert_eq!(env_value(&env, "serverid").as_deref(), Some("10.60.0.13"));
    assert!(s3.xdp().0 >= before + 2, "B's lease not from its XDP map");

    // An edit through B's API reaches A's map: cn1 renumbered within A.
    s3.ok(&[
        "host",
        "import",
        &lab.segment_hosts("10.50.0.101/24", "10.60.0.100/24"),
    ]);
    let ip1 = Ipv4Addr::new(10, 50, 0, 101);
    let (before, _) = s1.xdp();
    lab.wait_offer_via(RELAY, S1, CN1_MAC, ip1, &s1);
    lab.wait_offer_via(RELAY, S2, CN1_MAC, ip1, &s2);
    assert!(s1.xdp().0 > before, "s1's new OFFER not from its map");

    // cn1 renumbered into B's subnet (through A's API): it moves to s3, A goes silent.
    s1.ok(&[
        "host",
        "import",
        &lab.segment_hosts("10.60.0.101/24", "10.60.0.100/24"),
    ]);
    let moved = Ipv4Addr::new(10, 60, 0, 101);
    lab.wait_offer_via(RELAY_B, S3, CN1_MAC, moved, &s3);
    lab.wait_silent(RELAY, S1, CN1_MAC, &s1);
    lab.wait_silent(RELAY, S2, CN1_MAC, &s2);
    assert_eq!(
        s1.host("cn1").unwrap()["interfaces"][0]["ip"],
        "10.60.0.101/24",
        "s1's API still sees the host"
    );
    // And A's DNS still has its name, at the new address.
    lab.wait_dns(S1, "cn1.lab.test", "10.60.0.101", &s1);

    // `xboot cluster status`: each server's segment and the hosts it serves.
    let config = lab.path("s3/xboot.toml");
    let status = |json: bool| {
        let mut argv = vec![
            XBOOT,
            "cluster",
            "status",
            "--config",
            config.to_str().unwrap(),
        ];
        if json {
            argv.push("--json");
        }
        let out = lab.servers[2].cmd(&argv).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let t0 = Instant::now();
    let servers = loop {
        let v: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
        let servers: Vec<(String, String, u64)> = v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let id = s["id"].as_str().unwrap_or("?").to_string();
                let seg = s["segments"][0]["name"].as_str().unwrap_or("-").to_string();
                (id, seg, s["hosts"].as_u64().unwrap_or(99))
            })
            .collect();
        let want = [("s1", "A", 0), ("s2", "A", 0), ("s3", "B", 2)];
        let ok = servers.len() == 3
            && servers
                .iter()
                .zip(want)
                .all(|(s, w)| (s.0.as_str(), s.1.as_str(), s.2) == w);
        if ok {
            break servers;
        }
        assert!(t0.elapsed() < CONVERGE, "status never showed {want:?}: {v}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(servers.len(), 3);
    let text = status(false);
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no {id} in {text}"))
            .to_string()
    };
    assert!(
        line("s1").contains(" A ") && line("s1").contains(" 0/2 "),
        "{text}"
    );
    assert!(
        line("s3").contains(" B ") && line("s3").contains(" 2 "),
        "{text}"
    );

    // Restarted, a server serves its part of its snapshot from the start: s1's has both
    // hosts, now both of B's.
    drop(s1);
    let s1 = lab.start(1);
    let v: serde_json::Value = serde_json::from_str(&s1.ok(&["status", "--json"])).unwrap();
    assert_eq!(
        (&v["hosts"], &v["served_hosts"]),
        (&2.into(), &0.into()),
        "{v}"
    );
    let (_, unknown1) = s1.xdp();
    assert!(
        lab.offer_via(RELAY, S1, CN1_MAC).is_none(),
        "restarted s1 offered cn1"
    );
    assert!(s1.xdp().1 > unknown1, "cn1 in restarted s1's map");
}

/// Servers 1 and 2 started with [`short_ttl_and_tcp_api`], the image and cn1
/// (10.50.0.100) imported through server `writer`, and cn1 seen provisioned by the other.
fn two_servers_with_cn1(lab: &Lab, writer: usize) -> (Xboot, Xboot) {
    for i in 1..=2 {
        short_ttl_and_tcp_api(lab, i);
    }
    let (s1, s2) = (lab.start(1), lab.start(2));
    let (w, other) = if writer == 1 { (&s1, &s2) } else { (&s2, &s1) };
    w.ok(&["image", "import", &lab.images()]);
    w.ok(&["host", "import", &lab.hosts("10.50.0.100/24")]);
    other.wait_host("cn1", "reached the other server", |h| {
        h["provision"] == true
    });
    (s1, s2)
}

/// Sets `token_ttl` of server `i`'s config to a minute (the least the config takes) and
/// gives it a TCP API on its own address with a static token.
fn short_ttl_and_tcp_api(lab: &Lab, i: usize) {
    let path = lab.path(&format!("s{i}/xboot.toml"));
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("token_ttl = 3600", "token_ttl = 60")
        .replace(
            "[api]\n",
            &format!("[api]\nlisten = \"10.50.0.1{i}:9090\"\ntoken = \"{API_TOKEN}\"\n"),
        );
    std::fs::write(path, config).unwrap();
}

const API_TOKEN: &str = "cluster-events-token";

/// The key id a boot URL's token names (hex), None for a token without one.
fn token_kid(url: &str) -> Option<String> {
    use base64::Engine;
    let token = url.split("/boot/").nth(1)?.split('/').next()?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    (raw.first() == Some(&2)).then(|| hex::encode(&raw[1..5]))
}

/// `xboot ARGS --config s1/xboot.toml` in s1's namespace (etcd is on the hub's bridge).
fn cli_s1(lab: &Lab, args: &[&str]) -> std::process::Output {
    let config = lab.path("s1/xboot.toml");
    let mut argv = vec![XBOOT];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--config", config.to_str().unwrap()]);
    lab.servers[0].cmd(&argv).output().unwrap()
}

/// A boot-token key rotation with two servers: a token minted by one fetches a kernel
/// from the other (curl) before, during and after the rotation, old and new tokens from
/// both servers alike, and no fetch is refused; once the retired key has lapsed
/// (token_ttl plus the grace after the new key started signing) its tokens get a 403
/// naming the key as retired, while the new key's still fetch.
#[test]
fn token_key_rotation_across_two_servers_without_a_403() {
    if netns::need_root() {
        return;
    }
    let lab = Lab::new();
    let (s1, s2) = two_servers_with_cn1(&lab, 2);
    let ip = Ipv4Addr::new(10, 50, 0, 100);
    let base = |m: &Message| boot_url(m).trim_end_matches("/ipxe").to_string();
    let kernel_on = |url_base: &str, server: usize| -> (String, String) {
        let at = url_base
            .replace("10.50.0.11", &format!("10.50.0.1{server}"))
            .replace("10.50.0.12", &format!("10.50.0.1{server}"));
        lab.curl(&[&format!("{at}/kernel")])
    };
    let old = [
        base(&lab.wait_offer(1, ip, &s1)),
        base(&lab.wait_offer(2, ip, &s2)),
    ];
    let old_kid = token_kid(&old[0]).expect("a token naming its key");
    assert_eq!(token_kid(&old[1]).as_deref(), Some(old_kid.as_str()));
    let shown = cli_s1(&lab, &["token-key", "show", "--json"]);
    assert!(shown.status.success(), "{shown:?}");
    let ring: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(ring[0]["kid"], old_kid.as_str(), "{ring}");
    assert_eq!(ring[0]["state"], "signing", "{ring}");

    // Fetches with every token on both servers, rotating after the first round.
    let mut tokens: Vec<String> = old.to_vec();
    let mut new_kid = None;
    let mut new_from = std::collections::BTreeSet::new();
    let t0 = Instant::now();
    let mut rotated_at = t0;
    for round in 0.. {
        for t in &tokens {
            for server in 1..=2 {
                let (body, code) = kernel_on(t, server);
                assert_eq!(
                    code,
                    "200",
                    "round {round}: {t} on s{server}: {body}\ns1:\n{}\ns2:\n{}",
                    s1.log(),
                    s2.log()
                );
                assert_eq!(body, "kernel bytes");
            }
        }
        if round == 0 {
            let out = cli_s1(
                &lab,
                &["token-key", "rotate", "--activate-in", "3", "--json"],
            );
            assert!(out.status.success(), "{out:?}");
            let ring: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(ring[1]["state"], "pending", "{ring}");
            new_kid = Some(ring[1]["kid"].as_str().unwrap().to_string());
            rotated_at = Instant::now();
        }
        // Fresh tokens from both servers' offers: the old key's until the new one signs.
        for (i, x) in [(1, &s1), (2, &s2)] {
            let b = base(&lab.wait_offer(i, ip, x));
            let kid = token_kid(&b).unwrap();
            if Some(&kid) == new_kid.as_ref() {
                new_from.insert(i);
            } else {
                assert_eq!(kid, old_kid, "s{i} signed with a key of neither");
            }
            if !tokens.contains(&b) {
                tokens.push(b);
            }
        }
        if new_from.len() == 2 && round > 2 {
            break;
        }
        assert!(
            t0.elapsed() < CONVERGE * 2,
            "the new key never signed on both servers: {new_from:?}\n{}\n{}",
            s1.log(),
            s2.log()
        );
    }
    let new_kid = new_kid.unwrap();
    assert!(
        s2.log().contains("keyring taken from the cluster"),
        "{}",
        s2.log()
    );

    // The retired key lapses token_ttl (60 s) + the grace (10 s) after the new key
    // started signing (3 s after the rotation); the new key's tokens still fetch.
    let newest: Vec<String> = tokens
        .iter()
        .filter(|t| token_kid(t).as_deref() == Some(new_kid.as_str()))
        .cloned()
        .collect();
    assert!(newest.len() >= 2, "{tokens:?}");
    let lapse = Duration::from_secs(60 + 10 + 3 + 2);
    std::thread::sleep(lapse.saturating_sub(rotated_at.elapsed()));
    for server in 1..=2 {
        for t in &old {
            let (body, code) = kernel_on(t, server);
            assert_eq!(code, "403", "old token on s{server}: {body}");
            assert!(
                body.contains(&format!("key {old_kid}")) && body.contains("retired"),
                "{body}"
            );
        }
    }
    // The new key's tokens from before the lapse are expired by now (60 s), but fresh
    // ones from both servers fetch from both.
    for (i, x) in [(1, &s1), (2, &s2)] {
        let b = base(&lab.wait_offer(i, ip, x));
        assert_eq!(token_kid(&b).as_deref(), Some(new_kid.as_str()));
        for server in 1..=2 {
            let (body, code) = kernel_on(&b, server);
            assert_eq!(code, "200", "s{i}'s new token on s{server}: {body}");
        }
    }
}

/// `xboot events cn1` in cluster mode prints the events of both servers, merged by time,
/// each naming its server; a server that cannot be asked is named in the error.
#[test]
fn events_merged_across_two_servers() {
    if netns::need_root() {
        return;
    }
    let lab = Lab::new();
    let (s1, s2) = two_servers_with_cn1(&lab, 1);
    let ip = Ipv4Addr::new(10, 50, 0, 100);
    // A kernel from each server, s2's first.
    for i in [2, 1] {
        let x = if i == 1 { &s1 } else { &s2 };
        let b = boot_url(&lab.wait_offer(i, ip, x));
        let (_, code) = lab.curl(&[&b.replace("/ipxe", "/kernel"), "-o", "/dev/null"]);
        assert_eq!(code, "200");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = cli_s1(&lab, &["events", "cn1", "--json", "--token", API_TOKEN]);
    assert!(out.status.success(), "{out:?}\n{}", s1.log());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let evs = v.as_array().unwrap();
    let kernels: Vec<&str> = evs
        .iter()
        .filter(|e| e["kind"] == "kernel")
        .map(|e| e["server"].as_str().unwrap())
        .collect();
    assert_eq!(kernels, ["s2", "s1"], "{v}");
    let times: Vec<u64> = evs.iter().map(|e| e["time_ms"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{v}");
    for id in ["s1", "s2"] {
        assert!(
            evs.iter()
                .any(|e| e["server"] == id && e["kind"] == "dhcp_offer"),
            "no offer of {id}: {v}"
        );
    }
    // The table names the server in its own column.
    let out = cli_s1(&lab, &["events", "cn1", "--token", API_TOKEN]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.starts_with("TIME") && text.contains("SERVER"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(" s2 ") && l.contains("kernel")),
        "{text}"
    );
    // A wrong token: s1's events (its socket) are printed, s2 is named as missing.
    let out = cli_s1(&lab, &["events", "cn1", "--json", "--token", "wrong"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 of 2 servers") && err.contains("s2 ("),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.as_array().unwrap().iter().all(|e| e["server"] == "s1"),
        "{v}"
    );
}

/// Image blobs: an image whose files only s1 has, published on s1, is prefetched by s2
/// (etcd holding each file's sha256 and size only): a half-fetched initrd is resumed by
/// a Range request, both files are checked into s2's blob cache; a file changed on s1
/// under its record is refused by s2 (the mismatch logged, nothing kept, the boot
/// answered 502); a new image asked for by four boots at once is downloaded once; with
/// s1 killed, s2 boots cn1 (script,
/// kernel, initrd) from its own disk.
#[test]
fn an_image_published_on_one_server_is_prefetched_and_booted_from_another() {
    /// `cluster.blob_gc_grace_secs` of both servers.
    const GC_GRACE: Duration = Duration::from_secs(10);
    use sha2::Digest;
    use std::io::Write;
    if netns::need_root() {
        return;
    }
    let lab = Lab::new();
    // Each server's image roots are its own directory: s2's stays empty.
    let own = |i: usize| lab.path(&format!("img-s{i}"));
    for i in 1..=2 {
        std::fs::create_dir_all(own(i)).unwrap();
        let cfg = lab.path(&format!("s{i}/xboot.toml"));
        let text = std::fs::read_to_string(&cfg).unwrap();
        let roots = format!("image_roots = [\"{}\"]", lab.path("img").display());
        assert!(text.contains(&roots), "{text}");
        let mine = format!("image_roots = [\"{}\"]", own(i).display());
        // The cache GC's grace, short enough to be waited for (s2's cache is checked).
        let text = text.replace(
            "timeout_ms = 2000\n",
            &format!(
                "timeout_ms = 2000\nblob_gc_grace_secs = {}\n",
                GC_GRACE.as_secs()
            ),
        );
        std::fs::write(&cfg, text.replace(&roots, &mine)).unwrap();
    }
    let kernel: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let initrd: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    let spare = vec![0x5au8; 500_000];
    for (name, bytes) in [
        ("vmlinuz", &kernel),
        ("initrd.img", &initrd),
        ("spare", &spare),
    ] {
        std::fs::write(own(1).join(name), bytes).unwrap();
    }
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let (k_sha, i_sha, spare_sha) = (sha(&kernel), sha(&initrd), sha(&spare));
    // s2 had fetched half the initrd before.
    let cache = lab.path("s2/state/blobs/sha256");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join(format!("{i_sha}.part")), &initrd[..1_000_000]).unwrap();

    let mut s1 = lab.start(1);
    let s2 = lab.start(2);
    let images = lab.write(
        "blob-images.json",
        serde_json::json!([
            {"name": "img", "kernel": own(1).join("vmlinuz"),
             "initrd": [own(1).join("initrd.img")], "cmdline": "console=ttyS0"},
            {"name": "spare", "kernel": own(1).join("spare"), "cmdline": ""},
        ]),
    );
    s1.ok(&["image", "import", &images]);
    s1.ok(&["host", "import", &lab.hosts("10.50.0.100/24")]);

    // etcd holds the files' hashes and sizes, published by s1, and no bytes.
    let doc = lab.etcdctl(&["get", "/xboot/v1/images/img", "--print-value-only"]);
    assert!(doc.len() < 4096, "{doc}");
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let blobs: Vec<(String, u64, String)> = doc["blobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no blobs in {doc}"))
        .iter()
        .map(|b| {
            (
                b["sha256"].as_str().unwrap().to_string(),
                b["size"].as_u64().unwrap(),
                b["server"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        blobs,
        [
            (k_sha.clone(), 3_000_000, "s1".to_string()),
            (i_sha.clone(), 2_000_000, "s1".to_string())
        ]
    );

    // s2 prefetches img's files (not spare's: no host boots it), each checked.
    let t0 = Instant::now();
    while !(cache.join(&k_sha).exists() && cache.join(&i_sha).exists()) {
        assert!(
            t0.elapsed() < CONVERGE,
            "s2 never prefetched: {}\ns1: {}",
            s2.log(),
            s1.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sha(&std::fs::read(cache.join(&k_sha)).unwrap()), k_sha);
    assert_eq!(sha(&std::fs::read(cache.join(&i_sha)).unwrap()), i_sha);
    assert!(!cache.join(format!("{i_sha}.part")).exists());
    assert!(!cache.join(&spare_sha).exists());
    // The initrd was resumed: s1 sent its second half only; the kernel whole.
    let log1 = s1.log();
    assert!(
        log1.contains(&format!("blobs: {i_sha} (bytes=1000000-) to 10.50.0.12:")),
        "{log1}"
    );
    assert!(
        log1.contains(&format!("blobs: {k_sha} (whole) to 10.50.0.12:")),
        "{log1}"
    );
    assert!(
        s2.log().contains(&format!(
            "blobs: {i_sha} (2000000 bytes, 1000000 received) fetched from s1"
        )),
        "{}",
        s2.log()
    );

    // s2 serves other servers what it holds, to requests signed with the cluster's
    // keyring only: unsigned, or signed with another key, is refused. A name that is no
    // sha256 is refused, an unknown blob is not found (and not fetched from elsewhere to
    // answer).
    let peer_url = |hex: &str| format!("http://10.50.0.12:8080/blobs/sha256/{hex}");
    let out = lab.path("peer-kernel");
    let (body, code) = lab.curl(&[&peer_url(&k_sha), "-o", out.to_str().unwrap()]);
    assert_eq!(code, "403", "{body}");
    let refused = std::fs::read_to_string(&out).unwrap();
    assert!(refused.contains("no x-xboot-peer header"), "{refused}");
    // The cluster's ring, as every server keeps it (s2's state dir: taken from etcd).
    let ring = xboot::http::token::read_ring(&lab.path("s2/state/token.key")).unwrap();
    let now = xboot::http::token::now_secs();
    let signed = |ring: &xboot::http::token::Keyring, method: &str, hex: &str| {
        let h = xboot::cluster::peer::sign(ring, method, hex, "test", now);
        format!("{}: {h}", xboot::cluster::peer::HEADER)
    };
    let stranger = xboot::http::token::Keyring::generate(now);
    let (body, code) = lab.curl(&["-H", &signed(&stranger, "GET", &k_sha), &peer_url(&k_sha)]);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("not in this server's keyring"), "{body}");
    // A signature is for one blob and one method.
    let (body, code) = lab.curl(&["-H", &signed(&ring, "GET", &i_sha), &peer_url(&k_sha)]);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("bad token signature"), "{body}");
    let (body, code) = lab.curl(&["-I", "-H", &signed(&ring, "GET", &k_sha), &peer_url(&k_sha)]);
    assert_eq!(code, "403", "HEAD with a GET's signature: {body}");
    assert!(
        s2.log().contains(&format!("blobs: {k_sha} refused to ")),
        "{}",
        s2.log()
    );
    let (_, code) = lab.curl(&[
        "-H",
        &signed(&ring, "GET", &k_sha),
        &peer_url(&k_sha),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, "200");
    assert_eq!(sha(&std::fs::read(&out).unwrap()), k_sha);
    assert!(
        s2.log()
            .lines()
            .any(|l| l.contains(&format!("blobs: {k_sha} (whole) to "))
                && l.contains("(server test): 200")),
        "{}",
        s2.log()
    );
    let (body, code) = lab.curl(&[&peer_url("NOT-A-HASH")]);
    assert_eq!(code, "400", "{body}");
    let none = sha(b"none");
    let (body, code) = lab.curl(&["-H", &signed(&ring, "GET", &none), &peer_url(&none)]);
    assert_eq!(code, "404", "{body}");
    assert!(body.contains("no image of the inventory has it"), "{body}");

    // spare's file changes on s1 under its record, in place with its mtime kept (s1
    // still takes it for the blob it hashed): s2 refuses the bytes.
    let f = own(1).join("spare");
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    let mut fh = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    fh.write_all(b"corrupt").unwrap();
    fh.set_modified(mtime).unwrap();
    drop(fh);
    let cn2 = "02:50:00:00:00:02";
    s1.ok(&[
        "host",
        "import",
        &lab.write(
            "cn2.json",
            serde_json::json!([{"name": "cn2", "provision": true, "boot_image": "spare",
                "interfaces": [{"mac": cn2, "ip": "10.50.0.102/24"}]}]),
        ),
    ]);
    let t0 = Instant::now();
    let mismatch = format!("blobs: {spare_sha} from s1");
    while !s2
        .log()
        .lines()
        .any(|l| l.contains(&mismatch) && l.contains("sha256 mismatch"))
    {
        assert!(
            t0.elapsed() < CONVERGE,
            "s2 never refused spare: {}",
            s2.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!cache.join(&spare_sha).exists());
    assert!(!cache.join(format!("{spare_sha}.part")).exists());
    // A boot asking for it through s2 is refused, saying why.
    let discover = relayed_via(
        RELAY,
        MessageType::Discover,
        cn2,
        0x7000,
        &[
            DhcpOption::ClientSystemArchitecture(0.into()),
            DhcpOption::UserClass(b"iPXE".to_vec()),
        ],
    );
    let offer = lab
        .dhcp(2, discover)
        .into_iter()
        .next()
        .expect("s2 offers cn2");
    let base = boot_url(&offer).trim_end_matches("/ipxe").to_string();
    let (body, code) = lab.curl(&[&format!("{base}/kernel")]);
    assert_eq!(code, "502", "{body}");
    assert!(body.contains("sha256 mismatch"), "{body}");

    // A new image booted by cn3 (of s2's segment), asked for by four boots at once as
    // soon as the host reaches s2: the prefetch and the four requests share one
    // download. (A host of another segment is not served by s2 at all: see the segment
    // test.)
    let late: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(7_919) >> 5) as u8)
        .collect();
    let late_sha = sha(&late);
    std::fs::write(own(1).join("late"), &late).unwrap();
    let late_images = lab.write(
        "late-images.json",
        serde_json::json!([{"name": "late", "kernel": own(1).join("late"), "cmdline": ""}]),
    );
    s1.ok(&["image", "import", &late_images]);
    s1.ok(&[
        "host",
        "import",
        &lab.write(
            "cn3.json",
            serde_json::json!([{"name": "cn3", "provision": true, "boot_image": "late",
                "interfaces": [{"mac": "02:50:00:00:00:03", "ip": "10.50.0.83/24"}]}]),
        ),
    ]);
    s2.wait_host("cn3", "reached s2", |h| h["provision"] == true);
    let cfg2 = lab.path("s2/xboot.toml");
    let shown = s2.ok(&[
        "--config",
        cfg2.to_str().unwrap(),
        "host",
        "show",
        "cn3",
        "--boot",
        "--server",
        "10.50.0.12",
    ]);
    let ipxe = shown
        .lines()
        .find_map(|l| {
            let at = l.find("http://10.50.0.12:8080/boot/")?;
            let url = l[at..].split([',', ' ']).next()?;
            url.ends_with("/ipxe").then(|| url.to_string())
        })
        .unwrap_or_else(|| panic!("no boot URL in {shown}"));
    let kernel_url = ipxe.replace("/ipxe", "/kernel");
    std::thread::scope(|sc| {
        let got: Vec<_> = (0..4)
            .map(|n| {
                let (lab, url) = (&lab, kernel_url.clone());
                sc.spawn(move || {
                    let out = lab.path(&format!("late-{n}"));
                    let (_, code) = lab.curl(&[&url, "-o", out.to_str().unwrap()]);
                    (code, std::fs::read(&out).unwrap_or_default())
                })
            })
            .collect();
        for g in got {
            let (code, body) = g.join().unwrap();
            assert_eq!(code, "200", "{}", s2.log());
            assert!(body == late, "late differs");
        }
    });
    let sent = format!("blobs: {late_sha} (whole) to 10.50.0.12:");
    assert_eq!(s1.log().matches(&sent).count(), 1, "{}", s1.log());
    let got = format!("blobs: {late_sha} (20000000 bytes, 20000000 received) fetched from s1");
    assert_eq!(s2.log().matches(&got).count(), 1, "{}", s2.log());

    // The cache GC: late's image deleted (its host first), s2 removes its blob and its
    // holder key once the grace has passed; img's blobs, still referenced, stay.
    let holder = format!("/xboot/v1/blobs/sha256/{late_sha}/s2");
    assert!(!lab
        .etcdctl(&["get", &holder, "--keys-only"])
        .trim()
        .is_empty());
    s1.ok(&["host", "delete", "cn3"]);
    s1.ok(&["image", "delete", "late"]);
    let t0 = Instant::now();
    while cache.join(&late_sha).exists() {
        assert!(
            t0.elapsed() < CONVERGE + GC_GRACE,
            "s2 kept late's blob: {}",
            s2.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        t0.elapsed() + Duration::from_secs(1) >= GC_GRACE,
        "removed {:?} after the deletion, before its grace",
        t0.elapsed()
    );
    let log2 = s2.log();
    assert!(
        log2.contains(&format!(
            "blobs: removed {late_sha} (20000000 bytes): no image references it"
        )),
        "{log2}"
    );
    assert!(
        log2.contains("cache GC removed 1 files, 20000000 bytes"),
        "{log2}"
    );
    assert!(cache.join(&k_sha).exists() && cache.join(&i_sha).exists());
    let t0 = Instant::now();
    while !lab
        .etcdctl(&["get", &holder, "--keys-only"])
        .trim()
        .is_empty()
    {
        assert!(
            t0.elapsed() < CONVERGE,
            "s2 still named as a holder of late"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // s1 gone: s2 boots cn1 from its own disk, and fetches nothing more.
    let fetched = |log: &str| log.matches("fetched from").count();
    let before = fetched(&s2.log());
    s1.child.kill().unwrap();
    s1.child.wait().unwrap();
    let offer = lab.wait_offer(2, Ipv4Addr::new(10, 50, 0, 100), &s2);
    let url = boot_url(&offer);
    assert!(url.starts_with("http://10.50.0.12:8080/boot/"), "{url}");
    let (script, code) = lab.curl(&[&url]);
    assert_eq!(code, "200", "{script}");
    // The URLs the script loads (`kernel --name kernel URL ...`, `initrd --name N URL`).
    let script_url = |cmd: &str| -> String {
        let line = script
            .lines()
            .find(|l| l.starts_with(&format!("{cmd} --name ")))
            .unwrap_or_else(|| panic!("no {cmd} in {script}"));
        line.split_whitespace().nth(3).unwrap().to_string()
    };
    for (cmd, bytes) in [("kernel", &kernel), ("initrd", &initrd)] {
        let file_url = script_url(cmd);
        assert!(
            file_url.starts_with("http://10.50.0.12:8080/"),
            "{file_url}"
        );
        let out = lab.path(&format!("got-{cmd}"));
        let (_, code) = lab.curl(&[&file_url, "-o", out.to_str().unwrap()]);
        assert_eq!(code, "200", "{cmd}: {}", s2.log());
        assert!(std::fs::read(&out).unwrap() == **bytes, "{cmd} differs");
    }
    assert_eq!(fetched(&s2.log()), before, "{}", s2.log());
}

// A segment VIP moved by keepalived.

/// Segment A's VIP (in 10.50.0.0/24, no host's address).
const VIP: &str = "10.50.0.250";

impl Lab {
    /// Gives segment A of server `i`'s config the VIP.
    fn with_vip(&self, i: usize) {
        let path = self.path(&format!("s{i}/xboot.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let seg = "subnets = [\"10.50.0.0/24\"]\n";
        assert!(text.ends_with(seg), "{text}");
        std::fs::write(&path, format!("{text}vip = \"{VIP}\"\n")).unwrap();
    }

    /// Starts keepalived in server `i`'s namespace with the config that `xboot cluster
    /// keepalived` prints for segment A there (advertisements every 0.2 s, the VIP given
    /// up after one failed health check). Killed with the namespace.
    fn start_keepalived(&self, i: usize) {
        let config = self.path(&format!("s{i}/xboot.toml"));
        let out = self.servers[i - 1]
            .cmd(&[
                XBOOT,
                "cluster",
                "keepalived",
                "--segment",
                "A",
                "--advert-int",
                "0.2",
                "--fall",
                "1",
                "--config",
                config.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xboot cluster keepalived: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&format!("{VIP}/24 dev s{i}\n"))
                && text.contains("http://127.0.0.1:8080/"),
            "{text}"
        );
        let conf = self.path(&format!("s{i}/keepalived.conf"));
        std::fs::write(&conf, text).unwrap();
        let log = std::fs::File::create(self.keepalived_log(i)).unwrap();
        let pid = |p: &str| self.path(&format!("s{i}/{p}")).display().to_string();
        let (main_pid, vrrp_pid) = (pid("keepalived.pid"), pid("keepalived-vrrp.pid"));
        self.servers[i - 1].spawn(
            &[
                "keepalived",
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--vrrp",
                "--use-file",
                conf.to_str().unwrap(),
                "--pid",
                &main_pid,
                "--vrrp_pid",
                &vrrp_pid,
            ],
            log.try_clone().unwrap().into(),
            log.into(),
        );
    }

    fn keepalived_log(&self, i: usize) -> PathBuf {
        self.path(&format!("s{i}/keepalived.log"))
    }

    /// The servers (1, 2) whose segment interface holds the VIP now.
    fn vip_holders(&self) -> Vec<usize> {
        (1..=2)
            .filter(|&i| {
                let out = self.servers[i - 1].run(&[
                    "ip",
                    "-4",
                    "-o",
                    "addr",
                    "show",
                    "dev",
                    &format!("s{i}"),
                ]);
                String::from_utf8_lossy(&out.stdout).contains(&format!(" {VIP}/24 "))
            })
            .collect()
    }

    /// Waits until exactly one server holds the VIP, and returns it.
    fn wait_vip_holder(&self) -> usize {
        let t0 = Instant::now();
        loop {
            if let [one] = self.vip_holders()[..] {
                return one;
            }
            assert!(
                t0.elapsed() < CONVERGE,
                "no single VIP holder: {:?}\n{}",
                self.vip_holders(),
                self.keepalived_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keepalived_logs(&self) -> String {
        (1..=2)
            .map(|i| {
                let log = std::fs::read_to_string(self.keepalived_log(i)).unwrap_or_default();
                format!("keepalived s{i}:\n{log}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// GET `url` from the client namespace into `to` (one try, 1 s at most); its status.
    fn fetch(&self, url: &str, to: &std::path::Path) -> String {
        let (_, code) = self.curl(&["-m", "1", "-o", to.to_str().unwrap(), url]);
        code
    }

    /// Fetches `url` until it answers 200 with `want` (bounded); how long that took.
    fn fetch_until(&self, url: &str, want: &[u8], what: &str) -> Duration {
        let to = self.path("fetched");
        let t0 = Instant::now();
        loop {
            let _ = std::fs::remove_file(&to);
            if self.fetch(url, &to) == "200" && std::fs::read(&to).unwrap_or_default() == want {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < CONVERGE,
                "{what}: {url} never served the live image\n{}",
                self.keepalived_logs()
            );
        }
    }
}

/// Two servers of segment A with a VIP and a real keepalived each (the config `xboot
/// cluster keepalived` prints): the live image URL of cn1's iPXE script names the VIP,
/// and the kernel and initrd fall back to it; a client fetches the live image through
/// it; the xboot holding the VIP is SIGKILLed and the VIP moves to the other server
/// (keepalived's health check), where the same URL, with the same token, fetches the
/// same bytes. The killed xboot started again does not take the VIP back (nopreempt);
/// killing the new holder moves it back. Each failover gap (SIGKILL until the URL
/// serves the image again) is printed.
#[test]
fn a_segment_vip_follows_the_live_server() {
    if netns::need_root() {
        return;
    }
    let lab = Lab::new();
    let live: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 23) as u8)
        .collect();
    std::fs::write(lab.path("img/root.squashfs"), &live).unwrap();
    for i in 1..=2 {
        lab.with_vip(i);
    }
    let mut servers = [Some(lab.start(1)), Some(lab.start(2))];
    let img = lab.path("img");
    let images = lab.write(
        "live-images.json",
        serde_json::json!([{
            "name": "img",
            "kernel": img.join("vmlinuz"),
            "initrd": [img.join("initrd.img")],
            "liveimg": img.join("root.squashfs"),
            "cmdline": "root=live:{{ $.endpoints.LiveImageURL }} rd.live.image",
        }]),
    );
    let s1 = servers[0].as_ref().unwrap();
    s1.ok(&["image", "import", &images]);
    s1.ok(&["host", "import", &lab.hosts("10.50.0.100/24")]);
    servers[1]
        .as_ref()
        .unwrap()
        .wait_host("cn1", "reached s2", |h| h["provision"] == true);
    for i in 1..=2 {
        lab.start_keepalived(i);
    }
    let first = lab.wait_vip_holder();

    // The script from s1 (its own address in the DHCP answer) names the VIP.
    let offer = lab.wait_offer(1, Ipv4Addr::new(10, 50, 0, 100), s1);
    let (script, code) = lab.curl(&[&boot_url(&offer)]);
    assert_eq!(code, "200", "{script}");
    let vip_base = format!("http://{VIP}:8080/boot/");
    let live_url = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("root=live:"))
        .unwrap_or_else(|| panic!("no live root in {script}"))
        .to_string();
    assert!(live_url.starts_with(&vip_base), "{script}");
    let token = live_url[vip_base.len()..].trim_end_matches("/liveimg");
    assert!(
        script.contains(&format!(
            "initrd --name initrd-0 http://10.50.0.11:8080/boot/{token}/initrd-0 \
             || initrd --name initrd-0 {vip_base}{token}/initrd-0\n"
        )),
        "{script}"
    );
    assert!(
        script.contains(&format!(
            "|| kernel --name kernel {vip_base}{token}/kernel "
        )),
        "{script}"
    );
    lab.fetch_until(&live_url, &live, "before any failover");

    // The holder's xboot dies: the other server takes the VIP, the same URL serves.
    let mut gaps = Vec::new();
    let mut holder = first;
    for round in 0..2 {
        let log = lab.keepalived_log(holder);
        let backups = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("(xboot_A) Entering BACKUP STATE")
                .count()
        };
        let before = backups();
        let mut dead = servers[holder - 1].take().unwrap();
        let killed = Instant::now();
        dead.child.kill().unwrap();
        dead.child.wait().unwrap();
        lab.fetch_until(&live_url, &live, &format!("failover {round}"));
        gaps.push(killed.elapsed());
        let now = lab.wait_vip_holder();
        assert_eq!(now, 3 - holder, "the VIP is on the live server");
        drop(dead);
        // Started again: healthy (its keepalived back to BACKUP), but the VIP stays
        // where it is (nopreempt).
        servers[holder - 1] = Some(lab.start(holder));
        let back = Instant::now();
        while backups() == before {
            assert!(
                back.elapsed() < CONVERGE,
                "s{holder}'s keepalived never left FAULT\n{}",
                lab.keepalived_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(lab.vip_holders(), [now], "nopreempt: the VIP stayed");
        holder = now;
    }
    eprintln!(
        "VIP failover gaps (SIGKILL of the holder's xboot until the live image URL served \
         again): {:?}",
        gaps
    );
}
