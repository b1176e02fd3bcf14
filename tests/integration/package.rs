//! The deployable forms, as users deploy them: the Debian package installed with dpkg
//! and its systemd unit (checked by systemd-analyze, and its privileges re-created with
//! setpriv, PID 1 here not being systemd), and the OCI image's root filesystem run with
//! ClusterFactory's chart's arguments and capability. Both are built from the binary of
//! this test run (`testlab::package`, as `cargo xtask package` builds them from a
//! release), each serves a real DHCP client (busybox udhcpc).
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use testlab::package::{self, Built};

use crate::netns::{self, Netns};

const XBOOT: &str = env!("CARGO_BIN_EXE_xboot");

/// Where the package installs the binary.
const INSTALLED: &str = "/usr/bin/xboot";

/// A uid/gid of systemd's DynamicUser range (61184-65519) that no account uses here.
const DYNAMIC_UID: u32 = 61184;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A private mount namespace (inside the network namespace `ns`) in which /etc, /usr and
/// /var are overlays whose changes land in a temp dir, and /run is a fresh tmpfs: dpkg
/// installs into the machine's own file system and package database as seen from there,
/// and nothing of it outlives the namespace (the machine is left as it was even when the
/// test fails half-way, and tests running meanwhile never see the package).
struct Overlay<'a> {
    /// The holder process (`sleep`) whose mount namespace it is; the namespace `ns` of
    /// [`Overlay::new`] kills it too when dropped, so an overlay never outlives it.
    pid: u32,
    _ns: std::marker::PhantomData<&'a Netns>,
}

impl<'a> Overlay<'a> {
    fn new(ns: &'a Netns, dir: &Path) -> Overlay<'a> {
        let mut script = String::from("set -e\n");
        for d in ["etc", "usr", "var"] {
            let (u, w) = (
                dir.join(format!("{d}.upper")),
                dir.join(format!("{d}.work")),
            );
            std::fs::create_dir_all(&u).unwrap();
            std::fs::create_dir_all(&w).unwrap();
            script += &format!(
                "mount -t overlay overlay -o lowerdir=/{d},upperdir={},workdir={} /{d}\n",
                u.display(),
                w.display()
            );
        }
        let ready = dir.join("ready");
        script += &format!(
            "mount -t tmpfs -o mode=755 tmpfs /run\ntouch {}\nexec sleep 600\n",
            ready.display()
        );
        let pid = ns.spawn(
            &netns::private_mounts_sh(&script, &[]),
            Stdio::null(),
            Stdio::inherit(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "the overlay namespace never came up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Overlay {
            pid,
            _ns: std::marker::PhantomData,
        }
    }

    /// A command run in the overlay (and the network namespace), through nsenter: a
    /// listed peer, or the installed xboot (the project's own binary, from the package).
    fn cmd(&self, argv: &[&str]) -> std::process::Command {
        let mut c = testlab::peers::command("nsenter");
        c.arg(format!("--target={}", self.pid))
            .args(["--mount", "--net", "--"]);
        if argv[0] == INSTALLED {
            c.arg(INSTALLED);
        } else {
            c.arg(testlab::peers::path(argv[0]));
        }
        c.args(&argv[1..]);
        c
    }

    fn run(&self, argv: &[&str]) -> Output {
        netns::run(&mut self.cmd(argv))
    }

    /// Where `path` of the overlay is, seen from outside (through the holder's root).
    fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid))
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

/// One `Key=value` setting of a unit file's `[Service]` section (the last, as systemd
/// takes single-valued settings), if set.
fn unit_setting<'u>(unit: &'u str, key: &str) -> Option<&'u str> {
    unit.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// setpriv's capability list (`-all,+bpf,+net_admin`) of a unit's `CAP_BPF CAP_NET_ADMIN`.
fn setpriv_caps(unit_caps: &str) -> String {
    let mut s = String::from("-all");
    for c in unit_caps.split_whitespace() {
        s += ",+";
        s += &c.trim_start_matches("CAP_").to_lowercase();
    }
    s
}

