//! What overrides the config file: environment variables `XBOOT_<SECTION>_<KEY>` and
//! `GRENDEL_<SECTION>_<KEY>` (Grendel reads the latter; Kubernetes passes secrets as
//! environment), and `serve --listen IP`.
//!
//! An environment variable names a key by its path with `_` for `.`, upper case:
//! `XBOOT_API_TOKEN` is `api.token`, `GRENDEL_DHCP_LEASE_TIME` is `dhcp.lease_time`,
//! `XBOOT_STATE_DIR` is the top-level `state_dir`. The section is found among the
//! config's own sections (`dhcp_lease_time` cannot be read as a top-level key, since
//! there is none of that name). The value is read as a TOML value where the key's
//! default is a number, a boolean or an array, else as a string. `XBOOT_` wins over
//! `GRENDEL_`, both over the file. The variables the client commands read
//! (`XBOOT_CONFIG`, `XBOOT_SOCKET`, `XBOOT_API`, `XBOOT_TOKEN`) are not keys. A variable
//! whose name starts with no section and is no top-level key is left alone (Kubernetes
//! sets `GRENDEL_PORT`, `GRENDEL_SERVICE_HOST` ... for a service named grendel); one that
//! names a section but an unknown key is reported like an unknown key of the file.
use std::net::{IpAddr, SocketAddr};

use super::Config;

/// Optional sections whose presence starts a service.
const CREATES_SERVICE: [&str; 1] = ["dns"];

/// Prefixes, lowest priority first.
const PREFIXES: [&str; 2] = ["GRENDEL_", "XBOOT_"];

/// Variables of the command line that share the prefix but are not config keys.
const NOT_KEYS: [&str; 4] = ["XBOOT_CONFIG", "XBOOT_SOCKET", "XBOOT_API", "XBOOT_TOKEN"];

/// One variable applied: its name and the key it set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub var: String,
    pub key: String,
}

