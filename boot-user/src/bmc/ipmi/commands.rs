//! The IPMI commands xboot sends, as (netfn, cmd, request data) and reply parsers:
//! channel authentication capabilities, session privilege and close, chassis status,
//! chassis control and the one-time boot device. (IPMI v2.0 rev 1.1, sections 22 and 28.)

pub const NETFN_CHASSIS: u8 = 0x00;
pub const NETFN_APP: u8 = 0x06;

pub const CMD_CHASSIS_STATUS: u8 = 0x01;
pub const CMD_CHASSIS_CONTROL: u8 = 0x02;
pub const CMD_SET_BOOT_OPTIONS: u8 = 0x08;
pub const CMD_GET_BOOT_OPTIONS: u8 = 0x09;
pub const CMD_AUTH_CAPABILITIES: u8 = 0x38;
pub const CMD_SET_SESSION_PRIVILEGE: u8 = 0x3b;
pub const CMD_CLOSE_SESSION: u8 = 0x3c;

/// Privilege levels.
pub const PRIV_OPERATOR: u8 = 3;
pub const PRIV_ADMIN: u8 = 4;
/// RAKP 1 role bit: look the user up by name only (not name and privilege).
pub const ROLE_NAME_ONLY: u8 = 0x10;

/// Chassis Control argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Control {
    Off = 0,
    On = 1,
    Cycle = 2,
    Reset = 3,
    /// Soft (ACPI) shutdown.
    Soft = 5,
}

/// One command of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Status,
    Control(Control),
    /// Set System Boot Options: PXE on next boot only, legacy or EFI.
    BootPxe {
        efi: bool,
    },
}

impl Op {
    /// (netfn, cmd, data) of the request.
    pub fn request(self) -> (u8, u8, Vec<u8>) {
        match self {
            Op::Status => (NETFN_CHASSIS, CMD_CHASSIS_STATUS, vec![]),
            Op::Control(c) => (NETFN_CHASSIS, CMD_CHASSIS_CONTROL, vec![c as u8]),
            Op::BootPxe { efi } => (
                NETFN_CHASSIS,
                CMD_SET_BOOT_OPTIONS,
                boot_flags_pxe(efi).to_vec(),
            ),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Status => "Get Chassis Status",
            Op::Control(_) => "Chassis Control",
            Op::BootPxe { .. } => "Set System Boot Options",
        }
    }
}

/// Boot flags parameter (5): valid, next boot only, legacy/EFI, force PXE.
pub fn boot_flags_pxe(efi: bool) -> [u8; 6] {
    let flags1 = 0x80 | if efi { 0x20 } else { 0 };
    [5, flags1, 0x04, 0, 0, 0]
}

/// Get Channel Authentication Capabilities for the current channel, asking for the
/// IPMI v2.0 extended data (bit 7 of the channel byte).
pub fn auth_capabilities_request(privilege: u8) -> (u8, u8, Vec<u8>) {
    (NETFN_APP, CMD_AUTH_CAPABILITIES, vec![0x8e, privilege])
}

/// Whether the BMC says it speaks IPMI v2.0 (RMCP+).
pub fn supports_v20(reply: &[u8]) -> bool {
    reply.len() >= 4 && reply[1] & 0x80 != 0 && reply[3] & 0x02 != 0
}

/// Power state and faults from a Get Chassis Status reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChassisStatus {
    pub power_on: bool,
    pub power_fault: bool,
    pub control_fault: bool,
}

impl ChassisStatus {
    pub fn parse(reply: &[u8]) -> Option<ChassisStatus> {
        let b = *reply.first()?;
        Some(ChassisStatus {
            power_on: b & 0x01 != 0,
            power_fault: b & 0x08 != 0,
            control_fault: b & 0x10 != 0,
        })
    }
}

/// Generic completion codes (IPMI v2.0 table 5-2).
pub fn completion_text(cc: u8) -> &'static str {
    match cc {
        0x00 => "success",
        0xc0 => "node busy",
        0xc1 => "invalid command",
        0xc2 => "invalid command for this LUN",
        0xc3 => "timeout while processing",
        0xc4 => "out of space",
        0xc5 => "reservation cancelled",
        0xc6 => "request data truncated",
        0xc7 => "request data length invalid",
        0xc8 => "request data field length limit exceeded",
        0xc9 => "parameter out of range",
        0xca => "cannot return the requested number of bytes",
        0xcb => "requested sensor, data or record not present",
        0xcc => "invalid data field in request",
        0xcd => "command illegal for this sensor or record type",
        0xce => "command response could not be provided",
        0xcf => "cannot execute duplicated request",
        0xd0 => "SDR repository in update mode",
        0xd1 => "device in firmware update mode",
        0xd2 => "BMC initialization in progress",
        0xd3 => "destination unavailable",
        0xd4 => "insufficient privilege level",
        0xd5 => "command not supported in present state",
        0xd6 => "command sub-function disabled or unavailable",
        0x80 => "requested privilege level not available for this user",
        0x81 => "requested privilege level exceeds the user or channel limit",
        _ => "unspecified error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        // Bytes as ipmitool 1.8.19 sends them: `chassis power on|cycle`, `chassis status`,
        // `chassis bootdev pxe` / `options=efiboot`.
        let table: &[(Op, u8, &[u8])] = &[
            (Op::Status, 0x01, &[]),
            (Op::Control(Control::On), 0x02, &[1]),
            (Op::Control(Control::Off), 0x02, &[0]),
            (Op::Control(Control::Cycle), 0x02, &[2]),
            (Op::Control(Control::Reset), 0x02, &[3]),
            (Op::Control(Control::Soft), 0x02, &[5]),
            (Op::BootPxe { efi: false }, 0x08, &[5, 0x80, 0x04, 0, 0, 0]),
            (Op::BootPxe { efi: true }, 0x08, &[5, 0xa0, 0x04, 0, 0, 0]),
        ];
        for &(op, cmd, data) in table {
            assert_eq!(op.request(), (NETFN_CHASSIS, cmd, data.to_vec()), "{op:?}");
        }
    }

    #[test]
    fn replies() {
        // ipmi_sim's Get Channel Authentication Capabilities reply
        assert!(supports_v20(&[0x01, 0x97, 0x06, 0x03, 0, 0, 0, 0]));
        assert!(!supports_v20(&[0x01, 0x17, 0x06, 0x01, 0, 0, 0, 0]));
        let st = ChassisStatus::parse(&[0x01, 0, 0, 0]).unwrap();
        assert!(st.power_on && !st.power_fault);
        assert!(!ChassisStatus::parse(&[0x08]).unwrap().power_on);
        assert!(ChassisStatus::parse(&[]).is_none());
        assert_eq!(completion_text(0xcc), "invalid data field in request");
    }
}
