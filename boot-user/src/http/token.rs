//! Signed boot tokens: every boot URL carries one, naming the host, the MAC it boots
//! from and an expiry, signed with HMAC-SHA256 by a key of the server's keyring.
//!
//! Wire form: URL-safe base64 (no padding) of
//! `version 2 (1) | key id (4) | expiry, unix seconds (8, big-endian) | MAC (6) | host name | tag (32)`,
//! where the tag is HMAC-SHA256 over everything before it, with the key the id names
//! (its first four bytes of `SHA-256("xboot token key id" | key)`, so every server
//! holding a key computes the same id: a check is one lookup and one HMAC). Tokens of
//! version 1 (no key id; minted before keyrings) are checked against every key still
//! valid, so they keep working until they expire.
//!
//! The keyring ([`Keyring`], pure): keys in order of creation, each with its creation
//! time and the time it starts signing (`active_from`). The signing key is the newest
//! whose `active_from` has passed; a newer one that has not yet is already accepted
//! (in cluster mode a rotation's key reaches every server before any signs with it). A
//! key is retired when the next one starts signing and stays valid for
//! `provision.token_ttl` plus [`ROTATION_GRACE_SECS`] after that (every token it signed
//! expires within `token_ttl` of its signing, and a server that learnt of the rotation
//! late may have signed up to the grace after it), then it is refused naming the key
//! as retired, and dropped at the next rotation.
//!
//! Where the keyring comes from ([`TokenKey::from_config`]): `SHA-256(provision.secret)`
//! when the config sets a secret (a single key, not rotated: change the secret);
//! otherwise `state_dir/token.key` (mode 0600; generated once, so a restart does not
//! invalidate the URLs of nodes in the middle of a boot). The file holds 64 hex digits
//! (a ring of one key, the form before keyrings) or the ring as JSON; `xboot token-key
//! rotate` rewrites it (standalone) and the server reads it again when it changes. In
//! cluster mode the ring is etcd's (`crate::cluster::keyring`).
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::inventory::Mac;

/// Tokens without a key id (before keyrings).
const V1: u8 = 1;
/// Tokens that name their key.
const V2: u8 = 2;
const TAG_LEN: usize = 32;
const KID_LEN: usize = 4;
/// version + expiry + MAC (version 1).
const HEAD_V1: usize = 1 + 8 + 6;
/// version + key id + expiry + MAC.
const HEAD_V2: usize = 1 + KID_LEN + 8 + 6;
/// File name of the generated key under `state_dir`.
pub const KEY_FILE: &str = "token.key";
/// How long after its retirement, beyond `provision.token_ttl`, a key is still
/// accepted: a server that learnt of a rotation late (its etcd watch, or the key file
/// read every second) may have signed with the retired key until then.
pub const ROTATION_GRACE_SECS: u64 = 10;
/// Keys a ring holds at most (valid ones: a rotation past it is refused until the
/// oldest retired key has lapsed). Bounds the version-1 check and key-id collisions.
pub const MAX_KEYS: usize = 8;
/// Dropped keys remembered, to tell their tokens from forged ones.
const MAX_DROPPED: usize = 16;

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub host: String,
    pub mac: Mac,
    /// Unix seconds after which the token is refused.
    pub expires: u64,
}

/// Why a token was refused. One line each: they are sent as the 403 body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("bad token signature (forged, or signed with another key)")]
    BadSignature,
    #[error("token for host {host} expired {ago}s ago")]
    Expired { host: String, ago: u64 },
    #[error(
        "token signed with key {kid}, retired {ago}s ago by a key rotation and no longer \
         accepted (tokens of a retired key are valid provision.token_ttl after its retirement)"
    )]
    RetiredKey { kid: String, ago: u64 },
    #[error("token signed with key {kid}, which is not in this server's keyring")]
    UnknownKey { kid: String },
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot create state dir {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write token key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read token key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token key {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A key id as printed (8 hex digits).
fn kid_text(kid: u32) -> String {
    format!("{kid:08x}")
}

/// One key of a ring.
#[derive(Clone, PartialEq, Eq)]
pub struct RingKey {
    secret: [u8; 32],
    /// `SHA-256("xboot token key id" | secret)`'s first 4 bytes.
    kid: u32,
    /// Unix seconds (0: unknown, a key from before keyrings).
    pub created: u64,
    /// Unix seconds from which it signs (accepted from its creation).
    pub active_from: u64,
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RingKey({}, created {}, active from {})",
            self.id(),
            self.created,
            self.active_from
        )
    }
}

