//! `xboot serve`: loads the config and inventory, opens the state, starts the services and
//! runs until SIGINT/SIGTERM.
//!
//! Services: the API (unix socket, optional TCP), HTTP boot service, TFTP, and DHCP on a
//! thread and runtime of its own (so a storm of image downloads cannot delay a lease).
//! All share one [`Shared`]: an inventory change made through the API reaches them at once.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use std::net::SocketAddr;

use crate::api::ApiState;
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::config::DhcpMode;
use crate::events::EventLog;
use crate::http::token::TokenKey;
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
    let mut api = ApiState::new(p.shared.clone(), Some(p.store.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();

    // HTTP boot service.
    let key = token_key(&config)?;
    let http_addr: SocketAddr = config.provision.listen.parse()?;
    let l = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot bind HTTP (provision.listen) on {http_addr}"))?;
    let completer = api.clone();
    let http = crate::http::HttpService::new(p.shared.clone(), key.clone()).on_complete(Arc::new(
        move |host: &str| {
            // Grendel semantics: a completed provision boots from disk next time.
            let (api, host) = (completer.clone(), host.to_string());
            tokio::spawn(async move {
                let r = api
                    .mutate(|hosts, _| {
                        if let Some(h) = hosts.iter_mut().find(|h| h.name == host) {
                            h.provision = false;
                        }
                        Ok(())
                    })
                    .await;
                if let Err(e) = r {
                    tracing::warn!("host {host}: cannot record completed provision: {e:?}");
                }
            });
            Ok(())
        },
    ));
    let stop = stopped();
    tasks.spawn(async move { http.serve(l, stop).await.context("HTTP") });

    // TFTP.
    let tftp_addr: SocketAddr = config.tftp.listen.parse()?;
    let sock = std::net::UdpSocket::bind(tftp_addr)
        .with_context(|| format!("cannot bind TFTP (tftp.listen) on {tftp_addr}"))?;
    let (shared, root, stop) = (p.shared.clone(), config.tftp.root.clone(), stopped());
    tasks.spawn(async move {
        crate::tftp::run(sock, &root, shared, stop)
            .await
            .context("TFTP")
    });

    // DHCP, on its own thread.
    let mut dhcp_thread = None;
    match config.dhcp.mode {
        DhcpMode::Off => tracing::info!("DHCP off (dhcp.mode = \"off\")"),
        mode => {
            if mode == DhcpMode::Xdp {
                tracing::warn!("dhcp.mode = \"xdp\": the XDP fast path is not built into this version; serving DHCP from userspace");
            }
            let urls = Arc::new(crate::http::urls::UrlSigner::from_config(
                &config.provision,
                key.clone(),
            ));
            let service = Arc::new(crate::dhcp::Service::new(p.shared.clone(), urls)?);
            let listen = crate::dhcp::Listen::from_config(&config)?;
            let sockets =
                crate::dhcp::Sockets::open(&listen).context("cannot open the DHCP sockets")?;
            let (stats, disc) = (service.stats.clone(), service.discovered.clone());
            api = api
                .with_counters(Arc::new(
                    move || serde_json::json!({ "dhcp": stats.snapshot() }),
                ))
                .with_discovered(Arc::new(move || {
                    disc.list()
                        .into_iter()
                        .filter_map(|d| serde_json::to_value(d).ok())
                        .collect()
                }));
            let stop = stopped();
            dhcp_thread = Some(crate::dhcp::spawn(sockets, service, stop)?);
        }
    }

    // Inventory files: reloaded on SIGHUP and when they change.
    if config.hosts.is_some() || config.images.is_some() {
        let reloader =
            crate::reload::FileReloader::new(config.hosts.clone(), config.images.clone());
        let (api, stop) = (api.clone(), stopped());
        tasks.spawn(async move {
            crate::reload::run(reloader, api, stop).await;
            Ok(())
        });
    }

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
    if let Some(t) = dhcp_thread {
        match t.join() {
            Ok(r) => r.context("DHCP")?,
            Err(_) => anyhow::bail!("the DHCP thread panicked"),
        }
    }
    Ok(())
}

/// The boot-URL signing key: `provision.secret`, else a key generated once and kept in
/// the state dir (so a restart does not invalidate the URLs of nodes mid-boot).
fn token_key(config: &Config) -> anyhow::Result<TokenKey> {
    Ok(TokenKey::from_config(config)?)
}
