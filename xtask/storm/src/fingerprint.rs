//! Packet fingerprints (pure, no I/O): what a booting machine sends, reduced to the
//! fields its firmware decides, so a real machine's capture and a simulated node's can
//! be compared packet type by packet type.
//!
//! A [`Print`] keeps, per packet type:
//! - DHCP: option codes in order, the broadcast flag, the parameter request list (55),
//!   the values of 57, 60, 77, 93, 94, the presence and size of 61 and 97 (their values
//!   are per machine), the sub-option codes of iPXE's 175;
//! - TFTP: the read request's mode and options (names and values, in order), and the
//!   error a client sends (code and text);
//! - HTTP: the request line's method and version, header names in order, the values of
//!   `Connection` and the product named by `User-Agent`;
//! - TCP SYN: MSS (and its value), SACK permitted, timestamps and window scale. The
//!   simulator's TCP is the kernel's, which orders a SYN's options its own way and
//!   derives the scale from the receive buffer (iPXE says 9 for its 2 MB window, the
//!   kernel 5 for the same window; matching 9 would need a 32 MB buffer, which would
//!   change the window itself): the order and the scale's value only encode what the
//!   server sees, so the options are compared as a set, the scale by its presence.
//!
//! Left out everywhere: MACs, addresses, ports, xids, `secs`, sequence numbers, file
//! names and URL paths (the server chose them), and the body of a request.
//!
//! [`sequence`] turns one machine's frames into the list of prints in the order sent,
//! retransmissions folded; [`compare`] lists the differences between two sequences.
use std::net::Ipv4Addr;

use etherparse::{LaxNetSlice, LaxSlicedPacket, LinkSlice, TcpOptionElement, TransportSlice};

use crate::wire::dhcp_options;

/// One captured frame: seconds (capture clock) and the bytes from the Ethernet header.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub t: f64,
    pub data: Vec<u8>,
}

/// Reads a classic pcap file (as `tcpdump -w` writes it; either byte order, micro- or
/// nanosecond stamps, Ethernet link type).
///
/// Written here rather than taken from a crate: the format is a 24-byte header and a
/// 16-byte header per record, and the one crate for it (pcap-file) pulls a proc-macro
/// stack (syn 1, a derive crate) into the build for these few lines.
pub fn read_pcap(b: &[u8]) -> Result<Vec<Frame>, String> {
    if b.len() < 24 {
        return Err(format!("pcap: {} bytes, no file header", b.len()));
    }
    let magic = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => {
            return Err(format!(
                "pcap: unknown magic {m:#010x} (pcapng is not read)"
            ))
        }
    };
    let u32_at = |o: usize| -> u32 {
        let v: [u8; 4] = b[o..o + 4].try_into().expect("4 bytes");
        if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }
    };
    let link = u32_at(20);
    if link != 1 {
        return Err(format!("pcap: link type {link}, not Ethernet (1)"));
    }
    let mut out = vec![];
    let mut o = 24;
    while o < b.len() {
        if b.len() - o < 16 {
            return Err(format!("pcap: record header cut at byte {o}"));
        }
        let (sec, frac, incl) = (u32_at(o), u32_at(o + 4), u32_at(o + 8) as usize);
        let data = b
            .get(o + 16..o + 16 + incl)
            .ok_or_else(|| format!("pcap: record at byte {o} cut ({incl} bytes announced)"))?;
        let div = if nanos { 1e9 } else { 1e6 };
        out.push(Frame {
            t: f64::from(sec) + f64::from(frac) / div,
            data: data.to_vec(),
        });
        o += 16 + incl;
    }
    Ok(out)
}

/// The transport part of a decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Udp(Vec<u8>),
    Tcp {
        syn: bool,
        ack: bool,
        fin: bool,
        rst: bool,
        /// (kind, value) of each option but NOPs, in order.
        options: Vec<(&'static str, u32)>,
        payload: Vec<u8>,
    },
}

