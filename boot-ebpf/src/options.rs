//! The DHCP option walk: copies the options area into per-CPU scratch once, then steps
//! through it with `bpf_loop` (a bounded `for` over TLVs at data-dependent offsets makes
//! the verifier explore every path and exceeds its budget; see ARCHITECTURE.md).
//!
//! Options may come in any order; a duplicated option the program cares about (RFC 3396
//! concatenation), option overload (52) or relay agent information (82) make the request
//! "unusual" and it goes to the slow path.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use boot_common::{counter, reason, ClassKey, ECHO_MAX};

use crate::{
    frame::{bounded, BOOTP_FIXED},
    maps::{Work, OPTS_CAP, WORK},
    prog::Verdict,
};

const MASK: usize = OPTS_CAP - 1;
/// Upper bound on loop iterations (one per option or pad byte).
const MAX_STEPS: u32 = 512;

const RUNNING: u32 = 0;
const DONE: u32 = 1;
const MALFORMED: u32 = 2;
const UNUSUAL: u32 = 3;

/// The options the program reads, and where the echoable ones are in `Work::opts`.
#[repr(C)]
pub struct Opts {
    /// Option 53, 0 when absent.
    pub msg_type: u8,
    pub class: ClassKey,
    pub requested_ip: Option<[u8; 4]>,
    pub server_id: Option<[u8; 4]>,
    /// Offset of option 61's code byte and its data length (0 = absent).
    pub o61: (u32, u32),
    /// Same for option 97.
    pub o97: (u32, u32),
}

/// The loop's state. It lives in the per-CPU map value, not on the stack: the verifier
/// tracks stack values exactly, so a bitmask or message type kept there would make every
/// combination a separate state to explore (and exceed its budget); map values it
/// treats as unknown, so the callback's states converge at once.
#[repr(C)]
pub struct Walk {
    off: u32,
    n: u32,
    status: u32,
    seen: u32,
    msg_type: u32,
    arch: u32,
    vendor: u32,
    user: u32,
    req_ip: [u8; 4],
    sid: [u8; 4],
    o61_off: u32,
    o61_len: u32,
    o97_off: u32,
    o97_len: u32,
}

const BIT_53: u32 = 1 << 0;
const BIT_50: u32 = 1 << 1;
const BIT_54: u32 = 1 << 2;
const BIT_60: u32 = 1 << 3;
const BIT_77: u32 = 1 << 4;
const BIT_93: u32 = 1 << 5;
const BIT_61: u32 = 1 << 6;
const BIT_97: u32 = 1 << 7;

#[inline(always)]
pub fn walk(ctx: &XdpContext, work: &mut Work) -> Result<(), Verdict> {
    let malformed = Verdict::pass(counter::MALFORMED, reason::BAD_OPTIONS);
    let unusual = Verdict::pass(counter::PASSED_OTHER, reason::UNUSUAL);
    let Some(n) = bounded(work.req.opts_len, 1, OPTS_CAP as u32) else {
        return Err(unusual);
    };
    let at = work.req.l2 + 28 + BOOTP_FIXED;
    let dst = work.opts.as_mut_ptr() as *mut c_void;
    // SAFETY: writes n <= OPTS_CAP bytes into the buffer (OPTS_CAP + 64 long).
    let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, at, dst, n) };
    if r != 0 {
        return Err(malformed);
    }
    work.walk = Walk {
        off: 0,
        n,
        status: RUNNING,
        seen: 0,
        msg_type: 0,
        arch: ClassKey::NO_ARCH as u32,
        vendor: ClassKey::VENDOR_NONE as u32,
        user: ClassKey::USER_NONE as u32,
        req_ip: [0; 4],
        sid: [0; 4],
        o61_off: 0,
        o61_len: 0,
        o97_off: 0,
        o97_len: 0,
    };
    // SAFETY: `step` finds its state in this CPU's WORK; bpf_loop calls it synchronously.
    unsafe {
        bpf_loop(MAX_STEPS, step as *mut c_void, core::ptr::null_mut(), 0);
    }
    let w = &work.walk;
    match w.status {
        DONE => {}
        MALFORMED => return Err(malformed),
        _ => return Err(unusual), // UNUSUAL, or more than MAX_STEPS options
    }
    work.o = Opts {
        msg_type: w.msg_type as u8,
        class: ClassKey { arch: w.arch as u16, vendor: w.vendor as u8, user: w.user as u8 },
        requested_ip: if w.seen & BIT_50 != 0 { Some(w.req_ip) } else { None },
        server_id: if w.seen & BIT_54 != 0 { Some(w.sid) } else { None },
        o61: (w.o61_off, w.o61_len),
        o97: (w.o97_off, w.o97_len),
    };
    Ok(())
}

