//! Grendel's REST API beside xboot's: the routes of Grendel v0.2 (`/v1/nodes...`,
//! `/v1/images...`, `/v1/bmc/power/os`, `/v1/auth/...`) and of the SquareFactory fork
//! (`/v1/host/...`, `/v1/bootimage/...`), with their JSON shapes. Each handler maps the
//! request onto the same core functions xboot's own routes use ([`super::handlers`]) and
//! the answer back to Grendel's shape: no inventory logic lives here.
//!
//! Status codes: Grendel's where they tell the client something (200, the fork's 201 for
//! additions, 400 for bad input, 401/403, 404); where Grendel v0.2 answers 500 for a
//! client's mistake (an unknown node set, an undecodable body) xboot answers 400 or 404
//! (a server error means the server failed). Errors are Grendel v0.2's
//! `{"title", "detail", "status"}` on its routes and the fork's `{"message"}` on the
//! fork's.
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::accounts::{self, Role};
use super::handlers::{self, Applied, NodesetQuery};
use super::{ApiError, ApiState};
use crate::bmc::request::PowerRequest;
use crate::bmc::{Action, BootMode};
use crate::inventory::{Host, Image, Interface, Kind};
use crate::nodeset;

/// An error in Grendel v0.2's shape (`fuego.HTTPError`).
pub struct GrendelError(pub ApiError);

impl From<ApiError> for GrendelError {
    fn from(e: ApiError) -> GrendelError {
        GrendelError(e)
    }
}

/// Grendel v0.2's error body.
#[derive(Serialize, ToSchema)]
pub struct HttpError {
    pub title: String,
    pub detail: String,
    pub status: u16,
    /// Every problem, for validation failures (xboot).
    pub errors: Vec<String>,
}

impl IntoResponse for GrendelError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = HttpError {
            title: if e.status.is_client_error() {
                "Error".into()
            } else {
                e.status.canonical_reason().unwrap_or("Error").into()
            },
            detail: e.message,
            status: e.status.as_u16(),
            errors: e.errors,
        };
        (e.status, Json(body)).into_response()
    }
}

/// An error in the fork's shape (echo's `{"message": ...}`).
pub struct ForkError(pub ApiError);

impl From<ApiError> for ForkError {
    fn from(e: ApiError) -> ForkError {
        ForkError(e)
    }
}

impl IntoResponse for ForkError {
    fn into_response(self) -> Response {
        let body = json!({ "message": self.0.message, "errors": self.0.errors });
        (self.0.status, Json(body)).into_response()
    }
}

type GResult<T> = Result<T, GrendelError>;
type FResult<T> = Result<T, ForkError>;

/// Grendel's `GenericResponse`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct GenericResponse {
    pub title: String,
    pub detail: String,
    pub changed: usize,
}

fn success(detail: impl Into<String>, changed: usize) -> Json<GenericResponse> {
    Json(GenericResponse {
        title: "Success".into(),
        detail: detail.into(),
        changed,
    })
}

/// A network interface as Grendel writes it (every key present).
#[derive(Serialize, ToSchema)]
pub struct GrendelNic {
    /// A number (v0.2) or absent.
    #[schema(value_type = Option<i64>)]
    pub id: Value,
    pub mac: String,
    pub ip: String,
    pub fqdn: String,
    pub bmc: bool,
    pub ifname: String,
    pub vlan: String,
    pub mtu: u16,
}

/// A host as Grendel writes it.
#[derive(Serialize, ToSchema)]
pub struct GrendelHost {
    /// v0.2: a number; the fork: a KSUID string; null when the host has none.
    #[schema(value_type = Value)]
    pub id: Value,
    #[schema(nullable)]
    pub uid: Option<String>,
    pub name: String,
    pub provision: bool,
    pub firmware: String,
    pub boot_image: String,
    pub tags: Vec<String>,
    pub interfaces: Vec<GrendelNic>,
    #[schema(value_type = Vec<Object>)]
    pub bonds: Vec<Value>,
}

fn id_value(id: &str) -> Value {
    if id.is_empty() {
        return Value::Null;
    }
    match id.parse::<i64>() {
        Ok(n) if n.to_string() == id => json!(n),
        _ => json!(id),
    }
}

