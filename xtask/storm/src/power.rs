//! Power for the storm's simulated nodes, through the path a real fleet takes: a BMC per
//! node, told to power-cycle into PXE by the server's BMC client (`xboot bmc power cycle
//! all --pxe`; FreeIPMI's `ipmipower --cycle` for the baseline stack), and a node boots
//! when its BMC gives it power. The report's first stage starts at the power command.
//!
//! - [`Power::Sim`]: no BMC; each node powers on from the simulator's clock within the
//!   `--jitter` (the storm's old start).
//! - [`Power::Ipmi`]: one OpenIPMI `ipmi_sim` per node, its LAN on `bmc_ip(i):623` on the
//!   server namespace's loopback. Its `startcmd` (run when the chassis powers on) is
//!   `stormsim power-agent SOCKET i`, which connects to the simulator's unix socket, says
//!   `i` and waits: connected = node `i` has power, and when ipmi_sim ends the process on
//!   power-off the connection closes = power lost. Above [`RESPONDER_ABOVE`] nodes (an
//!   ipmi_sim takes ~1 MiB of its own and ~0.1 s of CPU to start) the BMCs are in-memory
//!   responders instead.
//! - [`Power::Responder`]: xboot's in-memory BMC ([`xboot::bmc::ipmi::responder`], the
//!   managed-system side of RMCP+ with a simulated chassis) per node at the same
//!   addresses, all on one UDP socket (IP_PKTINFO says which BMC a request is for),
//!   served by a thread of the simulator; a Chassis Control that
//!   powers the chassis on (on, cycle, reset) gives the node power at once (ipmi_sim acts
//!   on its ~1 s tick instead).
//!
//! Each node's power is a [`tokio::sync::watch`] of [`State`] (on, how often it was
//! powered, since when), written by the BMC side and read by the node
//! ([`crate::node::Node::with_power`]).
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use xboot::bmc::ipmi::{commands, responder::Responder, rmcp};

/// BMC user and password of every simulated node (in the server's `[bmc]` config).
pub const USER: &str = "admin";
pub const PASS: &str = "secret";
/// IPMI over LAN.
pub const BMC_PORT: u16 = 623;
/// Above this many nodes `--power ipmi` uses in-memory responders, not ipmi_sim.
pub const RESPONDER_ABOVE: usize = 2000;
/// How long after the power command has returned a node may still wait for power (an
/// ipmi_sim acts on a ~1 s tick): then it fails as `no_power`.
pub const POWER_GRACE: Duration = Duration::from_secs(30);

/// How the nodes get their power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Power {
    /// The simulator's clock, within the jitter.
    Sim,
    /// A BMC per node (ipmi_sim, responders above [`RESPONDER_ABOVE`] nodes).
    Ipmi,
    /// A BMC per node, all in-memory responders.
    Responder,
}

impl Power {
    pub const ALL: [Power; 3] = [Power::Sim, Power::Ipmi, Power::Responder];
    pub fn name(self) -> &'static str {
        match self {
            Power::Sim => "sim",
            Power::Ipmi => "ipmi",
            Power::Responder => "responder",
        }
    }
    pub fn parse(s: &str) -> Option<Power> {
        Power::ALL.into_iter().find(|p| p.name() == s)
    }
    /// The BMCs a storm of `n` nodes runs (None: no BMC, the simulator's clock).
    pub fn bmcs(self, n: usize) -> Option<Bmcs> {
        match self {
            Power::Sim => None,
            Power::Ipmi if n <= RESPONDER_ABOVE => Some(Bmcs::IpmiSim),
            Power::Ipmi | Power::Responder => Some(Bmcs::Responder),
        }
    }
}

/// What answers IPMI for the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bmcs {
    /// One OpenIPMI ipmi_sim process per node.
    IpmiSim,
    /// xboot's in-memory responders, one UDP socket for all.
    Responder,
}

impl Bmcs {
    pub fn name(self) -> &'static str {
        match self {
            Bmcs::IpmiSim => "ipmi_sim",
            Bmcs::Responder => "responder",
        }
    }
}

