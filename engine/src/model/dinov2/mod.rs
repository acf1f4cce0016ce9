//! DINOv2 (transformers' `Dinov2Model` and `Dinov2WithRegistersModel`) as a feature source: the
//! image normalised as ImageNet models expect, cut into patches, a class token (and register
//! tokens) and position embeddings resized to the patch grid as transformers resizes them, then
//! pre-norm transformer layers with LayerScale and a final LayerNorm.
//!
//! Taps are named by module path: `embeddings`, `encoder.layer.N`, `layernorm`. Each gives the
//! patch tokens as a `[C, h, w]` map, with the class and register tokens beside. There is no
//! timestep or noise.

mod config;
mod position;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear};
use image::RgbImage;

pub use config::Dinov2Config;
pub use position::resize_bicubic;

use super::layers::{apply_linear_3d, layer_norm, linear};
use super::ops::attention;
use super::taps::{TapInfo, TapRecorder};
use super::weights::{find_weight_files, Weights};
use crate::error::{Error, Result};

/// ImageNet's channel statistics, which DINOv2's image processor normalises with.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `[1,3,H,W]` float32: `(u8 / 255 - mean) / std` per channel, in float32 as the processor does.
pub fn imagenet_input(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut chw = vec![0f32; 3 * h * w];
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * h * w + i] = (px[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    Ok(Tensor::from_vec(chw, (1, 3, h, w), device)?)
}

/// One tap's tokens.
#[derive(Clone, Debug)]
pub struct VitTap {
    /// The patch tokens as a `[C, h, w]` float32 map.
    pub map: Tensor,
    /// The class token `[C]`.
    pub cls: Tensor,
    /// The register tokens `[R, C]` (registers models only).
    pub registers: Option<Tensor>,
}

enum Mlp {
    Gelu {
        fc1: Linear,
        fc2: Linear,
    },
    /// SwiGLU (the giant model): `weights_in` holds the gate and the value halves.
    SwiGlu {
        weights_in: Linear,
        weights_out: Linear,
        hidden: usize,
    },
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mlp::Gelu { fc1, fc2 } => apply_linear_3d(fc2, &apply_linear_3d(fc1, x)?.gelu_erf()?),
            Mlp::SwiGlu {
                weights_in,
                weights_out,
                hidden,
            } => {
                let both = apply_linear_3d(weights_in, x)?;
                let gate = both.narrow(D::Minus1, 0, *hidden)?;
                let value = both.narrow(D::Minus1, *hidden, *hidden)?;
                apply_linear_3d(weights_out, &(gate.silu()? * value)?)
            }
        }
    }
}

struct Layer {
    norm1: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    scale1: Tensor,
    norm2: LayerNorm,
    mlp: Mlp,
    scale2: Tensor,
    heads: usize,
}

impl Layer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(x)?;
        let (q, k, v) = (
            apply_linear_3d(&self.query, &h)?,
            apply_linear_3d(&self.key, &h)?,
            apply_linear_3d(&self.value, &h)?,
        );
        let head_dim = q.dim(D::Minus1)? / self.heads;
        let attended = attention(&q, &k, &v, self.heads, (head_dim as f64).powf(-0.5))?;
        let attended = apply_linear_3d(&self.output, &attended)?;
        let x = (x + attended.broadcast_mul(&self.scale1)?)?;
        let mlp = self.mlp.forward(&self.norm2.forward(&x)?)?;
        Ok((&x + mlp.broadcast_mul(&self.scale2)?)?)
    }
}

pub struct Dinov2 {
    pub config: Dinov2Config,
    /// The folder it was read from.
    pub dir: PathBuf,
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    register_tokens: Option<Tensor>,
    position_embeddings: Tensor,
    layers: Vec<Layer>,
    layernorm: LayerNorm,
    taps: Vec<TapInfo>,
    pub parameters: usize,
    pub dtype: DType,
}

