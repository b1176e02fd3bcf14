//! Checking a config: every problem found, each naming its key.
//!
//! Two passes, both pure. Types: serde stops at the first value of the wrong type, so when
//! the file does not deserialize each value is tried again alone ([`type_problems`]) and
//! every wrong one is named; the others are checked as below. Values ([`value_problems`]):
//! every key whose value `serve` would refuse (addresses, durations, CIDRs, DNS servers,
//! search domains, MTUs, BMC limits). The DHCP settings and listeners parse their values
//! with the functions of this module, so `check-config` and `serve` cannot disagree.
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::time::Duration;

use super::Config;
use crate::inventory::model::{parse_cidr, MTU_RANGE};

/// One thing wrong with a config, naming its key (`dhcp.subnets[0].mtu`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// `dhcp.lease_time`, seconds: from a minute to the longest finite DHCP lease
/// (0xffffffff means "infinite" in option 51).
pub const LEASE_SECS: RangeInclusive<u64> = 60..=0xffff_fffe;
/// `provision.token_ttl`, seconds: a minute to a year.
pub const TOKEN_TTL_SECS: RangeInclusive<u64> = 60..=31_536_000;
/// `bmc.timeout_ms`: 10 ms to a minute per attempt.
pub const BMC_TIMEOUT_MS: RangeInclusive<u64> = 10..=60_000;
/// `bmc.retries`: attempts per request, the first included (ipmitool's `-R`).
pub const BMC_RETRIES: RangeInclusive<u32> = 1..=10;
/// `bmc.concurrency`: BMC sessions in flight.
pub const BMC_CONCURRENCY: RangeInclusive<usize> = 1..=65_536;
/// `bmc.delay`: seconds of the power-on stagger window (0 = off); a day at most.
pub const BMC_DELAY: RangeInclusive<u64> = 0..=86_400;

/// Parses Go's duration syntax as grendel.toml uses it: `24h`, `90m`, `1h30m`, `45s`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 24h, 90m, 1h30m, 3600s)");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if (c == 'm' || c == 'u' || c == 'n') && chars.peek() == Some(&'s') {
            unit.extend(chars.next());
        }
        let v: f64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total += v * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("duration {s:?} is too long"))
}

fn in_range<T: PartialOrd + fmt::Display>(
    v: T,
    range: &RangeInclusive<T>,
    unit: &str,
) -> Result<T, String> {
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{v}{unit} is out of range ({}{unit} to {}{unit})",
            range.start(),
            range.end()
        ))
    }
}

/// `dhcp.lease_time`: a Go duration within [`LEASE_SECS`].
pub fn lease_time(s: &str) -> Result<Duration, String> {
    let d = parse_go_duration(s)?;
    in_range(d.as_secs(), &LEASE_SECS, " s")?;
    Ok(d)
}

/// An address:port the DHCP server binds: IPv4 only (DHCPv4 has no IPv6 transport).
pub fn ipv4_listen(s: &str) -> Result<SocketAddrV4, String> {
    match s.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) => Ok(a),
        Ok(SocketAddr::V6(_)) => Err(format!(
            "{s:?} is an IPv6 address: DHCP listens on IPv4 (e.g. 0.0.0.0:67)"
        )),
        Err(e) => Err(format!("{s:?} is not an address:port ({e})")),
    }
}

/// The items of a Grendel list string (`"10.0.0.53, 10.0.0.54"`): commas or spaces.
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split([',', ' ']).map(str::trim).filter(|x| !x.is_empty())
}

/// A DNS server handed to hosts: a unicast IPv4 address.
pub fn dns_server(s: &str) -> Result<Ipv4Addr, String> {
    let a: Ipv4Addr = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not an IPv4 address ({e})"))?;
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
        return Err(format!("{a} is not a unicast address"));
    }
    Ok(a)
}

/// A search domain (option 119) or domain name: RFC 1123 labels, one trailing dot allowed.
pub fn domain(s: &str) -> Result<String, String> {
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() {
        return Err(format!("{s:?} is not a domain name (empty)"));
    }
    crate::inventory::validate::check_hostname(name)
        .map_err(|why| format!("{s:?} is not a domain name ({why})"))?;
    dhcproto::Name::from_ascii(name).map_err(|e| format!("{s:?} is not a domain name ({e})"))?;
    Ok(name.to_string())
}

