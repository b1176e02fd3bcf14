//! The API's request handlers: thin adapters from HTTP to inventory edits and reads.
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
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
#[derive(Debug, Default, Deserialize)]
pub struct NodesetQuery {
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
    fn describe(&self) -> String {
        match (&self.nodeset, &self.tags) {
            (Some(ns), Some(t)) => format!("{ns} with tags {t}"),
            (Some(ns), None) => ns.clone(),
            (None, Some(t)) => format!("tags {t}"),
            (None, None) => nodeset::ALL.into(),
        }
    }
}

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

pub async fn list_hosts(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
) -> ApiResult<Json<Vec<Host>>> {
    let inv = st.shared.inventory();
    let hosts = if q.given() {
        let (names, _) = selection(&inv, &q)?;
        names.iter().filter_map(|n| inv.host(n).cloned()).collect()
    } else {
        inv.hosts().to_vec()
    };
    Ok(Json(sorted_hosts(hosts)))
}

pub async fn get_host(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Host>> {
    st.shared
        .inventory()
        .host(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no host {name}")))
}

/// Decodes a request body into entries, naming bad entries.
fn decode_body(body: &Bytes, kind: Kind) -> ApiResult<load::Loaded> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
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
    Ok(Json(json!({ "saved": names })))
}

pub async fn post_hosts(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let loaded = decode_body(&body, Kind::Hosts)?;
    upsert(&st, loaded).await
}

pub async fn post_images(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let loaded = decode_body(&body, Kind::Images)?;
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

pub async fn delete_hosts(State(st): State<ApiState>, Query(q): Query<NodesetQuery>) -> ApiResult {
    if !q.given() {
        return Err(ApiError::bad_request(
            "DELETE /v1/hosts needs ?nodeset= or ?tags= (nodeset=all deletes every host)",
        ));
    }
    let (deleted, missing) = st
        .apply(|inv| {
            let (names, missing) = select_hosts(inv, &q)?;
            let change = Change {
                delete_hosts: names.clone(),
                ..Default::default()
            };
            Ok((change, (names, missing)))
        })
        .await?;
    Ok(Json(
        json!({ "deleted": deleted, "nodeset": nodeset::fold(&deleted), "missing": missing }),
    ))
}

pub async fn provision(State(st): State<ApiState>, Query(q): Query<NodesetQuery>) -> ApiResult {
    set_provision(st, q, true).await
}

pub async fn unprovision(State(st): State<ApiState>, Query(q): Query<NodesetQuery>) -> ApiResult {
    set_provision(st, q, false).await
}

async fn set_provision(st: ApiState, q: NodesetQuery, on: bool) -> ApiResult {
    if !q.given() {
        return Err(ApiError::bad_request("needs ?nodeset= or ?tags="));
    }
    let (changed, missing) = st
        .apply(|inv| {
            let (names, missing) = select_hosts(inv, &q)?;
            let mut change = Change::default();
            for h in names.iter().filter_map(|n| inv.host(n)) {
                if h.provision != on {
                    let mut h = h.clone();
                    h.provision = on;
                    change.put_hosts.push(h);
                }
            }
            let changed: Vec<String> = change.put_hosts.iter().map(|h| h.name.clone()).collect();
            Ok((change, (changed, missing)))
        })
        .await?;
    let kind = if on {
        EventKind::Provision
    } else {
        EventKind::Unprovision
    };
    for name in &changed {
        st.shared.events.record(name, kind, "api");
    }
    changed_response(changed, missing)
}

/// The body of `POST /v1/hosts/tag` and `/v1/hosts/untag`: the tags to add or remove.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsBody {
    pub tags: Vec<String>,
}

pub async fn tag(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
    body: Bytes,
) -> ApiResult {
    set_tags(st, q, body, true).await
}

pub async fn untag(
    State(st): State<ApiState>,
    Query(q): Query<NodesetQuery>,
    body: Bytes,
) -> ApiResult {
    set_tags(st, q, body, false).await
}

/// Adds (`add`) or removes tags on the selected hosts; a host already in the wanted state
/// is not counted as changed. Tags keep their order; an added tag goes last.
async fn set_tags(st: ApiState, q: NodesetQuery, body: Bytes, add: bool) -> ApiResult {
    if !q.given() {
        return Err(ApiError::bad_request("needs ?nodeset= or ?tags="));
    }
    let body: TagsBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("request body: {e} (expected {{\"tags\": [...]}})"))
    })?;
    let tags: Vec<String> = body.tags.iter().map(|t| t.trim().to_string()).collect();
    if tags.is_empty() || tags.iter().any(|t| t.is_empty() || t.contains(',')) {
        return Err(ApiError::bad_request(
            "request body: give one or more non-empty tags, none containing a comma",
        ));
    }
    let (changed, missing) = st
        .apply(|inv| {
            let (names, missing) = select_hosts(inv, &q)?;
            let mut change = Change::default();
            for h in names.iter().filter_map(|n| inv.host(n)) {
                let mut h = h.clone();
                let before = h.tags.len();
                if add {
                    for t in &tags {
                        if !h.tags.contains(t) {
                            h.tags.push(t.clone());
                        }
                    }
                } else {
                    h.tags.retain(|t| !tags.contains(t));
                }
                if h.tags.len() != before {
                    change.put_hosts.push(h);
                }
            }
            let changed: Vec<String> = change.put_hosts.iter().map(|h| h.name.clone()).collect();
            Ok((change, (changed, missing)))
        })
        .await?;
    changed_response(changed, missing)
}

