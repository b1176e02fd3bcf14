//! The truth check (pure, no I/O): real machines (qemu VMs) boot in the same storm as
//! the simulated nodes, and the server's turnaround for each of their requests, read
//! from a capture on the server's link, must fall within the simulated nodes' p1-p99 for
//! the same request type. Otherwise the simulated nodes are not treated as real
//! machines are, and the storm measured something else.
//!
//! Turnaround = the server's first answer minus the request it answers (the last copy
//! sent before the answer, so a client's retransmission timer does not count):
//! DHCP DISCOVER -> OFFER, REQUEST -> ACK/NAK (same client and xid), TFTP read request
//! -> the first packet to the client's port, TCP SYN -> SYN-ACK, HTTP request -> the
//! first byte of the response on that connection.
use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::fingerprint::{decode, Body, Frame};
use crate::report::pct;
use crate::wire::dhcp_options;

/// One answered request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Turnaround {
    /// `dhcp_discover`, `dhcp_request`, `tftp_rrq`, `tcp_syn`, or an HTTP method and
    /// the last segment of the URL's path (`http_get kernel`, `http_post complete`): a
    /// script the server renders and a file it sends are different request types.
    pub kind: String,
    /// The client's MAC, `aa:bb:...`.
    pub mac: String,
    /// When the request was sent (capture clock, seconds).
    pub t: f64,
    pub secs: f64,
}

fn mac_str(m: [u8; 6]) -> String {
    crate::node::mac_string(m)
}

fn http_kind(payload: &[u8]) -> Option<String> {
    let (method, k) = [
        ("GET ", "http_get"),
        ("POST ", "http_post"),
        ("HEAD ", "http_head"),
    ]
    .into_iter()
    .find(|(m, _)| payload.starts_with(m.as_bytes()))?;
    let line = payload[method.len()..].split(|&b| b == b' ').next()?;
    let path = String::from_utf8_lossy(line);
    let path = path.split('?').next().unwrap_or("");
    let last = path
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("/");
    Some(format!("{k} {last}"))
}

