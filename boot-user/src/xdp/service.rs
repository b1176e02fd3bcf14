//! The fast path as a daemon service: load and attach the program, sync its maps with
//! the running inventory, follow inventory swaps (file change, SIGHUP, API edits all
//! end in [`Shared::replace_inventory`]), refresh templates before their boot-URL
//! tokens expire, record lease events, and detach on shutdown.
//!
//! ```ignore
//! let svc = xdp::Service::start(shared.clone(), urls, &["eth0".into()], SyncOptions::default())?;
//! let stats = svc.stats();            // for `xboot status` and /metrics
//! tokio::spawn(svc.run(shutdown_rx)); // until shutdown; detaches on return
//! ```
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::compile::Compiler;
use super::loader::{AttachMode, FastPath, LoadOptions, XdpError};
use super::stats::{record_events, XdpStats};
use super::sync::{MapSync, ServedAddr, SyncOptions, SyncReport};
use crate::dhcp::{BootUrls, Settings};
use crate::state::Shared;

/// How often retired templates are collected and due templates refreshed.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("XDP: {0}")]
    Settings(#[from] crate::dhcp::settings::SettingsError),
    #[error("XDP: cannot read the addresses of {ifaces:?}: {source}")]
    Interfaces {
        ifaces: Vec<String>,
        source: std::io::Error,
    },
}

/// What the kernel asks of the calling thread to load and attach XDP that its effective
/// set lacks: CAP_BPF for the program and its maps, CAP_PERFMON for the verifier to
/// allow the program's pointer arithmetic (refused "for !root" without it),
/// CAP_NET_ADMIN for a network program and its attachment; or CAP_SYS_ADMIN for all
/// three (the only way before Linux 5.8). `None` when nothing is missing.
pub fn missing_capabilities() -> Option<String> {
    use caps::Capability::{CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN};
    let has = |c| caps::has_cap(None, caps::CapSet::Effective, c).unwrap_or(false);
    if has(CAP_SYS_ADMIN) {
        return None;
    }
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ]
    .into_iter()
    .filter(|(c, _)| !has(*c))
    .map(|(_, name)| name)
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the process lacks {} (loading and attaching XDP needs CAP_BPF, CAP_PERFMON and \
             CAP_NET_ADMIN, or CAP_SYS_ADMIN)",
            missing.join(", ")
        )
    })
}

/// Why the fast path did not start, in a line for the operator: the error; for a
/// program the kernel refused, the verifier's last words (its whole log runs to
/// thousands of lines) and the kernel's release (the program needs Linux 5.17 or later
/// for `bpf_loop`).
pub fn explain(e: &ServiceError) -> String {
    match e {
        ServiceError::Xdp(XdpError::Verify(_)) | ServiceError::Xdp(XdpError::Load(_)) => {
            let text = e.to_string();
            let (head, log) = text.split_once("Verifier output:").unwrap_or((&text, ""));
            let lines: Vec<&str> = log
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|r| r.trim().to_string())
                .unwrap_or_else(|_| "unknown".into());
            let verifier = if tail.is_empty() {
                String::new()
            } else {
                format!(" verifier: {tail};")
            };
            format!(
                "{}{verifier} kernel {release} (xboot's program needs Linux 5.17 or later)",
                head.trim_end()
            )
        }
        _ => e.to_string(),
    }
}

/// The loaded, attached program and what keeps its maps current.
pub struct Service {
    fp: FastPath,
    sync: MapSync,
    settings: Settings,
    urls: Arc<dyn BootUrls + Send + Sync>,
    shared: Arc<Shared>,
    /// The inventory generation the maps hold.
    synced: u64,
}

