//! Cluster mode (`[cluster]`): many servers share one inventory kept in etcd, each
//! serving its own segments from it.
//!
//! - [`plan`] (pure): the key layout under `cluster.prefix` and the transactions that
//!   commit a change (compares on the entries' revisions, create-only MAC/IP index keys,
//!   `meta/serial` for changes checked against the whole inventory; field-only changes
//!   such as `complete` compare their host alone).
//! - [`mirror`] (pure): the hosts and images as etcd holds them at a revision, and the
//!   part of them this server serves ([`mirror::Scope`]: the hosts with an address in
//!   its segments' subnets, `cluster.segment`; every host without segments). The API
//!   sees and changes the whole inventory ([`Backend::base`]); DHCP, TFTP, the boot
//!   routes and the XDP maps see the served part only ([`Shared::inventory`]), swapped
//!   with the change of its own hosts, so that the maps are updated for those only.
//! - this module, the I/O edge: the follower lists the prefix at a revision (paged),
//!   watches from the next one, batches what arrives (until the stream is idle 5 ms, at
//!   most 50 ms), and hands the served part of each new inventory that validates to
//!   [`Shared::apply_inventory`], the one entry point of every swap; the local redb
//!   store is written as the snapshot of the whole inventory applied, with its
//!   revision, so a server starts from it while etcd is unreachable and resumes the
//!   watch from there (a compacted revision makes it list again). Writes ([`Backend`]) are sent from any
//!   server; the writer answers once its own follower has applied the write, so a read
//!   after a write on one server sees it.
//! - [`status`]: `xboot cluster status`.
//! - [`keyring`]: the boot-token keyring every server shares (`secrets/token-key`),
//!   followed by watch, rotated in one transaction.
//! - [`blobs`]: image files by their sha256: recorded when an image is published,
//!   prefetched from the servers that hold them, served from this server's disk.
//! - [`peer`] (pure): the signature a server's request of another carries (the blob
//!   route refuses requests without one), made with the shared keyring.
//!
//! An inventory that does not validate (two servers' writes can only make one if a
//! writer skipped validation) is not served: the previous one stays, the error is logged
//! and published in the server's record, and the next change that validates is applied.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn as EtcdTxn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;

use crate::config::cluster::ClusterConfig;
use crate::inventory::store::BoxFuture;
use crate::inventory::{Backend, Change, CommitError, Committed, Inventory, Store};
use crate::state::Shared;

pub mod blobs;
pub mod keepalived;
pub mod keyring;
pub mod mirror;
pub mod peer;
pub mod plan;
pub mod status;

use mirror::{Event, Mirror};
use plan::{Cmp, Keys, Op, Txn};

/// Entries per page of a list.
const PAGE: i64 = 2000;
/// A batch ends when the watch has been idle this long, or after `BATCH_MAX`.
const BATCH_IDLE: Duration = Duration::from_millis(5);
const BATCH_MAX: Duration = Duration::from_millis(50);
/// Attempts of one change against newer bases before it is refused as conflicting.
const ATTEMPTS: usize = 10;
/// Meta keys of the local store that hold completions not yet written to etcd.
const QUEUED: &str = "queued/complete/";
/// The server record's lease.
const RECORD_TTL_SECS: i64 = 10;

/// A server's shared state in cluster mode.
pub struct Cluster {
    cfg: ClusterConfig,
    keys: Keys,
    id: String,
    shared: Arc<Shared>,
    store: Arc<Store>,
    client: tokio::sync::Mutex<Option<Client>>,
    /// The inventory changes are made on, with its revision (what the follower applied).
    base: Mutex<(Arc<Inventory>, u64)>,
    /// The hosts this server serves (its segments).
    scope: mirror::Scope,
    /// The last whole inventory that validated: what the local store holds.
    valid: Mutex<Arc<Inventory>>,
    /// The revision the follower has applied.
    applied: watch::Sender<u64>,
    /// Why the last batch was not served, or etcd cannot be followed (None: all well).
    problem: Mutex<Option<String>>,
    /// The image files: hashed on publish, fetched from other servers, served here.
    blobs: Arc<blobs::Blobs>,
    /// What applying the watched batches cost.
    stats: Mutex<ApplyStats>,
}

