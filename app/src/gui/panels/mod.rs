//! The panels around the central view.

pub mod controls;
pub mod drop;
pub mod plots;
pub mod status;
pub mod top;
pub mod unet;
