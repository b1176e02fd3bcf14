//! The API's request handlers: thin adapters from HTTP to inventory edits and reads.
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::bmc::request::{PowerError, PowerRequest};
use crate::events::EventKind;
use crate::inventory::load::{self, Kind};
use crate::inventory::{Change, Host, Image, Inventory};
use crate::nodeset::{self, natural_cmp};

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// Which hosts a request is about: a node set (`all` for every host), tags, or both.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodesetQuery {
    /// Node set (`cn[001-100],gpu1`); `all` for every host.
    pub nodeset: Option<String>,
    /// Comma-separated tags: the hosts carrying any of them (with a node set, those of
    /// the set that carry one).
    pub tags: Option<String>,
}

impl NodesetQuery {
    fn given(&self) -> bool {
        self.nodeset.is_some() || self.tags.is_some()
    }

    /// What the query names, for messages.
    pub(super) fn describe(&self) -> String {
        match (&self.nodeset, &self.tags) {
            (Some(ns), Some(t)) => format!("{ns} with tags {t}"),
            (Some(ns), None) => ns.clone(),
            (None, Some(t)) => format!("tags {t}"),
            (None, None) => nodeset::ALL.into(),
        }
    }
}

/// The bodies that carry inventory entries (`POST /v1/hosts`, `/v1/images`,
/// `/v1/db/restore`, the PUTs): one entry, an array of entries, `{"hosts": [...],
/// "images": [...]}` or a Grendel dump. For the document only.
pub struct Entries;

impl utoipa::PartialSchema for Entries {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder};
        OneOfBuilder::new()
            .item(ObjectBuilder::new())
            .item(ArrayBuilder::new().items(ObjectBuilder::new()))
            .into()
    }
}

impl utoipa::ToSchema for Entries {}

/// Splits a comma-separated tag list; an empty list or an empty tag is refused.
pub fn parse_tags(list: &str) -> ApiResult<Vec<String>> {
    let tags: Vec<String> = list.split(',').map(|t| t.trim().to_string()).collect();
    if tags.iter().any(String::is_empty) {
        return Err(ApiError::bad_request(format!(
            "tags {list:?}: empty tag (give tags separated by commas)"
        )));
    }
    Ok(tags)
}

/// The hosts the query selects, in inventory order, and the part of the node set naming no
/// host. Tags filter the node set's hosts; they never count as missing hosts.
fn selection(inv: &Inventory, q: &NodesetQuery) -> ApiResult<(Vec<String>, String)> {
    let tags = q.tags.as_deref().map(parse_tags).transpose()?;
    // One host by name (`host provision cn5`, the common API change): looked up, not
    // matched against every name.
    if let Some(name) = q.nodeset.as_deref().and_then(nodeset::single_name) {
        return Ok(match inv.host(&name) {
            Some(h)
                if tags
                    .as_ref()
                    .is_none_or(|t| h.tags.iter().any(|x| t.contains(x))) =>
            {
                (vec![name], String::new())
            }
            Some(_) => (vec![], String::new()),
            None => (vec![], name),
        });
    }
    let hosts = inv.hosts();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let sel = nodeset::select(q.nodeset.as_deref().unwrap_or(nodeset::ALL), &names)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let matched = match tags {
        None => sel.matched,
        Some(tags) => {
            let tagged: std::collections::HashSet<&str> = hosts
                .iter()
                .filter(|h| h.tags.iter().any(|t| tags.contains(t)))
                .map(|h| h.name.as_str())
                .collect();
            sel.matched
                .into_iter()
                .filter(|n| tagged.contains(n.as_str()))
                .collect()
        }
    };
    Ok((matched, sel.missing))
}

/// The hosts a query names, in inventory order; 404 if it names none.
fn select_hosts(inv: &Inventory, q: &NodesetQuery) -> ApiResult<(Vec<String>, String)> {
    let (matched, missing) = selection(inv, q)?;
    if matched.is_empty() {
        return Err(ApiError::not_found(format!(
            "no host matches {}",
            q.describe()
        )));
    }
    Ok((matched, missing))
}

