//! DHCPv4 wire format: a strict check in front of dhcproto's decoder, and encoding.
//!
//! dhcproto decodes leniently, which suits a client but not a server that must refuse bad
//! input as a whole: an option whose body does not decode silently ends option parsing (the
//! options after it vanish), a few fixed-size options reach `debug_assert!`s or a `len - 3`
//! underflow when their length is wrong, and `Message::chaddr` slices by `hlen` without a
//! bound. So [`parse`] first walks the raw options itself (a bounded TLV walk, RFC 2132 §2,
//! with RFC 3396 concatenation of repeated codes), checks the header and the length of every
//! option dhcproto gives a fixed shape, and only then hands the bytes to dhcproto. A message
//! that dhcproto decodes to fewer options than the walk found is refused too. Never panics.
use std::collections::BTreeSet;

use dhcproto::v4::Message;
use dhcproto::{Decodable, Decoder, Encodable};

/// BOOTP header (236 bytes) + magic cookie.
pub const HEADER_LEN: usize = 240;
/// RFC 2131 §3: the magic cookie that starts the options area.
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Why a datagram is not a well-formed DHCP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0} bytes: shorter than the 240-byte DHCP header")]
    TooShort(usize),
    #[error("bad magic cookie {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("hardware address length {0} is over 16")]
    BadHlen(u8),
    #[error("op code {0} is neither BOOTREQUEST nor BOOTREPLY")]
    BadOp(u8),
    #[error("option {code}: length {len} runs past the end of the packet")]
    Truncated { code: u8, len: usize },
    #[error("option {code}: length {len}, expected {expected}")]
    BadLength {
        code: u8,
        len: usize,
        expected: &'static str,
    },
    #[error("option 53: unknown message type {0}")]
    BadMessageType(u8),
    #[error("option {0}: body does not decode")]
    Undecodable(u8),
    #[error("dhcproto: {0}")]
    Decode(String),
}

/// Parses one DHCP message (the UDP payload). Every error names what is wrong.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    check_header(bytes)?;
    let codes = walk_options(&bytes[HEADER_LEN..])?;
    let msg =
        Message::decode(&mut Decoder::new(bytes)).map_err(|e| ParseError::Decode(e.to_string()))?;
    let decoded: BTreeSet<u8> = msg.opts().iter().map(|(c, _)| u8::from(*c)).collect();
    if let Some(missing) = codes.difference(&decoded).next() {
        return Err(ParseError::Undecodable(*missing));
    }
    Ok(msg)
}

/// Encodes a message to its wire form.
pub fn encode(msg: &Message) -> Vec<u8> {
    // Encoding into a Vec cannot fail: every field has a fixed or bounded size.
    msg.to_vec()
        .expect("encoding a DHCP message into a Vec cannot fail")
}

fn check_header(b: &[u8]) -> Result<(), ParseError> {
    if b.len() < HEADER_LEN {
        return Err(ParseError::TooShort(b.len()));
    }
    if !matches!(b[0], 1 | 2) {
        return Err(ParseError::BadOp(b[0]));
    }
    if b[2] > 16 {
        return Err(ParseError::BadHlen(b[2]));
    }
    let magic = [b[236], b[237], b[238], b[239]];
    if magic != MAGIC {
        return Err(ParseError::BadMagic(magic));
    }
    Ok(())
}

/// Walks the options area; returns the set of option codes present (without Pad/End).
/// Stops at End; a missing End is accepted when the last option ends exactly at the end of
/// the datagram (some clients pad nothing and omit it). Lengths are checked per run of
/// adjacent options with the same code, which dhcproto joins (RFC 3396); a repeated code
/// elsewhere is decoded on its own.
fn walk_options(opts: &[u8]) -> Result<BTreeSet<u8>, ParseError> {
    let mut codes = BTreeSet::new();
    // (code, total length) of the run being read.
    let mut run: Option<(u8, usize)> = None;
    let mut i = 0;
    while i < opts.len() {
        let code = opts[i];
        if code == 0 || code == 255 {
            if let Some((c, len)) = run.take() {
                check_len(c, len)?;
            }
            if code == 255 {
                break;
            }
            i += 1;
            continue;
        }
        let Some(&len) = opts.get(i + 1) else {
            return Err(ParseError::Truncated { code, len: 0 });
        };
        let len = len as usize;
        if i + 2 + len > opts.len() {
            return Err(ParseError::Truncated { code, len });
        }
        if code == 53 && len == 1 && !(1..=18).contains(&opts[i + 2]) {
            return Err(ParseError::BadMessageType(opts[i + 2]));
        }
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            Some((c, total)) => {
                check_len(c, total)?;
                Some((code, len))
            }
            None => Some((code, len)),
        };
        codes.insert(code);
        i += 2 + len;
    }
    if let Some((c, len)) = run {
        check_len(c, len)?;
    }
    Ok(codes)
}

