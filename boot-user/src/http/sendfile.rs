//! Zero-copy file bodies: the bytes of a download go from the page cache to the socket
//! with `sendfile(2)`, never through the server's memory, while hyper still writes the
//! status line, the headers and every other body.
//!
//! hyper writes bodies from `Bytes` frames it is handed, so a file body ([`super::file_body`])
//! on a connection that can send files hands it *placeholder* frames instead: slices of
//! one zeroed allocation of its own ([`placeholder`]), which nothing else ever writes,
//! each frame's file span queued on the connection ([`Spans`]). The connection's I/O
//! ([`super::listen`]) recognizes a slice of that allocation in what hyper writes and
//! sends the queued span's bytes from the file in its place; hyper counts them as the
//! placeholder's bytes written. hyper writes a connection's frames in order and from its
//! own queue of buffers (the connection is set to vectored writes, so it never copies a
//! frame into its header buffer), so the spans are met in the order they were queued; a
//! placeholder slice that does not match the queue's first span exactly ends the
//! connection with an error: placeholder bytes never reach a client.
//!
//! Why by hand: hyper has no file-body hook, and no maintained crate gives it one. It cut
//! the server's CPU per storm (the profile's largest item was the two copies, page
//! cache -> buffer -> socket); nginx serves the same way (`sendfile on`).
//!
//! `sendfile` of pages not in the page cache waits for the disk on the runtime's worker,
//! so a body asks `cachestat(2)` first and has a chunk that is not all cached read
//! ahead on the blocking pool before it queues it.
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};

use tokio::io::Interest;

/// Bytes one placeholder frame stands for at most: nginx's `sendfile_max_chunk` (2 MiB).
/// A span costs a trip through hyper, a `cachestat` and at least one `sendfile`; with
/// 256 KiB spans (the read chunk) a 1,000-node storm made 8x the calls for the same
/// bytes. A span holds no memory (its placeholder is never touched), so its size is
/// free.
pub const MAX_SPAN: usize = 2 << 20;

/// The placeholder allocation: zeroed by the allocator and never written, so its pages
/// are never touched (they cost no memory). A heap allocation of its own, so no other
/// buffer can share its addresses.
fn placeholder_memory() -> &'static [u8] {
    static MEM: OnceLock<Box<[u8]>> = OnceLock::new();
    MEM.get_or_init(|| vec![0u8; MAX_SPAN].into_boxed_slice())
}

/// A placeholder frame's bytes for a span of `len` bytes (at most [`MAX_SPAN`]).
pub fn placeholder(len: usize) -> bytes::Bytes {
    bytes::Bytes::from_static(&placeholder_memory()[..len.min(MAX_SPAN)])
}

/// Whether `buf` is (a part of) a placeholder frame.
pub fn is_placeholder(buf: &[u8]) -> bool {
    let mem = placeholder_memory().as_ptr_range();
    !buf.is_empty() && mem.contains(&buf.as_ptr())
}

/// Bytes of a file to send in place of a placeholder frame.
struct Span {
    file: Arc<File>,
    off: u64,
    len: usize,
}

/// A connection's queue of file spans, in the order their placeholders were handed to
/// hyper. Cloned into each request's extensions on a connection that can send files.
#[derive(Clone, Default)]
pub struct Spans(Arc<Mutex<VecDeque<Span>>>);

impl Spans {
    /// Queues `len` bytes of `file` at `off`; returns the placeholder frame for them.
    pub fn push(&self, file: &Arc<File>, off: u64, len: usize) -> bytes::Bytes {
        let len = len.min(MAX_SPAN);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Span {
                file: file.clone(),
                off,
                len,
            });
        placeholder(len)
    }

    /// Sends the first span's bytes in place of a placeholder slice of `len` bytes
    /// (what is left of its frame) on `io`; returns the bytes sent.
    pub fn poll_send<S: SendFile>(
        &self,
        io: &S,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(span) = q.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "a placeholder frame without its file span",
            )));
        };
        if span.len != len {
            return Poll::Ready(Err(io::Error::other(format!(
                "a placeholder of {len} bytes where the file span has {}",
                span.len
            ))));
        }
        let n = ready!(io.poll_sendfile(cx, &span.file, span.off, span.len))?;
        if n == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than when the download started",
            )));
        }
        span.off += n as u64;
        span.len -= n;
        if span.len == 0 {
            q.pop_front();
        }
        Poll::Ready(Ok(n))
    }

    /// Spans queued and not yet sent.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A connection's socket that `sendfile(2)` can write to.
