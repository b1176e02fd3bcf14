//! HTTP boot service (axum): iPXE scripts, kernels, initrds, live images, postscripts.
//!
//! # Routes
//! | method | path | answer |
//! | --- | --- | --- |
//! | GET | `/` | `{"status":"up"}` |
//! | GET, HEAD | `/boot/{token}/ipxe` | the host's iPXE script ([`boot::render_ipxe_script`]) |
//! | GET, HEAD, Range | `/boot/{token}/kernel` | the image's kernel |
//! | GET, HEAD, Range | `/boot/{token}/initrd-{n}` | the image's n-th initrd (from 0) |
//! | GET, HEAD, Range | `/boot/{token}/liveimg` | the image's live root image (squashfs) |
//! | GET, HEAD, Range | `/boot/{token}/{kernel,initrd-N}.sig` | detached signatures (`image.verify`) |
//! | GET, HEAD, Range | `/boot/{token}/file/{kernel,initrd-N,liveimg}` | the same files at Grendel's paths |
//! | GET, HEAD | `/boot/{token}/postscript` | `image.provision_templates["postscript"]`, else the file `provision.postscript`, rendered |
//! | GET, HEAD | `/boot/{token}/provision/{name}` | `image.provision_templates[name]`, rendered (Grendel's route) |
//! | GET, HEAD | `/boot/{token}/kickstart` | `provision_templates.kickstart`, else the template `kickstart` (file `kickstart.tmpl` of the templates directories, else the built-in), rendered |
//! | GET, HEAD | `/boot/{token}/cloud-init/{user-data,meta-data,vendor-data}` | the same for each NoCloud file (`ds=nocloud;s=$.endpoints.CloudInitURL`) |
//! | POST | `/boot/{token}/complete` | provisioning done: the hook, then a `complete` event; once per boot, after a file of the image was served with the token, from that client ([`complete`]) |
//! | GET, HEAD, Range | `/firmware/{file}` | EFI iPXE binaries for UEFI HTTP boot, no token (`provision.firmware_dir`, default `tftp.root`) |
//! | GET, HEAD, Range | `/repo/{path}` | static files of `provision.repo_dir` |
//! | GET, HEAD, Range | `/blobs/sha256/{hex}` | cluster mode: an image blob this server has, for other servers, signed with the cluster keyring (header `x-xboot-peer`, [`crate::cluster::peer`]; else 403) |
//!
//! A provision template value naming a template (`rocky.tmpl`, `kickstart`) is read
//! from `provision.templates_dir` or the built-ins ([`crate::template::files`]).
//!
//! A token ([`token`]) names a host and the MAC it boots from; it must verify, be
//! unexpired, and match the current inventory, else 403 with a one-line reason. Boot
//! files also need `host.provision`; the postscript, provision templates and `complete`
//! do not. A missing image file is a 404 whose body and log line name the host, the
//! image and the path. Each boot file served with GET records a boot event
//! (`ipxe_script`, `kernel`, `initrd`, `live_image`, `postscript`, `complete`).
//!
//! URLs inside rendered text use `provision.advertise_url`, else the `Host` the client
//! used to reach us, with the scheme of the listener it reached (`provision.listen`
//! plain, the HTTPS listener with `provision.cert`/`key`: both serve these routes). [`urls::UrlSigner`] builds the URLs handed out before a request
//! exists (DHCP answers, `xboot host show --boot`).
use std::future::Future;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::state::Shared;

pub mod boot;
pub mod complete;
pub mod file_body;
mod handlers;
pub mod listen;
pub mod sendfile;
pub mod token;
pub mod urls;

pub use boot::{render_ipxe_script, BootError, BootView};
pub use token::{Claims, TokenError, TokenKey};
pub use urls::{base_url, Endpoints, UrlSigner};

/// Called with the host name when a node POSTs `complete`, and awaited: the answer is
/// sent once the hook is done (the inventory side clears `provision` and commits it), so
/// an `ok` means the next boot is from disk. An `Err` is answered 500 and the node may
/// report again.
pub type CompleteHook =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The locks that keep one host's `complete`s from interleaving: its check of the boot's
/// state and its record must be one step, or a replay could pass the check twice. Striped
/// by host name, so that different hosts' completes go on side by side: each waits on its
/// commit (an etcd round trip and the follower's apply in cluster mode, tens of ms), and
/// one lock for all once put a thousand nodes' completes in one queue, longer than the
/// nodes wait for an answer. A hash collision only makes two hosts take turns.
pub struct CompleteLocks([tokio::sync::Mutex<()>; CompleteLocks::STRIPES]);

