//! Grendel's routes (v0.2 and the SquareFactory fork) with requests shaped as their
//! clients send them (fixtures in `testdata/`, written from Grendel's OpenAPI document
//! and the fork's handlers), and the accounts on the authenticated router.
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::accounts::{Accounts, Role};
use super::tests::Fixture;
use super::*;

/// A fixture file of `testdata/`, with `@DIR@` naming the fixture's kernel directory.
fn fixture(f: &Fixture, name: &str) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/api/testdata")
            .join(name),
    )
    .unwrap();
    text.replace("@DIR@", &f.files.path().display().to_string())
}

/// One request with a raw body and headers; the answer's status, JSON and headers.
async fn send(
    app: Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let resp = app.oneshot(req.body(body).unwrap()).await.unwrap();
    let (status, h) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, h)
}

const JSON: (&str, &str) = ("content-type", "application/json");

async fn g(f: &Fixture, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
    let (s, v, _) = send(router(f.state.clone()), method, uri, body, &[JSON]).await;
    (s, v)
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn grendel_v02_requests_get_grendel_answers() {
    let f = Fixture::new();
    let (s, v) = g(
        &f,
        "POST",
        "/v1/images",
        Some(&fixture(&f, "grendel-v02-image-add.json")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["title"].as_str(), v["changed"].as_u64()),
        (Some("Success"), Some(2))
    );
    // GET /v1/images is both APIs': Grendel's BootImage keys are there.
    let (_, v) = g(&f, "GET", "/v1/images", None).await;
    assert_eq!(names(&v), ["alma-9", "rocky-9"]);
    for key in ["name", "kernel", "initrd", "cmdline", "verify"] {
        assert!(v[0].get(key).is_some(), "image lacks {key}: {}", v[0]);
    }
    let (s, v) = g(
        &f,
        "POST",
        "/v1/nodes",
        Some(&fixture(&f, "grendel-v02-node-add.json")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"title": "Success", "detail": "successfully added node(s)", "changed": 2})
    );

    // Hosts in Grendel's shape: every key, interfaces complete, tags an array.
    let (s, v) = g(&f, "GET", "/v1/nodes", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&v), ["cpn-e01-01", "cpn-e01-02"]);
    let h = &v[1];
    for key in [
        "id",
        "uid",
        "name",
        "provision",
        "firmware",
        "boot_image",
        "tags",
        "interfaces",
        "bonds",
    ] {
        assert!(h.get(key).is_some(), "host lacks {key}: {h}");
    }
    assert_eq!(h["tags"], json!([]));
    assert_eq!(
        h["interfaces"][0],
        json!({"id": null, "mac": "aa:bb:cc:0e:01:02", "ip": "10.64.2.2/16",
               "fqdn": "cpn-e01-02.cluster", "bmc": false, "ifname": "", "vlan": "", "mtu": 0})
    );

    // find by node set and by tags (Grendel sends the unused one empty).
    let (_, v) = g(
        &f,
        "GET",
        "/v1/nodes/find?nodeset=cpn-e01-%5B01-02%5D&tags=",
        None,
    )
    .await;
    assert_eq!(names(&v), ["cpn-e01-01", "cpn-e01-02"]);
    let (_, v) = g(&f, "GET", "/v1/nodes/find?nodeset=&tags=e01", None).await;
    assert_eq!(names(&v), ["cpn-e01-01"]);

    // provision, tags, image: GenericResponse, and the inventory follows.
    let (s, v) = g(
        &f,
        "PATCH",
        "/v1/nodes/provision?nodeset=cpn-e01-02&tags=",
        Some(r#"{"provision":false}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["detail"],
        "successfully changed node(s) provision to false"
    );
    assert_eq!(v["changed"], 1);
    assert!(
        !f.state
            .shared
            .inventory()
            .host("cpn-e01-02")
            .unwrap()
            .provision
    );
    let (s, v) = g(
        &f,
        "PATCH",
        "/v1/nodes/tags/add?nodeset=cpn-e01-%5B01-02%5D",
        Some(r#"{"tags":"a01,ib"}"#),
    )
    .await;
    assert_eq!((s, v["changed"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    let (_, v) = g(&f, "GET", "/v1/nodes/find?tags=ib", None).await;
    assert_eq!(names(&v), ["cpn-e01-01", "cpn-e01-02"]);
    let (s, v) = g(
        &f,
        "PATCH",
        "/v1/nodes/tags/remove?nodeset=cpn-e01-01",
        Some(r#"{"tags":"ib"}"#),
    )
    .await;
    assert_eq!(
        (s, v["detail"].as_str()),
        (
            StatusCode::OK,
            Some("successfully removed tag(s) from node(s)")
        )
    );
    assert_eq!(
        f.state.shared.inventory().host("cpn-e01-01").unwrap().tags,
        ["e01", "a01"]
    );
    let (s, v) = g(
        &f,
        "PATCH",
        "/v1/nodes/image?tags=a01",
        Some(r#"{"image":"alma-9"}"#),
    )
    .await;
    assert_eq!((s, v["changed"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    assert_eq!(
        f.state
            .shared
            .inventory()
            .host("cpn-e01-01")
            .unwrap()
            .boot_image,
        "alma-9"
    );
    // An image that does not exist is refused whole (a provisioned host would not boot).
    let (s, v) = g(
        &f,
        "PATCH",
        "/v1/nodes/image?nodeset=cpn-e01-01",
        Some(r#"{"image":"nope"}"#),
    )
    .await;
    assert_eq!(
        (s, v["status"].as_u64()),
        (StatusCode::BAD_REQUEST, Some(400)),
        "{v}"
    );
    assert_eq!(
        f.state
            .shared
            .inventory()
            .host("cpn-e01-01")
            .unwrap()
            .boot_image,
        "alma-9"
    );

    // Boot tokens: the HTTP service signs them (none here: 503), then with one.
    let (s, _) = g(&f, "GET", "/v1/nodes/token/boot?nodeset=cpn-e01-01", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let signed = f
        .state
        .clone()
        .with_boot_token(Arc::new(|h, m| format!("{h}/{m}")));
    let (s, v, _) = send(
        router(signed),
        "GET",
        "/v1/nodes/token/boot?nodeset=cpn-e01-%5B01-02%5D",
        None,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"nodes": [{"name": "cpn-e01-01", "token": "cpn-e01-01/aa:bb:cc:0e:01:01"},
                         {"name": "cpn-e01-02", "token": "cpn-e01-02/aa:bb:cc:0e:01:02"}]})
    );

    // Images: find by names, delete by names (Grendel's handler reads `name`).
    let (_, v) = g(&f, "GET", "/v1/images/find?names=rocky-9,none", None).await;
    assert_eq!(names(&v), ["rocky-9"]);
    assert_eq!(v[0]["initrd"].as_array().unwrap().len(), 1);
    let (s, v) = g(&f, "DELETE", "/v1/images?names=alma-9", None).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "in use by provisioned hosts: {v}"
    );
    let (s, v) = g(&f, "DELETE", "/v1/images?name=rocky-9", None).await;
    assert_eq!((s, v["changed"].as_u64()), (StatusCode::OK, Some(1)), "{v}");

    // Errors in Grendel's HTTPError shape.
    let (s, v) = g(
        &f,
        "PATCH",
        "/v1/nodes/tags/toggle?nodeset=cpn-e01-01",
        Some(r#"{"tags":"x"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        (v["title"].as_str(), v["status"].as_u64()),
        (Some("Error"), Some(400))
    );
    assert!(
        v["detail"].as_str().unwrap().contains("add or remove"),
        "{v}"
    );
    let (s, _) = g(&f, "DELETE", "/v1/nodes?nodeset=&tags=", None).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a delete without a filter is refused"
    );
    let (s, _) = g(
        &f,
        "PATCH",
        "/v1/nodes/provision?nodeset=cpn-x",
        Some(r#"{"provision":true}"#),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = g(
        &f,
        "POST",
        "/v1/bmc/power/os?nodeset=cpn-e01-01",
        Some(r#"{"power_option":"Explode","boot_option":"Pxe"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains("PowerCycle"), "{v}");
    let (s, _) = g(
        &f,
        "POST",
        "/v1/bmc/power/os?nodeset=cpn-x",
        Some(r#"{"power_option":"On"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A host without a BMC: refused before any traffic (Grendel: a JobMessage error).
    let (s, v) = g(
        &f,
        "POST",
        "/v1/bmc/power/os?nodeset=cpn-e01-01",
        Some(r#"{"power_option":"PowerCycle","boot_option":"Pxe"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let (s, v) = g(&f, "DELETE", "/v1/nodes?nodeset=cpn-e01-02", None).await;
    assert_eq!((s, v["changed"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    assert_eq!(f.state.shared.inventory().hosts().len(), 1);
}

#[tokio::test]
async fn fork_requests_get_fork_answers() {
    let f = Fixture::new();
    let (s, v) = g(
        &f,
        "POST",
        "/v1/bootimage",
        Some(&fixture(&f, "fork-bootimage-add.json")),
    )
    .await;
    assert_eq!((s, &v), (StatusCode::CREATED, &json!({"images": 1})));
    // The fork wants a JSON content type.
    let body = fixture(&f, "fork-host-add.json");
    let (s, v, _) = send(
        router(f.state.clone()),
        "POST",
        "/v1/host",
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(
        (s, &v["message"]),
        (StatusCode::BAD_REQUEST, &json!("invalid content type"))
    );
    let (s, v) = g(&f, "POST", "/v1/host", Some(&body)).await;
    assert_eq!((s, &v), (StatusCode::CREATED, &json!({"hosts": 1})));

    let (_, v) = g(&f, "GET", "/v1/host/list", None).await;
    assert_eq!(names(&v), ["cn1"]);
    assert_eq!(
        v[0]["id"], "2cYbNGn4Ev3AnWkGVz0lbrZzZzz",
        "the fork's KSUID id kept"
    );
    let (_, v) = g(&f, "GET", "/v1/host/find/cn%5B1-9%5D", None).await;
    assert_eq!(names(&v), ["cn1"]);
    let (_, v) = g(&f, "GET", "/v1/host/find/cn9", None).await;
    assert_eq!(v, json!([]));
    let (s, v) = g(&f, "PUT", "/v1/host/tag/cn1?tags=gpu,ib", None).await;
    assert_eq!(
        (s, &v),
        (
            StatusCode::OK,
            &json!({"hosts": 1, "tags": ["gpu", "ib"], "action": "add"})
        )
    );
    let (_, v) = g(&f, "GET", "/v1/host/tags/ib", None).await;
    assert_eq!(names(&v), ["cn1"]);
    let (_, v) = g(&f, "PUT", "/v1/host/untag/cn1?tags=ib", None).await;
    assert_eq!(v["action"], "remove");
    let (_, v) = g(&f, "GET", "/v1/host/tags/ib", None).await;
    assert_eq!(v, json!([]));
    let (s, _) = g(&f, "PUT", "/v1/host/tag/cn1", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "no tags");
    let (s, v) = g(&f, "PUT", "/v1/host/unprovision/cn1", None).await;
    assert_eq!((s, &v), (StatusCode::OK, &json!({"hosts": 1})));
    assert!(!f.state.shared.inventory().host("cn1").unwrap().provision);
    let (s, v) = g(&f, "PUT", "/v1/host/provision/cn7", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("No hosts found in nodeset"),
        "{v}"
    );

    let (_, v) = g(&f, "GET", "/v1/bootimage/list", None).await;
    assert_eq!(names(&v), ["squareos"]);
    let (_, v) = g(&f, "GET", "/v1/bootimage/find/squareos", None).await;
    assert_eq!(names(&v), ["squareos"]);
    let (s, v) = g(&f, "GET", "/v1/bootimage/find/nope", None).await;
    assert_eq!(
        (s, &v["message"]),
        (StatusCode::NOT_FOUND, &json!("image not found"))
    );
    let (s, v) = g(&f, "DELETE", "/v1/host/find/cn1", None).await;
    assert_eq!((s, &v), (StatusCode::OK, &json!({"hosts": 1})));
    let (s, v) = g(&f, "DELETE", "/v1/bootimage/find/squareos", None).await;
    assert_eq!((s, &v), (StatusCode::OK, &json!({"images": 1})));
    let inv = f.state.shared.inventory();
    assert!(inv.hosts().is_empty() && inv.images().is_empty());
}

#[tokio::test]
async fn a_grendel_dump_restores_and_dumps_back() {
    let f = Fixture::new();
    let dump = fixture(&f, "grendel-v02-dump.json");
    let (s, v) = g(&f, "POST", "/v1/db/restore", Some(&dump)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["title"], "Success");
    assert_eq!(v["detail"], "restored db: hosts=2 images=1 users=1");
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("1 user skipped (admin)"),
        "{v}"
    );
    let (_, out) = g(&f, "GET", "/v1/db/dump", None).await;
    let input: Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(out["Hosts"].as_array().unwrap().len(), 2);
    for (a, b) in input["Hosts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(out["Hosts"].as_array().unwrap())
    {
        for key in ["id", "uid", "name", "provision", "boot_image"] {
            assert_eq!(a[key], b[key], "{key}");
        }
        assert_eq!(a["interfaces"][0]["mac"], b["interfaces"][0]["mac"]);
    }
    assert_eq!(out["Images"][0]["name"], "rocky-9");
    // And Grendel's view of the restored hosts.
    let (_, v) = g(&f, "GET", "/v1/nodes/find?tags=ib", None).await;
    assert_eq!(names(&v), ["cpn-d01-01"]);
    assert_eq!(v[0]["id"], 1);
    assert_eq!(v[0]["interfaces"][1]["bmc"], true);
    // A dump naming a missing image is refused whole; the inventory stays.
    let bad = dump.replace(
        "\"boot_image\": \"rocky-9\", \"tags\": [\"d01\"",
        "\"boot_image\": \"gone\", \"tags\": [\"d01\"",
    );
    let (s, _) = g(&f, "POST", "/v1/db/restore", Some(&bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(f.state.shared.inventory().hosts().len(), 2);
}

/// The authenticated router with an operator and an admin account and their tokens.
fn secured(f: &Fixture) -> (ApiState, Arc<Accounts>) {
    let accounts = Arc::new(Accounts::memory());
    (f.state.clone().with_accounts(accounts.clone()), accounts)
}

async fn as_token(
    st: &ApiState,
    method: &str,
    uri: &str,
    body: Option<&str>,
    token: &str,
) -> (StatusCode, Value) {
    let auth = format!("Bearer {token}");
    let (s, v, _) = send(
        router_authenticated(st.clone()),
        method,
        uri,
        body,
        &[JSON, ("authorization", &auth)],
    )
    .await;
    (s, v)
}

#[tokio::test]
async fn tokens_are_scoped_and_expire() {
    let f = Fixture::new();
    let (st, accounts) = secured(&f);
    let (ro, _) = accounts
        .create_token("viewer", Role::ReadOnly, None, None)
        .unwrap();
    let (op, _) = accounts
        .create_token("ops", Role::Operator, None, None)
        .unwrap();
    let images = fixture(&f, "grendel-v02-image-add.json");
    let nodes = fixture(&f, "grendel-v02-node-add.json");

    // Read-only: reads, never changes (the inventory stays as it was).
    let (s, _) = as_token(&st, "GET", "/v1/nodes", None, &ro).await;
    assert_eq!(s, StatusCode::OK);
    for (method, uri, body) in [
        ("POST", "/v1/images", Some(images.as_str())),
        ("POST", "/v1/nodes", Some(nodes.as_str())),
        ("POST", "/v1/hosts", Some(nodes.as_str())),
        ("DELETE", "/v1/nodes?nodeset=all", None),
        (
            "POST",
            "/v1/db/restore",
            Some(r#"{"Hosts": [], "Images": []}"#),
        ),
        ("GET", "/v1/nodes/token/boot?nodeset=all", None),
    ] {
        let (s, v) = as_token(&st, method, uri, body, &ro).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {uri}: {v}");
        assert!(v["error"].as_str().unwrap().contains("read-only"), "{v}");
    }
    assert!(st.shared.inventory().images().is_empty());

    // Operator: changes the inventory, cannot manage accounts or restore.
    let (s, v) = as_token(&st, "POST", "/v1/images", Some(&images), &op).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = as_token(&st, "POST", "/v1/nodes", Some(&nodes), &op).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(st.shared.inventory().hosts().len(), 2);
    let (s, _) = as_token(&st, "POST", "/v1/tokens", Some(r#"{"role":"admin"}"#), &op).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = as_token(
        &st,
        "POST",
        "/v1/db/restore",
        Some(r#"{"Hosts": [], "Images": []}"#),
        &op,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(st.shared.inventory().hosts().len(), 2);

    // Expired and unknown tokens: 401, with what went wrong. (A token issued an hour
    // ago for a minute.)
    let hour_ago = super::accounts::now_secs() - 3600;
    let ttl = Some(std::time::Duration::from_secs(60));
    let (expired, _) = accounts
        .create_token_at("old", Role::Admin, ttl, None, hour_ago)
        .unwrap();
    let (s, v) = as_token(&st, "GET", "/v1/nodes", None, &expired).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token expired"))
    );
    let (s, v) = as_token(&st, "GET", "/v1/nodes", None, "xbt_made-up").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unknown or revoked token"))
    );
    let (s, _, h) = send(
        router_authenticated(st.clone()),
        "GET",
        "/v1/nodes",
        None,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer");
    // The description is open.
    let (s, v, _) = send(
        router_authenticated(st.clone()),
        "GET",
        "/v1/openapi.json",
        None,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
}

#[tokio::test]
async fn sign_in_refuses_alike_and_its_token_carries_the_role() {
    let f = Fixture::new();
    let (st, accounts) = secured(&f);
    accounts
        .add_user("ann", "correct horse", Role::ReadOnly, false)
        .unwrap();
    let app = || router_authenticated(st.clone());
    let signin = |u: &str, p: &str| json!({"username": u, "password": p}).to_string();
    let (s1, wrong, h1) = send(
        app(),
        "POST",
        "/v1/auth/signin",
        Some(&signin("ann", "wrong horse")),
        &[JSON],
    )
    .await;
    let (s2, unknown, h2) = send(
        app(),
        "POST",
        "/v1/auth/signin",
        Some(&signin("bob", "correct horse")),
        &[JSON],
    )
    .await;
    assert_eq!(
        (s1, s2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        wrong, unknown,
        "the same answer whether the user exists or not"
    );
    assert_eq!(wrong["detail"], "invalid username or password");
    assert!(h1.get("set-cookie").is_none() && h2.get("set-cookie").is_none());

    let (s, v, h) = send(
        app(),
        "POST",
        "/v1/auth/signin",
        Some(&signin("ann", "correct horse")),
        &[JSON],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["username"].as_str(), v["role"].as_str()),
        (Some("ann"), Some("read-only"))
    );
    let now_ms = super::accounts::now_secs() * 1000;
    assert!(v["expire"].as_u64().unwrap() > now_ms, "{v}");
    let token = v["token"].as_str().unwrap();
    let (s, _) = as_token(&st, "GET", "/v1/nodes", None, token).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = as_token(
        &st,
        "PATCH",
        "/v1/nodes/provision?nodeset=all",
        Some(r#"{"provision":true}"#),
        token,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Grendel's browser client sends the cookie instead of the header.
    let cookie = h["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (s, _, _) = send(app(), "GET", "/v1/nodes", None, &[("cookie", &cookie)]).await;
    assert_eq!(s, StatusCode::OK);
    // Deleting the user ends its session.
    accounts.delete_user("ann").unwrap();
    let (s, _) = as_token(&st, "GET", "/v1/nodes", None, token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[test]
fn the_document_names_every_route() {
    let doc = super::openapi::document();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/hosts",
        "/v1/hosts/{name}",
        "/v1/images",
        "/v1/db/dump",
        "/v1/db/restore",
        "/v1/nodes",
        "/v1/nodes/find",
        "/v1/nodes/provision",
        "/v1/nodes/tags/{action}",
        "/v1/nodes/image",
        "/v1/nodes/token/{interface}",
        "/v1/images/find",
        "/v1/bmc/power/os",
        "/v1/auth/signin",
        "/v1/auth/token",
        "/v1/host",
        "/v1/host/list",
        "/v1/host/find/{nodeset}",
        "/v1/host/tags/{tags}",
        "/v1/host/tag/{nodeset}",
        "/v1/host/untag/{nodeset}",
        "/v1/host/provision/{nodeset}",
        "/v1/host/unprovision/{nodeset}",
        "/v1/bootimage",
        "/v1/bootimage/list",
        "/v1/bootimage/find/{name}",
        "/v1/users",
        "/v1/tokens",
        "/v1/openapi.json",
    ] {
        assert!(paths.contains_key(p), "{p} not in the document");
    }
    // Routes behind a token say so (401/403); sign-in does not need one.
    assert!(paths["/v1/nodes"]["get"]["responses"].get("401").is_some());
    assert!(paths["/v1/auth/signin"]["post"]["responses"]
        .get("401")
        .is_some());
    assert_eq!(paths["/v1/auth/signin"]["post"]["security"], json!([{}]));
}

/// An entry is an object: serde would read a host from an array of its fields
/// (`[[null, null]]` was a host named by the path), found by schemathesis.
#[tokio::test]
async fn entries_that_are_not_objects_are_refused() {
    let f = Fixture::new();
    for (method, uri, body) in [
        ("PUT", "/v1/hosts/cn0", "[[null, null]]"),
        ("POST", "/v1/hosts", "[[\"0\", \"uid\", \"cn0\"]]"),
        ("POST", "/v1/nodes", r#"{"node_list": [7]}"#),
        ("POST", "/v1/images", r#"{"boot_images": ["img"]}"#),
    ] {
        let (s, v) = g(&f, method, uri, Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {uri} {body}: {v}");
        let text = v.to_string();
        assert!(text.contains("expected a JSON object"), "{text}");
    }
    assert!(f.state.shared.inventory().hosts().is_empty());
}
