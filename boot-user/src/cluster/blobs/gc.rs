//! The blob cache GC: a blob of `blob_dir/sha256` (or a download's `.part`) that no
//! image of the running inventory references (every image that validated: the served
//! part holds every image) is removed once it has been unreferenced for
//! `cluster.blob_gc_grace_secs`, with this server's holder key of it. Never while it is
//! in use ([`Blobs::hold`]: from before a boot file or the peer route looks it up until
//! the body sending it is dropped, and for the whole of a fetch): a removal is decided
//! under the lock `hold` takes. Passes run at start, when a swap drops a referenced blob
//! (an image deleted, or its files changed), and when a grace ends.
//! [`collectable`] (pure) decides; [`Blobs::collect_once`] acts.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Blobs;
use crate::http::token::now_secs;
use crate::inventory::BlobRef;

/// Holds a blob in use while it lives ([`Blobs::hold`]): the cache GC leaves it alone.
pub struct Hold {
    hex: String,
    in_use: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut m = self.in_use.lock().unwrap();
        if let Some(n) = m.get_mut(&self.hex) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.hex);
            }
        }
    }
}

/// A file of the blob cache: `{hex}` or a download's `{hex}.part`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheFile {
    pub name: String,
    pub hex: String,
    pub size: u64,
}

impl CacheFile {
    /// The cache file named `name`, if it is one (other names are never touched).
    pub fn parse(name: &str, size: u64) -> Option<CacheFile> {
        let hex = name.strip_suffix(".part").unwrap_or(name);
        BlobRef::valid_digest(hex).then(|| CacheFile {
            name: name.to_string(),
            hex: hex.to_string(),
            size,
        })
    }
}

/// The cache GC's decision (pure): the files of `files` whose blob no image references
/// (`referenced`) and has not for `grace` seconds at `now`. `unreferenced` remembers
/// since when each blob has been seen unreferenced: updated here (a blob referenced
/// again, or gone, is forgotten). Whether a file is in use is checked when it is removed.
pub fn collectable(
    files: &[CacheFile],
    referenced: &HashSet<String>,
    unreferenced: &mut HashMap<String, u64>,
    now: u64,
    grace: u64,
) -> Vec<CacheFile> {
    let present: HashSet<&str> = files.iter().map(|f| f.hex.as_str()).collect();
    unreferenced.retain(|hex, _| present.contains(hex.as_str()) && !referenced.contains(hex));
    for f in files.iter().filter(|f| !referenced.contains(&f.hex)) {
        unreferenced.entry(f.hex.clone()).or_insert(now);
    }
    files
        .iter()
        .filter(|f| {
            unreferenced
                .get(&f.hex)
                .is_some_and(|since| now.saturating_sub(*since) >= grace)
        })
        .cloned()
        .collect()
}

/// What one pass of the cache GC removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub files: usize,
    pub bytes: u64,
    /// Due, but in use (a download being served, a fetch running): kept for now.
    pub busy: usize,
}

impl Blobs {
    /// Marks blob `hex` in use until the returned [`Hold`] is dropped: taken before its
    /// file is looked up, kept by the body that sends it.
    pub fn hold(&self, hex: &str) -> Hold {
        *self
            .in_use
            .lock()
            .unwrap()
            .entry(hex.to_string())
            .or_default() += 1;
        Hold {
            hex: hex.to_string(),
            in_use: self.in_use.clone(),
        }
    }

    /// The blobs the images of the running inventory reference (every image of etcd's
    /// inventory that validated: the served part holds every image).
    fn referenced(&self) -> HashSet<String> {
        self.shared
            .inventory()
            .images()
            .iter()
            .flat_map(|i| i.blobs.iter().map(|b| b.sha256.clone()))
            .collect()
    }

