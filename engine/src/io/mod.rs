//! File formats and writing files safely: images in, numpy `.npy` arrays in and out, float32
//! `.safetensors` files, pickles recognised (and refused), and the atomic write every file of the
//! engine goes through. Imports nothing of the engine but its error type, so every layer can use it.

pub mod atomic;
pub mod image;
pub mod npy;
pub mod pickle;
pub mod safetensors;
