//! RMCP+ cryptography: cipher suites 3 and 17, RAKP key-exchange codes, session keys,
//! packet integrity (HMAC-SHA1-96 / HMAC-SHA256-128) and confidentiality (AES-CBC-128).
//!
//! Pure functions over byte slices: no state, no I/O. Both sides of the handshake are
//! here (the managed system's codes too) so that an in-memory BMC can check a client, and
//! so that captured exchanges can be verified byte for byte in tests.
//! (IPMI v2.0 rev 1.1, sections 13.28-13.32.)
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};

/// An RMCP+ cipher suite: authentication, integrity and confidentiality algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CipherSuite {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128 (the one every BMC implements).
    Suite3,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

/// Algorithm numbers as they appear in Open Session payloads.
pub mod alg {
    pub const AUTH_HMAC_SHA1: u8 = 0x01;
    pub const AUTH_HMAC_SHA256: u8 = 0x03;
    pub const INTEGRITY_HMAC_SHA1_96: u8 = 0x01;
    pub const INTEGRITY_HMAC_SHA256_128: u8 = 0x04;
    pub const CONF_AES_CBC_128: u8 = 0x01;
}

impl CipherSuite {
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 3,
            CipherSuite::Suite17 => 17,
        }
    }

    pub fn from_id(id: u8) -> Option<CipherSuite> {
        match id {
            3 => Some(CipherSuite::Suite3),
            17 => Some(CipherSuite::Suite17),
            _ => None,
        }
    }

    /// (authentication, integrity, confidentiality) algorithm numbers.
    pub fn algorithms(self) -> (u8, u8, u8) {
        match self {
            CipherSuite::Suite3 => (
                alg::AUTH_HMAC_SHA1,
                alg::INTEGRITY_HMAC_SHA1_96,
                alg::CONF_AES_CBC_128,
            ),
            CipherSuite::Suite17 => (
                alg::AUTH_HMAC_SHA256,
                alg::INTEGRITY_HMAC_SHA256_128,
                alg::CONF_AES_CBC_128,
            ),
        }
    }

    /// The suite with these algorithms, if it is one we implement.
    pub fn from_algorithms(auth: u8, integrity: u8, conf: u8) -> Option<CipherSuite> {
        [CipherSuite::Suite3, CipherSuite::Suite17]
            .into_iter()
            .find(|s| s.algorithms() == (auth, integrity, conf))
    }

    /// Full HMAC of the authentication algorithm (RAKP 2/3 codes, SIK, K1, K2).
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC takes keys of any length");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            CipherSuite::Suite3 => run::<Hmac<sha1::Sha1>>(key, parts),
            CipherSuite::Suite17 => run::<Hmac<sha2::Sha256>>(key, parts),
        }
    }

    /// Length of the RAKP 4 integrity check value and of every packet AuthCode.
    pub fn icv_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 12,
            CipherSuite::Suite17 => 16,
        }
    }
}

impl std::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cipher suite {}", self.id())
    }
}

/// Everything both sides know once RAKP 1 and 2 have been exchanged.
#[derive(Clone, Debug)]
pub struct Handshake<'a> {
    pub suite: CipherSuite,
    /// Kuid: the user's password (HMAC zero-pads it, as the spec's 20-byte key).
    pub password: &'a [u8],
    /// Remote console (our) session ID, SIDm.
    pub console_sid: u32,
    /// Managed system (BMC) session ID, SIDc.
    pub bmc_sid: u32,
    /// Rm, the console's random number.
    pub console_rand: [u8; 16],
    /// Rc, the BMC's random number.
    pub bmc_rand: [u8; 16],
    pub bmc_guid: [u8; 16],
    /// The role byte of RAKP 1 (privilege level plus the name-only-lookup bit).
    pub role: u8,
    pub user: &'a [u8],
}

