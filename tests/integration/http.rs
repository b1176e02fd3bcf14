//! HTTP boot service on loopback against curl (and reqwest for the concurrent test):
//! the iPXE script, kernel Range/HEAD, refused tokens, a missing kernel, /repo, the
//! postscript and complete, UEFI firmware, 200 concurrent downloads, and the connection
//! limits against silent, slowloris and single-address floods.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use xboot::config::Config;
use xboot::events::{EventKind, EventLog};
use xboot::http::{HttpService, TokenKey, UrlSigner};
use xboot::inventory::{Host, Image, Interface, Inventory, Mac};
use xboot::state::Shared;

const MAC: &str = "aa:bb:cc:11:22:33";
const CMDLINE: &str = "console=ttyS0 BOOTIF=01-{{ $.nic.MAC | toString | replace \":\" \"-\" }} grendel.hostname={{ $.host.Name }} root=live:{{ $.endpoints.LiveImageURL }}";

/// Deterministic bytes, different per `seed`.
fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// `service` on 127.0.0.1 (a free port) until the returned sender is dropped: its base
/// URL and that sender.
pub async fn serve_on_loopback(service: HttpService) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(service.serve(listener, async {
        // Dropping the sender ends the wait too.
        let _ = stopped.await;
    }));
    (base, stop)
}

struct Server {
    /// First, so the service stops before the rest is dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    signer: UrlSigner,
    base: String,
    completed: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn url(&self, host: &str, file: &str) -> String {
        let mac: Mac = MAC.parse().unwrap();
        format!("{}/boot/{}/{file}", self.base, self.signer.token(host, mac))
    }

    fn events(&self, host: &str, kind: EventKind) -> Vec<String> {
        self.shared
            .events
            .for_host(host)
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.detail)
            .collect()
    }
}

fn host(name: &str, image: &str, provision: bool) -> Host {
    Host {
        name: name.into(),
        provision,
        boot_image: image.into(),
        interfaces: vec![Interface {
            mac: Some(MAC.parse().unwrap()),
            ip: Some("10.0.0.51/24".into()),
            ..Interface::default()
        }],
        ..Host::default()
    }
}

/// Starts the service on 127.0.0.1:0 with: cn1 (image img: kernel 1 MiB, two initrds,
/// a liveimg, a postscript template), cn2 (image broken: kernel file missing), cn3 (not
/// set to provision), cn4 (image escape: files outside the image root when the test
/// narrows it to `images/`), cn5 (image img; its complete's commit waits for cn1's to
/// run beside it), cn6 (image img). Hosts share the MAC: tokens name the host.
async fn start() -> Server {
    start_with(|_| ()).await
}