pub trait SendFile {
    /// Whether the bytes written reach the peer as they are (a plain socket). A stream
    /// that transforms them (TLS) says false: its connections get no [`Spans`].
    const CAN_SEND_FILES: bool;

    /// Caps the bytes the kernel holds for the connection and has not sent yet
    /// ([`UNSENT_LOWAT`]); a no-op where that means nothing (unix sockets).
    fn cap_unsent(&self) {}

    /// Sends up to `len` bytes of `file` at `off` once the socket is writable.
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: &File,
        off: u64,
        len: usize,
    ) -> Poll<io::Result<usize>>;

    /// Writes `bufs`, the bytes just before a file span (a response head), telling the
    /// kernel that more follows at once (`MSG_MORE` on TCP): it holds them and sends
    /// them in the span's first segment rather than in a small segment of their own.
    fn poll_write_before_file(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;
}

/// One non-blocking `sendmsg` of `bufs` to socket `out` with `flags` (and
/// `MSG_NOSIGNAL`: a closed peer is an error, not a signal).
fn send_with(
    out: &impl AsRawFd,
    bufs: &[io::IoSlice<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI compatible with iovec on unix (std's guarantee); the kernel only
    // reads through the pointer.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    // SAFETY: the descriptor is open for the call; `msg` points at `bufs`, valid for it.
    let n = unsafe { libc::sendmsg(out.as_raw_fd(), &msg, flags | libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// One non-blocking `sendfile` from `file` at `off` to socket `out`.
fn sendfile(out: &impl AsRawFd, file: &File, off: u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(off).map_err(io::Error::other)?;
    // SAFETY: both descriptors are open for the call; `off` is a valid off_t the kernel
    // updates.
    let n = unsafe { libc::sendfile(out.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

macro_rules! send_file_for {
    ($t:ty, $more:expr, $cap:expr) => {
        impl SendFile for $t {
            const CAN_SEND_FILES: bool = true;

            fn cap_unsent(&self) {
                ($cap)(self)
            }

            fn poll_write_before_file(
                &self,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                loop {
                    ready!(self.poll_write_ready(cx))?;
                    match self.try_io(Interest::WRITABLE, || send_with(self, bufs, $more)) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        r => return Poll::Ready(r),
                    }
                }
            }

            fn poll_sendfile(
                &self,
                cx: &mut Context<'_>,
                file: &File,
                off: u64,
                len: usize,
            ) -> Poll<io::Result<usize>> {
                loop {
                    ready!(self.poll_write_ready(cx))?;
                    match self.try_io(Interest::WRITABLE, || sendfile(self, file, off, len)) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        r => return Poll::Ready(r),
                    }
                }
            }
        }
    };
}

// TCP: a response head waits in the kernel for the file's first bytes (nginx gets the
// same with `tcp_nopush`, a TCP_CORK set and cleared around each response: two more
// system calls per response). Without it the head went out in a segment of its own:
// one more packet per file for the fabric, the nodes' receive and their ACKs.
send_file_for!(
    tokio::net::TcpStream,
    libc::MSG_MORE,
    |s: &tokio::net::TcpStream| {
        let v = UNSENT_LOWAT as libc::c_int;
        // SAFETY: the descriptor is open; the option value is a c_int of the stated size.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            tracing::debug!("TCP_NOTSENT_LOWAT: {}", io::Error::last_os_error());
        }
    }
);
// A unix stream has no segments to merge.
send_file_for!(tokio::net::UnixStream, 0, |_: &tokio::net::UnixStream| {});

/// Unsent bytes a connection's socket holds at most (`TCP_NOTSENT_LOWAT`): a download
/// is woken to queue more once fewer than half of this wait in the kernel. Without it
/// sendfile fills the socket's whole send buffer (autotuned to 4 MiB) with data that
/// waits on the client's window: in a 300-node storm with the 88 MB payload xboot's
/// sockets held 896 MB unsent (nginx's 131 MB), and every socket's memory, the
/// nodes' receive queues included, counts against the host's one `tcp_mem`; past its
/// pressure mark the kernel shrinks windows and drops, which the storm saw as
/// retransmissions, RTOs and stalled downloads. Bytes in flight are not capped (the
/// client's window does that), so throughput does not depend on it. Smaller costs
/// wake-ups: at 512 KiB a 500-node storm of the small payload took 13-20% more server
/// CPU, at 1 MiB none measurable, and the full storm kept out of memory pressure at both.
pub const UNSENT_LOWAT: usize = 1 << 20;

/// Whether every page of `file`'s bytes `[off, off + len)` is in the page cache
/// (`cachestat(2)`, Linux 6.5). Where the kernel has no cachestat, true: the send then
/// reads what is missing itself, as nginx's sendfile does.
pub fn cached(file: &File, off: u64, len: usize) -> bool {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // The generic syscall table's number, shared by x86_64 and aarch64 (libc has no
    // constant for them yet).
    const SYS_CACHESTAT: libc::c_long = 451;
    if len == 0 {
        return true;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let first = off / page;
    let last = (off + len as u64 - 1) / page;
    let range = Range {
        off: first * page,
        len: (last - first + 1) * page,
    };
    let mut stat = Stat::default();
    // SAFETY: `range` and `stat` are valid for the call (read and written by the
    // kernel); the descriptor is open; flags must be 0.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    r != 0 || stat.nr_cache > last - first
}

/// Reads `file`'s bytes `[off, off + len)` into the page cache (blocking: for the
/// blocking pool).
pub fn read_ahead(file: &File, off: u64, len: usize) {
    let Ok(off) = libc::off64_t::try_from(off) else {
        return;
    };
    // SAFETY: the descriptor is open for the call.
    unsafe { libc::readahead(file.as_raw_fd(), off, len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognized_and_nothing_else() {
        let p = placeholder(1000);
        assert_eq!(p.len(), 1000);
        assert!(is_placeholder(&p));
        assert!(
            is_placeholder(&p[10..]),
            "what is left after a partial write"
        );
        assert!(!is_placeholder(&p[..0]));
        let other = vec![0u8; 1000];
        assert!(!is_placeholder(&other));
        assert_eq!(placeholder(MAX_SPAN + 5).len(), MAX_SPAN);
    }

    /// Spans are sent in their order with `sendfile`, byte for byte; a placeholder that
    /// does not match the first span, or one with no span queued, is an error (nothing
    /// is sent in its place).
    #[tokio::test]
    async fn spans_go_out_in_order_and_mismatches_are_errors() {
        use tokio::io::AsyncReadExt;
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        let file = Arc::new(File::open(f.path()).unwrap());
        let (tx, mut rx) = tokio::net::UnixStream::pair().unwrap();
        let spans = Spans::default();
        let a = spans.push(&file, 10, 5000);
        let b = spans.push(&file, 60_000, 30_000);
        assert_eq!((a.len(), b.len(), spans.queued()), (5000, 30_000, 2));
        let send = |len: usize| {
            let (spans, tx) = (spans.clone(), &tx);
            std::future::poll_fn(move |cx| spans.poll_send(tx, cx, len))
        };
        let e = send(4999).await.unwrap_err();
        assert!(e.to_string().contains("placeholder of 4999 bytes"), "{e}");
        let mut left = 5000;
        while left > 0 {
            left -= send(left).await.unwrap();
        }
        let mut left = 30_000;
        while left > 0 {
            left -= send(left).await.unwrap();
        }
        assert_eq!(spans.queued(), 0);
        assert!(send(10).await.is_err(), "no span queued");
        drop(tx);
        let mut got = Vec::new();
        rx.read_to_end(&mut got).await.unwrap();
        let mut want = data[10..5010].to_vec();
        want.extend_from_slice(&data[60_000..90_000]);
        assert!(got == want, "{} bytes received", got.len());
    }

    /// A boot connection's socket holds at most UNSENT_LOWAT unsent bytes (read back
    /// from the kernel); a unix socket takes no such option and is left alone.
    #[tokio::test]
    async fn tcp_connections_cap_their_unsent_bytes() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        let lowat = |s: &tokio::net::TcpStream| {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: the descriptor is open; `v` and `len` are valid for the call.
            let r = unsafe {
                libc::getsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_NOTSENT_LOWAT,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(r, 0, "{}", io::Error::last_os_error());
            v as usize
        };
        let before = lowat(&s);
        assert_ne!(before, UNSENT_LOWAT, "the kernel's default is no cap");
        s.cap_unsent();
        assert_eq!(lowat(&s), UNSENT_LOWAT);
        assert_eq!(lowat(&c), before, "only the socket it was called on");
        let (u, _) = tokio::net::UnixStream::pair().unwrap();
        u.cap_unsent();
    }

    /// Segments the socket has sent (`tcpi_segs_out` of TCP_INFO, Linux 4.2; read at
    /// its offset, as libc's `tcp_info` stops before it).
    fn segs_out(s: &tokio::net::TcpStream) -> u32 {
        const SEGS_OUT: usize = 136;
        let mut info = [0u8; 256];
        let mut len = info.len() as libc::socklen_t;
        // SAFETY: the descriptor is open; `info` and `len` are valid for the call.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        assert!(len as usize >= SEGS_OUT + 4, "TCP_INFO of {len} bytes");
        u32::from_ne_bytes(info[SEGS_OUT..SEGS_OUT + 4].try_into().unwrap())
    }

    /// A response head written before a file span leaves in the span's first segment
    /// (the kernel's own count of segments sent), where a plain write of it is a
    /// segment of its own; the peer receives the same bytes either way.
    #[tokio::test]
    async fn a_head_before_a_file_span_shares_its_first_segment() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &body).unwrap();
        let file = File::open(f.path()).unwrap();
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        // Nagle off: a plain write of the head then leaves at once whatever the peer
        // has acknowledged, and MSG_MORE has to hold it by itself.
        s.set_nodelay(true).unwrap();
        let mut segments = vec![];
        for more in [true, false] {
            let before = segs_out(&s);
            if more {
                let bufs = [io::IoSlice::new(&head[..20]), io::IoSlice::new(&head[20..])];
                let n = std::future::poll_fn(|cx| s.poll_write_before_file(cx, &bufs))
                    .await
                    .unwrap();
                assert_eq!(n, head.len());
            } else {
                s.write_all(head).await.unwrap();
            }
            let n = std::future::poll_fn(|cx| s.poll_sendfile(cx, &file, 0, body.len()))
                .await
                .unwrap();
            assert_eq!(n, body.len());
            let mut got = vec![0u8; head.len() + body.len()];
            c.read_exact(&mut got).await.unwrap();
            assert!(got[..head.len()] == head[..] && got[head.len()..] == body[..]);
            segments.push(segs_out(&s) - before);
        }
        assert_eq!(segments, [1, 2], "segments with MSG_MORE, then without");
    }

    #[test]
    fn a_file_just_written_is_cached_and_readahead_is_harmless() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![1u8; 3 * 4096 + 7]).unwrap();
        let file = File::open(f.path()).unwrap();
        assert!(cached(&file, 0, 3 * 4096 + 7));
        assert!(cached(&file, 4095, 2));
        read_ahead(&file, 0, 3 * 4096 + 7);
        assert!(cached(&file, 0, 0));
    }
}