fn nic(i: &Interface) -> GrendelNic {
    GrendelNic {
        id: match id_value(&i.id) {
            Value::String(_) => Value::Null,
            v => v,
        },
        mac: i.mac.map(|m| m.to_string()).unwrap_or_default(),
        ip: i.ip.clone().unwrap_or_default(),
        fqdn: i.fqdn.clone(),
        bmc: i.bmc,
        ifname: i.ifname.clone(),
        vlan: i.vlan.clone(),
        mtu: i.mtu,
    }
}

impl From<&Host> for GrendelHost {
    fn from(h: &Host) -> GrendelHost {
        GrendelHost {
            id: id_value(&h.id),
            uid: (!h.uid.is_empty()).then(|| h.uid.clone()),
            name: h.name.clone(),
            provision: h.provision,
            firmware: h.firmware.clone(),
            boot_image: h.boot_image.clone(),
            tags: h.tags.clone(),
            interfaces: h.interfaces.iter().map(nic).collect(),
            bonds: h.bonds.clone(),
        }
    }
}

fn grendel_hosts(hosts: &[Host]) -> Json<Vec<GrendelHost>> {
    Json(hosts.iter().map(GrendelHost::from).collect())
}

/// A boot image as Grendel writes it.
#[derive(Serialize, ToSchema)]
pub struct GrendelImage {
    #[schema(value_type = Value)]
    pub id: Value,
    #[schema(nullable)]
    pub uid: Option<String>,
    pub name: String,
    pub kernel: String,
    pub initrd: Vec<String>,
    pub liveimg: String,
    pub cmdline: String,
    pub verify: bool,
    pub provision_templates: std::collections::BTreeMap<String, String>,
}

impl From<&Image> for GrendelImage {
    fn from(i: &Image) -> GrendelImage {
        GrendelImage {
            id: id_value(&i.id),
            uid: i
                .extra
                .get("uid")
                .and_then(Value::as_str)
                .map(str::to_string),
            name: i.name.clone(),
            kernel: i.kernel.clone(),
            initrd: i.initrd.clone(),
            liveimg: i.liveimg.clone(),
            cmdline: i.cmdline.clone(),
            verify: i.verify,
            provision_templates: i.provision_templates.clone(),
        }
    }
}

fn grendel_images(images: &[Image]) -> Json<Vec<GrendelImage>> {
    Json(images.iter().map(GrendelImage::from).collect())
}

/// The array under `key` of a wrapper object (`{"node_list": [...]}`); 400 otherwise.
fn unwrap_list(body: &Bytes, key: &str) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    match v {
        Value::Object(mut m) if m.contains_key(key) => match m.remove(key) {
            Some(Value::Null) => Ok(Value::Array(vec![])),
            Some(list @ Value::Array(_)) => Ok(list),
            _ => Err(ApiError::bad_request(format!(
                "request body: {key:?} must be an array"
            ))),
        },
        _ => Err(ApiError::bad_request(format!(
            "request body: expected {{\"{key}\": [...]}}"
        ))),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes, expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body: {e} (expected {expected})")))
}

/// Grendel filters by node set and/or tags; with neither, a change is refused (Grendel
/// would change nothing and say so; a client that sends neither made a mistake).
fn needs_filter(q: &NodesetQuery) -> Result<(), ApiError> {
    if q.nodeset.as_deref().unwrap_or("").is_empty() && q.tags.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request("needs ?nodeset= and/or ?tags="));
    }
    Ok(())
}

/// Grendel sends `nodeset=` and `tags=` empty when unused.
fn clean(mut q: NodesetQuery) -> NodesetQuery {
    q.nodeset = q.nodeset.filter(|s| !s.is_empty());
    q.tags = q.tags.filter(|s| !s.is_empty());
    q
}

// ---- Grendel v0.2: /v1/nodes ----

#[utoipa::path(get, path = "/v1/nodes", tag = "grendel",
    responses((status = 200, body = Vec<GrendelHost>)))]
pub async fn nodes_list(State(st): State<ApiState>) -> GResult<Json<Vec<GrendelHost>>> {
    Ok(grendel_hosts(&handlers::find_hosts(
        &st,
        &NodesetQuery::default(),
    )?))
}

