//! Fuzz: tens of thousands of mutated and truncated request frames through the loaded
//! program. The oracle is the slow path on the same frame: whenever the program answers,
//! the slow path must answer the same bytes (so the program never answers an unknown
//! MAC, a malformed request, or anything the slow path would not say); whenever it
//! passes, the frame must be untouched; every frame is counted exactly once.
use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use xboot::dhcp::frame::udp_frame;
use xboot::xdp::loader::{XDP_PASS, XDP_TX};

use super::differential::compare;
use super::fixture::*;
use super::table::{fix_ip, fix_udp};
use crate::netns;

const FRAMES: usize = 25_000;
const PAY: usize = 42;

/// Valid requests to mutate: every kind, known and unknown MACs, each message.
fn seeds() -> Vec<Req> {
    let mut out = vec![];
    for (i, mac) in [CN1, CN2_NO_PROVISION, CN3_FIRMWARE, UNKNOWN]
        .into_iter()
        .enumerate()
    {
        let ip = Ipv4Addr::new(10, 0, 0, 5 + i as u8);
        for kind in KINDS {
            out.push(discover(kind, mac));
            out.push(selecting(kind, mac, ip, SERVER));
            out.push(
                selecting(kind, mac, ip, SERVER)
                    .without(54)
                    .without(50)
                    .unicast_from(ip),
            );
        }
    }
    out.push(discover("bios", CN5_RELAYED).relayed());
    out
}

/// One mutation of `req`'s frame.
fn mutate(rng: &mut StdRng, req: &Req, other: &Req) -> Vec<u8> {
    let mut p = req.payload();
    let reframe = |p: &[u8]| udp_frame(p, req.src_mac, req.src, req.dst_mac, req.dst, req.vlan);
    match rng.gen_range(0..9) {
        0 => {
            // Bit flips anywhere in the DHCP message, checksum fixed.
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..p.len());
                p[i] ^= 1 << rng.gen_range(0..8);
            }
            reframe(&p)
        }
        1 => {
            // A random byte in the options area.
            let i = rng.gen_range(240..p.len());
            p[i] = rng.gen();
            reframe(&p)
        }
        2 => {
            // The message cut short, lengths and checksums consistent.
            let n = rng.gen_range(0..p.len());
            reframe(&p[..n])
        }
        3 => {
            // The frame cut short, nothing fixed.
            let f = reframe(&p);
            let n = rng.gen_range(14..f.len());
            f[..n].to_vec()
        }
        4 => {
            // Bytes inserted into or removed from the options.
            let i = rng.gen_range(240..p.len());
            if rng.gen_bool(0.5) {
                let n = rng.gen_range(1..8).min(p.len() - i);
                p.drain(i..i + n);
            } else {
                let bytes: Vec<u8> = (0..rng.gen_range(1..8)).map(|_| rng.gen()).collect();
                p.splice(i..i, bytes);
            }
            reframe(&p)
        }
        5 => {
            // An option's length byte changed.
            let i = 241 + 2 * rng.gen_range(0..10);
            if i < p.len() {
                p[i] = rng.gen_range(0..12);
            }
            reframe(&p)
        }
        6 => {
            // Options spliced from another request.
            let q = other.payload();
            let (a, b) = (rng.gen_range(240..p.len()), rng.gen_range(240..q.len()));
            p.truncate(a);
            p.extend_from_slice(&q[b..]);
            reframe(&p)
        }
        7 => {
            // Header fields of the frame, checksums fixed or not.
            let mut f = reframe(&p);
            let i = rng.gen_range(0..PAY);
            f[i] = rng.gen();
            if rng.gen_bool(0.7) {
                fix_ip(&mut f);
                fix_udp(&mut f);
            }
            f
        }
        _ => {
            // A payload byte changed without fixing the UDP checksum.
            let mut f = reframe(&p);
            let i = rng.gen_range(PAY..f.len());
            f[i] ^= 0x5a;
            f
        }
    }
}

#[test]
fn xdp_fuzz_never_answers_what_the_slow_path_would_not() {
    if netns::need_root() {
        return;
    }
    let mut lab = Lab::new();
    let stats = lab.fp.stats();
    let before = stats.counters();
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(0x5eed_f00d);
    let (mut answered, mut slow_answers) = (0, 0);
    for n in 0..FRAMES {
        let req = &seeds[rng.gen_range(0..seeds.len())];
        let other = &seeds[rng.gen_range(0..seeds.len())];
        let frame = mutate(&mut rng, req, other);
        let rotation = lab.rotation();
        let slow = lab.slow_path(&frame, rotation);
        slow_answers += slow.is_some() as usize;
        let out = lab.run(&frame);
        let name = format!("fuzz frame {n} {frame:02x?}");
        match out.action {
            XDP_TX => {
                let want =
                    slow.unwrap_or_else(|| panic!("{name}: answered, but the slow path would not"));
                compare(&name, &out.frame, &want);
                answered += 1;
            }
            XDP_PASS => assert_eq!(out.frame, frame, "{name}: passed frame modified"),
            a => panic!("{name}: action {a}"),
        }
    }
    let c = stats.counters().since(&before);
    eprintln!(
        "fuzz: {FRAMES} frames, {answered} answered by XDP (each equal to the slow path), \
         slow path answers {slow_answers}; {c:?}; reasons {:?}",
        stats.reasons()
    );
    assert_eq!(
        c.frames(),
        FRAMES as u64,
        "every frame counted exactly once"
    );
    assert_eq!(c.answered + c.nak, answered as u64);
    assert!(
        answered > FRAMES / 20,
        "the mutations should leave some valid requests"
    );
}