impl RingKey {
    fn new(secret: [u8; 32], created: u64, active_from: u64) -> RingKey {
        let mut h = Sha256::new();
        h.update(b"xboot token key id");
        h.update(secret);
        let d = h.finalize();
        RingKey {
            secret,
            kid: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
            created,
            active_from,
        }
    }

    /// The key id, as tokens and messages name it.
    pub fn id(&self) -> String {
        kid_text(self.kid)
    }

    fn hmac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256>>::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }
}

/// A key dropped from the ring: its tokens are refused as signed by a retired key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub kid: String,
    /// When it was retired (unix seconds).
    pub retired: u64,
}

/// The state of one key at some time, for `xboot token-key show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    pub kid: String,
    pub created: u64,
    pub active_from: u64,
    /// `pending` (accepted, not signing yet), `signing`, `retired` (accepted until
    /// `valid_until`), `lapsed` (refused; dropped at the next rotation).
    pub state: &'static str,
    pub valid_until: Option<u64>,
}

/// Why a rotation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(
        "the keyring holds {0} keys still valid; the oldest retired one lapses at unix \
         time {1}: rotate after that"
    )]
    Full(usize, u64),
}

/// The keyring: pure, every decision takes the time (unix seconds) and `token_ttl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    /// Oldest first; `active_from` never decreases along it.
    keys: Vec<RingKey>,
    dropped: Vec<Dropped>,
}

/// The ring's JSON form.
#[derive(Serialize, Deserialize)]
struct RingFile {
    keys: Vec<KeyFile>,
    #[serde(default)]
    dropped: Vec<Dropped>,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    key: String,
    created: u64,
    active_from: u64,
}

impl Keyring {
    /// A ring of one key that signs from now on.
    pub fn single(secret: [u8; 32], created: u64) -> Keyring {
        Keyring {
            keys: vec![RingKey::new(secret, created, created)],
            dropped: vec![],
        }
    }

