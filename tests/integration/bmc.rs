//! BMC power control against real peers on loopback: OpenIPMI's ipmi_sim (checked against
//! ipmitool for the same simulator), ipmitool against xboot's in-memory BMC (cipher suite
//! 17, which ipmi_sim lacks), and sushy-tools' Redfish emulator with its fake driver.
//!
//! The Redfish tests are in [`redfish`].
//!
//! Each simulator gets its own loopback address 127.X.Y.Z, port 623 (X from our pid, so
//! parallel test binaries do not meet). Every process a test starts is killed by pid
//! when its guard drops (ipmi_sim's power-on children first).
mod redfish;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testlab::children;

use xboot::bmc::fanout::{self, FanoutOpts, Reason, Summary};
use xboot::bmc::ipmi::responder::{self, Responder};
use xboot::bmc::ipmi::{rmcp, CipherSuite, Timing};
use xboot::bmc::{Action, BootMode, Protocol, Target};
use xboot::config::{BmcConfig, Config};

const USER: &str = "admin";
const PASS: &str = "secret";

static NEXT_ADDR: AtomicU32 = AtomicU32::new(0);

/// A loopback address no other test (or test binary) uses.
fn fresh_addr() -> Ipv4Addr {
    let n = NEXT_ADDR.fetch_add(1, Ordering::Relaxed);
    let base = 100 + (std::process::id() % 100) as u8;
    Ipv4Addr::new(127, base, (n / 250) as u8, (n % 250 + 1) as u8)
}

/// How the simulated machine is powered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Power {
    /// `startcmd`: power on runs `sleep`, power off kills it (reset is not supported).
    Startcmd,
    /// `chassis_control`: a script keeps power and boot device in files and logs every
    /// call; ipmi_sim then supports every action and the boot flags.
    Script,
}

/// One ipmi_sim process with its config in a temp dir.
struct Sim {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl Sim {
    fn start(power: Power) -> Sim {
        let ip = fresh_addr();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("state")).unwrap();
        let machine = match power {
            Power::Startcmd => "startcmd \"/bin/sleep 1000\"".to_string(),
            Power::Script => {
                let script = d.join("chassis.sh");
                std::fs::write(&script, CHASSIS_SCRIPT).unwrap();
                testlab::peers::command("chmod")
                    .arg("+x")
                    .arg(&script)
                    .status()
                    .unwrap();
                format!("chassis_control \"{}\"", script.display())
            }
        };
        let conf = format!(
            "name \"xb{ip}\"\nset_working_mc 0x20\n  startlan 1\n    addr {ip} 623\n    priv_limit admin\n\
             \x20   allowed_auths_callback none md2 md5 straight\n    allowed_auths_user none md2 md5 straight\n\
             \x20   allowed_auths_operator none md2 md5 straight\n    allowed_auths_admin none md2 md5 straight\n\
             \x20   guid a123456789abcdefa123456789abcdef\n  endlan\n\
             \x20 serial 15 {ip} 9623 codec VM ipmb 0x20\n  {machine}\n  startnow false\n\
             \x20 poweroff_wait 1\n  kill_wait 1\n\
             \x20 user 2 true \"{USER}\" \"{PASS}\" admin 10 none md2 md5 straight\n"
        );
        std::fs::write(d.join("lan.conf"), conf).unwrap();
        std::fs::write(
            d.join("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
        )
        .unwrap();
        let log = std::fs::File::create(d.join("sim.log")).unwrap();
        let child = testlab::peers::command("ipmi_sim")
            .args(["-c", "lan.conf", "-f", "bmc.emu", "-s", "state", "-n"])
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("ipmi_sim (Debian package openipmi, installed by xtask/scripts/setup.sh)");
        let sim = Sim {
            addr: SocketAddr::new(ip.into(), 623),
            dir,
            child,
        };
        sim.wait_ready();
        sim
    }

