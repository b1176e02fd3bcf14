//! The persistent inventory store: `state_dir/inventory.redb`, an embedded transactional
//! database (redb). Hosts and images are kept as JSON documents keyed by name. Every change
//! is one write transaction, committed durably before the running inventory is swapped, so
//! a crash leaves either the old inventory or the new one, never half of a change.
//!
//! The store holds one process: a second `xboot serve` on the same state dir gets a clear
//! "in use" error instead of a corrupted file. An existing file is read whole on a copy
//! before it is opened for writing, so a damaged one is refused unchanged; `check-config`
//! reads a copy only. After an I/O error (a full disk) the file is opened again for the
//! next change instead of failing every change until a restart.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableTable, TableDefinition};

use super::model::{Host, Image};
use super::Inventory;

const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// The entries as the inventory files held them when last applied (`host/NAME`,
/// `image/NAME`): an entry a file still holds unchanged keeps its stored state at start.
const FILE_ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("file_entries");
/// API accounts (`crate::api::accounts`): users by name, tokens by the SHA-256 of their
/// secret; JSON documents like the inventory's.
const API_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_users");
const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");

/// Which table of API accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountTable {
    Users,
    Tokens,
}

impl AccountTable {
    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            AccountTable::Users => API_USERS,
            AccountTable::Tokens => API_TOKENS,
        }
    }
}
/// Cluster mode: what the store is a snapshot of (`revision`: the etcd revision its
/// hosts and images are at, decimal text), written in the transaction of the change.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// Entries of the inventory files as last applied, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileEntries {
    pub hosts: std::collections::HashMap<String, Host>,
    pub images: std::collections::HashMap<String, Image>,
}

/// File name of the store inside the state dir.
pub const FILE_NAME: &str = "inventory.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (a running server) has the store open.
    #[error("inventory store {path}: in use by another xboot process")]
    InUse { path: PathBuf },
    #[error("inventory store {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("inventory store {path}: {entry}: unreadable record: {message}")]
    Decode {
        path: PathBuf,
        entry: String,
        message: String,
    },
}

/// A set of upserts and deletions, applied in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub put_hosts: Vec<Host>,
    pub delete_hosts: Vec<String>,
    pub put_images: Vec<Image>,
    pub delete_images: Vec<String>,
}

impl Change {
    /// What turns (`old_hosts`, `old_images`) into (`hosts`, `images`), matching by name.
    pub fn diff(
        old_hosts: &[Host],
        old_images: &[Image],
        hosts: &[Host],
        images: &[Image],
    ) -> Change {
        let (put_hosts, delete_hosts) = diff_by(old_hosts, hosts, |h| &h.name);
        let (put_images, delete_images) = diff_by(old_images, images, |i| &i.name);
        Change {
            put_hosts,
            delete_hosts,
            put_images,
            delete_images,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.put_hosts.is_empty()
            && self.delete_hosts.is_empty()
            && self.put_images.is_empty()
            && self.delete_images.is_empty()
    }

    /// Makes this change on whole lists: deletions first, then upserts by name.
    pub fn apply_to(&self, hosts: &mut Vec<Host>, images: &mut Vec<Image>) {
        let gone: std::collections::HashSet<&String> = self.delete_hosts.iter().collect();
        hosts.retain(|h| !gone.contains(&h.name));
        let gone: std::collections::HashSet<&String> = self.delete_images.iter().collect();
        images.retain(|i| !gone.contains(&i.name));
        super::merge(
            hosts,
            images,
            super::Loaded {
                hosts: self.put_hosts.clone(),
                images: self.put_images.clone(),
                ..Default::default()
            },
        );
    }
}

fn diff_by<T: Clone + PartialEq>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
) -> (Vec<T>, Vec<String>) {
    let old_by: std::collections::HashMap<&String, &T> = old.iter().map(|t| (name(t), t)).collect();
    let new_names: std::collections::HashSet<&String> = new.iter().map(&name).collect();
    let put = new
        .iter()
        .filter(|t| old_by.get(name(t)) != Some(t))
        .cloned()
        .collect();
    let delete = old
        .iter()
        .map(&name)
        .filter(|n| !new_names.contains(n))
        .cloned()
        .collect();
    (put, delete)
}

