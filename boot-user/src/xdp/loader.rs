//! Loading the XDP program, attaching it to interfaces and detaching it again.
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use boot_common::{HostEntry, MacKey, Template, EVENT_SLOTS};

use super::events::EventReader;

use super::stats::XdpStats;

/// The program's object, built by build.rs from crate boot-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/boot-ebpf"));
/// Name of the XDP function in boot-ebpf.
const PROGRAM: &str = "xboot";

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("cannot load the XDP program: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the kernel rejected the XDP program: {0}")]
    Verify(#[source] Box<ProgramError>),
    #[error("cannot attach XDP to {iface}: native failed ({native}), generic failed ({generic})")]
    Attach {
        iface: String,
        native: Box<ProgramError>,
        generic: Box<ProgramError>,
    },
    #[error("XDP map {name}: {source}")]
    Map {
        name: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("XDP test run: {0}")]
    TestRun(#[source] Box<ProgramError>),
    #[error("cannot count the possible CPUs ({0})")]
    Cpus(String),
}

/// Map sizes, fixed at load time.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Boot interfaces the host map can hold (preallocated).
    pub max_hosts: u32,
    /// Template slots (preallocated: `size_of::<Template>()` bytes each).
    pub max_templates: u32,
}

impl LoadOptions {
    /// Room for `hosts` interfaces with a MAC (boot and BMC) and growth: twice as many,
    /// at least 1024.
    pub fn for_hosts(hosts: usize) -> LoadOptions {
        LoadOptions::sized(hosts, 0)
    }

    /// [`LoadOptions::for_hosts`], or room for `at_least` (`dhcp.xdp_max_hosts`) if
    /// that is more: the maps cannot grow while the program runs, so a server that
    /// starts with a small inventory and is filled through the API needs the room named.
    pub fn sized(hosts: usize, at_least: u32) -> LoadOptions {
        let max_hosts = (hosts.saturating_mul(2))
            .max(at_least as usize)
            .clamp(1024, MAX_HOSTS as usize) as u32;
        // Templates are shared by hosts whose replies differ only in the per-host fields
        // (address, MAC, name, boot URL): a subnet and image group needs a few per client
        // kind and name length. What stays per host is its DHCPNAK (the message names the
        // host and its address). Two slots per entry of room (one per host for the NAK
        // and a second generation of it while a reload's grace period runs, as much
        // again for hosts whose other templates share nothing), and `SHARED_TEMPLATES`
        // for the shared ones: 872 bytes each.
        LoadOptions {
            max_hosts,
            max_templates: max_hosts.saturating_mul(2) + SHARED_TEMPLATES,
        }
    }
}

/// The most boot interfaces the maps are sized for (preallocated: about 2 KiB each).
pub const MAX_HOSTS: u32 = 1 << 22;

/// Template slots beyond two per host entry, for the templates hosts share.
pub const SHARED_TEMPLATES: u32 = 16384;

/// How the program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (XDP_TX straight from the NIC's receive ring).
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
}

/// The loaded program and its maps. Dropping it detaches the program everywhere.
pub struct FastPath {
    ebpf: Ebpf,
    pub(crate) hosts: BpfHashMap<MapData, MacKey, HostEntry>,
    pub(crate) templates: aya::maps::Array<MapData, Template>,
    pub(crate) classes: aya::maps::Array<MapData, u32>,
    stats: Arc<XdpStats>,
    cpus: usize,
    attached: Vec<(String, AttachMode)>,
    /// The map sizes it was loaded with.
    pub(crate) sizes: LoadOptions,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, XdpError> {
    let map = ebpf.take_map(name).ok_or_else(|| XdpError::Map {
        name,
        source: Box::new(aya::maps::MapError::InvalidName { name: name.into() }),
    })?;
    T::try_from(map).map_err(|source| XdpError::Map {
        name,
        source: Box::new(source),
    })
}

/// Loads `prog` into the kernel, trying again while the verifier gives up with EAGAIN:
/// it does when a signal is pending for the loading thread (a busy process, e.g. one
/// whose children exit meanwhile), and the answer, as libbpf gives it, is to try again.
/// aya retries a failed load once (to fetch the verifier's log) but not for this.
fn verify(prog: &mut Xdp) -> Result<(), ProgramError> {
    const TRIES: usize = 10;
    let mut tries = 1;
    loop {
        match prog.load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < TRIES =>
            {
                tries += 1;
                tracing::debug!(
                    "XDP verifier interrupted (EAGAIN): loading again ({tries}/{TRIES})"
                );
            }
            r => return r,
        }
    }
}

