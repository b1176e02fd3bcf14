//! The `xboot` binary end to end: `check-config` on good and bad inputs (exit codes and
//! messages), and `xboot serve` with its API on a temp unix socket driven by the client
//! commands, restarted to show that API changes persist. No network: unix sockets, and
//! the boot services bound to loopback port 0 with DHCP off.
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

const XBOOT: &str = env!("CARGO_BIN_EXE_xboot");

pub(crate) fn repo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

pub(crate) fn xboot(args: &[&str]) -> Output {
    testlab::peers::own(XBOOT)
        .args(args)
        .env_remove("XBOOT_CONFIG")
        .env_remove("XBOOT_SOCKET")
        .env_remove("RUST_LOG")
        .output()
        .expect("run xboot")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A temp dir holding a config, an inventory and the kernel/initrd files it names.
pub(crate) struct Site {
    pub(crate) dir: tempfile::TempDir,
}

impl Site {
    pub(crate) fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("boot")).unwrap();
        std::fs::write(p.join("boot/vmlinuz"), b"kernel").unwrap();
        std::fs::write(p.join("boot/initrd.img"), b"initrd").unwrap();
        std::fs::write(
            p.join("xboot.toml"),
            "state_dir = \"state\"\nhosts = \"hosts.json\"\nimages = \"images.toml\"\n\
             [dhcp]\nlease_time = \"1h\"\nmode = \"off\"\n[api]\nsocket_path = \"run/api.socket\"\n\
             [tftp]\nlisten = \"127.0.0.1:0\"\n[provision]\nlisten = \"127.0.0.1:0\"\n\
             image_roots = [\"boot\"]\n",
        )
        .unwrap();
        std::fs::write(
            p.join("hosts.json"),
            r#"[{"name":"cn1","provision":true,"boot_image":"img","firmware":"",
                "interfaces":[{"ip":"10.0.0.1/24","mac":"aa:bb:cc:00:00:01","bmc":false},
                              {"ip":"10.1.0.1/32","bmc":true}]}]"#,
        )
        .unwrap();
        std::fs::write(
            p.join("images.toml"),
            "[[image]]\nname = \"img\"\nkernel = \"boot/vmlinuz\"\ninitrd = [\"boot/initrd.img\"]\n\
             cmdline = 'BOOTIF=01-{{ $.nic.MAC | toString | replace \":\" \"-\" }}'\n",
        )
        .unwrap();
        Site { dir }
    }
    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    pub(crate) fn write(&self, name: &str, body: &str) -> String {
        std::fs::write(self.dir.path().join(name), body).unwrap();
        self.path(name)
    }
    /// `xboot check-config` on the site's config, `extra` arguments after it.
    fn check_config(&self, extra: &[&str]) -> Output {
        let config = self.path("xboot.toml");
        let mut args = vec!["check-config", "--config", &config];
        args.extend_from_slice(extra);
        xboot(&args)
    }
}

