//! TLS end to end against `xboot serve` on loopback, with curl (OpenSSL) as the client
//! and a CA made by openssl (`testlab::certs`): the boot files over HTTPS with
//! `provision.hostname` in the URLs, plain HTTP beside it, the API's TCP listener over
//! TLS, a SIGHUP that swaps both certificates while a download started before it
//! completes on its connection, refused reloads that keep the certificate, a reload when
//! the files are written over, and the start
//! refused on a bad path or a mismatched pair (serve and check-config alike).
//!
//! iPXE over HTTPS boots in qemu in `pxe::pxe_boot_uefi_ipxe_over_https`.
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cli::{xboot, Server, Site};
use testlab::certs::{Ca, Issued};
use xboot::http::{TokenKey, UrlSigner};

const HOSTNAME: &str = "boot.test";
const TOKEN: &str = "tls-api-token";
const KERNEL_LEN: usize = 2 << 20;

fn kernel_bytes() -> Vec<u8> {
    (0..KERNEL_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

/// The site's config, serving HTTPS and the TLS API with `cert`/`key` (paths relative to
/// the site).
fn config(cert: &str, key: &str) -> String {
    format!(
        "state_dir = \"state\"\nhosts = \"hosts.json\"\nimages = \"images.toml\"\n\
         [dhcp]\nlease_time = \"1h\"\nmode = \"off\"\n\
         [tftp]\nlisten = \"127.0.0.1:0\"\n\
         [provision]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\
         hostname = \"{HOSTNAME}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         secret = \"tls-secret\"\nimage_roots = [\"boot\"]\n\
         [api]\nsocket_path = \"run/api.socket\"\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         cert = \"{cert}\"\nkey = \"{key}\"\n"
    )
}

/// Waits for `what` in the server's log (the listeners log their address when they
/// start; reloads log their outcome).
fn wait_log(server: &Server, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = server.log();
        if log.contains(what) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {what:?} in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port in the first log line holding `marker` followed by `127.0.0.1:PORT`.
fn port_after(log: &str, marker: &str) -> u16 {
    let line = log
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} in\n{log}"));
    let rest = &line[line.find(marker).unwrap() + marker.len()..];
    let rest = &rest[rest.find("127.0.0.1:").expect("an address") + "127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap()
}

struct Got {
    ok: bool,
    code: String,
    body: Vec<u8>,
    /// curl's `%{certs}`: the server's certificates as it saw them.
    certs: String,
    stderr: String,
}

/// curl with the test's CA, `boot.test` resolving to loopback; `-w` prints the status
/// and the certificates after the body, on stderr.
fn curl(ca: &Path, args: &[&str]) -> Got {
    let out = testlab::peers::command("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(ca)
        .args(["-w", "%{stderr}CODE=%{http_code}\n%{certs}"])
        .args(args)
        .output()
        .expect("curl runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = stderr
        .lines()
        .find_map(|l| l.strip_prefix("CODE="))
        .unwrap_or("")
        .to_string();
    Got {
        ok: out.status.success(),
        code,
        body: out.stdout,
        certs: stderr.clone(),
        stderr,
    }
}

fn serial(g: &Got) -> String {
    g.certs
        .lines()
        .find_map(|l| l.strip_prefix("Serial Number:"))
        .unwrap_or_else(|| panic!("no serial in curl's output: {}", g.stderr))
        .trim()
        .trim_start_matches('0')
        .to_lowercase()
}

fn put(site: &Site, i: &Issued) {
    std::fs::copy(&i.cert, site.dir.path().join("tls/live.pem")).unwrap();
    std::fs::copy(&i.key, site.dir.path().join("tls/live.key")).unwrap();
}

fn hangup(server: &Server) {
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

#[test]
fn https_boot_files_tls_api_and_certificate_reload_on_sighup() {
    let site = Site::new();
    std::fs::write(site.dir.path().join("boot/vmlinuz"), kernel_bytes()).unwrap();
    let ca = Ca::new(&site.dir.path().join("tls"), "xboot test CA").unwrap();
    let names = [HOSTNAME, "127.0.0.1"];
    let first = ca.issue("first", &names, 0x1001).unwrap();
    let second = ca.issue("second", &names, 0x1002).unwrap();
    let other = ca.issue("other", &names, 0x1003).unwrap();
    put(&site, &first);
    site.write("xboot.toml", &config("tls/live.pem", "tls/live.key"));
    let server = Server::start(&site);
    let log = wait_log(&server, "HTTPS serving on");
    let log = if log.contains("API listening on https://") {
        log
    } else {
        wait_log(&server, "API listening on https://")
    };
    let https = port_after(&log, "HTTPS serving on");
    let plain = port_after(&log, "HTTP serving on");
    let api = port_after(&log, "API listening on https://");
    assert!(log.contains("certificate sha256 "), "{log}");
    let ca_pem = ca.cert();
    let resolve = format!("{HOSTNAME}:{https}:127.0.0.1");
    let signer = UrlSigner::new(
        &format!("https://{HOSTNAME}:{https}"),
        TokenKey::from_secret("tls-secret"),
        Duration::from_secs(600),
    );
    let boot_url = |file: &str| {
        let token = signer.token("cn1", "aa:bb:cc:00:00:01".parse().unwrap());
        format!("https://{HOSTNAME}:{https}/boot/{token}/{file}")
    };

    // The kernel over HTTPS, verified against the test's CA, from the first certificate.
    let kernel = boot_url("kernel");
    let g = curl(&ca_pem, &["--resolve", &resolve, &kernel]);
    assert!(g.ok && g.code == "200", "{}", g.stderr);
    assert!(
        g.body == kernel_bytes(),
        "kernel differs ({} bytes)",
        g.body.len()
    );
    assert_eq!(serial(&g), first.serial);
    // The iPXE script's URLs are https, on the name the client used.
    let g = curl(&ca_pem, &["--resolve", &resolve, &boot_url("ipxe")]);
    let script = String::from_utf8_lossy(&g.body).into_owned();
    assert_eq!(g.code, "200", "{script}");
    assert!(
        script.contains(&format!(" https://{HOSTNAME}:{https}/boot/")),
        "{script}"
    );
    // Without the CA, curl refuses the server: the certificate is what is checked.
    let out = testlab::peers::command("curl")
        .args(["-sS", "--max-time", "10", "--resolve", &resolve, &kernel])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Plain HTTP stays on provision.listen; it speaks no TLS.
    let g = curl(&ca_pem, &[&format!("http://127.0.0.1:{plain}/")]);
    assert_eq!(
        (g.code.as_str(), g.body.as_slice()),
        ("200", &br#"{"status":"up"}"#[..])
    );
    let g = curl(&ca_pem, &[&format!("https://127.0.0.1:{plain}/")]);
    assert!(!g.ok, "TLS on the plain listener: {}", g.stderr);

    // The API over TLS, behind its token; plain HTTP gets no answer there.
    let status = format!("https://127.0.0.1:{api}/v1/status");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let g = curl(&ca_pem, &["-H", &auth, &status]);
    assert_eq!(g.code, "200", "{}", g.stderr);
    assert!(
        String::from_utf8_lossy(&g.body).contains("\"hosts\""),
        "{:?}",
        g.body
    );
    assert_eq!(serial(&g), first.serial);
    assert_eq!(curl(&ca_pem, &[&status]).code, "401");
    let g = curl(
        &ca_pem,
        &["-H", &auth, &format!("http://127.0.0.1:{api}/v1/status")],
    );
    assert_ne!(g.code, "200", "plain HTTP on the TLS API: {}", g.stderr);

    // A download at a slow rate, started before the reload, must finish on its
    // connection with the certificate it began with.
    let partial = site.dir.path().join("slow-kernel");
    let slow = testlab::peers::command("curl")
        .args([
            "-sS",
            "--max-time",
            "120",
            "--limit-rate",
            "256k",
            "--cacert",
        ])
        .arg(&ca_pem)
        .args(["-w", "%{certs}", "--resolve", &resolve, "-o"])
        .arg(&partial)
        .arg(&kernel)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "the slow download did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    put(&site, &second);
    hangup(&server);
    wait_log(&server, "provision TLS certificate reloaded (SIGHUP)");
    wait_log(&server, "api TLS certificate reloaded (SIGHUP)");
    assert!(
        std::fs::metadata(&partial).unwrap().len() < KERNEL_LEN as u64,
        "the download must still be running across the reload"
    );
    let g = curl(&ca_pem, &["--resolve", &resolve, &kernel]);
    assert_eq!(
        serial(&g),
        second.serial,
        "new connections get the new certificate"
    );
    assert!(g.body == kernel_bytes());
    assert_eq!(
        serial(&curl(&ca_pem, &["-H", &auth, &status])),
        second.serial
    );
    let out = slow.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&partial).unwrap() == kernel_bytes(),
        "the download across the reload is whole"
    );
    assert!(
        text.contains(&format!("Serial Number:{}", first.serial)),
        "the open connection kept its certificate: {text}"
    );

    // Refused reloads: garbage, a key of another certificate, a missing file. Each is
    // logged with the key and the file, and the second certificate keeps serving.
    let live = site.dir.path().join("tls/live.pem");
    let live_key = site.dir.path().join("tls/live.key");
    type Breaks<'a> = Box<dyn Fn() + 'a>;
    let refusals: [(&str, Breaks); 3] = [
        (
            "is not a PEM certificate file: no \"-----END CERTIFICATE-----\" line",
            Box::new(|| std::fs::write(&live, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap()),
        ),
        (
            "is not the key of the certificate in",
            Box::new(|| {
                std::fs::copy(&second.cert, &live).unwrap();
                std::fs::copy(&other.key, &live_key).unwrap();
            }),
        ),
        (
            "cannot read",
            Box::new(|| std::fs::remove_file(&live).unwrap()),
        ),
    ];
    for (n, (why, break_it)) in refusals.iter().enumerate() {
        put(&site, &second);
        break_it();
        hangup(&server);
        // Both sections share the files: two refusals per SIGHUP.
        let marker = "api TLS certificate reload (SIGHUP) refused";
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.log().matches(marker).count() < n + 1 {
            assert!(Instant::now() < deadline, "{why}: {}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = server.log();
        let line = log
            .lines()
            .filter(|l| l.contains("provision TLS certificate reload (SIGHUP) refused"))
            .nth(n)
            .unwrap_or_else(|| panic!("{log}"));
        assert!(
            line.contains("still serving the previous one") && line.contains(why),
            "{line}"
        );
        let g = curl(&ca_pem, &["--resolve", &resolve, &kernel]);
        assert_eq!(serial(&g), second.serial, "after a refused reload ({why})");
        assert_eq!(g.code, "200");
    }
    // A renewal written over the files is taken without a signal.
    put(&site, &second);
    put(&site, &first);
    let deadline = Instant::now() + Duration::from_secs(20);
    while serial(&curl(&ca_pem, &["--resolve", &resolve, &kernel])) != first.serial {
        assert!(
            Instant::now() < deadline,
            "no reload on file change: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server
            .log()
            .contains("provision TLS certificate reloaded (file change)"),
        "{}",
        server.log()
    );
    drop(server);

    // At start: a mismatched pair and a missing file stop serve and check-config with
    // the key and the file named.
    std::fs::copy(&other.key, &live_key).unwrap();
    let config_path = site.path("xboot.toml");
    for cmd in ["serve", "check-config"] {
        let out = xboot(&[cmd, "--config", &config_path]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(
            err.contains(&format!(
                "provision.key: {} is not the key of the certificate in {} (provision.cert)",
                live_key.display(),
                live.display()
            )),
            "{cmd}: {err}"
        );
    }
    site.write("xboot.toml", &config("tls/none.pem", "tls/live.key"));
    for cmd in ["serve", "check-config"] {
        let out = xboot(&[cmd, "--config", &config_path]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        let want = format!(
            "provision.cert: cannot read {}: No such file",
            site.dir.path().join("tls/none.pem").display()
        );
        assert!(err.contains(&want), "{cmd}: {err}");
    }
}
