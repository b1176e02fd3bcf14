//! Faults injected into a storm, each reported with what it did:
//! - `loss-P`: P % of the frames between the server and the fabric dropped at random,
//!   both ways, by nftables in the fabric namespace (bridge family, `numgen random`, on
//!   the spine's port to the server only, so every frame is exposed once; this kernel
//!   has no netem);
//! - `kill`: `kill -9` of xboot some seconds into the storm, and a restart on the same
//!   config and state directory (the token key is there: nodes past their script must
//!   finish with the URLs the first process signed);
//! - `reload`: the inventory file rewritten with 100 hosts changed (their boot image
//!   switched to a copy of the image), and SIGHUP, during the storm.
//!
//! In a fault run a node that fails before its kernel boots reboots from power-on (a
//! firmware whose boot order retries the network, up to [`REBOOTS`] times), and the
//! booted OS retries a refused or reset HTTP request for [`OS_RETRY`] (as a
//! postscript runner with retries does); the report counts both.
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;

/// Reboots a node may take in a fault run.
pub const REBOOTS: u32 = 3;
/// How long the OS retries a refused HTTP request in a fault run.
pub const OS_RETRY: Duration = Duration::from_secs(30);
/// The nftables table of the loss fault (in the fabric namespace).
const LOSS_TABLE: &str = "storm_loss";

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Random loss, in per mille of frames, each way between server and fabric.
    Loss { permille: u32 },
    /// `kill -9` of the server after this many seconds, then a restart.
    Kill { after_s: f64 },
    /// Inventory reload changing `hosts` hosts after this many seconds.
    Reload { after_s: f64, hosts: usize },
}

impl Fault {
    /// `loss-1`, `loss-5` (percent), `kill` / `kill-20` (seconds), `reload` /
    /// `reload-10` (seconds; 100 hosts).
    pub fn parse(s: &str) -> Option<Fault> {
        let (name, arg) = match s.split_once('-') {
            Some((n, a)) => (n, Some(a.parse::<f64>().ok()?)),
            None => (s, None),
        };
        match name {
            "loss" => {
                let pct = arg?;
                (pct > 0.0 && pct < 100.0).then(|| Fault::Loss {
                    permille: (pct * 10.0).round() as u32,
                })
            }
            "kill" => Some(Fault::Kill {
                after_s: arg.unwrap_or(10.0),
            }),
            "reload" => Some(Fault::Reload {
                after_s: arg.unwrap_or(5.0),
                hosts: 100,
            }),
            _ => None,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Fault::Loss { permille } => format!("loss-{}", *permille as f64 / 10.0),
            Fault::Kill { after_s } => format!("kill-{after_s}"),
            Fault::Reload { after_s, .. } => format!("reload-{after_s}"),
        }
    }

    /// Whether the fault needs xboot (the baseline has no kill/reload here).
    pub fn xboot_only(&self) -> bool {
        !matches!(self, Fault::Loss { .. })
    }
}

/// What a fault did, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Record {
    pub fault: String,
    /// Seconds since the power command when it was injected (kill, reload).
    pub at_s: Option<f64>,
    /// Kill: seconds until the restarted server listened again.
    pub restart_s: Option<f64>,
    /// Frames dropped by the loss rules (to the server, from the server).
    pub dropped: [u64; 2],
    /// Nodes past their script when the fault struck (kill: they boot on with the
    /// first process's tokens).
    pub past_script: usize,
    /// Of those, the ones that completed without a reboot.
    pub past_script_finished: usize,
    pub detail: String,
}

/// The nft ruleset for `permille` loss each way on the spine's port `up0`.
pub fn loss_rules(permille: u32) -> String {
    format!(
        "table bridge {LOSS_TABLE} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n\
         \x20   oifname \"up0\" numgen random mod 1000 < {permille} counter drop\n\
         \x20   iifname \"up0\" numgen random mod 1000 < {permille} counter drop\n  }}\n}}\n"
    )
}

pub(crate) fn nft(netns: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = testlab::peers::command("ip")
        .args(["netns", "exec", netns])
        .arg(testlab::peers::program("nft"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "nft {args:?} in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the loss rules in the fabric namespace (gone with it).
pub fn install_loss(fabric_ns: &str, permille: u32) -> Result<(), String> {
    nft(fabric_ns, &["-f", "-"], Some(&loss_rules(permille)))?;
    Ok(())
}

/// The loss rules' drop counters: (to the server, from the server).
pub fn loss_counters(fabric_ns: &str) -> Result<[u64; 2], String> {
    let text = nft(fabric_ns, &["list", "table", "bridge", LOSS_TABLE], None)?;
    Ok(parse_loss_counters(&text))
}

pub fn parse_loss_counters(text: &str) -> [u64; 2] {
    let mut out = [0; 2];
    for l in text.lines() {
        let l = l.trim();
        let i = if l.starts_with("oifname") {
            0
        } else if l.starts_with("iifname") {
            1
        } else {
            continue;
        };
        let mut w = l.split_whitespace();
        while let Some(x) = w.next() {
            if x == "packets" {
                out[i] = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
    }
    out
}

/// The hosts file with `count` hosts (every `n / count`-th) switched to `image`.
pub fn changed_hosts(hosts_json: &str, count: usize, image: &str) -> Result<String, String> {
    let mut v: Vec<serde_json::Value> =
        serde_json::from_str(hosts_json).map_err(|e| format!("hosts.json: {e}"))?;
    let step = (v.len() / count.max(1)).max(1);
    for h in v.iter_mut().step_by(step).take(count) {
        h["boot_image"] = serde_json::Value::from(image);
    }
    serde_json::to_string(&v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_name() {
        assert_eq!(Fault::parse("loss-1"), Some(Fault::Loss { permille: 10 }));
        assert_eq!(Fault::parse("loss-0.5"), Some(Fault::Loss { permille: 5 }));
        assert_eq!(Fault::parse("loss"), None);
        assert_eq!(Fault::parse("loss-100"), None);
        assert_eq!(Fault::parse("kill-20"), Some(Fault::Kill { after_s: 20.0 }));
        assert_eq!(
            Fault::parse("reload"),
            Some(Fault::Reload {
                after_s: 5.0,
                hosts: 100
            })
        );
        assert_eq!(Fault::parse("flood"), None);
        assert_eq!(Fault::parse("kill-x"), None);
        assert_eq!(Fault::Loss { permille: 50 }.name(), "loss-5");
        assert!(!Fault::Loss { permille: 50 }.xboot_only());
    }

    #[test]
    fn loss_rules_and_counters() {
        let r = loss_rules(50);
        assert!(r.contains("table bridge storm_loss"), "{r}");
        assert!(r.contains("oifname \"up0\" numgen random mod 1000 < 50 counter drop"));
        let listed = "table bridge storm_loss {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\
                      \t\toifname \"up0\" numgen random mod 1000 < 50 counter packets 12 bytes 3400 drop\n\
                      \t\tiifname \"up0\" numgen random mod 1000 < 50 counter packets 7 bytes 900 drop\n\t}\n}\n";
        assert_eq!(parse_loss_counters(listed), [12, 7]);
    }

    #[test]
    fn reload_changes_the_asked_number_of_hosts() {
        let hosts = crate::servers::hosts_json(1000);
        let out = changed_hosts(&hosts, 100, "test-b").unwrap();
        let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(v.len(), 1000);
        assert_eq!(
            v.iter().filter(|h| h["boot_image"] == "test-b").count(),
            100
        );
        assert!(changed_hosts("{", 1, "x").is_err());
    }
}