/// The hosts and images changed in the mirror since the served inventory was made from
/// it (the batch being gathered, and any that did not validate).
#[derive(Debug, Default)]
struct Pending {
    hosts: std::collections::BTreeSet<String>,
    images: std::collections::BTreeSet<String>,
    /// Everything: after a list, or a list that did not validate.
    all: bool,
}

impl Pending {
    fn note(&mut self, kind: plan::Kind<'_>) {
        match kind {
            plan::Kind::Host(n) => {
                self.hosts.insert(n.to_string());
            }
            plan::Kind::Image(n) => {
                self.images.insert(n.to_string());
            }
            plan::Kind::Other => {}
        }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.hosts.is_empty() && self.images.is_empty()
    }

    /// The change that makes the noted entries what the mirror holds.
    fn change(&self, mirror: &Mirror) -> Change {
        let mut c = Change::default();
        for n in &self.hosts {
            match mirror.hosts.get(n) {
                Some(h) => c.put_hosts.push(h.clone()),
                None => c.delete_hosts.push(n.clone()),
            }
        }
        for n in &self.images {
            match mirror.images.get(n) {
                Some(i) => c.put_images.push(i.clone()),
                None => c.delete_images.push(n.clone()),
            }
        }
        c
    }
}

/// Totals of the follower's incremental batches.
#[derive(Debug, Default)]
struct ApplyStats {
    batches: u64,
    hosts: u64,
    seconds: f64,
    last_hosts: usize,
    last_seconds: f64,
}

