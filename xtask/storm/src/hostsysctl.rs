//! Host-wide sysctls a storm raises for its run and restores (RAII: at the end, on an
//! error, a panic, or Ctrl-C through `testlab::interrupted`).
//!
//! `net.core.netdev_max_backlog`: on veth, every frame a bridge forwards is queued on
//! the forwarding CPU's backlog (1,000 by default), so a burst to many ports at once
//! (the server's TCP flows to a thousand nodes, a broadcast flooded to every port)
//! overflows it and the lab drops frames a switch would have buffered: measured 8,025
//! drops towards the nodes in one 1,000-node storm. The run raises it and checks
//! (softnet drops, fabric transmit drops) that the lab lost nothing.
use std::io;
use std::path::{Path, PathBuf};

pub const NETDEV_MAX_BACKLOG: &str = "/proc/sys/net/core/netdev_max_backlog";

/// One sysctl raised to at least a value; the saved value is written back on drop.
#[derive(Debug)]
pub struct AtLeast {
    path: PathBuf,
    saved: u64,
    pub value: u64,
}

impl AtLeast {
    /// Raises `path` to `want` unless it is already higher (then nothing is written).
    pub fn raise(path: &Path, want: u64) -> io::Result<AtLeast> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let saved: u64 = text.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {text:?}: {e}", path.display()),
            )
        })?;
        let value = saved.max(want);
        if value != saved {
            std::fs::write(path, value.to_string())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        }
        Ok(AtLeast {
            path: path.to_path_buf(),
            saved,
            value,
        })
    }

    pub fn saved(&self) -> u64 {
        self.saved
    }
}

impl Drop for AtLeast {
    fn drop(&mut self) {
        if self.value != self.saved {
            if let Err(e) = std::fs::write(&self.path, self.saved.to_string()) {
                eprintln!(
                    "storm: cannot restore {} = {}: {e}",
                    self.path.display(),
                    self.saved
                );
            }
        }
    }
}

/// The backlog a storm of `n` nodes runs with: 64 frames per node, at least 16,384.
pub fn backlog_for(n: usize) -> u64 {
    (64 * n as u64).max(16_384)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_then_restored_and_never_lowered() {
        let d = std::env::temp_dir().join(format!("storm-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("netdev_max_backlog");
        std::fs::write(&p, "1000\n").unwrap();
        {
            let g = AtLeast::raise(&p, backlog_for(1000)).unwrap();
            assert_eq!((g.saved(), g.value), (1000, 64_000));
            assert_eq!(std::fs::read_to_string(&p).unwrap(), "64000");
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1000");
        std::fs::write(&p, "100000\n").unwrap();
        {
            let g = AtLeast::raise(&p, 16_384).unwrap();
            assert_eq!(g.value, 100_000);
        }
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "100000\n",
            "untouched"
        );
        std::fs::write(&p, "many").unwrap();
        assert!(AtLeast::raise(&p, 1)
            .unwrap_err()
            .to_string()
            .contains("netdev_max_backlog"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