#[utoipa::path(get, path = "/v1/nodes/find", tag = "grendel", params(NodesetQuery),
    responses((status = 200, body = Vec<GrendelHost>), (status = 400, body = HttpError)))]
pub async fn nodes_find(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
) -> GResult<Json<Vec<GrendelHost>>> {
    Ok(grendel_hosts(&handlers::find_hosts(&st, &clean(q))?))
}

/// Grendel's `NodeAddRequest`: for the document only (the handler reads the list itself,
/// to name each bad entry).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NodeAddRequest {
    /// Grendel writes `null` for an empty list.
    #[schema(value_type = Option<Vec<Object>>, nullable)]
    pub node_list: Vec<Value>,
}

#[utoipa::path(post, path = "/v1/nodes", tag = "grendel", request_body = NodeAddRequest,
    responses((status = 200, body = GenericResponse), (status = 400, body = HttpError)))]
pub async fn nodes_add(State(st): State<ApiState>, body: Bytes) -> GResult<Json<GenericResponse>> {
    let loaded = handlers::decode_value(unwrap_list(&body, "node_list")?, Kind::Hosts)?;
    let n = loaded.hosts.len();
    handlers::save(&st, loaded).await?;
    Ok(success("successfully added node(s)", n))
}

#[utoipa::path(delete, path = "/v1/nodes", tag = "grendel", params(NodesetQuery),
    responses((status = 200, body = GenericResponse), (status = 400, body = HttpError),
        (status = 404, body = HttpError)))]
pub async fn nodes_delete(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
) -> GResult<Json<GenericResponse>> {
    let q = clean(q);
    needs_filter(&q)?;
    let (deleted, _) = handlers::delete_selected(&st, &q).await?;
    Ok(success("successfully deleted node(s)", deleted.len()))
}

/// Grendel's `NodeProvisionRequest`.
#[derive(Deserialize, ToSchema)]
pub struct NodeProvisionRequest {
    pub provision: bool,
}

#[utoipa::path(patch, path = "/v1/nodes/provision", tag = "grendel", params(NodesetQuery),
    request_body = NodeProvisionRequest,
    responses((status = 200, body = GenericResponse), (status = 400, body = HttpError),
        (status = 404, body = HttpError)))]
pub async fn nodes_provision(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
    body: Bytes,
) -> GResult<Json<GenericResponse>> {
    let q = clean(q);
    needs_filter(&q)?;
    let body: NodeProvisionRequest = json_body(&body, "{\"provision\": true|false}")?;
    let a = handlers::provision_selected(&st, &q, body.provision).await?;
    Ok(success(
        format!(
            "successfully changed node(s) provision to {}",
            body.provision
        ),
        a.matched.len(),
    ))
}

/// Grendel's `NodeTagsRequest`: comma-separated tags.
#[derive(Deserialize, ToSchema)]
pub struct NodeTagsRequest {
    #[schema(example = "a01,test")]
    pub tags: String,
}

#[utoipa::path(patch, path = "/v1/nodes/tags/{action}", tag = "grendel",
    params(("action" = String, Path, description = "add | remove"), NodesetQuery),
    request_body = NodeTagsRequest,
    responses((status = 200, body = GenericResponse), (status = 400, body = HttpError),
        (status = 404, body = HttpError)))]
pub async fn nodes_tags(
    State(st): State<ApiState>,
    Path(action): Path<String>,
    Query(q): Query<NodesetQuery>,
    body: Bytes,
) -> GResult<Json<GenericResponse>> {
    let add = match action.as_str() {
        "add" => true,
        "remove" => false,
        other => {
            return Err(
                ApiError::bad_request(format!("tags action {other:?}: add or remove")).into(),
            )
        }
    };
    let q = clean(q);
    needs_filter(&q)?;
    let body: NodeTagsRequest = json_body(&body, "{\"tags\": \"a,b\"}")?;
    if body.tags.is_empty() {
        return Err(ApiError::bad_request("invalid list of update tags").into());
    }
    let tags: Vec<String> = body.tags.split(',').map(str::to_string).collect();
    let a = handlers::tag_selected(&st, &q, &tags, add).await?;
    let detail = if add {
        "successfully added tag(s) to node(s)"
    } else {
        "successfully removed tag(s) from node(s)"
    };
    Ok(success(detail, a.matched.len()))
}

