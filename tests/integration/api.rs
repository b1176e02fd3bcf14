//! The API's TCP listener end to end, in a private network namespace (loopback only):
//! refused at start without an account, then accounts and tokens made by the CLI,
//! Grendel-shaped requests sent by curl with scoped tokens, and schemathesis (PyPI)
//! against the served OpenAPI document.
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;

const XBOOT: &str = env!("CARGO_BIN_EXE_xboot");
const API: &str = "127.0.0.1:8787";

fn fixture(name: &str, dir: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/api/testdata")
            .join(name),
    )
    .unwrap();
    text.replace("@DIR@", &dir.join("boot").display().to_string())
}

/// A site: config with `api.listen` (and `extra` in `[api]`), kernel files, a state dir.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(api_extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("boot")).unwrap();
        std::fs::write(p.join("boot/vmlinuz"), b"kernel").unwrap();
        std::fs::write(p.join("boot/initrd"), b"initrd").unwrap();
        std::fs::write(
            p.join("xboot.toml"),
            format!(
                "state_dir = \"state\"\n[dhcp]\nmode = \"off\"\n\
                 [api]\nsocket_path = \"api.socket\"\nlisten = \"{API}\"\n{api_extra}\n\
                 [tftp]\nlisten = \"127.0.0.1:0\"\n[provision]\nlisten = \"127.0.0.1:0\"\n\
                 image_roots = [\"boot\"]\n"
            ),
        )
        .unwrap();
        Site { dir }
    }

    fn config(&self) -> String {
        self.dir.path().join("xboot.toml").display().to_string()
    }

    /// `xboot ARGS --config CONFIG` (stdin from `input`), on this side: no network.
    fn xboot(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = testlab::peers::own(XBOOT)
            .args(args)
            .args(["--config", &self.config()])
            .env_remove("XBOOT_CONFIG")
            .env_remove("XBOOT_SOCKET")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts `xboot serve` in `ns` and waits for its unix socket to answer.
    fn serve(&self, ns: &Netns) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        ns.spawn(
            &[XBOOT, "serve", "--config", &self.config()],
            Stdio::null(),
            Stdio::from(log),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.xboot(&["status"], "").status.success() {
            assert!(Instant::now() < deadline, "no API: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// curl in the namespace: (status, body as JSON).
fn curl(
    ns: &Netns,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let url = format!("http://{API}{path}");
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut argv = vec!["curl", "-sS", "-X", method, "-w", "\n%{http_code}", &url];
    if let Some(a) = &auth {
        argv.extend(["-H", a]);
    }
    if let Some(b) = body {
        argv.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = ns.run(&argv);
    let (stdout, _) = text(&out);
    let (json, code) = stdout.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn tcp_api_needs_an_account_and_tokens_are_scoped() {
    if crate::netns::need_root() {
        return;
    }
    let ns = Netns::new("api");
    let site = Site::new("");

    // No account, no token: refused at start, saying how to make one.
    let out = ns
        .cmd(&[XBOOT, "serve", "--config", &site.config()])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no API account or token exists"),
        "{stderr}"
    );
    assert!(
        stderr.contains("xboot user add NAME --role admin"),
        "{stderr}"
    );
    assert!(stderr.contains("xboot token create"), "{stderr}");

    let out = site.xboot(&["check-config"], "");
    assert_eq!(out.status.code(), Some(1), "check-config says the same");
    assert!(text(&out).1.contains("no API account or token exists"));

    // Made with the server stopped (on the store).
    let out = site.xboot(
        &["token", "create", "--role", "read-only", "--name", "ci"],
        "",
    );
    let (viewer, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let viewer = viewer.trim().to_string();
    assert!(viewer.starts_with("xbt_"), "{viewer}");
    let out = site.xboot(
        &["user", "add", "ann", "--role", "operator"],
        "correct horse\n",
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let out = site.xboot(&["user", "add", "bob", "--role", "admin"], "short\n");
    assert!(!out.status.success(), "a short password is refused");

    let out = site.xboot(&["check-config"], "");
    assert!(out.status.success(), "{:?}", text(&out));
    site.serve(&ns);
    let dir = site.dir.path();
    let images = fixture("grendel-v02-image-add.json", dir);
    let nodes = fixture("grendel-v02-node-add.json", dir);

    // Read-only reads, and changes nothing.
    let (s, v) = curl(&ns, "GET", "/v1/nodes", Some(&viewer), None);
    assert_eq!((s, v), (200, serde_json::json!([])));
    for (method, path, body) in [
        ("POST", "/v1/images", Some(images.as_str())),
        ("POST", "/v1/nodes", Some(nodes.as_str())),
        (
            "PATCH",
            "/v1/nodes/provision?nodeset=all",
            Some(r#"{"provision":true}"#),
        ),
        (
            "POST",
            "/v1/db/restore",
            Some(r#"{"Hosts":[],"Images":[]}"#),
        ),
    ] {
        let (s, v) = curl(&ns, method, path, Some(&viewer), body);
        assert_eq!(s, 403, "{method} {path}: {v}");
    }
    let (_, v) = curl(&ns, "GET", "/v1/images", Some(&viewer), None);
    assert_eq!(v, serde_json::json!([]));
    let (s, _) = curl(&ns, "GET", "/v1/nodes", None, None);
    assert_eq!(s, 401);
    let (s, v) = curl(&ns, "GET", "/v1/nodes", Some("xbt_not-a-token"), None);
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("unknown or revoked token"))
    );

    // A wrong password and an unknown user get the same answer.
    let signin = |u: &str, p: &str| {
        let body = serde_json::json!({"username": u, "password": p}).to_string();
        curl(&ns, "POST", "/v1/auth/signin", None, Some(&body))
    };
    let wrong = signin("ann", "wrong horse");
    let unknown = signin("nobody", "correct horse");
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong, unknown);
    let (s, v) = signin("ann", "correct horse");
    assert_eq!((s, v["role"].as_str()), (200, Some("operator")), "{v}");
    let ann = v["token"].as_str().unwrap().to_string();

    // The operator's session changes the inventory, with Grendel's answers.
    let (s, v) = curl(&ns, "POST", "/v1/images", Some(&ann), Some(&images));
    assert_eq!((s, v["changed"].as_u64()), (200, Some(2)), "{v}");
    let (s, v) = curl(&ns, "POST", "/v1/nodes", Some(&ann), Some(&nodes));
    assert_eq!(
        (s, v["detail"].as_str()),
        (200, Some("successfully added node(s)")),
        "{v}"
    );
    let (_, v) = curl(&ns, "GET", "/v1/nodes/find?tags=e01", Some(&viewer), None);
    assert_eq!(v[0]["name"], "cpn-e01-01", "{v}");
    let (s, _) = curl(
        &ns,
        "POST",
        "/v1/tokens",
        Some(&ann),
        Some(r#"{"role":"admin"}"#),
    );
    assert_eq!(s, 403, "an operator makes no tokens");

    // With the server running, the CLI goes through its socket.
    let out = site.xboot(
        &["token", "create", "--role", "admin", "--expire", "1h"],
        "",
    );
    let (admin, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("role admin, expires"), "{stderr}");
    let (s, v) = curl(&ns, "GET", "/v1/users", Some(admin.trim()), None);
    assert_eq!((s, v[0]["username"].as_str()), (200, Some("ann")), "{v}");
    let out = site.xboot(&["token", "list"], "");
    let (list, _) = text(&out);
    assert_eq!(
        list.lines().count(),
        3,
        "ci, ann's session, the admin's: {list}"
    );
    let id = list
        .lines()
        .find(|l| l.contains("\tci\t"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap();
    assert!(site.xboot(&["token", "revoke", id], "").status.success());
    let (s, _) = curl(&ns, "GET", "/v1/nodes", Some(&viewer), None);
    assert_eq!(s, 401, "revoked");
}

/// schemathesis (a real OpenAPI fuzzer, from PyPI) against the served document: every
/// route, generated and mutated requests, stateful sequences. The run fails on any
/// server error and on any answer that breaks the document (status code, content type,
/// headers, body schema), and on accepted requests the document calls invalid. Not
/// checked: `positive_data_acceptance` (a schema-valid request must succeed): the
/// inventory is validated whole (unique MACs, images that exist, node sets naming hosts),
/// which no schema says, so valid-looking requests are refused with 400 by design.
#[test]
fn schemathesis_finds_no_server_error_or_schema_violation() {
    if crate::netns::need_root() {
        return;
    }
    let ns = Netns::new("apist");
    let site = Site::new("token = \"schemathesis-admin\"");
    site.serve(&ns);
    let url = format!("http://{API}/v1/openapi.json");
    let out = ns
        .cmd(&[
            "schemathesis",
            "run",
            &url,
            "-H",
            "Authorization: Bearer schemathesis-admin",
            "--max-examples",
            "20",
            "--seed",
            "7",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    let summary = stdout
        .find("SUMMARY")
        .map_or(stdout.as_str(), |i| &stdout[i..]);
    println!("{summary}");
    assert!(
        out.status.success(),
        "schemathesis reported failures:\n{stdout}\n{stderr}\nserver log:\n{}",
        site.log()
    );
}