/// `GET /v1/db/dump`: the whole inventory as Grendel's dump object (`Users` is empty).
pub async fn db_dump(State(st): State<ApiState>) -> Json<Value> {
    let inv = st.shared.inventory();
    let hosts = sorted_hosts(inv.hosts().to_vec());
    let mut images = inv.images().to_vec();
    images.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    Json(load::to_dump(&hosts, &images))
}

/// `POST /v1/db/restore`: replaces the whole inventory by the body (a dump, Grendel's or
/// xboot's, or any shape `POST /v1/hosts` takes). The new inventory is validated whole
/// first and committed in one transaction; on any error nothing changes.
pub async fn db_restore(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let loaded = decode_body(&body, Kind::Hosts)?;
    let (nh, ni) = (loaded.hosts.len(), loaded.images.len());
    let warnings = loaded.warnings.clone();
    st.mutate(move |hosts, images| {
        *hosts = loaded.hosts;
        *images = loaded.images;
        Ok(())
    })
    .await?;
    Ok(Json(
        json!({ "restored": { "hosts": nh, "images": ni }, "warnings": warnings }),
    ))
}

fn changed_response(mut changed: Vec<String>, missing: String) -> ApiResult {
    changed.sort_by(|a, b| natural_cmp(a, b));
    Ok(Json(
        json!({ "changed": changed, "nodeset": nodeset::fold(&changed), "missing": missing }),
    ))
}

pub async fn host_events(State(st): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    if st.shared.inventory().host(&name).is_none() {
        return Err(ApiError::not_found(format!("no host {name}")));
    }
    Ok(Json(json!(st.shared.events.for_host(&name))))
}

/// Events of every host the node set names, oldest first.
pub async fn events(State(st): State<ApiState>, Query(q): Query<NodesetQuery>) -> ApiResult {
    if !q.given() {
        return Err(ApiError::bad_request("needs ?nodeset= or ?tags="));
    }
    let inv = st.shared.inventory();
    let (names, _) = select_hosts(&inv, &q)?;
    let mut all: Vec<_> = names
        .iter()
        .flat_map(|n| st.shared.events.for_host(n))
        .collect();
    all.sort_by_key(|e| e.time_ms);
    Ok(Json(json!(all)))
}

pub async fn list_images(State(st): State<ApiState>) -> Json<Vec<Image>> {
    let mut images = st.shared.inventory().images().to_vec();
    images.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    Json(images)
}

pub async fn get_image(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Image>> {
    st.shared
        .inventory()
        .image(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no image {name}")))
}

pub async fn delete_image(State(st): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    st.apply(|inv| {
        if inv.image(&name).is_none() {
            return Err(ApiError::not_found(format!("no image {name}")));
        }
        let change = Change {
            delete_images: vec![name.clone()],
            ..Default::default()
        };
        Ok((change, ()))
    })
    .await?;
    Ok(Json(json!({ "deleted": [name] })))
}

pub async fn discovered(State(st): State<ApiState>) -> ApiResult {
    match &st.discovered {
        Some(f) => Ok(Json(Value::Array(f()))),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no DHCP service is running in this server",
        )),
    }
}

pub async fn status(State(st): State<ApiState>) -> Json<Value> {
    let inv = st.shared.inventory();
    let provisioned = inv.hosts().iter().filter(|h| h.provision).count();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": st.started.elapsed().as_secs(),
        "hosts": inv.hosts().len(),
        "provisioned": provisioned,
        "images": inv.images().len(),
        "inventory_generation": *st.shared.subscribe().borrow(),
        "store": st.store.as_ref().map(|s| s.path().display().to_string()),
        "counters": st.counters.as_ref().map(|f| f()),
    }))
}

/// `POST /v1/bmc/power` with a [`PowerRequest`] body: runs the action on the BMC of every
/// node of the set and answers the [`crate::bmc::fanout::Summary`] (200 even when some
/// nodes failed: each result says why). A node set naming unknown hosts, or hosts
/// without a BMC, is refused before any traffic (400). Each node's outcome is recorded
/// as a `power` event, so `xboot events NODESET` shows it beside the boot.
pub async fn bmc_power(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let req: PowerRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("power request: {e}")))?;
    let inv = st.shared.inventory();
    let summary = crate::bmc::request::power(&st.shared.config.bmc, &inv, &req, |_| {})
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
    serde_json::to_value(&summary)
        .map(Json)
        .map_err(ApiError::internal)
}
