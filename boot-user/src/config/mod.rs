//! `xboot serve --config FILE`: a TOML file that is a superset of Grendel's grendel.toml.
//!
//! Every grendel.toml key loads. Keys xboot does not implement are reported by
//! [`Config::warnings`] (logged at start and by `check-config`), never silently dropped.
//! xboot's own keys sit beside Grendel's; every key is documented in config/README.md.
pub mod overrides;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod check;

pub mod cluster;
pub use check::{parse_go_duration, Problem};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML at all.
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Every value of the wrong type or impossible, each naming its key.
    #[error("invalid config {path}: {}", list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} problems:", many.len());
            for p in many {
                s.push_str(&format!("\n  - {p}"));
            }
            s
        }
    }
}

/// Where xboot keeps its state when `state_dir` is not set.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/xboot";

/// `interface = "eth0"` or `interface = ["eth0", "eth1"]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Interfaces {
    #[default]
    All,
    One(String),
    Many(Vec<String>),
}

impl Interfaces {
    /// The named interfaces, or an empty list meaning "all".
    pub fn names(&self) -> Vec<String> {
        match self {
            Interfaces::All => vec![],
            Interfaces::One(s) => vec![s.clone()],
            Interfaces::Many(v) => v.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    // --- Grendel keys (top level) ---
    /// Grendel's database path; xboot uses `state_dir` instead (warned if not :memory:).
    pub dbpath: Option<String>,
    pub loggers: Option<toml::Table>,
    pub admin_ssh_pubkeys: Option<Vec<String>>,
    // --- xboot keys (top level) ---
    /// NIC(s) to serve DHCP on and attach XDP to; absent = all (userspace only).
    #[serde(skip_serializing_if = "is_all")]
    pub interface: Interfaces,
    /// Where xboot keeps its inventory store, token secret and boot events.
    pub state_dir: Option<PathBuf>,
    /// Inventory files (Grendel hosts.json / images.json or TOML) loaded at start.
    pub hosts: Option<PathBuf>,
    pub images: Option<PathBuf>,

    pub dhcp: DhcpConfig,
    /// Grendel's DNS server: served when the section is present (see [`DnsConfig`]).
    pub dns: Option<DnsConfig>,
    pub tftp: TftpConfig,
    pub pxe: PxeConfig,
    pub provision: ProvisionConfig,
    pub api: ApiConfig,
    pub client: Option<toml::Table>,
    pub bmc: BmcConfig,
    pub discovery: Option<toml::Table>,
    /// Cluster mode (xboot): the inventory is kept in etcd and shared by many servers.
    pub cluster: Option<cluster::ClusterConfig>,

    /// Unknown keys anywhere in the file, collected for warnings.
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
}

fn is_all(i: &Interfaces) -> bool {
    *i == Interfaces::All
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// XDP fast path for known hosts, userspace for the rest. The default: when the
    /// program cannot be loaded or attached, the default falls back to userspace with a
    /// warning naming the reason, and an explicit `mode = "xdp"` is an error (see
    /// [`DhcpConfig::mode_explicit`]).
    #[default]
    Xdp,
    /// Userspace only.
    Userspace,
    /// No DHCP at all (another server hands out addresses).
    Off,
}

/// One entry of `dhcp.subnets` (Grendel): the gateway with prefix gives the subnet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubnetConfig {
    /// `192.168.0.1/24`: router address and subnet.
    pub gateway: String,
    /// Comma-separated DNS servers for this subnet.
    pub dns: String,
    #[serde(rename = "domainSearch")]
    pub domain_search: String,
    /// Grendel writes it as a string.
    pub mtu: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct DhcpConfig {
    pub listen: String,
    /// Go duration syntax (`24h`, `90m`) as in grendel.toml.
    pub lease_time: String,
    pub dns_servers: Vec<String>,
    pub domain_search: Vec<String>,
    pub mtu: u16,
    pub proxy_only: bool,
    /// Last octet of the router in each host's subnet; 0 = no router option.
    pub router_octet4: u8,
    /// Explicit router (xboot; overrides router_octet4).
    pub router: Option<Ipv4Addr>,
    /// Grendel's static gateway: the router of hosts that neither their subnet, nor
    /// `router`, nor `router_octet4` gives one (Grendel's order: subnet, octet, gateway).
    pub gateway: Option<Ipv4Addr>,
    pub subnets: Vec<SubnetConfig>,
    pub mode: DhcpMode,
    /// Set when the file or the environment names `dhcp.mode` (not a key): an explicit
    /// `xdp` that cannot run stops the server, the default falls back to userspace.
    #[serde(skip)]
    pub mode_explicit: bool,
    /// Max unknown-MAC log lines per MAC per this many seconds (xboot).
    pub unknown_log_interval_secs: u64,
    /// Boot interfaces (MACs) the XDP maps are sized for at start (xboot): they cannot
    /// grow while the program runs. 0: twice the inventory's at start, at least 1,024.
    pub xdp_max_hosts: u32,
    /// The declarative option table (xboot): options and the replies that carry them.
    pub options: Vec<DhcpOptionConfig>,
    /// Grendel's vendor hooks turned on, by name (`crate::dhcp::options::PRESETS`).
    pub presets: Vec<String>,
}

/// One `[[dhcp.options]]` entry: one option (`code` and exactly one value key) and the
/// conditions a reply must meet to carry it (all that are given; none: every lease).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DhcpOptionConfig {
    pub code: i64,
    /// A network (`10.0.0.0/24`) holding the host's address.
    pub subnet: Option<String>,
    /// A node set of host names (`cn[1-4],login`).
    pub hosts: Option<String>,
    /// A tag the host carries.
    pub tag: Option<String>,
    /// Option 60 equal to this (a trailing `*`: starting with it).
    pub vendor_class: Option<String>,
    /// An entry of option 77 equal to this.
    pub user_class: Option<String>,
    /// Option 93 (the client's architecture).
    pub arch: Option<i64>,
    /// Only hosts whose `provision` is this.
    pub provisioned: Option<bool>,
    pub text: Option<String>,
    pub ip: Option<Vec<String>>,
    pub hex: Option<String>,
    pub u8: Option<i64>,
    pub u16: Option<i64>,
    pub u32: Option<i64>,
    #[serde(rename = "bool")]
    pub boolean: Option<bool>,
    /// A boot URL of the host: `{base}/boot/{token}/{url}` (`kickstart`, `provision/NAME`).
    pub url: Option<String>,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:67".into(),
            lease_time: "24h".into(),
            dns_servers: vec![],
            domain_search: vec![],
            mtu: 1500,
            proxy_only: false,
            router_octet4: 0,
            router: None,
            gateway: None,
            subnets: vec![],
            mode: DhcpMode::default(),
            mode_explicit: false,
            unknown_log_interval_secs: 60,
            xdp_max_hosts: 0,
            options: vec![],
            presets: crate::dhcp::options::DEFAULT_PRESETS
                .iter()
                .map(|p| p.to_string())
                .collect(),
        }
    }
}

