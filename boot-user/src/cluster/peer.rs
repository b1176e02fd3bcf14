//! Signatures of the requests servers make of each other (pure): a server fetching a
//! blob (`GET|HEAD /blobs/sha256/{hex}`, [`super::blobs`]) proves it holds the
//! cluster's boot-token keyring ([`super::keyring`]); anyone else is refused with 403.
//!
//! The header [`HEADER`] is `1 {server} {kid} {expires} {tag}`: version 1, the asking
//! server's id (letters, digits, `-_.`: no space), the key id, an expiry in unix seconds
//! and the base64url (no padding) HMAC-SHA256, by that key, of
//! `"xboot peer request v1" | 0 | len-prefixed(method, blob hex, server) | expiry (8, BE)`
//! ([`Keyring::tag`]). A signature is made per request and valid [`LIFETIME_SECS`]; the
//! key is checked with the rules of boot tokens (a pending key is accepted, a retired
//! one until `provision.token_ttl` + the grace after its retirement), so a rotation
//! refuses no peer either. A signature further ahead than [`MAX_AHEAD_SECS`] is
//! refused (no long-lived signature can be minted), which bounds the clock skew servers
//! may have with each other. Replays within the lifetime are not refused: they fetch
//! the same blob, which the replayer could read in transit anyway (plain HTTP).
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::http::token::{Keyring, TokenError};

/// The request header that carries the signature.
pub const HEADER: &str = "x-xboot-peer";
/// How long a signature made for one request is valid.
pub const LIFETIME_SECS: u64 = 60;
/// The furthest ahead of the checking server's clock an expiry may be (the lifetime plus
/// the clock skew tolerated between servers).
pub const MAX_AHEAD_SECS: u64 = LIFETIME_SECS + 240;
/// The HMAC domain: no tag of this domain is valid for anything else.
const DOMAIN: &str = "xboot peer request v1";

/// Why a peer request was refused (the 403 body: one line each).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error(
        "peer route: no {HEADER} header: only xboot servers of the cluster, signing with \
         its keyring, may fetch blobs here (nodes boot through their /boot/ token URLs)"
    )]
    Missing,
    #[error("peer route: malformed {HEADER} header: {0}")]
    Malformed(&'static str),
    #[error("peer route: the signature of server {server} expired {ago}s ago")]
    Expired { server: String, ago: u64 },
    #[error(
        "peer route: the signature of server {server} expires {ahead}s from now, more than \
         {MAX_AHEAD_SECS}s (its clock is ahead, or it was made to last)"
    )]
    TooFarAhead { server: String, ahead: u64 },
    #[error("peer route: signature of server {server}: {source}")]
    Key { server: String, source: TokenError },
}

/// The signed message.
fn message(method: &str, hex: &str, server: &str, expires: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + method.len() + hex.len() + server.len());
    // Length-prefixed, so no two field lists make one message.
    for f in [method, hex, server] {
        m.extend_from_slice(&(f.len() as u32).to_be_bytes());
        m.extend_from_slice(f.as_bytes());
    }
    m.extend_from_slice(&expires.to_be_bytes());
    m
}

/// The header value for `method` of blob `hex` by `server`, signed at `now` with the
/// ring's signing key.
pub fn sign(ring: &Keyring, method: &str, hex: &str, server: &str, now: u64) -> String {
    let expires = now + LIFETIME_SECS;
    let (kid, tag) = ring.tag(DOMAIN, &message(method, hex, server, expires), now);
    format!("1 {server} {kid} {expires} {}", URL_SAFE_NO_PAD.encode(tag))
}

