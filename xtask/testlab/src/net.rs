//! The PXE lab topology, inside two namespaces the caller owns (and deletes: every
//! link made here lives in them and disappears with them):
//!
//! ```text
//! server ns                          client ns
//!  srv0 10.77.0.1/16 <=== veth ===> up0 --+-- br0 (bridge, no address)
//!  (xboot serve)                          +-- tap0 (qemu VM)
//! ```
//! IPv6 is enabled on srv0 only (link-local, no DAD); the namespaces keep it disabled
//! elsewhere. xboot answers iPXE's router solicitations with or without it (raw frames).
//! up0 carries a pass-everything XDP program ([`crate::xdp_pass`]), so that xboot's
//! native XDP answers on srv0 (the default `dhcp.mode`) are delivered.

/// Server address on srv0, and its prefix length.
pub const SRV_IP: &str = "10.77.0.1";
pub const PREFIX: u8 = 16;
pub const SRV_IF: &str = "srv0";
pub const TAP: &str = "tap0";
/// The VM's MAC and the address the inventory gives it.
pub const VM_MAC: &str = "52:54:00:77:00:10";
pub const VM_IP: &str = "10.77.0.50";

/// Names of the built topology.
#[derive(Clone, Debug)]
pub struct PxeNet {
    pub server_ns: String,
    pub client_ns: String,
    pub srv_if: &'static str,
    pub tap: &'static str,
}

fn ip(ns: &str, args: &[&str]) -> Result<(), String> {
    crate::run(
        testlab::peers::command("ip")
            .args(["netns", "exec", ns, "ip"])
            .args(args),
    )
    .map(|_| ())
}

fn sysctl(ns: &str, kv: &str) -> Result<(), String> {
    crate::run(testlab::peers::command("ip").args(["netns", "exec", ns, "sysctl", "-qw", kv]))
        .map(|_| ())
}

/// Builds the topology in two existing (empty) namespaces.
pub fn build(server_ns: &str, client_ns: &str) -> Result<PxeNet, String> {
    let cidr = format!("{SRV_IP}/{PREFIX}");
    ip(
        server_ns,
        &[
            "link", "add", SRV_IF, "type", "veth", "peer", "name", "up0", "netns", client_ns,
        ],
    )?;
    // IPv6 on (`all` too, as the namespace guard turned it off) with no duplicate
    // address detection, so srv0's link-local address is usable at once.
    sysctl(server_ns, &format!("net.ipv6.conf.{SRV_IF}.accept_dad=0"))?;
    sysctl(server_ns, "net.ipv6.conf.all.disable_ipv6=0")?;
    sysctl(server_ns, &format!("net.ipv6.conf.{SRV_IF}.disable_ipv6=0"))?;
    ip(server_ns, &["addr", "add", &cidr, "dev", SRV_IF])?;
    ip(server_ns, &["link", "set", SRV_IF, "up"])?;
    ip(
        client_ns,
        &[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ],
    )?;
    ip(client_ns, &["tuntap", "add", TAP, "mode", "tap"])?;
    for port in ["up0", TAP] {
        ip(client_ns, &["link", "set", port, "master", "br0"])?;
        ip(client_ns, &["link", "set", port, "up"])?;
    }
    ip(client_ns, &["link", "set", "br0", "up"])?;
    // xboot's default attaches XDP to srv0 in native mode, where XDP_TX hands the frame
    // to the peer's NAPI, which veth runs only when the peer has an XDP program too.
    crate::xdp_pass::attach_in(client_ns, "up0")
        .map_err(|e| format!("cannot attach the pass-everything XDP program to up0: {e}"))?;
    Ok(PxeNet {
        server_ns: server_ns.into(),
        client_ns: client_ns.into(),
        srv_if: SRV_IF,
        tap: TAP,
    })
}

/// Turns IPv6 on or off on srv0 (`net.ipv6.conf.srv0.disable_ipv6`), as on a boot server
/// run without IPv6.
pub fn set_server_ipv6(server_ns: &str, on: bool) -> Result<(), String> {
    let off = if on { 0 } else { 1 };
    sysctl(
        server_ns,
        &format!("net.ipv6.conf.{SRV_IF}.disable_ipv6={off}"),
    )
}

/// (protocol, port) of every TCP/UDP socket listening in `netns` (`ss -Hlntu`).
pub fn listening(netns: &str) -> Vec<(String, u16)> {
    let out =
        crate::run(testlab::peers::command("ip").args(["netns", "exec", netns, "ss", "-Hlntu"]))
            .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let port = cols.get(4)?.rsplit(':').next()?.parse().ok()?;
            Some((cols.first()?.to_string(), port))
        })
        .collect()
}

/// The `(protocol, port)` pairs of `want` that nothing listens on in `netns`.
pub fn not_listening(netns: &str, want: &[(&str, u16)]) -> Vec<String> {
    let bound = listening(netns);
    want.iter()
        .filter(|(proto, port)| !bound.iter().any(|(p, n)| p == proto && n == port))
        .map(|(proto, port)| format!("{proto}/{port}"))
        .collect()
}

/// Waits until every `(protocol, port)` of `want` listens in `netns`.
pub fn wait_listening(
    netns: &str,
    want: &[(&str, u16)],
    timeout: std::time::Duration,
) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    loop {
        let missing = not_listening(netns, want);
        if missing.is_empty() {
            return Ok(());
        }
        if t0.elapsed() > timeout {
            return Err(format!(
                "nothing listens on {} in {netns} after {timeout:?}",
                missing.join(", ")
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
