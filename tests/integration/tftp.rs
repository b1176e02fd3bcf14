//! TFTP on loopback against real clients: tftp-hpa, atftp (blksize, windowsize) and curl
//! fetch undionly.kpxe byte-identical, path escapes are refused, 64 clients at once. Raw
//! UDP clients check what the real ones cannot provoke: EDK2's size probe (ERROR 8 after
//! the OACK) ends the transfer at once, bad requests get ERRORs, the per-client cap, and a
//! flood of unanswered requests from forged sources stays within the global cap while a
//! real client gets its file.
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
    stats: Arc<xboot::tftp::Stats>,
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
    start_with(Config::default()).await
}

async fn start_with(config: Config) -> Server {
    start_on(config, "127.0.0.1:0").await
}

async fn start_on(config: Config, listen: &str) -> Server {
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
        config,
        Inventory::from_parts_unchecked(vec![host], vec![]),
        EventLog::default(),
    );
    let socket = UdpSocket::bind(listen).unwrap();
    let port = socket.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dir = root.path().to_path_buf();
    let sh = shared.clone();
    let stats = Arc::new(xboot::tftp::Stats::default());
    let st = stats.clone();
    tokio::spawn(async move {
        let r = xboot::tftp::run_with_stats(socket, &dir, sh, st, async {
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
        stats,
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
        self.atftp_get_with(remote, local, options, &[]).await
    }

    /// [`Server::atftp_get`] with more of atftp's arguments (`--tftp-timeout 1`: its
    /// unanswered RRQ is sent again after 1 s rather than 5).
    async fn atftp_get_with(
        &self,
        remote: &str,
        local: &Path,
        options: &[&str],
        args: &[&str],
    ) -> (bool, String) {
        let mut cmd = tokio::process::Command::from(testlab::peers::command("atftp"));
        cmd.arg("--trace").args(args);
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
    // The event is recorded once the last block is acknowledged.
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
    // The ERROR never says where a link leads.
    let log = srv.hpa_get("escape", &srv.out("z")).await;
    let outside = srv.outside.path().to_string_lossy().into_owned();
    assert!(!log.contains(&outside), "{log}");
    let (ok, log) = srv
        .atftp_get("../../../../etc/passwd", &srv.out("y"), &[])
        .await;
    assert!(!ok, "atftp must fail: {log}");
    assert!(srv.root.path().join("undionly.kpxe").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_at_once() {
    // All 64 share 127.0.0.1, which the default per-client cap (8) is not meant for.
    let mut config = Config::default();
    config.tftp.max_per_client = 64;
    let srv = start_with(config).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_fetches_with_blksize() {
    let srv = start().await;
    // 1468 is granted as asked; 16384 is above a 1500-byte MTU and granted up to the
    // route's MTU (loopback: 64 KiB), so the probe path is exercised too.
    for blksize in ["1468", "16384"] {
        let local = srv.out(&format!("curl-{blksize}.kpxe"));
        let out = tokio::process::Command::from(testlab::peers::command("curl"))
            .args(["-sS", "--tftp-blksize", blksize, "-o"])
            .arg(&local)
            .arg(format!("tftp://127.0.0.1:{}/undionly.kpxe", srv.port))
            .output()
            .await
            .expect("curl runs");
        assert!(
            out.status.success() && same_as_undionly(&local),
            "curl blksize {blksize}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // From an address no inventory host has: served, but no boot event is recorded
    // (forged sources must not push real hosts' events out of the bounded log).
    let local = srv.out("stranger.kpxe");
    let out = tokio::process::Command::from(testlab::peers::command("curl"))
        .args(["-sS", "--interface", "127.0.0.5", "-o"])
        .arg(&local)
        .arg(format!("tftp://127.0.0.1:{}/undionly.kpxe", srv.port))
        .output()
        .await
        .expect("curl runs");
    assert!(out.status.success() && same_as_undionly(&local));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(srv.shared.events.for_host("127.0.0.5").is_empty());
    let tftp_events = |h: &str| {
        let ev = srv.shared.events.for_host(h);
        ev.into_iter().filter(|e| e.kind == EventKind::Tftp).count()
    };
    assert_eq!(tftp_events("lo1"), 2, "the two fetches from 127.0.0.1");
}

/// A raw TFTP client on loopback, bound to `ip`.
struct Raw {
    sock: UdpSocket,
}

impl Raw {
    fn bind(ip: &str) -> Raw {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        Raw { sock }
    }

    fn rrq(&self, port: u16, file: &str, opts: &[(&str, &str)]) {
        let b = xboot::tftp::proto::encode_request(xboot::tftp::proto::RRQ, file, "octet", opts);
        self.sock.send_to(&b, ("127.0.0.1", port)).unwrap();
    }

    /// The next datagram and where it came from; None after `wait`.
    fn recv(&self, wait: std::time::Duration) -> Option<(Vec<u8>, std::net::SocketAddr)> {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = vec![0u8; 70_000];
        let (n, from) = self.sock.recv_from(&mut buf).ok()?;
        buf.truncate(n);
        Some((buf, from))
    }
}

fn opcode(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Polls `cond` for up to `secs` seconds.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cond()
}

/// EDK2's size probe: RRQ tsize + blksize, OACK, ERROR 8. The transfer ends at once: the
/// active gauge drops to 0 and the OACK is never sent again (async-tftp re-sent it every
/// 3 s for 5 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_8_after_oack_ends_the_transfer() {
    let srv = start().await;
    let size = std::fs::metadata(UNDIONLY).unwrap().len();
    let c = Raw::bind("127.0.0.1");
    c.rrq(
        srv.port,
        "undionly.kpxe",
        &[("tsize", "0"), ("blksize", "1468")],
    );
    let (oack, tid) = c.recv(std::time::Duration::from_secs(3)).expect("OACK");
    assert_eq!(opcode(&oack), 6, "{oack:?}");
    let text = String::from_utf8_lossy(&oack[2..]).replace('\0', " ");
    assert!(text.contains(&format!("tsize {size}")), "{text}");
    assert!(text.contains("blksize 1468"), "{text}");
    assert_eq!(srv.stats.active(), 1);
    let abort = b"\0\x05\0\x08User aborted the transfer\0";
    c.sock.send_to(abort, tid).unwrap();
    assert!(
        eventually(2, || srv.stats.active() == 0).await,
        "transfer still active"
    );
    // The server's retransmission timeout is 1 s: nothing may come in 2.
    let late = tokio::task::spawn_blocking(move || c.recv(std::time::Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(late.is_none(), "sent after the client's ERROR: {late:?}");
    let m = srv.stats.prometheus();
    assert!(
        m.contains("xboot_tftp_transfers_total{outcome=\"client_error\"} 1"),
        "{m}"
    );
}

/// Malformed requests, unknown modes, non-UTF-8 names and writes are answered with an
/// ERROR (async-tftp sent nothing for the first three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors() {
    let srv = start().await;
    let rows: [(&str, &[u8], u16); 6] = [
        ("unknown mode", b"\0\x01undionly.kpxe\0binary\0", 4),
        ("mail mode", b"\0\x01undionly.kpxe\0mail\0", 4),
        ("non-UTF-8 name", b"\0\x01undionly\xff.kpxe\0octet\0", 1),
        ("unterminated", b"\0\x01undionly.kpxe", 4),
        ("unknown opcode", b"\0\x09\0\0", 4),
        ("write request", b"\0\x02new.bin\0octet\0", 2),
    ];
    let c = Raw::bind("127.0.0.1");
    for (what, bytes, code) in rows {
        c.sock.send_to(bytes, ("127.0.0.1", srv.port)).unwrap();
        let (reply, _) = c
            .recv(std::time::Duration::from_secs(3))
            .unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(opcode(&reply), 5, "{what}: {reply:?}");
        assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), code, "{what}");
    }
    assert_eq!(srv.stats.active(), 0);
}

/// On 0.0.0.0 (the default `tftp.listen`), each transfer answers from the address the
/// request was sent to (IP_PKTINFO): a client of a multi-homed server checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_listen_answers_from_the_requested_address() {
    let srv = start_on(Config::default(), "0.0.0.0:0").await;
    for dst in ["127.0.0.3", "127.0.0.1"] {
        let c = Raw::bind("127.0.0.1");
        let rrq = xboot::tftp::proto::encode_request(
            xboot::tftp::proto::RRQ,
            "undionly.kpxe",
            "octet",
            &[],
        );
        c.sock.send_to(&rrq, (dst, srv.port)).unwrap();
        let (data, from) = c.recv(std::time::Duration::from_secs(3)).expect("DATA 1");
        assert_eq!(&data[..4], b"\0\x03\0\x01");
        assert_eq!(from.ip().to_string(), dst);
        assert_ne!(from.port(), srv.port, "a transfer ID of its own");
    }
}

/// iPXE's recovery from a lost block: it re-ACKs the last block it has, and the server
/// resends the next at once (counted as a duplicate-ACK retransmission, not a timeout's;
/// async-tftp ignored the duplicate and waited 3 s). A packet from another port gets
/// ERROR 5 and does not disturb the transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ack_resends_and_strangers_get_error_5() {
    let srv = start().await;
    let wait = std::time::Duration::from_secs(3);
    let c = Raw::bind("127.0.0.1");
    c.rrq(srv.port, "undionly.kpxe", &[]);
    let (d1, tid) = c.recv(wait).expect("DATA 1");
    assert_eq!(&d1[..4], b"\0\x03\0\x01");
    c.sock.send_to(b"\0\x04\0\x01", tid).unwrap();
    let (d2, _) = c.recv(wait).expect("DATA 2");
    assert_eq!(&d2[..4], b"\0\x03\0\x02");
    // "Lost": re-ACK 1 after iPXE's 0.25 s.
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    c.sock.send_to(b"\0\x04\0\x01", tid).unwrap();
    let (again, _) = c.recv(wait).expect("DATA 2 again");
    assert_eq!(again, d2);
    let m = srv.stats.prometheus();
    assert!(
        m.contains("xboot_tftp_retransmissions_total{cause=\"duplicate_ack\"} 1"),
        "{m}"
    );
    let stranger = Raw::bind("127.0.0.1");
    stranger.sock.send_to(b"\0\x04\0\x02", tid).unwrap();
    let (err, from) = stranger.recv(wait).expect("ERROR 5");
    assert_eq!((&err[..4], from), (&b"\0\x05\0\x05"[..], tid));
    c.sock.send_to(b"\0\x04\0\x02", tid).unwrap();
    let (d3, _) = c.recv(wait).expect("DATA 3");
    assert_eq!(&d3[..4], b"\0\x03\0\x03");
}

/// A client repeating its RRQ (iPXE does after 0.25 s without an answer) gets one
/// transfer, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_rrq_is_one_transfer() {
    let srv = start().await;
    let c = Raw::bind("127.0.0.1");
    c.rrq(
        srv.port,
        "undionly.kpxe",
        &[("blksize", "1432"), ("tsize", "0")],
    );
    c.rrq(
        srv.port,
        "undionly.kpxe",
        &[("blksize", "1432"), ("tsize", "0")],
    );
    let (oack, tid) = c.recv(std::time::Duration::from_secs(3)).expect("OACK");
    assert_eq!(opcode(&oack), 6);
    assert!(
        eventually(2, || srv
            .stats
            .prometheus()
            .contains("xboot_tftp_repeated_requests_total 1"))
        .await
    );
    assert_eq!(srv.stats.active(), 1);
    // The one transfer goes on normally.
    c.sock.send_to(b"\0\x04\0\0", tid).unwrap();
    let (data, from) = c.recv(std::time::Duration::from_secs(3)).expect("DATA 1");
    assert_eq!((&data[..4], from), (&b"\0\x03\0\x01"[..], tid));
}

/// The per-client cap: the third un-ACKed request from one address gets ERROR 0; a
/// transfer ended by the client frees its place at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_cap() {
    let mut config = Config::default();
    config.tftp.max_per_client = 2;
    let srv = start_with(config).await;
    let wait = std::time::Duration::from_secs(3);
    let clients: Vec<Raw> = (0..3).map(|_| Raw::bind("127.0.0.9")).collect();
    let mut tids = Vec::new();
    for c in &clients[..2] {
        c.rrq(srv.port, "undionly.kpxe", &[]);
        let (data, tid) = c.recv(wait).expect("DATA 1");
        assert_eq!(&data[..4], b"\0\x03\0\x01");
        tids.push(tid);
    }
    clients[2].rrq(srv.port, "undionly.kpxe", &[]);
    let (err, _) = clients[2].recv(wait).expect("ERROR");
    assert_eq!(&err[..4], b"\0\x05\0\0", "{err:?}");
    assert!(String::from_utf8_lossy(&err).contains("too many transfers"));
    // Another address is not affected.
    let other = Raw::bind("127.0.0.10");
    other.rrq(srv.port, "undionly.kpxe", &[]);
    assert_eq!(opcode(&other.recv(wait).expect("DATA").0), 3);
    // The first client gives up: its place is free at once.
    clients[0]
        .sock
        .send_to(b"\0\x05\0\0bye\0", tids[0])
        .unwrap();
    assert!(eventually(2, || srv.stats.active() == 2).await);
    clients[2].rrq(srv.port, "undionly.kpxe", &[]);
    let (data, _) = clients[2].recv(wait).expect("DATA 1 after a place freed");
    assert_eq!(&data[..4], b"\0\x03\0\x01");
    let m = srv.stats.prometheus();
    assert!(
        m.contains("xboot_tftp_refused_total{reason=\"per_client\"} 1"),
        "{m}"
    );
}

/// At the global cap, a transfer whose client has not answered yet (here: DATA 1 not
/// ACKed for 0.4 s, a slow client or a server busy under a storm) is not ended to admit
/// newcomers: they get no answer at all (not an ERROR, which ends an EDK2 boot) while
/// every place is progressing, and a real client's retry gets in once a place frees.
/// Before, the first newcomer took the slow client's place, whose ACK then went to a
/// closed port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_slow_reader_is_kept_and_newcomers_wait() {
    let mut config = Config::default();
    config.tftp.max_transfers = 3;
    let srv = start_with(config).await;
    let wait = std::time::Duration::from_secs(3);
    let data1 = |c: &Raw| {
        let (data, tid) = c.recv(wait).expect("DATA 1");
        assert_eq!(&data[..4], b"\0\x03\0\x01", "{data:?}");
        tid
    };
    // Two downloads under way (block 1 ACKed), and a slow one (DATA 1 not ACKed).
    let fast: Vec<(Raw, std::net::SocketAddr)> = ["127.0.0.21", "127.0.0.22"]
        .iter()
        .map(|ip| {
            let c = Raw::bind(ip);
            c.rrq(srv.port, "undionly.kpxe", &[]);
            let tid = data1(&c);
            c.sock.send_to(b"\0\x04\0\x01", tid).unwrap();
            (c, tid)
        })
        .collect();
    let slow = Raw::bind("127.0.0.20");
    slow.rrq(srv.port, "undionly.kpxe", &[]);
    let slow_tid = data1(&slow);
    assert!(eventually(2, || srv.stats.active() == 3).await);
    // Ten newcomers while the slow client is silent: none answered, nothing evicted.
    let newcomers: Vec<Raw> = (30..40)
        .map(|k| Raw::bind(&format!("127.0.0.{k}")))
        .collect();
    for c in &newcomers {
        c.rrq(srv.port, "undionly.kpxe", &[]);
    }
    for c in &newcomers {
        let got = c.recv(std::time::Duration::from_millis(40));
        assert!(got.is_none(), "a newcomer was answered: {got:?}");
    }
    let got = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (got(&srv.stats.refused_busy), got(&srv.stats.evicted)),
        (10, 0)
    );
    // The slow client answers: its transfer goes on, from the same port.
    slow.sock.send_to(b"\0\x04\0\x01", slow_tid).unwrap();
    let (data, from) = slow.recv(wait).expect("DATA 2 for the slow client");
    assert_eq!((&data[..4], from), (&b"\0\x03\0\x02"[..], slow_tid));
    // A real client (atftp, resending its request after 1 s) started while the server is
    // full gets its file once a download ends (here its client gives up).
    let local = srv.out("after-wait.kpxe");
    let atftp = {
        let local = local.clone();
        let srv = &srv;
        async move {
            srv.atftp_get_with("undionly.kpxe", &local, &[], &["--tftp-timeout", "1"])
                .await
        }
    };
    let (fast0, tid0) = &fast[0];
    let give_up = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        fast0.sock.send_to(b"\0\x05\0\0bye\0", tid0).unwrap();
    };
    let ((ok, log), ()) = tokio::join!(atftp, give_up);
    assert!(ok && same_as_undionly(&local), "atftp after waiting: {log}");
    assert!(
        got(&srv.stats.refused_busy) > 10,
        "atftp's first request was dropped"
    );
    assert_eq!(got(&srv.stats.evicted), 0);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 2,000 requests from forged sources (250 addresses x 8 ports) that never ACK, 1,000 a
