//! HTTP boot service (axum): iPXE scripts, kernels, initrds, live images, postscripts.
