//! The program's lease events as the daemon reads them: one ring per CPU in a BPF array
//! mapped read-only into this process (`EVENTS`, `EVENT_HEADS` in boot-ebpf's `maps`).
//! The program stores an event in its CPU's next slot, then advances that CPU's head;
//! the reader copies what lies between where it stopped and the head, then reads the
//! head again and keeps only the events the program cannot have been overwriting while
//! they were copied. Nothing here makes a system call.
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use aya::maps::MapData;
use boot_common::{LeaseEvent, EVENT_SLOTS};

/// A read-only shared mapping of a BPF array's values.
struct Mapping {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is plain memory, read through volatile loads only; it moves with
// its owner and is unmapped once.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(map: &MapData, bytes: usize) -> io::Result<Mapping> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = bytes.div_ceil(page) * page;
        // SAFETY: a shared read-only mapping of an mmapable array map's fd at offset 0
        // (its values); the kernel checks the length against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr as *const u8,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping made in `new`, unmapped only here.
        unsafe { libc::munmap(self.ptr as *mut _, self.len) };
    }
}

/// Reader of the lease events (one per loaded program).
pub struct EventReader {
    events: Mapping,
    heads: Mapping,
    cpus: usize,
    /// Per CPU: the next event to read.
    next: Vec<u64>,
    /// Events overwritten before they were read (shared with the counters).
    lost: Arc<AtomicU64>,
    _maps: [MapData; 2],
}

impl EventReader {
    pub(crate) fn new(
        events: MapData,
        heads: MapData,
        cpus: usize,
        lost: Arc<AtomicU64>,
    ) -> io::Result<EventReader> {
        let ev_bytes = cpus * EVENT_SLOTS as usize * std::mem::size_of::<LeaseEvent>();
        let mut r = EventReader {
            events: Mapping::new(&events, ev_bytes)?,
            heads: Mapping::new(&heads, cpus * 8)?,
            cpus,
            next: vec![0; cpus],
            lost,
            _maps: [events, heads],
        };
        for c in 0..cpus {
            r.next[c] = r.head(c);
        }
        Ok(r)
    }

    fn head(&self, cpu: usize) -> u64 {
        // SAFETY: cpu < cpus; the heads mapping holds cpus u64 values, 8-byte aligned.
        let h = unsafe { std::ptr::read_volatile((self.heads.ptr as *const u64).add(cpu)) };
        fence(Ordering::Acquire);
        h
    }

    fn slot(&self, cpu: usize, n: u64) -> LeaseEvent {
        let i = cpu * EVENT_SLOTS as usize + (n % EVENT_SLOTS as u64) as usize;
        // SAFETY: i < cpus * EVENT_SLOTS, inside the events mapping.
        unsafe { std::ptr::read_volatile((self.events.ptr as *const LeaseEvent).add(i)) }
    }

    /// Hands every event written since the last call to `f`, oldest first per CPU.
    /// Returns how many were lost (overwritten before they were read) in this call;
    /// they are also added to the counters' `events_lost`.
    pub fn drain(&mut self, mut f: impl FnMut(LeaseEvent)) -> u64 {
        let slots = EVENT_SLOTS as u64;
        let mut lost = 0;
        let mut copied = Vec::new();
        for c in 0..self.cpus {
            let head = self.head(c);
            let mut n = self.next[c];
            if head <= n {
                continue;
            }
            if head - n > slots {
                lost += head - slots - n;
                n = head - slots;
            }
            copied.clear();
            copied.extend((n..head).map(|k| (k, self.slot(c, k))));
            fence(Ordering::Acquire);
            // Event k's slot is rewritten by event k + slots: the one being written now
            // is at most the head read after copying.
            let safe_from = (self.head(c) + 1).saturating_sub(slots);
            for &(k, ev) in &copied {
                if k >= safe_from {
                    f(ev);
                } else {
                    lost += 1;
                }
            }
            self.next[c] = head;
        }
        if lost != 0 {
            self.lost.fetch_add(lost, Ordering::Relaxed);
        }
        lost
    }
}