/// The length rules of the options dhcproto gives a fixed shape (after concatenation).
fn check_len(code: u8, len: usize) -> Result<(), ParseError> {
    let (ok, expected) = match code {
        // Single addresses.
        1 | 16 | 28 | 32 | 50 | 54 | 118 | 150 => (len == 4, "4"),
        // 32-bit integers.
        2 | 24 | 35 | 38 | 51 | 58 | 59 | 91 | 106 | 152..=155 => (len == 4, "4"),
        // 16-bit integers.
        13 | 22 | 26 | 57 => (len == 2, "2"),
        // Flags and bytes.
        19 | 20 | 23 | 27 | 29 | 30 | 31 | 34 | 36 | 37 | 39 | 46 | 52 | 53 | 116 | 156 | 157 => {
            (len == 1, "1")
        }
        // Address lists.
        3..=11 | 41 | 42 | 44 | 45 | 48 | 49 | 65 | 68..=76 | 89 | 92 => {
            (len.is_multiple_of(4), "a multiple of 4")
        }
        // Address pairs.
        21 | 33 => (len.is_multiple_of(8), "a multiple of 8"),
        25 => (len.is_multiple_of(2), "a multiple of 2"),
        93 => (
            len >= 2 && len.is_multiple_of(2),
            "a non-empty multiple of 2",
        ),
        94 => (len == 3, "3"),
        80 => (len == 0, "0"),
        81 => (len >= 3, "at least 3"),
        151 => (len >= 1, "at least 1"),
        _ => (true, ""),
    };
    if ok {
        Ok(())
    } else {
        Err(ParseError::BadLength {
            code,
            len,
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, MessageType};

    fn header(op: u8) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0] = op;
        b[1] = 1;
        b[2] = 6;
        b[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        b[236..240].copy_from_slice(&MAGIC);
        b
    }

    fn with_opts(opts: &[u8]) -> Vec<u8> {
        let mut b = header(1);
        b.extend_from_slice(opts);
        b
    }

    #[test]
    fn good_discover_parses() {
        let m = parse(&with_opts(&[53, 1, 1, 50, 4, 10, 0, 0, 5, 255])).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert!(m
            .opts()
            .get(dhcproto::v4::OptionCode::RequestedIpAddress)
            .is_some());
    }

    #[test]
    fn missing_end_at_exact_end_is_accepted() {
        assert!(parse(&with_opts(&[53, 1, 1])).is_ok());
    }

    #[test]
    fn concatenated_options_are_joined() {
        // RFC 3396: two 77 options form one.
        let m = parse(&with_opts(&[
            53, 1, 1, 77, 2, b'i', b'P', 77, 2, b'X', b'E', 255,
        ]))
        .unwrap();
        assert_eq!(
            m.opts().get(dhcproto::v4::OptionCode::UserClass),
            Some(&DhcpOption::UserClass(b"iPXE".to_vec()))
        );
    }

    /// Table: malformed input -> the error it must give.
    #[test]
    fn malformed_rows() {
        let mut bad_magic = with_opts(&[53, 1, 1, 255]);
        bad_magic[236] = 0;
        let mut bad_hlen = with_opts(&[53, 1, 1, 255]);
        bad_hlen[2] = 17;
        let mut bad_op = with_opts(&[53, 1, 1, 255]);
        bad_op[0] = 7;
        let rows: Vec<(&str, Vec<u8>, ParseError)> = vec![
            ("empty", vec![], ParseError::TooShort(0)),
            (
                "header cut",
                header(1)[..200].to_vec(),
                ParseError::TooShort(200),
            ),
            (
                "bad magic",
                bad_magic,
                ParseError::BadMagic([0, 130, 83, 99]),
            ),
            ("hlen 17", bad_hlen, ParseError::BadHlen(17)),
            ("op 7", bad_op, ParseError::BadOp(7)),
            (
                "length past end",
                with_opts(&[53, 1, 1, 12, 10, b'a']),
                ParseError::Truncated { code: 12, len: 10 },
            ),
            (
                "code without length",
                with_opts(&[53, 1, 1, 12]),
                ParseError::Truncated { code: 12, len: 0 },
            ),
            (
                "type length 2",
                with_opts(&[53, 2, 1, 1, 255]),
                ParseError::BadLength {
                    code: 53,
                    len: 2,
                    expected: "1",
                },
            ),
            (
                "type 0",
                with_opts(&[53, 1, 0, 255]),
                ParseError::BadMessageType(0),
            ),
            (
                "type 200",
                with_opts(&[53, 1, 200, 255]),
                ParseError::BadMessageType(200),
            ),
            (
                "requested ip 3 bytes",
                with_opts(&[53, 1, 3, 50, 3, 1, 2, 3, 255]),
                ParseError::BadLength {
                    code: 50,
                    len: 3,
                    expected: "4",
                },
            ),
            (
                "server id 5 bytes",
                with_opts(&[53, 1, 3, 54, 5, 1, 2, 3, 4, 5, 255]),
                ParseError::BadLength {
                    code: 54,
                    len: 5,
                    expected: "4",
                },
            ),
            (
                "arch odd",
                with_opts(&[53, 1, 1, 93, 1, 0, 255]),
                ParseError::BadLength {
                    code: 93,
                    len: 1,
                    expected: "a non-empty multiple of 2",
                },
            ),
            (
                "nii 2 bytes",
                with_opts(&[53, 1, 1, 94, 2, 1, 2, 255]),
                ParseError::BadLength {
                    code: 94,
                    len: 2,
                    expected: "3",
                },
            ),
            (
                "fqdn short",
                with_opts(&[53, 1, 1, 81, 1, 0, 255]),
                ParseError::BadLength {
                    code: 81,
                    len: 1,
                    expected: "at least 3",
                },
            ),
            (
                "router 5 bytes",
                with_opts(&[53, 1, 1, 3, 5, 1, 2, 3, 4, 5, 255]),
                ParseError::BadLength {
                    code: 3,
                    len: 5,
                    expected: "a multiple of 4",
                },
            ),
            (
                "max size 1 byte",
                with_opts(&[53, 1, 1, 57, 1, 2, 255]),
                ParseError::BadLength {
                    code: 57,
                    len: 1,
                    expected: "2",
                },
            ),
            (
                "rapid commit with body",
                with_opts(&[53, 1, 1, 80, 1, 0, 255]),
                ParseError::BadLength {
                    code: 80,
                    len: 1,
                    expected: "0",
                },
            ),
            (
                "hostname not utf-8",
                with_opts(&[53, 1, 1, 12, 2, 0xff, 0xfe, 255]),
                ParseError::Undecodable(12),
            ),
        ];
        for (name, bytes, want) in rows {
            assert_eq!(parse(&bytes).unwrap_err(), want, "row {name}");
        }
    }

    /// Mutated and truncated messages never panic (run in debug builds, where dhcproto's
    /// debug assertions are live).
    #[test]
    fn fuzz_never_panics() {
        let seed = with_opts(&[
            53, 1, 1, 57, 2, 5, 192, 93, 2, 0, 0, 94, 3, 1, 2, 1, 60, 9, b'P', b'X', b'E', b'C',
            b'l', b'i', b'e', b'n', b't', 77, 4, b'i', b'P', b'X', b'E', 97, 17, 0, 1, 2, 3, 4, 5,
            6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 81, 5, 0, 0, 0, 1, b'a', 119, 5, 3, b'f', b'o',
            b'o', 0, 121, 5, 24, 10, 0, 0, 1, 255,
        ]);
        let mut state: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut b = seed.clone();
            let n = 1 + next() % 6;
            for _ in 0..n {
                let pos = HEADER_LEN - 8 + (next() as usize % (b.len() - HEADER_LEN + 8));
                b[pos] = next() as u8;
            }
            let cut = (next() as usize) % (b.len() + 1);
            let _ = parse(&b[..cut.max(HEADER_LEN - 2)]);
            let _ = parse(&b);
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes, and any options after a valid header, parse or fail without a
            /// panic, and what parses is classified without one.
            #[test]
            fn parse_never_panics(
                raw in prop::collection::vec(any::<u8>(), 0..600),
                opts in prop::collection::vec(any::<u8>(), 0..400),
                cut in any::<prop::sample::Index>(),
            ) {
                let _ = parse(&raw);
                let b = with_opts(&opts);
                let end = HEADER_LEN - 8 + cut.index(b.len() - HEADER_LEN + 9);
                for bytes in [&b[..], &b[..end]] {
                    if let Ok(m) = parse(bytes) {
                        let _ = crate::dhcp::Request::from_message(&m);
                        let _ = encode(&m);
                    }
                }
            }

            /// Well-formed option lists (code, length, value) with any codes and values.
            #[test]
            fn any_options_never_panic(
                options in prop::collection::vec(
                    (1u8..255, prop::collection::vec(any::<u8>(), 0..40)), 0..20),
            ) {
                let mut opts = vec![53, 1, 1];
                for (code, value) in options {
                    opts.push(code);
                    opts.push(value.len() as u8);
                    opts.extend(value);
                }
                opts.push(255);
                if let Ok(m) = parse(&with_opts(&opts)) {
                    let _ = crate::dhcp::Request::from_message(&m);
                    let _ = encode(&m);
                }
            }
        }
    }
}