/// An MTU as Grendel writes it (a string; empty or 0 = unset), within [`MTU_RANGE`].
pub fn mtu(s: &str) -> Result<Option<u16>, String> {
    match s.trim() {
        "" | "0" => Ok(None),
        t => match t.parse::<u16>() {
            Ok(n) if MTU_RANGE.contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "{s:?} is not an MTU ({} to {}, or 0 for none)",
                MTU_RANGE.start(),
                MTU_RANGE.end()
            )),
        },
    }
}

/// A subnet's gateway: its address with the prefix of its subnet, not the subnet's network
/// or broadcast address.
pub fn gateway(s: &str) -> Result<ipnet::Ipv4Net, String> {
    let net = parse_cidr(s)?;
    if !s.contains('/') || net.prefix_len() == 0 || net.prefix_len() == 32 {
        return Err(format!(
            "{s:?}: give the router's address with the subnet's prefix (/1 to /31)"
        ));
    }
    if net.prefix_len() <= 30 && (net.addr() == net.network() || net.addr() == net.broadcast()) {
        return Err(format!(
            "{s:?} is the subnet's network or broadcast address, not a router's"
        ));
    }
    Ok(net)
}

/// `dns.ttl`, seconds: RFC 2181 caps a TTL at 2^31 - 1.
pub const DNS_TTL_SECS: RangeInclusive<u32> = 0..=0x7fff_ffff;
/// `dns.forward_timeout_ms`: per upstream attempt.
pub const DNS_FORWARD_TIMEOUT_MS: RangeInclusive<u64> = 10..=30_000;
/// `dns.max_udp_payload`: the least every DNS client takes (RFC 1035) to the largest
/// EDNS buffer worth sending unfragmented on common links.
pub const DNS_UDP_PAYLOAD: RangeInclusive<u16> = 512..=4096;

/// `dns.listen`: an address:port (IPv4 or IPv6), or empty for no DNS server.
pub fn dns_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim()
        .parse()
        .map(Some)
        .map_err(|e| format!("{s:?} is not an address:port ({e})"))
}

/// One `dns.forward` upstream: `1.1.1.1:53`, `1.1.1.1`, `[2606:4700::1111]:53` or
/// `2606:4700::1111` (port 53 when none is given).
pub fn dns_upstream(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let addr = t.parse::<SocketAddr>().or_else(|_| {
        t.parse::<std::net::IpAddr>()
            .map(|ip| SocketAddr::new(ip, 53))
            .map_err(|_| format!("{s:?} is not an address or address:port"))
    })?;
    if addr.ip().is_unspecified() || addr.ip().is_multicast() || addr.port() == 0 {
        return Err(format!("{s:?} is not a unicast address and port"));
    }
    Ok(addr)
}

fn dns_problems(cfg: &super::DnsConfig, check: &mut impl FnMut(&str, Result<(), String>)) {
    check("dns.listen", dns_listen(&cfg.listen).map(drop));
    check("dns.ttl", in_range(cfg.ttl, &DNS_TTL_SECS, " s").map(drop));
    for (i, s) in cfg.forward.items().into_iter().enumerate() {
        check(&format!("dns.forward[{i}]"), dns_upstream(s).map(drop));
    }
    for (i, z) in cfg.zones.iter().enumerate() {
        check(&format!("dns.zones[{i}]"), domain(z).map(drop));
    }
    if let Some(ns) = &cfg.nameserver {
        check("dns.nameserver", domain(ns).map(drop));
    }
    check(
        "dns.max_tcp_connections",
        in_range(cfg.max_tcp_connections, &(1..=65_536), "").map(drop),
    );
    check(
        "dns.max_forwarded",
        in_range(cfg.max_forwarded, &(1..=65_536), "").map(drop),
    );
    check(
        "dns.forward_timeout_ms",
        in_range(cfg.forward_timeout_ms, &DNS_FORWARD_TIMEOUT_MS, " ms").map(drop),
    );
    check(
        "dns.max_udp_payload",
        in_range(cfg.max_udp_payload, &DNS_UDP_PAYLOAD, "").map(drop),
    );
}

/// A segment VIP is served by the HTTP listeners: one bound to one address never sees
/// a request sent to the VIP.
fn vip_listeners(p: &super::ProvisionConfig, check: &mut impl FnMut(&str, Result<(), String>)) {
    let tls = p.tls_listen.as_deref().filter(|a| !a.is_empty());
    for (key, addr) in [
        ("provision.listen", Some(p.listen.as_str())),
        ("provision.tls_listen", tls),
    ] {
        let Some(a) = addr.and_then(|a| a.parse::<SocketAddr>().ok()) else {
            continue;
        };
        if !a.ip().is_unspecified() {
            check(
                key,
                Err(format!(
                    "binds {} only, so requests to a cluster.segment vip never reach it: \
                     listen on 0.0.0.0:{} (or leave out serve --listen)",
                    a.ip(),
                    a.port()
                )),
            );
        }
    }
}

