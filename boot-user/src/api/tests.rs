//! API tests through the router (`tower::ServiceExt::oneshot`), with a real store.
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::config::Config;
use crate::events::EventLog;
use crate::inventory::{Inventory, Store};

pub(super) struct Fixture {
    pub(super) files: tempfile::TempDir,
    pub(super) state: ApiState,
}

/// A server state (no store) whose `api.token` is `token`.
fn token_state(token: &str) -> ApiState {
    let mut cfg = Config::default();
    cfg.api.token = Some(token.into());
    ApiState::new(
        Shared::new(cfg, Inventory::default(), EventLog::default()),
        None,
    )
}

impl Fixture {
    /// An empty server state with its store in a temp dir, beside a kernel and an initrd.
    pub(super) fn new() -> Fixture {
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("vmlinuz"), b"k").unwrap();
        std::fs::write(files.path().join("initrd"), b"i").unwrap();
        let store = Arc::new(Store::open(&files.path().join("state")).unwrap());
        let mut cfg = Config::default();
        cfg.provision.image_roots = vec![files.path().to_path_buf()];
        let shared = Shared::new(cfg, Inventory::default(), EventLog::default());
        Fixture {
            state: ApiState::new(shared, Some(store)),
            files,
        }
    }

    fn image(&self, name: &str) -> Value {
        json!({"name": name, "kernel": self.files.path().join("vmlinuz"),
               "initrd": [self.files.path().join("initrd")], "cmdline": "console=ttyS0"})
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        call(router(self.state.clone()), method, uri, body, None).await
    }
}

fn host(name: &str, n: u8) -> Value {
    json!({"name": name, "provision": true, "boot_image": "img",
           "interfaces": [{"mac": format!("aa:bb:cc:00:00:{n:02x}"), "ip": format!("10.0.0.{n}/24")}]})
}

async fn call(
    app: Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body
        .map(|b| Body::from(b.to_string()))
        .unwrap_or_else(Body::empty);
    let resp = app.oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, v)
}

