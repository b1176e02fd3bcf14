//! TFTP wire format (RFC 1350) and option negotiation (RFC 2347 OACK, 2348 blksize, 2349
//! timeout and tsize, 7440 windowsize). Never does I/O; parsing never panics.
//!
//! What a request asks for is unverified until [`negotiate`] has clamped it to xboot's
//! [`Limits`]: the server grants less than asked (blksize, windowsize) or leaves the
//! option out of the OACK (a timeout outside 1..=5 s, which RFC 2349 does not let a server
//! change), never more.
use std::time::Duration;

pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// RFC 1350's block size, used when the client does not ask for another.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348's range of blksize.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// The largest block that fits an Ethernet MTU of 1500 (IPv4 20 + UDP 8 + TFTP 4 bytes of
/// headers): what EDK2 asks for. Larger asks are granted only up to the route's MTU.
pub const SAFE_BLKSIZE: u16 = 1468;
/// windowsize granted at most (RFC 7440 allows 65535). EDK2 asks 4; 16 blocks of 1468
/// bytes are 23 KB in flight per client, which a switch port and the client's receive
/// queue absorb; more only raises the cost of a loss (the whole rest of the window is sent
/// again) for little gain.
pub const MAX_WINDOW: u16 = 16;
/// The timeouts (seconds) a client may negotiate. RFC 2349 allows 1..=255, but a server
/// that retransmits only every 255 s holds a transfer (and its socket) for 21 minutes
/// before it gives up; 5 s is above every firmware's own (EDK2 4 s, iPXE 0.25 s doubling).
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<u8> = 1..=5;

/// TFTP error codes (RFC 1350 section 5, RFC 2347 for 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTid = 5,
    FileExists = 6,
    NoSuchUser = 7,
    /// "Terminate transfer due to option negotiation": EDK2's size probe ends with it.
    OptionsRefused = 8,
}

/// Transfer mode of a request. netascii is served as the file's bytes (as async-tftp,
/// Grendel's pin/tftp and dnsmasq do for binaries): the files are iPXE binaries, which no
/// client reads as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
}

/// A read or write request, checked for shape only: the file name and options are what
/// the client sent, not yet resolved or negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: Mode,
    /// Option names lowercased, values as sent, in request order.
    pub options: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Rrq(Request),
    Wrq(Request),
    Data { block: u16, len: usize },
    Ack(u16),
    Error { code: u16, message: String },
    Oack,
}

/// Why a packet is not a valid TFTP packet; [`ParseError::reply`] is the ERROR a client
/// gets for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("packet of {0} bytes is too short")]
    TooShort(usize),
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("request without a NUL-terminated {0}")]
    Unterminated(&'static str),
    #[error("file name is not UTF-8")]
    FileNameNotUtf8,
    #[error("transfer mode {0:?} is not supported (use octet)")]
    UnsupportedMode(String),
}

impl ParseError {
    /// The ERROR to answer with.
    pub fn reply(&self) -> (ErrorCode, String) {
        let code = match self {
            ParseError::FileNameNotUtf8 => ErrorCode::FileNotFound,
            _ => ErrorCode::IllegalOperation,
        };
        (code, self.to_string())
    }
}

/// Splits off a NUL-terminated string.
fn cstr<'a>(b: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), ParseError> {
    let n = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(ParseError::Unterminated(what))?;
    Ok((&b[..n], &b[n + 1..]))
}

fn parse_request(body: &[u8]) -> Result<Request, ParseError> {
    let (name, rest) = cstr(body, "file name")?;
    let (mode, mut rest) = cstr(rest, "mode")?;
    let mode = match std::str::from_utf8(mode).map(str::to_ascii_lowercase) {
        Ok(m) if m == "octet" => Mode::Octet,
        Ok(m) if m == "netascii" => Mode::Netascii,
        _ => {
            return Err(ParseError::UnsupportedMode(
                String::from_utf8_lossy(mode).into_owned(),
            ))
        }
    };
    let filename = std::str::from_utf8(name)
        .map_err(|_| ParseError::FileNameNotUtf8)?
        .to_string();
    // Options: name NUL value NUL pairs. Some PXE ROMs pad requests with NULs or stray
    // bytes after the last option: an incomplete trailing pair is ignored, not an error.
    let mut options = Vec::new();
    while let Ok((k, r)) = cstr(rest, "option") {
        let Ok((v, r)) = cstr(r, "option value") else {
            break;
        };
        rest = r;
        if k.is_empty() {
            continue;
        }
        let (Ok(k), Ok(v)) = (std::str::from_utf8(k), std::str::from_utf8(v)) else {
            continue;
        };
        options.push((k.to_ascii_lowercase(), v.to_string()));
    }
    Ok(Request {
        filename,
        mode,
        options,
    })
}

