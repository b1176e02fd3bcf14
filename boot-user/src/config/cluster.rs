//! `[cluster]`: many servers on one inventory kept in etcd (see [`crate::cluster`]).
//! Absent: standalone, the inventory lives in this server's own store only.
//!
//! ```toml
//! [cluster]
//! endpoints = ["https://10.0.0.11:2379", "https://10.0.0.12:2379", "https://10.0.0.13:2379"]
//! prefix = "/xboot/v1/"          # every key xboot reads and writes is under it
//! server_id = "rack7-a"          # default: the host name
//! ca_file = "/etc/xboot/etcd-ca.pem"     # TLS (https:// endpoints)
//! cert_file = "/etc/xboot/etcd.pem"      # client certificate, with key_file
//! key_file = "/etc/xboot/etcd-key.pem"
//! user = "xboot"                 # etcd authentication, with password
//! password = "..."
//! [[cluster.segment]]             # the hosts this server serves (default: all)
//! name = "rack7"
//! interfaces = ["eno1"]
//! subnets = ["10.7.0.0/16"]
//! vip = "10.7.0.250"            # optional: the live image URL names it (keepalived moves it)
//! vrid = 250                     # VRRP router id of the VIP (default: its last octet)
//! ```
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Defaults: etcd's own limit on operations per transaction (`--max-txn-ops`).
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
pub const DEFAULT_PREFIX: &str = "/xboot/v1/";
pub const DEFAULT_BLOB_FETCHES: usize = 2;
/// Ten minutes: an image deleted and imported again (a rename, a fix) keeps its blobs.
pub const DEFAULT_BLOB_GC_GRACE_SECS: u64 = 600;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://HOST:PORT` or `https://HOST:PORT`).
    pub endpoints: Vec<String>,
    /// Key prefix of this site's data (starts and ends with `/`).
    pub prefix: String,
    /// This server's name in `servers/` and `xboot cluster status`; default: the host name.
    pub server_id: Option<String>,
    /// CA certificate (PEM) that signed the etcd members' certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and its key (PEM), for members that require one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// etcd user and password (etcd's `auth enable`).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Connect and request timeout, milliseconds.
    pub timeout_ms: u64,
    /// Operations per etcd transaction; bigger changes are split (etcd's `--max-txn-ops`).
    pub max_txn_ops: usize,
    /// The segments this server serves: DHCP, TFTP, the boot routes and the XDP maps
    /// know the hosts with an address in their subnets only (the API, every host).
    /// None: every host.
    #[serde(rename = "segment")]
    pub segments: Vec<Segment>,
    /// Where image blobs fetched from other servers are kept (`sha256/HEX`); default
    /// `state_dir/blobs`.
    pub blob_dir: Option<PathBuf>,
    /// The base URL other servers fetch this server's blobs from (`/blobs/sha256/HEX`),
    /// published in its record; default `provision.advertise_url`, else
    /// `http://LISTEN_IP:PORT` of `provision.listen` when it names an address.
    pub http_url: Option<String>,
    /// Blob downloads from other servers at once.
    pub blob_fetches: usize,
    /// How long a blob of `blob_dir` no image references any more is kept before it is
    /// removed (seconds; 0: at once).
    pub blob_gc_grace_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            endpoints: Vec::new(),
            prefix: DEFAULT_PREFIX.into(),
            server_id: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            user: None,
            password: None,
            timeout_ms: 5000,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            segments: Vec::new(),
            blob_dir: None,
            http_url: None,
            blob_fetches: DEFAULT_BLOB_FETCHES,
            blob_gc_grace_secs: DEFAULT_BLOB_GC_GRACE_SECS,
        }
    }
}

/// One L2 segment (rack, row) this server answers on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Segment {
    /// Shown in the server's record and `xboot cluster status`.
    pub name: String,
    /// This server's NICs on the segment (published in its record).
    pub interfaces: Vec<String>,
    /// IPv4 subnets (CIDR) of the segment's hosts: a host with an address in one of them
    /// is served here.
    pub subnets: Vec<String>,
    /// A virtual IPv4 address of the segment (in one of `subnets`), held by one of its
    /// servers at a time (keepalived: `xboot cluster keepalived`). When set, the live
    /// image URL rendered for the segment's hosts names it, and the iPXE script falls back
    /// to it for the kernel and initrds.
    pub vip: Option<String>,
    /// The VRRP virtual router id of `vip` (1..=255, the same on every server of the
    /// segment, unique on its LAN); default: the VIP's last octet (0 gives 1).
    pub vrid: Option<u32>,
}

impl Segment {
    /// `vip` if it is set and an IPv4 address (the config check refuses anything else).
    pub fn vip(&self) -> Option<Ipv4Addr> {
        self.vip.as_deref()?.parse().ok()
    }

