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
    (1..=3).map(|i| format!("http://{HUB}:2379{i}")).collect()
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
        let cluster: Vec<String> = (1..=3)
            .map(|i| format!("m{i}=http://{HUB}:2380{i}"))
            .collect();
        for i in 1..=3 {
            if self.etcd[i - 1].is_some() {
                continue;
            }
            let data = self.path(&format!("etcd/m{i}"));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(&format!("etcd-m{i}.log")))
                .unwrap();
            let (client, peer) = (
                format!("http://{HUB}:2379{i}"),
                format!("http://{HUB}:2380{i}"),
            );
            let pid = self.hub.spawn(
                &[
                    "etcd",
                    "--name",
                    &format!("m{i}"),
                    "--data-dir",
                    data.to_str().unwrap(),
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                    "--initial-cluster",
                    &cluster.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "xboot-cluster-test",
                ],
                Stdio::null(),
                log.into(),
            );
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
            assert!(err.contains("unreachable"), "not a clear refusal: {err}");
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("503") || err.contains("unreachable"), "{err}");
    assert_eq!(lab.offer(1).map(|m| m.yiaddr()), Some(ip), "s1 went silent");
    assert_eq!(lab.offer(2).map(|m| m.yiaddr()), Some(ip), "s2 went silent");
    // `complete` is answered (queued durably), and written when etcd is back.
    let (code, body) = lab.complete(2, ip, &s2);
    assert_eq!(code, "200", "{body}\n{}", s2.log());
    assert!(s2.log().contains("completion queued"), "{}", s2.log());
    assert_eq!(s1.host("cn1").unwrap()["provision"], true);
    lab.start_etcd();
    s1.wait_host("cn1", "got the queued completion", |h| {
        h["provision"] == false
    });
    s2.wait_host("cn1", "wrote its queued completion", |h| {
        h["provision"] == false
    });
    assert!(!s1.host("cn1").unwrap()["tags"]
        .as_array()
        .unwrap()
        .contains(&"late".into()));
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
