//! The running state shared by every service: config, inventory, event log.
