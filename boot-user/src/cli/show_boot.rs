//! `xboot host show NAME --boot`: what the host would be sent, computed with the same
//! functions the services use: the DHCP answer to a DISCOVER from each client kind
//! (BIOS PXE, UEFI, iPXE, HTTP boot, plain OS), its iPXE script and its rendered kernel
//! command line (with a real, currently valid token).
use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context as _;
use dhcproto::v4::MessageType;

use crate::config::Config;
use crate::dhcp::{decide, reply::Context, ClientKind, Decision, Request, Settings};
use crate::http::token::TokenKey;
use crate::http::urls::UrlSigner;
use crate::inventory::Inventory;

/// Prints the boot answers of `name`. `server` is the address DHCP would answer from;
/// by default the local address in the host's subnet.
pub fn run(
    config: &Config,
    inv: &Inventory,
    name: &str,
    server: Option<Ipv4Addr>,
) -> anyhow::Result<()> {
    let host = inv
        .host(name)
        .with_context(|| format!("no host {name:?} in the inventory"))?;
    let settings = Settings::from_config(config)?;
    let key = TokenKey::from_config(config)?;
    let urls = UrlSigner::from_config(&config.provision, key);
    let nics: Vec<_> = host
        .interfaces
        .iter()
        .filter(|i| !i.bmc && i.mac.is_some())
        .collect();
    if nics.is_empty() {
        anyhow::bail!("host {name}: no boot interface (an interface with a MAC and bmc = false)");
    }
    for nic in nics {
        let mac = nic.mac.expect("filtered above");
        let lookup = inv
            .lookup_mac(mac)
            .with_context(|| format!("host {name}: MAC {mac} not indexed"))?;
        let server_ip = match server.or_else(|| local_address_for(nic.ipv4())) {
            Some(ip) => ip,
            None => anyhow::bail!(
                "host {name}: no local address in {} (pass --server IP)",
                nic.ip.as_deref().unwrap_or("its subnet")
            ),
        };
        println!(
            "host {name}  nic {mac} {}  image {:?}  provision {}  server {server_ip}",
            nic.ip.as_deref().unwrap_or("-"),
            host.boot_image,
            host.provision
        );
        println!("DHCP answer to a DISCOVER, per client kind:");
        let ctx = Context {
            settings: &settings,
            server_ip,
            host: Some(lookup),
            urls: &urls,
            dns_rotation: 0,
        };
        for kind in ClientKind::TEMPLATES {
            let req = Request::new(MessageType::Discover, mac, kind);
            let line = match decide(&req, &ctx) {
                Decision::Reply(r) => r.summary(),
                Decision::Silent(why) => format!("(no answer: {why:?})"),
            };
            println!("  {:<12} {line}", kind.to_string());
        }
        let Some(image) = lookup.image else {
            println!("no boot image: lease only");
            continue;
        };
        let token = urls.token(&host.name, mac);
        let base = urls.base_url(IpAddr::V4(server_ip));
        // The signer's URLs are https whenever HTTPS is served.
        let tls = config.provision.tls_listen_addr().is_some();
        let vip = crate::http::urls::segment_vip_base_url(config, tls, host, nic);
        let boot = crate::http::BootView {
            host,
            nic,
            image,
            base_url: &base,
            token: &token,
            vip_base_url: vip.as_deref(),
        };
        let script = crate::http::render_ipxe_script(&boot)?;
        println!(
            "iPXE script ({}):",
            urls.ipxe_script_url(&host.name, mac, IpAddr::V4(server_ip))
        );
        for l in script.lines() {
            println!("  {l}");
        }
        println!("kernel cmdline:");
        println!("  {}", boot.cmdline()?);
    }
    Ok(())
}

/// The address of a local interface inside `net`, if any.
fn local_address_for(net: Option<ipnet::Ipv4Net>) -> Option<Ipv4Addr> {
    let net = net?;
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let ip = ifa.address?.as_sockaddr_in()?.ip();
        (net.contains(&ip) && ip != net.addr()).then_some(ip)
    })
}
