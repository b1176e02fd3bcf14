//! `cargo xtask bench pxe-ipv6 [--runs N]`: the demo's BIOS PXE boot (qemu TCG, SeaBIOS
//! with the iPXE ROM, default `dhcp.mode`) with IPv6 on and off on the server's interface,
//! alternating, N runs each: whether iPXE waits in its IPv6 autoconfiguration when the
//! server has no IPv6 (it should not: xboot's router advertisement is a raw Ethernet
//! frame). Reports, per run, seconds after the VM started to the iPXE script fetch (the
//! part the advertisement decides) and to the node's `complete`, and the medians, in
//! `target/bench/pxe-ipv6/pxe-ipv6.md`. Needs root (namespaces, a tap).
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use testlab::netns::Netns;
use testlab::qemu::{Boot, Firmware, Nic, Vm, VmSpec};
use testlab::serve::{self, Server};
use testlab::{net, payload};

use crate::util;

#[derive(clap::Parser, Debug)]
struct Args {
    /// Boots per setting (alternating on, off, on, ...).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds to wait for each boot's postscript.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

/// One boot's milestones, seconds after the VM started.
struct Run {
    ipv6: bool,
    script: f64,
    /// The payload's "booted" console line: Linux's own boot (TCG, the noisy part on a
    /// loaded machine) lies between the script and this.
    linux: f64,
    complete: f64,
}

pub fn run(argv: &[String]) -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::try_parse_from(
        std::iter::once("bench pxe-ipv6".to_string()).chain(argv.iter().cloned()),
    )?;
    if !util::is_root() {
        bail!("bench pxe-ipv6 needs root (network namespaces, a tap device)");
    }
    testlab::catch_interrupts();
    let xboot = crate::demo::build()?;
    let payload = payload::Payload::cached().map_err(|e| anyhow!(e))?;
    let out = util::target_dir().join("bench/pxe-ipv6");
    let mut runs = vec![];
    for i in 0..args.runs * 2 {
        let ipv6 = i % 2 == 0;
        let r = boot(
            &xboot,
            &payload,
            ipv6,
            &out,
            Duration::from_secs(args.timeout),
        )
        .with_context(|| format!("boot {} (server IPv6 {})", i + 1, on_off(ipv6)))?;
        eprintln!(
            "[bench] boot {} server IPv6 {:<3}: iPXE script {:.2} s, Linux up {:.2} s, complete {:.2} s",
            i + 1,
            on_off(ipv6),
            r.script,
            r.linux,
            r.complete
        );
        runs.push(r);
    }
    let report = report(&runs);
    std::fs::create_dir_all(&out)?;
    let path = out.join("pxe-ipv6.md");
    std::fs::write(&path, &report)?;
    println!("{report}\nreport: {}", path.display());
    Ok(())
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One lab, one server, one VM, torn down on return.
fn boot(
    xboot: &Path,
    payload: &payload::Payload,
    ipv6: bool,
    out: &Path,
    timeout: Duration,
) -> anyhow::Result<Run> {
    let srv_ns = Netns::new("b6-srv");
    let cli_ns = Netns::new("b6-cli");
    net::build(&srv_ns.name, &cli_ns.name).map_err(|e| anyhow!(e))?;
    net::set_server_ipv6(&srv_ns.name, ipv6).map_err(|e| anyhow!(e))?;
    let dir = out.join(format!("ipv6-{}", on_off(ipv6)));
    let files = serve::write_lab_files(&dir, payload).map_err(|e| anyhow!(e))?;
    let server = Server::start(xboot, &srv_ns.name, files, Duration::from_secs(30))
        .map_err(|e| anyhow!(e))?;
    let spec = VmSpec {
        boot: Boot::Pxe(Firmware::Bios),
        nic: Some(Nic::lab(&cli_ns.name)),
        serial: dir.join("serial.log"),
        memory_mb: 256,
    };
    let start_ms = unix_ms();
    let mut vm = Vm::start(&spec).map_err(|e| anyhow!(e))?;
    vm.wait_for(payload::POSTSCRIPT_DONE, timeout)
        .map_err(|e| anyhow!("{e}"))?;
    let events = server.events(serve::NODE).map_err(|e| anyhow!(e))?;
    let at = |kind: &str| {
        events
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| (e.time_ms as f64 - start_ms as f64) / 1000.0)
            .ok_or_else(|| anyhow!("no {kind} event"))
    };
    let linux = vm
        .lines()
        .iter()
        .find(|l| l.text.contains(payload::BOOTED))
        .map(|l| l.at.as_secs_f64())
        .ok_or_else(|| anyhow!("no {} line on the console", payload::BOOTED))?;
    let r = Run {
        ipv6,
        script: at("ipxe_script")?,
        linux,
        complete: at("complete")?,
    };
    drop(vm);
    drop(server);
    drop(cli_ns);
    drop(srv_ns);
    Ok(r)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn report(runs: &[Run]) -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut s = format!(
        "# BIOS PXE boot, server IPv6 on and off (qemu TCG, default dhcp.mode)\n\n\
         Seconds after the VM started (each run; median). Load average at the end: {}.\n\n\
         | server IPv6 | iPXE script | median | Linux up | median | complete | median |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let fields: [fn(&Run) -> f64; 3] = [|r| r.script, |r| r.linux, |r| r.complete];
    for ipv6 in [true, false] {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.ipv6 == ipv6).collect();
        let _ = write!(s, "| {} |", on_off(ipv6));
        for f in fields {
            let each: Vec<String> = mine.iter().map(|r| format!("{:.2}", f(r))).collect();
            let med = median(mine.iter().map(|r| f(r)).collect());
            let _ = write!(s, " {} | {med:.2} |", each.join(", "));
        }
        s.push('\n');
    }
    s
}