impl CompleteLocks {
    const STRIPES: usize = 256;

    /// The lock of `host`'s completes.
    pub fn of(&self, host: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        host.hash(&mut h);
        &self.0[h.finish() as usize % Self::STRIPES]
    }
}

impl Default for CompleteLocks {
    fn default() -> Self {
        CompleteLocks(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

/// The HTTP boot service: state shared by the handlers.
#[derive(Clone)]
pub struct HttpService {
    shared: Arc<Shared>,
    key: TokenKey,
    on_complete: Option<CompleteHook>,
    /// Held while one host's `complete` is checked against its boot events and recorded.
    complete_locks: Arc<CompleteLocks>,
    /// Serving the HTTPS listener: URLs rendered from a request's `Host` are https.
    tls: bool,
    /// Cluster mode: image files with a recorded blob are served from here.
    blobs: Option<Arc<crate::cluster::blobs::Blobs>>,
}

impl HttpService {
    pub fn new(shared: Arc<Shared>, key: TokenKey) -> HttpService {
        HttpService {
            shared,
            key,
            on_complete: None,
            complete_locks: Arc::default(),
            tls: false,
            blobs: None,
        }
    }

    /// Serves image files by their blobs (cluster mode), and the peer route.
    pub fn with_blobs(mut self, blobs: Arc<crate::cluster::blobs::Blobs>) -> HttpService {
        self.blobs = Some(blobs);
        self
    }

    /// The same service for the HTTPS listener (its router renders https URLs).
    pub fn over_tls(mut self) -> HttpService {
        self.tls = true;
        self
    }

    /// Runs `hook` on every successful `POST /boot/{token}/complete`.
    pub fn on_complete(mut self, hook: CompleteHook) -> HttpService {
        self.on_complete = Some(hook);
        self
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(handlers::index))
            .route(
                "/boot/{token}/{file}",
                get(handlers::boot_get).post(handlers::boot_post),
            )
            .route("/boot/{token}/file/{file}", get(handlers::grendel_file))
            .route("/boot/{token}/provision/{name}", get(handlers::provision))
            .route("/boot/{token}/kickstart", get(handlers::kickstart))
            .route("/boot/{token}/cloud-init/{file}", get(handlers::cloud_init))
            .route("/firmware/{*file}", get(handlers::firmware))
            .route("/repo/{*path}", get(handlers::repo))
            .route("/blobs/sha256/{hex}", get(handlers::blob))
            .with_state(self)
    }

    /// Serves on `listener` within the `provision` connection limits until `shutdown`
    /// completes, then lets requests in flight finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let limits = listen::Limits::provision(&self.shared.config.provision, raise_nofile_limit());
        self.serve_router(self.clone().router(), listener, limits, shutdown)
            .await
    }

    /// Serves `router` (this service's routes and maybe more, like `/metrics`) on
    /// `listener` within `limits`.
    pub async fn serve_router(
        &self,
        router: Router,
        listener: tokio::net::TcpListener,
        limits: listen::Limits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(
            "HTTP serving on {:?} (at most {} connections, {} per address)",
            listener.local_addr().ok(),
            limits.max_connections,
            limits.per_source
        );
        listen::serve(listener, router, limits, shutdown).await
    }

    /// Serves `router` over TLS with the certificate `cert` (reloadable: [`crate::tls`]).
    pub async fn serve_router_tls(
        &self,
        router: Router,
        listener: tokio::net::TcpListener,
        limits: listen::Limits,
        cert: Arc<crate::tls::Certificate>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(
            "HTTPS serving on {:?} (at most {} connections, {} per address; {})",
            listener.local_addr().ok(),
            limits.max_connections,
            limits.per_source,
            cert.describe()
        );
        listen::serve_tls(listener, router, limits, cert.acceptor(), shutdown).await
    }
}

/// The router (for tests and for embedding).
pub fn router(shared: Arc<Shared>, key: TokenKey) -> Router {
    HttpService::new(shared, key).router()
}

/// Serves the boot service on `listener` until `shutdown` completes.
pub async fn run(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    key: TokenKey,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    HttpService::new(shared, key)
        .serve(listener, shutdown)
        .await
}

/// Raises the soft open-files limit to the hard limit: each download holds a socket and
/// a file, and the usual soft limit of 1024 would cap a boot storm at ~500 nodes.
/// Returns the soft limit in force afterwards (the connection caps are derived from it).
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!("open files limit raised from {old} to {}", lim.rlim_max);
            } else {
                lim.rlim_cur = old;
            }
        }
    }
    lim.rlim_cur
}
