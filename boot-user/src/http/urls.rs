//! Boot URL building: the one place that knows the URL layout the router serves.
//!
//! [`Endpoints`] are the URLs of one boot (one token); [`UrlSigner`] mints tokens and
//! builds the URLs handed out by DHCP (the iPXE script, firmware for UEFI HTTP boot;
//! it implements [`crate::dhcp::BootUrls`]) and printed by `xboot host show NAME --boot`.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::token::{now_secs, Claims, TokenKey};
use crate::config::ProvisionConfig;
use crate::inventory::{Host, Interface, Mac};

/// The URLs of one boot. Paths (under the base URL):
///
/// | method | path | what |
/// | --- | --- | --- |
/// | `ipxe()` | `/boot/{token}/ipxe` | the host's iPXE script |
/// | `kernel()` | `/boot/{token}/kernel` | the image's kernel |
/// | `initrd(n)` | `/boot/{token}/initrd-{n}` | the image's n-th initrd (from 0) |
/// | `liveimg()` | `/boot/{token}/liveimg` | the image's live root (squashfs) |
/// | `postscript()` | `/boot/{token}/postscript` | the rendered postscript |
/// | `provision(name)` | `/boot/{token}/provision/{name}` | a rendered provision template |
/// | `complete()` | `/boot/{token}/complete` | POST: provisioning done |
/// | `kickstart()` | `/boot/{token}/kickstart` | the rendered kickstart |
/// | `cloud_init()` | `/boot/{token}/cloud-init/` | NoCloud seed: `user-data`, `meta-data`, `vendor-data` |
/// | `repo()` | `/repo` | static files of `provision.repo_dir` |
///
/// With a segment VIP (`cluster.segment.vip`), `liveimg()` is under the VIP's base URL
/// ([`Endpoints::with_vip`]): dracut fetches the live root from that one URL, so it must
/// name whichever server of the segment is alive when the node gets there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    base: String,
    token: String,
    /// The base URL at the segment's VIP, if it has one.
    vip: Option<String>,
}

impl Endpoints {
    /// `base_url` is like `http://10.0.0.1:8080` (a trailing `/` is dropped).
    pub fn new(base_url: &str, token: &str) -> Endpoints {
        Endpoints {
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            vip: None,
        }
    }
    /// The same boot with the live image under `vip_base_url` (when Some).
    pub fn with_vip(mut self, vip_base_url: Option<&str>) -> Endpoints {
        self.vip = vip_base_url.map(|u| u.trim_end_matches('/').to_string());
        self
    }
    pub fn base_url(&self) -> &str {
        &self.base
    }
    /// The base URL at the segment's VIP, if the host's segment has one.
    pub fn vip_base_url(&self) -> Option<&str> {
        self.vip.as_deref()
    }
    /// These endpoints under the VIP's base URL (the iPXE script's fallbacks), if any.
    pub fn at_vip(&self) -> Option<Endpoints> {
        Some(Endpoints::new(self.vip.as_deref()?, &self.token))
    }
    pub fn token(&self) -> &str {
        &self.token
    }
    fn boot(&self, file: &str) -> String {
        format!("{}/boot/{}/{}", self.base, self.token, file)
    }
    pub fn ipxe(&self) -> String {
        self.boot("ipxe")
    }
    pub fn kernel(&self) -> String {
        self.boot("kernel")
    }
    pub fn initrd(&self, n: usize) -> String {
        self.boot(&format!("initrd-{n}"))
    }
    pub fn liveimg(&self) -> String {
        match &self.vip {
            Some(vip) => format!("{vip}/boot/{}/liveimg", self.token),
            None => self.boot("liveimg"),
        }
    }
    pub fn postscript(&self) -> String {
        self.boot("postscript")
    }
    pub fn provision(&self, name: &str) -> String {
        self.boot(&format!("provision/{name}"))
    }
    pub fn complete(&self) -> String {
        self.boot("complete")
    }
    pub fn kickstart(&self) -> String {
        self.boot("kickstart")
    }
    /// The NoCloud seed base (`ds=nocloud;s=URL`): `user-data`, `meta-data` and
    /// `vendor-data` are under it.
    pub fn cloud_init(&self) -> String {
        self.boot("cloud-init/")
    }
    pub fn repo(&self) -> String {
        format!("{}/repo", self.base)
    }
}

