//! RMCP+ session establishment payloads: Open Session Request/Response and RAKP messages
//! 1-4, encoded and decoded for both sides (the BMC side serves the in-memory peer used
//! by tests and benchmarks). (IPMI v2.0 rev 1.1, sections 13.17-13.23.)
use super::crypto::CipherSuite;
use super::rmcp::WireError;

/// RMCP+ status codes that mean "pick another cipher suite".
pub const fn is_algorithm_status(status: u8) -> bool {
    matches!(status, 0x04 | 0x05 | 0x06 | 0x07 | 0x10 | 0x11)
}

/// Human text for an RMCP+ status code (Open Session and RAKP replies).
pub fn status_text(status: u8) -> &'static str {
    match status {
        0x00 => "no errors",
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session ID",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session ID",
        0x09 => "invalid role",
        0x0a => "unauthorized role or privilege level requested",
        0x0b => "insufficient resources to create a session at the requested role",
        0x0c => "invalid name length",
        0x0d => "unauthorized name",
        0x0e => "unauthorized GUID",
        0x0f => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown status",
    }
}

fn need(b: &[u8], n: usize) -> Result<(), WireError> {
    if b.len() < n {
        Err(WireError::Short(b.len()))
    } else {
        Ok(())
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

/// The session ID at byte 4, or 0 when an error reply stops after the status byte
/// (ipmi_sim answers an Open Session it refuses with just tag and status).
fn sid_or_zero(b: &[u8]) -> u32 {
    if b.len() >= 8 {
        u32_at(b, 4)
    } else {
        0
    }
}

/// Error replies may be cut short after the status byte; success replies may not.
fn need_reply(b: &[u8], full: usize) -> Result<(), WireError> {
    need(b, 2)?;
    if b[1] == 0 {
        need(b, full)?;
    }
    Ok(())
}

fn a16(b: &[u8], i: usize) -> [u8; 16] {
    b[i..i + 16].try_into().expect("16 bytes")
}

/// The three algorithm records of an Open Session message.
fn algorithm_records(suite: CipherSuite) -> Vec<u8> {
    let (a, i, c) = suite.algorithms();
    let mut v = Vec::with_capacity(24);
    for (ty, alg) in [(0u8, a), (1, i), (2, c)] {
        v.extend_from_slice(&[ty, 0, 0, 8, alg, 0, 0, 0]);
    }
    v
}

fn parse_records(b: &[u8]) -> Result<(u8, u8, u8), WireError> {
    need(b, 24)?;
    Ok((b[4], b[12], b[20]))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionRequest {
    pub tag: u8,
    /// Requested maximum privilege (4 = ADMINISTRATOR; 0 = "highest the user has",
    /// which some BMCs, ipmi_sim among them, answer without naming a level).
    pub max_priv: u8,
    pub console_sid: u32,
    pub suite: CipherSuite,
}

impl OpenSessionRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag, self.max_priv, 0, 0];
        v.extend_from_slice(&self.console_sid.to_le_bytes());
        v.extend(algorithm_records(self.suite));
        v
    }

    /// Decodes; Ok(None) suite means algorithms we do not implement (BMC side).
    pub fn decode(b: &[u8]) -> Result<(Self, Option<CipherSuite>), WireError> {
        need(b, 32)?;
        let (a, i, c) = parse_records(&b[8..])?;
        let suite = CipherSuite::from_algorithms(a, i, c);
        let req = OpenSessionRequest {
            tag: b[0],
            max_priv: b[1],
            console_sid: u32_at(b, 4),
            suite: suite.unwrap_or(CipherSuite::Suite3),
        };
        Ok((req, suite))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionResponse {
    pub tag: u8,
    pub status: u8,
    pub max_priv: u8,
    pub console_sid: u32,
    /// Valid when status is 0.
    pub bmc_sid: u32,
    /// The algorithms the BMC accepted, when status is 0.
    pub suite: Option<CipherSuite>,
}

impl OpenSessionResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag, self.status, self.max_priv, 0];
        v.extend_from_slice(&self.console_sid.to_le_bytes());
        if let (0, Some(s)) = (self.status, self.suite) {
            v.extend_from_slice(&self.bmc_sid.to_le_bytes());
            v.extend(algorithm_records(s));
        }
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        need_reply(b, 36)?;
        let mut r = OpenSessionResponse {
            tag: b[0],
            status: b[1],
            max_priv: b.get(2).copied().unwrap_or(0),
            console_sid: sid_or_zero(b),
            bmc_sid: 0,
            suite: None,
        };
        if r.status == 0 {
            r.bmc_sid = u32_at(b, 8);
            let (a, i, c) = parse_records(&b[12..])?;
            r.suite = CipherSuite::from_algorithms(a, i, c);
        }
        Ok(r)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp1 {
    pub tag: u8,
    pub bmc_sid: u32,
    pub console_rand: [u8; 16],
    /// Privilege level, plus 0x10 for name-only lookup.
    pub role: u8,
    pub user: Vec<u8>,
}

impl Rakp1 {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag, 0, 0, 0];
        v.extend_from_slice(&self.bmc_sid.to_le_bytes());
        v.extend_from_slice(&self.console_rand);
        v.extend_from_slice(&[self.role, 0, 0, self.user.len() as u8]);
        v.extend_from_slice(&self.user);
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        need(b, 28)?;
        let ulen = b[27] as usize;
        let user = b
            .get(28..28 + ulen)
            .ok_or(WireError::Length(ulen))?
            .to_vec();
        Ok(Rakp1 {
            tag: b[0],
            bmc_sid: u32_at(b, 4),
            console_rand: a16(b, 8),
            role: b[24],
            user,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    pub tag: u8,
    pub status: u8,
    pub console_sid: u32,
    pub bmc_rand: [u8; 16],
    pub bmc_guid: [u8; 16],
    /// Key exchange authentication code (empty on error status).
    pub code: Vec<u8>,
}

impl Rakp2 {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag, self.status, 0, 0];
        v.extend_from_slice(&self.console_sid.to_le_bytes());
        if self.status == 0 {
            v.extend_from_slice(&self.bmc_rand);
            v.extend_from_slice(&self.bmc_guid);
            v.extend_from_slice(&self.code);
        }
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        need_reply(b, 40)?;
        let mut r = Rakp2 {
            tag: b[0],
            status: b[1],
            console_sid: sid_or_zero(b),
            bmc_rand: [0; 16],
            bmc_guid: [0; 16],
            code: vec![],
        };
        if r.status == 0 {
            r.bmc_rand = a16(b, 8);
            r.bmc_guid = a16(b, 24);
            r.code = b[40..].to_vec();
        }
        Ok(r)
    }
}