/// A host whose boot MAC is the one of host number `mac_of`.
fn host_with_mac(name: &str, n: u8, mac_of: u8) -> Value {
    let mut h = host(name, n);
    h["interfaces"][0]["mac"] = json!(format!("aa:bb:cc:00:00:{mac_of:02x}"));
    h
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn hosts_and_images_crud() {
    let f = Fixture::new();
    let (s, v) = f.call("POST", "/v1/images", Some(f.image("img"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let body = json!([host("cn10", 10), host("cn2", 2), host("cn1", 1)]);
    let (s, v) = f.call("POST", "/v1/hosts", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["saved"], json!(["host cn10", "host cn2", "host cn1"]));

    // The running inventory sees it at once.
    let inv = f.state.shared.inventory();
    assert!(inv
        .lookup_mac("aa:bb:cc:00:00:02".parse().unwrap())
        .is_some());

    let (s, v) = f.call("GET", "/v1/hosts", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&v), ["cn1", "cn2", "cn10"], "natural order");
    let (_, v) = f.call("GET", "/v1/hosts?nodeset=cn%5B1-2%5D", None).await;
    assert_eq!(names(&v), ["cn1", "cn2"]);
    let (s, v) = f.call("GET", "/v1/hosts/cn2", None).await;
    assert_eq!(
        (s, v["interfaces"][0]["ip"].as_str()),
        (StatusCode::OK, Some("10.0.0.2/24"))
    );
    let (s, v) = f.call("GET", "/v1/hosts/cn9", None).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no host cn9"))
    );

    // PUT: upsert one, name taken from the path.
    let mut h = host("", 2);
    h["tags"] = json!(["gpu"]);
    let (s, v) = f.call("PUT", "/v1/hosts/cn2", Some(h)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        f.state.shared.inventory().host("cn2").unwrap().tags,
        ["gpu"]
    );
    let (s, v) = f.call("PUT", "/v1/hosts/cn3", Some(host("cn4", 4))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("differs"), "{v}");

    // Delete one, then by node set.
    let (s, _) = f.call("DELETE", "/v1/hosts/cn10", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = f.call("DELETE", "/v1/hosts/cn10", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = f
        .call("DELETE", "/v1/hosts?nodeset=cn%5B1-5%5D", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["nodeset"].as_str(), v["missing"].as_str()),
        (Some("cn[1-2]"), Some("cn[3-5]"))
    );
    assert!(f.state.shared.inventory().hosts().is_empty());
    let (s, _) = f.call("DELETE", "/v1/hosts", None).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "no delete-everything without a node set"
    );

    // Images.
    let (s, v) = f.call("GET", "/v1/images/img", None).await;
    assert_eq!(
        (s, v["cmdline"].as_str()),
        (StatusCode::OK, Some("console=ttyS0"))
    );
    let (_, v) = f.call("GET", "/v1/images", None).await;
    assert_eq!(names(&v), ["img"]);
    let (s, _) = f.call("DELETE", "/v1/images/img", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(f.state.shared.inventory().images().is_empty());
    // Everything reached the store.
    assert_eq!(
        f.state.store.as_ref().unwrap().load().unwrap(),
        (vec![], vec![])
    );
}

#[tokio::test]
async fn invalid_changes_are_rejected_and_the_old_inventory_kept() {
    let f = Fixture::new();
    f.call("POST", "/v1/images", Some(f.image("img"))).await;
    let (s, _) = f
        .call("POST", "/v1/hosts", Some(json!([host("cn1", 1)])))
        .await;
    assert_eq!(s, StatusCode::OK);
    let before = f.state.shared.inventory();
    let gen = *f.state.shared.subscribe().borrow();

    // Two problems at once: a MAC taken by cn1, an unknown image.
    let mut bad = host_with_mac("cn2", 2, 1);
    bad["boot_image"] = json!("nope");
    let (s, v) = f.call("POST", "/v1/hosts", Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid inventory: 2 problems");
    assert_eq!(
        v["errors"],
        json!([
            "host cn2: MAC aa:bb:cc:00:00:01 is also on host cn1",
            "host cn2: unknown boot_image \"nope\""
        ])
    );
    // Unreadable entries are named too.
    let (s, v) = f
        .call(
            "POST",
            "/v1/hosts",
            Some(json!({"name": "cn3", "interfaces": [{"mac": "xx"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("host cn3: invalid MAC address \"xx\""),
        "{v}"
    );
    let (s, v) = f.call("POST", "/v1/hosts", Some(json!("hello"))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Deleting an image a provisioned host uses is invalid.
    let (s, v) = f.call("DELETE", "/v1/images/img", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["errors"], json!(["host cn1: unknown boot_image \"img\""]));
    // A relative kernel path is refused (the CLI sends absolute ones).
    let mut im = f.image("img2");
    im["kernel"] = json!("vmlinuz");
    let (s, _) = f.call("POST", "/v1/images", Some(im)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Image files outside the image roots are refused, as written or through a link.
    let roots = f.files.path().display().to_string();
    std::os::unix::fs::symlink("/etc/shadow", f.files.path().join("shadow-link")).unwrap();
    for (kernel, reason) in [
        (
            "/etc/shadow".to_string(),
            "is not in an image root".to_string(),
        ),
        (
            f.files.path().join("shadow-link").display().to_string(),
            "resolves to /etc/shadow, outside the image roots".to_string(),
        ),
    ] {
        let mut im = f.image("evil");
        im["kernel"] = json!(kernel);
        let (s, v) = f.call("POST", "/v1/images", Some(im)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(
            v["errors"],
            json!([format!(
                "image evil: kernel {kernel} {reason} (image roots: {roots}; see provision.image_roots)"
            )])
        );
    }

    let after = f.state.shared.inventory();
    assert!(
        Arc::ptr_eq(&before, &after),
        "the running inventory was not replaced"
    );
    assert_eq!(*f.state.shared.subscribe().borrow(), gen);
    assert_eq!(f.state.store.as_ref().unwrap().load().unwrap().0.len(), 1);
}

#[tokio::test]
async fn provision_unprovision_and_events() {
    let f = Fixture::new();
    f.call("POST", "/v1/images", Some(f.image("img"))).await;
    let body = json!({"hosts": [host("cn1", 1), host("cn2", 2), host("cn3", 3)]});
    let (s, v) = f.call("POST", "/v1/hosts", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, v) = f
        .call("POST", "/v1/hosts/unprovision?nodeset=cn%5B1-2%5D", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["nodeset"], "cn[1-2]");
    let inv = f.state.shared.inventory();
    assert!(!inv.host("cn1").unwrap().provision && inv.host("cn3").unwrap().provision);
    // Already unprovisioned: nothing changes, and that is not an error.
    let (s, v) = f
        .call("POST", "/v1/hosts/unprovision?nodeset=cn1", None)
        .await;
    assert_eq!((s, v["changed"].clone()), (StatusCode::OK, json!([])));
    let (s, v) = f
        .call("POST", "/v1/hosts/provision?nodeset=cn%5B1-9%5D", None)
        .await;
    assert_eq!(
        (s, v["nodeset"].as_str(), v["missing"].as_str()),
        (StatusCode::OK, Some("cn[1-2]"), Some("cn[4-9]"))
    );
    let (s, v) = f
        .call("POST", "/v1/hosts/provision?nodeset=gpu1", None)
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no host matches gpu1"))
    );
    let (s, v) = f
        .call("POST", "/v1/hosts/provision?nodeset=cn%5B", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("is not closed"),
        "{v}"
    );

    let (s, v) = f.call("GET", "/v1/hosts/cn1/events", None).await;
    assert_eq!(s, StatusCode::OK);
    let kinds: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["unprovision", "provision"]);
    f.state
        .shared
        .events
        .record("cn3", crate::events::EventKind::DhcpAck, "10.0.0.3");
    let (_, v) = f.call("GET", "/v1/events?nodeset=cn%5B1-3%5D", None).await;
    assert_eq!(v.as_array().unwrap().len(), 5);
    assert_eq!(v.as_array().unwrap().last().unwrap()["host"], "cn3");
}

/// Many one-host changes at once (a storm's `complete`s): each caller is answered once
/// its change is in the store, and the changes share store transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_are_each_durable_when_answered_and_share_commits() {
    let f = Fixture::new();
    f.call("POST", "/v1/images", Some(f.image("img"))).await;
    let hosts: Vec<Value> = (1..=120).map(|n| host(&format!("cn{n}"), n)).collect();
    let (s, v) = f
        .call("POST", "/v1/hosts", Some(json!({ "hosts": hosts })))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let tasks: Vec<_> = (1..=120)
        .map(|n| {
            let st = f.state.clone();
            tokio::spawn(async move {
                let name = format!("cn{n}");
                st.apply(|inv| {
                    let mut h = inv.host(&name).unwrap().clone();
                    h.provision = false;
                    let change = Change {
                        put_hosts: vec![h],
                        ..Default::default()
                    };
                    Ok((change, ()))
                })
                .await
                .map(|()| st.store.as_ref().unwrap().load().unwrap().0)
            })
        })
        .collect();
    for (n, t) in (1..=120).zip(tasks) {
        let stored = t.await.unwrap().unwrap();
        let h = stored.iter().find(|h| h.name == format!("cn{n}")).unwrap();
        assert!(!h.provision, "cn{n} answered before its change was stored");
    }
    let inv = f.state.shared.inventory();
    assert!(inv.hosts().iter().all(|h| !h.provision));
    let (_, v) = f.call("GET", "/v1/status", None).await;
    let (groups, changes) = (
        v["inventory_commits"]["groups"].as_u64().unwrap(),
        v["inventory_commits"]["changes"].as_u64().unwrap(),
    );
    // The image, the import, and the 120 changes in at most 120 groups.
    assert_eq!(changes, 122, "{v}");
    assert!((3..=122).contains(&groups), "{v}");
}

#[tokio::test]
async fn status_discovered_hooks_and_token() {
    let f = Fixture::new();
    // No DHCP service here: nothing discovered (an answer, not a server error).
    let (s, v) = f.call("GET", "/v1/discovered", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    let (s, v) = f.call("GET", "/v1/status", None).await;
    assert_eq!(
        (s, v["hosts"].as_u64(), v["counters"].clone()),
        (StatusCode::OK, Some(0), Value::Null)
    );

    let st = f
        .state
        .clone()
        .with_discovered(Arc::new(|| {
            vec![json!({"mac": "de:ad:be:ef:00:01", "count": 3})]
        }))
        .with_counters(Arc::new(|| json!({"dhcp_acks": 7})));
    let (_, v) = call(router(st.clone()), "GET", "/v1/discovered", None, None).await;
    assert_eq!(v[0]["mac"], "de:ad:be:ef:00:01");
    let (_, v) = call(router(st.clone()), "GET", "/v1/status", None, None).await;
    assert_eq!(v["counters"]["dhcp_acks"], 7);

    let tok = token_state("s3cret");
    let app = || router_authenticated(tok.clone());
    let (s, _) = call(app(), "GET", "/v1/status", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(app(), "GET", "/v1/status", None, Some("s3cre")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(app(), "GET", "/v1/status", None, Some("s3cret")).await;
    assert_eq!(s, StatusCode::OK);
    // The scheme is case-insensitive; the token is not, and must be there.
    for (value, want) in [
        ("bearer s3cret", StatusCode::OK),
        ("BEARER  s3cret", StatusCode::OK),
        ("Bearer S3CRET", StatusCode::UNAUTHORIZED),
        ("Basic s3cret", StatusCode::UNAUTHORIZED),
        ("Bearer ", StatusCode::UNAUTHORIZED),
        ("Bearers3cret", StatusCode::UNAUTHORIZED),
    ] {
        let req = Request::builder()
            .uri("/v1/status")
            .header("authorization", value)
            .body(Body::empty())
            .unwrap();
        let resp = app().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), want, "{value:?}");
    }
    let (s, v) = f.call("GET", "/v2/nothing", None).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no such API route"))
    );
}

/// The client against a real unix socket server, and the stale-socket handling.
#[tokio::test]
async fn client_over_unix_socket() {
    let f = Fixture::new();
    let sock = f.files.path().join("run/api.socket");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let (sock, st) = (sock.clone(), f.state.clone());
        tokio::spawn(
            async move { serve_unix(&sock, st, async move { rx.await.unwrap_or(()) }).await },
        )
    };
    let c = client::Client::new(client::Endpoint::Unix(sock.clone()));
    let mut tries = 0;
    while c.get("/v1/status").await.is_err() {
        tries += 1;
        assert!(tries < 100, "server did not start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A second server on the same socket is refused.
    let err = bind_unix(&sock).await.unwrap_err();
    assert!(
        err.to_string().contains("another server is listening"),
        "{err}"
    );

    c.post("/v1/images", Some(f.image("img"))).await.unwrap();
    c.post("/v1/hosts", Some(host("cn1", 1))).await.unwrap();
    let hosts = c
        .get(&format!("/v1/hosts?nodeset={}", client::encode("cn[1-3]")))
        .await
        .unwrap();
    assert_eq!(names(&hosts), ["cn1"]);
    let err = c
        .post("/v1/hosts", Some(host_with_mac("cn2", 2, 1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, client::ClientError::Api { status, .. } if *status == StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        err.to_string(),
        "invalid inventory: host cn2: MAC aa:bb:cc:00:00:01 is also on host cn1"
    );

    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!sock.exists(), "socket removed at shutdown");
    let err = c.get("/v1/status").await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot reach the xboot API at {}", sock.display())),
        "{err}"
    );
    // A stale socket file (no server) is replaced.
    std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(bind_unix(&sock).await.unwrap());
}

/// The TCP listener wants the bearer token; the client sends it.
#[tokio::test]
async fn client_over_tcp_with_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_tcp(listener, token_state("tok"), async move {
        rx.await.unwrap_or(())
    }));
    let with = |token: Option<&str>| {
        client::Client::new(client::Endpoint::Tcp {
            addr: addr.clone(),
            token: token.map(str::to_string),
        })
    };
    let status = with(Some("tok")).get("/v1/status").await.unwrap();
    assert_eq!(status["hosts"], 0);
    let err = with(None).get("/v1/status").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing bearer token (Authorization: Bearer TOKEN)"
    );
    let err = with(Some("tik")).get("/v1/status").await.unwrap_err();
    assert!(
        matches!(err, client::ClientError::Api { status, .. } if status == StatusCode::UNAUTHORIZED)
    );
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Node sets are matched against the hosts without being expanded: a range of two
/// billion names answers at once, step 0 is a 400, and names without digits are selected.
#[tokio::test]
async fn node_sets_are_matched_not_expanded() {
    let f = Fixture::new();
    f.call("POST", "/v1/images", Some(f.image("img"))).await;
    let body = json!([host("cn1", 1), host("cn2", 2), host("login", 3)]);
    let (s, v) = f.call("POST", "/v1/hosts", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let started = std::time::Instant::now();
    let (s, v) = f
        .call("GET", "/v1/hosts?nodeset=cn%5B1-2147483647%5D", None)
        .await;
    assert_eq!(
        (s, names(&v)),
        (StatusCode::OK, vec!["cn1".into(), "cn2".into()])
    );
    let (s, v) = f
        .call(
            "POST",
            "/v1/hosts/unprovision?nodeset=cn%5B1-1000000000%5D",
            None,
        )
        .await;
    assert_eq!(
        (s, v["missing"].as_str()),
        (StatusCode::OK, Some("cn[3-1000000000]"))
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (s, v) = f
        .call("GET", "/v1/hosts?nodeset=cn%5B1-10/0%5D", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("step 0"), "{v}");
    let (s, v) = f
        .call("DELETE", "/v1/hosts?nodeset=login,cn1,node-a", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"], json!(["cn1", "login"]));
    assert_eq!(v["missing"], "node-a");
    assert_eq!(names(&f.call("GET", "/v1/hosts", None).await.1), ["cn2"]);
}

/// Tags: added and removed on a node set, hosts selected by them (alone, with a node set,
/// with `all`), and every verb that takes a node set takes tags too.
#[tokio::test]
async fn tag_untag_and_select_by_tags() {
    let f = Fixture::new();
    let hosts: Vec<Value> = (1..=4).map(|n| host(&format!("cn{n}"), n)).collect();
    let (s, _) = f
        .call(
            "POST",
            "/v1/hosts",
            Some(json!({"hosts": hosts, "images": [f.image("img")]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = f
        .call(
            "POST",
            "/v1/hosts/tag?nodeset=cn[1-2]",
            Some(json!({"tags": ["gpu", "rack:a1"]})),
        )
        .await;
    assert_eq!(
        (s, &v["nodeset"]),
        (StatusCode::OK, &json!("cn[1-2]")),
        "{v}"
    );
    // Tagging again changes nothing.
    let (_, v) = f
        .call(
            "POST",
            "/v1/hosts/tag?nodeset=cn1",
            Some(json!({"tags": ["gpu"]})),
        )
        .await;
    assert_eq!(v["changed"], json!([]));
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, v) = f.call("GET", "/v1/hosts?tags=gpu", None).await;
    assert_eq!(names(&v), ["cn1", "cn2"]);
    let (_, v) = f
        .call("GET", "/v1/hosts?nodeset=cn[2-4]&tags=gpu,none", None)
        .await;
    assert_eq!(names(&v), ["cn2"]);
    let (_, v) = f.call("GET", "/v1/hosts?nodeset=all", None).await;
    assert_eq!(names(&v).len(), 4);
    let (_, v) = f.call("GET", "/v1/hosts/cn1", None).await;
    assert_eq!(v["tags"], json!(["gpu", "rack:a1"]));
    // Unprovision by tag.
    let (s, v) = f
        .call("POST", "/v1/hosts/unprovision?tags=rack:a1", None)
        .await;
    assert_eq!(
        (s, &v["nodeset"]),
        (StatusCode::OK, &json!("cn[1-2]")),
        "{v}"
    );
    // Untag on all.
    let (_, v) = f
        .call(
            "POST",
            "/v1/hosts/untag?nodeset=all",
            Some(json!({"tags": ["gpu"]})),
        )
        .await;
    assert_eq!(v["nodeset"], json!("cn[1-2]"));
    let (_, v) = f.call("GET", "/v1/hosts/cn2", None).await;
    assert_eq!(v["tags"], json!(["rack:a1"]));
    // No host with the tag: 404 for a change, an empty list for a read.
    let (s, _) = f.call("POST", "/v1/hosts/provision?tags=gpu", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = f.call("GET", "/v1/hosts?tags=gpu", None).await;
    assert_eq!(v, json!([]));
    // Bad requests say why and change nothing.
    for (uri, body, want) in [
        (
            "/v1/hosts/tag?nodeset=cn1",
            json!({"tags": []}),
            "one or more",
        ),
        (
            "/v1/hosts/tag?nodeset=cn1",
            json!({"tags": ["a,b"]}),
            "comma",
        ),
        (
            "/v1/hosts/tag?nodeset=cn1",
            json!({"tag": ["a"]}),
            "request body",
        ),
        ("/v1/hosts/tag", json!({"tags": ["a"]}), "needs ?nodeset="),
        (
            "/v1/hosts/tag?nodeset=cn1&tags=a,,b",
            json!({"tags": ["a"]}),
            "empty tag",
        ),
    ] {
        let (s, v) = f.call("POST", uri, Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{uri}: {v}");
    }
    let (_, v) = f.call("GET", "/v1/hosts/cn1", None).await;
    assert_eq!(v["tags"], json!(["rack:a1"]));
    // Delete by tag.
    let (s, v) = f.call("DELETE", "/v1/hosts?tags=rack:a1", None).await;
    assert_eq!(
        (s, &v["nodeset"]),
        (StatusCode::OK, &json!("cn[1-2]")),
        "{v}"
    );
    let (_, v) = f.call("GET", "/v1/hosts", None).await;
    assert_eq!(names(&v), ["cn3", "cn4"]);
}

/// `db dump` then `db restore` gives back the same inventory; a restore replaces the
/// whole inventory (entries not in the dump go), and an invalid one changes nothing,
/// neither in memory nor in the store.
#[tokio::test]
async fn db_dump_restore_round_trip_and_invalid_restore_loses_nothing() {
    let f = Fixture::new();
    let mut h1 = host("cn1", 1);
    h1["id"] = json!(5);
    h1["uid"] = json!("2aB3cD4eF5gH6iJ7kL8mN9oP0qR");
    h1["tags"] = json!(["gpu"]);
    let hosts = json!([h1, host("cn2", 2)]);
    f.call(
        "POST",
        "/v1/hosts",
        Some(json!({"hosts": hosts, "images": [f.image("img")]})),
    )
    .await;
    let (s, dump) = f.call("GET", "/v1/db/dump", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(dump["Users"], json!([]));
    assert_eq!(dump["Hosts"][0]["id"], json!(5));
    assert_eq!(dump["Hosts"].as_array().unwrap().len(), 2);
    // Change the inventory, then restore the dump: the original comes back.
    f.call("POST", "/v1/hosts", Some(host("cn3", 3))).await;
    f.call("DELETE", "/v1/hosts/cn1", None).await;
    let (s, v) = f.call("POST", "/v1/db/restore", Some(dump.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["restored"], json!({"hosts": 2, "images": 1}));
    let (_, again) = f.call("GET", "/v1/db/dump", None).await;
    assert_eq!(again, dump);
    // The store holds it too.
    let (sh, si) = f.state.store.as_ref().unwrap().load().unwrap();
    assert_eq!(sh.len(), 2);
    assert_eq!(si.len(), 1);
    // An invalid dump (a host naming a missing image; a duplicate MAC) is refused whole.
    let mut bad = dump.clone();
    bad["Hosts"][1]["boot_image"] = json!("nope");
    bad["Hosts"]
        .as_array_mut()
        .unwrap()
        .push(host_with_mac("cn9", 9, 1));
    let (s, v) = f.call("POST", "/v1/db/restore", Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["errors"].as_array().unwrap().len() >= 2, "{v}");
    let (_, after) = f.call("GET", "/v1/db/dump", None).await;
    assert_eq!(after, dump);
    let (sh, _) = f.state.store.as_ref().unwrap().load().unwrap();
    assert_eq!(sh.len(), 2);
    // Users are skipped with a warning.
    let mut with_users = dump.clone();
    with_users["Users"] = json!([{"id": 1, "username": "admin", "hash": "x", "role": "admin"}]);
    let (s, v) = f.call("POST", "/v1/db/restore", Some(with_users)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("1 user skipped (admin)"),
        "{v}"
    );
    // Not JSON, or not an inventory: 400, nothing changed.
    let (s, _) = f.call("POST", "/v1/db/restore", Some(json!(42))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, after) = f.call("GET", "/v1/db/dump", None).await;
    assert_eq!(after, dump);
}