/// transformers 5 renames these at load; the published checkpoints keep the old names.
const NEW_NAMES: [(&str, &str); 4] = [
    ("attention.attention.query", "attention.q_proj"),
    ("attention.attention.key", "attention.k_proj"),
    ("attention.attention.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
];

impl Dinov2 {
    /// Load a transformers DINOv2 folder (`config.json`, `model.safetensors`).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if dir.join("model_index.json").is_file() || dir.join("unet").is_dir() {
            return Err(Error::file(
                dir,
                "this is a diffusers pipeline folder, not a DINOv2 (transformers Dinov2Model) folder",
            ));
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::file(
                dir,
                "not a DINOv2 folder: config.json is missing",
            ));
        }
        let config = Dinov2Config::load(&config_path)?;
        let weights = Weights::open(&find_weight_files(dir, "model")?, device)?.in_dtype(dtype);
        Self::build(config, dir, &weights)
            .map_err(|e| Error::file(dir, format!("DINOv2 weights: {e}")))
    }

    /// Build from a config file and weights from anywhere (shapes only, for instance).
    pub fn with_weights(config_path: &Path, weights: &Weights) -> Result<Self> {
        let config = Dinov2Config::load(config_path)?;
        let dir = config_path.parent().unwrap_or(Path::new("."));
        Self::build(config, dir, weights)
    }

    fn build(config: Dinov2Config, dir: &Path, w: &Weights) -> Result<Self> {
        let c = config.hidden_size;
        let p = config.patch_size;
        let positions = config.position_grid().pow(2) + 1;
        let e = w.pp("embeddings");
        let patch = e.pp("patch_embeddings.projection");
        let patch_weight = patch
            .get("weight", &[c, config.num_channels, p, p])?
            .reshape((c, config.num_channels * p * p))?;
        let patch_bias = patch.get("bias", &[c])?;
        // Read (and counted) though features never use it: it replaces masked patches in training.
        e.get("mask_token", &[1, c])?;
        let register_tokens = match config.num_register_tokens {
            0 => None,
            r => Some(e.get("register_tokens", &[1, r, c])?),
        };
        let eps = config.layer_norm_eps;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Self::layer(&w.pp(format!("encoder.layer.{i}")), &config))
            .collect::<Result<Vec<_>>>()?;
        let layer_tap = |name: String| TapInfo {
            name,
            channels: c,
            stride: p,
            block_level: true,
            transformer_depth: None,
        };
        let taps = std::iter::once("embeddings".to_string())
            .chain((0..config.num_hidden_layers).map(|i| format!("encoder.layer.{i}")))
            .chain(std::iter::once("layernorm".to_string()))
            .map(layer_tap)
            .collect();
        Ok(Self {
            patch_weight,
            patch_bias,
            cls_token: e.get("cls_token", &[1, 1, c])?,
            register_tokens,
            position_embeddings: e.get("position_embeddings", &[1, positions, c])?,
            layers,
            layernorm: layer_norm(&w.pp("layernorm"), c, eps)?,
            taps,
            parameters: w.loaded_parameters(),
            dtype: w.dtype(),
            dir: dir.to_path_buf(),
            config,
        })
    }

    fn layer(w: &Weights, config: &Dinov2Config) -> Result<Layer> {
        let c = config.hidden_size;
        let named = |old: &str| -> Weights {
            match NEW_NAMES.iter().find(|(o, _)| *o == old) {
                Some((_, new)) if w.pp(new).contains("weight") => w.pp(new),
                _ => w.pp(old),
            }
        };
        let hidden = config.mlp_hidden();
        let mlp = if config.use_swiglu_ffn {
            Mlp::SwiGlu {
                weights_in: linear(&w.pp("mlp.weights_in"), c, 2 * hidden, true)?,
                weights_out: linear(&w.pp("mlp.weights_out"), hidden, c, true)?,
                hidden,
            }
        } else {
            Mlp::Gelu {
                fc1: linear(&w.pp("mlp.fc1"), c, hidden, true)?,
                fc2: linear(&w.pp("mlp.fc2"), hidden, c, true)?,
            }
        };
        let eps = config.layer_norm_eps;
        Ok(Layer {
            norm1: layer_norm(&w.pp("norm1"), c, eps)?,
            query: linear(&named("attention.attention.query"), c, c, config.qkv_bias)?,
            key: linear(&named("attention.attention.key"), c, c, config.qkv_bias)?,
            value: linear(&named("attention.attention.value"), c, c, config.qkv_bias)?,
            output: linear(&named("attention.output.dense"), c, c, true)?,
            scale1: w.pp("layer_scale1").get("lambda1", &[c])?,
            norm2: layer_norm(&w.pp("norm2"), c, eps)?,
            mlp,
            scale2: w.pp("layer_scale2").get("lambda1", &[c])?,
            heads: config.num_attention_heads,
        })
    }

    /// Every tap in forward order.
    pub fn taps(&self) -> &[TapInfo] {
        &self.taps
    }

    pub fn patch_size(&self) -> usize {
        self.config.patch_size
    }

    /// The image side it was trained at (518 for the published models).
    pub fn native_side(&self) -> usize {
        self.config.image_size
    }

    /// Check that an image of `(width, height)` pixels cuts into whole patches.
    pub fn check_input_size(&self, (width, height): (u32, u32)) -> Result<()> {
        let p = self.patch_size() as u32;
        if width < p || height < p || width % p != 0 || height % p != 0 {
            let round = |v: u32| (v.max(p) / p) * p;
            return Err(Error::invalid(format!(
                "{width}x{height} is not a multiple of DINOv2's patch size {p}: pass --size, e.g. {}x{}",
                round(width),
                round(height)
            )));
        }
        Ok(())
    }

    /// Run the image `[1,3,H,W]` (ImageNet-normalised, see [`imagenet_input`]) up to the deepest
    /// of `taps`, returning each one's tokens.
    pub fn forward_taps(
        &self,
        pixels: &Tensor,
        taps: &[String],
        cancel: Option<&AtomicBool>,
    ) -> Result<BTreeMap<String, VitTap>> {
        super::taps::validate_taps(taps, &self.taps)?;
        let (_, _, height, width) = pixels.dims4()?;
        self.check_input_size((width as u32, height as u32))?;
        let p = self.patch_size();
        let (h, w) = (height / p, width / p);
        let mut recorder = TapRecorder::new(taps, cancel);
        let mut x = self.embeddings(&pixels.to_dtype(self.dtype)?, (h, w))?;
        if !recorder.record("embeddings", &x)? {
            for (i, layer) in self.layers.iter().enumerate() {
                x = layer.forward(&x)?;
                if recorder.record(&format!("encoder.layer.{i}"), &x)? {
                    break;
                }
            }
            if !recorder.done() {
                recorder.record("layernorm", &self.layernorm.forward(&x)?)?;
            }
        }
        let registers = self.config.num_register_tokens;
        recorder
            .into_captured()
            .into_iter()
            .map(|(name, tokens)| {
                let tokens = tokens.squeeze(0)?.to_dtype(DType::F32)?;
                let c = tokens.dim(1)?;
                let map = tokens
                    .narrow(0, 1 + registers, h * w)?
                    .t()?
                    .reshape((c, h, w))?
                    .contiguous()?;
                let tap = VitTap {
                    map,
                    cls: tokens.get(0)?,
                    registers: (registers > 0)
                        .then(|| tokens.narrow(0, 1, registers))
                        .transpose()?,
                };
                Ok((name, tap))
            })
            .collect()
    }

    /// Patch embeddings, the class token, position embeddings at the `(h, w)` grid, then the
    /// register tokens after the class token: `[1, 1 + R + h*w, C]`.
    fn embeddings(&self, pixels: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
        let p = self.patch_size();
        let channels = pixels.dim(1)?;
        let patches = pixels
            .reshape((channels, h, p, w, p))?
            .permute((1, 3, 0, 2, 4))?
            .reshape((h * w, channels * p * p))?;
        let tokens = patches
            .matmul(&self.patch_weight.t()?)?
            .broadcast_add(&self.patch_bias)?
            .unsqueeze(0)?;
        let tokens = Tensor::cat(&[&self.cls_token, &tokens], 1)?;
        let tokens = (tokens + self.positions((h, w))?)?;
        Ok(match &self.register_tokens {
            Some(registers) => Tensor::cat(
                &[
                    &tokens.narrow(1, 0, 1)?,
                    registers,
                    &tokens.narrow(1, 1, h * w)?,
                ],
                1,
            )?,
            None => tokens,
        })
    }

    /// The position embeddings for an `(h, w)` grid: the stored ones for the training grid of a
    /// square image (transformers' condition), else the patch part resized bicubically.
    fn positions(&self, (h, w): (usize, usize)) -> Result<Tensor> {
        let side = self.config.position_grid();
        if h == w && h * w == side * side {
            return Ok(self.position_embeddings.clone());
        }
        let c = self.config.hidden_size;
        let stored = self.position_embeddings.squeeze(0)?.to_dtype(DType::F32)?;
        let grid = stored
            .narrow(0, 1, side * side)?
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let resized = resize_bicubic(
            &grid,
            c,
            (side, side),
            (h, w),
            self.config.antialiased_positions(),
        );
        let patch = Tensor::from_vec(resized, (c, h * w), stored.device())?.t()?;
        let all = Tensor::cat(&[&stored.narrow(0, 0, 1)?, &patch], 0)?;
        Ok(all.to_dtype(self.dtype)?.unsqueeze(0)?)
    }
}
