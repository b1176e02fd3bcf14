//! `cargo xtask demo`: builds xboot, makes a private namespace lab (server namespace
//! with a veth; client namespace with a bridge and the VM's tap), starts `xboot serve`
//! there on a generated config and inventory (under target/xboot-demo/), PXE-boots a
//! qemu VM (SeaBIOS + iPXE ROM) until its initrd has run the postscript, prints the
//! node's boot timeline and tears everything down (RAII: VM, server, namespaces).
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use testlab::netns::Netns;
use testlab::qemu::{Boot, Firmware, Nic, Vm, VmSpec};
use testlab::serve::{self, BootEvent, Server};
use testlab::{net, payload};

use crate::{setup, util};

#[derive(clap::Args)]
pub struct Args {
    /// Firmware of the VM: bios (SeaBIOS + iPXE ROM), uefi (OVMF + iPXE EFI ROM),
    /// uefi-native (OVMF's own PXE on virtio-net), or uefi-arm64 (an emulated arm64 VM,
    /// EDK2's PXE, the bundled arm64 iPXE; the payload's kernel is x86-64, so the boot is
    /// timed up to its download).
    #[arg(long, default_value = "bios")]
    firmware: String,
    /// Seconds to wait for the postscript to complete.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// IPv6 on the server's interface (`off`: disable_ipv6=1 there, as on boot servers
    /// run without IPv6; xboot's router advertisement still ends iPXE's IPv6 wait).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    server_ipv6: String,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    testlab::catch_interrupts();
    let firmware = match args.firmware.as_str() {
        "bios" => Firmware::Bios,
        "uefi" => Firmware::Uefi,
        "uefi-native" => Firmware::UefiNative,
        "uefi-arm64" => Firmware::UefiArm64,
        other => bail!("unknown firmware {other:?} (bios, uefi, uefi-native, uefi-arm64)"),
    };
    step("setup", setup::run)?;
    let xboot = step("build xboot", build)?;
    let payload = payload::Payload::cached().map_err(|e| anyhow!(e))?;

    // Declared in this order so they drop in reverse: VM, server, then namespaces.
    let srv_ns = Netns::new("demo-srv");
    let cli_ns = Netns::new("demo-cli");
    let ipv6 = args.server_ipv6 == "on";
    step("namespace lab", || {
        net::build(&srv_ns.name, &cli_ns.name).map_err(|e| anyhow!(e))?;
        net::set_server_ipv6(&srv_ns.name, ipv6).map_err(|e| anyhow!(e))
    })?;
    eprintln!(
        "       server ns {} ({} {}/{}, IPv6 {}), client ns {}",
        srv_ns.name,
        net::SRV_IF,
        net::SRV_IP,
        net::PREFIX,
        args.server_ipv6,
        cli_ns.name
    );
    let dir = util::target_dir().join("xboot-demo");
    let files = serve::write_lab_files(&dir, &payload).map_err(|e| anyhow!(e))?;
    let arm64 = firmware == Firmware::UefiArm64;
    if arm64 {
        // Debian 12 has no arm64 iPXE: serve the package's bundle.
        let bundle = dir.join("firmware");
        testlab::package::bundle(&bundle).map_err(|e| anyhow!(e))?;
        let cfg = std::fs::read_to_string(&files.config)?;
        let root = format!("root = \"{}\"", bundle.display());
        std::fs::write(
            &files.config,
            cfg.replace("root = \"/usr/lib/ipxe\"", &root),
        )?;
    }
    eprintln!(
        "       config {}, inventory {} + {}",
        files.config.display(),
        files.hosts.display(),
        files.images.display()
    );
    let server = step("start xboot serve", || {
        Server::start(&xboot, &srv_ns.name, files.clone(), Duration::from_secs(20)).map_err(|e| {
            anyhow!(
                "{e}\n(`xboot serve` with DHCP, TFTP and HTTP is the step this demo needs next)"
            )
        })
    })?;

