//! One simulated node's boot, as an async state machine on the shared event loop:
//! firmware DHCP (AF_PACKET), TFTP of the boot file, iPXE's DHCP, the iPXE script and
//! the files it names over one keep-alive connection, a modelled kernel boot, the OS's
//! DHCP, the postscript and the completion POST. Every milestone is time-stamped on one
//! clock (the power command's), and a failure records the stage and a reason.
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

use crate::http::{self, Conn};
use crate::nsops::{self, NsOps};
use crate::script::{self, Action, Vars};
use crate::wire::{self, Reply};

/// Milestones in boot order (a node's record holds the time it reached each).
pub const STAGES: [&str; 14] = [
    "power_on",
    "fw_ack",
    "tftp_first",
    "tftp_done",
    "ipxe_ack",
    "script",
    "kernel",
    "initrd",
    "booted",
    "os_ack",
    "os_configured",
    "postscript",
    "complete",
    "done",
];

/// Firmware behaviour (timers from the firmware's source, see the storm note §2.1;
/// packets as real firmware sends them, checked against qemu captures by the
/// fingerprint test, `tests/fingerprint.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Legacy BIOS with an iPXE ROM (SeaBIOS + iPXE, arch 0): iPXE's own DHCP (user
    /// class iPXE, option 175, DISCOVER at 1, 2, 4, 8 s), then the script straight away
    /// when the server names an HTTP URL (as xboot and dnsmasq do for iPXE); a TFTP
    /// boot file is fetched with iPXE's parameters (blksize 1432 + tsize, 0.25 s retry
    /// timer doubling) and followed by iPXE's DHCP again.
    Bios,
    /// UEFI PXE as EDK2/OVMF does it (arch 7): broadcast flag, DHCP at 4, 8, 16, 32 s
    /// (offers collected for the whole first window), TFTP size probe (tsize, aborted
    /// with error 8 after the OACK), then the read from a new port with blksize 1468 and
    /// windowsize 4, 4 s x 6 tries; then iPXE (snponly.efi).
    Uefi,
}

impl Profile {
    pub const ALL: [Profile; 2] = [Profile::Bios, Profile::Uefi];
    pub fn name(self) -> &'static str {
        match self {
            Profile::Bios => "bios",
            Profile::Uefi => "uefi",
        }
    }
    pub fn parse(s: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == s)
    }
    /// Option 93, the PXE vendor class (60) and the NII (94) iPXE sends on this
    /// firmware (ROM on BIOS; snponly.efi on UEFI).
    fn ipxe_arch(self) -> (u8, &'static [u8], [u8; 3]) {
        match self {
            Profile::Bios => (0, b"PXEClient:Arch:00000:UNDI:002001", [1, 2, 1]),
            Profile::Uefi => (7, b"PXEClient:Arch:00007:UNDI:003010", [1, 3, 10]),
        }
    }
    /// iPXE's feature indicators (option 175) as Debian's iPXE sends them on this
    /// firmware: bus id (177: PCI e1000 on BIOS, virtio-net under snponly.efi), version
    /// (235: 1.0.0), then one flag per feature (PXE extensions, HTTP, DNS, TFTP, ...).
    fn ipxe_features(self) -> &'static [u8] {
        match self {
            Profile::Bios => &[
                177, 5, 1, 0x80, 0x86, 0x10, 0x0e, 235, 3, 1, 0, 0, 23, 1, 1, 34, 1, 1, 19, 1, 1,
                17, 1, 1, 39, 1, 1, 25, 1, 1, 41, 1, 1, 16, 1, 2, 33, 1, 1, 21, 1, 1, 24, 1, 1, 18,
                1, 1,
            ],
            Profile::Uefi => &[
                177, 5, 1, 0x1a, 0xf4, 0x10, 0x00, 235, 3, 1, 0, 0, 23, 1, 1, 36, 1, 1, 19, 1, 1,
                17, 1, 1, 39, 1, 1, 41, 1, 1, 21, 1, 1, 18, 1, 1,
            ],
        }
    }
    /// The milestones a boot of this profile passes when the server hands iPXE its
    /// script by HTTP in the first lease (xboot, dnsmasq): a BIOS iPXE ROM needs no
    /// TFTP and no second DHCP.
    pub fn stages(self) -> Vec<&'static str> {
        STAGES
            .iter()
            .copied()
            .filter(|s| {
                self == Profile::Uefi || !matches!(*s, "tftp_first" | "tftp_done" | "ipxe_ack")
            })
            .collect()
    }
}