/// The base URL nodes reach the HTTP service at: `provision.advertise_url` when set,
/// else `{scheme}://{host}:{port}` where, with `provision.cert` and `provision.key`, the
/// scheme is `https` and the port the HTTPS listener's, else `http` and
/// `provision.listen`'s (the port left out when it is the scheme's own, 80 or 443), and
/// the host is `provision.hostname` when set, else `server_ip`.
pub fn base_url(cfg: &ProvisionConfig, server_ip: IpAddr) -> String {
    UrlSigner::from_config(cfg, TokenKey::from_secret("")).base_url(server_ip)
}

/// The base URL of a segment VIP: `{scheme}://{vip}:{port}` of the listener a request
/// came in on (`tls`: the HTTPS one), as [`base_url`] makes it without
/// `provision.hostname` and `provision.advertise_url` (they name one server, or a name
/// the VIP does not stand for).
pub fn vip_base_url(cfg: &ProvisionConfig, tls: bool, vip: Ipv4Addr) -> String {
    let port_of = |a: &str, default| a.parse::<SocketAddr>().map_or(default, |a| a.port());
    let base = match cfg.tls_listen_addr().filter(|_| tls) {
        Some(a) => Base::PerServer {
            scheme: "https",
            hostname: None,
            port: port_of(&a, 443),
        },
        None => Base::PerServer {
            scheme: "http",
            hostname: None,
            port: port_of(&cfg.listen, 80),
        },
    };
    base.url(IpAddr::V4(vip))
}

/// The base URL at the VIP of `host`'s segment (cluster mode, `cluster.segment.vip`),
/// which the address of `nic` (the boot interface), else of the host's other interfaces
/// and bonds, decides; for a request on the HTTPS listener when `tls`.
pub fn segment_vip_base_url(
    cfg: &crate::config::Config,
    tls: bool,
    host: &Host,
    nic: &Interface,
) -> Option<String> {
    let cluster = cfg.cluster.as_ref().filter(|c| c.has_vip())?;
    let bonds = host.bond_interfaces().unwrap_or_default();
    let addrs = std::iter::once(nic)
        .chain(host.interfaces.iter())
        .chain(bonds.iter())
        .filter_map(Interface::addr);
    let vip = cluster.vip_for(addrs)?;
    Some(vip_base_url(&cfg.provision, tls, vip))
}

/// Where a [`UrlSigner`]'s URLs point.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Base {
    /// `provision.advertise_url` (or a URL given by the caller).
    Fixed(String),
    /// `{scheme}://{hostname, else the address the request came in on}:{port}`.
    PerServer {
        scheme: &'static str,
        hostname: Option<String>,
        port: u16,
    },
}

impl Base {
    fn url(&self, server: IpAddr) -> String {
        match self {
            Base::Fixed(url) => url.clone(),
            Base::PerServer {
                scheme,
                hostname,
                port,
            } => {
                let host = match (hostname, server) {
                    (Some(h), _) => h.clone(),
                    (None, IpAddr::V4(a)) => a.to_string(),
                    (None, IpAddr::V6(a)) => format!("[{a}]"),
                };
                match (*scheme, port) {
                    ("http", 80) | ("https", 443) => format!("{scheme}://{host}"),
                    (_, p) => format!("{scheme}://{host}:{p}"),
                }
            }
        }
    }
}

/// Mints tokens and builds the boot URLs handed out before any HTTP request exists: by
/// DHCP (it implements [`crate::dhcp::BootUrls`]) and by `xboot host show --boot`.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct UrlSigner {
    base: Base,
    /// Where firmware files for UEFI HTTP boot are: plain HTTP while `provision.listen`
    /// serves it (a firmware rarely trusts a private CA), else as `base`.
    firmware: Base,
    key: TokenKey,
    ttl: Duration,
}

impl UrlSigner {
    /// A signer whose URLs all start with `base_url`.
    pub fn new(base_url: &str, key: TokenKey, ttl: Duration) -> UrlSigner {
        let base = Base::Fixed(base_url.trim_end_matches('/').to_string());
        UrlSigner {
            firmware: base.clone(),
            base,
            key,
            ttl,
        }
    }

