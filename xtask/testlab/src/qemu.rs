//! A qemu VM for boot tests: PXE firmware (SeaBIOS + iPXE ROM, OVMF + iPXE EFI ROM,
//! OVMF's own UEFI PXE on virtio-net) or a direct `-kernel/-initrd` boot, with its
//! serial console logged to a file and followed by [`SerialLog`]. The VM runs inside
//! the client namespace (its tap lives there) and is killed by pid when dropped.
//!
//! Acceleration is TCG: KVM here is nested (kvm_pvm) and hangs a Linux guest (see the
//! project notes); `XBOOT_QEMU_ACCEL=kvm` overrides it on machines where KVM works.
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::serial::{Line, SerialLog};

pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// Debian's UEFI firmware for qemu's arm64 `virt` machine (qemu-efi-aarch64).
pub const AAVMF: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";

/// Which firmware does the network boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS + e1000 with the iPXE PXE ROM (option 93 arch 0, then iPXE).
    Bios,
    /// OVMF + e1000 with the iPXE EFI ROM (arch 7, iPXE does the PXE itself).
    Uefi,
    /// OVMF's own UEFI PXE on virtio-net without option ROM (arch 7, TFTP of an EFI
    /// iPXE binary, then iPXE).
    UefiNative,
    /// An arm64 VM (qemu's `virt` machine, emulated) with Debian's EDK2 build and its own
    /// UEFI PXE on virtio-net (arch 11, TFTP of the arm64 iPXE, then iPXE).
    UefiArm64,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::UefiNative => "uefi-native",
            Firmware::UefiArm64 => "uefi-arm64",
        }
    }
}

/// The VM's network interface: a tap in a namespace.
#[derive(Clone, Debug)]
pub struct Nic {
    pub netns: String,
    pub tap: String,
    pub mac: String,
}

