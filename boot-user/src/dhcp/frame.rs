//! Ethernet + IPv4 + UDP framing of replies (pure), and the matching parser.
//!
//! The slow path sends replies to clients without an address as raw frames (no ARP entry
//! is needed to unicast to chaddr), and the XDP path rewrites request frames into replies:
//! [`frame`] is the reference both are compared against, byte for byte. Hand-written
//! because it is 42 bytes of fixed layout and two checksums, and the XDP side must match
//! this exact layout (no crate of the workspace builds frames).
//!
//! Layout: Ethernet II (optionally one 802.1Q tag), IPv4 without options (TOS 0, ID 0, DF,
//! TTL 64), UDP with its checksum.
use std::net::{Ipv4Addr, SocketAddrV4};

use super::reply::{Destination, Reply, CLIENT_PORT, SERVER_PORT};
use crate::inventory::Mac;

pub const BROADCAST_MAC: Mac = Mac([0xff; 6]);
const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const TTL: u8 = 64;

/// The link-level facts a frame needs besides the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameAddrs {
    /// The serving interface's MAC and address (Ethernet and IP source).
    pub server_mac: Mac,
    pub server_ip: Ipv4Addr,
    /// Source MAC of the request frame: the next hop for relay, ciaddr and peer replies.
    pub peer_mac: Mac,
    /// 802.1Q VLAN id of the request, if it was tagged.
    pub vlan: Option<u16>,
}

/// Destination MAC and UDP endpoint of a reply (RFC 2131 §4.1, see
/// [`super::reply::destination`]).
pub fn endpoint(dest: Destination, peer_mac: Mac) -> (Mac, SocketAddrV4) {
    match dest {
        Destination::Broadcast => (
            BROADCAST_MAC,
            SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
        ),
        Destination::Unicast { mac, ip } => (mac, SocketAddrV4::new(ip, CLIENT_PORT)),
        Destination::Relay(ip) => (peer_mac, SocketAddrV4::new(ip, SERVER_PORT)),
        Destination::Client(ip) => (peer_mac, SocketAddrV4::new(ip, CLIENT_PORT)),
        Destination::Peer(sa) => (peer_mac, sa),
    }
}

/// The full frame of a reply.
pub fn frame(reply: &Reply, a: &FrameAddrs) -> Vec<u8> {
    let (dst_mac, dst) = endpoint(reply.destination, a.peer_mac);
    let src = SocketAddrV4::new(a.server_ip, reply.src_port());
    udp_frame(&reply.bytes(), a.server_mac, src, dst_mac, dst, a.vlan)
}

/// One Ethernet/IPv4/UDP frame around `payload`.
pub fn udp_frame(
    payload: &[u8],
    src_mac: Mac,
    src: SocketAddrV4,
    dst_mac: Mac,
    dst: SocketAddrV4,
    vlan: Option<u16>,
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(18 + ip_len);
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    if let Some(id) = vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&(id & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, TTL, 17, 0, 0]);
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    let csum = checksum(&[&f[ip_start..]]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    let udp_start = f.len();
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    let csum = udp_checksum(*src.ip(), *dst.ip(), &f[udp_start..]);
    f[udp_start + 6..udp_start + 8].copy_from_slice(&csum.to_be_bytes());
    f
}

/// Internet checksum (RFC 1071) over the concatenation of `parts` (each of even length
/// except possibly the last).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
        if let [last] = chunks.remainder() {
            sum += (*last as u32) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// UDP checksum with the IPv4 pseudo-header; `segment` is the UDP header (checksum field
/// zero) and payload. 0 is sent as 0xffff (RFC 768).
pub fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let len = (segment.len() as u16).to_be_bytes();
    let pseudo = [&src.octets()[..], &dst.octets()[..], &[0, 17], &len[..]].concat();
    match checksum(&[&pseudo, segment]) {
        0 => 0xffff,
        c => c,
    }
}

/// A parsed Ethernet/IPv4/UDP frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpFrame<'a> {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub vlan: Option<u16>,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub ttl: u8,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame too short")]
    Short,
    #[error("not IPv4/UDP")]
    NotUdp,
    #[error("bad IPv4 header checksum")]
    IpChecksum,
    #[error("bad UDP checksum")]
    UdpChecksum,
    #[error("length fields disagree with the frame")]
    Length,
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    Mac(m)
}