#[test]
fn check_config_good_and_bad() {
    let site = Site::new();
    let out = site.check_config(&[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("OK: 1 hosts (1 provisioned), 1 images"),
        "{stdout}"
    );

    // The guide's grendel.toml: accepted, with warnings for what xboot does not implement.
    let out = xboot(&[
        "check-config",
        "--config",
        &repo_config().join("grendel.toml").display().to_string(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: config key [client] is not implemented"),
        "{stderr}"
    );
    assert!(!stderr.contains("[dns]"), "[dns] is served: {stderr}");

    // A bad config: the key is named.
    let bad = site.write("bad.toml", "[dhcp]\nlease_time = \"soon\"\nmystery = 1\n");
    let out = xboot(&["check-config", "--config", &bad]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: invalid config {bad}: dhcp.lease_time: invalid duration \"soon\""
        )),
        "{stderr}"
    );

    // A bad inventory given by flag: every problem, each naming its entry.
    let hosts = site.write(
        "bad-hosts.json",
        r#"[{"name":"cn1","provision":true,"boot_image":"img","interfaces":[{"mac":"aa:bb:cc:00:00:01","ip":"10.0.0.1/24"}]},
            {"name":"cn2","provision":true,"boot_image":"nope","interfaces":[{"mac":"aa:bb:cc:00:00:01","ip":"10.0.0.2/24"}]},
            {"name":"cn_3","interfaces":[{"ip":"10.0.0.3/99"}]}]"#,
    );
    let out = site.check_config(&["--hosts", &hosts]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for want in [
        "4 problems:",
        "host cn2: MAC aa:bb:cc:00:00:01 is also on host cn1",
        "host cn2: unknown boot_image \"nope\"",
        "host \"cn_3\": invalid hostname",
        "host cn_3: interface 0: bad CIDR \"10.0.0.3/99\"",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }

    // A missing kernel and an unreadable file.
    let images = site.write(
        "bad-images.json",
        r#"[{"name":"img","kernel":"boot/gone","initrd":[]}]"#,
    );
    let out = site.check_config(&["--images", &images]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!(
            "image img: kernel {}: no such file",
            site.path("boot/gone")
        )),
        "{stderr}"
    );
    // A file outside the image roots (here only boot/): refused, naming the image, the
    // file and the roots.
    let images = site.write(
        "outside-images.json",
        r#"[{"name":"img","kernel":"xboot.toml","initrd":[]}]"#,
    );
    let out = site.check_config(&["--images", &images]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "image img: kernel {} is not in an image root (image roots: {}; see provision.image_roots)",
            site.path("xboot.toml"),
            site.path("boot")
        )),
        "{stderr}"
    );
    let out = site.check_config(&["--hosts", &site.path("none.json")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("cannot read inventory file"),
        "{}",
        text(&out).1
    );
    let out = xboot(&["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("needs --config"), "{}", text(&out).1);
}

/// A running `xboot serve`, stopped with SIGTERM (by pid) when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    log: PathBuf,
}

impl Server {
    pub(crate) fn start(site: &Site) -> Server {
        let mut cmd = testlab::peers::own(XBOOT);
        cmd.args(["serve", "--config", &site.path("xboot.toml")]);
        Server::start_with(site, cmd)
    }

    /// `cmd` runs `xboot serve` with the site's config (in a wrapper, maybe).
    fn start_with(site: &Site, mut cmd: std::process::Command) -> Server {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = site.dir.path().join(format!("serve-{n}.log"));
        let child = cmd
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !xboot(&["status", "--socket", &site.path("run/api.socket")])
            .status
            .success()
        {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("xboot serve exited ({status}): {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "xboot serve did not answer: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn stop(mut self) -> String {
        self.terminate();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "xboot serve exit: {status}\n{}",
            self.log()
        );
        self.log()
    }

    fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn host_names(site: &Site) -> Vec<String> {
    let out = xboot(&[
        "host",
        "list",
        "--json",
        "--socket",
        &site.path("run/api.socket"),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect()
}

/// check-config runs the checks serve runs and names every problem at once; serve refuses
/// the same file before binding anything.
#[test]
fn check_config_reports_every_problem_serve_refuses() {
    let site = Site::new();
    let bad = site.write(
        "bad.toml",
        "state_dir = \"state\"\n[dhcp]\nlisten = \"[::]:67\"\nmtu = \"big\"\n\
         subnets = [{gateway = \"10.0.0.1/24\", dns = \"nope\", mtu = \"10\", domainSearch = \"bad_name\"}]\n\
         [bmc]\nretries = 120\ntimeout_ms = \"long\"\n",
    );
    let out = xboot(&["check-config", "--config", &bad]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for want in [
        "7 problems:",
        "dhcp.listen: \"[::]:67\" is an IPv6 address",
        "dhcp.mtu: invalid type",
        "dhcp.subnets[0].dns: \"nope\" is not an IPv4 address",
        "dhcp.subnets[0].mtu: \"10\" is not an MTU",
        "dhcp.subnets[0].domainSearch: \"bad_name\" is not a domain name",
        "bmc.retries: 120 is out of range (1 to 10)",
        "bmc.timeout_ms: invalid type",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    let out = xboot(&["serve", "--config", &bad]);
    let (_, serve_err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{serve_err}");
    assert!(serve_err.contains("7 problems:"), "{serve_err}");
    assert!(
        !site.dir.path().join("state").exists(),
        "neither wrote a state dir"
    );
}

#[test]
fn serve_api_changes_persist_across_restart() {
    let site = Site::new();
    let sock = site.path("run/api.socket");
    let server = Server::start(&site);
    assert_eq!(host_names(&site), ["cn1"], "imported from hosts.json");

    let add = |name: &str, n: u8| {
        let (mac, ip) = (format!("aa:bb:cc:00:00:{n:02x}"), format!("10.0.0.{n}/24"));
        xboot(&[
            "host",
            "add",
            name,
            "--mac",
            &mac,
            "--ip",
            &ip,
            "--image",
            "img",
            "--provision",
            "--socket",
            &sock,
        ])
    };
    for (name, n) in [("cn2", 2), ("cn3", 3), ("cn10", 10)] {
        let out = add(name, n);
        assert!(out.status.success(), "{:?}", text(&out));
        assert_eq!(text(&out).0, format!("host {name} saved\n"));
    }
    // An invalid change is refused with the reason, and the server keeps serving.
    let out = xboot(&[
        "host",
        "add",
        "cn4",
        "--mac",
        "aa:bb:cc:00:00:02",
        "--ip",
        "10.0.0.4/24",
        "--socket",
        &sock,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out).1,
        "error: invalid inventory: host cn4: MAC aa:bb:cc:00:00:02 is also on host cn2\n"
    );
    assert_eq!(host_names(&site), ["cn1", "cn2", "cn3", "cn10"]);

    let out = xboot(&["host", "delete", "cn[3-4]", "--socket", &sock]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        text(&out),
        (
            "deleted cn3\n".into(),
            "warning: no such hosts: cn4\n".into()
        )
    );
    let out = xboot(&["host", "unprovision", "cn[1-2]", "--socket", &sock]);
    assert_eq!(text(&out).0, "unprovision: cn[1-2] (2 hosts)\n");
    let out = xboot(&["events", "cn2", "--socket", &sock]);
    assert!(
        text(&out).0.contains("cn2   unprovision  api"),
        "{:?}",
        text(&out)
    );

    // A host file imported through the CLI; relative paths resolved by the client.
    let f = site.write(
        "more.toml",
        "[[host]]\nname = \"gpu1\"\n[[host.interfaces]]\nmac = \"aa:bb:cc:00:01:01\"\nip = \"10.0.1.1/24\"\n",
    );
    let out = xboot(&["host", "import", &f, "--socket", &sock]);
    assert_eq!(
        text(&out).0,
        format!("imported 1 host and 0 images from {f}\n")
    );
    let out = xboot(&["host", "list", "--socket", &sock]);
    let table = text(&out).0;
    assert!(table.starts_with("NAME  PROVISION  IMAGE  MAC"), "{table}");
    assert!(table.contains("gpu1  no"), "{table}");

    let log = server.stop();
    assert!(log.contains("terminated, shutting down"), "{log}");
    assert!(!Path::new(&sock).exists(), "socket removed at exit");

    // Restart: the API's changes are still there, cn1's too: hosts.json holds cn1 as
    // it did when last applied, so the store's state stays (a restart must not undo a
    // `complete` or an API edit).
    let server = Server::start(&site);
    assert_eq!(host_names(&site), ["cn1", "cn2", "cn10", "gpu1"]);
    let out = xboot(&["host", "show", "cn2", "--socket", &sock]);
    let cn2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cn2["provision"], false, "API change persisted");
    let out = xboot(&["host", "show", "cn1", "--socket", &sock]);
    let cn1: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cn1["provision"], false, "hosts.json did not change cn1");
    let log = server.stop();
    // An entry the file changed wins: cn1 edited in hosts.json is provisioned again.
    let hosts = std::fs::read_to_string(site.path("hosts.json")).unwrap();
    site.write(
        "hosts.json",
        &hosts.replace("\"firmware\":\"\"", "\"firmware\":\"snponly-x86_64.efi\""),
    );
    let server = Server::start(&site);
    let out = xboot(&["host", "show", "cn1", "--socket", &sock]);
    let cn1: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        cn1["provision"], true,
        "hosts.json wins for the cn1 it changed: {log}"
    );
    assert!(
        server.log().contains("host cn1: the entry from"),
        "{}",
        server.log()
    );

    // A second server on the same state dir is refused with a clear message.
    let out = testlab::peers::own(XBOOT)
        .args([
            "serve",
            "--config",
            &site.path("xboot.toml"),
            "--socket",
            &site.path("run/other.socket"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("in use by another xboot process"),
        "{:?}",
        text(&out)
    );
    drop(server);

    // Offline check of the same site now merges the stored hosts in.
    let out = site.check_config(&[]);
    assert!(
        text(&out)
            .0
            .contains("OK: 4 hosts (2 provisioned), 1 images (files merged over the store"),
        "{:?}",
        text(&out)
    );
}

/// `xboot host show NAME --boot` prints the answers the services would give, offline.
#[test]
fn host_show_boot_prints_dhcp_answers_script_and_cmdline() {
    let site = Site::new();
    let cfg = site.path("xboot.toml");
    let out = xboot(&[
        "--config",
        &cfg,
        "--socket",
        &site.path("none.socket"),
        "host",
        "show",
        "cn1",
        "--boot",
        "--server",
        "10.0.0.254",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = |kind: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} line in:\n{stdout}"))
            .to_string()
    };
    assert!(line("bios-pxe").contains("file undionly.kpxe, next-server 10.0.0.254"));
    assert!(line("uefi-x64").contains("file snponly.efi"));
    // The site's HTTP service listens on 127.0.0.1:0, hence the port in the URL.
    assert!(
        line("ipxe").contains("file http://10.0.0.254:0/boot/"),
        "{stdout}"
    );
    assert!(line("ipxe").contains("/ipxe,"), "{stdout}");
    assert!(line("os ").contains("OFFER, 10.0.0.1, mask 255.255.255.0, lease 3600s"));
    assert!(stdout.contains("#!ipxe"), "{stdout}");
    assert!(stdout.contains("  BOOTIF=01-aa-bb-cc-00-00-01"), "{stdout}");

    let out = xboot(&[
        "--config",
        &cfg,
        "--socket",
        &site.path("none.socket"),
        "host",
        "show",
        "nope",
        "--boot",
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("no host \"nope\""), "{stderr}");
}

/// `host show NAME --boot` takes the inventory files on the command line, as `serve`
/// and `check-config` do: `--hosts H --images I` with a config that names neither; a
/// client command that asks the server refuses them instead of ignoring them.
#[test]
fn host_show_boot_takes_inventory_files_on_the_command_line() {
    let site = Site::new();
    let cfg = site.write(
        "bare.toml",
        "state_dir = \"state\"\n[dhcp]\nmode = \"off\"\n[api]\nsocket_path = \"run/api.socket\"\n\
         [provision]\nlisten = \"127.0.0.1:0\"\nimage_roots = [\"boot\"]\n",
    );
    let (hosts, images) = (site.path("hosts.json"), site.path("images.toml"));
    let show = |files: &[&str]| {
        let mut argv = vec!["--config", &cfg, "host", "show", "cn1", "--boot"];
        argv.extend_from_slice(&["--server", "10.0.0.254"]);
        argv.extend_from_slice(files);
        xboot(&argv)
    };
    let out = show(&["--hosts", &hosts, "--images", &images]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("#!ipxe"), "{stdout}");
    assert!(stdout.contains("  BOOTIF=01-aa-bb-cc-00-00-01"), "{stdout}");
    // Without the files the config names no inventory: the host is not found.
    let out = show(&[]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("no host \"cn1\""), "{:?}", text(&out));
    // A command that asks the running server does not silently ignore them.
    let out = xboot(&["--config", &cfg, "host", "list", "--hosts", &hosts]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("--hosts/--images"),
        "{:?}",
        text(&out)
    );
}

/// Editing hosts.json while serving reloads it: added hosts appear, hosts removed from
/// the file are deleted, API-added hosts stay; a broken file is refused and the running
/// inventory kept; SIGHUP reloads too.
#[test]
fn serve_reloads_inventory_files() {
    let site = Site::new();
    let sock = site.path("run/api.socket");
    let server = Server::start(&site);
    let out = xboot(&[
        "host",
        "add",
        "api1",
        "--mac",
        "aa:bb:cc:00:00:09",
        "--ip",
        "10.0.0.9/24",
        "--socket",
        &sock,
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let wait_for = |want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = host_names(&site);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hosts {got:?}, want {want:?}\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Replace cn1 by cn5 in the file (written by rename, as editors do).
    let tmp = site.write(
        "hosts.json.tmp",
        r#"[{"name":"cn5","provision":true,"boot_image":"img",
            "interfaces":[{"ip":"10.0.0.5/24","mac":"aa:bb:cc:00:00:05"}]}]"#,
    );
    std::fs::rename(&tmp, site.path("hosts.json")).unwrap();
    wait_for(&["api1", "cn5"]);
    // A broken file: refused, nothing lost.
    site.write(
        "hosts.json",
        "[{\"name\": \"cn6\", \"interfaces\": [{\"mac\": \"zz\"}]}]",
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(host_names(&site), ["api1", "cn5"]);
    assert!(
        server
            .log()
            .contains("inventory reload (file change) refused"),
        "{}",
        server.log()
    );
    // Fixed again, then a SIGHUP-triggered reload of the same content is a no-op.
    site.write(
        "hosts.json",
        r#"[{"name":"cn6","provision":false,"interfaces":[{"ip":"10.0.0.6/24","mac":"aa:bb:cc:00:00:06"}]}]"#,
    );
    wait_for(&["api1", "cn6"]);
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("inventory reloaded (SIGHUP)") {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(host_names(&site), ["api1", "cn6"]);
    drop(server);
}

/// An edit of a template file alone (no inventory file touched) makes the running server
/// check the inventory's templates against it, as a reload: a broken edit is reported
/// naming the image, the template, the file, the line and the column; the fix, too.
#[test]
fn serve_rechecks_templates_when_a_template_file_changes() {
    let site = Site::new();
    std::fs::create_dir(site.path("templates")).unwrap();
    site.write("templates/site.tmpl", "# {{ $.host.Name }}\n");
    let cfg = std::fs::read_to_string(site.path("xboot.toml")).unwrap();
    site.write(
        "xboot.toml",
        &format!("{cfg}templates_dir = \"templates\"\n"),
    );
    let images = std::fs::read_to_string(site.path("images.toml")).unwrap();
    site.write(
        "images.toml",
        &format!("{images}provision_templates = {{ kickstart = \"site.tmpl\" }}\n"),
    );
    let out = site.check_config(&[]);
    assert!(out.status.success(), "{:?}", text(&out));
    let server = Server::start(&site);
    let wait_log = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.log().contains(want) {
            assert!(
                Instant::now() < deadline,
                "no {want:?} in\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Broken in place.
    site.write(
        "templates/site.tmpl",
        "# {{ $.host.Name }}\n{{ $.host.Nam }}\n",
    );
    wait_log("templates checked (template change): 1 problems");
    let log = server.log();
    for part in [
        "image img",
        "provision_templates.kickstart",
        "site.tmpl",
        "line 2, column 4",
    ] {
        assert!(log.contains(part), "no {part:?} in\n{log}");
    }
    // Fixed by rename, as editors write.
    let tmp = site.write("templates/site.tmpl.new", "# fixed {{ $.host.Name }}\n");
    std::fs::rename(&tmp, site.path("templates/site.tmpl")).unwrap();
    wait_log("templates checked (template change): every image's templates load");
    drop(server);
}

/// A Kubernetes ConfigMap volume as the kubelet writes it: the files live in a
/// timestamped directory, `..data` links to it, and each file name links into `..data`.
/// `update` writes a new directory and renames a `..data_tmp` link over `..data`, then
/// removes the old directory: the names the server was given never change.
pub(crate) struct ConfigMapVolume {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMapVolume {
    pub(crate) fn new(dir: PathBuf, files: &[(&str, &str)]) -> ConfigMapVolume {
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = ConfigMapVolume { dir, generation: 0 };
        v.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), v.dir.join(name)).unwrap();
        }
        v
    }

    pub(crate) fn update(&mut self, files: &[(&str, &str)]) {
        let old = self.timestamped();
        self.generation += 1;
        let new = self.timestamped();
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        for (name, body) in files {
            std::fs::write(self.dir.join(&new).join(name), body).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.generation > 1 {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }

    fn timestamped(&self) -> String {
        format!(
            "..2026_12_03_13_00_{:02}.00000000{}",
            self.generation, self.generation
        )
    }
}

/// ClusterFactory's chart runs the image with `--debug --verbose serve -c
/// /secret/grendel.toml --hosts /config/hosts.json --images /config/images.json --listen
/// 0.0.0.0`, with the guide's files (config/grendel.toml, config/examples/*.json) and the
/// inventory in a ConfigMap volume. Those exact arguments start xboot (inside a network
/// namespace of the test's, so 0.0.0.0 is that namespace's; the state directory and API
/// socket are moved into the temp dir by environment overrides, as Kubernetes passes
/// settings), debug logging is on, and a ConfigMap update made the kubelet's way reaches
/// the running server.
#[test]
fn grendel_chart_arguments_and_configmap_updates() {
    if crate::netns::need_root() {
        return;
    }
    let ns = crate::netns::Netns::new("chart");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir(root.join("secret")).unwrap();
    std::fs::copy(
        repo_config().join("grendel.toml"),
        root.join("secret/grendel.toml"),
    )
    .unwrap();
    let hosts = std::fs::read_to_string(repo_config().join("examples/hosts.json")).unwrap();
    let images = std::fs::read_to_string(repo_config().join("examples/images.json")).unwrap();
    let mut volume = ConfigMapVolume::new(
        root.join("config"),
        &[("hosts.json", &hosts), ("images.json", &images)],
    );
    let socket = root.join("run/api.socket");
    let log = root.join("serve.log");
    let secret = root.join("secret/grendel.toml").display().to_string();
    let (hosts_path, images_path) = (
        root.join("config/hosts.json").display().to_string(),
        root.join("config/images.json").display().to_string(),
    );
    // The chart mounts the image files at /var/lib/grendel (the guide's images.json
    // names them there): a private mount namespace gets a temp dir bound over /var/lib.
    let var_lib = root.join("var-lib");
    std::fs::create_dir_all(var_lib.join("grendel")).unwrap();
    let guide_images: serde_json::Value = serde_json::from_str(&images).unwrap();
    for img in guide_images.as_array().unwrap() {
        let files = img["initrd"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&img["kernel"]]);
        for f in files {
            let name = Path::new(f.as_str().unwrap())
                .strip_prefix("/var/lib")
                .unwrap();
            std::fs::write(var_lib.join(name), b"guide image file").unwrap();
        }
    }
    let bind = format!("mount --bind {} /var/lib && exec \"$@\"", var_lib.display());
    let argv = crate::netns::private_mounts_sh(
        &bind,
        &[
            "sh",
            XBOOT,
            "--debug",
            "--verbose",
            "serve",
            "-c",
            &secret,
            "--hosts",
            &hosts_path,
            "--images",
            &images_path,
            "--listen",
            "0.0.0.0",
        ],
    );
    let mut child = ns
        .cmd(&argv)
        .env_remove("RUST_LOG")
        .env_remove("XBOOT_CONFIG")
        .env("XBOOT_STATE_DIR", root.join("state"))
        .env("GRENDEL_API_SOCKET_PATH", &socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let sock = socket.display().to_string();
    let names = || {
        let out = xboot(&["host", "list", "--json", "--socket", &sock]);
        out.status.success().then(|| {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|h| h["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(n) = names() {
            break n;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("xboot serve exited ({status}): {}", read_log());
        }
        assert!(Instant::now() < deadline, "no API: {}", read_log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let guide: serde_json::Value = serde_json::from_str(&hosts).unwrap();
    let want: Vec<String> = guide
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(first, want, "{}", read_log());
    let text = read_log();
    assert!(
        text.contains("DEBUG") && text.contains("log filter: debug"),
        "--debug: no debug lines in {text}"
    );
    assert!(
        text.contains("api.socket_path set by the environment (GRENDEL_API_SOCKET_PATH)"),
        "{text}"
    );
    assert!(text.contains("0.0.0.0:69"), "{text}");
    // The guide's [dns] (listen 0.0.0.0:53, no forwarder) is served: its hosts have no
    // fqdn, so a name is nobody's here and refused.
    let out = ns
        .cmd(&[
            "dig",
            "@127.0.0.1",
            "+tries=1",
            "+time=3",
            "cn1.example.com",
            "A",
        ])
        .output()
        .unwrap();
    let dig = String::from_utf8_lossy(&out.stdout);
    assert!(dig.contains("status: REFUSED"), "{dig}{}", read_log());

    // The kubelet's update: a copy of the guide's first host under a new name and MAC.
    let mut more = guide.clone();
    let mut extra = more[0].clone();
    extra["name"] = "cf-added1".into();
    extra.as_object_mut().unwrap().remove("id");
    for (i, nic) in extra["interfaces"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        if nic.get("mac").is_some() {
            nic["mac"] = format!("02:00:00:00:10:{i:02x}").into();
        }
        let ip = nic["ip"].as_str().unwrap_or("").replace(".51/", ".52/");
        nic["ip"] = ip.into();
    }
    more.as_array_mut().unwrap().push(extra);
    let t0 = Instant::now();
    volume.update(&[
        ("hosts.json", &serde_json::to_string(&more).unwrap()),
        ("images.json", &images),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if names().is_some_and(|n| n.iter().any(|h| h == "cf-added1")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ConfigMap update was not picked up: {}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "ConfigMap update reached the server after {} ms",
        t0.elapsed().as_millis()
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}: {}", read_log());
}

/// A reload applies only what changed in the file: a host the file holds as before keeps
/// the state the API gave it (unprovisioned here, as `complete` does), so adding another
/// host does not re-arm its reinstallation. A file emptied by accident (truncated,
/// 0 bytes) deletes nothing; `[]` empties it on purpose.
#[test]
fn reload_keeps_running_state_and_refuses_an_accidentally_empty_file() {
    let site = Site::new();
    let sock = site.path("run/api.socket");
    let server = Server::start(&site);
    let provisioned = |name: &str| -> Option<bool> {
        let out = xboot(&["host", "list", "--json", "--socket", &sock]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .map(|h| h["provision"].as_bool().unwrap_or(false))
    };
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}\n{}", server.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(provisioned("cn1"), Some(true));
    let out = xboot(&["host", "unprovision", "cn1", "--socket", &sock]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(provisioned("cn1"), Some(false));

    // cn1 unchanged in the file, cn7 added.
    let before = std::fs::read_to_string(site.path("hosts.json")).unwrap();
    let mut hosts: serde_json::Value = serde_json::from_str(&before).unwrap();
    let mut cn7 = hosts[0].clone();
    cn7["name"] = "cn7".into();
    cn7["interfaces"] = serde_json::json!([{"ip": "10.0.0.7/24", "mac": "aa:bb:cc:00:00:07"}]);
    hosts.as_array_mut().unwrap().push(cn7);
    site.write("hosts.json", &hosts.to_string());
    wait("cn7 added", &|| provisioned("cn7") == Some(true));
    assert_eq!(provisioned("cn1"), Some(false), "cn1's state was reset");

    // hosts.json truncated to nothing (not JSON), and images.toml down to a comment (a
    // TOML file of no entries): both refused, nothing deleted.
    site.write("hosts.json", "");
    wait("the empty file refused", &|| {
        server
            .log()
            .matches("inventory reload (file change) refused")
            .count()
            >= 1
    });
    site.write("hosts.json", &hosts.to_string());
    wait("the file restored", &|| {
        server
            .log()
            .contains("0 hosts and 0 images new or changed applied")
    });
    std::fs::copy(site.path("images.toml"), site.path("images.toml.orig")).unwrap();
    site.write("images.toml", "# images move to the new rack\n");
    wait("the file of no hosts refused", &|| {
        server.log().contains("now holds no entries")
    });
    assert_eq!(provisioned("cn1"), Some(false));
    assert_eq!(provisioned("cn7"), Some(true));

    // `[]`: the file's hosts are removed on purpose (images.toml put back first).
    let images = std::fs::read_to_string(site.path("images.toml.orig")).unwrap();
    site.write("images.toml", &images);
    site.write("hosts.json", "[]");
    wait("[] empties the file's hosts", &|| {
        provisioned("cn1").is_none() && provisioned("cn7").is_none()
    });
    drop(server);
}

/// `/metrics` on the boot port is served by default and removed by
/// `provision.metrics = false` (boot networks where the counters are not for everyone).
#[test]
fn metrics_route_can_be_turned_off() {
    let status = |metrics: Option<&str>| -> (String, String) {
        let site = Site::new();
        if let Some(m) = metrics {
            let cfg = std::fs::read_to_string(site.path("xboot.toml")).unwrap();
            let cfg = cfg.replace("[provision]\n", &format!("[provision]\nmetrics = {m}\n"));
            site.write("xboot.toml", &cfg);
        }
        let server = Server::start(&site);
        let log = server.log();
        let port = log
            .split("HTTP serving on Some(127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap_or_else(|| panic!("no HTTP port in {log}"))
            .to_string();
        let get = |path: &str| {
            let out = testlab::peers::command("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{port}{path}"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let r = (get("/metrics"), get("/"));
        drop(server);
        r
    };
    assert_eq!(status(None), ("200".into(), "200".into()));
    assert_eq!(status(Some("false")), ("404".into(), "200".into()));
}

/// A full disk fails the change that met it, with a clear error, and once there is
/// space again the next change is saved without a restart (redb refuses every operation
/// after an I/O error, so the store opens its file again). The state dir is a 2 MiB
/// tmpfs mounted in a private mount namespace of the server; the test fills it through
/// /proc/PID/root.
#[test]
fn store_recovers_after_the_disk_was_full() {
    if crate::netns::need_root() {
        return;
    }
    let site = Site::new();
    let state = site.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mount = format!(
        "mount -t tmpfs -o size=2m xboot-test {} && exec \"$@\"",
        state.display()
    );
    let config = site.path("xboot.toml");
    let mut cmd = testlab::peers::command("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &mount])
        .args(["sh", XBOOT, "serve", "--config", &config]);
    let server = Server::start_with(&site, cmd);
    let sock = site.path("run/api.socket");
    let add = |name: &str, n: u8| {
        let (mac, ip) = (format!("aa:bb:cc:00:00:{n:02x}"), format!("10.0.0.{n}/24"));
        xboot(&[
            "host", "add", name, "--mac", &mac, "--ip", &ip, "--socket", &sock,
        ])
    };
    assert!(add("cn2", 2).status.success());
    // Fill the server's tmpfs.
    let inside = PathBuf::from(format!("/proc/{}/root", server.child.id()))
        .join(state.strip_prefix("/").unwrap());
    let filler = inside.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
    }
    let mut failed = 0;
    for n in 3..6 {
        let out = add(&format!("cn{n}"), n);
        if !out.status.success() {
            failed += 1;
            let (_, stderr) = text(&out);
            assert!(stderr.contains("inventory.redb"), "{stderr}");
        }
    }
    assert!(failed > 0, "no change failed on a full disk");
    std::fs::remove_file(&filler).unwrap();
    let out = add("cn9", 9);
    assert!(
        out.status.success(),
        "a change after space is back: {:?}\n{}",
        text(&out),
        server.log()
    );
    assert!(host_names(&site).contains(&"cn9".to_string()));
    let log = server.stop();
    assert!(log.contains("opened again"), "{log}");
    // The store holds what was acknowledged (read without the tmpfs: it is gone).
    let _ = log;
}

/// kill -9 in the middle of a storm of `complete` reports loses none that was answered
/// ok (each is answered after its commit), and the binding to the boot survives the
/// restart: an answered boot cannot complete again, a boot whose kernel was served
/// before the kill still can.
#[test]
fn kill_9_during_a_complete_storm_loses_no_acknowledged_complete() {
    const N: usize = 60;
    let site = Site::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hosts: Vec<serde_json::Value> = (1..=N)
        .map(|n| {
            serde_json::json!({"name": format!("cn{n}"), "provision": true, "boot_image": "img",
                "interfaces": [{"mac": format!("aa:bb:cc:00:01:{n:02x}"), "ip": format!("10.0.1.{n}/24")}]})
        })
        .collect();
    site.write("hosts.json", &serde_json::to_string(&hosts).unwrap());
    let cfg = std::fs::read_to_string(site.path("xboot.toml"))
        .unwrap()
        .replace(
            "[provision]\nlisten = \"127.0.0.1:0\"\n",
            &format!("[provision]\nlisten = \"127.0.0.1:{port}\"\nsecret = \"storm\"\n"),
        );
    site.write("xboot.toml", &cfg);
    let signer = xboot::http::UrlSigner::new(
        &format!("http://127.0.0.1:{port}"),
        xboot::http::TokenKey::from_secret("storm"),
        Duration::from_secs(3600),
    );
    let urls: Vec<(String, String)> = (1..=N)
        .map(|n| {
            let mac = format!("aa:bb:cc:00:01:{n:02x}").parse().unwrap();
            let e = signer.endpoints(&format!("cn{n}"), mac, "127.0.0.1".parse().unwrap());
            (e.kernel(), e.complete())
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let post = |url: String| {
        let http = http.clone();
        async move {
            match http.post(&url).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        }
    };
    let mut server = Server::start(&site);
    rt.block_on(async {
        for (kernel, _) in &urls {
            let r = http.get(kernel).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    });
    // The storm, killed once a third has been answered.
    let acked: Vec<usize> = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (_, complete)) in urls.iter().enumerate() {
            let f = post(complete.clone());
            tasks.spawn(async move { (i, f.await) });
        }
        let mut acked = Vec::new();
        let mut killed = false;
        while let Some(r) = tasks.join_next().await {
            let (i, status) = r.unwrap();
            if status == 200 {
                acked.push(i);
            }
            if !killed && acked.len() >= N / 3 {
                server.child.kill().unwrap();
                killed = true;
            }
        }
        acked
    });
    server.child.wait().unwrap();
    assert!(
        acked.len() >= N / 3 && acked.len() < N,
        "{} acknowledged",
        acked.len()
    );
    let server = Server::start(&site);
    let out = xboot(&[
        "host",
        "list",
        "--json",
        "--socket",
        &site.path("run/api.socket"),
    ]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let provision = |i: usize| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == format!("cn{}", i + 1))
            .unwrap()["provision"]
            .as_bool()
            .unwrap()
    };
    let lost: Vec<usize> = acked.iter().copied().filter(|&i| provision(i)).collect();
    assert!(lost.is_empty(), "acknowledged completes lost: {lost:?}");
    // After the restart: an acknowledged boot is refused again, one that never reported
    // (its kernel served before the kill) completes.
    let pending: Vec<usize> = (0..N).filter(|&i| provision(i)).collect();
    rt.block_on(async {
        assert_eq!(post(urls[acked[0]].1.clone()).await, 409);
        if let Some(&i) = pending.first() {
            assert_eq!(post(urls[i].1.clone()).await, 200);
        }
    });
    drop(server);
}

/// `xboot db restore` of a Grendel `db dump` (users, numeric ids, uids, `null` lists),
/// tags through `host tag/untag` and `--tags`, and `xboot db dump` output restoring to
/// the same inventory, all through the CLI and the running server's API. A restore that
/// does not validate changes nothing.
#[test]
fn db_dump_restore_and_tags_through_the_cli() {
    let site = Site::new();
    let sock = site.path("run/api.socket");
    let _server = Server::start(&site);
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--socket", &sock]);
        let out = xboot(&all);
        assert!(out.status.success(), "{args:?}: {:?}", text(&out));
        text(&out)
    };
    let grendel = site.write(
        "grendel-dump.json",
        r#"{"Users": [{"id": 1, "username": "admin", "hash": "$2a$10$x", "role": "admin",
                       "enabled": true, "created_at": "2026-01-05T10:00:00Z", "modified_at": "2026-01-05T10:00:00Z"}],
            "Hosts": [
              {"id": 4, "uid": "2aB3cD4eF5gH6iJ7kL8mN9oP0qR", "name": "tux1", "provision": true,
               "firmware": "", "boot_image": "rocky", "tags": null, "bonds": null,
               "interfaces": [{"id": 7, "mac": "52:54:00:a0:00:01", "ifname": "eno1", "ip": "10.20.0.11/24",
                               "fqdn": "tux1.example", "bmc": false, "vlan": "", "mtu": 1500},
                              {"id": 8, "mac": "", "ifname": "", "ip": "10.21.0.11/24", "fqdn": "",
                               "bmc": true, "vlan": ""}]},
              {"id": 5, "uid": "2aB3cD4eF5gH6iJ7kL8mN9oP0qS", "name": "tux2", "provision": true,
               "firmware": "", "boot_image": "rocky", "tags": ["gpu"], "bonds": null,
               "interfaces": [{"id": 9, "mac": "52:54:00:a0:00:02", "ifname": "eno1", "ip": "10.20.0.12/24",
                               "fqdn": "", "bmc": false, "vlan": ""}]}],
            "Images": [{"id": 2, "uid": "2zY8xW7vU6tS5rQ4pO3nM2lK1jI", "name": "rocky",
                        "kernel": "boot/vmlinuz", "initrd": ["boot/initrd.img"], "liveimg": "",
                        "cmdline": "console=ttyS0", "verify": false, "provision_templates": null}]}"#,
    );
    let (stdout, stderr) = run(&["db", "restore", &grendel]);
    assert!(
        stdout.starts_with("restored 2 hosts and 1 image"),
        "{stdout}"
    );
    assert!(stderr.contains("1 user skipped (admin)"), "{stderr}");
    // Replaced: cn1 of hosts.json is gone.
    assert_eq!(host_names(&site), ["tux1", "tux2"]);

    // Tags.
    let (stdout, _) = run(&["host", "tag", "all", "compute", "rack:a1"]);
    assert_eq!(stdout, "tag compute,rack:a1: tux[1-2] (2 hosts)\n");
    let (stdout, _) = run(&["host", "untag", "tux1", "rack:a1"]);
    assert_eq!(stdout, "untag rack:a1: tux1 (1 host)\n");
    let (stdout, _) = run(&["host", "list", "--tags", "gpu", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v[0]["name"], "tux2");
    assert_eq!(
        v[0]["tags"],
        serde_json::json!(["gpu", "compute", "rack:a1"])
    );
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (stdout, _) = run(&["host", "unprovision", "--tags", "rack:a1"]);
    assert_eq!(stdout, "unprovision: tux2 (1 host)\n");

    // Dump, change, restore: the dumped inventory comes back exactly.
    let dump = site.path("dump.json");
    run(&["db", "dump", "-o", &dump]);
    let first = std::fs::read_to_string(&dump).unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["Hosts"][0]["id"], 4, "numeric ids stay numbers");
    assert_eq!(v["Hosts"][0]["uid"], "2aB3cD4eF5gH6iJ7kL8mN9oP0qR");
    run(&["host", "delete", "all"]);
    assert!(host_names(&site).is_empty());
    run(&["db", "restore", &dump]);
    let (again, _) = run(&["db", "dump"]);
    assert_eq!(again, first);

    // A dump that does not validate: refused with every problem, nothing changed.
    let bad = site.write(
        "bad-dump.json",
        &first
            .replace("\"boot_image\": \"rocky\"", "\"boot_image\": \"missing\"")
            .replace("52:54:00:a0:00:02", "52:54:00:a0:00:01"),
    );
    let out = xboot(&["db", "restore", &bad, "--socket", &sock]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing"), "{stderr}");
    assert!(stderr.contains("52:54:00:a0:00:01"), "{stderr}");
    let (after, _) = run(&["db", "dump"]);
    assert_eq!(after, first);
    // Not an inventory at all: refused before anything is sent.
    let junk = site.write("junk.json", "[1, 2]");
    let out = xboot(&["db", "restore", &junk, "--socket", &sock]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let (after, _) = run(&["db", "dump"]);
    assert_eq!(after, first);
}

/// Grendel's `provision.default_image`: a provisioned host without `boot_image` is valid
/// and boots the default (check-config passes, serve starts, the boot answers name the
/// image's script and cmdline); a default naming no image is refused, naming the key.
#[test]
fn provision_default_image_boots_hosts_without_boot_image() {
    let site = Site::new();
    let cfg = site.path("xboot.toml");
    let text_cfg = std::fs::read_to_string(&cfg).unwrap();
    site.write(
        "xboot.toml",
        &format!("{text_cfg}default_image = \"img\"\n"),
    );
    site.write(
        "hosts.json",
        r#"[{"name":"cn1","provision":true,"firmware":"",
             "interfaces":[{"ip":"10.0.0.1/24","mac":"aa:bb:cc:00:00:01","bmc":false}]}]"#,
    );
    let out = xboot(&["check-config", "--config", &cfg]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !stderr.contains("default_image"),
        "not warned any more: {stderr}"
    );
    let server = Server::start(&site);
    let out = xboot(&[
        "--config",
        &cfg,
        "host",
        "show",
        "cn1",
        "--boot",
        "--server",
        "10.0.0.254",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("#!ipxe"), "{stdout}");
    assert!(stdout.contains("  BOOTIF=01-aa-bb-cc-00-00-01"), "{stdout}");
    // The host keeps its empty boot_image (the default is not written into it).
    let out = xboot(&[
        "host",
        "show",
        "cn1",
        "--socket",
        &site.path("run/api.socket"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["boot_image"], "");
    server.stop();

    site.write(
        "xboot.toml",
        &format!("{text_cfg}default_image = \"gone\"\n"),
    );
    let out = xboot(&["check-config", "--config", &cfg]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "provision.default_image \"gone\" is not an image, and hosts cn1 name no boot_image"
        ),
        "{stderr}"
    );
}

/// Standalone key rotation: `xboot token-key rotate` rewrites `state_dir/token.key`, the
/// running server reads it again within a second, and neither the tokens minted before
/// nor those minted after (by the new key, two seconds later) are refused meanwhile; a
/// key derived from `provision.secret` is not rotated, and a key file that stops
/// reading leaves the server on the ring it had.
#[test]
fn token_key_rotation_standalone_refuses_no_token() {
    let site = Site::new();
    let cfg = site.path("xboot.toml");
    let server = Server::start(&site);
    let log = server.log();
    let port = log
        .split("HTTP serving on Some(127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no HTTP port in {log}"))
        .to_string();
    let socket = site.path("run/api.socket");
    let mint = || {
        let out = xboot(&[
            "--config",
            &cfg,
            "--socket",
            &socket,
            "host",
            "show",
            "cn1",
            "--boot",
            "--server",
            "127.0.0.1",
        ]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        stdout
            .split("/boot/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("no boot URL in {stdout}"))
            .to_string()
    };
    let kid = |token: &str| {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .unwrap();
        hex::encode(&raw[1..5])
    };
    let kernel = |token: &str| {
        let out = testlab::peers::command("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}/boot/{token}/kernel"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let old = mint();
    assert_eq!(kernel(&old), "kernel\n200");
    let out = xboot(&["--config", &cfg, "token-key", "rotate"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[1].starts_with(&kid(&old)) && lines[1].contains("signing"),
        "{stdout}"
    );
    assert!(lines[2].contains("pending"), "{stdout}");
    let new_kid = lines[2].split_whitespace().next().unwrap().to_string();
    // Old and fresh tokens, every 100 ms, until the new key has signed for a while.
    let t0 = Instant::now();
    let mut first_new = None;
    while first_new.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(2)) {
        let fresh = mint();
        for t in [&old, &fresh] {
            assert_eq!(kernel(t), "kernel\n200", "{}", server.log());
        }
        if kid(&fresh) == new_kid && first_new.is_none() {
            first_new = Some(Instant::now());
        } else {
            assert!(kid(&fresh) == new_kid || kid(&fresh) == kid(&old));
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the new key never signed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.log().contains("read again"), "{}", server.log());
    let out = xboot(&["--config", &cfg, "token-key", "show", "--json"]);
    let ring: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ring[0]["state"], "retired", "{ring}");
    assert_eq!(ring[1]["state"], "signing", "{ring}");

    // A key file that no longer reads: the server keeps its ring, the CLI says why.
    let key_file = site.path("state/token.key");
    let good = std::fs::read_to_string(&key_file).unwrap();
    std::fs::write(&key_file, "not a key").unwrap();
    let out = xboot(&["--config", &cfg, "token-key", "show"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("corrupt"), "{}", text(&out).1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(kernel(&old), "kernel\n200");
    assert!(
        server.log().contains("the keyring in use stays"),
        "{}",
        server.log()
    );
    std::fs::write(&key_file, good).unwrap();
    drop(server);

    // provision.secret: the key is the secret's, rotation is refused.
    let with_secret = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[provision]\n", "[provision]\nsecret = \"s3cret\"\n");
    site.write("xboot.toml", &with_secret);
    let out = xboot(&["--config", &cfg, "token-key", "rotate"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("provision.secret is set"),
        "{}",
        text(&out).1
    );
}