/// Applies the overrides of `vars` to a parsed config file `value`, returning what each
/// variable set.
pub fn apply_env(
    value: &mut toml::Value,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Applied>, String> {
    // The optional sections that have a typed schema ([dns]) take part with their defaults
    // (every key present, so that each is known).
    let with_optional = Config {
        dns: Some(super::DnsConfig {
            forward: super::Upstreams::One("127.0.0.1".into()),
            nameserver: Some(String::new()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let schema = toml::Value::try_from(with_optional).map_err(|e| e.to_string())?;
    let mut vars: Vec<(usize, String, String)> = vars
        .into_iter()
        .filter(|(k, _)| !NOT_KEYS.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let rank = PREFIXES.iter().position(|p| k.starts_with(p))?;
            Some((rank, k, v))
        })
        .collect();
    // Lowest priority first, so that the stronger prefix is written last.
    vars.sort();
    let mut applied = vec![];
    for (rank, var, text) in vars {
        let path = var[PREFIXES[rank].len()..].to_ascii_lowercase();
        let Some((section, key)) = split_key(&path, &schema) else {
            tracing::debug!("environment variable {var} names no config section: not a key");
            continue;
        };
        let default = match section {
            Some(s) => schema.get(s).and_then(|t| t.get(key)),
            None => schema.get(key),
        };
        if let Some(s) = section.filter(|s| CREATES_SERVICE.contains(s)) {
            // Present, the section starts a service: a variable that names no key of it
            // (Kubernetes' GRENDEL_DNS_SERVICE_HOST for a service called grendel-dns)
            // must not create it.
            if default.is_none() && value.get(s).is_none() {
                tracing::debug!("environment variable {var} names no key of [{s}]: not a key");
                continue;
            }
        }
        let v = typed(&text, default);
        let table = value.as_table_mut().ok_or("the config is not a table")?;
        let target = match section {
            Some(s) => table
                .entry(s)
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .ok_or_else(|| format!("environment variable {var}: [{s}] is not a table"))?,
            None => table,
        };
        target.insert(key.to_string(), v);
        applied.push(Applied {
            var,
            key: match section {
                Some(s) => format!("{s}.{key}"),
                None => key.to_string(),
            },
        });
    }
    Ok(applied)
}

/// `dhcp_lease_time` -> (Some("dhcp"), "lease_time"); `state_dir` -> (None, "state_dir").
/// Sections are the tables of the config's schema; a top-level key must be one.
fn split_key<'a>(path: &'a str, schema: &toml::Value) -> Option<(Option<&'a str>, &'a str)> {
    let top = schema.as_table()?;
    // Sections xboot accepts but whose defaults are absent (Grendel's, passed through).
    const OPTIONAL_SECTIONS: [&str; 4] = ["dns", "client", "discovery", "loggers"];
    let sections = top
        .iter()
        .filter(|(_, v)| v.is_table())
        .map(|(name, _)| name.as_str())
        .chain(OPTIONAL_SECTIONS);
    for name in sections {
        match path.strip_prefix(name).and_then(|r| r.strip_prefix('_')) {
            Some(key) if !key.is_empty() => return Some((Some(&path[..name.len()]), key)),
            _ => {}
        }
    }
    const TOP_KEYS: [&str; 6] = [
        "state_dir",
        "hosts",
        "images",
        "interface",
        "dbpath",
        "admin_ssh_pubkeys",
    ];
    TOP_KEYS.contains(&path).then_some((None, path))
}

/// The variable's text as the type of the key's default: a number, boolean or array is
/// read as a TOML value (falling back to the text if it is not one), anything else is
/// the text itself (a token of digits stays a string).
fn typed(text: &str, default: Option<&toml::Value>) -> toml::Value {
    let literal = || {
        toml::from_str::<toml::Table>(&format!("v = {text}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    match default {
        Some(toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))
        | Some(toml::Value::Array(_)) => {
            literal().unwrap_or_else(|| toml::Value::String(text.into()))
        }
        _ => toml::Value::String(text.into()),
    }
}

/// `serve --listen IP`: the host part of every listen address becomes `ip` (Grendel's
/// flag; the ClusterFactory chart passes `--listen 0.0.0.0`). The ports stay.
pub fn apply_listen(config: &mut Config, ip: IpAddr) -> Result<(), String> {
    let set = |key: &str, addr: &mut String| -> Result<(), String> {
        let a: SocketAddr = addr.parse().map_err(|e| format!("{key} {addr:?}: {e}"))?;
        *addr = SocketAddr::new(ip, a.port()).to_string();
        Ok(())
    };
    set("dhcp.listen", &mut config.dhcp.listen)?;
    set("tftp.listen", &mut config.tftp.listen)?;
    set("pxe.listen", &mut config.pxe.listen)?;
    set("provision.listen", &mut config.provision.listen)?;
    if let Some(a) = &mut config.api.listen {
        *a = SocketAddr::new(ip, a.port());
    }
    if let Some(d) = config.dns.as_mut().filter(|d| !d.listen.trim().is_empty()) {
        set("dns.listen", &mut d.listen)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn env_sets_keys_by_section_with_the_stronger_prefix_last() {
        let mut value: toml::Value = toml::from_str("[api]\ntoken = \"file\"\n").unwrap();
        let applied = apply_env(
            &mut value,
            vars(&[
                ("XBOOT_API_TOKEN", "0123"),
                ("GRENDEL_API_TOKEN", "grendel"),
                ("GRENDEL_DHCP_LEASE_TIME", "2h"),
                ("XBOOT_STATE_DIR", "/srv/xboot"),
                ("XBOOT_BMC_RETRIES", "3"),
                ("XBOOT_CONFIG", "/etc/xboot/xboot.toml"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        // A token of digits stays a string (its default is none, not a number).
        assert_eq!(value["api"]["token"].as_str(), Some("0123"));
        assert_eq!(value["dhcp"]["lease_time"].as_str(), Some("2h"));
        assert_eq!(value["state_dir"].as_str(), Some("/srv/xboot"));
        assert_eq!(value["bmc"]["retries"].as_integer(), Some(3));
        let keys: Vec<&str> = applied.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "api.token",
                "dhcp.lease_time",
                "api.token",
                "bmc.retries",
                "state_dir"
            ]
        );
        let cfg: Config = value.try_into().unwrap();
        assert_eq!(cfg.api.token.as_deref(), Some("0123"));
        assert_eq!(cfg.bmc.retries, 3);
    }

    #[test]
    fn env_outside_every_section_is_left_alone_and_unknown_keys_reach_the_warnings() {
        let mut value = toml::Value::Table(Default::default());
        let applied = apply_env(
            &mut value,
            vars(&[
                ("GRENDEL_SERVICE_HOST", "10.96.0.1"),
                ("XBOOT_CACHE", "/tmp/c"),
                ("XBOOT_API_TOKN", "typo"),
            ]),
        )
        .unwrap();
        assert_eq!(applied.len(), 1);
        let text = toml::to_string(&value).unwrap();
        let cfg = Config::from_toml(&text, std::path::Path::new("env")).unwrap();
        assert!(
            cfg.warnings().iter().any(|w| w.contains("api.tokn")),
            "{:?}",
            cfg.warnings()
        );
    }

    #[test]
    fn listen_replaces_the_host_of_every_listen_address() {
        let mut cfg = Config::default();
        cfg.api.listen = Some("127.0.0.1:6667".parse().unwrap());
        apply_listen(&mut cfg, "10.0.0.5".parse().unwrap()).unwrap();
        assert!(
            cfg.dhcp.listen.starts_with("10.0.0.5:"),
            "{}",
            cfg.dhcp.listen
        );
        assert!(cfg.tftp.listen.ends_with(":69"), "{}", cfg.tftp.listen);
        assert!(cfg.provision.listen.starts_with("10.0.0.5:"));
        assert_eq!(cfg.api.listen.unwrap().to_string(), "10.0.0.5:6667");
        assert!(cfg.dns.is_none());
        cfg.dns = Some(Default::default());
        apply_listen(&mut cfg, "10.0.0.5".parse().unwrap()).unwrap();
        assert_eq!(cfg.dns.unwrap().listen, "10.0.0.5:53");
    }

    /// `[dns]` keys set from the environment take their types from the section's
    /// defaults, and create the section (which starts the DNS server).
    #[test]
    fn env_sets_typed_dns_keys() {
        let mut value = toml::Value::Table(Default::default());
        apply_env(
            &mut value,
            vars(&[
                ("GRENDEL_DNS_TTL", "60"),
                ("XBOOT_DNS_FORWARD", "10.0.0.53"),
            ]),
        )
        .unwrap();
        let cfg: Config = value.try_into().unwrap();
        let dns = cfg.dns.unwrap();
        assert_eq!(dns.ttl, 60);
        assert_eq!(dns.forward.items(), ["10.0.0.53"]);
        // Kubernetes' variables for a service named grendel-dns start no DNS server.
        let mut value = toml::Value::Table(Default::default());
        let applied = apply_env(
            &mut value,
            vars(&[
                ("GRENDEL_DNS_SERVICE_HOST", "10.96.0.10"),
                ("GRENDEL_DNS_PORT", "udp://10.96.0.10:53"),
            ]),
        )
        .unwrap();
        assert!(applied.is_empty(), "{applied:?}");
        assert!(value.get("dns").is_none());
        // With [dns] in the file, a wrong key is reported like one of the file.
        let mut value: toml::Value = toml::from_str("[dns]\nttl = 5\n").unwrap();
        apply_env(&mut value, vars(&[("XBOOT_DNS_TLL", "6")])).unwrap();
        let text = toml::to_string(&value).unwrap();
        let cfg = Config::from_toml(&text, std::path::Path::new("env")).unwrap();
        assert!(
            cfg.warnings().iter().any(|w| w.contains("dns.tll")),
            "{:?}",
            cfg.warnings()
        );
    }
}