/// Where validated inventory changes are committed: this server's own store
/// (standalone), or a store shared by many servers ([`crate::cluster`]'s etcd). Small on
/// purpose, so that another shared store (PostgreSQL) can follow.
pub trait Backend: Send + Sync {
    /// The inventory a change is to be made on and the revision it is at (0 for a store
    /// with no revisions), given the running one.
    fn base(&self, running: Arc<Inventory>) -> (Arc<Inventory>, u64);
    /// Commits `change`, made on `base` at `revision`. A conflict is returned once the
    /// change that conflicted is in [`Backend::base`].
    fn commit(
        &self,
        base: Arc<Inventory>,
        revision: u64,
        change: Change,
    ) -> BoxFuture<'static, Result<Committed, CommitError>>;
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What is left to the caller after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Swap the validated inventory in (the store does not serve).
    Swap,
    /// Nothing: the store's own follower has put the change in place.
    InPlace,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer changed what this change was made on: make it again on the new base.
    #[error("the inventory was changed by another writer at the same time")]
    Conflict,
    /// The store cannot be reached: nothing was committed.
    #[error("the inventory store is unreachable: {0} (the change was not applied)")]
    Unavailable(String),
    /// The store was sent the change and did not confirm it: it may be committed later
    /// (etcd keeps a proposal it could not answer in time, and commits it once a
    /// quorum is back), or never. Told apart from [`CommitError::Unavailable`] so that
    /// nobody takes it for a refusal and writes something else on that belief.
    /// With `committed > 0`, a change split into several transactions is at least
    /// partly applied.
    #[error("{}", unknown_text(.why, *.committed, *.of))]
    Unknown {
        why: String,
        /// Transactions of the change (split at `cluster.max_txn_ops`) that committed
        /// before the one unconfirmed.
        committed: usize,
        of: usize,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unknown_text(why: &str, committed: usize, of: usize) -> String {
    if committed == 0 {
        return format!(
            "the inventory store did not confirm the change after it was sent: it may still \
             be applied (outcome unknown: look before writing again): {why}"
        );
    }
    format!(
        "the inventory store committed {committed} of the change's {of} transactions and \
         did not confirm the next: the change is partly applied, maybe more (look before \
         writing again): {why}"
    )
}

impl CommitError {
    /// What became of the change: `not_applied` (refused, or never sent), `unknown`
    /// (sent, unconfirmed: it may still commit), `partial` (some of its transactions
    /// committed, the rest maybe), None for other errors. The API's 503 carries it as
    /// `outcome`.
    pub fn outcome(&self) -> Option<&'static str> {
        match self {
            CommitError::Unavailable(_) => Some("not_applied"),
            CommitError::Unknown { committed: 0, .. } => Some("unknown"),
            CommitError::Unknown { .. } => Some("partial"),
            _ => None,
        }
    }
}

impl Backend for Arc<Store> {
    fn base(&self, running: Arc<Inventory>) -> (Arc<Inventory>, u64) {
        (running, 0)
    }

    fn commit(
        &self,
        _base: Arc<Inventory>,
        _revision: u64,
        change: Change,
    ) -> BoxFuture<'static, Result<Committed, CommitError>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.apply(&change))
                .await
                .map_err(|e| CommitError::Unavailable(e.to_string()))??;
            Ok(Committed::Swap)
        })
    }
}

impl Change {
    /// The inventory `self` (made on `old`) makes of `latest`, a newer inventory: the
    /// entries it deletes are deleted, those it puts are put, and a host it changes
    /// that another writer changed too keeps the other writer's fields where this change
    /// left them as they were in `old` (a `complete` racing a tag edit loses neither).
    pub fn rebase(&self, old: &Inventory, latest: &Inventory) -> (Vec<Host>, Vec<Image>) {
        let merged = self.rebased(old, latest);
        let (mut hosts, mut images) = (latest.hosts().to_vec(), latest.images().to_vec());
        merged.apply_to(&mut hosts, &mut images);
        (hosts, images)
    }

