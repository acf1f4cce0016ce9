//! Models: configs, weights, the UNets with taps and attention maps, the VAE encoder, the CLIP text encoder, the noise schedule.

pub mod attention;
pub mod attention_probs;
pub mod clip;
pub mod conditioning;
pub mod config;
pub mod dinov2;
pub mod embeddings;
pub mod feature_model;
pub mod hub;
pub mod layers;
pub mod memory;
pub mod ops;
pub mod pipeline;
pub mod repo;
pub mod resnet;
pub mod schedule;
pub mod suggested;
pub mod taps;
pub mod unet;
pub mod vae;
pub mod weights;