impl Handshake<'_> {
    fn ulen(&self) -> [u8; 1] {
        [self.user.len() as u8]
    }

    /// RAKP 2 key exchange authentication code (computed by the BMC, checked by us).
    pub fn rakp2_code(&self) -> Vec<u8> {
        self.suite.hmac(
            self.password,
            &[
                &self.console_sid.to_le_bytes(),
                &self.bmc_sid.to_le_bytes(),
                &self.console_rand,
                &self.bmc_rand,
                &self.bmc_guid,
                &[self.role],
                &self.ulen(),
                self.user,
            ],
        )
    }

    /// RAKP 3 key exchange authentication code (computed by us, checked by the BMC).
    pub fn rakp3_code(&self) -> Vec<u8> {
        self.suite.hmac(
            self.password,
            &[
                &self.bmc_rand,
                &self.console_sid.to_le_bytes(),
                &[self.role],
                &self.ulen(),
                self.user,
            ],
        )
    }

    /// The session integrity key. KG (the BMC key) is Kuid: we do not support a
    /// separate BMC key, as almost no deployment sets one.
    pub fn sik(&self) -> Vec<u8> {
        self.suite.hmac(
            self.password,
            &[
                &self.console_rand,
                &self.bmc_rand,
                &[self.role],
                &self.ulen(),
                self.user,
            ],
        )
    }

    /// RAKP 4 integrity check value (computed by the BMC from the SIK, checked by us).
    pub fn rakp4_icv(&self, sik: &[u8]) -> Vec<u8> {
        let mut v = self.suite.hmac(
            sik,
            &[
                &self.console_rand,
                &self.bmc_sid.to_le_bytes(),
                &self.bmc_guid,
            ],
        );
        v.truncate(self.suite.icv_len());
        v
    }
}

/// Session keys derived from the SIK.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub suite: CipherSuite,
    /// K1: the integrity key.
    pub k1: Vec<u8>,
    /// First 16 bytes of K2: the AES-128 key.
    pub aes: [u8; 16],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;
type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

impl Keys {
    /// K1 = HMAC(SIK, 0x01 x 20), K2 = HMAC(SIK, 0x02 x 20); the constants are 20 bytes
    /// for every authentication algorithm.
    pub fn derive(suite: CipherSuite, sik: &[u8]) -> Keys {
        let k1 = suite.hmac(sik, &[&[0x01; 20]]);
        let k2 = suite.hmac(sik, &[&[0x02; 20]]);
        let mut aes = [0u8; 16];
        aes.copy_from_slice(&k2[..16]);
        Keys { suite, k1, aes }
    }

    /// The AuthCode over `covered` (from the auth-type byte through the next-header byte).
    pub fn auth_code(&self, covered: &[u8]) -> Vec<u8> {
        let mut v = self.suite.hmac(&self.k1, &[covered]);
        v.truncate(self.suite.icv_len());
        v
    }

    /// AES-CBC-128 payload: IV, then ciphertext of data + pad 1,2,..,n + n.
    pub fn encrypt(&self, iv: [u8; 16], data: &[u8]) -> Vec<u8> {
        let pad = (16 - (data.len() + 1) % 16) % 16;
        let mut buf = Vec::with_capacity(16 + data.len() + pad + 1);
        buf.extend_from_slice(&iv);
        buf.extend_from_slice(data);
        buf.extend((1..=pad as u8).chain([pad as u8]));
        let enc = Aes128CbcEnc::new(&self.aes.into(), &iv.into());
        enc.encrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(
            &mut buf[16..],
            data.len() + pad + 1,
        )
        .expect("length is a multiple of the block size");
        buf
    }

    /// Inverse of [`Keys::encrypt`]; None if the payload is malformed.
    pub fn decrypt(&self, payload: &[u8]) -> Option<Vec<u8>> {
        if payload.len() < 32 || !payload.len().is_multiple_of(16) {
            return None;
        }
        let (iv, ct) = payload.split_at(16);
        let mut buf = ct.to_vec();
        let iv: [u8; 16] = iv.try_into().ok()?;
        let dec = Aes128CbcDec::new(&self.aes.into(), &iv.into());
        dec.decrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(&mut buf)
            .ok()?;
        let pad = *buf.last()? as usize;
        if pad > 15 || pad + 1 > buf.len() {
            return None;
        }
        buf.truncate(buf.len() - pad - 1);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }
    fn a16(s: &str) -> [u8; 16] {
        h(s).try_into().unwrap()
    }

