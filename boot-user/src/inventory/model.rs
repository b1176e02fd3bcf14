//! The inventory's data model: hosts and boot images, as Grendel defines them.
//!
//! Field names follow Grendel's JSON (`hosts.json` / `images.json`, as its `--hosts` /
//! `--images` flags and the ClusterFactory chart produce them), so those files load
//! unchanged. Values here are *unverified* until `validate` has checked the whole set.
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet hardware address. Parsed from `aa:bb:cc:dd:ee:ff` or `aa-bb-...`,
/// always printed lower-case with colons.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?}: expected six hex bytes like aa:bb:cc:dd:ee:ff")]
pub struct MacParseError(pub String);

impl FromStr for Mac {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One network interface of a host. A host has one interface per NIC it boots from,
/// plus (optionally) one with `bmc = true` describing its baseboard management controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Interface {
    /// Grendel v0.2 numbers its interfaces (`id`); kept so that an export round-trips.
    #[serde(
        deserialize_with = "de_string_or_number",
        serialize_with = "ser_id",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    /// Absent for BMC entries that are reached by IP only (Grendel writes `""`).
    #[serde(
        deserialize_with = "de_opt_mac",
        skip_serializing_if = "Option::is_none"
    )]
    pub mac: Option<Mac>,
    /// Address with prefix length (`192.168.0.51/24`); the prefix gives the subnet mask.
    /// Kept as text until validation so that a bad CIDR is reported with the host's name.
    #[serde(
        default,
        deserialize_with = "de_opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fqdn: String,
    pub bmc: bool,
    /// Grendel stores the VLAN as a string; kept as given.
    #[serde(
        deserialize_with = "de_string_or_number",
        skip_serializing_if = "String::is_empty"
    )]
    pub vlan: String,
    /// 0 = use the subnet's / global MTU.
    #[serde(deserialize_with = "de_u16_or_string", skip_serializing_if = "is_zero")]
    pub mtu: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ifname: String,
    /// xboot extension: per-interface BMC credentials/protocol override (`bmc = true` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bmc_config: Option<BmcOverride>,
}

/// Per-host override of the `[bmc]` section (protocol, credentials, port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct BmcOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Interface {
    /// The parsed address, if the interface has a valid one.
    pub fn ipv4(&self) -> Option<Ipv4Net> {
        self.ip.as_deref().and_then(|s| parse_cidr(s).ok())
    }
    pub fn addr(&self) -> Option<Ipv4Addr> {
        self.ipv4().map(|n| n.addr())
    }
    /// The address if it is IPv6 (Grendel's `ip` may be either family): served in DNS
    /// (AAAA, PTR), never leased (DHCP is IPv4).
    pub fn ipv6(&self) -> Option<ipnet::Ipv6Net> {
        self.ip.as_deref().and_then(parse_ipv6)
    }
}

/// `2001:db8::5/64` or a bare `2001:db8::5` (taken as /128).
pub fn parse_ipv6(s: &str) -> Option<ipnet::Ipv6Net> {
    let t = s.trim();
    t.parse::<ipnet::Ipv6Net>().ok().or_else(|| {
        t.parse::<std::net::Ipv6Addr>()
            .ok()
            .and_then(|a| ipnet::Ipv6Net::new(a, 128).ok())
    })
}

/// Parses `a.b.c.d/len`, or a bare `a.b.c.d` (taken as /32, which Grendel also accepts).
/// MTUs xboot hands out (interface `mtu`, `dhcp.subnets[].mtu`, `dhcp.mtu`; 0 = unset):
/// 576, the least every IPv4 host must accept (RFC 791), to 9216, the largest jumbo frame
/// switches commonly carry. DHCP itself allows 68 up, but a node told 68 or 10 cannot boot.
pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 576..=9216;

pub fn parse_cidr(s: &str) -> Result<Ipv4Net, String> {
    if s.contains('/') {
        s.parse::<Ipv4Net>()
            .map_err(|e| format!("bad CIDR {s:?}: {e}"))
    } else {
        s.parse::<Ipv4Addr>()
            .map(|a| Ipv4Net::new(a, 32).expect("32 is a valid prefix"))
            .map_err(|e| format!("bad address {s:?}: {e}"))
    }
}

/// A machine of the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Host {
    /// Grendel's host id: a number in v0.2 (`"id": 5`), a KSUID in older versions; kept
    /// as text, written back as a number when it is one, so an export round-trips.
    #[serde(
        deserialize_with = "de_string_or_number",
        serialize_with = "ser_id",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    /// Grendel v0.2's KSUID of the host; kept so an export round-trips.
    #[serde(
        deserialize_with = "de_null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub uid: String,
    pub name: String,
    /// false: the host gets a lease but no boot file (boots from disk).
    pub provision: bool,
    pub boot_image: String,
    /// Firmware override (`undionly.kpxe`, `snponly-x86_64.efi`, ...); empty = chosen by
    /// the client's architecture.
    #[serde(deserialize_with = "de_null_default")]
    pub firmware: String,
    /// Grendel writes `null` for no tags.
    #[serde(deserialize_with = "de_null_default")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "de_null_default")]
    pub interfaces: Vec<Interface>,
    /// Grendel's bonds: kept as given; one with a MAC of its own gets a DHCP lease
    /// (`bond_interfaces`), nothing to boot.
    #[serde(
        deserialize_with = "de_null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub bonds: Vec<serde_json::Value>,
}