#[inline(always)]
fn byte(o: &[u8; OPTS_CAP + 64], i: u32) -> u8 {
    o[i as usize & MASK]
}

/// One option. Returns 0 to continue, 1 to stop.
#[inline(never)]
extern "C" fn step(_i: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = WORK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's working memory, filled by `walk`.
    let (w, o) = unsafe { (&mut (*s).walk, &(*s).opts) };
    let off = w.off;
    if off >= w.n {
        w.status = MALFORMED; // no END option
        return 1;
    }
    let code = byte(o, off);
    if code == 255 {
        w.status = DONE;
        return 1;
    }
    if code == 0 {
        w.off = off + 1;
        return 0;
    }
    if off + 1 >= w.n {
        w.status = MALFORMED;
        return 1;
    }
    let len = byte(o, off + 1) as u32;
    let data = off + 2;
    if data + len > w.n {
        w.status = MALFORMED;
        return 1;
    }
    let status = option(w, o, code, data, len);
    if status != RUNNING {
        w.status = status;
        return 1;
    }
    w.off = data + len;
    0
}

/// Records one option of interest; returns RUNNING or why the walk stops.
#[inline(always)]
fn option(w: &mut Walk, o: &[u8; OPTS_CAP + 64], code: u8, data: u32, len: u32) -> u32 {
    let bit = match code {
        53 => BIT_53,
        50 => BIT_50,
        54 => BIT_54,
        60 => BIT_60,
        77 => BIT_77,
        93 => BIT_93,
        61 => BIT_61,
        97 => BIT_97,
        52 | 82 => return UNUSUAL,
        _ => return RUNNING,
    };
    if w.seen & bit != 0 {
        return UNUSUAL;
    }
    w.seen |= bit;
    let b = |k: u32| byte(o, data + k);
    match code {
        53 => {
            if len != 1 {
                return MALFORMED;
            }
            w.msg_type = b(0) as u32;
        }
        50 | 54 => {
            if len != 4 {
                return MALFORMED;
            }
            let v = [b(0), b(1), b(2), b(3)];
            if code == 50 {
                w.req_ip = v;
            } else {
                w.sid = v;
            }
        }
        60 => w.vendor = vendor_class(&b, len),
        77 => w.user = user_class(&b, len),
        93 => {
            if len < 2 || len % 2 != 0 {
                return MALFORMED;
            }
            if len != 2 {
                return UNUSUAL; // several architectures: the slow path chooses
            }
            w.arch = u16::from_be_bytes([b(0), b(1)]) as u32;
        }
        _ => {
            // 61 or 97: echoed into the reply when the template says so.
            if len == 0 || len > ECHO_MAX as u32 {
                return UNUSUAL;
            }
            if code == 61 {
                w.o61_off = data - 2;
                w.o61_len = len;
            } else {
                w.o97_off = data - 2;
                w.o97_len = len;
            }
        }
    }
    RUNNING
}

/// Option 60: `PXEClient...`, `HTTPClient...` or anything else. Branch-free: every
/// data-dependent branch in the callback multiplies the states the verifier explores.
#[inline(always)]
fn vendor_class(b: &impl Fn(u32) -> u8, len: u32) -> u32 {
    const PXE: &[u8; 9] = b"PXEClient";
    const HTTP: &[u8; 10] = b"HTTPClient";
    let mut d_pxe = 0u8;
    let mut d_http = 0u8;
    let mut k = 0;
    while k < 10 {
        // Bytes past the option's end belong to whatever follows: harmless, the length
        // test below rejects the match.
        let c = b(k);
        if k < 9 {
            d_pxe |= c ^ PXE[k as usize];
        }
        d_http |= c ^ HTTP[k as usize];
        k += 1;
    }
    let pxe = (len >= 9) as u32 & (d_pxe == 0) as u32;
    let http = (len >= 10) as u32 & (d_http == 0) as u32;
    // VENDOR_PXE = 1, VENDOR_HTTP = 2, VENDOR_OTHER = 3.
    ClassKey::VENDOR_OTHER as u32 - 2 * pxe - http
}

/// Option 77 is exactly `iPXE` (iPXE sends it raw, not in RFC 3004 form).
#[inline(always)]
fn user_class(b: &impl Fn(u32) -> u8, len: u32) -> u32 {
    let d = (b(0) ^ b'i') | (b(1) ^ b'P') | (b(2) ^ b'X') | (b(3) ^ b'E');
    let ipxe = (len == 4) as u32 & (d == 0) as u32;
    // USER_IPXE = 1, USER_OTHER = 2.
    ClassKey::USER_OTHER as u32 - ipxe
}
