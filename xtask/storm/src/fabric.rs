//! The storm's network, in namespaces this run creates (all named `xbst-<pid>-…`) and
//! deletes on drop, with every process still inside them killed by pid:
//!
//! ```text
//! server ns: srv0 10.77.0.1/16 ==veth== up0 ─┐
//! fabric ns:                         spine bridge ─ ts<k> ==veth== tl<k> ─ leaf<k> (≤ 96 ports)
//!                                                                              └─ p<i> (isolated on)
//! node ns i: eth0 (the inventory's MAC, IPv6 off) ==veth== p<i>
//! ```
//! With K segment servers ([`Segments`], `--segment-servers`) the nodes are cut into K
//! runs of consecutive nodes (whole racks but the last), each its own L2 domain: its own
//! spine (`spine` for segment 0, `spine<s>` after), its own leaves, its own subnet
//! 10.(77+s).0.0/16 ([`Segments::subnet`]) and its own server namespace (`…-s`,
//! `…-s<s>`, each with `srv0` at 10.(77+s).0.1); a control bridge `ctl` (10.76.0.1/24)
//! joins the server namespaces (`ctl` 10.76.0.(11+s)) to the etcd the servers share,
//! which runs in the fabric namespace. K = 1 is today's fabric plus that control link.
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

/// At most this many segments (their subnets 10.77.0.0/16 to 10.92.0.0/16).
pub const MAX_SEGMENTS: usize = 16;

/// Address of the control bridge in the fabric namespace (etcd listens there).
pub const CTL_IP: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 1);

/// How the nodes are split over segment servers: node `i` is in segment
/// `i / per_segment()`, so a segment holds consecutive nodes (whole racks of
/// [`LEAF_PORTS`], but the last). One segment is the standalone fabric's addressing:
/// [`Segments::node_ip`] is [`node_ip`] and [`Segments::server_ip`] is [`SRV_IP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Segments {
    pub n: usize,
    pub k: usize,
}

