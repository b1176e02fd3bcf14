//! `xboot cluster keepalived --segment NAME`: the keepalived.conf that keeps a segment's
//! VIP (`cluster.segment.vip`) on one of its live servers (pure: [`Vrrp::of`] reads the
//! config, [`render`] writes the text).
//!
//! Every server of the segment runs keepalived with the same instance (router id,
//! priority, `state BACKUP`, `nopreempt`): the first to win the election holds the VIP
//! until it fails, and a server that comes back does not take it again. Moving the VIP
//! back would cut every live image download in flight through it (dracut does not
//! resume), for nothing: the servers are equal. A `vrrp_script` fetches this server's
//! `GET /` on loopback every second; `fall` failures in a row put the instance in FAULT,
//! which gives the VIP up (a priority-0 advertisement: the other server takes it at
//! once), so the VIP leaves a server whose xboot died or hangs while keepalived runs.
//! A server that dies whole stops advertising and is replaced after three intervals.
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;

use crate::config::Config;

/// What the admin may choose; the rest comes from the config.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// VRRP priority, the same on every server (nopreempt: equal servers).
    pub priority: u8,
    /// Seconds between advertisements (VRRPv3: down to 0.01).
    pub advert_int: f64,
    /// Failed health checks in a row that give the VIP up.
    pub fall: u32,
    /// The NIC on the segment; default: the segment's first `interfaces`.
    pub interface: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            priority: 100,
            advert_int: 1.0,
            fall: 2,
            interface: None,
        }
    }
}

/// One VRRP instance: the VIP of one segment on this server.
#[derive(Clone, Debug, PartialEq)]
pub struct Vrrp {
    /// `xboot_SEGMENT` (letters, digits and `_` only).
    pub instance: String,
    pub segment: String,
    pub interface: String,
    /// The VIP with its subnet's prefix.
    pub vip: Ipv4Net,
    pub vrid: u8,
    pub priority: u8,
    pub advert_int: f64,
    /// This server's `GET /` on loopback (`http://127.0.0.1:PORT/`).
    pub health_url: String,
    pub fall: u32,
}

impl Vrrp {
    /// The instance of segment `name` of `cfg`, or why there is none.
    pub fn of(cfg: &Config, name: &str, opts: &Options) -> Result<Vrrp, String> {
        let cluster = cfg
            .cluster
            .as_ref()
            .ok_or("no [cluster] section: a segment VIP is for cluster mode")?;
        let (i, seg) = cluster
            .segments
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = cluster.segments.iter().map(|s| s.name.as_str()).collect();
                format!("no segment {name:?} (the config has: {})", names.join(", "))
            })?;
        let key = format!("cluster.segment[{i}]");
        let vip = seg
            .vip_net()
            .ok_or_else(|| format!("{key}.vip: segment {name:?} has no vip (vip = \"IPv4\")"))?;
        let vrid = seg
            .vrid()
            .ok_or_else(|| format!("{key}.vrid: not a VRRP router id (1..=255)"))?;
        let interface = opts
            .interface
            .clone()
            .or_else(|| seg.interfaces.first().cloned())
            .ok_or_else(|| {
                format!("{key}.interfaces: names no NIC to hold the VIP on (or pass --interface)")
            })?;
        if !(0.01..=255.0).contains(&opts.advert_int) {
            return Err(format!(
                "--advert-int {}: outside 0.01..=255 seconds",
                opts.advert_int
            ));
        }
        if !(1..=255).contains(&opts.priority) {
            return Err(format!("--priority {}: outside 1..=255", opts.priority));
        }
        if !(1..=60).contains(&opts.fall) {
            return Err(format!("--fall {}: outside 1..=60", opts.fall));
        }
        let instance = format!(
            "xboot_{}",
            name.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        );
        Ok(Vrrp {
            instance,
            segment: name.to_string(),
            interface,
            vip,
            vrid,
            priority: opts.priority,
            advert_int: opts.advert_int,
            health_url: health_url(cfg),
            fall: opts.fall,
        })
    }
}

/// This server's `GET /` on loopback: the plain listener's port, else the HTTPS one's.
fn health_url(cfg: &Config) -> String {
    let p = &cfg.provision;
    let port = |a: &str, default| a.parse::<SocketAddr>().map_or(default, |a| a.port());
    match p.tls_listen_addr().filter(|_| !p.plain_http()) {
        Some(tls) => format!("https://{}:{}/", Ipv4Addr::LOCALHOST, port(&tls, 443)),
        None => format!("http://{}:{}/", Ipv4Addr::LOCALHOST, port(&p.listen, 80)),
    }
}