/// Grendel's `NodeBootImageRequest`.
#[derive(Deserialize, ToSchema)]
pub struct NodeBootImageRequest {
    pub image: String,
}

#[utoipa::path(patch, path = "/v1/nodes/image", tag = "grendel", params(NodesetQuery),
    request_body = NodeBootImageRequest,
    responses((status = 200, body = GenericResponse), (status = 400, body = HttpError),
        (status = 404, body = HttpError)))]
pub async fn nodes_image(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
    body: Bytes,
) -> GResult<Json<GenericResponse>> {
    let q = clean(q);
    needs_filter(&q)?;
    let body: NodeBootImageRequest = json_body(&body, "{\"image\": NAME}")?;
    let a = handlers::image_selected(&st, &q, &body.image).await?;
    Ok(success(
        "successfully updated node(s) boot image",
        a.matched.len(),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct NodeToken {
    pub name: String,
    pub token: String,
}

/// Grendel's `NodeBootTokenResponse`.
#[derive(Serialize, ToSchema)]
pub struct NodeBootTokenResponse {
    pub nodes: Vec<NodeToken>,
}

#[utoipa::path(get, path = "/v1/nodes/token/{interface}", tag = "grendel",
    params(("interface" = String, Path, description = "boot | bmc"), NodesetQuery),
    responses((status = 200, body = NodeBootTokenResponse), (status = 400, body = HttpError),
        (status = 404, body = HttpError), (status = 503, body = HttpError)))]
pub async fn nodes_token(
    State(st): State<ApiState>,
    Path(interface): Path<String>,
    Query(q): Query<NodesetQuery>,
) -> GResult<Json<NodeBootTokenResponse>> {
    let q = clean(q);
    needs_filter(&q)?;
    let hosts = handlers::find_hosts(&st, &q)?;
    if hosts.is_empty() {
        return Err(ApiError::not_found(format!("no host matches {}", q.describe())).into());
    }
    let Some(sign) = st.boot_token.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no HTTP boot service is running in this server",
        )
        .into());
    };
    let mut nodes = Vec::new();
    for h in &hosts {
        let nic = match interface.as_str() {
            "bmc" => h.bmc(),
            _ => h.interfaces.iter().find(|i| !i.bmc && i.mac.is_some()),
        };
        if let Some(mac) = nic.and_then(|n| n.mac) {
            nodes.push(NodeToken {
                name: h.name.clone(),
                token: sign(&h.name, mac),
            });
        }
    }
    Ok(Json(NodeBootTokenResponse { nodes }))
}

// ---- Grendel v0.2: /v1/images ----

/// `?names=a,b` (the openapi document's name) or `?name=a,b` (what Grendel's handler
/// reads for deletion).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NamesQuery {
    /// Comma-separated image names.
    pub names: Option<String>,
    /// The same, as Grendel's delete handler reads it.
    pub name: Option<String>,
}

impl NamesQuery {
    fn list(&self) -> Vec<String> {
        self.names
            .iter()
            .chain(&self.name)
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[utoipa::path(get, path = "/v1/images/find", tag = "grendel", params(NamesQuery),
    responses((status = 200, body = Vec<GrendelImage>)))]
pub async fn images_find(
    State(st): State<ApiState>,
    Query(q): Query<NamesQuery>,
) -> Json<Vec<GrendelImage>> {
    let names = q.list();
    let images: Vec<Image> = handlers::sorted_images(&st)
        .into_iter()
        .filter(|i| names.contains(&i.name))
        .collect();
    grendel_images(&images)
}

#[utoipa::path(delete, path = "/v1/images", tag = "grendel", params(NamesQuery),
    responses((status = 200, body = GenericResponse), (status = 400, body = HttpError),
        (status = 404, body = HttpError)))]
pub async fn images_delete(
    State(st): State<ApiState>,
    Query(q): Query<NamesQuery>,
) -> GResult<Json<GenericResponse>> {
    let names = q.list();
    if names.is_empty() {
        return Err(ApiError::bad_request("needs ?names=IMAGE[,IMAGE...]").into());
    }
    let deleted = handlers::delete_images(&st, &names).await?;
    Ok(success("successfully deleted image(s)", deleted.len()))
}