/// Every value `serve` would refuse, each naming its key.
pub fn value_problems(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut check = |key: &str, r: Result<(), String>| {
        if let Err(message) = r {
            out.push(Problem {
                key: key.to_string(),
                message,
            });
        }
    };
    if let Some(c) = &cfg.cluster {
        c.problems(&mut check);
        if c.has_vip() {
            vip_listeners(&cfg.provision, &mut check);
        }
    }
    let d = &cfg.dhcp;
    check("dhcp.lease_time", lease_time(&d.lease_time).map(drop));
    for (key, addr) in [
        ("tftp.listen", &cfg.tftp.listen),
        ("provision.listen", &cfg.provision.listen),
    ] {
        check(
            key,
            addr.parse::<SocketAddr>()
                .map(drop)
                .map_err(|e| format!("{addr:?} is not an address:port ({e})")),
        );
    }
    check("dhcp.listen", ipv4_listen(&d.listen).map(drop));
    if d.mode_explicit && d.mode == super::DhcpMode::Xdp && cfg.interface.names().is_empty() {
        check(
            "dhcp.mode",
            Err(
                "\"xdp\" needs `interface` (the NICs to attach the program to); without \
                 dhcp.mode, xboot runs DHCP from userspace with a warning"
                    .into(),
            ),
        );
    }
    check("pxe.listen", ipv4_listen(&cfg.pxe.listen).map(drop));
    for (i, s) in d.dns_servers.iter().enumerate() {
        check(&format!("dhcp.dns_servers[{i}]"), dns_server(s).map(drop));
    }
    for (i, s) in d.domain_search.iter().enumerate() {
        check(&format!("dhcp.domain_search[{i}]"), domain(s).map(drop));
    }
    check("dhcp.mtu", mtu(&d.mtu.to_string()).map(drop));
    if d.xdp_max_hosts > crate::xdp::loader::MAX_HOSTS {
        check(
            "dhcp.xdp_max_hosts",
            Err(format!(
                "{} is more than the {} boot interfaces the XDP maps can be sized for \
                 (about 2 KiB of kernel memory each, preallocated)",
                d.xdp_max_hosts,
                crate::xdp::loader::MAX_HOSTS
            )),
        );
    }
    if let Some(r) = d.router {
        check("dhcp.router", dns_server(&r.to_string()).map(drop));
    }
    if let Some(r) = d.gateway {
        check("dhcp.gateway", dns_server(&r.to_string()).map(drop));
    }
    for (i, s) in d.subnets.iter().enumerate() {
        let key = |k: &str| format!("dhcp.subnets[{i}].{k}");
        check(&key("gateway"), gateway(&s.gateway).map(drop));
        for item in split_list(&s.dns) {
            check(&key("dns"), dns_server(item).map(drop));
        }
        for item in split_list(&s.domain_search) {
            check(&key("domainSearch"), domain(item).map(drop));
        }
        check(&key("mtu"), mtu(&s.mtu).map(drop));
    }
    if let Err(errs) = crate::dhcp::options::OptionTable::from_config(d) {
        for (key, message) in errs {
            check(&key, Err(message));
        }
    }
    check(
        "provision.token_ttl",
        in_range(cfg.provision.token_ttl, &TOKEN_TTL_SECS, " s").map(drop),
    );
    if let Some(url) = cfg.provision.advertise_url.as_deref() {
        let scheme = url.split_once("://").map(|(s, rest)| (s, rest.is_empty()));
        if !matches!(scheme, Some(("http" | "https", false))) && !url.is_empty() {
            check(
                "provision.advertise_url",
                Err(format!("{url:?} is not an http:// or https:// URL")),
            );
        }
    }
    for (section, cert, key) in [
        ("provision", &cfg.provision.cert, &cfg.provision.key),
        ("api", &cfg.api.cert, &cfg.api.key),
    ] {
        let set =
            |p: &Option<std::path::PathBuf>| p.as_ref().is_some_and(|p| !p.as_os_str().is_empty());
        match (set(cert), set(key)) {
            (true, false) => check(
                &format!("{section}.cert"),
                Err(format!(
                    "needs {section}.key (the certificate's private key)"
                )),
            ),
            (false, true) => check(
                &format!("{section}.key"),
                Err(format!(
                    "needs {section}.cert (the certificate it is the key of)"
                )),
            ),
            _ => {}
        }
    }
    let p = &cfg.provision;
    if let Some(a) = p.tls_listen.as_deref().filter(|a| !a.is_empty()) {
        if p.tls_files().is_none() {
            check(
                "provision.tls_listen",
                Err("HTTPS needs provision.cert and provision.key".into()),
            );
        }
        check(
            "provision.tls_listen",
            a.parse::<SocketAddr>()
                .map(drop)
                .map_err(|e| format!("{a:?} is not an address:port ({e})")),
        );
    }
    if let Some(h) = p.url_hostname() {
        check(
            "provision.hostname",
            crate::inventory::validate::check_hostname(h).map_err(|e| format!("{h:?}: {e}")),
        );
    }
    // `api.listen` without `api.token` needs an API account or token in the store:
    // `serve` checks that (it holds the store).
    for (key, n) in [
        ("provision.max_connections", cfg.provision.max_connections),
        ("api.max_connections", cfg.api.max_connections),
    ] {
        if n == Some(0) {
            check(key, Err("must be at least 1".into()));
        }
    }
    for (key, secs) in [
        (
            "provision.header_timeout_secs",
            cfg.provision.header_timeout_secs,
        ),
        (
            "provision.idle_timeout_secs",
            cfg.provision.idle_timeout_secs,
        ),
        ("api.header_timeout_secs", cfg.api.header_timeout_secs),
        ("api.idle_timeout_secs", cfg.api.idle_timeout_secs),
    ] {
        if secs == 0 {
            check(
                key,
                Err(
                    "must be at least 1 (a server without it can be held by silent clients)".into(),
                ),
            );
        }
    }
    let t = &cfg.tftp;
    check(
        "tftp.max_transfers",
        in_range(t.max_transfers, &(1..=1_000_000), "").map(drop),
    );
    check(
        "tftp.max_per_client",
        in_range(t.max_per_client, &(1..=65_536), "").map(drop),
    );
    check(
        "tftp.max_transfer_secs",
        in_range(t.max_transfer_secs, &(1..=86_400), " s").map(drop),
    );
    if let Some(dns) = &cfg.dns {
        dns_problems(dns, &mut check);
    }
    let b = &cfg.bmc;
    if !matches!(b.protocol.as_str(), "ipmi" | "redfish") {
        check(
            "bmc.protocol",
            Err(format!("{:?}: expected ipmi or redfish", b.protocol)),
        );
    }
    check(
        "bmc.timeout_ms",
        in_range(b.timeout_ms, &BMC_TIMEOUT_MS, " ms").map(drop),
    );
    check(
        "bmc.retries",
        in_range(b.retries, &BMC_RETRIES, "").map(drop),
    );
    check(
        "bmc.concurrency",
        in_range(b.concurrency, &BMC_CONCURRENCY, "").map(drop),
    );
    check("bmc.delay", in_range(b.delay, &BMC_DELAY, "").map(drop));
    out
}

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn path_text(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) if s.is_empty() => s.push_str(k),
            Step::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The document holding only `v`, at `path`.
