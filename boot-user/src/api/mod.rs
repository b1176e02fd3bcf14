//! The REST API: JSON over HTTP on the unix socket `api.socket_path`, and optionally on TCP
//! (`api.listen`) behind bearer tokens ([`auth`], [`accounts`]), over TLS with `api.cert`/`api.key`.
//!
//! xboot's routes (all under `/v1`, JSON in and out; errors are `{"error": "...",
//! "errors": [...]}`):
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/hosts[?nodeset=NS][&tags=T1,T2]` | hosts, in natural name order |
//! | `GET /v1/hosts/{name}` | one host |
//! | `POST /v1/hosts` | upsert: a host, an array of hosts, or `{"hosts": [...], "images": [...]}` |
//! | `PUT /v1/hosts/{name}` | upsert one host |
//! | `DELETE /v1/hosts/{name}`, `DELETE /v1/hosts?nodeset=NS` | delete |
//! | `POST /v1/hosts/provision?nodeset=NS`, `POST /v1/hosts/unprovision?nodeset=NS` | set `provision` |
//! | `POST /v1/hosts/tag?nodeset=NS`, `POST /v1/hosts/untag?nodeset=NS` | add / remove the body's `{"tags": [...]}` |
//! | `POST /v1/hosts/image?nodeset=NS` | set the boot image to the body's `{"image": NAME}` |
//! | `GET /v1/db/dump` | the whole inventory, as Grendel's `{"Users", "Hosts", "Images"}` dump |
//! | `POST /v1/db/restore` | replace the whole inventory by a dump (validated first, one transaction) |
//! | `GET /v1/hosts/{name}/events`, `GET /v1/events?nodeset=NS` | boot events |
//! | `GET /v1/images`, `GET /v1/images/{name}` | images |
//! | `POST /v1/images`, `PUT /v1/images/{name}`, `DELETE /v1/images/{name}` | image changes |
//! | `GET /v1/discovered` | unknown MACs seen by the DHCP server |
//! | `GET /v1/status` | inventory counts, uptime, service counters |
//! | `POST /v1/bmc/power` | BMC power fan-out |
//! | `GET`, `POST /v1/users`, `DELETE /v1/users/{name}` | API users ([`users`]) |
//! | `GET`, `POST /v1/tokens`, `DELETE /v1/tokens/{id}` | API tokens |
//! | `GET /v1/openapi.json` | the OpenAPI 3 document of every route ([`openapi`]) |
//!
//! Wherever a route takes `?nodeset=`, `nodeset=all` names every host, and `&tags=T1,T2`
//! (alone or with a node set) keeps the hosts carrying any of those tags. Grendel v0.2's
//! and the SquareFactory fork's routes (`/v1/nodes...`, `/v1/images/find`, `DELETE
//! /v1/images?names=`, `/v1/bmc/power/os`, `/v1/auth/...`, `/v1/host/...`,
//! `/v1/bootimage/...`) are in [`grendel`], on the same core operations.
//!
//! Every change is validated first (400 with every problem if it is invalid: the running
//! inventory stays), then committed to the store, then swapped into [`Shared`], so the
//! DHCP/TFTP/HTTP services see it on their next request. Changes of some entries are
//! validated incrementally against the running inventory's indexes, at a cost that does
//! not grow with the inventory; `db/restore` is validated whole. Changes made while one
//! is being written are committed together ([`commit`]).
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::http::listen;
use crate::inventory::{Backend, Change, CommitError, Committed, Host, Image, Inventory, Store};
use crate::state::Shared;

pub mod accounts;
pub mod auth;
pub mod client;
mod commit;
mod grendel;
#[cfg(test)]
mod grendel_tests;
mod handlers;
pub mod openapi;
#[cfg(test)]
mod tests;
mod users;

/// Largest request body: a 10 000-host import is a few MiB.
const BODY_LIMIT: usize = 64 << 20;