    /// The signer of the config: URLs under `provision.advertise_url` when set, else
    /// as [`base_url`] says; tokens live `provision.token_ttl` seconds.
    pub fn from_config(cfg: &ProvisionConfig, key: TokenKey) -> UrlSigner {
        let ttl = Duration::from_secs(cfg.token_ttl);
        if let Some(url) = cfg.advertise_url.as_deref().filter(|u| !u.is_empty()) {
            return UrlSigner::new(url, key, ttl);
        }
        let port_of = |a: &str, default| a.parse::<SocketAddr>().map_or(default, |a| a.port());
        let hostname = cfg.url_hostname().map(str::to_string);
        let plain = Base::PerServer {
            scheme: "http",
            hostname: hostname.clone(),
            port: port_of(&cfg.listen, 80),
        };
        let (base, firmware) = match cfg.tls_listen_addr() {
            Some(tls) => {
                let https = Base::PerServer {
                    scheme: "https",
                    hostname,
                    port: port_of(&tls, 443),
                };
                let firmware = if cfg.plain_http() {
                    plain
                } else {
                    https.clone()
                };
                (https, firmware)
            }
            None => (plain.clone(), plain),
        };
        UrlSigner {
            base,
            firmware,
            key,
            ttl,
        }
    }

    /// The base URL for clients that reached us at `server`.
    pub fn base_url(&self, server: IpAddr) -> String {
        self.base.url(server)
    }

    /// A token for `host` booting from `mac`, valid for the TTL from now.
    pub fn token(&self, host: &str, mac: Mac) -> String {
        self.token_at(host, mac, now_secs())
    }

    /// A token valid for the TTL from `now` (unix seconds).
    pub fn token_at(&self, host: &str, mac: Mac, now: u64) -> String {
        let expires = now.saturating_add(self.ttl.as_secs());
        self.key.sign(&Claims {
            host: host.to_string(),
            mac,
            expires,
        })
    }

    /// All URLs of one boot of `host` from `mac`, with a fresh token.
    pub fn endpoints(&self, host: &str, mac: Mac, server: IpAddr) -> Endpoints {
        Endpoints::new(&self.base_url(server), &self.token(host, mac))
    }

    /// The URL of `host`'s iPXE script, for DHCP answers to iPXE clients.
    pub fn ipxe_script_url(&self, host: &str, mac: Mac, server: IpAddr) -> String {
        self.endpoints(host, mac, server).ipxe()
    }

    /// The URL of a firmware file (an EFI iPXE binary) for UEFI HTTP boot. No token:
    /// the firmware fetches it before it can run anything.
    pub fn firmware_url(&self, file: &str, server: IpAddr) -> String {
        format!(
            "{}/firmware/{}",
            self.firmware.url(server),
            file.trim_start_matches('/')
        )
    }
}