/// `POST /v1/images` is both APIs': xboot's bodies (an image, an array, `{"images"}`)
/// and Grendel's `{"boot_images": [...]}`. The answer carries both shapes: xboot's
/// `saved` and Grendel's `title`/`detail`/`changed`.
pub async fn images_add(State(st): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let grendel = unwrap_list(&body, "boot_images");
    let loaded = match grendel {
        Ok(list) => handlers::decode_value(list, Kind::Images)?,
        Err(_) => {
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
            handlers::decode_value(v, Kind::Images)?
        }
    };
    let n = loaded.images.len() + loaded.hosts.len();
    let saved = handlers::save(&st, loaded).await?;
    Ok(Json(json!({
        "saved": saved,
        "title": "Success",
        "detail": "successfully added image(s)",
        "changed": n,
    })))
}

// ---- Grendel v0.2: /v1/bmc/power/os ----

/// Grendel's `BmcOsPowerBody` (Redfish names).
#[derive(Deserialize, ToSchema)]
pub struct BmcOsPowerBody {
    /// On, ForceOn, ForceOff, GracefulShutdown, ForceRestart, GracefulRestart, PowerCycle.
    #[schema(example = "PowerCycle")]
    pub power_option: String,
    /// None (or empty), Pxe, UefiPxe (xboot: legacy or UEFI network boot next).
    #[serde(default)]
    #[schema(example = "Pxe")]
    pub boot_option: String,
}

/// Grendel's `JobMessage`, one per node.
#[derive(Serialize, ToSchema)]
pub struct JobMessage {
    /// `success` or `error`.
    pub status: String,
    pub host: String,
    pub msg: String,
    #[schema(value_type = Object)]
    pub redfish_error: Value,
    /// The power state, when known.
    pub data: String,
}

fn power_action(option: &str) -> Result<Action, ApiError> {
    Ok(match option {
        "On" | "ForceOn" => Action::On,
        "ForceOff" => Action::Off,
        "GracefulShutdown" => Action::Soft,
        "ForceRestart" | "GracefulRestart" => Action::Reset,
        "PowerCycle" => Action::Cycle,
        other => {
            return Err(ApiError::bad_request(format!(
                "power_option {other:?}: one of On, ForceOn, ForceOff, GracefulShutdown, ForceRestart, GracefulRestart, PowerCycle"
            )))
        }
    })
}

fn boot_mode(option: &str) -> Result<Option<BootMode>, ApiError> {
    Ok(match option {
        "" | "None" => None,
        "Pxe" => Some(BootMode::Legacy),
        "UefiPxe" => Some(BootMode::Efi),
        other => {
            return Err(ApiError::bad_request(format!(
                "boot_option {other:?}: None, Pxe or UefiPxe"
            )))
        }
    })
}

#[utoipa::path(post, path = "/v1/bmc/power/os", tag = "grendel", params(NodesetQuery),
    request_body = BmcOsPowerBody,
    responses((status = 200, body = Vec<JobMessage>), (status = 400, body = HttpError),
        (status = 404, body = HttpError)))]
pub async fn bmc_power_os(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
    body: Bytes,
) -> GResult<Json<Vec<JobMessage>>> {
    let q = clean(q);
    needs_filter(&q)?;
    let body: BmcOsPowerBody = json_body(&body, "{\"power_option\": ..., \"boot_option\": ...}")?;
    let action = power_action(&body.power_option)?;
    let boot = boot_mode(&body.boot_option)?;
    let hosts = handlers::find_hosts(&st, &q)?;
    if hosts.is_empty() {
        return Err(ApiError::not_found(format!("no host matches {}", q.describe())).into());
    }
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let mut req = PowerRequest::new(&nodeset::fold(&names), action);
    req.boot = boot;
    let summary = handlers::power(&st, &req).await?;
    Ok(Json(
        summary
            .results
            .iter()
            .map(|r| JobMessage {
                status: if r.ok() { "success" } else { "error" }.into(),
                host: r.name.clone(),
                msg: if r.ok() {
                    format!("{} via {}", action.as_str(), r.bmc)
                } else {
                    format!("{}: {}", r.reason.as_str(), r.message)
                },
                redfish_error: json!({}),
                data: r.power.clone().unwrap_or_default(),
            })
            .collect(),
    ))
}

// ---- Grendel v0.2: /v1/auth ----

