//! Inventory reload while serving: on SIGHUP, or when a watched inventory file changes,
//! the hosts/images files are read again and applied to the running inventory through the
//! same validated, persisted path as API edits ([`ApiState::apply`]).
//!
//! The files own the entries they name: an entry that was in a file and is no longer
//! there is deleted; entries added through the API (never in a file) are kept. A file
//! that does not parse, or an inventory that does not validate, is reported and the
//! running inventory stays as it is.
//!
//! Only what changed in a file is applied: an entry the file holds exactly as it did at
//! the last load keeps its running state, so editing one host (or a comment) does not
//! reset `provision` on every other host, re-arming the reinstallation of nodes that
//! reported `complete`. And a file that held entries and now reads as holding none
//! (empty, or caught half-written by a writer that truncates first) is refused unless
//! it says so explicitly: `[]` in JSON, `host = []` / `image = []` in TOML.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::ApiState;
use crate::inventory::{load, Host, Image, Kind, Loaded};

/// The entries the files held at the last successful load.
pub struct FileReloader {
    hosts_file: Option<PathBuf>,
    images_file: Option<PathBuf>,
    hosts: HashMap<String, Host>,
    images: HashMap<String, Image>,
    /// `provision.templates_dir`: a change of a template file there re-checks the
    /// running inventory's templates.
    template_dirs: Vec<PathBuf>,
}

impl FileReloader {
    /// Starts from what the files hold now (they were just loaded by `serve`).
    pub fn new(hosts_file: Option<PathBuf>, images_file: Option<PathBuf>) -> FileReloader {
        let mut r = FileReloader {
            hosts_file,
            images_file,
            hosts: HashMap::new(),
            images: HashMap::new(),
            template_dirs: vec![],
        };
        if let Ok(l) = r.read() {
            r.remember(&l);
        }
        r
    }

    /// Also watch the templates directories `dirs` (those that exist).
    pub fn with_template_dirs(mut self, dirs: Vec<PathBuf>) -> FileReloader {
        self.template_dirs = dirs;
        self
    }

    /// The template problems of `images` with the template files as they are now, each
    /// naming its image, template, file, line and column (empty: all check).
    pub fn check_templates(&self, images: &[Image]) -> Vec<String> {
        crate::inventory::validate::check_templates(images, &self.template_dirs)
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    pub fn files(&self) -> Vec<PathBuf> {
        self.hosts_file
            .iter()
            .chain(self.images_file.iter())
            .cloned()
            .collect()
    }

    fn read(&self) -> Result<Loaded, String> {
        let mut all = Loaded::default();
        for (file, kind) in [
            (&self.hosts_file, Kind::Hosts),
            (&self.images_file, Kind::Images),
        ] {
            let Some(file) = file else { continue };
            let mut l = load::read_file(file, kind).map_err(|e| e.to_string())?;
            if !l.errors.is_empty() {
                let msgs: Vec<String> = l.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!("{}: {}", file.display(), msgs.join("; ")));
            }
            if l.hosts.is_empty() && l.images.is_empty() {
                self.check_emptied(file)?;
            }
            all.hosts.append(&mut l.hosts);
            all.images.append(&mut l.images);
            all.warnings.append(&mut l.warnings);
        }
        Ok(all)
    }

    /// `file` reads as holding no entries: fine if it held none before or says so
    /// explicitly, else refused (an empty or half-written file must not delete hosts).
    fn check_emptied(&self, file: &Path) -> Result<(), String> {
        let from_this = |f: &Option<PathBuf>| f.as_deref() == Some(file);
        let hosts = if from_this(&self.hosts_file) {
            self.hosts.len()
        } else {
            0
        };
        let images = if from_this(&self.images_file) {
            self.images.len()
        } else {
            0
        };
        if hosts + images == 0 {
            return Ok(());
        }
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if explicitly_empty(&text) {
            return Ok(());
        }
        Err(format!(
            "{} now holds no entries (empty, or caught half-written?): refusing to delete the \
             {hosts} hosts and {images} images it had; to remove them all, write [] (JSON) or \
             host = [] / image = [] (TOML)",
            file.display(),
        ))
    }