fn alone(path: &[Step], v: &toml::Value) -> toml::Value {
    path.iter().rev().fold(v.clone(), |v, step| match step {
        Step::Key(k) => toml::Value::Table([(k.clone(), v)].into_iter().collect()),
        Step::Index(_) => toml::Value::Array(vec![v]),
    })
}

/// Why the value at `path` does not deserialize on its own, if it does not.
fn refused(path: &[Step], v: &toml::Value) -> Option<String> {
    let e = alone(path, v).try_into::<Config>().err()?;
    Some(e.message().trim().to_string())
}

/// Finds the deepest values that do not deserialize, under `path`.
fn walk(path: &mut Vec<Step>, v: &toml::Value, out: &mut Vec<(Vec<Step>, String)>) {
    let Some(message) = refused(path, v) else {
        return;
    };
    let before = out.len();
    match v {
        toml::Value::Table(t) => {
            for (k, child) in t {
                path.push(Step::Key(k.clone()));
                walk(path, child, out);
                path.pop();
            }
        }
        toml::Value::Array(a) if a.iter().any(toml::Value::is_table) => {
            for (i, child) in a.iter().enumerate() {
                path.push(Step::Index(i));
                walk(path, child, out);
                path.pop();
            }
        }
        _ => {}
    }
    if out.len() == before {
        out.push((path.clone(), message));
    }
}

