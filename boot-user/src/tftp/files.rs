//! Open files shared by the transfers that send them: concurrent transfers of one file
//! (a boot storm fetches the same iPXE binary a thousand times) hold one descriptor, read
//! with positional reads. An entry lives as long as a transfer holds it; a file replaced
//! on disk (another inode, size or mtime) is opened afresh for new transfers while the
//! running ones finish with the old one.
//!
//! Requested names that resolved to a file are remembered for [`NAME_TTL`], so a storm's
//! thousand requests for `undionly.kpxe` resolve it once: the others start without a trip
//! to the blocking pool (and without a system call). A file replaced or removed, or a
//! link changed, is seen by requests at most that long after.
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a resolved name is trusted.
pub const NAME_TTL: Duration = Duration::from_secs(1);
/// Names remembered at most (clients choose the spelling: `a`, `/a`, `./a` ...).
const NAMES_MAX: usize = 256;

/// An open file and its length when opened.
#[derive(Debug)]
pub struct OpenFile {
    pub file: File,
    pub len: u64,
    /// (device, inode, size, mtime in ns): tells a replaced file from the open one.
    identity: (u64, u64, u64, i128),
}

fn identity(m: &std::fs::Metadata) -> (u64, u64, u64, i128) {
    let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    (m.dev(), m.ino(), m.len(), mtime)
}

/// Entries kept before dead ones are swept.
const SWEEP_AT: usize = 64;

#[derive(Default)]
pub struct Files {
    open: Mutex<HashMap<PathBuf, Weak<OpenFile>>>,
    /// Requested name -> when it was resolved, and its file.
    names: Mutex<HashMap<String, (Instant, Arc<OpenFile>)>>,
}

impl Files {
    /// The file `name` resolved to less than [`NAME_TTL`] ago.
    pub fn by_name(&self, name: &str, now: Instant) -> Option<Arc<OpenFile>> {
        let names = self.names.lock().unwrap();
        let (at, f) = names.get(name)?;
        (now.saturating_duration_since(*at) < NAME_TTL).then(|| f.clone())
    }

    /// Remembers that `name` resolved to `f` at `now`.
    pub fn remember(&self, name: &str, f: &Arc<OpenFile>, now: Instant) {
        let mut names = self.names.lock().unwrap();
        if names.len() >= NAMES_MAX {
            names.retain(|_, (at, _)| now.saturating_duration_since(*at) < NAME_TTL);
            if names.len() >= NAMES_MAX {
                names.clear();
            }
        }
        names.insert(name.to_string(), (now, f.clone()));
    }

    /// The open file at `path` (a resolved path inside the root); blocking.
    pub fn open(&self, path: &Path) -> std::io::Result<Arc<OpenFile>> {
        let now = identity(&std::fs::metadata(path)?);
        if let Some(f) = self.open.lock().unwrap().get(path).and_then(Weak::upgrade) {
            if f.identity == now {
                return Ok(f);
            }
        }
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let f = Arc::new(OpenFile {
            len: meta.len(),
            identity: identity(&meta),
            file,
        });
        let mut open = self.open.lock().unwrap();
        if open.len() >= SWEEP_AT {
            open.retain(|_, w| w.strong_count() > 0);
        }
        open.insert(path.to_path_buf(), Arc::downgrade(&f));
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_while_held_reopened_when_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.efi");
        std::fs::write(&p, b"one").unwrap();
        let files = Files::default();
        let a = files.open(&p).unwrap();
        let b = files.open(&p).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "one descriptor for concurrent transfers"
        );
        // Replaced (new inode, as `cp` to a temp name + rename does).
        let tmp = dir.path().join("a.tmp");
        std::fs::write(&tmp, b"second").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        let c = files.open(&p).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!((a.len, c.len), (3, 6));
        drop((a, b, c));
        assert!(files.open.lock().unwrap()[&p].upgrade().is_none());
    }

    #[test]
    fn names_remembered_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.efi");
        std::fs::write(&p, b"one").unwrap();
        let files = Files::default();
        let t0 = Instant::now();
        assert!(files.by_name("a.efi", t0).is_none());
        let f = files.open(&p).unwrap();
        files.remember("a.efi", &f, t0);
        let got = files.by_name("a.efi", t0 + NAME_TTL / 2).unwrap();
        assert!(Arc::ptr_eq(&f, &got));
        assert!(files.by_name("a.efi", t0 + NAME_TTL).is_none());
        assert!(files.by_name("/a.efi", t0).is_none());
        for i in 0..NAMES_MAX + 10 {
            files.remember(&format!("./{i}"), &f, t0);
        }
        assert!(files.names.lock().unwrap().len() <= NAMES_MAX);
    }
}
