//! The data templates see, named as in Grendel so its templates work unchanged.
//!
//! | name | what |
//! | --- | --- |
//! | `$.host` | `Name ID Provision Firmware BootImage Tags Interfaces` |
//! | `$.nic` | the booting interface: `MAC` (`aa:bb:..`), `IP` (CIDR as written, `10.0.0.5/24`), `Addr` (`10.0.0.5`), `FQDN`, `Name` (ifname), `BMC`, `VLAN`, `MTU` |
//! | `$.image` (also `$.bootimage`, Grendel's name) | `Name KernelPath InitrdPaths LiveImage CommandLine Verify ProvisionTemplates` |
//! | `$.endpoints` | boot URLs carrying this boot's token: `BaseURL IpxeURL KernelURL InitrdURLs LiveImageURL PostscriptURL CompleteURL RepoURL`, and the methods `InitrdURL N` and `ProvisionURL NAME` |
//! | `$.token` | the boot token |
//! | `$.baseuri` | the server's base URL (`http://10.0.0.1:8080`) |
//!
//! `$.host.Interfaces` is a list of maps shaped like `$.nic`.
use std::sync::{Arc, OnceLock};

use super::{Method, Value};
use crate::http::urls::Endpoints;
use crate::inventory::{Host, Image, Interface};

/// The data of one boot: one host, booting from one interface, with one image.
#[derive(Clone, Debug)]
pub struct Data {
    root: Value,
}

impl Data {
    pub fn new(host: &Host, nic: &Interface, image: &Image, endpoints: &Endpoints) -> Data {
        let image_v = image_value(image);
        let root = Value::map([
            ("host", host_value(host)),
            ("nic", nic_value(nic)),
            ("image", image_v.clone()),
            ("bootimage", image_v),
            ("endpoints", endpoints_value(endpoints, image.initrd.len())),
            ("token", Value::from(endpoints.token())),
            ("baseuri", Value::from(endpoints.base_url())),
        ]);
        Data { root }
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
            let nic = Interface::default();
            let host = Host {
                interfaces: vec![nic.clone()],
                ..Host::default()
            };
            let image = Image {
                initrd: vec![String::new()],
                ..Image::default()
            };
            let mut data = Data::new(&host, &nic, &image, &Endpoints::new("http://schema", "t"));
            if let Value::Map(root) = &mut data.root {
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
    Value::map([
        ("Name", Value::from(h.name.as_str())),
        ("ID", Value::from(h.id.as_str())),
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
    Value::map([
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
