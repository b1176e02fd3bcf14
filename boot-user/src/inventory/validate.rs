//! Whole-inventory validation: every check runs and every problem is reported, each naming
//! the host or image it is about (`host cn12: MAC aa:bb:cc:dd:ee:ff is also on host cn3`).
//!
//! Checks: host names (present, valid hostnames, unique without regard to case: DNS and
//! node sets could not tell `CN9` from `cn9`), addresses (valid CIDR, unique, a host
//! address: not a subnet's network or broadcast address, not /0, not 0.0.0.0,
//! 255.255.255.255, loopback, link-local or multicast, not one of the server's own), MACs
//! (unique across all hosts and within one, unicast, not all zeros), interface MTUs
//! ([`MTU_RANGE`] or 0), boot images of provisioned hosts (named and existing), images
//! (named, unique, a kernel, kernel/initrd/liveimg files that exist at absolute paths
//! inside the image roots, `provision.image_roots`, symlinks followed) and the image
//! command-line templates. Only reads file metadata.
use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;

use super::model::{parse_cidr, Host, Image, Mac, MTU_RANGE};
use crate::tftp::root::{PathError, Roots};

/// One problem found in an inventory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// An entry that could not even be read (wrong type, bad MAC syntax ...).
    #[error("{entry}: {message}")]
    Entry { entry: String, message: String },
    #[error("host #{index}: empty name")]
    EmptyHostName { index: usize },
    #[error("host {host:?}: invalid hostname: {reason}")]
    InvalidHostname { host: String, reason: String },
    #[error("host {host}: defined more than once")]
    DuplicateHost { host: String },
    #[error("host {host}: same name as host {other} but for case (names are case-insensitive)")]
    NameCase { host: String, other: String },
    #[error("host {host}: interface {nic}: address {ip} {reason}")]
    BadAddress {
        host: String,
        nic: usize,
        ip: String,
        reason: String,
    },
    #[error("host {host}: interface {nic}: MAC {mac} is {reason}")]
    BadMac {
        host: String,
        nic: usize,
        mac: Mac,
        reason: String,
    },
    #[error("host {host}: interface {nic}: MTU {mtu} is out of range ({} to {}, or 0 for the subnet's)", MTU_RANGE.start(), MTU_RANGE.end())]
    BadMtu { host: String, nic: usize, mtu: u16 },
    #[error("host {host}: interface {nic}: {message}")]
    BadCidr {
        host: String,
        nic: usize,
        message: String,
    },
    #[error("host {host}: MAC {mac} is also on host {other}")]
    MacOnTwoHosts {
        host: String,
        mac: Mac,
        other: String,
    },
    #[error("host {host}: MAC {mac} is on two of its interfaces")]
    DuplicateMac { host: String, mac: Mac },
    #[error("host {host}: address {ip} is also used by host {other}")]
    DuplicateIp {
        host: String,
        ip: String,
        other: String,
    },
    #[error(
        "provision.default_image {image:?} is not an image, and hosts {hosts} name no boot_image"
    )]
    UnknownDefaultImage { image: String, hosts: String },
    #[error("host {host}: provision = true but no boot_image (and no provision.default_image)")]
    NoBootImage { host: String },
    #[error("host {host}: unknown boot_image {image:?}")]
    UnknownImage { host: String, image: String },
    #[error("image #{index}: empty name")]
    EmptyImageName { index: usize },
    #[error("image {image}: defined more than once")]
    DuplicateImage { image: String },
    #[error("image {image}: no kernel")]
    NoKernel { image: String },
    #[error("image {image}: {what} path {path:?} is not absolute")]
    RelativePath {
        image: String,
        what: String,
        path: String,
    },
    #[error("image {image}: {what} {path}: {message}")]
    MissingFile {
        image: String,
        what: String,
        path: String,
        message: String,
    },
    #[error(
        "image {image}: {what} {path} {reason} (image roots: {roots}; see provision.image_roots)"
    )]
    OutsideImageRoots {
        image: String,
        what: String,
        path: String,
        reason: String,
        roots: String,
    },
    #[error("image {image}: {what} template: {message}")]
    Template {
        image: String,
        what: String,
        message: String,
    },
}

