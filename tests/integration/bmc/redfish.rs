//! Redfish against sushy-tools' emulator (fake driver) on a loopback port: every action,
//! the one-time PXE override, wrong password, closed port, and TLS with a self-signed
//! certificate (refused unless insecure is asked for).
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use xboot::bmc::fanout::Reason;
use xboot::bmc::{Action, BootMode, Protocol, Target};

use super::{opts, rt, target, xboot, PASS, USER};

/// sushy-emulator with the fake driver on a loopback port, basic auth from an htpasswd,
/// its state (the fake machine) in our temp dir.
struct Sushy {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Sushy {
    fn start(tls: bool) -> Sushy {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let hash = testlab::peers::command("python3")
            .args([
                "-c",
                &format!(
                    "import bcrypt; print(bcrypt.hashpw(b'{PASS}', bcrypt.gensalt(4)).decode())"
                ),
            ])
            .output()
            .expect("python3 with bcrypt (installed with sushy-tools)");
        std::fs::write(
            d.join("htpasswd"),
            format!("{USER}:{}", String::from_utf8_lossy(&hash.stdout)),
        )
        .unwrap();
        let mut conf = format!(
            "SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_AUTH_FILE = '{}'\n\
             SUSHY_EMULATOR_STATE_DIR = '{}'\n",
            d.join("htpasswd").display(),
            d.display()
        );
        if tls {
            let ok = testlab::peers::command("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=bmc.test",
                ])
                .args(["-keyout", "key.pem", "-out", "cert.pem"])
                .current_dir(d)
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(ok.success());
            conf += &format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                d.join("cert.pem").display(),
                d.join("key.pem").display()
            );
        }
        std::fs::write(d.join("sushy.conf"), conf).unwrap();
        let port = free_tcp_port();
        let log = std::fs::File::create(d.join("sushy.log")).unwrap();
        let child = testlab::peers::command("sushy-emulator")
            .args([
                "--config",
                "sushy.conf",
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("sushy-emulator (pip sushy-tools, installed by cargo xtask setup)");
        let scheme = if tls { "https" } else { "http" };
        let s = Sushy {
            child,
            base: format!("{scheme}://127.0.0.1:{port}"),
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "sushy-emulator did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn addr(&self) -> SocketAddr {
        self.base.rsplit('/').next().unwrap().parse().unwrap()
    }

    /// The emulated system, read with curl (an independent client).
    fn system(&self) -> serde_json::Value {
        let get = |path: &str| {
            let out = testlab::peers::command("curl")
                .args([
                    "-sk",
                    "-u",
                    &format!("{USER}:{PASS}"),
                    &format!("{}{path}", self.base),
                ])
                .output()
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        let members = get("/redfish/v1/Systems");
        get(members["Members"][0]["@odata.id"].as_str().unwrap())
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sushy {
    /// Waits for the emulated power state (the fake driver applies a change 1-11 s after
    /// the request, like slow hardware), then checks xboot reads the same.
    fn wait_power(&self, rt: &tokio::runtime::Runtime, t: &Target, want: &str) {
        let until = Instant::now() + Duration::from_secs(20);
        while self.system()["PowerState"] != want {
            assert!(
                Instant::now() < until,
                "Redfish PowerState never became {want}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let s = xboot(rt, vec![t.clone()], Action::Status, opts());
        assert_eq!(
            s.results[0].power.as_deref(),
            Some(if want == "On" { "on" } else { "off" }),
            "{:?}",
            s.results[0]
        );
    }
}

#[test]
fn redfish_actions_against_sushy_emulator() {
    let rt = rt();
    let sushy = Sushy::start(false);
    let t = target("rf", sushy.addr(), Protocol::RedfishHttp, PASS);
    let run = |action, boot| {
        let mut o = opts();
        o.boot = boot;
        let s = xboot(&rt, vec![t.clone()], action, o);
        assert_eq!(s.ok, 1, "{action:?}: {:?}", s.results[0]);
    };

    let s = xboot(&rt, vec![t.clone()], Action::Status, opts());
    assert_eq!(
        (s.results[0].reason, s.results[0].power.as_deref()),
        (Reason::Ok, Some("off")),
        "{:?}",
        s.results[0]
    );
    run(Action::On, None);
    sushy.wait_power(&rt, &t, "On");
    run(Action::Soft, None);
    sushy.wait_power(&rt, &t, "Off");
    // cycle: the emulator has no PowerCycle, so xboot picks ForceRestart from the
    // system's allowable values; the one-time PXE override is set before it
    // (the emulator starts in UEFI mode and always reports BootSourceOverrideEnabled
    // "Continuous", whatever was sent: the "Once" body is checked by a unit test)
    run(Action::Cycle, Some(BootMode::Legacy));
    let boot = &sushy.system()["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(boot["BootSourceOverrideMode"], "Legacy");
    sushy.wait_power(&rt, &t, "On");
    run(Action::Off, None);
    sushy.wait_power(&rt, &t, "Off");
    run(Action::Reset, None);

    let mut bad = t.clone();
    bad.password = "wrong".into();
    let s = xboot(&rt, vec![bad], Action::Status, opts());
    assert_eq!(s.results[0].reason, Reason::Auth, "{:?}", s.results[0]);
    let closed = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let s = xboot(
        &rt,
        vec![target("gone", closed, Protocol::RedfishHttp, PASS)],
        Action::Status,
        opts(),
    );
    assert_eq!(s.results[0].reason, Reason::Refused, "{:?}", s.results[0]);
}

#[test]
fn redfish_tls_needs_explicit_insecure_for_self_signed() {
    let rt = rt();
    let sushy = Sushy::start(true);
    let t = vec![target("rf", sushy.addr(), Protocol::Redfish, PASS)];
    let s = xboot(&rt, t.clone(), Action::Status, opts());
    assert_eq!(s.results[0].reason, Reason::Other, "{:?}", s.results[0]);
    assert!(s.results[0].message.contains("TLS"), "{:?}", s.results[0]);
    let mut o = opts();
    o.redfish.insecure = true;
    let s = xboot(&rt, t.clone(), Action::On, o.clone());
    assert_eq!(s.ok, 1, "{:?}", s.results[0]);
    let until = Instant::now() + Duration::from_secs(20);
    while sushy.system()["PowerState"] != "On" {
        assert!(Instant::now() < until, "Redfish PowerState never became On");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = xboot(&rt, t, Action::Status, o);
    assert_eq!(
        s.results[0].power.as_deref(),
        Some("on"),
        "{:?}",
        s.results[0]
    );
}