impl DhcpConfig {
    /// `lease_time`, checked against [`check::LEASE_SECS`].
    pub fn lease_duration(&self) -> Result<Duration, String> {
        check::lease_time(&self.lease_time)
    }
}

/// `dns.forward`: Grendel writes one `"1.1.1.1:53"`; xboot also takes a list (or a
/// comma-separated string). The port defaults to 53.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Upstreams {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Upstreams {
    /// The upstream servers as written (items of a comma-separated string split).
    pub fn items(&self) -> Vec<&str> {
        match self {
            Upstreams::None => vec![],
            Upstreams::One(s) => check::split_list(s).collect(),
            Upstreams::Many(v) => v.iter().flat_map(|s| check::split_list(s)).collect(),
        }
    }
}

/// `[dns]`: the authoritative DNS server for the inventory's names (module `dns`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsConfig {
    /// UDP and TCP address; empty = no DNS server.
    pub listen: String,
    /// TTL of every record served, seconds.
    pub ttl: u32,
    /// Upstream servers for names outside the served zones.
    #[serde(skip_serializing_if = "is_no_upstream")]
    pub forward: Upstreams,
    /// Zones served besides those derived from the fqdns and subnets (xboot).
    pub zones: Vec<String>,
    /// The name in the zones' SOA and NS records (xboot); absent: `ns.<zone>`.
    pub nameserver: Option<String>,
    /// TCP connections held at once (xboot).
    pub max_tcp_connections: usize,
    /// Forwarded queries awaiting an upstream answer at once (xboot).
    pub max_forwarded: usize,
    /// How long one upstream has to answer, milliseconds (xboot).
    pub forward_timeout_ms: u64,
    /// Largest UDP answer sent, whatever a client's EDNS buffer says (xboot).
    pub max_udp_payload: u16,
}