impl Service {
    /// Loads the program, attaches it to `ifaces` (native, else generic with a warning)
    /// and fills its maps from the current inventory.
    pub fn start(
        shared: Arc<Shared>,
        urls: Arc<dyn BootUrls + Send + Sync>,
        ifaces: &[String],
        opts: SyncOptions,
    ) -> Result<Service, ServiceError> {
        let t0 = Instant::now();
        let settings = Settings::from_config(&shared.config)?;
        let (inv, generation) = shared.inventory_at();
        // One map entry per MAC (boot and BMC interfaces, bonds).
        let macs = inv.lease_macs().count();
        let mut fp = FastPath::load(LoadOptions::sized(macs, shared.config.dhcp.xdp_max_hosts))?;
        let servers =
            ServedAddr::for_interfaces(ifaces).map_err(|source| ServiceError::Interfaces {
                ifaces: ifaces.to_vec(),
                source,
            })?;
        for iface in ifaces {
            fp.attach(iface)?;
        }
        let mut svc = Service {
            fp,
            sync: MapSync::new(servers, opts),
            settings,
            urls,
            shared,
            synced: generation,
        };
        let loaded = t0.elapsed();
        let r = svc.sync_whole(&inv, Instant::now())?;
        tracing::info!(
            "XDP fast path: {} boot interfaces, {} templates ({r:?}); loaded and attached in \
             {loaded:.2?}, maps filled in {:.2?}",
            svc.sync.hosts(),
            svc.sync.templates(),
            t0.elapsed() - loaded
        );
        Ok(svc)
    }

    /// The counters, for status and metrics.
    pub fn stats(&self) -> Arc<XdpStats> {
        self.fp.stats()
    }

    /// The kernel's id of the attached program.
    pub fn program_id(&mut self) -> Option<u32> {
        self.fp.program_id()
    }

    /// Interfaces the program runs on, and how.
    pub fn attached(&self) -> &[(String, AttachMode)] {
        self.fp.attached()
    }

    fn sync_whole(
        &mut self,
        inv: &crate::inventory::Inventory,
        now: Instant,
    ) -> Result<SyncReport, XdpError> {
        let c = Compiler {
            settings: &self.settings,
            urls: self.urls.as_ref(),
        };
        self.sync.sync(&mut self.fp, inv, &c, now)
    }

    /// Brings the maps to the current inventory: only the hosts changed since the
    /// generation they hold when every swap since then is known, else a whole
    /// comparison; on a `tick`, also the periodic refresh.
    fn sync_now(&mut self, tick: bool, now: Instant) -> Result<SyncReport, XdpError> {
        let (inv, generation) = self.shared.inventory_at();
        let c = Compiler {
            settings: &self.settings,
            urls: self.urls.as_ref(),
        };
        let mut r = SyncReport::default();
        if generation != self.synced {
            r = match self.shared.changed_since(self.synced, generation) {
                Some(names) => self.sync.sync_hosts(&mut self.fp, &inv, &names, &c, now)?,
                None => self.sync.sync(&mut self.fp, &inv, &c, now)?,
            };
            self.synced = generation;
        }
        if tick {
            let t = self.sync.refresh(&mut self.fp, &inv, &c, now)?;
            r.added += t.added;
            r.changed += t.changed;
            r.removed += t.removed;
            r.unchanged += t.unchanged;
            r.failed += t.failed;
            r.templates_written += t.templates_written;
            r.templates_deleted += t.templates_deleted;
        }
        Ok(r)
    }

    /// Keeps the maps in step until `shutdown` turns true (or its sender goes away),
    /// then detaches the program.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut changes = self.shared.subscribe();
        if let Some(ring) = self.fp.take_events() {
            tokio::spawn(record_events(ring, self.shared.clone(), shutdown.clone()));
        }
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                r = changes.changed() => {
                    if r.is_err() {
                        break;
                    }
                    self = self.sync_blocking(false).await;
                }
                _ = tick.tick() => {
                    // Templates due for refresh and retired templates past their grace.
                    self = self.sync_blocking(true).await;
                }
            }
        }
        self.fp.detach_all();
    }

    /// One sync on the blocking pool (compiling templates is CPU work).
    async fn sync_blocking(mut self, tick: bool) -> Service {
        let handle = tokio::task::spawn_blocking(move || {
            let r = self.sync_now(tick, Instant::now());
            (self, r)
        });
        let (svc, r) = handle.await.expect("XDP sync panicked");
        match r {
            Ok(r)
                if r != SyncReport::default()
                    && (r.added + r.changed + r.removed + r.failed) > 0 =>
            {
                tracing::info!("XDP maps synced: {r:?}")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("XDP maps: {e}; requests go to the slow path until the next sync")
            }
        }
        svc
    }
}
