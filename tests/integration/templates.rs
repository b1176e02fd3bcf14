//! Installer templates over HTTP on loopback, against curl and the installers' own
//! validators: Grendel-shaped kickstart / user-data / meta-data templates named by file
//! (`fixtures/grendel-templates/`, loaded from `provision.templates_dir`) and xboot's
//! built-ins, served at Grendel's paths (`kickstart`, `cloud-init/*`), checked with
//! `ksvalidator` (pykickstart) and `cloud-init schema`; and template errors reported
//! at inventory load with the image, template, file, line and column.
use std::path::{Path, PathBuf};
use std::time::Duration;

use xboot::config::{Config, SubnetConfig};
use xboot::events::EventLog;
use xboot::http::{HttpService, TokenKey, UrlSigner};
use xboot::inventory::{Host, Image, Interface, Inventory, Mac};
use xboot::state::Shared;

/// The boot MAC of host `cnN`.
fn mac(host: &str) -> String {
    format!(
        "aa:bb:cc:44:55:{:02x}",
        host.trim_start_matches("cn").parse::<u8>().unwrap()
    )
}
/// A SHA-512 crypt(3) hash, as Grendel's `provision.root_password` holds.
const ROOTPW: &str = "$6$xbootsalt$Q8p3v0YH2f1oUeKjX9r6b1Yq7sT4mN2cL5wA8dE3gH6jK9lP0oI1uY2tR3eW4qS5aD6fG7hJ8kL9zX0cV1bN2m.";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ4Ym9vdHRlc3RrZXlub3RyZWFsbHl1c2VkYXRhbGwx admin@xboot";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/integration/fixtures/grendel-templates")
}

struct Server {
    /// First, so the service stops before the rest is dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
    signer: UrlSigner,
    base: String,
}

impl Server {
    fn url(&self, host: &str, file: &str) -> String {
        let mac: Mac = mac(host).parse().unwrap();
        format!("{}/boot/{}/{file}", self.base, self.signer.token(host, mac))
    }
}

/// A host like the deployment guide's: FQDN, a /24 address, tags, a BMC interface.
fn host(name: &str, image: &str, tags: &[&str]) -> Host {
    let n = name.trim_start_matches("cn");
    Host {
        name: name.into(),
        id: format!("uid-{name}"),
        provision: true,
        boot_image: image.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        interfaces: vec![
            Interface {
                mac: Some(mac(name).parse().unwrap()),
                ip: Some(format!("10.10.0.{n}/24")),
                fqdn: format!("{name}.cluster.example"),
                ..Interface::default()
            },
            Interface {
                ip: Some(format!("10.10.1.{n}/24")),
                fqdn: format!("{name}-bmc.cluster.example"),
                bmc: true,
                ..Interface::default()
            },
        ],
        ..Host::default()
    }
}

/// The config, images and hosts of the tests: image `grendel` names the fixture
/// templates by file (`templates_dir` = a copy of the fixtures), image `builtin` has
/// no provision templates (the routes fall back to the built-ins).
fn setup(dir: &Path) -> (Config, Vec<Host>, Vec<Image>) {
    let tdir = dir.join("templates");
    std::fs::create_dir(&tdir).unwrap();
    for f in ["kickstart.tmpl", "user-data.tmpl", "meta-data.tmpl"] {
        std::fs::copy(fixtures().join(f), tdir.join(format!("grendel-{f}"))).unwrap();
    }
    std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(dir.join("root.squashfs"), b"squashfs").unwrap();
    let s = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let named = |k: &str| (k.to_string(), format!("grendel-{k}.tmpl"));
    let grendel = Image {
        name: "grendel".into(),
        kernel: s("vmlinuz"),
        liveimg: s("root.squashfs"),
        provision_templates: [
            named("kickstart"),
            named("user-data"),
            named("meta-data"),
            // Inline source, beside the names.
            ("hash".into(), "{{ CryptSHA512 \"s3cret\" }}".into()),
        ]
        .into(),
        ..Image::default()
    };
    let builtin = Image {
        name: "builtin".into(),
        kernel: s("vmlinuz"),
        liveimg: s("root.squashfs"),
        ..Image::default()
    };
    let mut cfg = Config::default();
    cfg.provision.image_roots = vec![dir.to_path_buf()];
    cfg.provision.templates_dir = Some(tdir);
    cfg.provision.root_password = Some(ROOTPW.into());
    cfg.admin_ssh_pubkeys = Some(vec![KEY.into()]);
    cfg.dhcp.subnets = vec![SubnetConfig {
        gateway: "10.10.0.254/24".into(),
        dns: "10.10.0.2, 10.10.0.3".into(),
        domain_search: "cluster.example".into(),
        mtu: String::new(),
    }];
    let hosts = vec![
        host("cn1", "grendel", &["gpu", "ib"]),
        host("cn2", "builtin", &[]),
    ];
    (cfg, hosts, vec![grendel, builtin])
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, hosts, images) = setup(dir.path());
    // The validating constructor: the named templates load and check here.
    let inv = Inventory::new(hosts, images, &cfg.provision.image_roots())
        .unwrap_or_else(|e| panic!("the inventory loads: {e}"));
    let shared = Shared::new(cfg, inv, EventLog::default());
    let key = TokenKey::from_secret("templates");
    let (base, stop) = crate::http::serve_on_loopback(HttpService::new(shared, key.clone())).await;
    Server {
        _stop: stop,
        signer: UrlSigner::new(&base, key, Duration::from_secs(600)),
        base,
        _dir: dir,
    }
}