/// Node `i`'s BMC address (server namespace loopback; up to 62,500 nodes).
pub fn bmc_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 88, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// The BMC interface of node `i` in a Grendel hosts.json.
pub fn bmc_interface(i: usize) -> serde_json::Value {
    serde_json::json!({ "ip": bmc_ip(i).to_string(), "bmc": true })
}

/// The `[bmc]` section of the server's config.
pub fn bmc_config() -> String {
    format!("\n[bmc]\nuser = \"{USER}\"\npassword = \"{PASS}\"\n")
}

/// One node's power as its BMC has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub on: bool,
    /// Power-ons so far.
    pub ons: u32,
    /// When `on` last changed.
    pub since: Instant,
    /// The storm gave up on this node getting power (the power command is over).
    pub abandoned: bool,
}

impl State {
    fn off(now: Instant) -> State {
        State {
            on: false,
            ons: 0,
            since: now,
            abandoned: false,
        }
    }
}

/// The senders of every node's power (BMC side).
type Lines = Arc<Vec<watch::Sender<State>>>;

fn set_power(lines: &Lines, i: usize, on: bool) {
    if let Some(tx) = lines.get(i) {
        tx.send_modify(|s| {
            if s.on != on {
                s.on = on;
                s.since = Instant::now();
                s.ons += u32::from(on);
            }
        });
    }
}

/// A Chassis Control argument's effect on power (IPMI 2.0 §28.3): Some(false) off,
/// Some(true) on (for cycle and reset: off, then on), None no change.
pub fn control_effect(arg: u8) -> Option<(bool, bool)> {
    // (power lost first, power on after)
    match arg & 0x0f {
        0 | 5 => Some((true, false)),
        1 => Some((false, true)),
        2 | 3 => Some((true, true)),
        _ => None,
    }
}

