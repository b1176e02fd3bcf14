//! RMCP / IPMI-over-LAN framing: the RMCP header, the IPMI v1.5 and v2.0 (RMCP+) session
//! headers with the integrity trailer, and IPMI LAN messages (requests and responses with
//! their two checksums). Pure encode/decode of byte slices; wire values are unverified
//! until [`decode`] and [`decode_response`] have checked them.
//! (IPMI v2.0 rev 1.1, sections 13.6-13.8.)
use super::crypto::Keys;

/// RMCP version 6, reserved, sequence 0xff (no RMCP ACK), class IPMI.
pub const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xff, 0x07];
/// Auth type byte that marks an RMCP+ (IPMI v2.0) session header.
pub const AUTH_RMCPP: u8 = 0x06;
/// BMC responder address and our (software ID) requester address.
pub const BMC_ADDR: u8 = 0x20;
pub const CONSOLE_ADDR: u8 = 0x81;
/// Next-header byte of the integrity trailer.
const NEXT_HEADER: u8 = 0x07;
/// Bytes of the v2.0 session header (auth type .. payload length).
const V20_HEADER: usize = 12;

/// RMCP+ payload types (low 6 bits of the payload type byte).
pub mod payload {
    pub const IPMI: u8 = 0x00;
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    pub const RAKP1: u8 = 0x12;
    pub const RAKP2: u8 = 0x13;
    pub const RAKP3: u8 = 0x14;
    pub const RAKP4: u8 = 0x15;
    pub const ENCRYPTED: u8 = 0x80;
    pub const AUTHENTICATED: u8 = 0x40;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram too short ({0} bytes)")]
    Short(usize),
    #[error("not an RMCP IPMI datagram")]
    NotIpmi,
    #[error("unsupported auth type {0:#04x}")]
    AuthType(u8),
    #[error("payload length {0} exceeds the datagram")]
    Length(usize),
    #[error("bad integrity trailer")]
    Trailer,
    #[error("bad IPMI message checksum")]
    Checksum,
}

/// A decoded datagram. Slices borrow from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// IPMI v1.5 session (only unauthenticated, pre-session messages are used).
    V15 {
        session_id: u32,
        msg: &'a [u8],
    },
    V20(V20<'a>),
}

/// An RMCP+ packet as received (payload still encrypted, AuthCode unchecked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V20<'a> {
    /// Low 6 bits of the payload type byte.
    pub payload_type: u8,
    pub encrypted: bool,
    pub authenticated: bool,
    pub session_id: u32,
    pub seq: u32,
    pub payload: &'a [u8],
    /// The bytes the AuthCode covers (auth type through next header); empty if none.
    pub covered: &'a [u8],
    pub auth_code: &'a [u8],
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Parses a datagram's RMCP and session headers.
pub fn decode(d: &[u8]) -> Result<Packet<'_>, WireError> {
    if d.len() < 5 {
        return Err(WireError::Short(d.len()));
    }
    if d[0] != 0x06 || d[3] & 0x1f != 0x07 {
        return Err(WireError::NotIpmi);
    }
    match d[4] {
        AUTH_RMCPP => decode_v20(d).map(Packet::V20),
        0x00 => {
            // auth type, seq(4), session id(4), length(1), message
            if d.len() < 14 {
                return Err(WireError::Short(d.len()));
            }
            let len = d[13] as usize;
            let msg = d.get(14..14 + len).ok_or(WireError::Length(len))?;
            Ok(Packet::V15 {
                session_id: u32_at(d, 9),
                msg,
            })
        }
        t => Err(WireError::AuthType(t)),
    }
}

fn decode_v20(d: &[u8]) -> Result<V20<'_>, WireError> {
    let h = &d[4..];
    if h.len() < V20_HEADER {
        return Err(WireError::Short(d.len()));
    }
    let pt = h[1];
    let len = u16::from_le_bytes([h[10], h[11]]) as usize;
    let payload = h
        .get(V20_HEADER..V20_HEADER + len)
        .ok_or(WireError::Length(len))?;
    let authenticated = pt & payload::AUTHENTICATED != 0;
    let (covered, auth_code): (&[u8], &[u8]) = if authenticated {
        let pad = integrity_pad(len);
        let end = V20_HEADER + len + pad + 2;
        if h.len() < end || h[end - 2] as usize != pad || h[end - 1] != NEXT_HEADER {
            return Err(WireError::Trailer);
        }
        (&h[..end], &h[end..])
    } else {
        (&[], &[])
    };
    Ok(V20 {
        payload_type: pt & 0x3f,
        encrypted: pt & payload::ENCRYPTED != 0,
        authenticated,
        session_id: u32_at(h, 2),
        seq: u32_at(h, 6),
        payload,
        covered,
        auth_code,
    })
}