impl FastPath {
    /// Loads the program into the kernel (verifier included) without attaching it.
    pub fn load(opts: LoadOptions) -> Result<FastPath, XdpError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| XdpError::Cpus(format!("{what}: {e}")))? as u32;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", cpus * EVENT_SLOTS)
            .map_max_entries("EVENT_HEADS", cpus)
            .map_max_entries("HOSTS", opts.max_hosts)
            .map_max_entries("TEMPLATES", opts.max_templates)
            .load(OBJECT)
            .map_err(|e| XdpError::Load(Box::new(e)))?;
        let prog: &mut Xdp = program(&mut ebpf)?;
        verify(prog).map_err(|e| XdpError::Verify(Box::new(e)))?;
        Ok(FastPath {
            hosts: take(&mut ebpf, "HOSTS")?,
            templates: take(&mut ebpf, "TEMPLATES")?,
            classes: take(&mut ebpf, "CLASSES")?,
            stats: Arc::new(XdpStats {
                stats: take(&mut ebpf, "STATS")?,
                reasons: take(&mut ebpf, "REASONS")?,
                events_overwritten: Arc::default(),
            }),
            cpus: cpus as usize,
            sizes: opts,
            ebpf,
            attached: vec![],
        })
    }

    /// Attaches to `iface` in native mode, or in generic mode with a warning when the
    /// driver has no XDP support.
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode, XdpError> {
        let prog = program(&mut self.ebpf)?;
        let mode = match prog.attach(iface, XdpMode::Driver) {
            Ok(_) => AttachMode::Native,
            Err(native) => match prog.attach(iface, XdpMode::Skb) {
                Ok(_) => {
                    tracing::warn!(
                        "XDP on {iface}: native mode unavailable ({native}); using generic mode, \
                         which is slower"
                    );
                    AttachMode::Generic
                }
                Err(generic) => {
                    return Err(XdpError::Attach {
                        iface: iface.into(),
                        native: Box::new(native),
                        generic: Box::new(generic),
                    });
                }
            },
        };
        tracing::info!("XDP fast path attached to {iface} ({mode:?})");
        self.attached.push((iface.to_string(), mode));
        Ok(mode)
    }

    /// The counters, for status and metrics.
    pub fn stats(&self) -> Arc<XdpStats> {
        self.stats.clone()
    }

    /// Interfaces the program is attached to.
    pub fn attached(&self) -> &[(String, AttachMode)] {
        &self.attached
    }

    /// Detaches the program from every interface (also done on drop).
    pub fn detach_all(&mut self) {
        if let Ok(prog) = program(&mut self.ebpf) {
            // Links are owned by the program; unloading detaches all of them. Reload it
            // so the maps and test_run keep working.
            let _ = prog.unload();
            let _ = verify(prog);
        }
        for (iface, _) in self.attached.drain(..) {
            tracing::info!("XDP fast path detached from {iface}");
        }
    }

    /// The kernel's id of the loaded program (`bpftool prog show id N`), e.g. to read its
    /// run-time statistics.
    pub fn program_id(&mut self) -> Option<u32> {
        Some(program(&mut self.ebpf).ok()?.info().ok()?.id())
    }

    /// Instructions the verifier processed when loading the program.
    pub fn verified_instructions(&mut self) -> Option<u32> {
        program(&mut self.ebpf)
            .ok()?
            .info()
            .ok()?
            .verified_instruction_count()
    }

    /// Instructions in the loaded program (after the verifier's rewrites).
    pub fn program_size(&mut self) -> Option<usize> {
        let info = program(&mut self.ebpf).ok()?.info().ok()?;
        Some(info.size_translated().unwrap_or(0) as usize / 8)
    }

    /// Runs the program once on `frame` with BPF_PROG_TEST_RUN (ingress interface: the
    /// loopback device of the caller's network namespace, ifindex 1).
    pub fn test_run(&mut self, frame: &[u8]) -> Result<TestOutput, XdpError> {
        let prog = program(&mut self.ebpf)?;
        let mut out = vec![0u8; frame.len() + 2048];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .map_err(|e| XdpError::TestRun(Box::new(e)))?;
        out.truncate(r.data_size_out as usize);
        Ok(TestOutput {
            action: r.return_value,
            frame: out,
            duration: r.duration,
        })
    }

    /// Time the program takes on `frame`, per single-pass test run, `runs` times
    /// (sorted, shortest first).
    ///
    /// Not one run with `repeat`: the program rewrites the frame in place, so a repeated
    /// run would see its own reply (a BOOTREPLY, passed up at once) and measure that.
    pub fn costs(&mut self, frame: &[u8], runs: u32) -> Result<Vec<std::time::Duration>, XdpError> {
        let prog = program(&mut self.ebpf)?;
        let mut out = vec![0u8; frame.len() + 2048];
        let mut all = Vec::with_capacity(runs as usize);
        for _ in 0..runs.max(1) {
            let opts = TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            };
            all.push(
                prog.test_run(opts)
                    .map_err(|e| XdpError::TestRun(Box::new(e)))?
                    .duration,
            );
        }
        all.sort();
        Ok(all)
    }

    /// The loaded program's handle, for a benchmark harness that tail-calls it.
    pub fn program_handle(&mut self) -> Option<&aya::programs::ProgramFd> {
        program(&mut self.ebpf).ok()?.fd().ok()
    }

    /// The program's file descriptor number (for diagnostics).
    pub fn program_fd(&mut self) -> Option<i32> {
        Some(self.program_handle()?.as_fd().as_raw_fd())
    }

    /// The lease events' reader, taken once (None afterwards, or if mapping the rings
    /// fails, which is logged).
    pub fn take_events(&mut self) -> Option<EventReader> {
        let data = |m: aya::maps::Map| match m {
            aya::maps::Map::Array(d) => Some(d),
            _ => None,
        };
        let events = data(self.ebpf.take_map("EVENTS")?)?;
        let heads = data(self.ebpf.take_map("EVENT_HEADS")?)?;
        let lost = self.stats.events_overwritten.clone();
        EventReader::new(events, heads, self.cpus, lost)
            .map_err(|e| tracing::warn!("XDP: cannot map the lease event rings: {e}"))
            .ok()
    }
}

