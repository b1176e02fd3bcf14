//! Packet table: crafted frames -> the program's decision (counter and action), and for
//! answers the reply held to the slow path's; for passes the frame must come back
//! untouched. Malformed and unusual input of every kind the parser distinguishes.
use std::net::{Ipv4Addr, SocketAddrV4};

use boot_common::counter;
use dhcproto::v4::MessageType;
use xboot::dhcp::frame::{checksum, udp_checksum, udp_frame};
use xboot::inventory::Mac;
use xboot::xdp::loader::{XDP_PASS, XDP_TX};

use super::differential::compare;
use super::fixture::*;
use crate::netns;

/// Offsets in an untagged frame.
const IP: usize = 14;
const UDP: usize = 34;
const PAY: usize = 42;

/// Recomputes the UDP checksum of an untagged frame (after editing its payload).
pub fn fix_udp(f: &mut [u8]) {
    let end = IP + u16::from_be_bytes([f[IP + 2], f[IP + 3]]) as usize;
    if end > f.len() || end < UDP + 8 {
        return; // lengths already broken: nothing to fix
    }
    f[UDP + 6] = 0;
    f[UDP + 7] = 0;
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    let c = udp_checksum(src, dst, &f[UDP..end]);
    f[UDP + 6..UDP + 8].copy_from_slice(&c.to_be_bytes());
}

