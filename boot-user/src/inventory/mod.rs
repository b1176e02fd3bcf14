//! The inventory: hosts and boot images (model, loading, validation, persistent store).
pub mod model;

pub use model::{Host, Image, Interface, Mac};