    let spec = VmSpec {
        boot: Boot::Pxe(firmware),
        nic: Some(Nic::lab(&cli_ns.name)),
        serial: dir.join("serial.log"),
        memory_mb: 256,
    };
    eprintln!(
        "[demo] PXE-booting a qemu VM ({}, MAC {}, TCG) ...",
        firmware.name(),
        net::VM_MAC
    );
    let vm_start_ms = unix_ms();
    let mut vm = Vm::start(&spec).map_err(|e| anyhow!(e))?;
    let timeout = Duration::from_secs(args.timeout);
    if arm64 {
        let t = Instant::now();
        let events = loop {
            let events = server.events(serve::NODE);
            if let Ok(evs) = &events {
                if evs.iter().any(|e| e.kind == "kernel") {
                    break events;
                }
            }
            if t.elapsed() > timeout {
                bail!(
                    "no kernel download within {}s\n--- xboot serve log (last lines):\n{}",
                    args.timeout,
                    testlab::tail(&files.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        vm.serial().finish();
        print_timeline(vm_start_ms, &events, vm.serial().lines());
        eprintln!("[demo] arm64: booted up to the kernel download (the payload is x86-64)");
        drop(vm);
        drop(server);
        eprintln!("[demo] lab torn down; total {}", util::secs(t0.elapsed()));
        return Ok(());
    }
    let done = vm
        .wait_for(payload::POSTSCRIPT_DONE, timeout)
        .map_err(|e| {
            anyhow!(
                "{e}\n--- xboot serve log (last lines):\n{}",
                testlab::tail(&files.log, 20)
            )
        })?;
    let _ = vm.wait_exit(Duration::from_secs(args.timeout + 10));
    vm.serial().finish();

    let events = server.events(serve::NODE);
    print_timeline(vm_start_ms, &events, vm.serial().lines());
    if !done.text.contains("rc=0") || !done.text.contains("complete=ok") {
        bail!(
            "the node ran its postscript but did not report success: {}",
            done.text
        );
    }
    eprintln!(
        "[demo] serial log {}, xboot log {}",
        spec.serial.display(),
        files.log.display()
    );
    drop(vm);
    drop(server);
    drop(cli_ns);
    drop(srv_ns);
    eprintln!("[demo] lab torn down; total {}", util::secs(t0.elapsed()));
    Ok(())
}

/// Runs one demo step, printing its name and duration.
fn step<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprintln!("[demo] {name} ...");
    let t0 = Instant::now();
    let v = f().with_context(|| format!("demo step '{name}' failed"))?;
    eprintln!("[demo] {name}: ok ({})", util::secs(t0.elapsed()));
    Ok(v)
}

/// `cargo build -p boot-user --bin xboot` (debug: incremental on a warm cache), or the
/// binary named by `XBOOT_BIN` (e.g. a release build) without building.
pub(crate) fn build() -> anyhow::Result<PathBuf> {
    if !util::is_root() {
        bail!("the demo needs root (network namespaces, a tap device)");
    }
    if let Some(bin) = std::env::var_os("XBOOT_BIN") {
        return Ok(PathBuf::from(bin));
    }
    util::run_step(
        "cargo build",
        util::cargo().args(["build", "-p", "boot-user", "--bin", "xboot"]),
    )?;
    Ok(util::target_dir().join("debug/xboot"))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One timeline row: ms after the VM started, where it comes from, what.
struct Row {
    at_ms: i64,
    source: &'static str,
    what: String,
}

/// Prints the server's boot events and the payload's serial markers, merged by time.
fn print_timeline(
    vm_start_ms: u64,
    events: &Result<Vec<BootEvent>, String>,
    serial: &[testlab::serial::Line],
) {
    let mut rows: Vec<Row> = vec![];
    match events {
        Ok(evs) => rows.extend(evs.iter().map(|e| Row {
            at_ms: e.time_ms as i64 - vm_start_ms as i64,
            source: "xboot",
            what: format!("{:<12} {}", e.kind, e.detail),
        })),
        Err(e) => eprintln!(
            "[demo] no boot events from the xboot API ({e}); timeline from the serial console only"
        ),
    }
    let markers = [
        (payload::BOOTED, "booted"),
        (payload::LEASE, "os_lease"),
        (payload::POSTSCRIPT_FETCHED, "postscript"),
        (payload::POSTSCRIPT_DONE, "complete"),
        (payload::POWEROFF, "poweroff"),
    ];
    for (marker, kind) in markers {
        if let Some(l) = serial.iter().find(|l| l.text.contains(marker)) {
            let from = l.text.find(marker).map_or(0, |i| i + marker.len());
            // The cmdline is printed on its own below the timeline.
            let what = l.text[from..]
                .split(" cmdline=")
                .next()
                .unwrap_or_default()
                .trim();
            let what: String = what.chars().take(100).collect();
            rows.push(Row {
                at_ms: l.at.as_millis() as i64,
                source: "serial",
                what: format!("{kind:<12} {what}"),
            });
        }
    }
    rows.sort_by_key(|r| r.at_ms);
    println!(
        "\nnode {} boot timeline (seconds after the VM started):",
        serve::NODE
    );
    for r in &rows {
        println!(
            "  {:>7.2}s  {:<6}  {}",
            r.at_ms as f64 / 1000.0,
            r.source,
            r.what
        );
    }
    let cmdline = serial
        .iter()
        .find_map(|l| l.text.split_once(" cmdline=").map(|(_, c)| c));
    if let Some(c) = cmdline {
        println!("kernel cmdline as booted (rendered from the image's template):\n  {c}");
    }
}
