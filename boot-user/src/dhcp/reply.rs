//! The one source of truth for what a DHCP reply says: [`decide`] (port 67) and
//! [`decide_boot_server`] (PXE boot server, port 4011) map a request and a [`Context`] to a
//! [`Decision`]. Pure: no I/O, no clock, no randomness (the DNS rotation is an input), so
//! the XDP fast path compiles its reply templates by calling the same functions.
//!
//! # Semantics (Grendel's: static addresses for known MACs only)
//! | request | answer |
//! | --- | --- |
//! | unknown MAC | silence (the server counts and lists it) |
//! | DISCOVER | OFFER of the host's address |
//! | REQUEST naming another server (option 54) | silence |
//! | REQUEST for the host's address (option 50, else ciaddr when renewing) | ACK |
//! | REQUEST for another address, or none | NAK with option 56 saying why |
//! | INFORM | ACK without yiaddr and lease times |
//! | RELEASE, DECLINE | silence, reported |
//! | BOOTP (no option 53), server messages, non-Ethernet | silence |
//! | `proxy_only`: DISCOVER from PXE/iPXE/HTTP firmware of a provisioned host | proxy OFFER: boot options, no address, option 60 |
//! | `proxy_only`: anything else | silence |
//! | port 4011: REQUEST/INFORM from PXE/iPXE firmware of a provisioned host | ACK with the boot file, option 60, unicast to the sender |
//!
//! # Options
//! Encoded in code order (dhcproto keeps options sorted), so a reply's bytes are a
//! function of its inputs. A lease carries 1, 3, 6, 12, 15, 26, 28, 51, 53, 54, 58, 59, 119
//! (each when it has a value); boot options ([`BootTarget`]) add BOOTP `siaddr` + `file`
//! and 66 for TFTP, `file` for URLs (option 67 instead when the name does not fit the
//! 128-byte field), 60 `HTTPClient` for UEFI HTTP boot, and the iPXE encapsulated option
//! 175 with 176 = 1 (no ProxyDHCP wait) for iPXE. 97 is echoed, and 82 (relay agent
//! information) in every reply to a relay that sent it. Option 60 `PXEClient` and
//! 43 only go in proxy offers and boot-server ACKs: UEFI PXE firmware that sees 60 in a
//! plain OFFER goes looking for a boot server (peers.md §6).
//!
//! # For the XDP template compiler
//! A reply depends on the request only through: `msg_type` and `kind` (which template),
//! `requested_ip` / `ciaddr` / `server_id` (ACK, NAK or silence, by comparison with the
//! host's and the server's address), `xid`, `flags`, `giaddr`, `chaddr` (copied into the
//! header), `ciaddr` (copied into ACKs), `machine_id` (option 97) and `relay_info`
//! (option 82), both echoed, and `max_message_size` (only when a reply is over 548
//! bytes; [`Reply::bytes`] tells a template's size). Everything else comes from the [`Context`]; templates use
//! `dns_rotation = 0`. [`destination`] gives the addressing, [`super::frame`] the bytes.
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{
    DhcpOption, DhcpOptions, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};

use super::boot::{boot_target, BootTarget, BootUrls};
use super::request::{ClientKind, Request, BROADCAST_FLAG};
use super::settings::{HostNet, Settings};
use super::wire;
use crate::inventory::{Host, Lookup, Mac};

/// Everything besides the request that a reply depends on.
pub struct Context<'a> {
    pub settings: &'a Settings,
    /// The server identifier: the address of the interface the request came in on.
    pub server_ip: Ipv4Addr,
    /// The inventory entry of the request's MAC, if known.
    pub host: Option<Lookup<'a>>,
    pub urls: &'a dyn BootUrls,
    /// DNS servers are rotated left by this much (callers count replies; templates use 0).
    pub dns_rotation: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    Offer,
    Ack,
    Nak,
    InformAck,
    ProxyOffer,
    BootAck,
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// ff:ff:ff:ff:ff:ff, 255.255.255.255:68.
    Broadcast,
    /// To a client without an address yet: its MAC (chaddr) and yiaddr, port 68.
    Unicast { mac: Mac, ip: Ipv4Addr },
    /// To the relay agent: giaddr, port 67.
    Relay(Ipv4Addr),
    /// To a configured client: ciaddr, port 68.
    Client(Ipv4Addr),
    /// To the sender of the request (PXE boot server replies).
    Peer(SocketAddrV4),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub message: Message,
    pub destination: Destination,
    /// The host answered (for logs and events).
    pub host: String,
    pub boot: BootTarget,
}