/// [`start`], with `edit` applied to the config first.
async fn start_with(edit: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("vmlinuz"), bytes(1 << 20, 1)).unwrap();
    std::fs::write(d.join("initrd0.img"), bytes(300_000, 2)).unwrap();
    std::fs::write(d.join("initrd1.img"), bytes(1000, 3)).unwrap();
    std::fs::write(d.join("root.squashfs"), bytes(2 << 20, 4)).unwrap();
    std::fs::create_dir_all(d.join("repo/sub")).unwrap();
    std::fs::write(d.join("repo/sub/pkg.bin"), bytes(50_000, 5)).unwrap();
    let s = |p: &str| d.join(p).to_string_lossy().into_owned();
    let img = Image {
        name: "img".into(),
        kernel: s("vmlinuz"),
        initrd: vec![s("initrd0.img"), s("initrd1.img")],
        liveimg: s("root.squashfs"),
        cmdline: CMDLINE.into(),
        provision_templates: [(
            "postscript".to_string(),
            "#!/bin/sh\nhostname {{ $.host.Name }}\ncurl -X POST {{ $.endpoints.CompleteURL }}\n"
                .to_string(),
        )]
        .into(),
        ..Image::default()
    };
    let broken = Image {
        name: "broken".into(),
        kernel: s("missing-vmlinuz"),
        ..Image::default()
    };
    // Images whose files are outside the image root (the temp dir), loaded without
    // validation as if the files had changed since: a link out, and a path elsewhere.
    std::fs::write(d.join("outside.txt"), b"secret").unwrap();
    std::fs::create_dir(d.join("images")).unwrap();
    std::fs::write(d.join("images/vmlinuz"), bytes(1000, 6)).unwrap();
    std::os::unix::fs::symlink(d.join("outside.txt"), d.join("images/link-out")).unwrap();
    let escape = Image {
        name: "escape".into(),
        kernel: s("images/link-out"),
        initrd: vec![s("outside.txt")],
        liveimg: s("images/vmlinuz"),
        ..Image::default()
    };
    let inv = Inventory::from_parts_unchecked(
        vec![
            host("cn1", "img", true),
            host("cn2", "broken", true),
            host("cn3", "img", false),
            host("cn4", "escape", true),
            host("cn5", "img", true),
            host("cn6", "img", true),
        ],
        vec![img, broken, escape],
    );
    let mut cfg = Config::default();
    cfg.provision.image_roots = vec![d.to_path_buf()];
    cfg.provision.repo_dir = d.join("repo");
    cfg.provision.token_ttl = 600;
    edit(&mut cfg);
    let shared = Shared::new(cfg, inv, EventLog::default());
    let key = TokenKey::from_secret("integration");
    let completed = Arc::new(Mutex::new(Vec::new()));
    let seen = completed.clone();
    let inside = Arc::new(Mutex::new(Vec::<String>::new()));
    let service =
        HttpService::new(shared.clone(), key.clone()).on_complete(Arc::new(move |h: String| {
            let (seen, inside) = (seen.clone(), inside.clone());
            Box::pin(async move {
                inside.lock().unwrap().push(h.clone());
                // cn5's commit lasts until cn1's is under way beside it (or fails after
                // 10 s): it succeeds only if completes of two hosts run side by side.
                let t0 = std::time::Instant::now();
                while h == "cn5" && !inside.lock().unwrap().iter().any(|i| i == "cn1") {
                    if t0.elapsed() > Duration::from_secs(10) {
                        inside.lock().unwrap().retain(|i| *i != h);
                        return Err("no other host's complete ran beside cn5's".into());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // A slow commit: the answer must wait for it.
                tokio::time::sleep(Duration::from_millis(200)).await;
                seen.lock().unwrap().push(h.clone());
                inside.lock().unwrap().retain(|i| *i != h);
                Ok(())
            })
        }));
    let (base, stop) = serve_on_loopback(service).await;
    let signer = UrlSigner::new(&base, key, Duration::from_secs(600));
    Server {
        _stop: stop,
        dir,
        shared,
        signer,
        base,
        completed,
    }
}

pub(crate) struct Curl {
    pub(crate) code: u16,
    pub(crate) body: Vec<u8>,
}

/// Runs curl with `args`, returning the status code and the body.
pub(crate) async fn curl(args: &[&str]) -> Curl {
    let out = tokio::process::Command::from(testlab::peers::command("curl"))
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n').expect("status line");
    let code = std::str::from_utf8(&body[nl + 1..])
        .unwrap()
        .trim()
        .parse()
        .expect("status code");
    body.truncate(nl);
    Curl { code, body }
}

fn text(c: &Curl) -> String {
    String::from_utf8_lossy(&c.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_fetches_ipxe_script() {
    let srv = start().await;
    let url = srv.url("cn1", "ipxe");
    let c = curl(&[&url]).await;
    assert_eq!(c.code, 200, "{}", text(&c));
    let script = text(&c);
    let token = url.split('/').nth(4).unwrap();
    let b = format!("{}/boot/{token}", srv.base);
    let want = format!(
        "#!ipxe\n# xboot: host cn1, image img\n\
         kernel --name kernel {b}/kernel initrd=initrd-0 initrd=initrd-1 console=ttyS0 \
         BOOTIF=01-aa-bb-cc-11-22-33 grendel.hostname=cn1 root=live:{b}/liveimg\n\
         initrd --name initrd-0 {b}/initrd-0\ninitrd --name initrd-1 {b}/initrd-1\nboot kernel\n"
    );
    assert_eq!(script, want);
    assert_eq!(srv.events("cn1", EventKind::IpxeScript).len(), 1);

    // The Host header becomes the base URL only if it is a host and port: anything else
    // is refused rather than written into the script.
    let c = curl(&["-H", "Host: boot.lan:8080", &url]).await;
    assert_eq!(c.code, 200, "{}", text(&c));
    assert!(
        text(&c).contains(&format!(" http://boot.lan:8080/boot/{token}/kernel ")),
        "{}",
        text(&c)
    );
    for bad in [
        "Host: x\"; chain http://evil/",
        "Host: user@evil",
        "Host: evil/x",
    ] {
        let c = curl(&["-H", bad, &url]).await;
        assert_eq!(c.code, 400, "{bad}: {}", text(&c));
        assert_eq!(
            text(&c),
            "bad Host header: not a host name or address with an optional port\n"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_kernel_range_head_and_full() {
    let srv = start().await;
    let kernel = std::fs::read(srv.path("vmlinuz")).unwrap();
    let url = srv.url("cn1", "kernel");

    let c = curl(&["-r", "100-199", &url]).await;
    assert_eq!(c.code, 206);
    assert_eq!(c.body, kernel[100..200]);

    let c = curl(&["-I", &url]).await;
    assert_eq!(c.code, 200);
    let head = text(&c).to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-length: {}\r\n", kernel.len())),
        "{head}"
    );
    assert!(head.contains("accept-ranges: bytes"), "{head}");

    // If-Range: the range only if the validator is the file's Last-Modified; a junk or
    // older one gets the whole file.
    let modified = text(&c)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("last-modified")
                .then(|| v.trim().to_string())
        })
        .expect("a Last-Modified header");
    let c = curl(&["-r", "0-9", "-H", &format!("If-Range: {modified}"), &url]).await;
    assert_eq!((c.code, c.body.as_slice()), (206, &kernel[..10]));
    for junk in ["junk", "\"some-etag\"", "Thu, 01 Jan 1970 00:00:00 GMT"] {
        let c = curl(&["-r", "0-9", "-H", &format!("If-Range: {junk}"), &url]).await;
        assert_eq!(
            (c.code, c.body.len()),
            (200, kernel.len()),
            "If-Range: {junk}"
        );
    }

    let c = curl(&[&url]).await;
    assert_eq!((c.code, c.body.len()), (200, kernel.len()));
    assert!(c.body == kernel, "full kernel differs");

    for (file, path) in [
        ("initrd-1", "initrd1.img"),
        ("liveimg", "root.squashfs"),
        ("file/initrd-0", "initrd0.img"),
    ] {
        let c = curl(&[&srv.url("cn1", file)]).await;
        assert_eq!(c.code, 200, "{file}");
        assert!(
            c.body == std::fs::read(srv.path(path)).unwrap(),
            "{file} differs"
        );
    }
    let kernels = srv.events("cn1", EventKind::Kernel);
    assert_eq!(
        kernels.len(),
        6,
        "GETs are recorded, HEAD is not: {kernels:?}"
    );
    assert!(
        kernels[0].ends_with("bytes=100-199 to 127.0.0.1"),
        "{kernels:?}"
    );
    assert!(kernels[1].contains("bytes=0-9"), "{kernels:?}");
    // The ranges not honoured are not recorded as ranges.
    assert!(
        kernels[2..].iter().all(|k| !k.contains("bytes=")),
        "{kernels:?}"
    );
    assert_eq!(srv.events("cn1", EventKind::Initrd).len(), 2);
    assert_eq!(srv.events("cn1", EventKind::LiveImage).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_get_403_with_a_reason() {
    let srv = start().await;
    let mac: Mac = MAC.parse().unwrap();
    let long_ago = xboot::http::token::now_secs() - 3600;
    let expired = srv.signer.token_at("cn1", mac, long_ago);
    let forged = UrlSigner::new(
        &srv.base,
        TokenKey::from_secret("not ours"),
        Duration::from_secs(600),
    )
    .token("cn1", mac);
    let ghost = srv.signer.token("cn9", mac);
    let other_mac = srv
        .signer
        .token("cn1", "02:00:00:00:00:01".parse().unwrap());
    let good = srv.signer.token("cn1", mac);
    let rows = [
        (
            format!("{}/boot/{expired}/kernel", srv.base),
            "token for host cn1 expired",
        ),
        (
            format!("{}/boot/{forged}/kernel", srv.base),
            "which is not in this server's keyring",
        ),
        (
            format!("{}/boot/{}/ipxe", srv.base, &good[..good.len() - 6]),
            "malformed token",
        ),
        (
            format!("{}/boot/not-a-token/ipxe", srv.base),
            "malformed token",
        ),
        (
            format!("{}/boot/{ghost}/ipxe", srv.base),
            "host cn9, which is not in the inventory",
        ),
        (
            format!("{}/boot/{other_mac}/ipxe", srv.base),
            "host cn1 has no boot interface 02:00:00:00:00:01",
        ),
        (srv.url("cn3", "kernel"), "host cn3 is not set to provision"),
    ];
    for (url, reason) in rows {
        let c = curl(&[&url]).await;
        assert_eq!(c.code, 403, "{url}: {}", text(&c));
        assert!(text(&c).contains(reason), "{url}: {}", text(&c));
        assert_eq!(text(&c).lines().count(), 1, "one line: {}", text(&c));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_kernel_file_is_named() {
    let srv = start().await;
    let c = curl(&[&srv.url("cn2", "kernel")]).await;
    assert_eq!(c.code, 404);
    let body = text(&c);
    let missing = srv.path("missing-vmlinuz");
    assert!(
        body.starts_with(&format!(
            "host cn2: image broken: kernel file {}",
            missing.display()
        )),
        "{body}"
    );
    let c = curl(&[&srv.url("cn1", "initrd-7")]).await;
    assert_eq!(c.code, 404);
    assert!(
        text(&c).contains("no boot file \"initrd-7\" (image has 2 initrd)"),
        "{}",
        text(&c)
    );
}

/// Image files are served only from inside `provision.image_roots`: a kernel that is a
/// link out of the root and an initrd elsewhere are refused 403, the body naming neither
/// the path nor the link's target; files inside are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_files_outside_the_roots_are_not_served() {
    let srv = start_with(|c| {
        c.provision.image_roots = vec![c.provision.image_roots[0].join("images")];
    })
    .await;
    for file in ["kernel", "initrd-0", "file/initrd-0"] {
        let c = curl(&[&srv.url("cn4", file)]).await;
        assert_eq!(c.code, 403, "{file}: {}", text(&c));
        let label = file.trim_start_matches("file/");
        assert_eq!(
            text(&c),
            format!("host cn4: image escape: {label} is outside the image roots\n")
        );
    }
    // cn1's kernel is in the temp dir, outside images/ now.
    let c = curl(&[&srv.url("cn1", "kernel")]).await;
    assert_eq!(c.code, 403, "{}", text(&c));
    // Inside the root: served.
    let c = curl(&[&srv.url("cn4", "liveimg")]).await;
    assert_eq!(c.code, 200, "{}", text(&c));
    assert_eq!(c.body, bytes(1000, 6));
    assert!(srv.events("cn4", EventKind::Kernel).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_range_and_escapes() {
    let srv = start().await;
    let pkg = std::fs::read(srv.path("repo/sub/pkg.bin")).unwrap();
    let c = curl(&["-r", "1000-1999", &format!("{}/repo/sub/pkg.bin", srv.base)]).await;
    assert_eq!(c.code, 206);
    assert_eq!(c.body, pkg[1000..2000]);
    let c = curl(&["-I", &format!("{}/repo/sub/pkg.bin", srv.base)]).await;
    assert!(text(&c)
        .to_ascii_lowercase()
        .contains(&format!("content-length: {}", pkg.len())));
    std::os::unix::fs::symlink("/etc/passwd", srv.path("repo/passwd")).unwrap();
    let rows = [
        ("/repo/../vmlinuz", 403),
        ("/repo/sub/%2e%2e/%2e%2e/vmlinuz", 403),
        ("/repo/passwd", 403),
        ("/repo/nothing", 404),
        ("/repo/sub", 404),
    ];
    let root = srv.path("repo").display().to_string();
    for (path, code) in rows {
        let c = curl(&["--path-as-is", &format!("{}{path}", srv.base)]).await;
        assert_eq!(c.code, code, "{path}: {}", text(&c));
        // The body names what was asked, never the server's directory or where a link
        // leads (no existence oracle outside the root).
        let body = text(&c);
        assert!(
            !body.contains(&root) && !body.contains("/etc/passwd"),
            "{path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postscript_and_complete() {
    let srv = start().await;
    let c = curl(&[&srv.url("cn1", "postscript")]).await;
    assert_eq!(c.code, 200, "{}", text(&c));
    let body = text(&c);
    assert!(
        body.starts_with("#!/bin/sh\nhostname cn1\ncurl -X POST http://127.0.0.1:"),
        "{body}"
    );
    let complete = body
        .lines()
        .nth(2)
        .unwrap()
        .strip_prefix("curl -X POST ")
        .unwrap()
        .to_string();
    assert!(complete.ends_with("/complete"));
    let c = curl(&[&srv.url("cn1", "provision/postscript")]).await;
    assert_eq!(c.code, 200);
    let c = curl(&[&srv.url("cn1", "provision/kickstart")]).await;
    assert_eq!(c.code, 404);
    assert!(
        text(&c).contains("no provision template \"kickstart\""),
        "{}",
        text(&c)
    );

    let c = curl(&[&complete]).await;
    assert_eq!(c.code, 405, "complete takes POST");
    // Before any file of the image was served with this token: no boot to complete.
    let c = curl(&["-X", "POST", &complete]).await;
    assert_eq!(c.code, 409, "{}", text(&c));
    assert!(text(&c).contains("no boot in progress"), "{}", text(&c));
    // The boot fetches its kernel (from 127.0.0.1); a complete from another address
    // that is not the host's is refused, the booted node's is accepted, once.
    let kernel = complete.replace("/complete", "/kernel");
    assert_eq!(curl(&["-o", "/dev/null", &kernel]).await.code, 200);
    let c = curl(&["--interface", "127.0.0.2", "-X", "POST", &complete]).await;
    assert_eq!(c.code, 403, "{}", text(&c));
    assert!(
        text(&c).contains("this boot's files went to 127.0.0.1"),
        "{}",
        text(&c)
    );
    assert!(srv.completed.lock().unwrap().is_empty());
    let c = curl(&["-X", "POST", &complete]).await;
    assert_eq!(c.code, 200, "{}", text(&c));
    assert_eq!(text(&c), "{\"status\":\"ok\"}");
    // The answer came after the (slow) hook finished: `ok` means committed.
    assert_eq!(*srv.completed.lock().unwrap(), ["cn1"]);
    // A replay of the same complete is refused.
    let c = curl(&["-X", "POST", &complete]).await;
    assert_eq!(c.code, 409, "{}", text(&c));
    assert!(
        text(&c).contains("already reported complete"),
        "{}",
        text(&c)
    );
    assert_eq!(*srv.completed.lock().unwrap(), ["cn1"]);
    let done = srv.events("cn1", EventKind::Complete);
    assert_eq!(done.len(), 1);
    assert!(done[0].starts_with("from 127.0.0.1 "), "{done:?}");
    assert_eq!(srv.events("cn1", EventKind::Postscript).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uefi_firmware_without_token() {
    let srv = start().await;
    let want = std::fs::read(Path::new("/usr/lib/ipxe/snponly.efi"))
        .expect("ipxe package installed (setup.sh)");
    let url = srv
        .signer
        .firmware_url("snponly.efi", "127.0.0.1".parse().unwrap());
    let c = curl(&[&url]).await;
    assert_eq!(c.code, 200);
    assert!(c.body == want, "snponly.efi differs");
    let c = curl(&[
        "--path-as-is",
        &format!("{}/firmware/../../etc/passwd", srv.base),
    ])
    .await;
    assert_eq!(c.code, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_downloads() {
    // 200 clients from one address is what the per-address cap refuses.
    let srv = start_with(|c| c.provision.max_connections_per_source = 0).await;
    let kernel = Arc::new(std::fs::read(srv.path("vmlinuz")).unwrap());
    let squash = Arc::new(std::fs::read(srv.path("root.squashfs")).unwrap());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..200usize {
        let (file, want) = if i % 2 == 0 {
            ("kernel", kernel.clone())
        } else {
            ("liveimg", squash.clone())
        };
        let url = srv.url("cn1", file);
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // Every third request asks for a range starting at a different offset.
            let range = (i % 3 == 0).then(|| {
                let start = (i * 7919) % (want.len() - 70_000);
                (start, start + 65_536 + i)
            });
            let mut req = client.get(&url);
            if let Some((a, b)) = range {
                req = req.header("Range", format!("bytes={a}-{b}"));
            }
            let resp = req.send().await.expect("response");
            let status = resp.status().as_u16();
            let body = resp.bytes().await.expect("body");
            match range {
                Some((a, b)) => assert!(
                    status == 206 && body[..] == want[a..=b],
                    "request {i}: range {a}-{b}"
                ),
                None => assert!(
                    status == 200 && body[..] == want[..],
                    "request {i}: full {file}"
                ),
            }
        }));
    }
    for t in tasks {
        t.await.expect("download task");
    }
    let n =
        srv.events("cn1", EventKind::Kernel).len() + srv.events("cn1", EventKind::LiveImage).len();
    assert_eq!(n, 200, "one event per download");
}

/// Longest a limits test waits for something due after a few seconds' timeout.
const PATIENCE: Duration = Duration::from_secs(60);

/// The server's descriptors for connections accepted on `port`: sockets of this process
/// (the server runs in it) whose local port is `port`, the listener left out. The
/// clients' sockets have `port` as their remote port; connections still in the kernel's
/// accept queue have no descriptor.
fn server_conns(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inodes: std::collections::HashSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            (local_port == port && f[3] != "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| inodes.contains(l.to_string_lossy().as_ref()))
        .count()
}

fn port(srv: &Server) -> u16 {
    srv.base.rsplit(':').next().unwrap().parse().unwrap()
}

/// A TCP connection to the server from `source` (a loopback address).
async fn connect_from(srv: &Server, source: &str) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let to = srv.base.strip_prefix("http://").unwrap().parse().unwrap();
    sock.connect(to).await.unwrap()
}

/// Reads until the server closes the connection (a reset counts); what it sent, or None
/// if it was still open after [`PATIENCE`].
async fn until_closed(mut s: tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .ok()
        .map(|_| out)
}

/// 80 silent clients and 5 that trickle a request head a byte at a time, against a cap
/// of 50 and a 2 s header timeout: the server never holds more than 50, closes every one
/// of them, and curl gets its iPXE script and kernel in the meantime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slowloris_clients_stay_bounded_and_are_closed() {
    use tokio::io::AsyncWriteExt;
    let srv = start_with(|c| {
        c.provision.max_connections = Some(50);
        c.provision.max_connections_per_source = 0;
        c.provision.header_timeout_secs = 2;
    })
    .await;
    let port = port(&srv);
    let mut closed = Vec::new();
    for _ in 0..80 {
        closed.push(tokio::spawn(until_closed(
            connect_from(&srv, "127.0.0.1").await,
        )));
    }
    for _ in 0..5 {
        let (mut r, mut w) = connect_from(&srv, "127.0.0.1").await.into_split();
        tokio::spawn(async move {
            let head = b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ";
            w.write_all(head).await?;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                w.write_all(b"z").await?;
            }
            #[allow(unreachable_code)]
            Ok::<_, std::io::Error>(())
        });
        closed.push(tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut out = Vec::new();
            tokio::time::timeout(PATIENCE, r.read_to_end(&mut out))
                .await
                .ok()
                .map(|_| out)
        }));
    }
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let most = most.clone();
        tokio::spawn(async move {
            loop {
                most.fetch_max(server_conns(port), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let c = curl(&[&srv.url("cn1", "ipxe")]).await;
    assert_eq!(c.code, 200, "{}", text(&c));
    assert!(text(&c).starts_with("#!ipxe"), "{}", text(&c));
    let c = curl(&[&srv.url("cn1", "kernel")]).await;
    assert!(c.code == 200 && c.body == std::fs::read(srv.path("vmlinuz")).unwrap());
    for (i, t) in closed.into_iter().enumerate() {
        let answer = t.await.unwrap();
        let answer = answer.unwrap_or_else(|| panic!("client {i} still open"));
        assert!(
            !String::from_utf8_lossy(&answer).contains("200 OK"),
            "client {i} sent no whole request"
        );
    }
    sampler.abort();
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=50).contains(&most),
        "server held {most} connections (cap 50)"
    );
}

/// One address at its cap of 10 is refused with a 503, curl from a second address is
/// served meanwhile, and the first is served again once its connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot() {
    let srv = start_with(|c| {
        c.provision.max_connections = Some(50);
        c.provision.max_connections_per_source = 10;
        c.provision.header_timeout_secs = 60;
    })
    .await;
    let mut conns = Vec::new();
    for _ in 0..30 {
        conns.push(connect_from(&srv, "127.0.0.1").await);
    }
    // Connections are accepted in order: the first 10 are held, the rest refused.
    let held: Vec<_> = conns.drain(..10).collect();
    for (i, s) in conns.into_iter().enumerate() {
        let answer = until_closed(s)
            .await
            .expect("refused connections are closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 503"),
            "connection {}: {answer}",
            i + 10
        );
    }
    assert_eq!(server_conns(port(&srv)), 10);
    let url = srv.url("cn1", "ipxe");
    let c = curl(&[&url]).await;
    assert_eq!(c.code, 503, "{}", text(&c));
    assert!(text(&c).contains("too many connections"), "{}", text(&c));
    let c = curl(&["--interface", "127.0.0.2", &url]).await;
    assert_eq!(c.code, 200, "{}", text(&c));
    assert!(text(&c).starts_with("#!ipxe"), "{}", text(&c));

    drop(held);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let c = curl(&[&url]).await;
        if c.code == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still refused: {}",
            c.code
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Completes of different hosts run side by side (each waits on its own commit: an etcd
/// round trip in cluster mode), and one host's still one at a time: of two concurrent
/// completes of one boot exactly one is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completes_of_two_hosts_commit_side_by_side_and_one_host_once() {
    let srv = start().await;
    // Each boot's complete URL carries the token its kernel was fetched with.
    let boot = |h: &str| {
        let kernel = srv.url(h, "kernel");
        (kernel.clone(), kernel.replace("/kernel", "/complete"))
    };
    let ((k5, c5), (k1, c1)) = (boot("cn5"), boot("cn1"));
    for k in [&k5, &k1] {
        assert_eq!(curl(&["-o", "/dev/null", k]).await.code, 200);
    }
    // cn5's commit holds until cn1's runs beside it.
    let first = tokio::spawn(async move { curl(&["-X", "POST", &c5]).await });
    let second = tokio::spawn(async move { curl(&["-X", "POST", &c1]).await });
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((a.code, b.code), (200, 200), "{} / {}", text(&a), text(&b));
    let mut done = srv.completed.lock().unwrap().clone();
    done.sort();
    assert_eq!(done, ["cn1", "cn5"]);

    // One boot of cn6 completed twice at once: one 200, one 409.
    let (k6, c6) = boot("cn6");
    assert_eq!(curl(&["-o", "/dev/null", &k6]).await.code, 200);
    let (u1, u2) = (c6.clone(), c6);
    let x = tokio::spawn(async move { curl(&["-X", "POST", &u1]).await });
    let y = tokio::spawn(async move { curl(&["-X", "POST", &u2]).await });
    let mut codes = [x.await.unwrap().code, y.await.unwrap().code];
    codes.sort();
    assert_eq!(codes, [200, 409]);
    assert_eq!(srv.events("cn6", EventKind::Complete).len(), 1);
}
