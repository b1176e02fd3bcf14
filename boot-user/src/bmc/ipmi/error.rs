//! Why an IPMI session failed, and which step it was at: the vocabulary shared by the
//! session state machine, the engine and the fan-out's per-node reasons.
use super::commands;

/// The session's step, named in timeout errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    AuthCapabilities,
    OpenSession,
    Rakp1,
    Rakp3,
    SetPrivilege,
    Command(usize),
    Close,
    Done,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::AuthCapabilities => "Get Channel Authentication Capabilities",
            Stage::OpenSession => "Open Session",
            Stage::Rakp1 => "RAKP 1",
            Stage::Rakp3 => "RAKP 3",
            Stage::SetPrivilege => "Set Session Privilege Level",
            Stage::Command(_) => "command",
            Stage::Close => "Close Session",
            Stage::Done => "done",
        })
    }
}

/// Why a session failed. Each variant says who is at fault and what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpmiError {
    #[error("no reply to {stage} after {attempts} attempts")]
    Timeout { stage: Stage, attempts: u32 },
    /// The BMC answered, but nothing it sent could be read.
    #[error(
        "no valid reply to {stage} after {attempts} attempts: {count} unreadable (last: {last})"
    )]
    BadReply {
        stage: Stage,
        attempts: u32,
        count: u32,
        last: String,
    },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("BMC accepts none of the offered cipher suites ({0})")]
    NoCipherSuite(String),
    #[error("BMC does not support IPMI v2.0 (RMCP+)")]
    NoV20,
    #[error("{cmd} failed: completion code {cc:#04x} ({})", commands::completion_text(*cc))]
    Completion { cmd: &'static str, cc: u8 },
    #[error("connection refused (ICMP port unreachable): nothing listens on the IPMI port")]
    Refused,
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// An ICMP error reported for the BMC's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetError {
    PortUnreachable,
    Unreachable(String),
}