fn is_no_upstream(u: &Upstreams) -> bool {
    u.items().is_empty()
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:53".into(),
            ttl: 300,
            forward: Upstreams::None,
            zones: vec![],
            nameserver: None,
            max_tcp_connections: 128,
            max_forwarded: 256,
            forward_timeout_ms: 2000,
            max_udp_payload: 1232,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TftpConfig {
    pub listen: String,
    /// Directory the iPXE binaries are served from (xboot; default: the first of
    /// [`FIRMWARE_DIRS`] that exists).
    pub root: PathBuf,
    /// Transfers in progress at most (xboot): each holds a socket and a block buffer.
    pub max_transfers: usize,
    /// Transfers in progress at most per client address (xboot).
    pub max_per_client: usize,
    /// A transfer is cut off after this many seconds (xboot).
    pub max_transfer_secs: u64,
}

/// Where the default `tftp.root` is looked for: the iPXE bundle of xboot's Debian
/// package and OCI image, then Debian's `ipxe` package.
pub const FIRMWARE_DIRS: [&str; 2] = ["/usr/share/xboot/firmware", "/usr/lib/ipxe"];

/// The first of [`FIRMWARE_DIRS`] that is a directory (the last if none is).
pub fn default_firmware_root() -> PathBuf {
    let found = FIRMWARE_DIRS.iter().find(|d| Path::new(d).is_dir());
    PathBuf::from(found.unwrap_or(&FIRMWARE_DIRS[FIRMWARE_DIRS.len() - 1]))
}

impl Default for TftpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:69".into(),
            root: default_firmware_root(),
            max_transfers: 4096,
            max_per_client: 8,
            max_transfer_secs: 120,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct PxeConfig {
    pub listen: String,
}

impl Default for PxeConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:4011".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ProvisionConfig {
    /// Plain HTTP listener; with `cert` and `key` it stays plain (firmware without TLS)
    /// unless it is the HTTPS listener itself ([`ProvisionConfig::tls_listen_addr`]).
    pub listen: String,
    /// Grendel: the host name in the boot URLs handed out (it should match the
    /// certificate and resolve); absent: the address of the interface a request came in on.
    pub hostname: Option<String>,
    /// Grendel: PEM certificate chain (the server's certificate first) and its key;
    /// both set: boot files over HTTPS (module `tls`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The HTTPS listener (xboot). Absent: `listen`'s address on port 443.
    pub tls_listen: Option<String>,
    /// Lifetime of boot-URL tokens, seconds.
    pub token_ttl: u64,
    pub root_password: Option<String>,
    pub default_image: Option<String>,
    /// Served at /repo/*.
    pub repo_dir: PathBuf,
    /// Token signing secret (xboot). Absent: generated once and kept in state_dir.
    pub secret: Option<String>,
    /// Base URL nodes use to reach the HTTP server (xboot). Absent: derived from the
    /// address of the interface the DHCP request came in on and the listen port.
    pub advertise_url: Option<String>,
    /// Postscript template served to booted nodes (xboot); an image's
    /// provision_templates["postscript"] takes precedence.
    pub postscript: Option<PathBuf>,
    /// Directory of extra firmware for UEFI HTTP boot (defaults to tftp.root).
    pub firmware_dir: Option<PathBuf>,
    /// Directories every image file (kernel, initrd, live image, signatures) must be in,
    /// symlinks followed (xboot): an image naming a file elsewhere does not validate,
    /// and nothing outside them is served.
    pub image_roots: Vec<PathBuf>,
    /// Connections the HTTP server holds open at once (xboot). Absent: 4096, or a
    /// quarter of the open-files limit if that is less (a download holds a socket and a
    /// file).
    pub max_connections: Option<usize>,
    /// Connections open at once from one IP address (xboot); 0 = no per-address cap. A
    /// booting node holds one or two.
    pub max_connections_per_source: usize,
    /// Seconds a client has to send a whole request head (xboot), counted from accept
    /// and again from the end of each response on a kept-alive connection.
    pub header_timeout_secs: u64,
    /// Seconds a connection may stay without a byte moving either way while no handler
    /// works on its request (xboot): a client that stopped reading its download.
    pub idle_timeout_secs: u64,
    /// Serve `/metrics` (Prometheus text, no authentication) on this listener (xboot).
    /// Off for boot networks where counters are not for everyone.
    pub metrics: bool,
    /// Directory of provision template files (`NAME.tmpl`) that `provision_templates`
    /// values name. Absent: `/var/lib/xboot/templates`, then Grendel's
    /// `/var/lib/grendel/templates` when it exists.
    pub templates_dir: Option<PathBuf>,
}

/// Two listen addresses that are one listener (port 0 is a new free port each time).
fn same_addr(a: &str, b: &str) -> bool {
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(a), Ok(b)) => a == b && a.port() != 0,
        _ => a == b,
    }
}

/// Where template files are looked up when `provision.templates_dir` is not set.
pub const DEFAULT_TEMPLATES_DIR: &str = "/var/lib/xboot/templates";
/// Grendel's templates directory, also searched by default when it exists.
pub const GRENDEL_TEMPLATES_DIR: &str = "/var/lib/grendel/templates";

