//! API accounts: users with argon2id password hashes, and scoped, expiring bearer tokens.
//!
//! Three roles, each allowing what the one before allows: `read-only` (every `GET`),
//! `operator` (inventory changes, power), `admin` (accounts, tokens, `db/restore`).
//! A token is `xbt_` and 32 random bytes (base64url); only the SHA-256 of the secret is
//! kept (the secret has 256 bits of entropy, so a fast hash is enough; passwords get
//! argon2id). Users sign in (`POST /v1/auth/signin`) for a session token of
//! [`SESSION_TTL`], or an admin creates long-lived tokens (`xboot token create`).
//!
//! Records live in the inventory store (tables `api_users`, `api_tokens`) and in memory
//! (every request is checked against the memory copy; changes are written through).
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::inventory::{AccountTable, Store, StoreError};

/// Lifetime of a sign-in token (Grendel's: 8 hours).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Shortest password `xboot user add` takes (Grendel's sign-up minimum).
pub const MIN_PASSWORD: usize = 8;
const TOKEN_PREFIX: &str = "xbt_";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ReadOnly,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AccountError;
    /// xboot's names, and Grendel's `user` (its default role: reads) and `admin`.
    fn from_str(s: &str) -> Result<Role, AccountError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read-only" | "readonly" | "read" | "user" => Ok(Role::ReadOnly),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(AccountError::Invalid(format!(
                "unknown role {s:?}: one of read-only, operator, admin"
            ))),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub role: Role,
    /// argon2id PHC string.
    pub hash: String,
    /// Unix seconds.
    pub created: u64,
}

/// What the API shows of a user (never the hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub username: String,
    #[schema(value_type = String, example = "operator")]
    pub role: Role,
    pub created: u64,
}

/// A stored token (the secret itself is never kept).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// The first 12 hex digits of the secret's SHA-256: what `xboot token revoke` takes.
    pub id: String,
    /// A label (who or what uses it).
    pub name: String,
    #[schema(value_type = String, example = "read-only")]
    pub role: Role,
    /// The user it was issued to (sign-in), if any: deleting the user revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub created: u64,
    /// Unix seconds; absent: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// Who a request comes from, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a credential was refused. `BadCredentials` is the one answer for an unknown user
/// and a wrong password alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid username or password")]
    BadCredentials,
    #[error("unknown or revoked token")]
    UnknownToken,
    #[error("token expired")]
    Expired,
}

#[derive(Default)]
struct Data {
    users: BTreeMap<String, User>,
    /// By the hex SHA-256 of the secret.
    tokens: HashMap<String, TokenInfo>,
}

/// The accounts, in memory and (when the server has a store) in the store.
pub struct Accounts {
    store: Option<Arc<Store>>,
    data: RwLock<Data>,
    /// A hash verified for unknown users, so that they take as long as known ones
    /// (made on the first sign-in).
    dummy_hash: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

/// A token lifetime: `infinite` (or empty, `never`) for none, else a duration (`8h`,
/// `30d`).
pub fn parse_ttl(s: &str) -> Result<Option<Duration>, AccountError> {
    match s.trim() {
        "" | "infinite" | "never" => Ok(None),
        d => humantime::parse_duration(d)
            .map(Some)
            .map_err(|e| AccountError::Invalid(format!("expire {d:?}: {e}"))),
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hash_hex(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(format!("cannot hash the password: {e}")))
}

/// A user name: 1 to 64 of letters, digits and `._-@:` (no spaces, nothing a shell or a
/// log line would mangle).
fn check_username(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "invalid user name {name:?}: 1 to 64 letters, digits or ._-@:"
        )))
    }
}

impl Accounts {
    /// The accounts of `store` (none without a store: in memory only).
    pub fn load(store: Option<Arc<Store>>) -> Result<Accounts, StoreError> {
        let mut data = Data::default();
        if let Some(s) = &store {
            // A record that no longer reads is skipped (and so refused): safer than
            // failing the start of the whole server.
            for (k, v) in s.account_records(AccountTable::Users)? {
                match serde_json::from_slice::<User>(&v) {
                    Ok(u) => {
                        data.users.insert(k, u);
                    }
                    Err(e) => tracing::warn!("API user {k}: unreadable record skipped: {e}"),
                }
            }
            for (k, v) in s.account_records(AccountTable::Tokens)? {
                match serde_json::from_slice::<TokenInfo>(&v) {
                    Ok(t) => {
                        data.tokens.insert(k, t);
                    }
                    Err(e) => tracing::warn!("API token record skipped: {e}"),
                }
            }
        }
        Ok(Accounts {
            store,
            data: RwLock::new(data),
            dummy_hash: std::sync::OnceLock::new(),
        })
    }