    /// [`Change::rebase`] as a change to make on `latest`, at the change's cost (no
    /// whole list is read or written): the entries it puts, merged field by field where
    /// another writer changed them since `old`, and the same deletions.
    pub fn rebased(&self, old: &Inventory, latest: &Inventory) -> Change {
        let put_hosts = self
            .put_hosts
            .iter()
            .map(
                |ours| match (old.host(&ours.name), latest.host(&ours.name)) {
                    (Some(before), Some(now)) if before != now => merge_fields(before, ours, now),
                    _ => ours.clone(),
                },
            )
            .collect();
        let put_images = self
            .put_images
            .iter()
            .map(
                |ours| match (old.image(&ours.name), latest.image(&ours.name)) {
                    (Some(before), Some(now)) if before != now => merge_fields(before, ours, now),
                    _ => ours.clone(),
                },
            )
            .collect();
        Change {
            put_hosts,
            put_images,
            delete_hosts: self.delete_hosts.clone(),
            delete_images: self.delete_images.clone(),
        }
    }
}

/// `now` with the top-level fields that `ours` changed from `before` taken from `ours`.
fn merge_fields<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(
    before: &T,
    ours: &T,
    now: &T,
) -> T {
    let as_map = |t: &T| match serde_json::to_value(t) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (b, o, mut n) = (as_map(before), as_map(ours), as_map(now));
    for (k, v) in &o {
        if b.get(k) != Some(v) {
            n.insert(k.clone(), v.clone());
        }
    }
    for k in b.keys() {
        if !o.contains_key(k) {
            n.remove(k);
        }
    }
    serde_json::from_value(serde_json::Value::Object(n)).unwrap_or_else(|_| ours.clone())
}

pub struct Store {
    /// None after an I/O error: redb refuses every later operation once one failed
    /// ("Previous I/O error occurred"), so the next operation opens the file again (a
    /// full disk that has space again works without a restart).
    db: Mutex<Option<Database>>,
    path: PathBuf,
    /// Set by [`Store::db_err`] when the failing operation met an I/O error.
    io_failed: AtomicBool,
    /// The temporary copy a read-only store reads (removed on drop).
    copy: Option<CopyFile>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// A file removed when dropped.
struct CopyFile(PathBuf);

impl Drop for CopyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Store {
    /// Opens (creating if needed) the store in `state_dir`. An existing file is checked
    /// first on a copy (redb writes to a file it opens, and repairs what it can): a
    /// damaged or empty one is refused with not a byte of it changed.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(FILE_NAME);
        let err = |message: String| StoreError::Db {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(state_dir)
            .map_err(|e| err(format!("cannot create {}: {e}", state_dir.display())))?;
        check_header(&path).map_err(|m| err(format!("{m}; {DAMAGED_HINT}")))?;
        if path.exists() {
            // Every record must read before the file is opened for writing.
            Store::open_existing(state_dir)?
                .expect("the file exists")
                .load()?;
        }
        guard(&path, || {
            let db = Database::create(&path).map_err(|e| open_err(&path, e))?;
            let store = Store::with_db(db, path.clone(), None);
            // Create the tables so that readers never meet a missing one (a write only
            // for a new file).
            if !store.has_tables()? {
                store.write(|_, _, _| Ok(()))?;
            }
            Ok(store)
        })
    }

    fn with_db(db: Database, path: PathBuf, copy: Option<CopyFile>) -> Store {
        Store {
            db: Mutex::new(Some(db)),
            path,
            io_failed: AtomicBool::new(false),
            copy,
        }
    }

    /// Opens the store in `state_dir` to read it, if it exists: creates no directory,
    /// and writes nothing to it (`check-config`): what is read is a copy, taken unless
    /// a server holds the store. Tables not created yet read as empty.
    pub fn open_existing(state_dir: &Path) -> Result<Option<Store>, StoreError> {
        let path = state_dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let err = |message: String| StoreError::Db {
            path: path.clone(),
            message,
        };
        check_header(&path).map_err(|m| err(format!("{m}; {DAMAGED_HINT}")))?;
        let copy = copy_unless_in_use(&path)?;
        guard(&path, || {
            let db = Database::create(&copy.0).map_err(|e| open_err(&path, e))?;
            Ok(Some(Store::with_db(db, path.clone(), Some(copy))))
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        let e = e.into();
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.io_failed.store(true, Ordering::Relaxed);
        }
        StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Runs `f` on the database, opening the file again first if an I/O error closed
    /// it; an I/O error in `f` closes it for the next operation.
    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if db.is_none() {
            let file = self.copy.as_ref().map_or(&self.path, |c| &c.0);
            let reopened = Database::create(file).map_err(|e| open_err(&self.path, e))?;
            tracing::info!("inventory store {}: opened again", self.path.display());
            *db = Some(reopened);
        }
        self.io_failed.store(false, Ordering::Relaxed);
        let r = f(db.as_ref().expect("opened above"));
        if r.is_err() && self.io_failed.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "inventory store {}: I/O error; the file is opened again for the next change",
                self.path.display()
            );
            *db = None;
        }
        r
    }

