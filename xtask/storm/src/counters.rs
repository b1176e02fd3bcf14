//! What the server did for its CPU time, in counts rather than seconds (a loaded machine
//! blurs seconds, not counts): the packets and bytes srv0 sent (bytes per packet shows
//! how large the server's sends leave its GSO packets; on veth the nodes' receive of
//! each packet runs in the sender's context, so every packet costs the server), and,
//! when asked (`--count-syscalls`), the server processes' system calls and context
//! switches (`perf stat` with counting events, no sampling and no per-event record).
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde::Serialize;

/// Packets and bytes an interface sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tx {
    pub packets: u64,
    pub bytes: u64,
}

impl Tx {
    /// What was sent between `before` and `self`.
    pub fn since(self, before: Tx) -> Tx {
        Tx {
            packets: self.packets.saturating_sub(before.packets),
            bytes: self.bytes.saturating_sub(before.bytes),
        }
    }
}

/// `dev`'s transmit counters in `/proc/net/dev` text.
pub fn parse_dev_tx(text: &str, dev: &str) -> Option<Tx> {
    use crate::nsops::{DEV_BYTES, DEV_PACKETS, DEV_TX};
    let (_, f) = crate::nsops::dev_rows(text).find(|(name, _)| *name == dev)?;
    Some(Tx {
        bytes: *f.get(DEV_TX + DEV_BYTES)?,
        packets: *f.get(DEV_TX + DEV_PACKETS)?,
    })
}

/// srv0's transmit counters; runs in the server's namespace.
pub fn server_tx() -> std::io::Result<Tx> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    parse_dev_tx(&text, "srv0").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no srv0 in /proc/net/dev")
    })
}

/// The server's system calls and context switches during the storm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Work {
    pub syscalls: u64,
    pub context_switches: u64,
}

/// The events counted, in `perf stat` names.
const EVENTS: &str = "raw_syscalls:sys_enter,context-switches";

/// `perf stat -x,` output (CSV: value, unit, event, ...) as [`Work`]; None if either
/// count is missing (`<not counted>`, `<not supported>`).
pub fn parse_perf_csv(text: &str) -> Option<Work> {
    let count = |event: &str| {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.get(2) == Some(&event)).then(|| f[0].parse::<u64>().ok())?
        })
    };
    Some(Work {
        syscalls: count("raw_syscalls:sys_enter")?,
        context_switches: count("context-switches")?,
    })
}

/// A `perf stat` counting the server's processes (and the threads and children they
/// start) until [`Counting::finish`].
pub struct Counting {
    child: Child,
    out: PathBuf,
}

impl Counting {
    /// Starts counting `pids`; the figures go to `dir/perf-stat.csv`.
    pub fn start(pids: &[u32], dir: &Path) -> Result<Counting, String> {
        let out = dir.join("perf-stat.csv");
        let list = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let child = testlab::peers::command("perf")
            .args(["stat", "-x,", "-e", EVENTS, "-p", &list, "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("perf stat (for --count-syscalls): {e}"))?;
        // perf opens its counters after it starts; a storm's first packets must not
        // beat it.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Counting { child, out })
    }

    /// Stops counting (SIGINT: perf then writes its totals) and reads the counts.
    pub fn finish(mut self) -> Result<Work, String> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|e| e.to_string())?;
        // SAFETY: the pid is our own child's, not yet waited for.
        unsafe { libc::kill(pid, libc::SIGINT) };
        self.child.wait().map_err(|e| format!("perf stat: {e}"))?;
        let text = std::fs::read_to_string(&self.out)
            .map_err(|e| format!("{}: {e}", self.out.display()))?;
        parse_perf_csv(&text).ok_or_else(|| format!("perf stat counted nothing: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_counters_of_one_device() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
                    srv0: 5000000   70000    0    0    0     0          0         0 912345678  123456    0    7    0     0       0          0\n";
        assert_eq!(
            parse_dev_tx(text, "srv0"),
            Some(Tx {
                packets: 123_456,
                bytes: 912_345_678
            })
        );
        assert_eq!(parse_dev_tx(text, "srv"), None);
        // The same with fields one space apart.
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets ...\n\
                      lo:  10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n\
                    srv0: 9000 7 0 3 0 0 0 0 123456789 1500 0 17 0 0 0 0\n";
        let bytes = |dev: &str| parse_dev_tx(text, dev).map(|t| t.bytes);
        assert_eq!(bytes("srv0"), Some(123_456_789));
        assert_eq!(bytes("lo"), Some(20));
        assert_eq!(bytes("up0"), None);
        let a = Tx {
            packets: 10,
            bytes: 1000,
        };
        let b = Tx {
            packets: 25,
            bytes: 4000,
        };
        assert_eq!(
            b.since(a),
            Tx {
                packets: 15,
                bytes: 3000
            }
        );
    }

    #[test]
    fn perf_stat_csv() {
        let text = "# started on Mon Dec  7 15:58:28 2026\n\n\
                    3521,,raw_syscalls:sys_enter,676953,100.00,,\n\
                    17,,context-switches,676953,100.00,,\n";
        assert_eq!(
            parse_perf_csv(text),
            Some(Work {
                syscalls: 3521,
                context_switches: 17
            })
        );
        let missing =
            "<not counted>,,raw_syscalls:sys_enter,0,0.00,,\n0,,context-switches,1,100.00,,\n";
        assert_eq!(parse_perf_csv(missing), None);
    }
}