fn sorted_hosts(mut hosts: Vec<Host>) -> Vec<Host> {
    hosts.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    hosts
}

/// The hosts a query selects (every host without one), in natural name order.
pub(super) fn find_hosts(st: &ApiState, q: &NodesetQuery) -> ApiResult<Vec<Host>> {
    let inv = st.inventory();
    let hosts = if q.given() {
        let (names, _) = selection(&inv, q)?;
        names.iter().filter_map(|n| inv.host(n).cloned()).collect()
    } else {
        inv.hosts().to_vec()
    };
    Ok(sorted_hosts(hosts))
}

#[utoipa::path(get, path = "/v1/hosts", tag = "xboot", params(NodesetQuery),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Object)))]
pub async fn list_hosts(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
) -> ApiResult<Json<Vec<Host>>> {
    find_hosts(&st, &q).map(Json)
}

#[utoipa::path(get, path = "/v1/hosts/{name}", tag = "xboot", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = Object)))]
pub async fn get_host(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Host>> {
    st.inventory()
        .host(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no host {name}")))
}

/// Decodes a request body into entries, naming bad entries.
fn decode_body(body: &Bytes, kind: Kind) -> ApiResult<load::Loaded> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    decode_value(v, kind)
}

/// Decodes entries from JSON (any shape `POST /v1/hosts` takes), naming bad entries.
pub(super) fn decode_value(v: Value, kind: Kind) -> ApiResult<load::Loaded> {
    load::from_json_value(v, kind, "request body").map_err(|e| match e {
        load::LoadError::Entries { errors, .. } => {
            let mut err = ApiError::invalid(errors.messages());
            err.message = format!("request body: {}", err.message);
            err
        }
        other => ApiError::bad_request(other.to_string()),
    })
}

/// Upserts the decoded entries; returns the names changed.
async fn upsert(st: &ApiState, loaded: load::Loaded) -> ApiResult {
    let names = save(st, loaded).await?;
    Ok(Json(json!({ "saved": names })))
}

/// Upserts the decoded entries; returns what was saved (`host NAME`, `image NAME`).
pub(super) async fn save(st: &ApiState, loaded: load::Loaded) -> ApiResult<Vec<String>> {
    let names: Vec<String> = loaded
        .hosts
        .iter()
        .map(|h| format!("host {}", h.name))
        .chain(loaded.images.iter().map(|i| format!("image {}", i.name)))
        .collect();
    st.apply(move |_| {
        let change = Change {
            put_hosts: loaded.hosts,
            put_images: loaded.images,
            ..Default::default()
        };
        Ok((change, ()))
    })
    .await?;
    Ok(names)
}

#[utoipa::path(post, path = "/v1/hosts", tag = "xboot", request_body = Entries,
    responses((status = 200, body = Object), (status = 400, body = Object)))]
pub async fn post_hosts(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let loaded = decode_body(&body, Kind::Hosts)?;
    upsert(&st, loaded).await
}

/// PUT bodies are one entry whose name, if given, must be the path's.
fn put_body(body: &Bytes, kind: Kind, name: &str) -> ApiResult<load::Loaded> {
    let mut loaded = decode_body(body, kind)?;
    let count = loaded.hosts.len() + loaded.images.len();
    if count != 1 {
        return Err(ApiError::bad_request(format!(
            "PUT takes one entry, got {count}"
        )));
    }
    let body_name = loaded
        .hosts
        .iter_mut()
        .map(|h| &mut h.name)
        .chain(loaded.images.iter_mut().map(|i| &mut i.name));
    for n in body_name {
        if n.is_empty() {
            *n = name.to_string();
        } else if n != name {
            return Err(ApiError::bad_request(format!(
                "name {n:?} in the body differs from {name:?} in the path"
            )));
        }
    }
    Ok(loaded)
}

#[utoipa::path(put, path = "/v1/hosts/{name}", tag = "xboot", params(("name" = String, Path)),
    request_body = Entries, responses((status = 200, body = Object), (status = 400, body = Object)))]