/// Every problem of an inventory (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems:", many.len())?;
                for e in many {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ValidationErrors {}

impl ValidationErrors {
    /// The messages, one per problem (the API returns these).
    pub fn messages(&self) -> Vec<String> {
        self.0.iter().map(|e| e.to_string()).collect()
    }
}

/// Checks a whole inventory, image files against `roots`; returns every problem found.
pub fn validate(hosts: &[Host], images: &[Image], roots: &Roots) -> Result<(), ValidationErrors> {
    validate_for(hosts, images, &[], roots)
}

/// [`validate`], also refusing hosts given one of `server` (the server's own addresses).
pub fn validate_for(
    hosts: &[Host],
    images: &[Image],
    server: &[Ipv4Addr],
    roots: &Roots,
) -> Result<(), ValidationErrors> {
    validate_with_default(hosts, images, server, roots, None)
}

/// [`validate_for`] with `provision.default_image`: the image of provisioned hosts
/// without `boot_image` (empty or None: such hosts are refused).
pub fn validate_with_default(
    hosts: &[Host],
    images: &[Image],
    server: &[Ipv4Addr],
    roots: &Roots,
    default_image: Option<&str>,
) -> Result<(), ValidationErrors> {
    let mut errs = Vec::new();
    check_hosts(hosts, images, server, &mut errs);
    let default_image = default_image.filter(|d| !d.is_empty());
    if let Some(d) = default_image {
        let named = images.iter().any(|i| i.name == d);
        let users: Vec<&str> = hosts
            .iter()
            .filter(|h| h.provision && h.boot_image.is_empty())
            .map(|h| h.name.as_str())
            .collect();
        // Hosts relying on a default that is not an image: one error naming the key
        // instead of one per host.
        if !named && !users.is_empty() {
            errs.push(ValidationError::UnknownDefaultImage {
                image: d.to_string(),
                hosts: crate::nodeset::fold(&users),
            });
        }
        errs.retain(|e| !matches!(e, ValidationError::NoBootImage { .. }));
    }
    check_images(images, roots, &mut errs);
    errs.extend(check_templates(images, roots.templates()));
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errs))
    }
}

/// Why `net` (a host interface's address and prefix) cannot be leased, if it cannot.
fn address_problem(net: Ipv4Net, server: &[Ipv4Addr]) -> Option<String> {
    let a = net.addr();
    let kind = if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_broadcast() {
        Some("the broadcast address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_link_local() {
        Some("a link-local address")
    } else {
        None
    };
    if let Some(kind) = kind {
        return Some(format!("is {kind}, not a host's"));
    }
    if net.prefix_len() == 0 {
        return Some("has prefix /0: give the subnet's prefix".into());
    }
    if net.prefix_len() <= 30 {
        let subnet = net.trunc();
        if a == subnet.network() {
            return Some(format!("is the network address of {subnet}"));
        }
        if a == subnet.broadcast() {
            return Some(format!("is the broadcast address of {subnet}"));
        }
    }
    if server.contains(&a) {
        return Some("is this server's own address".into());
    }
    None
}

fn mac_problem(mac: Mac) -> Option<&'static str> {
    if mac.0 == [0xff; 6] {
        Some("the broadcast address")
    } else if mac.0 == [0; 6] {
        Some("all zeros")
    } else if mac.0[0] & 1 == 1 {
        Some("a multicast address (first octet odd)")
    } else {
        None
    }
}

/// Who already holds a name, MAC or address: the whole-inventory check records each host
/// as it goes ([`Seen`]); a change is checked against the running inventory's indexes
/// ([`super::Inventory::apply`]).
pub(super) trait Claims {
    /// The other host whose lower-cased name is `folded`; records `host` if none.
    fn name(&mut self, folded: &str, host: &str) -> Option<String>;
    /// The other host with `mac`; records `host` if none.
    fn mac(&mut self, mac: Mac, host: &str) -> Option<String>;
    /// The host that had the address before (recording `host`).
    fn ip(&mut self, ip: Ipv4Addr, host: &str) -> Option<String>;
    fn ip6(&mut self, ip: std::net::Ipv6Addr, host: &str) -> Option<String>;
}

/// The whole-inventory check's record of what the hosts so far hold.
#[derive(Default)]
struct Seen {
    folded: HashMap<String, String>,
    macs: HashMap<Mac, String>,
    ips: HashMap<Ipv4Addr, String>,
    ips6: HashMap<std::net::Ipv6Addr, String>,
}