/// Parses a frame and verifies both checksums.
pub fn parse_frame(b: &[u8]) -> Result<UdpFrame<'_>, FrameError> {
    if b.len() < 14 {
        return Err(FrameError::Short);
    }
    let mut at = 12;
    let mut vlan = None;
    if u16::from_be_bytes([b[12], b[13]]) == ETH_P_8021Q {
        let tag = b.get(14..18).ok_or(FrameError::Short)?;
        vlan = Some(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff);
        at = 16;
    }
    if u16::from_be_bytes([b[at], b[at + 1]]) != ETH_P_IP {
        return Err(FrameError::NotUdp);
    }
    let ip = &b[at + 2..];
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return Err(if ip.len() < 20 {
            FrameError::Short
        } else {
            FrameError::NotUdp
        });
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ihl < 20 || total < ihl + 8 || total > ip.len() {
        return Err(FrameError::Length);
    }
    if checksum(&[&ip[..ihl]]) != 0 {
        return Err(FrameError::IpChecksum);
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = &ip[ihl..total];
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if udp_len != udp.len() {
        return Err(FrameError::Length);
    }
    if udp[6..8] != [0, 0] {
        let pseudo = [
            &src_ip.octets()[..],
            &dst_ip.octets()[..],
            &[0, 17],
            &udp[4..6],
        ]
        .concat();
        if checksum(&[&pseudo, udp]) != 0 {
            return Err(FrameError::UdpChecksum);
        }
    }
    Ok(UdpFrame {
        dst_mac: mac_at(b, 0),
        src_mac: mac_at(b, 6),
        vlan,
        src: SocketAddrV4::new(src_ip, u16::from_be_bytes([udp[0], udp[1]])),
        dst: SocketAddrV4::new(dst_ip, u16::from_be_bytes([udp[2], udp[3]])),
        ttl: ip[8],
        payload: &udp[8..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRV: Mac = Mac([2, 0, 0, 0, 0, 0xaa]);
    const CLI: Mac = Mac([2, 0, 0, 0, 0, 0x01]);

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes sum to 0xddf2; the checksum is its complement.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
        assert_eq!(
            checksum(&[&[0x00, 0x01], &[0xf2, 0x03]]),
            checksum(&[&[0x00, 0x01, 0xf2, 0x03]])
        );
    }

    #[test]
    fn frame_round_trips_with_valid_checksums() {
        for vlan in [None, Some(42)] {
            for payload in [&b"odd"[..], &b"even"[..], &[0u8; 300][..]] {
                let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 67);
                let dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 68);
                let f = udp_frame(payload, SRV, src, CLI, dst, vlan);
                let p = parse_frame(&f).unwrap();
                assert_eq!(
                    (p.src_mac, p.dst_mac, p.vlan, p.src, p.dst, p.payload),
                    (SRV, CLI, vlan, src, dst, payload)
                );
                assert_eq!(f.len(), 14 + vlan.map_or(0, |_| 4) + 28 + payload.len());
            }
        }
    }

    #[test]
    fn corrupted_frames_are_refused() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 67);
        let f = udp_frame(
            b"hello",
            SRV,
            src,
            CLI,
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
            None,
        );
        let mut ip_bad = f.clone();
        ip_bad[14 + 8] ^= 1; // TTL
        assert_eq!(parse_frame(&ip_bad), Err(FrameError::IpChecksum));
        let mut udp_bad = f.clone();
        *udp_bad.last_mut().unwrap() ^= 1;
        assert_eq!(parse_frame(&udp_bad), Err(FrameError::UdpChecksum));
        assert_eq!(parse_frame(&f[..40]), Err(FrameError::Length));
        assert_eq!(parse_frame(&f[..10]), Err(FrameError::Short));
    }

    #[test]
    fn endpoints_per_destination() {
        let peer = Mac([2, 0, 0, 0, 0, 0x77]);
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        let rows = [
            (
                Destination::Broadcast,
                (BROADCAST_MAC, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)),
            ),
            (
                Destination::Unicast { mac: CLI, ip },
                (CLI, SocketAddrV4::new(ip, 68)),
            ),
            (Destination::Relay(ip), (peer, SocketAddrV4::new(ip, 67))),
            (Destination::Client(ip), (peer, SocketAddrV4::new(ip, 68))),
            (
                Destination::Peer(SocketAddrV4::new(ip, 4011)),
                (peer, SocketAddrV4::new(ip, 4011)),
            ),
        ];
        for (d, want) in rows {
            assert_eq!(endpoint(d, peer), want, "{d:?}");
        }
    }
}