/// Grendel's `AuthRequest`.
#[derive(Deserialize, ToSchema)]
pub struct AuthRequest {
    pub username: String,
    pub password: String,
}

/// Grendel's `AuthResponse` (xboot also returns the token in the body).
#[derive(Serialize, ToSchema)]
pub struct AuthResponse {
    pub username: String,
    pub role: String,
    pub token: String,
    /// Expiry, unix milliseconds.
    pub expire: u64,
}

#[utoipa::path(post, path = "/v1/auth/signin", tag = "accounts", request_body = AuthRequest,
    security(()),
    responses((status = 200, body = AuthResponse), (status = 400, body = HttpError),
        (status = 401, body = HttpError)))]
pub async fn signin(State(st): State<ApiState>, body: Bytes) -> GResult<Response> {
    let req: AuthRequest = json_body(&body, "{\"username\": ..., \"password\": ...}")?;
    let accts = st.accounts.clone();
    let user = req.username.clone();
    let role = tokio::task::spawn_blocking(move || accts.verify_password(&user, &req.password))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            tracing::info!("api: sign-in refused for {:?}", req.username);
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
        })?;
    let (token, info) = st
        .accounts
        .create_token(
            "sign-in",
            role,
            Some(accounts::SESSION_TTL),
            Some(&req.username),
        )
        .map_err(account_error)?;
    let expire = info.expires.unwrap_or_default();
    let cookie = format!(
        "Authorization={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict",
        percent_encoding::utf8_percent_encode(
            &format!("Bearer {token}"),
            percent_encoding::NON_ALPHANUMERIC
        ),
        accounts::SESSION_TTL.as_secs()
    );
    let mut headers = HeaderMap::new();
    if let Ok(v) = cookie.parse() {
        headers.insert(header::SET_COOKIE, v);
    }
    Ok((
        headers,
        Json(AuthResponse {
            username: req.username,
            role: role.to_string(),
            token,
            expire: expire.saturating_mul(1000),
        }),
    )
        .into_response())
}

/// Grendel's `AuthTokenRequest`.
#[derive(Deserialize, ToSchema)]
pub struct AuthTokenRequest {
    /// A label for the token (Grendel: the name shown in logs).
    #[serde(default)]
    pub username: String,
    /// read-only (Grendel's `user`), operator or admin.
    pub role: String,
    /// A duration (`8h`, `30m`, `90d`) or `infinite`.
    #[serde(default)]
    pub expire: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuthTokenResponse {
    pub token: String,
}

/// Parses a token lifetime ([`accounts::parse_ttl`]).
pub fn parse_expire(s: &str) -> Result<Option<std::time::Duration>, ApiError> {
    accounts::parse_ttl(s).map_err(account_error)
}

#[utoipa::path(post, path = "/v1/auth/token", tag = "accounts", request_body = AuthTokenRequest,
    responses((status = 200, body = AuthTokenResponse), (status = 400, body = HttpError)))]
pub async fn auth_token(
    State(st): State<ApiState>,
    body: Bytes,
) -> GResult<Json<AuthTokenResponse>> {
    let req: AuthTokenRequest = json_body(&body, "{\"username\", \"role\", \"expire\"}")?;
    let role: Role = req.role.parse().map_err(account_error)?;
    let ttl = parse_expire(&req.expire)?;
    let (token, _) = st
        .accounts
        .create_token(&req.username, role, ttl, None)
        .map_err(account_error)?;
    Ok(Json(AuthTokenResponse { token }))
}

pub fn account_error(e: accounts::AccountError) -> ApiError {
    match e {
        accounts::AccountError::Invalid(m) => ApiError::bad_request(m),
        accounts::AccountError::NotFound(m) => ApiError::not_found(m),
        accounts::AccountError::Exists(m) => ApiError::new(StatusCode::CONFLICT, m),
        accounts::AccountError::Store(e) => ApiError::internal(e),
    }
}

// ---- the SquareFactory fork: /v1/host, /v1/bootimage ----

fn path_query(nodeset: &str) -> NodesetQuery {
    NodesetQuery {
        nodeset: Some(nodeset.to_string()),
        tags: None,
    }
}

