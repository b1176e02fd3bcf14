//! The DHCP option walk over the request copied into per-CPU memory, in `bpf_loop` steps
//! (a bounded `for` over TLVs at data-dependent offsets makes the verifier explore every
//! path and exceeds its budget; see ARCHITECTURE.md). The steps only check the TLV
//! structure and note where each known option is; what the options say is read once
//! the walk is done, outside the loop (fewer branches in the loop body keep its
//! verification small enough for eight options a step, one call for most requests).
//!
//! Options may come in any order. The program answers only requests whose every option
//! is one it knows, with a length the slow path's strict parser also accepts (the slow
//! path refuses a message with any malformed option, so answering it here would be a
//! divergence). Anything else — an unknown or repeated option, option overload (52),
//! relay agent information (82), a hostname that is not ASCII — goes to the slow path.
use core::{
    ffi::c_void,
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::helpers::generated::bpf_loop;
use boot_common::{counter, reason, ClassKey, ECHO_MAX};

use crate::{
    frame::BOOTP_FIXED,
    maps::{Work, PAY_CAP, WORK},
    prog::Verdict,
};

const MASK: usize = PAY_CAP - 1;
/// Options (or pad bytes) read per `bpf_loop` step: each step is a call and a return,
/// which cost more than the reading itself (returns go through the kernel's return
/// thunk on CPUs that need one).
const PER_STEP: u32 = 8;
/// Upper bound on loop iterations: 512 options or pad bytes.
const MAX_STEPS: u32 = 512 / PER_STEP;
/// Longest hostname (option 12) the program checks for ASCII.
const HOSTNAME_MAX: u32 = 64;

const RUNNING: u32 = 0;
const DONE: u32 = 1;
const MALFORMED: u32 = 2;
const UNUSUAL: u32 = 3;

/// The options the program reads, and where the echoable ones are in `Work::pay`.
#[repr(C)]
pub struct Opts {
    /// Option 53, 0 when absent.
    pub msg_type: u8,
    pub class: ClassKey,
    pub requested_ip: Option<[u8; 4]>,
    pub server_id: Option<[u8; 4]>,
    /// Option 57, 0 when absent.
    pub max_size: u16,
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
    /// Per known option, by its `seen` bit: data offset in the low 16 bits, length in
    /// the high 16 (valid where `seen` has the bit).
    at: [u32; 16],
}

/// Bit in `Walk::seen` per known option (a repeat is passed up: RFC 3396 concatenation).
const fn bit(code: u8) -> Option<u32> {
    Some(
        1 << match code {
            53 => 0,
            50 => 1,
            54 => 2,
            60 => 3,
            77 => 4,
            93 => 5,
            61 => 6,
            97 => 7,
            57 => 8,
            55 => 9,
            12 => 10,
            94 => 11,
            175 => 12,
            43 => 13,
            51 => 14,
            _ => return None,
        },
    )
}

/// Per option code: its `seen` bit in bits 0..16 (0: an option the program does not
/// know), the fixed length the slow path's parser checks in bits 16..24 (0: any), the
/// bit's index in bits 24..32. One load from read-only data where `match`es on the code
/// compile to chains of comparisons (BPF has no jump tables), run for every option.
static CODES: [u32; 256] = codes();

const fn codes() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut c = 0;
    while c < 256 {
        let code = c as u8;
        if let Some(b) = bit(code) {
            let want: u32 = match code {
                53 => 1,
                50 | 54 | 51 => 4,
                57 => 2,
                94 => 3,
                _ => 0,
            };
            t[c] = b | want << 16 | b.trailing_zeros() << 24;
        }
        c += 1;
    }
    t
}

