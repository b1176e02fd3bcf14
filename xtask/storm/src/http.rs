//! The simulated iPXE's HTTP client: HTTP/1.1 with keep-alive on a kernel TCP socket the
//! node opened in its own namespace; bodies of files are discarded in the kernel
//! (`recv(MSG_TRUNC)`, no copy) unless the caller wants the text (scripts).
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// No byte for this long ends a request (iPXE's TCP gives up after ~15.75 s of retries).
pub const STALL: Duration = Duration::from_millis(15_750);

/// `http://host:port/path` split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<Url, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http URL: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if host.contains(':') {
        host.parse()
    } else {
        format!("{host}:80").parse()
    }
    .map_err(|e| format!("URL {url}: host must be an IPv4 address[:port]: {e}"))?;
    Ok(Url {
        addr,
        host: host.to_string(),
        path: path.to_string(),
    })
}

#[derive(Debug)]
pub enum Error {
    Connect(std::io::Error),
    Io(std::io::Error),
    /// No progress for [`STALL`].
    Stall,
    /// The server closed before the response was whole.
    Closed,
    Malformed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect: {e}"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Stall => write!(f, "no progress for {STALL:?}"),
            Error::Closed => write!(f, "connection closed mid-response"),
            Error::Malformed(s) => write!(f, "malformed response: {s}"),
        }
    }
}

pub struct Response {
    pub status: u16,
    pub bytes: u64,
    /// The body, when asked for.
    pub text: String,
}

/// Whose request head the node sends (header names and order as captured from the
/// real clients by the fingerprint test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    /// iPXE: `Connection: keep-alive`, `User-Agent`, `Host`.
    Ipxe,
    /// busybox wget (the booted OS): `Host`, `User-Agent`, `Connection: close`.
    Wget,
}

impl Agent {
    /// The request head: request line and headers, up to the blank line.
    pub fn head(self, method: &str, url: &Url, body_len: usize) -> String {
        let mut h = format!("{method} {} HTTP/1.1\r\n", url.path);
        match self {
            Agent::Ipxe => {
                h += &format!(
                    "Connection: keep-alive\r\nUser-Agent: iPXE/1.21.1+\r\nHost: {}\r\n",
                    url.host
                )
            }
            Agent::Wget => {
                h += &format!(
                    "Host: {}\r\nUser-Agent: Wget\r\nConnection: close\r\n",
                    url.host
                )
            }
        }
        if method == "POST" {
            h += &format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {body_len}\r\n"
            );
        }
        h + "\r\n"
    }
}

/// One connection (kept alive as long as the server and the agent do).
pub struct Conn {
    stream: TcpStream,
    pub addr: SocketAddr,
    pub agent: Agent,
    buf: Vec<u8>,
    /// Bytes of `buf` holding data read past the last response.
    have: usize,
}

