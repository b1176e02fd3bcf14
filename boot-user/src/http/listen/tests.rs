//! The serving loop against raw TCP clients on loopback: timeouts, the idle watchdog,
//! graceful shutdown, `ConnectInfo`, and the caps derived from the open-files limit.
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// Longest a test waits for something that should happen after a one-second timeout.
const PATIENCE: Duration = Duration::from_secs(20);

const BIG: usize = 64 << 20;

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "up" }))
        .route(
            "/peer",
            get(|ConnectInfo(a): ConnectInfo<SocketAddr>| async move { a.to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                "done"
            }),
        )
        .route(
            "/big",
            get(|| async {
                let chunk = bytes::Bytes::from(vec![7u8; 1 << 20]);
                let chunks = (0..BIG >> 20).map(move |_| Ok::<_, Infallible>(chunk.clone()));
                axum::body::Body::from_stream(futures::stream::iter(chunks))
            }),
        )
}

fn limits() -> Limits {
    Limits {
        section: "test",
        max_connections: 16,
        per_source: 0,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<io::Result<()>>,
}

async fn start(limits: Limits) -> Running {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(serve(l, app(), limits, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        done,
    }
}

fn get_request(path: &str, keep_alive: bool) -> String {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: {conn}\r\n\r\n")
}

/// Reads until the server closes; Err if that takes longer than `PATIENCE`. A reset
/// counts as closed.
async fn read_to_close(s: &mut TcpStream) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    match tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await {
        Ok(_) => Ok(out),
        Err(_) => Err("the server kept the connection open"),
    }
}

/// Reads one response whose body is `body_len` bytes long (keeps the connection).
async fn read_response(s: &mut TcpStream, body_len: usize) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        buf.push(byte[0]);
    }
    let mut body = vec![0u8; body_len];
    s.read_exact(&mut body).await.unwrap();
    buf.extend_from_slice(&body);
    String::from_utf8(buf).unwrap()
}

#[tokio::test]
async fn silent_client_is_closed_after_the_header_timeout() {
    let srv = start(limits()).await;
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    assert_eq!(read_to_close(&mut silent).await.unwrap(), b"");
    let mut trickle = TcpStream::connect(srv.addr).await.unwrap();
    trickle
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut trickle).await.unwrap();
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "a partial head is never answered"
    );
}

/// hyper restarts the header read timeout when a kept-alive connection goes idle: it is
/// also the keep-alive timeout.
#[tokio::test]
async fn kept_alive_connection_is_closed_after_the_header_timeout() {
    let srv = start(limits()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get_request("/", true).as_bytes())
        .await
        .unwrap();
    let first = read_response(&mut s, 2).await;
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("up"),
        "{first}"
    );
    assert_eq!(read_to_close(&mut s).await.unwrap(), b"");
}

#[tokio::test]
async fn client_that_stops_reading_is_closed_after_the_idle_timeout() {
    let srv = start(Limits {
        header_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get_request("/big", false).as_bytes())
        .await
        .unwrap();
    let mut some = [0u8; 4096];
    s.read_exact(&mut some).await.unwrap();
    // Stop reading: the socket buffers fill and the server's writes stall.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut rest = Vec::new();
    let r = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "the server kept the connection open");
    assert!(
        rest.len() + some.len() < BIG,
        "the stalled download was cut ({} bytes read)",
        rest.len() + some.len()
    );
}

