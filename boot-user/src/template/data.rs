//! The data templates see, named as in Grendel so its templates work unchanged.
//!
//! | name | what |
//! | --- | --- |
//! | `$.host` | `Name ID UID Provision Firmware BootImage Tags TagList Interfaces BootInterface InterfaceBMC`, and the methods `HasTags T...` (all of them) and `HasAnyTags T...` |
//! | `$.nic` | the booting interface: `MAC` (`aa:bb:..`), `IP` (CIDR as written, `10.0.0.5/24`), `CIDR` (the same), `Addr` and `AddrString` (`10.0.0.5`), `FQDN`, `HostName` (the first name of `FQDN`, else the host's name), `ShortName`, `Domain`, `Name` (ifname), `BMC`, `VLAN`, `MTU`, `InterfaceMTU`, `Netmask` (hex, `ffffff00`, as Go prints a mask), `NetmaskString` (`255.255.255.0`), `Gateway`, `DNS` and `DNSList` (lists), `DomainSearch` (list) |
//! | `$.image` (also `$.bootimage`, Grendel's name) | `Name KernelPath InitrdPaths LiveImage CommandLine Verify ProvisionTemplates` |
//! | `$.endpoints` | boot URLs carrying this boot's token: `BaseURL IpxeURL KernelURL InitrdURLs LiveImageURL PostscriptURL CompleteURL RepoURL KickstartURL CloudInitURL UserDataURL MetaDataURL VendorDataURL`, and the methods `InitrdURL N` and `ProvisionURL NAME` |
//! | `$.token` | the boot token |
//! | `$.baseuri` | the server's base URL (`http://10.0.0.1:8080`) |
//! | `$.rootpw` | `provision.root_password` (Grendel: a crypt(3) hash), else empty |
//! | `$.adminSSHPubKeys` | the top-level `admin_ssh_pubkeys` list |
//! | `$.config` | the config as a map (`$.config.provision.listen`), also read by `ConfigValueString "provision.listen"` ... |
//!
//! `$.host.Interfaces` is a list of maps shaped like `$.nic`. `Gateway`, `DNS*`,
//! `DomainSearch` and `InterfaceMTU` come from the DHCP settings ([`Site`]); without
//! them they are empty.
use std::sync::{Arc, OnceLock};

use super::{Method, Value};
use crate::dhcp::settings::HostNet;
use crate::http::urls::Endpoints;
use crate::inventory::{Host, Image, Interface};

/// Site-wide data from the config: what Grendel's templates read besides the
/// inventory.
#[derive(Clone, Debug, Default)]
pub struct Site {
    /// `provision.root_password`.
    pub rootpw: String,
    /// `admin_ssh_pubkeys`.
    pub admin_keys: Vec<String>,
    /// The DHCP view of the booting interface (router, DNS, search, MTU).
    pub net: Option<HostNet>,
    /// The config as a map (`$.config`, and what `ConfigValue*` read); Nil: none.
    pub config: Value,
    /// The templates directories, where `{{ template "NAME" }}` finds other files.
    pub template_dirs: Vec<std::path::PathBuf>,
}

/// The data of one boot: one host, booting from one interface, with one image.
#[derive(Clone, Debug)]
pub struct Data {
    root: Value,
}

impl Data {
    pub fn new(host: &Host, nic: &Interface, image: &Image, endpoints: &Endpoints) -> Data {
        let image_v = image_value(image);
        let mut host_v = host_value(host);
        // A host without a `boot_image` boots `provision.default_image`: the image of
        // this boot is the one it uses.
        if let Value::Map(h) = &mut host_v {
            if host.boot_image.is_empty() && !image.name.is_empty() {
                h.insert("BootImage".into(), Value::from(image.name.as_str()));
            }
        }
        let root = Value::map([
            ("host", host_v),
            ("nic", nic_value(nic)),
            ("image", image_v.clone()),
            ("bootimage", image_v),
            ("endpoints", endpoints_value(endpoints, image.initrd.len())),
            ("token", Value::from(endpoints.token())),
            ("baseuri", Value::from(endpoints.base_url())),
            ("rootpw", Value::from("")),
            ("adminSSHPubKeys", Value::List(Vec::new())),
            ("config", Value::Map(Default::default())),
        ]);
        Data { root }
    }