pub fn fix_ip(f: &mut [u8]) {
    let ihl = (f[IP] & 0xf) as usize * 4;
    if ihl < 20 || IP + ihl > f.len() {
        return;
    }
    f[IP + 10] = 0;
    f[IP + 11] = 0;
    let c = checksum(&[&f[IP..IP + ihl]]);
    f[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
}

/// A frame from a request's payload after `edit`, with correct checksums.
fn edited(req: &Req, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut p = req.payload();
    edit(&mut p);
    udp_frame(&p, req.src_mac, req.src, req.dst_mac, req.dst, req.vlan)
}

/// DISCOVER payload of `opts` (53 first), END, no padding.
fn with_opts(opts: &[u8]) -> Vec<u8> {
    let mut p = Req::new(CN1, MessageType::Discover, vec![]).payload();
    p.truncate(240);
    p.extend_from_slice(opts);
    p
}

fn frame_of(payload: &[u8]) -> Vec<u8> {
    let r = discover("none", CN1);
    udp_frame(payload, r.src_mac, r.src, r.dst_mac, r.dst, None)
}

fn rows() -> Vec<(&'static str, Vec<u8>, u32)> {
    use counter::*;
    let d = discover("udhcpc", CN1);
    let good = d.frame();
    let mut rows: Vec<(&str, Vec<u8>, u32)> = vec![("udhcpc DISCOVER", good.clone(), ANSWERED)];
    let mut arp = good[..60].to_vec();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    rows.push(("ARP", arp, NOT_DHCP));
    let mut v6 = good.clone();
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    rows.push(("IPv6 ethertype", v6, NOT_DHCP));
    rows.push(("Ethernet header only", good[..14].to_vec(), NOT_DHCP));
    let dns = udp_frame(
        b"query",
        CN1,
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 5353),
        SRV_MAC,
        SocketAddrV4::new(SERVER, 53),
        None,
    );
    rows.push(("UDP to port 53", dns, NOT_DHCP));
    let mut ipsum = good.clone();
    ipsum[IP + 10] ^= 0x40;
    rows.push(("bad IPv4 header checksum", ipsum, MALFORMED));
    let mut udpsum = good.clone();
    udpsum[UDP + 6] ^= 0x40;
    rows.push(("bad UDP checksum", udpsum, MALFORMED));
    let mut nosum = good.clone();
    nosum[UDP + 6..UDP + 8].copy_from_slice(&[0, 0]);
    rows.push(("UDP checksum 0 (none)", nosum, ANSWERED));
    let mut padded = good.clone();
    padded.extend_from_slice(&[0xee; 20]);
    rows.push(("Ethernet trailer after the datagram", padded, ANSWERED));
    rows.push((
        "IP length beyond the frame",
        good[..good.len() - 30].to_vec(),
        MALFORMED,
    ));
    rows.push((
        "BOOTP header cut at 200 bytes",
        frame_of(&d.payload()[..200]),
        MALFORMED,
    ));
    rows.push((
        "header and cookie only",
        frame_of(&d.payload()[..240]),
        MALFORMED,
    ));
    rows.push(("bad magic cookie", edited(&d, |p| p[236] = 0), MALFORMED));
    rows.push((
        "BOOTREPLY to port 67",
        edited(&d, |p| p[0] = 2),
        PASSED_OTHER,
    ));
    rows.push(("htype 6", edited(&d, |p| p[1] = 6), PASSED_OTHER));
    rows.push((
        "no END, options to the last byte",
        frame_of(&with_opts(&[53, 1, 1, 61, 2, 1, 2])),
        MALFORMED,
    ));
    rows.push((
        "option length past the end",
        frame_of(&with_opts(&[53, 1, 1, 12, 40, b'a'])),
        MALFORMED,
    ));
    rows.push((
        "53 with length 2",
        frame_of(&with_opts(&[53, 2, 1, 1, 255])),
        MALFORMED,
    ));
    rows.push((
        "50 with length 3",
        frame_of(&with_opts(&[53, 1, 1, 50, 3, 10, 0, 0, 255])),
        MALFORMED,
    ));
    rows.push((
        "93 with length 1",
        frame_of(&with_opts(&[53, 1, 1, 93, 1, 0, 255])),
        MALFORMED,
    ));
    rows.push((
        "53 twice",
        frame_of(&with_opts(&[53, 1, 1, 53, 1, 1, 255])),
        PASSED_OTHER,
    ));
    rows.push((
        "option overload 52",
        frame_of(&with_opts(&[53, 1, 1, 52, 1, 3, 255])),
        PASSED_OTHER,
    ));
    rows.push((
        "relay agent information 82",
        frame_of(&with_opts(&[53, 1, 1, 82, 3, 1, 1, 7, 255])),
        PASSED_OTHER,
    ));
    rows.push((
        "unknown option 200",
        frame_of(&with_opts(&[53, 1, 1, 200, 1, 0, 255])),
        PASSED_OTHER,
    ));
    rows.push((
        "hostname not ASCII",
        frame_of(&with_opts(&[53, 1, 1, 12, 3, b'n', 0xc3, 0xa9, 255])),
        PASSED_OTHER,
    ));
    rows.push((
        "hostname ASCII",
        frame_of(&with_opts(&[53, 1, 1, 12, 3, b'n', b'o', b'd', 255])),
        ANSWERED,
    ));
    rows.push((
        "93 with two architectures",
        frame_of(&with_opts(&[53, 1, 1, 93, 4, 0, 7, 0, 0, 255])),
        PASSED_OTHER,
    ));
    let mut arch_vendor = vec![53, 1, 1, 60, 20];
    arch_vendor.extend_from_slice(b"PXEClient:Arch:00007");
    arch_vendor.push(255);
    rows.push((
        "PXEClient:Arch: vendor class without 93",
        frame_of(&with_opts(&arch_vendor)),
        PASSED_OTHER,
    ));
    let mut plain_pxe = vec![53, 1, 1, 60, 9];
    plain_pxe.extend_from_slice(b"PXEClient");
    plain_pxe.push(255);
    rows.push((
        "bare PXEClient vendor class (old ROM)",
        frame_of(&with_opts(&plain_pxe)),
        ANSWERED,
    ));
    rows.push((
        "user class RFC 3004 iPXE",
        frame_of(&with_opts(&[
            53, 1, 1, 77, 5, 4, b'i', b'P', b'X', b'E', 255,
        ])),
        ANSWERED,
    ));
    rows.push((
        "user class of two entries",
        frame_of(&with_opts(&[
            53, 1, 1, 77, 6, 1, b'a', 3, b'x', b'y', b'z', 255,
        ])),
        PASSED_OTHER,
    ));
    rows.push((
        "97 with length 0",
        frame_of(&with_opts(&[53, 1, 1, 97, 0, 255])),
        PASSED_OTHER,
    ));
    let mut long97 = vec![53, 1, 1, 97, 65];
    long97.extend_from_slice(&[7; 65]);
    long97.push(255);
    rows.push((
        "97 with 65 bytes",
        frame_of(&with_opts(&long97)),
        PASSED_OTHER,
    ));
    rows.push((
        "pad bytes between options",
        frame_of(&with_opts(&[0, 0, 53, 1, 1, 0, 0, 0, 255])),
        ANSWERED,
    ));
    rows.push((
        "smallest request: 53 and END (the reply must grow the frame)",
        frame_of(&with_opts(&[53, 1, 1, 255])),
        ANSWERED,
    ));
    rows.push((
        "max message size 1500",
        frame_of(&with_opts(&[53, 1, 1, 57, 2, 5, 220, 255])),
        ANSWERED,
    ));
    rows.push((
        "INFORM",
        frame_of(&with_opts(&[53, 1, 8, 255])),
        PASSED_OTHER,
    ));
    rows.push((
        "message type 18",
        frame_of(&with_opts(&[53, 1, 18, 255])),
        PASSED_OTHER,
    ));
    rows.push((
        "no option 53 (BOOTP)",
        frame_of(&with_opts(&[61, 2, 1, 2, 255])),
        PASSED_OTHER,
    ));
    rows.push((
        "unknown MAC",
        discover("bios", UNKNOWN).frame(),
        PASSED_UNKNOWN,
    ));
    let mut other_mac = d.clone();
    other_mac.dst_mac = Mac([2, 9, 9, 9, 9, 9]);
    rows.push(("to another host's MAC", other_mac.frame(), PASSED_OTHER));
    let mut other_ip = d.clone();
    other_ip.dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 67);
    rows.push(("to another address", other_ip.frame(), PASSED_OTHER));
    let mut pxe = selecting("bios", CN1, Ipv4Addr::new(10, 0, 0, 5), SERVER)
        .unicast_from(Ipv4Addr::new(10, 0, 0, 5));
    pxe.dst = SocketAddrV4::new(SERVER, 4011);
    rows.push(("boot server (4011) REQUEST", pxe.frame(), PASSED_OTHER));
    let mut ipopt = good.clone();
    ipopt.splice(IP + 20..IP + 20, [1, 1, 1, 0]); // NOP NOP NOP EOL
    ipopt[IP] = 0x46;
    let tot = u16::from_be_bytes([ipopt[IP + 2], ipopt[IP + 3]]) + 4;
    ipopt[IP + 2..IP + 4].copy_from_slice(&tot.to_be_bytes());
    fix_ip(&mut ipopt);
    rows.push(("IPv4 options", ipopt, PASSED_OTHER));
    let mut frag = good.clone();
    frag[IP + 6] = 0x20; // MF
    fix_ip(&mut frag);
    rows.push(("first fragment", frag, PASSED_OTHER));
    let mut later = good.clone();
    later[IP + 6..IP + 8].copy_from_slice(&[0, 10]);
    fix_ip(&mut later);
    rows.push(("later fragment", later, NOT_DHCP));
    let mut tagged = discover("bios", CN6_VLAN);
    tagged.vlan = Some(VLAN);
    let mut prio = tagged.frame();
    prio[14] |= 0xa0; // priority 5: the slow path answers with priority 0
    rows.push(("VLAN tag with priority", prio, ANSWERED));
    let mut qinq = tagged.frame();
    qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
    rows.push(("802.1ad outer tag", qinq, NOT_DHCP));
    let mut edited_opts = d.clone();
    edited_opts.opts.push((12, b"renamed".to_vec()));
    let mut f = edited_opts.frame();
    f[PAY + 4] ^= 1; // change the xid, then fix the checksum: a different, valid request
    fix_udp(&mut f);
    rows.push(("edited and re-checksummed", f, ANSWERED));
    rows
}

