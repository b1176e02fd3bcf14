//! The truth VMs of a storm (the I/O edge of [`crate::truth`]): two qemu VMs (TCG) on
//! taps of the fabric's spine, in the server's inventory beside the simulated nodes,
//! each behind its own OpenIPMI `ipmi_sim` (on the server namespace's loopback; its
//! `startcmd` is the qemu command line, so `chassis power on` by ipmitool starts the VM
//! and power off ends it), and tcpdump on the server's link (600 bytes of each frame:
//! the headers). Powered on with the storm; [`TruthVms::finish`] waits for each to
//! reach its marker on its serial console, powers them off, stops the capture and
//! checks their turnarounds against the simulated nodes'.
//!
//! - `vm-bios`: SeaBIOS + the iPXE ROM (e1000), to the completion POST.
//! - `vm-uefi`: OVMF's own PXE on virtio-net (DHCP, TFTP of snponly.efi, iPXE, HTTP), to
//!   the kernel booting: the test payload has no virtio-net driver.
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use testlab::payload;
use testlab::qemu::{Boot, Firmware, Nic, VmSpec};
use testlab::serial::SerialLog;

use crate::truth::{self, Check};

/// name, firmware, tap on the spine, MAC, inventory address (outside the nodes' range).
pub const VMS: [(&str, Firmware, &str, &str, &str); 2] = [
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

/// The VMs' entries for a Grendel hosts.json (image `image`).
pub fn hosts(image: &str) -> Vec<serde_json::Value> {
    VMS.iter()
        .map(|(name, _, _, mac, addr)| {
            serde_json::json!({
                "name": name,
                "provision": true,
                "boot_image": image,
                "interfaces": [{ "mac": mac, "ip": format!("{addr}/{}", crate::fabric::PREFIX) }],
            })
        })
        .collect()
}

/// What one VM did.
#[derive(Clone, Debug, Serialize)]
pub struct VmOutcome {
    pub name: &'static str,
    pub marker: &'static str,
    /// Seconds from the power-on command (ipmitool to the VM's ipmi_sim) to the
    /// marker; None if it never came.
    pub reached_s: Option<f64>,
    pub error: Option<String>,
}

/// The truth part of a storm's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct TruthOutcome {
    pub vms: Vec<VmOutcome>,
    pub checks: Vec<Check>,
}

impl TruthOutcome {
    /// Every VM reached its marker and every turnaround fell within p1-p99.
    pub fn valid(&self) -> bool {
        self.vms.iter().all(|v| v.reached_s.is_some()) && self.checks.iter().all(|c| c.ok)
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Truth VMs (qemu, TCG) in this storm: {}\n\n",
            if self.valid() { "valid" } else { "INVALID" }
        );
        for v in &self.vms {
            s += &match (v.reached_s, &v.error) {
                (Some(t), _) => format!("- {}: {} {t:.1} s after its power-on\n", v.name, v.marker),
                (None, e) => format!(
                    "- {}: FAILED before {}: {}\n",
                    v.name,
                    v.marker,
                    e.as_deref().unwrap_or("?").lines().next().unwrap_or("")
                ),
            };
        }
        s + "\n" + &truth::markdown(&self.checks)
    }
}

fn in_ns(ns: &str, argv: &[&str]) -> std::process::Command {
    let mut c = testlab::peers::command("ip");
    c.args(["netns", "exec", ns])
        .arg(testlab::peers::program(argv[0]))
        .args(&argv[1..]);
    c
}

/// One VM behind its BMC.
struct Machine {
    name: &'static str,
    marker: &'static str,
    bmc: Child,
    port: u16,
    dir: PathBuf,
    serial: SerialLog,
    powered: Instant,
}

/// The IPMI LAN port of VM `i`'s ipmi_sim (server namespace loopback).
fn bmc_port(i: usize) -> u16 {
    9601 + i as u16
}

/// ipmi_sim's config: LAN on 127.0.0.1:`port`, user admin/secret, the VM as `startcmd`
/// (the serial line is needed for power control to work at all).
fn lan_conf(name: &str, port: u16, startcmd: &str) -> String {
    format!(
        "name \"{name}\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n\
         \x20   allowed_auths_callback none md2 md5 straight\n    allowed_auths_user none md2 md5 straight\n\
         \x20   allowed_auths_operator none md2 md5 straight\n    allowed_auths_admin none md2 md5 straight\n\
         \x20   guid a123456789abcdefa123456789abcdef\n  endlan\n\
         \x20 serial 15 127.0.0.1 {} codec VM ipmb 0x20\n  startcmd \"{startcmd}\"\n  startnow false\n\
         \x20 poweroff_wait 1\n  kill_wait 1\n\
         \x20 user 2 true \"admin\" \"secret\" admin 10 none md2 md5 straight\n",
        port + 1000
    )
}

const BMC_EMU: &str = "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n";