/// Parses one datagram.
pub fn parse(b: &[u8]) -> Result<Packet, ParseError> {
    if b.len() < 4 {
        return Err(ParseError::TooShort(b.len()));
    }
    let op = u16::from_be_bytes([b[0], b[1]]);
    let arg = u16::from_be_bytes([b[2], b[3]]);
    match op {
        RRQ => parse_request(&b[2..]).map(Packet::Rrq),
        WRQ => parse_request(&b[2..]).map(Packet::Wrq),
        DATA => Ok(Packet::Data {
            block: arg,
            len: b.len() - 4,
        }),
        ACK => Ok(Packet::Ack(arg)),
        ERROR => {
            let msg = &b[4..];
            let msg = msg.split(|&c| c == 0).next().unwrap_or(msg);
            Ok(Packet::Error {
                code: arg,
                message: String::from_utf8_lossy(msg).into_owned(),
            })
        }
        OACK => Ok(Packet::Oack),
        other => Err(ParseError::UnknownOpcode(other)),
    }
}

/// The 4-byte header of DATA block `block` (the wire number, wrapped).
pub fn data_header(block: u16) -> [u8; 4] {
    let [a, b] = DATA.to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

pub fn encode_ack(block: u16) -> Vec<u8> {
    let mut v = ACK.to_be_bytes().to_vec();
    v.extend_from_slice(&block.to_be_bytes());
    v
}

pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + message.len());
    v.extend_from_slice(&ERROR.to_be_bytes());
    v.extend_from_slice(&(code as u16).to_be_bytes());
    // A NUL inside the message would end it early: never send one.
    v.extend(message.bytes().filter(|&c| c != 0));
    v.push(0);
    v
}

pub fn encode_oack(options: &[(&str, String)]) -> Vec<u8> {
    let mut v = OACK.to_be_bytes().to_vec();
    for (k, val) in options {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

/// A request as a client sends it (tests and load generators).
pub fn encode_request(op: u16, filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut v = op.to_be_bytes().to_vec();
    for s in [filename, mode]
        .into_iter()
        .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
    {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    }
    v
}

/// What the server allows, and what it uses when the client does not ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest blksize granted (at most [`MAX_BLKSIZE`]; the edge lowers it to what
    /// fits the route's MTU).
    pub max_blksize: u16,
    pub max_window: u16,
    /// Retransmission interval when the client negotiates none.
    pub default_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blksize: MAX_BLKSIZE,
            max_window: MAX_WINDOW,
            default_timeout: Duration::from_secs(1),
        }
    }
}

/// The parameters of one transfer, and the OACK that announces them (None: the client
/// asked for no option the server takes, so DATA 1 comes first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub window: u16,
    pub timeout: Duration,
    pub oack: Option<Vec<u8>>,
}

fn number<T: std::str::FromStr>(v: &str) -> Option<T> {
    v.trim().parse().ok()
}

/// The blksize a request asks for, if any (the edge probes the route's MTU only for asks
/// above [`SAFE_BLKSIZE`]).
pub fn asked_blksize(req: &Request) -> Option<u64> {
    req.options
        .iter()
        .find(|(k, _)| k == "blksize")
        .and_then(|(_, v)| number(v))
}

/// Grants the request's options within `limits` for a file of `size` bytes. Unknown
/// options, unparsable values and later duplicates are ignored (RFC 2347 lets a server
/// leave out any option); accepted options are answered in request order.
pub fn negotiate(req: &Request, size: u64, limits: &Limits) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        window: 1,
        timeout: limits.default_timeout,
        oack: None,
    };
    let mut granted: Vec<(&str, String)> = Vec::new();
    for (k, v) in &req.options {
        let name = k.as_str();
        if granted.iter().any(|(g, _)| *g == name) {
            continue;
        }
        match name {
            "blksize" => {
                let Some(asked) = number::<u64>(v).filter(|&b| b >= MIN_BLKSIZE.into()) else {
                    continue;
                };
                let max = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
                n.blksize = asked.min(max.into()) as u16;
                granted.push(("blksize", n.blksize.to_string()));
            }
            "tsize" => granted.push(("tsize", size.to_string())),
            "timeout" => {
                let Some(t) = number::<u8>(v).filter(|t| TIMEOUT_RANGE.contains(t)) else {
                    continue;
                };
                n.timeout = Duration::from_secs(t.into());
                granted.push(("timeout", t.to_string()));
            }
            "windowsize" => {
                let Some(asked) = number::<u64>(v).filter(|&w| w >= 1) else {
                    continue;
                };
                n.window = asked.min(limits.max_window.max(1).into()) as u16;
                granted.push(("windowsize", n.window.to_string()));
            }
            _ => {}
        }
    }
    if !granted.is_empty() {
        n.oack = Some(encode_oack(&granted));
    }
    n
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