/// The running BMCs of a storm; dropping it stops them (ipmi_sim: its power-on children
/// first, then the simulators, by pid).
pub struct Fleet {
    pub bmcs: Bmcs,
    lines: Lines,
    sims: Vec<Child>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Seconds to start every BMC and see it answer.
    pub setup_s: f64,
    /// Resident memory of the BMCs (ipmi_sim processes) once up, KiB.
    pub rss_kib: u64,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &self.sims {
            for pid in testlab::children(c.id()) {
                // SAFETY: kill(2) of a child of an ipmi_sim we started (its power-on agent).
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        for c in self.sims.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ns_file(ns: &str) -> Result<std::fs::File, String> {
    std::fs::File::open(format!("/run/netns/{ns}")).map_err(|e| format!("netns {ns}: {e}"))
}

/// The readiness probe: Get Channel Authentication Capabilities (IPMI v1.5, no session).
fn probe() -> Vec<u8> {
    let (netfn, cmd, data) = commands::auth_capabilities_request(commands::PRIV_ADMIN);
    rmcp::encode_v15(&rmcp::encode_request(netfn, cmd, 0, &data))
}

/// ipmi_sim's LAN config for node `i`: LAN and the (required) VM serial port on its
/// address, the power-on agent as `startcmd`, the chassis off at start.
pub fn lan_conf(i: usize, startcmd: &str) -> String {
    let ip = bmc_ip(i);
    format!(
        "name \"bmc{i}\"\nset_working_mc 0x20\n  startlan 1\n    addr {ip} {BMC_PORT}\n    priv_limit admin\n\
         \x20   allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n\
         \x20 serial 15 {ip} 9623 codec VM ipmb 0x20\n  startcmd \"{startcmd}\"\n  startnow false\n\
         \x20 poweroff_wait 1\n  kill_wait 1\n  user 2 true \"{USER}\" \"{PASS}\" admin 10 none md2 md5 straight\n"
    )
}

const BMC_EMU: &str = "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n";

impl Fleet {
    /// Starts `bmcs` for `n` nodes in `server_ns` (`ops`/`server_idx` open sockets there);
    /// files under `dir`; `agent` is the stormsim binary (ipmi_sim's power-on command).
    /// Returns once every BMC answers.
    pub fn start(
        bmcs: Bmcs,
        n: usize,
        server_ns: &str,
        ops: &crate::nsops::NsOps,
        server_idx: usize,
        dir: &Path,
        agent: &Path,
    ) -> Result<Fleet, String> {
        if n > 62_500 {
            return Err(format!("{n} BMCs: at most 62,500 (127.88.0.0/16)"));
        }
        let t0 = Instant::now();
        let now = Instant::now();
        let lines: Lines = Arc::new((0..n).map(|_| watch::channel(State::off(now)).0).collect());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut fleet = Fleet {
            bmcs,
            lines: lines.clone(),
            sims: vec![],
            stop: Some(stop_tx),
            thread: None,
            setup_s: 0.0,
            rss_kib: 0,
        };
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        match bmcs {
            Bmcs::IpmiSim => {
                let sock = dir.join("power.sock");
                let listener = std::os::unix::net::UnixListener::bind(&sock)
                    .map_err(|e| format!("{}: {e}", sock.display()))?;
                listener.set_nonblocking(true).map_err(|e| e.to_string())?;
                let l = lines.clone();
                fleet.thread = Some(bmc_thread(stop_rx, move || async move {
                    agent_listener(listener, l).await
                })?);
                let (agent_s, sock_s) = (agent.display().to_string(), sock.display().to_string());
                if [&agent_s, &sock_s]
                    .iter()
                    .any(|s| s.contains(|c: char| c.is_whitespace() || "\"'\\$`".contains(c)))
                {
                    return Err(format!(
                        "ipmi_sim's startcmd cannot hold {agent_s:?} / {sock_s:?} (spaces or quotes)"
                    ));
                }
                let ns = ns_file(server_ns)?;
                for i in 0..n {
                    let d = dir.join(format!("sim{i:05}"));
                    std::fs::create_dir_all(d.join("state")).map_err(|e| e.to_string())?;
                    let startcmd = format!("{agent_s} power-agent {sock_s} {i}");
                    std::fs::write(d.join("lan.conf"), lan_conf(i, &startcmd))
                        .and_then(|_| std::fs::write(d.join("bmc.emu"), BMC_EMU))
                        .map_err(|e| e.to_string())?;
                    let mut cmd = testlab::peers::command("ipmi_sim");
                    cmd.args(["-c", "lan.conf", "-f", "bmc.emu", "-s", "state", "-n"])
                        .current_dir(&d)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    let fd = ns.as_raw_fd();
                    // SAFETY: setns(2) in the forked child before exec, on a namespace fd
                    // that stays open in the parent until spawn returns; async-signal-safe.
                    unsafe {
                        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let child = cmd
                        .spawn()
                        .map_err(|e| format!("ipmi_sim (Debian package openipmi): {e}"))?;
                    fleet.sims.push(child);
                }
            }
            Bmcs::Responder => {
                // One socket for all of them (not one per BMC: 5,000 nodes must fit the
                // simulator's open-files limit), told by IP_PKTINFO which BMC a request
                // was for, answering from that address.
                let sock = ops
                    .run_blocking(server_idx, shared_bmc_socket)
                    .map_err(|e| format!("responder BMC socket: {e}"))?;
                let l = lines.clone();
                fleet.thread = Some(bmc_thread(stop_rx, move || async move {
                    serve_responders(sock, n, l).await
                })?);
            }
        }
        let ready = ops
            .run_blocking(server_idx, probe_socket)
            .map_err(|e| format!("probe socket: {e}"))?;
        wait_ready(&ready, n, &mut fleet.sims)?;
        fleet.rss_kib = fleet
            .sims
            .iter()
            .map(|c| crate::servers::cpu_and_rss(c.id()).1)
            .sum();
        fleet.setup_s = t0.elapsed().as_secs_f64();
        Ok(fleet)
    }

    /// Node `i`'s power, to hand to its [`crate::node::Node`].
    pub fn line(&self, i: usize) -> watch::Receiver<State> {
        self.lines[i].subscribe()
    }

    /// Nodes powered on at least once.
    pub fn powered(&self) -> usize {
        self.lines.iter().filter(|l| l.borrow().ons > 0).count()
    }

    pub fn ever_powered(&self, i: usize) -> bool {
        self.lines.get(i).is_some_and(|l| l.borrow().ons > 0)
    }

    /// Tells every node still waiting for its first power-on that none will come;
    /// returns how many.
    pub fn abandon_unpowered(&self) -> usize {
        let mut k = 0;
        for l in self.lines.iter() {
            l.send_if_modified(|s| {
                let give_up = s.ons == 0 && !s.abandoned;
                s.abandoned |= give_up;
                k += usize::from(give_up);
                give_up
            });
        }
        k
    }
}

/// A thread with its own current-thread runtime running `f()` until `stop` fires.
fn bmc_thread<F, Fut>(
    stop: tokio::sync::oneshot::Receiver<()>,
    f: F,
) -> Result<std::thread::JoinHandle<()>, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name("storm-bmcs".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                eprintln!("storm: cannot start the BMC thread's runtime");
                return;
            };
            rt.block_on(async move {
                tokio::select! {
                    _ = f() => {}
                    _ = stop => {}
                }
            });
        })
        .map_err(|e| format!("BMC thread: {e}"))
}

/// Accepts the power-on agents' connections: each says its node's index; the node has
/// power while the connection is open.
async fn agent_listener(listener: std::os::unix::net::UnixListener, lines: Lines) {
    let Ok(l) = tokio::net::UnixListener::from_std(listener) else {
        eprintln!("storm: cannot register the power socket");
        return;
    };
    loop {
        let Ok((mut conn, _)) = l.accept().await else {
            continue;
        };
        let lines = lines.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 32];
            let mut len = 0;
            // The index, up to a newline.
            let idx = loop {
                match conn.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => len += k,
                }
                if let Some(nl) = buf[..len].iter().position(|b| *b == b'\n') {
                    break std::str::from_utf8(&buf[..nl])
                        .ok()
                        .and_then(|s| s.trim().parse::<usize>().ok());
                }
                if len == buf.len() {
                    return;
                }
            };
            let Some(i) = idx.filter(|i| *i < lines.len()) else {
                return;
            };
            set_power(&lines, i, true);
            // Power until the agent ends (ipmi_sim's power-off).
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            set_power(&lines, i, false);
        });
    }
}

