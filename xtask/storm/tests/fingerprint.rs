//! The simulator's packets against real firmware's (in `cargo test --workspace`, so in
//! `cargo xtask test`): a qemu VM (TCG) network-boots against `xboot serve` in a lab
//! namespace while one simulated node of the same profile boots beside it on the same
//! bridge; tcpdump records both on the server's link, and every packet type the node
//! sent must print the same as the firmware's ([`storm::fingerprint`]): DHCP options and
//! their order, flags, TFTP read-request options, HTTP request line and header names,
//! TCP SYN options.
//!
//! - BIOS: SeaBIOS + the iPXE ROM, through the payload's own DHCP, postscript and
//!   completion POST.
//! - UEFI: OVMF's own PXE on virtio-net (EDK2's DHCP and TFTP, the size probe and the
//!   download of snponly.efi), then iPXE, up to the kernel booting (the payload has no
//!   virtio-net driver, so the OS's packets are compared by the BIOS test).
//!
//! Needs root (namespaces); skipped otherwise. The qemu part's duration is printed,
//! never asserted.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use storm::fabric::{node_mac, node_name};
use storm::fingerprint::{self, Print};
use storm::node::{Node, NodeResult, Profile, SimConfig};
use testlab::net;
use testlab::netns::Netns;
use testlab::payload::{self, Payload};
use testlab::qemu::{Boot, Firmware, Nic, Vm, VmSpec};
use testlab::serve::{self, Server};

/// Generous: TCG on two shared cores, with other VMs possibly booting in parallel.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn bios_ipxe_rom_packets_match_the_simulator() {
    fingerprints(Firmware::Bios, Profile::Bios, "fpb");
}

#[test]
fn uefi_ovmf_pxe_packets_match_the_simulator() {
    fingerprints(Firmware::UefiNative, Profile::Uefi, "fpu");
}

/// tcpdump on `ifname` in `ns`, writing `file` packet by packet; returns its pid once it
/// listens.
fn tcpdump(ns: &Netns, ifname: &str, file: &Path, dir: &Path) -> u32 {
    let err = dir.join("tcpdump.err");
    let pid = ns.spawn(
        &[
            "tcpdump",
            "-i",
            ifname,
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            "2048",
            "-Z",
            "root",
            "-w",
            &file.display().to_string(),
            "ip",
        ],
        Stdio::null(),
        Stdio::from(std::fs::File::create(&err).unwrap()),
    );
    let t0 = Instant::now();
    while !std::fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "tcpdump did not start: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pid
}