    /// The VIP with the prefix of the segment subnet that holds it (`10.7.0.250/16`).
    pub fn vip_net(&self) -> Option<Ipv4Net> {
        let vip = self.vip()?;
        self.nets()
            .find(|n| n.contains(&vip))
            .and_then(|n| Ipv4Net::new(vip, n.prefix_len()).ok())
    }

    /// The VRRP router id of the VIP: `vrid`, else the VIP's last octet (0 gives 1).
    pub fn vrid(&self) -> Option<u8> {
        match self.vrid {
            Some(id) => u8::try_from(id).ok().filter(|&id| id != 0),
            None => Some(self.vip()?.octets()[3].max(1)),
        }
    }

    /// The subnets that parse (the config check refuses the others).
    pub fn nets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.subnets
            .iter()
            .filter_map(|n| n.parse::<Ipv4Net>().ok())
            .map(|n| n.trunc())
    }

    /// The problems of `vip` and `vrid` (`key` is `cluster.segment[i]`).
    fn vip_problems(&self, key: &str, check: &mut impl FnMut(&str, Result<(), String>)) {
        if let Some(id) = self.vrid {
            if !(1..=255).contains(&id) {
                check(
                    &format!("{key}.vrid"),
                    Err(format!("{id} is outside 1..=255 (a VRRP router id)")),
                );
            }
            if self.vip.is_none() {
                check(
                    &format!("{key}.vrid"),
                    Err("is the router id of the segment's vip, which is not set".into()),
                );
            }
        }
        let Some(v) = &self.vip else { return };
        let key = format!("{key}.vip");
        let Ok(vip) = v.parse::<Ipv4Addr>() else {
            check(
                &key,
                Err(format!("{v:?} is not an IPv4 address (10.7.0.250)")),
            );
            return;
        };
        let Some(net) = self.nets().find(|n| n.contains(&vip)) else {
            check(
                &key,
                Err(format!(
                    "{vip} is in none of the segment's subnets ({}): its nodes must reach it \
                     on their own link",
                    self.subnets.join(", ")
                )),
            );
            return;
        };
        if net.prefix_len() <= 30 && (vip == net.network() || vip == net.broadcast()) {
            check(
                &key,
                Err(format!(
                    "{vip} is the network or broadcast address of {net}"
                )),
            );
        }
    }
}

