//! The IPMI engine: one UDP socket and one task drive every session, as xCAT's and
//! FreeIPMI's engines do, so a thousand BMCs cost a thousand small state machines, not a
//! thousand threads or sockets.
//!
//! Datagrams are routed to sessions by the BMC's address (one session per address at a
//! time; further jobs for the same address wait their turn). Timers live in one ordered
//! set. ICMP errors come back through the socket's error queue (`IP_RECVERR`), so a closed
//! port fails at once as "refused" instead of waiting for the timeout.
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use rand::RngCore;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::commands::Op;
use super::session::{IpmiError, NetError, Report, Session, SessionConfig};

/// Socket receive buffer: a thousand BMCs answering within a millisecond must not
/// overflow it (each small datagram costs about 1 KiB of buffer accounting).
const RECV_BUFFER: usize = 16 << 20;

type Reply = oneshot::Sender<Result<Report, IpmiError>>;

struct Job {
    addr: SocketAddr,
    cfg: SessionConfig,
    ops: Vec<Op>,
    reply: Reply,
}

/// A handle on the engine task. Cloning is cheap; the task ends once every handle is
/// dropped and the last session has finished (its Close Session included).
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::UnboundedSender<Job>,
    local: SocketAddr,
}

impl Engine {
    /// Binds `addr` (use port 0) and starts the engine task on the current runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Engine> {
        let domain = socket2::Domain::for_address(addr);
        let sock =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        // SO_RCVBUFFORCE passes net.core.rmem_max when we may (root); else take what we get.
        if nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &RECV_BUFFER)
            .is_err()
        {
            let _ = sock.set_recv_buffer_size(RECV_BUFFER);
        }
        if addr.is_ipv4() {
            nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv4RecvErr, &true)
                .map_err(io::Error::from)?;
        }
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        Engine::from_std(sock.into())
    }

    /// Runs the engine on a socket the caller made (non-blocking).
    pub fn from_std(sock: std::net::UdpSocket) -> io::Result<Engine> {
        let socket = UdpSocket::from_std(sock)?;
        let local = socket.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let ev = EventLoop {
            socket,
            jobs: rx,
            jobs_open: true,
            active: HashMap::new(),
            waiting: HashMap::new(),
            timers: BTreeSet::new(),
        };
        tokio::spawn(ev.run());
        Ok(Engine { jobs: tx, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs `ops` in one session with the BMC at `addr`.
    pub async fn execute(
        &self,
        addr: SocketAddr,
        cfg: SessionConfig,
        ops: Vec<Op>,
    ) -> Result<Report, IpmiError> {
        let (reply, rx) = oneshot::channel();
        let gone = || IpmiError::Protocol("IPMI engine stopped".into());
        self.jobs
            .send(Job {
                addr,
                cfg,
                ops,
                reply,
            })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

struct Active {
    session: Session,
    reply: Option<Reply>,
    /// The deadline this session has in `timers`.
    armed: Option<Instant>,
}

struct EventLoop {
    socket: UdpSocket,
    jobs: mpsc::UnboundedReceiver<Job>,
    jobs_open: bool,
    active: HashMap<SocketAddr, Active>,
    waiting: HashMap<SocketAddr, VecDeque<Job>>,
    timers: BTreeSet<(Instant, SocketAddr)>,
}

impl EventLoop {
    async fn run(mut self) {
        let mut buf = vec![0u8; 4096];
        while self.jobs_open || !self.active.is_empty() {
            let next = self.timers.first().map(|(t, _)| *t);
            let sleep = async move {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.socket.readable() => if r.is_ok() { self.receive_all(&mut buf).await },
                r = self.socket.ready(Interest::ERROR) => if r.is_ok() { self.drain_errors().await },
                job = self.jobs.recv(), if self.jobs_open => match job {
                    Some(job) => self.start(job).await,
                    None => self.jobs_open = false,
                },
                () = sleep => self.fire_timers().await,
            }
        }
    }

    async fn receive_all(&mut self, buf: &mut [u8]) {
        let mut errors = 0;
        loop {
            match self.socket.try_recv_from(buf) {
                Ok((n, from)) => {
                    let now = Instant::now();
                    if let Some(a) = self.active.get_mut(&from) {
                        a.session.handle_datagram(&buf[..n], now);
                        self.settle(from).await;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // a queued ICMP error surfaces as a receive error: read the details
                Err(_) if errors < 64 => {
                    errors += 1;
                    self.drain_errors().await
                }
                Err(_) => return,
            }
        }
    }

    async fn start(&mut self, job: Job) {
        if self.active.contains_key(&job.addr) {
            self.waiting.entry(job.addr).or_default().push_back(job);
            return;
        }
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        let session = Session::new(job.cfg, job.ops, seed, Instant::now());
        self.active.insert(
            job.addr,
            Active {
                session,
                reply: Some(job.reply),
                armed: None,
            },
        );
        self.settle(job.addr).await;
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&(t, addr)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some(a) = self.active.get_mut(&addr) {
                a.armed = None;
                a.session.handle_timeout(now);
                self.settle(addr).await;
            }
        }
    }

    /// After any input: send what the session wants sent, deliver its result, re-arm
    /// its timer, and retire it (starting the next job for that address) once finished.
    async fn settle(&mut self, addr: SocketAddr) {
        let Some(a) = self.active.get_mut(&addr) else {
            return;
        };
        while let Some(pkt) = a.session.poll_transmit() {
            if let Err(e) = send(&self.socket, &pkt, addr).await {
                let err = NetError::Unreachable(format!("send to {addr}: {e}"));
                a.session.handle_net_error(err, Instant::now());
            }
        }
        if let Some(outcome) = a.session.take_outcome() {
            if let Some(reply) = a.reply.take() {
                let _ = reply.send(outcome);
            }
        }
        let want = a.session.poll_timeout();
        if want != a.armed {
            if let Some(old) = a.armed {
                self.timers.remove(&(old, addr));
            }
            if let Some(new) = want {
                self.timers.insert((new, addr));
            }
            a.armed = want;
        }
        if a.session.is_finished() {
            self.active.remove(&addr);
            let next = self.waiting.get_mut(&addr).and_then(VecDeque::pop_front);
            if self.waiting.get(&addr).is_some_and(VecDeque::is_empty) {
                self.waiting.remove(&addr);
            }
            if let Some(job) = next {
                Box::pin(self.start(job)).await;
            }
        }
    }

    /// Reads the socket's error queue: each entry names the datagram's destination and
    /// the ICMP error it drew.
    async fn drain_errors(&mut self) {
        loop {
            // try_io clears the error readiness once the queue reads empty (EAGAIN)
            let entry = match self
                .socket
                .try_io(Interest::ERROR, || read_error_queue(&self.socket))
            {
                Ok(entry) => entry,
                Err(_) => return,
            };
            let Some((addr, err)) = entry else { continue };
            if let Some(a) = self.active.get_mut(&addr) {
                a.session.handle_net_error(err, Instant::now());
                self.settle(addr).await;
            }
        }
    }
}

/// Sends one datagram. With IP_RECVERR, an ICMP error that another BMC's datagram drew
/// is reported once by the next send on the socket, whatever its destination: such an
/// error says nothing about `addr` (the error queue names the real one), so send again.
async fn send(socket: &UdpSocket, pkt: &[u8], addr: SocketAddr) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match socket.send_to(pkt, addr).await {
            Ok(_) => return Ok(()),
            Err(e) if tries < 8 && is_deferred_icmp(&e) => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn is_deferred_icmp(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable
    ) || e.raw_os_error() == Some(libc::EHOSTUNREACH)
}

/// One entry of the error queue (non-blocking: WouldBlock when empty); None for an
/// entry that names no IPv4 destination.
fn read_error_queue(socket: &UdpSocket) -> io::Result<Option<(SocketAddr, NetError)>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn};
    let mut data = [0u8; 512];
    let mut iov = [io::IoSliceMut::new(&mut data)];
    let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in);
    let flags = MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT;
    let msg = recvmsg::<SockaddrIn>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), flags)?;
    let Some(dest) = msg.address else {
        return Ok(None);
    };
    let dest = SocketAddr::V4(dest.into());
    let mut err = NetError::Unreachable("ICMP error".into());
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv4RecvErr(e, _) = c {
            err = match e.ee_errno as i32 {
                libc::ECONNREFUSED => NetError::PortUnreachable,
                errno => NetError::Unreachable(io::Error::from_raw_os_error(errno).to_string()),
            };
        }
    }
    Ok(Some((dest, err)))
}