/// The readiness probe's socket, in the server namespace: up to 500 BMCs answer it at
/// once ([`wait_ready`]), whose replies overflowed the default ~208 KiB queue (27-580
/// UDP receive-buffer drops at set-up, counted in the server namespace beside xboot's
/// own until the storm's counters started after the set-up), so it has the responders'
/// large queue.
fn probe_socket() -> std::io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    big_receive_queue(&s)?;
    Ok(s)
}

/// A 16 MiB receive queue (as xboot's IPMI engine has) for a socket many BMCs answer
/// at once. SO_RCVBUFFORCE: the lab runs as root, above `net.core.rmem_max`.
fn big_receive_queue(s: &std::net::UdpSocket) -> std::io::Result<()> {
    let rcvbuf: libc::c_int = 8 << 20; // the kernel doubles it
                                       // SAFETY: setsockopt reads the int we own.
    if unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &rcvbuf as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The responders' socket: UDP `0.0.0.0:623` (in the server namespace, whose loopback
/// holds every [`bmc_ip`]) with IP_PKTINFO, non-blocking.
fn shared_bmc_socket() -> std::io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, BMC_PORT))?;
    s.set_nonblocking(true)?;
    // Each real BMC has its own queue: with one socket for 5,000 the default ~208 KiB
    // overflowed at the power command (3,147 UDP receive-buffer drops in the server
    // namespace, 128 nodes never powered).
    big_receive_queue(&s)?;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads the int we own.
    if unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            &on as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