    /// Captured on loopback: ipmitool 1.8.19 (`-I lanplus -C 3`, user admin, password
    /// secret) against OpenIPMI's ipmi_sim 2.0.33. Every code the two peers computed
    /// must come out of these functions unchanged.
    fn ipmitool_vs_ipmi_sim() -> Handshake<'static> {
        Handshake {
            suite: CipherSuite::Suite3,
            password: b"secret",
            console_sid: 0xa0a2a3a4,
            bmc_sid: 0x0000_0502,
            console_rand: a16("3c9986e3b4f9c2283741796dc1e69c52"),
            bmc_rand: a16("1139ea098910330e96e7cb765986425f"),
            bmc_guid: a16("a123456789abcdefa123456789abcdef"),
            role: 0x14,
            user: b"admin",
        }
    }

    #[test]
    fn suite3_handshake_matches_capture() {
        let hs = ipmitool_vs_ipmi_sim();
        assert_eq!(
            hs.rakp2_code(),
            h("122c68147fd63873371e452e2462da08abeb6719")
        );
        assert_eq!(
            hs.rakp3_code(),
            h("b041bec038660dffee562c41dc58ea0f604fa0c9")
        );
        assert_eq!(hs.rakp4_icv(&hs.sik()), h("41b1eeaac35fe701c8cdafd8"));
    }

    #[test]
    fn suite3_packet_auth_code_and_payload_match_capture() {
        let hs = ipmitool_vs_ipmi_sim();
        let keys = Keys::derive(hs.suite, &hs.sik());
        // First session packet ipmitool sent: Set Session Privilege Level (ADMIN).
        let pkt = h(
            "0600ff0706c0020500000300000020003e40d2d35939adcdb2f83eef81882c541ed6\
                     f8beb4c533e8b90b505a823a4d9effff02076381284b8d6d903a692926cb",
        );
        let n = pkt.len();
        assert_eq!(keys.auth_code(&pkt[4..n - 12]), pkt[n - 12..]);
        let msg = keys.decrypt(&pkt[16..48]).unwrap();
        // rsAddr 20, netfn App (06<<2), chk, rqAddr 81, seq, cmd 3B, data 04, chk
        assert_eq!(msg[0], 0x20);
        assert_eq!(msg[1] >> 2, 0x06);
        assert_eq!(msg[5], 0x3b);
        assert_eq!(msg[6], 0x04);
    }

    /// Captured on loopback: ipmitool 1.8.19 (`-I lanplus -C 17`) against the in-memory
    /// BMC of this module's crate (ipmi_sim has no suite 17). ipmitool's side is the
    /// independent one: its RAKP 3 code, and its first session packet's AuthCode
    /// (HMAC-SHA256-128 under K1) and AES payload (under K2), must match ours.
    #[test]
    fn suite17_matches_ipmitool() {
        let hs = Handshake {
            suite: CipherSuite::Suite17,
            password: b"secret",
            console_sid: 0xa0a2a3a4,
            bmc_sid: 0xfd17029c,
            console_rand: a16("e1387dedc6752794bf49f9873be7de63"),
            bmc_rand: a16("090a9da1346a76c1f65193b28a79dc62"),
            bmc_guid: *b"xboot-responder!",
            role: 0x14,
            user: b"admin",
        };
        assert_eq!(
            hs.rakp2_code(),
            h("7447884eeea7ccc464b6361d81191d4aa2788bc5684bf3226abcd415ce93a14a")
        );
        assert_eq!(
            hs.rakp3_code(),
            h("508dee2e49112d5c7f698becb5829d6b4f7f182f503d5252a47850f651c68e5f")
        );
        assert_eq!(
            hs.rakp4_icv(&hs.sik()),
            h("a6e6e93e6f42022b81b83eb8f57d84d1")
        );
        let keys = Keys::derive(hs.suite, &hs.sik());
        let pkt = h(
            "0600ff0706c09c0217fd030000002000fc68eb04806748b2da958d4c09ab0f080126f087\
                     8442866bfc04925aa4064380ffff0207a67b2504027feb1584eef5c5d1c5ac87",
        );
        let n = pkt.len();
        assert_eq!(keys.auth_code(&pkt[4..n - 16]), pkt[n - 16..]);
        let msg = keys.decrypt(&pkt[16..48]).unwrap();
        assert_eq!(
            (msg[1] >> 2, msg[5], msg[6]),
            (0x06, 0x3b, 0x04),
            "Set Session Privilege Level ADMIN"
        );
    }

    #[test]
    fn aes_round_trip_all_lengths() {
        let keys = Keys::derive(CipherSuite::Suite17, b"sik");
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let ct = keys.encrypt([7; 16], &data);
            assert_eq!(ct.len() % 16, 0);
            assert_eq!(keys.decrypt(&ct).unwrap(), data, "length {len}");
        }
        assert!(keys.decrypt(&[0; 20]).is_none());
    }

    #[test]
    fn suites_by_algorithms() {
        for s in [CipherSuite::Suite3, CipherSuite::Suite17] {
            let (a, i, c) = s.algorithms();
            assert_eq!(CipherSuite::from_algorithms(a, i, c), Some(s));
            assert_eq!(CipherSuite::from_id(s.id()), Some(s));
        }
        assert_eq!(CipherSuite::from_algorithms(1, 1, 0), None);
        assert_eq!(CipherSuite::Suite17.hmac(b"k", &[b"x"]).len(), 32);
    }
}