    /// Polls with Get Channel Authentication Capabilities until the simulator answers.
    fn wait_ready(&self) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let probe = rmcp::encode_v15(&rmcp::encode_request(0x06, 0x38, 0, &[0x8e, 0x04]));
        let mut buf = [0u8; 512];
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let _ = s.send_to(&probe, self.addr);
            if s.recv_from(&mut buf).is_ok() {
                return;
            }
        }
        panic!("ipmi_sim on {} did not come up: {}", self.addr, self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sim.log")).unwrap_or_default()
    }

    /// Lines the chassis script logged (Script power only).
    fn script_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default()
    }

    /// The powered-on stand-in machine (startcmd child), if any.
    fn machine_pid(&self) -> Option<u32> {
        children(self.child.id()).first().copied()
    }

    fn target(&self, name: &str) -> Target {
        target(name, self.addr, Protocol::Ipmi, PASS)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        for pid in children(self.child.id()) {
            let _ = testlab::peers::command("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chassis_control program: `PROG get power|boot`, `PROG set NAME VALUE ...`.
const CHASSIS_SCRIPT: &str = r#"#!/bin/sh
D=$(dirname "$0")
echo "$*" >> "$D/calls.log"
case "$*" in "set power 1") date +%s%N >> "$D/on.log";; esac
op=$1; shift
case $op in
get) for p in "$@"; do case $p in
       power) echo "power:$(cat "$D/power" 2>/dev/null || echo 0)";;
       boot) echo "boot:$(cat "$D/boot" 2>/dev/null || echo default)";;
     esac; done;;
set) while [ $# -gt 1 ]; do case $1 in
       power) echo "$2" > "$D/power";;
       boot) echo "$2" > "$D/boot";;
     esac; shift 2; done;;
*) exit 1;;
esac
"#;

fn target(name: &str, addr: SocketAddr, protocol: Protocol, password: &str) -> Target {
    Target {
        name: name.into(),
        addr,
        fqdn: None,
        protocol,
        user: USER.into(),
        password: password.into(),
    }
}

