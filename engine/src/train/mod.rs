//! Training a pixel-space `UNet2DModel` with candle (the bundled default model is made this way),
//! and sampling from one with DDIM.

pub mod adamw;
pub mod arch;
pub mod checkpoint;
pub mod dataset;
pub mod ddim;
pub mod export;
pub mod ops;
pub mod trainer;
