//! Read-only TFTP server for the iPXE binaries (async-tftp).
