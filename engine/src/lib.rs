//! diffscope's headless engine: diffusion models with feature taps, the extraction recipe,
//! analysis of feature maps, datasets and evaluation, and file formats. No GUI code lives here.

pub mod analysis;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod features;
pub mod io;
pub mod model;
pub mod parallel;
#[cfg(test)]
mod test_util;
pub mod train;
pub mod worker;

pub use error::{Error, Result};
pub use features::map::FeatureMap;