/// Returns JSON values describing something another service knows (discovered MACs,
/// counters): how the API reads services it does not own.
pub type JsonListHook = Arc<dyn Fn() -> Vec<serde_json::Value> + Send + Sync>;
pub type JsonHook = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
/// Signs a boot token for a host booting from a MAC (the HTTP service's key).
pub type BootTokenHook = Arc<dyn Fn(&str, crate::inventory::Mac) -> String + Send + Sync>;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub shared: Arc<Shared>,
    /// None: changes live in memory only (tests, or a server without a state dir).
    pub store: Option<Arc<Store>>,
    /// Unknown MACs seen by the DHCP server (set by `serve` when DHCP runs).
    pub discovered: Option<JsonListHook>,
    /// Service counters for `/v1/status` (DHCP, TFTP, HTTP, XDP ...).
    pub counters: Option<JsonHook>,
    /// Boot tokens for `GET /v1/nodes/token/{interface}` (set by `serve`).
    pub boot_token: Option<BootTokenHook>,
    /// API users and tokens (the TCP listener's authentication).
    pub accounts: Arc<accounts::Accounts>,
    /// Where changes are committed instead of `store` (cluster mode: etcd).
    pub backend: Option<Arc<dyn Backend>>,
    /// Serializes changes at the backend: each is read-modify-validate-commit-swap.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// The standalone changes: made in order, committed in groups ([`commit`]).
    writes: Arc<commit::Writes>,
    started: Instant,
}

impl ApiState {
    pub fn new(shared: Arc<Shared>, store: Option<Arc<Store>>) -> ApiState {
        ApiState {
            shared,
            store,
            discovered: None,
            counters: None,
            boot_token: None,
            accounts: Arc::new(accounts::Accounts::memory()),
            backend: None,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            writes: Arc::default(),
            started: Instant::now(),
        }
    }

    pub fn with_discovered(mut self, f: JsonListHook) -> ApiState {
        self.discovered = Some(f);
        self
    }

    pub fn with_counters(mut self, f: JsonHook) -> ApiState {
        self.counters = Some(f);
        self
    }

    pub fn with_boot_token(mut self, f: BootTokenHook) -> ApiState {
        self.boot_token = Some(f);
        self
    }

    pub fn with_accounts(mut self, a: Arc<accounts::Accounts>) -> ApiState {
        self.accounts = a;
        self
    }

    /// Commits changes to `backend` instead of the store (cluster mode).
    pub fn with_backend(mut self, b: Arc<dyn Backend>) -> ApiState {
        self.backend = Some(b);
        self
    }

    /// The inventory the API reads and changes: the whole one, also where the services
    /// serve a part of it (a cluster server serves its segments' hosts only).
    pub fn inventory(&self) -> Arc<Inventory> {
        match &self.backend {
            Some(b) => b.base(self.shared.inventory()).0,
            None => self.shared.inventory(),
        }
    }

    /// Applies the change `build` makes from the running inventory: validated
    /// incrementally ([`Inventory::apply`]: the cost is the change's, not the
    /// inventory's), committed to the store, swapped in with what it touched (so the XDP
    /// maps update only those hosts). Returns what `build` returned besides the change.
    /// With a backend (cluster mode) the change is made on the backend's base and
    /// committed there ([`ApiState::apply_on`]), at the change's cost too.
    pub async fn apply<T>(
        &self,
        build: impl FnOnce(&Inventory) -> Result<(Change, T), ApiError>,
    ) -> Result<T, ApiError> {
        if let Some(b) = self.backend.clone() {
            let _guard = self.write_lock.lock().await;
            return self.apply_on(b, build).await;
        }
        let (done, out) = {
            let stage = self.writes.stage(&self.shared).await;
            let current = stage.head().clone();
            let (change, out) = build(&current)?;
            let change = change.effective(&current);
            if change.is_empty() {
                if !stage.pending() {
                    return Ok(out);
                }
                // Nothing to do only because of changes not yet durable: answered
                // with their outcome.
                (stage.ride(), out)
            } else {
                let change = Arc::new(change);
                let inv = self.check(current, change.clone()).await?;
                (stage.accept(inv, change), out)
            }
        };
        let (writes, shared, store) =
            (self.writes.clone(), self.shared.clone(), self.store.clone());
        // Its own task: the accepted change is committed even if this caller goes away.
        tokio::spawn(async move { writes.commit(&shared, store.as_ref()).await });
        match done.await {
            Ok(Ok(())) => Ok(out),
            Ok(Err(e)) => Err(ApiError::internal(e)),
            Err(_) => Err(ApiError::internal("the commit ended without an outcome")),
        }
    }

