//! Serving a router on a listener within bounds: the one accept loop of the boot HTTP
//! server and the API (unix socket and TCP).
//!
//! A hostile or broken client must not take what the others need. Each connection holds
//! a slot of [`Limits::max_connections`]; at the cap the loop stops accepting until a
//! slot frees, so new clients wait in the kernel's accept queue (no descriptor of ours)
//! while clients already connected keep being served, and descriptors stay bounded. One
//! IP address holds at most [`Limits::per_source`] slots; the excess is answered 503 and
//! closed, so filling the cap takes many addresses. Slots of silent clients free
//! themselves: hyper's header read timeout closes a connection that has not sent a whole
//! request head within [`Limits::header_timeout`] (it also runs while a kept-alive
//! connection waits for its next request), and the idle watchdog closes one where no byte
//! moved for [`Limits::idle_timeout`] while no handler works on its request (a client that
//! stopped reading its download); a stalled request body times out the same way.
//!
//! Why stop accepting rather than close the oldest idle connection when full (nginx
//! reuses idle keep-alive connections): the header timeout already bounds how long a
//! silent connection holds a slot, so at worst a newcomer waits one header timeout, and
//! a connection in the middle of a download is never cut for a newcomer.
//!
//! [`serve_tls`] is the same loop over TLS (rustls, [`crate::tls`]): the handshake runs
//! in the connection's task within the header timeout.
//!
//! Handlers still get `ConnectInfo<SocketAddr>` (or the unix peer address) as with
//! `axum::serve`'s `into_make_service_with_connect_info`. Shutdown is graceful: the loop
//! stops accepting, idle connections close, requests in flight finish.
//!
//! A connection on a plain socket sends file bodies with `sendfile(2)`: its I/O sends the
//! file's bytes in place of the placeholder frames of [`super::sendfile`].
//!
//! This module never decides a response: it moves connections and bytes.
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use super::sendfile::{is_placeholder, SendFile, Spans};
use crate::config::{ApiConfig, ProvisionConfig};

/// How many connections a server holds and how long it waits on a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The config section the limits come from (`provision`, `api`): log lines name
    /// the key to change.
    pub section: &'static str,
    /// Connections open at once; at the cap the server stops accepting.
    pub max_connections: usize,
    /// Connections open at once from one IP address; 0 = no per-address cap.
    pub per_source: usize,
    /// Time a client has to send a whole request head, from accept and again from the
    /// end of each response on a kept-alive connection.
    pub header_timeout: Duration,
    /// Longest time with no byte moving either way while no handler works on the
    /// connection's request, and longest wait for the next frame of a request body.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The boot HTTP server's limits. `open_files` is the open-files limit: the derived
    /// cap is a quarter of it, as a download holds a socket and a file.
    pub fn provision(c: &ProvisionConfig, open_files: u64) -> Limits {
        Limits {
            section: "provision",
            max_connections: c
                .max_connections
                .unwrap_or_else(|| derived_cap(4096, open_files / 4)),
            per_source: c.max_connections_per_source,
            header_timeout: Duration::from_secs(c.header_timeout_secs),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
        }
        .checked(open_files / 2)
    }

    /// The limits of each API listener.
    pub fn api(c: &ApiConfig, open_files: u64) -> Limits {
        Limits {
            section: "api",
            max_connections: c
                .max_connections
                .unwrap_or_else(|| derived_cap(256, open_files / 16)),
            per_source: c.max_connections_per_source,
            header_timeout: Duration::from_secs(c.header_timeout_secs),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
        }
        .checked(open_files / 4)
    }

    /// Warns when the configured cap is more than `fair` (its share of the open-files
    /// limit): descriptors could then run out before the cap is reached.
    fn checked(self, fair: u64) -> Limits {
        if self.max_connections as u64 > fair {
            tracing::warn!(
                "{}.max_connections = {}: more than the open-files limit leaves for it ({fair}); \
                 descriptors can run out before the cap is reached",
                self.section,
                self.max_connections
            );
        }
        self
    }
}

fn derived_cap(default: usize, share: u64) -> usize {
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(1, default)
}

/// The accept-queue length asked of `listen(2)`: the kernel caps it at its namespace's
/// `net.core.somaxconn` (4096 by default), so the queue is as long as the host allows.
/// Tokio's `TcpListener::bind` gets 128 (mio's `listen(128)`; `ss -ltn` shows it): a
/// thousand nodes reaching their script at once overflowed it 30-421 times per storm,
/// each overflow a dropped SYN the client resends after a second.
pub const LISTEN_BACKLOG: u32 = 65_535;

/// A TCP listener on `addr` (SO_REUSEADDR, as tokio's `bind`) with the accept queue of
/// [`LISTEN_BACKLOG`].
pub fn bind_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let s = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(LISTEN_BACKLOG)
}

