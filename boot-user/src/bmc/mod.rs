//! BMC power control: IPMI v2.0 over LAN (RMCP+) and Redfish, fanned out over a node set.