/// The result of one BPF_PROG_TEST_RUN.
#[derive(Clone, Debug)]
pub struct TestOutput {
    /// XDP action: 2 = XDP_PASS, 3 = XDP_TX.
    pub action: u32,
    /// The frame after the program (the reply when the action is XDP_TX).
    pub frame: Vec<u8>,
    pub duration: std::time::Duration,
}

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let p = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| XdpError::Verify(Box::new(ProgramError::UnexpectedProgramType)))?;
    p.try_into().map_err(|e| XdpError::Verify(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_sized_for_the_inventory_or_the_configured_room() {
        let hosts = |n, at_least| LoadOptions::sized(n, at_least).max_hosts;
        assert_eq!(hosts(10, 0), 1024);
        assert_eq!(hosts(10_000, 0), 20_000);
        // A server that starts empty and is filled through the API names its size.
        assert_eq!(hosts(0, 100_000), 100_000);
        assert_eq!(hosts(60_000, 100_000), 120_000);
        assert_eq!(hosts(0, u32::MAX), MAX_HOSTS);
        assert_eq!(LoadOptions::for_hosts(10_000).max_hosts, 20_000);
        let o = LoadOptions::sized(0, 100_000);
        assert_eq!(o.max_templates, 200_000 + SHARED_TEMPLATES);
    }
}