/// Takes the value at `path` out of `doc` (an array element becomes an empty table, so
/// that the indexes of the others stay what the problems say).
fn remove(doc: &mut toml::Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut v = doc;
    for step in parents {
        let next = match (step, v) {
            (Step::Key(k), toml::Value::Table(t)) => t.get_mut(k),
            (Step::Index(i), toml::Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return };
        v = next;
    }
    match (last, v) {
        (Step::Key(k), toml::Value::Table(t)) => {
            t.remove(k);
        }
        (Step::Index(i), toml::Value::Array(a)) => {
            if let Some(e) = a.get_mut(*i) {
                *e = toml::Value::Table(toml::Table::new());
            }
        }
        _ => {}
    }
}

/// Every value of `doc` of the wrong type, and the document without them (which then
/// deserializes, so the rest can be checked too).
pub fn type_problems(doc: &toml::Value) -> (Vec<Problem>, toml::Value) {
    let mut found = Vec::new();
    walk(&mut Vec::new(), doc, &mut found);
    let mut rest = doc.clone();
    for (path, _) in &found {
        remove(&mut rest, path);
    }
    let problems = found
        .into_iter()
        .map(|(path, message)| Problem {
            key: if path.is_empty() {
                "(file)".into()
            } else {
                path_text(&path)
            },
            message,
        })
        .collect();
    (problems, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_parsers() {
        assert_eq!(mtu("9000"), Ok(Some(9000)));
        assert_eq!(mtu(" 0 "), Ok(None));
        for bad in ["10", "68", "575", "9217", "big", "-1"] {
            assert!(mtu(bad).is_err(), "mtu {bad}");
        }
        assert!(domain("example.com.").is_ok());
        for bad in [
            "-bad.com",
            "a..b",
            "bad domain",
            "under_score.org",
            ".",
            "x".repeat(70).as_str(),
        ] {
            assert!(domain(bad).is_err(), "domain {bad}");
        }
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "dns",
            "10.0.0.256",
        ] {
            assert!(dns_server(bad).is_err(), "dns {bad}");
        }
        assert!(ipv4_listen("[::]:67").unwrap_err().contains("IPv6"));
        for bad in [
            "10.0.0.0/24",
            "10.0.0.255/24",
            "10.0.0.1",
            "10.0.0.1/0",
            "10.0.0.1/32",
        ] {
            assert!(gateway(bad).is_err(), "gateway {bad}");
        }
        assert!(gateway("10.0.0.1/31").is_ok());
    }

    #[test]
    fn durations_never_panic() {
        assert_eq!(parse_go_duration("90m"), Ok(Duration::from_secs(5400)));
        for huge in [
            "99999999999999999999999h",
            "1e300h",
            "184467440737095516160s",
        ] {
            assert!(parse_go_duration(huge).is_err(), "{huge}");
        }
        assert!(lease_time("18446744073709551615")
            .unwrap_err()
            .contains("out of range"));
        assert!(lease_time("10s").is_err());
        assert!(lease_time("24h").is_ok());
    }

    #[test]
    fn a_segment_vip_needs_listeners_on_every_address() {
        let text = |listen: &str| {
            format!(
                "[provision]\nlisten = {listen:?}\n\
                 [cluster]\nendpoints = [\"http://10.0.0.1:2379\"]\n\
                 [[cluster.segment]]\nname = \"A\"\nsubnets = [\"10.0.0.0/24\"]\nvip = \"10.0.0.250\"\n"
            )
        };
        let problems = |t: &str| {
            let cfg: Config = toml::from_str(t).unwrap();
            value_problems(&cfg)
        };
        assert_eq!(problems(&text("0.0.0.0:8080")), vec![]);
        let p = problems(&text("10.0.0.1:8080"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "provision.listen");
        assert!(
            p[0].message.starts_with("binds 10.0.0.1 only")
                && p[0].message.contains("0.0.0.0:8080"),
            "{p:?}"
        );
        // Without a VIP, one address is fine.
        let no_vip = text("10.0.0.1:8080").replace("vip = \"10.0.0.250\"\n", "");
        assert_eq!(problems(&no_vip), vec![]);
    }

    #[test]
    fn xdp_map_sizes_past_what_the_maps_can_hold_are_refused() {
        let problems = |n: u32| {
            let cfg: Config = toml::from_str(&format!("[dhcp]\nxdp_max_hosts = {n}\n")).unwrap();
            value_problems(&cfg)
        };
        assert_eq!(problems(100_000), vec![]);
        let p = problems(crate::xdp::loader::MAX_HOSTS + 1);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "dhcp.xdp_max_hosts");
        assert!(p[0].message.contains("4194304 boot interfaces"), "{p:?}");
    }

    mod props {
        use std::path::Path;

        use proptest::prelude::*;

        use crate::config::Config;

        /// Keys of the config, with values of every TOML type.
        fn document() -> impl Strategy<Value = String> {
            let key = prop::sample::select(vec![
                "dhcp.listen",
                "dhcp.lease_time",
                "dhcp.mtu",
                "dhcp.dns_servers",
                "dhcp.domain_search",
                "dhcp.router",
                "dhcp.mode",
                "dhcp.router_octet4",
                "tftp.listen",
                "pxe.listen",
                "provision.listen",
                "provision.token_ttl",
                "provision.advertise_url",
                "api.listen",
                "api.token",
                "bmc.retries",
                "bmc.timeout_ms",
                "bmc.concurrency",
                "bmc.protocol",
                "dns.listen",
                "dns.ttl",
                "dns.forward",
                "dns.zones",
                "dns.nameserver",
                "dns.max_udp_payload",
                "dns.forward_timeout_ms",
                "dns.max_tcp_connections",
                "interface",
                "state_dir",
                "hosts",
                "loggers",
                "colour",
            ]);
            let value = prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                "[0-9a-z:./\\[\\] -]{0,24}".prop_map(|s| format!("{s:?}")),
                prop::collection::vec("[0-9a-z.:]{0,10}", 0..3).prop_map(|v| format!("{v:?}")),
                Just("{}".to_string()),
                Just("[{gateway = \"10.0.0.1/24\", mtu = \"10\"}, {gateway = 3}]".to_string()),
                (
                    prop::sample::select(vec![
                        "10.0.0.1/24",
                        "10.0.0.0/24",
                        "10.0.0.1",
                        "x",
                        "10.0.0.1/31"
                    ]),
                    prop::sample::select(vec![
                        "",
                        "10.0.0.53",
                        "nope",
                        "0.0.0.0",
                        "1.1.1.1 8.8.8.8"
                    ]),
                    prop::sample::select(vec!["", "a.b", "-x", "a b", "x_y"]),
                    prop::sample::select(vec!["", "0", "10", "1500", "9217", "big"]),
                )
                    .prop_map(|(g, d, s, m)| format!(
                        "[{{gateway = {g:?}, dns = {d:?}, domainSearch = {s:?}, mtu = {m:?}}}]"
                    )),
                Just("1e400".to_string()),
            ];
            prop::collection::vec((key, value), 0..8).prop_map(|kv| {
                kv.into_iter()
                    .map(|(k, v)| format!("{k} = {v}\n"))
                    .collect::<String>()
            })
        }

        proptest! {
            /// No text panics the config loader; every refusal names at least one problem.
            #[test]
            fn any_text_loads_or_is_refused(text in "[\\[\\]a-z_.=\"0-9 \n{},:]{0,80}") {
                let _ = Config::from_toml(&text, Path::new("x.toml"));
            }

            /// Any values of the config's keys load or are refused with problems; what
            /// loads, serve's DHCP settings, listeners, BMC options and DNS service take as
            /// it is.
            #[test]
            fn any_values_load_or_are_refused_and_serve_agrees(text in document()) {
                match Config::from_toml(&text, Path::new("x.toml")) {
                    // What the check accepts, serve's DHCP settings and listeners accept.
                    Ok(cfg) => {
                        prop_assert!(crate::config::check::value_problems(&cfg).is_empty());
                        prop_assert!(crate::dhcp::Settings::from_config(&cfg).is_ok());
                        prop_assert!(crate::dhcp::Listen::from_config(&cfg).is_ok());
                        prop_assert!(crate::bmc::fanout::FanoutOpts::from_config(&cfg.bmc).concurrency >= 1);
                        if let Some(dns) = &cfg.dns {
                            let shared = crate::state::Shared::new(
                                Config::default(),
                                Default::default(),
                                Default::default(),
                            );
                            prop_assert!(crate::dns::Service::from_config(crate::dns::Names::Served(shared), dns).is_ok());
                        }
                    }
                    Err(crate::config::ConfigError::Invalid { problems, .. }) => {
                        prop_assert!(!problems.is_empty())
                    }
                    Err(_) => {}
                }
            }
        }
    }
}