pub async fn put_host(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let loaded = put_body(&body, Kind::Hosts, &name)?;
    if !loaded.images.is_empty() {
        return Err(ApiError::bad_request("PUT /v1/hosts/{name} takes a host"));
    }
    upsert(&st, loaded).await
}

#[utoipa::path(put, path = "/v1/images/{name}", tag = "xboot", params(("name" = String, Path)),
    request_body = Entries, responses((status = 200, body = Object), (status = 400, body = Object)))]
pub async fn put_image(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let loaded = put_body(&body, Kind::Images, &name)?;
    if !loaded.hosts.is_empty() {
        return Err(ApiError::bad_request(
            "PUT /v1/images/{name} takes an image",
        ));
    }
    upsert(&st, loaded).await
}

#[utoipa::path(delete, path = "/v1/hosts/{name}", tag = "xboot", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = Object)))]
pub async fn delete_host(State(st): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    st.apply(|inv| {
        if inv.host(&name).is_none() {
            return Err(ApiError::not_found(format!("no host {name}")));
        }
        let change = Change {
            delete_hosts: vec![name.clone()],
            ..Default::default()
        };
        Ok((change, ()))
    })
    .await?;
    Ok(Json(json!({ "deleted": [name] })))
}

#[utoipa::path(delete, path = "/v1/hosts", tag = "xboot", params(NodesetQuery),
    responses((status = 200, body = Object), (status = 400, body = Object), (status = 404, body = Object)))]
pub async fn delete_hosts(State(st): State<ApiState>, Query(q): Query<NodesetQuery>) -> ApiResult {
    if !q.given() {
        return Err(ApiError::bad_request(
            "DELETE /v1/hosts needs ?nodeset= or ?tags= (nodeset=all deletes every host)",
        ));
    }
    let (deleted, missing) = delete_selected(&st, &q).await?;
    Ok(Json(
        json!({ "deleted": deleted, "nodeset": nodeset::fold(&deleted), "missing": missing }),
    ))
}

/// Deletes the hosts a query selects (404 if none); returns them and the missing part.
pub(super) async fn delete_selected(
    st: &ApiState,
    q: &NodesetQuery,
) -> ApiResult<(Vec<String>, String)> {
    st.apply(|inv| {
        let (names, missing) = select_hosts(inv, q)?;
        let change = Change {
            delete_hosts: names.clone(),
            ..Default::default()
        };
        Ok((change, (names, missing)))
    })
    .await
}

/// What an edit of the selected hosts did.
#[derive(Debug)]
pub(super) struct Applied {
    /// Every host selected.
    pub matched: Vec<String>,
    /// Those the edit changed.
    pub changed: Vec<String>,
    /// The part of the node set naming no host.
    pub missing: String,
}

/// Runs `edit` on each host a query selects (404 if none), as one inventory change;
/// `edit` returns whether it changed the host.
pub(super) async fn edit_selected(
    st: &ApiState,
    q: &NodesetQuery,
    mut edit: impl FnMut(&mut Host) -> bool,
) -> ApiResult<Applied> {
    st.apply(|inv| {
        let (matched, missing) = select_hosts(inv, q)?;
        let mut change = Change::default();
        for h in matched.iter().filter_map(|n| inv.host(n)) {
            let mut h = h.clone();
            if edit(&mut h) {
                change.put_hosts.push(h);
            }
        }
        let changed = change.put_hosts.iter().map(|h| h.name.clone()).collect();
        Ok((
            change,
            Applied {
                matched,
                changed,
                missing,
            },
        ))
    })
    .await
}

/// Sets `provision` on the selected hosts, recording an event for each one changed.
pub(super) async fn provision_selected(
    st: &ApiState,
    q: &NodesetQuery,
    on: bool,
) -> ApiResult<Applied> {
    let applied = edit_selected(st, q, |h| std::mem::replace(&mut h.provision, on) != on).await?;
    let kind = if on {
        EventKind::Provision
    } else {
        EventKind::Unprovision
    };
    for name in &applied.changed {
        st.shared.events.record(name, kind, "api");
    }
    Ok(applied)
}