/// The .deb of this build installs with dpkg; its files are where they belong (the
/// bundled iPXE as regular files, the example config as a conffile); the installed
/// `xboot check-config` accepts the installed example (found by the default search);
/// `systemd-analyze verify` accepts the unit and `security --offline` rates it under 3;
/// the installed binary, started as the unit starts it (its ExecStart, EnvironmentFile,
/// DynamicUser with StateDirectory and RuntimeDirectory, capability bounding and ambient
/// sets, NoNewPrivileges: re-created with setpriv, PID 1 here not being systemd), serves a
/// lease to udhcpc and the bundled iPXE over TFTP, holds no capability once serving, and
/// reloads on the unit's ExecReload signal; dpkg --purge removes it all. The file-system
/// and system-call settings of the unit are checked by systemd-analyze only.
#[test]
fn deb_installs_and_its_unit_serves_under_its_sandbox() {
    if netns::need_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let built = Built::new(XBOOT);
    let deb = package::deb(&built, &tmp.path().join("out")).unwrap();
    let deb_s = deb.display().to_string();

    // Contents: the binary, five iPXE files (no links), the unit, the example config.
    let listing = text(&netns::run(
        testlab::peers::command("dpkg-deb").args(["-c", &deb_s]),
    ));
    for (name, _) in package::FIRMWARE {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!("./usr/share/xboot/firmware/{name}")))
            .unwrap_or_else(|| panic!("no {name} in\n{listing}"));
        assert!(line.starts_with("-rw-r--r--"), "not a plain file: {line}");
    }
    for f in [
        "./usr/bin/xboot",
        "./lib/systemd/system/xboot.service",
        "./etc/xboot/xboot.toml",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(f)),
            "no {f} in\n{listing}"
        );
    }
    let control = tmp.path().join("control");
    netns::run(
        testlab::peers::command("dpkg-deb")
            .args(["-e", &deb_s])
            .arg(&control),
    );
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(conffiles.contains("/etc/xboot/xboot.toml"), "{conffiles}");

    let srv = Netns::new("deb-s");
    let cli = Netns::new("deb-c");
    Netns::veth(&srv, "s0", "10.77.0.1/24", &cli, "c0", "");
    cli.set_mac("c0", "02:00:00:0d:eb:01");
    // Native XDP_TX on veth needs a program on the peer too (as in the PXE tests): the
    // client's end gets a pass-everything instance.
    let mut peer = xboot::xdp::FastPath::load(xboot::xdp::LoadOptions::for_hosts(1)).unwrap();
    crate::xdp::clients::in_netns(&cli, || peer.attach("c0").unwrap());
    let ov = Overlay::new(&srv, tmp.path());
    let out = ov.run(&["dpkg", "-i", &deb_s]);
    eprintln!("{}", text(&out).trim());
    let status = text(&ov.run(&["dpkg", "-s", "xboot"]));
    assert!(status.contains("Status: install ok installed"), "{status}");

    // The installed check-config on the installed example, found without --config.
    let check = ov.cmd(&[INSTALLED, "check-config"]).output().unwrap();
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("/etc/xboot/xboot.toml"),
        "{}",
        text(&check)
    );

    // The unit, by systemd's own checks.
    let unit_path = "/lib/systemd/system/xboot.service";
    let verify = ov
        .cmd(&["systemd-analyze", "verify", unit_path])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    let security = ov
        .cmd(&["systemd-analyze", "security", "--offline=yes", unit_path])
        .output()
        .unwrap();
    let report = text(&security);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for xboot.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in\n{report}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(score < 3.0, "exposure {score}:\n{report}");

    // The unit's start, re-created: its environment file (written here as an admin
    // would: the inventory files), its dynamic user owning the state and runtime
    // directories, its capabilities and no-new-privileges.
    let unit = ov.read(unit_path);
    let setting = |k: &str| unit_setting(&unit, k).unwrap_or_else(|| panic!("no {k}= in the unit"));
    assert_eq!(setting("DynamicUser"), "yes");
    assert_eq!(setting("NoNewPrivileges"), "yes");
    let bounding = setting("CapabilityBoundingSet");
    assert_eq!(
        bounding,
        "CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE"
    );
    let ambient = setting("AmbientCapabilities");
    let exec: Vec<&str> = setting("ExecStart").split_whitespace().collect();
    let env_file = setting("EnvironmentFile").trim_start_matches('-');
    // The admin's edits: the NIC and the inventory files in the config (the example has
    // them commented out), a setting in the environment file.
    std::fs::write(
        ov.path("/etc/xboot/hosts.json"),
        r#"[{"name":"cn1","provision":true,"boot_image":"img1",
            "interfaces":[{"ip":"10.77.0.50/24","mac":"02:00:00:0d:eb:01"}]}]"#,
    )
    .unwrap();
    std::fs::write(
        ov.path("/etc/xboot/images.json"),
        r#"[{"name":"img1","kernel":"/var/lib/xboot/images/img1/vmlinuz","initrd":[]}]"#,
    )
    .unwrap();
    let example = std::fs::read_to_string(ov.path("/etc/xboot/xboot.toml")).unwrap();
    let edited = example
        .replace("# interface = \"eth1\"", "interface = \"s0\"")
        .replace("# hosts = ", "hosts = ")
        .replace("# images = ", "images = ");
    assert_ne!(edited, example);
    std::fs::write(ov.path("/etc/xboot/xboot.toml"), edited).unwrap();
    std::fs::write(ov.path(env_file), "XBOOT_DHCP_LEASE_TIME=2h\n").unwrap();
    let ids = format!("{DYNAMIC_UID}:{DYNAMIC_UID}");
    for d in [
        format!("/var/lib/{}", setting("StateDirectory")),
        format!("/run/{}", setting("RuntimeDirectory")),
    ] {
        ov.run(&[
            "sh",
            "-c",
            &format!("mkdir -p {d} && chown {ids} {d} && chmod 750 {d}"),
        ]);
    }
    // The image's kernel, where the admin keeps it.
    std::fs::create_dir_all(ov.path("/var/lib/xboot/images/img1")).unwrap();
    std::fs::write(ov.path("/var/lib/xboot/images/img1/vmlinuz"), b"a kernel").unwrap();
    let env_text = ov.read(env_file);
    let log = tmp.path().join("serve.log");
    let uid = format!("--reuid={DYNAMIC_UID}");
    let gid = format!("--regid={DYNAMIC_UID}");
    let bset = format!("--bounding-set={}", setpriv_caps(bounding));
    let inh = format!("--inh-caps={}", setpriv_caps(ambient));
    let amb = format!("--ambient-caps={}", setpriv_caps(ambient));
    let mut argv = vec![
        "setpriv",
        &uid,
        &gid,
        "--clear-groups",
        &bset,
        &inh,
        &amb,
        "--no-new-privs",
        "--",
    ];
    argv.extend(&exec);
    let mut cmd = ov.cmd(&argv);
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in env_text.lines().filter_map(|l| l.split_once('=')) {
        cmd.env(k, v);
    }
    /// The server, killed (and reaped) when dropped unless it has been waited for.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let mut server = Running(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let pid = server.0.id();

    // A lease for a real client, once the server is up.
    let dir = tmp.path();
    let (ok, env) = udhcpc(&cli, dir, &[]);
    assert!(ok, "no lease: {}", read_log());
    assert_eq!(
        crate::dhcp::env_value(&env, "ip").as_deref(),
        Some("10.77.0.50"),
        "{env}"
    );
    // From the environment file.
    assert_eq!(
        crate::dhcp::env_value(&env, "lease").as_deref(),
        Some("7200"),
        "{env}"
    );
    // Answered by the XDP program, which the unit's capabilities let the dynamic user
    // load.
    let text_log = read_log();
    assert!(text_log.contains("XDP attached to s0"), "{text_log}");
    // The bundled iPXE, the default TFTP root of the installed example.
    cli.run(&["ip", "addr", "add", "10.77.0.50/24", "dev", "c0"]);
    let got = dir.join("undionly.kpxe");
    cli.run(&[
        "tftp",
        "-m",
        "binary",
        "10.77.0.1",
        "-c",
        "get",
        "undionly.kpxe",
        got.to_str().unwrap(),
    ]);
    let bundled = std::fs::read(testlab::peers::file(package::FIRMWARE[0].1)).unwrap();
    assert_eq!(
        std::fs::read(&got).unwrap(),
        bundled,
        "not the bundled iPXE"
    );

    // Both answers from the XDP program (the installed CLI, on the installed config's
    // API socket).
    let out = ov.run(&[INSTALLED, "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answered = status["counters"]["xdp"]["answered"].as_u64().unwrap_or(0);
    assert!(answered >= 2, "{status}");
    assert_eq!(status["counters"]["dhcp"]["acks"], 0, "{status}");

    // Serving, every thread holds nothing, as the dynamic user.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for key in ["CapEff:", "CapPrm:"] {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            assert!(line.ends_with("0000000000000000"), "{line}: {}", read_log());
        }
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(uid.contains(&DYNAMIC_UID.to_string()), "{uid}");
    }

    // ExecReload: SIGHUP re-reads the inventory files.
    assert!(setting("ExecReload").contains("-HUP"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read_log().contains("SIGHUP") {
        assert!(
            Instant::now() < deadline,
            "no reload on SIGHUP: {}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = server.0.wait().unwrap();
    assert!(exit.success(), "{exit}: {}", read_log());

    // Uninstalled: nothing of it is left (the overlay goes with the namespace anyway).
    ov.run(&["dpkg", "--purge", "xboot"]);
    for gone in ["/usr/bin/xboot", "/etc/xboot/xboot.toml", unit_path] {
        let out = ov
            .cmd(&["sh", "-c", &format!("test -e {gone}")])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{gone} left after purge");
    }
    drop(ov);
    drop(peer);
}

impl Drop for Overlay<'_> {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The image's entrypoint and command, from its OCI config (index -> manifest -> config).
fn image_config(layout: &Path) -> (Vec<String>, Vec<String>, serde_json::Value) {
    let blob = |digest: &str| -> serde_json::Value {
        let (alg, hex) = digest.split_once(':').unwrap();
        let body = std::fs::read(layout.join("blobs").join(alg).join(hex)).unwrap();
        serde_json::from_slice(&body).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let c = &config["config"];
    (strings(&c["Entrypoint"]), strings(&c["Cmd"]), c.clone())
}

/// ClusterFactory's chart with xboot's image in place of Grendel's: the image (built
/// from scratch by umoci, no registry) is unpacked as a container runtime would, its
/// root filesystem gets the chart's volumes (the guide's grendel.toml at /secret, the
/// inventory ConfigMap at /config in the kubelet's `..data` layout, the image files at
/// /var/lib/grendel), and its entrypoint runs with the chart's exact arguments as root
/// holding CAP_NET_ADMIN only (the chart's `capabilities.add`; setpriv and capsh), in a
/// pod namespace whose interface is a macvlan in bridge mode (the chart uses Multus
/// ipvlan L2, which this kernel lacks) over a veth of the test's node namespace, and
/// with `net.ipv4.ip_unprivileged_port_start = 0`, as containerd and CRI-O set in every
/// pod. A real client (udhcpc, as iPXE by its user class) gets its lease and boot script
/// URL, curl gets the script, and a ConfigMap update (a new host) gives a second client
/// MAC its lease.
#[test]
fn oci_image_serves_with_the_charts_arguments_over_macvlan_and_net_admin_only() {
    if netns::need_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let image = package::image(&Built::new(XBOOT), &root.join("out")).unwrap();
    assert!(image.archive.is_file());
    let (entrypoint, cmd, config) = image_config(&image.layout);
    assert_eq!(entrypoint, ["/usr/bin/xboot"], "{config}");
    assert_eq!(cmd, ["serve"], "{config}");
    let bundle = root.join("bundle");
    netns::run(testlab::peers::command("umoci").args([
        "unpack",
        "--image",
        &image.reference(),
        bundle.to_str().unwrap(),
    ]));
    let rootfs = bundle.join("rootfs");
    for (name, _) in package::FIRMWARE {
        let p = rootfs.join(package::FIRMWARE_DIR).join(name);
        assert!(p.symlink_metadata().unwrap().is_file(), "{}", p.display());
    }
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
    for d in package::IMAGE_DIRS {
        assert!(rootfs.join(d).is_dir(), "no /{d} in the image");
    }
    // Nothing but what the image holds: no shell, no system.
    assert!(!rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin/sh").exists());

    // The chart's volumes.
    let repo = crate::cli::repo_config();
    let secret = root.join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::copy(repo.join("grendel.toml"), secret.join("grendel.toml")).unwrap();
    let hosts = std::fs::read_to_string(repo.join("examples/hosts.json")).unwrap();
    let images = std::fs::read_to_string(repo.join("examples/images.json")).unwrap();
    let mut volume = crate::cli::ConfigMapVolume::new(
        root.join("config"),
        &[("hosts.json", &hosts), ("images.json", &images)],
    );
    let var_lib = root.join("var-lib-grendel");
    std::fs::create_dir(&var_lib).unwrap();
    let guide_images: serde_json::Value = serde_json::from_str(&images).unwrap();
    for img in guide_images.as_array().unwrap() {
        for f in img["initrd"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&img["kernel"]])
        {
            let name = Path::new(f.as_str().unwrap())
                .strip_prefix("/var/lib/grendel")
                .unwrap();
            std::fs::write(var_lib.join(name), b"guide image file").unwrap();
        }
    }

    // The node, the pod (macvlan over the node's veth) and a booting machine.
    let node = Netns::new("oci-n");
    let pod = Netns::new("oci-p");
    let cli = Netns::new("oci-c");
    Netns::veth(&node, "lan0", "", &cli, "c0", "");
    let guide: serde_json::Value = serde_json::from_str(&hosts).unwrap();
    let cn1_mac = guide[0]["interfaces"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    cli.set_mac("c0", &cn1_mac);
    node.run(&[
        "ip", "link", "add", "pod0", "link", "lan0", "type", "macvlan", "mode", "bridge",
    ]);
    node.run(&["ip", "link", "set", "pod0", "netns", &pod.name]);
    pod.run(&["ip", "addr", "add", "192.168.0.3/24", "dev", "pod0"]);
    pod.run(&["ip", "link", "set", "pod0", "up"]);
    pod.run(&["sysctl", "-qw", "net.ipv4.ip_unprivileged_port_start=0"]);

    let r = rootfs.display();
    let script = format!(
        "set -e\n\
         mount --bind {} {r}/secret\n\
         mount --bind {} {r}/config\n\
         mount --bind {} {r}/var/lib/grendel\n\
         mkdir -p {r}/proc && mount -t proc proc {r}/proc\n\
         exec setpriv --bounding-set=-all,+net_admin,+sys_chroot,+setpcap --inh-caps=-all \
         --ambient-caps=-all -- capsh --chroot={r} --drop=cap_sys_chroot,cap_setpcap \
         --shell=\"$0\" -- \"$@\"\n",
        secret.display(),
        root.join("config").display(),
        var_lib.display(),
    );
    let chart_args = [
        "--debug",
        "--verbose",
        "serve",
        "-c",
        "/secret/grendel.toml",
        "--hosts",
        "/config/hosts.json",
        "--images",
        "/config/images.json",
        "--listen",
        "0.0.0.0",
    ];
    let mut argv = netns::private_mounts_sh(&script, &[&entrypoint[0]]);
    argv.extend(chart_args);
    let log = root.join("pod.log");
    let pid = pod.spawn(
        &argv,
        Stdio::null(),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // As iPXE: user class "iPXE" (option 77).
    let (ok, env) = udhcpc(&cli, root, &["-x", "0x4d:69505845"]);
    assert!(ok, "no lease: {}", read_log());
    let v = |k: &str| crate::dhcp::env_value(&env, k);
    assert_eq!(v("ip").as_deref(), Some("192.168.0.51"), "{env}");
    let url = v("bootfile")
        .or_else(|| v("boot_file"))
        .unwrap_or_else(|| panic!("no boot script URL in\n{env}"));
    assert!(url.starts_with("http://192.168.0.3/"), "{url}");
    // Only NET_ADMIN, in every set; and the userspace path answered (no CAP_BPF, no XDP).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let bnd = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    assert!(bnd.ends_with("0000000000001000"), "{bnd}");
    let pod_log = read_log();
    assert!(pod_log.contains("DEBUG"), "{pod_log}");
    // Without CAP_NET_RAW the replies went out as UDP broadcasts, said once.
    assert_eq!(pod_log.matches("(no CAP_NET_RAW)").count(), 1, "{pod_log}");

    cli.run(&["ip", "addr", "add", "192.168.0.51/24", "dev", "c0"]);
    let script_body = text(&cli.run(&["curl", "-sSf", "--max-time", "10", &url]));
    assert!(script_body.starts_with("#!ipxe"), "{script_body}");
    assert!(script_body.contains("kernel "), "{script_body}");
    cli.run(&["ip", "addr", "flush", "dev", "c0"]);

    // The kubelet's ConfigMap update: a new host, whose MAC then gets its lease.
    let mut more = guide.clone();
    let mut extra = more[0].clone();
    extra["name"] = "cf-added1".into();
    extra.as_object_mut().unwrap().remove("id");
    extra["interfaces"] = serde_json::json!([
        {"ip": "192.168.0.52/24", "mac": "02:00:00:00:10:00", "bmc": false}
    ]);
    more.as_array_mut().unwrap().push(extra);
    volume.update(&[
        ("hosts.json", &serde_json::to_string(&more).unwrap()),
        ("images.json", &images),
    ]);
    cli.set_mac("c0", "02:00:00:00:10:00");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, env) = udhcpc(&cli, root, &[]);
        if ok && crate::dhcp::env_value(&env, "ip").as_deref() == Some("192.168.0.52") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ConfigMap update was not picked up: {}",
            read_log()
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// busybox udhcpc on the client's `c0`, with extra arguments, until it has a lease (20
/// tries a second apart: the server may still be starting): whether it got one, and what
/// its hook saw.
fn udhcpc(cli: &Netns, dir: &Path, extra: &[&str]) -> (bool, String) {
    let out = dir.join("lease.env");
    let _ = std::fs::remove_file(&out);
    crate::udhcpc::udhcpc(cli, dir, &out, "c0", 20, extra)
}