    fn remember(&mut self, l: &Loaded) {
        self.hosts = l
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.clone()))
            .collect();
        self.images = l
            .images
            .iter()
            .map(|i| (i.name.clone(), i.clone()))
            .collect();
    }

    /// Re-reads the files and applies them. Returns a one-line report.
    pub async fn reload(&mut self, api: &ApiState) -> Result<String, String> {
        let loaded = self.read()?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let in_file: HashSet<&str> = loaded.hosts.iter().map(|h| h.name.as_str()).collect();
        let gone_hosts: HashSet<String> = self
            .hosts
            .keys()
            .filter(|n| !in_file.contains(n.as_str()))
            .cloned()
            .collect();
        let in_file: HashSet<&str> = loaded.images.iter().map(|i| i.name.as_str()).collect();
        let gone_images: HashSet<String> = self
            .images
            .keys()
            .filter(|n| !in_file.contains(n.as_str()))
            .cloned()
            .collect();
        let (nh, ni) = (loaded.hosts.len(), loaded.images.len());
        let (dh, di) = (gone_hosts.len(), gone_images.len());
        // Entries the file holds as it did at the last load are left as they run now.
        let keep = Loaded {
            hosts: loaded
                .hosts
                .iter()
                .filter(|h| self.hosts.get(&h.name) != Some(h))
                .cloned()
                .collect(),
            images: loaded
                .images
                .iter()
                .filter(|i| self.images.get(&i.name) != Some(i))
                .cloned()
                .collect(),
            ..Default::default()
        };
        let (ch, ci) = (keep.hosts.len(), keep.images.len());
        // Applied as a change (what the files removed, and their new or changed
        // entries): validated and synced at the change's cost.
        api.apply(move |_| {
            let change = crate::inventory::Change {
                put_hosts: keep.hosts,
                delete_hosts: gone_hosts.into_iter().collect(),
                put_images: keep.images,
                delete_images: gone_images.into_iter().collect(),
            };
            Ok((change, ()))
        })
        .await
        .map_err(|e| {
            let mut m = e.message.clone();
            for x in &e.errors {
                m.push_str("\n  - ");
                m.push_str(x);
            }
            m
        })?;
        // What the files hold now is what a restart compares them with.
        if let Some(store) = api.store.clone() {
            let (h, i) = (loaded.hosts.clone(), loaded.images.clone());
            let saved = tokio::task::spawn_blocking(move || store.set_file_entries(&h, &i)).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!("cannot record the inventory files' entries: {e}");
            }
        }
        self.remember(&loaded);
        Ok(format!(
            "{nh} hosts and {ni} images in the files, {ch} hosts and {ci} images new or \
             changed applied; {dh} hosts and {di} images removed"
        ))
    }
}

/// Reloads on SIGHUP and on changes of the inventory files (debounced) until `stop`.
pub async fn run(
    mut reloader: FileReloader,
    api: ApiState,
    stop: impl std::future::Future<Output = ()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Watch the directories (editors replace files by rename), filter on our files.
    let files = reloader.files();
    let _watcher = watch(&files, tx.clone())
        .map_err(|e| tracing::warn!("cannot watch the inventory files ({e}); reload with SIGHUP"))
        .ok();
    // Template files: any change of a `*.tmpl` in a templates directory.
    let (ttx, mut trx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let dirs: Vec<PathBuf> = reloader
        .template_dirs
        .iter()
        .filter(|d| d.is_dir())
        .cloned()
        .collect();
    let _template_watcher = watch_templates(&dirs, ttx)
        .map_err(|e| tracing::warn!("cannot watch the templates directories ({e})"))
        .ok();
    let mut hup = hangups();
    tokio::pin!(stop);
    loop {
        let why = tokio::select! {
            _ = &mut stop => return,
            Some(()) = next_hangup(&mut hup) => "SIGHUP",
            Some(()) = rx.recv() => {
                settle(&mut rx).await;
                "file change"
            }
            Some(()) = trx.recv() => {
                settle(&mut trx).await;
                "template change"
            }
        };
        match reloader.reload(&api).await {
            Ok(report) => tracing::info!("inventory reloaded ({why}): {report}"),
            Err(e) => tracing::error!(
                "inventory reload ({why}) refused, still serving the previous one: {e}"
            ),
        }
        // Template files are read for each request: what a reload can do for them is
        // check the running inventory's templates against them now, as a load does.
        if why != "file change" {
            let problems = reloader.check_templates(api.shared.inventory().images());
            if problems.is_empty() {
                tracing::info!("templates checked ({why}): every image's templates load");
            } else {
                tracing::error!(
                    "templates checked ({why}): {} problems (nodes booting now get errors):\n  - {}",
                    problems.len(),
                    problems.join("\n  - ")
                );
            }
        }
    }
}

/// SIGHUP as a stream, or None (with a warning) when it cannot be handled.
pub(crate) fn hangups() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP: {e}");
            None
        }
    }
}