/// second against a cap of 256: the server holds at most `max_transfers` of them
/// (async-tftp held all, with an 8 MiB buffer and two descriptors each, for 5 minutes),
/// each address's next request takes its own unanswered one's place, a real client in
/// the middle of the flood gets its file (atftp, resending its request after 1 s should
/// it find no place), and the flood's transfers are gone seconds after it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_flood_stays_bounded() {
    const CAP: usize = 256;
    let mut config = Config::default();
    config.tftp.max_transfers = CAP;
    let srv = start_with(config).await;
    let fds_before = open_fds();
    let port = srv.port;
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = flooding.clone();
    let flood = std::thread::spawn(move || {
        let rrq = xboot::tftp::proto::encode_request(
            xboot::tftp::proto::RRQ,
            "undionly.kpxe",
            "octet",
            &[("tsize", "0"), ("blksize", "1468")],
        );
        // Spread over ~2 s so the real client's request lands in the middle.
        for round in 0..8 {
            for host in 2..252u32 {
                let ip = std::net::Ipv4Addr::from(0x7f00_0000 + host);
                // Each request from a fresh port, which is closed at once: no ACK ever.
                let s = UdpSocket::bind((ip, 0)).unwrap();
                s.send_to(&rrq, ("127.0.0.1", port)).unwrap();
            }
            let _ = round;
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        f.store(false, std::sync::atomic::Ordering::Relaxed);
    });
    let (stats, fl) = (srv.stats.clone(), flooding.clone());
    let sampler = tokio::spawn(async move {
        let (mut max_active, mut max_fds) = (0, 0);
        while fl.load(std::sync::atomic::Ordering::Relaxed) {
            max_active = max_active.max(stats.active());
            max_fds = max_fds.max(open_fds());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        (max_active, max_fds)
    });
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert!(
        flooding.load(std::sync::atomic::Ordering::Relaxed),
        "the flood ended too soon"
    );
    let local = srv.out("during-flood.kpxe");
    let (ok, log) = srv
        .atftp_get_with(
            "undionly.kpxe",
            &local,
            &["blksize 1468"],
            &["--tftp-timeout", "1"],
        )
        .await;
    assert!(
        ok && same_as_undionly(&local),
        "atftp during the flood: {log}"
    );
    flood.join().unwrap();
    let (max_active, max_fds) = sampler.await.unwrap();
    assert!(max_active as usize <= CAP, "{max_active} transfers at once");
    // One socket per transfer, one descriptor for the file they share; slack for the
    // other tests of this binary running beside this one.
    assert!(
        max_fds < fds_before + CAP + 100,
        "{max_fds} descriptors open (before: {fds_before})"
    );
    let got = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let st = &srv.stats;
    // Each forged address's next request takes the place of its own unanswered one.
    assert!(
        got(&st.evicted_superseded) > 0,
        "the cap was reached and the flood churned among its own places"
    );
    assert_eq!(
        got(&st.evicted),
        got(&st.evicted_superseded) + got(&st.evicted_unanswered)
    );
    let m = st.prometheus();
    assert!(
        m.contains(&format!(
            "xboot_tftp_refused_total{{reason=\"busy\"}} {}",
            got(&st.refused_busy)
        )),
        "{m}"
    );
    // Unanswered transfers give up after 5 retransmissions (6 s).
    assert!(
        eventually(10, || srv.stats.active() == 0).await,
        "{} transfers left",
        srv.stats.active()
    );
}

fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Measurement, run by hand: `cargo test -p boot-user --test integration
/// tftp_bench -- --ignored --nocapture`. First-reply latency of 1,000 clients sending
/// their RRQ at once (each its own socket on its own loopback address, as iPXE asks:
/// blksize 1432, tsize), then RSS and descriptors under 2,000 un-ACKed requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn tftp_bench() {
    xboot::http::raise_nofile_limit();
    let srv = start().await;
    let rrq = xboot::tftp::proto::encode_request(
        xboot::tftp::proto::RRQ,
        "undionly.kpxe",
        "octet",
        &[("blksize", "1432"), ("tsize", "0")],
    );
    for round in 0..3 {
        let mut socks = Vec::new();
        for i in 0..1000u32 {
            let ip = std::net::Ipv4Addr::from(0x7f01_0000 + i + round * 1000);
            socks.push(Arc::new(
                tokio::net::UdpSocket::bind((ip, 0)).await.unwrap(),
            ));
        }
        let mut waits = Vec::new();
        for s in &socks {
            let t0 = std::time::Instant::now();
            s.send_to(&rrq, ("127.0.0.1", srv.port)).await.unwrap();
            let s = s.clone();
            waits.push(tokio::spawn(async move {
                let mut b = [0u8; 2048];
                let r =
                    tokio::time::timeout(std::time::Duration::from_secs(5), s.recv_from(&mut b))
                        .await;
                r.ok().map(|_| t0.elapsed())
            }));
        }
        let mut lat = Vec::new();
        for w in waits {
            if let Some(d) = w.await.unwrap() {
                lat.push(d);
            }
        }
        lat.sort();
        println!(
            "round {round}: {} of 1000 answered, first reply p50 {:?} p99 {:?} max {:?}",
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().unwrap()
        );
        drop(socks);
        assert!(eventually(10, || srv.stats.active() == 0).await);
    }
    // 2,000 completed transfers (200 clients x 10, lock-step, blksize 1432).
    let rss_before = rss_kib();
    let t0 = std::time::Instant::now();
    let mut clients = Vec::new();
    for i in 0..200u32 {
        let port = srv.port;
        clients.push(tokio::spawn(async move {
            let ip = std::net::Ipv4Addr::from(0x7f03_0000 + i);
            let mut b = vec![0u8; 2048];
            let mut bytes = 0;
            for _ in 0..10 {
                let s = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
                let rrq = xboot::tftp::proto::encode_request(
                    xboot::tftp::proto::RRQ,
                    "undionly.kpxe",
                    "octet",
                    &[("blksize", "1432")],
                );
                s.send_to(&rrq, ("127.0.0.1", port)).await.unwrap();
                loop {
                    let (n, from) = s.recv_from(&mut b).await.unwrap();
                    let block = [b[2], b[3]];
                    if b[1] == 6 {
                        s.send_to(&[0, 4, 0, 0], from).await.unwrap();
                        continue;
                    }
                    assert_eq!(b[1], 3);
                    bytes += n - 4;
                    s.send_to(&[0, 4, block[0], block[1]], from).await.unwrap();
                    if n - 4 < 1432 {
                        break;
                    }
                }
            }
            bytes
        }));
    }
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    assert!(eventually(10, || srv.stats.active() == 0).await);
    println!(
        "2,000 completed transfers ({} MB) in {:?}: RSS {} -> {} KiB",
        total / 1_000_000,
        t0.elapsed(),
        rss_before,
        rss_kib()
    );
    let (rss0, fds0) = (rss_kib(), open_fds());
    let port = srv.port;
    std::thread::spawn(move || {
        for i in 0..2000u32 {
            let ip = std::net::Ipv4Addr::from(0x7f02_0000 + i / 8);
            let s = UdpSocket::bind((ip, 0)).unwrap();
            s.send_to(&rrq, ("127.0.0.1", port)).unwrap();
        }
    })
    .join()
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    println!(
        "2,000 un-ACKed RRQs: active {}, RSS {} -> {} KiB, fds {fds0} -> {}",
        srv.stats.active(),
        rss0,
        rss_kib(),
        open_fds()
    );
    println!("{}", srv.stats.prometheus());
}