impl ApplyStats {
    fn note(&mut self, change: &Change, took: Duration) {
        let n = change.put_hosts.len() + change.delete_hosts.len();
        self.batches += 1;
        self.hosts += n as u64;
        self.seconds += took.as_secs_f64();
        self.last_hosts = n;
        self.last_seconds = took.as_secs_f64();
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("id", &self.id).finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> CommitError {
    CommitError::Unavailable(e.to_string())
}

/// Connects to the endpoints of `cfg` (TLS and authentication as configured). The
/// channel connects lazily: this fails only on bad settings or refused credentials.
pub async fn connect(cfg: &ClusterConfig) -> Result<Client, String> {
    let t = Duration::from_millis(cfg.timeout_ms);
    let mut opts = ConnectOptions::new()
        .with_timeout(t)
        .with_connect_timeout(t)
        .with_keep_alive(Duration::from_secs(5), t)
        .with_keep_alive_while_idle(true)
        // A member cut off from the others answers no watch: another one does.
        .with_require_leader(true);
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.with_user(u.clone(), p.clone());
    }
    if cfg.endpoints.iter().any(|e| e.starts_with("https://")) {
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
        }
        if let (Some(c), Some(k)) = (&cfg.cert_file, &cfg.key_file) {
            let cert = std::fs::read(c).map_err(|e| format!("{}: {e}", c.display()))?;
            let key = std::fs::read(k).map_err(|e| format!("{}: {e}", k.display()))?;
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        opts = opts.with_tls(tls);
    }
    tokio::time::timeout(t, Client::connect(&cfg.endpoints, Some(opts)))
        .await
        .map_err(|_| format!("no etcd endpoint answered within {} ms", cfg.timeout_ms))?
        .map_err(|e| format!("etcd {}: {e}", cfg.endpoints.join(",")))
}

impl Cluster {
    /// The cluster state of a server whose running inventory (`shared`) is the local
    /// store's snapshot at `store.revision()`. Before any service starts: the running
    /// inventory becomes the part of it this server's segments serve.
    /// `key` is the boot-token keyring ([`keyring`] makes it the cluster's), which also
    /// signs and checks the servers' requests of each other ([`peer`]).
    pub fn new(
        cfg: ClusterConfig,
        shared: Arc<Shared>,
        store: Arc<Store>,
        key: crate::http::TokenKey,
    ) -> anyhow::Result<Arc<Cluster>> {
        let revision = store.revision()?;
        let id = cfg.server_id();
        let scope = mirror::Scope::of(&cfg.segments);
        let whole = shared.inventory();
        if !scope.is_all() {
            shared.replace_inventory(scope.part(&whole));
        }
        let blobs = blobs::Blobs::new(&cfg, &id, shared.clone(), key)?;
        Ok(Arc::new(Cluster {
            blobs,
            keys: Keys::new(&cfg.prefix),
            id,
            base: Mutex::new((whole.clone(), revision)),
            scope,
            valid: Mutex::new(whole),
            applied: watch::Sender::new(revision),
            problem: Mutex::new(None),
            stats: Mutex::default(),
            client: tokio::sync::Mutex::new(None),
            cfg,
            shared,
            store,
        }))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// This server's image blobs (the HTTP service serves them, [`blobs::Blobs::run`]
    /// prefetches them).
    pub fn blobs(&self) -> Arc<blobs::Blobs> {
        self.blobs.clone()
    }

    /// The revision the follower has applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Bumped with every revision the follower applies.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The last whole inventory that validated, every segment's hosts (what this server
    /// serves is its part of it: [`mirror::Scope`]).
    pub fn whole(&self) -> Arc<Inventory> {
        self.valid.lock().unwrap().clone()
    }

    async fn client(&self) -> Result<Client, String> {
        let mut c = self.client.lock().await;
        if let Some(c) = c.as_ref() {
            return Ok(c.clone());
        }
        let new = connect(&self.cfg).await?;
        *c = Some(new.clone());
        Ok(new)
    }

    fn set_problem(&self, p: Option<String>) {
        *self.problem.lock().unwrap() = p;
    }

    /// Waits until the follower has applied `revision` (or the request timeout passed:
    /// then the write is committed, and is served as soon as etcd is followed again).
    async fn wait_applied(&self, revision: u64) {
        let mut rx = self.applied.subscribe();
        let t = Duration::from_millis(self.cfg.timeout_ms);
        if tokio::time::timeout(t, rx.wait_for(|r| *r >= revision))
            .await
            .is_err()
        {
            tracing::warn!(
                "cluster: revision {revision} committed but not applied here within {} ms",
                self.cfg.timeout_ms
            );
        }
    }

    /// Sends the transactions of one change. Ok(last revision), or a conflict once the
    /// conflicting revision is applied here. A failure says whether the change may
    /// still commit ([`CommitError::Unknown`]: a transaction was sent and not
    /// confirmed, [`plan::refused_before_proposal`]) or cannot
    /// ([`CommitError::Unavailable`]).
    async fn send(&self, txns: Vec<Txn>) -> Result<u64, CommitError> {
        let mut client = self.client().await.map_err(unavailable)?;
        let mut last = None;
        let of = txns.len();
        for (committed, mut t) in txns.into_iter().enumerate() {
            if let Some(prev) = last {
                plan::chain_serial(&self.keys, &mut t, prev);
            }
            // A member that died (or lost its leader) fails the request: the next one
            // goes to another. A retried transaction that had committed fails its
            // compares, which reads as a conflict and makes an empty change: harmless.
            let mut tries = 0;
            // The first attempt that may have been proposed: if none is confirmed, the
            // change may still commit, whatever the later attempts said.
            let mut maybe: Option<String> = None;
            let resp = loop {
                match client.txn(etcd_txn(&t)).await {
                    Ok(r) => break r,
                    Err(e) => {
                        let e = e.to_string();
                        if maybe.is_none() && !plan::refused_before_proposal(&e) {
                            maybe = Some(e.clone());
                        }
                        if tries == 3 {
                            return Err(match (maybe, committed) {
                                (None, 0) => unavailable(e),
                                (maybe, _) => CommitError::Unknown {
                                    why: maybe.unwrap_or(e),
                                    committed,
                                    of,
                                },
                            });
                        }
                        tries += 1;
                        tracing::debug!("cluster: etcd transaction: {e}; trying again");
                        tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                    }
                }
            };
            let rev = resp.header().map_or(0, |h| h.revision()) as u64;
            if !resp.succeeded() {
                // The failure branch read the compared keys: the newest of them is the
                // write this change conflicted with (etcd's own revision may be ahead
                // on keys outside the prefix, which the watch never delivers).
                let newest = resp
                    .op_responses()
                    .into_iter()
                    .filter_map(|r| match r {
                        TxnOpResponse::Get(g) => {
                            g.kvs().iter().map(|kv| kv.mod_revision() as u64).max()
                        }
                        _ => None,
                    })
                    .max();
                self.wait_applied(newest.unwrap_or(rev)).await;
                return Err(CommitError::Conflict);
            }
            last = Some(rev);
        }
        if let Some(rev) = last {
            self.wait_applied(rev).await;
        }
        Ok(last.unwrap_or(0))
    }

    /// Sets one host's `provision` (what `complete` does): compared with that host's key
    /// alone, with no whole-inventory check and no lock shared with other writers.
    pub async fn set_provision(&self, name: &str, provision: bool) -> Result<(), CommitError> {
        for _ in 0..ATTEMPTS {
            let (base, rev) = self.base.lock().unwrap().clone();
            let Some(h) = base.host(name) else {
                return Ok(());
            };
            if h.provision == provision {
                return Ok(());
            }
            let mut h = h.clone();
            h.provision = provision;
            let change = Change {
                put_hosts: vec![h],
                ..Default::default()
            };
            let txns = plan::plan(
                &self.keys,
                &base,
                rev,
                &change,
                true,
                &self.id,
                self.cfg.max_txn_ops,
            );
            match self.send(txns).await {
                Err(CommitError::Conflict) => continue,
                r => return r.map(drop),
            }
        }
        Err(CommitError::Conflict)
    }

    /// Records that `host` completed while etcd could not be written: durably (the local
    /// store), so that [`Cluster::replay`] writes it once etcd is back, even after a
    /// restart.
    pub fn queue_completion(&self, host: &str) -> Result<(), String> {
        self.store
            .set_meta(&format!("{QUEUED}{host}"), b"")
            .map_err(|e| e.to_string())
    }

    /// The completions queued and not written yet.
    pub fn queued(&self) -> Vec<String> {
        self.store
            .meta_keys(QUEUED)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| k.strip_prefix(QUEUED).map(String::from))
            .collect()
    }