/// The next SIGHUP of [`hangups`] (never, without the stream).
pub(crate) async fn next_hangup(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup.as_mut() {
        Some(h) => h.recv().await,
        None => std::future::pending().await,
    }
}

/// After a change notice: lets the burst of writes settle (a renewal writes the
/// certificate and the key one after the other, an editor writes then renames), then
/// takes every notice of it, so one reload serves them all.
pub(crate) async fn settle(rx: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    while rx.try_recv().is_ok() {}
}

/// Watches `dirs` and sends on every change of a `*.tmpl` file in them (written in
/// place, created, renamed or removed).
fn watch_templates(
    dirs: &[PathBuf],
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> notify::Result<Option<notify::RecommendedWatcher>> {
    use notify::{RecursiveMode, Watcher};
    if dirs.is_empty() {
        return Ok(None);
    }
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        if ev
            .paths
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "tmpl"))
        {
            let _ = tx.send(());
        }
    })?;
    for d in dirs {
        w.watch(d, RecursiveMode::NonRecursive)?;
    }
    Ok(Some(w))
}

/// Watches the directories of `files` and sends when what one of the files names has
/// changed.
///
/// Any change in a directory counts, not only events that name a file: editors and
/// config managers replace a file by rename, and a Kubernetes ConfigMap volume never
/// touches the names at all: `hosts.json` is a symlink to `..data/hosts.json`, and an
/// update writes a new timestamped directory and renames a `..data_tmp` symlink over
/// `..data`. So each event is answered by comparing what the files resolve to (the
/// target's device, inode, size and modification time, symlinks followed) with what
/// they resolved to before; only a difference sends.
pub(crate) fn watch(
    files: &[PathBuf],
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let names: Vec<PathBuf> = files.to_vec();
    let mut seen: Vec<Option<Identity>> = names.iter().map(|f| identity(f)).collect();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let now: Vec<Option<Identity>> = names.iter().map(|f| identity(f)).collect();
        let named = ev
            .paths
            .iter()
            .any(|p| names.iter().any(|f| same_file_name(p, f)));
        // A write in place keeps the identity until the writer closes: an event naming
        // the file is passed on as before (the reload is debounced).
        if now != seen || named {
            seen = now;
            let _ = tx.send(());
        }
    })?;
    let dirs: HashSet<&Path> = files.iter().filter_map(|f| f.parent()).collect();
    for d in dirs {
        w.watch(d, RecursiveMode::NonRecursive)?;
    }
    Ok(w)
}

/// The file says it holds nothing: `[]` (JSON), or a TOML table whose `host` or `image`
/// is an empty array.
fn explicitly_empty(text: &str) -> bool {
    if let Ok(serde_json::Value::Array(a)) = serde_json::from_str::<serde_json::Value>(text) {
        return a.is_empty();
    }
    let Ok(t) = toml::from_str::<toml::Table>(text) else {
        return false;
    };
    ["host", "image"].iter().any(|k| {
        t.get(*k)
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.is_empty())
    })
}

fn same_file_name(a: &Path, b: &Path) -> bool {
    a.file_name().is_some() && a.file_name() == b.file_name()
}

/// What a path resolves to now (symlinks followed), or None when it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn identity(path: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Identity {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

#[cfg(test)]
mod tests {
    use super::explicitly_empty;

    #[test]
    fn only_an_explicit_empty_file_may_empty_the_inventory() {
        for (text, want) in [
            ("[]", true),
            ("  [ ]\n", true),
            ("host = []\n", true),
            ("# all gone\nimage = []\n", true),
            ("", false),
            ("\n# comment only\n", false),
            ("[{\"name\":", false),
            ("[[host]]\nname = \"cn1\"\n", false),
        ] {
            assert_eq!(explicitly_empty(text), want, "{text:?}");
        }
    }
}