/// The keepalived.conf of `v`.
pub fn render(v: &Vrrp) -> String {
    // Loopback: the certificate names the server, not 127.0.0.1.
    let insecure = if v.health_url.starts_with("https:") {
        " -k"
    } else {
        ""
    };
    format!(
        "# keepalived.conf for the VIP of xboot segment {segment:?} (xboot cluster keepalived).\n\
         # The same on every server of the segment: equal priority, nopreempt.\n\
         global_defs {{\n\
         \x20   vrrp_version 3\n\
         \x20   enable_script_security\n\
         \x20   script_user nobody\n\
         }}\n\
         \n\
         # This server's xboot answers HTTP (fails: the VIP leaves this server).\n\
         vrrp_script xboot_http {{\n\
         \x20   script \"/usr/bin/curl -fsS{insecure} -m 1 -o /dev/null {url}\"\n\
         \x20   interval 1\n\
         \x20   timeout 2\n\
         \x20   fall {fall}\n\
         \x20   rise 2\n\
         }}\n\
         \n\
         vrrp_instance {instance} {{\n\
         \x20   state BACKUP\n\
         \x20   nopreempt\n\
         \x20   interface {interface}\n\
         \x20   virtual_router_id {vrid}\n\
         \x20   priority {priority}\n\
         \x20   advert_int {advert}\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {vip} dev {interface}\n\
         \x20   }}\n\
         \x20   track_script {{\n\
         \x20       xboot_http\n\
         \x20   }}\n\
         }}\n",
        segment = v.segment,
        url = v.health_url,
        fall = v.fall,
        instance = v.instance,
        interface = v.interface,
        vrid = v.vrid,
        priority = v.priority,
        advert = v.advert_int,
        vip = v.vip,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[provision]\nlisten = \"0.0.0.0:8080\"\n\
             [cluster]\nendpoints = [\"http://10.0.0.1:2379\"]\n\
             [[cluster.segment]]\nname = \"rack 7\"\ninterfaces = [\"eno1\"]\n\
             subnets = [\"10.7.0.0/16\"]\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn a_segment_vip_renders_one_vrrp_instance() {
        let cfg = config("vip = \"10.7.0.250\"\n");
        let v = Vrrp::of(&cfg, "rack 7", &Options::default()).unwrap();
        assert_eq!(
            render(&v),
            "# keepalived.conf for the VIP of xboot segment \"rack 7\" (xboot cluster keepalived).\n\
             # The same on every server of the segment: equal priority, nopreempt.\n\
             global_defs {\n    vrrp_version 3\n    enable_script_security\n    script_user nobody\n}\n\
             \n\
             # This server's xboot answers HTTP (fails: the VIP leaves this server).\n\
             vrrp_script xboot_http {\n\
             \x20   script \"/usr/bin/curl -fsS -m 1 -o /dev/null http://127.0.0.1:8080/\"\n\
             \x20   interval 1\n    timeout 2\n    fall 2\n    rise 2\n}\n\
             \n\
             vrrp_instance xboot_rack_7 {\n\
             \x20   state BACKUP\n    nopreempt\n    interface eno1\n    virtual_router_id 250\n\
             \x20   priority 100\n    advert_int 1\n\
             \x20   virtual_ipaddress {\n        10.7.0.250/16 dev eno1\n    }\n\
             \x20   track_script {\n        xboot_http\n    }\n}\n"
        );
        let opts = Options {
            priority: 150,
            advert_int: 0.25,
            fall: 1,
            interface: Some("bond0".into()),
        };
        let cfg = config("vip = \"10.7.1.9\"\nvrid = 42\n");
        let text = render(&Vrrp::of(&cfg, "rack 7", &opts).unwrap());
        for line in [
            "    virtual_router_id 42\n",
            "    priority 150\n",
            "    advert_int 0.25\n",
            "    fall 1\n",
            "        10.7.1.9/16 dev bond0\n",
            "    interface bond0\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn the_health_check_follows_the_listeners() {
        let mut cfg = config("vip = \"10.7.0.250\"\n");
        cfg.provision.listen = "0.0.0.0:80".into();
        assert_eq!(health_url(&cfg), "http://127.0.0.1:80/");
        // Grendel's HTTPS setup: one listener on 443, HTTPS only.
        cfg.provision.listen = "0.0.0.0:443".into();
        cfg.provision.cert = Some("c.pem".into());
        cfg.provision.key = Some("k.pem".into());
        assert_eq!(health_url(&cfg), "https://127.0.0.1:443/");
        let v = Vrrp::of(&cfg, "rack 7", &Options::default()).unwrap();
        assert!(render(&v).contains("curl -fsS -k -m 1"), "{}", render(&v));
        // Both: the plain listener is checked.
        cfg.provision.listen = "0.0.0.0:8080".into();
        cfg.provision.tls_listen = Some("0.0.0.0:8443".into());
        assert_eq!(health_url(&cfg), "http://127.0.0.1:8080/");
    }

    #[test]
    fn what_cannot_make_an_instance_is_named() {
        let err = |cfg: &Config, name: &str, opts: Options| Vrrp::of(cfg, name, &opts).unwrap_err();
        let with = config("vip = \"10.7.0.250\"\n");
        let without = config("");
        assert_eq!(
            err(&without, "rack 7", Options::default()),
            "cluster.segment[0].vip: segment \"rack 7\" has no vip (vip = \"IPv4\")"
        );
        assert_eq!(
            err(&with, "rack8", Options::default()),
            "no segment \"rack8\" (the config has: rack 7)"
        );
        let mut no_nic = with.clone();
        no_nic.cluster.as_mut().unwrap().segments[0]
            .interfaces
            .clear();
        assert!(err(&no_nic, "rack 7", Options::default())
            .starts_with("cluster.segment[0].interfaces: names no NIC"));
        for (opts, says) in [
            (
                Options {
                    advert_int: 0.0,
                    ..Options::default()
                },
                "--advert-int 0",
            ),
            (
                Options {
                    priority: 0,
                    ..Options::default()
                },
                "--priority 0",
            ),
            (
                Options {
                    fall: 0,
                    ..Options::default()
                },
                "--fall 0",
            ),
        ] {
            assert!(err(&with, "rack 7", opts).starts_with(says), "{says}");
        }
        let mut standalone = with;
        standalone.cluster = None;
        assert!(err(&standalone, "rack 7", Options::default()).starts_with("no [cluster] section"));
    }
}