#[inline(always)]
pub fn walk(work: &mut Work) -> Result<(), Verdict> {
    let malformed = || Verdict::pass(counter::MALFORMED, reason::BAD_OPTIONS);
    let unusual = || Verdict::pass(counter::PASSED_OTHER, reason::UNUSUAL);
    // Volatile on both sides of the loop: `work` is a unique reference, so the compiler
    // would otherwise assume the callback (which finds the state through the map) cannot
    // touch it, and move the store past the loop or fold the result.
    // SAFETY: plain stores and loads of this CPU's working memory; `step` finds its
    // state in WORK and bpf_loop calls it synchronously.
    let (status, seen) = unsafe {
        // `at` needs no reset: an entry counts only where `seen` has its bit.
        write_volatile(&mut work.walk.off, BOOTP_FIXED);
        write_volatile(&mut work.walk.n, work.req.len);
        write_volatile(&mut work.walk.status, RUNNING);
        write_volatile(&mut work.walk.seen, 0);
        bpf_loop(MAX_STEPS, step as *mut c_void, core::ptr::null_mut(), 0);
        (
            read_volatile(&work.walk.status),
            read_volatile(&work.walk.seen),
        )
    };
    match status {
        DONE => {}
        MALFORMED => return Err(malformed()),
        _ => return Err(unusual()), // UNUSUAL, or more than MAX_STEPS options
    }
    let (w, p) = (&work.walk, &work.pay);
    let has = |code: u8| bit(code).is_some_and(|b| seen & b != 0);
    // Where option `code` is (only for codes `bit` knows, checked by `has`).
    let at = |code: u8| {
        let i = bit(code).map_or(0, u32::trailing_zeros) as usize;
        // SAFETY: this CPU's working memory, written by `step`.
        let v = unsafe { read_volatile(&w.at[i & 15]) };
        (v & 0xffff, v >> 16)
    };
    let b = |data: u32, k: u32| byte(p, data + k);
    let four = |code: u8| {
        let (d, _) = at(code);
        [b(d, 0), b(d, 1), b(d, 2), b(d, 3)]
    };
    let two = |code: u8| {
        let (d, _) = at(code);
        u16::from_be_bytes([b(d, 0), b(d, 1)]) as u32
    };
    let mut arch = ClassKey::NO_ARCH as u32;
    if has(93) {
        let (_, len) = at(93);
        if len < 2 || len % 2 != 0 {
            return Err(malformed());
        }
        if len != 2 {
            return Err(unusual()); // several architectures: the slow path chooses
        }
        arch = two(93);
    }
    let echo = |code: u8| -> Result<(u32, u32), Verdict> {
        if !has(code) {
            return Ok((0, 0));
        }
        let (d, len) = at(code);
        if len == 0 || len > ECHO_MAX as u32 {
            return Err(unusual());
        }
        Ok((d - 2, len))
    };
    let (o61, o97) = (echo(61)?, echo(97)?);
    if has(12) {
        let (d, len) = at(12);
        if !ascii_hostname(p, d, len) {
            return Err(unusual());
        }
    }
    let (vendor, vendor_len) = if has(60) {
        let (d, len) = at(60);
        (vendor_class(p, d, len), len)
    } else {
        (ClassKey::VENDOR_NONE as u32, 0)
    };
    // Without option 93, the slow path reads the architecture out of a
    // `PXEClient:Arch:NNNNN` vendor class: leave that to it.
    let vendor_arch = arch == ClassKey::NO_ARCH as u32
        && ((vendor == ClassKey::VENDOR_PXE as u32 && vendor_len > 9)
            || (vendor == ClassKey::VENDOR_HTTP as u32 && vendor_len > 10));
    if vendor_arch {
        return Err(unusual());
    }
    // Option 77 first: a user class other than `iPXE` is the slow path's to read (the
    // option table may match it), even beside iPXE's 175; without one, 175 is iPXE.
    let user = if has(77) {
        let (d, len) = at(77);
        user_class(p, d, len)
    } else if has(175) {
        ClassKey::USER_IPXE as u32
    } else {
        ClassKey::USER_NONE as u32
    };
    // Read whether present or not (a stale entry still points inside the message): an
    // absent Option's payload would otherwise be whatever a register held, and the
    // verifier refuses storing a pointer's bytes.
    let (requested_ip, server_id) = (four(50), four(54));
    work.o = Opts {
        msg_type: if has(53) { b(at(53).0, 0) } else { 0 },
        class: ClassKey {
            arch: arch as u16,
            vendor: vendor as u8,
            user: user as u8,
        },
        requested_ip: has(50).then_some(requested_ip),
        server_id: has(54).then_some(server_id),
        max_size: if has(57) { two(57) as u16 } else { 0 },
        o61,
        o97,
    };
    Ok(())
}

