//! The floor: how long a bare sendfile server needs to send every node its kernel and
//! initrd on the same fabric (same bridges, same shaping) right after the storm, with
//! the server under test stopped. The storm's data phase divided by it is the floor
//! ratio.
//!
//! The server is written here rather than borrowed (nginx with a minimal config would
//! do the same syscall): a request head is read, then the file goes out with sendfile(2)
//! from the page cache, nothing else (no log, no config, no per-request allocation
//! beyond the head), on a two-worker runtime in this process, so the figure is what
//! the kernel and the fabric allow and nothing of a web server's own. Every node
//! fetches both files over one keep-alive connection, all at once.
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

use crate::fabric::{node_ip, Fabric, PREFIX, SRV_IP};
use crate::http;
use crate::node::NodeResult;

/// The floor server's port (not the server under test's, whose sockets may linger).
pub const PORT: u16 = 8079;

/// The floor pass of one storm.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Floor {
    /// First request to the last node's last byte, seconds.
    pub seconds: f64,
    /// Nodes that fetched both files.
    pub nodes_done: usize,
    pub bytes: u64,
    /// Node failures (connect, stall), with the first reason.
    pub failed: usize,
    pub first_error: Option<String>,
    /// Bytes srv0 sent during the pass (with headers and retransmissions).
    pub tx_bytes: u64,
}

impl Floor {
    /// Mean egress over the pass, Gbit/s.
    pub fn gbit_s(&self) -> f64 {
        match self.seconds {
            s if s > 0.0 => self.bytes as f64 * 8.0 / s / 1e9,
            _ => f64::NAN,
        }
    }
}

/// The storm's data phase: from the first node's kernel request (right after its
/// script) to the last node's last initrd byte. None when no node got that far.
pub fn data_phase(nodes: &[NodeResult]) -> Option<f64> {
    let start = nodes
        .iter()
        .filter_map(|r| r.at("script"))
        .min_by(f64::total_cmp)?;
    let end = nodes
        .iter()
        .filter_map(|r| r.at("initrd"))
        .max_by(f64::total_cmp)?;
    Some(end - start)
}

/// Data phase / floor; None unless both are there and the floor is not 0, or when nodes
/// missed the data phase (a partial phase would read as faster than the floor).
pub fn ratio(nodes: &[NodeResult], floor: &Floor) -> Option<f64> {
    let all = nodes.iter().all(|r| r.at("initrd").is_some());
    let d = data_phase(nodes)?;
    (all && floor.failed == 0 && floor.seconds > 0.0).then(|| d / floor.seconds)
}

/// A parsed request head: the path of `GET <path> HTTP/1.x`, and whether the client
/// keeps the connection.
pub fn request_path(head: &str) -> Option<(&str, bool)> {
    let mut parts = head.lines().next()?.split_whitespace();
    (parts.next()? == "GET").then_some(())?;
    let path = parts.next()?;
    let close = head.lines().skip(1).any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
        })
    });
    Some((path, !close))
}