/// The fork answers 400 "No hosts found in nodeset" where xboot's core says 404.
fn fork_not_found_is_400(e: ApiError) -> ForkError {
    if e.status == StatusCode::NOT_FOUND {
        ForkError(ApiError::bad_request(format!(
            "No hosts found in nodeset: {}",
            e.message
        )))
    } else {
        ForkError(e)
    }
}

fn needs_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid content type"))
    }
}

fn json_array(body: &Bytes) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Array(_)) => Ok(v),
        Ok(_) => Err(ApiError::bad_request("request body: expected a JSON array")),
        Err(e) => Err(ApiError::bad_request(format!("request body: {e}"))),
    }
}

#[utoipa::path(post, path = "/v1/host", tag = "grendel-fork", request_body = Vec<Object>,
    responses((status = 201, body = Object), (status = 400, body = Object)))]
pub async fn host_add(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> FResult<(StatusCode, Json<Value>)> {
    needs_json(&headers)?;
    let loaded = handlers::decode_value(json_array(&body)?, Kind::Hosts)?;
    let n = loaded.hosts.len();
    handlers::save(&st, loaded).await?;
    Ok((StatusCode::CREATED, Json(json!({ "hosts": n }))))
}

#[utoipa::path(get, path = "/v1/host/list", tag = "grendel-fork",
    responses((status = 200, body = Vec<GrendelHost>)))]
pub async fn host_list(State(st): State<ApiState>) -> FResult<Json<Vec<GrendelHost>>> {
    Ok(grendel_hosts(&handlers::find_hosts(
        &st,
        &NodesetQuery::default(),
    )?))
}

#[utoipa::path(get, path = "/v1/host/find/{nodeset}", tag = "grendel-fork",
    params(("nodeset" = String, Path)),
    responses((status = 200, body = Vec<GrendelHost>), (status = 400, body = Object)))]
pub async fn host_find(
    State(st): State<ApiState>,
    Path(ns): Path<String>,
) -> FResult<Json<Vec<GrendelHost>>> {
    Ok(grendel_hosts(&handlers::find_hosts(&st, &path_query(&ns))?))
}

#[utoipa::path(delete, path = "/v1/host/find/{nodeset}", tag = "grendel-fork",
    params(("nodeset" = String, Path)),
    responses((status = 200, body = Object), (status = 400, body = Object)))]
pub async fn host_delete(
    State(st): State<ApiState>,
    Path(ns): Path<String>,
) -> FResult<Json<Value>> {
    let n = match handlers::delete_selected(&st, &path_query(&ns)).await {
        Ok((deleted, _)) => deleted.len(),
        // The fork deletes what exists: none is no error.
        Err(e) if e.status == StatusCode::NOT_FOUND => 0,
        Err(e) => return Err(e.into()),
    };
    Ok(Json(json!({ "hosts": n })))
}

#[utoipa::path(get, path = "/v1/host/tags/{tags}", tag = "grendel-fork",
    params(("tags" = String, Path, description = "comma-separated")),
    responses((status = 200, body = Vec<GrendelHost>), (status = 400, body = Object)))]
pub async fn host_by_tags(
    State(st): State<ApiState>,
    Path(tags): Path<String>,
) -> FResult<Json<Vec<GrendelHost>>> {
    let q = NodesetQuery {
        nodeset: None,
        tags: Some(tags),
    };
    Ok(grendel_hosts(&handlers::find_hosts(&st, &q)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TagsQuery {
    /// Comma-separated tags.
    pub tags: Option<String>,
}

async fn fork_tags(
    st: &ApiState,
    ns: &str,
    tags: Option<String>,
    add: bool,
) -> FResult<Json<Value>> {
    let tags: Vec<String> = tags
        .unwrap_or_default()
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if tags.is_empty() {
        return Err(ApiError::bad_request("invalid list of tags").into());
    }
    let a: Applied = handlers::tag_selected(st, &path_query(ns), &tags, add)
        .await
        .map_err(fork_not_found_is_400)?;
    Ok(Json(json!({
        "hosts": a.matched.len(),
        "tags": tags,
        "action": if add { "add" } else { "remove" },
    })))
}

#[utoipa::path(put, path = "/v1/host/tag/{nodeset}", tag = "grendel-fork",
    params(("nodeset" = String, Path), TagsQuery),
    responses((status = 200, body = Object), (status = 400, body = Object)))]
pub async fn host_tag(
    State(st): State<ApiState>,
    Path(ns): Path<String>,
    Query(q): Query<TagsQuery>,
) -> FResult<Json<Value>> {
    fork_tags(&st, &ns, q.tags, true).await
}

#[utoipa::path(put, path = "/v1/host/untag/{nodeset}", tag = "grendel-fork",
    params(("nodeset" = String, Path), TagsQuery),
    responses((status = 200, body = Object), (status = 400, body = Object)))]