    /// Writes the queued completions to etcd as it can, until `stop`.
    pub async fn replay(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            for host in self.queued() {
                match self.set_provision(&host, false).await {
                    Ok(()) => {
                        tracing::info!("cluster: queued completion of {host} written");
                        let _ = self.store.delete_meta(&format!("{QUEUED}{host}"));
                    }
                    Err(CommitError::Unavailable(_) | CommitError::Unknown { .. }) => break,
                    Err(e) => tracing::warn!("cluster: queued completion of {host}: {e}"),
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Follows etcd until `stop`: list (when there is no snapshot, or its revision was
    /// compacted), then watch; reconnects after any error, from the last revision applied.
    pub async fn follow(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let (hosts, images) = {
            let inv = self.valid.lock().unwrap().clone();
            (inv.hosts().to_vec(), inv.images().to_vec())
        };
        let mut mirror = Mirror::from_parts(hosts, images, self.applied());
        let mut relist = mirror.revision == 0;
        let mut pending = Pending::default();
        let mut backoff = Duration::from_millis(200);
        tokio::pin!(stop);
        loop {
            let r = tokio::select! {
                _ = &mut stop => return,
                r = self.follow_once(&mut mirror, &mut relist, &mut pending) => r,
            };
            if let Err(e) = r {
                tracing::warn!(
                    "cluster: {e}; serving the inventory at revision {} meanwhile",
                    mirror.revision
                );
                self.set_problem(Some(e));
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            } else {
                backoff = Duration::from_millis(200);
            }
        }
    }

    async fn follow_once(
        &self,
        mirror: &mut Mirror,
        relist: &mut bool,
        pending: &mut Pending,
    ) -> Result<(), String> {
        let mut client = self.client().await?;
        if *relist {
            *mirror = self.list(&mut client).await?;
            tracing::info!(
                "cluster: listed {} hosts and {} images at revision {}",
                mirror.hosts.len(),
                mirror.images.len(),
                mirror.revision
            );
            *relist = false;
            pending.all = true;
            self.apply(mirror, pending).await;
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(mirror.revision as i64 + 1)
            .with_progress_notify();
        let mut stream = client
            .watch(self.keys.prefix(), Some(opts))
            .await
            .map_err(|e| format!("cannot watch etcd: {e}"))?;
        self.set_problem(None);
        loop {
            let first = stream
                .message()
                .await
                .map_err(|e| format!("etcd watch: {e}"))?
                .ok_or("the etcd watch ended")?;
            self.take(mirror, first, relist, pending)?;
            let end = tokio::time::Instant::now() + BATCH_MAX;
            loop {
                let wait =
                    BATCH_IDLE.min(end.saturating_duration_since(tokio::time::Instant::now()));
                match tokio::time::timeout(wait, stream.message()).await {
                    Err(_) => break,
                    Ok(r) => {
                        let r = r
                            .map_err(|e| format!("etcd watch: {e}"))?
                            .ok_or("the etcd watch ended")?;
                        self.take(mirror, r, relist, pending)?;
                    }
                }
            }
            self.apply(mirror, pending).await;
        }
    }

    /// Applies one watch response to the mirror, noting in `pending` the hosts and
    /// images it changed.
    fn take(
        &self,
        mirror: &mut Mirror,
        resp: etcd_client::WatchResponse,
        relist: &mut bool,
        pending: &mut Pending,
    ) -> Result<(), String> {
        if resp.compact_revision() > 0 {
            *relist = true;
            return Err(format!(
                "revision {} was compacted (etcd keeps {} on): listing again",
                mirror.revision + 1,
                resp.compact_revision()
            ));
        }
        if resp.canceled() {
            return Err(format!(
                "etcd cancelled the watch: {}",
                resp.cancel_reason()
            ));
        }
        if resp.events().is_empty() {
            // The watch's creation, or a progress notification: every event up to its
            // revision was sent.
            if let Some(h) = resp.header() {
                let now = h.revision() as u64;
                if now < mirror.revision {
                    // A new or restored etcd: the snapshot's revision is in its future.
                    *relist = true;
                    return Err(format!(
                        "etcd is at revision {now}, behind this server's snapshot ({}): \
                         a new or restored cluster; listing again",
                        mirror.revision
                    ));
                }
                mirror.revision = mirror.revision.max(now);
            }
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            let value = match ev.event_type() {
                EventType::Put => Some(kv.value().to_vec()),
                EventType::Delete => None,
            };
            let e = Event {
                key: key.to_string(),
                value,
            };
            if mirror.apply(&self.keys, &e) {
                pending.note(self.keys.kind(key));
                if let Some(why) = mirror.unreadable.get(key) {
                    tracing::error!("cluster: {key}: {why}: left out of the inventory");
                }
            }
            mirror.revision = mirror.revision.max(kv.mod_revision() as u64);
        }
        Ok(())
    }

    /// Everything under the prefix at one revision, in pages.
    async fn list(&self, client: &mut Client) -> Result<Mirror, String> {
        let mut mirror = Mirror::default();
        let prefix = self.keys.prefix().to_string();
        let end = prefix_end(&prefix);
        let mut from = prefix.clone().into_bytes();
        let mut revision = 0i64;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = client
                .get(from.clone(), Some(opts))
                .await
                .map_err(|e| format!("cannot list {prefix}: {e}"))?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                let Ok(key) = kv.key_str() else { continue };
                mirror.apply(
                    &self.keys,
                    &Event {
                        key: key.to_string(),
                        value: Some(kv.value().to_vec()),
                    },
                );
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        for (key, why) in &mirror.unreadable {
            tracing::error!("cluster: {key}: {why}: left out of the inventory");
        }
        mirror.revision = revision as u64;
        Ok(mirror)
    }

    /// Serves what `pending` notes as changed in the mirror, if it validates, and
    /// records the revision. Incremental: the changed hosts and images are made into a
    /// [`Change`] on the served inventory and checked by [`Inventory::apply`] (alone and
    /// against the indexes), swapped in with their delta (the XDP maps update those
    /// hosts only) and written to the snapshot, at the batch's cost, not the
    /// inventory's. After a list (`pending.all`) the whole mirror is validated. A batch
    /// that does not validate stays pending: the next one is applied with it.
    async fn apply(&self, mirror: &Mirror, pending: &mut Pending) {
        let rev = mirror.revision;
        if pending.all {
            self.apply_whole(mirror, pending).await;
        } else if !pending.is_empty() {
            // The change is checked on the whole inventory (the uniqueness indexes span
            // every segment), then cut to this server's segments for serving.
            let whole = self.valid.lock().unwrap().clone();
            let change = Arc::new(pending.change(mirror).effective(&whole));
            let roots = self.shared.config.provision.image_roots();
            let default = self.shared.config.provision.default_image.clone();
            let (w, c, scope, served) = (
                whole.clone(),
                change.clone(),
                self.scope.clone(),
                self.shared.inventory(),
            );
            let valid = tokio::task::spawn_blocking(move || {
                let t0 = std::time::Instant::now();
                let r = w.apply(&c, &roots, default.as_deref()).map(|inv| {
                    if scope.is_all() {
                        return (inv.clone(), inv, (*c).clone());
                    }
                    let sc = scope.change(&served, &c);
                    // A part of a valid inventory is valid: this cannot fail, and if it
                    // did, the part is cut again from the whole (at the inventory's cost).
                    let part = served
                        .apply(&sc, &roots, default.as_deref())
                        .unwrap_or_else(|_| scope.part(&inv));
                    (inv, part, sc)
                });
                (r, t0.elapsed())
            })
            .await;
            match valid {
                Ok((Ok((inv, part, served_change)), took)) => {
                    let inv = Arc::new(inv);
                    {
                        let mut base = self.base.lock().unwrap();
                        if !served_change.is_empty() {
                            self.shared.apply_inventory(part, &served_change);
                        }
                        *base = (inv.clone(), rev);
                    }
                    *self.valid.lock().unwrap() = inv;
                    self.stats.lock().unwrap().note(&change, took);
                    *pending = Pending::default();
                    self.set_problem(None);
                    self.save(change, rev).await;
                }
                Ok((Err(errs), _)) => self.invalid(mirror, errs),
                Err(e) => tracing::error!("cluster: validation failed: {e}"),
            }
        } else {
            self.base.lock().unwrap().1 = rev;
        }
        self.applied.send_replace(rev);
    }

    /// After a list: the whole mirror validated, and this server's part of it swapped in.
    async fn apply_whole(&self, mirror: &Mirror, pending: &mut Pending) {
        let rev = mirror.revision;
        let (hosts, images) = mirror.parts();
        let roots = self.shared.config.provision.image_roots();
        let default = self.shared.config.provision.default_image.clone();
        let valid = tokio::task::spawn_blocking(move || {
            Inventory::new_with_default(hosts, images, &roots, default.as_deref())
        })
        .await;
        match valid {
            Ok(Ok(inv)) => {
                let inv = Arc::new(inv);
                let old = self.valid.lock().unwrap().clone();
                let change = Change::diff(
                    &old.hosts().to_vec(),
                    old.images(),
                    &inv.hosts().to_vec(),
                    inv.images(),
                );
                {
                    let mut base = self.base.lock().unwrap();
                    let (part, served) = self.scope.served(&self.shared.inventory(), &inv);
                    if !served.is_empty() {
                        self.shared.apply_inventory(part, &served);
                    }
                    *base = (inv.clone(), rev);
                }
                *self.valid.lock().unwrap() = inv;
                *pending = Pending::default();
                self.set_problem(None);
                self.save(Arc::new(change), rev).await;
            }
            Ok(Err(errs)) => self.invalid(mirror, errs),
            Err(e) => tracing::error!("cluster: validation failed: {e}"),
        }
    }

    /// Writes a served change and its revision to the local snapshot.
    async fn save(&self, change: Arc<Change>, rev: u64) {
        let store = self.store.clone();
        let saved = tokio::task::spawn_blocking(move || store.apply_at(&change, rev)).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!("cluster: cannot write the local snapshot: {e}");
        }
    }

    /// The mirror at its revision does not validate: the served inventory stays, the
    /// problem is published, and changes are made on what etcd holds (so that one can
    /// repair it; building it reads every entry, on this rare path only).
    fn invalid(&self, mirror: &Mirror, errs: crate::inventory::ValidationErrors) {
        let rev = mirror.revision;
        let msg = format!(
            "the inventory at revision {rev} is invalid, still serving the previous one: {}",
            errs.messages().join("; ")
        );
        tracing::error!("cluster: {msg}");
        self.set_problem(Some(msg));
        let (hosts, images) = mirror.parts();
        let inv = Inventory::from_parts_unchecked(hosts, images);
        *self.base.lock().unwrap() = (Arc::new(inv), rev);
    }

    /// What the follower's batches cost (`GET /v1/status`'s `cluster`).
    pub fn apply_stats(&self) -> serde_json::Value {
        let s = self.stats.lock().unwrap();
        serde_json::json!({
            "applied_revision": self.applied(),
            "batches": s.batches,
            "hosts_changed": s.hosts,
            "validate_seconds_total": s.seconds,
            "last_batch_hosts": s.last_hosts,
            "last_validate_seconds": s.last_seconds,
        })
    }

    /// Publishes this server's record (`servers/{id}`, on a lease that ends with the
    /// server) until `stop`: at start, on every inventory swap and every few seconds.
    pub async fn publish(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut swaps = self.shared.subscribe();
        let lease = Mutex::new(None);
        loop {
            let r = tokio::select! {
                _ = &mut stop => break,
                r = self.publish_once(&mut swaps, &lease) => r,
            };
            if let Err(e) = r {
                tracing::debug!("cluster: server record: {e}");
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        // Stopping: the record goes now rather than when its lease runs out.
        let id = lease.lock().unwrap().take();
        if let (Some(id), Ok(mut client)) = (id, self.client().await) {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(id)).await;
        }
    }

    async fn publish_once(
        &self,
        swaps: &mut watch::Receiver<u64>,
        current: &Mutex<Option<i64>>,
    ) -> Result<(), String> {
        let mut client = self.client().await?;
        let lease = client
            .lease_grant(RECORD_TTL_SECS, None)
            .await
            .map_err(|e| e.to_string())?
            .id();
        *current.lock().unwrap() = Some(lease);
        let (mut keeper, mut acks) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| e.to_string())?;
        let started = crate::http::token::now_secs();
        loop {
            let record = self.record(started);
            client
                .put(
                    self.keys.server(&self.id),
                    record.to_string(),
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )
                .await
                .map_err(|e| e.to_string())?;
            let tick = tokio::time::sleep(Duration::from_secs(3));
            tokio::pin!(tick);
            tokio::select! {
                _ = &mut tick => {}
                _ = swaps.changed() => {
                    // Let a burst of swaps settle into one record.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            keeper.keep_alive().await.map_err(|e| e.to_string())?;
            match acks.message().await.map_err(|e| e.to_string())? {
                Some(a) if a.ttl() > 0 => {}
                _ => return Err("the record's lease expired".into()),
            }
        }
    }

    /// What `servers/{id}` says.
    fn record(&self, started: u64) -> serde_json::Value {
        let (inv, _) = self.base.lock().unwrap().clone();
        let served = self.shared.inventory();
        serde_json::json!({
            "id": self.id,
            "segments": self.cfg.segments.iter().map(|s| serde_json::json!({
                "name": s.name, "interfaces": s.interfaces, "subnets": s.subnets,
            })).collect::<Vec<_>>(),
            "applied_revision": self.applied(),
            "hosts": served.hosts().len(),
            "images": served.images().len(),
            "etcd_hosts": inv.hosts().len(),
            "problem": *self.problem.lock().unwrap(),
            "queued_completions": self.queued().len(),
            // Where `xboot events` asks this server for its events.
            "api": api_address(&self.shared.config),
            "http_url": self.blobs.url(),
            "blobs": self.blobs.summary(),
            "version": env!("CARGO_PKG_VERSION"),
            "started": started,
            "updated": crate::http::token::now_secs(),
        })
    }
}

/// The address other machines reach this server's TCP API at (`api.listen`; an
/// unspecified address is replaced by `provision.hostname`, else the host of
/// `provision.advertise_url`). None without `api.listen`.
fn api_address(cfg: &crate::config::Config) -> Option<String> {
    let listen = cfg.api.listen?;
    if !listen.ip().is_unspecified() {
        return Some(listen.to_string());
    }
    let host = cfg
        .provision
        .url_hostname()
        .map(str::to_string)
        .or_else(|| {
            let url = reqwest::Url::parse(cfg.provision.advertise_url.as_deref()?).ok()?;
            url.host_str().map(str::to_string)
        })?;
    Some(format!("{host}:{}", listen.port()))
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn etcd_txn(t: &Txn) -> EtcdTxn {
    let cmps: Vec<Compare> = t
        .cmps
        .iter()
        .map(|c| match c {
            Cmp::ModAtMost(k, r) => {
                Compare::mod_revision(k.clone(), CompareOp::Less, *r as i64 + 1)
            }
            Cmp::Absent(k) => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
            Cmp::ModIs(k, r) => Compare::mod_revision(k.clone(), CompareOp::Equal, *r as i64),
        })
        .collect();
    let ops: Vec<TxnOp> = t
        .ops
        .iter()
        .map(|o| match o {
            Op::Put(k, v) => TxnOp::put(k.clone(), v.clone(), None),
            Op::Delete(k) => TxnOp::delete(k.clone(), None),
        })
        .collect();
    // On failure: the compared keys' revisions (keys only), to wait for the conflict.
    let reads: Vec<TxnOp> = t
        .cmps
        .iter()
        .map(|c| match c {
            Cmp::ModAtMost(k, _) | Cmp::Absent(k) | Cmp::ModIs(k, _) => {
                TxnOp::get(k.clone(), Some(GetOptions::new().with_keys_only()))
            }
        })
        .collect();
    EtcdTxn::new().when(cmps).and_then(ops).or_else(reads)
}

impl Backend for Arc<Cluster> {
    fn base(&self, _running: Arc<Inventory>) -> (Arc<Inventory>, u64) {
        self.base.lock().unwrap().clone()
    }

    fn commit(
        &self,
        base: Arc<Inventory>,
        revision: u64,
        change: Change,
    ) -> BoxFuture<'static, Result<Committed, CommitError>> {
        let me = self.clone();
        Box::pin(async move {
            // Published images carry the sha256 of their files (etcd never the bytes).
            let mut change = change;
            me.blobs.annotate(&mut change, &base).await;
            let field_only = plan::field_only(&base, &change);
            let txns = plan::plan(
                &me.keys,
                &base,
                revision,
                &change,
                field_only,
                &me.id,
                me.cfg.max_txn_ops,
            );
            me.send(txns).await?;
            Ok(Committed::InPlace)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch's events make a change of the entries they touched, as the mirror holds
    /// them after the batch: puts for those there, deletions for those gone.
    #[test]
    fn a_batch_is_the_change_of_the_entries_it_touched() {
        let keys = Keys::new("/x/");
        let mut mirror = Mirror::default();
        let mut pending = Pending::default();
        let put = |m: &mut Mirror, p: &mut Pending, key: &str, v: Option<&str>| {
            let e = Event {
                key: key.into(),
                value: v.map(|v| v.as_bytes().to_vec()),
            };
            if m.apply(&keys, &e) {
                p.note(keys.kind(key));
            }
        };
        put(
            &mut mirror,
            &mut pending,
            "/x/hosts/cn1",
            Some(r#"{"name":"cn1"}"#),
        );
        put(
            &mut mirror,
            &mut pending,
            "/x/hosts/cn2",
            Some(r#"{"name":"cn2"}"#),
        );
        put(
            &mut mirror,
            &mut pending,
            "/x/idx/mac/02:00:00:00:00:01",
            Some("cn1"),
        );
        put(
            &mut mirror,
            &mut pending,
            "/x/images/img",
            Some(r#"{"name":"img"}"#),
        );
        put(&mut mirror, &mut pending, "/x/hosts/cn2", None);
        assert!(!pending.is_empty());
        let c = pending.change(&mirror);
        let names: Vec<&str> = c.put_hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["cn1"]);
        assert_eq!(c.delete_hosts, ["cn2"]);
        assert_eq!(c.put_images.len(), 1);
        assert!(c.delete_images.is_empty());
        // An index key or a value that changes nothing notes nothing.
        let mut quiet = Pending::default();
        put(
            &mut mirror,
            &mut quiet,
            "/x/hosts/cn1",
            Some(r#"{"name":"cn1"}"#),
        );
        put(&mut mirror, &mut quiet, "/x/idx/ip/10.0.0.1", Some("cn1"));
        assert!(quiet.is_empty());
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(super::prefix_end("/x/"), b"/x0".to_vec());
        assert_eq!(super::prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
