//! Real machines booting: qemu VMs (TCG) in a client namespace, bridged to a server
//! namespace.
//!
//! - The test payload on its own (direct kernel boot): busybox udhcpd gives the booted
//!   Linux its lease, busybox httpd serves the postscript and takes the completion POST.
//!   This checks the initrd the PXE tests and the demo rely on.
//! - Full PXE boots against `xboot serve` (DHCP, TFTP, HTTP): SeaBIOS + iPXE ROM, and
//!   OVMF + iPXE EFI ROM, up to the postscript having run and reported back; OVMF's own
//!   PXE (EDK2's TFTP client) up to the kernel booting, and the same with iPXE fetching
//!   the script, kernel and initrd over HTTPS (the CA in the firmware's TLS CA store).
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use testlab::net;
use testlab::payload::{self, Payload};
use testlab::qemu::{Boot, Firmware, Nic, Vm, VmSpec};
use testlab::serve::{self, Server};

use crate::netns::{self, Netns};

/// Generous: TCG on two shared cores, with other VMs possibly booting in parallel.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn workdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
}

fn payload() -> Payload {
    Payload::cached().unwrap_or_else(|e| panic!("{e}"))
}

/// The lab topology in two fresh namespaces (dropped, with everything in them, at the
/// end of the test).
fn lab(name: &str) -> (Netns, Netns) {
    let srv = Netns::new(&format!("{name}-s"));
    let cli = Netns::new(&format!("{name}-c"));
    net::build(&srv.name, &cli.name).unwrap_or_else(|e| panic!("{e}"));
    (srv, cli)
}

fn nic(cli: &Netns) -> Option<Nic> {
    Some(Nic::lab(&cli.name))
}

/// Prints when each payload marker appeared (seconds after qemu started); with
/// `XBOOT_TEST_SERIAL=1`, the whole console too.
fn report(what: &str, vm: &Vm) {
    if std::env::var_os("XBOOT_TEST_SERIAL").is_some() {
        for l in vm.lines() {
            eprintln!("  {:>6.2}s | {}", l.at.as_secs_f64(), l.text);
        }
    }
    let at = |m: &str| {
        vm.lines()
            .iter()
            .find(|l| l.text.contains(m))
            .map(|l| format!("{:.1}s", l.at.as_secs_f64()))
    };
    eprintln!(
        "{what}: booted {:?}, lease {:?}, postscript done {:?}, poweroff {:?}",
        at(payload::BOOTED),
        at(payload::LEASE),
        at(payload::POSTSCRIPT_DONE),
        at(payload::POWEROFF)
    );
}

fn line<'a>(vm: &'a Vm, marker: &str) -> &'a str {
    &vm_line(vm, marker).text
}

fn vm_line<'a>(vm: &'a Vm, marker: &str) -> &'a testlab::serial::Line {
    vm.lines()
        .iter()
        .find(|l| l.text.contains(marker))
        .unwrap_or_else(|| panic!("no {marker} line"))
}

/// The config, hosts.json and images.json the lab generates are what xboot loads.
#[test]
fn lab_config_and_inventory_load() {
    let dir = workdir("labcfg-");
    let p = Payload {
        kernel: "/k/vmlinuz".into(),
        initrd: "/k/initrd.gz".into(),
        kernel_version: "6".into(),
    };
    let files = serve::write_lab_files(&dir.path().join("lab"), &p).unwrap();
    let cfg = xboot::config::Config::load(&files.config).unwrap();
    assert_eq!(cfg.warnings(), Vec::<String>::new());
    assert_eq!(cfg.interface.names(), [net::SRV_IF]);
    assert_eq!(
        (cfg.dhcp.mode, cfg.dhcp.mode_explicit),
        (xboot::config::DhcpMode::Xdp, false),
        "the lab runs on the default mode"
    );
    assert_eq!(cfg.api.socket_path, files.socket);
    assert_eq!(
        cfg.provision.postscript.as_deref(),
        Some(files.postscript.as_path())
    );
    let hosts: Vec<xboot::inventory::model::Host> =
        serde_json::from_str(&std::fs::read_to_string(&files.hosts).unwrap()).unwrap();
    assert_eq!(hosts[0].name, serve::NODE);
    assert_eq!(hosts[0].interfaces[0].mac.unwrap().to_string(), net::VM_MAC);
    assert_eq!(hosts[0].interfaces[0].ip.as_deref(), Some("10.77.0.50/16"));
    let images: Vec<xboot::inventory::model::Image> =
        serde_json::from_str(&std::fs::read_to_string(&files.images).unwrap()).unwrap();
    assert_eq!(
        (images[0].name.as_str(), images[0].initrd.as_slice()),
        (serve::IMAGE, &["/k/initrd.gz".to_string()][..])
    );
}

