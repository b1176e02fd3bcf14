//! The throughput sweep's load generator: the in-kernel DHCP client (boot-ebpf's
//! `bench-client`, see its header) driven from here.
//!
//! Why not the userspace generator (`loadgen`): it costs ~16 us of CPU per exchange,
//! on the cores the server also runs on here, so above ~100,000 exchanges/s it measured
//! itself. This one keeps the client side in XDP: DISCOVERs are written and transmitted
//! by BPF_PROG_TEST_RUN in live-frames mode, paced from here; OFFERs are turned into
//! REQUESTs and ACKs counted in the client veth's own XDP program. The same frames as the
//! userspace generator's, the same checks (each client's inventory address, the server
//! id), the same path for every server: the replies of userspace servers reach the
//! client program as well, through veth's receive path.
//!
//! The round trip it reports (DISCOVER written -> ACK seen, `bpf_ktime_get_ns` on both
//! ends) has no client wake-up in it: it is the server's turnaround plus the veth hops.
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, PerCpuArray, ProgramArray};
use aya::programs::{ProgramFd, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use boot_common::bench::{
    self, counter, Config, CostFrame, Frame, COST_CAP, FRAME_DISCOVER, FRAME_LEN, FRAME_REQUEST,
};

use super::clients::in_netns;
use super::loadgen::{self, Client, Clock, LoadResult};
use crate::netns::Netns;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench-client"));

/// DISCOVERs per BPF_PROG_TEST_RUN at most (one call runs them all, and every frame's
/// whole exchange runs in the softirqs that follow on the same CPU).
const MAX_CHUNK: u64 = 1024;
/// Frames per live-frames batch (the kernel's default and NAPI's budget).
const BATCH: u32 = 64;

pub struct KernelClient {
    ebpf: Ebpf,
    ifindex: u32,
    /// Why the kernel will not run the sender (None: it does). Some kernels refuse
    /// BPF_PROG_TEST_RUN in live-frames mode with EPERM although they run the same
    /// program without it; `run` then sends with the userspace generator instead (the
    /// reply program still runs on the client's veth, and passes those frames up), and
    /// says so on stderr and in its result.
    refused: Option<String>,
    clients: Vec<Client>,
    server: Ipv4Addr,
}

/// struct xdp_md for a live frame of `FRAME_LEN` bytes received on `ifindex`: data,
/// data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex. Live frames
/// leave through the ingress interface on XDP_TX.
fn live_md(ifindex: u32) -> [u8; 24] {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(FRAME_LEN as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    md
}

/// One DISCOVER through the sender in live-frames mode: Err(why) if the kernel refuses
/// the mode.
fn probe_live(prog: &mut Xdp, ifindex: u32) -> Result<(), String> {
    let (md, frame) = (live_md(ifindex), [0u8; FRAME_LEN]);
    let opts = TestRunOptions {
        data_in: Some(&frame),
        ctx_in: Some(&md),
        repeat: 1,
        attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
        ..Default::default()
    };
    prog.test_run(opts)
        .map(drop)
        .map_err(|e| format!("the kernel refuses BPF_PROG_TEST_RUN with live frames: {e}"))
}

/// The client's object, with room for `clients` clients.
fn load(clients: u32) -> Ebpf {
    EbpfLoader::new()
        .map_max_entries("CLIENTS", clients)
        .load(OBJECT)
        .expect("load bench-client")
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut Xdp {
    let p: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
    p
}

fn sums(ebpf: &Ebpf, map: &str, n: u32) -> Vec<u64> {
    let a: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(ebpf.map(map).unwrap()).unwrap();
    (0..n).map(|i| a.get(&i, 0).unwrap().iter().sum()).collect()
}

/// The p-th percentile (0..1) of a round-trip histogram, in microseconds.
fn percentile(hist: &[u64], p: f64) -> u64 {
    let total: u64 = hist.iter().sum();
    let want = (total as f64 * p).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (b, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            let b = b as u64;
            let fine = bench::HIST_FINE as u64;
            return if b < fine { b } else { (b - fine) << 10 };
        }
    }
    0
}

impl KernelClient {
    /// Loads the client and attaches its reply program to `ifname` in `cli`, for
    /// `clients` (their MACs and addresses) served by `server`.
    pub fn start(cli: &Netns, ifname: &str, clients: &[Client], server: Ipv4Addr) -> KernelClient {
        let mut ebpf = load(clients.len() as u32);
        for name in ["bench_send", "bench_reply"] {
            program(&mut ebpf, name)
                .load()
                .expect("verify bench-client");
        }
        let frame = |request: bool| {
            let c = &clients[0];
            let bytes = loadgen::frame(c.mac, 0, request.then_some((c.ip, server)));
            // The offsets the program stamps must be where this frame has the fields.
            assert_eq!(&bytes[bench::CHADDR..bench::CHADDR + 6], &c.mac.0);
            assert_eq!(
                &bytes[bench::CLIENT_ID_MAC..bench::CLIENT_ID_MAC + 6],
                &c.mac.0
            );
            if request {
                assert_eq!(&bytes[bench::REQUESTED_IP..][..4], &c.ip.octets());
                assert_eq!(&bytes[bench::SERVER_ID..][..4], &server.octets());
            }
            Frame {
                bytes,
                _pad: [0; 2],
            }
        };
        let mut frames: Array<_, Frame> = Array::try_from(ebpf.map_mut("FRAMES").unwrap()).unwrap();
        frames.set(FRAME_DISCOVER, frame(false), 0).unwrap();
        frames.set(FRAME_REQUEST, frame(true), 0).unwrap();
        let mut table: Array<_, bench::Client> =
            Array::try_from(ebpf.map_mut("CLIENTS").unwrap()).unwrap();
        for (i, c) in clients.iter().enumerate() {
            let entry = bench::Client {
                mac: c.mac.0,
                _pad: [0; 2],
                ip: c.ip.octets(),
            };
            table.set(i as u32, entry, 0).unwrap();
        }
        let mut config: Array<_, Config> =
            Array::try_from(ebpf.map_mut("CONFIG").unwrap()).unwrap();
        let cfg = Config {
            clients: clients.len() as u32,
            server: server.octets(),
            seq: 0,
        };
        config.set(0, cfg, 0).unwrap();
        // BPF_PROG_TEST_RUN with repeat > 1 enters the program into the kernel's XDP
        // dispatcher and takes it out again, each time waiting for an RCU grace period
        // (~25 ms here), unless it is already in: attached natively somewhere. So it is
        // attached to an idle veth pair of its own, which carries no traffic.
        cli.run(&[
            "ip", "link", "add", "kgen0", "type", "veth", "peer", "name", "kgen1",
        ]);
        let (ifindex, refused) = in_netns(cli, || {
            program(&mut ebpf, "bench_send")
                .attach("kgen0", XdpMode::Driver)
                .expect("attach bench_send");
            program(&mut ebpf, "bench_reply")
                .attach(ifname, XdpMode::Driver)
                .expect("attach bench_reply");
            let ifindex = nix::net::if_::if_nametoindex(ifname).unwrap();
            (
                ifindex,
                probe_live(program(&mut ebpf, "bench_send"), ifindex).err(),
            )
        });
        if let Some(why) = &refused {
            eprintln!("kernel client: {why}; the userspace generator sends instead");
        }
        KernelClient {
            ebpf,
            ifindex,
            refused,
            clients: clients.to_vec(),
            server,
        }
    }

    /// Why the in-kernel sender does not run here (None: it does).
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The pass-everything program on `ifname` in `srv`, for servers without an XDP
    /// program of their own (veth takes transmitted XDP frames only on a side that runs
    /// one). Detached when the returned object is dropped.
    pub fn pass_through(srv: &Netns, ifname: &str) -> Ebpf {
        let mut ebpf = load(1);
        let prog = program(&mut ebpf, "bench_pass");
        prog.load().expect("verify bench_pass");
        in_netns(srv, || prog.attach(ifname, XdpMode::Driver)).expect("attach bench_pass");
        ebpf
    }

    /// DISCOVERs at `rate` for `secs` from `cli` (where `start` attached the client),
    /// then `drain` for the last answers: completed exchanges per second, losses, round
    /// trips.
    ///
    /// With `Clock::Realtime` (latency runs) the pacing thread is real-time and writes one
    /// DISCOVER per call: each exchange then completes in its own call's softirqs before
    /// the next is written. Otherwise a pacing thread that woke late (behind the HTTP
    /// load, on a loaded CPU) would send the frames it owes in one batch, and the last
    /// frame's round trip would include its batch-mates' exchanges: the generator's
    /// delay, which on a real fleet's independent clients does not exist.
    pub fn run(
        &mut self,
        cli: &Netns,
        rate: u64,
        secs: f64,
        drain: Duration,
        clock: Clock,
    ) -> LoadResult {
        if self.refused.is_some() {
            let r = loadgen::run(cli, &self.clients, self.server, rate, secs, drain, clock);
            return LoadResult {
                generator: "userspace (live frames refused)",
                ..r
            };
        }
        let stats0 = sums(&self.ebpf, "STATS", counter::COUNT);
        let hist0 = sums(&self.ebpf, "HIST", bench::HIST_BUCKETS);
        let total = (rate as f64 * secs) as u64;
        let (ifindex, ebpf) = (self.ifindex, &mut self.ebpf);
        let chunk = match clock {
            Clock::Normal => MAX_CHUNK,
            Clock::Realtime => 1,
        };
        let elapsed = in_netns(cli, || {
            clock.apply();
            let prog = program(ebpf, "bench_send");
            let md = live_md(ifindex);
            let frame = [0u8; FRAME_LEN];
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < total {
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                if due <= sent {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                let n = (due - sent).min(chunk);
                let opts = TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(&md),
                    repeat: n as u32,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..Default::default()
                };
                prog.test_run(opts)
                    .expect("BPF_PROG_TEST_RUN (live frames)");
                sent += n;
            }
            start.elapsed()
        });
        std::thread::sleep(drain);
        let stats: Vec<u64> = sums(&self.ebpf, "STATS", counter::COUNT)
            .iter()
            .zip(&stats0)
            .map(|(a, b)| a - b)
            .collect();
        let hist: Vec<u64> = sums(&self.ebpf, "HIST", bench::HIST_BUCKETS)
            .iter()
            .zip(&hist0)
            .map(|(a, b)| a - b)
            .collect();
        let at = |c: u32| stats[c as usize];
        let secs = elapsed.as_secs_f64().max(1e-6);
        let (discovers, acks) = (at(counter::DISCOVERS), at(counter::ACKS));
        let (p50, p99) = (percentile(&hist, 0.5), percentile(&hist, 0.99));
        LoadResult {
            target_rate: rate,
            seconds: secs,
            discovers,
            offers: at(counter::OFFERS),
            acks,
            naks: at(counter::NAKS),
            wrong_offers: at(counter::WRONG),
            send_rate: discovers as f64 / secs,
            dora_per_sec: acks as f64 / secs,
            loss_pct: 100.0 * (1.0 - acks as f64 / total.max(1) as f64),
            p50_us: p50,
            p99_us: p99,
            // The client answers each OFFER in the same softirq: no wake-up to leave out.
            turn_p50_us: p50,
            turn_p99_us: p99,
            generator: "kernel",
            ..Default::default()
        }
    }
}

/// The kernel's run-time statistics of program `id`: total ns and runs.
pub fn run_stats(id: u32) -> Option<(u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .map(|p| (p.run_time().as_nanos() as u64, p.run_count()))
}

/// The warm cost per request of XDP program `target`, in ns, from BPF_PROG_TEST_RUN
/// repeats: `repeat` live-frame runs of `bench_cost` on `frame` (written back before each
/// run, then `target` tail-called), minus the same runs calling `bench_pass`. Done
/// `batches` times, alternating, so that a noisy neighbour shows as a spread: the least
/// of each side's batches is the program's cost (noise only adds), the medians tell how
/// noisy the machine was. Needs the kernel's run-time statistics enabled. Runs in `ns`:
/// frames the target passes up enter that namespace's stack on its loopback, answers
/// are sent out of it and freed.
pub fn cost_per_request(
    ns: &Netns,
    target: &ProgramFd,
    frame: &[u8],
    repeat: u32,
    batches: usize,
) -> RepeatedCost {
    assert!(frame.len() <= COST_CAP);
    assert!(batches > 0);
    let mut ebpf = load(1);
    for name in ["bench_cost", "bench_pass"] {
        program(&mut ebpf, name)
            .load()
            .expect("verify bench-client");
    }
    let mut cf = CostFrame {
        len: frame.len() as u32,
        bytes: [0; COST_CAP],
    };
    cf.bytes[..frame.len()].copy_from_slice(frame);
    let mut slot: Array<_, CostFrame> =
        Array::try_from(ebpf.map_mut("COST_FRAME").unwrap()).unwrap();
    slot.set(0, cf, 0).unwrap();
    let pass = program(&mut ebpf, "bench_pass")
        .fd()
        .unwrap()
        .try_clone()
        .unwrap();
    let (mut with, mut without) = (vec![], vec![]);
    for _ in 0..batches {
        with.push(cost_run(&mut ebpf, ns, target, frame, repeat));
        without.push(cost_run(&mut ebpf, ns, &pass, frame, repeat));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    RepeatedCost {
        min: min(&with) - min(&without),
        median: median(&mut with) - median(&mut without),
    }
}

/// `cost_per_request`'s answer, in ns per run.
#[derive(Debug, Clone, Copy)]
pub struct RepeatedCost {
    /// Least batch with the target minus least batch with `bench_pass`.
    pub min: f64,
    /// The same with the medians.
    pub median: f64,
}

/// Mean ns per run of `bench_cost` calling `target`.
fn cost_run(ebpf: &mut Ebpf, ns: &Netns, target: &ProgramFd, frame: &[u8], repeat: u32) -> f64 {
    let mut targets = ProgramArray::try_from(ebpf.map_mut("TARGET").unwrap()).unwrap();
    targets.set(0, target, 0).unwrap();
    let prog = program(ebpf, "bench_cost");
    let id = prog.info().unwrap().id();
    let before = run_stats(id).unwrap();
    in_netns(ns, || {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
            ..Default::default()
        };
        prog.test_run(opts)
            .expect("BPF_PROG_TEST_RUN (live frames)");
    });
    let after = run_stats(id).unwrap();
    (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64
}