/// The asking server's id if `header` is a valid signature of `method` of blob `hex` at
/// `now` by a key of `ring` (`ttl`: `provision.token_ttl`, how long a retired key lasts).
pub fn verify(
    ring: &Keyring,
    header: Option<&str>,
    method: &str,
    hex: &str,
    now: u64,
    ttl: u64,
) -> Result<String, PeerError> {
    let header = header.ok_or(PeerError::Missing)?;
    let fields: Vec<&str> = header.split(' ').collect();
    let [version, server, kid, expires, tag] = fields.as_slice() else {
        return Err(PeerError::Malformed(
            "expected `1 SERVER KID EXPIRES SIGNATURE`",
        ));
    };
    if *version != "1" {
        return Err(PeerError::Malformed("unknown version"));
    }
    let expires: u64 = expires
        .parse()
        .map_err(|_| PeerError::Malformed("the expiry is not unix seconds"))?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| PeerError::Malformed("the signature is not base64url"))?;
    ring.check_tag(
        DOMAIN,
        kid,
        &message(method, hex, server, expires),
        &tag,
        now,
        ttl,
    )
    .map_err(|source| PeerError::Key {
        server: server.to_string(),
        source,
    })?;
    // Checked once the signature holds: the server named is the one that signed.
    if now > expires {
        return Err(PeerError::Expired {
            server: server.to_string(),
            ago: now - expires,
        });
    }
    if expires - now > MAX_AHEAD_SECS {
        return Err(PeerError::TooFarAhead {
            server: server.to_string(),
            ahead: expires - now,
        });
    }
    Ok(server.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::token::{Claims, ROTATION_GRACE_SECS};

    const TTL: u64 = 600;
    const HEX: &str = "ab";

    /// A header with one field replaced.
    fn with_field(h: &str, i: usize, v: &str) -> String {
        let mut f: Vec<&str> = h.split(' ').collect();
        f[i] = v;
        f.join(" ")
    }

    #[test]
    fn a_signature_is_valid_for_its_request_only_and_within_its_lifetime() {
        let ring = Keyring::generate(0);
        let h = sign(&ring, "GET", HEX, "s2", 1_000);
        assert_eq!(
            verify(&ring, Some(&h), "GET", HEX, 1_000, TTL).unwrap(),
            "s2"
        );
        assert_eq!(
            verify(&ring, Some(&h), "GET", HEX, 1_000 + LIFETIME_SECS, TTL).unwrap(),
            "s2"
        );
        let bad_sig = |server: &str| PeerError::Key {
            server: server.into(),
            source: TokenError::BadSignature,
        };
        let other_ring = Keyring::generate(0);
        let foreign = sign(&other_ring, "GET", HEX, "s2", 1_000);
        let foreign_kid = other_ring.keys()[0].id();
        let tag = h.rsplit(' ').next().unwrap();
        let mut flipped = URL_SAFE_NO_PAD.decode(tag).unwrap();
        flipped[0] ^= 1;
        let flipped = URL_SAFE_NO_PAD.encode(flipped);
        // (what, the header, method, blob, now, the refusal)
        type Row<'a> = (&'a str, Option<String>, &'a str, &'a str, u64, PeerError);
        let rows: Vec<Row> = vec![
            ("unsigned", None, "GET", HEX, 1_000, PeerError::Missing),
            (
                "other blob",
                Some(h.clone()),
                "GET",
                "cd",
                1_000,
                bad_sig("s2"),
            ),
            (
                "other method",
                Some(h.clone()),
                "HEAD",
                HEX,
                1_000,
                bad_sig("s2"),
            ),
            (
                "other server named",
                Some(with_field(&h, 1, "s3")),
                "GET",
                HEX,
                1_000,
                bad_sig("s3"),
            ),
            (
                "expiry moved",
                Some(with_field(&h, 3, "1100")),
                "GET",
                HEX,
                1_000,
                bad_sig("s2"),
            ),
            (
                "tag flipped",
                Some(with_field(&h, 4, &flipped)),
                "GET",
                HEX,
                1_000,
                bad_sig("s2"),
            ),
            (
                "expired",
                Some(h.clone()),
                "GET",
                HEX,
                1_000 + LIFETIME_SECS + 5,
                PeerError::Expired {
                    server: "s2".into(),
                    ago: 5,
                },
            ),
            (
                "another cluster's key",
                Some(foreign),
                "GET",
                HEX,
                1_000,
                PeerError::Key {
                    server: "s2".into(),
                    source: TokenError::UnknownKey { kid: foreign_kid },
                },
            ),
            (
                "key id not hex",
                Some(with_field(&h, 2, "zzzzzzzz")),
                "GET",
                HEX,
                1_000,
                PeerError::Key {
                    server: "s2".into(),
                    source: TokenError::Malformed("the key id is not 8 hex digits"),
                },
            ),
            (
                "version",
                Some(with_field(&h, 0, "2")),
                "GET",
                HEX,
                1_000,
                PeerError::Malformed("unknown version"),
            ),
            (
                "fields missing",
                Some("1 s2 0badc0de".into()),
                "GET",
                HEX,
                1_000,
                PeerError::Malformed("expected `1 SERVER KID EXPIRES SIGNATURE`"),
            ),
            (
                "expiry not a number",
                Some(with_field(&h, 3, "soon")),
                "GET",
                HEX,
                1_000,
                PeerError::Malformed("the expiry is not unix seconds"),
            ),
            (
                "tag not base64url",
                Some(with_field(&h, 4, "a/b+")),
                "GET",
                HEX,
                1_000,
                PeerError::Malformed("the signature is not base64url"),
            ),
        ];
        for (what, header, method, hex, now, want) in rows {
            assert_eq!(
                verify(&ring, header.as_deref(), method, hex, now, TTL).unwrap_err(),
                want,
                "{what}"
            );
        }
        // A signer whose clock is far ahead (or one minting a signature to last).
        let ahead = sign(&ring, "GET", HEX, "s2", 1_000 + MAX_AHEAD_SECS);
        assert_eq!(
            verify(&ring, Some(&ahead), "GET", HEX, 999, TTL).unwrap_err(),
            PeerError::TooFarAhead {
                server: "s2".into(),
                ahead: MAX_AHEAD_SECS + LIFETIME_SECS + 1
            }
        );
        assert!(PeerError::Missing.to_string().contains(HEADER));
    }

    /// The rules of boot tokens: a server that has the rotated ring accepts a peer that
    /// signs with the new key before it signs tokens, and one still signing with the
    /// retired key until `token_ttl` + the grace after its retirement.
    #[test]
    fn rotation_overlap_follows_the_token_rules() {
        let old = Keyring::generate(0);
        let old_kid = old.keys()[0].id();
        // Rotated at 1000, the new key signs from 1010.
        let new = old.rotate(1_000, 10, TTL).unwrap();
        let new_kid = new.keys()[1].id();
        // A peer that already signs with the new key, checked by one that has the ring.
        let early = sign(&new, "GET", HEX, "s1", 1_010);
        assert!(early.contains(&new_kid));
        assert!(verify(&new, Some(&early), "GET", HEX, 1_005, TTL).is_ok());
        // A peer late to learn of the rotation still signs with the old key.
        let late = sign(&old, "GET", HEX, "s1", 1_020);
        assert!(late.contains(&old_kid));
        assert!(verify(&new, Some(&late), "GET", HEX, 1_020, TTL).is_ok());
        // Past the old key's retirement + ttl + grace: refused, naming the key.
        let until = 1_010 + TTL + ROTATION_GRACE_SECS;
        let lapsed = sign(&old, "GET", HEX, "s1", until + 1);
        let e = verify(&new, Some(&lapsed), "GET", HEX, until + 1, TTL).unwrap_err();
        assert!(
            matches!(&e, PeerError::Key { source: TokenError::RetiredKey { kid, .. }, .. } if *kid == old_kid),
            "{e:?}"
        );
        // A ring without the new key (a server that never got the rotation) refuses it.
        assert_eq!(
            verify(&old, Some(&early), "GET", HEX, 1_011, TTL).unwrap_err(),
            PeerError::Key {
                server: "s1".into(),
                source: TokenError::UnknownKey { kid: new_kid }
            }
        );
    }

    /// A peer signature is no boot token, and a token's tag no peer signature.
    #[test]
    fn peer_tags_and_boot_tokens_do_not_mix() {
        let ring = Keyring::generate(0);
        let token = ring.sign(
            &Claims {
                host: "cn1".into(),
                mac: "02:00:00:00:00:01".parse().unwrap(),
                expires: 2_000,
            },
            1_000,
        );
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let token_tag = URL_SAFE_NO_PAD.encode(&raw[raw.len() - 32..]);
        let h = sign(&ring, "GET", HEX, "s2", 1_000);
        let forged = with_field(&h, 4, &token_tag);
        assert!(verify(&ring, Some(&forged), "GET", HEX, 1_000, TTL).is_err());
        assert!(ring.verify(&h, 1_000, TTL).is_err());
    }
}