    /// The inventory `change` makes of `current`, validated incrementally.
    async fn check(
        &self,
        current: Arc<Inventory>,
        change: Arc<Change>,
    ) -> Result<Inventory, ApiError> {
        let provision = &self.shared.config.provision;
        let default_image = provision.default_image.clone();
        if change.put_images.is_empty() {
            // Hosts only: no file is read, and the work is microseconds per host.
            current.apply(&change, &provision.image_roots(), default_image.as_deref())
        } else {
            // Image checks read file metadata and templates: off the runtime.
            let roots = provision.image_roots();
            tokio::task::spawn_blocking(move || {
                current.apply(&change, &roots, default_image.as_deref())
            })
            .await
            .map_err(ApiError::internal)?
        }
        .map_err(|errs| ApiError::invalid(errs.messages()))
    }

    /// [`ApiState::apply`] on a [`Backend`]: the change is made on the backend's base,
    /// validated incrementally on it and committed (one transaction per host's keys, at
    /// etcd); a conflict (another server changed the same entries, or made a change
    /// checked against the whole inventory, since that base) makes the change again on
    /// the newer base, its entries merged into it field by field ([`Change::rebased`]),
    /// and validated again. No step reads the whole inventory.
    async fn apply_on<T>(
        &self,
        backend: Arc<dyn Backend>,
        build: impl FnOnce(&Inventory) -> Result<(Change, T), ApiError>,
    ) -> Result<T, ApiError> {
        let (mut base, mut revision) = backend.base(self.shared.inventory());
        let (mut change, out) = build(&base)?;
        for _ in 0..10 {
            change = change.effective(&base);
            if change.is_empty() {
                return Ok(out);
            }
            let shared = Arc::new(change);
            let inv = self.check(base.clone(), shared.clone()).await?;
            change = Arc::unwrap_or_clone(shared);
            match backend.commit(base.clone(), revision, change.clone()).await {
                Ok(Committed::Swap) => {
                    self.shared.apply_inventory(inv, &change);
                    return Ok(out);
                }
                Ok(Committed::InPlace) => return Ok(out),
                Err(CommitError::Conflict) => {
                    let (newer, rev) = backend.base(self.shared.inventory());
                    change = change.rebased(&base, &newer);
                    (base, revision) = (newer, rev);
                }
                Err(e) => return Err(commit_error(e)),
            }
        }
        Err(conflicting())
    }