impl Reply {
    /// The DHCP payload.
    pub fn bytes(&self) -> Vec<u8> {
        wire::encode(&self.message)
    }
    /// One line for humans (`xboot host show --boot`, logs): type, address, mask, router,
    /// DNS, boot file, destination.
    pub fn summary(&self) -> String {
        let m = &self.message;
        let mut parts = vec![format!("{:?}", self.kind).to_uppercase()];
        if !m.yiaddr().is_unspecified() {
            parts.push(m.yiaddr().to_string());
        }
        for (code, o) in m.opts().iter() {
            match o {
                DhcpOption::SubnetMask(v) => parts.push(format!("mask {v}")),
                DhcpOption::Router(v) => parts.push(format!("router {}", join(v))),
                DhcpOption::DomainNameServer(v) => parts.push(format!("dns {}", join(v))),
                DhcpOption::AddressLeaseTime(v) => parts.push(format!("lease {v}s")),
                DhcpOption::Message(v) => parts.push(format!("message {v:?}")),
                DhcpOption::ClassIdentifier(v) => {
                    parts.push(format!("class {}", String::from_utf8_lossy(v)))
                }
                DhcpOption::BootfileName(v) => {
                    parts.push(format!("bootfile {}", String::from_utf8_lossy(v)))
                }
                _ if u8::from(*code) == 175 => parts.push("ipxe no-proxy-wait".into()),
                _ => {}
            }
        }
        if let Some(Ok(f)) = m.fname_str() {
            parts.push(format!("file {}", f.trim_end_matches('\0')));
        }
        if !m.siaddr().is_unspecified() {
            parts.push(format!("next-server {}", m.siaddr()));
        }
        parts.push(format!("to {:?}", self.destination));
        parts.join(", ")
    }

    /// UDP source port: the boot server answers from 4011, the rest from 67.
    pub fn src_port(&self) -> u16 {
        if self.kind == ReplyKind::BootAck {
            PXE_PORT
        } else {
            SERVER_PORT
        }
    }
}