/// Every answered request in `frames` (a capture of the server's link), in the order
/// answered. `server_mac` tells the server's frames from the clients'.
pub fn turnarounds(frames: &[Frame], server_mac: [u8; 6], http_port: u16) -> Vec<Turnaround> {
    type Flow = (Ipv4Addr, u16);
    // DHCP: (chaddr, xid, message type) -> time of the last copy.
    let mut dhcp: HashMap<([u8; 6], u32, u8), f64> = HashMap::new();
    // By the client's (address, port) and class (tftp, syn, http): (mac, time, kind).
    let mut pending: HashMap<(Flow, &'static str), ([u8; 6], f64, String)> = HashMap::new();
    let mut out = vec![];
    for f in frames {
        let Some(p) = decode(&f.data) else { continue };
        let from_server = p.src_mac == server_mac;
        match &p.body {
            Body::Udp(m) if p.dst.1 == 67 || p.dst.1 == 68 => {
                if m.len() < 240 {
                    continue;
                }
                let chaddr: [u8; 6] = m[28..34].try_into().expect("6 bytes");
                let xid = u32::from_be_bytes(m[4..8].try_into().expect("4 bytes"));
                let Some(t) = dhcp_options(m).and_then(|o| {
                    o.iter()
                        .find(|(c, _)| *c == 53)
                        .and_then(|(_, v)| v.first().copied())
                }) else {
                    continue;
                };
                match (from_server, m[0], t) {
                    (false, 1, 1 | 3) => {
                        dhcp.insert((chaddr, xid, t), f.t);
                    }
                    (true, 2, reply @ (2 | 5 | 6)) => {
                        let asked = if reply == 2 { 1 } else { 3 };
                        if let Some(t0) = dhcp.remove(&(chaddr, xid, asked)) {
                            out.push(Turnaround {
                                kind: if asked == 1 {
                                    "dhcp_discover"
                                } else {
                                    "dhcp_request"
                                }
                                .into(),
                                mac: mac_str(chaddr),
                                t: t0,
                                secs: f.t - t0,
                            });
                        }
                    }
                    _ => {}
                }
            }
            Body::Udp(d) if !from_server && p.dst.1 == 69 && d.starts_with(&[0, 1]) => {
                pending.insert((p.src, "tftp"), (p.src_mac, f.t, "tftp_rrq".into()));
            }
            Body::Udp(_) if from_server => {
                if let Some((mac, t0, kind)) = pending.remove(&(p.dst, "tftp")) {
                    out.push(Turnaround {
                        kind,
                        mac: mac_str(mac),
                        t: t0,
                        secs: f.t - t0,
                    });
                }
            }
            Body::Tcp {
                syn, ack, payload, ..
            } => {
                if !from_server && *syn && !*ack && p.dst.1 == http_port {
                    pending.insert((p.src, "syn"), (p.src_mac, f.t, "tcp_syn".into()));
                } else if !from_server && p.dst.1 == http_port {
                    if let Some(k) = http_kind(payload) {
                        pending.insert((p.src, "http"), (p.src_mac, f.t, k));
                    }
                } else if from_server && *syn && *ack {
                    if let Some((mac, t0, kind)) = pending.remove(&(p.dst, "syn")) {
                        out.push(Turnaround {
                            kind,
                            mac: mac_str(mac),
                            t: t0,
                            secs: f.t - t0,
                        });
                    }
                } else if from_server && !payload.is_empty() {
                    if let Some((mac, t0, kind)) = pending.remove(&(p.dst, "http")) {
                        out.push(Turnaround {
                            kind,
                            mac: mac_str(mac),
                            t: t0,
                            secs: f.t - t0,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Differences below this are below the capture's noise (kernel scheduling and time
/// stamping on a shared 2-core machine: tens of microseconds), not the server's.
pub const NOISE_S: f64 = 1e-4;

/// One real machine's request type against the simulated nodes'.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub machine: String,
    pub kind: String,
    /// The machine's turnarounds of this type (seconds).
    pub real: Vec<f64>,
    /// The simulated nodes' p1 and p99, and how many samples they had.
    pub p1: f64,
    pub p99: f64,
    pub samples: usize,
    /// Every real turnaround within [p1, p99] (widened by [`NOISE_S`]).
    pub ok: bool,
}

/// Checks every request type of each real machine (`machines`: name, MAC) against the
/// turnarounds of every other client in `all` (the simulated nodes). A type the
/// simulated nodes never sent fails (nothing to compare with).
pub fn check(all: &[Turnaround], machines: &[(String, String)]) -> Vec<Check> {
    let real_macs: Vec<&str> = machines.iter().map(|(_, m)| m.as_str()).collect();
    let mut out = vec![];
    for (name, mac) in machines {
        let mut kinds: Vec<&str> = vec![];
        for t in all.iter().filter(|t| &t.mac == mac) {
            if !kinds.contains(&t.kind.as_str()) {
                kinds.push(&t.kind);
            }
        }
        for kind in kinds {
            let real: Vec<f64> = all
                .iter()
                .filter(|t| &t.mac == mac && t.kind == kind)
                .map(|t| t.secs)
                .collect();
            let mut sim: Vec<f64> = all
                .iter()
                .filter(|t| t.kind == kind && !real_macs.contains(&t.mac.as_str()))
                .map(|t| t.secs)
                .collect();
            sim.sort_by(f64::total_cmp);
            let (p1, p99) = (pct(&sim, 1.0), pct(&sim, 99.0));
            let ok = !sim.is_empty()
                && real
                    .iter()
                    .all(|&s| s >= p1 - NOISE_S && s <= p99 + NOISE_S);
            out.push(Check {
                machine: name.clone(),
                kind: kind.to_string(),
                real,
                p1,
                p99,
                samples: sim.len(),
                ok,
            });
        }
    }
    out
}

/// The checks as a markdown table.
pub fn markdown(checks: &[Check]) -> String {
    let mut s = String::from(
        "| machine | request | its turnarounds (ms) | simulated p1-p99 (ms) | samples | within |\n\
         |---|---|---|---|---|---|\n",
    );
    for c in checks {
        let real: Vec<String> = c.real.iter().map(|v| format!("{:.2}", v * 1e3)).collect();
        let window = match c.samples {
            0 => "no simulated sample".to_string(),
            _ => format!("{:.2}-{:.2}", c.p1 * 1e3, c.p99 * 1e3),
        };
        s += &format!(
            "| {} | {} | {} | {window} | {} | {} |\n",
            c.machine,
            c.kind,
            real.join(", "),
            c.samples,
            if c.ok { "yes" } else { "NO" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRV: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];

    /// An Ethernet/IPv4 frame; UDP when `tcp` is None, else TCP with (flags, payload).
    fn frame(
        src: ([u8; 6], [u8; 4], u16),
        dst: ([u8; 6], [u8; 4], u16),
        tcp: Option<(u8, &[u8])>,
        udp: &[u8],
    ) -> Vec<u8> {
        let (l4, proto): (Vec<u8>, u8) = match tcp {
            None => {
                let mut u = vec![];
                u.extend_from_slice(&src.2.to_be_bytes());
                u.extend_from_slice(&dst.2.to_be_bytes());
                u.extend_from_slice(&((8 + udp.len()) as u16).to_be_bytes());
                u.extend_from_slice(&[0, 0]);
                u.extend_from_slice(udp);
                (u, 17)
            }
            Some((flags, payload)) => {
                let mut t = vec![];
                t.extend_from_slice(&src.2.to_be_bytes());
                t.extend_from_slice(&dst.2.to_be_bytes());
                t.extend_from_slice(&[0; 8]);
                t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
                t.extend_from_slice(payload);
                (t, 6)
            }
        };
        let mut f = vec![];
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[8, 0]);
        let len = (20 + l4.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&src.1);
        f.extend_from_slice(&dst.1);
        f.extend_from_slice(&l4);
        f
    }

    /// The frame as a capture with a short snapshot length keeps it: the IPv4 header
    /// announces 9,000 bytes, fewer were kept.
    fn cut(mut f: Vec<u8>) -> Vec<u8> {
        f[16..18].copy_from_slice(&9000u16.to_be_bytes());
        f
    }

    fn bootp(op: u8, xid: u32, chaddr: [u8; 6], t: u8) -> Vec<u8> {
        let mut m = vec![0u8; 236];
        m[0] = op;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[28..34].copy_from_slice(&chaddr);
        m.extend_from_slice(&[99, 130, 83, 99, 53, 1, t, 255]);
        m
    }

    #[test]
    fn turnarounds_of_each_request_type() {
        let c = (A, [10, 77, 1, 1], 50_000);
        let s = (SRV, [10, 77, 0, 1], 8080);
        let bc = ([0xff; 6], [255; 4], 68);
        let frames: Vec<Frame> = [
            // DISCOVER, its retransmission, the OFFER (broadcast): 0.5 s after the copy.
            (
                1.0,
                frame(
                    (A, [0; 4], 68),
                    ([0xff; 6], [255; 4], 67),
                    None,
                    &bootp(1, 7, A, 1),
                ),
            ),
            (
                2.0,
                frame(
                    (A, [0; 4], 68),
                    ([0xff; 6], [255; 4], 67),
                    None,
                    &bootp(1, 7, A, 1),
                ),
            ),
            (2.5, frame((SRV, s.1, 67), bc, None, &bootp(2, 7, A, 2))),
            // REQUEST -> ACK; an ACK for an unknown xid is ignored.
            (
                3.0,
                frame(
                    (A, [0; 4], 68),
                    ([0xff; 6], [255; 4], 67),
                    None,
                    &bootp(1, 7, A, 3),
                ),
            ),
            (3.1, frame((SRV, s.1, 67), bc, None, &bootp(2, 9, A, 5))),
            (3.25, frame((SRV, s.1, 67), bc, None, &bootp(2, 7, A, 5))),
            // TFTP RRQ from port 1234 -> OACK from the transfer port.
            (
                4.0,
                frame((A, c.1, 1234), (SRV, s.1, 69), None, b"\0\x01f\0octet\0"),
            ),
            (
                4.125,
                frame(
                    (SRV, s.1, 40_000),
                    (A, c.1, 1234),
                    None,
                    b"\0\x06tsize\x001\0",
                ),
            ),
            // SYN -> SYN-ACK; GET -> first response bytes; an ACK alone is no answer.
            (5.0, frame(c, s, Some((0x02, b"")), &[])),
            (5.001, frame(s, c, Some((0x12, b"")), &[])),
            (
                5.01,
                frame(c, s, Some((0x18, b"GET /x HTTP/1.1\r\n\r\n")), &[]),
            ),
            (5.02, frame(s, c, Some((0x10, b"")), &[])),
            (
                5.26,
                cut(frame(s, c, Some((0x18, b"HTTP/1.1 200 OK\r\n")), &[])),
            ),
        ]
        .into_iter()
        .map(|(t, data)| Frame { t, data })
        .collect();
        let all = turnarounds(&frames, SRV, 8080);
        let got: Vec<(&str, f64, f64)> = all
            .iter()
            .map(|t| (t.kind.as_str(), t.t, (t.secs * 1e6).round() / 1e6))
            .collect();
        assert_eq!(
            got,
            [
                ("dhcp_discover", 2.0, 0.5),
                ("dhcp_request", 3.0, 0.25),
                ("tftp_rrq", 4.0, 0.125),
                ("tcp_syn", 5.0, 0.001),
                ("http_get x", 5.01, 0.25),
            ]
        );
    }

    #[test]
    fn http_request_types() {
        let k = |p: &[u8]| http_kind(p);
        assert_eq!(
            k(b"GET /boot/t0k/kernel HTTP/1.1\r\n").as_deref(),
            Some("http_get kernel")
        );
        assert_eq!(
            k(b"POST /boot/t/complete?x=1 HTTP/1.1").as_deref(),
            Some("http_post complete")
        );
        assert_eq!(k(b"GET / HTTP/1.1").as_deref(), Some("http_get /"));
        assert_eq!(k(b"HTTP/1.1 200 OK"), None, "a response");
    }

    fn t(kind: &str, mac: &str, secs: f64) -> Turnaround {
        Turnaround {
            kind: kind.into(),
            mac: mac.into(),
            t: 0.0,
            secs,
        }
    }

    #[test]
    fn checks_against_the_simulated_spread() {
        let mut all: Vec<Turnaround> = (1..=100)
            .map(|i| t("dhcp_discover", &format!("n{i}"), f64::from(i) / 1000.0))
            .collect();
        all.push(t("dhcp_discover", "vm1", 0.050));
        all.push(t("dhcp_discover", "vm2", 0.150));
        all.push(t("tftp_rrq", "vm2", 0.010));
        // A SYN answered 50 us slower than any simulated one: below the noise.
        all.extend((1..=10).map(|i| t("tcp_syn", &format!("n{i}"), 0.00001 * f64::from(i))));
        all.push(t("tcp_syn", "vm1", 0.00015));
        all.push(t("tcp_syn", "vm2", 0.00025));
        let machines = [
            ("bios".to_string(), "vm1".to_string()),
            ("uefi".into(), "vm2".into()),
        ];
        let c = check(&all, &machines);
        let row = |m: &str, k: &str| c.iter().find(|x| x.machine == m && x.kind == k).unwrap();
        let b = row("bios", "dhcp_discover");
        assert!(b.ok, "{b:?}");
        // The other VM is no simulated sample: p1..p99 over the 100 nodes only.
        assert_eq!((b.p1, b.p99, b.samples), (0.001, 0.099, 100));
        assert!(!row("uefi", "dhcp_discover").ok, "above p99");
        let tftp = row("uefi", "tftp_rrq");
        assert!(
            !tftp.ok && tftp.samples == 0,
            "no simulated TFTP to compare with"
        );
        assert!(row("bios", "tcp_syn").ok);
        assert!(!row("uefi", "tcp_syn").ok, "150 us past p99");
        assert_eq!(c.len(), 5);
        let md = markdown(&c);
        assert!(
            md.contains("| bios | dhcp_discover | 50.00 | 1.00-99.00 | 100 | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| uefi | dhcp_discover | 150.00 | 1.00-99.00 | 100 | NO |"),
            "{md}"
        );
    }
}