impl Conn {
    /// Connects an unconnected socket made in the node's namespace.
    pub async fn connect(sock: std::net::TcpStream, addr: SocketAddr) -> Result<Conn, Error> {
        let s = tokio::net::TcpSocket::from_std_stream(sock);
        let stream = tokio::time::timeout(STALL, s.connect(addr))
            .await
            .map_err(|_| Error::Stall)?
            .map_err(Error::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            addr,
            agent: Agent::Ipxe,
            buf: vec![0; 16 * 1024],
            have: 0,
        })
    }

    async fn read_some(&mut self) -> Result<usize, Error> {
        if self.have == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = tokio::time::timeout(STALL, self.stream.read(&mut self.buf[self.have..]))
            .await
            .map_err(|_| Error::Stall)?
            .map_err(Error::Io)?;
        if n == 0 {
            return Err(Error::Closed);
        }
        self.have += n;
        Ok(n)
    }

    /// Discards `n` body bytes still in the kernel's receive queue, without copying.
    async fn discard(&mut self, mut n: u64) -> Result<(), Error> {
        let fd = self.stream.as_raw_fd();
        while n > 0 {
            let r = tokio::time::timeout(STALL, async {
                loop {
                    self.stream.readable().await?;
                    let want = n.min(1 << 30) as usize;
                    match self.stream.try_io(Interest::READABLE, || {
                        // SAFETY: recv with MSG_TRUNC on a TCP socket discards up to `want`
                        // bytes; no buffer is written (NULL is allowed with MSG_TRUNC).
                        let r = unsafe {
                            libc::recv(
                                fd,
                                std::ptr::null_mut(),
                                want,
                                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                            )
                        };
                        if r < 0 {
                            Err(std::io::Error::last_os_error())
                        } else {
                            Ok(r as usize)
                        }
                    }) {
                        Ok(k) => return Ok(k),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
            })
            .await
            .map_err(|_| Error::Stall)?
            .map_err(Error::Io)?;
            if r == 0 {
                return Err(Error::Closed);
            }
            n -= r as u64;
        }
        Ok(())
    }

    /// Sends one request (the agent's header set) and reads the response; `keep` =
    /// return the body as text.
    pub async fn request(
        &mut self,
        method: &str,
        url: &Url,
        body: &[u8],
        keep: bool,
    ) -> Result<Response, Error> {
        let req = self.agent.head(method, url, body.len());
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        self.stream.write_all(&out).await.map_err(Error::Io)?;
        // Headers.
        let end = loop {
            if let Some(i) = self.buf[..self.have]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break i + 4;
            }
            self.read_some().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Malformed(head.lines().next().unwrap_or("").into()))?;
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        self.buf.copy_within(end..self.have, 0);
        self.have -= end;
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let mut text = Vec::new();
        let bytes = if chunked {
            self.read_chunked(&mut text).await?
        } else {
            let len: u64 = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let inbuf = (self.have as u64).min(len) as usize;
            if keep {
                text.extend_from_slice(&self.buf[..inbuf]);
            }
            self.buf.copy_within(inbuf..self.have, 0);
            self.have -= inbuf;
            let mut left = len - inbuf as u64;
            if keep {
                while left > 0 {
                    self.read_some().await?;
                    let k = (self.have as u64).min(left) as usize;
                    text.extend_from_slice(&self.buf[..k]);
                    self.buf.copy_within(k..self.have, 0);
                    self.have -= k;
                    left -= k as u64;
                }
            } else {
                self.discard(left).await?;
            }
            len
        };
        Ok(Response {
            status,
            bytes,
            text: String::from_utf8_lossy(&text).into_owned(),
        })
    }

    async fn read_chunked(&mut self, text: &mut Vec<u8>) -> Result<u64, Error> {
        let mut total = 0u64;
        loop {
            let line_end = loop {
                if let Some(i) = self.buf[..self.have].windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                self.read_some().await?;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = u64::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| Error::Malformed(format!("chunk size {size_text:?}")))?;
            self.buf.copy_within(line_end + 2..self.have, 0);
            self.have -= line_end + 2;
            let need = size as usize + 2;
            while self.have < need {
                self.read_some().await?;
            }
            text.extend_from_slice(&self.buf[..size as usize]);
            self.buf.copy_within(need..self.have, 0);
            self.have -= need;
            total += size;
            if size == 0 {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://10.77.0.1:8080/boot/x/ipxe?a=1").unwrap();
        assert_eq!(u.addr, "10.77.0.1:8080".parse().unwrap());
        assert_eq!(u.path, "/boot/x/ipxe?a=1");
        assert_eq!(u.host, "10.77.0.1:8080");
        assert_eq!(parse_url("http://10.0.0.1").unwrap().path, "/");
        assert!(parse_url("tftp://x/y").is_err());
    }

    #[test]
    fn request_heads_of_each_agent() {
        let u = parse_url("http://10.77.0.1:8080/boot/t/kernel").unwrap();
        assert_eq!(
            Agent::Ipxe.head("GET", &u, 0),
            "GET /boot/t/kernel HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: iPXE/1.21.1+\r\nHost: 10.77.0.1:8080\r\n\r\n"
        );
        assert_eq!(
            Agent::Wget.head("POST", &u, 4),
            "POST /boot/t/kernel HTTP/1.1\r\nHost: 10.77.0.1:8080\r\nUser-Agent: Wget\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn keep_alive_fixed_and_chunked_bodies() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = vec![0; 4096];
            let _ = s.read(&mut b).await.unwrap();
            let big = vec![b'x'; 300_000];
            let mut r =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
            r.extend_from_slice(&big);
            s.write_all(&r).await.unwrap();
            let _ = s.read(&mut b).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n#!i\r\n3\r\npxe\r\n0\r\n\r\n")
                .await
                .unwrap();
        });
        let sock = std::net::TcpStream::from(
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap(),
        );
        sock.set_nonblocking(true).unwrap();
        let mut c = Conn::connect(sock, addr).await.unwrap();
        let u = parse_url(&format!("http://{addr}/k")).unwrap();
        let r = c.request("GET", &u, b"", false).await.unwrap();
        assert_eq!((r.status, r.bytes), (200, 300_000));
        let r = c.request("GET", &u, b"", true).await.unwrap();
        assert_eq!((r.status, r.text.as_str()), (200, "#!ipxe"));
    }
}