/// Grendel's image directory (its guide's images.json names files there) and xboot's.
pub const DEFAULT_IMAGE_ROOTS: [&str; 2] = ["/var/lib/grendel", "/var/lib/xboot/images"];

/// A path key that is set and not empty (Grendel's samples write `""` for unset).
fn set_path(p: &Option<PathBuf>) -> Option<&Path> {
    p.as_deref().filter(|p| !p.as_os_str().is_empty())
}

impl ProvisionConfig {
    /// `cert` and `key`, when both are set: boot files are served over HTTPS.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        Some((set_path(&self.cert)?, set_path(&self.key)?))
    }

    /// The HTTPS listener's address when `cert` and `key` are set: `tls_listen`, else
    /// `listen`'s address on port 443.
    pub fn tls_listen_addr(&self) -> Option<String> {
        self.tls_files()?;
        match self.tls_listen.as_deref().filter(|a| !a.is_empty()) {
            Some(a) => Some(a.to_string()),
            None => {
                let mut a: SocketAddr = self.listen.parse().ok()?;
                a.set_port(443);
                Some(a.to_string())
            }
        }
    }

    /// Whether `listen` serves plain HTTP: always, except when it is the HTTPS listener
    /// too (Grendel's HTTPS setup: `listen = "0.0.0.0:443"` with `cert` and `key`).
    pub fn plain_http(&self) -> bool {
        self.tls_listen_addr()
            .is_none_or(|tls| !same_addr(&tls, &self.listen))
    }

    /// The host name of the boot URLs (`hostname`), when set.
    pub fn url_hostname(&self) -> Option<&str> {
        self.hostname.as_deref().filter(|h| !h.is_empty())
    }

    /// `image_roots`, to check paths against.
    pub fn image_roots(&self) -> crate::tftp::root::Roots {
        crate::tftp::root::Roots::new(self.image_roots.iter().cloned())
            .with_templates(self.template_dirs())
    }

    /// The templates directories in lookup order: `templates_dir`, else
    /// [`DEFAULT_TEMPLATES_DIR`] and [`GRENDEL_TEMPLATES_DIR`] if it is a directory.
    pub fn template_dirs(&self) -> Vec<PathBuf> {
        match &self.templates_dir {
            Some(d) => vec![d.clone()],
            None => std::iter::once(PathBuf::from(DEFAULT_TEMPLATES_DIR))
                .chain(crate::template::files::if_dir(std::path::Path::new(
                    GRENDEL_TEMPLATES_DIR,
                )))
                .collect(),
        }
    }
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:80".into(),
            hostname: None,
            cert: None,
            key: None,
            tls_listen: None,
            token_ttl: 3600,
            root_password: None,
            default_image: None,
            repo_dir: PathBuf::from("/var/lib/xboot/repo"),
            secret: None,
            advertise_url: None,
            postscript: None,
            firmware_dir: None,
            image_roots: DEFAULT_IMAGE_ROOTS.iter().map(PathBuf::from).collect(),
            max_connections: None,
            max_connections_per_source: 64,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            metrics: true,
            templates_dir: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    pub socket_path: PathBuf,
    /// Optional TCP listener (xboot), protected by `token`.
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
    /// Grendel: PEM certificate chain and key; both set: the TCP listener speaks TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Connections each API listener (unix socket, TCP) holds open at once (xboot).
    /// Absent: 256, or a sixteenth of the open-files limit if that is less.
    pub max_connections: Option<usize>,
    /// Connections open at once from one IP address on the TCP listener (xboot); 0 =
    /// no per-address cap.
    pub max_connections_per_source: usize,
    /// As `provision.header_timeout_secs`, for the API (xboot).
    pub header_timeout_secs: u64,
    /// As `provision.idle_timeout_secs`, for the API (xboot).
    pub idle_timeout_secs: u64,
}