/// Busybox udhcpd (static lease for the VM) and httpd (postscript + a CGI that stores
/// the completion POST) in the server namespace.
fn busybox_servers(srv: &Netns, dir: &Path) {
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("cgi-bin")).unwrap();
    std::fs::write(
        www.join("postscript.sh"),
        format!(
            "#!/bin/sh\necho \"{} host=$(hostname)\"\n",
            serve::POSTSCRIPT_MARK
        ),
    )
    .unwrap();
    let cgi = www.join("cgi-bin/complete");
    let body = dir.join("complete.txt");
    std::fs::write(
        &cgi,
        format!(
            "#!/bin/sh\nhead -c \"$CONTENT_LENGTH\" > {}\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n",
            body.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cgi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let leases = dir.join("udhcpd.leases");
    std::fs::write(&leases, "").unwrap();
    let conf = dir.join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 10.77.0.50\nend 10.77.0.99\ninterface {}\nlease_file {}\nstatic_lease {} {}\n\
             option subnet 255.255.0.0\noption router {}\noption dns {}\noption lease 3600\n",
            net::SRV_IF,
            leases.display(),
            net::VM_MAC,
            net::VM_IP,
            net::SRV_IP,
            net::SRV_IP
        ),
    )
    .unwrap();
    let log = |name: &str| Stdio::from(std::fs::File::create(dir.join(name)).unwrap());
    srv.spawn(
        &["busybox", "udhcpd", "-f", &conf.display().to_string()],
        log("udhcpd.log"),
        log("udhcpd.err"),
    );
    let listen = format!("{}:8080", net::SRV_IP);
    srv.spawn(
        &[
            "busybox",
            "httpd",
            "-f",
            "-p",
            &listen,
            "-h",
            &www.display().to_string(),
        ],
        log("httpd.log"),
        log("httpd.err"),
    );
    net::wait_listening(
        &srv.name,
        &[("udp", 67), ("tcp", 8080)],
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The payload alone: boots, leases its address from a real DHCP server, fetches and
/// runs the postscript, POSTs completion, powers off.
#[test]
fn payload_runs_postscript_after_dhcp() {
    if netns::need_root() {
        return;
    }
    let payload = payload();
    let dir = workdir("payload-");
    let (srv, cli) = lab("pay");
    busybox_servers(&srv, dir.path());
    let base = format!("http://{}:8080", net::SRV_IP);
    let append = format!(
        "console=ttyS0 panic=-1 quiet no_timer_check {}={base}/postscript.sh {}={base}/cgi-bin/complete",
        payload::PARAM_POSTSCRIPT,
        payload::PARAM_COMPLETE
    );
    let spec = VmSpec {
        boot: Boot::Direct {
            kernel: payload.kernel.clone(),
            initrd: payload.initrd.clone(),
            append,
        },
        nic: nic(&cli),
        serial: dir.path().join("serial.log"),
        memory_mb: 256,
    };
    let mut vm = Vm::start(&spec).unwrap();
    vm.wait_for(payload::POSTSCRIPT_DONE, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_exit(BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    report("payload (direct kernel boot)", &vm);

    let booted = line(&vm, payload::BOOTED);
    assert!(
        booted.contains(&format!("kernel={} ", payload.kernel_version)),
        "{booted}"
    );
    assert!(
        booted.contains(&format!(
            "{}={base}/postscript.sh",
            payload::PARAM_POSTSCRIPT
        )),
        "{booted}"
    );
    let lease = line(&vm, payload::LEASE);
    assert!(
        lease.contains("ip=10.77.0.50/16 router=10.77.0.1 dns=10.77.0.1"),
        "{lease}"
    );
    assert!(line(&vm, "postscript: ").contains(serve::POSTSCRIPT_MARK));
    let done = line(&vm, payload::POSTSCRIPT_DONE);
    assert!(done.contains("rc=0 complete=ok"), "{done}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("complete.txt")).unwrap(),
        "rc=0"
    );
    assert!(vm
        .lines()
        .iter()
        .all(|l| !l.text.contains(payload::POSTSCRIPT_FAILED)));
    assert!(vm_line(&vm, payload::BOOTED).at <= vm_line(&vm, payload::POSTSCRIPT_DONE).at);
}

/// A full network boot against `xboot serve`: firmware DHCP, TFTP of iPXE (BIOS), iPXE
/// DHCP, iPXE script, kernel and initrd over HTTP, the payload's own DHCP, postscript,
/// completion; then the boot events the server recorded. `server_ipv6` off: srv0 has
/// IPv6 disabled, and a capture on the VM's tap shows xboot's router advertisement
/// (decoded by tcpdump) reaching the VM before iPXE's DHCP exchange ends.
fn pxe_boot(firmware: Firmware, dhcp: Dhcp, server_ipv6: bool) {
    if netns::need_root() {
        return;
    }
    let payload = payload();
    let dir = workdir(&format!("pxe-{}-", firmware.name()));
    let (srv, cli) = lab(if firmware == Firmware::Bios {
        "pxeb"
    } else {
        "pxeu"
    });
    let files = serve::write_lab_files(&dir.path().join("lab"), &payload).unwrap();
    // The lab's config names no mode: the default (XDP, as the demo runs it). The
    // userspace boot says so.
    if dhcp == Dhcp::Userspace {
        serve::set_dhcp_mode(&files, "userspace").unwrap();
    }
    let capture = (!server_ipv6).then(|| {
        net::set_server_ipv6(&srv.name, false).unwrap();
        capture_tap(&cli, dir.path())
    });
    let xboot = Path::new(env!("CARGO_BIN_EXE_xboot"));
    let server = Server::start(xboot, &srv.name, files, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = VmSpec {
        boot: Boot::Pxe(firmware),
        nic: nic(&cli),
        serial: dir.path().join("serial.log"),
        memory_mb: 256,
    };
    let mut vm = Vm::start(&spec).unwrap();
    vm.wait_for(payload::POSTSCRIPT_DONE, BOOT_TIMEOUT)
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n--- xboot serve log:\n{}",
                testlab::tail(&server.files.log, 40)
            )
        });
    vm.wait_exit(BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    report(&format!("PXE boot ({})", firmware.name()), &vm);

    let booted = line(&vm, payload::BOOTED);
    // The image's cmdline template, rendered for this host.
    assert!(
        booted.contains("BOOTIF=01-52-54-00-77-00-10 grendel.hostname=node1 "),
        "{booted}"
    );
    assert!(booted.contains(&format!(
        "{}=http://{}:{}/",
        payload::PARAM_POSTSCRIPT,
        net::SRV_IP,
        serve::HTTP_PORT
    )));
    assert!(!booted.contains("{{"), "unrendered template: {booted}");
    let lease = line(&vm, payload::LEASE);
    assert!(
        lease.contains("ip=10.77.0.50/16 router=10.77.0.1 dns=10.77.0.1"),
        "{lease}"
    );
    assert!(line(&vm, "postscript: ").contains(&format!("{} host=node1", serve::POSTSCRIPT_MARK)));
    let done = line(&vm, payload::POSTSCRIPT_DONE);
    assert!(done.contains("rc=0 complete=ok"), "{done}");

    let events = server.events(serve::NODE).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    // No TFTP expected: the iPXE ROM (BIOS) and EFI ROM are iPXE already, so the first
    // DHCP answer can point straight at the iPXE script over HTTP.
    let want = [
        "dhcp_offer",
        "dhcp_ack",
        "ipxe_script",
        "kernel",
        "initrd",
        "postscript",
        "complete",
    ];
    for k in want {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    assert!(events.iter().all(|e| e.host == serve::NODE));
    // The whole boot was served with no capability left on any thread of the server.
    assert_no_capabilities(server.pid());
    let status = server.status().unwrap_or_else(|e| panic!("{e}"));
    let ras = &status["counters"]["dhcp"]["router_advertisements"];
    assert!(
        ras.as_u64().unwrap_or(0) >= 1,
        "iPXE's solicitation answered: {status}"
    );
    if let Some(capture) = capture {
        assert_ra_before_ipxe_ack(&capture, &mac_of(&srv, net::SRV_IF));
    }
    if dhcp == Dhcp::Xdp {
        // Every DHCP answer (firmware, then the booted OS) came from the XDP program.
        let answered = &status["counters"]["xdp"]["answered"];
        assert!(answered.as_u64().unwrap_or(0) >= 4, "{status}");
        let user = &status["counters"]["dhcp"];
        assert_eq!(user["offers"], 0, "{status}");
        assert_eq!(user["acks"], 0, "{status}");
    }
    drop(vm);
    drop(server);
}

/// Every thread of `pid` has empty effective and permitted capability sets.
fn assert_no_capabilities(pid: u32) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut seen = 0;
    for t in tasks {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap()
        };
        let name = field("Name:");
        for k in ["CapEff:", "CapPrm:"] {
            assert_eq!(field(k), "0000000000000000", "thread {name} of xboot: {k}");
        }
        seen += 1;
    }
    assert!(seen > 2, "only {seen} threads");
}

/// With `dhcp.mode = "userspace"` written in the config.
#[test]
fn pxe_boot_bios_ipxe_rom() {
    pxe_boot(Firmware::Bios, Dhcp::Userspace, true);
}

/// The same boot on the default `dhcp.mode` (XDP): the XDP program answers every DHCP
/// request.
#[test]
fn pxe_boot_bios_ipxe_rom_xdp() {
    pxe_boot(Firmware::Bios, Dhcp::Xdp, true);
}

/// The default boot with IPv6 disabled on the server's interface: the router
/// advertisement still goes out (a raw Ethernet frame), reaches the VM before iPXE's
/// DHCP ACK, so iPXE does not sit in its IPv6 autoconfiguration wait.
#[test]
fn pxe_boot_bios_without_server_ipv6() {
    pxe_boot(Firmware::Bios, Dhcp::Xdp, false);
}

/// tcpdump on the VM's tap (client namespace) for ICMPv6 and DHCP, verbose (IPv6 hop
/// limit, ICMPv6 checksum check, NDP options decoded): its output file, once capturing.
fn capture_tap(cli: &Netns, dir: &Path) -> std::path::PathBuf {
    let out = dir.join("tap.txt");
    let err = dir.join("tap.err");
    cli.spawn(
        &[
            "tcpdump",
            "-i",
            net::TAP,
            "-n",
            "-l",
            "-vv",
            "-tt",
            "icmp6 or udp port 67 or udp port 68",
        ],
        Stdio::from(std::fs::File::create(&out).unwrap()),
        Stdio::from(std::fs::File::create(&err).unwrap()),
    );
    for _ in 0..100 {
        if std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening on")
        {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "tcpdump did not start: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
}

/// The capture, one string per packet (tcpdump -v continues a packet on indented lines).
fn packets(capture: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(capture).unwrap();
    let mut packets: Vec<String> = vec![];
    for l in text.lines() {
        match packets.last_mut() {
            Some(p) if l.starts_with([' ', '\t']) => {
                p.push('\n');
                p.push_str(l);
            }
            _ => packets.push(l.to_string()),
        }
    }
    packets
}

/// tcpdump decoded a valid RA from srv0's MAC (hop limit 255, checksum correct, lifetime
/// 0, no M/O flags, no prefix) and saw it before the first DHCP ACK.
fn assert_ra_before_ipxe_ack(capture: &Path, srv_mac: &str) {
    std::thread::sleep(Duration::from_millis(300)); // the last lines' flush
    let packets = packets(capture);
    let at = |what: &str| packets.iter().position(|p| p.contains(what));
    let ra = at("router advertisement")
        .unwrap_or_else(|| panic!("no RA on the tap:\n{}", packets.join("\n")));
    let ack = at("DHCP-Message (53), length 1: ACK")
        .unwrap_or_else(|| panic!("no DHCP ACK on the tap:\n{}", packets.join("\n")));
    let p = &packets[ra];
    for want in [
        "hlim 255",
        "router lifetime 0s",
        "Flags [none]",
        &format!("source link-address option (1), length 8 (1): {srv_mac}"),
        "[icmp6 sum ok]",
    ] {
        assert!(p.contains(want), "{want:?} not in the RA: {p}");
    }
    assert!(!p.contains("prefix info"), "{p}");
    assert!(
        ra < ack,
        "the RA came after iPXE's ACK:\n{}",
        packets.join("\n")
    );
}

fn mac_of(ns: &Netns, ifname: &str) -> String {
    let out = ns.run(&["cat", &format!("/sys/class/net/{ifname}/address")]);
    String::from_utf8_lossy(&out.stdout).trim().to_lowercase()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dhcp {
    Userspace,
    Xdp,
}

#[test]
fn pxe_boot_uefi_ovmf() {
    assert!(
        Path::new(testlab::qemu::OVMF).exists(),
        "{} missing: run `cargo xtask setup`",
        testlab::qemu::OVMF
    );
    pxe_boot(Firmware::Uefi, Dhcp::Userspace, true);
}

/// `xboot serve` in `srv` on the lab's files (under `dir/lab`) with the package's iPXE
/// bundle (`testlab::package`, built into `dir/firmware`) as its TFTP root: the server and
/// the bundle's directory.
fn serve_bundle(dir: &Path, srv: &Netns, payload: &Payload) -> (Server, PathBuf) {
    serve_bundle_with(dir, srv, payload, |c| c)
}

/// [`serve_bundle`], the lab's config passed through `edit` first.
fn serve_bundle_with(
    dir: &Path,
    srv: &Netns,
    payload: &Payload,
    edit: impl FnOnce(String) -> String,
) -> (Server, PathBuf) {
    let files = serve::write_lab_files(&dir.join("lab"), payload).unwrap();
    let bundle = dir.join("firmware");
    testlab::package::bundle(&bundle).unwrap();
    let cfg = std::fs::read_to_string(&files.config).unwrap();
    let root = format!("root = \"{}\"", bundle.display());
    std::fs::write(
        &files.config,
        edit(cfg.replace("root = \"/usr/lib/ipxe\"", &root)),
    )
    .unwrap();
    let xboot = Path::new(env!("CARGO_BIN_EXE_xboot"));
    let server = Server::start(xboot, &srv.name, files, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    (server, bundle)
}

/// HTTPS to iPXE: OVMF's PXE loads the bundled snponly.efi (Debian 13's iPXE, built with
/// HTTPS) over TFTP; the test CA is enrolled in the firmware's TLS CA store (the
/// `TlsCaCertificate` variable UEFI HTTPS boot uses, set by OVMF from qemu's fw_cfg), which
/// this iPXE trusts; xboot's DHCP answer to iPXE names the script on the HTTPS listener,
/// and iPXE verifies xboot's certificate (signed by that CA, for the server's address) and
/// fetches the script, kernel and initrd over HTTPS, up to the kernel booting. Without
/// the CA enrolled, the same iPXE refuses the server.
#[test]
fn pxe_boot_uefi_ipxe_over_https() {
    if netns::need_root() {
        return;
    }
    if !Path::new(testlab::qemu::OVMF).exists() {
        eprintln!("skipped: {} missing", testlab::qemu::OVMF);
        return;
    }
    let payload = payload();
    let dir = workdir("pxe-https-");
    let ca = testlab::certs::Ca::new(&dir.path().join("tls"), "xboot lab CA").unwrap();
    let issued = ca.issue("server", &[net::SRV_IP], 0x4433).unwrap();
    let cacerts = ca.edk2_cacerts().unwrap();
    let (srv, cli) = lab("pxes");
    let https = format!("https://{}:8443/boot/", net::SRV_IP);
    let (server, _) = serve_bundle_with(dir.path(), &srv, &payload, |cfg| {
        let advertise = format!(
            "advertise_url = \"http://{}:{}\"\n",
            net::SRV_IP,
            serve::HTTP_PORT
        );
        assert!(cfg.contains(&advertise), "{cfg}");
        cfg.replace(
            &advertise,
            &format!(
                "cert = {:?}\nkey = {:?}\ntls_listen = \"0.0.0.0:8443\"\n",
                issued.cert.display().to_string(),
                issued.key.display().to_string(),
            ),
        )
    });
    let spec = VmSpec {
        boot: Boot::Pxe(Firmware::UefiNative),
        nic: nic(&cli),
        serial: dir.path().join("serial.log"),
        memory_mb: 256,
    };
    // Without the CA in the firmware's store, iPXE refuses the certificate (after
    // trying to fetch a cross-signed issuer): no file is served.
    let mut vm = Vm::start(&spec).unwrap();
    vm.wait_for("Error 0x", BOOT_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "{e}\n--- xboot serve log:\n{}",
            testlab::tail(&server.files.log, 40)
        )
    });
    let refused = &vm_line(&vm, "Error 0x").text;
    assert!(refused.contains(&https), "{refused}");
    drop(vm);
    let events = server.events(serve::NODE).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !events.iter().any(|e| e.kind == "ipxe_script"),
        "a script was served to an iPXE that does not trust the CA: {events:?}"
    );

    let fw_cfg = format!("name=etc/edk2/https/cacerts,file={}", cacerts.display());
    let mut vm = Vm::start_with(&spec, &["-fw_cfg".into(), fw_cfg]).unwrap();
    vm.wait_for(payload::BOOTED, BOOT_TIMEOUT)
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n--- xboot serve log:\n{}",
                testlab::tail(&server.files.log, 40)
            )
        });
    report("PXE boot (uefi, iPXE over HTTPS, to the kernel)", &vm);
    // iPXE names each URL it fetches on the console (its start at least: a long URL
    // may wrap): the script, the kernel and the initrd from the HTTPS listener, nothing
    // from the plain one.
    let console: String = vm.lines().iter().map(|l| l.text.as_str()).collect();
    let plain = format!("http://{}:{}/boot/", net::SRV_IP, serve::HTTP_PORT);
    assert!(
        console.matches(&https).count() >= 3 && !console.contains(&plain),
        "want the script, kernel and initrd from {https}, none from {plain}:\n{console}"
    );
    let events = server.events(serve::NODE).unwrap_or_else(|e| panic!("{e}"));
    for kind in ["ipxe_script", "kernel", "initrd"] {
        assert!(
            events.iter().any(|e| e.kind == kind),
            "no {kind} event: {events:?}"
        );
    }
    drop(vm);
    drop(server);
}