/// Node index of a BMC address ([`bmc_ip`]'s inverse) below `n`.
pub fn bmc_index(ip: Ipv4Addr, n: usize) -> Option<usize> {
    let [a, b, c, d] = ip.octets();
    if a != 127 || b != 88 || d == 0 || d > 250 {
        return None;
    }
    Some(c as usize * 250 + d as usize - 1).filter(|i| *i < n)
}

/// Receives one datagram on `fd`: its length, sender and the local address it was sent
/// to (IP_PKTINFO). Written by hand: neither std nor socket2 reads control messages.
fn recv_pktinfo(fd: i32, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddrV4, Ipv4Addr)> {
    // SAFETY: recvmsg into buffers we own with their lengths; the control messages are
    // walked with the libc CMSG macros inside the length the kernel wrote.
    unsafe {
        let mut from: libc::sockaddr_in = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = &mut from as *mut _ as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let len = libc::recvmsg(fd, &mut msg, 0);
        if len < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut to = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                to = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let peer = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr)),
            u16::from_be(from.sin_port),
        );
        let to = to.ok_or_else(|| std::io::Error::other("datagram without IP_PKTINFO"))?;
        Ok((len as usize, peer, to))
    }
}

/// Sends `data` on `fd` to `peer` from the local address `from` (IP_PKTINFO's
/// `ipi_spec_dst`), as the BMC at `from` would.
fn send_from(fd: i32, data: &[u8], peer: SocketAddrV4, from: Ipv4Addr) -> std::io::Result<()> {
    // SAFETY: sendmsg from buffers we own; one control message of the size CMSG_SPACE
    // gives, written through the CMSG macros.
    unsafe {
        let mut to: libc::sockaddr_in = std::mem::zeroed();
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_port = peer.port().to_be();
        to.sin_addr.s_addr = u32::from(*peer.ip()).to_be();
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut cbuf = [0u64; 8];
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = &mut to as *mut _ as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let mut info: libc::in_pktinfo = std::mem::zeroed();
        info.ipi_spec_dst.s_addr = u32::from(from).to_be();
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in_pktinfo, info);
        if libc::sendmsg(fd, &msg, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The in-memory BMCs of nodes `0..n` on one socket: a request to [`bmc_ip`]`(i)` is
/// answered by BMC `i`, and a Chassis Control gives or takes node `i`'s power.
async fn serve_responders(sock: std::net::UdpSocket, n: usize, lines: Lines) {
    let Ok(sock) = tokio::net::UdpSocket::from_std(sock) else {
        eprintln!("storm: cannot register the BMC socket");
        return;
    };
    let fd = sock.as_raw_fd();
    let mut bmcs: Vec<Option<Responder>> = (0..n).map(|_| None).collect();
    let mut buf = vec![0u8; 2048];
    loop {
        let got = sock
            .async_io(tokio::io::Interest::READABLE, || recv_pktinfo(fd, &mut buf))
            .await;
        let Ok((len, peer, to)) = got else {
            continue;
        };
        let Some(i) = bmc_index(to, n) else {
            continue;
        };
        let bmc = bmcs[i].get_or_insert_with(|| Responder::new(USER, PASS, i as u64 + 1));
        let seen = bmc.chassis.controls.len();
        if let Some(reply) = bmc.handle(&buf[..len]) {
            // Awaited: a socket just registered has no cached write readiness.
            let _ = sock
                .async_io(tokio::io::Interest::WRITABLE, || {
                    send_from(fd, &reply, peer, to)
                })
                .await;
        }
        for k in seen..bmc.chassis.controls.len() {
            if let Some((lose, gain)) = control_effect(bmc.chassis.controls[k]) {
                if lose {
                    set_power(&lines, i, false);
                }
                if gain {
                    set_power(&lines, i, true);
                }
            }
        }
        // Only the effects matter; the log of controls would grow with every cycle.
        bmc.chassis.controls.clear();
    }
}

/// Probes every BMC (from `sock`, in the server namespace) until all answer, 120 s at
/// most; fails early if an ipmi_sim exits.
fn wait_ready(sock: &std::net::UdpSocket, n: usize, sims: &mut [Child]) -> Result<(), String> {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let p = probe();
    let mut pending: std::collections::HashSet<Ipv4Addr> = (0..n).map(bmc_ip).collect();
    let until = Instant::now() + Duration::from_secs(120);
    let mut buf = [0u8; 512];
    while !pending.is_empty() {
        if testlab::interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() > until {
            return Err(format!("{} of {n} BMCs never answered", pending.len()));
        }
        if let Some((i, st)) = sims
            .iter_mut()
            .enumerate()
            .find_map(|(i, c)| Some((i, c.try_wait().ok()??)))
        {
            return Err(format!("ipmi_sim of node {i} exited: {st}"));
        }
        // At most 500 probes per round: a burst to thousands of sockets overruns no queue.
        for ip in pending.iter().take(500) {
            let _ = sock.send_to(&p, SocketAddrV4::new(*ip, BMC_PORT));
        }
        let end = Instant::now() + Duration::from_millis(200);
        while Instant::now() < end {
            if let Ok((_, std::net::SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
                pending.remove(from.ip());
            }
        }
    }
    Ok(())
}

/// `stormsim power-agent SOCKET I`, ipmi_sim's power-on command: tells the simulator that
/// node `i` has power and holds the connection until ended (power-off) or the simulator
/// is gone.
pub fn agent(socket: &Path, i: usize) -> std::io::Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    writeln!(s, "{i}")?;
    let mut b = [0u8; 64];
    while s.read(&mut b)? > 0 {}
    Ok(())
}

/// Which client sends the power command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Client {
    /// `xboot bmc power cycle NODESET --pxe --json` (xboot's own BMC client, the
    /// inventory asked of the running server).
    Xboot,
    /// FreeIPMI's `ipmipower --cycle` over every BMC address (the baseline stack has no
    /// BMC client of its own).
    Ipmipower,
}

/// What the power command did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Record {
    /// sim, ipmi_sim or responder.
    pub bmcs: String,
    /// The command line (shortened).
    pub command: String,
    /// BMC start-up (before the storm), seconds.
    pub setup_s: f64,
    /// ipmi_sim memory once up, MiB (0 for responders).
    pub bmc_rss_mib: f64,
    /// From the power command to its exit, seconds.
    pub wall_s: f64,
    /// CPU of the power command's process (user + system), seconds.
    pub cpu_s: f64,
    /// BMCs the command reports done, of `total`.
    pub ok: usize,
    pub total: usize,
    pub exit_code: i32,
    /// The first few failures the command reported.
    pub failures: Vec<String>,
    /// Nodes that had power at the end of the storm (at least once).
    pub powered: usize,
    /// Nodes given up on: no power `POWER_GRACE` after the command returned.
    pub abandoned: usize,
}

