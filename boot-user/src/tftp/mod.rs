//! Read-only TFTP server for the iPXE binaries (async-tftp).
//!
//! async-tftp 0.4 does the protocol: RRQ, and the options blksize (RFC 2348), tsize and
//! timeout (RFC 2349) and windowsize (RFC 7440). Each transfer is its own task with its
//! own socket; there is no cap on concurrent transfers. What xboot adds is the
//! [`Handler`]: files come only from inside the root ([`root::Root`]), writes are
//! refused, and every file sent is recorded as a boot event of the host whose
//! inventory address sent the request (or of the bare IP if none has it).
use std::future::Future;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_tftp::packet;
use async_tftp::server::TftpServerBuilder;
use blocking::Unblock;
use futures::io::AsyncRead;

use crate::events::EventKind;
use crate::state::Shared;

pub mod root;

pub use root::{PathError, Root};

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("TFTP root {0}")]
    Root(std::io::Error),
    #[error("TFTP server: {0}")]
    Server(#[from] async_tftp::Error),
}

/// Serves `root` read-only on `socket` until `shutdown` completes.
pub async fn run(
    socket: UdpSocket,
    root: &Path,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TftpError> {
    let root = Root::new(root).map_err(TftpError::Root)?;
    for (link, target) in root.escaping_links() {
        tracing::warn!(
            "TFTP root {}: {} links to {}, outside the root: it will not be served (copy the file in instead)",
            root.dir().display(),
            link.display(),
            target.display()
        );
    }
    let local = socket.local_addr().ok();
    let server = TftpServerBuilder::with_handler(Handler { root, shared })
        .std_socket(socket)?
        .build()
        .await?;
    tracing::info!("TFTP serving on {local:?}");
    tokio::select! {
        r = server.serve() => r.map_err(TftpError::from),
        () = shutdown => Ok(()),
    }
}

/// async-tftp's file source: the root, read-only, with an event per file sent.
pub struct Handler {
    root: Root,
    shared: Arc<Shared>,
}

impl Handler {
    pub fn new(root: Root, shared: Arc<Shared>) -> Handler {
        Handler { root, shared }
    }
}

/// The inventory host with `ip` on a boot interface, else the IP itself: the name
/// events are recorded under.
pub fn host_for_ip(shared: &Shared, ip: IpAddr) -> String {
    let inv = shared.inventory();
    let found = inv.hosts().iter().find(|h| {
        h.interfaces
            .iter()
            .any(|nic| !nic.bmc && nic.addr().map(IpAddr::V4) == Some(ip))
    });
    match found {
        Some(h) => h.name.clone(),
        None => ip.to_string(),
    }
}

impl async_tftp::server::Handler for Handler {
    type Reader = SentFile;
    type Writer = Unblock<std::fs::File>;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let name = path.to_string_lossy().into_owned();
        let host = host_for_ip(&self.shared, client.ip());
        let file = self.root.resolve(&name).map_err(|e| {
            tracing::warn!("TFTP {host} ({client}): refused {e}");
            match e {
                PathError::NotFound(_) | PathError::NotAFile(_) => packet::Error::FileNotFound,
                PathError::DotDot(_) | PathError::OutsideRoot { .. } => {
                    packet::Error::PermissionDenied
                }
            }
        })?;
        let opened = blocking::unblock(move || {
            let f = std::fs::File::open(&file)?;
            let len = f.metadata()?.len();
            Ok::<_, std::io::Error>((f, len))
        })
        .await;
        let (f, len) = opened.map_err(|e| {
            tracing::warn!("TFTP {host} ({client}): cannot open {name:?}: {e}");
            packet::Error::from(e)
        })?;
        tracing::debug!("TFTP {host} ({client}): sending {name:?} ({len} bytes)");
        let on_sent = SentEvent {
            shared: self.shared.clone(),
            host,
            detail: format!("{name} ({len} bytes)"),
        };
        Ok((
            SentFile {
                inner: Unblock::new(f),
                on_sent: Some(on_sent),
            },
            Some(len),
        ))
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        tracing::warn!(
            "TFTP {client}: write request for {} refused (read-only server)",
            path.display()
        );
        Err(packet::Error::IllegalOperation)
    }
}

struct SentEvent {
    shared: Arc<Shared>,
    host: String,
    detail: String,
}

/// A file being sent; records the TFTP event when its last block has been read.
pub struct SentFile {
    inner: Unblock<std::fs::File>,
    on_sent: Option<SentEvent>,
}

impl AsyncRead for SentFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(0)), false) = (&r, buf.is_empty()) {
            if let Some(ev) = self.on_sent.take() {
                ev.shared
                    .events
                    .record(&ev.host, EventKind::Tftp, ev.detail);
            }
        }
        r
    }
}