/// Adds (`add`) or removes tags on the selected hosts; a host already in the wanted state
/// is not counted as changed. Tags keep their order; an added tag goes last. Empty tags
/// and tags holding a comma are refused.
pub(super) async fn tag_selected(
    st: &ApiState,
    q: &NodesetQuery,
    tags: &[String],
    add: bool,
) -> ApiResult<Applied> {
    let tags: Vec<String> = tags.iter().map(|t| t.trim().to_string()).collect();
    if tags.is_empty() || tags.iter().any(|t| t.is_empty() || t.contains(',')) {
        return Err(ApiError::bad_request(
            "give one or more non-empty tags, none containing a comma",
        ));
    }
    edit_selected(st, q, |h| {
        let before = h.tags.clone();
        if add {
            for t in &tags {
                if !h.tags.contains(t) {
                    h.tags.push(t.clone());
                }
            }
        } else {
            h.tags.retain(|t| !tags.contains(t));
        }
        h.tags != before
    })
    .await
}

/// Sets the boot image of the selected hosts (validated like any change: the image
/// must exist for a provisioned host).
pub(super) async fn image_selected(
    st: &ApiState,
    q: &NodesetQuery,
    image: &str,
) -> ApiResult<Applied> {
    let image = image.trim().to_string();
    edit_selected(st, q, |h| {
        if h.boot_image == image {
            return false;
        }
        h.boot_image = image.clone();
        true
    })
    .await
}

#[utoipa::path(post, path = "/v1/hosts/provision", tag = "xboot", params(NodesetQuery),
    responses((status = 200, body = Object), (status = 400, body = Object), (status = 404, body = Object)))]
pub async fn provision(State(st): State<ApiState>, Query(q): Query<NodesetQuery>) -> ApiResult {
    set_provision(st, q, true).await
}

#[utoipa::path(post, path = "/v1/hosts/unprovision", tag = "xboot", params(NodesetQuery),
    responses((status = 200, body = Object), (status = 400, body = Object), (status = 404, body = Object)))]
pub async fn unprovision(State(st): State<ApiState>, Query(q): Query<NodesetQuery>) -> ApiResult {
    set_provision(st, q, false).await
}

async fn set_provision(st: ApiState, q: NodesetQuery, on: bool) -> ApiResult {
    if !q.given() {
        return Err(ApiError::bad_request("needs ?nodeset= or ?tags="));
    }
    let a = provision_selected(&st, &q, on).await?;
    changed_response(a.changed, a.missing)
}

/// The body of `POST /v1/hosts/tag` and `/v1/hosts/untag`: the tags to add or remove.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsBody {
    pub tags: Vec<String>,
}

#[utoipa::path(post, path = "/v1/hosts/tag", tag = "xboot", params(NodesetQuery), request_body = TagsBody,
    responses((status = 200, body = Object), (status = 400, body = Object), (status = 404, body = Object)))]
pub async fn tag(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
    body: Bytes,
) -> ApiResult {
    set_tags(st, q, body, true).await
}

#[utoipa::path(post, path = "/v1/hosts/untag", tag = "xboot", params(NodesetQuery), request_body = TagsBody,
    responses((status = 200, body = Object), (status = 400, body = Object), (status = 404, body = Object)))]
pub async fn untag(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
    body: Bytes,
) -> ApiResult {
    set_tags(st, q, body, false).await
}

async fn set_tags(st: ApiState, q: NodesetQuery, body: Bytes, add: bool) -> ApiResult {
    if !q.given() {
        return Err(ApiError::bad_request("needs ?nodeset= or ?tags="));
    }
    let body: TagsBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("request body: {e} (expected {{\"tags\": [...]}})"))
    })?;
    let a = tag_selected(&st, &q, &body.tags, add)
        .await
        .map_err(|mut e| {
            e.message = format!("request body: {}", e.message);
            e
        })?;
    changed_response(a.changed, a.missing)
}

/// The body of `POST /v1/hosts/image`: the image to boot.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageBody {
    pub image: String,
}

