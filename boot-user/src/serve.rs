//! `xboot serve`: loads the config and inventory, opens the state, starts the services and
//! runs until SIGINT/SIGTERM.
//!
//! Services: the API (unix socket, optional TCP, over TLS with `api.cert`), HTTP boot service
//! (plain, and HTTPS with `provision.cert`), TFTP, DNS (`[dns]`), and DHCP on a
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

/// Loads the config (flags override it: --hosts, --images, --state-dir, --socket, --listen,
/// --dbpath), opens the
/// store, imports the inventory files over it and builds the shared state.
pub fn prepare(args: &ServeArgs) -> anyhow::Result<Prepared> {
    let mut config = Config::load(&args.config)?;
    if let Some(db) = &args.dbpath {
        config.dbpath = Some(db.clone());
    }
    if let Some(ip) = args.listen {
        crate::config::overrides::apply_listen(&mut config, ip)
            .map_err(|e| anyhow::anyhow!("--listen {ip}: {e}"))?;
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    if !args.services.is_empty() {
        tracing::warn!(
            "--services {} is not implemented by xboot: every configured service runs \
             (dhcp.mode = \"off\" turns DHCP off)",
            args.services.join(",")
        );
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
    // Cluster mode: the inventory is etcd's; the store is this server's snapshot of it.
    let (hosts_file, images_file) = if config.cluster.is_some() {
        for f in config.hosts.iter().chain(config.images.iter()) {
            tracing::warn!(
                "{}: inventory files are not read in cluster mode (the inventory is etcd's): \
                 import them once through the API (xboot host import, xboot db restore)",
                f.display()
            );
        }
        config.hosts = None;
        config.images = None;
        (None, None)
    } else {
        (config.hosts.clone(), config.images.clone())
    };
    let start = inventory::startup(
        Some(&store),
        hosts_file.as_deref(),
        images_file.as_deref(),
        &config.provision.image_roots(),
        config.provision.default_image.as_deref(),
    )
    .context("cannot load the inventory")?;
    for w in &start.warnings {
        tracing::warn!("{w}");
    }
    let inv = &start.inventory;
    if let Some(w) = crate::neigh::limit().and_then(|l| crate::neigh::pressure(inv.hosts(), l)) {
        tracing::warn!("{w}");
    }
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
    // Workers never need a capability: what needs one happens on this thread, in
    // `serve`, before it drops its own (see `privileges`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(crate::privileges::drop_all_or_warn)
        .build()?;
    rt.block_on(serve(prepared))
}

async fn serve(p: Prepared) -> anyhow::Result<()> {
    let config = p.shared.config.clone();
    let accounts = Arc::new(crate::api::accounts::Accounts::load(Some(p.store.clone()))?);
    if let Some(addr) = config.api.listen {
        let static_token = config.api.token.as_deref().is_some_and(|t| !t.is_empty());
        if !static_token && accounts.is_empty(crate::api::accounts::now_secs()) {
            anyhow::bail!("{}", crate::api::auth::no_account_message(addr));
        }
    }
    let mut api = ApiState::new(p.shared.clone(), Some(p.store.clone())).with_accounts(accounts);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let xdp_stop = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();

    // The boot-token keyring (shared by HTTP, DHCP, XDP and the API): kept in the
    // state dir unless derived from provision.secret.
    let key = token_key(&config)?;
    let key_file = config
        .provision
        .secret
        .as_deref()
        .is_none_or(str::is_empty)
        .then(|| config.state_dir().join(crate::http::token::KEY_FILE));
    // Cluster mode: follow etcd, commit the API's changes there, share the keyring.
    let cluster = match &config.cluster {
        Some(c) => {
            // Counted before `Cluster::new` narrows the running inventory to the segments.
            let held = p.shared.inventory().hosts().len();
            let cluster = crate::cluster::Cluster::new(
                c.clone(),
                p.shared.clone(),
                p.store.clone(),
                key.clone(),
            )?;
            if cluster.applied() == 0 && held > 0 {
                tracing::warn!(
                    "cluster: the store's {held} hosts are no snapshot of the cluster: they \
                     are replaced by etcd's inventory (to bring them in, `xboot db dump` them \
                     from a standalone server and `xboot db restore` them here)"
                );
            }
            tracing::info!(
                "cluster mode: server {} on etcd {}, prefix {}, from the snapshot at revision {}",
                cluster.id(),
                c.endpoints.join(","),
                c.prefix,
                cluster.applied()
            );
            if c.segments.is_empty() {
                tracing::info!("cluster: no cluster.segment: serving every host");
            } else {
                let segs: Vec<String> = c
                    .segments
                    .iter()
                    .map(|s| format!("{} ({})", s.name, s.subnets.join(", ")))
                    .collect();
                tracing::info!(
                    "cluster: serving the hosts of segments {}: {} of {held} in the snapshot",
                    segs.join(", "),
                    p.shared.inventory().hosts().len()
                );
            }
            if let Some(path) = &key_file {
                if let Err(e) = cluster.share_token_key(&key, path).await {
                    tracing::warn!(
                        "cluster: cannot share the boot-token keyring ({e}): signing with {}",
                        path.display()
                    );
                }
                let (c, k, p, stop) = (cluster.clone(), key.clone(), path.clone(), stopped());
                tasks.spawn(async move {
                    c.follow_token_key(k, p, stop).await;
                    Ok(())
                });
            }
            api = api.with_backend(Arc::new(cluster.clone()));
            let (c, stop) = (cluster.clone(), stopped());
            tasks.spawn(async move {
                c.follow(stop).await;
                Ok(())
            });
            let (c, stop) = (cluster.clone(), stopped());
            tasks.spawn(async move {
                c.publish(stop).await;
                Ok(())
            });
            let (c, stop) = (cluster.clone(), stopped());
            tasks.spawn(async move {
                c.replay(stop).await;
                Ok(())
            });
            let (b, stop) = (cluster.blobs(), stopped());
            tasks.spawn(async move {
                b.run(stop).await;
                Ok(())
            });
            let (b, stop) = (cluster.blobs(), stopped());
            tasks.spawn(async move {
                b.collect(stop).await;
                Ok(())
            });
            Some(cluster)
        }
        None => {
            // Standalone: `xboot token-key rotate` rewrites the file.
            if let Some(path) = key_file.clone() {
                let (k, stop) = (key.clone(), stopped());
                tasks.spawn(async move {
                    k.follow_file(path, stop).await;
                    Ok(())
                });
            }
            None
        }
    };

    // Certificates first: a bad path or a mismatched pair stops the start, naming the key.
    let load_cert = |section, files: Option<(&std::path::Path, &std::path::Path)>| {
        files
            .map(|(cert, key)| crate::tls::Certificate::load(section, cert, key))
            .transpose()
    };
    let provision_cert = load_cert("provision", config.provision.tls_files())?;
    let api_cert = load_cert("api", config.api.tls_files())?;
    if api_cert.is_some() && config.api.listen.is_none() {
        tracing::warn!("api.cert and api.key are for the TCP listener, and api.listen is not set");
    }
    let signer = crate::http::UrlSigner::from_config(&config.provision, key.clone());
    api = api.with_boot_token(Arc::new(move |host, mac| signer.token(host, mac)));

    // TFTP.
    // Each TFTP transfer holds a socket, each download a socket and a file: the soft
    // limit goes up to the hard one before anything is served.
    let open_files = crate::http::raise_nofile_limit();
    if config.tftp.max_transfers as u64 > open_files / 4 {
        tracing::warn!(
            "tftp.max_transfers = {}: more than the open-files limit leaves for TFTP \
             ({} of {open_files}); descriptors can run out before the cap is reached \
             (raise LimitNOFILE)",
            config.tftp.max_transfers,
            open_files / 4
        );
    }
    let tftp_addr: SocketAddr = config.tftp.listen.parse()?;
    let sock = std::net::UdpSocket::bind(tftp_addr)
        .with_context(|| format!("cannot bind TFTP (tftp.listen) on {tftp_addr}"))?;
    let (shared, root, stop) = (p.shared.clone(), config.tftp.root.clone(), stopped());
    let tftp_stats = Arc::new(crate::tftp::Stats::default());
    let tftp = crate::tftp::spawn(sock, root, shared, tftp_stats.clone(), stop)
        .context("cannot start the TFTP thread")?;
    tasks.spawn(async move { tftp.await.context("TFTP") });

    // DHCP: the XDP fast path on the named interfaces (dhcp.mode = "xdp"), and the
    // userspace server on its own thread for everything XDP passes up.
    let mut dhcp_start = None;
    let mut xdp_stats = None;
    let mut dhcp_stats = None;
    if config.dhcp.mode != DhcpMode::Off {
        let urls = Arc::new(crate::http::urls::UrlSigner::from_config(
            &config.provision,
            key.clone(),
        ));
        if config.dhcp.mode == DhcpMode::Xdp {
            match start_fast_path(&p, &urls) {
                Ok(svc) => {
                    xdp_stats = Some(svc.stats());
                    let rx = xdp_stop.clone();
                    tasks.spawn(async move {
                        svc.run(rx).await;
                        Ok(())
                    });
                }
                Err(reason) if config.dhcp.mode_explicit => {
                    anyhow::bail!(
                        "dhcp.mode = \"xdp\": the XDP fast path cannot start: {reason} \
                         (without dhcp.mode, xboot falls back to userspace DHCP)"
                    );
                }
                Err(reason) => tracing::warn!(
                    "DHCP from userspace only: the XDP fast path (the default dhcp.mode) \
                     cannot start: {reason}"
                ),
            }
        }
        let service = Arc::new(crate::dhcp::Service::new(p.shared.clone(), urls)?);
        let listen = crate::dhcp::Listen::from_config(&config)?;
        let sockets =
            crate::dhcp::Sockets::open(&listen).context("cannot open the DHCP sockets")?;
        dhcp_stats = Some(service.stats.clone());
        let (stats, disc, xdp, tftp) = (
            service.stats.clone(),
            service.discovered.clone(),
            xdp_stats.clone(),
            tftp_stats.clone(),
        );
        let cl = cluster.clone();
        api = api
            .with_counters(Arc::new(move || {
                serde_json::json!({
                    "dhcp": stats.snapshot(),
                    "xdp": xdp.as_ref().map(|x| x.counters()),
                    "tftp": tftp.snapshot(),
                    "cluster": cl.as_ref().map(|c| c.apply_stats()),
                })
            }))
            .with_discovered(Arc::new(move || {
                disc.list()
                    .into_iter()
                    .filter_map(|d| serde_json::to_value(d).ok())
                    .collect()
            }));
        dhcp_start = Some((sockets, service));
    } else {
        tracing::info!("DHCP off (dhcp.mode = \"off\")");
    }
    // DNS (`[dns]` with a `dns.listen`): bound here, before privileges are dropped.
    let mut dns_stats = None;
    if let Some(dns) = &config.dns {
        let names = match &cluster {
            Some(c) => crate::dns::Names::Cluster(c.clone()),
            None => crate::dns::Names::Served(p.shared.clone()),
        };
        if let Some((svc, addr)) = crate::dns::Service::from_config(names, dns)? {
            let sockets = crate::dns::Sockets::bind(addr)?;
            dns_stats = Some(svc.stats.clone());
            let stop = stopped();
            tasks.spawn(async move { svc.run(sockets, stop).await.context("DNS") });
        }
    }
    // HTTP boot service: plain on provision.listen, HTTPS with provision.cert/key.
    let bind_http = |addr: String, what: &'static str| async move {
        let a: SocketAddr = addr.parse()?;
        crate::http::listen::bind_tcp(a).with_context(|| format!("cannot bind {what} on {a}"))
    };
    let plain_listener = match config.provision.plain_http() {
        true => Some(bind_http(config.provision.listen.clone(), "HTTP (provision.listen)").await?),
        false => None,
    };
    let tls_listener = match (&provision_cert, config.provision.tls_listen_addr()) {
        (Some(cert), Some(addr)) => Some((
            bind_http(addr, "HTTPS (provision.tls_listen)").await?,
            cert.clone(),
        )),
        _ => None,
    };
    let completer = api.clone();
    let blobs = cluster.as_ref().map(|c| c.blobs());
    let http = crate::http::HttpService::new(p.shared.clone(), key.clone()).on_complete(Arc::new(
        move |host: String| {
            // Grendel semantics: a completed provision boots from disk next time. Answered
            // only once committed: an `ok` before it could be lost to a crash, and the
            // node would be reinstalled.
            let api = completer.clone();
            let cluster = cluster.clone();
            Box::pin(async move {
                if let Some(c) = cluster {
                    // A field-only write: no whole-inventory check, no shared lock. With
                    // etcd unreachable it is queued in the local store (durable, so the
                    // `ok` holds) and written once etcd is back.
                    // Queued too when the write's outcome is unknown: writing it again
                    // is harmless (a host already cleared is left alone).
                    return match c.set_provision(&host, false).await {
                        Err(
                            e @ (crate::inventory::CommitError::Unavailable(_)
                            | crate::inventory::CommitError::Unknown { .. }),
                        ) => {
                            let why = e.to_string();
                            c.queue_completion(&host).map_err(|e| {
                                format!("cannot record the completed provision: {e}")
                            })?;
                            tracing::warn!(
                                "host {host}: completion queued, written once etcd is back: {why}"
                            );
                            Ok(())
                        }
                        r => r.map_err(|e| {
                            tracing::warn!("host {host}: cannot record completed provision: {e}");
                            format!("cannot record the completed provision: {e}")
                        }),
                    };
                }
                // One host's change: validated and synced at its own cost, not the
                // inventory's.
                api.apply(|inv| {
                    let mut change = crate::inventory::Change::default();
                    if let Some(h) = inv.host(&host) {
                        let mut h = h.clone();
                        h.provision = false;
                        change.put_hosts.push(h);
                    }
                    Ok((change, ()))
                })
                .await
                .map_err(|e| {
                    tracing::warn!("host {host}: cannot record completed provision: {e:?}");
                    format!("cannot record the completed provision: {}", e.message)
                })
            })
        },
    ));
    let http = match blobs {
        Some(b) => http.with_blobs(b),
        None => http,
    };
    let metrics = Metrics {
        tftp: tftp_stats,
        dhcp: dhcp_stats,
        xdp: xdp_stats,
        dns: dns_stats,
    };
    let app = |http: crate::http::HttpService| {
        if config.provision.metrics {
            let metrics = metrics.clone();
            http.router().route(
                "/metrics",
                axum::routing::get(move || {
                    let m = metrics.clone();
                    async move { m.prometheus() }
                }),
            )
        } else {
            http.router()
        }
    };
    let limits = crate::http::listen::Limits::provision(&config.provision, open_files);
    if let Some(l) = plain_listener {
        let (http, app, stop) = (http.clone(), app(http.clone()), stopped());
        tasks.spawn(async move {
            http.serve_router(app, l, limits, stop)
                .await
                .context("HTTP")
        });
    }
    if let Some((l, cert)) = tls_listener {
        let https = http.clone().over_tls();
        let (app, stop) = (app(https.clone()), stopped());
        tasks.spawn(async move {
            https
                .serve_router_tls(app, l, limits, cert, stop)
                .await
                .context("HTTPS")
        });
    }

    let listener = crate::api::bind_unix(&config.api.socket_path).await?;
    tracing::info!("API listening on {}", config.api.socket_path.display());
    let (socket, st, stop) = (config.api.socket_path.clone(), api.clone(), stopped());
    let limits = crate::http::listen::Limits::api(&config.api, open_files);
    tasks.spawn(async move {
        let r = crate::http::listen::serve(listener, crate::api::router(st), limits, stop).await;
        crate::api::remove_socket(&socket);
        r.context("API (unix socket)")
    });
    if let Some(addr) = config.api.listen {
        let l = crate::http::listen::bind_tcp(addr)
            .with_context(|| format!("cannot bind API on {addr}"))?;
        let (api, stop) = (api.clone(), stopped());
        let cert = api_cert.clone();
        tasks.spawn(async move {
            crate::api::serve_tcp_tls(l, api, cert, stop)
                .await
                .context("API (TCP)")
        });
    }
    // Certificates: read again on SIGHUP and when their files change (as the inventory
    // files are).
    let certs: Vec<_> = provision_cert.into_iter().chain(api_cert).collect();
    if !certs.is_empty() {
        let stop = stopped();
        tasks.spawn(async move {
            crate::tls::reload_on_hangup_or_change(certs, stop).await;
            Ok(())
        });
    }
    // Everything that needed a privilege is done (program attached, ports bound, raw
    // sockets open): drop them all before starting the threads that inherit ours.
    match crate::privileges::drop_all() {
        Ok(()) => tracing::info!("capabilities dropped: serving with none"),
        Err(e) => tracing::warn!("cannot drop capabilities: {e}"),
    }
    let dhcp_thread = match dhcp_start {
        Some((sockets, service)) => Some(crate::dhcp::spawn(sockets, service, stopped())?),
        None => None,
    };

    // Inventory files: reloaded on SIGHUP and when they change.
    let template_dirs = config.provision.template_dirs();
    if config.hosts.is_some() || config.images.is_some() || template_dirs.iter().any(|d| d.is_dir())
    {
        let reloader =
            crate::reload::FileReloader::new(config.hosts.clone(), config.images.clone())
                .with_template_dirs(template_dirs);
        let (api, stop) = (api.clone(), stopped());
        tasks.spawn(async move {
            crate::reload::run(reloader, api, stop).await;
            Ok(())
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

/// The XDP fast path on the configured interfaces, or why it cannot run.
fn start_fast_path(
    p: &Prepared,
    urls: &Arc<crate::http::urls::UrlSigner>,
) -> Result<crate::xdp::Service, String> {
    let config = &p.shared.config;
    let ifaces = config.interface.names();
    if ifaces.is_empty() {
        return Err("no `interface` is configured (the NICs to attach the program to)".into());
    }
    if let Some(missing) = crate::xdp::service::missing_capabilities() {
        return Err(missing);
    }
    let opts = crate::xdp::SyncOptions {
        // Templates embed boot-URL tokens: expire them well before the tokens.
        template_ttl: Some(std::time::Duration::from_secs(
            config.provision.token_ttl.max(2),
        )),
        ..Default::default()
    };
    let svc = crate::xdp::Service::start(p.shared.clone(), urls.clone(), &ifaces, opts)
        .map_err(|e| crate::xdp::service::explain(&e))?;
    for (iface, mode) in svc.attached() {
        tracing::info!("XDP attached to {iface} ({mode:?})");
    }
    Ok(svc)
}

/// The boot-URL signing key: `provision.secret`, else a key generated once and kept in
/// the state dir (so a restart does not invalidate the URLs of nodes mid-boot).
fn token_key(config: &Config) -> anyhow::Result<TokenKey> {
    Ok(TokenKey::from_config(config)?)
}

/// What `/metrics` exposes, in Prometheus text format: the TFTP server's transfers, the
/// userspace DHCP counters and the XDP fast path's per-decision counters.
#[derive(Clone)]
struct Metrics {
    tftp: Arc<crate::tftp::Stats>,
    dhcp: Option<Arc<crate::dhcp::Stats>>,
    xdp: Option<Arc<crate::xdp::XdpStats>>,
    dns: Option<Arc<crate::dns::Stats>>,
}

impl Metrics {
    fn prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = self.tftp.prometheus();
        if let Some(d) = &self.dhcp {
            let snap = serde_json::to_value(d.snapshot()).unwrap_or_default();
            out.push_str("# HELP xboot_dhcp_userspace_total Userspace DHCP server counters.\n");
            out.push_str("# TYPE xboot_dhcp_userspace_total counter\n");
            if let Some(map) = snap.as_object() {
                for (k, v) in map {
                    let _ = writeln!(out, "xboot_dhcp_userspace_total{{counter=\"{k}\"}} {v}");
                }
            }
        }
        if let Some(x) = &self.xdp {
            out.push_str(&x.prometheus());
        }
        if let Some(d) = &self.dns {
            out.push_str(&d.prometheus());
        }
        out
    }
}
