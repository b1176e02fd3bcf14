//! HTTP boot service (axum): iPXE scripts, kernels, initrds, live images, postscripts.
pub mod token;
pub mod urls;