    /// A ring of one fresh random key.
    pub fn generate(now: u64) -> Keyring {
        Keyring::single(rand::random(), now)
    }

    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }

    /// The key that signs at `now`: the newest whose `active_from` has passed (the
    /// oldest if none has).
    pub fn signing(&self, now: u64) -> &RingKey {
        self.keys
            .iter()
            .rev()
            .find(|k| k.active_from <= now)
            .unwrap_or(&self.keys[0])
    }

    /// When key `i` stopped signing (the next key's `active_from`); None: it has no
    /// successor.
    fn retired_at(&self, i: usize) -> Option<u64> {
        self.keys.get(i + 1).map(|k| k.active_from)
    }

    /// Until when key `i` is accepted (None: no end yet).
    fn valid_until(&self, i: usize, ttl: u64) -> Option<u64> {
        self.retired_at(i)
            .map(|r| r.saturating_add(ttl).saturating_add(ROTATION_GRACE_SECS))
    }

    /// A token for `claims`, signed with the key that signs at `now`.
    pub fn sign(&self, claims: &Claims, now: u64) -> String {
        let key = self.signing(now);
        let mut buf = Vec::with_capacity(HEAD_V2 + claims.host.len() + TAG_LEN);
        buf.push(V2);
        buf.extend_from_slice(&key.kid.to_be_bytes());
        buf.extend_from_slice(&claims.expires.to_be_bytes());
        buf.extend_from_slice(&claims.mac.0);
        buf.extend_from_slice(claims.host.as_bytes());
        let mut m = key.hmac();
        m.update(&buf);
        buf.extend_from_slice(&m.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// The claims of `token` if it is well-formed, signed with a key of the ring that
    /// is valid at `now`, and not expired at `now`.
    pub fn verify(&self, token: &str, now: u64, ttl: u64) -> Result<Claims, TokenError> {
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Malformed("not URL-safe base64"))?;
        if raw.len() < HEAD_V1 + TAG_LEN {
            return Err(TokenError::Malformed("too short"));
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let head = match body[0] {
            V1 => {
                // No key id: any key still valid (the ring has at most MAX_KEYS).
                let signed = (0..self.keys.len())
                    .filter(|&i| self.valid_until(i, ttl).is_none_or(|u| now <= u))
                    .any(|i| {
                        let mut m = self.keys[i].hmac();
                        m.update(body);
                        m.verify_slice(tag).is_ok()
                    });
                if !signed {
                    return Err(TokenError::BadSignature);
                }
                HEAD_V1
            }
            V2 if body.len() < HEAD_V2 => return Err(TokenError::Malformed("too short")),
            V2 => {
                let kid = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes"));
                self.check_with(kid, &[body], tag, now, ttl)?;
                HEAD_V2
            }
            _ => return Err(TokenError::Malformed("unknown version")),
        };
        let expires = u64::from_be_bytes(body[head - 14..head - 6].try_into().expect("8 bytes"));
        let mac = Mac(body[head - 6..head].try_into().expect("6 bytes"));
        let host = String::from_utf8(body[head..].to_vec())
            .map_err(|_| TokenError::Malformed("host name is not UTF-8"))?;
        if now > expires {
            return Err(TokenError::Expired {
                host,
                ago: now - expires,
            });
        }
        Ok(Claims { host, mac, expires })
    }

    /// Whether `tag` is the HMAC of the concatenated `parts` by key `kid`, and that key
    /// is valid at `now` (the rules of boot tokens: a pending key is accepted, a retired
    /// one until `ttl` + the grace after its retirement, a dropped one is named).
    fn check_with(
        &self,
        kid: u32,
        parts: &[&[u8]],
        tag: &[u8],
        now: u64,
        ttl: u64,
    ) -> Result<(), TokenError> {
        let Some(i) = self.keys.iter().position(|k| k.kid == kid) else {
            let id = kid_text(kid);
            return Err(match self.dropped.iter().find(|d| d.kid == id) {
                Some(d) => TokenError::RetiredKey {
                    kid: id,
                    ago: now.saturating_sub(d.retired),
                },
                None => TokenError::UnknownKey { kid: id },
            });
        };
        let mut m = self.keys[i].hmac();
        for p in parts {
            m.update(p);
        }
        m.verify_slice(tag).map_err(|_| TokenError::BadSignature)?;
        if self.valid_until(i, ttl).is_some_and(|u| now > u) {
            return Err(TokenError::RetiredKey {
                kid: kid_text(kid),
                ago: now.saturating_sub(self.retired_at(i).unwrap_or(now)),
            });
        }
        Ok(())
    }

    /// A tag over `msg` in `domain`, by the key that signs at `now`: (its key id, the
    /// HMAC-SHA256 of `domain | 0 | msg`). For messages other than boot tokens (the
    /// cluster's peer requests, `crate::cluster::peer`): a domain never starts with a
    /// token's version byte, so no tag made here is a token's and no token's is one.
    pub fn tag(&self, domain: &str, msg: &[u8], now: u64) -> (String, [u8; TAG_LEN]) {
        debug_assert!(!domain.is_empty() && !domain.as_bytes()[0].is_ascii_control());
        let key = self.signing(now);
        let mut m = key.hmac();
        m.update(domain.as_bytes());
        m.update(&[0]);
        m.update(msg);
        (key.id(), m.finalize().into_bytes().into())
    }

    /// Checks a [`Keyring::tag`] by key `kid` (8 hex digits) with the rules of tokens.
    pub fn check_tag(
        &self,
        domain: &str,
        kid: &str,
        msg: &[u8],
        tag: &[u8],
        now: u64,
        ttl: u64,
    ) -> Result<(), TokenError> {
        let kid = (kid.len() == 2 * KID_LEN && kid.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(kid, 16).ok())
            .flatten()
            .ok_or(TokenError::Malformed("the key id is not 8 hex digits"))?;
        self.check_with(kid, &[domain.as_bytes(), &[0], msg], tag, now, ttl)
    }

    /// The ring after a rotation at `now`: a new random key, accepted at once and
    /// signing from `now + activate_in` (in cluster mode: once every server has it);
    /// keys lapsed at `now` are dropped (remembered by id).
    pub fn rotate(&self, now: u64, activate_in: u64, ttl: u64) -> Result<Keyring, RotateError> {
        self.rotate_with(rand::random(), now, activate_in, ttl)
    }

    fn rotate_with(
        &self,
        mut secret: [u8; 32],
        now: u64,
        activate_in: u64,
        ttl: u64,
    ) -> Result<Keyring, RotateError> {
        let mut next = Keyring {
            keys: vec![],
            dropped: self.dropped.clone(),
        };
        for (i, k) in self.keys.iter().enumerate() {
            match self.valid_until(i, ttl) {
                Some(u) if now > u => next.dropped.push(Dropped {
                    kid: k.id(),
                    retired: self.retired_at(i).unwrap_or(now),
                }),
                _ => next.keys.push(k.clone()),
            }
        }
        if next.keys.len() >= MAX_KEYS {
            let first = self.keys.len() - next.keys.len();
            return Err(RotateError::Full(
                MAX_KEYS,
                self.valid_until(first, ttl).unwrap_or(now),
            ));
        }
        let excess = next.dropped.len().saturating_sub(MAX_DROPPED);
        next.dropped.drain(..excess);
        let last = next.keys.last().map_or(0, |k| k.active_from);
        let active_from = now.saturating_add(activate_in).max(last);
        let mut key = RingKey::new(secret, now, active_from);
        while next.keys.iter().any(|k| k.kid == key.kid) {
            // Two keys with one id would each refuse the other's tokens.
            secret = rand::random();
            key = RingKey::new(secret, now, active_from);
        }
        next.keys.push(key);
        Ok(next)
    }

    /// Each key's state at `now`.
    pub fn status(&self, now: u64, ttl: u64) -> Vec<KeyStatus> {
        let signing = self.signing(now).kid;
        (0..self.keys.len())
            .map(|i| {
                let k = &self.keys[i];
                let valid_until = self.valid_until(i, ttl);
                let state = if k.kid == signing {
                    "signing"
                } else if k.active_from > now {
                    "pending"
                } else if valid_until.is_some_and(|u| now > u) {
                    "lapsed"
                } else {
                    "retired"
                };
                KeyStatus {
                    kid: k.id(),
                    created: k.created,
                    active_from: k.active_from,
                    state,
                    valid_until,
                }
            })
            .collect()
    }

    /// The ring as stored: a ring of one key with nothing dropped as its 64 hex digits
    /// (the form before keyrings, which older servers read), else JSON.
    pub fn to_text(&self) -> String {
        if self.keys.len() == 1 && self.dropped.is_empty() {
            return hex::encode(self.keys[0].secret);
        }
        let file = RingFile {
            keys: self
                .keys
                .iter()
                .map(|k| KeyFile {
                    key: hex::encode(k.secret),
                    created: k.created,
                    active_from: k.active_from,
                })
                .collect(),
            dropped: self.dropped.clone(),
        };
        serde_json::to_string_pretty(&file).expect("a ring serializes")
    }

    /// A ring as [`Keyring::to_text`] writes it.
    pub fn parse(text: &str) -> Result<Keyring, String> {
        let text = text.trim();
        let secret = |hex_text: &str| -> Result<[u8; 32], String> {
            hex::decode(hex_text)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| "expected 64 hex digits".to_string())
        };
        if !text.starts_with('{') {
            return Ok(Keyring::single(secret(text)?, 0));
        }
        let file: RingFile =
            serde_json::from_str(text).map_err(|e| format!("not a keyring: {e}"))?;
        if file.keys.is_empty() {
            return Err("the keyring has no key".into());
        }
        let mut keys = Vec::with_capacity(file.keys.len());
        for (i, k) in file.keys.iter().enumerate() {
            let key = RingKey::new(
                secret(&k.key).map_err(|e| format!("key {i}: {e}"))?,
                k.created,
                k.active_from,
            );
            if keys
                .last()
                .is_some_and(|p: &RingKey| p.active_from > key.active_from)
            {
                return Err(format!("key {i} starts signing before the key before it"));
            }
            keys.push(key);
        }
        Ok(Keyring {
            keys,
            dropped: file.dropped,
        })
    }
}