/// 0xff bytes after the payload so that auth type..next header is a multiple of 4.
fn integrity_pad(payload_len: usize) -> usize {
    (4 - (V20_HEADER + payload_len + 2) % 4) % 4
}

/// An IPMI v1.5 datagram without authentication (Get Channel Authentication Capabilities).
pub fn encode_v15(msg: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(14 + msg.len());
    d.extend_from_slice(&RMCP_HEADER);
    d.push(0x00); // auth type none
    d.extend_from_slice(&[0; 8]); // session sequence, session id
    d.push(msg.len() as u8);
    d.extend_from_slice(msg);
    d
}

/// An RMCP+ datagram. With `keys`, the payload is encrypted with `iv` and the packet
/// carries an AuthCode; without, it goes in the clear (Open Session and RAKP messages).
pub fn encode_v20(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    keys: Option<(&Keys, [u8; 16])>,
) -> Vec<u8> {
    let (body, flags) = match keys {
        Some((k, iv)) => (
            k.encrypt(iv, payload),
            payload::ENCRYPTED | payload::AUTHENTICATED,
        ),
        None => (payload.to_vec(), 0),
    };
    let mut d = Vec::with_capacity(4 + V20_HEADER + body.len() + 24);
    d.extend_from_slice(&RMCP_HEADER);
    d.push(AUTH_RMCPP);
    d.push(payload_type | flags);
    d.extend_from_slice(&session_id.to_le_bytes());
    d.extend_from_slice(&seq.to_le_bytes());
    d.extend_from_slice(&(body.len() as u16).to_le_bytes());
    d.extend_from_slice(&body);
    if let Some((k, _)) = keys {
        let pad = integrity_pad(body.len());
        d.extend(std::iter::repeat_n(0xff, pad));
        d.push(pad as u8);
        d.push(NEXT_HEADER);
        let code = k.auth_code(&d[4..]);
        d.extend_from_slice(&code);
    }
    d
}

fn checksum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x)).wrapping_neg()
}

/// An IPMI request as a LAN message (BMC at 0x20, us at software ID 0x81, LUN 0).
pub fn encode_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![BMC_ADDR, netfn << 2];
    m.push(checksum(&m));
    m.extend_from_slice(&[CONSOLE_ADDR, rq_seq << 2, cmd]);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

/// A request as the BMC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub data: Vec<u8>,
}

/// A response from the BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's netfn (the response netfn minus one).
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    /// Completion code: 0 is success.
    pub cc: u8,
    pub data: Vec<u8>,
}

fn split_msg(m: &[u8]) -> Result<(u8, u8, u8, &[u8]), WireError> {
    if m.len() < 7 {
        return Err(WireError::Short(m.len()));
    }
    if checksum(&m[..2]) != m[2] || checksum(&m[3..m.len() - 1]) != m[m.len() - 1] {
        return Err(WireError::Checksum);
    }
    Ok((m[1] >> 2, m[4] >> 2, m[5], &m[6..m.len() - 1]))
}

/// Parses a response LAN message (checks both checksums).
pub fn decode_response(m: &[u8]) -> Result<Response, WireError> {
    let (netfn, rq_seq, cmd, rest) = split_msg(m)?;
    let (&cc, data) = rest.split_first().ok_or(WireError::Short(m.len()))?;
    Ok(Response {
        netfn: netfn & !1,
        cmd,
        rq_seq,
        cc,
        data: data.to_vec(),
    })
}

/// Parses a request LAN message (the BMC side, for in-memory peers).
pub fn decode_request(m: &[u8]) -> Result<Request, WireError> {
    let (netfn, rq_seq, cmd, data) = split_msg(m)?;
    Ok(Request {
        netfn,
        cmd,
        rq_seq,
        data: data.to_vec(),
    })
}

