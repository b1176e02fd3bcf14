//! The boot-token keyring in cluster mode: one ring ([`Keyring`]) for every server, kept
//! at `secrets/token-key` under the prefix (the ring's text: 64 hex digits for a ring of
//! one key, as before keyrings, else JSON), so a URL signed by one server is valid on
//! every other.
//!
//! - At start ([`Cluster::share_token_key`]) the first server puts its local ring
//!   (create-only); every other takes etcd's.
//! - [`Cluster::follow_token_key`] watches the key: a new ring is installed into the
//!   server's [`TokenKey`] (which HTTP, DHCP and the XDP templates share) and written to
//!   `state_dir/token.key`, the ring a start without etcd uses.
//! - [`rotate`] (`xboot token-key rotate`): one transaction, compared on the key's
//!   revision, that adds a key signing `activate_in` seconds later. Every server accepts
//!   the new key as soon as its watch delivers the ring, and none signs with it before
//!   `activate_in` has passed, so no server is handed a token it cannot check while the
//!   watches are that fast; the retired key stays valid `token_ttl` plus the grace
//!   after the new one starts signing (see [`crate::http::token`]).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, Txn as EtcdTxn, TxnOp, TxnOpResponse, WatchOptions,
};

use super::plan::Keys;
use super::{connect, Cluster};
use crate::config::cluster::ClusterConfig;
use crate::http::token::{now_secs, write_ring, Keyring, TokenKey};

/// Attempts of a rotation against concurrent ones.
const ROTATE_ATTEMPTS: usize = 5;

fn parse(key: &str, value: &[u8]) -> Result<Keyring, String> {
    let text = std::str::from_utf8(value).map_err(|_| format!("{key} is not text"))?;
    Keyring::parse(text).map_err(|e| format!("{key}: {e}"))
}

impl Cluster {
    /// Makes the boot-token keyring the cluster's: the first server to start puts the
    /// one `key` holds (its `state_dir/token.key`), every other one takes etcd's, which
    /// is installed into `key` and written to `path`. With etcd unreachable the local
    /// ring is used as it is (the cluster's since the last time etcd was reached).
    pub async fn share_token_key(&self, key: &TokenKey, path: &Path) -> Result<(), String> {
        let ours = key.ring().to_text();
        let mut client = self.client().await?;
        let k = self.keys.token_key();
        let txn = EtcdTxn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k.clone(), ours, None)])
            .or_else([TxnOp::get(k.clone(), None)]);
        let resp = client.txn(txn).await.map_err(|e| format!("etcd: {e}"))?;
        if resp.succeeded() {
            tracing::info!("cluster: this server's boot-token keyring is now the cluster's");
            return Ok(());
        }
        let shared = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .ok_or("the cluster's token keyring vanished")?;
        self.take_ring(key, path, parse(&k, &shared)?);
        Ok(())
    }

    /// Installs `ring` and keeps it in `path` if it is not the one in use.
    fn take_ring(&self, key: &TokenKey, path: &Path, ring: Keyring) {
        let signing = ring.signing(now_secs()).id();
        let keys = ring.keys().len();
        if key.install(ring.clone()) {
            tracing::info!(
                "cluster: boot-token keyring taken from the cluster: {keys} keys, signing with {signing}"
            );
            if let Err(e) = write_ring(path, &ring) {
                tracing::warn!("cluster: {e} (the ring is in use, not kept for a restart)");
            }
        }
    }

    /// Follows the cluster's keyring until `stop`: read, then watched; each new ring is
    /// installed into `key` and written to `path`. Reconnects after any error.
    pub async fn follow_token_key(
        self: Arc<Self>,
        key: TokenKey,
        path: PathBuf,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(200);
        loop {
            let r = tokio::select! {
                _ = &mut stop => return,
                r = self.follow_token_key_once(&key, &path) => r,
            };
            if let Err(e) = r {
                tracing::warn!("cluster: boot-token keyring: {e}; keeping the ring in use");
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn follow_token_key_once(&self, key: &TokenKey, path: &Path) -> Result<(), String> {
        let mut client = self.client().await?;
        let k = self.keys.token_key();
        let resp = client
            .get(k.clone(), None)
            .await
            .map_err(|e| format!("cannot read {k}: {e}"))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        match resp.kvs().first() {
            Some(kv) => self.take_ring(key, path, parse(&k, kv.value())?),
            // No server could put one yet (etcd was down at their starts): this one's.
            None => self.share_token_key(key, path).await?,
        }
        let mut stream = client
            .watch(
                k.clone(),
                Some(WatchOptions::new().with_start_revision(revision + 1)),
            )
            .await
            .map_err(|e| format!("cannot watch {k}: {e}"))?;
        loop {
            let resp = stream
                .message()
                .await
                .map_err(|e| format!("watch of {k}: {e}"))?
                .ok_or("the watch ended")?;
            if resp.canceled() || resp.compact_revision() > 0 {
                return Err(format!("the watch of {k} was cancelled: reading it again"));
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                match ev.event_type() {
                    EventType::Put => match parse(&k, kv.value()) {
                        Ok(ring) => self.take_ring(key, path, ring),
                        Err(e) => tracing::error!("cluster: {e}; keeping the ring in use"),
                    },
                    EventType::Delete => {
                        tracing::warn!("cluster: {k} was deleted: keeping the ring in use")
                    }
                }
            }
        }
    }
}

/// The cluster's keyring as etcd holds it.
pub async fn read(cfg: &ClusterConfig) -> Result<Keyring, String> {
    let k = Keys::new(&cfg.prefix).token_key();
    let mut client = connect(cfg).await?;
    let resp = client
        .get(k.clone(), None)
        .await
        .map_err(|e| format!("etcd: {e}"))?;
    let kv = resp.kvs().first().ok_or_else(|| no_ring(&k))?;
    parse(&k, kv.value())
}

fn no_ring(k: &str) -> String {
    format!(
        "{k} is absent: no server has started on this cluster yet (the first one puts its keyring)"
    )
}

/// Rotates the cluster's keyring: a new key, accepted by every server as soon as its
/// watch delivers it and signing from `activate_in` seconds from now; keys lapsed under
/// `ttl` are dropped. One transaction, made only if no other write of the ring came
/// between its read and its commit (else read again, a few times).
pub async fn rotate(cfg: &ClusterConfig, activate_in: u64, ttl: u64) -> Result<Keyring, String> {
    let k = Keys::new(&cfg.prefix).token_key();
    let mut client = connect(cfg).await?;
    for _ in 0..ROTATE_ATTEMPTS {
        let resp = client
            .get(k.clone(), None)
            .await
            .map_err(|e| format!("etcd: {e}"))?;
        let kv = resp.kvs().first().ok_or_else(|| no_ring(&k))?;
        let ring = parse(&k, kv.value())?;
        let next = ring
            .rotate(now_secs(), activate_in, ttl)
            .map_err(|e| e.to_string())?;
        let txn = EtcdTxn::new()
            .when([Compare::mod_revision(
                k.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::put(k.clone(), next.to_text(), None)]);
        let resp = client.txn(txn).await.map_err(|e| format!("etcd: {e}"))?;
        if resp.succeeded() {
            return Ok(next);
        }
    }
    Err(format!(
        "{k} changed under each of {ROTATE_ATTEMPTS} attempts (concurrent rotations): try again"
    ))
}