/// A listener's peer address, for the per-address cap and `ConnectInfo`.
pub trait Peer: Clone + Send + Sync + 'static {
    /// The address the per-source cap counts; None: not capped per source.
    fn source(&self) -> Option<IpAddr>;
}

impl Peer for SocketAddr {
    fn source(&self) -> Option<IpAddr> {
        Some(self.ip().to_canonical())
    }
}

impl Peer for tokio::net::unix::SocketAddr {
    fn source(&self) -> Option<IpAddr> {
        None
    }
}

/// At most one "connections open" warning per this interval: a server held at its cap
/// reaches it again each time a slot frees.
const FULL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then lets
/// requests in flight finish. Accept errors (EMFILE) are logged and retried by the
/// listener.
pub async fn serve<L>(
    listener: L,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: Listener,
    L::Addr: Peer,
    L::Io: SendFile,
{
    serve_with(listener, router, limits, None, shutdown).await
}

/// [`serve`] over TLS: each connection's handshake runs in the connection's own task
/// (a slow client never holds up the accept loop) and must be done within
/// [`Limits::header_timeout`]. The acceptor picks the certificate at each handshake, so
/// a reloaded certificate serves the next connection and open ones keep theirs.
pub async fn serve_tls<L>(
    listener: L,
    router: Router,
    limits: Limits,
    tls: tokio_rustls::TlsAcceptor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: Listener,
    L::Addr: Peer,
    L::Io: SendFile,
{
    serve_with(listener, router, limits, Some(tls), shutdown).await
}

async fn serve_with<L>(
    mut listener: L,
    router: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: Listener,
    L::Addr: Peer,
    L::Io: SendFile,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let sources = Arc::new(Sources::default());
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Vectored writes: hyper then writes each body frame from its own memory, never
    // copied into its header buffer, which placeholder frames need (`sendfile`).
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .writev(true);
    let mut shutdown = pin!(shutdown);
    let mut full_logged: Option<Instant> = None;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if full_logged.is_none_or(|t| t.elapsed() >= FULL_LOG_INTERVAL) {
                    full_logged = Some(Instant::now());
                    tracing::warn!(
                        "{} connections open ({}.max_connections): not accepting until one closes",
                        limits.max_connections,
                        limits.section
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        io.cap_unsent();
        let source = match peer.source() {
            Some(ip) if limits.per_source > 0 => match sources.take(ip, &limits) {
                Some(s) => Some(s),
                // Over TLS a plain-text 503 would read as garbage, and a handshake for
                // it is work a flooding address should not get: closed.
                None if tls.is_some() => continue,
                None => {
                    refuse(io, permit);
                    continue;
                }
            },
            _ => None,
        };
        let activity = Arc::new(Activity::default());
        // Over TLS the bytes on the socket are not the body's: no sendfile placeholders.
        let spans = (L::Io::CAN_SEND_FILES && tls.is_none()).then(Spans::default);
        let io = Tracked {
            io,
            activity: activity.clone(),
            spans: spans.clone(),
        };
        let service = service(
            router.clone(),
            peer,
            activity.clone(),
            limits.idle_timeout,
            spans,
        );
        // Held from here: shutdown waits for a handshake in progress too (bounded by
        // the header timeout).
        let watcher = graceful.watcher();
        let (http, tls) = (http.clone(), tls.clone());
        tokio::spawn(async move {
            let _slots = (permit, source);
            let conn = async move {
                match tls {
                    None => watcher
                        .watch(http.serve_connection(TokioIo::new(io), service))
                        .await
                        .map_err(|e| e.to_string()),
                    Some(tls) => {
                        let stream = tokio::time::timeout(limits.header_timeout, tls.accept(io))
                            .await
                            .map_err(|_| {
                                format!(
                                    "no TLS handshake within {:?} ({}.header_timeout_secs)",
                                    limits.header_timeout, limits.section
                                )
                            })?
                            .map_err(|e| format!("TLS handshake failed: {e}"))?;
                        watcher
                            .watch(http.serve_connection(TokioIo::new(stream), service))
                            .await
                            .map_err(|e| e.to_string())
                    }
                }
            };
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                },
                () = idle(&activity, limits.idle_timeout) => tracing::debug!(
                    "closing a connection idle for {:?} ({}.idle_timeout_secs)",
                    limits.idle_timeout,
                    limits.section
                ),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// One connection's service: the router, with the peer's address as `ConnectInfo` (and
/// the connection's [`Spans`] when it can send files), the request body timed out between
/// frames, and the handler counted as working while its response future runs.
fn service<A: Peer>(
    router: Router,
    peer: A,
    activity: Arc<Activity>,
    idle: Duration,
    spans: Option<Spans>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let working = Working::start(&activity);
        let mut req = req.map(|b| axum::body::Body::new(TimeoutBody::new(idle, b)));
        req.extensions_mut().insert(ConnectInfo(peer.clone()));
        if let Some(s) = &spans {
            req.extensions_mut().insert(s.clone());
        }
        let router = router.clone();
        async move {
            let _working = working;
            router.oneshot(req).await
        }
    })
}

/// Answers a connection over its source's cap with a 503 and closes it. The slot is held
/// until then, so refusals are within the cap too.
fn refuse<I: AsyncWrite + Unpin + Send + 'static>(mut io: I, permit: OwnedSemaphorePermit) {
    const BODY: &str = "too many connections from this address\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\nretry-after: 10\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            io.write_all(answer.as_bytes()).await?;
            io.shutdown().await
        })
        .await;
    });
}