/// What every node of a storm shares.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub profile: Profile,
    /// Power-on times are spread uniformly over this (0: all at once).
    pub jitter: Duration,
    /// Modelled kernel + initrd boot, identical for every server under test.
    pub boot_delay: Duration,
    /// SO_RCVBUF of HTTP sockets: the TCP window (iPXE: 2 MB).
    pub rcvbuf: usize,
}

/// One node's outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeResult {
    pub node: usize,
    pub name: String,
    pub mac: String,
    /// (milestone, seconds since the power command), in the order reached.
    pub stamps: Vec<(&'static str, f64)>,
    /// (stage it was in, reason, detail).
    pub failure: Option<(String, String, String)>,
    /// DISCOVERs + REQUESTs sent: firmware, iPXE, OS.
    pub dhcp_sent: [u32; 3],
    pub tftp_retransmits: u32,
    /// DHCP frames the node's kernel refused to send (counted as lost).
    pub dhcp_send_errors: u32,
    /// TFTP datagrams whose send failed.
    pub tftp_send_errors: u32,
    pub http_bytes: u64,
    /// Seconds since the power command when the node finished or failed.
    pub end: f64,
    /// Reboots after a failure before the kernel (fault runs): (stage, reason, at).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reboots: Vec<(String, String, f64)>,
    /// HTTP requests of the booted OS retried after a refused or reset connection.
    #[serde(skip_serializing_if = "is_zero")]
    pub os_http_retries: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// How a node recovers from a failure (fault runs; a plain run records the failure).
#[derive(Clone, Copy, Debug, Default)]
pub struct Recovery {
    /// Reboots from power-on after a failure before the kernel boots (a firmware whose
    /// boot order retries the network).
    pub reboots: u32,
    /// How long the booted OS retries a refused or reset HTTP request (1 s apart).
    pub os_retry: Duration,
}

impl NodeResult {
    pub fn at(&self, stage: &str) -> Option<f64> {
        self.stamps
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, t)| *t)
    }
}

