//! BMC power control: IPMI v2.0 over LAN (RMCP+) and Redfish, fanned out over a node set.
//!
//! # Layout
//! - [`ipmi`]: RMCP+ protocol modules (pure) and the one-socket engine.
//! - [`redfish`]: ComputerSystem.Reset and the one-time boot override over HTTPS.
//! - [`target`]: which BMC to talk to and how, from the inventory and `[bmc]` config.
//! - [`fanout`]: one action on many BMCs with bounded concurrency, per-node results.
//! - [`request`]: [`PowerRequest`] (node set, action, overrides) -> [`Summary`]: the
//!   entry point of the API and the CLI.
//! - [`cli`]: `xboot bmc power ...`.
pub mod cli;
pub mod fanout;
pub mod ipmi;
pub mod redfish;
pub mod request;
pub mod target;

pub use fanout::{FanoutOpts, NodeResult, Reason, Summary};
pub use request::{power, PowerError, PowerRequest};
pub use target::{Protocol, Target};

/// A power action, the same for every protocol.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    On,
    /// Hard power off.
    Off,
    /// Off, then on again.
    Cycle,
    /// Hard reset (the machine is not powered off).
    Reset,
    /// Soft (ACPI) shutdown: the OS shuts down cleanly.
    Soft,
    /// Report the power state only.
    Status,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::On => "on",
            Action::Off => "off",
            Action::Cycle => "cycle",
            Action::Reset => "reset",
            Action::Soft => "soft",
            Action::Status => "status",
        }
    }

    /// Whether a one-time boot device makes sense before this action.
    pub fn boots(self) -> bool {
        matches!(self, Action::On | Action::Cycle | Action::Reset)
    }
}

/// One-time network boot, set before the power action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// PXE from legacy BIOS.
    Legacy,
    /// PXE from UEFI.
    Efi,
}