    fn has_tables(&self) -> Result<bool, StoreError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(|e| self.db_err(e))?;
            let exists = |def| match tx.open_table(def) {
                Ok(_) => Ok(true),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
                Err(e) => Err(self.db_err(e)),
            };
            Ok(exists(HOSTS)? && exists(IMAGES)?)
        })
    }

    /// Every host and image, in name order.
    pub fn load(&self) -> Result<(Vec<Host>, Vec<Image>), StoreError> {
        guard(&self.path, || {
            self.with(|db| {
                let tx = db.begin_read().map_err(|e| self.db_err(e))?;
                let hosts = self.read_table(&tx, HOSTS, "host")?;
                let images = self.read_table(&tx, IMAGES, "image")?;
                Ok((hosts, images))
            })
        })
    }

    fn read_table<T: serde::de::DeserializeOwned>(
        &self,
        tx: &redb::ReadTransaction,
        def: TableDefinition<&str, &[u8]>,
        label: &str,
    ) -> Result<Vec<T>, StoreError> {
        let table = match tx.open_table(def) {
            Ok(t) => t,
            // Only a store opened by `open_existing` can lack a table: nothing stored yet.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.db_err(e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let item = serde_json::from_slice(v.value()).map_err(|e| StoreError::Decode {
                path: self.path.clone(),
                entry: format!("{label} {}", k.value()),
                message: e.to_string(),
            })?;
            out.push(item);
        }
        Ok(out)
    }

    /// The inventory files' entries as last applied ([`Store::set_file_entries`]);
    /// empty for a store that never recorded them. An unreadable record is skipped: the
    /// file's entry then wins, as it did before such records existed.
    pub fn file_entries(&self) -> Result<FileEntries, StoreError> {
        guard(&self.path, || {
            self.with(|db| {
                let tx = db.begin_read().map_err(|e| self.db_err(e))?;
                let mut out = FileEntries::default();
                let table = match tx.open_table(FILE_ENTRIES) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
                    Err(e) => return Err(self.db_err(e)),
                };
                for row in table.iter().map_err(|e| self.db_err(e))? {
                    let (k, v) = row.map_err(|e| self.db_err(e))?;
                    let (k, v) = (k.value(), v.value());
                    if let Some(name) = k.strip_prefix("host/") {
                        if let Ok(h) = serde_json::from_slice(v) {
                            out.hosts.insert(name.to_string(), h);
                        }
                    } else if let Some(name) = k.strip_prefix("image/") {
                        if let Ok(i) = serde_json::from_slice(v) {
                            out.images.insert(name.to_string(), i);
                        }
                    }
                }
                Ok(out)
            })
        })
    }

    /// Records the entries the inventory files hold now (replacing the record).
    pub fn set_file_entries(&self, hosts: &[Host], images: &[Image]) -> Result<(), StoreError> {
        if self.copy.is_some() {
            return Err(StoreError::Db {
                path: self.path.clone(),
                message: "opened to read only".into(),
            });
        }
        guard(&self.path, || {
            self.with(|db| {
                let tx = db.begin_write().map_err(|e| self.db_err(e))?;
                tx.delete_table(FILE_ENTRIES).map_err(|e| self.db_err(e))?;
                {
                    let mut t = tx.open_table(FILE_ENTRIES).map_err(|e| self.db_err(e))?;
                    for h in hosts {
                        let doc = serde_json::to_vec(h).expect("host serializes");
                        t.insert(format!("host/{}", h.name).as_str(), doc.as_slice())
                            .map_err(|e| self.db_err(e))?;
                    }
                    for i in images {
                        let doc = serde_json::to_vec(i).expect("image serializes");
                        t.insert(format!("image/{}", i.name).as_str(), doc.as_slice())
                            .map_err(|e| self.db_err(e))?;
                    }
                }
                tx.commit().map_err(|e| self.db_err(e))
            })
        })
    }

    /// Applies a change in one durable transaction.
    pub fn apply(&self, change: &Change) -> Result<(), StoreError> {
        if change.is_empty() {
            return Ok(());
        }
        guard(&self.path, || self.apply_now(change))
    }

    /// Applies `changes` in order, in one durable transaction (a group commit).
    pub fn apply_all(&self, changes: &[Arc<Change>]) -> Result<(), StoreError> {
        if changes.iter().all(|c| c.is_empty()) {
            return Ok(());
        }
        guard(&self.path, || {
            self.write(|hosts, images, _| {
                changes
                    .iter()
                    .try_for_each(|c| write_change(hosts, images, c))
            })
        })
    }

    /// Cluster mode: applies `change` and records `revision` as the one the store is now
    /// a snapshot of, in one durable transaction.
    pub fn apply_at(&self, change: &Change, revision: u64) -> Result<(), StoreError> {
        guard(&self.path, || self.apply_now_at(change, Some(revision)))
    }

    /// Cluster mode: the etcd revision the store's hosts and images are at (0: none, the
    /// store is no snapshot yet).
    pub fn revision(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta(REVISION)?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// A value of the meta table (cluster mode keeps the shared token key there).
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        guard(&self.path, || {
            self.with(|db| {
                let tx = db.begin_read().map_err(|e| self.db_err(e))?;
                let table = match tx.open_table(META) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                    Err(e) => return Err(self.db_err(e)),
                };
                let v = table.get(key).map_err(|e| self.db_err(e))?;
                Ok(v.map(|v| v.value().to_vec()))
            })
        })
    }

    /// Sets a value of the meta table.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        guard(&self.path, || {
            self.with(|db| {
                let tx = db.begin_write().map_err(|e| self.db_err(e))?;
                {
                    let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
                    meta.insert(key, value).map_err(|e| self.db_err(e))?;
                }
                tx.commit().map_err(|e| self.db_err(e))
            })
        })
    }

    /// The keys of the meta table that start with `prefix`, in order.
    pub fn meta_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        guard(&self.path, || {
            self.with(|db| {
                let tx = db.begin_read().map_err(|e| self.db_err(e))?;
                let table = match tx.open_table(META) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(self.db_err(e)),
                };
                let mut out = Vec::new();
                for row in table.range(prefix..).map_err(|e| self.db_err(e))? {
                    let (k, _) = row.map_err(|e| self.db_err(e))?;
                    if !k.value().starts_with(prefix) {
                        break;
                    }
                    out.push(k.value().to_string());
                }
                Ok(out)
            })
        })
    }

    /// Removes a value of the meta table.
    pub fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        guard(&self.path, || {
            self.with(|db| {
                let tx = db.begin_write().map_err(|e| self.db_err(e))?;
                {
                    let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
                    meta.remove(key).map_err(|e| self.db_err(e))?;
                }
                tx.commit().map_err(|e| self.db_err(e))
            })
        })
    }

    fn apply_now(&self, change: &Change) -> Result<(), StoreError> {
        self.apply_now_at(change, None)
    }

    fn apply_now_at(&self, change: &Change, revision: Option<u64>) -> Result<(), StoreError> {
        self.write(|hosts, images, meta| {
            if let Some(rev) = revision {
                meta.insert(REVISION, rev.to_string().as_bytes())?;
            }
            write_change(hosts, images, change)
        })
    }

    fn write(
        &self,
        f: impl FnOnce(
            &mut redb::Table<&str, &[u8]>,
            &mut redb::Table<&str, &[u8]>,
            &mut redb::Table<&str, &[u8]>,
        ) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        if self.copy.is_some() {
            return Err(StoreError::Db {
                path: self.path.clone(),
                message: "opened to read only".into(),
            });
        }
        self.with(|db| {
            let tx = db.begin_write().map_err(|e| self.db_err(e))?;
            {
                let mut hosts = tx.open_table(HOSTS).map_err(|e| self.db_err(e))?;
                let mut images = tx.open_table(IMAGES).map_err(|e| self.db_err(e))?;
                let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
                f(&mut hosts, &mut images, &mut meta).map_err(|e| self.db_err(e))?;
            }
            tx.commit().map_err(|e| self.db_err(e))
        })
    }
}

