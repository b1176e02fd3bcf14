//! Boot URL building: the one place that knows the URL layout the router serves.
//!
//! [`Endpoints`] are the URLs of one boot (one token); [`UrlSigner`] mints tokens and
//! builds the URLs handed out by DHCP (the iPXE script, firmware for UEFI HTTP boot;
//! it implements [`crate::dhcp::BootUrls`]) and printed by `xboot host show NAME --boot`.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::token::{now_secs, Claims, TokenKey};
use crate::config::ProvisionConfig;
use crate::inventory::Mac;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    base: String,
    token: String,
}

impl Endpoints {
    /// `base_url` is like `http://10.0.0.1:8080` (a trailing `/` is dropped).
    pub fn new(base_url: &str, token: &str) -> Endpoints {
        Endpoints {
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }
    pub fn base_url(&self) -> &str {
        &self.base
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
        self.boot("liveimg")
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
/// else `http://{server_ip}:{port of provision.listen}` (the port left out when 80).
pub fn base_url(cfg: &ProvisionConfig, server_ip: IpAddr) -> String {
    UrlSigner::from_config(cfg, TokenKey::from_secret("")).base_url(server_ip)
}

/// Where a [`UrlSigner`]'s URLs point.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Base {
    /// `provision.advertise_url` (or a URL given by the caller).
    Fixed(String),
    /// `http://{address the request came in on}:{port}`.
    PerServer { port: u16 },
}

/// Mints tokens and builds the boot URLs handed out before any HTTP request exists: by
/// DHCP (it implements [`crate::dhcp::BootUrls`]) and by `xboot host show --boot`.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct UrlSigner {
    base: Base,
    key: TokenKey,
    ttl: Duration,
}

impl UrlSigner {
    /// A signer whose URLs all start with `base_url`.
    pub fn new(base_url: &str, key: TokenKey, ttl: Duration) -> UrlSigner {
        UrlSigner {
            base: Base::Fixed(base_url.trim_end_matches('/').to_string()),
            key,
            ttl,
        }
    }

    /// The signer of the config: URLs under `provision.advertise_url` when set, else
    /// under the address of the server interface each request came in on (see
    /// [`base_url`]); tokens live `provision.token_ttl` seconds.
    pub fn from_config(cfg: &ProvisionConfig, key: TokenKey) -> UrlSigner {
        let ttl = Duration::from_secs(cfg.token_ttl);
        match cfg.advertise_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => UrlSigner::new(url, key, ttl),
            None => {
                let port = cfg
                    .listen
                    .parse::<SocketAddr>()
                    .map(|a| a.port())
                    .unwrap_or(80);
                UrlSigner {
                    base: Base::PerServer { port },
                    key,
                    ttl,
                }
            }
        }
    }

    /// The base URL for clients that reached us at `server`.
    pub fn base_url(&self, server: IpAddr) -> String {
        match &self.base {
            Base::Fixed(url) => url.clone(),
            Base::PerServer { port } => {
                let host = match server {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                };
                match port {
                    80 => format!("http://{host}"),
                    p => format!("http://{host}:{p}"),
                }
            }
        }
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
            self.base_url(server),
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
}