impl crate::dhcp::BootUrls for UrlSigner {
    fn ipxe_script(&self, host: &crate::inventory::Host, mac: Mac, server: Ipv4Addr) -> String {
        self.ipxe_script_url(&host.name, mac, IpAddr::V4(server))
    }
    fn http_firmware(&self, file: &str, server: Ipv4Addr) -> String {
        self.firmware_url(file, IpAddr::V4(server))
    }
    fn base_url(&self, server: Ipv4Addr) -> String {
        UrlSigner::base_url(self, IpAddr::V4(server))
    }
    fn token(&self, host: &crate::inventory::Host, mac: Mac) -> String {
        UrlSigner::token(self, &host.name, mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut cfg = ProvisionConfig::default();
        assert_eq!(base_url(&cfg, ip), "http://10.0.0.1");
        cfg.listen = "0.0.0.0:8080".into();
        assert_eq!(base_url(&cfg, ip), "http://10.0.0.1:8080");
        assert_eq!(
            base_url(&cfg, "fd00::1".parse().unwrap()),
            "http://[fd00::1]:8080"
        );
        cfg.advertise_url = Some("https://boot.example.com/".into());
        assert_eq!(base_url(&cfg, ip), "https://boot.example.com");
    }

    /// Grendel's keys: `hostname` names the server in every URL; with `cert` and `key`
    /// the URLs are https on the HTTPS listener, except UEFI HTTP boot's firmware while
    /// `listen` serves plain HTTP.
    #[test]
    fn https_and_hostname_urls() {
        use crate::dhcp::BootUrls;
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        let mut cfg = ProvisionConfig {
            hostname: Some("boot.lan".into()),
            ..ProvisionConfig::default()
        };
        let urls = |cfg: &ProvisionConfig| {
            let s = UrlSigner::from_config(cfg, TokenKey::from_secret("k"));
            (s.base_url(IpAddr::V4(ip)), s.http_firmware("ipxe.efi", ip))
        };
        assert_eq!(
            urls(&cfg),
            (
                "http://boot.lan".into(),
                "http://boot.lan/firmware/ipxe.efi".into()
            )
        );
        cfg.cert = Some("c.pem".into());
        assert_eq!(
            urls(&cfg).0,
            "http://boot.lan",
            "a cert without a key is no TLS"
        );
        cfg.key = Some("k.pem".into());
        assert_eq!(
            urls(&cfg),
            (
                "https://boot.lan".into(),
                "http://boot.lan/firmware/ipxe.efi".into()
            )
        );
        cfg.tls_listen = Some("0.0.0.0:8443".into());
        cfg.hostname = None;
        assert_eq!(
            urls(&cfg),
            (
                "https://10.0.0.1:8443".into(),
                "http://10.0.0.1/firmware/ipxe.efi".into()
            )
        );
        // Port 0 names two listeners, each on a free port.
        cfg.listen = "127.0.0.1:0".into();
        cfg.tls_listen = Some("127.0.0.1:0".into());
        assert!(cfg.plain_http());
        // Grendel's HTTPS setup: one listener, on 443, HTTPS only.
        cfg.tls_listen = None;
        cfg.listen = "0.0.0.0:443".into();
        assert!(!cfg.plain_http());
        assert_eq!(
            urls(&cfg),
            (
                "https://10.0.0.1".into(),
                "https://10.0.0.1/firmware/ipxe.efi".into()
            )
        );
        cfg.advertise_url = Some("https://boot.example.com".into());
        assert_eq!(urls(&cfg).0, "https://boot.example.com");
    }

    #[test]
    fn signer_urls() {
        use crate::dhcp::BootUrls;
        let key = TokenKey::from_secret("k");
        let s = UrlSigner::new(
            "http://10.0.0.1:8080/",
            key.clone(),
            Duration::from_secs(60),
        );
        let mac: Mac = "aa:bb:cc:11:22:33".parse().unwrap();
        let host = crate::inventory::Host {
            name: "cn1".into(),
            ..Default::default()
        };
        let url = s.ipxe_script(&host, mac, Ipv4Addr::new(192, 0, 2, 1));
        let token = url
            .strip_prefix("http://10.0.0.1:8080/boot/")
            .unwrap()
            .strip_suffix("/ipxe")
            .unwrap();
        let claims = key.verify(token, now_secs()).unwrap();
        assert_eq!((claims.host.as_str(), claims.mac), ("cn1", mac));
        assert!(claims.expires >= now_secs() + 59);
        assert_eq!(
            s.http_firmware("ipxe.efi", Ipv4Addr::LOCALHOST),
            "http://10.0.0.1:8080/firmware/ipxe.efi"
        );
        let mut cfg = ProvisionConfig {
            listen: "0.0.0.0:8080".into(),
            ..ProvisionConfig::default()
        };
        let per_server = UrlSigner::from_config(&cfg, key.clone());
        assert_eq!(
            per_server.http_firmware("snponly.efi", Ipv4Addr::new(10, 9, 0, 1)),
            "http://10.9.0.1:8080/firmware/snponly.efi"
        );
        assert!(per_server
            .ipxe_script(&host, mac, Ipv4Addr::new(10, 9, 0, 1))
            .starts_with("http://10.9.0.1:8080/boot/"));
        cfg.advertise_url = Some("http://boot.lan".into());
        let fixed = UrlSigner::from_config(&cfg, key);
        assert_eq!(
            fixed.http_firmware("x.efi", Ipv4Addr::new(10, 9, 0, 1)),
            "http://boot.lan/firmware/x.efi"
        );
        let e = Endpoints::new("http://h", "T");
        assert_eq!(e.initrd(1), "http://h/boot/T/initrd-1");
        assert_eq!(
            e.provision("postscript"),
            "http://h/boot/T/provision/postscript"
        );
        assert_eq!(e.repo(), "http://h/repo");
    }

    /// The VIP of a host is its boot interface's segment's, else that of its first
    /// other address in a segment; none in standalone mode or a segment without one.
    #[test]
    fn a_hosts_segment_vip_base_url() {
        let mut cfg: crate::config::Config = toml::from_str(
            r#"
            [provision]
            listen = "0.0.0.0:8080"
            [cluster]
            endpoints = ["http://10.0.0.1:2379"]
            [[cluster.segment]]
            name = "A"
            subnets = ["10.1.0.0/24"]
            vip = "10.1.0.250"
            [[cluster.segment]]
            name = "B"
            subnets = ["10.2.0.0/24"]
            "#,
        )
        .unwrap();
        let nic = |ip: Option<&str>| Interface {
            mac: Some("02:00:00:00:00:01".parse().unwrap()),
            ip: ip.map(str::to_string),
            ..Interface::default()
        };
        let host = |nics: Vec<Interface>| Host {
            name: "cn1".into(),
            interfaces: nics,
            ..Host::default()
        };
        let a = host(vec![nic(Some("10.1.0.7/24"))]);
        let vip = |h: &Host, n: &Interface, cfg: &crate::config::Config| {
            segment_vip_base_url(cfg, false, h, n)
        };
        assert_eq!(
            vip(&a, &a.interfaces[0], &cfg).as_deref(),
            Some("http://10.1.0.250:8080")
        );
        let b = host(vec![nic(Some("10.2.0.7/24")), nic(Some("10.1.0.7/24"))]);
        assert_eq!(vip(&b, &b.interfaces[0], &cfg), None, "B has no VIP");
        let bare = host(vec![nic(None), nic(Some("10.1.0.8/24"))]);
        assert_eq!(
            vip(&bare, &bare.interfaces[0], &cfg).as_deref(),
            Some("http://10.1.0.250:8080"),
            "a boot NIC without an address: the host's other addresses"
        );
        cfg.cluster = None;
        assert_eq!(vip(&a, &a.interfaces[0], &cfg), None);
    }

    /// With a VIP only the live image moves to it; the fallbacks are every URL at it.
    #[test]
    fn vip_endpoints() {
        let e = Endpoints::new("http://10.0.0.1:8080", "T");
        assert_eq!(e.liveimg(), "http://10.0.0.1:8080/boot/T/liveimg");
        assert_eq!(e.at_vip(), None);
        let e = e.with_vip(Some("http://10.0.0.250:8080/"));
        assert_eq!(e.liveimg(), "http://10.0.0.250:8080/boot/T/liveimg");
        assert_eq!(e.kernel(), "http://10.0.0.1:8080/boot/T/kernel");
        assert_eq!(e.complete(), "http://10.0.0.1:8080/boot/T/complete");
        assert_eq!(e.vip_base_url(), Some("http://10.0.0.250:8080"));
        let v = e.at_vip().unwrap();
        assert_eq!(v.kernel(), "http://10.0.0.250:8080/boot/T/kernel");
        assert_eq!(v.initrd(0), "http://10.0.0.250:8080/boot/T/initrd-0");

        let vip = Ipv4Addr::new(10, 0, 0, 250);
        let mut cfg = ProvisionConfig {
            listen: "0.0.0.0:8080".into(),
            hostname: Some("boot.lan".into()),
            advertise_url: Some("http://boot.lan".into()),
            ..ProvisionConfig::default()
        };
        assert_eq!(vip_base_url(&cfg, false, vip), "http://10.0.0.250:8080");
        cfg.listen = "0.0.0.0:80".into();
        assert_eq!(vip_base_url(&cfg, false, vip), "http://10.0.0.250");
        cfg.cert = Some("c.pem".into());
        cfg.key = Some("k.pem".into());
        cfg.tls_listen = Some("0.0.0.0:8443".into());
        assert_eq!(vip_base_url(&cfg, true, vip), "https://10.0.0.250:8443");
        assert_eq!(vip_base_url(&cfg, false, vip), "http://10.0.0.250");
    }
}