fn join(v: &[Ipv4Addr]) -> String {
    v.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
pub const PXE_PORT: u16 = 4011;

/// Why no reply is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Silence {
    /// BOOTP without option 53, or a BOOTREPLY.
    NotDhcp,
    NotEthernet,
    /// A message type xboot never answers (OFFER, ACK, lease queries ...).
    Ignored(MessageType),
    UnknownMac,
    /// The host's boot interface has no address in the inventory.
    NoAddress {
        host: String,
    },
    /// The client chose another server (option 54).
    ForeignServer {
        host: String,
        server: Ipv4Addr,
    },
    Released {
        host: String,
        ip: Ipv4Addr,
    },
    Declined {
        host: String,
        ip: Option<Ipv4Addr>,
    },
    /// proxyDHCP / boot server: the client is no network-boot firmware, or the host is not
    /// provisioned, or the message type is not one they answer.
    NotNetboot {
        host: String,
    },
    /// Relay fields that make no sense (`boot_common::relay_ok`): giaddr loopback,
    /// multicast, broadcast, 0.0.0.0/8 or the server itself, hops without a giaddr, or
    /// more than `boot_common::MAX_RELAY_HOPS` hops. The XDP program passes these up.
    BadRelay {
        giaddr: Ipv4Addr,
        hops: u8,
    },
    /// The reply would exceed what the client accepts even without optional options.
    TooLarge {
        host: String,
        size: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Reply(Box<Reply>),
    Silent(Silence),
}

/// Answers a request received on the DHCP port (see the module table).
pub fn decide(req: &Request, ctx: &Context<'_>) -> Decision {
    use MessageType as T;
    let msg_type = match common_checks(req) {
        Ok(t) => t,
        Err(s) => return Decision::Silent(s),
    };
    if !matches!(
        msg_type,
        T::Discover | T::Request | T::Inform | T::Release | T::Decline
    ) {
        return Decision::Silent(Silence::Ignored(msg_type));
    }
    if !boot_common::relay_ok(req.giaddr.octets(), req.hops, ctx.server_ip.octets()) {
        return Decision::Silent(Silence::BadRelay {
            giaddr: req.giaddr,
            hops: req.hops,
        });
    }
    let Some(found) = ctx.host else {
        return Decision::Silent(Silence::UnknownMac);
    };
    let name = found.host.name.clone();
    if ctx.settings.proxy_only {
        return match msg_type {
            T::Discover => proxy_offer(req, ctx, found.host),
            _ => Decision::Silent(Silence::NotNetboot { host: name }),
        };
    }
    let Some(net) = ctx.settings.host_net(found.nic) else {
        return Decision::Silent(Silence::NoAddress { host: name });
    };
    match msg_type {
        T::Discover => lease_reply(req, ctx, found.host, &net, ReplyKind::Offer),
        T::Request => on_request(req, ctx, found.host, &net),
        T::Inform => lease_reply(req, ctx, found.host, &net, ReplyKind::InformAck),
        T::Release => Decision::Silent(Silence::Released {
            host: name,
            ip: req.ciaddr,
        }),
        _ => Decision::Silent(Silence::Declined {
            host: name,
            ip: req.requested_ip,
        }),
    }
}

/// Answers a request received by the PXE boot server (UDP 4011) from `sender`.
pub fn decide_boot_server(req: &Request, ctx: &Context<'_>, sender: SocketAddrV4) -> Decision {
    let msg_type = match common_checks(req) {
        Ok(t) => t,
        Err(s) => return Decision::Silent(s),
    };
    if !matches!(msg_type, MessageType::Request | MessageType::Inform) {
        return Decision::Silent(Silence::Ignored(msg_type));
    }
    let Some(found) = ctx.host else {
        return Decision::Silent(Silence::UnknownMac);
    };
    let host = found.host;
    let boot = match netboot_target(req, ctx, host) {
        Ok(b) => b,
        Err(silence) => return Decision::Silent(silence),
    };
    let mut m = base(req, ctx, MessageType::Ack);
    m.set_ciaddr(req.ciaddr);
    pxe_vendor_options(req, m.opts_mut(), true, req.pxe_boot_item.as_deref());
    boot_options(&mut m, &boot, ctx.server_ip);
    echo_machine_id(req, m.opts_mut());
    finish(
        req,
        m,
        Destination::Peer(sender),
        ReplyKind::BootAck,
        host,
        boot,
    )
}

fn common_checks(req: &Request) -> Result<MessageType, Silence> {
    if !req.ethernet {
        return Err(Silence::NotEthernet);
    }
    match req.msg_type {
        Some(t) if req.is_request => Ok(t),
        _ => Err(Silence::NotDhcp),
    }
}

fn on_request(req: &Request, ctx: &Context<'_>, host: &Host, net: &HostNet) -> Decision {
    if let Some(server) = req.server_id.filter(|s| *s != ctx.server_ip) {
        return Decision::Silent(Silence::ForeignServer {
            host: host.name.clone(),
            server,
        });
    }
    let asked = req
        .requested_ip
        .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr));
    match asked {
        Some(ip) if ip == net.addr => lease_reply(req, ctx, host, net, ReplyKind::Ack),
        Some(ip) => nak(
            req,
            ctx,
            host,
            format!("{ip} is not the address of {} ({})", host.name, net.addr),
        ),
        None => nak(req, ctx, host, "no requested address".into()),
    }
}

/// OFFER, ACK or INFORM-ACK carrying the host's network parameters.
fn lease_reply(
    req: &Request,
    ctx: &Context<'_>,
    host: &Host,
    net: &HostNet,
    kind: ReplyKind,
) -> Decision {
    let msg_type = if kind == ReplyKind::Offer {
        MessageType::Offer
    } else {
        MessageType::Ack
    };
    let mut m = base(req, ctx, msg_type);
    let inform = kind == ReplyKind::InformAck;
    if kind == ReplyKind::Ack || inform {
        m.set_ciaddr(req.ciaddr);
    }
    if !inform {
        m.set_yiaddr(net.addr);
    }
    lease_options(m.opts_mut(), host, net, ctx, !inform);
    let boot = if inform {
        BootTarget::LeaseOnly
    } else {
        host_boot_target(req, ctx, host)
    };
    boot_options(&mut m, &boot, ctx.server_ip);
    echo_machine_id(req, m.opts_mut());
    let yiaddr = if inform {
        Ipv4Addr::UNSPECIFIED
    } else {
        net.addr
    };
    finish(req, m, destination(req, kind, yiaddr), kind, host, boot)
}

fn nak(req: &Request, ctx: &Context<'_>, host: &Host, why: String) -> Decision {
    let mut m = base(req, ctx, MessageType::Nak);
    if !req.giaddr.is_unspecified() {
        // RFC 2131 §4.3.2: a relayed NAK asks the relay to broadcast it.
        m.set_flags((req.flags | BROADCAST_FLAG).into());
    }
    m.opts_mut().insert(DhcpOption::Message(why));
    let dest = destination(req, ReplyKind::Nak, Ipv4Addr::UNSPECIFIED);
    finish(req, m, dest, ReplyKind::Nak, host, BootTarget::LeaseOnly)
}

