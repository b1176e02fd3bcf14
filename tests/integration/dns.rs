//! The DNS server (`[dns]`) against dig (BIND's client, Debian dnsutils), in a network
//! namespace of the test's own: A, AAAA, PTR, SOA, NS and NXDOMAIN over UDP and TCP, a
//! truncated UDP answer, a host added through the API resolving at once, a query forwarded
//! to a second resolver (dnsmasq, answering one name from `--address` with no upstream of
//! its own) and refused by a server with no forwarder, the same dnsmasq resolving the
//! zones it delegates to xboot (`--server=/zone/xboot`, a stub zone), and the counters on
//! /metrics.
//! Everything is on the namespace's loopback: xboot on 127.0.0.1 (forwarding) and
//! 127.0.0.3 (no forwarder), dnsmasq on 127.0.0.2.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::netns::Netns;

const XBOOT: &str = env!("CARGO_BIN_EXE_xboot");

/// What dig printed: the status, the header flags and the answer and authority sections
/// (each record one line with single spaces).
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answer: Vec<String>,
    authority: Vec<String>,
    text: String,
}

impl Dig {
    fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

fn dig(ns: &Netns, server: &str, args: &[&str]) -> Dig {
    try_dig(ns, server, args)
        .unwrap_or_else(|text| panic!("dig {args:?} @{server}: no answer: {text}"))
}

/// dig's answer, or its output when it got none.
fn try_dig(ns: &Netns, server: &str, args: &[&str]) -> Result<Dig, String> {
    let at = format!("@{server}");
    let mut argv = vec!["dig", &at, "+tries=1", "+time=3"];
    argv.extend_from_slice(args);
    let out = ns.cmd(&argv).output().expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig {
        status: String::new(),
        flags: vec![],
        answer: vec![],
        authority: vec![],
        text: text.clone(),
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.is_empty() || line.starts_with(';') {
            section = "";
        } else {
            let rec = line.split_whitespace().collect::<Vec<_>>().join(" ");
            match section {
                "answer" => d.answer.push(rec),
                "authority" => d.authority.push(rec),
                _ => {}
            }
        }
    }
    if d.status.is_empty() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(d)
}

/// One `xboot serve` in `ns`: DHCP off, TFTP/HTTP on loopback, `dns` as its `[dns]`.
struct Xboot {
    dir: PathBuf,
    http: u16,
}

impl Xboot {
    fn start(ns: &Netns, dir: &Path, http: u16, dns: &str) -> Xboot {
        std::fs::create_dir_all(dir).unwrap();
        let mut hosts = vec![serde_json::json!({
            "name": "cn1",
            "provision": false,
            "interfaces": [
                {"mac": "52:54:00:00:00:11", "ip": "10.0.0.11/24",
                 "fqdn": "cn1.cluster.test,cn1-alias.cluster.test"},
                {"ip": "2001:db8::11/64", "fqdn": "cn1.cluster.test"},
                {"ip": "10.1.0.11/16", "fqdn": "cn1-bmc.cluster.test", "bmc": true},
            ],
        })];
        // 40 addresses for one name: over 512 bytes of answer.
        hosts.push(serde_json::json!({
            "name": "many",
            "provision": false,
            "interfaces": (1..=40)
                .map(|i| serde_json::json!({"ip": format!("10.0.2.{i}/24"), "fqdn": "many.cluster.test"}))
                .collect::<Vec<_>>(),
        }));
        std::fs::write(
            dir.join("hosts.json"),
            serde_json::to_string(&hosts).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("xboot.toml"),
            format!(
                "state_dir = \"state\"\nhosts = \"hosts.json\"\n\
                 [dhcp]\nmode = \"off\"\n[api]\nsocket_path = \"api.socket\"\n\
                 [tftp]\nlisten = \"127.0.0.1:0\"\n[provision]\nlisten = \"127.0.0.1:{http}\"\n\
                 [dns]\n{dns}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let config = dir.join("xboot.toml").display().to_string();
        ns.spawn(
            &[XBOOT, "serve", "--config", &config],
            Stdio::null(),
            Stdio::from(log),
        );
        let x = Xboot {
            dir: dir.to_path_buf(),
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !x.xboot(&["status"]).status.success() {
            assert!(Instant::now() < deadline, "no API: {}", x.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        x
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    fn xboot(&self, args: &[&str]) -> std::process::Output {
        let socket = self.dir.join("api.socket").display().to_string();
        testlab::peers::own(XBOOT)
            .args(args)
            .args(["--socket", &socket])
            .env_remove("XBOOT_CONFIG")
            .env_remove("XBOOT_SOCKET")
            .output()
            .unwrap()
    }
}

#[test]
fn dig_gets_inventory_answers_forwarded_answers_and_refusals() {
    if crate::netns::need_root() {
        return;
    }
    let ns = Netns::new("dns");
    ns.run(&["ip", "addr", "add", "127.0.0.2/8", "dev", "lo"]);
    ns.run(&["ip", "addr", "add", "127.0.0.3/8", "dev", "lo"]);
    let tmp = tempfile::tempdir().unwrap();
    // The second resolver: dnsmasq with one name of its own and no upstream.
    ns.spawn(
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--bind-interfaces",
            "--listen-address=127.0.0.2",
            "--port=53",
            "--address=/upstream.example/192.0.2.99",
            // The site resolver's delegation of xboot's zones (a stub zone).
            "--server=/cluster.test/127.0.0.1",
            "--server=/0.0.10.in-addr.arpa/127.0.0.1",
        ],
        Stdio::null(),
        Stdio::null(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while try_dig(&ns, "127.0.0.2", &["upstream.example", "A"]).is_err() {
        assert!(Instant::now() < deadline, "dnsmasq does not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    let fwd = Xboot::start(
        &ns,
        &tmp.path().join("fwd"),
        8081,
        "listen = \"127.0.0.1:53\"\nttl = 600\nforward = \"127.0.0.2:53\"",
    );
    let solo = Xboot::start(
        &ns,
        &tmp.path().join("solo"),
        8082,
        "listen = \"127.0.0.3:53\"",
    );
    let log = || format!("{}\n{}", fwd.log(), solo.log());

    for transport in ["+notcp", "+tcp"] {
        let q = |args: &[&str]| {
            let mut a = vec![transport];
            a.extend_from_slice(args);
            dig(&ns, "127.0.0.1", &a)
        };
        let d = q(&["cn1.cluster.test", "A"]);
        assert_eq!(d.status, "NOERROR", "{}{}", d.text, log());
        assert!(d.has_flag("aa") && d.has_flag("ra"), "{d:?}");
        assert_eq!(d.answer, ["cn1.cluster.test. 600 IN A 10.0.0.11"], "{d:?}");
        let d = q(&["cn1-alias.cluster.test", "A"]);
        assert_eq!(
            d.answer,
            ["cn1-alias.cluster.test. 600 IN A 10.0.0.11"],
            "{d:?}"
        );
        let d = q(&["cn1.cluster.test", "AAAA"]);
        assert_eq!(
            d.answer,
            ["cn1.cluster.test. 600 IN AAAA 2001:db8::11"],
            "{d:?}"
        );
        let d = q(&["-x", "10.0.0.11"]);
        assert_eq!(
            d.answer,
            ["11.0.0.10.in-addr.arpa. 600 IN PTR cn1.cluster.test."],
            "{d:?}"
        );
        let d = q(&["-x", "2001:db8::11"]);
        assert_eq!(d.answer.len(), 1, "{d:?}");
        assert!(d.answer[0].ends_with("IN PTR cn1.cluster.test."), "{d:?}");
        let d = q(&["cluster.test", "SOA"]);
        assert_eq!(d.status, "NOERROR", "{d:?}");
        assert_eq!(d.answer.len(), 1, "{d:?}");
        assert!(
            d.answer[0]
                .starts_with("cluster.test. 600 IN SOA ns.cluster.test. hostmaster.cluster.test. "),
            "{d:?}"
        );
        let d = q(&["cluster.test", "NS"]);
        assert_eq!(
            d.answer,
            ["cluster.test. 600 IN NS ns.cluster.test."],
            "{d:?}"
        );
        let d = q(&["nope.cluster.test", "A"]);
        assert_eq!(d.status, "NXDOMAIN", "{d:?}");
        assert!(d.has_flag("aa"), "{d:?}");
        assert!(d.answer.is_empty(), "{d:?}");
        assert_eq!(d.authority.len(), 1, "{d:?}");
        assert!(
            d.authority[0].starts_with("cluster.test. 60 IN SOA"),
            "{d:?}"
        );
        // Forwarded to dnsmasq, which knows this one name.
        let d = q(&["upstream.example", "A"]);
        assert_eq!(d.status, "NOERROR", "{d:?}{}", log());
        assert!(d.has_flag("ra"), "{d:?}");
        assert_eq!(d.answer.len(), 1, "{d:?}");
        assert!(d.answer[0].ends_with("IN A 192.0.2.99"), "{d:?}");
        // No forwarder: refused; its own names still answered.
        let d = dig(&ns, "127.0.0.3", &[transport, "upstream.example", "A"]);
        assert_eq!(d.status, "REFUSED", "{d:?}");
        let d = dig(&ns, "127.0.0.3", &[transport, "cn1.cluster.test", "A"]);
        assert_eq!(d.answer, ["cn1.cluster.test. 300 IN A 10.0.0.11"], "{d:?}");
    }

    // 40 records over UDP without EDNS: truncated (dig told not to retry over TCP), and
    // whole over TCP.
    let d = dig(
        &ns,
        "127.0.0.1",
        &["+noedns", "+ignore", "many.cluster.test", "A"],
    );
    assert!(d.has_flag("tc"), "{d:?}");
    assert!(d.answer.is_empty(), "{d:?}");
    let d = dig(&ns, "127.0.0.1", &["+tcp", "many.cluster.test", "A"]);
    assert!(!d.has_flag("tc"), "{d:?}");
    assert_eq!(d.answer.len(), 40, "{d:?}");

    // A host added through the API resolves at once, both ways.
    let d = dig(&ns, "127.0.0.1", &["cn2.cluster.test", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{d:?}");
    let out = fwd.xboot(&[
        "host",
        "add",
        "cn2",
        "--mac",
        "52:54:00:00:00:12",
        "--ip",
        "10.0.0.12/24",
        "--fqdn",
        "cn2.cluster.test",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = dig(&ns, "127.0.0.1", &["cn2.cluster.test", "A"]);
    assert_eq!(d.answer, ["cn2.cluster.test. 600 IN A 10.0.0.12"], "{d:?}");
    let d = dig(&ns, "127.0.0.1", &["-x", "10.0.0.12"]);
    assert_eq!(
        d.answer,
        ["12.0.0.10.in-addr.arpa. 600 IN PTR cn2.cluster.test."],
        "{d:?}"
    );

    // Through the site resolver that delegates the zones to xboot.
    let d = dig(&ns, "127.0.0.2", &["cn1.cluster.test", "A"]);
    assert_eq!(d.answer, ["cn1.cluster.test. 600 IN A 10.0.0.11"], "{d:?}");
    let d = dig(&ns, "127.0.0.2", &["-x", "10.0.0.12"]);
    assert_eq!(d.answer.len(), 1, "{d:?}");
    assert!(d.answer[0].ends_with("IN PTR cn2.cluster.test."), "{d:?}");
    let d = dig(&ns, "127.0.0.2", &["nothing.cluster.test", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{d:?}");

    // The counters.
    let url = format!("http://127.0.0.1:{}/metrics", fwd.http);
    let out = ns.run(&["curl", "-sf", &url]);
    let metrics = String::from_utf8_lossy(&out.stdout);
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing: {metrics}"))
    };
    assert!(
        value("xboot_dns_queries_total{type=\"A\"}") >= 12,
        "{metrics}"
    );
    assert!(
        value("xboot_dns_queries_total{type=\"PTR\"}") >= 5,
        "{metrics}"
    );
    assert!(
        value("xboot_dns_queries_total{type=\"AAAA\"}") >= 2,
        "{metrics}"
    );
    assert!(
        value("xboot_dns_answers_total{rcode=\"NXDOMAIN\"}") >= 3,
        "{metrics}"
    );
    assert_eq!(value("xboot_dns_forwarded_total"), 2, "{metrics}");
    assert!(value("xboot_dns_truncated_total") >= 1, "{metrics}");
    assert!(value("xboot_dns_tcp_queries_total") >= 10, "{metrics}");
    assert_eq!(
        value("xboot_dns_errors_total{kind=\"forward_failed\"}"),
        0,
        "{metrics}"
    );
    assert!(value("xboot_dns_table_builds_total") >= 2, "{metrics}");
}