    /// One pass of the cache GC at `now`: removes the files of the blobs no image has
    /// referenced for `cluster.blob_gc_grace_secs`, except those in use, and this
    /// server's holder keys of them; logs each and the total.
    pub async fn collect_once(&self, now: u64) -> Collected {
        let dir = self.dir.clone();
        let files = tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return vec![];
            };
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let m = e.metadata().ok().filter(|m| m.is_file())?;
                    CacheFile::parse(e.file_name().to_str()?, m.len())
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let referenced = self.referenced();
        let due = collectable(
            &files,
            &referenced,
            &mut self.unreferenced.lock().unwrap(),
            now,
            self.cfg.blob_gc_grace_secs,
        );
        let mut out = Collected::default();
        let mut gone = HashSet::new();
        for f in due {
            let removed = {
                // Under the lock `hold` takes: no download or fetch starts on it meanwhile.
                let in_use = self.in_use.lock().unwrap();
                if in_use.contains_key(&f.hex) {
                    None
                } else {
                    Some(std::fs::remove_file(self.dir.join(&f.name)))
                }
            };
            match removed {
                None => out.busy += 1,
                Some(Ok(())) => {
                    tracing::info!(
                        "blobs: removed {} ({} bytes): no image references it",
                        f.name,
                        f.size
                    );
                    out.files += 1;
                    out.bytes += f.size;
                    gone.insert(f.hex);
                }
                Some(Err(e)) => tracing::warn!("blobs: cannot remove {}: {e}", f.name),
            }
        }
        if out.files > 0 {
            tracing::info!(
                "blobs: cache GC removed {} files, {} bytes ({} kept in use)",
                out.files,
                out.bytes,
                out.busy
            );
        }
        for hex in gone.into_iter().filter(|h| self.cached(h).is_none()) {
            self.unreferenced.lock().unwrap().remove(&hex);
            let was = self.announced.lock().unwrap().remove(&hex);
            if let (true, Ok(mut c)) = (was, self.etcd().await) {
                let key = format!("{}{}", self.holder_prefix(&hex), self.id);
                if let Err(e) = c.delete(key, None).await {
                    tracing::debug!("blobs: cannot drop {hex}'s holder key: {e}");
                }
            }
        }
        out
    }

    /// The cache GC until `stop`: a pass at start, whenever an image stops referencing a
    /// blob (deleted, or its files changed), and when a blob's grace ends.
    pub async fn collect(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut swaps = self.shared.subscribe();
        let grace = self.cfg.blob_gc_grace_secs;
        loop {
            let mut referenced = self.referenced();
            self.collect_once(now_secs()).await;
            // The next grace to end, if a blob waits for one.
            let next = self
                .unreferenced
                .lock()
                .unwrap()
                .values()
                .min()
                .map(|since| (since + grace).saturating_sub(now_secs()).max(1));
            let sleep = tokio::time::sleep(Duration::from_secs(next.unwrap_or(3600)));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = &mut sleep => break,
                    r = swaps.changed() => {
                        if r.is_err() {
                            return;
                        }
                        let now = self.referenced();
                        let lost = referenced.iter().any(|h| !now.contains(h));
                        referenced = now;
                        if lost {
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cluster::ClusterConfig;
    use crate::http::token::TokenKey;
    use crate::inventory::Inventory;
    use crate::state::Shared;

    fn file(n: u8, part: bool, size: u64) -> CacheFile {
        let hex = format!("{n:02x}").repeat(32);
        let name = if part {
            format!("{hex}.part")
        } else {
            hex.clone()
        };
        CacheFile { name, hex, size }
    }

    #[test]
    fn unreferenced_blobs_are_collected_after_their_grace() {
        let (a, b, b_part, c) = (
            file(1, false, 10),
            file(2, false, 20),
            file(2, true, 5),
            file(3, false, 30),
        );
        let files = vec![a.clone(), b.clone(), b_part.clone(), c.clone()];
        let referenced: HashSet<String> = [a.hex.clone(), c.hex.clone()].into();
        let mut marks = HashMap::new();
        // b (and its partial download) is seen unreferenced at 100: kept 60 s.
        assert!(collectable(&files, &referenced, &mut marks, 100, 60).is_empty());
        assert!(collectable(&files, &referenced, &mut marks, 159, 60).is_empty());
        assert_eq!(
            collectable(&files, &referenced, &mut marks, 160, 60),
            [b.clone(), b_part.clone()]
        );
        // c's image deleted at 170: its grace starts then, not at b's.
        let only_a: HashSet<String> = [a.hex.clone()].into();
        assert_eq!(
            collectable(&files, &only_a, &mut marks, 170, 60),
            [b.clone(), b_part.clone()]
        );
        assert_eq!(
            collectable(&files, &only_a, &mut marks, 230, 60),
            [b.clone(), b_part.clone(), c.clone()]
        );
        // b referenced again (an image imported back) before its removal: forgotten,
        // and a new grace if it is dropped once more.
        let back: HashSet<String> = [a.hex.clone(), b.hex.clone()].into();
        assert_eq!(
            collectable(&files, &back, &mut marks, 231, 60),
            vec![c.clone()]
        );
        assert!(!marks.contains_key(&b.hex));
        assert_eq!(
            collectable(&files, &only_a, &mut marks, 232, 60),
            vec![c.clone()]
        );
        // A blob gone from the directory is forgotten; grace 0 removes at once.
        let mut marks = HashMap::new();
        assert_eq!(
            collectable(std::slice::from_ref(&b), &HashSet::new(), &mut marks, 5, 0),
            vec![b.clone()]
        );
        assert!(collectable(&[], &HashSet::new(), &mut marks, 6, 0).is_empty());
        assert!(marks.is_empty());
        // Only cache files are ever candidates.
        assert_eq!(CacheFile::parse(&b_part.name, 5), Some(b_part));
        assert_eq!(CacheFile::parse("notes.txt", 5), None);
        assert_eq!(CacheFile::parse(&format!("{}.tmp", b.hex), 5), None);
    }

    /// A pass on a real directory: the blobs of deleted images go (a partial download
    /// too), a referenced one stays, one being served stays until its download ends,
    /// files that are no blobs are never touched.
    #[tokio::test]
    async fn a_pass_removes_unreferenced_blobs_but_not_those_in_use() {
        use crate::config::Config;
        use crate::events::EventLog;
        use crate::inventory::Image;
        let dir = tempfile::tempdir().unwrap();
        let cfg = ClusterConfig {
            blob_dir: Some(dir.path().into()),
            blob_gc_grace_secs: 0,
            endpoints: vec!["http://127.0.0.1:1".into()],
            ..Default::default()
        };
        let (kept, gone, served) = (file(1, false, 3), file(2, false, 4), file(3, false, 5));
        let gone_part = file(4, true, 6);
        let image = Image {
            name: "img".into(),
            kernel: "/img/k".into(),
            blobs: vec![BlobRef {
                path: "/img/k".into(),
                sha256: kept.hex.clone(),
                size: 3,
                server: "s1".into(),
            }],
            ..Default::default()
        };
        let shared = Shared::new(
            Config::default(),
            Inventory::from_parts_unchecked(vec![], vec![image]),
            EventLog::default(),
        );
        let blobs = Blobs::new(&cfg, "s2", shared, TokenKey::generate()).unwrap();
        let cache = dir.path().join("sha256");
        for f in [&kept, &gone, &served, &gone_part] {
            std::fs::write(cache.join(&f.name), vec![0u8; f.size as usize]).unwrap();
        }
        std::fs::write(cache.join("notes.txt"), b"mine").unwrap();
        let hold = blobs.hold(&served.hex);
        let got = blobs.collect_once(1_000).await;
        assert_eq!(
            got,
            Collected {
                files: 2,
                bytes: 4 + 6,
                busy: 1
            }
        );
        let left = |f: &CacheFile| cache.join(&f.name).exists();
        assert!(left(&kept) && left(&served));
        assert!(!left(&gone) && !left(&gone_part));
        assert!(cache.join("notes.txt").exists());
        // Its download done, the served blob goes at the next pass.
        drop(hold);
        let got = blobs.collect_once(1_001).await;
        assert_eq!((got.files, got.bytes, got.busy), (1, 5, 0));
        assert!(!left(&served) && left(&kept));
    }
}
