//! Image blobs in cluster mode: etcd holds each image file's sha256 and size
//! ([`BlobRef`], in the image's `blobs`), never its bytes; every server serves the files
//! its hosts boot from its own disk.
//!
//! - Publishing: a change that puts an image, committed through this server
//!   ([`Blobs::annotate`]), records the sha256 and size of each of its files found here
//!   inside the image roots, with this server as their publisher; a file not here keeps
//!   the record it had. Hashes are remembered per file identity (device, inode, size,
//!   mtime), so an unchanged file is read once.
//! - Holders: a server that has a blob (its publisher, or one that fetched it) writes
//!   `blobs/sha256/{hex}/{server_id}`; others fetch from the holders whose record in
//!   `servers/` is alive (its `http_url`, [`ClusterConfig::http_url`]), peers before the
//!   publisher, at `GET {http_url}/blobs/sha256/{hex}`, each request signed with the
//!   cluster's keyring ([`peer`]; the route answers 403 to a request without a valid
//!   signature: nodes get image files through their boot token URLs only).
//! - Prefetch ([`Blobs::run`]): on every inventory swap (and every 30 s, to retry), each
//!   blob of an image booted by a host of this server's segments (an address in one of
//!   their subnets; every host when none is named) that is not here yet is obtained:
//!   a file of this server's image roots at the recorded path that hashes to it (shared
//!   storage, the publisher itself), else a download (at most `cluster.blob_fetches` at once) into
//!   `blob_dir/sha256/{hex}.part`, resumed with a Range request where a previous one
//!   stopped, checked against the sha256 and size, synced and renamed to
//!   `blob_dir/sha256/{hex}`. A mismatch is logged and the bytes discarded: nothing is
//!   served unless it hashed to the record.
//! - On demand ([`Blobs::ensure`]): a boot file whose blob is not here yet is obtained
//!   the same way while the node waits; concurrent requests for one blob wait on the
//!   same fetch (one flight per blob), then the file is served by the usual file path.
//!   The peer route ([`Blobs::local`]) never fetches: two servers without a blob cannot
//!   ask each other for it in a loop.
//!
//! - Cache GC ([`gc`]): blobs no image references any more are removed after
//!   `cluster.blob_gc_grace_secs`, never one in use ([`Blobs::hold`]).
//!
//! One process per blob directory: the flights that keep two downloads of a blob from
//! writing one `.part` file are this process's.
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared as SharedFuture};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::peer;
use crate::config::cluster::ClusterConfig;
use crate::http::token::{now_secs, TokenKey};
use crate::inventory::model::parse_cidr;
use crate::inventory::{BlobRef, Change, Inventory};
use crate::state::Shared;

mod gc;
pub use gc::{collectable, CacheFile, Collected, Hold};

/// How long a peer may keep a download waiting for its next bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Prefetch runs again this often (failed blobs are retried).
const RETRY: Duration = Duration::from_secs(30);

/// The sha256 (lower-case hex) and length of a file, read whole.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(h.finalize()), len))
}

/// What identifies a file's content without reading it (a rewrite changes one of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        }
    }
}

/// Hashes remembered per file, so that an unchanged file is read once.
#[derive(Default)]
struct HashCache(Mutex<HashMap<PathBuf, (Stamp, String, u64)>>);

impl HashCache {
    /// The sha256 and size of `path` (blocking: reads the file unless its stamp is known).
    fn get(&self, path: &Path) -> std::io::Result<(String, u64)> {
        let stamp = Stamp::of(&std::fs::metadata(path)?);
        if let Some((s, hex, size)) = self.0.lock().unwrap().get(path) {
            if *s == stamp {
                return Ok((hex.clone(), *size));
            }
        }
        let (hex, size) = hash_file(path)?;
        // Changed while read: not remembered (the next read hashes it again).
        if Stamp::of(&std::fs::metadata(path)?) == stamp {
            self.0
                .lock()
                .unwrap()
                .insert(path.to_path_buf(), (stamp, hex.clone(), size));
        }
        Ok((hex, size))
    }
}