/// The server's token keyring: a cheap handle shared by everything that signs or
/// checks tokens (HTTP, DHCP, XDP templates, the API), so a new ring installed once
/// ([`TokenKey::install`]) is used by all of them at once.
#[derive(Clone)]
pub struct TokenKey {
    ring: Arc<RwLock<Arc<Keyring>>>,
    /// `provision.token_ttl`: how long a retired key stays valid.
    ttl: u64,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// `provision.token_ttl`'s default, for keys made without a config.
const DEFAULT_TTL: u64 = 3600;

impl TokenKey {
    fn of(ring: Keyring) -> TokenKey {
        TokenKey {
            ring: Arc::new(RwLock::new(Arc::new(ring))),
            ttl: DEFAULT_TTL,
        }
    }

    /// A key derived from a configured secret of any length.
    pub fn from_secret(secret: &str) -> TokenKey {
        TokenKey::of(Keyring::single(Sha256::digest(secret.as_bytes()).into(), 0))
    }

    /// A fresh random key.
    pub fn generate() -> TokenKey {
        TokenKey::of(Keyring::generate(now_secs()))
    }

    /// This handle with retired keys valid `ttl` seconds (plus the grace) after their
    /// retirement.
    pub fn with_ttl(mut self, ttl: u64) -> TokenKey {
        self.ttl = ttl;
        self
    }

