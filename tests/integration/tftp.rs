//! TFTP on loopback against real clients: tftp-hpa and atftp (blksize, windowsize)
//! fetch undionly.kpxe byte-identical, path escapes are refused, 64 clients at once.
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xboot::config::Config;
use xboot::events::{EventKind, EventLog};
use xboot::inventory::{Host, Interface, Inventory};
use xboot::state::Shared;

const UNDIONLY: &str = "/usr/lib/ipxe/undionly.kpxe";

struct Server {
    port: u16,
    root: tempfile::TempDir,
    /// A directory outside the root, with a file `secret`.
    outside: tempfile::TempDir,
    out: tempfile::TempDir,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A TFTP server on 127.0.0.1:0 whose root holds a copy of undionly.kpxe, a file in a
/// subdirectory and a symlink out of the root. Host `lo1` owns 127.0.0.1.
async fn start() -> Server {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(UNDIONLY, root.path().join("undionly.kpxe"))
        .expect("ipxe package installed (setup.sh)");
    std::fs::create_dir(root.path().join("efi")).unwrap();
    std::fs::write(root.path().join("efi/boot.efi"), vec![7u8; 5000]).unwrap();
    std::fs::write(outside.path().join("secret"), "secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("escape")).unwrap();
    let host = Host {
        name: "lo1".into(),
        interfaces: vec![Interface {
            ip: Some("127.0.0.1/8".into()),
            ..Interface::default()
        }],
        ..Host::default()
    };
    let shared = Shared::new(
        Config::default(),
        Inventory::from_parts_unchecked(vec![host], vec![]),
        EventLog::default(),
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dir = root.path().to_path_buf();
    let sh = shared.clone();
    tokio::spawn(async move {
        let r = xboot::tftp::run(socket, &dir, sh, async {
            let _ = stopped.await;
        })
        .await;
        r.expect("TFTP server runs");
    });
    Server {
        port,
        root,
        outside,
        out: tempfile::tempdir().unwrap(),
        shared,
        stop: Some(stop),
    }
}

impl Server {
    fn out(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }

    /// tftp-hpa: `tftp -m binary 127.0.0.1 PORT -c get REMOTE LOCAL`; returns its output.
    async fn hpa_get(&self, remote: &str, local: &Path) -> String {
        let out = tokio::process::Command::from(testlab::peers::command("tftp"))
            .args([
                "-m",
                "binary",
                "127.0.0.1",
                &self.port.to_string(),
                "-c",
                "get",
                remote,
            ])
            .arg(local)
            .output()
            .await
            .expect("tftp-hpa runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// atftp with `--option` pairs and --trace; returns (success, output).
    async fn atftp_get(&self, remote: &str, local: &Path, options: &[&str]) -> (bool, String) {
        let mut cmd = tokio::process::Command::from(testlab::peers::command("atftp"));
        cmd.arg("--trace");
        for o in options {
            cmd.args(["--option", o]);
        }
        cmd.args(["-g", "-r", remote, "-l"])
            .arg(local)
            .args(["127.0.0.1", &self.port.to_string()]);
        let out = cmd.output().await.expect("atftp runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

fn same_as_undionly(p: &Path) -> bool {
    std::fs::read(p).ok() == Some(std::fs::read(UNDIONLY).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_hpa_fetches_undionly() {
    let srv = start().await;
    let local = srv.out("undionly.kpxe");
    let log = srv.hpa_get("undionly.kpxe", &local).await;
    assert!(same_as_undionly(&local), "tftp-hpa copy differs: {log}");
    // A leading '/' means the root, as PXE ROMs send it.
    let local2 = srv.out("slash.kpxe");
    let log = srv.hpa_get("/undionly.kpxe", &local2).await;
    assert!(same_as_undionly(&local2), "{log}");
    let local3 = srv.out("boot.efi");
    srv.hpa_get("efi/boot.efi", &local3).await;
    assert_eq!(std::fs::read(&local3).unwrap(), vec![7u8; 5000]);
    // The event is recorded once the last block is read, just before it is sent.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let events: Vec<_> = srv
        .shared
        .events
        .for_host("lo1")
        .into_iter()
        .filter(|e| e.kind == EventKind::Tftp)
        .map(|e| e.detail)
        .collect();
    let size = std::fs::metadata(UNDIONLY).unwrap().len();
    assert_eq!(
        events[0],
        format!("undionly.kpxe ({size} bytes)"),
        "{events:?}"
    );
    assert_eq!(events.len(), 3, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftp_fetches_undionly_with_blksize_tsize_windowsize() {
    let srv = start().await;
    let local = srv.out("a.kpxe");
    let (ok, log) = srv
        .atftp_get("undionly.kpxe", &local, &["blksize 1468"])
        .await;
    assert!(ok && same_as_undionly(&local), "atftp blksize 1468: {log}");
    assert!(
        log.contains("blksize: 1468"),
        "the OACK grants blksize: {log}"
    );
    let size = std::fs::metadata(UNDIONLY).unwrap().len();
    let local = srv.out("b.kpxe");
    let (ok, log) = srv
        .atftp_get(
            "undionly.kpxe",
            &local,
            &["blksize 1468", "tsize 0", "windowsize 8"],
        )
        .await;
    assert!(ok && same_as_undionly(&local), "atftp windowsize 8: {log}");
    assert!(
        log.contains(&format!("tsize: {size}")),
        "the OACK gives tsize: {log}"
    );
    assert!(
        log.contains("windowsize: 8"),
        "the OACK grants windowsize (RFC 7440): {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_escapes_are_refused() {
    let srv = start().await;
    let secret_rel = format!(
        "../{}/secret",
        srv.outside.path().file_name().unwrap().to_string_lossy()
    );
    let secret_abs = srv
        .outside
        .path()
        .join("secret")
        .to_string_lossy()
        .into_owned();
    // TFTP error code 2 is "access violation", 1 "file not found".
    let rows = [
        ("../../../../etc/passwd", "Error code 2"),
        (secret_rel.as_str(), "Error code 2"),
        ("escape", "Error code 2"),
        ("efi/../../escape", "Error code 2"),
        (secret_abs.as_str(), "Error code 1"),
        ("/etc/passwd", "Error code 1"),
        ("efi", "Error code 1"),
    ];
    for (i, (remote, want)) in rows.into_iter().enumerate() {
        let local = srv.out(&format!("x{i}"));
        let log = srv.hpa_get(remote, &local).await;
        assert!(log.contains(want), "{remote}: {log}");
        let got = std::fs::read(&local).unwrap_or_default();
        assert!(got.is_empty(), "{remote}: received {} bytes", got.len());
    }
    let (ok, log) = srv
        .atftp_get("../../../../etc/passwd", &srv.out("y"), &[])
        .await;
    assert!(!ok, "atftp must fail: {log}");
    assert!(srv.root.path().join("undionly.kpxe").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_at_once() {
    let srv = start().await;
    let srv = &srv;
    let mut runs = Vec::new();
    for i in 0..64 {
        let local = srv.out(&format!("c{i}.kpxe"));
        let opts: &[&str] = if i % 2 == 0 {
            &["blksize 1468"]
        } else {
            &["blksize 512", "windowsize 4"]
        };
        runs.push(async move {
            let r = srv.atftp_get("undionly.kpxe", &local, opts).await;
            (local, r)
        });
    }
    for (local, (ok, log)) in futures::future::join_all(runs).await {
        assert!(ok && same_as_undionly(&local), "{}: {log}", local.display());
    }
}
