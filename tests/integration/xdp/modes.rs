//! `xboot serve` on the default `dhcp.mode` (XDP): in the namespace lab it attaches the
//! program and a real client (busybox udhcpc) is answered by it; started without CAP_BPF
//! (setpriv's bounding set, as a pod granted NET_ADMIN only) it falls back to userspace
//! with one warning naming the reason and still serves the client; with `mode = "xdp"`
//! written in the config, the same start is an error.
use std::path::Path;
use std::time::Duration;

use testlab::net;
use testlab::serve::{self, LabFiles, Server};

use crate::netns::{self, Netns};

/// The PXE lab (srv0 <=> up0 on br0), the lab's files with the default config, and the
/// client side given the inventory node's MAC (udhcpc runs on br0).
fn lab(name: &str, dir: &Path) -> (Netns, Netns, LabFiles) {
    let srv = Netns::new(&format!("{name}-s"));
    let cli = Netns::new(&format!("{name}-c"));
    net::build(&srv.name, &cli.name).unwrap_or_else(|e| panic!("{e}"));
    cli.set_mac("br0", net::VM_MAC);
    // No VM boots here: stand-in kernel and initrd files for the image.
    let payload = testlab::payload::Payload {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd"),
        kernel_version: "0".into(),
    };
    for f in [&payload.kernel, &payload.initrd] {
        std::fs::write(f, b"not booted").unwrap();
    }
    let files = serve::write_lab_files(&dir.join("lab"), &payload).unwrap();
    (srv, cli, files)
}

/// The capability sets of a pod granted NET_ADMIN (plus what binding ports 67, 69 and
/// 8080 and the raw DHCP and RA sockets need): no CAP_BPF, no CAP_SYS_ADMIN. `extra`
/// adds capabilities.
fn without_bpf(extra: &str) -> Vec<String> {
    vec![
        testlab::peers::program("setpriv").to_string(),
        "--inh-caps=-all".into(),
        format!("--bounding-set=-all,+net_admin,+net_raw,+net_bind_service{extra}"),
        "--".into(),
    ]
}

/// busybox udhcpc on br0: the leased address, or None.
fn lease(cli: &Netns, dir: &Path) -> Option<String> {
    let out = dir.join("udhcpc.env");
    let (ok, env) = crate::udhcpc::udhcpc(cli, dir, &out, "br0", 5, &[]);
    ok.then(|| crate::dhcp::env_value(&env, "ip")).flatten()
}

/// `xboot status --json`'s counters.
fn counters(server: &Server) -> serde_json::Value {
    server.status().unwrap_or_else(|e| panic!("{e}"))["counters"].clone()
}

/// The log's warning lines about XDP (not, e.g., the TFTP root's links to outside it).
fn warnings(files: &LabFiles) -> Vec<String> {
    std::fs::read_to_string(&files.log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("XDP"))
        .map(String::from)
        .collect()
}

fn xboot() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xboot"))
}

const START: Duration = Duration::from_secs(30);

#[test]
fn default_mode_answers_through_xdp() {
    if netns::need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (srv, cli, files) = lab("xdpdef", dir.path());
    let server = Server::start(xboot(), &srv.name, files, START).unwrap_or_else(|e| panic!("{e}"));
    let log = || std::fs::read_to_string(&server.files.log).unwrap();
    let got = lease(&cli, dir.path());
    assert_eq!(
        got.as_deref(),
        Some(net::VM_IP),
        "{}\n{}",
        counters(&server),
        log()
    );
    let c = counters(&server);
    assert!(
        c["xdp"]["answered"].as_u64().unwrap_or(0) >= 2,
        "OFFER and ACK from XDP: {c}"
    );
    assert_eq!(
        (&c["dhcp"]["offers"], &c["dhcp"]["acks"]),
        (&0.into(), &0.into()),
        "{c}"
    );
    let log = std::fs::read_to_string(&server.files.log).unwrap();
    assert!(log.contains("XDP attached to srv0 (Native)"), "{log}");
    assert_eq!(warnings(&server.files), Vec::<String>::new());
    drop(server);
    drop((cli, srv));
}

