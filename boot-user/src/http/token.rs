//! Signed boot tokens: every boot URL carries one, naming the host, the MAC it boots
//! from and an expiry, signed with HMAC-SHA256.
//!
//! Wire form: URL-safe base64 (no padding) of
//! `version (1) | expiry, unix seconds (8, big-endian) | MAC (6) | host name | tag (32)`,
//! where the tag is HMAC-SHA256 over everything before it.
//!
//! The key is `SHA-256(provision.secret)` when the config sets a secret; otherwise 32
//! random bytes generated once and kept in `state_dir/token.key` (mode 0600), so a
//! restart does not invalidate the URLs of nodes in the middle of a boot.
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac as _};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::inventory::Mac;

const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
/// version + expiry + MAC.
const HEAD_LEN: usize = 1 + 8 + 6;
/// File name of the generated key under `state_dir`.
pub const KEY_FILE: &str = "token.key";

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
    #[error("token key {path} is corrupt: expected 64 hex digits")]
    Corrupt { path: PathBuf },
}

/// The token signing key.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKey {
    /// A key derived from a configured secret of any length.
    pub fn from_secret(secret: &str) -> TokenKey {
        TokenKey(Sha256::digest(secret.as_bytes()).into())
    }

    /// A fresh random key.
    pub fn generate() -> TokenKey {
        TokenKey(rand::random())
    }

    /// The key the config asks for: `provision.secret`, else the one kept in
    /// `state_dir/token.key` (created on first use), else (no state_dir) a random key
    /// that lasts until the process exits, with a warning.
    pub fn from_config(cfg: &Config) -> Result<TokenKey, KeyError> {
        if let Some(secret) = cfg.provision.secret.as_deref().filter(|s| !s.is_empty()) {
            return Ok(TokenKey::from_secret(secret));
        }
        match &cfg.state_dir {
            Some(dir) => TokenKey::load_or_create(&dir.join(KEY_FILE)),
            None => {
                tracing::warn!(
                    "no provision.secret and no state_dir: boot tokens will not survive a restart"
                );
                Ok(TokenKey::generate())
            }
        }
    }

    /// Reads the key at `path`, or creates it (mode 0600) if it does not exist. Safe
    /// against concurrent creators: the file appears whole, by a hard link.
    pub fn load_or_create(path: &Path) -> Result<TokenKey, KeyError> {
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
                f.write_all(hex::encode(TokenKey::generate().0).as_bytes())?;
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
        let bytes =
            hex::decode(text.trim()).map_err(|_| KeyError::Corrupt { path: path.into() })?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Corrupt { path: path.into() })?;
        Ok(TokenKey(key))
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256>>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// A token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut buf = Vec::with_capacity(HEAD_LEN + claims.host.len() + TAG_LEN);
        buf.push(VERSION);
        buf.extend_from_slice(&claims.expires.to_be_bytes());
        buf.extend_from_slice(&claims.mac.0);
        buf.extend_from_slice(claims.host.as_bytes());
        let mut m = self.mac();
        m.update(&buf);
        buf.extend_from_slice(&m.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// The claims of `token` if it is well-formed, signed with this key and not
    /// expired at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Malformed("not URL-safe base64"))?;
        if raw.len() < HEAD_LEN + TAG_LEN {
            return Err(TokenError::Malformed("too short"));
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let mut m = self.mac();
        m.update(body);
        m.verify_slice(tag).map_err(|_| TokenError::BadSignature)?;
        if body[0] != VERSION {
            return Err(TokenError::Malformed("unknown version"));
        }
        let expires = u64::from_be_bytes(body[1..9].try_into().expect("8 bytes"));
        let mac = Mac(body[9..15].try_into().expect("6 bytes"));
        let host = String::from_utf8(body[HEAD_LEN..].to_vec())
            .map_err(|_| TokenError::Malformed("host name is not UTF-8"))?;
        if now > expires {
            return Err(TokenError::Expired {
                host,
                ago: now - expires,
            });
        }
        Ok(Claims { host, mac, expires })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            host: "cn1".into(),
            mac: "aa:bb:cc:11:22:33".parse().unwrap(),
            expires: 1_000,
        }
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
        // Same claims, another key.
        let forged = TokenKey::from_secret("other").sign(&claims());
        // Claims edited (host renamed) without re-signing.
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[HEAD_LEN] = b'X';
        let edited = URL_SAFE_NO_PAD.encode(&raw);
        raw.truncate(raw.len() - 3);
        let truncated = URL_SAFE_NO_PAD.encode(&raw);
        let rows: Vec<(&str, String, TokenError)> = vec![
            (
                "expired",
                t.clone(),
                TokenError::Expired {
                    host: "cn1".into(),
                    ago: 5,
                },
            ),
            ("other key", forged, TokenError::BadSignature),
            ("edited", edited, TokenError::BadSignature),
            ("truncated", truncated, TokenError::BadSignature),
            (
                "much too short",
                t[..20].to_string(),
                TokenError::Malformed("too short"),
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
    fn key_file_persists_with_mode_0600() {
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