/// `POST /v1/hosts/image?nodeset=NS` with `{"image": NAME}`.
#[utoipa::path(post, path = "/v1/hosts/image", tag = "xboot", params(NodesetQuery), request_body = ImageBody,
    responses((status = 200, body = Object), (status = 400, body = Object), (status = 404, body = Object)))]
pub async fn set_image(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
    body: Bytes,
) -> ApiResult {
    if !q.given() {
        return Err(ApiError::bad_request("needs ?nodeset= or ?tags="));
    }
    let body: ImageBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("request body: {e} (expected {{\"image\": NAME}})"))
    })?;
    let a = image_selected(&st, &q, &body.image).await?;
    changed_response(a.changed, a.missing)
}

/// `GET /v1/db/dump`: the whole inventory as Grendel's dump object (`Users` is empty).
#[utoipa::path(get, path = "/v1/db/dump", tag = "xboot",
    responses((status = 200, body = Object)))]
pub async fn db_dump(State(st): State<ApiState>) -> Json<Value> {
    let inv = st.inventory();
    let hosts = sorted_hosts(inv.hosts().to_vec());
    Json(load::to_dump(&hosts, &sorted_images(&st)))
}

pub(super) fn sorted_images(st: &ApiState) -> Vec<Image> {
    let mut images = st.inventory().images().to_vec();
    images.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    images
}

/// Replaces the whole inventory; returns the hosts and images restored and the warnings.
pub(super) async fn restore(
    st: &ApiState,
    loaded: load::Loaded,
) -> ApiResult<(usize, usize, Vec<String>)> {
    let (nh, ni) = (loaded.hosts.len(), loaded.images.len());
    let warnings = loaded.warnings.clone();
    st.mutate(move |hosts, images| {
        *hosts = loaded.hosts;
        *images = loaded.images;
        Ok(())
    })
    .await?;
    Ok((nh, ni, warnings))
}

fn changed_response(mut changed: Vec<String>, missing: String) -> ApiResult {
    changed.sort_by(|a, b| natural_cmp(a, b));
    Ok(Json(
        json!({ "changed": changed, "nodeset": nodeset::fold(&changed), "missing": missing }),
    ))
}

#[utoipa::path(get, path = "/v1/hosts/{name}/events", tag = "xboot", params(("name" = String, Path)),
    responses((status = 200, body = Vec<Object>), (status = 404, body = Object)))]
pub async fn host_events(State(st): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    if st.inventory().host(&name).is_none() {
        return Err(ApiError::not_found(format!("no host {name}")));
    }
    Ok(Json(json!(st.shared.events.for_host(&name))))
}

/// Events of every host the node set names, oldest first.
#[utoipa::path(get, path = "/v1/events", tag = "xboot", params(NodesetQuery),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Object), (status = 404, body = Object)))]
pub async fn events(State(st): State<ApiState>, Query(q): Query<NodesetQuery>) -> ApiResult {
    if !q.given() {
        return Err(ApiError::bad_request("needs ?nodeset= or ?tags="));
    }
    let inv = st.inventory();
    let (names, _) = select_hosts(&inv, &q)?;
    let mut all: Vec<_> = names
        .iter()
        .flat_map(|n| st.shared.events.for_host(n))
        .collect();
    all.sort_by_key(|e| e.time_ms);
    Ok(Json(json!(all)))
}

#[utoipa::path(get, path = "/v1/images", tag = "xboot",
    responses((status = 200, body = Vec<Object>)))]
pub async fn list_images(State(st): State<ApiState>) -> Json<Vec<Image>> {
    Json(sorted_images(&st))
}

