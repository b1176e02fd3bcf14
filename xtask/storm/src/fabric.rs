//! The storm's network, in namespaces this run creates (all named `xbst-<pid>-…`) and
//! deletes on drop, with every process still inside them killed by pid:
//!
//! ```text
//! server ns: srv0 10.77.0.1/16 ==veth== up0 ─┐
//! fabric ns:                         spine bridge ─ ts<k> ==veth== tl<k> ─ leaf<k> (≤ 96 ports)
//!                                                                              └─ p<i> (isolated on)
//! node ns i: eth0 (the inventory's MAC, IPv6 off) ==veth== p<i>
//! ```
//! Node ports and the spine's leaf ports are `isolated on`, so nodes reach the server
//! but never each other, in their rack or another (no N² floods), and IPv6 is off in node namespaces (no link-up multicast). Links are
//! made in batches (`ip -batch`, `bridge -batch`); per-node sysctls and link-up go
//! through the setns helper ([`crate::nsops`]).
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Stdio;

use crate::nsops::{self, NsOps};

/// Ports per leaf bridge (a rack).
pub const LEAF_PORTS: usize = 96;
pub const SRV_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const PREFIX: u8 = 16;

/// Node `i`'s MAC (locally administered) and address.
pub fn node_mac(i: usize) -> [u8; 6] {
    [0x02, 0x57, 0x00, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}
pub fn node_name(i: usize) -> String {
    format!("n{:04}", i + 1)
}

/// The nftables table of the ARP-to-port rewrite (in the fabric namespace).
const ARP_TABLE: &str = "storm_fabric";

/// The ruleset that turns the server's ARP requests for node `i` (broadcast, flooded
/// to every node port) into frames addressed to node `i`'s MAC, which the bridges then
/// forward to its one port: a switch floods a broadcast in hardware, but on veth every
/// copy costs the sender's CPU (measured: xboot's own threads spent most of their
/// storm CPU in the kernel delivering its ARP requests to 1,000 node namespaces, and
/// the node kernels answering them), so without it the lab charges the server N².
pub fn arp_to_port_rules(n: usize) -> String {
    let elements: Vec<String> = (0..n)
        .map(|i| format!("{} : {}", node_ip(i), crate::node::mac_string(node_mac(i))))
        .collect();
    format!(
        "table bridge {ARP_TABLE} {{\n  map node_mac {{\n    type ipv4_addr : ether_addr\n    elements = {{ {} }}\n  }}\n\
         \x20 chain pre {{\n    type filter hook prerouting priority -300; policy accept;\n\
         \x20   iifname \"up0\" ether daddr ff:ff:ff:ff:ff:ff arp operation request ether daddr set arp daddr ip map @node_mac counter\n  }}\n}}\n",
        elements.join(", ")
    )
}

/// The built network; dropping it removes every namespace (and kills what runs inside).
pub struct Fabric {
    pub prefix: String,
    pub server_ns: String,
    pub fabric_ns: String,
    pub nodes: Vec<String>,
    /// The helper whose indices are the node namespaces (then fabric, then server).
    pub ops: NsOps,
}

fn batch(cmd: &str, args: &[&str], lines: &[String]) -> Result<(), String> {
    let mut child = testlab::peers::command(cmd)
        .args(args)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(lines.join("\n").as_bytes())
            .map_err(|e| format!("{cmd} -batch: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?} -batch failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(())
}

impl Fabric {
    /// Builds the network for `n` nodes. `tag` names the run (letters, digits).
    pub fn build(n: usize, tag: &str) -> Result<Fabric, String> {
        let prefix = format!("xbst-{}-{tag}", std::process::id());
        let nodes: Vec<String> = (0..n).map(|i| format!("{prefix}-n{i}")).collect();
        let fabric_ns = format!("{prefix}-f");
        let server_ns = format!("{prefix}-s");
        let mut names = nodes.clone();
        names.push(fabric_ns.clone());
        names.push(server_ns.clone());
        let ops = NsOps::start(names.clone());
        // From here on, drop deletes whatever was made.
        let f = Fabric {
            prefix,
            server_ns,
            fabric_ns,
            nodes,
            ops,
        };
        let adds: Vec<String> = names.iter().map(|n| format!("netns add {n}")).collect();
        batch("ip", &[], &adds)?;
        // IPv6 off before any link exists (new links take `default`), loopback up.
        for i in 0..names.len() {
            let server = i == names.len() - 1;
            f.ops
                .run_blocking(i, move || {
                    if !server {
                        nsops::sysctl("net/ipv6/conf/all/disable_ipv6", "1")?;
                        nsops::sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
                    }
                    nsops::link_up("lo")
                })
                .map_err(|e| format!("namespace {}: {e}", names[i]))?;
        }
        let leaves = n.div_ceil(LEAF_PORTS).max(1);
        let mut l = vec![
            "link add spine type bridge stp_state 0 forward_delay 0 mcast_snooping 0".to_string(),
        ];
        for k in 0..leaves {
            l.push(format!(
                "link add leaf{k} type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
            ));
            l.push(format!("link add tl{k} type veth peer name ts{k}"));
            l.push(format!("link set tl{k} master leaf{k} up"));
            l.push(format!("link set ts{k} master spine up"));
            l.push(format!("link set leaf{k} up"));
        }
        for (i, ns) in f.nodes.iter().enumerate() {
            let mac = crate::node::mac_string(node_mac(i));
            l.push(format!(
                "link add p{i} type veth peer name eth0 address {mac} netns {ns}"
            ));
            l.push(format!("link set p{i} master leaf{} up", i / LEAF_PORTS));
        }
        l.push(format!(
            "link add up0 type veth peer name srv0 netns {}",
            f.server_ns
        ));
        l.push("link set up0 master spine up".into());
        l.push("link set spine up".into());
        batch("ip", &["-n", &f.fabric_ns], &l)?;
        // Node ports, and the spine's ports to the leaves: a node's broadcast then goes up
        // its leaf to the spine and only to the server (an isolated port forwards only to
        // non-isolated ones), never down into the other racks, whose leaves would flood
        // it to every node (N² deliveries: 160k softnet drops measured at N = 1,000).
        let iso: Vec<String> = (0..n)
            .map(|i| format!("link set dev p{i} isolated on"))
            .chain((0..leaves).map(|k| format!("link set dev ts{k} isolated on")))
            .collect();
        if !iso.is_empty() {
            batch("bridge", &["-n", &f.fabric_ns], &iso)?;
        }
        batch(
            "ip",
            &["-n", &f.server_ns],
            &[
                format!("addr add {SRV_IP}/{PREFIX} dev srv0"),
                "link set srv0 up".into(),
            ],
        )?;
        for i in 0..n {
            f.ops
                .run_blocking(i, || nsops::link_up("eth0"))
                .map_err(|e| format!("node {i}: eth0 up: {e}"))?;
        }
        Ok(f)
    }

    /// Installs the ARP-to-port rewrite ([`arp_to_port_rules`]) on the spine.
    pub fn arp_to_port(&self) -> Result<(), String> {
        crate::faults::nft(
            &self.fabric_ns,
            &["-f", "-"],
            Some(&arp_to_port_rules(self.nodes.len())),
        )
        .map(|_| ())
    }

    /// ARP requests the rewrite has sent to one port instead of flooding them.
    pub fn arp_redirected(&self) -> u64 {
        crate::faults::nft(
            &self.fabric_ns,
            &["list", "chain", "bridge", ARP_TABLE, "pre"],
            None,
        )
        .ok()
        .and_then(|t| {
            let mut w = t.split_whitespace();
            w.find(|x| *x == "packets")?;
            w.next()?.parse().ok()
        })
        .unwrap_or(0)
    }

    /// Index of the fabric / server namespace for [`NsOps`].
    pub fn fabric_idx(&self) -> usize {
        self.nodes.len()
    }
    pub fn server_idx(&self) -> usize {
        self.nodes.len() + 1
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        let all: Vec<&String> = self
            .nodes
            .iter()
            .chain([&self.fabric_ns, &self.server_ns])
            .collect();
        for ns in &all {
            if let Ok(out) = testlab::peers::command("ip")
                .args(["netns", "pids", ns])
                .output()
            {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(p) = pid.parse::<i32>() {
                        // SAFETY: kill(2) on a process inside a namespace this run made.
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
            }
        }
        let dels: Vec<String> = all.iter().map(|n| format!("netns del {n}")).collect();
        let _ = batch("ip", &["-force"], &dels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_rewrite_maps_every_node_to_its_mac() {
        let r = arp_to_port_rules(300);
        assert!(
            r.contains("10.77.1.1 : 02:57:00:00:00:00, 10.77.1.2 : 02:57:00:00:00:01"),
            "{r}"
        );
        // Node 299 (the 300th): 10.77.2.50, MAC ...:01:2b.
        assert!(r.contains("10.77.2.50 : 02:57:00:00:01:2b }"), "{r}");
        assert!(r.contains("iifname \"up0\" ether daddr ff:ff:ff:ff:ff:ff arp operation request ether daddr set arp daddr ip map @node_mac counter"));
        assert_eq!(r.matches(" : 02:57:").count(), 300);
    }
}