    /// This data with the site-wide values of `site` (root password, SSH keys, and the
    /// booting interface's DHCP settings).
    pub fn with_site(mut self, site: &Site) -> Data {
        if let Value::Map(root) = &mut self.root {
            root.insert("rootpw".into(), Value::from(site.rootpw.as_str()));
            root.insert(
                "adminSSHPubKeys".into(),
                Value::from(site.admin_keys.clone()),
            );
            if !matches!(site.config, Value::Nil) {
                root.insert("config".into(), site.config.clone());
            }
            if let (Some(net), Some(Value::Map(nic))) = (&site.net, root.get_mut("nic")) {
                net_values(nic, net);
            }
        }
        self
    }

    /// The root value (`$`).
    pub fn value(&self) -> &Value {
        &self.root
    }

    /// A value shaped like every `Data`, that [`super::Template::parse`] checks field
    /// chains against.
    pub fn schema() -> &'static Value {
        static SCHEMA: OnceLock<Value> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            let nic = Interface {
                mac: Some("02:00:00:00:00:01".parse().expect("a MAC")),
                ..Interface::default()
            };
            let bmc = Interface {
                bmc: true,
                ..Interface::default()
            };
            let host = Host {
                interfaces: vec![nic.clone(), bmc],
                ..Host::default()
            };
            let image = Image {
                initrd: vec![String::new()],
                ..Image::default()
            };
            let mut data = Data::new(&host, &nic, &image, &Endpoints::new("http://schema", "t"));
            if let Value::Map(root) = &mut data.root {
                // Any config key may be looked up.
                root.insert("config".into(), Value::map([("*", Value::Nil)]));
                for key in ["image", "bootimage"] {
                    if let Some(Value::Map(im)) = root.get_mut(key) {
                        // Any template name may be looked up.
                        im.insert("ProvisionTemplates".into(), Value::map([("*", Value::Nil)]));
                    }
                }
            }
            data.root
        })
    }
}

fn host_value(h: &Host) -> Value {
    let tags_all = h.tags.clone();
    let tags_any = h.tags.clone();
    let has = |tags: &[String], want: &Value| tags.iter().any(|t| *t == want.to_string());
    let boot_nic = h
        .interfaces
        .iter()
        .find(|n| !n.bmc && n.mac.is_some())
        .map(nic_value)
        .unwrap_or(Value::Nil);
    let bmc_nic = h
        .interfaces
        .iter()
        .find(|n| n.bmc)
        .map(nic_value)
        .unwrap_or(Value::Nil);
    // Grendel v0.2's KSUID when the host came with one, else its id, else its name.
    let uid = [&h.uid, &h.id, &h.name]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or(&h.name);
    Value::map([
        ("Name", Value::from(h.name.as_str())),
        ("ID", Value::from(h.id.as_str())),
        ("UID", Value::from(uid.as_str())),
        ("TagList", Value::from(h.tags.join(","))),
        ("BootInterface", boot_nic),
        ("InterfaceBMC", bmc_nic),
        (
            "HasTags",
            Value::Method(Method(Arc::new(move |a: &[Value]| {
                Ok(Value::Bool(a.iter().all(|w| has(&tags_all, w))))
            }))),
        ),
        (
            "HasAnyTags",
            Value::Method(Method(Arc::new(move |a: &[Value]| {
                Ok(Value::Bool(a.iter().any(|w| has(&tags_any, w))))
            }))),
        ),
        ("Provision", Value::from(h.provision)),
        ("Firmware", Value::from(h.firmware.as_str())),
        ("BootImage", Value::from(h.boot_image.as_str())),
        ("Tags", Value::from(h.tags.clone())),
        (
            "Interfaces",
            Value::List(h.interfaces.iter().map(nic_value).collect()),
        ),
    ])
}

