//! CLIP's text transformer (transformers' `CLIPTextModel`, and `CLIPTextModelWithProjection` for
//! SDXL's second encoder): token + position embeddings, pre-norm layers of causal self-attention and
//! an MLP, a final LayerNorm. Stable Diffusion feeds `last_hidden_state` to the UNet as
//! `encoder_hidden_states`, without attention mask; SDXL takes the penultimate layer's hidden state
//! of each encoder and the pooled projection of the second ([`ClipTextEncoder::encode`]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};
use serde_json::Value;

use crate::error::{Error, Result, WithPath};
use crate::model::layers::{apply_linear_3d, layer_norm, linear};
use crate::model::weights::{find_weight_files, refuse_pickle, Weights};

/// The MLP's activation, by its transformers name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `quick_gelu`: `x * sigmoid(1.702 x)` (SD 1.x, OpenAI CLIP).
    QuickGelu,
    /// `gelu`: exact, with erf (SD 2.x, OpenCLIP).
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
}

impl Activation {
    fn forward(self, xs: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::QuickGelu => (xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?)?,
            Activation::Gelu => xs.gelu_erf()?,
            Activation::GeluTanh => xs.gelu()?,
        })
    }
}

/// The keys of a `text_encoder/config.json` the model needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// `eos_token_id` of the config: 2 (old configs, SDXL's) makes transformers pool at the
    /// largest token id, anything else at the first token equal to it.
    pub eos_token_id: Option<u32>,
    /// The width of `text_projection` (`CLIPTextModelWithProjection`), None without one.
    pub projection_dim: Option<usize>,
}

impl ClipTextConfig {
    pub fn load(path: &Path) -> Result<ClipTextConfig> {
        let text = std::fs::read_to_string(path).with_path(path)?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("invalid JSON: {e}")))?;
        let size = |key: &str| -> Result<usize> {
            let value = json
                .get(key)
                .ok_or_else(|| Error::file(path, format!("missing key `{key}`")))?;
            value
                .as_u64()
                .filter(|&n| n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    Error::file(
                        path,
                        format!("`{key}` must be a positive integer, not {value}"),
                    )
                })
        };
        let act_value = json
            .get("hidden_act")
            .ok_or_else(|| Error::file(path, "missing key `hidden_act`"))?;
        let hidden_act = match act_value.as_str() {
            Some("quick_gelu") => Activation::QuickGelu,
            Some("gelu") => Activation::Gelu,
            Some("gelu_new" | "gelu_pytorch_tanh") => Activation::GeluTanh,
            _ => {
                return Err(Error::file(
                    path,
                    format!("`hidden_act` {act_value} is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)"),
                ))
            }
        };
        let eps_value = json
            .get("layer_norm_eps")
            .ok_or_else(|| Error::file(path, "missing key `layer_norm_eps`"))?;
        let layer_norm_eps = eps_value.as_f64().filter(|&eps| eps > 0.0).ok_or_else(|| {
            Error::file(
                path,
                format!("`layer_norm_eps` must be a positive number, not {eps_value}"),
            )
        })?;
        let with_projection = json
            .get("architectures")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|v| v.as_str() == Some("CLIPTextModelWithProjection"))
            });
        let config = ClipTextConfig {
            eos_token_id: json
                .get("eos_token_id")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok()),
            projection_dim: if with_projection {
                Some(size("projection_dim")?)
            } else {
                None
            },
            vocab_size: size("vocab_size")?,
            hidden_size: size("hidden_size")?,
            intermediate_size: size("intermediate_size")?,
            num_hidden_layers: size("num_hidden_layers")?,
            num_attention_heads: size("num_attention_heads")?,
            max_position_embeddings: size("max_position_embeddings")?,
            hidden_act,
            layer_norm_eps,
        };
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::file(
                path,
                format!(
                    "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }
        Ok(config)
    }
}

struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    /// `[1, S, D]` -> `[1, S, D]`; `causal_mask` is `[S, S]`, 0 where a token may look and the
    /// float32 minimum elsewhere (as transformers builds it).
    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let (batch, seq, hidden) = xs.dims3()?;
        let heads = |projection: &Linear| -> Result<Tensor> {
            Ok(apply_linear_3d(projection, xs)?
                .reshape((batch, seq, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (
            heads(&self.q_proj)?,
            heads(&self.k_proj)?,
            heads(&self.v_proj)?,
        );
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(causal_mask)?;
        let weights = crate::model::ops::softmax_last_dim(&scores)?;
        let attended = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq, hidden))?;
        apply_linear_3d(&self.out_proj, &attended)
    }
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl EncoderLayer {
    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let attended = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, causal_mask)?;
        let xs = (xs + attended)?;
        let hidden = self
            .activation
            .forward(&self.fc1.forward(&self.layer_norm2.forward(&xs)?)?)?;
        Ok((&xs + self.fc2.forward(&hidden)?)?)
    }
}

/// One pass of the text encoder, with what Stable Diffusion and SDXL each take from it.
pub struct TextEncoding {
    /// `last_hidden_state` `[1, S, D]`, after the final LayerNorm (SD 1.x/2.x).
    pub last: Tensor,
    /// The hidden state before the last layer, without the final LayerNorm (SDXL's
    /// `hidden_states[-2]`), `[1, S, D]`.
    pub penultimate: Tensor,
    /// `text_embeds` `[1, P]`: the final state at the pooled token through `text_projection`
    /// (encoders with a projection only).
    pub pooled: Option<Tensor>,
}

pub struct ClipTextEncoder {
    config: ClipTextConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    device: Device,
    dir: PathBuf,
}

impl ClipTextEncoder {
    /// Loads a `text_encoder/` folder: `config.json` and `model.safetensors` (memory-mapped,
    /// weights converted to float32 on `device`).
    pub fn load(dir: &Path, device: &Device) -> Result<ClipTextEncoder> {
        Self::load_in(dir, device, DType::F32)
    }

    /// As [`Self::load`], with the weights cast to `dtype`.
    pub fn load_in(dir: &Path, device: &Device, dtype: DType) -> Result<ClipTextEncoder> {
        let config = ClipTextConfig::load(&dir.join("config.json"))?;
        // transformers names its pickles pytorch_model.bin.
        let pickle = dir.join("pytorch_model.bin");
        if pickle.is_file() && !dir.join("model.safetensors").is_file() {
            refuse_pickle(&pickle)?;
        }
        let weights = Weights::open(&find_weight_files(dir, "model")?, device)?.in_dtype(dtype);
        Self::build(config, &weights, dir)
    }

    /// Build from a `config.json` and weights from anywhere (shapes only, for instance).
    pub fn with_weights(config_path: &Path, weights: &Weights) -> Result<ClipTextEncoder> {
        let config = ClipTextConfig::load(config_path)?;
        let dir = config_path.parent().unwrap_or(Path::new("."));
        Self::build(config, weights, dir)
    }