/// An IPv4 UDP or TCP frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
    pub body: Body,
}

/// Decodes an Ethernet frame; None for anything but IPv4 UDP/TCP. A frame cut by the
/// capture's snapshot length still decodes (its payload is what was captured).
pub fn decode(frame: &[u8]) -> Option<Packet> {
    let p = LaxSlicedPacket::from_ethernet(frame).ok()?;
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return None;
    };
    let Some(LaxNetSlice::Ipv4(ip)) = &p.net else {
        return None;
    };
    let (sa, da) = (ip.header().source_addr(), ip.header().destination_addr());
    let (sp, dp, body) = match p.transport.as_ref()? {
        TransportSlice::Udp(u) => (
            u.source_port(),
            u.destination_port(),
            Body::Udp(u.payload().to_vec()),
        ),
        TransportSlice::Tcp(t) => {
            let options = t
                .options_iterator()
                .filter_map(|o| match o.ok()? {
                    TcpOptionElement::Noop => None,
                    TcpOptionElement::MaximumSegmentSize(v) => Some(("mss", u32::from(v))),
                    TcpOptionElement::WindowScale(v) => Some(("wscale", u32::from(v))),
                    TcpOptionElement::SelectiveAcknowledgementPermitted => Some(("sack", 1)),
                    TcpOptionElement::SelectiveAcknowledgement(..) => Some(("sack_block", 1)),
                    TcpOptionElement::Timestamp(..) => Some(("ts", 1)),
                })
                .collect();
            (
                t.source_port(),
                t.destination_port(),
                Body::Tcp {
                    syn: t.syn(),
                    ack: t.ack(),
                    fin: t.fin(),
                    rst: t.rst(),
                    options,
                    payload: t.payload().to_vec(),
                },
            )
        }
        _ => return None,
    };
    Some(Packet {
        src_mac: eth.source(),
        dst_mac: eth.destination(),
        src: (sa, sp),
        dst: (da, dp),
        body,
    })
}

/// A packet type and the fields of it a client's firmware decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Print {
    /// "DHCP DISCOVER", "TFTP RRQ", "TCP SYN", "HTTP GET" ...
    pub kind: String,
    pub fields: Vec<(&'static str, String)>,
}