async fn serve_conn(
    mut s: tokio::net::TcpStream,
    files: std::sync::Arc<Vec<(String, PathBuf)>>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    loop {
        let end = loop {
            if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if have == buf.len() {
                return Err(std::io::Error::other("request head over 4 KiB"));
            }
            let n = s.read(&mut buf[have..]).await?;
            if n == 0 {
                return Ok(());
            }
            have += n;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.copy_within(end..have, 0);
        have -= end;
        let Some((path, keep)) = request_path(&head) else {
            s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
            return Ok(());
        };
        let Some((_, file)) = files.iter().find(|(p, _)| p == path) else {
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await?;
            continue;
        };
        let f = std::fs::File::open(file)?;
        let len = f.metadata()?.len();
        s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes())
            .await?;
        let mut off: libc::off_t = 0;
        while (off as u64) < len {
            s.writable().await?;
            let left = (len - off as u64).min(1 << 30) as usize;
            match s.try_io(Interest::WRITABLE, || {
                // SAFETY: sendfile(2) from a file we hold open to a socket we own; the
                // kernel advances `off`, which lives across the call.
                let r = unsafe { libc::sendfile(s.as_raw_fd(), f.as_raw_fd(), &mut off, left) };
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            }) {
                Ok(0) => return Err(std::io::Error::other("sendfile sent 0 bytes")),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if !keep {
            return Ok(());
        }
    }
}

/// Runs the floor pass on `fabric`: the server in its server namespace, every node
/// fetching `files` (URL path, file) at once. Node addresses are (re)set as their OS
/// DHCP set them, so nodes that failed in the storm take part too.
pub fn run(
    fabric: &Fabric,
    rt: &tokio::runtime::Runtime,
    files: &[(String, PathBuf)],
    rcvbuf: usize,
    deadline: Duration,
) -> Result<Floor, String> {
    let n = fabric.nodes.len();
    let listener = fabric
        .ops
        .run_blocking(fabric.server_idx(), || {
            let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            l.set_reuse_address(true)?;
            l.bind(&SocketAddr::from((SRV_IP, PORT)).into())?;
            l.listen(4096)?;
            l.set_nonblocking(true)?;
            Ok(std::net::TcpListener::from(l))
        })
        .map_err(|e| format!("floor: listen on {SRV_IP}:{PORT}: {e}"))?;
    let srv_mac = fabric
        .ops
        .run_blocking(fabric.server_idx(), || hwaddr("srv0"))
        .map_err(|e| format!("floor: srv0's MAC: {e}"))?;
    // The nodes' sockets and addresses, before the clock starts.
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let s = fabric
            .ops
            .run_blocking(i, move || {
                // One connection per node: 3 descriptors each (5,000 nodes fit this machine's limit).
                let ns =
                    crate::nsops::node_sockets(rcvbuf, crate::nsops::Spares { tftp: 0, tcp: 1 })?;
                let ifindex = ns.packet.as_ref().map(|p| p.1).unwrap_or(0);
                crate::nsops::configure(&ns, "eth0", ifindex, node_ip(i), PREFIX, SRV_IP, srv_mac)?;
                Ok(ns)
            })
            .map_err(|e| format!("floor: node {i}: {e}"))?;
        socks.push(s);
    }
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("storm-floor")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let shared = std::sync::Arc::new(files.to_vec());
    server_rt.spawn(async move {
        let l = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("storm: floor listener: {e}");
                return;
            }
        };
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let files = shared.clone();
            tokio::spawn(async move {
                let _ = serve_conn(s, files).await;
            });
        }
    });
    let tx0 = fabric.server_tx().bytes;
    let paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let t0 = Instant::now();
    let results = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for mut ns in socks {
            let paths = paths.clone();
            set.spawn(async move {
                let sock = ns.tcp.pop().ok_or("no TCP socket")?;
                let addr = SocketAddr::from((SRV_IP, PORT));
                let mut c = http::Conn::connect(sock, addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut bytes = 0;
                for p in &paths {
                    let url = http::Url {
                        addr,
                        host: format!("{SRV_IP}:{PORT}"),
                        path: p.clone(),
                    };
                    let r = c
                        .request("GET", &url, b"", false)
                        .await
                        .map_err(|e| format!("{p}: {e}"))?;
                    if r.status != 200 {
                        return Err(format!("{p}: HTTP {}", r.status));
                    }
                    bytes += r.bytes;
                }
                drop(ns);
                Ok::<_, String>((bytes, t0.elapsed().as_secs_f64()))
            });
        }
        let mut out = vec![];
        let stop = tokio::time::sleep(deadline);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                r = set.join_next() => match r {
                    Some(r) => out.push(r.map_err(|e| e.to_string()).and_then(|r| r)),
                    None => break,
                },
                _ = &mut stop => {
                    set.abort_all();
                    out.push(Err(format!("floor pass past {deadline:?}")));
                    break;
                }
            }
        }
        out
    });
    let mut f = Floor {
        tx_bytes: fabric.server_tx().bytes.saturating_sub(tx0),
        ..Floor::default()
    };
    for r in results {
        match r {
            Ok((b, t)) => {
                f.nodes_done += 1;
                f.bytes += b;
                f.seconds = f.seconds.max(t);
            }
            Err(e) => {
                f.failed += 1;
                f.first_error.get_or_insert(e);
            }
        }
    }
    f.failed += n.saturating_sub(f.nodes_done + f.failed);
    server_rt.shutdown_background();
    Ok(f)
}