    /// Applies `edit` to a copy of the whole running inventory; if the result is valid
    /// (checked whole), commits it to the store and swaps it in. Returns what `edit`
    /// returned. For replacing everything (`db restore`); a change of some entries
    /// goes through [`ApiState::apply`].
    pub async fn mutate<T>(
        &self,
        edit: impl FnOnce(&mut Vec<Host>, &mut Vec<Image>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Some(b) = self.backend.clone() {
            let _guard = self.write_lock.lock().await;
            return self.mutate_on(b, edit).await;
        }
        let writes = self.writes.clone();
        writes
            .exclusive(&self.shared, self.store.as_ref(), self.replace(edit))
            .await
    }

    /// [`ApiState::mutate`]'s standalone replacement, run with no other change made.
    async fn replace<T>(
        &self,
        edit: impl FnOnce(&mut Vec<Host>, &mut Vec<Image>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let current = self.shared.inventory();
        let (mut hosts, mut images) = (current.hosts().to_vec(), current.images().to_vec());
        let out = edit(&mut hosts, &mut images)?;
        let change = Change::diff(&current.hosts().to_vec(), current.images(), &hosts, &images);
        if change.is_empty() {
            return Ok(out);
        }
        let roots = self.shared.config.provision.image_roots();
        let default_image = self.shared.config.provision.default_image.clone();
        let inv = tokio::task::spawn_blocking(move || {
            Inventory::new_with_default(hosts, images, &roots, default_image.as_deref())
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|errs| ApiError::invalid(errs.messages()))?;
        if let Some(store) = self.store.clone() {
            tokio::task::spawn_blocking(move || store.apply(&change))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
        }
        self.shared.replace_inventory(inv);
        Ok(out)
    }
}

impl ApiState {
    /// [`ApiState::mutate`] on a [`Backend`]: the change is made on the backend's base,
    /// validated, committed; a conflict (another server changed the same entries, or the
    /// whole inventory, since that base) makes the change again on the newer base, its
    /// entries merged into it field by field ([`Change::rebase`]), and validated again.
    async fn mutate_on<T>(
        &self,
        backend: Arc<dyn Backend>,
        edit: impl FnOnce(&mut Vec<Host>, &mut Vec<Image>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let (mut base, mut revision) = backend.base(self.shared.inventory());
        let (mut hosts, mut images) = (base.hosts().to_vec(), base.images().to_vec());
        let out = edit(&mut hosts, &mut images)?;
        let mut change = Change::diff(&base.hosts().to_vec(), base.images(), &hosts, &images);
        let roots = self.shared.config.provision.image_roots();
        let default_image = self.shared.config.provision.default_image.clone();
        for _ in 0..10 {
            if change.is_empty() {
                return Ok(out);
            }
            let (roots, default_image) = (roots.clone(), default_image.clone());
            let (h, i) = (hosts.clone(), images.clone());
            let inv = tokio::task::spawn_blocking(move || {
                Inventory::new_with_default(h, i, &roots, default_image.as_deref())
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(|errs| ApiError::invalid(errs.messages()))?;
            match backend.commit(base.clone(), revision, change.clone()).await {
                Ok(Committed::Swap) => {
                    self.shared.replace_inventory(inv);
                    return Ok(out);
                }
                Ok(Committed::InPlace) => return Ok(out),
                Err(CommitError::Conflict) => {
                    let (newer, rev) = backend.base(self.shared.inventory());
                    (hosts, images) = change.rebase(&base, &newer);
                    change = Change::diff(&newer.hosts().to_vec(), newer.images(), &hosts, &images);
                    (base, revision) = (newer, rev);
                }
                Err(e) => return Err(commit_error(e)),
            }
        }
        Err(conflicting())
    }
}

/// A backend's refusal as an answer: 503 while it is unreachable, with the change's
/// `outcome` (`not_applied`; `unknown` or `partial` when it was sent and not confirmed,
/// so it may still commit: a client must look before it writes again).
fn commit_error(e: CommitError) -> ApiError {
    match e.outcome() {
        Some(outcome) => ApiError {
            outcome: Some(outcome),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        },
        None => ApiError::internal(e),
    }
}

fn conflicting() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "the inventory kept changing under this change (other servers' writes): try again",
    )
}

/// An API error answer: `{"error": "...", "errors": [...]}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Every problem, for validation failures.
    pub errors: Vec<String>,
    /// A write the store could not confirm: what became of it (`not_applied`,
    /// `unknown`, `partial`; [`CommitError::outcome`]).
    pub outcome: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            errors: vec![],
            outcome: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn invalid(errors: Vec<String>) -> ApiError {
        let message = match errors.as_slice() {
            [one] => format!("invalid inventory: {one}"),
            many => format!("invalid inventory: {} problems", many.len()),
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message,
            errors,
            outcome: None,
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!("api: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message, "errors": self.errors });
        if let Some(o) = self.outcome {
            body["outcome"] = o.into();
        }
        (self.status, Json(body)).into_response()
    }
}

/// The API routes (no authentication: the unix socket's permissions guard it):
/// xboot's, Grendel's ([`grendel`]) and the accounts' ([`users`]), one set of handlers.
pub fn router(state: ApiState) -> Router {
    use axum::routing::{delete, patch, put};
    use handlers::*;
    let grendel_routes = Router::new()
        .route(
            "/v1/nodes",
            get(grendel::nodes_list)
                .post(grendel::nodes_add)
                .delete(grendel::nodes_delete),
        )
        .route("/v1/nodes/find", get(grendel::nodes_find))
        .route("/v1/nodes/provision", patch(grendel::nodes_provision))
        .route("/v1/nodes/tags/{action}", patch(grendel::nodes_tags))
        .route("/v1/nodes/image", patch(grendel::nodes_image))
        .route("/v1/nodes/token/{interface}", get(grendel::nodes_token))
        .route("/v1/images/find", get(grendel::images_find))
        .route("/v1/bmc/power/os", post(grendel::bmc_power_os))
        .route("/v1/auth/signin", post(grendel::signin))
        .route("/v1/auth/token", post(grendel::auth_token))
        .route("/v1/host", post(grendel::host_add))
        .route("/v1/host/list", get(grendel::host_list))
        .route(
            "/v1/host/find/{nodeset}",
            get(grendel::host_find).delete(grendel::host_delete),
        )
        .route("/v1/host/tags/{tags}", get(grendel::host_by_tags))
        .route("/v1/host/tag/{nodeset}", put(grendel::host_tag))
        .route("/v1/host/untag/{nodeset}", put(grendel::host_untag))
        .route("/v1/host/provision/{nodeset}", put(grendel::host_provision))
        .route(
            "/v1/host/unprovision/{nodeset}",
            put(grendel::host_unprovision),
        )
        .route("/v1/bootimage", post(grendel::bootimage_add))
        .route("/v1/bootimage/list", get(grendel::bootimage_list))
        .route(
            "/v1/bootimage/find/{name}",
            get(grendel::bootimage_find).delete(grendel::bootimage_delete),
        );
    let account_routes = Router::new()
        .route("/v1/users", get(users::list_users).post(users::add_user))
        .route("/v1/users/{name}", delete(users::delete_user))
        .route(
            "/v1/tokens",
            get(users::list_tokens).post(users::create_token),
        )
        .route("/v1/tokens/{id}", delete(users::revoke_token));
    Router::new()
        .route(
            "/v1/hosts",
            get(list_hosts).post(post_hosts).delete(delete_hosts),
        )
        .route("/v1/hosts/provision", post(provision))
        .route("/v1/hosts/unprovision", post(unprovision))
        .route("/v1/hosts/tag", post(tag))
        .route("/v1/hosts/untag", post(untag))
        .route("/v1/hosts/image", post(set_image))
        .route("/v1/db/dump", get(db_dump))
        .route("/v1/db/restore", post(grendel::db_restore))
        .route(
            "/v1/hosts/{name}",
            get(get_host).put(put_host).delete(delete_host),
        )
        .route("/v1/hosts/{name}/events", get(host_events))
        .route("/v1/events", get(events))
        .route(
            "/v1/images",
            get(list_images)
                .post(grendel::images_add)
                .delete(grendel::images_delete),
        )
        .route(
            "/v1/images/{name}",
            get(get_image).put(put_image).delete(delete_image),
        )
        .route("/v1/discovered", get(discovered))
        .route("/v1/status", get(status))
        .route("/v1/bmc/power", post(bmc_power))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .merge(grendel_routes)
        .merge(account_routes)
        .fallback(|| async { ApiError::not_found("no such API route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// The routes behind authentication (the TCP listener): see [`auth`].
pub fn router_authenticated(state: ApiState) -> Router {
    router(state.clone()).layer(axum::middleware::from_fn_with_state(state, auth::require))
}

/// Binds the API's unix socket: creates the parent directory, removes a stale socket file
/// (refusing if a server still answers on it), and makes the socket owner/group only.
pub async fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{}: exists and is not a socket: not removed (check api.socket_path)",
                    path.display()
                ),
            ));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{}: another server is listening on this socket",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display()))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves the API on the unix socket at `path` until `shutdown` completes, then removes
/// the socket file.
pub async fn serve_unix(
    path: &Path,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = bind_unix(path).await?;
    tracing::info!("API listening on {}", path.display());
    let limits = limits(&state);
    let result = listen::serve(listener, router(state), limits, shutdown).await;
    remove_socket(path);
    result
}

/// Removes the socket file at `path`, and nothing that is not a socket (something else
/// may have been put there while serving).
pub fn remove_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Serves the API on a TCP listener, requiring a bearer token ([`auth`]).
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tcp_tls(listener, state, None, shutdown).await
}

/// [`serve_tcp`], over TLS with `cert` when given (`api.cert`/`api.key`; reloaded on
/// SIGHUP, [`crate::tls`]).
pub async fn serve_tcp_tls(
    listener: tokio::net::TcpListener,
    state: ApiState,
    cert: Option<Arc<crate::tls::Certificate>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = limits(&state);
    let router = router_authenticated(state);
    let addr = listener.local_addr().ok();
    match cert {
        Some(cert) => {
            tracing::info!(
                "API listening on https://{} (bearer token required; {})",
                addr.map_or("?".into(), |a| a.to_string()),
                cert.describe()
            );
            listen::serve_tls(listener, router, limits, cert.acceptor(), shutdown).await
        }
        None => {
            if let Some(addr) = addr {
                tracing::info!("API listening on {addr} (bearer token required)");
            }
            listen::serve(listener, router, limits, shutdown).await
        }
    }
}

/// The `api` connection limits, against the open-files limit (raised first).
fn limits(state: &ApiState) -> listen::Limits {
    listen::Limits::api(&state.shared.config.api, crate::http::raise_nofile_limit())
}

#[cfg(test)]
mod socket_tests {
    /// `api.socket_path` naming a regular file (a typo, an operator's notes) is refused
    /// and the file kept; a stale socket is replaced.
    #[tokio::test]
    async fn only_a_socket_is_ever_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, b"keep me").unwrap();
        let e = super::bind_unix(&file).await.unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        super::remove_socket(&file);
        assert!(file.exists());
        let sock = dir.path().join("api.socket");
        drop(super::bind_unix(&sock).await.unwrap());
        // Stale (nobody listens): bound again.
        let l = super::bind_unix(&sock).await.unwrap();
        drop(l);
        super::remove_socket(&sock);
        assert!(!sock.exists());
    }
}

#[cfg(test)]
mod backend_tests {
    //! `mutate` on a backend whose first commit meets another writer's change. The
    //! backend is a stand-in (its real conflicts come from etcd: the cluster integration
    //! tests); what is tested is what the API does with a conflict.
    use std::sync::Mutex;

    use super::*;
    use crate::config::Config;
    use crate::events::EventLog;
    use crate::inventory::store::BoxFuture;

    struct Racing {
        base: Mutex<(Arc<Inventory>, u64)>,
        commits: Mutex<Vec<(u64, Change)>>,
    }

    impl Backend for Arc<Racing> {
        fn base(&self, _running: Arc<Inventory>) -> (Arc<Inventory>, u64) {
            self.base.lock().unwrap().clone()
        }
        fn commit(
            &self,
            _base: Arc<Inventory>,
            revision: u64,
            change: Change,
        ) -> BoxFuture<'static, Result<Committed, CommitError>> {
            let me = self.clone();
            Box::pin(async move {
                me.commits.lock().unwrap().push((revision, change.clone()));
                if revision == 1 {
                    // Another writer changed another field of cn1 at revision 2.
                    let mut done = host("cn1");
                    done.uid = "from-the-other-writer".into();
                    *me.base.lock().unwrap() = (
                        Arc::new(Inventory::from_parts_unchecked(vec![done], vec![])),
                        2,
                    );
                    return Err(CommitError::Conflict);
                }
                Ok(Committed::InPlace)
            })
        }
    }

    fn host(name: &str) -> Host {
        Host {
            name: name.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_conflict_makes_the_change_again_on_the_newer_base() {
        let shared = Shared::new(Config::default(), Inventory::default(), EventLog::default());
        let racing = Arc::new(Racing {
            base: Mutex::new((
                Arc::new(Inventory::from_parts_unchecked(vec![host("cn1")], vec![])),
                1,
            )),
            commits: Mutex::default(),
        });
        let api = ApiState::new(shared, None).with_backend(Arc::new(racing.clone()));
        api.mutate(|hosts, _| {
            hosts[0].tags.push("gpu".into());
            Ok(())
        })
        .await
        .unwrap();
        let commits = racing.commits.lock().unwrap();
        assert_eq!(commits.len(), 2);
        let (rev, change) = &commits[1];
        assert_eq!(*rev, 2);
        let cn1 = &change.put_hosts[0];
        assert_eq!(cn1.tags, ["gpu"]);
        assert_eq!(
            cn1.uid, "from-the-other-writer",
            "the other writer's change was undone"
        );
    }

    /// The same through `apply` (what every handler but restore uses): the change is
    /// made on the backend's base and rebased as a change, never as whole lists.
    #[tokio::test]
    async fn apply_makes_a_conflicting_change_again_on_the_newer_base() {
        let shared = Shared::new(Config::default(), Inventory::default(), EventLog::default());
        let racing = Arc::new(Racing {
            base: Mutex::new((
                Arc::new(Inventory::from_parts_unchecked(vec![host("cn1")], vec![])),
                1,
            )),
            commits: Mutex::default(),
        });
        let api = ApiState::new(shared, None).with_backend(Arc::new(racing.clone()));
        api.apply(|inv| {
            let mut h = inv.host("cn1").expect("the backend's base").clone();
            h.tags.push("gpu".into());
            let change = Change {
                put_hosts: vec![h],
                ..Default::default()
            };
            Ok((change, ()))
        })
        .await
        .unwrap();
        let commits = racing.commits.lock().unwrap();
        assert_eq!(commits.len(), 2);
        let (rev, change) = &commits[1];
        assert_eq!(*rev, 2);
        assert_eq!(change.put_hosts.len(), 1);
        assert!(change.delete_hosts.is_empty());
        let cn1 = &change.put_hosts[0];
        assert_eq!(cn1.tags, ["gpu"]);
        assert_eq!(
            cn1.uid, "from-the-other-writer",
            "the other writer's change was undone"
        );
    }

    /// A backend that fails every commit with the error `fail` makes.
    struct Failing(fn() -> CommitError);

    impl Backend for Arc<Failing> {
        fn base(&self, running: Arc<Inventory>) -> (Arc<Inventory>, u64) {
            (running, 1)
        }
        fn commit(
            &self,
            _base: Arc<Inventory>,
            _revision: u64,
            _change: Change,
        ) -> BoxFuture<'static, Result<Committed, CommitError>> {
            let e = (self.0)();
            Box::pin(async move { Err(e) })
        }
    }

    /// A 503 says whether the write may still be applied, in words and as `outcome`.
    #[tokio::test]
    async fn an_unconfirmed_write_answers_503_with_its_outcome() {
        // (the backend's failure, the outcome, words of the message)
        type Row = (fn() -> CommitError, &'static str, &'static str);
        let rows: [Row; 3] = [
            (
                || CommitError::Unavailable("etcdserver: no leader".into()),
                "not_applied",
                "was not applied",
            ),
            (
                || CommitError::Unknown {
                    why: "etcdserver: request timed out".into(),
                    committed: 0,
                    of: 1,
                },
                "unknown",
                "may still be applied (outcome unknown",
            ),
            (
                || CommitError::Unknown {
                    why: "etcdserver: request timed out".into(),
                    committed: 1,
                    of: 3,
                },
                "partial",
                "committed 1 of the change's 3 transactions",
            ),
        ];
        for (fail, outcome, words) in rows {
            let shared = Shared::new(
                Config::default(),
                Inventory::from_parts_unchecked(vec![host("cn1")], vec![]),
                EventLog::default(),
            );
            let api = ApiState::new(shared, None).with_backend(Arc::new(Arc::new(Failing(fail))));
            let e = api
                .mutate(|hosts, _| {
                    hosts[0].tags.push("gpu".into());
                    Ok(())
                })
                .await
                .unwrap_err();
            assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(e.message.contains(words), "{outcome}: {}", e.message);
            let resp = e.into_response();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["outcome"], outcome, "{body}");
        }
    }

    #[tokio::test]
    async fn an_invalid_change_is_refused_before_any_commit() {
        let shared = Shared::new(Config::default(), Inventory::default(), EventLog::default());
        let racing = Arc::new(Racing {
            base: Mutex::new((Arc::new(Inventory::default()), 5)),
            commits: Mutex::default(),
        });
        let api = ApiState::new(shared, None).with_backend(Arc::new(racing.clone()));
        let mut h = host("cn1");
        h.provision = true;
        h.boot_image = "nowhere".into();
        let e = api
            .mutate(move |hosts, _| {
                hosts.push(h);
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(racing.commits.lock().unwrap().is_empty());
    }
}