#[tokio::test]
async fn handler_at_work_is_not_idle() {
    let srv = start(limits()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get_request("/slow", false).as_bytes())
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut s).await.unwrap()).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
        "{answer}"
    );
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let srv = start(limits()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let me = s.local_addr().unwrap().to_string();
    s.write_all(get_request("/peer", false).as_bytes())
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut s).await.unwrap()).unwrap();
    assert!(answer.ends_with(&me), "{answer}");
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let mut srv = start(limits()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get_request("/slow", false).as_bytes())
        .await
        .unwrap();
    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.stop.take().unwrap().send(()).unwrap();
    let answer = String::from_utf8(read_to_close(&mut s).await.unwrap()).unwrap();
    assert!(answer.ends_with("done"), "{answer}");
    assert_eq!(read_to_close(&mut idle).await.unwrap(), b"");
    let r = tokio::time::timeout(PATIENCE, srv.done).await;
    assert!(matches!(r, Ok(Ok(Ok(())))), "serve returns after shutdown");
    assert!(
        TcpStream::connect(srv.addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn one_source_is_refused_past_its_cap() {
    let srv = start(Limits {
        per_source: 2,
        header_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    let mut third = TcpStream::connect(srv.addr).await.unwrap();
    let answer = String::from_utf8(read_to_close(&mut third).await.unwrap()).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503")
            && answer.ends_with("too many connections from this address\n"),
        "{answer}"
    );
    drop(held.pop());
    // The freed slot is taken again (the close reaches the server asynchronously).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(get_request("/", false).as_bytes())
            .await
            .unwrap();
        let answer = String::from_utf8(read_to_close(&mut s).await.unwrap()).unwrap();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn caps_derived_from_the_open_files_limit() {
    let (p, a) = (ProvisionConfig::default(), ApiConfig::default());
    let rows = [
        (1_048_576, 4096, 256),
        (4096, 1024, 256),
        (1024, 256, 64),
        (2, 1, 1),
    ];
    for (open_files, http, api) in rows {
        assert_eq!(
            (
                Limits::provision(&p, open_files).max_connections,
                Limits::api(&a, open_files).max_connections
            ),
            (http, api),
            "open files {open_files}"
        );
    }
    let p = ProvisionConfig {
        max_connections: Some(10),
        max_connections_per_source: 3,
        header_timeout_secs: 4,
        idle_timeout_secs: 5,
        ..ProvisionConfig::default()
    };
    assert_eq!(
        Limits::provision(&p, 1024),
        Limits {
            section: "provision",
            max_connections: 10,
            per_source: 3,
            header_timeout: Duration::from_secs(4),
            idle_timeout: Duration::from_secs(5),
        }
    );
}

/// More connections than tokio's default accept queue (1,024) all complete their
/// handshake while nothing accepts: on loopback the handshake is done within connect(),
/// so a socket whose SYN the full queue dropped is still unconnected right after.
#[test]
fn accept_queue_holds_more_than_tokio_default() {
    const CLIENTS: usize = 1_200;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if somaxconn <= CLIENTS {
        eprintln!("skipped: net.core.somaxconn = {somaxconn} caps every queue below {CLIENTS}");
        return;
    }
    crate::http::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let l = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let clients: Vec<socket2::Socket> = (0..CLIENTS)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            match s.connect(&addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => panic!("connect: {e}"),
            }
            s
        })
        .collect();
    let unconnected = clients.iter().filter(|s| s.peer_addr().is_err()).count();
    assert_eq!(unconnected, 0, "connections dropped by a full accept queue");
    for i in 0..CLIENTS {
        rt.block_on(tokio::time::timeout(PATIENCE, l.accept()))
            .unwrap_or_else(|_| panic!("only {i} of {CLIENTS} connections were queued"))
            .unwrap();
    }
}

/// A write of hyper's: the file span when a placeholder comes first, the bytes before
/// a placeholder held for it, else every slice.
#[test]
fn what_a_vectored_write_sends_first() {
    use std::io::IoSlice;
    let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    let p = crate::http::sendfile::placeholder(4096);
    let rows: [(&[IoSlice<'_>], Next); 5] = [
        (&[IoSlice::new(&p)], Next::File(4096)),
        (
            &[IoSlice::new(&p[96..]), IoSlice::new(&head)],
            Next::File(4000),
        ),
        (
            &[IoSlice::new(&head), IoSlice::new(&p)],
            Next::BeforeFile(1),
        ),
        (
            &[IoSlice::new(&head), IoSlice::new(&head), IoSlice::new(&p)],
            Next::BeforeFile(2),
        ),
        (&[IoSlice::new(&head), IoSlice::new(&head)], Next::Bytes),
    ];
    for (bufs, want) in rows {
        assert_eq!(next_write(bufs), want, "{} slices", bufs.len());
    }
}