impl std::fmt::Display for Print {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind)?;
        for (k, v) in &self.fields {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

fn join(v: impl IntoIterator<Item = impl ToString>) -> String {
    v.into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// Printable text, else hex.
fn text(v: &[u8]) -> String {
    if !v.is_empty() && v.iter().all(|b| (0x20..0x7f).contains(b)) {
        String::from_utf8_lossy(v).into_owned()
    } else {
        format!("0x{}", hex(v))
    }
}

const DHCP_TYPES: [&str; 9] = [
    "?", "DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM",
];

fn dhcp_print(m: &[u8]) -> Option<Print> {
    if m.first() != Some(&1) {
        return None;
    }
    let opts = dhcp_options(m)?;
    let get = |c: u8| opts.iter().find(|(k, _)| *k == c).map(|(_, v)| *v);
    let t = usize::from(*get(53)?.first()?);
    let mut f: Vec<(&'static str, String)> = vec![
        ("options", join(opts.iter().map(|(c, _)| c))),
        ("broadcast", u8::from(m[10] & 0x80 != 0).to_string()),
    ];
    if let Some(v) = get(55) {
        f.push(("55", join(v)));
    }
    if let Some(v) = get(57) {
        f.push((
            "57",
            u16::from_be_bytes([*v.first()?, *v.get(1)?]).to_string(),
        ));
    }
    for (code, name) in [(60u8, "60"), (77, "77"), (93, "93"), (94, "94")] {
        if let Some(v) = get(code) {
            f.push((
                name,
                if code == 93 || code == 94 {
                    hex(v)
                } else {
                    text(v)
                },
            ));
        }
    }
    if let Some(v) = get(61) {
        f.push(("61", format!("type {} len {}", v.first()?, v.len())));
    }
    if let Some(v) = get(97) {
        f.push(("97", format!("len {}", v.len())));
    }
    if let Some(v) = get(175) {
        let mut codes = vec![];
        let mut s = v;
        while s.len() >= 2 {
            codes.push(s[0]);
            s = s.get(2 + usize::from(s[1])..).unwrap_or(&[]);
        }
        f.push(("175", join(codes)));
    }
    Some(Print {
        kind: format!("DHCP {}", DHCP_TYPES.get(t).unwrap_or(&"?")),
        fields: f,
    })
}

fn tftp_print(p: &[u8], to_port_69: bool) -> Option<Print> {
    let op = u16::from_be_bytes([*p.first()?, *p.get(1)?]);
    match op {
        1 if to_port_69 => {
            let parts: Vec<&[u8]> = p[2..].split(|&b| b == 0).collect();
            // file, mode, then name/value pairs; the last split is the empty tail.
            let mode = String::from_utf8_lossy(parts.get(1)?).to_ascii_lowercase();
            let end = parts.len().saturating_sub(1).max(2);
            let opts = parts
                .get(2..end)
                .unwrap_or(&[])
                .chunks(2)
                .map(|kv| {
                    let k = String::from_utf8_lossy(kv[0]).to_ascii_lowercase();
                    let v = kv
                        .get(1)
                        .map(|v| String::from_utf8_lossy(v))
                        .unwrap_or_default();
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>();
            Some(Print {
                kind: "TFTP RRQ".into(),
                fields: vec![("mode", mode), ("options", opts.join(","))],
            })
        }
        5 if !to_port_69 => {
            let code = u16::from_be_bytes([*p.get(2)?, *p.get(3)?]);
            let msg = p[4..].split(|&b| b == 0).next().unwrap_or(&[]);
            Some(Print {
                kind: "TFTP ERROR".into(),
                fields: vec![("code", code.to_string()), ("message", text(msg))],
            })
        }
        _ => None,
    }
}

const METHODS: [&str; 5] = ["GET", "HEAD", "POST", "PUT", "DELETE"];

fn http_print(payload: &[u8]) -> Option<Print> {
    let end = payload.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&payload[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut req = lines.next()?.split(' ');
    let method = req.next()?;
    if !METHODS.contains(&method) {
        return None;
    }
    let _path = req.next()?;
    let version = req.next()?;
    let mut names = vec![];
    let mut f: Vec<(&'static str, String)> = vec![("version", version.into())];
    let mut values = vec![];
    for l in lines {
        let (k, v) = l.split_once(':')?;
        names.push(k.trim().to_string());
        match k.trim().to_ascii_lowercase().as_str() {
            // The product, not its version (that is the build's, not the firmware's).
            "user-agent" => {
                let product = v.trim().split('/').next().unwrap_or("");
                values.push(("user-agent", product.to_string()));
            }
            "connection" => values.push(("connection", v.trim().to_string())),
            _ => {}
        }
    }
    f.push(("headers", names.join(",")));
    f.extend(values);
    Some(Print {
        kind: format!("HTTP {method}"),
        fields: f,
    })
}

fn syn_print(options: &[(&'static str, u32)]) -> Print {
    let mut names: Vec<&str> = options.iter().map(|(k, _)| *k).collect();
    names.sort_unstable();
    let mut f = vec![("options", names.join(","))];
    if let Some((_, v)) = options.iter().find(|(k, _)| *k == "mss") {
        f.push(("mss", v.to_string()));
    }
    Print {
        kind: "TCP SYN".into(),
        fields: f,
    }
}

/// The print of a packet a client sent (DHCP to port 67, TFTP to port 69 or the error a
/// client sends to the server's transfer port, a TCP SYN, an HTTP request to
/// `http_port`); None for anything else.
pub fn client_print(p: &Packet, http_port: u16) -> Option<Print> {
    match &p.body {
        Body::Udp(d) if p.dst.1 == 67 && p.src.1 == 68 => dhcp_print(d),
        Body::Udp(d) if p.dst.1 == 69 => tftp_print(d, true),
        Body::Udp(d) if p.dst.1 >= 1024 && p.src.1 >= 1024 => tftp_print(d, false),
        Body::Tcp {
            syn: true,
            ack: false,
            options,
            ..
        } => Some(syn_print(options)),
        Body::Tcp { payload, .. } if p.dst.1 == http_port && !payload.is_empty() => {
            http_print(payload)
        }
        _ => None,
    }
}

/// What `mac` sent, in order, with each run of identical prints (retransmissions, the
/// same request for another file) folded into one.
pub fn sequence(frames: &[Frame], mac: [u8; 6], http_port: u16) -> Vec<Print> {
    let mut out: Vec<Print> = vec![];
    for f in frames {
        let Some(p) = decode(&f.data) else { continue };
        if p.src_mac != mac {
            continue;
        }
        if let Some(print) = client_print(&p, http_port) {
            if out.last() != Some(&print) {
                out.push(print);
            }
        }
    }
    out
}

/// The differences between what real firmware sent (`truth`) and what the simulator
/// sent (`sim`), packet by packet; empty when they agree. `truth_partial`: the real
/// machine was stopped before the end of its boot, so packets the simulator sent after
/// the truth's last one are not differences. Stops at the first packet of another type
/// (the rest would be misaligned).
pub fn compare(truth: &[Print], sim: &[Print], truth_partial: bool) -> Vec<String> {
    let mut d = vec![];
    for i in 0..truth.len().max(sim.len()) {
        match (truth.get(i), sim.get(i)) {
            (Some(t), Some(s)) if t.kind != s.kind => {
                d.push(format!(
                    "#{i}: firmware sent {}, the simulator {}",
                    t.kind, s.kind
                ));
                break;
            }
            (Some(t), Some(s)) => {
                let mut keys: Vec<&str> = t.fields.iter().map(|(k, _)| *k).collect();
                for (k, _) in &s.fields {
                    if !keys.contains(k) {
                        keys.push(k);
                    }
                }
                let get = |p: &Print, k: &str| {
                    p.fields
                        .iter()
                        .find(|(x, _)| *x == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| "(absent)".into())
                };
                for k in keys {
                    let (a, b) = (get(t, k), get(s, k));
                    if a != b {
                        d.push(format!("#{i} {}: {k}: firmware {a}, simulator {b}", t.kind));
                    }
                }
            }
            (Some(t), None) => {
                d.push(format!(
                    "#{i}: firmware sent {t}, the simulator nothing more"
                ));
                break;
            }
            (None, Some(s)) if !truth_partial => {
                d.push(format!(
                    "#{i}: the simulator sent {s}, the firmware nothing more"
                ));
                break;
            }
            _ => break,
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: &str, fields: &[(&'static str, &str)]) -> Print {
        Print {
            kind: kind.into(),
            fields: fields.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    #[test]
    fn compare_table() {
        let disc = p(
            "DHCP DISCOVER",
            &[("options", "53,57,55"), ("broadcast", "1")],
        );
        let disc0 = p(
            "DHCP DISCOVER",
            &[("options", "53,57,55"), ("broadcast", "0")],
        );
        let disc77 = p(
            "DHCP DISCOVER",
            &[("options", "53,57,55"), ("broadcast", "1"), ("77", "iPXE")],
        );
        let req = p("DHCP REQUEST", &[("options", "53,50,54")]);
        let syn = p(
            "TCP SYN",
            &[("options", "mss,sack,ts,wscale"), ("wscale", "7")],
        );
        /// (case, truth, simulator, truth stopped early, differences expected)
        type Case<'a> = (&'a str, Vec<Print>, Vec<Print>, bool, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("equal", vec![disc.clone(), req.clone()], vec![disc.clone(), req.clone()], false, vec![]),
            (
                "a flag differs",
                vec![disc.clone()],
                vec![disc0.clone()],
                false,
                vec!["#0 DHCP DISCOVER: broadcast: firmware 1, simulator 0"],
            ),
            (
                "an option only the simulator sends",
                vec![disc.clone()],
                vec![disc77],
                false,
                vec!["#0 DHCP DISCOVER: 77: firmware (absent), simulator iPXE"],
            ),
            (
                "another packet type stops the comparison",
                vec![disc.clone(), req.clone(), syn.clone()],
                vec![disc.clone(), syn.clone(), syn.clone()],
                false,
                vec!["#1: firmware sent DHCP REQUEST, the simulator TCP SYN"],
            ),
            (
                "the simulator stops early",
                vec![disc.clone(), req.clone()],
                vec![disc.clone()],
                false,
                vec!["#1: firmware sent DHCP REQUEST options=53,50,54, the simulator nothing more"],
            ),
            (
                "the simulator goes on past a complete truth",
                vec![disc.clone()],
                vec![disc.clone(), req.clone()],
                false,
                vec!["#1: the simulator sent DHCP REQUEST options=53,50,54, the firmware nothing more"],
            ),
            ("... past a truth stopped early", vec![disc.clone()], vec![disc, req], true, vec![]),
        ];
        for (name, truth, sim, partial, want) in cases {
            assert_eq!(compare(&truth, &sim, partial), want, "{name}");
        }
    }

    /// A BOOTP request with `opts` (code, value) after the cookie.
    fn bootp(flags: u16, opts: &[(u8, &[u8])]) -> Vec<u8> {
        let mut m = vec![0u8; 236];
        m[0] = 1;
        m[10..12].copy_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&[99, 130, 83, 99]);
        for (c, v) in opts {
            m.push(*c);
            m.push(v.len() as u8);
            m.extend_from_slice(v);
        }
        m.extend_from_slice(&[255, 0, 0]);
        m
    }

    #[test]
    fn dhcp_prints() {
        let m = bootp(
            0x8000,
            &[
                (53, &[1]),
                (57, &[5, 0xc0]),
                (55, &[1, 3, 6]),
                (97, &[0; 17]),
                (94, &[1, 3, 0]),
                (93, &[0, 7]),
                (60, b"PXEClient:Arch:00007:UNDI:003000"),
            ],
        );
        let got = dhcp_print(&m).unwrap();
        assert_eq!(
            got.to_string(),
            "DHCP DISCOVER options=53,57,55,97,94,93,60 broadcast=1 55=1,3,6 57=1472 \
             60=PXEClient:Arch:00007:UNDI:003000 93=0007 94=010300 97=len 17"
        );
        let m = bootp(
            0,
            &[
                (53, &[3]),
                (77, b"iPXE"),
                (61, &[1, 2, 3, 4, 5, 6, 7]),
                (
                    175,
                    &[177, 5, 1, 0x10, 0xec, 0x80, 0, 235, 3, 1, 0, 0, 19, 1, 1],
                ),
            ],
        );
        assert_eq!(
            dhcp_print(&m).unwrap().to_string(),
            "DHCP REQUEST options=53,77,61,175 broadcast=0 77=iPXE 61=type 1 len 7 175=177,235,19"
        );
        // A reply, a message cut short, an option overrunning the message: no print.
        let mut reply = bootp(0, &[(53, &[2])]);
        reply[0] = 2;
        assert_eq!(dhcp_print(&reply), None);
        assert_eq!(dhcp_print(&m[..200]), None);
        let mut bad = bootp(0, &[(53, &[1])]);
        bad.truncate(240);
        bad.extend_from_slice(&[53, 1, 1, 60, 40, b'x']);
        assert_eq!(dhcp_print(&bad), None);
    }

    #[test]
    fn tftp_and_http_prints() {
        let rrq = b"\0\x01snponly.efi\0octet\0tsize\x000\0blksize\x001468\0";
        assert_eq!(
            tftp_print(rrq, true).unwrap().to_string(),
            "TFTP RRQ mode=octet options=tsize=0,blksize=1468"
        );
        let err = b"\0\x05\0\x08User aborted the transfer\0";
        assert_eq!(
            tftp_print(err, false).unwrap().to_string(),
            "TFTP ERROR code=8 message=User aborted the transfer"
        );
        // An ACK, and a DATA block from the server: not the client's firmware choices.
        assert_eq!(tftp_print(b"\0\x04\0\x01", false), None);
        assert_eq!(tftp_print(b"\0\x03\0\x01abc", false), None);
        let get = b"GET /boot/x/ipxe HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: iPXE/1.0.0+\r\nHost: 10.77.0.1:8080\r\n\r\n";
        assert_eq!(
            http_print(get).unwrap().to_string(),
            "HTTP GET version=HTTP/1.1 headers=Connection,User-Agent,Host \
             connection=keep-alive user-agent=iPXE"
        );
        assert_eq!(http_print(b"HTTP/1.1 200 OK\r\n\r\n"), None, "a response");
        assert_eq!(
            http_print(b"GET / HTTP/1.1\r\nHost: x"),
            None,
            "headers not whole"
        );
    }

    #[test]
    fn syn_options_are_a_set() {
        let linux = syn_print(&[("mss", 1460), ("sack", 1), ("ts", 1), ("wscale", 5)]);
        let ipxe = syn_print(&[("mss", 1460), ("wscale", 9), ("sack", 1), ("ts", 1)]);
        assert_eq!(linux, ipxe);
        assert_eq!(
            linux.to_string(),
            "TCP SYN options=mss,sack,ts,wscale mss=1460"
        );
        assert_ne!(
            linux,
            syn_print(&[("mss", 1460), ("sack", 1), ("wscale", 5)])
        );
        assert_ne!(
            linux,
            syn_print(&[("mss", 536), ("sack", 1), ("ts", 1), ("wscale", 5)])
        );
    }

    /// A pcap file as tcpdump writes it (little-endian, microseconds), two frames.
    fn pcap(frames: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![];
        b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        b.extend_from_slice(&[2, 0, 4, 0]);
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&262_144u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for (i, f) in frames.iter().enumerate() {
            b.extend_from_slice(&(100 + i as u32).to_le_bytes());
            b.extend_from_slice(&250_000u32.to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(f);
        }
        b
    }

    #[test]
    fn pcap_frames_to_a_sequence() {
        let mac = [2, 0, 0, 0, 0, 9];
        let msg = |t: u8| {
            let mut m = bootp(0, &[(53, &[t]), (55, &[1, 3])]);
            m[28..34].copy_from_slice(&mac);
            crate::wire::frame(mac, &m)
        };
        let (d, r) = (msg(1), msg(3));
        let file = pcap(&[&d, &d, &r]);
        let frames = read_pcap(&file).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].t, 101.25);
        let seq = sequence(&frames, mac, 8080);
        let kinds: Vec<&str> = seq.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["DHCP DISCOVER", "DHCP REQUEST"],
            "retransmission folded"
        );
        assert!(
            sequence(&frames, [9; 6], 8080).is_empty(),
            "another machine"
        );
        // Broken files: a clear error, never a panic.
        assert!(read_pcap(&file[..10])
            .unwrap_err()
            .contains("no file header"));
        assert!(read_pcap(&file[..file.len() - 3])
            .unwrap_err()
            .contains("cut"));
        let mut ng = file.clone();
        ng[0..4].copy_from_slice(&0x0a0d_0d0au32.to_le_bytes());
        assert!(read_pcap(&ng).unwrap_err().contains("unknown magic"));
    }
}