/// One flight per key: concurrent callers of [`Flights::run`] with one key share one
/// run of the work, which goes on (a task of its own) even if every caller gives up.
pub struct Flights<T: Clone> {
    running: Arc<Mutex<HashMap<String, SharedFuture<BoxFuture<'static, T>>>>>,
}

impl<T: Clone> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            running: Arc::default(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// The result of the flight of `key`: the one running, else `work()` started now.
    /// `lost` is the result when the work's task fails (it panicked).
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F, lost: T) -> T
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let flight = {
            let mut running = self.running.lock().unwrap();
            match running.get(key) {
                Some(f) => f.clone(),
                None => {
                    let fut = work();
                    let (map, k) = (self.running.clone(), key.to_string());
                    // The entry is inserted under the lock the task needs to remove it.
                    let task = tokio::spawn(async move {
                        let r = fut.await;
                        map.lock().unwrap().remove(&k);
                        r
                    });
                    let f = async move { task.await.unwrap_or(lost) }.boxed().shared();
                    running.insert(key.to_string(), f.clone());
                    f
                }
            }
        };
        flight.await
    }
}

/// Why one download from one server failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The bytes do not hash to the record: discarded (the next download starts over).
    #[error("sha256 mismatch: got {got} ({size} bytes): discarded")]
    Mismatch { got: String, size: u64 },
    /// The server answered something else than the blob (kept: a resume may finish it).
    #[error("{0}")]
    Peer(String),
    #[error("{0}")]
    Io(String),
}