/// What this client kind of `host` boots (`boot_target` with the context's settings).
/// A BMC interface or a bond gets a lease only: a BMC boots nothing from here, and
/// firmware boots from a member NIC, not from a bond.
fn host_boot_target(req: &Request, ctx: &Context<'_>, host: &Host) -> BootTarget {
    if ctx.host.is_some_and(|found| found.nic.bmc || found.bond) {
        return BootTarget::LeaseOnly;
    }
    boot_target(
        req.kind,
        host,
        req.mac,
        &ctx.settings.boot_files,
        ctx.urls,
        ctx.server_ip,
    )
}

/// The boot target, for the answers that exist only to boot from the network (boot
/// server, proxyDHCP): a lease-only host gets silence.
fn netboot_target(req: &Request, ctx: &Context<'_>, host: &Host) -> Result<BootTarget, Silence> {
    match host_boot_target(req, ctx, host) {
        BootTarget::LeaseOnly => Err(Silence::NotNetboot {
            host: host.name.clone(),
        }),
        boot => Ok(boot),
    }
}

/// proxyDHCP OFFER: boot options for network-boot firmware, no address.
fn proxy_offer(req: &Request, ctx: &Context<'_>, host: &Host) -> Decision {
    let boot = match netboot_target(req, ctx, host) {
        Ok(b) => b,
        Err(silence) => return Decision::Silent(silence),
    };
    let mut m = base(req, ctx, MessageType::Offer);
    // BIOS PXE: discovery control 8 = boot the file of this offer, no boot server
    // discovery. UEFI firmware ignores proxy offers that bypass discovery, so it gets none
    // and asks the boot server on 4011 (Grendel and edk2's "BINL" offer).
    pxe_vendor_options(req, m.opts_mut(), req.kind == ClientKind::BiosPxe, None);
    boot_options(&mut m, &boot, ctx.server_ip);
    echo_machine_id(req, m.opts_mut());
    let dest = destination(req, ReplyKind::ProxyOffer, Ipv4Addr::UNSPECIFIED);
    finish(req, m, dest, ReplyKind::ProxyOffer, host, boot)
}

/// RFC 2131 §4.1, in order: relay; NAK broadcast; ciaddr; broadcast flag or no address;
/// unicast to chaddr/yiaddr.
pub fn destination(req: &Request, kind: ReplyKind, yiaddr: Ipv4Addr) -> Destination {
    if !req.giaddr.is_unspecified() {
        Destination::Relay(req.giaddr)
    } else if kind == ReplyKind::Nak {
        Destination::Broadcast
    } else if !req.ciaddr.is_unspecified() {
        Destination::Client(req.ciaddr)
    } else if req.broadcast() || yiaddr.is_unspecified() {
        Destination::Broadcast
    } else {
        Destination::Unicast {
            mac: req.mac,
            ip: yiaddr,
        }
    }
}

/// A BOOTREPLY with the request's xid, flags, giaddr and chaddr, options 53 and 54.
fn base(req: &Request, ctx: &Context<'_>, msg_type: MessageType) -> Message {
    let mut m = Message::new_with_id(
        req.xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr,
        &req.mac.0,
    );
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.flags.into());
    m.opts_mut().insert(DhcpOption::MessageType(msg_type));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(ctx.server_ip));
    if let Some(info) = &req.relay_info {
        // RFC 3046 §2.2: the relay agent information goes back to the relay as it came.
        m.opts_mut()
            .insert(DhcpOption::RelayAgentInformation(info.clone()));
    }
    m
}

