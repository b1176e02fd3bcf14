//! `xboot serve`: loads the config and inventory, opens the state, starts the services and
//! runs until SIGINT/SIGTERM.
//!
//! For now only the API runs (DHCP, TFTP, HTTP and XDP are wired here by the lead).
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::api::ApiState;
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::events::EventLog;
use crate::inventory::{self, Store};
use crate::state::Shared;

/// Everything loaded before any service starts.
pub struct Prepared {
    pub shared: Arc<Shared>,
    pub store: Arc<Store>,
}

/// Loads the config (flags override it: --hosts, --images, --state-dir, --socket), opens the
/// store, imports the inventory files over it and builds the shared state.
pub fn prepare(args: &ServeArgs) -> anyhow::Result<Prepared> {
    let mut config = Config::load(&args.config)?;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let cwd_abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    if let Some(h) = &args.files.hosts {
        config.hosts = Some(cwd_abs(h));
    }
    if let Some(i) = &args.files.images {
        config.images = Some(cwd_abs(i));
    }
    if let Some(d) = &args.state_dir {
        config.state_dir = Some(cwd_abs(d));
    }
    if let Some(s) = &args.socket {
        config.api.socket_path = cwd_abs(s);
    }
    let state_dir = config.state_dir();
    config.state_dir = Some(state_dir.clone());
    let store = Store::open(&state_dir)?;
    let start = inventory::startup(
        Some(&store),
        config.hosts.as_deref(),
        config.images.as_deref(),
    )
    .context("cannot load the inventory")?;
    for w in &start.warnings {
        tracing::warn!("{w}");
    }
    let inv = &start.inventory;
    tracing::info!(
        "inventory: {} hosts, {} images (store {})",
        inv.hosts().len(),
        inv.images().len(),
        store.path().display()
    );
    let events_path = state_dir.join("events.jsonl");
    let events = EventLog::with_file(&events_path)
        .with_context(|| format!("cannot open {}", events_path.display()))?;
    Ok(Prepared {
        shared: Shared::new(config, start.inventory, events),
        store: Arc::new(store),
    })
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let prepared = prepare(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(prepared))
}

async fn serve(p: Prepared) -> anyhow::Result<()> {
    let config = p.shared.config.clone();
    let api = ApiState::new(p.shared.clone(), Some(p.store.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    let listener = crate::api::bind_unix(&config.api.socket_path).await?;
    tracing::info!("API listening on {}", config.api.socket_path.display());
    let (socket, st, stop) = (config.api.socket_path.clone(), api.clone(), stopped());
    tasks.spawn(async move {
        let r = axum::serve(listener, crate::api::router(st))
            .with_graceful_shutdown(stop)
            .await;
        let _ = std::fs::remove_file(&socket);
        r.context("API (unix socket)")
    });
    if let (Some(addr), Some(token)) = (config.api.listen, config.api.token.clone()) {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind API on {addr}"))?;
        let stop = stopped();
        tasks.spawn(async move {
            crate::api::serve_tcp(l, api, token, stop)
                .await
                .context("API (TCP)")
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, shutting down"),
        _ = term.recv() => tracing::info!("terminated, shutting down"),
        Some(r) = tasks.join_next() => { r??; anyhow::bail!("a service stopped unexpectedly") }
    }
    let _ = stop_tx.send(true);
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}