#[test]
fn xdp_packet_table() {
    if netns::need_root() {
        return;
    }
    let mut lab = Lab::new();
    let stats = lab.fp.stats();
    let rows = rows();
    for (name, frame, want) in &rows {
        let before = stats.counters();
        let rotation = lab.rotation();
        let slow = lab.slow_path(frame, rotation);
        let out = lab.run(frame);
        let d = stats.counters().since(&before);
        let got = [
            (counter::ANSWERED, d.answered),
            (counter::NAK, d.nak),
            (counter::PASSED_UNKNOWN, d.passed_unknown),
            (counter::PASSED_OTHER, d.passed_other),
            (counter::PASSED_NO_ROOM, d.passed_no_room),
            (counter::MALFORMED, d.malformed),
            (counter::NOT_DHCP, d.not_dhcp),
        ];
        assert_eq!(d.frames(), 1, "{name}: counted once");
        let which = got.iter().find(|(_, n)| *n == 1).map(|(c, _)| *c).unwrap();
        assert_eq!(
            which,
            *want,
            "{name}: counter (reasons so far {:?})",
            stats.reasons()
        );
        if *want == counter::ANSWERED {
            assert_eq!(out.action, XDP_TX, "{name}");
            let slow = slow.unwrap_or_else(|| panic!("{name}: the slow path does not answer"));
            compare(name, &out.frame, &slow);
        } else {
            assert_eq!(out.action, XDP_PASS, "{name}");
            assert_eq!(
                &out.frame, frame,
                "{name}: a passed frame must be untouched"
            );
        }
    }
    eprintln!(
        "packet table: {} rows; pass reasons {:?}",
        rows.len(),
        stats.reasons()
    );
}
