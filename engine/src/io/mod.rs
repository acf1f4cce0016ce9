//! File formats: images in, numpy `.npy` arrays in and out.

pub mod image;
pub mod npy;