/// The power command to send: `client` in `server_ns` for the nodes `0..n` (`all`, or
/// the nodes' set when the inventory holds other hosts without BMCs).
pub struct Command {
    pub client: Client,
    pub server_ns: String,
    pub xboot: PathBuf,
    /// xboot's config (its `[api]` socket is the running server's: the inventory).
    pub config: PathBuf,
    pub n: usize,
    pub nodeset: String,
    /// Set the PXE boot flag first (`--pxe`). ipmi_sim (OpenIPMI's simulator 1.0.13)
    /// refuses Set System Boot Options with completion code 0xcc for every parameter,
    /// as `ipmitool chassis bootdev pxe` shows too (which prints the error and exits 0),
    /// and xboot does not cycle a node whose boot device it could not set: so only
    /// with the responder BMCs, which keep the flag.
    pub pxe: bool,
}

impl Command {
    fn argv(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![];
        match self.client {
            Client::Xboot => {
                v.push(self.xboot.display().to_string());
                v.push("--config".into());
                v.push(self.config.display().to_string());
                v.extend(["bmc", "power", "cycle", self.nodeset.as_str()].map(String::from));
                if self.pxe {
                    v.push("--pxe".into());
                }
                v.push("--json".into());
            }
            Client::Ipmipower => {
                v.push(testlab::peers::path("ipmipower").display().to_string());
                let hosts: Vec<String> = (0..self.n).map(|i| bmc_ip(i).to_string()).collect();
                v.extend(
                    [
                        "-D",
                        "LAN_2_0",
                        "-W",
                        "opensesspriv",
                        "-u",
                        USER,
                        "-p",
                        PASS,
                        "--cycle",
                        "-h",
                    ]
                    .map(String::from),
                );
                v.push(hosts.join(","));
            }
        }
        v
    }