    fn build(config: ClipTextConfig, weights: &Weights, dir: &Path) -> Result<ClipTextEncoder> {
        let device = weights.device().clone();
        let weights = weights.clone();
        // `text_projection` sits beside `text_model`, whatever the naming.
        let text_projection = config
            .projection_dim
            .map(|p| linear(&weights.pp("text_projection"), config.hidden_size, p, false))
            .transpose()?;
        // transformers 4.x saved everything under `text_model.`, 5.x without.
        let weights = if weights.contains("text_model.embeddings.token_embedding.weight") {
            weights.pp("text_model")
        } else {
            weights
        };
        let d = config.hidden_size;
        let eps = config.layer_norm_eps;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let layer = weights.pp(format!("encoder.layers.{i}"));
                let attn = layer.pp("self_attn");
                Ok(EncoderLayer {
                    layer_norm1: layer_norm(&layer.pp("layer_norm1"), d, eps)?,
                    self_attn: SelfAttention {
                        q_proj: linear(&attn.pp("q_proj"), d, d, true)?,
                        k_proj: linear(&attn.pp("k_proj"), d, d, true)?,
                        v_proj: linear(&attn.pp("v_proj"), d, d, true)?,
                        out_proj: linear(&attn.pp("out_proj"), d, d, true)?,
                        num_heads: config.num_attention_heads,
                        head_dim: d / config.num_attention_heads,
                    },
                    layer_norm2: layer_norm(&layer.pp("layer_norm2"), d, eps)?,
                    fc1: linear(&layer.pp("mlp.fc1"), d, config.intermediate_size, true)?,
                    fc2: linear(&layer.pp("mlp.fc2"), config.intermediate_size, d, true)?,
                    activation: config.hidden_act,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embeddings = weights.pp("embeddings");
        Ok(ClipTextEncoder {
            token_embedding: embeddings.get("token_embedding.weight", &[config.vocab_size, d])?,
            position_embedding: embeddings.get(
                "position_embedding.weight",
                &[config.max_position_embeddings, d],
            )?,
            final_layer_norm: layer_norm(&weights.pp("final_layer_norm"), d, eps)?,
            text_projection,
            layers,
            device: device.clone(),
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// `last_hidden_state` `[1, S, D]` for one sequence of token ids (S = 77 for SD), positions 0..S.
    pub fn forward(&self, input_ids: &[u32]) -> Result<Tensor> {
        Ok(self.encode(input_ids)?.last)
    }

    /// One pass, keeping the penultimate hidden state and the pooled projection too.
    pub fn encode(&self, input_ids: &[u32]) -> Result<TextEncoding> {
        let seq = input_ids.len();
        if seq == 0 || seq > self.config.max_position_embeddings {
            return Err(Error::invalid(format!(
                "{} token ids given to the text encoder {}; it takes 1 to {}",
                seq,
                self.dir.display(),
                self.config.max_position_embeddings
            )));
        }
        if let Some(bad) = input_ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary ({}) of the text encoder {}",
                self.config.vocab_size,
                self.dir.display()
            )));
        }
        let ids = Tensor::from_slice(input_ids, seq, &self.device)?;
        let tokens = self.token_embedding.index_select(&ids, 0)?;
        let positions = self.position_embedding.narrow(0, 0, seq)?;
        let mut xs = (tokens + positions)?.unsqueeze(0)?;
        let causal_mask = self.causal_mask(seq)?;
        let mut penultimate = xs.clone();
        for layer in &self.layers {
            penultimate = xs;
            xs = layer.forward(&penultimate, &causal_mask)?;
        }
        let last = self.final_layer_norm.forward(&xs)?;
        let pooled = match &self.text_projection {
            Some(projection) => {
                let at = self.pooled_position(input_ids);
                Some(projection.forward(&last.narrow(1, at, 1)?.squeeze(1)?)?)
            }
            None => None,
        };
        Ok(TextEncoding {
            last,
            penultimate,
            pooled,
        })
    }

    /// Where transformers pools: at the largest id when the config's `eos_token_id` is the old 2,
    /// else at the first end-of-text token.
    fn pooled_position(&self, ids: &[u32]) -> usize {
        let first_max = |ids: &[u32]| {
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&id| id == max).unwrap_or(0)
        };
        // transformers' default eos_token_id is CLIP's end-of-text, 49407.
        match self.config.eos_token_id.unwrap_or(49407) {
            2 => first_max(ids),
            eos => ids.iter().position(|&id| id == eos).unwrap_or(0),
        }
    }

    /// The width D of the hidden states (768 for SD 1.x, 1024 for SD 2.x).
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// transformers fills the masked positions with the smallest finite value of the dtype.
    fn causal_mask(&self, seq: usize) -> Result<Tensor> {
        let dtype = self.token_embedding.dtype();
        let lowest = match dtype {
            // torch.finfo(float16).min and torch.finfo(bfloat16).min.
            DType::F16 => -65504.0,
            DType::BF16 => -3.389_531_389_251_535_5e38,
            _ => f64::from(f32::MIN),
        };
        let mask: Vec<f64> = (0..seq)
            .flat_map(|row| (0..seq).map(move |col| if col > row { lowest } else { 0.0 }))
            .collect();
        Ok(Tensor::from_vec(mask, (seq, seq), &self.device)?.to_dtype(dtype)?)
    }
}