/// A failure: reason (machine-readable) and detail.
struct Fail(&'static str, String);

/// One node being booted.
pub struct Node {
    pub idx: usize,
    pub mac: [u8; 6],
    ops: NsOps,
    cfg: SimConfig,
    t0: Instant,
    res: NodeResult,
    stage: &'static str,
    pkt: Option<(AsyncFd<OwnedFd>, i32)>,
    /// Opened before the storm; taken as the boot needs them.
    socks: Option<nsops::NodeSockets>,
    xid: u32,
    rng: u64,
    /// Whose HTTP requests the node sends (iPXE's, then the OS's).
    agent: http::Agent,
    recovery: Recovery,
    /// Index into [`STAGES`] of the last milestone reached, shared with the run (the
    /// faults look at where the nodes are).
    progress: Option<std::sync::Arc<[std::sync::atomic::AtomicU8]>>,
    /// Past the kernel's boot: HTTP errors are the OS's to retry.
    booted: bool,
    /// The node's power from its BMC ([`crate::power`]); None: it powers on from the
    /// simulator's clock within the jitter.
    power: Option<tokio::sync::watch::Receiver<crate::power::State>>,
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Waits until `line` says the node has power: when it got it, or None if the storm gave
/// up on it (or the BMC side is gone).
async fn power_on(line: &mut tokio::sync::watch::Receiver<crate::power::State>) -> Option<Instant> {
    loop {
        let s = *line.borrow_and_update();
        if s.on {
            return Some(s.since);
        }
        if s.abandoned {
            return None;
        }
        line.changed().await.ok()?;
    }
}

/// Resolves when `line` says the node has lost its power (never, if the BMC side is gone).
async fn power_lost(line: &mut tokio::sync::watch::Receiver<crate::power::State>) {
    loop {
        if !line.borrow_and_update().on {
            return;
        }
        if line.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// TFTP retransmission policy.
#[derive(Clone, Copy)]
enum Retry {
    /// iPXE: from 0.25 s, doubling, until it would exceed 10 s.
    Ipxe,
    /// EDK2 Mtftp: 4 s, 6 tries.
    Edk2,
}

impl Retry {
    fn first(self) -> Duration {
        match self {
            Retry::Ipxe => Duration::from_millis(250),
            Retry::Edk2 => Duration::from_secs(4),
        }
    }
    fn max_tries(self) -> u32 {
        match self {
            Retry::Ipxe => u32::MAX,
            Retry::Edk2 => 6,
        }
    }
}

/// DHCP phase: which boot step is talking.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Firmware,
    Ipxe,
    Os,
}

/// The DHCP client of a phase: its packets and timers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    /// EDK2's PXE (UEFI firmware).
    Edk2,
    /// iPXE (the BIOS ROM, or snponly.efi on UEFI).
    Ipxe,
    /// The booted OS (busybox udhcpc).
    Udhcpc,
}

impl Node {
    pub fn new(
        idx: usize,
        name: String,
        mac: [u8; 6],
        ops: NsOps,
        cfg: SimConfig,
        t0: Instant,
        socks: nsops::NodeSockets,
    ) -> Node {
        Node {
            idx,
            mac,
            ops,
            cfg,
            t0,
            res: NodeResult {
                node: idx,
                name,
                mac: mac_string(mac),
                ..NodeResult::default()
            },
            stage: "off",
            pkt: None,
            socks: Some(socks),
            xid: 0,
            agent: http::Agent::Ipxe,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (idx as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
            recovery: Recovery::default(),
            progress: None,
            booted: false,
            power: None,
        }
    }

    /// Powers on when its BMC gives it power (and reboots when it loses it mid-boot)
    /// instead of from the simulator's clock.
    pub fn with_power(mut self, line: tokio::sync::watch::Receiver<crate::power::State>) -> Node {
        self.power = Some(line);
        self
    }

    /// Recovers from failures as `r` says.
    pub fn with_recovery(mut self, r: Recovery) -> Node {
        self.recovery = r;
        self
    }

    /// Publishes the last milestone reached into `p[idx]` (index into [`STAGES`]).
    pub fn with_progress(mut self, p: std::sync::Arc<[std::sync::atomic::AtomicU8]>) -> Node {
        self.progress = Some(p);
        self
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*: reproducible per node.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn stamp(&mut self, s: &'static str) {
        self.stamp_at(s, Instant::now());
    }

    fn stamp_at(&mut self, s: &'static str, at: Instant) {
        self.res
            .stamps
            .push((s, at.saturating_duration_since(self.t0).as_secs_f64()));
        self.stage = s;
        if let (Some(p), Some(i)) = (&self.progress, STAGES.iter().position(|x| *x == s)) {
            p[self.idx].store(i as u8, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Powers on (after the node's jitter, or when its BMC gives it power) and boots;
    /// returns the record.
    pub async fn run(mut self) -> NodeResult {
        let mut power = self.power.take();
        match &mut power {
            None => {
                let j = self.cfg.jitter.as_micros() as u64;
                let delay = if j == 0 { 0 } else { self.rand() % j };
                tokio::time::sleep(Duration::from_micros(delay)).await;
                self.stamp("power_on");
            }
            Some(line) => match power_on(line).await {
                Some(at) => self.stamp_at("power_on", at),
                None => {
                    self.res.failure = Some((
                        "off".into(),
                        "no_power".into(),
                        "its BMC never powered it on".into(),
                    ));
                    self.res.end = self.t0.elapsed().as_secs_f64();
                    return self.res;
                }
            },
        }
        loop {
            let r = match &mut power {
                None => self.boot().await,
                Some(line) => tokio::select! {
                    r = self.boot() => r,
                    _ = power_lost(line) => Err(Fail("power_lost", "its BMC took the power".into())),
                },
            };
            match r {
                Ok(()) => {
                    self.stamp("done");
                    break;
                }
                // Power lost mid-boot (a second cycle): the boot starts again at the next
                // power-on, whatever the recovery policy.
                Err(Fail("power_lost", detail)) if power.is_some() => {
                    let at = self.t0.elapsed().as_secs_f64();
                    self.res.reboots.push((
                        self.stage.to_string(),
                        format!("power_lost: {detail}"),
                        at,
                    ));
                    self.res.stamps.truncate(0);
                    self.booted = false;
                    match power_on(power.as_mut().expect("matched")).await {
                        Some(at) => self.stamp_at("power_on", at),
                        None => {
                            self.res.failure = Some((
                                "off".into(),
                                "no_power".into(),
                                "power lost for good".into(),
                            ));
                            break;
                        }
                    }
                }
                Err(Fail(reason, detail))
                    if !self.booted && (self.res.reboots.len() as u32) < self.recovery.reboots =>
                {
                    // The firmware tries the network again: from DHCP, after POST.
                    let at = self.t0.elapsed().as_secs_f64();
                    self.res.reboots.push((
                        self.stage.to_string(),
                        format!("{reason}: {detail}"),
                        at,
                    ));
                    self.res.stamps.truncate(1);
                    self.stage = "power_on";
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(Fail(reason, detail)) => {
                    self.res.failure = Some((self.stage.to_string(), reason.to_string(), detail));
                    break;
                }
            }
        }
        self.res.end = self.t0.elapsed().as_secs_f64();
        // Closing a packet socket waits out an RCU grace period (the kernel's
        // packet_release calls synchronize_net): tens of ms each on a busy machine, and on
        // this one-thread loop 1,000 finished nodes' closes held every other node up for
        // seconds. Closed off the loop (concurrent closes share grace periods).
        let sockets = (self.pkt.take(), self.socks.take());
        tokio::task::spawn_blocking(move || drop(sockets));
        self.res
    }

    async fn boot(&mut self) -> Result<(), Fail> {
        let socks = self
            .socks
            .as_mut()
            .expect("sockets opened before the storm");
        // A reboot keeps the NIC's socket.
        if let Some((fd, ifindex)) = socks.packet.take() {
            // SAFETY: the OwnedFd is moved into the AsyncFd and stays open, the same
            // file, until the AsyncFd drops.
            let fd = unsafe { AsyncFd::register(fd) }
                .map_err(|e| Fail("internal", format!("register packet socket: {e}")))?;
            self.pkt = Some((fd, ifindex));
        }
        // A boot (a reboot too) starts with iPXE's HTTP client.
        self.agent = http::Agent::Ipxe;
        // 1. Firmware DHCP.
        let ack = self.dhcp(Phase::Firmware).await?;
        self.stamp("fw_ack");
        self.configure(&ack).await?;
        // 2. TFTP of the boot file, then iPXE's DHCP; an iPXE ROM given its script's
        // URL goes to it at once.
        let file = ack
            .boot_file()
            .ok_or_else(|| Fail("no_boot_file", "firmware ACK names no boot file".into()))?
            .to_string();
        let (url, ack) = if file.starts_with("http://") && self.cfg.profile == Profile::Bios {
            (file, ack)
        } else {
            let server = if ack.siaddr.is_unspecified() {
                ack.server()
            } else {
                ack.siaddr
            };
            match self.cfg.profile {
                Profile::Bios => self.tftp_ipxe(server, &file).await?,
                Profile::Uefi => self.tftp_edk2(server, &file).await?,
            }
            self.stamp("tftp_done");
            // 3. iPXE's DHCP.
            let ack = self.dhcp(Phase::Ipxe).await?;
            self.stamp("ipxe_ack");
            self.configure(&ack).await?;
            let url = ack
                .boot_file()
                .ok_or_else(|| Fail("no_script_url", "iPXE ACK names no script".into()))?
                .to_string();
            (url, ack)
        };
        // 4. Script (following chains), kernel, initrds.
        let mut vars = Vars::for_nic(self.mac, ack.yiaddr);
        let mut conn: Option<Conn> = None;
        let mut url = url;
        let mut kernel_args = None;
        let mut initrds = vec![];
        let mut kernel_url = None;
        for _depth in 0..4 {
            let text = self.get(&mut conn, &url, true).await?.text;
            let actions = script::run(&text, &url, &mut vars)
                .map_err(|e| Fail("script_error", format!("{url}: {e}")))?;
            let mut chained = None;
            for a in actions {
                match a {
                    Action::Kernel { url, args } => {
                        kernel_url = Some(url);
                        kernel_args = Some(args);
                    }
                    Action::Initrd { url } => initrds.push(url),
                    Action::Chain { url } => chained = Some(url),
                    Action::Boot => {}
                }
            }
            match chained {
                Some(next) => url = next,
                None => break,
            }
        }
        self.stamp("script");
        let kernel_url =
            kernel_url.ok_or_else(|| Fail("script_error", "script loads no kernel".into()))?;
        self.get(&mut conn, &kernel_url, false).await?;
        self.stamp("kernel");
        for u in &initrds {
            self.get(&mut conn, u, false).await?;
        }
        self.stamp("initrd");
        drop(conn);
        // 5. The kernel boots (modelled).
        tokio::time::sleep(self.cfg.boot_delay).await;
        self.stamp("booted");
        self.booted = true;
        // 6. The OS: DHCP, postscript, completion.
        let ack = self.dhcp(Phase::Os).await?;
        self.stamp("os_ack");
        self.configure(&ack).await?;
        // The lab's part (the node's address and neighbour entry, set from this
        // process): its own stage, so the postscript's is the server's request alone.
        self.stamp("os_configured");
        let args = kernel_args.unwrap_or_default();
        let post = script::cmdline_param(&args, testlab::payload::PARAM_POSTSCRIPT)
            .ok_or_else(|| Fail("no_postscript", format!("cmdline: {args}")))?
            .to_string();
        let complete = script::cmdline_param(&args, testlab::payload::PARAM_COMPLETE)
            .ok_or_else(|| Fail("no_complete_url", format!("cmdline: {args}")))?
            .to_string();
        // The OS's client is busybox wget: `Connection: close`, a connection per request.
        self.agent = http::Agent::Wget;
        let mut conn = None;
        self.get(&mut conn, &post, true).await?;
        self.stamp("postscript");
        // Closed before the next (its descriptor too).
        conn = None;
        self.post(&mut conn, &complete, b"rc=0").await?;
        self.stamp("complete");
        Ok(())
    }

    async fn configure(&mut self, ack: &Reply) -> Result<(), Fail> {
        let ip = ack.yiaddr;
        let prefix = ack.subnet.map(wire::prefix_len).unwrap_or(24);
        let socks = self
            .socks
            .as_ref()
            .expect("sockets opened before the storm");
        let ifindex = self.pkt.as_ref().map(|p| p.1).unwrap_or(0);
        nsops::set_address(socks, "eth0", ip, prefix)
            .map_err(|e| Fail("internal", format!("configure {ip}/{prefix}: {e}")))?;
        // The neighbour entry by netlink, from the node's namespace: a socket opened and
        // closed there, not one held per node for the whole storm.
        let (gw, gw_mac) = (ack.server(), ack.src_mac);
        self.ops
            .run(self.idx, move || {
                nsops::neigh_permanent(&nsops::netlink_route()?, ifindex, gw, gw_mac)
            })
            .await
            .map_err(|e| Fail("internal", format!("neighbour entry for {gw}: {e}")))
    }

    /// The options a client of `phase` sends, in its order.
    fn client(&self, phase: Phase) -> Client {
        match phase {
            Phase::Firmware if self.cfg.profile == Profile::Uefi => Client::Edk2,
            Phase::Firmware | Phase::Ipxe => Client::Ipxe,
            Phase::Os => Client::Udhcpc,
        }
    }

    /// The options a client of `phase` sends, in its order (as captured from the real
    /// clients: `tests/fingerprint.rs`).
    fn options(&self, phase: Phase, msg: u8, reply: Option<&Reply>) -> Vec<(u8, Vec<u8>)> {
        let mut o = vec![(53, vec![msg])];
        let (arch, vendor, nii) = self.cfg.profile.ipxe_arch();
        let uuid = {
            let mut u = vec![0u8; 17];
            u[11..17].copy_from_slice(&self.mac);
            u
        };
        let server = reply.map(|r| (54, r.server().octets().to_vec()));
        let requested = reply.map(|r| (50, r.yiaddr.octets().to_vec()));
        match self.client(phase) {
            Client::Edk2 => {
                // A REQUEST names the server and the address first, and announces a
                // 65,280-byte maximum message where the DISCOVER said 1,472.
                o.extend(server);
                o.extend(requested);
                let max: u16 = if reply.is_some() { 0xff00 } else { 1472 };
                o.push((57, max.to_be_bytes().to_vec()));
                o.push((
                    55,
                    vec![
                        1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51,
                        54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135,
                    ],
                ));
                o.push((97, uuid));
                o.push((94, vec![1, 3, 0]));
                o.push((93, vec![0, 7]));
                o.push((60, b"PXEClient:Arch:00007:UNDI:003000".to_vec()));
            }
            Client::Ipxe => {
                o.push((57, 1472u16.to_be_bytes().to_vec()));
                o.push((93, vec![0, arch]));
                o.push((94, nii.to_vec()));
                o.push((60, vendor.to_vec()));
                o.push((77, b"iPXE".to_vec()));
                o.push((
                    55,
                    vec![
                        1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132,
                        133, 134, 135, 175, 203,
                    ],
                ));
                o.push((175, self.cfg.profile.ipxe_features().to_vec()));
                o.push((61, [&[1u8][..], &self.mac].concat()));
                o.push((97, uuid));
                o.extend(server);
                o.extend(requested);
            }
            Client::Udhcpc => {
                o.extend(requested);
                o.extend(server);
                o.push((57, 576u16.to_be_bytes().to_vec()));
                o.push((55, vec![1, 3, 6, 12, 15, 28, 42]));
                o.push((60, b"udhcp 1.35.0".to_vec()));
                o.push((61, [&[1u8][..], &self.mac].concat()));
            }
        }
        o
    }

    async fn send_dhcp(
        &mut self,
        phase: Phase,
        msg: u8,
        reply: Option<&Reply>,
        started: Instant,
    ) -> Result<(), Fail> {
        let req = wire::Request {
            mac: self.mac,
            xid: self.xid,
            secs: started.elapsed().as_secs().min(u16::MAX as u64) as u16,
            // EDK2 asks for broadcast replies; iPXE and udhcpc do not.
            broadcast: self.client(phase) == Client::Edk2,
            options: self.options(phase, msg, reply),
        };
        let frame = wire::frame(self.mac, &wire::encode(&req));
        let (fd, ifindex) = self.pkt.as_ref().expect("packet socket open");
        // A send the kernel refuses (ENOBUFS when the veth's queue is full) is a lost
        // packet, as on a real NIC: the firmware's retransmission timer covers it.
        if nsops::packet_send(fd.get_ref().as_raw_fd(), *ifindex, &frame).is_err() {
            self.res.dhcp_send_errors += 1;
        }
        let i = match phase {
            Phase::Firmware => 0,
            Phase::Ipxe => 1,
            Phase::Os => 2,
        };
        self.res.dhcp_sent[i] += 1;
        Ok(())
    }

    /// Waits until `deadline` for a reply of one of `types` to the current xid.
    async fn recv_dhcp(&mut self, types: &[u8], deadline: tokio::time::Instant) -> Option<Reply> {
        let mac = self.mac;
        let xid = self.xid;
        let (fd, _) = self.pkt.as_ref().expect("packet socket open");
        let mut buf = [0u8; 2048];
        loop {
            let r = tokio::time::timeout_at(deadline, fd.readable()).await;
            let mut guard = match r {
                Err(_) => return None,
                Ok(Err(_)) => return None,
                Ok(Ok(g)) => g,
            };
            let n = match guard.try_io(|inner| {
                // SAFETY: recv into our stack buffer of the stated length.
                let n = unsafe {
                    libc::recv(
                        inner.get_ref().as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => continue,
            };
            if let Some(rep) = wire::parse_frame(&buf[..n], mac) {
                if rep.xid == xid && types.contains(&rep.msg_type) {
                    return Some(rep);
                }
            }
        }
    }

    /// DISCOVER/OFFER/REQUEST/ACK with the phase's timers; NAK restarts (3 at most).
    async fn dhcp(&mut self, phase: Phase) -> Result<Reply, Fail> {
        let client = self.client(phase);
        let (disc, req): (&[f64], &[f64]) = match client {
            // EDK2 UefiPxeBcDxe: mPxeDhcpTimeout {4, 8, 16, 32}.
            Client::Edk2 => (&[4.0, 8.0, 16.0, 32.0], &[4.0, 8.0, 16.0, 32.0]),
            // iPXE config/dhcp.h: DISCOVER 1..8 s doubling; REQUEST from 0.25 s doubling.
            Client::Ipxe => (&[1.0, 2.0, 4.0, 8.0], &[0.25, 0.5, 1.0, 2.0, 4.0, 8.0]),
            // udhcpc -t 5 -T 2.
            Client::Udhcpc => (&[2.0; 5], &[2.0; 5]),
        };
        for _nak in 0..3 {
            self.xid = self.rand() as u32;
            let started = Instant::now();
            let start = tokio::time::Instant::now();
            let mut offer = None;
            for &t in disc {
                self.send_dhcp(phase, wire::DISCOVER, None, started).await?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(t);
                let Some(o) = self.recv_dhcp(&[wire::OFFER], deadline).await else {
                    continue;
                };
                // EDK2 collects offers until its first timeout expires.
                if client == Client::Edk2 {
                    tokio::time::sleep_until(deadline).await;
                }
                // iPXE waits up to 2 s for a ProxyDHCP offer unless the offer is
                // PXE-ready (vendor class PXEClient, or 175.176 set).
                if client == Client::Ipxe
                    && !o.ipxe_no_pxedhcp
                    && !o
                        .vendor_class
                        .as_deref()
                        .unwrap_or(b"")
                        .starts_with(b"PXEClient")
                {
                    tokio::time::sleep_until(start + Duration::from_secs(2)).await;
                }
                offer = Some(o);
                break;
            }
            let Some(offer) = offer else {
                return Err(Fail(
                    "no_offer",
                    format!("{} DISCOVERs unanswered", disc.len()),
                ));
            };
            let mut nak = false;
            for &t in req {
                self.send_dhcp(phase, wire::REQUEST, Some(&offer), started)
                    .await?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(t);
                match self.recv_dhcp(&[wire::ACK, wire::NAK], deadline).await {
                    Some(r) if r.msg_type == wire::ACK => return Ok(r),
                    Some(_) => {
                        nak = true;
                        break;
                    }
                    None => {}
                }
            }
            if !nak {
                return Err(Fail("no_ack", format!("{} REQUESTs unanswered", req.len())));
            }
        }
        Err(Fail("nak_loop", "3 NAKs".into()))
    }

    /// iPXE's TFTP: RRQ blksize 1432 + tsize, ACK every block, retry timer from 0.25 s
    /// doubling, giving up once it would exceed 10 s (~15.75 s of silence).
    async fn tftp_ipxe(&mut self, server: Ipv4Addr, file: &str) -> Result<(), Fail> {
        let opts = [("blksize", "1432"), ("tsize", "0")];
        self.tftp_get(server, file, &opts, Retry::Ipxe, false).await
    }

    /// EDK2's TFTP: a size probe (RRQ tsize 0 + blksize + windowsize, OACK, ERROR 8
    /// "User aborted the transfer"), then the read from a new port with blksize 1468 and windowsize 4;
    /// 4 s timeout, 6 tries.
    async fn tftp_edk2(&mut self, server: Ipv4Addr, file: &str) -> Result<(), Fail> {
        let probe = [("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")];
        self.tftp_get(server, file, &probe, Retry::Edk2, true)
            .await?;
        let opts = [("blksize", "1468"), ("windowsize", "4")];
        self.tftp_get(server, file, &opts, Retry::Edk2, false).await
    }

    /// One TFTP read (or, with `probe`, an RRQ aborted after the OACK) from a fresh port.
    async fn tftp_get(
        &mut self,
        server: Ipv4Addr,
        file: &str,
        opts: &[(&str, &str)],
        retry: Retry,
        probe: bool,
    ) -> Result<(), Fail> {
        let pre = self.socks.as_mut().and_then(|s| s.tftp.pop());
        let sock = match pre {
            Some(s) => s,
            None => self
                .ops
                .run(self.idx, || nsops::udp_socket(0))
                .await
                .map_err(|e| Fail("internal", format!("TFTP socket: {e}")))?,
        };
        let sock = UdpSocket::from_std(sock).map_err(|e| Fail("internal", e.to_string()))?;
        let mut rrq = vec![0, 1];
        for part in [file, "octet"]
            .into_iter()
            .chain(opts.iter().flat_map(|(k, v)| [*k, *v]))
        {
            rrq.extend_from_slice(part.as_bytes());
            rrq.push(0);
        }
        // Awaited, not try_send_to: a socket just registered has no cached write
        // readiness yet, so a try_ send would be dropped. A failed send is counted (the
        // simulator must never be the one losing packets) and covered by the timer.
        async fn send(s: &UdpSocket, p: &[u8], d: SocketAddr, errors: &mut u32) {
            if s.send_to(p, d).await.is_err() {
                *errors += 1;
            }
        }
        let mut last = rrq;
        let mut dest = SocketAddr::from((server, 69));
        let mut tid: Option<SocketAddr> = None;
        let (mut blksize, mut window) = (512usize, 1u16);
        let mut expect = 1u16;
        let mut got = 0u64;
        let mut tsize = None;
        let mut rto = retry.first();
        let mut tries = 1;
        let mut buf = vec![0u8; 65536];
        send(&sock, &last, dest, &mut self.res.tftp_send_errors).await;
        loop {
            let r = tokio::time::timeout(rto, sock.recv_from(&mut buf)).await;
            let (n, from) = match r {
                Err(_) => {
                    tries += 1;
                    match retry {
                        Retry::Ipxe => rto *= 2,
                        Retry::Edk2 => {}
                    }
                    if rto > Duration::from_secs(10) || tries > retry.max_tries() {
                        return Err(Fail(
                            "tftp_timeout",
                            format!("{file}: no progress after block {}", expect - 1),
                        ));
                    }
                    self.res.tftp_retransmits += 1;
                    send(&sock, &last, dest, &mut self.res.tftp_send_errors).await;
                    continue;
                }
                Ok(Err(e)) => return Err(Fail("tftp_io", e.to_string())),
                Ok(Ok(x)) => x,
            };
            if tid.is_some_and(|t| t != from) || n < 4 {
                continue;
            }
            if tid.is_none() {
                tid = Some(from);
                dest = from;
                if self.res.at("tftp_first").is_none() {
                    self.stamp("tftp_first");
                }
            }
            let p = &buf[..n];
            match u16::from_be_bytes([p[0], p[1]]) {
                6 => {
                    let fields: Vec<&[u8]> = p[2..].split(|&b| b == 0).collect();
                    for kv in fields.chunks(2) {
                        if let [k, v] = kv {
                            let v = String::from_utf8_lossy(v);
                            match String::from_utf8_lossy(k).to_ascii_lowercase().as_str() {
                                "blksize" => blksize = v.parse().unwrap_or(512),
                                "tsize" => tsize = v.parse::<u64>().ok(),
                                "windowsize" => window = v.parse().unwrap_or(1).max(1),
                                _ => {}
                            }
                        }
                    }
                    if probe {
                        let mut e = vec![0, 5, 0, 8];
                        e.extend_from_slice(b"User aborted the transfer\0");
                        send(&sock, &e, dest, &mut self.res.tftp_send_errors).await;
                        return Ok(());
                    }
                    last = vec![0, 4, 0, 0];
                    send(&sock, &last, dest, &mut self.res.tftp_send_errors).await;
                }
                3 => {
                    let block = u16::from_be_bytes([p[2], p[3]]);
                    if block == expect {
                        let len = n - 4;
                        got += len as u64;
                        expect = expect.wrapping_add(1);
                        rto = retry.first();
                        tries = 1;
                        let end = len < blksize;
                        // One ACK per window (windowsize 1: every block), and the last.
                        if end || block.is_multiple_of(window) {
                            last = vec![0, 4, p[2], p[3]];
                            send(&sock, &last, dest, &mut self.res.tftp_send_errors).await;
                        }
                        if end {
                            if tsize.is_some_and(|t| t != got) {
                                return Err(Fail(
                                    "size_mismatch",
                                    format!("{file}: tsize {tsize:?}, got {got}"),
                                ));
                            }
                            return Ok(());
                        }
                    } else {
                        // Out of order or a duplicate: ACK the last block in order.
                        let b = expect.wrapping_sub(1).to_be_bytes();
                        last = vec![0, 4, b[0], b[1]];
                        send(&sock, &last, dest, &mut self.res.tftp_send_errors).await;
                    }
                }
                5 => {
                    let code = u16::from_be_bytes([p[2], p[3]]);
                    let msg = String::from_utf8_lossy(&p[4..])
                        .trim_end_matches('\0')
                        .to_string();
                    return Err(Fail("tftp_error", format!("{file}: error {code} {msg}")));
                }
                _ => {}
            }
        }
    }

    async fn connect(&mut self, conn: &mut Option<Conn>, url: &http::Url) -> Result<(), Fail> {
        if conn.as_ref().is_some_and(|c| c.addr == url.addr) {
            return Ok(());
        }
        let rcvbuf = self.cfg.rcvbuf;
        let pre = self.socks.as_mut().and_then(|s| s.tcp.pop());
        let sock = match pre {
            Some(s) => s,
            None => self
                .ops
                .run(self.idx, move || nsops::tcp_socket(rcvbuf))
                .await
                .map_err(|e| Fail("internal", format!("TCP socket: {e}")))?,
        };
        let mut c = Conn::connect(sock, url.addr)
            .await
            .map_err(|e| Fail("http_connect", format!("{}: {e}", url.addr)))?;
        c.agent = self.agent;
        *conn = Some(c);
        Ok(())
    }

    async fn get(
        &mut self,
        conn: &mut Option<Conn>,
        url: &str,
        keep: bool,
    ) -> Result<http::Response, Fail> {
        self.request(conn, "GET", url, b"", keep).await
    }

    async fn post(
        &mut self,
        conn: &mut Option<Conn>,
        url: &str,
        body: &[u8],
    ) -> Result<http::Response, Fail> {
        self.request(conn, "POST", url, body, false).await
    }

    async fn request(
        &mut self,
        conn: &mut Option<Conn>,
        method: &str,
        url: &str,
        body: &[u8],
        keep: bool,
    ) -> Result<http::Response, Fail> {
        let u = http::parse_url(url).map_err(|e| Fail("bad_url", e))?;
        // The booted OS retries refused and reset connections (fault runs).
        let retry_until = Instant::now() + self.recovery.os_retry;
        loop {
            match self.request_once(conn, method, url, &u, body, keep).await {
                Err(Fail("http_connect" | "http_io", _))
                    if self.booted && Instant::now() < retry_until =>
                {
                    self.res.os_http_retries += 1;
                    *conn = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                r => return r,
            }
        }
    }

    async fn request_once(
        &mut self,
        conn: &mut Option<Conn>,
        method: &str,
        url: &str,
        u: &http::Url,
        body: &[u8],
        keep: bool,
    ) -> Result<http::Response, Fail> {
        // One reconnect if a kept-alive connection was closed by the server meanwhile.
        for attempt in 0..2 {
            self.connect(conn, u).await?;
            let c = conn.as_mut().expect("connected above");
            match c.request(method, u, body, keep).await {
                Ok(r) if (200..300).contains(&r.status) => {
                    self.res.http_bytes += r.bytes;
                    return Ok(r);
                }
                Ok(r) => return Err(Fail("http_status", format!("{method} {url}: {}", r.status))),
                Err(http::Error::Closed) if attempt == 0 => {
                    *conn = None;
                }
                Err(http::Error::Stall) => {
                    return Err(Fail("http_stall", format!("{method} {url}")));
                }
                Err(e) => return Err(Fail("http_io", format!("{method} {url}: {e}"))),
            }
        }
        Err(Fail("http_io", format!("{method} {url}: closed twice")))
    }
}
