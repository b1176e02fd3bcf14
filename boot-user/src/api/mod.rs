//! The REST API: JSON over HTTP on the unix socket `api.socket_path`, and optionally on TCP
//! (`api.listen`) behind a bearer token (`api.token`).
//!
//! Routes (all under `/v1`, JSON in and out; errors are `{"error": "...", "errors": [...]}`):
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
//! | `GET /v1/db/dump` | the whole inventory, as Grendel's `{"Users", "Hosts", "Images"}` dump |
//! | `POST /v1/db/restore` | replace the whole inventory by a dump (validated first, one transaction) |
//!
//! Wherever a route takes `?nodeset=`, `nodeset=all` names every host, and `&tags=T1,T2`
//! (alone or with a node set) keeps the hosts carrying any of those tags.
//! | `GET /v1/hosts/{name}/events`, `GET /v1/events?nodeset=NS` | boot events |
//! | `GET /v1/images`, `GET /v1/images/{name}` | images |
//! | `POST /v1/images`, `PUT /v1/images/{name}`, `DELETE /v1/images/{name}` | image changes |
//! | `GET /v1/discovered` | unknown MACs seen by the DHCP server |
//! | `GET /v1/status` | inventory counts, uptime, service counters |
//!
//! Every change is validated first (400 with every problem if it is invalid: the running
//! inventory stays), then committed to the store, then swapped into [`Shared`], so the
//! DHCP/TFTP/HTTP services see it on their next request. Changes of some entries are
//! validated incrementally against the running inventory's indexes, at a cost that does
//! not grow with the inventory; `db/restore` is validated whole.
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
use crate::inventory::{Change, Host, Image, Inventory, Store};
use crate::state::Shared;

pub mod client;
mod handlers;
#[cfg(test)]
mod tests;

/// Largest request body: a 10 000-host import is a few MiB.
const BODY_LIMIT: usize = 64 << 20;

/// Returns JSON values describing something another service knows (discovered MACs,
/// counters): how the API reads services it does not own.
pub type JsonListHook = Arc<dyn Fn() -> Vec<serde_json::Value> + Send + Sync>;
pub type JsonHook = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

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
    /// Serializes inventory changes: each is read-modify-validate-commit-swap.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    started: Instant,
}

impl ApiState {
    pub fn new(shared: Arc<Shared>, store: Option<Arc<Store>>) -> ApiState {
        ApiState {
            shared,
            store,
            discovered: None,
            counters: None,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
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

    /// Applies the change `build` makes from the running inventory: validated
    /// incrementally ([`Inventory::apply`]: the cost is the change's, not the
    /// inventory's), committed to the store, swapped in with what it touched (so the XDP
    /// maps update only those hosts). Returns what `build` returned besides the change.
    pub async fn apply<T>(
        &self,
        build: impl FnOnce(&Inventory) -> Result<(Change, T), ApiError>,
    ) -> Result<T, ApiError> {
        let _guard = self.write_lock.lock().await;
        let current = self.shared.inventory();
        let (change, out) = build(&current)?;
        let change = change.effective(&current);
        if change.is_empty() {
            return Ok(out);
        }
        let provision = &self.shared.config.provision;
        let default_image = provision.default_image.clone();
        let change = Arc::new(change);
        let inv = if change.put_images.is_empty() {
            // Hosts only: no file is read, and the work is microseconds.
            current.apply(&change, &provision.image_roots(), default_image.as_deref())
        } else {
            // Image checks read file metadata and templates: off the runtime.
            let (roots, c) = (provision.image_roots(), change.clone());
            tokio::task::spawn_blocking(move || current.apply(&c, &roots, default_image.as_deref()))
                .await
                .map_err(ApiError::internal)?
        }
        .map_err(|errs| ApiError::invalid(errs.messages()))?;
        if let Some(store) = self.store.clone() {
            let c = change.clone();
            tokio::task::spawn_blocking(move || store.apply(&c))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
        }
        self.shared.apply_inventory(inv, &change);
        Ok(out)
    }

    /// Applies `edit` to a copy of the whole running inventory; if the result is valid
    /// (checked whole), commits it to the store and swaps it in. Returns what `edit`
    /// returned. For replacing everything (`db restore`); a change of some entries
    /// goes through [`ApiState::apply`].
    pub async fn mutate<T>(
        &self,
        edit: impl FnOnce(&mut Vec<Host>, &mut Vec<Image>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let _guard = self.write_lock.lock().await;
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

/// An API error answer: `{"error": "...", "errors": [...]}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Every problem, for validation failures.
    pub errors: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            errors: vec![],
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
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!("api: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "errors": self.errors });
        (self.status, Json(body)).into_response()
    }
}

/// The API routes (no authentication: the unix socket's permissions guard it).
pub fn router(state: ApiState) -> Router {
    use handlers::*;
    Router::new()
        .route(
            "/v1/hosts",
            get(list_hosts).post(post_hosts).delete(delete_hosts),
        )
        .route("/v1/hosts/provision", post(provision))
        .route("/v1/hosts/unprovision", post(unprovision))
        .route("/v1/hosts/tag", post(tag))
        .route("/v1/hosts/untag", post(untag))
        .route("/v1/db/dump", get(db_dump))
        .route("/v1/db/restore", post(db_restore))
        .route(
            "/v1/hosts/{name}",
            get(get_host).put(put_host).delete(delete_host),
        )
        .route("/v1/hosts/{name}/events", get(host_events))
        .route("/v1/events", get(events))
        .route("/v1/images", get(list_images).post(post_images))
        .route(
            "/v1/images/{name}",
            get(get_image).put(put_image).delete(delete_image),
        )
        .route("/v1/discovered", get(discovered))
        .route("/v1/status", get(status))
        .route("/v1/bmc/power", post(bmc_power))
        .fallback(|| async { ApiError::not_found("no such API route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// The routes behind `Authorization: Bearer TOKEN` (for the TCP listener).
pub fn router_with_token(state: ApiState, token: String) -> Router {
    let token = Arc::new(token);
    router(state).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let given = req
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(bearer_token);
                match given {
                    Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => {
                        next.run(req).await
                    }
                    _ => ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
                        .into_response(),
                }
            }
        },
    ))
}

/// The token of an `Authorization: Bearer TOKEN` value; the scheme is case-insensitive
/// (RFC 9110 11.1), and spaces may separate it from the token.
fn bearer_token(v: &str) -> Option<&str> {
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// Serves the API on a TCP listener, requiring the bearer token.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    state: ApiState,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("API listening on {addr} (bearer token required)");
    }
    let limits = limits(&state);
    listen::serve(listener, router_with_token(state, token), limits, shutdown).await
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