impl ApiConfig {
    /// `cert` and `key`, when both are set: the TCP listener speaks TLS.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        Some((set_path(&self.cert)?, set_path(&self.key)?))
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from("/var/run/xboot/xboot-api.socket"),
            listen: None,
            token: None,
            cert: None,
            key: None,
            max_connections: None,
            max_connections_per_source: 64,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct BmcConfig {
    pub user: String,
    pub password: String,
    /// `ipmi` (default) or `redfish` (xboot).
    pub protocol: String,
    /// Parallel BMC sessions (xboot).
    pub concurrency: usize,
    /// Per-attempt timeout, milliseconds (xboot).
    pub timeout_ms: u64,
    pub retries: u32,
    /// Redfish: accept self-signed certificates (xboot).
    pub insecure: bool,
    /// Grendel's power-on stagger: at most `fanout` BMCs are told to power on (on, cycle,
    /// reset) per `delay` seconds. 0 in either: off (every BMC at once, within
    /// `concurrency`).
    pub fanout: usize,
    /// Seconds of the stagger window (see `fanout`).
    pub delay: u64,
}

impl Default for BmcConfig {
    fn default() -> Self {
        Self {
            user: String::new(),
            password: String::new(),
            protocol: "ipmi".into(),
            concurrency: 1024,
            timeout_ms: 1000,
            retries: 3,
            insecure: false,
            fanout: 0,
            delay: 0,
        }
    }
}

impl Config {
    /// Parses a config file's text. `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let mut unknown = Vec::new();
        let typed: Result<Config, toml::de::Error> =
            // An optional section's path has a `?` step (`dns.?.colour`): not shown.
            serde_ignored::deserialize(value.clone(), |p| {
                unknown.push(p.to_string().replace(".?", ""))
            });
        let (mut problems, mut cfg) = match typed {
            Ok(cfg) => (Vec::new(), Some(cfg)),
            Err(e) => {
                // Name every value of the wrong type, then check the others.
                let (mut problems, rest) = check::type_problems(&value);
                if problems.is_empty() {
                    problems.push(Problem {
                        key: "(file)".into(),
                        message: e.message().to_string(),
                    });
                }
                (problems, rest.try_into::<Config>().ok())
            }
        };
        if let Some(c) = cfg.as_mut() {
            c.dhcp.mode_explicit = value.get("dhcp").and_then(|d| d.get("mode")).is_some();
        }
        if let Some(cfg) = &cfg {
            // A value taken out for its type is at its default now: not reported again.
            let typed: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
            let under = |key: &str, t: &str| {
                key.strip_prefix(t)
                    .is_some_and(|r| r.is_empty() || r.starts_with(['.', '[']))
            };
            problems.extend(
                check::value_problems(cfg)
                    .into_iter()
                    .filter(|p| !typed.iter().any(|t| under(&p.key, t))),
            );
        }
        match cfg {
            Some(mut cfg) if problems.is_empty() => {
                cfg.unknown_keys = unknown;
                Ok(cfg)
            }
            _ => Err(ConfigError::Invalid {
                path: path.into(),
                problems,
            }),
        }
    }

