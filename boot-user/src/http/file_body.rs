//! The bodies of file downloads. On a connection that can send files (a plain TCP
//! socket) a body is sent by `sendfile(2)` from the page cache ([`super::sendfile`]): the
//! body hands hyper placeholder frames, and the connection sends the file's bytes in
//! their place; a chunk not all in the page cache is read ahead on the blocking pool
//! first. Elsewhere, large positioned reads straight into the buffers handed to hyper,
//! read on the runtime's worker when the page cache has the data and on the blocking pool
//! only when it does not.
//!
//! tower-http's `ServeFile` still decides every header (Range, HEAD, If-Range,
//! conditional requests); [`replace`] swaps the body of its 200 and 206 answers to GET.
//! Its own body reads 64 KiB at a time through `tokio::fs::File`, which is a trip to the
//! blocking pool and a copy from tokio's buffer into the chunk for every read: in a
//! 100-node storm a sixth of the server's CPU went to task switches and memmove. Here a
//! read is one `preadv2` into the chunk's memory, with `RWF_NOWAIT` first: a boot storm
//! sends the same kernel and initrd to every node, so the data is nearly always cached
//! and the read never leaves the worker.
//!
//! Not mmap: a file truncated while mapped (`cp` over an image in use) raises SIGBUS in
//! the server; a read just comes back short, and the download ends with an error. And
//! measured, a body of 1 MiB slices of a mapping cost 0.27-0.31 CPU-s/GB against
//! 0.32 here (200 downloads of 80 MiB over loopback): the reads' page-cache copy is
//! ~30% of the server's profile, but faulting the mapping in costs most of it back.
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

use super::sendfile::Spans;

/// Bytes per read and per frame of a body that is read (not sent from the page cache:
/// those frames are spans of up to [`super::sendfile::MAX_SPAN`]). Larger reads cost
/// fewer system calls; each open download holds about one chunk, so 4096 connections
/// hold ~1 GiB at most.
pub const CHUNK: usize = 256 << 10;

/// `resp` (ServeFile's answer to a GET of `path`) with its body read by [`FileBody`]
/// (sent from the page cache when `spans`, the connection's, is given), or unchanged if
/// it has no file body, or if the file changed since ServeFile opened it (its headers
/// describe the file it opened).
pub async fn replace(path: &Path, resp: Response, spans: Option<Spans>) -> Response {
    let Some((start, end, size)) = span(&resp) else {
        return resp;
    };
    let path = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || {
        let f = File::open(path)?;
        Ok::<_, io::Error>((f.metadata()?.len(), f))
    })
    .await;
    match opened {
        Ok(Ok((len, file))) if len == size => {
            let (parts, _) = resp.into_parts();
            let mut body = FileBody::new(file, start, end);
            body.spans = spans;
            Response::from_parts(parts, Body::new(body))
        }
        _ => resp,
    }
}

/// The byte span `[start, end)` a 200 or 206 answer sends, and the file's size it
/// states; None for other answers and empty spans.
fn span(resp: &Response) -> Option<(u64, u64, u64)> {
    let h = resp.headers();
    let value = |name| h.get(name).and_then(|v| v.to_str().ok());
    let (start, end, size) = match resp.status() {
        StatusCode::OK => {
            let len: u64 = value(header::CONTENT_LENGTH)?.parse().ok()?;
            (0, len, len)
        }
        StatusCode::PARTIAL_CONTENT => {
            let (range, size) = value(header::CONTENT_RANGE)?
                .strip_prefix("bytes ")?
                .split_once('/')?;
            let (a, b) = range.split_once('-')?;
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            (a, b.checked_add(1)?, size.parse().ok()?)
        }
        _ => return None,
    };
    (start < end && end <= size).then_some((start, end, size))
}

/// A file's bytes `[pos, end)` as a body of [`CHUNK`]-sized frames.
pub struct FileBody {
    file: Arc<File>,
    pos: u64,
    end: u64,
    /// Memory of the next chunk: taking a frame splits it off, and once hyper has
    /// written and dropped the frames, `reserve` takes the memory back.
    buf: BytesMut,
    /// A read the page cache could not answer at once, on the blocking pool.
    reading: Option<tokio::task::JoinHandle<(BytesMut, io::Result<usize>)>>,
    /// The connection's queue of spans to send from the file (None: read and copied).
    spans: Option<Spans>,
    /// A chunk read into the page cache on the blocking pool before it is sent.
    warming: Option<tokio::task::JoinHandle<()>>,
}

impl FileBody {
    pub fn new(file: File, start: u64, end: u64) -> FileBody {
        FileBody {
            file: Arc::new(file),
            pos: start,
            end,
            buf: BytesMut::new(),
            reading: None,
            spans: None,
            warming: None,
        }
    }

