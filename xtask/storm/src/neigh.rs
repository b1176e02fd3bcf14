//! The kernel's neighbour (ARP) table as a variable of the storm.
//!
//! Linux keeps one IPv4 neighbour table for every namespace, capped by
//! `net.ipv4.neigh.default.gc_thresh3` (1,024 by default; the knobs exist only in the
//! initial namespace). A storm of ~1,000 nodes fills it: the server's entries for its
//! nodes cannot be made, packets to them are dropped and the kernel counts a
//! `table_fulls` in `/proc/net/stat/arp_cache`. A real server with that many nodes on
//! one segment hits the same cap, so the bench runs both: `default` (the limits as the
//! host has them, overflows reported as a finding) and `raised` (gc_thresh1/2/3 raised
//! for the run by [`NeighGuard`], which restores the saved values when dropped: at the
//! end of the run, on an error, a panic, or Ctrl-C, which ends the storm early through
//! `testlab::interrupted`).
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where the knobs are (the initial namespace's; a thread inside a node namespace sees
/// no such files).
pub const SYSCTL_DIR: &str = "/proc/sys/net/ipv4/neigh/default";
const KEYS: [&str; 3] = ["gc_thresh1", "gc_thresh2", "gc_thresh3"];

/// Which limits a storm runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limits {
    /// As the host has them (the kernel's defaults: 128 / 512 / 1,024).
    Default,
    /// Raised for the run (see [`raised_for`]) and restored afterwards.
    Raised,
}

impl Limits {
    pub const ALL: [Limits; 2] = [Limits::Default, Limits::Raised];
    pub fn name(self) -> &'static str {
        match self {
            Limits::Default => "default",
            Limits::Raised => "raised",
        }
    }
    pub fn parse(s: &str) -> Option<Limits> {
        Limits::ALL.into_iter().find(|l| l.name() == s)
    }
}

/// gc_thresh1/2/3 under `dir`.
pub fn read(dir: &Path) -> io::Result<[u64; 3]> {
    let mut v = [0; 3];
    for (slot, key) in v.iter_mut().zip(KEYS) {
        let p = dir.join(key);
        let text = std::fs::read_to_string(&p)?;
        *slot = text.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {text:?}: {e}", p.display()),
            )
        })?;
    }
    Ok(v)
}

/// The raised limits for a storm of `n` nodes, never below `now`: gc_thresh3 at least
/// 8 entries per node and 32,768 (what xCAT's tuning guide sets), gc_thresh2 half of
/// it, gc_thresh1 an eighth (garbage collection leaves tables under that alone).
pub fn raised_for(n: usize, now: [u64; 3]) -> [u64; 3] {
    let t3 = (8 * n as u64).max(32_768);
    [now[0].max(t3 / 8), now[1].max(t3 / 2), now[2].max(t3)]
}

/// Raised limits, restored to the saved values on drop.
#[derive(Debug)]
pub struct NeighGuard {
    dir: PathBuf,
    saved: [u64; 3],
    pub raised: [u64; 3],
}

impl NeighGuard {
    /// Raises the host's limits for a storm of `n` nodes.
    pub fn raise(n: usize) -> io::Result<NeighGuard> {
        NeighGuard::raise_in(Path::new(SYSCTL_DIR), n)
    }

    /// Raises the limits under `dir` (a test points it at a scratch folder).
    pub fn raise_in(dir: &Path, n: usize) -> io::Result<NeighGuard> {
        let saved = read(dir)?;
        let raised = raised_for(n, saved);
        let g = NeighGuard {
            dir: dir.to_path_buf(),
            saved,
            raised,
        };
        // Top first, so the three stay ordered at every step; a failure part-way is
        // undone by the guard's drop.
        for i in (0..3).rev() {
            write(&g.dir, i, raised[i])?;
        }
        Ok(g)
    }

    pub fn saved(&self) -> [u64; 3] {
        self.saved
    }
}