fn lease_options(o: &mut DhcpOptions, host: &Host, net: &HostNet, ctx: &Context<'_>, lease: bool) {
    o.insert(DhcpOption::SubnetMask(net.mask));
    if let Some(r) = net.router {
        o.insert(DhcpOption::Router(vec![r]));
    }
    if !net.dns.is_empty() {
        let mut dns = net.dns.clone();
        let by = ctx.dns_rotation % dns.len();
        dns.rotate_left(by);
        o.insert(DhcpOption::DomainNameServer(dns));
    }
    if !host.name.is_empty() {
        o.insert(DhcpOption::Hostname(host.name.clone()));
    }
    if let Some(d) = &net.domain {
        o.insert(DhcpOption::DomainName(d.clone()));
    }
    if let Some(mtu) = net.mtu {
        o.insert(DhcpOption::InterfaceMtu(mtu));
    }
    if let Some(b) = net.broadcast {
        o.insert(DhcpOption::BroadcastAddr(b));
    }
    let names: Vec<_> = net.domain_search.iter().filter_map(|d| fqdn(d)).collect();
    if !names.is_empty() {
        o.insert(DhcpOption::DomainSearch(names));
    }
    if lease {
        let secs = ctx.settings.lease_secs;
        o.insert(DhcpOption::AddressLeaseTime(secs));
        o.insert(DhcpOption::Renewal(secs / 2));
        o.insert(DhcpOption::Rebinding((secs as u64 * 7 / 8) as u32));
    }
}

/// A search domain as an absolute name (so a decoded reply equals the one built).
fn fqdn(d: &str) -> Option<dhcproto::Name> {
    let mut n = dhcproto::Name::from_ascii(d).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// BOOTP `file` when the name fits its 128 bytes (NUL included), option 67 otherwise.
fn put_file(m: &mut Message, name: &str) {
    if name.len() < 128 {
        // With its NUL, as dhcproto decodes it: a parsed reply equals the one built.
        m.set_fname(&[name.as_bytes(), &[0]].concat());
    } else {
        m.opts_mut()
            .insert(DhcpOption::BootfileName(name.as_bytes().to_vec()));
    }
}

fn boot_options(m: &mut Message, boot: &BootTarget, server: Ipv4Addr) {
    match boot {
        BootTarget::LeaseOnly => {}
        BootTarget::Tftp { file } => {
            m.set_siaddr(server);
            put_file(m, file);
            m.opts_mut()
                .insert(DhcpOption::TFTPServerName(server.to_string().into_bytes()));
        }
        BootTarget::HttpFirmware { url } => {
            put_file(m, url);
            m.opts_mut()
                .insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
        }
        BootTarget::Script { url } => {
            put_file(m, url);
            // iPXE encapsulated options: 176 (no ProxyDHCP wait) = 1.
            let opt = UnknownOption::new(OptionCode::Unknown(175), vec![176, 1, 1]);
            m.opts_mut().insert(DhcpOption::Unknown(opt));
        }
    }
}

/// Option 60 `PXEClient` (`HTTPClient` clients get theirs from [`boot_options`]) and, when
/// `discovery_control`, option 43 holding PXE discovery control 8 (boot the file named
/// here) and the boot item (71) of a boot-server request.
fn pxe_vendor_options(
    req: &Request,
    o: &mut DhcpOptions,
    discovery_control: bool,
    boot_item: Option<&[u8]>,
) {
    if !req.kind.is_http_boot() {
        o.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    }
    if !discovery_control {
        return;
    }
    let mut v = vec![6, 1, 8];
    if let Some(item) = boot_item.filter(|i| i.len() <= 250) {
        v.extend_from_slice(&[71, item.len() as u8]);
        v.extend_from_slice(item);
    }
    v.push(255);
    o.insert(DhcpOption::VendorExtensions(v));
}

fn echo_machine_id(req: &Request, o: &mut DhcpOptions) {
    if let Some(id) = &req.machine_id {
        o.insert(DhcpOption::ClientMachineIdentifier(id.clone()));
    }
}

/// Options dropped, in this order, when a reply is over the client's size limit.
const OPTIONAL: [OptionCode; 5] = [
    OptionCode::DomainSearch,
    OptionCode::DomainName,
    OptionCode::Hostname,
    OptionCode::BroadcastAddr,
    OptionCode::InterfaceMtu,
];

fn finish(
    req: &Request,
    mut message: Message,
    destination: Destination,
    kind: ReplyKind,
    host: &Host,
    boot: BootTarget,
) -> Decision {
    // RFC 2131 §2: 576-byte IP datagrams, unless option 57 allows more.
    let limit = req.max_message_size.unwrap_or(576).max(576) as usize - 28;
    let mut size = wire::encode(&message).len();
    for code in OPTIONAL {
        if size <= limit {
            break;
        }
        message.opts_mut().remove(code);
        size = wire::encode(&message).len();
    }
    if size > limit {
        return Decision::Silent(Silence::TooLarge {
            host: host.name.clone(),
            size,
        });
    }
    Decision::Reply(Box::new(Reply {
        kind,
        message,
        destination,
        host: host.name.clone(),
        boot,
    }))
}