impl Claims for Seen {
    fn name(&mut self, folded: &str, host: &str) -> Option<String> {
        match self.folded.get(folded) {
            Some(other) if other != host => Some(other.clone()),
            Some(_) => None,
            None => {
                self.folded.insert(folded.to_string(), host.to_string());
                None
            }
        }
    }
    fn mac(&mut self, mac: Mac, host: &str) -> Option<String> {
        match self.macs.get(&mac) {
            Some(other) if other != host => Some(other.clone()),
            _ => {
                self.macs.insert(mac, host.to_string());
                None
            }
        }
    }
    fn ip(&mut self, ip: Ipv4Addr, host: &str) -> Option<String> {
        self.ips.insert(ip, host.to_string())
    }
    fn ip6(&mut self, ip: std::net::Ipv6Addr, host: &str) -> Option<String> {
        self.ips6.insert(ip, host.to_string())
    }
}

fn check_hosts(
    hosts: &[Host],
    images: &[Image],
    server: &[Ipv4Addr],
    errs: &mut Vec<ValidationError>,
) {
    let image_names: HashMap<String, usize> = images
        .iter()
        .enumerate()
        .map(|(i, im)| (im.name.clone(), i))
        .collect();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut seen = Seen::default();
    for (index, h) in hosts.iter().enumerate() {
        let count = names.entry(&h.name).or_default();
        *count += 1;
        if *count == 2 && !h.name.is_empty() {
            errs.push(ValidationError::DuplicateHost {
                host: h.name.clone(),
            });
        }
        check_host(|| index, h, &image_names, server, &mut seen, errs);
    }
}