/// Writes `change`'s entries into the open tables of a transaction.
fn write_change(
    hosts: &mut redb::Table<&str, &[u8]>,
    images: &mut redb::Table<&str, &[u8]>,
    change: &Change,
) -> Result<(), redb::StorageError> {
    for h in &change.put_hosts {
        let doc = serde_json::to_vec(h).expect("host serializes");
        hosts.insert(h.name.as_str(), doc.as_slice())?;
    }
    for name in &change.delete_hosts {
        hosts.remove(name.as_str())?;
    }
    for i in &change.put_images {
        let doc = serde_json::to_vec(i).expect("image serializes");
        images.insert(i.name.as_str(), doc.as_slice())?;
    }
    for name in &change.delete_images {
        images.remove(name.as_str())?;
    }
    Ok(())
}

/// API accounts: records of their own tables, beside the inventory's.
impl Store {
    /// Every record of `table` (key, JSON document), in key order; none if the table was
    /// never written.
    pub fn account_records(
        &self,
        table: AccountTable,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        guard(&self.path, || {
            self.with(|db| {
                let tx = db.begin_read().map_err(|e| self.db_err(e))?;
                let t = match tx.open_table(table.def()) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(self.db_err(e)),
                };
                let mut out = Vec::new();
                for row in t.iter().map_err(|e| self.db_err(e))? {
                    let (k, v) = row.map_err(|e| self.db_err(e))?;
                    out.push((k.value().to_string(), v.value().to_vec()));
                }
                Ok(out)
            })
        })
    }

    /// Writes (`Some`) or removes (`None`) records of `table` in one durable transaction.
    pub fn write_account_records(
        &self,
        table: AccountTable,
        records: &[(&str, Option<&[u8]>)],
    ) -> Result<(), StoreError> {
        if self.copy.is_some() {
            return Err(StoreError::Db {
                path: self.path.clone(),
                message: "opened to read only".into(),
            });
        }
        guard(&self.path, || {
            self.with(|db| {
                let tx = db.begin_write().map_err(|e| self.db_err(e))?;
                {
                    let mut t = tx.open_table(table.def()).map_err(|e| self.db_err(e))?;
                    for (key, doc) in records {
                        match doc {
                            Some(doc) => t.insert(*key, *doc).map(drop),
                            None => t.remove(*key).map(drop),
                        }
                        .map_err(|e| self.db_err(e))?;
                    }
                }
                tx.commit().map_err(|e| self.db_err(e))
            })
        })
    }
}