fn nic_value(n: &Interface) -> Value {
    let host_name = n.fqdn.split(',').next().unwrap_or("").to_string();
    let short = host_name.split('.').next().unwrap_or("").to_string();
    let domain = match host_name.split_once('.') {
        Some((_, d)) => d.to_string(),
        None => host_name.clone(),
    };
    let prefix = n.ipv4().map(|c| c.prefix_len()).unwrap_or(0);
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Value::map([
        ("HostName", Value::from(host_name)),
        ("ShortName", Value::from(short)),
        ("Domain", Value::from(domain)),
        ("CIDR", Value::from(n.ip.clone().unwrap_or_default())),
        (
            "AddrString",
            Value::from(n.addr().map(|a| a.to_string()).unwrap_or_default()),
        ),
        ("Netmask", Value::from(format!("{mask:08x}"))),
        (
            "NetmaskString",
            Value::from(std::net::Ipv4Addr::from(mask).to_string()),
        ),
        ("Gateway", Value::from("")),
        ("DNS", Value::List(Vec::new())),
        ("DNSList", Value::List(Vec::new())),
        ("DomainSearch", Value::List(Vec::new())),
        ("InterfaceMTU", Value::Int(n.mtu.into())),
        (
            "MAC",
            Value::from(n.mac.map(|m| m.to_string()).unwrap_or_default()),
        ),
        ("IP", Value::from(n.ip.clone().unwrap_or_default())),
        (
            "Addr",
            Value::from(n.addr().map(|a| a.to_string()).unwrap_or_default()),
        ),
        ("FQDN", Value::from(n.fqdn.as_str())),
        ("Name", Value::from(n.ifname.as_str())),
        ("BMC", Value::from(n.bmc)),
        ("VLAN", Value::from(n.vlan.as_str())),
        ("MTU", Value::Int(n.mtu.into())),
    ])
}

/// Fills the DHCP-derived fields of a `$.nic` map from `net`.
fn net_values(nic: &mut std::collections::BTreeMap<String, Value>, net: &HostNet) {
    let dns: Vec<Value> = net.dns.iter().map(|a| Value::from(a.to_string())).collect();
    let gw = net.router.map(|r| r.to_string()).unwrap_or_default();
    nic.insert("Gateway".into(), Value::from(gw));
    nic.insert("DNS".into(), Value::List(dns.clone()));
    nic.insert("DNSList".into(), Value::List(dns));
    nic.insert(
        "DomainSearch".into(),
        Value::from(net.domain_search.clone()),
    );
    if let (Some(Value::Int(0)), Some(mtu)) = (nic.get("InterfaceMTU"), net.mtu) {
        nic.insert("InterfaceMTU".into(), Value::Int(mtu.into()));
    }
}

fn image_value(im: &Image) -> Value {
    Value::map([
        ("Name", Value::from(im.name.as_str())),
        ("KernelPath", Value::from(im.kernel.as_str())),
        ("InitrdPaths", Value::from(im.initrd.clone())),
        ("LiveImage", Value::from(im.liveimg.as_str())),
        ("CommandLine", Value::from(im.cmdline.as_str())),
        ("Verify", Value::from(im.verify)),
        (
            "ProvisionTemplates",
            Value::Map(
                im.provision_templates
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect(),
            ),
        ),
    ])
}

fn endpoints_value(e: &Endpoints, initrds: usize) -> Value {
    let initrd = e.clone();
    let provision = e.clone();
    Value::map([
        ("BaseURL", Value::from(e.base_url())),
        ("IpxeURL", Value::from(e.ipxe())),
        ("KernelURL", Value::from(e.kernel())),
        (
            "InitrdURLs",
            Value::List((0..initrds).map(|i| Value::from(e.initrd(i))).collect()),
        ),
        ("LiveImageURL", Value::from(e.liveimg())),
        ("PostscriptURL", Value::from(e.postscript())),
        ("CompleteURL", Value::from(e.complete())),
        ("RepoURL", Value::from(e.repo())),
        ("KickstartURL", Value::from(e.kickstart())),
        ("CloudInitURL", Value::from(e.cloud_init())),
        (
            "UserDataURL",
            Value::from(format!("{}user-data", e.cloud_init())),
        ),
        (
            "MetaDataURL",
            Value::from(format!("{}meta-data", e.cloud_init())),
        ),
        (
            "VendorDataURL",
            Value::from(format!("{}vendor-data", e.cloud_init())),
        ),
        (
            "InitrdURL",
            Value::Method(Method(Arc::new(move |a: &[Value]| match a {
                [Value::Int(i)] if *i >= 0 => Ok(Value::from(initrd.initrd(*i as usize))),
                _ => Err("InitrdURL takes one index, e.g. {{ $.endpoints.InitrdURL 0 }}".into()),
            }))),
        ),
        (
            "ProvisionURL",
            Value::Method(Method(Arc::new(move |a: &[Value]| {
                match a {
                [name] => Ok(Value::from(provision.provision(&name.to_string()))),
                _ => Err("ProvisionURL takes one template name, e.g. {{ $.endpoints.ProvisionURL \"postscript\" }}".into()),
            }
            }))),
        ),
    ])
}
