//! Loading the XDP program and filling its maps.