/// The BMC's response LAN message to `req`.
pub fn encode_response(req: &Request, cc: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![CONSOLE_ADDR, (req.netfn | 1) << 2];
    m.push(checksum(&m));
    m.extend_from_slice(&[BMC_ADDR, req.rq_seq << 2, req.cmd, cc]);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::ipmi::crypto::CipherSuite;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// (request fields, bytes) as ipmitool sent them to ipmi_sim.
    #[test]
    fn requests_table() {
        let table: &[(u8, u8, u8, &[u8], &str)] = &[
            // Get Channel Authentication Capabilities, channel 0x8e, ADMIN
            (0x06, 0x38, 0, &[0x8e, 0x04], "2018c8 8100388e04b5"),
        ];
        for &(netfn, cmd, seq, data, bytes) in table {
            let m = encode_request(netfn, cmd, seq, data);
            assert_eq!(m, h(bytes));
            let r = decode_request(&m).unwrap();
            assert_eq!(
                (r.netfn, r.cmd, r.rq_seq, r.data.as_slice()),
                (netfn, cmd, seq, data)
            );
        }
    }

    #[test]
    fn v15_auth_capabilities_round_trip() {
        let req = encode_v15(&encode_request(0x06, 0x38, 0, &[0x8e, 0x04]));
        assert_eq!(
            req,
            h("0600ff07 00 00000000 00000000 09 2018c88100388e04b5")
        );
        let reply = h("0600ff07000000000000000000 10 811c632000380001970603000000 0007");
        let Packet::V15 { session_id: 0, msg } = decode(&reply).unwrap() else {
            panic!()
        };
        let r = decode_response(msg).unwrap();
        assert_eq!((r.netfn, r.cmd, r.rq_seq, r.cc), (0x06, 0x38, 0, 0));
        assert_eq!(r.data, h("0197060300000000"));
        let served = encode_response(&decode_request(&req[14..]).unwrap(), 0, &r.data);
        assert_eq!(served, msg);
    }

    #[test]
    fn v20_cleartext_round_trip() {
        // ipmitool's Open Session Request
        let d = h(
            "0600ff0706100000000000000000200000000000a4a3a2a0000000080100000001000008\
                   010000000200000801000000",
        );
        let Packet::V20(p) = decode(&d).unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.payload_type, p.encrypted, p.authenticated),
            (0x10, false, false)
        );
        assert_eq!((p.session_id, p.seq, p.payload.len()), (0, 0, 32));
        assert_eq!(encode_v20(0x10, 0, 0, p.payload, None), d);
    }

    #[test]
    fn v20_secured_round_trip() {
        let keys = Keys::derive(CipherSuite::Suite3, b"sik");
        for len in [0usize, 1, 14, 15, 16, 31, 40] {
            let body: Vec<u8> = (0..len as u8).collect();
            let d = encode_v20(payload::IPMI, 0x1234, 9, &body, Some((&keys, [3; 16])));
            let Packet::V20(p) = decode(&d).unwrap() else {
                panic!()
            };
            assert!(p.encrypted && p.authenticated);
            assert_eq!((p.session_id, p.seq), (0x1234, 9));
            assert_eq!(p.covered.len() % 4, 0);
            assert_eq!(keys.auth_code(p.covered), p.auth_code);
            assert_eq!(keys.decrypt(p.payload).unwrap(), body);
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode(&[6, 0]), Err(WireError::Short(2)));
        assert_eq!(decode(&h("0600ff06 00")), Err(WireError::NotIpmi));
        assert_eq!(decode(&h("0600ff07 02")), Err(WireError::AuthType(2)));
        assert_eq!(
            decode(&h("0600ff07 06 00 00000000 00000000 0500 00")),
            Err(WireError::Length(5))
        );
        let keys = Keys::derive(CipherSuite::Suite3, b"sik");
        let mut d = encode_v20(0, 1, 1, b"x", Some((&keys, [0; 16])));
        let n = d.len();
        d[n - 13] = 0x06; // next header
        assert_eq!(decode(&d), Err(WireError::Trailer));
        let mut m = encode_request(0, 1, 2, &[]);
        m[6] ^= 1;
        assert_eq!(decode_response(&m), Err(WireError::Checksum));
    }
}
