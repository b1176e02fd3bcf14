//! REST API on the unix socket (and optional TCP with a bearer token).