fn write(dir: &Path, i: usize, v: u64) -> io::Result<()> {
    let p = dir.join(KEYS[i]);
    std::fs::write(&p, v.to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

impl Drop for NeighGuard {
    fn drop(&mut self) {
        // Bottom first, the reverse of raising.
        for (i, (key, v)) in KEYS.iter().zip(self.saved).enumerate() {
            if let Err(e) = write(&self.dir, i, v) {
                eprintln!("storm: cannot restore net.ipv4.neigh.default.{key} = {v}: {e}");
            }
        }
    }
}

/// The neighbour table's part of a storm's record.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub limits: Limits,
    /// Whether the limits are the variable of the sweep (then overflows under `default`
    /// are the finding; otherwise any overflow invalidates the run).
    pub variable: bool,
    /// gc_thresh1/2/3 in force during the storm.
    pub gc_thresh: [u64; 3],
    /// `table_fulls` (all CPUs) before and after the storm.
    pub table_fulls_before: u64,
    pub table_fulls_after: u64,
}

impl Record {
    pub fn overflows(&self) -> u64 {
        self.table_fulls_after
            .saturating_sub(self.table_fulls_before)
    }
    /// Overflows count against the run unless the default limits were under test.
    pub fn invalidates(&self) -> bool {
        self.overflows() > 0 && !(self.variable && self.limits == Limits::Default)
    }
}

/// `table_fulls` of `/proc/net/stat/arp_cache` (one line per CPU, hex), summed.
pub fn table_fulls() -> u64 {
    parse_table_fulls(&std::fs::read_to_string("/proc/net/stat/arp_cache").unwrap_or_default())
}

pub fn parse_table_fulls(text: &str) -> u64 {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let Some(col) = header.iter().position(|h| *h == "table_fulls") else {
        return 0;
    };
    lines
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(col)?, 16).ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, vals: [u64; 3]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("storm-neigh-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for (k, v) in KEYS.iter().zip(vals) {
            std::fs::write(d.join(k), format!("{v}\n")).unwrap();
        }
        d
    }

    #[test]
    fn raised_for_the_run_and_restored_on_drop() {
        let d = scratch("drop", [128, 512, 1024]);
        {
            let g = NeighGuard::raise_in(&d, 1000).unwrap();
            assert_eq!(g.saved(), [128, 512, 1024]);
            assert_eq!(read(&d).unwrap(), [4096, 16384, 32768]);
            assert_eq!(g.raised, [4096, 16384, 32768]);
        }
        assert_eq!(read(&d).unwrap(), [128, 512, 1024]);
        // Never lowered, and scaled past 4,096 nodes.
        assert_eq!(raised_for(5000, [128, 20000, 1024]), [5000, 20000, 40000]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn restored_when_the_run_panics() {
        let d = scratch("panic", [128, 512, 1024]);
        let dd = d.clone();
        let r = std::panic::catch_unwind(move || {
            let _g = NeighGuard::raise_in(&dd, 100).unwrap();
            panic!("the storm failed");
        });
        assert!(r.is_err());
        assert_eq!(read(&d).unwrap(), [128, 512, 1024]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn unreadable_limits_are_a_clear_error() {
        let d = scratch("bad", [128, 512, 1024]);
        std::fs::write(d.join("gc_thresh2"), "lots\n").unwrap();
        let e = NeighGuard::raise_in(&d, 100).unwrap_err();
        assert!(e.to_string().contains("gc_thresh2"), "{e}");
        // Nothing was written.
        assert_eq!(
            std::fs::read_to_string(d.join("gc_thresh3")).unwrap(),
            "1024\n"
        );
        let e = NeighGuard::raise_in(&d.join("missing"), 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn overflow_counts_and_validity() {
        let text =
            "entries  allocs table_fulls\n00000400 00000010 0000000a\n00000400 00000002 00000001\n";
        assert_eq!(parse_table_fulls(text), 11);
        assert_eq!(parse_table_fulls("entries allocs\n1 2\n"), 0);
        let mut r = Record {
            limits: Limits::Default,
            variable: true,
            gc_thresh: [128, 512, 1024],
            table_fulls_before: 5,
            table_fulls_after: 9,
        };
        assert_eq!(r.overflows(), 4);
        assert!(!r.invalidates(), "default limits under test: a finding");
        r.variable = false;
        assert!(r.invalidates());
        r.variable = true;
        r.limits = Limits::Raised;
        assert!(r.invalidates());
        r.table_fulls_after = 5;
        assert!(!r.invalidates());
        assert_eq!(Limits::parse("raised"), Some(Limits::Raised));
    }
}