    /// Runs the command to its end (blocking); `t0` is when it was sent.
    pub fn run(&self, t0: Instant) -> Record {
        let argv = self.argv();
        let shown = match self.client {
            Client::Xboot => format!(
                "xboot bmc power cycle {}{} --json",
                self.nodeset,
                if self.pxe { " --pxe" } else { "" }
            ),
            Client::Ipmipower => format!(
                "ipmipower -D LAN_2_0 -W opensesspriv --cycle -h <{} BMCs>",
                self.n
            ),
        };
        let mut rec = Record {
            command: shown,
            total: self.n,
            exit_code: -1,
            ..Record::default()
        };
        let child = testlab::peers::command("ip")
            .args(["netns", "exec", self.server_ns.as_str()])
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                rec.failures.push(format!("cannot start: {e}"));
                return rec;
            }
        };
        let mut err = child.stderr.take().expect("piped");
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut out = String::new();
        let _ = child.stdout.take().expect("piped").read_to_string(&mut out);
        let (code, cpu) = wait_with_cpu(child.id());
        rec.wall_s = t0.elapsed().as_secs_f64();
        rec.cpu_s = cpu;
        rec.exit_code = code;
        let stderr = err_reader.join().unwrap_or_default();
        let (ok, failures) = match self.client {
            Client::Xboot => parse_xboot(&out),
            Client::Ipmipower => parse_ipmipower(&out),
        };
        rec.ok = ok;
        rec.failures = failures;
        if rec.ok < rec.total && rec.failures.is_empty() {
            rec.failures.push(format!(
                "exit {code}: {}",
                stderr
                    .lines()
                    .chain(out.lines())
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        rec
    }
}

/// Reaps `pid` (our child): its exit code and CPU seconds (wait4's rusage).
fn wait_with_cpu(pid: u32) -> (i32, f64) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 on our own child's pid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
    if r < 0 {
        return (-1, 0.0);
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, t(ru.ru_utime) + t(ru.ru_stime))
}

/// `xboot bmc power ... --json`: (BMCs ok, the first failures).
pub fn parse_xboot(out: &str) -> (usize, Vec<String>) {
    let v: serde_json::Value = serde_json::from_str(out).unwrap_or_default();
    let ok = v["ok"].as_u64().unwrap_or(0) as usize;
    let failures = v["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|x| x["reason"] != "ok")
                .take(5)
                .map(|x| format!("{}: {} {}", x["name"], x["reason"], x["message"]))
                .collect()
        })
        .unwrap_or_default();
    (ok, failures)
}