fn opts() -> FanoutOpts {
    let mut o = FanoutOpts::from_config(&BmcConfig::default());
    o.timing = Timing {
        timeout: Duration::from_millis(500),
        retries: 2,
    };
    o
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn xboot(
    rt: &tokio::runtime::Runtime,
    targets: Vec<Target>,
    action: Action,
    o: FanoutOpts,
) -> Summary {
    rt.block_on(fanout::run(targets, action, o, |_| {}))
}

/// (success, stdout + stderr) of `ipmitool -I lanplus -C 3 ... ARGS`.
fn ipmitool(addr: SocketAddr, args: &str) -> (bool, String) {
    ipmitool_with(addr, "3", "2", args)
}

/// `ipmitool -I lanplus -C SUITE -N 1 -R RETRIES ...`: (success, stdout + stderr).
fn ipmitool_with(addr: SocketAddr, suite: &str, retries: &str, args: &str) -> (bool, String) {
    let out = testlab::peers::command("ipmitool")
        .args(["-I", "lanplus", "-C", suite, "-N", "1", "-R", retries])
        .args(["-H", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-U", USER, "-P", PASS])
        .args(args.split_whitespace())
        .output()
        .expect("ipmitool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The power state ipmitool reports: "on" or "off".
fn ipmitool_power(addr: SocketAddr) -> String {
    let (ok, out) = ipmitool(addr, "chassis power status");
    assert!(ok, "ipmitool power status: {out}");
    out.trim().rsplit(' ').next().unwrap().to_string()
}

/// Polls xboot's status until it reports `want` (ipmi_sim acts on its ~1 s tick), then
/// checks that ipmitool reports the same for the same simulator.
fn settle_and_agree(rt: &tokio::runtime::Runtime, sim: &Sim, want: &str) {
    // Generous: ipmi_sim acts on its own tick, and CI machines are shared.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = xboot(rt, vec![sim.target("n")], Action::Status, opts());
        assert_eq!(s.results[0].reason, Reason::Ok, "{:?}", s.results[0]);
        let got = s.results[0].power.clone().unwrap();
        if got == want {
            assert_eq!(
                ipmitool_power(sim.addr),
                want,
                "ipmitool disagrees with xboot"
            );
            return;
        }
        assert!(
            Instant::now() < until,
            "power never became {want} (xboot says {got})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ipmi_sim_power_actions_agree_with_ipmitool() {
    let rt = rt();
    let sim = Sim::start(Power::Startcmd);
    let t = || vec![sim.target("n")];
    settle_and_agree(&rt, &sim, "off");

    assert_eq!(xboot(&rt, t(), Action::On, opts()).ok, 1);
    settle_and_agree(&rt, &sim, "on");
    let first_machine = sim.machine_pid().expect("power on started the machine");

    // cycle: the machine process is replaced by a new one
    assert_eq!(xboot(&rt, t(), Action::Cycle, opts()).ok, 1);
    // Generous: ipmi_sim acts on its own tick, and CI machines are shared.
    let until = Instant::now() + Duration::from_secs(20);
    while sim.machine_pid().is_none_or(|p| p == first_machine) {
        assert!(
            Instant::now() < until,
            "power cycle did not restart the machine"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    settle_and_agree(&rt, &sim, "on");

    assert_eq!(xboot(&rt, t(), Action::Off, opts()).ok, 1);
    settle_and_agree(&rt, &sim, "off");

    // the other way round: ipmitool acts, xboot observes
    assert!(ipmitool(sim.addr, "chassis power on").0);
    settle_and_agree(&rt, &sim, "on");

    // hard reset and soft off: ipmi_sim with startcmd refuses or accepts them exactly as
    // it does for ipmitool
    for (action, cmd) in [
        (Action::Reset, "chassis power reset"),
        (Action::Soft, "chassis power soft"),
    ] {
        let s = xboot(&rt, t(), action, opts());
        let (tool_ok, tool_out) = ipmitool(sim.addr, cmd);
        assert_eq!(
            s.ok == 1,
            tool_ok,
            "{action:?}: xboot {:?} vs ipmitool {tool_out}",
            s.results[0]
        );
        if !tool_ok {
            assert!(tool_out.contains("Invalid data field"), "{tool_out}");
            assert!(
                s.results[0]
                    .message
                    .contains("invalid data field in request"),
                "{:?}",
                s.results[0]
            );
        }
    }
}

/// The power-on stagger (`bmc.fanout` = F per `bmc.delay` = D): ipmi_sim's chassis
/// script stamps each power-on as the simulator executes it. No D-long window holds more
/// than F of them (in xboot's start times exactly; at the simulators within a fork's
/// jitter), and every node is powered on.
#[test]
fn ipmi_sim_power_on_is_staggered_f_per_d() {
    let rt = rt();
    let sims: Vec<Sim> = (0..6).map(|_| Sim::start(Power::Script)).collect();
    let targets = || -> Vec<Target> {
        sims.iter()
            .enumerate()
            .map(|(i, s)| s.target(&format!("n{i}")))
            .collect()
    };
    let (f, d) = (2usize, Duration::from_secs(1));
    let mut o = opts();
    o.stagger = Some(fanout::Stagger {
        count: f,
        window: d,
    });
    let s = xboot(&rt, targets(), Action::On, o.clone());
    assert_eq!(s.ok, 6, "{:?}", s.results);
    let mut started: Vec<u64> = s.results.iter().map(|r| r.started_ms).collect();
    started.sort();
    for w in started.windows(f + 1) {
        assert!(
            w[f] - w[0] >= d.as_millis() as u64,
            "xboot started {} nodes within {} ms: {started:?}",
            f + 1,
            w[f] - w[0]
        );
    }
    // At the simulators: one power-on stamp each.
    let mut at: Vec<u64> = sims
        .iter()
        .map(|s| {
            let log = std::fs::read_to_string(s.dir.path().join("on.log")).unwrap_or_default();
            let stamps: Vec<u64> = log.lines().map(|l| l.trim().parse().unwrap()).collect();
            assert_eq!(stamps.len(), 1, "{}: {log}", s.addr);
            stamps[0]
        })
        .collect();
    at.sort();
    let gaps: Vec<u64> = at
        .windows(f + 1)
        .map(|w| (w[f] - w[0]) / 1_000_000)
        .collect();
    eprintln!("stagger {f} per {d:?}: xboot starts at {started:?} ms; the simulators' power-ons, every {} later one: {gaps:?} ms apart", f);
    for g in &gaps {
        // 200 ms for the difference in fork-and-exec latency of two chassis scripts.
        assert!(
            *g + 200 >= d.as_millis() as u64,
            "{} power-ons within {g} ms: {gaps:?}",
            f + 1
        );
    }
}

#[test]
fn ipmi_sim_every_action_and_one_time_pxe() {
    let rt = rt();
    let sim = Sim::start(Power::Script);
    let t = || vec![sim.target("n")];
    // (action, what the chassis script is asked to do, power afterwards)
    let steps = [
        (Action::On, "set power 1", "on"),
        (Action::Reset, "set reset 1", "on"),
        (Action::Soft, "set shutdown 1", "on"),
        (Action::Off, "set power 0", "off"),
        (Action::Cycle, "set power 0", "on"),
    ];
    for (action, call, power) in steps {
        let before = sim.script_log().lines().count();
        let s = xboot(&rt, t(), action, opts());
        assert_eq!(s.ok, 1, "{action:?}: {:?}", s.results[0]);
        let log = sim.script_log();
        assert!(
            log.lines().skip(before).any(|l| l == call),
            "{action:?}: script calls {log}"
        );
        settle_and_agree(&rt, &sim, power);
    }

    // one-time PXE before a cycle, as the simulator and ipmitool see it
    let mut o = opts();
    o.boot = Some(BootMode::Legacy);
    let s = xboot(&rt, t(), Action::Cycle, o);
    assert_eq!(s.ok, 1, "{:?}", s.results[0]);
    assert!(
        sim.script_log().lines().any(|l| l == "set boot pxe"),
        "{}",
        sim.script_log()
    );
    let (ok, out) = ipmitool(sim.addr, "chassis bootparam get 5");
    assert!(
        ok && out.contains("Boot Device Selector : Force PXE"),
        "{out}"
    );
}

/// ipmi_sim without a chassis script (OpenIPMI 1.0.13) refuses Set System Boot Options
/// with 0xcc: `--pxe` then names that (`boot-device`) and leaves the node's power alone,
/// while the same cycle without `--pxe` goes through.
#[test]
fn ipmi_sim_refusing_the_boot_device_is_named_and_not_cycled() {
    let rt = rt();
    let sim = Sim::start(Power::Startcmd);
    let t = || vec![sim.target("n")];
    assert_eq!(xboot(&rt, t(), Action::On, opts()).ok, 1);
    settle_and_agree(&rt, &sim, "on");
    let machine = sim.machine_pid().expect("power on started the machine");
    let mut o = opts();
    o.boot = Some(BootMode::Legacy);
    let s = xboot(&rt, t(), Action::Cycle, o);
    assert_eq!((s.ok, s.failed), (0, 1), "{:?}", s.results);
    let r = &s.results[0];
    assert_eq!(r.reason, Reason::BootDevice, "{r:?}");
    assert!(
        r.message.contains("boot device not supported by this BMC")
            && r.message.contains("0xcc")
            && r.message.contains("power action was not sent"),
        "{}",
        r.message
    );
    let mut table = vec![];
    xboot::bmc::cli::write_table(&mut table, &s).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(
        table.contains("boot-device") && table.contains("0 ok, 1 failed (1 boot-device)"),
        "{table}"
    );
    // Not cycled: the same machine process, still on (ipmi_sim's tick is ~1 s).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sim.machine_pid(), Some(machine));
    settle_and_agree(&rt, &sim, "on");
    // Without --pxe the cycle is sent.
    assert_eq!(xboot(&rt, t(), Action::Cycle, opts()).ok, 1);
    let until = Instant::now() + Duration::from_secs(20);
    while sim.machine_pid().is_none_or(|p| p == machine) {
        assert!(
            Instant::now() < until,
            "power cycle did not restart the machine"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ipmi_sim_wrong_credentials_are_auth_errors() {
    let rt = rt();
    let sim = Sim::start(Power::Startcmd);
    let s = xboot(
        &rt,
        vec![target("n", sim.addr, Protocol::Ipmi, "wrong")],
        Action::Status,
        opts(),
    );
    assert_eq!(s.results[0].reason, Reason::Auth);
    assert!(
        s.results[0]
            .message
            .contains("wrong password for user \"admin\""),
        "{:?}",
        s.results[0]
    );
    let mut t = sim.target("n");
    t.user = "nobody".into();
    let s = xboot(&rt, vec![t], Action::Status, opts());
    assert_eq!(s.results[0].reason, Reason::Auth);
    assert!(
        s.results[0].message.contains("unauthorized name"),
        "{:?}",
        s.results[0]
    );
    assert_eq!(
        xboot(&rt, vec![sim.target("n")], Action::Status, opts()).ok,
        1,
        "the BMC still works"
    );
}

#[test]
fn ipmi_dead_bmc_times_out_in_bound_and_closed_port_is_refused() {
    let rt = rt();
    // a socket that reads nothing: datagrams vanish, as with a dead BMC
    let hole = UdpSocket::bind(SocketAddr::new(fresh_addr().into(), 623)).unwrap();
    let closed = SocketAddr::new(fresh_addr().into(), 623);
    let mut o = opts();
    o.timing = Timing {
        timeout: Duration::from_millis(200),
        retries: 2,
    };
    let bound = o.timing.dead_bmc_bound();
    let targets = vec![
        target("dead", hole.local_addr().unwrap(), Protocol::Ipmi, PASS),
        target("closed", closed, Protocol::Ipmi, PASS),
    ];
    let start = Instant::now();
    let s = xboot(&rt, targets, Action::Cycle, o);
    let took = start.elapsed();
    assert_eq!(s.results[0].reason, Reason::Timeout, "{:?}", s.results[0]);
    assert!(s.results[0]
        .message
        .contains("Get Channel Authentication Capabilities after 3 attempts"));
    assert!(
        took >= bound && took < bound + Duration::from_millis(300),
        "took {took:?}, bound {bound:?}"
    );
    assert_eq!(s.results[1].reason, Reason::Refused, "{:?}", s.results[1]);
    assert!(
        s.results[1].elapsed_ms < 100,
        "refused at once, not after the timeout"
    );
}

#[test]
fn ipmi_sim_cipher_suites() {
    let rt = rt();
    let sim = Sim::start(Power::Startcmd);
    let with = |suites: Vec<CipherSuite>| {
        let mut o = opts();
        o.suites = suites;
        xboot(&rt, vec![sim.target("n")], Action::Status, o)
            .results
            .remove(0)
    };
    assert_eq!(with(vec![CipherSuite::Suite3]).reason, Reason::Ok);
    // ipmi_sim (OpenIPMI 2.0.33) has no HMAC-SHA256: it refuses suite 17, for ipmitool too
    let r17 = with(vec![CipherSuite::Suite17]);
    assert_eq!(r17.reason, Reason::Other);
    assert!(
        r17.message.contains("invalid authentication algorithm"),
        "{r17:?}"
    );
    let (ok, out) = ipmitool_c(sim.addr, "17", "chassis power status");
    assert!(
        !ok && out.contains("invalid authentication algorithm"),
        "{out}"
    );
    // default: 17 first, then 3, at the cost of one round trip
    let auto = with(vec![CipherSuite::Suite17, CipherSuite::Suite3]);
    assert_eq!(auto.reason, Reason::Ok, "{auto:?}");
    assert!(
        auto.elapsed_ms < 500,
        "fallback without waiting for a timeout: {auto:?}"
    );
}

fn ipmitool_c(addr: SocketAddr, suite: &str, args: &str) -> (bool, String) {
    ipmitool_with(addr, suite, "1", args)
}

/// ipmitool (an independent RMCP+ implementation) talks to xboot's in-memory BMC with
/// cipher suites 17 and 3: this checks our SHA-256 key exchange, integrity and AES from
/// the other side, since ipmi_sim cannot.
#[test]
fn ipmitool_suites_17_and_3_against_in_memory_bmc() {
    let rt = rt();
    let addr = SocketAddr::new(fresh_addr().into(), 623);
    let bmc = Arc::new(Mutex::new(Responder::new(USER, PASS, 42)));
    let sock = rt.block_on(tokio::net::UdpSocket::bind(addr)).unwrap();
    let task = rt.spawn(responder::serve(sock, bmc.clone()));
    for suite in ["17", "3"] {
        let (ok, out) = ipmitool_c(addr, suite, "chassis power on");
        assert!(ok, "suite {suite}: {out}");
        assert!(bmc.lock().unwrap().chassis.power_on);
        let (ok, out) = ipmitool_c(addr, suite, "chassis power status");
        assert!(
            ok && out.contains("Chassis Power is on"),
            "suite {suite}: {out}"
        );
        let (ok, out) = ipmitool_c(addr, suite, "chassis power off");
        assert!(ok, "suite {suite}: {out}");
        assert!(!bmc.lock().unwrap().chassis.power_on);
    }
    assert_eq!(
        bmc.lock().unwrap().session_count(),
        0,
        "ipmitool closed every session"
    );
    // ipmitool's boot flags are the bytes xboot sends for a one-time PXE boot
    for (opt, efi) in [("", false), ("options=efiboot", true)] {
        let (ok, out) = ipmitool_c(addr, "17", &format!("chassis bootdev pxe {opt}"));
        assert!(ok, "{out}");
        let want = xboot::bmc::ipmi::commands::boot_flags_pxe(efi);
        assert_eq!(
            bmc.lock().unwrap().chassis.boot_flags,
            want[1..],
            "bootdev pxe {opt}"
        );
    }
    // and xboot with suite 17 against the same BMC, to PXE in EFI mode
    let mut o = opts();
    o.suites = vec![CipherSuite::Suite17];
    o.boot = Some(BootMode::Efi);
    let s = xboot(
        &rt,
        vec![target("n", addr, Protocol::Ipmi, PASS)],
        Action::Cycle,
        o,
    );
    assert_eq!(s.ok, 1, "{:?}", s.results);
    let (ok, out) = ipmitool_c(addr, "17", "chassis bootparam get 5");
    assert!(
        ok && out.contains("Force PXE") && out.contains("BIOS EFI boot"),
        "{out}"
    );
    task.abort();
}

/// An inventory with one host per simulator (its BMC interface on the simulator's
/// address) plus `extra` hosts, and a config with the simulators' credentials.
fn inventory_of(
    sims: &[Sim],
    name: impl Fn(usize) -> String,
    extra: Vec<serde_json::Value>,
) -> (xboot::inventory::Inventory, Config) {
    let hosts: Vec<serde_json::Value> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"name": name(i), "interfaces": [{"ip": s.addr.ip().to_string(), "bmc": true}]}))
        .chain(extra)
        .collect();
    let hosts: Vec<xboot::inventory::Host> =
        serde_json::from_value(serde_json::Value::Array(hosts)).unwrap();
    let mut cfg = Config::default();
    cfg.bmc.user = USER.into();
    cfg.bmc.password = PASS.into();
    (
        xboot::inventory::Inventory::from_parts_unchecked(hosts, vec![]),
        cfg,
    )
}

#[test]
fn ipmi_sim_fifty_bmcs_power_cycle_through_the_cli() {
    let n = 50;
    let sims: Vec<Sim> = (0..n).map(|_| Sim::start(Power::Startcmd)).collect();
    let (inv, cfg) = inventory_of(&sims, |i| format!("cn{i:03}"), vec![]);
    let names: Vec<String> = (0..n).map(|i| format!("cn{i:03}")).collect();
    let run = |action: &str| {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            bmc: Top,
        }
        #[derive(clap::Subcommand)]
        enum Top {
            Bmc(xboot::bmc::cli::BmcArgs),
        }
        let argv = ["xboot", "bmc", "power", action, &names.join(","), "--json"];
        let Top::Bmc(args) = Cli::parse_from(argv).bmc;
        xboot::bmc::cli::run(&args, &cfg, &inv).unwrap()
    };
    assert_eq!(run("on"), 0);
    let until = Instant::now() + Duration::from_secs(10);
    while sims.iter().any(|s| s.machine_pid().is_none()) {
        assert!(Instant::now() < until, "not every machine powered on");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before: Vec<u32> = sims.iter().map(|s| s.machine_pid().unwrap()).collect();
    assert_eq!(
        run("cycle"),
        0,
        "one power cycle over 50 BMCs succeeds for all"
    );
    let until = Instant::now() + Duration::from_secs(10);
    while sims
        .iter()
        .zip(&before)
        .any(|(s, b)| s.machine_pid().is_none_or(|p| p == *b))
    {
        assert!(Instant::now() < until, "not every machine was power-cycled");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ipmitool_power(sims[n - 1].addr), "on");
}

/// `POST /v1/bmc/power` on a running API (unix socket, as `xboot serve` listens): the
/// hosts' BMCs come from the server's inventory, credentials from its `[bmc]` section;
/// the answer is the same summary the CLI prints, and every node's outcome becomes a
/// `power` event. A node set naming a host without a BMC is refused before any traffic.
#[test]
fn ipmi_sim_power_through_the_api() {
    use xboot::api::client::{Client, ClientError, Endpoint};
    let sims: Vec<Sim> = (0..3).map(|_| Sim::start(Power::Script)).collect();
    let nobmc = serde_json::json!({"name": "nobmc", "interfaces": [{"ip": "10.0.0.9/24"}]});
    let (inv, cfg) = inventory_of(&sims, |i| format!("cn{i}"), vec![nobmc]);
    let shared = xboot::state::Shared::new(cfg, inv, xboot::events::EventLog::default());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let rt = rt();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (path, state) = (sock.clone(), xboot::api::ApiState::new(shared, None));
    let server = rt.spawn(async move {
        xboot::api::serve_unix(&path, state, async move {
            let _ = stopped.await;
        })
        .await
    });
    let client = Client::new(Endpoint::Unix(sock.clone()));
    let until = Instant::now() + Duration::from_secs(5);
    while rt.block_on(client.get("/v1/status")).is_err() {
        assert!(Instant::now() < until, "API did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let power = |body: serde_json::Value| rt.block_on(client.post("/v1/bmc/power", Some(body)));

    let on =
        power(serde_json::json!({"nodeset": "cn[0-2]", "action": "on", "boot": "legacy"})).unwrap();
    let on: Summary = serde_json::from_value(on).unwrap();
    assert_eq!((on.total, on.ok, on.failed), (3, 3, 0), "{on:?}");
    for s in &sims {
        let log = s.script_log();
        assert!(log.lines().any(|l| l == "set boot pxe"), "{log}");
        assert!(log.lines().any(|l| l == "set power 1"), "{log}");
    }
    // The simulators act on their own tick: poll the API's status until all are on,
    // then check ipmitool sees the same.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let st: Summary = serde_json::from_value(
            power(serde_json::json!({"nodeset": "cn[0-2]", "action": "status"})).unwrap(),
        )
        .unwrap();
        assert_eq!(st.ok, 3, "{st:?}");
        if st.results.iter().all(|r| r.power.as_deref() == Some("on")) {
            break;
        }
        assert!(Instant::now() < until, "not all on: {st:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for s in &sims {
        assert_eq!(ipmitool_power(s.addr), "on");
    }
    let events = rt
        .block_on(client.get("/v1/events?nodeset=cn1"))
        .unwrap()
        .to_string();
    assert!(
        events.contains(r#""kind":"power""#) && events.contains("on (next boot: PXE): ok via"),
        "{events}"
    );

    // Grendel v0.2's route for the same fan-out: Redfish power names in, one JobMessage
    // per node out.
    let jobs = rt
        .block_on(client.post(
            &format!(
                "/v1/bmc/power/os?nodeset={}&tags=",
                xboot::api::client::encode("cn[0-2]")
            ),
            Some(serde_json::json!({"power_option": "ForceOff", "boot_option": "None"})),
        ))
        .unwrap();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    for j in jobs {
        assert_eq!(j["status"], "success", "{j}");
        assert!(j["msg"].as_str().unwrap().starts_with("off via"), "{j}");
    }
    for s in &sims {
        assert!(
            s.script_log().lines().any(|l| l == "set power 0"),
            "{}",
            s.script_log()
        );
    }

    // refused before any traffic: a host without a BMC, an unknown host, a bad body
    let before: Vec<usize> = sims
        .iter()
        .map(|s| s.script_log().lines().count())
        .collect();
    match power(serde_json::json!({"nodeset": "cn0,nobmc,ghost", "action": "off"})) {
        Err(ClientError::Api {
            status, message, ..
        }) => {
            assert_eq!(status, 400);
            assert!(
                message.contains("host nobmc: no interface with bmc = true")
                    && message.contains("host ghost: not in the inventory"),
                "{message}"
            );
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    assert!(matches!(
        power(serde_json::json!({"nodeset": "cn0", "action": "explode"})),
        Err(ClientError::Api { status, .. }) if status == 400
    ));
    let after: Vec<usize> = sims
        .iter()
        .map(|s| s.script_log().lines().count())
        .collect();
    assert_eq!(before, after, "a refused request reached a BMC");

    // The CLI through the server: no config file (the server has the credentials).
    let cli = |args: &[&str]| {
        let out = testlab::peers::own(env!("CARGO_BIN_EXE_xboot"))
            .arg("--socket")
            .arg(&sock)
            .args(["bmc", "power"])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, out) = cli(&["status", "cn[0-2]", "--server", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let st: Summary = serde_json::from_str(&out).unwrap();
    assert_eq!((st.ok, st.failed), (3, 0), "{out}");
    let (code, out) = cli(&["off", "cn0,nobmc", "--server"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("host nobmc: no interface with bmc = true"),
        "{out}"
    );
    let _ = stop.send(());
    rt.block_on(server).unwrap().unwrap();
}

/// The `xboot` binary reads the inventory offline from `--hosts FILE` (the config naming
/// none), as `serve` and `check-config` do: `bmc power status` reaches each host's
/// ipmi_sim; with `--server` the flag is refused (the server's inventory would be used).
#[test]
fn bmc_power_status_takes_hosts_file_on_the_command_line() {
    let sims: Vec<Sim> = (0..2).map(|_| Sim::start(Power::Startcmd)).collect();
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<serde_json::Value> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"name": format!("cn{}", i + 1),
                "interfaces": [{"ip": s.addr.ip().to_string(), "bmc": true}]})
        })
        .collect();
    let hosts_file = dir.path().join("hosts.json");
    std::fs::write(&hosts_file, serde_json::to_string(&hosts).unwrap()).unwrap();
    let config = dir.path().join("xboot.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[bmc]\nuser = \"{USER}\"\npassword = \"{PASS}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = testlab::peers::own(env!("CARGO_BIN_EXE_xboot"))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(dir.path().join("no-server.socket"))
            .args(["bmc", "power", "status", "cn[1-2]", "--json", "--hosts"])
            .arg(&hosts_file)
            .args(extra)
            .env_remove("XBOOT_CONFIG")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let st: Summary = serde_json::from_str(&stdout).unwrap();
    assert_eq!((st.ok, st.failed), (2, 0), "{stdout}");
    assert!(
        st.results.iter().all(|r| r.power.as_deref() == Some("off")),
        "{stdout}"
    );
    let (code, _, stderr) = run(&["--server"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--hosts/--images"), "{stderr}");
}
