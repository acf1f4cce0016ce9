//! Models: configs, weights, the UNets with taps, the VAE encoder, the CLIP text encoder, the noise schedule.

pub mod attention;
pub mod clip;
pub mod config;
pub mod conv;
pub mod embeddings;
pub mod group_norm;
pub mod im2col;
pub mod layers;
pub mod pipeline;
pub mod repo;
pub mod resnet;
pub mod schedule;
pub mod softmax;
pub mod suggested;
pub mod taps;
pub mod unet;
pub mod vae;
pub mod vector_exp;
pub mod weights;
