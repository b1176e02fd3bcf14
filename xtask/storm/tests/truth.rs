//! The truth check inside a storm (in `cargo test --workspace`, so in `cargo xtask
//! test`): 20 simulated nodes (half BIOS, half UEFI, powered on over 10 s) and two real
//! qemu VMs (TCG) boot at once through one `xboot serve` on the storm's fabric:
//! SeaBIOS + the iPXE ROM (to `complete`), and OVMF's own UEFI PXE on virtio-net (DHCP,
//! TFTP of snponly.efi, iPXE, HTTP, up to the kernel booting: the payload has no
//! virtio-net driver). A VM that fails where the simulated nodes pass makes the run
//! invalid: the test fails.
//!
//! tcpdump on the server's link gives every request's server turnaround; each request
//! type a VM sent must also have been sent by simulated nodes, and the table of the VMs'
//! turnarounds against the simulated p1-p99 is printed ([`storm::truth`]). Whether they
//! fall inside is a timing, so it is shown here and enforced by the benchmark
//! (`cargo xtask bench storm --truth`), never asserted by a test.
//! Needs root (namespaces); skipped otherwise.
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use storm::fabric::{node_mac, node_name, Fabric};
use storm::fingerprint;
use storm::node::{Node, NodeResult, Profile, SimConfig};
use storm::truth;
use testlab::payload::{self, Payload};
use testlab::qemu::{Boot, Firmware, Nic, Vm, VmSpec};
use testlab::serve::{self, Server};

const N: usize = 20;
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The real machines: name, firmware, tap (on the spine), MAC, inventory address.
const VMS: [(&str, Firmware, &str, &str, &str); 2] = [
    (
        "vm-bios",
        Firmware::Bios,
        "tv0",
        "52:54:00:77:00:10",
        "10.77.0.50",
    ),
    (
        "vm-uefi",
        Firmware::UefiNative,
        "tv1",
        "52:54:00:77:00:11",
        "10.77.0.51",
    ),
];

