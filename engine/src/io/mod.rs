//! File formats: images in, feature dumps and arrays out.

pub mod image;
pub mod npy;
