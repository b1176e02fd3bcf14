//! The template engine for kernel command lines, iPXE scripts and postscripts.