/// The lab node with a BMC interface of its own MAC and address; the client side takes
/// the BMC's MAC. Through XDP, udhcpc gets the BMC's address and no boot file.
#[test]
fn bmc_interface_gets_its_lease_through_xdp() {
    if netns::need_root() {
        return;
    }
    const BMC_MAC: &str = "52:54:00:77:00:b1";
    const BMC_IP: &str = "10.77.0.60";
    let dir = tempfile::tempdir().unwrap();
    let (srv, cli, files) = lab("xdpbmc", dir.path());
    let mut hosts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files.hosts).unwrap()).unwrap();
    hosts[0]["interfaces"].as_array_mut().unwrap().push(
        serde_json::json!({"mac": BMC_MAC, "ip": format!("{BMC_IP}/{}", net::PREFIX), "bmc": true}),
    );
    std::fs::write(&files.hosts, hosts.to_string()).unwrap();
    cli.set_mac("br0", BMC_MAC);
    let server = Server::start(xboot(), &srv.name, files, START).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("udhcpc.env");
    let (ok, env) = crate::udhcpc::udhcpc(&cli, dir.path(), &out, "br0", 5, &[]);
    let c = counters(&server);
    assert!(ok, "udhcpc on the BMC NIC got no lease: {c}");
    let v = |k: &str| crate::dhcp::env_value(&env, k);
    assert_eq!(v("ip").as_deref(), Some(BMC_IP), "{env}");
    assert_eq!(v("boot_file"), None, "{env}");
    assert_eq!(v("siaddr").filter(|s| s != "0.0.0.0"), None, "{env}");
    assert!(
        c["xdp"]["answered"].as_u64().unwrap_or(0) >= 2,
        "OFFER and ACK from XDP: {c}"
    );
    assert_eq!(
        (&c["dhcp"]["offers"], &c["dhcp"]["acks"]),
        (&0.into(), &0.into()),
        "{c}"
    );
    drop(server);
    drop((cli, srv));
}

#[test]
fn default_mode_without_cap_bpf_falls_back_with_one_warning() {
    if netns::need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (srv, cli, files) = lab("xdpfb", dir.path());
    let server = Server::start_wrapped(xboot(), &srv.name, files, START, &without_bpf(""))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lease(&cli, dir.path()).as_deref(), Some(net::VM_IP));
    let c = counters(&server);
    assert!(c["xdp"].is_null(), "no fast path: {c}");
    assert!(c["dhcp"]["acks"].as_u64().unwrap_or(0) >= 1, "{c}");
    let w = warnings(&server.files);
    assert_eq!(w.len(), 1, "one warning: {w:#?}");
    for want in [
        "DHCP from userspace only",
        "the XDP fast path",
        "lacks CAP_BPF",
    ] {
        assert!(w[0].contains(want), "{want:?} not in {}", w[0]);
    }
    drop(server);
    drop((cli, srv));
}

/// CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN are enough (no CAP_SYS_ADMIN): the sets a
/// hardened unit grants. (Without CAP_PERFMON this kernel's verifier refuses the
/// program's pointer arithmetic "for !root".)
#[test]
fn default_mode_with_cap_bpf_and_net_admin_attaches() {
    if netns::need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (srv, cli, files) = lab("xdpbpf", dir.path());
    let server = Server::start_wrapped(
        xboot(),
        &srv.name,
        files,
        START,
        &without_bpf(",+bpf,+perfmon"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lease(&cli, dir.path()).as_deref(), Some(net::VM_IP));
    let c = counters(&server);
    let log = std::fs::read_to_string(&server.files.log).unwrap();
    assert!(
        c["xdp"]["answered"].as_u64().unwrap_or(0) >= 2,
        "{c}\n{log}"
    );
    assert_eq!(warnings(&server.files), Vec::<String>::new());
    drop(server);
    drop((cli, srv));
}

#[test]
fn explicit_xdp_without_cap_bpf_is_an_error() {
    if netns::need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (srv, _cli, files) = lab("xdpex", dir.path());
    serve::set_dhcp_mode(&files, "xdp").unwrap();
    let log = files.log.clone();
    let err = Server::start_wrapped(xboot(), &srv.name, files, START, &without_bpf(""))
        .err()
        .expect("an explicit xdp that cannot start stops the server");
    assert!(err.contains("exited"), "{err}");
    let text = std::fs::read_to_string(log).unwrap();
    for want in [
        "dhcp.mode = \"xdp\": the XDP fast path cannot start",
        "lacks CAP_BPF",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
}