/// OVMF's own UEFI PXE on virtio-net (no iPXE ROM): EDK2's TFTP client against xboot's
/// server, which serves the iPXE bundle of the package and the image (Debian 13's
/// current iPXE, `testlab::package`), up to the kernel iPXE loads booting (the payload has
/// no virtio-net driver, so the boot stops there). EDK2 probes the size first (tsize, then ERROR 8 after the
/// OACK) and downloads snponly.efi from another port (blksize 1468, windowsize 4): the
/// probe must end at once, the download complete, and one TFTP event be recorded.
#[test]
fn pxe_boot_uefi_native_tftp() {
    if netns::need_root() {
        return;
    }
    if !Path::new(testlab::qemu::OVMF).exists() {
        eprintln!("skipped: {} missing", testlab::qemu::OVMF);
        return;
    }
    let payload = payload();
    let dir = workdir("pxe-uefi-native-");
    let (srv, cli) = lab("pxen");
    let (server, bundle) = serve_bundle(dir.path(), &srv, &payload);
    let spec = VmSpec {
        boot: Boot::Pxe(Firmware::UefiNative),
        nic: nic(&cli),
        serial: dir.path().join("serial.log"),
        memory_mb: 256,
    };
    let mut vm = Vm::start(&spec).unwrap();
    vm.wait_for(payload::BOOTED, BOOT_TIMEOUT)
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n--- xboot serve log:\n{}",
                testlab::tail(&server.files.log, 40)
            )
        });
    report("PXE boot (uefi-native, to the kernel)", &vm);
    let metrics = srv.run(&[
        "curl",
        "-sS",
        &format!("http://{}:{}/metrics", net::SRV_IP, serve::HTTP_PORT),
    ]);
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    for want in [
        "xboot_tftp_transfers_active 0",
        "xboot_tftp_transfers_total{outcome=\"completed\"} 1",
        "xboot_tftp_transfers_total{outcome=\"client_error\"} 1",
        "xboot_tftp_transfers_total{outcome=\"timed_out\"} 0",
    ] {
        assert!(metrics.contains(want), "no {want:?} in\n{metrics}");
    }
    let events = server.events(serve::NODE).unwrap_or_else(|e| panic!("{e}"));
    let tftp: Vec<_> = events.iter().filter(|e| e.kind == "tftp").collect();
    assert_eq!(tftp.len(), 1, "{events:?}");
    assert!(tftp[0].detail.starts_with("snponly.efi ("), "{:?}", tftp[0]);
    let log = std::fs::read_to_string(&server.files.log).unwrap();
    assert!(
        log.contains(&format!("TFTP serving {}", bundle.display())),
        "{log}"
    );
    drop(vm);
    drop(server);
}

