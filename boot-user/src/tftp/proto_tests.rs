use super::*;

fn rrq(name: &str, mode: Mode, opts: &[(&str, &str)]) -> Packet {
    Packet::Rrq(Request {
        filename: name.into(),
        mode,
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

#[test]
fn parse_table() {
    let rows: Vec<(&str, Vec<u8>, Result<Packet, ParseError>)> = vec![
        (
            "plain RRQ",
            b"\0\x01undionly.kpxe\0octet\0".to_vec(),
            Ok(rrq("undionly.kpxe", Mode::Octet, &[])),
        ),
        (
            "mode and option names are case-insensitive",
            b"\0\x01a\0OCTET\0BlkSize\x001468\0TSIZE\x000\0".to_vec(),
            Ok(rrq(
                "a",
                Mode::Octet,
                &[("blksize", "1468"), ("tsize", "0")],
            )),
        ),
        (
            "netascii is accepted",
            b"\0\x01a\0netascii\0".to_vec(),
            Ok(rrq("a", Mode::Netascii, &[])),
        ),
        (
            "trailing padding after the options is ignored",
            b"\0\x01a\0octet\0tsize\x000\0\0\0junk".to_vec(),
            Ok(rrq("a", Mode::Octet, &[("tsize", "0")])),
        ),
        (
            "WRQ",
            b"\0\x02up\0octet\0".to_vec(),
            Ok(Packet::Wrq(Request {
                filename: "up".into(),
                mode: Mode::Octet,
                options: vec![],
            })),
        ),
        ("ACK", b"\0\x04\x01\x02".to_vec(), Ok(Packet::Ack(0x0102))),
        (
            "ERROR 8 (EDK2's end of the size probe)",
            b"\0\x05\0\x08User aborted the transfer\0".to_vec(),
            Ok(Packet::Error {
                code: 8,
                message: "User aborted the transfer".into(),
            }),
        ),
        (
            "ERROR without its NUL",
            b"\0\x05\0\x01gone".to_vec(),
            Ok(Packet::Error {
                code: 1,
                message: "gone".into(),
            }),
        ),
        (
            "DATA",
            b"\0\x03\0\x01abc".to_vec(),
            Ok(Packet::Data { block: 1, len: 3 }),
        ),
        ("OACK", b"\0\x06blksize\x00512\0".to_vec(), Ok(Packet::Oack)),
        ("empty", vec![], Err(ParseError::TooShort(0))),
        (
            "three bytes",
            b"\0\x04\0".to_vec(),
            Err(ParseError::TooShort(3)),
        ),
        (
            "unknown opcode",
            b"\0\x09\0\0".to_vec(),
            Err(ParseError::UnknownOpcode(9)),
        ),
        (
            "file name without NUL",
            b"\0\x01abcd".to_vec(),
            Err(ParseError::Unterminated("file name")),
        ),
        (
            "mode without NUL",
            b"\0\x01a\0octet".to_vec(),
            Err(ParseError::Unterminated("mode")),
        ),
        (
            "unknown mode",
            b"\0\x01a\0binary\0".to_vec(),
            Err(ParseError::UnsupportedMode("binary".into())),
        ),
        (
            "mail mode",
            b"\0\x01a\0mail\0".to_vec(),
            Err(ParseError::UnsupportedMode("mail".into())),
        ),
        (
            "non-UTF-8 file name",
            b"\0\x01caf\xe9\0octet\0".to_vec(),
            Err(ParseError::FileNameNotUtf8),
        ),
    ];
    for (what, bytes, want) in rows {
        assert_eq!(parse(&bytes), want, "{what}");
    }
}

#[test]
fn parse_never_panics_on_prefixes_and_noise() {
    let base = b"\0\x01undionly.kpxe\0octet\0blksize\x001468\0tsize\x000\0".to_vec();
    for n in 0..=base.len() {
        let _ = parse(&base[..n]);
    }
    let mut x: u32 = 1;
    for _ in 0..20_000 {
        let len = (x % 40) as usize;
        let mut b = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b.push((x % 7) as u8); // small bytes: many NULs and opcodes 1..6
        }
        let _ = parse(&b);
    }
}

#[test]
fn errors_replies_for_bad_requests() {
    let rows = [
        (b"\0\x01a\0binary\0".to_vec(), ErrorCode::IllegalOperation),
        (b"\0\x01caf\xe9\0octet\0".to_vec(), ErrorCode::FileNotFound),
        (b"\0\x01abcd".to_vec(), ErrorCode::IllegalOperation),
        (b"\0\x09\0\0".to_vec(), ErrorCode::IllegalOperation),
    ];
    for (bytes, code) in rows {
        assert_eq!(parse(&bytes).unwrap_err().reply().0, code, "{bytes:?}");
    }
}

/// One table drives both directions: encoding, and parsing back what was encoded.
#[test]
fn encode_table() {
    let rows: Vec<(Vec<u8>, Vec<u8>, Option<Packet>)> = vec![
        (
            encode_ack(7),
            b"\0\x04\0\x07".to_vec(),
            Some(Packet::Ack(7)),
        ),
        (
            encode_error(ErrorCode::OptionsRefused, "User aborted\0x"),
            b"\0\x05\0\x08User abortedx\0".to_vec(),
            Some(Packet::Error {
                code: 8,
                message: "User abortedx".into(),
            }),
        ),
        (
            encode_oack(&[("blksize", "1468".into()), ("tsize", "80000".into())]),
            b"\0\x06blksize\x001468\0tsize\x0080000\0".to_vec(),
            Some(Packet::Oack),
        ),
        (
            data_header(65535).to_vec(),
            b"\0\x03\xff\xff".to_vec(),
            Some(Packet::Data {
                block: 65535,
                len: 0,
            }),
        ),
        (
            encode_request(RRQ, "a", "octet", &[("tsize", "0")]),
            b"\0\x01a\0octet\0tsize\x000\0".to_vec(),
            Some(rrq("a", Mode::Octet, &[("tsize", "0")])),
        ),
    ];
    for (got, want, parsed) in rows {
        assert_eq!(got, want);
        if let Some(p) = parsed {
            assert_eq!(parse(&got), Ok(p));
        }
    }
}

fn req(opts: &[(&str, &str)]) -> Request {
    match rrq("f", Mode::Octet, opts) {
        Packet::Rrq(r) => r,
        _ => unreachable!(),
    }
}

#[test]
fn negotiation_table() {
    let lim = Limits::default();
    let s = Duration::from_secs;
    // (options asked, limits, blksize, window, timeout, OACK options)
    type Row<'a> = (
        &'a [(&'a str, &'a str)],
        Limits,
        u16,
        u16,
        Duration,
        Option<&'a [u8]>,
    );
    let rows: Vec<Row> = vec![
        (&[], lim, 512, 1, s(1), None),
        (&[("foo", "1")], lim, 512, 1, s(1), None),
        (
            &[("blksize", "1432"), ("tsize", "0")],
            lim,
            1432,
            1,
            s(1),
            Some(b"blksize\x001432\0tsize\x00123456\0"),
        ),
        (
            &[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")],
            lim,
            1468,
            4,
            s(1),
            Some(b"tsize\x00123456\0blksize\x001468\0windowsize\x004\0"),
        ),
        (
            &[("blksize", "100000")],
            lim,
            65464,
            1,
            s(1),
            Some(b"blksize\x0065464\0"),
        ),
        (
            &[("blksize", "9000")],
            Limits {
                max_blksize: 1468,
                ..lim
            },
            1468,
            1,
            s(1),
            Some(b"blksize\x001468\0"),
        ),
        (&[("blksize", "7")], lim, 512, 1, s(1), None),
        (&[("blksize", "x")], lim, 512, 1, s(1), None),
        (
            &[("blksize", "1024"), ("blksize", "2048")],
            lim,
            1024,
            1,
            s(1),
            Some(b"blksize\x001024\0"),
        ),
        (
            &[("windowsize", "64")],
            lim,
            512,
            16,
            s(1),
            Some(b"windowsize\x0016\0"),
        ),
        (&[("windowsize", "0")], lim, 512, 1, s(1), None),
        (
            &[("timeout", "3")],
            lim,
            512,
            1,
            s(3),
            Some(b"timeout\x003\0"),
        ),
        // Outside 1..=5: left out of the OACK (RFC 2349 lets a server only accept it
        // as asked or ignore it).
        (&[("timeout", "255")], lim, 512, 1, s(1), None),
        (&[("timeout", "0")], lim, 512, 1, s(1), None),
    ];
    for (opts, lim, blksize, window, timeout, oack) in rows {
        let n = negotiate(&req(opts), 123456, &lim);
        let want_oack = oack.map(|o| [&b"\0\x06"[..], o].concat());
        assert_eq!(
            n,
            Negotiated {
                blksize,
                window,
                timeout,
                oack: want_oack
            },
            "{opts:?}"
        );
    }
}