    /// The keyring the config asks for: `provision.secret`, else the one kept in
    /// `state_dir/token.key` (created on first use), else (no state_dir) a random key
    /// that lasts until the process exits, with a warning.
    pub fn from_config(cfg: &Config) -> Result<TokenKey, KeyError> {
        let ttl = cfg.provision.token_ttl;
        if let Some(secret) = cfg.provision.secret.as_deref().filter(|s| !s.is_empty()) {
            return Ok(TokenKey::from_secret(secret).with_ttl(ttl));
        }
        match &cfg.state_dir {
            Some(dir) => Ok(TokenKey::load_or_create(&dir.join(KEY_FILE))?.with_ttl(ttl)),
            None => {
                tracing::warn!(
                    "no provision.secret and no state_dir: boot tokens will not survive a restart"
                );
                Ok(TokenKey::generate().with_ttl(ttl))
            }
        }
    }

    /// Reads the ring at `path`, or creates it (one new key, mode 0600) if it does not
    /// exist. Safe against concurrent creators: the file appears whole, by a hard link.
    pub fn load_or_create(path: &Path) -> Result<TokenKey, KeyError> {
        Ok(TokenKey::of(load_or_create_ring(path)?))
    }

    /// The ring in use.
    pub fn ring(&self) -> Arc<Keyring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `ring` the one every holder of this handle signs and checks with; true if
    /// it differs from the one in use.
    pub fn install(&self, ring: Keyring) -> bool {
        let mut cur = self.ring.write().unwrap_or_else(|e| e.into_inner());
        if **cur == ring {
            return false;
        }
        *cur = Arc::new(ring);
        true
    }

    /// `provision.token_ttl` as this handle applies it.
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// A token for `claims`, signed with the ring's signing key.
    pub fn sign(&self, claims: &Claims) -> String {
        self.ring().sign(claims, now_secs())
    }

    /// The claims of `token` if it is well-formed, signed with a key of the ring still
    /// valid and not expired at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        self.ring().verify(token, now, self.ttl)
    }

    /// Reads `path` again whenever it changes (checked every second) until `stop`, and
    /// installs the ring it holds: how a standalone server picks up `xboot token-key
    /// rotate`. A file that does not read is logged and the ring in use stays.
    pub async fn follow_file(self, path: PathBuf, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let stamp = |p: &Path| {
            std::fs::metadata(p).ok().map(|m| {
                (
                    m.modified().ok(),
                    m.len(),
                    std::os::unix::fs::MetadataExt::ino(&m),
                )
            })
        };
        let mut seen = stamp(&path);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match read_ring(&path) {
                Ok(ring) => {
                    let signing = ring.signing(now_secs()).id();
                    if self.install(ring) {
                        tracing::info!(
                            "boot-token keyring {} read again: {} keys, signing with {signing}",
                            path.display(),
                            self.ring().keys().len()
                        );
                    }
                }
                Err(e) => tracing::warn!("{e}; the keyring in use stays"),
            }
        }
    }
}

/// Reads the ring at `path`.
pub fn read_ring(path: &Path) -> Result<Keyring, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.into(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let mode = std::fs::metadata(path)
        .map_err(read_err)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "token key {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    Keyring::parse(&text).map_err(|why| KeyError::Corrupt {
        path: path.into(),
        why,
    })
}

fn load_or_create_ring(path: &Path) -> Result<Keyring, KeyError> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| KeyError::StateDir {
                path: dir.into(),
                source,
            })?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(Keyring::generate(now_secs()).to_text().as_bytes())?;
            f.sync_all()?;
            match std::fs::hard_link(&tmp, path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        };
        let r = write();
        let _ = std::fs::remove_file(&tmp);
        r.map_err(|source| KeyError::Write {
            path: path.into(),
            source,
        })?;
    }
    read_ring(path)
}