pub async fn host_untag(
    State(st): State<ApiState>,
    Path(ns): Path<String>,
    Query(q): Query<TagsQuery>,
) -> FResult<Json<Value>> {
    fork_tags(&st, &ns, q.tags, false).await
}

async fn fork_provision(st: &ApiState, ns: &str, on: bool) -> FResult<Json<Value>> {
    let a = handlers::provision_selected(st, &path_query(ns), on)
        .await
        .map_err(fork_not_found_is_400)?;
    Ok(Json(json!({ "hosts": a.matched.len() })))
}

#[utoipa::path(put, path = "/v1/host/provision/{nodeset}", tag = "grendel-fork",
    params(("nodeset" = String, Path)),
    responses((status = 200, body = Object), (status = 400, body = Object)))]
pub async fn host_provision(
    State(st): State<ApiState>,
    Path(ns): Path<String>,
) -> FResult<Json<Value>> {
    fork_provision(&st, &ns, true).await
}

#[utoipa::path(put, path = "/v1/host/unprovision/{nodeset}", tag = "grendel-fork",
    params(("nodeset" = String, Path)),
    responses((status = 200, body = Object), (status = 400, body = Object)))]
pub async fn host_unprovision(
    State(st): State<ApiState>,
    Path(ns): Path<String>,
) -> FResult<Json<Value>> {
    fork_provision(&st, &ns, false).await
}

#[utoipa::path(post, path = "/v1/bootimage", tag = "grendel-fork", request_body = Vec<Object>,
    responses((status = 201, body = Object), (status = 400, body = Object)))]
pub async fn bootimage_add(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> FResult<(StatusCode, Json<Value>)> {
    needs_json(&headers)?;
    let loaded = handlers::decode_value(json_array(&body)?, Kind::Images)?;
    let n = loaded.images.len();
    handlers::save(&st, loaded).await?;
    Ok((StatusCode::CREATED, Json(json!({ "images": n }))))
}

#[utoipa::path(get, path = "/v1/bootimage/list", tag = "grendel-fork",
    responses((status = 200, body = Vec<GrendelImage>)))]
pub async fn bootimage_list(State(st): State<ApiState>) -> Json<Vec<GrendelImage>> {
    grendel_images(&handlers::sorted_images(&st))
}

#[utoipa::path(get, path = "/v1/bootimage/find/{name}", tag = "grendel-fork",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<GrendelImage>), (status = 404, body = Object)))]
pub async fn bootimage_find(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> FResult<Json<Vec<GrendelImage>>> {
    match st.inventory().image(&name) {
        Some(i) => Ok(grendel_images(std::slice::from_ref(i))),
        None => Err(ApiError::not_found("image not found").into()),
    }
}

#[utoipa::path(delete, path = "/v1/bootimage/find/{name}", tag = "grendel-fork",
    params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 400, body = Object),
        (status = 404, body = Object)))]
pub async fn bootimage_delete(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> FResult<Json<Value>> {
    handlers::delete_images(&st, &[name]).await?;
    Ok(Json(json!({ "images": 1 })))
}

/// Grendel's `restore` answer and xboot's in one: `restored` and `warnings` (xboot),
/// `title`/`detail`/`changed` (Grendel).
pub async fn db_restore(State(st): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    let users = v.get("Users").and_then(Value::as_array).map_or(0, Vec::len);
    let loaded = handlers::decode_value(v, Kind::Hosts)?;
    let (nh, ni, warnings) = handlers::restore(&st, loaded).await?;
    Ok(Json(json!({
        "restored": { "hosts": nh, "images": ni },
        "warnings": warnings,
        "title": "Success",
        "detail": format!("restored db: hosts={nh} images={ni} users={users}"),
        "changed": nh + ni,
    })))
}