#[inline(always)]
fn byte(p: &[u8; PAY_CAP + 128], i: u32) -> u8 {
    p[i as usize & MASK]
}

/// Up to `PER_STEP` options. Returns 0 to continue, 1 to stop.
#[inline(never)]
extern "C" fn step(_i: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = WORK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's working memory, filled by `frame::parse`.
    let (w, p) = unsafe { (&mut (*s).walk, &(*s).pay) };
    let mut k = 0;
    while k < PER_STEP {
        if one(w, p) != 0 {
            return 1;
        }
        k += 1;
    }
    0
}

/// One option. Returns 0 to continue, 1 to stop.
#[inline(always)]
fn one(w: &mut Walk, p: &[u8; PAY_CAP + 128]) -> i64 {
    let off = w.off;
    if off >= w.n {
        w.status = MALFORMED; // no END option
        return 1;
    }
    let code = byte(p, off);
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
    let len = byte(p, off + 1) as u32;
    let data = off + 2;
    if data + len > w.n {
        w.status = MALFORMED;
        return 1;
    }
    let status = option(w, code, data, len);
    if status != RUNNING {
        w.status = status;
        return 1;
    }
    w.off = data + len;
    0
}

/// Checks and records one option; returns RUNNING or why the walk stops.
#[inline(always)]
fn option(w: &mut Walk, code: u8, data: u32, len: u32) -> u32 {
    let e = CODES[code as usize];
    let bit = e & 0xffff;
    if bit == 0 {
        return UNUSUAL; // an option the program does not know (52 and 82 included)
    }
    if w.seen & bit != 0 {
        return UNUSUAL;
    }
    w.seen |= bit;
    // Fixed lengths, as the slow path's parser checks them.
    let want = (e >> 16) & 0xff;
    if want != 0 && len != want {
        return MALFORMED;
    }
    w.at[(e >> 24) as usize & 15] = data | len << 16;
    RUNNING
}

/// Option 12 must decode as UTF-8 in the slow path; the program accepts ASCII only.
/// Branch-free: a data-dependent branch per byte would double the states the verifier
/// explores, 64 times.
#[inline(always)]
fn ascii_hostname(p: &[u8; PAY_CAP + 128], data: u32, len: u32) -> bool {
    if len == 0 || len > HOSTNAME_MAX {
        return false;
    }
    let mut high = 0u8;
    let mut k = 0;
    while k < HOSTNAME_MAX {
        let inside = ((k < len) as u8).wrapping_neg();
        high |= byte(p, data + k) & inside & 0x80;
        k += 1;
    }
    high == 0
}

/// Option 60: `PXEClient...`, `HTTPClient...` or anything else.
#[inline(always)]
fn vendor_class(p: &[u8; PAY_CAP + 128], data: u32, len: u32) -> u32 {
    let b = |k: u32| byte(p, data + k);
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

/// Option 77: `iPXE` raw (as iPXE sends it) or as a single RFC 3004 entry (`\x04iPXE`).
#[inline(always)]
fn user_class(p: &[u8; PAY_CAP + 128], data: u32, len: u32) -> u32 {
    let b = |k: u32| byte(p, data + k);
    let raw = (b(0) ^ b'i') | (b(1) ^ b'P') | (b(2) ^ b'X') | (b(3) ^ b'E');
    let rfc = (b(0) ^ 4) | (b(1) ^ b'i') | (b(2) ^ b'P') | (b(3) ^ b'X') | (b(4) ^ b'E');
    let ipxe = ((len == 4) as u32 & (raw == 0) as u32) | ((len == 5) as u32 & (rfc == 0) as u32);
    // USER_IPXE = 1, USER_OTHER = 2.
    ClassKey::USER_OTHER as u32 - ipxe
}
