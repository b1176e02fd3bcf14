//! DHCP and PXE: pure request classification and reply building; the userspace server.