/// The MAC of `dev` in the current thread's namespace.
fn hwaddr(dev: &str) -> std::io::Result<[u8; 6]> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: an all-zero ifreq is valid; the name is copied in below (NUL-terminated).
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in r
        .ifr_name
        .iter_mut()
        .zip(dev.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = b as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills the ifreq we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut r) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the ioctl set the hwaddr member of the union.
    let sa = unsafe { r.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(script: f64, initrd: Option<f64>) -> NodeResult {
        let mut stamps = vec![("power_on", 0.0), ("script", script)];
        if let Some(t) = initrd {
            stamps.push(("initrd", t));
        }
        NodeResult {
            stamps,
            ..NodeResult::default()
        }
    }

    #[test]
    fn data_phase_and_the_floor_ratio() {
        let nodes = [
            node(2.0, Some(10.0)),
            node(1.5, Some(13.5)),
            node(3.0, Some(9.0)),
        ];
        // First kernel request 1.5 s, last initrd byte 13.5 s.
        assert_eq!(data_phase(&nodes), Some(12.0));
        let floor = Floor {
            seconds: 10.0,
            nodes_done: 3,
            bytes: 3_000_000_000,
            ..Floor::default()
        };
        assert_eq!(ratio(&nodes, &floor), Some(1.2));
        assert_eq!(floor.gbit_s(), 2.4);
        // A node that never got its initrd: no ratio (the phase would look short).
        let partial = [node(2.0, Some(10.0)), node(1.5, None)];
        assert_eq!(data_phase(&partial), Some(8.5));
        assert_eq!(ratio(&partial, &floor), None);
        // A floor pass with failures or no time is no floor.
        let failed = Floor {
            failed: 1,
            ..floor.clone()
        };
        assert_eq!(ratio(&nodes, &failed), None);
        assert_eq!(ratio(&nodes, &Floor::default()), None);
        assert!(Floor::default().gbit_s().is_nan());
        assert_eq!(data_phase(&[]), None);
    }

    #[test]
    fn request_heads() {
        let ipxe = "GET /vmlinuz HTTP/1.1\r\nConnection: keep-alive\r\nHost: x\r\n\r\n";
        assert_eq!(request_path(ipxe), Some(("/vmlinuz", true)));
        let wget = "GET /initrd.gz HTTP/1.1\r\nHost: x\r\nconnection:  Close\r\n\r\n";
        assert_eq!(request_path(wget), Some(("/initrd.gz", false)));
        assert_eq!(request_path("POST /complete HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_path("GET\r\n\r\n"), None);
        assert_eq!(request_path(""), None);
    }

    #[tokio::test]
    async fn serves_files_by_sendfile_over_one_connection() {
        let dir = std::env::temp_dir().join(format!("storm-floor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("a"), &big).unwrap();
        std::fs::write(dir.join("b"), b"small").unwrap();
        let files = std::sync::Arc::new(vec![
            ("/a".to_string(), dir.join("a")),
            ("/b".to_string(), dir.join("b")),
        ]);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            serve_conn(s, files).await
        });
        let sock = crate::nsops::tcp_socket(0).unwrap();
        let mut c = http::Conn::connect(sock, addr).await.unwrap();
        let url = |p: &str| http::parse_url(&format!("http://{addr}{p}")).unwrap();
        let r = c.request("GET", &url("/a"), b"", false).await.unwrap();
        assert_eq!((r.status, r.bytes), (200, 3_000_000));
        let r = c.request("GET", &url("/b"), b"", true).await.unwrap();
        assert_eq!((r.status, r.text.as_str()), (200, "small"));
        let r = c.request("GET", &url("/nope"), b"", true).await.unwrap();
        assert_eq!(r.status, 404);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