    /// The next chunk as a placeholder frame, its span queued on the connection: at once
    /// if the page cache holds it, else once it is read ahead on the blocking pool.
    fn poll_span(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let want = self.left().min(super::sendfile::MAX_SPAN);
        if let Some(warming) = &mut self.warming {
            let r = ready!(Pin::new(warming).poll(cx));
            self.warming = None;
            if let Err(e) = r {
                return Poll::Ready(Some(Err(io::Error::other(e))));
            }
        } else if !super::sendfile::cached(&self.file, self.pos, want) {
            let (file, pos) = (self.file.clone(), self.pos);
            self.warming = Some(tokio::task::spawn_blocking(move || {
                super::sendfile::read_ahead(&file, pos, want)
            }));
            return self.poll_span(cx);
        }
        let Some(spans) = &self.spans else {
            return Poll::Ready(None);
        };
        let frame = spans.push(&self.file, self.pos, want);
        self.pos += want as u64;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    /// Bytes of the next read (at most a chunk: the read's memory is held).
    fn want(&self) -> usize {
        self.left().min(CHUNK)
    }

    fn left(&self) -> usize {
        usize::try_from(self.end - self.pos).unwrap_or(usize::MAX)
    }

    /// The frame of `n` bytes just read, or the error of a read that got none.
    fn frame(&mut self, n: io::Result<usize>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        match n {
            Ok(0) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than when the download started",
            )))),
            Ok(n) => {
                self.pos += n as u64;
                Poll::Ready(Some(Ok(Frame::data(self.buf.split().freeze()))))
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        if let Some(reading) = &mut this.reading {
            let done = ready!(Pin::new(reading).poll(cx));
            this.reading = None;
            return match done {
                Ok((buf, n)) => {
                    this.buf = buf;
                    this.frame(n)
                }
                Err(e) => Poll::Ready(Some(Err(io::Error::other(e)))),
            };
        }
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        if this.spans.is_some() {
            return this.poll_span(cx);
        }
        let want = this.want();
        match read_at(&this.file, &mut this.buf, want, this.pos, libc::RWF_NOWAIT) {
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                let (file, mut buf, pos) =
                    (this.file.clone(), std::mem::take(&mut this.buf), this.pos);
                this.reading = Some(tokio::task::spawn_blocking(move || {
                    let n = read_at(&file, &mut buf, want, pos, 0);
                    (buf, n)
                }));
                self.poll_frame(cx)
            }
            n => this.frame(n),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end && self.reading.is_none() && self.warming.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.pos)
    }
}

/// One `preadv2` of up to `want` bytes at `off` into `buf`'s spare capacity.
fn read_at(
    file: &File,
    buf: &mut BytesMut,
    want: usize,
    off: u64,
    flags: libc::c_int,
) -> io::Result<usize> {
    buf.reserve(want);
    let spare = buf.spare_capacity_mut();
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: want.min(spare.len()),
    };
    let off = libc::off_t::try_from(off).map_err(io::Error::other)?;
    // SAFETY: the one iovec covers spare capacity of `buf` (writable memory it owns, not
    // yet initialized), and the kernel writes at most `iov_len` bytes into it.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off, flags) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Body as _;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        (f, data)
    }

    async fn collect(body: FileBody) -> io::Result<Vec<u8>> {
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let data = frame.into_data().unwrap();
            assert!(data.len() <= CHUNK);
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn whole_file_and_spans() {
        let (f, data) = file_of(3 * CHUNK + 12_345);
        let len = data.len() as u64;
        for (a, b) in [(0, len), (1, 2), (100, CHUNK as u64 + 100), (len - 1, len)] {
            let body = FileBody::new(File::open(f.path()).unwrap(), a, b);
            assert_eq!(body.size_hint().exact(), Some(b - a));
            let got = collect(body).await.unwrap();
            assert!(got == data[a as usize..b as usize], "span {a}-{b}");
        }
    }

    #[tokio::test]
    async fn truncated_file_ends_with_an_error() {
        let (f, _) = file_of(2 * CHUNK);
        let body = FileBody::new(File::open(f.path()).unwrap(), 0, 2 * CHUNK as u64);
        std::fs::OpenOptions::new()
            .write(true)
            .open(f.path())
            .unwrap()
            .set_len(CHUNK as u64 / 2)
            .unwrap();
        let e = collect(body).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn spans_of_answers() {
        let resp = |status: u16, headers: &[(&str, &str)]| {
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(Body::empty()).unwrap()
        };
        let rows = [
            (resp(200, &[("content-length", "10")]), Some((0, 10, 10))),
            (resp(200, &[("content-length", "0")]), None),
            (
                resp(206, &[("content-range", "bytes 2-4/10")]),
                Some((2, 5, 10)),
            ),
            (resp(206, &[("content-range", "bytes 2-14/10")]), None),
            (resp(206, &[("content-range", "bytes */10")]), None),
            (resp(416, &[("content-range", "bytes */10")]), None),
            (resp(304, &[]), None),
        ];
        for (r, want) in rows {
            assert_eq!(span(&r), want, "{:?}", r.headers());
        }
    }
}
