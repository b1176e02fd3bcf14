//! The persistent inventory store: `state_dir/inventory.redb`, an embedded transactional
//! database (redb). Hosts and images are kept as JSON documents keyed by name. Every change
//! is one write transaction, committed durably before the running inventory is swapped, so
//! a crash leaves either the old inventory or the new one, never half of a change.
//!
//! The store holds one process: a second `xboot serve` on the same state dir gets a clear
//! "in use" error instead of a corrupted file.
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::model::{Host, Image};

const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

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

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(FILE_NAME);
        let err = |message: String| StoreError::Db {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(state_dir)
            .map_err(|e| err(format!("cannot create {}: {e}", state_dir.display())))?;
        check_header(&path).map_err(|m| err(format!("{m}; {DAMAGED_HINT}")))?;
        guard(&path, || {
            let db = Database::create(&path).map_err(|e| open_err(&path, e))?;
            let store = Store {
                db,
                path: path.clone(),
            };
            // Create the tables so that readers never meet a missing one.
            store.write(|_, _| Ok(()))?;
            Ok(store)
        })
    }

    /// Opens the store in `state_dir` to read it, if it exists: creates no directory,
    /// file or table (`check-config`). Tables not created yet read as empty.
    pub fn open_existing(state_dir: &Path) -> Result<Option<Store>, StoreError> {
        let path = state_dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        check_header(&path).map_err(|m| StoreError::Db {
            path: path.clone(),
            message: format!("{m}; {DAMAGED_HINT}"),
        })?;
        guard(&path, || {
            let db = Database::open(&path).map_err(|e| open_err(&path, e))?;
            Ok(Some(Store {
                db,
                path: path.clone(),
            }))
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            message: e.into().to_string(),
        }
    }

    /// Every host and image, in name order.
    pub fn load(&self) -> Result<(Vec<Host>, Vec<Image>), StoreError> {
        guard(&self.path, || {
            let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
            let hosts = self.read_table(&tx, HOSTS, "host")?;
            let images = self.read_table(&tx, IMAGES, "image")?;
            Ok((hosts, images))
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

    /// Applies a change in one durable transaction.
    pub fn apply(&self, change: &Change) -> Result<(), StoreError> {
        if change.is_empty() {
            return Ok(());
        }
        guard(&self.path, || self.apply_now(change))
    }

    fn apply_now(&self, change: &Change) -> Result<(), StoreError> {
        self.write(|hosts, images| {
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
        })
    }

    fn write(
        &self,
        f: impl FnOnce(
            &mut redb::Table<&str, &[u8]>,
            &mut redb::Table<&str, &[u8]>,
        ) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut hosts = tx.open_table(HOSTS).map_err(|e| self.db_err(e))?;
            let mut images = tx.open_table(IMAGES).map_err(|e| self.db_err(e))?;
            f(&mut hosts, &mut images).map_err(|e| self.db_err(e))?;
        }
        tx.commit().map_err(|e| self.db_err(e))
    }
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