/// Checks one host: everything about the entry itself, and its name, MACs and addresses
/// against what `claims` says others hold. `index` is its position (named only when it
/// has no name).
pub(super) fn check_host(
    index: impl Fn() -> usize,
    h: &Host,
    image_names: &HashMap<String, usize>,
    server: &[Ipv4Addr],
    claims: &mut dyn Claims,
    errs: &mut Vec<ValidationError>,
) {
    if h.name.is_empty() {
        errs.push(ValidationError::EmptyHostName { index: index() });
    } else if let Err(reason) = check_hostname(&h.name) {
        errs.push(ValidationError::InvalidHostname {
            host: h.name.clone(),
            reason,
        });
    }
    if let Some(other) = claims.name(&h.name.to_ascii_lowercase(), &h.name) {
        errs.push(ValidationError::NameCase {
            host: h.name.clone(),
            other,
        });
    }
    let host = || h.name.clone();
    let mut own_macs = Vec::new();
    let mut own_ips: Vec<Ipv4Addr> = Vec::new();
    let mut own_ips6: Vec<std::net::Ipv6Addr> = Vec::new();
    for (nic, i) in h.interfaces.iter().enumerate() {
        if i.mtu != 0 && !MTU_RANGE.contains(&i.mtu) {
            errs.push(ValidationError::BadMtu {
                host: host(),
                nic,
                mtu: i.mtu,
            });
        }
        if let Some(reason) = i.mac.and_then(mac_problem) {
            errs.push(ValidationError::BadMac {
                host: host(),
                nic,
                mac: i.mac.unwrap_or_default(),
                reason: reason.into(),
            });
        }
        if let Some(mac) = i.mac {
            if own_macs.contains(&mac) {
                errs.push(ValidationError::DuplicateMac { host: host(), mac });
            } else {
                own_macs.push(mac);
                if let Some(other) = claims.mac(mac, &h.name) {
                    errs.push(ValidationError::MacOnTwoHosts {
                        host: host(),
                        mac,
                        other,
                    });
                }
            }
        }
        let Some(ip) = i.ip.as_deref() else { continue };
        if let Some(net) = i.ipv6() {
            // IPv6 (DNS only): unique like the IPv4 addresses.
            let other = if own_ips6.contains(&net.addr()) {
                Some(host())
            } else {
                own_ips6.push(net.addr());
                claims.ip6(net.addr(), &h.name)
            };
            if let Some(other) = other {
                errs.push(ValidationError::DuplicateIp {
                    host: host(),
                    ip: net.addr().to_string(),
                    other,
                });
            }
            continue;
        }
        match parse_cidr(ip) {
            Err(message) => errs.push(ValidationError::BadCidr {
                host: host(),
                nic,
                message,
            }),
            Ok(net) => {
                // A BMC's address without a MAC is only where xboot reaches the BMC
                // (IPMI, Redfish), not a lease it hands out, so it is not held to the
                // lease rules (a lab puts simulated BMCs on loopback). A BMC with a MAC
                // gets its address by DHCP and is checked like the others.
                let problem = if i.bmc && i.mac.is_none() {
                    None
                } else {
                    address_problem(net, server)
                };
                if let Some(reason) = problem {
                    errs.push(ValidationError::BadAddress {
                        host: host(),
                        nic,
                        ip: ip.to_string(),
                        reason,
                    });
                }
                let other = if own_ips.contains(&net.addr()) {
                    Some("itself (another interface)".to_string())
                } else {
                    own_ips.push(net.addr());
                    claims.ip(net.addr(), &h.name)
                };
                if let Some(other) = other {
                    errs.push(ValidationError::DuplicateIp {
                        host: host(),
                        ip: net.addr().to_string(),
                        other,
                    });
                }
            }
        }
    }
    // Bonds get leases too: readable as interfaces, their MAC on no other host (a
    // member's MAC is the Linux default), their address a host's.
    match h.bond_interfaces() {
        Err((bond, message)) => errs.push(ValidationError::Entry {
            entry: format!("host {}: bond {bond}", h.name),
            message,
        }),
        Ok(bonds) => {
            let mut bond_macs = Vec::new();
            for (bond, b) in bonds.iter().enumerate() {
                if let Some(mac) = b.mac.filter(|m| !own_macs.contains(m)) {
                    // Two bonds of one host with one MAC: the host's own, no conflict.
                    if !bond_macs.contains(&mac) {
                        bond_macs.push(mac);
                        if let Some(other) = claims.mac(mac, &h.name) {
                            errs.push(ValidationError::MacOnTwoHosts {
                                host: host(),
                                mac,
                                other,
                            });
                        }
                    }
                }
                let Some(ip) = b.ip.as_deref().filter(|_| b.mac.is_some()) else {
                    continue;
                };
                let problem = match parse_cidr(ip) {
                    Err(message) => Some(message),
                    Ok(net) => address_problem(net, server).map(|r| format!("address {ip} {r}")),
                };
                if let Some(message) = problem {
                    errs.push(ValidationError::Entry {
                        entry: format!("host {}: bond {bond}", h.name),
                        message,
                    });
                }
            }
        }
    }
    if h.provision {
        if h.boot_image.is_empty() {
            errs.push(ValidationError::NoBootImage { host: host() });
        } else if !image_names.contains_key(h.boot_image.as_str()) {
            errs.push(ValidationError::UnknownImage {
                host: host(),
                image: h.boot_image.clone(),
            });
        }
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
pub fn check_hostname(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (leading, trailing or double dot)".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!(
                "character {c:?} is not allowed (letters, digits, '-' and '.')"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

fn check_images(images: &[Image], roots: &Roots, errs: &mut Vec<ValidationError>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, im) in images.iter().enumerate() {
        let count = seen.entry(&im.name).or_default();
        *count += 1;
        if *count == 2 && !im.name.is_empty() {
            errs.push(ValidationError::DuplicateImage {
                image: im.name.clone(),
            });
        }
        check_image(index, im, roots, errs);
    }
}

/// Checks the `changed` images of `all` (names are unique in `all`: it is keyed by name).
pub(super) fn check_images_in(
    changed: &[Image],
    all: &[Image],
    roots: &Roots,
    errs: &mut Vec<ValidationError>,
) {
    for im in changed {
        let index = all.iter().position(|a| a.name == im.name).unwrap_or(0);
        check_image(index, im, roots, errs);
    }
}

fn check_image(index: usize, im: &Image, roots: &Roots, errs: &mut Vec<ValidationError>) {
    if im.name.is_empty() {
        errs.push(ValidationError::EmptyImageName { index });
    }
    let label = if im.name.is_empty() {
        format!("#{index}")
    } else {
        im.name.clone()
    };
    // A file with a recorded blob (cluster mode) need not be here: it is served from the
    // blob cache, fetched by its hash, and from its path only when that file is inside
    // the image roots and hashes to it.
    let check = |what: &str, path: &str, errs: &mut Vec<ValidationError>| match im.blob(path) {
        Some(_) => check_blob_path(&label, what, path, errs),
        None => check_file(&label, what, path, roots, errs),
    };
    if im.kernel.is_empty() {
        errs.push(ValidationError::NoKernel {
            image: label.clone(),
        });
    } else {
        check("kernel", &im.kernel, errs);
    }
    for (i, initrd) in im.initrd.iter().enumerate() {
        check(&format!("initrd[{i}]"), initrd, errs);
    }
    if !im.liveimg.is_empty() {
        check("liveimg", &im.liveimg, errs);
    }
    for b in &im.blobs {
        if !super::model::BlobRef::valid_digest(&b.sha256) {
            errs.push(ValidationError::Entry {
                entry: format!("image {label}"),
                message: format!(
                    "blob of {}: sha256 {:?} is not 64 lower-case hex digits",
                    b.path, b.sha256
                ),
            });
        }
    }
}

/// `path` as a path when it is absolute; else a `RelativePath` error for it.
fn absolute<'a>(
    image: &str,
    what: &str,
    path: &'a str,
    errs: &mut Vec<ValidationError>,
) -> Option<&'a Path> {
    let p = Path::new(path);
    if !p.is_absolute() {
        errs.push(ValidationError::RelativePath {
            image: image.into(),
            what: what.into(),
            path: path.into(),
        });
        return None;
    }
    Some(p)
}

