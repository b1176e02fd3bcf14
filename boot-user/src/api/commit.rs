//! Group commit of standalone inventory changes.
//!
//! Each change is made and validated in order, on the inventory every change accepted
//! before it made (committed or not: the *head*), and then waits for the disk. The
//! changes accepted while one commit is at the disk go to the next one together: one
//! store transaction, one swap. A storm's 1,000 `complete`s each cost a durable write
//! of the store (redb syncs twice per transaction) when they go one by one, and queue
//! behind each other; grouped, a commit takes whatever arrived during the previous one.
//!
//! Nothing is visible before it is durable: the services and readers see the swapped
//! inventory only, and a change's caller is answered after its group was written. A
//! group that cannot be written fails with every change accepted after it (they were
//! validated on top of it), and the head goes back to the served inventory. The commit
//! runs as a task of its own, so a caller that goes away (a client disconnecting)
//! cannot leave its accepted change uncommitted.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{oneshot, Mutex, MutexGuard};

use crate::inventory::{Change, Inventory, Store};
use crate::state::Shared;

/// Where a change's commit outcome goes: its group's error, if it failed.
type Done = oneshot::Sender<Result<(), String>>;

#[derive(Default)]
struct Staged {
    /// The inventory after every accepted change; None: the served one.
    head: Option<Arc<Inventory>>,
    /// Accepted, not yet taken by a commit, in order.
    group: Vec<(Arc<Change>, Done)>,
    /// A commit has taken a group and not finished.
    writing: bool,
}

/// The standalone write path: see the module doc.
#[derive(Default)]
pub(super) struct Writes {
    staged: Mutex<Staged>,
    /// One commit at the disk at a time.
    disk: Mutex<()>,
    /// Groups committed, and the changes in them.
    commits: AtomicU64,
    changes: AtomicU64,
}

/// The right to make the next change, held while it is made: the head to build on.
pub(super) struct Stage<'a> {
    staged: MutexGuard<'a, Staged>,
    head: Arc<Inventory>,
}

impl Stage<'_> {
    /// The inventory to make the change on.
    pub fn head(&self) -> &Arc<Inventory> {
        &self.head
    }

    /// Whether changes are accepted and not committed yet (the head is theirs).
    pub fn pending(&self) -> bool {
        !self.staged.group.is_empty() || self.staged.writing
    }

    /// For a change that is empty on a head of pending changes: it holds only if they
    /// do, so its caller waits for their commit (the receiver gets its outcome).
    pub fn ride(mut self) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        self.staged.group.push((Arc::new(Change::default()), tx));
        rx
    }

    /// Accepts `change` (validated: `inv` is the head with it) for the next commit;
    /// the receiver gets that commit's outcome.
    pub fn accept(
        mut self,
        inv: Inventory,
        change: Arc<Change>,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        self.staged.head = Some(Arc::new(inv));
        self.staged.group.push((change, tx));
        rx
    }
}