impl Segments {
    /// `k` segments for `n` nodes; refused when a segment would be empty or there are
    /// more than [`MAX_SEGMENTS`].
    pub fn new(n: usize, k: usize) -> Result<Segments, String> {
        if k == 0 || k > MAX_SEGMENTS {
            return Err(format!("{k} segment servers: 1 to {MAX_SEGMENTS}"));
        }
        let s = Segments { n, k };
        if n < k || s.range(k - 1).is_empty() {
            return Err(format!(
                "{n} nodes over {k} segments leaves a segment without nodes"
            ));
        }
        Ok(s)
    }
    pub fn one(n: usize) -> Segments {
        Segments { n, k: 1 }
    }
    pub fn per_segment(&self) -> usize {
        self.n.div_ceil(self.k).max(1)
    }
    pub fn of(&self, i: usize) -> usize {
        i / self.per_segment()
    }
    /// The nodes of segment `s`.
    pub fn range(&self, s: usize) -> std::ops::Range<usize> {
        let p = self.per_segment();
        (s * p).min(self.n)..((s + 1) * p).min(self.n)
    }
    /// Node `i`'s address in its segment's subnet.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        let s = self.of(i);
        let j = i - self.range(s).start;
        Ipv4Addr::new(10, 77 + s as u8, 1 + (j / 250) as u8, 1 + (j % 250) as u8)
    }
    pub fn server_ip(&self, s: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77 + s as u8, 0, 1)
    }
    /// Segment `s`'s subnet (`/PREFIX`).
    pub fn subnet(&self, s: usize) -> String {
        format!("10.{}.0.0/{PREFIX}", 77 + s)
    }
    /// Server `s`'s address on the control bridge.
    pub fn ctl_ip(&self, s: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 76, 0, 11 + s as u8)
    }
    /// The fabric-side port of segment `s`'s server (`up0`, `up1` ...).
    pub fn uplink(&self, s: usize) -> String {
        format!("up{s}")
    }
    /// What an nft rule matches the server ports with: `"up0"`, or a set of them.
    fn uplinks_nft(&self) -> String {
        match self.k {
            1 => "\"up0\"".into(),
            k => format!(
                "{{ {} }}",
                (0..k)
                    .map(|s| format!("\"{}\"", self.uplink(s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The nftables table of the to-port rewrites (in the fabric namespace): chain `pre`
/// for ARP, chain `dhcp` for DHCP replies.
const ARP_TABLE: &str = "storm_fabric";

/// The ruleset that turns the server's ARP requests for node `i` (broadcast, flooded
/// to every node port) into frames addressed to node `i`'s MAC, which the bridges then
/// forward to its one port: a switch floods a broadcast in hardware, but on veth every
/// copy costs the sender's CPU (measured: xboot's own threads spent most of their
/// storm CPU in the kernel delivering its ARP requests to 1,000 node namespaces, and
/// the node kernels answering them), so without it the lab charges the server N².
pub fn arp_to_port_rules(n: usize) -> String {
    arp_to_port_rules_in(&Segments::one(n))
}

/// [`arp_to_port_rules`] for nodes split over segments (their addresses, every server port).
pub fn arp_to_port_rules_in(seg: &Segments) -> String {
    let elements: Vec<String> = (0..seg.n)
        .map(|i| {
            format!(
                "{} : {}",
                seg.node_ip(i),
                crate::node::mac_string(node_mac(i))
            )
        })
        .collect();
    let up = seg.uplinks_nft();
    format!(
        "table bridge {ARP_TABLE} {{\n  map node_mac {{\n    type ipv4_addr : ether_addr\n    elements = {{ {} }}\n  }}\n\
         \x20 chain pre {{\n    type filter hook prerouting priority -300; policy accept;\n\
         \x20   iifname {up} ether daddr ff:ff:ff:ff:ff:ff arp operation request ether daddr set arp daddr ip map @node_mac counter\n  }}\n}}\n",
        elements.join(", ")
    )
}

/// Offset in bits of a DHCP message's `chaddr` from the start of its UDP header: the
/// UDP header (8 bytes), then op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr,
/// siaddr, giaddr (28 bytes).
pub const CHADDR_BIT: usize = (8 + 28) * 8;

/// The same for the server's broadcast DHCP replies (UEFI firmware sets the broadcast
/// flag, so OFFER and ACK go to ff:ff:ff:ff:ff:ff): a reply from up0 to UDP port 68
/// whose `chaddr` is a node's gets that node's MAC as its destination, so the bridges
/// deliver it to the one port instead of flooding N copies. The map is keyed by the
/// raw 48 bits of `chaddr` (nft has no cast from a raw payload to an Ethernet
/// address); a `chaddr` not in it (a truth VM) leaves the frame flooded as before.
pub fn dhcp_to_port_rules(n: usize) -> String {
    dhcp_to_port_rules_in(&Segments::one(n))
}

/// [`dhcp_to_port_rules`] with every segment server's port.
pub fn dhcp_to_port_rules_in(seg: &Segments) -> String {
    let up = seg.uplinks_nft();
    let elements: Vec<String> = (0..seg.n)
        .map(|i| {
            let m = node_mac(i);
            let key = m.iter().fold(0u64, |k, b| (k << 8) | u64::from(*b));
            format!("0x{key:012x} : {}", crate::node::mac_string(m))
        })
        .collect();
    format!(
        "table bridge {ARP_TABLE} {{\n  map chaddr_port {{\n    typeof @th,{CHADDR_BIT},48 : ether daddr\n    elements = {{ {} }}\n  }}\n\
         \x20 chain dhcp {{\n    type filter hook prerouting priority -300; policy accept;\n\
         \x20   iifname {up} ether daddr ff:ff:ff:ff:ff:ff udp sport 67 udp dport 68 ether daddr set @th,{CHADDR_BIT},48 map @chaddr_port counter\n  }}\n}}\n",
        elements.join(", ")
    )
}

/// A token-bucket rate for the server's port (`--uplink 10gbit`): "a 10 GbE head
/// node". tbf is built into this kernel (netem and fq are not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Uplink {
    pub bits_per_s: u64,
    /// GSO and TSO left on at srv0 (`10gbit+gso`). Off by default, so the bucket meters
    /// wire-sized frames; but then TCP segments in software, which on this 2-core
    /// machine caps the server near 0.5 Gbit/s (measured), far below a real NIC with TSO.
    /// tbf meters a GSO packet by all its segments' bytes, so the rate holds either way.
    pub gso: bool,
}

impl Uplink {
    /// `10gbit`, `2.5gbit`, `500mbit` (tc's units, decimal), each optionally `+gso`.
    pub fn parse(s: &str) -> Option<Uplink> {
        let s = s.trim().to_ascii_lowercase();
        let (s, gso) = match s.strip_suffix("+gso") {
            Some(r) => (r.to_string(), true),
            None => (s, false),
        };
        let (num, mult) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
            .iter()
            .find_map(|(u, m)| Some((s.strip_suffix(u)?, *m)))?;
        let v: f64 = num.parse().ok()?;
        (v.is_finite() && v > 0.0).then(|| Uplink {
            bits_per_s: (v * mult).round() as u64,
            gso,
        })
    }

    pub fn name(self) -> String {
        let rate = match self.bits_per_s {
            b if b % 1_000_000_000 == 0 => format!("{}gbit", b / 1_000_000_000),
            b if b % 1_000_000 == 0 => format!("{}mbit", b / 1_000_000),
            b => format!("{b}bit"),
        };
        if self.gso {
            rate + "+gso"
        } else {
            rate
        }
    }

    /// `tc` arguments for srv0's root qdisc: the rate, a bucket of 1 ms at that rate
    /// (at least 64 KiB: tbf drops a packet bigger than its bucket) and 50 ms of queue.
    pub fn tbf_args(self) -> Vec<String> {
        let burst = (self.bits_per_s / 8 / 1000).max(64 * 1024);
        ["qdisc", "replace", "dev", "srv0", "root", "tbf", "rate"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                format!("{}bit", self.bits_per_s),
                "burst".into(),
                burst.to_string(),
                "latency".into(),
                "50ms".into(),
            ])
            .collect()
    }
}

/// MTU of up0 when the server's XDP program is to run in generic mode
/// ([`Fabric::xdp_generic_link`]).
pub const UP0_JUMBO_MTU: u32 = 9000;

/// The built network; dropping it removes every namespace (and kills what runs inside).
pub struct Fabric {
    pub prefix: String,
    /// Segment 0's server namespace (the only one without segment servers).
    pub server_ns: String,
    /// Every segment's server namespace, segment 0 first.
    pub servers_ns: Vec<String>,
    pub fabric_ns: String,
    pub nodes: Vec<String>,
    /// How the nodes are split over the servers.
    pub segments: Segments,
    /// The helper whose indices are the node namespaces (then fabric, then the servers).
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
        Fabric::build_in(Segments::one(n), false, tag)
    }

    /// Builds the network for `seg.n` nodes over `seg.k` segments, each with its own
    /// spine, leaves and server namespace; with `ctl`, the control bridge (etcd's).
    pub fn build_in(seg: Segments, ctl: bool, tag: &str) -> Result<Fabric, String> {
        let n = seg.n;
        let prefix = format!("xbst-{}-{tag}", std::process::id());
        let nodes: Vec<String> = (0..n).map(|i| format!("{prefix}-n{i}")).collect();
        let fabric_ns = format!("{prefix}-f");
        let servers_ns: Vec<String> = (0..seg.k)
            .map(|s| match s {
                0 => format!("{prefix}-s"),
                s => format!("{prefix}-s{s}"),
            })
            .collect();
        let mut names = nodes.clone();
        names.push(fabric_ns.clone());
        names.extend(servers_ns.iter().cloned());
        let ops = NsOps::start(names.clone());
        // From here on, drop deletes whatever was made.
        let f = Fabric {
            prefix,
            server_ns: servers_ns[0].clone(),
            servers_ns,
            fabric_ns,
            nodes,
            segments: seg,
            ops,
        };
        let adds: Vec<String> = names.iter().map(|n| format!("netns add {n}")).collect();
        batch("ip", &[], &adds)?;
        // IPv6 off before any link exists (new links take `default`), loopback up.
        for (i, name) in names.iter().enumerate() {
            let server = i > n;
            f.ops
                .run_blocking(i, move || {
                    if !server {
                        nsops::sysctl("net/ipv6/conf/all/disable_ipv6", "1")?;
                        nsops::sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
                    }
                    nsops::link_up("lo")
                })
                .map_err(|e| format!("namespace {name}: {e}"))?;
        }
        // Leaves are numbered across the segments; segment s's leaves hang under its spine.
        let spine = |s: usize| match s {
            0 => "spine".to_string(),
            s => format!("spine{s}"),
        };
        let mut l = vec![];
        let mut leaf_of = vec![0usize; n];
        let mut leaves = 0;
        for s in 0..seg.k {
            l.push(format!(
                "link add {} type bridge stp_state 0 forward_delay 0 mcast_snooping 0",
                spine(s)
            ));
            let r = seg.range(s);
            let first = leaves;
            leaves += r.len().div_ceil(LEAF_PORTS).max(1);
            for k in first..leaves {
                l.push(format!(
                    "link add leaf{k} type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
                ));
                l.push(format!("link add tl{k} type veth peer name ts{k}"));
                l.push(format!("link set tl{k} master leaf{k} up"));
                l.push(format!("link set ts{k} master {} up", spine(s)));
                l.push(format!("link set leaf{k} up"));
            }
            for i in r.clone() {
                leaf_of[i] = first + (i - r.start) / LEAF_PORTS;
            }
        }
        for (i, ns) in f.nodes.iter().enumerate() {
            let mac = crate::node::mac_string(node_mac(i));
            l.push(format!(
                "link add p{i} type veth peer name eth0 address {mac} netns {ns}"
            ));
            l.push(format!("link set p{i} master leaf{} up", leaf_of[i]));
        }
        for (s, ns) in f.servers_ns.iter().enumerate() {
            let up = seg.uplink(s);
            l.push(format!("link add {up} type veth peer name srv0 netns {ns}"));
            l.push(format!("link set {up} master {} up", spine(s)));
            l.push(format!("link set {} up", spine(s)));
        }
        if ctl {
            l.push("link add ctl type bridge stp_state 0 forward_delay 0 mcast_snooping 0".into());
            l.push(format!("addr add {CTL_IP}/24 dev ctl"));
            l.push("link set ctl up".into());
            for (s, ns) in f.servers_ns.iter().enumerate() {
                l.push(format!("link add c{s} type veth peer name ctl netns {ns}"));
                l.push(format!("link set c{s} master ctl up"));
            }
        }
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
        for (s, ns) in f.servers_ns.iter().enumerate() {
            let mut cmds = vec![
                format!("addr add {}/{PREFIX} dev srv0", seg.server_ip(s)),
                "link set srv0 up".into(),
            ];
            if ctl {
                cmds.push(format!("addr add {}/24 dev ctl", seg.ctl_ip(s)));
                cmds.push("link set ctl up".into());
            }
            batch("ip", &["-n", ns], &cmds)?;
        }
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
            Some(&arp_to_port_rules_in(&self.segments)),
        )
        .map(|_| ())
    }

    /// Installs the DHCP-reply rewrite ([`dhcp_to_port_rules`]) on the spine.
    pub fn dhcp_to_port(&self) -> Result<(), String> {
        crate::faults::nft(
            &self.fabric_ns,
            &["-f", "-"],
            Some(&dhcp_to_port_rules_in(&self.segments)),
        )
        .map(|_| ())
    }

    /// ARP requests the rewrite has sent to one port instead of flooding them.
    pub fn arp_redirected(&self) -> u64 {
        self.redirected("pre")
    }

    /// Broadcast DHCP replies the rewrite has sent to one port.
    pub fn dhcp_redirected(&self) -> u64 {
        self.redirected("dhcp")
    }

    /// Shapes the server's port to `u` (tbf on srv0), with GSO and TSO off on srv0
    /// unless `u.gso`.
    pub fn shape(&self, u: Uplink) -> Result<(), String> {
        if !u.gso {
            let out = testlab::peers::command("ip")
                .args(["netns", "exec", &self.server_ns])
                .arg(testlab::peers::program("ethtool"))
                .args(["-K", "srv0", "gso", "off", "tso", "off"])
                .output()
                .map_err(|e| format!("cannot run ethtool: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ethtool -K srv0 gso off tso off: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let out = testlab::peers::command("tc")
            .args(["-n", &self.server_ns])
            .args(u.tbf_args())
            .output()
            .map_err(|e| format!("cannot run tc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tc {}: {}",
                u.tbf_args().join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Makes the server's XDP program attach in generic (skb) mode, for xdp storms
    /// without the veth artifact. Native XDP_TX on veth needs an XDP program on the
    /// peer (up0); that program strips GSO from srv0 and sends every frame srv0
    /// transmits, bulk HTTP and XDP_TX replies alike, through one 256-frame ring (250k-1.3M
    /// TCP drops and lost DHCP answers measured), where a NIC has TX queues of its own for
    /// XDP. In generic mode XDP_TX goes out through srv0's own transmit path, the peer
    /// needs no program and srv0 keeps GSO. up0's MTU is raised above what native XDP
    /// on veth accepts of a peer (a page less headroom: the kernel refuses the attach
    /// with ERANGE), so xboot's attach falls back to generic as on a NIC without XDP
    /// support; frames stay at the nodes' and srv0's 1,500 bytes.
    pub fn xdp_generic_link(&self) -> Result<(), String> {
        batch(
            "ip",
            &["-n", &self.fabric_ns],
            &[format!("link set up0 mtu {UP0_JUMBO_MTU}")],
        )
    }

    /// What srv0 has sent (zero if its counters cannot be read).
    pub fn server_tx(&self) -> crate::counters::Tx {
        self.ops
            .run_blocking(self.server_idx(), crate::counters::server_tx)
            .unwrap_or_default()
    }

    fn redirected(&self, chain: &str) -> u64 {
        crate::faults::nft(
            &self.fabric_ns,
            &["list", "chain", "bridge", ARP_TABLE, chain],
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
    /// Index of segment `s`'s server namespace.
    pub fn server_idx_of(&self, s: usize) -> usize {
        self.nodes.len() + 1 + s
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        let all: Vec<&String> = self
            .nodes
            .iter()
            .chain([&self.fabric_ns])
            .chain(self.servers_ns.iter())
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

    #[test]
    fn dhcp_rewrite_maps_every_chaddr_to_its_port() {
        let r = dhcp_to_port_rules(300);
        // Node 0's chaddr as a raw 48-bit key, and node 299's (MAC ...:01:2b).
        assert!(
            r.contains("{ 0x025700000000 : 02:57:00:00:00:00, 0x025700000001 : 02:57:00:00:00:01"),
            "{r}"
        );
        assert!(r.contains("0x02570000012b : 02:57:00:00:01:2b }"), "{r}");
        assert_eq!(r.matches(" : 02:57:").count(), 300);
        // chaddr sits 28 bytes into the DHCP message, after the 8-byte UDP header.
        assert_eq!(CHADDR_BIT, 288);
        assert!(r.contains("typeof @th,288,48 : ether daddr"), "{r}");
        assert!(r.contains(
            "iifname \"up0\" ether daddr ff:ff:ff:ff:ff:ff udp sport 67 udp dport 68 ether daddr set @th,288,48 map @chaddr_port counter"
        ));
        // Its own chain, so its counter is read apart from ARP's.
        assert!(r.contains("chain dhcp {") && !r.contains("chain pre"));
    }

    #[test]
    fn segments_split_consecutive_nodes_into_subnets_of_their_own() {
        // One segment is the standalone addressing.
        let one = Segments::new(600, 1).unwrap();
        assert!((0..600).all(|i| one.node_ip(i) == node_ip(i) && one.of(i) == 0));
        assert_eq!(one.server_ip(0), SRV_IP);
        assert_eq!(arp_to_port_rules_in(&one), arp_to_port_rules(600));
        assert_eq!(dhcp_to_port_rules_in(&one), dhcp_to_port_rules(600));
        // 1,000 over 4: 250 each, each from .1.1 of its own /16.
        let four = Segments::new(1000, 4).unwrap();
        assert_eq!(four.range(0), 0..250);
        assert_eq!(four.range(3), 750..1000);
        assert_eq!(four.of(249), 0);
        assert_eq!(four.of(250), 1);
        assert_eq!(four.node_ip(250), Ipv4Addr::new(10, 78, 1, 1));
        assert_eq!(four.node_ip(999), Ipv4Addr::new(10, 80, 1, 250));
        assert_eq!(four.server_ip(3), Ipv4Addr::new(10, 80, 0, 1));
        assert_eq!(four.subnet(2), "10.79.0.0/16");
        assert_eq!(four.ctl_ip(1), Ipv4Addr::new(10, 76, 0, 12));
        // Every node's address lies in its segment's subnet and no other node has it.
        let ips: std::collections::HashSet<Ipv4Addr> = (0..1000).map(|i| four.node_ip(i)).collect();
        assert_eq!(ips.len(), 1000);
        for i in 0..1000 {
            assert_eq!(four.node_ip(i).octets()[1] as usize, 77 + four.of(i));
        }
        // 20 over 3: 7, 7, 6.
        let three = Segments::new(20, 3).unwrap();
        assert_eq!(
            (three.range(0), three.range(1), three.range(2)),
            (0..7, 7..14, 14..20)
        );
        // The rewrites match every server's port.
        let r = arp_to_port_rules_in(&Segments::new(20, 2).unwrap());
        assert!(
            r.contains("iifname { \"up0\", \"up1\" } ether daddr"),
            "{r}"
        );
        assert!(r.contains("10.78.1.1 : 02:57:00:00:00:0a"), "{r}");
        // Refused: no segment, too many, an empty segment.
        assert!(Segments::new(10, 0).is_err());
        assert!(Segments::new(100, MAX_SEGMENTS + 1).is_err());
        assert!(Segments::new(3, 4).is_err());
        // 9 over 4: 3 per segment leaves the fourth empty.
        assert!(Segments::new(9, 4).is_err());
    }

    #[test]
    fn uplink_rates_and_the_tbf_line() {
        assert_eq!(
            Uplink::parse("10gbit").map(|u| u.bits_per_s),
            Some(10_000_000_000)
        );
        assert_eq!(
            Uplink::parse("2.5Gbit").map(|u| u.bits_per_s),
            Some(2_500_000_000)
        );
        assert_eq!(
            Uplink::parse("500mbit").map(|u| u.bits_per_s),
            Some(500_000_000)
        );
        for bad in ["10", "gbit", "-1gbit", "0gbit", "10gbps", "nangbit"] {
            assert_eq!(Uplink::parse(bad), None, "{bad}");
        }
        let u = Uplink::parse("10gbit").unwrap();
        assert_eq!(u.name(), "10gbit");
        assert!(!u.gso);
        let g = Uplink::parse("10gbit+gso").unwrap();
        assert_eq!(
            (g.bits_per_s, g.gso, g.name().as_str()),
            (10_000_000_000, true, "10gbit+gso")
        );
        assert_eq!(g.tbf_args(), u.tbf_args());
        assert_eq!(Uplink::parse("500mbit").unwrap().name(), "500mbit");
        // A bucket of 1 ms at 10 Gbit/s: 1.25 MB.
        assert_eq!(
            u.tbf_args().join(" "),
            "qdisc replace dev srv0 root tbf rate 10000000000bit burst 1250000 latency 50ms"
        );
        // Slow rates keep a bucket that holds a 64 KiB frame.
        assert!(Uplink::parse("1mbit")
            .unwrap()
            .tbf_args()
            .join(" ")
            .contains("burst 65536 "));
    }
}
