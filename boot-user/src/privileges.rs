//! Dropping privileges once `xboot serve` holds everything that needed them.
//!
//! Loading and attaching the XDP program, binding ports 67, 69 and 80 and opening raw
//! sockets need capabilities (CAP_BPF, CAP_NET_ADMIN, CAP_NET_BIND_SERVICE,
//! CAP_NET_RAW). Serving afterwards needs none: the sockets are open, map updates go
//! through map file descriptors, the event ring is mapped, and the XDP link detaches
//! when its descriptor closes. So every thread of the server runs with empty capability
//! sets (bounding set too, so nothing can regain them) once start-up is done.
//!
//! Linux keeps capabilities per thread: [`drop_all`] clears the calling thread's. The
//! server calls it on its main thread after the last bind, on every runtime worker as
//! it starts, and starts its other threads (DHCP, file watcher) only after the main
//! thread dropped, so they inherit nothing.
use caps::CapSet;

/// Clears every capability set of the calling thread: bounding and ambient first
/// (dropping from the bounding set needs CAP_SETPCAP, still held then), then
/// inheritable, effective and permitted.
pub fn drop_all() -> Result<(), caps::errors::CapsError> {
    // Without CAP_SETPCAP (an unprivileged run) the bounding set cannot shrink; the
    // permitted set, cleared below, is what matters.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP)? {
        caps::clear(None, CapSet::Bounding)?;
    }
    caps::clear(None, CapSet::Ambient)?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set)?;
    }
    Ok(())
}

/// [`drop_all`] for a thread that cannot return the error (a runtime's worker start
/// hook): logs it.
pub fn drop_all_or_warn() {
    if let Err(e) = drop_all() {
        tracing::warn!("cannot drop capabilities on this thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    /// On a thread of its own (capabilities are per thread): afterwards the thread has
    /// none, and a privileged operation fails.
    #[test]
    fn a_dropped_thread_holds_nothing() {
        std::thread::spawn(|| {
            super::drop_all().unwrap();
            for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
                assert!(caps::read(None, set).unwrap().is_empty(), "{set:?}");
            }
            let first_free: u16 =
                std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(1024);
            if first_free > 1 {
                // Port 1 is privileged here: binding it needs CAP_NET_BIND_SERVICE.
                let err = std::net::UdpSocket::bind("127.0.0.1:1").unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
            }
        })
        .join()
        .unwrap();
    }
}