impl Writes {
    /// Groups committed, and the changes in them (`/v1/status` `inventory_commits`).
    pub fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "groups": self.commits.load(Ordering::Relaxed),
            "changes": self.changes.load(Ordering::Relaxed),
        })
    }

    /// Waits for the right to make a change: changes are made one at a time, in order.
    pub async fn stage(&self, shared: &Shared) -> Stage<'_> {
        let staged = self.staged.lock().await;
        let head = staged.head.clone().unwrap_or_else(|| shared.inventory());
        Stage { staged, head }
    }

    /// Commits every accepted change no commit has taken yet (if none, returns at once):
    /// one store transaction, one swap.
    pub async fn commit(&self, shared: &Shared, store: Option<&Arc<Store>>) {
        let store = store.cloned();
        self.commit_by(shared, |changes| async move {
            let Some(store) = store else { return Ok(()) };
            tokio::task::spawn_blocking(move || store.apply_all(&changes))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// [`Writes::commit`], the group written by `write`.
    async fn commit_by<F, W>(&self, shared: &Shared, write: W)
    where
        W: FnOnce(Vec<Arc<Change>>) -> F,
        F: std::future::Future<Output = Result<(), String>>,
    {
        let _disk = self.disk.lock().await;
        let (head, group) = {
            let mut s = self.staged.lock().await;
            s.writing = !s.group.is_empty();
            (s.head.clone(), std::mem::take(&mut s.group))
        };
        let Some(head) = head.filter(|_| !group.is_empty()) else {
            return;
        };
        let (changes, done): (Vec<Arc<Change>>, Vec<Done>) = group.into_iter().unzip();
        match write(changes.clone()).await {
            Ok(()) => {
                // A group of riders only ([`Stage::ride`]) holds no change: its head was
                // served by the commit before it, and there is nothing to swap.
                let made = changes.iter().filter(|c| !c.is_empty()).count();
                if made > 0 {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    self.changes.fetch_add(made as u64, Ordering::Relaxed);
                    shared.apply_changes(Arc::unwrap_or_clone(head), &changes);
                }
                let mut s = self.staged.lock().await;
                s.writing = false;
                if s.group.is_empty() {
                    // Nothing accepted meanwhile: the served inventory is the head.
                    s.head = None;
                }
                drop(s);
                for d in done {
                    let _ = d.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!("api: cannot commit {} change(s): {e}", changes.len());
                let later = {
                    let mut s = self.staged.lock().await;
                    s.writing = false;
                    s.head = None;
                    std::mem::take(&mut s.group)
                };
                for d in done {
                    let _ = d.send(Err(e.clone()));
                }
                for (_, d) in later {
                    let _ = d.send(Err(format!(
                        "not committed: it was made on changes whose commit failed ({e})"
                    )));
                }
            }
        }
    }

    /// Runs `f` with no change accepted and not committed, and none made until it
    /// returns: for a whole replacement, which reads and swaps the served inventory.
    pub async fn exclusive<T>(
        &self,
        shared: &Shared,
        store: Option<&Arc<Store>>,
        f: impl std::future::Future<Output = T>,
    ) -> T {
        // Lock order: the disk, then the staged changes (as a commit takes them).
        let (disk, mut staged) = loop {
            let disk = self.disk.lock().await;
            let staged = self.staged.lock().await;
            if staged.group.is_empty() {
                break (disk, staged);
            }
            drop((staged, disk));
            self.commit(shared, store).await;
        };
        staged.head = None;
        let out = f.await;
        drop((staged, disk));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::events::EventLog;
    use crate::inventory::{Host, Mac};

    /// A host that is not set to provision (it needs no image).
    fn put(name: &str, n: u8) -> Arc<Change> {
        let mut h = Host::with_interface(name, Mac([2, 0, 0, 0, 0, n]), None);
        h.provision = false;
        Arc::new(Change {
            put_hosts: vec![h],
            ..Default::default()
        })
    }

    /// Makes `change` on the head and accepts it, as `ApiState::apply` does.
    async fn accept(
        w: &Writes,
        shared: &Shared,
        change: Arc<Change>,
    ) -> oneshot::Receiver<Result<(), String>> {
        let stage = w.stage(shared).await;
        let roots = shared.config.provision.image_roots();
        let inv = stage.head().apply_for(&change, &[], &roots, None).unwrap();
        stage.accept(inv, change)
    }

    /// A commit whose write waits for `release`, then fails with "disk full".
    async fn fail_when(w: &Writes, shared: &Shared, release: oneshot::Receiver<()>) {
        w.commit_by(shared, |_| async move {
            release.await.unwrap();
            Err("disk full".to_string())
        })
        .await
    }

    fn names(shared: &Shared) -> Vec<String> {
        shared
            .inventory()
            .hosts()
            .iter()
            .map(|h| h.name.clone())
            .collect()
    }

    #[tokio::test]
    async fn changes_accepted_during_a_commit_go_to_the_next_one_together() {
        let shared = Shared::new(Config::default(), Inventory::default(), EventLog::default());
        let w = Writes::default();
        let first = accept(&w, &shared, put("cn1", 1)).await;
        // While the first group is at the disk, three more are accepted, each on the
        // head the one before it made.
        let (at_disk, release) = oneshot::channel::<()>();
        let (writes, more) = (Vec::new(), std::sync::Mutex::new(Vec::new()));
        let writes = std::sync::Mutex::new(writes);
        let commit = w.commit_by(&shared, |changes| {
            writes.lock().unwrap().push(changes.len());
            async move {
                release.await.unwrap();
                Ok(())
            }
        });
        let others = async {
            for (i, name) in ["cn2", "cn3", "cn4"].iter().enumerate() {
                let rx = accept(&w, &shared, put(name, 2 + i as u8)).await;
                more.lock().unwrap().push(rx);
            }
            // Not visible before their commit, nor is the first group before its own.
            assert!(names(&shared).is_empty());
            at_disk.send(()).unwrap();
        };
        tokio::join!(commit, others);
        assert_eq!(first.await.unwrap(), Ok(()));
        assert_eq!(names(&shared), ["cn1"]);
        w.commit_by(&shared, |changes| {
            writes.lock().unwrap().push(changes.len());
            async { Ok(()) }
        })
        .await;
        for rx in more.into_inner().unwrap() {
            assert_eq!(rx.await.unwrap(), Ok(()));
        }
        assert_eq!(names(&shared), ["cn1", "cn2", "cn3", "cn4"]);
        assert_eq!(*writes.lock().unwrap(), [1, 3]);
        assert_eq!(w.stats(), serde_json::json!({"groups": 2, "changes": 4}));
        // One swap per group.
        assert_eq!(*shared.subscribe().borrow(), 2);
        assert_eq!(
            shared.changed_since(1, 2),
            Some(vec!["cn2".into(), "cn3".into(), "cn4".into()])
        );
    }

    #[tokio::test]
    async fn a_group_that_cannot_be_written_fails_with_the_changes_made_on_it() {
        let shared = Shared::new(Config::default(), Inventory::default(), EventLog::default());
        let w = Writes::default();
        let failed = accept(&w, &shared, put("cn1", 1)).await;
        let (at_disk, release) = oneshot::channel::<()>();
        let later = std::sync::Mutex::new(None);
        let commit = fail_when(&w, &shared, release);
        let other = async {
            // Made on cn1's head: cn1 is there to build on.
            let stage = w.stage(&shared).await;
            assert_eq!(stage.head().hosts().len(), 1);
            let roots = shared.config.provision.image_roots();
            let change = put("cn2", 2);
            let inv = stage.head().apply_for(&change, &[], &roots, None).unwrap();
            *later.lock().unwrap() = Some(stage.accept(inv, change));
            at_disk.send(()).unwrap();
        };
        tokio::join!(commit, other);
        assert_eq!(failed.await.unwrap(), Err("disk full".into()));
        let later = later.into_inner().unwrap().unwrap().await.unwrap();
        assert!(later
            .unwrap_err()
            .contains("whose commit failed (disk full)"));
        assert!(
            names(&shared).is_empty(),
            "nothing of a failed group is served"
        );
        assert_eq!(*shared.subscribe().borrow(), 0);
        // The next change is made on the served inventory, not on the failed head.
        let stage = w.stage(&shared).await;
        assert!(stage.head().hosts().is_empty());
        drop(stage);
        let ok = accept(&w, &shared, put("cn3", 3)).await;
        w.commit_by(&shared, |_| async { Ok(()) }).await;
        assert_eq!(ok.await.unwrap(), Ok(()));
        assert_eq!(names(&shared), ["cn3"]);
        assert_eq!(w.stats(), serde_json::json!({"groups": 1, "changes": 1}));
    }

    /// A change that is empty only because of changes not yet durable (the same host
    /// unprovisioned twice at once) is answered with their outcome, not at once.
    #[tokio::test]
    async fn an_empty_change_on_pending_ones_gets_their_outcome() {
        let shared = Shared::new(Config::default(), Inventory::default(), EventLog::default());
        let w = Writes::default();
        let first = accept(&w, &shared, put("cn1", 1)).await;
        let stage = w.stage(&shared).await;
        assert!(stage.pending());
        let second = stage.ride();
        w.commit_by(&shared, |_| async { Err("disk full".to_string()) })
            .await;
        assert_eq!(first.await.unwrap(), Err("disk full".into()));
        assert_eq!(second.await.unwrap(), Err("disk full".into()));
        // While a group is being written, a change riding on it waits for the next
        // commit, and fails with the group.
        let first = accept(&w, &shared, put("cn1", 1)).await;
        let (at_disk, release) = oneshot::channel::<()>();
        let rider = std::sync::Mutex::new(None);
        let commit = fail_when(&w, &shared, release);
        let other = async {
            let stage = w.stage(&shared).await;
            assert!(stage.pending(), "a group at the disk is pending");
            *rider.lock().unwrap() = Some(stage.ride());
            at_disk.send(()).unwrap();
        };
        tokio::join!(commit, other);
        assert!(first.await.unwrap().is_err());
        let rider = rider.into_inner().unwrap().unwrap().await.unwrap();
        assert!(rider.unwrap_err().contains("whose commit failed"));
        assert!(!w.stage(&shared).await.pending());
        // A change riding on a group that is written gets its own commit's outcome, a
        // commit of nothing: no second swap, no group counted.
        let first = accept(&w, &shared, put("cn1", 1)).await;
        let (at_disk, release) = oneshot::channel::<()>();
        let rider = std::sync::Mutex::new(None);
        let commit = w.commit_by(&shared, |_| async move {
            release.await.unwrap();
            Ok(())
        });
        let other = async {
            *rider.lock().unwrap() = Some(w.stage(&shared).await.ride());
            at_disk.send(()).unwrap();
        };
        tokio::join!(commit, other);
        assert_eq!(first.await.unwrap(), Ok(()));
        w.commit(&shared, None).await;
        assert_eq!(rider.into_inner().unwrap().unwrap().await.unwrap(), Ok(()));
        assert_eq!(names(&shared), ["cn1"]);
        assert_eq!(*shared.subscribe().borrow(), 1, "one swap");
        assert_eq!(w.stats(), serde_json::json!({"groups": 1, "changes": 1}));
    }

    #[tokio::test]
    async fn a_replacement_waits_for_the_accepted_changes_and_then_reads_the_served_inventory() {
        let shared = Shared::new(Config::default(), Inventory::default(), EventLog::default());
        let w = Writes::default();
        let accepted = accept(&w, &shared, put("cn1", 1)).await;
        let seen = w.exclusive(&shared, None, async { names(&shared) }).await;
        assert_eq!(seen, ["cn1"], "the accepted change was committed first");
        assert_eq!(accepted.await.unwrap(), Ok(()));
    }
}