/// A private copy of the store file at `path` to read, unless a process holds the
/// store (redb keeps an exclusive `flock` on it while open): then [`StoreError::InUse`].
fn copy_unless_in_use(path: &Path) -> Result<CopyFile, StoreError> {
    use nix::fcntl::{Flock, FlockArg};
    let err = |message: String| StoreError::Db {
        path: path.into(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let mut locked = match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            return Err(StoreError::InUse { path: path.into() })
        }
        Err((_, e)) => return Err(err(format!("cannot lock: {e}"))),
    };
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let copy = std::env::temp_dir().join(format!(
        "xboot-store-read-{}-{}.redb",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&copy)
        .map_err(|e| err(format!("cannot copy to {}: {e}", copy.display())))?;
    let guard = CopyFile(copy);
    std::io::copy(&mut *locked, &mut out)
        .map_err(|e| err(format!("cannot copy to {}: {e}", guard.0.display())))?;
    Ok(guard)
}

fn open_err(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.into() },
        other => StoreError::Db {
            path: path.into(),
            message: other.to_string(),
        },
    }
}

/// What to do about a damaged store, said with every such error.
const DAMAGED_HINT: &str =
    "move the file away to start from an empty store (the inventory files are imported again), or restore a backup";

/// Length of redb's file header; its first bytes are a magic number, then a flag byte, two
/// bytes of padding and the page size (little-endian u32).
const HEADER_LEN: usize = 320;
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
const PAGE_SIZE_AT: usize = 12;
/// The page size redb writes (its default, which xboot does not change).
const PAGE_SIZE: u32 = 4096;