/// Writes `ring` to `path` whole (a file beside it renamed over it), mode 0600.
pub fn write_ring(path: &Path, ring: &Keyring) -> Result<(), KeyError> {
    let tmp = path.with_extension(format!("new.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(ring.to_text().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        KeyError::Write {
            path: path.into(),
            source,
        }
    })
}

/// Rotates the ring in `path` (a standalone server's), under an exclusive lock of
/// `path.lock` so two rotations cannot lose one's key; returns the new ring.
pub fn rotate_file(path: &Path, activate_in: u64, ttl: u64) -> anyhow::Result<Keyring> {
    use std::os::fd::AsRawFd;
    let lock_path = path.with_extension("key.lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", lock_path.display()))?;
    // SAFETY: flock on a descriptor this function owns; released when `lock` closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        anyhow::bail!(
            "cannot lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        );
    }
    let ring = load_or_create_ring(path)?;
    let next = ring.rotate(now_secs(), activate_in, ttl)?;
    write_ring(path, &next)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 60;

    fn claims() -> Claims {
        Claims {
            host: "cn1".into(),
            mac: "aa:bb:cc:11:22:33".parse().unwrap(),
            expires: 1_000,
        }
    }

    fn claims_until(expires: u64) -> Claims {
        Claims {
            expires,
            ..claims()
        }
    }

    /// A token as servers before keyrings minted it (version 1: no key id).
    fn sign_v1(secret: [u8; 32], c: &Claims) -> String {
        let mut buf = vec![V1];
        buf.extend_from_slice(&c.expires.to_be_bytes());
        buf.extend_from_slice(&c.mac.0);
        buf.extend_from_slice(c.host.as_bytes());
        let mut m = <Hmac<Sha256>>::new_from_slice(&secret).unwrap();
        m.update(&buf);
        buf.extend_from_slice(&m.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(buf)
    }

    #[test]
    fn round_trip() {
        let k = TokenKey::from_secret("s3cret");
        let t = k.sign(&claims());
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{t}"
        );
        assert_eq!(k.verify(&t, 999).unwrap(), claims());
        assert_eq!(k.verify(&t, 1_000).unwrap(), claims());
    }

    #[test]
    fn refusals() {
        let k = TokenKey::from_secret("s3cret");
        let t = k.sign(&claims());
        // Same claims, another key (another key id).
        let other = TokenKey::from_secret("other");
        let forged = other.sign(&claims());
        let other_kid = other.ring().keys()[0].id();
        // Claims edited (host renamed, expiry moved) without re-signing.
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let edit = |at: usize, b: u8| {
            let mut r = raw.clone();
            r[at] = b;
            URL_SAFE_NO_PAD.encode(&r)
        };
        let edited = edit(HEAD_V2, b'X');
        let later = edit(HEAD_V2 - 7, 0xff);
        // Another key's id on this key's tag.
        let mut swapped = raw.clone();
        let other_raw = URL_SAFE_NO_PAD.decode(&forged).unwrap();
        swapped[1..5].copy_from_slice(&other_raw[1..5]);
        let swapped = URL_SAFE_NO_PAD.encode(&swapped);
        let mut truncated = raw.clone();
        truncated.truncate(raw.len() - 3);
        let truncated = URL_SAFE_NO_PAD.encode(&truncated);
        let rows: Vec<(&str, String, TokenError)> = vec![
            (
                "expired",
                t.clone(),
                TokenError::Expired {
                    host: "cn1".into(),
                    ago: 5,
                },
            ),
            (
                "other key",
                forged,
                TokenError::UnknownKey {
                    kid: other_kid.clone(),
                },
            ),
            (
                "key id swapped",
                swapped,
                TokenError::UnknownKey { kid: other_kid },
            ),
            ("edited host", edited, TokenError::BadSignature),
            ("edited expiry", later, TokenError::BadSignature),
            ("truncated", truncated, TokenError::BadSignature),
            (
                "much too short",
                t[..20].to_string(),
                TokenError::Malformed("too short"),
            ),
            (
                "unknown version",
                edit(0, 7),
                TokenError::Malformed("unknown version"),
            ),
            (
                "not base64",
                "a/b".into(),
                TokenError::Malformed("not URL-safe base64"),
            ),
            ("empty", String::new(), TokenError::Malformed("too short")),
        ];
        for (what, token, want) in rows {
            assert_eq!(k.verify(&token, 1_005).unwrap_err(), want, "{what}");
        }
        for cut in 1..t.len() {
            assert!(
                k.verify(&t[..cut], 0).is_err(),
                "prefix of {cut} chars accepted"
            );
        }
    }

    #[test]
    fn version_1_tokens_keep_working_until_they_expire() {
        let secret = [7u8; 32];
        let ring = Keyring::single(secret, 0);
        let old = sign_v1(secret, &claims_until(1_950));
        assert_eq!(ring.verify(&old, 1_500, TTL).unwrap(), claims_until(1_950));
        // Through a rotation: the old key is still valid, so is its token.
        let ring = ring.rotate(1_900, 0, TTL).unwrap();
        assert_eq!(ring.verify(&old, 1_950, TTL).unwrap(), claims_until(1_950));
        assert!(matches!(
            ring.verify(&old, 1_951, TTL),
            Err(TokenError::Expired { .. })
        ));
        // Signed with no key of the ring, or edited.
        let forged = sign_v1([8u8; 32], &claims_until(2_000));
        assert_eq!(
            ring.verify(&forged, 1_950, TTL),
            Err(TokenError::BadSignature)
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&old).unwrap();
        raw[HEAD_V1] = b'X';
        let edited = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            ring.verify(&edited, 1_950, TTL),
            Err(TokenError::BadSignature)
        );
        // Past the old key's retirement + ttl + grace, even a v1 token of it is refused.
        let lapsed = sign_v1(secret, &claims_until(9_999));
        assert_eq!(
            ring.verify(&lapsed, 1_900 + TTL + ROTATION_GRACE_SECS + 1, TTL),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn rotation_keeps_the_retired_key_for_ttl_then_refuses_it_by_name() {
        let ring = Keyring::generate(100);
        let old_kid = ring.keys()[0].id();
        let before = ring.sign(&claims_until(1_000 + TTL), 1_000);
        // Rotated at 1000, the new key signs from 1005.
        let ring = ring.rotate(1_000, 5, TTL).unwrap();
        let new_kid = ring.keys()[1].id();
        assert_ne!(old_kid, new_kid);
        assert_eq!(ring.signing(1_004).id(), old_kid, "pending key signs");
        assert_eq!(ring.signing(1_005).id(), new_kid);
        // The new key's tokens are accepted before it signs (a server that has the new
        // ring accepts another's token minted after activation).
        let new = ring.sign(&claims_until(1_100), 1_005);
        assert!(ring.verify(&new, 1_001, TTL).is_ok());
        let states: Vec<&str> = ring.status(1_001, TTL).iter().map(|s| s.state).collect();
        assert_eq!(states, ["signing", "pending"]);
        // The last token of the old key, signed the second before activation.
        let last_old = ring.sign(&claims_until(1_004 + TTL), 1_004);
        assert!(last_old.len() > 10);
        let until = 1_005 + TTL + ROTATION_GRACE_SECS;
        assert!(ring.verify(&before, 1_000 + TTL, TTL).is_ok());
        assert!(ring.verify(&last_old, 1_004 + TTL, TTL).is_ok());
        assert_eq!(ring.status(until, TTL)[0].state, "retired");
        assert_eq!(ring.status(until, TTL)[0].valid_until, Some(until));
        let e = ring.verify(&last_old, until + 1, TTL).unwrap_err();
        assert_eq!(
            e,
            TokenError::RetiredKey {
                kid: old_kid.clone(),
                ago: until + 1 - 1_005
            }
        );
        assert!(e.to_string().contains("retired"), "{e}");
        assert_eq!(ring.status(until + 1, TTL)[0].state, "lapsed");
        // The next rotation drops it and remembers its id: still refused by name.
        let ring = ring.rotate(until + 1, 0, TTL).unwrap();
        assert_eq!(ring.keys().len(), 2);
        assert!(matches!(
            ring.verify(&last_old, until + 2, TTL),
            Err(TokenError::RetiredKey { kid, .. }) if kid == old_kid
        ));
        assert!(
            ring.verify(&new, until + 2, TTL).is_ok(),
            "the new key is valid"
        );
        let text = ring.to_text();
        assert_eq!(Keyring::parse(&text).unwrap(), ring);
    }

    #[test]
    fn a_full_ring_refuses_to_rotate() {
        let mut ring = Keyring::generate(0);
        for i in 1..MAX_KEYS as u64 {
            ring = ring.rotate(i, 0, TTL).unwrap();
        }
        let e = ring.rotate(10, 0, TTL).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{}", 1 + TTL + ROTATION_GRACE_SECS)),
            "{e}"
        );
        // Once the oldest retired key lapsed, it goes and the rotation is made.
        let ring = ring.rotate(2 + TTL + ROTATION_GRACE_SECS, 0, TTL).unwrap();
        assert_eq!(ring.keys().len(), MAX_KEYS);
    }

    /// Any token signed at t by the key that signs at t (on a server up to the grace
    /// late to learn of rotations) verifies until it expires, whatever rotations happen.
    #[test]
    fn no_token_is_refused_before_it_expires_across_rotations() {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            let mut history = vec![(0u64, Keyring::generate(0))];
            let mut t = 0;
            for _ in 0..20 {
                t += rng.gen_range(0..=2 * TTL);
                let ring = history.last().unwrap().1.clone();
                if let Ok(next) = ring.rotate(t, rng.gen_range(0..10), TTL) {
                    history.push((t, next));
                }
            }
            let ring_at = |t: u64| &history.iter().rev().find(|(at, _)| *at <= t).unwrap().1;
            for _ in 0..50 {
                let signed = rng.gen_range(0..=t);
                let late = rng.gen_range(0..=ROTATION_GRACE_SECS);
                let signer = ring_at(signed.saturating_sub(late));
                let tok = signer.sign(&claims_until(signed + TTL), signed);
                let check = rng.gen_range(signed..=signed + TTL);
                assert!(
                    ring_at(check).verify(&tok, check, TTL).is_ok(),
                    "signed at {signed} ({late}s late), refused at {check}: {:?}",
                    ring_at(check).verify(&tok, check, TTL)
                );
            }
        }
    }

    #[test]
    fn ring_text_forms() {
        let one = Keyring::single([1u8; 32], 0);
        assert_eq!(one.to_text(), "01".repeat(32));
        assert_eq!(
            Keyring::parse(&format!("{}\n", "01".repeat(32))).unwrap(),
            one
        );
        let two = one.rotate(50, 5, TTL).unwrap();
        assert!(two.to_text().starts_with('{'));
        assert_eq!(Keyring::parse(&two.to_text()).unwrap(), two);
        for (bad, want) in [
            ("zz", "64 hex digits"),
            ("{\"keys\": []}", "no key"),
            (
                "{\"keys\": [{\"key\": \"00\", \"created\": 0, \"active_from\": 0}]}",
                "key 0",
            ),
            ("{\"keys\": 3}", "not a keyring"),
        ] {
            let e = Keyring::parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn key_file_persists_with_mode_0600_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(KEY_FILE);
        let k1 = TokenKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let t = k1.sign(&claims());
        let k2 = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(
            k2.verify(&t, 0).unwrap(),
            claims(),
            "a restart keeps the key"
        );
        let ring = rotate_file(&path, 0, TTL).unwrap();
        assert_eq!(ring.keys().len(), 2);
        assert!(k2.install(read_ring(&path).unwrap()));
        assert!(
            !k2.install(read_ring(&path).unwrap()),
            "the same ring again"
        );
        assert_eq!(
            k2.verify(&t, 0).unwrap(),
            claims(),
            "the retired key is valid"
        );
        assert_ne!(k2.sign(&claims()), k1.sign(&claims()));
        std::fs::write(&path, "zz").unwrap();
        let e = TokenKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains(KEY_FILE), "{e}");
    }

    #[test]
    fn config_secret_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            state_dir: Some(dir.path().into()),
            ..Config::default()
        };
        cfg.provision.secret = Some("s3cret".into());
        let t = TokenKey::from_config(&cfg).unwrap().sign(&claims());
        assert!(TokenKey::from_secret("s3cret").verify(&t, 0).is_ok());
        assert!(!dir.path().join(KEY_FILE).exists());
        cfg.provision.secret = None;
        TokenKey::from_config(&cfg).unwrap();
        assert!(dir.path().join(KEY_FILE).exists());
    }
}