impl Nic {
    /// The lab's VM NIC ([`crate::net::build`]): the tap [`crate::net::TAP`] in `netns`,
    /// with the inventory node's MAC [`crate::net::VM_MAC`].
    pub fn lab(netns: &str) -> Nic {
        Nic {
            netns: netns.to_string(),
            tap: crate::net::TAP.into(),
            mac: crate::net::VM_MAC.into(),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Boot {
    /// Network boot from the NIC (needs a [`Nic`]).
    Pxe(Firmware),
    /// `-kernel/-initrd/-append`: no firmware boot, the NIC (if any) has no ROM.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

#[derive(Clone, Debug)]
pub struct VmSpec {
    pub boot: Boot,
    pub nic: Option<Nic>,
    /// Serial console log (recreated at start); qemu's own output goes beside it
    /// with the extension `.qemu.log`.
    pub serial: PathBuf,
    pub memory_mb: u32,
}

impl VmSpec {
    /// The full command line, starting with `ip netns exec NS` when the VM has a NIC.
    pub fn argv(&self) -> Vec<String> {
        let accel = std::env::var("XBOOT_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut a: Vec<String> = vec![];
        if let Some(nic) = &self.nic {
            a.extend(["ip", "netns", "exec", &nic.netns].map(String::from));
        }
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let arm64 = matches!(self.boot, Boot::Pxe(Firmware::UefiArm64));
        if arm64 {
            // Emulated whatever XBOOT_QEMU_ACCEL says: the host is x86-64.
            a.extend(s(&["qemu-system-aarch64", "-M", "virt", "-cpu", "max"]));
            a.extend(s(&["-accel", "tcg", "-bios", AAVMF]));
        } else {
            a.extend(s(&["qemu-system-x86_64", "-accel", &accel]));
        }
        a.extend(s(&["-m", &self.memory_mb.to_string()]));
        a.extend(s(&["-nographic", "-no-reboot", "-monitor", "none"]));
        a.extend(s(&["-serial", &format!("file:{}", self.serial.display())]));
        let uefi = matches!(self.boot, Boot::Pxe(Firmware::Uefi | Firmware::UefiNative));
        if uefi {
            a.extend(s(&["-bios", OVMF]));
        }
        match &self.nic {
            None => a.extend(s(&["-nic", "none"])),
            Some(nic) => {
                let netdev = format!("tap,id=n0,ifname={},script=no,downscript=no", nic.tap);
                let device = match &self.boot {
                    Boot::Pxe(Firmware::Bios | Firmware::Uefi) => {
                        format!("e1000,netdev=n0,mac={},bootindex=1", nic.mac)
                    }
                    Boot::Pxe(Firmware::UefiNative | Firmware::UefiArm64) => {
                        format!(
                            "virtio-net-pci,netdev=n0,mac={},romfile=,bootindex=1",
                            nic.mac
                        )
                    }
                    Boot::Direct { .. } => format!("e1000,netdev=n0,mac={},romfile=", nic.mac),
                };
                a.extend(s(&["-netdev", &netdev, "-device", &device]));
            }
        }
        match &self.boot {
            Boot::Pxe(_) => a.extend(s(&["-boot", "n"])),
            Boot::Direct {
                kernel,
                initrd,
                append,
            } => a.extend(s(&[
                "-kernel",
                &kernel.display().to_string(),
                "-initrd",
                &initrd.display().to_string(),
                "-append",
                append,
            ])),
        }
        a
    }
}

/// Why a wait ended without the marker.
#[derive(Debug)]
pub struct VmError {
    pub what: String,
    pub serial_tail: String,
    pub qemu_log: String,
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n--- serial console (last lines):\n{}",
            self.what, self.serial_tail
        )?;
        if !self.qemu_log.trim().is_empty() {
            write!(f, "\n--- qemu output:\n{}", self.qemu_log)?;
        }
        Ok(())
    }
}

impl std::error::Error for VmError {}

pub struct Vm {
    child: Child,
    started: Instant,
    serial: SerialLog,
    qemu_log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Vm {
    pub fn start(spec: &VmSpec) -> Result<Vm, String> {
        Self::start_with(spec, &[])
    }

    /// [`Vm::start`] with `extra` qemu arguments after the spec's (`-fw_cfg ...`).
    pub fn start_with(spec: &VmSpec, extra: &[String]) -> Result<Vm, String> {
        if matches!(spec.boot, Boot::Pxe(_)) && spec.nic.is_none() {
            return Err("a PXE-booted VM needs a NIC".into());
        }
        let _ = std::fs::remove_file(&spec.serial);
        let qemu_log = spec.serial.with_extension("qemu.log");
        let out = std::fs::File::create(&qemu_log)
            .map_err(|e| format!("cannot create {}: {e}", qemu_log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut argv = spec.argv();
        argv.extend(extra.iter().cloned());
        let started = Instant::now();
        // `ip netns exec` execs in place: the child's pid is qemu's.
        let child = crate::peers::command(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", argv.join(" ")))?;
        Ok(Vm {
            child,
            started,
            serial: SerialLog::new(&spec.serial, started),
            qemu_log,
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When qemu was started: serial line times are relative to it.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn serial(&mut self) -> &mut SerialLog {
        &mut self.serial
    }

    /// Serial lines read so far (call [`Vm::wait_for`] or [`Vm::wait_exit`] to read more).
    pub fn lines(&self) -> &[Line] {
        self.serial.lines()
    }

    pub fn serial_path(&self) -> &Path {
        self.serial.path()
    }

    fn error(&self, what: String) -> VmError {
        VmError {
            what,
            serial_tail: self.serial.tail(40),
            qemu_log: crate::tail(&self.qemu_log, 20),
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
            if self.exit.is_some() {
                self.serial.finish();
            }
        }
        self.exit
    }

    /// Waits until a serial line contains `marker`; fails if qemu exits first or
    /// `timeout` (counted from the VM's start) passes.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<Line, VmError> {
        loop {
            self.serial.poll();
            if let Some(l) = self.serial.find(marker) {
                return Ok(l.clone());
            }
            if let Some(status) = self.exited() {
                if let Some(l) = self.serial.find(marker) {
                    return Ok(l.clone());
                }
                return Err(
                    self.error(format!("qemu exited ({status}) before printing {marker:?}"))
                );
            }
            let elapsed = self.started.elapsed();
            if crate::interrupted() {
                return Err(self.error(format!("interrupted while waiting for {marker:?}")));
            }
            if elapsed > timeout {
                return Err(self.error(format!(
                    "no {marker:?} on the serial console after {elapsed:.1?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for qemu to exit by itself (the payload powers off), up to `timeout` from
    /// the VM's start.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, VmError> {
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if crate::interrupted() || self.started.elapsed() > timeout {
                return Err(self.error(format!("qemu still running after {timeout:?}")));
            }
            self.serial.poll();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills qemu (by pid, SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
            self.serial.finish();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(boot: Boot, nic: bool) -> VmSpec {
        let nic = nic.then(|| Nic {
            netns: "ns1".into(),
            tap: "tap0".into(),
            mac: "52:54:00:00:00:01".into(),
        });
        VmSpec {
            boot,
            nic,
            serial: "/tmp/s.log".into(),
            memory_mb: 256,
        }
    }

    #[test]
    fn command_lines() {
        let bios = spec(Boot::Pxe(Firmware::Bios), true).argv().join(" ");
        assert!(
            bios.starts_with("ip netns exec ns1 qemu-system-x86_64 -accel "),
            "{bios}"
        );
        assert!(
            bios.contains(" -m 256 -nographic -no-reboot -monitor none "),
            "{bios}"
        );
        assert!(bios.contains("-serial file:/tmp/s.log"));
        assert!(bios.contains("-netdev tap,id=n0,ifname=tap0,script=no,downscript=no"));
        assert!(bios.contains("-device e1000,netdev=n0,mac=52:54:00:00:00:01,bootindex=1 -boot n"));
        assert!(!bios.contains("-bios"));

        let uefi = spec(Boot::Pxe(Firmware::Uefi), true).argv().join(" ");
        assert!(
            uefi.contains(&format!("-bios {OVMF}")) && uefi.contains("-device e1000,"),
            "{uefi}"
        );
        let native = spec(Boot::Pxe(Firmware::UefiNative), true).argv().join(" ");
        assert!(
            native.contains("virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,romfile=,bootindex=1")
        );

        let arm64 = spec(Boot::Pxe(Firmware::UefiArm64), true).argv().join(" ");
        assert!(
            arm64.starts_with("ip netns exec ns1 qemu-system-aarch64 -M virt -cpu max -accel tcg ")
                && arm64.contains(&format!("-bios {AAVMF} -m 256 "))
                && arm64.contains(
                    "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,romfile=,bootindex=1"
                ),
            "{arm64}"
        );

        let direct = Boot::Direct {
            kernel: "/k".into(),
            initrd: "/i".into(),
            append: "console=ttyS0 a=b".into(),
        };
        let argv = spec(direct.clone(), false).argv();
        assert_eq!(argv[0], "qemu-system-x86_64");
        assert!(argv.join(" ").contains("-nic none"));
        assert_eq!(
            &argv[argv.len() - 6..],
            [
                "-kernel",
                "/k",
                "-initrd",
                "/i",
                "-append",
                "console=ttyS0 a=b"
            ]
        );
        assert!(spec(direct, true).argv().join(" ").contains("romfile="));
    }
}
