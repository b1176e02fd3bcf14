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
use crate::inventory::{Host, Image};
use crate::nodeset::{self, natural_cmp};

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

#[derive(Debug, Default, Deserialize)]
pub struct NodesetQuery {
    pub nodeset: Option<String>,
}

/// The hosts a node set names, in natural order; 404 if it names none.
fn select_hosts(hosts: &[Host], query: &str) -> ApiResult<(Vec<String>, String)> {
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let sel = nodeset::select(query, &names).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if sel.matched.is_empty() {
        return Err(ApiError::not_found(format!("no host matches {query}")));
    }
    Ok((sel.matched, sel.missing))
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
    let hosts = match q.nodeset.as_deref() {
        None => inv.hosts().to_vec(),
        Some(ns) => {
            let names: Vec<&str> = inv.hosts().iter().map(|h| h.name.as_str()).collect();
            let sel =
                nodeset::select(ns, &names).map_err(|e| ApiError::bad_request(e.to_string()))?;
            sel.matched
                .iter()
                .filter_map(|n| inv.host(n).cloned())
                .collect()
        }
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
    st.mutate(move |hosts, images| {
        crate::inventory::merge(hosts, images, loaded);
        Ok(())
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
    st.mutate(|hosts, _| {
        let before = hosts.len();
        hosts.retain(|h| h.name != name);
        if hosts.len() == before {
            return Err(ApiError::not_found(format!("no host {name}")));
        }
        Ok(())
    })
    .await?;
    Ok(Json(json!({ "deleted": [name] })))
}

pub async fn delete_hosts(State(st): State<ApiState>, Query(q): Query<NodesetQuery>) -> ApiResult {
    let Some(ns) = q.nodeset else {
        return Err(ApiError::bad_request(
            "DELETE /v1/hosts needs ?nodeset= (use a node set naming every host to delete all)",
        ));
    };
    let (deleted, missing) = st
        .mutate(|hosts, _| {
            let (names, missing) = select_hosts(hosts, &ns)?;
            let set: std::collections::HashSet<&String> = names.iter().collect();
            hosts.retain(|h| !set.contains(&h.name));
            Ok((names, missing))
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
    let ns = q
        .nodeset
        .ok_or_else(|| ApiError::bad_request("needs ?nodeset="))?;
    let (changed, missing) = st
        .mutate(|hosts, _| {
            let (names, missing) = select_hosts(hosts, &ns)?;
            let set: std::collections::HashSet<&String> = names.iter().collect();
            let mut changed = Vec::new();
            for h in hosts
                .iter_mut()
                .filter(|h| set.contains(&h.name) && h.provision != on)
            {
                h.provision = on;
                changed.push(h.name.clone());
            }
            Ok((changed, missing))
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
    let ns = q
        .nodeset
        .ok_or_else(|| ApiError::bad_request("needs ?nodeset="))?;
    let inv = st.shared.inventory();
    let (names, _) = select_hosts(inv.hosts(), &ns)?;
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
    st.mutate(|_, images| {
        let before = images.len();
        images.retain(|i| i.name != name);
        if images.len() == before {
            return Err(ApiError::not_found(format!("no image {name}")));
        }
        Ok(())
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