impl Host {
    /// A host to provision with one boot interface (`ip` in CIDR form), everything else
    /// at its default (`xboot host add` starts from it).
    pub fn with_interface(name: &str, mac: Mac, ip: Option<&str>) -> Host {
        Host {
            name: name.into(),
            provision: true,
            interfaces: vec![Interface {
                mac: Some(mac),
                ip: ip.map(String::from),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The interface that describes the host's BMC, if any.
    pub fn bmc(&self) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.bmc)
    }
    /// Grendel's bonds as interfaces (`peers` ignored): a bond's MAC gets a DHCP lease
    /// like an interface's. `Err` names the first bond that is no interface.
    pub fn bond_interfaces(&self) -> Result<Vec<Interface>, (usize, String)> {
        self.bonds
            .iter()
            .enumerate()
            .map(|(i, b)| serde_json::from_value(b.clone()).map_err(|e| (i, e.to_string())))
            .collect()
    }
    /// The boot (non-BMC) interface with this MAC.
    pub fn interface_by_mac(&self, mac: Mac) -> Option<&Interface> {
        self.interfaces
            .iter()
            .find(|i| !i.bmc && i.mac == Some(mac))
    }
}

/// A boot image: kernel, initrds, optional live root image and the kernel command line
/// template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Image {
    /// Grendel gives images a KSUID (older versions a number); kept as text.
    #[serde(
        deserialize_with = "de_string_or_number",
        serialize_with = "ser_id",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    pub name: String,
    pub kernel: String,
    #[serde(deserialize_with = "de_null_default")]
    pub initrd: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub liveimg: String,
    /// Template (Go text/template syntax with sprig functions), rendered per host.
    pub cmdline: String,
    pub verify: bool,
    /// Named templates served to the booted OS (e.g. the postscript).
    #[serde(
        deserialize_with = "de_null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub provision_templates: BTreeMap<String, String>,
    /// Cluster mode: the content of each file (kernel, initrds, live image) as the
    /// server that published the image hashed it. Servers without the file fetch it by
    /// its hash from one that has it ([`crate::cluster::blobs`]); etcd holds these
    /// records, never the bytes.
    #[serde(
        deserialize_with = "de_null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub blobs: Vec<BlobRef>,
    /// Grendel accepts a few more keys (butane, user_data ...): kept, not used.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One image file's content, by the path the image names it with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BlobRef {
    pub path: String,
    /// 64 lower-case hex digits.
    pub sha256: String,
    pub size: u64,
    /// The id of the server that published (hashed) it.
    pub server: String,
}

impl BlobRef {
    /// Whether `sha256` is 64 lower-case hex digits (it names files in the blob cache).
    pub fn valid_digest(hex: &str) -> bool {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl Image {
    /// The recorded content of the file `path` of this image, if any.
    pub fn blob(&self, path: &str) -> Option<&BlobRef> {
        self.blobs.iter().find(|b| b.path == path)
    }

    /// The image's files: kernel, initrds, live image (those that are set).
    pub fn files(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.kernel.as_str())
            .chain(self.initrd.iter().map(String::as_str))
            .chain(std::iter::once(self.liveimg.as_str()))
            .filter(|p| !p.is_empty())
    }
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()))
}

/// `null` reads as the default (Go writes a nil slice or map as `null`).
fn de_null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A MAC, or none for `null` / `""` (Go's empty `net.HardwareAddr`).
fn de_opt_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mac>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// An id read from a number is written back as one (Grendel v0.2's int64 ids); any other
/// text (a KSUID) as a string.
fn ser_id<S: Serializer>(id: &str, s: S) -> Result<S::Ok, S::Error> {
    match id.parse::<i64>() {
        Ok(n) if n.to_string() == id => s.serialize_i64(n),
        _ => s.serialize_str(id),
    }
}

fn de_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        N(i64),
    }
    Ok(match Option::<V>::deserialize(d)? {
        None => String::new(),
        Some(V::S(s)) => s,
        Some(V::N(n)) => n.to_string(),
    })
}

fn de_u16_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let s = de_string_or_number(d)?;
    if s.is_empty() {
        return Ok(0);
    }
    s.parse()
        .map_err(|_| serde::de::Error::custom(format!("invalid MTU {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m: Mac = "AA-bb-cc-11-22-33".parse().unwrap();
        assert_eq!(m.to_string(), "aa:bb:cc:11:22:33");
        assert!("aa:bb:cc:11:22".parse::<Mac>().is_err());
        assert!("aa:bb:cc:11:22:33:44".parse::<Mac>().is_err());
        assert!("zz:bb:cc:11:22:33".parse::<Mac>().is_err());
    }

    #[test]
    fn grendel_host_json_loads() {
        let j = r#"[{"name":"cn1","provision":true,"boot_image":"squareos-9.2",
            "firmware":"snponly-x86_64.efi","interfaces":[
              {"ip":"192.168.0.51/24","mac":"aa:bb:cc:11:22:33","bmc":false,"vlan":"","mtu":1500},
              {"ip":"192.168.1.51/32","bmc":true}]}]"#;
        let hosts: Vec<Host> = serde_json::from_str(j).unwrap();
        assert_eq!(
            hosts[0].interfaces[0].mac.unwrap().to_string(),
            "aa:bb:cc:11:22:33"
        );
        assert_eq!(
            hosts[0].bmc().unwrap().addr(),
            Some(Ipv4Addr::new(192, 168, 1, 51))
        );
    }
}