    /// In memory only (tests, a server without a store).
    pub fn memory() -> Accounts {
        Accounts::load(None).expect("no store, no error")
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Data> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(
        &self,
        table: AccountTable,
        records: &[(&str, Option<&[u8]>)],
    ) -> Result<(), AccountError> {
        if let Some(s) = &self.store {
            s.write_account_records(table, records)?;
        }
        Ok(())
    }

    /// True when no user and no unexpired token exists (a TCP listener is refused then).
    pub fn is_empty(&self, now: u64) -> bool {
        let d = self.read();
        d.users.is_empty()
            && d.tokens
                .values()
                .all(|t| t.expires.is_some_and(|e| e <= now))
    }

    pub fn users(&self) -> Vec<UserView> {
        self.read()
            .users
            .values()
            .map(|u| UserView {
                username: u.username.clone(),
                role: u.role,
                created: u.created,
            })
            .collect()
    }

    /// Adds a user, or with `replace` changes an existing one's password and role.
    /// Blocking (argon2): call from a blocking thread.
    pub fn add_user(
        &self,
        username: &str,
        password: &str,
        role: Role,
        replace: bool,
    ) -> Result<UserView, AccountError> {
        check_username(username)?;
        if password.chars().count() < MIN_PASSWORD {
            return Err(AccountError::Invalid(format!(
                "the password needs at least {MIN_PASSWORD} characters"
            )));
        }
        if !replace && self.read().users.contains_key(username) {
            return Err(AccountError::Exists(format!("user {username} exists")));
        }
        let user = User {
            username: username.to_string(),
            role,
            hash: hash_password(password)?,
            created: now_secs(),
        };
        let doc = serde_json::to_vec(&user).expect("user serializes");
        let mut d = self.write();
        self.persist(AccountTable::Users, &[(username, Some(&doc))])?;
        d.users.insert(username.to_string(), user);
        Ok(UserView {
            username: username.to_string(),
            role,
            created: now_secs(),
        })
    }

    /// Deletes a user and revokes the tokens it signed in for.
    pub fn delete_user(&self, username: &str) -> Result<(), AccountError> {
        let mut d = self.write();
        if !d.users.contains_key(username) {
            return Err(AccountError::NotFound(format!("no user {username}")));
        }
        let revoked: Vec<String> = d
            .tokens
            .iter()
            .filter(|(_, t)| t.user.as_deref() == Some(username))
            .map(|(k, _)| k.clone())
            .collect();
        let tokens: Vec<(&str, Option<&[u8]>)> =
            revoked.iter().map(|k| (k.as_str(), None)).collect();
        self.persist(AccountTable::Tokens, &tokens)?;
        self.persist(AccountTable::Users, &[(username, None)])?;
        d.users.remove(username);
        for k in &revoked {
            d.tokens.remove(k);
        }
        Ok(())
    }

    /// Checks a password. An unknown user and a wrong password give the same error,
    /// after the same work (a hash is verified either way). Blocking (argon2).
    pub fn verify_password(&self, username: &str, password: &str) -> Result<Role, AuthError> {
        let user = self.read().users.get(username).cloned();
        let dummy = || {
            self.dummy_hash
                .get_or_init(|| hash_password("xboot-dummy-password").expect("argon2 hashes"))
                .as_str()
        };
        let hash = user.as_ref().map_or_else(dummy, |u| &u.hash);
        let ok = PasswordHash::new(hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        match user {
            Some(u) if ok => Ok(u.role),
            _ => Err(AuthError::BadCredentials),
        }
    }

    /// Creates a token; returns the secret (shown once) and its record. `ttl` None:
    /// never expires.
    pub fn create_token(
        &self,
        name: &str,
        role: Role,
        ttl: Option<Duration>,
        user: Option<&str>,
    ) -> Result<(String, TokenInfo), AccountError> {
        self.create_token_at(name, role, ttl, user, now_secs())
    }

    /// [`Accounts::create_token`] as if it were `now` (unix seconds).
    pub fn create_token_at(
        &self,
        name: &str,
        role: Role,
        ttl: Option<Duration>,
        user: Option<&str>,
        now: u64,
    ) -> Result<(String, TokenInfo), AccountError> {
        use base64::Engine;
        use rand::RngCore;
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let key = hash_hex(&secret);
        let name = if name.is_empty() {
            user.unwrap_or("token")
        } else {
            name
        };
        let info = TokenInfo {
            id: key[..12].to_string(),
            name: name.to_string(),
            role,
            user: user.map(str::to_string),
            created: now,
            expires: ttl.map(|t| now.saturating_add(t.as_secs().max(1))),
        };
        let doc = serde_json::to_vec(&info).expect("token serializes");
        let mut d = self.write();
        // Expired tokens go as new ones come (sign-ins would otherwise pile up).
        let expired: Vec<String> = d
            .tokens
            .iter()
            .filter(|(_, t)| t.expires.is_some_and(|e| e <= now_secs()))
            .map(|(k, _)| k.clone())
            .collect();
        let mut records: Vec<(&str, Option<&[u8]>)> =
            expired.iter().map(|k| (k.as_str(), None)).collect();
        records.push((&key, Some(&doc)));
        self.persist(AccountTable::Tokens, &records)?;
        for k in &expired {
            d.tokens.remove(k);
        }
        d.tokens.insert(key, info.clone());
        Ok((secret, info))
    }

    pub fn tokens(&self) -> Vec<TokenInfo> {
        let mut out: Vec<TokenInfo> = self.read().tokens.values().cloned().collect();
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        out
    }

    /// Revokes the token whose id (or a longer prefix of its hash) is `id`.
    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo, AccountError> {
        let id = id.trim().to_ascii_lowercase();
        let mut d = self.write();
        let keys: Vec<String> = d
            .tokens
            .keys()
            .filter(|k| id.len() >= 12 && k.starts_with(&id))
            .cloned()
            .collect();
        let [key] = keys.as_slice() else {
            return Err(AccountError::NotFound(format!("no token {id}")));
        };
        self.persist(AccountTable::Tokens, &[(key, None)])?;
        Ok(d.tokens.remove(key).expect("found above"))
    }

    /// The principal a bearer secret stands for at `now`.
    pub fn authenticate(&self, secret: &str, now: u64) -> Result<Principal, AuthError> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Err(AuthError::UnknownToken);
        }
        let d = self.read();
        let t = d
            .tokens
            .get(&hash_hex(secret))
            .ok_or(AuthError::UnknownToken)?;
        if t.expires.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        // A sign-in token carries its user's role as it is now (a demoted user's
        // session loses what it lost).
        let role = match &t.user {
            Some(u) => match d.users.get(u) {
                Some(user) => t.role.min(user.role),
                None => return Err(AuthError::UnknownToken),
            },
            None => t.role,
        };
        Ok(Principal {
            name: t.user.clone().unwrap_or_else(|| t.name.clone()),
            role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_scoped_expire_and_revoke() {
        let a = Accounts::memory();
        assert!(a.is_empty(now_secs()));
        let (ro, info) = a.create_token("ci", Role::ReadOnly, None, None).unwrap();
        assert!(!a.is_empty(now_secs()));
        assert_eq!(
            a.authenticate(&ro, now_secs()).unwrap(),
            Principal {
                name: "ci".into(),
                role: Role::ReadOnly
            }
        );
        let (short, _) = a
            .create_token("short", Role::Admin, Some(Duration::from_secs(60)), None)
            .unwrap();
        assert_eq!(
            a.authenticate(&short, now_secs() + 61),
            Err(AuthError::Expired)
        );
        assert_eq!(
            a.authenticate("xbt_nope", now_secs()),
            Err(AuthError::UnknownToken)
        );
        a.revoke_token(&info.id).unwrap();
        assert_eq!(
            a.authenticate(&ro, now_secs()),
            Err(AuthError::UnknownToken)
        );
        // An expired token is dropped when the next one is made.
        a.create_token_at("old", Role::Admin, Some(Duration::from_secs(1)), None, 1000)
            .unwrap();
        assert_eq!(a.tokens().len(), 2, "short, old");
        a.create_token("new", Role::Admin, None, None).unwrap();
        let mut names: Vec<String> = a.tokens().into_iter().map(|t| t.name).collect();
        names.sort();
        assert_eq!(names, ["new", "short"]);
        assert!(a.revoke_token("abc").is_err(), "a short id matches nothing");
    }

    #[test]
    fn passwords_and_unknown_users_give_one_answer() {
        let a = Accounts::memory();
        assert!(a.add_user("ann", "short", Role::Admin, false).is_err());
        assert!(a
            .add_user("bad name", "long enough", Role::Admin, false)
            .is_err());
        a.add_user("ann", "correct horse", Role::Operator, false)
            .unwrap();
        assert!(matches!(
            a.add_user("ann", "correct horse", Role::Admin, false),
            Err(AccountError::Exists(_))
        ));
        assert_eq!(
            a.verify_password("ann", "correct horse"),
            Ok(Role::Operator)
        );
        let wrong = a.verify_password("ann", "wrong horse").unwrap_err();
        let unknown = a.verify_password("bob", "correct horse").unwrap_err();
        assert_eq!(wrong, unknown);
        assert_eq!(wrong.to_string(), unknown.to_string());
        // A session token follows its user: deleting the user revokes it.
        let (s, _) = a
            .create_token("", Role::Operator, Some(SESSION_TTL), Some("ann"))
            .unwrap();
        assert_eq!(a.authenticate(&s, now_secs()).unwrap().role, Role::Operator);
        a.delete_user("ann").unwrap();
        assert_eq!(a.authenticate(&s, now_secs()), Err(AuthError::UnknownToken));
    }

    #[test]
    fn accounts_survive_a_reopen_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let secret = {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let a = Accounts::load(Some(store)).unwrap();
            a.add_user("ann", "correct horse", Role::Admin, false)
                .unwrap();
            a.create_token("ci", Role::Operator, None, None).unwrap().0
        };
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let a = Accounts::load(Some(store)).unwrap();
        assert_eq!(a.verify_password("ann", "correct horse"), Ok(Role::Admin));
        assert_eq!(
            a.authenticate(&secret, now_secs()).unwrap().role,
            Role::Operator
        );
        // The store holds the hash of the secret, not the secret.
        let raw = std::fs::read(dir.path().join(crate::inventory::store::FILE_NAME)).unwrap();
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}