/// Connections open per IP address.
#[derive(Default)]
struct Sources {
    /// Open connections, and whether the source's reaching its cap has been logged.
    open: Mutex<HashMap<IpAddr, (usize, bool)>>,
}

/// One connection's place in [`Sources`]; dropped when the connection closes.
struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    /// A slot for a connection from `ip`, or None if `ip` is at its cap.
    fn take(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (n, logged) = open.entry(ip).or_default();
        if *n >= limits.per_source {
            if !*logged {
                *logged = true;
                tracing::warn!(
                    "{ip} has {n} connections open ({}.max_connections_per_source): refusing more",
                    limits.section
                );
            }
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, logged)) = open.get_mut(&self.ip) {
            *n -= 1;
            *logged = false;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What the idle watchdog looks at: set by the connection's I/O and its service.
#[derive(Default)]
struct Activity {
    /// A byte was read or written since the watchdog last looked.
    moved: AtomicBool,
    /// Handlers working on a request (their response future has not resolved).
    working: AtomicUsize,
}

/// Counts a handler as working until dropped.
struct Working(Arc<Activity>);

impl Working {
    fn start(a: &Arc<Activity>) -> Working {
        a.working.fetch_add(1, Ordering::Relaxed);
        Working(a.clone())
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.working.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Completes once the connection has been idle (no byte moved, no handler working) for
/// `limit`, give or take a quarter of it. Looks a few times per `limit` instead of
/// reading the clock on every read and write.
async fn idle(a: &Activity, limit: Duration) {
    let tick = (limit / 4).max(Duration::from_millis(10));
    let mut clock = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet = Duration::ZERO;
    loop {
        clock.tick().await;
        if a.moved.swap(false, Ordering::Relaxed) || a.working.load(Ordering::Relaxed) > 0 {
            quiet = Duration::ZERO;
        } else {
            quiet += tick;
            if quiet >= limit {
                return;
            }
        }
    }
}

/// A connection's I/O, noting in [`Activity`] that bytes moved, and sending file spans
/// in place of placeholder frames.
struct Tracked<I> {
    io: I,
    activity: Arc<Activity>,
    /// The connection's file spans (None: it cannot send files).
    spans: Option<Spans>,
}

impl<I: SendFile> Tracked<I> {
    /// Sends the file span a placeholder slice of `len` bytes stands for.
    fn poll_placeholder(&self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        let r = match &self.spans {
            Some(spans) => spans.poll_send(&self.io, cx, len),
            None => Poll::Ready(Err(io::Error::other(
                "a placeholder frame on a connection that cannot send files",
            ))),
        };
        self.moved(r, |n| *n)
    }
}

impl<I> Tracked<I> {
    fn moved<T>(&self, r: Poll<io::Result<T>>, n: impl FnOnce(&T) -> usize) -> Poll<io::Result<T>> {
        if let Poll::Ready(Ok(v)) = &r {
            if n(v) > 0 {
                self.activity.moved.store(true, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.moved(r, |_| n)
    }
}

impl<I: AsyncWrite + SendFile + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if is_placeholder(buf) {
            return self.poll_placeholder(cx, buf.len());
        }
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.moved(r, |n| *n)
    }

    /// The slices before the first placeholder in one write, held by the kernel for the
    /// file's first bytes ([`SendFile::poll_write_before_file`]), or that placeholder's
    /// file span when it comes first.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = match next_write(bufs) {
            Next::File(len) => return self.poll_placeholder(cx, len),
            Next::BeforeFile(k) => self.io.poll_write_before_file(cx, &bufs[..k]),
            Next::Bytes => Pin::new(&mut self.io).poll_write_vectored(cx, bufs),
        };
        self.moved(r, |n| *n)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What one vectored write of hyper's sends first.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The file span of a placeholder slice of this many bytes.
    File(usize),
    /// The first k slices (a response head, or the end of the previous body), with the
    /// file span of a placeholder right after them.
    BeforeFile(usize),
    /// All the slices: no placeholder among them.
    Bytes,
}

fn next_write(bufs: &[io::IoSlice<'_>]) -> Next {
    match bufs.iter().position(|b| is_placeholder(b)) {
        Some(0) => Next::File(bufs[0].len()),
        Some(k) => Next::BeforeFile(k),
        None => Next::Bytes,
    }
}

#[cfg(test)]
mod tests;