/// An arm64 machine (qemu's `virt`, emulated) with Debian's EDK2 build, PXE-booting from
/// xboot on its own UEFI PXE: option 93 arch 11 gets the bundled arm64 iPXE over TFTP
/// (Debian 12 ships none), which DHCPs again as iPXE, fetches its script and starts the
/// kernel download (the payload's kernel is x86-64, so the test ends there).
#[test]
fn pxe_boot_uefi_arm64_with_the_bundled_ipxe() {
    if netns::need_root() {
        return;
    }
    let payload = payload();
    let dir = workdir("pxe-uefi-arm64-");
    let (srv, cli) = lab("pxea");
    let (server, bundle) = serve_bundle(dir.path(), &srv, &payload);
    let spec = VmSpec {
        boot: Boot::Pxe(Firmware::UefiArm64),
        nic: nic(&cli),
        serial: dir.path().join("serial.log"),
        memory_mb: 256,
    };
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let vm = Vm::start(&spec).unwrap();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let events = loop {
        let events = server.events(serve::NODE).unwrap_or_default();
        if events.iter().any(|e| e.kind == "kernel") {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "no kernel download: {events:?}\n--- xboot serve log:\n{}",
            testlab::tail(&server.files.log, 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let at = |kind: &str| {
        let e = events
            .iter()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {events:?}"));
        (e.detail.clone(), e.time_ms)
    };
    // The offer's boot file shows in the TFTP event (an XDP offer's event names no file).
    at("dhcp_offer");
    let (tftp, _) = at("tftp");
    let size = std::fs::metadata(bundle.join("ipxe-arm64.efi"))
        .unwrap()
        .len();
    assert_eq!(tftp, format!("ipxe-arm64.efi ({size} bytes)"));
    let (_, script_ms) = at("ipxe_script");
    let (_, kernel_ms) = at("kernel");
    assert!(script_ms <= kernel_ms);
    let secs = |ms: u64| ms.saturating_sub(start_ms) as f64 / 1000.0;
    eprintln!(
        "PXE boot (uefi-arm64, TCG): TFTP {:.1}s, iPXE script {:.1}s after qemu start",
        secs(at("tftp").1),
        secs(script_ms)
    );
    drop(vm);
    drop(server);
}