/// `ipmipower --cycle`: one `HOST: ok` line per BMC done, else `HOST: reason`.
pub fn parse_ipmipower(out: &str) -> (usize, Vec<String>) {
    let ok = out
        .lines()
        .filter(|l| l.trim_end().ends_with(": ok"))
        .count();
    let failures = out
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_end().ends_with(": ok"))
        .take(5)
        .map(String::from)
        .collect();
    (ok, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmc_index_inverts_bmc_ip() {
        for i in [0, 1, 249, 250, 251, 4_999, 62_499] {
            assert_eq!(bmc_index(bmc_ip(i), 62_500), Some(i));
        }
        assert_eq!(bmc_index(bmc_ip(5_000), 5_000), None);
        assert_eq!(bmc_index(Ipv4Addr::new(127, 88, 0, 0), 10), None);
        assert_eq!(bmc_index(Ipv4Addr::new(127, 0, 0, 1), 10), None);
    }

    #[test]
    fn modes_addresses_and_command_output() {
        assert_eq!(Power::parse("ipmi"), Some(Power::Ipmi));
        assert_eq!(Power::parse("x"), None);
        assert_eq!(Power::Sim.bmcs(10), None);
        assert_eq!(Power::Ipmi.bmcs(RESPONDER_ABOVE), Some(Bmcs::IpmiSim));
        assert_eq!(Power::Ipmi.bmcs(RESPONDER_ABOVE + 1), Some(Bmcs::Responder));
        assert_eq!(Power::Responder.bmcs(5), Some(Bmcs::Responder));
        assert_eq!(bmc_ip(0), Ipv4Addr::new(127, 88, 0, 1));
        assert_eq!(bmc_ip(4999), Ipv4Addr::new(127, 88, 19, 250));
        let all: std::collections::HashSet<_> = (0..10_000).map(bmc_ip).collect();
        assert_eq!(all.len(), 10_000);
        assert_eq!(bmc_interface(1)["ip"], "127.88.0.2");
        let conf = lan_conf(3, "/x/stormsim power-agent /x/p.sock 3");
        assert!(conf.contains("addr 127.88.0.4 623"));
        assert!(conf.contains("startcmd \"/x/stormsim power-agent /x/p.sock 3\""));
        assert!(conf.contains("startnow false"));
        // off, on, cycle, reset, soft; diagnostic interrupt changes nothing
        assert_eq!(control_effect(0), Some((true, false)));
        assert_eq!(control_effect(1), Some((false, true)));
        assert_eq!(control_effect(2), Some((true, true)));
        assert_eq!(control_effect(3), Some((true, true)));
        assert_eq!(control_effect(5), Some((true, false)));
        assert_eq!(control_effect(4), None);
        let x = r#"{"ok": 2, "failed": 1, "total": 3, "results": [
            {"name": "n0001", "reason": "ok", "message": ""},
            {"name": "n0002", "reason": "timeout", "message": "no reply"},
            {"name": "n0003", "reason": "ok", "message": ""}]}"#;
        let (ok, f) = parse_xboot(x);
        assert_eq!(ok, 2);
        assert_eq!(f, vec![r#""n0002": "timeout" "no reply""#.to_string()]);
        assert_eq!(parse_xboot("not json"), (0, vec![]));
        let (ok, f) =
            parse_ipmipower("127.88.0.1: ok\n127.88.0.2: connection timeout\n127.88.0.3: ok\n");
        assert_eq!(ok, 2);
        assert_eq!(f, vec!["127.88.0.2: connection timeout".to_string()]);
    }

    #[test]
    fn power_lines_and_the_agent_connection() {
        // The watch lines as the BMC side drives them.
        let now = Instant::now();
        let lines: Lines = Arc::new((0..2).map(|_| watch::channel(State::off(now)).0).collect());
        let rx = lines[1].subscribe();
        set_power(&lines, 1, true);
        set_power(&lines, 1, true);
        assert!(rx.borrow().on);
        assert_eq!(rx.borrow().ons, 1);
        set_power(&lines, 1, false);
        set_power(&lines, 1, true);
        assert_eq!(rx.borrow().ons, 2);
        set_power(&lines, 7, true); // out of range: ignored
                                    // The agent's connection: index, then held until the simulator side closes.
        let dir = std::env::temp_dir().join(format!("storm-power-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("p.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let s2 = sock.clone();
        let t = std::thread::spawn(move || agent(&s2, 42));
        let (mut c, _) = l.accept().unwrap();
        let mut b = [0u8; 3];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"42\n");
        drop(c);
        t.join().unwrap().unwrap();
        assert!(agent(&dir.join("none.sock"), 1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
