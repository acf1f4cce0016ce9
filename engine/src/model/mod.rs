//! Models: configs, weights, the UNets with taps, the VAE encoder, the CLIP text encoder, the noise schedule.