/// Refuses a file that cannot be a store before redb reads it: redb asserts on some
/// header fields (the page size, the file's length) and would panic. A missing file is
/// fine (it is created).
fn check_header(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let mut head = Vec::with_capacity(HEADER_LEN);
    f.by_ref()
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot read: {e}"))?;
    if head.is_empty() {
        return Err("the file is empty (0 bytes), not a store: it was truncated".into());
    }
    if head.len() < HEADER_LEN || head[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "not a redb database (damaged or truncated header, {} bytes read)",
            head.len()
        ));
    }
    let page_size = u32::from_le_bytes(
        head[PAGE_SIZE_AT..PAGE_SIZE_AT + 4]
            .try_into()
            .expect("four bytes"),
    );
    if page_size != PAGE_SIZE {
        return Err(format!(
            "damaged header (page size {page_size}, expected {PAGE_SIZE})"
        ));
    }
    Ok(())
}

/// Runs redb code that may meet a damaged file; redb panics on some damage (a file
/// shorter than its header says, for one), which becomes an error naming the file.
fn guard<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        Err(StoreError::Db {
            path: path.to_path_buf(),
            message: format!(
                "damaged store (redb: {}); {DAMAGED_HINT}",
                why.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        })
    })
}

#[cfg(test)]
mod backend_tests {
    use super::*;

    fn host(name: &str, tags: &[&str]) -> Host {
        Host {
            name: name.into(),
            provision: true,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_snapshot_revision_is_written_with_its_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.revision().unwrap(), 0);
        let change = Change {
            put_hosts: vec![host("cn1", &[])],
            ..Default::default()
        };
        store.apply_at(&change, 41).unwrap();
        // A change that changes nothing still moves the revision.
        store.apply_at(&Change::default(), 42).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.revision().unwrap(), 42);
        assert_eq!(store.load().unwrap().0, vec![host("cn1", &[])]);
        store.set_meta("k", b"v").unwrap();
        assert_eq!(store.meta("k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(store.meta("absent").unwrap(), None);
        for k in ["q/a", "q/b", "r/c"] {
            store.set_meta(k, b"").unwrap();
        }
        assert_eq!(store.meta_keys("q/").unwrap(), ["q/a", "q/b"]);
        store.delete_meta("q/a").unwrap();
        assert_eq!(store.meta_keys("q/").unwrap(), ["q/b"]);
    }

    #[test]
    fn a_rebased_change_keeps_the_other_writers_fields() {
        let old = Inventory::from_parts_unchecked(
            vec![host("cn1", &[]), host("cn2", &[]), host("cn3", &[])],
            vec![],
        );
        // Ours: tag cn1, delete cn3. Theirs (meanwhile): cn1 completed, cn4 added.
        let change = Change {
            put_hosts: vec![host("cn1", &["gpu"])],
            delete_hosts: vec!["cn3".into()],
            ..Default::default()
        };
        let mut done = host("cn1", &[]);
        done.provision = false;
        let latest = Inventory::from_parts_unchecked(
            vec![done, host("cn2", &[]), host("cn3", &[]), host("cn4", &[])],
            vec![],
        );
        let (hosts, _) = change.rebase(&old, &latest);
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["cn1", "cn2", "cn4"]);
        assert_eq!(hosts[0].tags, ["gpu"]);
        assert!(
            !hosts[0].provision,
            "the other writer's completion was lost"
        );
        // The same as a change to make on the latest inventory (no whole list).
        let c = change.rebased(&old, &latest);
        assert_eq!(c.delete_hosts, ["cn3"]);
        assert_eq!(c.put_hosts.len(), 1);
        assert_eq!(c.put_hosts[0].tags, ["gpu"]);
        assert!(!c.put_hosts[0].provision);
    }

    #[tokio::test]
    async fn the_redb_backend_commits_and_leaves_the_swap_to_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let base = Arc::new(Inventory::default());
        let (b, rev) = store.base(base.clone());
        assert!(Arc::ptr_eq(&b, &base) && rev == 0);
        let change = Change {
            put_hosts: vec![host("cn1", &[])],
            ..Default::default()
        };
        let r = store.commit(base, 0, change).await.unwrap();
        assert_eq!(r, Committed::Swap);
        assert_eq!(store.load().unwrap().0.len(), 1);
    }
}