/// Stops tcpdump (SIGTERM by pid: it flushes and exits) and waits until it has.
fn stop(pid: u32) {
    // SAFETY: kill(2) on the tcpdump this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie (its Child is reaped when the namespace drops).
        if stat.is_empty() || stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "tcpdump did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One simulated node in its own namespace whose eth0 is a port of the lab's bridge.
fn sim_node(cli: &Netns, tag: &str) -> Netns {
    let ns = Netns::new(&format!("{tag}n"));
    let mac = storm::node::mac_string(node_mac(0));
    ns.run(&[
        "ip", "link", "add", "eth0", "address", &mac, "type", "veth", "peer", "name", "sim0",
        "netns", &cli.name,
    ]);
    cli.run(&["ip", "link", "set", "sim0", "master", "br0"]);
    cli.run(&["ip", "link", "set", "sim0", "up"]);
    // Up long before the first DISCOVER: a frame sent the instant a veth comes up is
    // lost (seen here: the first DISCOVER, then 4 s to the next).
    ns.run(&["ip", "link", "set", "eth0", "up"]);
    ns
}

/// Boots the simulated node to the end (on its own thread and runtime).
fn run_sim(ns_name: String, profile: Profile) -> std::thread::JoinHandle<NodeResult> {
    std::thread::spawn(move || {
        let ops = storm::nsops::NsOps::start(vec![ns_name]);
        let rcvbuf = 2 << 20;
        let socks = ops
            .run_blocking(0, move || {
                storm::nsops::node_sockets(rcvbuf, storm::nsops::Spares::FULL)
            })
            .unwrap_or_else(|e| panic!("simulated node's sockets: {e}"));
        let cfg = SimConfig {
            profile,
            jitter: Duration::ZERO,
            boot_delay: Duration::from_millis(500),
            rcvbuf,
        };
        let node = Node::new(
            0,
            node_name(0),
            node_mac(0),
            ops,
            cfg,
            Instant::now(),
            socks,
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(node.run())
    })
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn show(what: &str, seq: &[Print]) -> String {
    let mut s = format!("{what}:\n");
    for (i, p) in seq.iter().enumerate() {
        s += &format!("  #{i} {p}\n");
    }
    s
}

fn fingerprints(firmware: Firmware, profile: Profile, tag: &str) {
    if testlab::netns::need_root() {
        return;
    }
    if firmware != Firmware::Bios && !Path::new(testlab::qemu::OVMF).exists() {
        panic!("{} missing: run `cargo xtask setup`", testlab::qemu::OVMF);
    }
    let payload = Payload::cached().unwrap_or_else(|e| panic!("{e}"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fingerprint-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let srv = Netns::new(&format!("{tag}s"));
    let cli = Netns::new(&format!("{tag}c"));
    net::build(&srv.name, &cli.name).unwrap_or_else(|e| panic!("{e}"));
    let sim = sim_node(&cli, tag);
    // The inventory: the VM (the lab's node1) and the simulated node n0001.
    let files = serve::write_lab_files(&dir.join("lab"), &payload).unwrap();
    let mut hosts: Vec<serde_json::Value> = serde_json::from_str(&serve::hosts_json()).unwrap();
    let more: Vec<serde_json::Value> =
        serde_json::from_str(&storm::servers::hosts_json(1)).unwrap();
    hosts.extend(more);
    std::fs::write(&files.hosts, serde_json::to_string(&hosts).unwrap()).unwrap();
    let xboot = storm::run::find_xboot(None).unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(&xboot, &srv.name, files, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let pcap = dir.join("boot.pcap");
    let dump = tcpdump(&cli, "up0", &pcap, &dir);

    let node = run_sim(sim.name.clone(), profile);
    let spec = VmSpec {
        boot: Boot::Pxe(firmware),
        nic: Some(Nic {
            netns: cli.name.clone(),
            tap: net::TAP.into(),
            mac: net::VM_MAC.into(),
        }),
        serial: dir.join("serial.log"),
        memory_mb: 256,
    };
    let mut vm = Vm::start(&spec).unwrap();
    // BIOS: the whole boot, to the completion POST; UEFI: to the kernel (see above).
    let (marker, partial) = match firmware {
        Firmware::Bios => (payload::POSTSCRIPT_DONE, false),
        _ => (payload::BOOTED, true),
    };
    let line = vm.wait_for(marker, BOOT_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "{e}\n--- xboot serve log:\n{}",
            testlab::tail(&server.files.log, 40)
        )
    });
    if !partial {
        vm.wait_exit(BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    }
    let qemu_s = vm.started().elapsed().as_secs_f64();
    drop(vm);
    let res = node.join().expect("the simulated node's thread");
    stop(dump);
    eprintln!(
        "{}: qemu (TCG) {marker} at {:.1} s, stopped at {qemu_s:.1} s; simulated node done at \
         {:.2} s (milestones {:?}, DHCP sent {:?}, refused {})",
        firmware.name(),
        line.at.as_secs_f64(),
        res.end,
        res.stamps,
        res.dhcp_sent,
        res.dhcp_send_errors
    );
    assert!(
        res.failure.is_none() && res.at("complete").is_some(),
        "the simulated node failed: {:?}\n{}",
        res.failure,
        testlab::tail(&server.files.log, 40)
    );
    let frames = fingerprint::read_pcap(&std::fs::read(&pcap).unwrap()).unwrap();
    let truth = fingerprint::sequence(&frames, mac(net::VM_MAC), serve::HTTP_PORT);
    let simulated = fingerprint::sequence(&frames, node_mac(0), serve::HTTP_PORT);
    let both = format!(
        "{}{}",
        show(&format!("{} firmware (qemu)", firmware.name()), &truth),
        show(&format!("simulator ({})", profile.name()), &simulated)
    );
    eprintln!("{both}");
    // The capture holds the firmware's whole conversation.
    let kinds: Vec<&str> = truth.iter().map(|p| p.kind.as_str()).collect();
    let mut want = vec!["DHCP DISCOVER", "DHCP REQUEST", "TCP SYN", "HTTP GET"];
    if firmware != Firmware::Bios {
        want.extend(["TFTP RRQ", "TFTP ERROR"]);
    } else {
        want.push("HTTP POST");
    }
    for k in want {
        assert!(kinds.contains(&k), "no {k} from the firmware\n{both}");
    }
    let diffs = fingerprint::compare(&truth, &simulated, partial);
    assert!(
        diffs.is_empty(),
        "the simulator differs from the firmware:\n  {}\n{both}",
        diffs.join("\n  ")
    );
    drop(server);
}
