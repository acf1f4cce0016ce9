//! A tiny training setup shared by the training tests: its architecture, its settings, and
//! images to train on.

use std::path::Path;

use diffscope_engine::train::adamw::AdamWConfig;
use diffscope_engine::train::arch::UNetArchitecture;
use diffscope_engine::train::config::TrainConfig;

pub const SIZE: u32 = 16;

pub fn tiny_arch() -> UNetArchitecture {
    UNetArchitecture {
        channels: vec![8, 16],
        layers_per_block: 1,
        attention_levels: vec![1],
        mid_attention: true,
        head_dim: 8,
        size: SIZE as usize,
    }
}

pub fn tiny_config(ema: Option<f64>) -> TrainConfig {
    TrainConfig {
        arch: tiny_arch(),
        beta_schedule: "linear".into(),
        batch_size: 4,
        learning_rate: 3e-3,
        warmup_steps: 2,
        adamw: AdamWConfig::default(),
        max_grad_norm: 1.0,
        ema_decay: ema,
        seed: 5,
    }
}

/// `count` small images with a coloured square on a gradient, different for each.
pub fn write_images(dir: &Path, count: usize, size: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        let img = image::RgbImage::from_fn(size, size, |x, y| {
            let inside =
                (x as usize + i) % size as usize > 4 && (y as usize * 2 + i) % size as usize > 6;
            if inside {
                image::Rgb([200, (40 * i % 255) as u8, 30])
            } else {
                image::Rgb([(x * 12) as u8, (y * 12) as u8, (i * 30 % 255) as u8])
            }
        });
        img.save(dir.join(format!("img_{i:02}.png"))).unwrap();
    }
}