#[utoipa::path(get, path = "/v1/images/{name}", tag = "xboot", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = Object)))]
pub async fn get_image(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Image>> {
    st.inventory()
        .image(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no image {name}")))
}

#[utoipa::path(delete, path = "/v1/images/{name}", tag = "xboot", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = Object)))]
pub async fn delete_image(State(st): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let deleted = delete_images(&st, std::slice::from_ref(&name)).await?;
    Ok(Json(json!({ "deleted": deleted })))
}

/// Deletes the named images; 404 naming those that do not exist (nothing deleted then).
pub(super) async fn delete_images(st: &ApiState, names: &[String]) -> ApiResult<Vec<String>> {
    st.apply(|inv| {
        let unknown: Vec<&str> = names
            .iter()
            .filter(|n| inv.image(n).is_none())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() || names.is_empty() {
            return Err(ApiError::not_found(format!(
                "no image {}",
                unknown.join(", ")
            )));
        }
        let change = Change {
            delete_images: names.to_vec(),
            ..Default::default()
        };
        Ok((change, names.to_vec()))
    })
    .await
}

#[utoipa::path(get, path = "/v1/discovered", tag = "xboot",
    responses((status = 200, body = Vec<Object>), (status = 503, body = Object)))]
/// Unknown MACs the DHCP server has seen; none when no DHCP service runs here.
pub async fn discovered(State(st): State<ApiState>) -> Json<Value> {
    Json(Value::Array(
        st.discovered.as_ref().map(|f| f()).unwrap_or_default(),
    ))
}

#[utoipa::path(get, path = "/v1/status", tag = "xboot",
    responses((status = 200, body = Object)))]
pub async fn status(State(st): State<ApiState>) -> Json<Value> {
    let inv = st.inventory();
    let provisioned = inv.hosts().iter().filter(|h| h.provision).count();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": st.started.elapsed().as_secs(),
        "hosts": inv.hosts().len(),
        // What DHCP, TFTP and the boot routes serve (a cluster server: its segments').
        "served_hosts": st.shared.inventory().hosts().len(),
        "provisioned": provisioned,
        "images": inv.images().len(),
        "inventory_generation": *st.shared.subscribe().borrow(),
        "store": st.store.as_ref().map(|s| s.path().display().to_string()),
        // Standalone changes and the store transactions they were committed in.
        "inventory_commits": st.backend.is_none().then(|| st.writes.stats()),
        "counters": st.counters.as_ref().map(|f| f()),
    }))
}

/// `POST /v1/bmc/power` with a [`PowerRequest`] body: runs the action on the BMC of every
/// node of the set and answers the [`crate::bmc::fanout::Summary`] (200 even when some
/// nodes failed: each result says why). A node set naming unknown hosts, or hosts
/// without a BMC, is refused before any traffic (400). Each node's outcome is recorded
/// as a `power` event, so `xboot events NODESET` shows it beside the boot.
#[utoipa::path(post, path = "/v1/bmc/power", tag = "xboot", request_body = Object,
    responses((status = 200, body = Object), (status = 400, body = Object)))]
pub async fn bmc_power(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let req: PowerRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("power request: {e}")))?;
    let summary = power(&st, &req).await?;
    serde_json::to_value(&summary)
        .map(Json)
        .map_err(ApiError::internal)
}

/// Runs a power request and records each node's outcome as a `power` event.
pub(super) async fn power(
    st: &ApiState,
    req: &PowerRequest,
) -> ApiResult<crate::bmc::fanout::Summary> {
    let inv = st.inventory();
    let summary = crate::bmc::request::power(&st.shared.config.bmc, &inv, req, |_| {})
        .await
        .map_err(|e| {
            let mut err = ApiError::bad_request(e.to_string());
            if let PowerError::Targets(errs) = e {
                err.errors = errs.0.iter().map(ToString::to_string).collect();
            }
            err
        })?;
    let verb = match summary.boot {
        Some(crate::bmc::BootMode::Legacy) => format!("{} (next boot: PXE)", req.action.as_str()),
        Some(crate::bmc::BootMode::Efi) => format!("{} (next boot: EFI PXE)", req.action.as_str()),
        None => req.action.as_str().to_string(),
    };
    for r in &summary.results {
        let detail = match (r.ok(), &r.power) {
            (true, Some(p)) => format!("{verb}: {p} via {}", r.bmc),
            (true, None) => format!("{verb}: ok via {}", r.bmc),
            (false, _) => format!(
                "{verb}: failed via {}: {} ({})",
                r.bmc,
                r.reason.as_str(),
                r.message
            ),
        };
        st.shared.events.record(&r.name, EventKind::Power, detail);
    }
    Ok(summary)
}