    /// Reads and checks a config file. Relative paths in it are taken relative to the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let text = Self::with_env_overrides(&text, path, std::env::vars())?;
        let mut cfg = Self::from_toml(&text, path)?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(dir) = abs.parent() {
            cfg.resolve_relative(dir);
        }
        Ok(cfg)
    }

    /// The file's text with the `XBOOT_*` / `GRENDEL_*` environment overrides applied
    /// ([`overrides`]); the text itself when none applies.
    pub fn with_env_overrides(
        text: &str,
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<String, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.into(),
            message,
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let applied = overrides::apply_env(&mut value, vars).map_err(parse_err)?;
        if applied.is_empty() {
            return Ok(text.to_string());
        }
        for a in &applied {
            tracing::info!("config key {} set by the environment ({})", a.key, a.var);
        }
        toml::to_string(&value).map_err(|e| parse_err(e.to_string()))
    }

    /// Makes every relative path key absolute against `base` (the config file's directory).
    pub fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p).components().collect();
            }
        };
        for p in [&mut self.state_dir, &mut self.hosts, &mut self.images]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
        for p in [
            &mut self.provision.postscript,
            &mut self.provision.firmware_dir,
            &mut self.provision.templates_dir,
            &mut self.provision.cert,
            &mut self.provision.key,
            &mut self.api.cert,
            &mut self.api.key,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        fix(&mut self.tftp.root);
        fix(&mut self.provision.repo_dir);
        self.provision.image_roots.iter_mut().for_each(fix);
        fix(&mut self.api.socket_path);
        if let Some(c) = &mut self.cluster {
            for p in [&mut c.ca_file, &mut c.cert_file, &mut c.key_file]
                .into_iter()
                .flatten()
            {
                fix(p);
            }
        }
    }

    /// `state_dir`, or its default.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// Human-readable warnings: unknown keys and Grendel keys xboot does not implement.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .unknown_keys
            .iter()
            .map(|k| format!("unknown config key {k:?} ignored"))
            .collect();
        let unimpl =
            |key: &str, why: &str| format!("config key {key} is not implemented by xboot: {why}");
        if let Some(db) = &self.dbpath {
            if db != ":memory:" {
                w.push(unimpl(
                    "dbpath",
                    "the inventory store lives under state_dir",
                ));
            }
        }
        if self.loggers.is_some() {
            w.push(unimpl(
                "loggers",
                "use RUST_LOG / --log-level to filter log targets",
            ));
        }
        if self.client.is_some() {
            w.push(unimpl(
                "[client]",
                "the CLI uses --socket / api.socket_path",
            ));
        }
        if self.discovery.is_some() {
            w.push(unimpl(
                "[discovery]",
                "unknown MACs are listed by `xboot discovered`",
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("24h").unwrap(),
            Duration::from_secs(86400)
        );
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("3600").unwrap(),
            Duration::from_secs(3600)
        );
        assert!(parse_go_duration("3 days").is_err());
        assert!(parse_go_duration("").is_err());
    }

    fn config_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
    }

    #[test]
    fn guide_grendel_toml_loads_with_warnings() {
        let cfg = Config::load(&config_dir().join("grendel.toml")).unwrap();
        assert_eq!(
            cfg.dhcp.lease_duration().unwrap(),
            Duration::from_secs(86400)
        );
        assert_eq!(cfg.dhcp.subnets[0].gateway, "192.168.0.1/24");
        assert_eq!(cfg.dhcp.subnets[0].domain_search, "example.com");
        assert_eq!(cfg.dhcp.router_octet4, 0);
        assert_eq!(cfg.provision.token_ttl, 3600);
        assert_eq!(
            cfg.api.socket_path,
            Path::new("/var/run/grendel/grendel-api.socket")
        );
        assert!(cfg.unknown_keys.is_empty(), "{:?}", cfg.unknown_keys);
        let w = cfg.warnings().join("\n");
        assert!(!w.contains("[dns]"), "{w}");
        assert_eq!(
            cfg.dns.as_ref().map(|d| (d.listen.as_str(), d.ttl)),
            Some(("0.0.0.0:53", 86400))
        );
        for key in ["loggers", "[client]", "[discovery]"] {
            assert!(
                w.contains(&format!("config key {key} is not implemented")),
                "{key}: {w}"
            );
        }
        assert!(
            !w.contains("dbpath"),
            "dbpath = :memory: is not worth a warning: {w}"
        );
    }

    #[test]
    fn xboot_example_loads_clean_and_resolves_paths() {
        let cfg = Config::load(&config_dir().join("xboot.toml")).unwrap();
        assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
        assert_eq!(cfg.interface, Interfaces::One("eth1".into()));
        assert_eq!(
            (cfg.dhcp.mode, cfg.dhcp.mode_explicit),
            (DhcpMode::Xdp, false),
            "the example keeps the default, XDP with its fallback"
        );
        assert_eq!(cfg.api.token.as_deref(), Some("change-me"));
        let hosts = cfg.hosts.unwrap();
        assert!(
            hosts.is_absolute() && hosts.ends_with("config/examples/hosts.json"),
            "{hosts:?}"
        );
        assert!(hosts.exists());
    }

    /// XDP by default; whether the mode was written decides what its failure does.
    #[test]
    fn dhcp_mode_default_and_explicit() {
        let p = Path::new("x.toml");
        let rows = [
            ("", DhcpMode::Xdp, false),
            ("[dhcp]\nlease_time = \"1h\"", DhcpMode::Xdp, false),
            (
                "interface = \"eth0\"\n[dhcp]\nmode = \"xdp\"",
                DhcpMode::Xdp,
                true,
            ),
            ("[dhcp]\nmode = \"userspace\"", DhcpMode::Userspace, true),
            ("[dhcp]\nmode = \"off\"", DhcpMode::Off, true),
        ];
        for (text, mode, explicit) in rows {
            let cfg = Config::from_toml(text, p).unwrap();
            assert_eq!(
                (cfg.dhcp.mode, cfg.dhcp.mode_explicit),
                (mode, explicit),
                "{text:?}"
            );
        }
        let env = [("XBOOT_DHCP_MODE".to_string(), "xdp".to_string())];
        let text = Config::with_env_overrides("interface = \"eth0\"", p, env).unwrap();
        let cfg = Config::from_toml(&text, p).unwrap();
        assert!(cfg.dhcp.mode_explicit, "set by the environment: {text}");
    }

    #[test]
    fn unknown_keys_and_bad_values() {
        let p = Path::new("x.toml");
        let cfg = Config::from_toml("colour = 1\n[dhcp]\nfoo = 2\n[dns]\nbar = 3\n", p).unwrap();
        assert_eq!(cfg.unknown_keys, ["colour", "dhcp.foo", "dns.bar"]);
        assert_eq!(cfg.warnings()[1], "unknown config key \"dhcp.foo\" ignored");
        let table: &[(&str, &str)] = &[
            (
                "[dhcp]\nlease_time = \"3 days\"",
                "invalid config x.toml: dhcp.lease_time: invalid duration",
            ),
            (
                "[dhcp]\nlisten = \"nowhere\"",
                "dhcp.listen: \"nowhere\" is not an address:port",
            ),
            (
                "[dhcp]\nsubnets = [{gateway = \"10.0.0.1/40\"}]",
                "dhcp.subnets[0].gateway: bad CIDR",
            ),
            ("[dhcp]\ndns_servers = [\"dns\"]", "dhcp.dns_servers[0]"),
            ("[dhcp]\nmode = \"fast\"", "unknown variant `fast`"),
            (
                "[dhcp]\nmode = \"xdp\"",
                "dhcp.mode: \"xdp\" needs `interface`",
            ),
            ("[dhcp]\nmtu = \"big\"", "invalid type"),
            ("[bmc]\nprotocol = \"ssh\"", "bmc.protocol"),
            (
                "[provision]\nmax_connections = 0",
                "provision.max_connections: must be at least 1",
            ),
            (
                "[api]\nheader_timeout_secs = 0",
                "api.header_timeout_secs: must be at least 1",
            ),
            ("[dhcp", "invalid config x.toml: TOML parse error"),
            (
                "[dns]\nlisten = \"nowhere\"",
                "dns.listen: \"nowhere\" is not an address:port",
            ),
            (
                "[dns]\nforward = [\"1.1.1.1:53\", \"resolver\"]",
                "dns.forward[1]: \"resolver\" is not an address or address:port",
            ),
            (
                "[dns]\nforward = \"0.0.0.0\"",
                "dns.forward[0]: \"0.0.0.0\" is not a unicast address and port",
            ),
            (
                "[dns]\nttl = 4294967295",
                "dns.ttl: 4294967295 s is out of range (0 s to 2147483647 s)",
            ),
            (
                "[dns]\nmax_udp_payload = 100",
                "dns.max_udp_payload: 100 is out of range",
            ),
            (
                "[dns]\nzones = [\"bad_zone\"]",
                "dns.zones[0]: \"bad_zone\"",
            ),
            ("[dns]\nmax_tcp_connections = 0", "dns.max_tcp_connections"),
            ("[dns]\nforward = 53", "dns.forward"),
            (
                "[provision]\ncert = \"c.pem\"",
                "provision.cert: needs provision.key",
            ),
            ("[api]\nkey = \"k.pem\"", "api.key: needs api.cert"),
            (
                "[provision]\ntls_listen = \"127.0.0.1:8443\"",
                "provision.tls_listen: HTTPS needs provision.cert and provision.key",
            ),
            (
                "[provision]\ncert = \"c\"\nkey = \"k\"\ntls_listen = \"x\"",
                "provision.tls_listen: \"x\" is not an address:port",
            ),
            (
                "[provision]\nhostname = \"bad_name\"",
                "provision.hostname: \"bad_name\"",
            ),
        ];
        for (text, want) in table {
            let err = Config::from_toml(text, p).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    /// `dns.forward` as Grendel writes it (one address:port), as a list, as a
    /// comma-separated string, with and without ports; absent `[dns]` serves nothing.
    #[test]
    fn dns_section_forms() {
        let p = Path::new("x.toml");
        assert!(Config::from_toml("", p).unwrap().dns.is_none());
        for (text, want) in [
            ("forward = \"1.1.1.1:53\"", vec!["1.1.1.1:53"]),
            (
                "forward = [\"10.0.0.53\", \"[2001:db8::53]:5353\"]",
                vec!["10.0.0.53:53", "[2001:db8::53]:5353"],
            ),
            (
                "forward = \"10.0.0.53, 2001:db8::53\"",
                vec!["10.0.0.53:53", "[2001:db8::53]:53"],
            ),
            ("forward = \"\"", vec![]),
            ("", vec![]),
        ] {
            let cfg = Config::from_toml(&format!("[dns]\n{text}\n"), p).unwrap();
            let dns = cfg.dns.unwrap();
            let got: Vec<String> = dns
                .forward
                .items()
                .into_iter()
                .map(|s| check::dns_upstream(s).unwrap().to_string())
                .collect();
            assert_eq!(got, want, "{text}");
            assert_eq!(dns.listen, "0.0.0.0:53");
            assert_eq!(dns.ttl, 300);
        }
        let cfg = Config::from_toml("[dns]\nlisten = \"\"\n", p).unwrap();
        assert_eq!(check::dns_listen(&cfg.dns.unwrap().listen), Ok(None));
    }

    /// Every problem of a file is reported, wrong types and impossible values alike, each
    /// naming its key; check-config and serve run this same check.
    #[test]
    fn every_problem_is_reported() {
        let text = r#"
[dhcp]
mtu = "big"
listen = "[::]:67"
lease_time = "99999999999999999999h"
domain_search = ["ok.example", "bad_domain"]
subnets = [
  { gateway = "10.0.0.1/24", dns = "10.0.0.53 nope", mtu = "10", domainSearch = "-x.org" },
  { gateway = 5 },
]
[provision]
token_ttl = 0
[bmc]
retries = 120
timeout_ms = "slow"
concurrency = 0
"#;
        let err = Config::from_toml(text, Path::new("x.toml")).unwrap_err();
        let shown = err.to_string();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{shown}")
        };
        let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bmc.concurrency",
                "bmc.retries",
                "bmc.timeout_ms",
                "dhcp.domain_search[1]",
                "dhcp.lease_time",
                "dhcp.listen",
                "dhcp.mtu",
                "dhcp.subnets[0].dns",
                "dhcp.subnets[0].domainSearch",
                "dhcp.subnets[0].mtu",
                "dhcp.subnets[1].gateway",
                "provision.token_ttl",
            ],
            "{shown}"
        );
        assert!(
            shown.starts_with("invalid config x.toml: 12 problems:\n  - "),
            "{shown}"
        );
        for want in [
            "dhcp.mtu: invalid type: string \"big\", expected u16",
            "dhcp.subnets[0].dns: \"nope\" is not an IPv4 address",
            "bmc.retries: 120 is out of range (1 to 10)",
            "dhcp.listen: \"[::]:67\" is an IPv6 address",
        ] {
            assert!(shown.contains(want), "{want}: {shown}");
        }
    }

    /// Dotted key paths of a TOML value; `[]` marks elements of arrays of tables. Free-form
    /// maps (`loggers`, `provision_templates`) count as one key.
    fn key_paths(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        const FREE_FORM: &[&str] = &["loggers", "image[].provision_templates"];
        match v {
            toml::Value::Table(t) if !FREE_FORM.contains(&prefix) => {
                for (k, v) in t {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    key_paths(&p, v, out);
                }
            }
            toml::Value::Array(a) if a.iter().any(|e| e.is_table()) => {
                for e in a {
                    key_paths(&format!("{prefix}[]"), e, out);
                }
                out.push(prefix.to_string());
            }
            _ => out.push(prefix.to_string()),
        }
    }

    fn json_to_toml(v: serde_json::Value) -> toml::Value {
        serde_json::from_value(v).unwrap()
    }

    /// Every key used in config/ (configs and inventory examples) and every key of the
    /// config structs is documented in config/README.md, and every example parses.
    #[test]
    fn every_example_parses_and_every_key_is_documented() {
        let readme = std::fs::read_to_string(config_dir().join("README.md")).unwrap();
        let mut keys = Vec::new();
        let mut files = 0;
        for dir in [config_dir(), config_dir().join("examples")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                match path.extension().and_then(|e| e.to_str()) {
                    Some("toml") if dir == config_dir() => {
                        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                        assert!(
                            cfg.unknown_keys.is_empty(),
                            "{name}: {:?}",
                            cfg.unknown_keys
                        );
                        key_paths("", &text.parse::<toml::Value>().unwrap(), &mut keys);
                    }
                    Some("toml") => {
                        crate::inventory::load::load_file(&path, crate::inventory::Kind::Hosts)
                            .unwrap_or_else(|e| panic!("{e}"));
                        key_paths("", &text.parse::<toml::Value>().unwrap(), &mut keys);
                    }
                    Some("json") => {
                        let kind = if name.contains("image") {
                            crate::inventory::Kind::Images
                        } else {
                            crate::inventory::Kind::Hosts
                        };
                        let l = crate::inventory::load::load_file(&path, kind)
                            .unwrap_or_else(|e| panic!("{e}"));
                        assert!(l.warnings.is_empty(), "{name}: {:?}", l.warnings);
                        let root = if kind == crate::inventory::Kind::Images {
                            "image"
                        } else {
                            "host"
                        };
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                        key_paths("", &json_to_toml(serde_json::json!({ root: v })), &mut keys);
                    }
                    _ => continue,
                }
                files += 1;
            }
        }
        assert!(files >= 5, "config examples found: {files}");
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        key_paths("", &defaults, &mut keys);
        keys.sort();
        keys.dedup();
        let undocumented: Vec<&String> = keys
            .iter()
            .filter(|k| !readme.contains(&format!("`{k}`")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "keys missing from config/README.md: {undocumented:?}"
        );
        assert!(keys.len() > 60, "{keys:?}");
    }
}
