//! DHCP as the simulated clients send and read it (pure, no I/O): BOOTP messages with
//! options in the order each client profile sends them, wrapped in Ethernet/IPv4/UDP
//! frames for the AF_PACKET socket, and the fields of a server's answer.
use std::net::Ipv4Addr;

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// A DHCP request to build: fixed fields plus options as (code, value) in send order.
#[derive(Clone, Debug)]
pub struct Request {
    pub mac: [u8; 6],
    pub xid: u32,
    pub secs: u16,
    pub broadcast: bool,
    pub options: Vec<(u8, Vec<u8>)>,
}

/// The BOOTP message (no frame).
pub fn encode(req: &Request) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&req.xid.to_be_bytes());
    m[8..10].copy_from_slice(&req.secs.to_be_bytes());
    if req.broadcast {
        m[10] = 0x80;
    }
    m[28..34].copy_from_slice(&req.mac);
    m.extend_from_slice(&[99, 130, 83, 99]);
    for (code, value) in &req.options {
        m.push(*code);
        m.push(value.len() as u8);
        m.extend_from_slice(value);
    }
    m.push(255);
    // Pad to the 300-byte BOOTP minimum, as firmware does.
    if m.len() < 300 {
        m.resize(300, 0);
    }
    m
}

fn csum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet broadcast frame 0.0.0.0:68 -> 255.255.255.255:67 carrying `payload`.
pub fn frame(src_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let src = [0u8; 4];
    let dst = [255u8; 4];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&68u16.to_be_bytes());
    udp.extend_from_slice(&67u16.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    // Pseudo-header sum.
    let mut ps = 0u32;
    for w in [src, dst].concat().chunks(2) {
        ps += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    ps += 17 + udp_len as u32;
    let mut c = csum(&udp, ps);
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

/// What the simulated clients read from a server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Ethernet source: the server's MAC (for the node's permanent ARP entry).
    pub src_mac: [u8; 6],
    pub xid: u32,
    pub msg_type: u8,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    /// The BOOTP `file` field, up to its first NUL.
    pub file: String,
    pub server_id: Option<Ipv4Addr>,
    pub subnet: Option<Ipv4Addr>,
    /// Option 67.
    pub bootfile: Option<String>,
    /// Option 60 (a PXE server says `PXEClient`).
    pub vendor_class: Option<Vec<u8>>,
    /// Option 175 holds sub-option 176 (iPXE "no ProxyDHCP wait").
    pub ipxe_no_pxedhcp: bool,
}

impl Reply {
    /// The boot file: option 67, else the `file` field.
    pub fn boot_file(&self) -> Option<&str> {
        self.bootfile
            .as_deref()
            .or((!self.file.is_empty()).then_some(self.file.as_str()))
    }
    /// The server to use: option 54, else siaddr.
    pub fn server(&self) -> Ipv4Addr {
        self.server_id.unwrap_or(self.siaddr)
    }
}

fn ip4(b: &[u8]) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::new(
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ))
}

/// Parses an Ethernet frame (IPv4, UDP to port 68, BOOTREPLY for `mac`); None for
/// anything else.
pub fn parse_frame(f: &[u8], mac: [u8; 6]) -> Option<Reply> {
    if f.len() < 14 + 20 + 8 + 240 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let udp = f.get(14 + ihl..)?;
    if u16::from_be_bytes([udp[2], udp[3]]) != 68 {
        return None;
    }
    let m = udp.get(8..)?;
    if m.len() < 240 || m[0] != 2 || m[28..34] != mac || m[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let mut r = Reply {
        src_mac: f[6..12].try_into().ok()?,
        xid: u32::from_be_bytes(m[4..8].try_into().ok()?),
        yiaddr: ip4(&m[16..20])?,
        siaddr: ip4(&m[20..24])?,
        file: String::from_utf8_lossy(m[108..236].split(|&b| b == 0).next().unwrap_or(&[]))
            .into_owned(),
        msg_type: 0,
        server_id: None,
        subnet: None,
        bootfile: None,
        vendor_class: None,
        ipxe_no_pxedhcp: false,
    };
    for (code, v) in dhcp_options(m)? {
        match code {
            1 => r.subnet = ip4(v),
            53 => r.msg_type = *v.first()?,
            54 => r.server_id = ip4(v),
            60 => r.vendor_class = Some(v.to_vec()),
            67 => {
                let s = v.split(|&b| b == 0).next().unwrap_or(&[]);
                r.bootfile = Some(String::from_utf8_lossy(s).into_owned());
            }
            175 => {
                let mut s = v;
                while s.len() >= 2 {
                    if s[0] == 176 {
                        r.ipxe_no_pxedhcp = true;
                    }
                    let l = usize::from(s[1]);
                    s = s.get(2 + l..).unwrap_or(&[]);
                }
            }
            _ => {}
        }
    }
    (r.msg_type != 0).then_some(r)
}

/// The options of a BOOTP message after the magic cookie: (code, value) in order.
pub fn dhcp_options(m: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    if m.len() < 240 || m[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let mut out = vec![];
    let mut o = &m[240..];
    while let Some(&code) = o.first() {
        match code {
            0 => o = &o[1..],
            255 => break,
            _ => {
                let len = usize::from(*o.get(1)?);
                out.push((code, o.get(2..2 + len)?));
                o = &o[2 + len..];
            }
        }
    }
    Some(out)
}

/// Prefix length of a netmask.
pub fn prefix_len(mask: Ipv4Addr) -> u8 {
    u32::from(mask).count_ones() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_through_a_reply_parser() {
        let mac = [2, 0, 0, 0, 0, 7];
        let req = Request {
            mac,
            xid: 0x1234_5678,
            secs: 3,
            broadcast: true,
            options: vec![(53, vec![DISCOVER]), (93, vec![0, 0])],
        };
        let msg = encode(&req);
        assert_eq!(msg.len(), 300);
        assert_eq!(&msg[240..246], &[53, 1, 1, 93, 2, 0]);
        let f = frame(mac, &msg);
        // IPv4 header checksum verifies to zero.
        assert_eq!(csum(&f[14..34], 0), 0);
        // Turn it into a reply: op 2, dst port 68, options 53=2, 54, 67, 175.176.
        let mut r = f.clone();
        r[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&68u16.to_be_bytes());
        let m = 14 + 28;
        r[m] = 2;
        r[m + 16..m + 20].copy_from_slice(&[10, 77, 1, 1]);
        r.truncate(m + 240);
        r.extend_from_slice(&[53, 1, OFFER, 54, 4, 10, 77, 0, 1, 67, 3, b'a', b'b', 0]);
        r.extend_from_slice(&[175, 3, 176, 1, 1, 255]);
        let p = parse_frame(&r, mac).unwrap();
        assert_eq!(p.msg_type, OFFER);
        assert_eq!(p.xid, 0x1234_5678);
        assert_eq!(p.yiaddr, Ipv4Addr::new(10, 77, 1, 1));
        assert_eq!(p.server(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(p.boot_file(), Some("ab"));
        assert!(p.ipxe_no_pxedhcp);
        assert!(parse_frame(&r, [9; 6]).is_none(), "another node's reply");
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 0, 0)), 16);
    }
}