fn ip(args: &[&str]) {
    let out = testlab::peers::command("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, argv: &[&str]) -> std::process::Command {
    let mut c = testlab::peers::command("ip");
    c.args(["netns", "exec", ns])
        .arg(testlab::peers::program(argv[0]))
        .args(&argv[1..]);
    c
}

/// tcpdump on `ifname` in `ns` (headers only: 600 bytes of each frame), started and
/// listening.
fn tcpdump(ns: &str, ifname: &str, file: &Path, err: &Path) -> Child {
    let child = in_ns(
        ns,
        &[
            "tcpdump",
            "-i",
            ifname,
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            "600",
            "-Z",
            "root",
            "-w",
            &file.display().to_string(),
            "ip",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::from(std::fs::File::create(err).unwrap()))
    .spawn()
    .unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(err)
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "tcpdump did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn hosts() -> String {
    let mut hosts: Vec<serde_json::Value> =
        serde_json::from_str(&storm::servers::hosts_json(N)).unwrap();
    for (name, _, _, mac, addr) in VMS {
        hosts.push(serde_json::json!({
            "name": name,
            "provision": true,
            "boot_image": serve::IMAGE,
            "interfaces": [{ "mac": mac, "ip": format!("{addr}/16") }],
        }));
    }
    serde_json::to_string(&hosts).unwrap()
}

#[test]
fn storm_20_nodes_with_two_real_machines() {
    if testlab::netns::need_root() {
        return;
    }
    assert!(
        Path::new(testlab::qemu::OVMF).exists(),
        "{} missing: run `cargo xtask setup`",
        testlab::qemu::OVMF
    );
    let payload = Payload::cached().unwrap_or_else(|e| panic!("{e}"));
    let xboot = storm::run::find_xboot(None).unwrap_or_else(|e| panic!("{e}"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("storm-truth");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fabric = Fabric::build(N, "tru").unwrap_or_else(|e| panic!("{e}"));
    for (_, _, tap, _, _) in VMS {
        ip(&["-n", &fabric.fabric_ns, "tuntap", "add", tap, "mode", "tap"]);
        ip(&[
            "-n",
            &fabric.fabric_ns,
            "link",
            "set",
            tap,
            "master",
            "spine",
            "up",
        ]);
    }
    let files = serve::write_lab_files(&dir.join("server"), &payload).unwrap();
    std::fs::write(&files.hosts, hosts()).unwrap();
    let server = Server::start(&xboot, &fabric.server_ns, files, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let srv_mac = in_ns(&fabric.server_ns, &["cat", "/sys/class/net/srv0/address"])
        .output()
        .unwrap();
    let srv_mac = parse_mac(String::from_utf8_lossy(&srv_mac.stdout).trim());
    let pcap = dir.join("server.pcap");
    let mut dump = tcpdump(&fabric.server_ns, "srv0", &pcap, &dir.join("tcpdump.err"));

    // Power: the VMs first (qemu needs ~2 s to its first DHCP), then the nodes over 10 s.
    let mut vms: Vec<Vm> = VMS
        .iter()
        .map(|(name, fw, tap, mac, _)| {
            Vm::start(&VmSpec {
                boot: Boot::Pxe(*fw),
                nic: Some(Nic {
                    netns: fabric.fabric_ns.clone(),
                    tap: tap.to_string(),
                    mac: mac.to_string(),
                }),
                serial: dir.join(format!("{name}.serial.log")),
                memory_mb: 256,
            })
            .unwrap()
        })
        .collect();
    let mut socks = vec![];
    for i in 0..N {
        socks.push(
            fabric
                .ops
                .run_blocking(i, || storm::nsops::node_sockets(2 << 20))
                .unwrap_or_else(|e| panic!("node {i}: {e}")),
        );
    }
    let ops = fabric.ops.clone();
    let t0 = Instant::now();
    let nodes = std::thread::spawn(move || -> Vec<NodeResult> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for (i, s) in socks.into_iter().enumerate() {
                let cfg = SimConfig {
                    profile: if i % 2 == 0 {
                        Profile::Bios
                    } else {
                        Profile::Uefi
                    },
                    jitter: Duration::from_secs(10),
                    boot_delay: Duration::from_millis(500),
                    rcvbuf: 2 << 20,
                };
                let node = Node::new(i, node_name(i), node_mac(i), ops.clone(), cfg, t0, s);
                set.spawn(node.run());
            }
            let mut out = vec![];
            while let Some(r) = set.join_next().await {
                out.push(r.expect("a node task"));
            }
            out
        })
    });
    // The VMs boot (BIOS to the completion POST, UEFI to the kernel).
    let mut vm_failures = vec![];
    for ((name, fw, ..), vm) in VMS.iter().zip(vms.iter_mut()) {
        let marker = if *fw == Firmware::Bios {
            payload::POSTSCRIPT_DONE
        } else {
            payload::BOOTED
        };
        match vm.wait_for(marker, BOOT_TIMEOUT) {
            Ok(l) => eprintln!(
                "{name}: {marker} {:.1} s after qemu started",
                l.at.as_secs_f64()
            ),
            Err(e) => vm_failures.push(format!("{name}: {e}")),
        }
    }
    drop(vms);
    let results = nodes.join().expect("the nodes' thread");
    // SAFETY: kill(2) on the tcpdump this test started; SIGTERM makes it flush and exit.
    unsafe { libc::kill(dump.id() as i32, libc::SIGTERM) };
    let _ = dump.wait();
    let failed: Vec<_> = results.iter().filter(|r| r.failure.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} simulated nodes failed: {:?}\n{}",
        failed.len(),
        failed.iter().map(|r| &r.failure).collect::<Vec<_>>(),
        testlab::tail(&server.files.log, 30)
    );
    assert!(
        vm_failures.is_empty(),
        "run invalid: a real machine failed where {N} simulated nodes passed:\n{}\n--- xboot:\n{}",
        vm_failures.join("\n"),
        testlab::tail(&server.files.log, 30)
    );
    let events = server.events("vm-bios").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        events.iter().any(|e| e.kind == "complete"),
        "vm-bios: no complete event in {events:?}"
    );

    let frames = fingerprint::read_pcap(&std::fs::read(&pcap).unwrap()).unwrap();
    let all = truth::turnarounds(&frames, srv_mac, serve::HTTP_PORT);
    let machines: Vec<(String, String)> = VMS
        .iter()
        .map(|(name, _, _, mac, _)| (name.to_string(), mac.to_string()))
        .collect();
    let checks = truth::check(&all, &machines);
    eprintln!("{}", truth::markdown(&checks));
    // Each VM's boot is in the capture, and every request type a VM sent was also sent
    // (and answered) for the simulated nodes.
    for (name, ..) in VMS {
        let kinds: Vec<&str> = checks
            .iter()
            .filter(|c| c.machine == name)
            .map(|c| c.kind)
            .collect();
        for k in ["dhcp_discover", "dhcp_request", "tcp_syn", "http_get"] {
            assert!(kinds.contains(&k), "{name}: no answered {k} in the capture");
        }
        if name == "vm-uefi" {
            assert!(kinds.contains(&"tftp_rrq"), "{name}: no answered TFTP read");
        }
    }
    for c in &checks {
        assert!(
            c.samples > 0,
            "{} sent {} but no simulated node did",
            c.machine,
            c.kind
        );
    }
    drop(server);
    drop(fabric);
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap_or_else(|_| panic!("MAC {s:?}")))
        .collect();
    v.try_into().unwrap_or_else(|_| panic!("MAC {s:?}"))
}