/// `curl -s` with `args` (the http tests' runner): (status, body as text).
async fn curl(args: &[&str]) -> (u16, String) {
    let c = crate::http::curl(args).await;
    (c.code, String::from_utf8(c.body).expect("a text body"))
}

/// Runs a listed validator on `text` written to `name` in a temp dir; panics with its
/// output unless it exits 0. Returns its output.
fn validate(program: &str, args: &[&str], name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    let out = testlab::peers::command(program)
        .args(args)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} refused {name}:\n{said}\n--- {name} ---\n{text}"
    );
    said
}

fn ksvalidator(text: &str) {
    validate("ksvalidator", &["-v", "RHEL9"], "ks.cfg", text);
}

fn cloud_init_schema(text: &str) {
    let said = validate(
        "cloud-init",
        &["schema", "--config-file"],
        "user-data",
        text,
    );
    assert!(said.contains("Valid"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grendel_templates_named_by_file_render_and_validate() {
    let srv = start().await;
    let url = srv.url("cn1", "kickstart");
    let complete = url.replace("kickstart", "complete");
    let (code, ks) = curl(&[&url]).await;
    assert_eq!(code, 200, "{ks}");
    for want in [
        "# Kickstart for cn1 (uid-cn1), tags: gpu,ib\n# Served from 0.0.0.0:80\n".to_string(),
        format!("network --bootproto=static --device={} --ip=10.10.0.1 --netmask=255.255.255.0 --gateway=10.10.0.254 --nameserver=10.10.0.2,10.10.0.3 --hostname=cn1.cluster.example --activate", mac("cn1")),
        format!("rootpw --iscrypted {ROOTPW}"),
        format!("sshkey --username=root \"{KEY}\""),
        "part /boot --fstype=xfs".to_string(),
        "rdma.enable=1".to_string(),
        format!("url --url={}/repo/rocky/9/BaseOS/x86_64/os", srv.base),
        "echo \"search cluster.example\"".to_string(),
        format!("curl -fsS -X POST {complete}"),
    ] {
        assert!(ks.contains(&want), "missing {want:?} in:\n{ks}");
    }
    ksvalidator(&ks);

    // The URLs inside carry the token of the request.
    let url = srv.url("cn1", "cloud-init/user-data");
    let complete = url.replace("cloud-init/user-data", "complete");
    let (code, ud) = curl(&[&url]).await;
    assert_eq!(code, 200, "{ud}");
    assert!(
        ud.starts_with("#cloud-config\nhostname: cn1\nfqdn: cn1.cluster.example\n"),
        "{ud}"
    );
    assert!(ud.contains(&format!("  - \"{KEY}\"")), "{ud}");
    assert!(ud.contains(&format!("root:{ROOTPW}")), "{ud}");
    assert!(ud.contains("  - nvidia-driver"), "{ud}");
    assert!(ud.contains(&format!("  url: {complete}")), "{ud}");
    cloud_init_schema(&ud);

    let (code, md) = curl(&[&srv.url("cn1", "cloud-init/meta-data")]).await;
    assert_eq!(code, 200, "{md}");
    assert_eq!(
        md,
        "instance-id: uid-cn1\nlocal-hostname: cn1.cluster.example\n"
    );
    // CryptSHA512's hash, checked by the C library's crypt(3) through Python.
    let (code, hash) = curl(&[&srv.url("cn1", "provision/hash")]).await;
    assert_eq!(code, 200, "{hash}");
    assert!(hash.starts_with("$6$"), "{hash}");
    let check = |pw: &str| {
        let out = testlab::peers::command("python3")
            .args([
                "-W",
                "ignore",
                "-c",
                "import crypt, sys; print(crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2])",
                pw,
                &hash,
            ])
            .output()
            .expect("python3 runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(check("s3cret"), "True");
    assert_eq!(check("wrong"), "False");
    // The same template through Grendel's generic route.
    let (code, same) = curl(&[&srv.url("cn1", "provision/meta-data")]).await;
    assert_eq!((code, same.as_str()), (200, md.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_templates_render_and_validate() {
    let srv = start().await;
    let url = srv.url("cn2", "kickstart");
    let complete = url.replace("kickstart", "complete");
    let (code, ks) = curl(&[&url]).await;
    assert_eq!(code, 200, "{ks}");
    let liveimg = url.replace("kickstart", "liveimg");
    assert!(ks.contains(&format!("liveimg --url={liveimg}")), "{ks}");
    assert!(ks.contains("--hostname=cn2.cluster.example"), "{ks}");
    assert!(ks.contains(&format!("rootpw --iscrypted {ROOTPW}")), "{ks}");
    assert!(
        ks.contains(&format!(
            "%post --erroronfail\ncurl -fsS -X POST {complete}\n%end"
        )),
        "{ks}"
    );
    ksvalidator(&ks);

    let url = srv.url("cn2", "cloud-init/user-data");
    let complete = url.replace("cloud-init/user-data", "complete");
    let (code, ud) = curl(&[&url]).await;
    assert_eq!(code, 200, "{ud}");
    assert!(
        ud.contains(&format!("phone_home:\n  url: {complete}\n")),
        "{ud}"
    );
    assert!(ud.contains("hostname: cn2.cluster.example"), "{ud}");
    cloud_init_schema(&ud);

    let (code, md) = curl(&[&srv.url("cn2", "cloud-init/meta-data")]).await;
    assert_eq!(code, 200);
    assert_eq!(
        md,
        "instance-id: uid-cn2\nlocal-hostname: cn2.cluster.example\n"
    );
    let (code, vd) = curl(&[&srv.url("cn2", "cloud-init/vendor-data")]).await;
    assert_eq!(code, 200);
    assert!(vd.starts_with("#cloud-config"), "{vd}");

    // HEAD answers like GET, without a body; a bad token and an unknown file do not.
    let (code, body) = curl(&["-I", &srv.url("cn2", "kickstart")]).await;
    assert_eq!(code, 200);
    assert!(
        body.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{body}"
    );
    let (code, body) = curl(&["-I", &srv.url("cn2", "cloud-init/user-data")]).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl(&[&format!("{}/boot/forged/kickstart", srv.base)]).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = curl(&[&srv.url("cn2", "cloud-init/network-config")]).await;
    assert_eq!(code, 404);
    assert!(
        body.contains("no cloud-init file \"network-config\""),
        "{body}"
    );
}

/// The inventory errors of `images` edited by `edit`, as text.
fn load_errors(edit: impl FnOnce(&Path, &mut Vec<Image>)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, hosts, mut images) = setup(dir.path());
    edit(&dir.path().join("templates"), &mut images);
    match Inventory::new(hosts, images, &cfg.provision.image_roots()) {
        Ok(_) => panic!("the inventory should not load"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn template_errors_are_reported_at_load_with_file_line_and_column() {
    // A template file with an unknown field: image, template, file, line, column.
    let e = load_errors(|tdir, _| {
        std::fs::write(
            tdir.join("grendel-meta-data.tmpl"),
            "instance-id: {{ $.host.UID }}\nlocal-hostname: {{ $.nic.Hostname }}\n",
        )
        .unwrap();
    });
    let file = "templates/grendel-meta-data.tmpl";
    assert!(
        e.contains("image grendel: provision_templates.meta-data (file "),
        "{e}"
    );
    assert!(e.contains(file), "{e}");
    assert!(e.contains("line 2, column 20"), "{e}");
    assert!(e.contains("unknown field \"Hostname\""), "{e}");
    // A name found in no directory nor among the built-ins.
    let e = load_errors(|_, images| {
        images[1]
            .provision_templates
            .insert("kickstart".into(), "rocky.tmpl".into());
    });
    assert!(
        e.contains("image builtin: provision_templates.kickstart template"),
        "{e}"
    );
    assert!(
        e.contains("\"rocky.tmpl\" is not a file of the templates directories"),
        "{e}"
    );
    // Inline source is still a template, checked the same way.
    let e = load_errors(|_, images| {
        images[1]
            .provision_templates
            .insert("postscript".into(), "#!/bin/sh\necho {{ $.nope }}\n".into());
    });
    assert!(
        e.contains("provision_templates.postscript template: line 2, column 9"),
        "{e}"
    );
}