/// Downloads the blob `hex` of `size` bytes from `url` into `dir/{hex}`: resumed from
/// `dir/{hex}.part` with a Range request when that holds a beginning of it, checked,
/// synced and renamed. `peer` is the request's [`peer::HEADER`] (the signature the
/// serving server checks). Returns the bytes received.
pub async fn fetch_into(
    http: &reqwest::Client,
    dir: &Path,
    url: &str,
    hex: &str,
    size: u64,
    peer: Option<&str>,
) -> Result<u64, FetchError> {
    let io = |what: &str, e: std::io::Error| FetchError::Io(format!("{what}: {e}"));
    let part = dir.join(format!("{hex}.part"));
    let mut have = tokio::fs::metadata(&part).await.map_or(0, |m| m.len());
    if have > size {
        have = 0;
    }
    let mut req = http.get(url);
    if let Some(sig) = peer {
        req = req.header(peer::HEADER, sig);
    }
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| FetchError::Peer(format!("{url}: {e}")))?;
    let status = resp.status();
    let resumed = match status {
        reqwest::StatusCode::PARTIAL_CONTENT if have > 0 => {
            let range = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {have}-")) {
                return Err(FetchError::Peer(format!(
                    "{url}: answered the range {range:?} to bytes={have}-"
                )));
            }
            true
        }
        reqwest::StatusCode::RANGE_NOT_SATISFIABLE if have == size => true,
        s if s == reqwest::StatusCode::OK => false,
        s => {
            let body = resp.text().await.unwrap_or_default();
            return Err(FetchError::Peer(format!(
                "{url}: {s}: {}",
                body.lines().next().unwrap_or("")
            )));
        }
    };
    // The hash of what is kept, then of what arrives.
    let (mut hasher, mut len) = if resumed {
        let p = part.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<(Sha256, u64)> {
            use std::io::Read;
            let mut h = Sha256::new();
            let mut f = std::fs::File::open(&p)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut left = have;
            while left > 0 {
                let n = f.read(&mut buf[..left.min(1 << 20) as usize])?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                left -= n as u64;
            }
            Ok((h, have))
        })
        .await
        .map_err(|e| FetchError::Io(e.to_string()))?
        .map_err(|e| io("reading the partial file", e))?
    } else {
        (Sha256::new(), 0)
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(!resumed)
        .open(&part)
        .await
        .map_err(|e| io(&part.display().to_string(), e))?;
    if resumed {
        file.set_len(have)
            .await
            .map_err(|e| io("truncating the partial file", e))?;
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::Start(have))
            .await
            .map_err(|e| io("seeking", e))?;
    }
    let mut received = 0u64;
    loop {
        let chunk = tokio::time::timeout(READ_TIMEOUT, resp.chunk())
            .await
            .map_err(|_| FetchError::Peer(format!("{url}: no bytes for {READ_TIMEOUT:?}")))?
            .map_err(|e| FetchError::Peer(format!("{url}: {e}")))?;
        let Some(chunk) = chunk else { break };
        if len + chunk.len() as u64 > size {
            drop(file);
            let _ = tokio::fs::remove_file(&part).await;
            return Err(FetchError::Peer(format!(
                "{url}: longer than the recorded {size} bytes: discarded"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| io(&part.display().to_string(), e))?;
        len += chunk.len() as u64;
        received += chunk.len() as u64;
    }
    file.flush().await.map_err(|e| io("flush", e))?;
    if len < size {
        // Kept: the next download resumes from here.
        return Err(FetchError::Peer(format!(
            "{url}: ended at byte {len} of {size}"
        )));
    }
    let got = hex::encode(hasher.finalize());
    if got != hex {
        drop(file);
        let _ = tokio::fs::remove_file(&part).await;
        return Err(FetchError::Mismatch { got, size: len });
    }
    file.sync_all().await.map_err(|e| io("fsync", e))?;
    drop(file);
    tokio::fs::rename(&part, dir.join(hex))
        .await
        .map_err(|e| io("rename", e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(received)
}

/// A server's blobs: its cache directory, what it hashed, its downloads.
pub struct Blobs {
    id: String,
    prefix: String,
    cfg: ClusterConfig,
    /// `blob_dir/sha256`.
    dir: PathBuf,
    url: Option<String>,
    shared: Arc<Shared>,
    /// The cluster's keyring: signs this server's requests of its peers and checks
    /// theirs ([`peer`]).
    key: TokenKey,
    client: tokio::sync::Mutex<Option<etcd_client::Client>>,
    http: reqwest::Client,
    /// Bounds the downloads at once (`cluster.blob_fetches`).
    permits: tokio::sync::Semaphore,
    flights: Flights<Result<PathBuf, String>>,
    hashes: Arc<HashCache>,
    /// Blobs whose holder key this server wrote since it started.
    announced: Mutex<HashSet<String>>,
    /// Downloads started and bytes received (the server record and the tests).
    downloads: AtomicU64,
    received: AtomicU64,
    /// Blobs in use, with how many users: a download being served (held by its body),
    /// a fetch running. The cache GC never removes one of them.
    in_use: Arc<Mutex<HashMap<String, usize>>>,
    /// Blobs of the cache no image references, with when that was first seen (the
    /// cache GC removes them once `cluster.blob_gc_grace_secs` has passed).
    unreferenced: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs").field("dir", &self.dir).finish()
    }
}

/// The URL other servers fetch from: `cluster.http_url`, else `provision.advertise_url`,
/// else `http://IP:PORT` of `provision.listen` when it names an address.
fn own_url(cfg: &ClusterConfig, shared: &Shared) -> Option<String> {
    let p = &shared.config.provision;
    cfg.http_url
        .clone()
        .or_else(|| p.advertise_url.clone())
        .map(|u| u.trim_end_matches('/').to_string())
        .or_else(|| {
            let a: std::net::SocketAddr = p.listen.parse().ok()?;
            (!a.ip().is_unspecified()).then(|| format!("http://{a}"))
        })
}

impl Blobs {
    /// The blobs of server `id`; creates the cache directory.
    pub fn new(
        cfg: &ClusterConfig,
        id: &str,
        shared: Arc<Shared>,
        key: TokenKey,
    ) -> anyhow::Result<Arc<Blobs>> {
        use anyhow::Context;
        let root = cfg
            .blob_dir
            .clone()
            .unwrap_or_else(|| shared.config.state_dir().join("blobs"));
        let dir = root.join("sha256");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the blob cache {}", dir.display()))?;
        let url = own_url(cfg, &shared);
        if url.is_none() {
            tracing::warn!(
                "cluster: no URL for this server's blobs (set cluster.http_url or \
                 provision.advertise_url): other servers cannot fetch from it"
            );
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("cannot build the blob HTTP client")?;
        Ok(Arc::new(Blobs {
            id: id.to_string(),
            prefix: cfg.prefix.clone(),
            permits: tokio::sync::Semaphore::new(cfg.blob_fetches.max(1)),
            cfg: cfg.clone(),
            dir,
            url,
            shared,
            key,
            client: tokio::sync::Mutex::new(None),
            http,
            flights: Flights::default(),
            hashes: Arc::default(),
            announced: Mutex::default(),
            downloads: AtomicU64::new(0),
            received: AtomicU64::new(0),
            in_use: Arc::default(),
            unreferenced: Mutex::default(),
        }))
    }

    /// The base URL published in this server's record.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// What the server record says of the blobs.
    pub fn summary(&self) -> serde_json::Value {
        let cached = std::fs::read_dir(&self.dir).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| BlobRef::valid_digest(&e.file_name().to_string_lossy()))
                .count()
        });
        serde_json::json!({
            "cached": cached,
            "downloads": self.downloads.load(Ordering::Relaxed),
            "received_bytes": self.received.load(Ordering::Relaxed),
        })
    }

    fn holder_prefix(&self, hex: &str) -> String {
        format!("{}blobs/sha256/{hex}/", self.prefix)
    }

    async fn etcd(&self) -> Result<etcd_client::Client, String> {
        let mut c = self.client.lock().await;
        if let Some(c) = c.as_ref() {
            return Ok(c.clone());
        }
        let new = super::connect(&self.cfg).await?;
        *c = Some(new.clone());
        Ok(new)
    }

    /// Records the sha256 and size of the files of every image `change` puts that are
    /// here inside the image roots, this server as their publisher (hashing them on the
    /// blocking pool); a file not here keeps the record the change or `base` has.
    pub async fn annotate(self: &Arc<Self>, change: &mut Change, base: &Inventory) {
        let roots = self.shared.config.provision.image_roots();
        for im in &mut change.put_images {
            let files: Vec<String> = im.files().map(String::from).collect();
            let (hashes, me) = (self.hashes.clone(), self.id.clone());
            let r = roots.clone();
            let found = tokio::task::spawn_blocking(move || {
                files
                    .into_iter()
                    .map(|path| {
                        let local = r
                            .resolve(Path::new(&path))
                            .ok()
                            .and_then(|canon| hashes.get(&canon).ok());
                        (path, local)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let before = base.image(&im.name);
            let mut blobs = Vec::new();
            for (path, local) in found {
                let kept = || {
                    im.blob(&path)
                        .or_else(|| before.and_then(|b| b.blob(&path)))
                        .cloned()
                };
                let b = match local {
                    Some((sha256, size)) => Some(BlobRef {
                        path: path.clone(),
                        sha256,
                        size,
                        server: me.clone(),
                    }),
                    None => kept(),
                };
                if let Some(b) = b {
                    if !blobs.iter().any(|x: &BlobRef| x.path == b.path) {
                        blobs.push(b);
                    }
                }
            }
            for b in blobs.iter().filter(|b| b.server == self.id) {
                let (me, hex) = (self.clone(), b.sha256.clone());
                tokio::spawn(async move { me.announce(&hex).await });
            }
            im.blobs = blobs;
        }
    }

    /// Writes this server's holder key of `hex` (once per start; best effort: a holder
    /// nobody knows of is only a source fewer).
    async fn announce(&self, hex: &str) {
        if self.announced.lock().unwrap().contains(hex) {
            return;
        }
        let Ok(mut c) = self.etcd().await else { return };
        let key = format!("{}{}", self.holder_prefix(hex), self.id);
        match c.put(key, "{}", None).await {
            Ok(_) => {
                self.announced.lock().unwrap().insert(hex.to_string());
            }
            Err(e) => tracing::debug!("blobs: cannot record {hex} as held here: {e}"),
        }
    }

    fn cached(&self, hex: &str) -> Option<PathBuf> {
        let p = self.dir.join(hex);
        p.is_file().then_some(p)
    }

    /// The file of blob `b` to serve for a boot: here already, or obtained now (one
    /// flight per blob, shared by concurrent requests).
    pub async fn ensure(self: &Arc<Self>, b: &BlobRef) -> Result<PathBuf, String> {
        if !BlobRef::valid_digest(&b.sha256) {
            return Err(format!("blob {:?} is not a sha256", b.sha256));
        }
        if let Some(p) = self.cached(&b.sha256) {
            return Ok(p);
        }
        self.flight(&b.sha256, true).await
    }

    /// The server that signed a request of the peer route (`header`: its
    /// [`peer::HEADER`]), or why it is refused.
    pub fn check_peer(
        &self,
        header: Option<&str>,
        method: &str,
        hex: &str,
    ) -> Result<String, peer::PeerError> {
        peer::verify(
            &self.key.ring(),
            header,
            method,
            hex,
            now_secs(),
            self.key.ttl(),
        )
    }

    /// The file of blob `hex` if this server has it (its cache, or a file of its image
    /// roots that hashes to it); never downloads. For the peer route.
    pub async fn local(self: &Arc<Self>, hex: &str) -> Result<PathBuf, String> {
        if !BlobRef::valid_digest(hex) {
            return Err("not a sha256".into());
        }
        if let Some(p) = self.cached(hex) {
            return Ok(p);
        }
        self.flight(hex, false).await
    }

    async fn flight(self: &Arc<Self>, hex: &str, remote: bool) -> Result<PathBuf, String> {
        let key = format!("{hex}{}", if remote { "+remote" } else { "" });
        let (me, h) = (self.clone(), hex.to_string());
        self.flights
            .run(
                &key,
                move || async move { me.obtain(&h, remote).await },
                Err("the blob's task failed".into()),
            )
            .await
    }

    /// The blob records of `hex` in the running inventory.
    fn records(&self, hex: &str) -> Vec<BlobRef> {
        let inv = self.shared.inventory();
        inv.images()
            .iter()
            .flat_map(|i| i.blobs.iter())
            .filter(|b| b.sha256 == hex)
            .cloned()
            .collect()
    }

    async fn obtain(self: &Arc<Self>, hex: &str, remote: bool) -> Result<PathBuf, String> {
        // The `.part` file and the rename are the fetch's until it ends.
        let _hold = self.hold(hex);
        if let Some(p) = self.cached(hex) {
            return Ok(p);
        }
        let records = self.records(hex);
        if records.is_empty() {
            return Err("no image of the inventory has it".into());
        }
        if let Some(p) = self.verified_local(hex, &records).await {
            self.announce(hex).await;
            return Ok(p);
        }
        if !remote {
            return Err("not on this server".into());
        }
        let size = records[0].size;
        let mut publishers: Vec<String> = records.iter().map(|r| r.server.clone()).collect();
        publishers.sort();
        publishers.dedup();
        let sources = self.sources(hex, &publishers).await?;
        if sources.is_empty() {
            return Err(format!(
                "no live server holds it (published by {})",
                publishers.join(", ")
            ));
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "shutting down".to_string())?;
        let mut failed = Vec::new();
        for (id, base) in sources {
            let url = format!("{base}/blobs/sha256/{hex}");
            self.downloads.fetch_add(1, Ordering::Relaxed);
            let t0 = std::time::Instant::now();
            // Signed per attempt: a signature lasts `peer::LIFETIME_SECS`.
            let sig = peer::sign(&self.key.ring(), "GET", hex, &self.id, now_secs());
            match fetch_into(&self.http, &self.dir, &url, hex, size, Some(&sig)).await {
                Ok(n) => {
                    self.received.fetch_add(n, Ordering::Relaxed);
                    tracing::info!(
                        "blobs: {hex} ({} bytes, {n} received) fetched from {id} in {:.1?}",
                        size,
                        t0.elapsed()
                    );
                    self.announce(hex).await;
                    return Ok(self.dir.join(hex));
                }
                Err(e) => {
                    match &e {
                        FetchError::Mismatch { .. } => {
                            tracing::error!("blobs: {hex} from {id} ({url}): {e}")
                        }
                        _ => tracing::warn!("blobs: {hex} from {id}: {e}"),
                    }
                    failed.push(format!("{id}: {e}"));
                }
            }
        }
        Err(failed.join("; "))
    }

    /// A file of the image roots at a recorded path of `hex` that hashes to it.
    async fn verified_local(&self, hex: &str, records: &[BlobRef]) -> Option<PathBuf> {
        let roots = self.shared.config.provision.image_roots();
        let paths: Vec<String> = records.iter().map(|r| r.path.clone()).collect();
        let (hashes, hex) = (self.hashes.clone(), hex.to_string());
        tokio::task::spawn_blocking(move || {
            paths.iter().find_map(|p| {
                let canon = roots.resolve(Path::new(p)).ok()?;
                match hashes.get(&canon) {
                    Ok((h, _)) if h == hex => Some(canon),
                    Ok((h, _)) => {
                        tracing::debug!("blobs: {p} here is {h}, not {hex}");
                        None
                    }
                    Err(_) => None,
                }
            })
        })
        .await
        .ok()
        .flatten()
    }

    /// (server id, base URL) of the live servers that hold `hex`, other than this one:
    /// the holders in random order, then the publishers (whose bytes are spared).
    async fn sources(
        &self,
        hex: &str,
        publishers: &[String],
    ) -> Result<Vec<(String, String)>, String> {
        let mut c = self.etcd().await?;
        let holders = c
            .get(
                self.holder_prefix(hex),
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await
            .map_err(|e| format!("etcd: {e}"))?;
        let hp = self.holder_prefix(hex);
        let mut ids: Vec<String> = holders
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&hp).map(String::from))
            .filter(|id| !publishers.contains(id))
            .collect();
        {
            use rand::seq::SliceRandom;
            ids.shuffle(&mut rand::thread_rng());
        }
        ids.extend(publishers.iter().cloned());
        let servers = c
            .get(
                format!("{}servers/", self.prefix),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| format!("etcd: {e}"))?;
        let urls: HashMap<String, String> = servers
            .kvs()
            .iter()
            .filter_map(|kv| {
                let v: serde_json::Value = serde_json::from_slice(kv.value()).ok()?;
                Some((
                    v["id"].as_str()?.to_string(),
                    v["http_url"].as_str()?.trim_end_matches('/').to_string(),
                ))
            })
            .collect();
        Ok(ids
            .into_iter()
            .filter(|id| *id != self.id)
            .filter_map(|id| urls.get(&id).cloned().map(|u| (id, u)))
            .collect())
    }

    /// The blobs of the images booted by the hosts with an address in `subnets` (this
    /// server's segments), or by every host when no segment names a subnet; and the
    /// names of those images.
    fn needed(inv: &Inventory, subnets: &[ipnet::Ipv4Net]) -> (Vec<BlobRef>, HashSet<String>) {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let ours = |h: &crate::inventory::Host| {
            subnets.is_empty()
                || h.interfaces.iter().any(|n| {
                    let ip = n.ip.as_deref().and_then(|ip| parse_cidr(ip).ok());
                    ip.is_some_and(|ip| subnets.iter().any(|s| s.contains(&ip.addr())))
                })
        };
        for h in inv.hosts().iter().filter(|h| ours(h)) {
            let Some(im) = inv.boot_image_of(h) else {
                continue;
            };
            if !seen.insert(im.name.clone()) {
                continue;
            }
            out.extend(im.blobs.iter().cloned());
        }
        let mut hexes = HashSet::new();
        out.retain(|b| BlobRef::valid_digest(&b.sha256) && hexes.insert(b.sha256.clone()));
        (out, seen)
    }

    /// Whether a swap that changed the hosts `changed` (None: anything, images
    /// included) can need a blob the last pass did not ask for: only if one of them
    /// boots an image not among `asked`. Walking every host at every swap cost a
    /// storm's `complete`s the inventory's size each.
    fn needs_pass(inv: &Inventory, changed: Option<&[String]>, asked: &HashSet<String>) -> bool {
        let Some(names) = changed else { return true };
        names
            .iter()
            .filter_map(|n| inv.host(n))
            .filter_map(|h| inv.boot_image_of(h))
            .any(|im| !asked.contains(&im.name))
    }

    /// Prefetches until `stop`: at start, on every inventory swap, and every 30 s.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut swaps = self.shared.subscribe();
        let subnets: Vec<ipnet::Ipv4Net> = self
            .cfg
            .segments
            .iter()
            .flat_map(|s| s.subnets.iter().filter_map(|n| n.parse().ok()))
            .collect();
        // The images the last pass asked blobs for, at which inventory generation; a
        // whole pass at start and every `RETRY` (failed prefetches are tried again).
        let mut asked: HashSet<String> = HashSet::new();
        let mut passed: Option<u64> = None;
        loop {
            let (inv, generation) = self.shared.inventory_at();
            let changed = passed.and_then(|g| self.shared.changed_since(g, generation));
            passed = Some(generation);
            let blobs = match Self::needs_pass(&inv, changed.as_deref(), &asked) {
                true => {
                    let (blobs, images) = Self::needed(&inv, &subnets);
                    asked = images;
                    blobs
                }
                false => vec![],
            };
            for b in blobs {
                if self.cached(&b.sha256).is_some() {
                    let (me, hex) = (self.clone(), b.sha256.clone());
                    tokio::spawn(async move { me.announce(&hex).await });
                    continue;
                }
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.ensure(&b).await {
                        tracing::warn!(
                            "blobs: cannot prefetch {} ({}, {} bytes): {e}",
                            b.sha256,
                            b.path,
                            b.size
                        );
                    }
                });
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = swaps.changed() => {}
                _ = tokio::time::sleep(RETRY) => passed = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// tower-http's ServeFile (what serves xboot's own files: Range, 206, 416) on
    /// loopback, serving `dir/{name}`; records the Range header of every request.
    async fn origin(dir: PathBuf) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
        use axum::extract::{Path as P, Request};
        use tower::ServiceExt;
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let s = seen.clone();
        let app = axum::Router::new().route(
            "/blobs/sha256/{hex}",
            axum::routing::get(move |P(hex): P<String>, req: Request| {
                let (dir, s) = (dir.clone(), s.clone());
                async move {
                    let range = req
                        .headers()
                        .get("range")
                        .map(|v| v.to_str().unwrap().to_string());
                    s.lock().unwrap().push(range);
                    tower_http::services::ServeFile::new(dir.join(hex))
                        .oneshot(req)
                        .await
                        .unwrap()
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        (format!("http://{addr}"), seen)
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    #[tokio::test]
    async fn a_download_resumes_by_range_and_a_bad_hash_is_discarded() {
        let up = tempfile::tempdir().unwrap();
        let down = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let hex = sha(&bytes);
        std::fs::write(up.path().join(&hex), &bytes).unwrap();
        let (base, seen) = origin(up.path().to_path_buf()).await;
        let http = reqwest::Client::new();
        let url = format!("{base}/blobs/sha256/{hex}");

        // A third was fetched before: only the rest is asked for.
        std::fs::write(down.path().join(format!("{hex}.part")), &bytes[..100_000]).unwrap();
        let n = fetch_into(&http, down.path(), &url, &hex, bytes.len() as u64, None)
            .await
            .unwrap();
        assert_eq!(n, 200_000);
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [Some("bytes=100000-".into())]
        );
        assert_eq!(std::fs::read(down.path().join(&hex)).unwrap(), bytes);
        assert!(!down.path().join(format!("{hex}.part")).exists());

        // The publisher's file changed under its record: refused, nothing kept.
        let mut bad = bytes.clone();
        bad[5] ^= 1;
        let other = sha(b"other");
        std::fs::write(up.path().join(&other), &bad).unwrap();
        let url = format!("{base}/blobs/sha256/{other}");
        let e = fetch_into(&http, down.path(), &url, &other, bad.len() as u64, None)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("sha256 mismatch"), "{e}");
        assert!(!down.path().join(&other).exists());
        assert!(!down.path().join(format!("{other}.part")).exists());

        // A partial file that is not a beginning of the blob fails the hash and goes;
        // a blob the peer lacks is an error naming the status, and leaves nothing.
        std::fs::write(down.path().join(format!("{hex}.part")), &bad[..10]).unwrap();
        std::fs::remove_file(down.path().join(&hex)).unwrap();
        let url = format!("{base}/blobs/sha256/{hex}");
        let e = fetch_into(&http, down.path(), &url, &hex, bytes.len() as u64, None)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Mismatch { .. }), "{e}");
        let missing = sha(b"missing");
        let url = format!("{base}/blobs/sha256/{missing}");
        let e = fetch_into(&http, down.path(), &url, &missing, 10, None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");
        assert!(!down.path().join(&missing).exists());
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_flight() {
        let flights: Arc<Flights<u32>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut waiters = Vec::new();
        for _ in 0..10 {
            let (f, runs, rx) = (flights.clone(), runs.clone(), rx.clone());
            waiters.push(tokio::spawn(async move {
                f.run(
                    "k",
                    move || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let mut rx = rx;
                        let _ = rx.wait_for(|go| *go).await;
                        7
                    },
                    0,
                )
                .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_replace(true);
        for w in waiters {
            assert_eq!(w.await.unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once done, the next call runs the work again.
        let again = flights.run("k", || async { 8 }, 0).await;
        assert_eq!(again, 8);
    }

    #[test]
    fn the_blobs_needed_are_those_of_the_segments_hosts_images() {
        use crate::inventory::{Host, Image};
        let blob = |n: u8| BlobRef {
            path: format!("/img/{n}"),
            sha256: format!("{n:02x}").repeat(32),
            size: 1,
            server: "s1".into(),
        };
        let image = |name: &str, n: u8| Image {
            name: name.into(),
            kernel: format!("/img/{n}"),
            blobs: vec![blob(n)],
            ..Default::default()
        };
        let host = |name: &str, mac: &str, ip: &str, image: &str| Host {
            boot_image: image.into(),
            ..Host::with_interface(name, mac.parse().unwrap(), Some(ip))
        };
        let inv = Inventory::from_parts_unchecked(
            vec![
                host("a1", "02:00:00:00:00:01", "10.1.0.5/24", "ia"),
                host("a2", "02:00:00:00:00:02", "10.1.0.6/24", "ia"),
                host("b1", "02:00:00:00:00:03", "10.2.0.5/24", "ib"),
            ],
            vec![image("ia", 1), image("ib", 2), image("unused", 3)],
        );
        let hexes = |subnets: &[&str]| -> Vec<String> {
            let nets: Vec<ipnet::Ipv4Net> = subnets.iter().map(|s| s.parse().unwrap()).collect();
            let mut v: Vec<String> = Blobs::needed(&inv, &nets)
                .0
                .into_iter()
                .map(|b| b.sha256[..2].to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(hexes(&["10.1.0.0/16"]), ["01"]);
        assert_eq!(hexes(&["10.2.0.0/16"]), ["02"]);
        assert_eq!(hexes(&[]), ["01", "02"]);
        assert!(hexes(&["10.9.0.0/16"]).is_empty());
        // After a pass that asked for ia's blobs: a change of hosts booting ia needs no
        // new pass; one booting ib does, as does any change of images (None).
        let asked = Blobs::needed(&inv, &["10.1.0.0/16".parse().unwrap()]).1;
        assert_eq!(asked, HashSet::from(["ia".to_string()]));
        let pass = |changed: Option<&[&str]>| {
            let changed: Option<Vec<String>> =
                changed.map(|c| c.iter().map(|s| s.to_string()).collect());
            Blobs::needs_pass(&inv, changed.as_deref(), &asked)
        };
        assert!(!pass(Some(&["a1", "a2"])));
        assert!(!pass(Some(&["gone"])), "a deleted host needs nothing new");
        assert!(pass(Some(&["a1", "b1"])));
        assert!(pass(None));
    }

    #[test]
    fn a_rewritten_file_is_hashed_again() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let cache = HashCache::default();
        assert_eq!(cache.get(&p).unwrap(), (sha(b"one"), 3));
        std::fs::write(&p, b"two!").unwrap();
        assert_eq!(cache.get(&p).unwrap(), (sha(b"two!"), 4));
    }
}
