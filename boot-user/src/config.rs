//! `xboot serve --config FILE`: a TOML file that is a superset of Grendel's grendel.toml.
//!
//! Every grendel.toml key loads. Keys xboot does not implement are reported by
//! [`Config::warnings`] (logged at start and by `check-config`), never silently dropped.
//! xboot's own keys sit beside Grendel's; every key is documented in config/README.md.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: {key}: {message}")]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
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
    pub dns: Option<toml::Table>,
    pub tftp: TftpConfig,
    pub pxe: PxeConfig,
    pub provision: ProvisionConfig,
    pub api: ApiConfig,
    pub client: Option<toml::Table>,
    pub bmc: BmcConfig,
    pub discovery: Option<toml::Table>,

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
    /// XDP fast path for known hosts, userspace for the rest.
    Xdp,
    /// Userspace only.
    #[default]
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
    pub subnets: Vec<SubnetConfig>,
    pub mode: DhcpMode,
    /// Max unknown-MAC log lines per MAC per this many seconds (xboot).
    pub unknown_log_interval_secs: u64,
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
            subnets: vec![],
            mode: DhcpMode::default(),
            unknown_log_interval_secs: 60,
        }
    }
}

impl DhcpConfig {
    pub fn lease_duration(&self) -> Result<Duration, String> {
        parse_go_duration(&self.lease_time)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TftpConfig {
    pub listen: String,
    /// Directory the iPXE binaries are served from (xboot; default: Debian's ipxe package).
    pub root: PathBuf,
}

impl Default for TftpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:69".into(),
            root: PathBuf::from("/usr/lib/ipxe"),
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
    pub listen: String,
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
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:80".into(),
            token_ttl: 3600,
            root_password: None,
            default_image: None,
            repo_dir: PathBuf::from("/var/lib/xboot/repo"),
            secret: None,
            advertise_url: None,
            postscript: None,
            firmware_dir: None,
            max_connections: None,
            max_connections_per_source: 64,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
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

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from("/var/run/xboot/xboot-api.socket"),
            listen: None,
            token: None,
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
        }
    }
}

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
            unit.push(chars.next().unwrap());
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
    Ok(Duration::from_secs_f64(total))
}

impl Config {
    /// Parses a config file's text. `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let mut unknown = Vec::new();
        let cfg: Config = serde_ignored::deserialize(value, |p| unknown.push(p.to_string()))
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.into(),
                message: e.to_string(),
            })?;
        let mut cfg = cfg;
        cfg.unknown_keys = unknown;
        cfg.check(path)?;
        Ok(cfg)
    }

    /// Reads and checks a config file. Relative paths in it are taken relative to the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut cfg = Self::from_toml(&text, path)?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(dir) = abs.parent() {
            cfg.resolve_relative(dir);
        }
        Ok(cfg)
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
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        fix(&mut self.tftp.root);
        fix(&mut self.provision.repo_dir);
        fix(&mut self.api.socket_path);
    }

    /// `state_dir`, or its default.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let value_err = |key: &str, message: String| ConfigError::Value {
            path: path.into(),
            key: key.into(),
            message,
        };
        self.dhcp
            .lease_duration()
            .map_err(|m| value_err("dhcp.lease_time", m))?;
        for (key, addr) in [
            ("dhcp.listen", &self.dhcp.listen),
            ("tftp.listen", &self.tftp.listen),
            ("pxe.listen", &self.pxe.listen),
            ("provision.listen", &self.provision.listen),
        ] {
            addr.parse::<SocketAddr>()
                .map_err(|e| value_err(key, format!("{addr:?} is not an address:port ({e})")))?;
        }
        for (i, s) in self.dhcp.subnets.iter().enumerate() {
            crate::inventory::model::parse_cidr(&s.gateway)
                .map_err(|m| value_err(&format!("dhcp.subnets[{i}].gateway"), m))?;
        }
        for (i, d) in self.dhcp.dns_servers.iter().enumerate() {
            d.parse::<Ipv4Addr>()
                .map_err(|e| value_err(&format!("dhcp.dns_servers[{i}]"), format!("{d:?}: {e}")))?;
        }
        if self.api.listen.is_some() && self.api.token.as_deref().unwrap_or("").is_empty() {
            return Err(value_err(
                "api.listen",
                "a TCP API listener needs api.token (bearer token)".into(),
            ));
        }
        for (key, n) in [
            ("provision.max_connections", self.provision.max_connections),
            ("api.max_connections", self.api.max_connections),
        ] {
            if n == Some(0) {
                return Err(value_err(key, "must be at least 1".into()));
            }
        }
        for (key, secs) in [
            (
                "provision.header_timeout_secs",
                self.provision.header_timeout_secs,
            ),
            (
                "provision.idle_timeout_secs",
                self.provision.idle_timeout_secs,
            ),
            ("api.header_timeout_secs", self.api.header_timeout_secs),
            ("api.idle_timeout_secs", self.api.idle_timeout_secs),
        ] {
            if secs == 0 {
                return Err(value_err(
                    key,
                    "must be at least 1 (a server without it can be held by silent clients)".into(),
                ));
            }
        }
        if !matches!(self.bmc.protocol.as_str(), "ipmi" | "redfish") {
            return Err(value_err(
                "bmc.protocol",
                format!("{:?}: expected ipmi or redfish", self.bmc.protocol),
            ));
        }
        Ok(())
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
        if self
            .admin_ssh_pubkeys
            .as_ref()
            .is_some_and(|k| !k.is_empty())
        {
            w.push(unimpl("admin_ssh_pubkeys", "not used"));
        }
        if self.dns.is_some() {
            w.push(unimpl(
                "[dns]",
                "xboot has no DNS server; hosts get dhcp.dns_servers / dhcp.subnets[].dns",
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
        if self
            .provision
            .root_password
            .as_deref()
            .is_some_and(|p| !p.is_empty())
        {
            w.push(unimpl("provision.root_password", "not used"));
        }
        if self
            .provision
            .default_image
            .as_deref()
            .is_some_and(|p| !p.is_empty())
        {
            w.push(unimpl(
                "provision.default_image",
                "every host names its boot_image",
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
        for key in ["loggers", "[dns]", "[client]", "[discovery]"] {
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
        assert_eq!(cfg.dhcp.mode, DhcpMode::Userspace);
        assert_eq!(cfg.api.token.as_deref(), Some("change-me"));
        let hosts = cfg.hosts.unwrap();
        assert!(
            hosts.is_absolute() && hosts.ends_with("config/examples/hosts.json"),
            "{hosts:?}"
        );
        assert!(hosts.exists());
    }

    #[test]
    fn unknown_keys_and_bad_values() {
        let p = Path::new("x.toml");
        let cfg = Config::from_toml("colour = 1\n[dhcp]\nfoo = 2\n", p).unwrap();
        assert_eq!(cfg.unknown_keys, ["colour", "dhcp.foo"]);
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
            ("[dhcp]\nmtu = \"big\"", "invalid type"),
            (
                "[api]\nlisten = \"127.0.0.1:1\"",
                "api.listen: a TCP API listener needs api.token",
            ),
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
        ];
        for (text, want) in table {
            let err = Config::from_toml(text, p).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
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
