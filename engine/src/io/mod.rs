//! File formats: numpy's `.npy`.

pub mod npy;