/// RAKP 3 (console -> BMC) and RAKP 4 (BMC -> console) share one layout: tag, status,
/// the receiver's session ID, then an authentication code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp34 {
    pub tag: u8,
    pub status: u8,
    /// RAKP 3: the BMC's session ID; RAKP 4: the console's.
    pub sid: u32,
    pub code: Vec<u8>,
}

impl Rakp34 {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag, self.status, 0, 0];
        v.extend_from_slice(&self.sid.to_le_bytes());
        v.extend_from_slice(&self.code);
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        need_reply(b, 8)?;
        let code = b.get(8..).unwrap_or_default().to_vec();
        Ok(Rakp34 {
            tag: b[0],
            status: b[1],
            sid: sid_or_zero(b),
            code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    // Payloads of the ipmitool <-> ipmi_sim capture (cipher suite 3); each is decoded,
    // compared field by field, and re-encoded to the same bytes.
    #[test]
    fn open_session_table() {
        let req = OpenSessionRequest {
            tag: 0,
            max_priv: 0,
            console_sid: 0xa0a2a3a4,
            suite: CipherSuite::Suite3,
        };
        let bytes = h("00000000a4a3a2a0000000080100000001000008010000000200000801000000");
        assert_eq!(req.encode(), bytes);
        assert_eq!(
            OpenSessionRequest::decode(&bytes).unwrap(),
            (req, Some(CipherSuite::Suite3))
        );

        let resp = OpenSessionResponse {
            tag: 0,
            status: 0,
            max_priv: 0,
            console_sid: 0xa0a2a3a4,
            bmc_sid: 0x502,
            suite: Some(CipherSuite::Suite3),
        };
        let bytes = h("00000000a4a3a2a002050000000000080100000001000008010000000200000801000000");
        assert_eq!(OpenSessionResponse::decode(&bytes).unwrap(), resp);
        assert_eq!(resp.encode(), bytes);

        // ipmi_sim refusing suite 17: tag and status only
        let refused = OpenSessionResponse::decode(&h("01 04")).unwrap();
        assert_eq!(
            (
                refused.tag,
                refused.status,
                refused.console_sid,
                refused.suite
            ),
            (1, 0x04, 0, None)
        );
        assert!(
            OpenSessionResponse::decode(&h("01 00")).is_err(),
            "success needs the body"
        );
        assert!(is_algorithm_status(refused.status));
        assert_eq!(status_text(0x04), "invalid authentication algorithm");
    }

    #[test]
    fn rakp_table() {
        let r1 = Rakp1 {
            tag: 0,
            bmc_sid: 0x502,
            console_rand: h("3c9986e3b4f9c2283741796dc1e69c52").try_into().unwrap(),
            role: 0x14,
            user: b"admin".to_vec(),
        };
        let b1 = h("00000000020500003c9986e3b4f9c2283741796dc1e69c521400000561646d696e");
        assert_eq!(r1.encode(), b1);
        assert_eq!(Rakp1::decode(&b1).unwrap(), r1);

        let b2 = h(
            "00000000a4a3a2a01139ea098910330e96e7cb765986425fa123456789abcdefa123456789abcdef\
                    122c68147fd63873371e452e2462da08abeb6719",
        );
        let r2 = Rakp2::decode(&b2).unwrap();
        assert_eq!(r2.console_sid, 0xa0a2a3a4);
        assert_eq!(r2.bmc_guid[0], 0xa1);
        assert_eq!(r2.code.len(), 20);
        assert_eq!(r2.encode(), b2);

        let b3 = h("0000000002050000b041bec038660dffee562c41dc58ea0f604fa0c9");
        let r3 = Rakp34::decode(&b3).unwrap();
        assert_eq!((r3.sid, r3.code.len()), (0x502, 20));
        assert_eq!(r3.encode(), b3);

        let b4 = h("00000000a4a3a2a041b1eeaac35fe701c8cdafd8");
        assert_eq!(
            Rakp34::decode(&b4).unwrap().code,
            h("41b1eeaac35fe701c8cdafd8")
        );

        // ipmi_sim's RAKP 2 for an unknown user: status 0x0d, body present anyway
        let bad = Rakp2::decode(&h(
            "000d0000a4a3a2a0eff3737744eed4a4673bd2d586b43143a123456789abcdef\
                                    a123456789abcdef56f7c5c423bacd5483f119b94a2df56d3c9b3c50",
        ))
        .unwrap();
        assert_eq!(
            (bad.status, bad.console_sid, bad.code.len()),
            (0x0d, 0xa0a2a3a4, 0)
        );
        assert_eq!(status_text(bad.status), "unauthorized name");
        assert_eq!(Rakp2::decode(&h("00 0d")).unwrap().status, 0x0d);
        assert!(Rakp1::decode(&b1[..20]).is_err());
    }
}