/// The checks of a file known by its blob: its path's shape only.
fn check_blob_path(image: &str, what: &str, path: &str, errs: &mut Vec<ValidationError>) {
    let Some(p) = absolute(image, what, path, errs) else {
        return;
    };
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        errs.push(ValidationError::Entry {
            entry: format!("image {image}"),
            message: format!("{what} {path} has a '..' component"),
        });
    }
}

fn check_file(image: &str, what: &str, path: &str, roots: &Roots, errs: &mut Vec<ValidationError>) {
    let Some(p) = absolute(image, what, path, errs) else {
        return;
    };
    let outside = |reason: String| ValidationError::OutsideImageRoots {
        image: image.into(),
        what: what.into(),
        path: path.into(),
        reason,
        roots: roots.list(),
    };
    let missing = |message: &str| ValidationError::MissingFile {
        image: image.into(),
        what: what.into(),
        path: path.into(),
        message: message.into(),
    };
    match roots.resolve(p) {
        Ok(_) => {}
        Err(PathError::NotUnderRoots(_)) => errs.push(outside("is not in an image root".into())),
        Err(PathError::OutsideRoot { target, .. }) => errs.push(outside(format!(
            "resolves to {}, outside the image roots",
            target.display()
        ))),
        Err(PathError::DotDot(_)) => errs.push(outside("has a '..' component".into())),
        Err(PathError::NotAFile(_)) => errs.push(missing("not a regular file")),
        Err(PathError::NotFound(_)) => errs.push(missing("no such file")),
    }
}

/// Template errors in images, found at load time rather than when a node boots: the
/// command line and the provision templates (postscript, kickstart ...) are checked
/// fully (syntax, functions, and fields against the boot data model). A provision
/// template value that names a template ([`crate::template::files`]) is looked up in
/// `dirs` and the built-ins, and its errors name the file.
pub fn check_templates(images: &[Image], dirs: &[std::path::PathBuf]) -> Vec<ValidationError> {
    use crate::template::{files, Template};
    let mut errs = Vec::new();
    for im in images {
        let image = if im.name.is_empty() {
            "#?".to_string()
        } else {
            im.name.clone()
        };
        if let Err(e) = Template::parse(&im.cmdline) {
            errs.push(ValidationError::Template {
                image: image.clone(),
                what: "cmdline".into(),
                message: e.to_string(),
            });
        }
        for (name, value) in &im.provision_templates {
            let what = format!("provision_templates.{name}");
            let (src, origin) = match files::resolve(value, dirs) {
                Ok(found) => found,
                Err(message) => {
                    errs.push(ValidationError::Template {
                        image: image.clone(),
                        what,
                        message,
                    });
                    continue;
                }
            };
            if let Err(e) = Template::parse_with_dirs(&src, dirs) {
                let what = match origin {
                    files::Origin::File(p) => format!("{what} (file {})", p.display()),
                    files::Origin::Builtin(_) => format!("{what} (built-in {value})"),
                    files::Origin::Inline => what,
                };
                errs.push(ValidationError::Template {
                    image: image.clone(),
                    what,
                    message: e.to_string(),
                });
            }
        }
    }
    errs
}