impl ClusterConfig {
    /// `server_id`, else the machine's host name.
    pub fn server_id(&self) -> String {
        self.server_id
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "xboot".into())
    }

    /// Every problem, each naming its key (`cluster.endpoints[1]`).
    pub fn problems(&self, check: &mut impl FnMut(&str, Result<(), String>)) {
        if self.endpoints.is_empty() {
            check(
                "cluster.endpoints",
                Err("at least one etcd endpoint is needed (http://HOST:PORT)".into()),
            );
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            check(&format!("cluster.endpoints[{i}]"), endpoint(e).map(drop));
        }
        check("cluster.prefix", prefix(&self.prefix));
        if let Some(id) = &self.server_id {
            check("cluster.server_id", server_id(id));
        }
        let tls = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if !tls && (self.ca_file.is_some() || self.cert_file.is_some()) {
            check(
                "cluster.ca_file",
                Err("TLS files are set but no endpoint is https://".into()),
            );
        }
        if tls && self.endpoints.iter().any(|e| e.starts_with("http://")) {
            check(
                "cluster.endpoints",
                Err("mixes http:// and https:// endpoints".into()),
            );
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            check(
                "cluster.cert_file",
                Err("cert_file and key_file go together".into()),
            );
        }
        if self.user.is_some() != self.password.is_some() {
            check("cluster.user", Err("user and password go together".into()));
        }
        if !(100..=600_000).contains(&self.timeout_ms) {
            check(
                "cluster.timeout_ms",
                Err(format!("{} is outside 100..=600000", self.timeout_ms)),
            );
        }
        if !(8..=100_000).contains(&self.max_txn_ops) {
            check(
                "cluster.max_txn_ops",
                Err(format!("{} is outside 8..=100000", self.max_txn_ops)),
            );
        }
        if !(1..=64).contains(&self.blob_fetches) {
            check(
                "cluster.blob_fetches",
                Err(format!("{} is outside 1..=64", self.blob_fetches)),
            );
        }
        if self.blob_gc_grace_secs > 30 * 86_400 {
            check(
                "cluster.blob_gc_grace_secs",
                Err(format!(
                    "{} is more than 30 days (2592000)",
                    self.blob_gc_grace_secs
                )),
            );
        }
        if let Some(u) = &self.http_url {
            check("cluster.http_url", http_url(u));
        }
        if self.blob_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            check("cluster.blob_dir", Err("must be an absolute path".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.segments.iter().enumerate() {
            let key = format!("cluster.segment[{i}]");
            if s.name.is_empty() {
                check(&format!("{key}.name"), Err("a segment needs a name".into()));
            } else if !names.insert(s.name.as_str()) {
                check(
                    &format!("{key}.name"),
                    Err(format!("segment {:?} is named twice", s.name)),
                );
            }
            if s.subnets.is_empty() {
                check(
                    &format!("{key}.subnets"),
                    Err("a segment needs its hosts' subnets (subnets = [\"10.7.0.0/16\"])".into()),
                );
            }
            for (j, n) in s.subnets.iter().enumerate() {
                check(
                    &format!("{key}.subnets[{j}]"),
                    n.parse::<ipnet::Ipv4Net>()
                        .map(drop)
                        .map_err(|_| format!("{n:?} is not an IPv4 CIDR (10.7.0.0/16)")),
                );
            }
            s.vip_problems(&key, check);
        }
    }

    /// The segment VIP a host is reached through: the first of `addrs` (the boot
    /// interface's address first) that is in a segment's subnets decides, and the VIP is
    /// that segment's (None if it has none: a VIP of another segment is on another link).
    pub fn vip_for(&self, addrs: impl IntoIterator<Item = Ipv4Addr>) -> Option<Ipv4Addr> {
        addrs
            .into_iter()
            .find_map(|a| {
                self.segments
                    .iter()
                    .find(|s| s.nets().any(|n| n.contains(&a)))
            })?
            .vip()
    }

    /// Whether any segment has a VIP.
    pub fn has_vip(&self) -> bool {
        self.segments.iter().any(|s| s.vip.is_some())
    }
}

/// `http://HOST:PORT` / `https://HOST:PORT`; the endpoint as the client takes it.
pub fn endpoint(e: &str) -> Result<&str, String> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or_else(|| format!("{e:?} must start with http:// or https://"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{e:?} names no port (http://HOST:2379)"))?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{e:?} is not http(s)://HOST:PORT"));
    }
    Ok(e)
}

/// `http://HOST[:PORT][/PATH]` or `https://...`, without a trailing `/`.
fn http_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| format!("{u:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') || u.ends_with('/') {
        return Err(format!(
            "{u:?} is not http(s)://HOST[:PORT] (no trailing /)"
        ));
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{u:?} holds whitespace or control characters"));
    }
    Ok(())
}

fn prefix(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || !p.ends_with('/') || p.len() < 2 {
        return Err(format!("{p:?} must start and end with / (\"/xboot/v1/\")"));
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{p:?} holds whitespace or control characters"));
    }
    Ok(())
}

fn server_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?}: 1 to 64 letters, digits, '-', '_' or '.' (it is part of a key)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &ClusterConfig) -> Vec<String> {
        let mut out = Vec::new();
        c.problems(&mut |k, r| {
            if let Err(m) = r {
                out.push(format!("{k}: {m}"));
            }
        });
        out
    }

    #[test]
    fn a_cluster_section_reads_and_checks() {
        let c: ClusterConfig = toml::from_str(
            r#"
            endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
            server_id = "a1"
            [[segment]]
            name = "A"
            interfaces = ["eth0"]
            subnets = ["10.0.0.0/24"]
            "#,
        )
        .unwrap();
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        assert_eq!(c.max_txn_ops, DEFAULT_MAX_TXN_OPS);
        assert_eq!(c.segments[0].interfaces, ["eth0"]);
        assert_eq!(problems(&c), Vec::<String>::new());
        assert_eq!(c.server_id(), "a1");
    }

    #[test]
    fn every_bad_cluster_value_is_named() {
        let c = ClusterConfig {
            endpoints: vec!["10.0.0.1:2379".into(), "http://x:0".into()],
            prefix: "xboot".into(),
            server_id: Some("a/b".into()),
            cert_file: Some("c.pem".into()),
            user: Some("u".into()),
            timeout_ms: 1,
            max_txn_ops: 1,
            blob_fetches: 0,
            http_url: Some("http://s1:8080/".into()),
            blob_dir: Some("blobs".into()),
            segments: vec![
                Segment {
                    name: "A".into(),
                    subnets: vec!["10.0.0.0/33".into()],
                    ..Default::default()
                },
                Segment {
                    name: "A".into(),
                    subnets: vec!["10.1.0.0/16".into()],
                    ..Default::default()
                },
                Segment {
                    name: "C".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let p = problems(&c);
        for key in [
            "cluster.endpoints[0]",
            "cluster.endpoints[1]",
            "cluster.prefix",
            "cluster.server_id",
            "cluster.ca_file",
            "cluster.cert_file",
            "cluster.user",
            "cluster.timeout_ms",
            "cluster.max_txn_ops",
            "cluster.segment[0].subnets[0]",
            "cluster.segment[1].name",
            "cluster.segment[2].subnets",
            "cluster.blob_fetches",
            "cluster.http_url",
            "cluster.blob_dir",
        ] {
            assert!(
                p.iter().any(|m| m.starts_with(&format!("{key}:"))),
                "{key}: {p:#?}"
            );
        }
        assert_eq!(p.len(), 15, "{p:#?}");
        let none = ClusterConfig::default();
        assert!(problems(&none)[0].starts_with("cluster.endpoints:"));
    }

    fn segment(subnets: &[&str], vip: Option<&str>, vrid: Option<u32>) -> Segment {
        Segment {
            name: "A".into(),
            interfaces: vec!["eth0".into()],
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            vip: vip.map(str::to_string),
            vrid,
        }
    }

    fn cluster(segments: Vec<Segment>) -> ClusterConfig {
        ClusterConfig {
            endpoints: vec!["http://10.0.0.1:2379".into()],
            segments,
            ..Default::default()
        }
    }

    #[test]
    fn segment_vips_are_checked_naming_the_key() {
        let c: ClusterConfig = toml::from_str(
            r#"
            endpoints = ["http://10.0.0.1:2379"]
            [[segment]]
            name = "A"
            subnets = ["10.0.0.0/24", "10.9.0.0/16"]
            vip = "10.9.0.250"
            "#,
        )
        .unwrap();
        assert_eq!(problems(&c), Vec::<String>::new());
        let s = &c.segments[0];
        assert_eq!(s.vip(), Some(Ipv4Addr::new(10, 9, 0, 250)));
        assert_eq!(s.vip_net().unwrap().to_string(), "10.9.0.250/16");
        assert_eq!(s.vrid(), Some(250));
        for (seg, key, says) in [
            (
                segment(&["10.0.0.0/24"], Some("10.0.0.300"), None),
                "cluster.segment[0].vip",
                "not an IPv4 address",
            ),
            (
                segment(&["10.0.0.0/24"], Some("fd00::1"), None),
                "cluster.segment[0].vip",
                "not an IPv4 address",
            ),
            (
                segment(&["10.0.0.0/24"], Some("10.1.0.250"), None),
                "cluster.segment[0].vip",
                "in none of the segment's subnets (10.0.0.0/24)",
            ),
            (
                segment(&["10.0.0.0/24"], Some("10.0.0.255"), None),
                "cluster.segment[0].vip",
                "network or broadcast address of 10.0.0.0/24",
            ),
            (
                segment(&["10.0.0.0/24"], Some("10.0.0.250"), Some(256)),
                "cluster.segment[0].vrid",
                "outside 1..=255",
            ),
            (
                segment(&["10.0.0.0/24"], None, Some(7)),
                "cluster.segment[0].vrid",
                "vip, which is not set",
            ),
        ] {
            let p = problems(&cluster(vec![seg]));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].starts_with(&format!("{key}: ")), "{p:?}");
            assert!(p[0].contains(says), "{says}: {p:?}");
        }
        // A /31 or /32 has no network or broadcast address to avoid.
        let p2p = cluster(vec![segment(&["10.0.0.0/31"], Some("10.0.0.0"), None)]);
        assert_eq!(problems(&p2p), Vec::<String>::new());
        assert_eq!(p2p.segments[0].vrid(), Some(1), "octet 0 gives router id 1");
    }

    #[test]
    fn a_host_is_given_the_vip_of_its_address_segment() {
        let c = cluster(vec![
            segment(&["10.1.0.0/24"], None, None),
            segment(&["10.2.0.0/24"], Some("10.2.0.250"), Some(9)),
        ]);
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(c.has_vip());
        assert_eq!(c.segments[1].vrid(), Some(9));
        assert_eq!(c.vip_for([a("10.2.0.7")]), Some(a("10.2.0.250")));
        assert_eq!(c.vip_for([a("10.1.0.7")]), None, "its segment has none");
        assert_eq!(
            c.vip_for([a("10.1.0.7"), a("10.2.0.8")]),
            None,
            "the first address in a segment decides"
        );
        assert_eq!(
            c.vip_for([a("10.3.0.7"), a("10.2.0.8")]),
            Some(a("10.2.0.250")),
            "an address in no segment is passed over"
        );
        assert!(!cluster(vec![segment(&["10.1.0.0/24"], None, None)]).has_vip());
    }
}