/// `ipmitool ... chassis power ACTION` to the BMC on `port` in `server_ns`.
fn ipmitool(server_ns: &str, port: u16, action: &str) -> Result<String, String> {
    let port = port.to_string();
    let out = in_ns(
        server_ns,
        &[
            "ipmitool",
            "-I",
            "lanplus",
            "-C",
            "3",
            "-H",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "admin",
            "-P",
            "secret",
            "chassis",
            "power",
            action,
        ],
    )
    .output()
    .map_err(|e| format!("ipmitool: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The running VMs and the capture.
pub struct TruthVms {
    machines: Vec<Machine>,
    server_ns: String,
    dump: Child,
    pcap: PathBuf,
    server_mac: [u8; 6],
    http_port: u16,
}

/// Adds the VMs' taps to the spine in `fabric_ns`.
pub fn attach(fabric_ns: &str) -> Result<(), String> {
    for (_, _, tap, _, _) in VMS {
        for args in [
            vec!["-n", fabric_ns, "tuntap", "add", tap, "mode", "tap"],
            vec!["-n", fabric_ns, "link", "set", tap, "master", "spine", "up"],
        ] {
            let out = testlab::peers::command("ip")
                .args(&args)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "ip {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    Ok(())
}

impl TruthVms {
    /// Starts tcpdump on srv0 in `server_ns` (waits until it listens), then the VMs.
    pub fn start(
        fabric_ns: &str,
        server_ns: &str,
        dir: &Path,
        http_port: u16,
    ) -> Result<TruthVms, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mac = in_ns(server_ns, &["cat", "/sys/class/net/srv0/address"])
            .output()
            .map_err(|e| e.to_string())?;
        let mac_text = String::from_utf8_lossy(&mac.stdout).trim().to_string();
        let server_mac = parse_mac(&mac_text).ok_or_else(|| format!("srv0 MAC {mac_text:?}"))?;
        let pcap = dir.join("server.pcap");
        let err = dir.join("tcpdump.err");
        let err_file = std::fs::File::create(&err).map_err(|e| e.to_string())?;
        let mut dump = in_ns(
            server_ns,
            &[
                "tcpdump",
                "-i",
                "srv0",
                "-n",
                "-U",
                "--immediate-mode",
                "-s",
                "600",
                "-Z",
                "root",
                "-w",
                &pcap.display().to_string(),
                "ip",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_file))
        .spawn()
        .map_err(|e| format!("cannot start tcpdump: {e}"))?;
        let t0 = Instant::now();
        while !std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening on")
        {
            if t0.elapsed() > Duration::from_secs(30) || dump.try_wait().ok().flatten().is_some() {
                let _ = dump.kill();
                let _ = dump.wait();
                return Err(format!(
                    "tcpdump did not start: {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut machines = vec![];
        let stop = |dump: &mut Child, machines: &mut Vec<Machine>| {
            let _ = dump.kill();
            let _ = dump.wait();
            for m in machines.iter_mut() {
                let _ = m.bmc.kill();
                let _ = m.bmc.wait();
            }
        };
        for (i, (name, fw, tap, mac, _)) in VMS.into_iter().enumerate() {
            let bdir = dir.join(format!("bmc-{name}"));
            let serial = dir.join(format!("{name}.serial.log"));
            let spec = VmSpec {
                boot: Boot::Pxe(fw),
                nic: Some(Nic {
                    netns: fabric_ns.to_string(),
                    tap: tap.to_string(),
                    mac: mac.to_string(),
                }),
                serial: serial.clone(),
                memory_mb: 256,
            };
            let mut argv = spec.argv();
            // Absolute paths: ipmi_sim runs the command line as it is.
            argv[0] = testlab::peers::path("ip").display().to_string();
            let port = bmc_port(i);
            let started = std::fs::create_dir_all(bdir.join("state"))
                .and_then(|_| {
                    std::fs::write(bdir.join("lan.conf"), lan_conf(name, port, &argv.join(" ")))
                })
                .and_then(|_| std::fs::write(bdir.join("bmc.emu"), BMC_EMU))
                .and_then(|_| std::fs::File::create(bdir.join("ipmi_sim.log")))
                .and_then(|log| {
                    let err = log.try_clone()?;
                    in_ns(
                        server_ns,
                        &[
                            "ipmi_sim", "-c", "lan.conf", "-f", "bmc.emu", "-s", "state", "-n",
                        ],
                    )
                    .current_dir(&bdir)
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(err)
                    .spawn()
                });
            let bmc = match started {
                Ok(c) => c,
                Err(e) => {
                    stop(&mut dump, &mut machines);
                    return Err(format!("{name}: ipmi_sim: {e}"));
                }
            };
            let _ = std::fs::remove_file(&serial);
            machines.push(Machine {
                name,
                marker: if fw == Firmware::Bios {
                    payload::POSTSCRIPT_DONE
                } else {
                    payload::BOOTED
                },
                bmc,
                port,
                dir: bdir,
                serial: SerialLog::new(&serial, Instant::now()),
                powered: Instant::now(),
            });
        }
        // Power on through each BMC (retried while ipmi_sim starts up).
        for m in machines.iter_mut() {
            let t0 = Instant::now();
            loop {
                match ipmitool(server_ns, m.port, "on") {
                    Ok(_) => break,
                    Err(e) if t0.elapsed() > Duration::from_secs(20) => {
                        let log = testlab::tail(&m.dir.join("ipmi_sim.log"), 10);
                        let name = m.name;
                        stop(&mut dump, &mut machines);
                        return Err(format!("{name}: power on: {e}\n{log}"));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            m.powered = Instant::now();
            m.serial = SerialLog::new(m.serial.path(), m.powered);
        }
        Ok(TruthVms {
            machines,
            server_ns: server_ns.to_string(),
            dump,
            pcap,
            server_mac,
            http_port,
        })
    }

    /// Waits (up to `timeout` from each VM's start) for every VM's marker, stops them and
    /// the capture, and checks the VMs' turnarounds against everyone else's in the
    /// capture (the simulated nodes).
    pub fn finish(mut self, timeout: Duration) -> Result<TruthOutcome, String> {
        let mut vms = vec![];
        for m in self.machines.iter_mut() {
            let (reached_s, error) = loop {
                m.serial.poll();
                if let Some(l) = m.serial.find(m.marker) {
                    break (Some(l.at.as_secs_f64()), None);
                }
                if m.powered.elapsed() > timeout {
                    break (
                        None,
                        Some(format!(
                            "no {:?} on the serial console after {timeout:?}\n{}\n--- ipmi_sim:\n{}",
                            m.marker,
                            m.serial.tail(20),
                            testlab::tail(&m.dir.join("ipmi_sim.log"), 10)
                        )),
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            vms.push(VmOutcome {
                name: m.name,
                marker: m.marker,
                reached_s,
                error,
            });
        }
        // Power off through the BMCs (ipmi_sim ends qemu), then the BMCs themselves;
        // a qemu still running dies with the fabric's namespace.
        for m in self.machines.iter_mut() {
            let _ = ipmitool(&self.server_ns, m.port, "off");
        }
        for m in self.machines.iter_mut() {
            let _ = m.bmc.kill();
            let _ = m.bmc.wait();
        }
        // SAFETY: kill(2) on the tcpdump started above; SIGTERM makes it flush and exit.
        unsafe { libc::kill(self.dump.id() as i32, libc::SIGTERM) };
        let _ = self.dump.wait();
        let bytes =
            std::fs::read(&self.pcap).map_err(|e| format!("{}: {e}", self.pcap.display()))?;
        let frames = crate::fingerprint::read_pcap(&bytes)?;
        let all = truth::turnarounds(&frames, self.server_mac, self.http_port);
        let machines: Vec<(String, String)> = VMS
            .iter()
            .map(|(name, _, _, mac, _)| (name.to_string(), mac.to_string()))
            .collect();
        Ok(TruthOutcome {
            vms,
            checks: truth::check(&all, &machines),
        })
    }
}

impl Drop for TruthVms {
    fn drop(&mut self) {
        // The BMCs and the capture by pid (if still running); the VMs (in the fabric's
        // namespace) die with it.
        for m in self.machines.iter_mut() {
            if m.bmc.try_wait().ok().flatten().is_none() {
                let _ = m.bmc.kill();
                let _ = m.bmc.wait();
            }
        }
        if self.dump.try_wait().ok().flatten().is_none() {
            let _ = self.dump.kill();
            let _ = self.dump.wait();
        }
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_entries_and_verdicts() {
        let h = hosts("test");
        assert_eq!(h.len(), 2);
        assert_eq!(h[0]["interfaces"][0]["mac"], "52:54:00:77:00:10");
        assert_eq!(h[1]["interfaces"][0]["ip"], "10.77.0.51/16");
        assert_eq!(
            parse_mac("e6:a9:b9:fd:61:80"),
            Some([0xe6, 0xa9, 0xb9, 0xfd, 0x61, 0x80])
        );
        assert_eq!(parse_mac("e6:a9"), None);
        assert_eq!(parse_mac("zz:a9:b9:fd:61:80"), None);
        let vm = |reached_s| VmOutcome {
            name: "vm-bios",
            marker: "M",
            reached_s,
            error: reached_s
                .is_none()
                .then(|| "no M after 300s\nmore".to_string()),
        };
        let check = |ok| Check {
            machine: "vm-bios".into(),
            kind: "dhcp_discover".into(),
            real: vec![0.001],
            p1: 0.0005,
            p99: 0.002,
            samples: 10,
            ok,
        };
        let good = TruthOutcome {
            vms: vec![vm(Some(7.5))],
            checks: vec![check(true)],
        };
        assert!(good.valid());
        assert!(good
            .markdown()
            .starts_with("Truth VMs (qemu, TCG) in this storm: valid"));
        assert!(good
            .markdown()
            .contains("- vm-bios: M 7.5 s after its power-on"));
        let slow = TruthOutcome {
            vms: vec![vm(Some(7.5))],
            checks: vec![check(false)],
        };
        assert!(!slow.valid());
        let failed = TruthOutcome {
            vms: vec![vm(None)],
            checks: vec![],
        };
        assert!(!failed.valid());
        assert!(failed
            .markdown()
            .contains("- vm-bios: FAILED before M: no M after 300s\n"));
    }
}
