//! `cargo xtask bench abuse [--scale F] [--only tftp,probes,http,dhcp] [--xboot PATH]`:
//! the resource bounds of issue 19 as figures. The real `xboot serve` (release build,
//! userspace DHCP) runs in a server namespace; a client namespace holds the known host
//! cn1 (the veth's MAC and address) and 250 attacker addresses. Four phases, each
//! measuring the server's RSS (VmRSS, VmHWM) and descriptors (/proc/PID/fd) before, at
//! the peak and after, while cn1 boots as iPXE would (udhcpc lease, tftp-hpa fetch of
//! undionly.kpxe, curl of its iPXE script URL from the lease), timed:
//!
//! 1. `tftp`: 10,000 un-ACKed read requests, 40 from each of 250 addresses, over 4 s.
//! 2. `probes`: 300 UEFI size probes (RRQ tsize + blksize, OACK, ERROR 8); the active
//!    transfers of `/metrics` before and after the ERRORs.
//! 3. `http`: 20,000 silent TCP connections to the HTTP port from the 250 addresses.
//! 4. `dhcp`: 100,000 DISCOVERs from random unknown MACs as raw frames (25,000/s): the
//!    unknown-MAC log lines and the discovered table.
//!
//! `--scale` (or `XBOOT_BENCH_SCALE`, default 1) multiplies the attack sizes; `--only`
//! (or `XBOOT_BENCH_ONLY`) picks phases. Results: `OUT/abuse.json`, `OUT/abuse.md`
//! (OUT = the target dir's `bench/`). Nothing is asserted on time; the run fails only if
//! cn1 was not served or a bound was exceeded, after writing the report.
mod attack;
mod lab;
mod phases;
mod report;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::util;

/// The run's knobs.
pub struct Opts {
    pub scale: f64,
    pub only: Vec<String>,
    pub xboot: Option<PathBuf>,
}

const PHASES: [&str; 4] = ["tftp", "probes", "http", "dhcp"];

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut scale = env("XBOOT_BENCH_SCALE");
    let mut only = env("XBOOT_BENCH_ONLY");
    let mut xboot = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let slot = match a.as_str() {
            "--scale" => &mut scale,
            "--only" => &mut only,
            "--xboot" => &mut xboot,
            other => bail!(
                "bench abuse: unknown argument {other:?} (--scale F, --only {}, --xboot PATH)",
                PHASES.join(",")
            ),
        };
        *slot = Some(
            it.next()
                .with_context(|| format!("{a} needs a value"))?
                .clone(),
        );
    }
    let scale: f64 = match scale {
        Some(s) => s.parse().with_context(|| format!("scale {s:?}"))?,
        None => 1.0,
    };
    if !(scale > 0.0 && scale <= 10.0) {
        bail!("scale {scale}: want 0 < scale <= 10");
    }
    let only: Vec<String> = match only {
        Some(o) => o.split(',').map(|s| s.trim().to_string()).collect(),
        None => PHASES.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(bad) = only.iter().find(|p| !PHASES.contains(&p.as_str())) {
        bail!("no phase {bad:?}; phases: {}", PHASES.join(","));
    }
    Ok(Opts {
        scale,
        only,
        xboot: xboot.map(PathBuf::from),
    })
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args)?;
    if !util::is_root() {
        bail!("bench abuse needs root (network namespaces, raw sockets)");
    }
    testlab::catch_interrupts();
    // Up to 20,000 client sockets in this process: the soft open-files limit raised to
    // the hard one (the server inherits it and does the same: its HTTP cap is the lesser
    // of 4096 and a quarter of it).
    let nofile = raise_nofile()?;
    let xboot = match &opts.xboot {
        Some(p) => p.canonicalize().with_context(|| p.display().to_string())?,
        None => util::build_release_xboot()?,
    };
    let payload = testlab::payload::Payload::cached().map_err(anyhow::Error::msg)?;
    let out = util::target_dir().join("bench");
    let dir = out.join("abuse-lab");
    let t0 = Instant::now();
    let lab = lab::Lab::start(&xboot, &payload, &dir)?;
    let mut rep = phases::run_all(&lab, &opts, &dir, nofile)?;
    rep.total_secs = t0.elapsed().as_secs_f64();
    drop(lab);
    report::write(&out, &rep)?;
    println!("{}", report::markdown(&rep));
    println!(
        "bench abuse: done in {}; report in {}",
        util::secs(t0.elapsed()),
        out.join("abuse.md").display()
    );
    let failed = rep.failures();
    if !failed.is_empty() {
        bail!("bench abuse: {}", failed.join("; "));
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard one; returns it.
fn raise_nofile() -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!(
                "cannot raise the open-files limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(lim.rlim_cur)
}
