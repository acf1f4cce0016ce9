//! Attention layers: the multi-head `Attention` of diffusers, its transformer block for the
//! conditional UNet, and the single-map self-attention of VAE and DDPM UNets.
//!
//! The attention core itself (bounded memory whatever the image size) is [`super::ops::attention`].
//! Each `Attention` knows its diffusers path and hands its probabilities to the pass's
//! [`AttentionRecorder`] when that asks for them.

use candle_core::{Module, Tensor, D};
use candle_nn::{LayerNorm, Linear};

use super::attention_probs::{AttentionInfo, AttentionKind, AttentionRecorder};
use super::layers::{apply_linear_3d, group_norm, layer_norm, linear, GroupNorm};
use super::ops::attention;
use super::ops::attention::attention_with_probs;
use super::weights::Weights;
use crate::error::Result;

/// diffusers' `Attention` on token sequences: q from `x`, k and v from the context (or `x`).
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
    /// The module's diffusers path, which names its attention maps.
    name: String,
}

pub struct AttentionSpec {
    pub query_dim: usize,
    pub context_dim: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Bias on q, k, v (VAE/DDPM attention has it; transformer blocks do not).
    pub qkv_bias: bool,
}

impl Attention {
    pub fn new(w: &Weights, s: &AttentionSpec) -> Result<Self> {
        let inner = s.heads * s.head_dim;
        // Old checkpoints name the single-map attention weights query/key/value/proj_attn.
        let pick = |new: &str, old: &str| {
            if !w.pp(new).contains("weight") && w.pp(old).contains("weight") {
                w.pp(old)
            } else {
                w.pp(new)
            }
        };
        Ok(Self {
            to_q: linear(&pick("to_q", "query"), s.query_dim, inner, s.qkv_bias)?,
            to_k: linear(&pick("to_k", "key"), s.context_dim, inner, s.qkv_bias)?,
            to_v: linear(&pick("to_v", "value"), s.context_dim, inner, s.qkv_bias)?,
            to_out: linear(&pick("to_out.0", "proj_attn"), inner, s.query_dim, true)?,
            heads: s.heads,
            scale: (s.head_dim as f64).powf(-0.5),
            name: w.prefix().to_string(),
        })
    }

    /// `x`: `[B, N, query_dim]`; `context`: `[B, M, context_dim]` or None for self-attention.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.forward_recorded(x, context, (0, 0), &mut AttentionRecorder::default())
    }

    /// [`Self::forward`] for queries from a `grid` `(h, w)`, recording the probabilities in
    /// `rec` when it asks for this module's.
    pub fn forward_recorded(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        grid: (usize, usize),
        rec: &mut AttentionRecorder,
    ) -> Result<Tensor> {
        let kind = match context {
            Some(_) => AttentionKind::CrossAttention,
            None => AttentionKind::SelfAttention,
        };
        let ctx = context.unwrap_or(x);
        let q = apply_linear_3d(&self.to_q, x)?;
        let k = apply_linear_3d(&self.to_k, ctx)?;
        let v = apply_linear_3d(&self.to_v, ctx)?;
        let out = match rec.rows_for(&self.name, kind, grid) {
            None => attention(&q, &k, &v, self.heads, self.scale)?,
            Some(rows) => {
                let (out, probs) = attention_with_probs(&q, &k, &v, self.heads, self.scale, rows)?;
                rec.record(&self.name, kind, grid, rows, probs, x.dim(0)?)?;
                out
            }
        };
        apply_linear_3d(&self.to_out, &out)
    }

    /// What this module offers as an attention map, for queries `stride` times coarser than the
    /// UNet's input.
    fn info(&self, kind: AttentionKind, stride: usize) -> AttentionInfo {
        AttentionInfo {
            name: self.name.clone(),
            kind,
            heads: self.heads,
            stride,
        }
    }
}

/// Self-attention over a feature map with its own GroupNorm and a residual (VAE and DDPM UNets).
pub struct SpatialAttention {
    group_norm: GroupNorm,
    attention: Attention,
    rescale_output_factor: f64,
}

impl SpatialAttention {
    /// `head_dim` None means one head over all channels.
    pub fn new(
        w: &Weights,
        channels: usize,
        head_dim: Option<usize>,
        groups: usize,
        eps: f64,
        rescale: f64,
    ) -> Result<Self> {
        let head_dim = head_dim.unwrap_or(channels);
        let heads = (channels / head_dim.max(1)).max(1);
        let spec = AttentionSpec {
            query_dim: channels,
            context_dim: channels,
            heads,
            head_dim,
            qkv_bias: true,
        };
        Ok(Self {
            group_norm: group_norm(&w.pp("group_norm"), groups, channels, eps)?,
            attention: Attention::new(w, &spec)?,
            rescale_output_factor: rescale,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_recorded(x, &mut AttentionRecorder::default())
    }

    /// [`Self::forward`], recording its attention map in `rec` when it asks for it.
    pub fn forward_recorded(&self, x: &Tensor, rec: &mut AttentionRecorder) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.group_norm.forward(x)?;
        let tokens = normed
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let out = self
            .attention
            .forward_recorded(&tokens, None, (h, w), rec)?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        let out = (out + x)?;
        Ok(if self.rescale_output_factor != 1.0 {
            (out / self.rescale_output_factor)?
        } else {
            out
        })
    }

    /// Its attention map (this module itself is diffusers' `Attention`).
    pub fn attention_modules(&self, stride: usize) -> Vec<AttentionInfo> {
        vec![self.attention.info(AttentionKind::SelfAttention, stride)]
    }
}

/// GEGLU feed-forward: project to 2x inner, gate with exact (erf) GELU of the second half.
struct FeedForward {
    proj: Linear,
    out: Linear,
    inner: usize,
}

impl FeedForward {
    fn new(w: &Weights, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj: linear(&w.pp("net.0.proj"), dim, inner * 2, true)?,
            out: linear(&w.pp("net.2"), inner, dim, true)?,
            inner,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = apply_linear_3d(&self.proj, x)?;
        let value = h.narrow(D::Minus1, 0, self.inner)?;
        let gate = h.narrow(D::Minus1, self.inner, self.inner)?;
        apply_linear_3d(&self.out, &(value * gate.gelu_erf()?)?)
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention, feed-forward, each pre-normed with a residual.
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl TransformerBlock {
    fn new(w: &Weights, dim: usize, heads: usize, context_dim: usize) -> Result<Self> {
        let head_dim = dim / heads;
        let self_spec = AttentionSpec {
            query_dim: dim,
            context_dim: dim,
            heads,
            head_dim,
            qkv_bias: false,
        };
        let cross_spec = AttentionSpec {
            query_dim: dim,
            context_dim,
            heads,
            head_dim,
            qkv_bias: false,
        };
        Ok(Self {
            norm1: layer_norm(&w.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::new(&w.pp("attn1"), &self_spec)?,
            norm2: layer_norm(&w.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::new(&w.pp("attn2"), &cross_spec)?,
            norm3: layer_norm(&w.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::new(&w.pp("ff"), dim)?,
        })
    }

    /// `x`: the tokens of a `grid` `(h, w)`.
    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        grid: (usize, usize),
        rec: &mut AttentionRecorder,
    ) -> Result<Tensor> {
        let normed = self.norm1.forward(x)?;
        let x = (self.attn1.forward_recorded(&normed, None, grid, rec)? + x)?;
        let normed = self.norm2.forward(&x)?;
        let x = (self
            .attn2
            .forward_recorded(&normed, Some(context), grid, rec)?
            + x)?;
        Ok((self.ff.forward(&self.norm3.forward(&x)?)? + x)?)
    }
}

/// `Transformer2DModel` over a feature map. SD1 stores `proj_in/proj_out` as 1x1 convolutions, SD2
/// as linear layers: both are the same per-pixel linear map, applied here to the flattened tokens.
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<TransformerBlock>,
    proj_out: Linear,
}

pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub groups: usize,
}

impl Transformer2D {
    pub fn new(w: &Weights, s: &TransformerSpec) -> Result<Self> {
        let blocks = (0..s.layers)
            .map(|i| {
                TransformerBlock::new(
                    &w.pp(format!("transformer_blocks.{i}")),
                    s.channels,
                    s.heads,
                    s.context_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: group_norm(&w.pp("norm"), s.groups, s.channels, 1e-6)?,
            proj_in: linear(&w.pp("proj_in"), s.channels, s.channels, true)?,
            blocks,
            proj_out: linear(&w.pp("proj_out"), s.channels, s.channels, true)?,
        })
    }

    /// The forward pass, recording the attention maps `rec` asks for.
    pub fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        rec: &mut AttentionRecorder,
    ) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let tokens = normed.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?;
        let mut tokens = apply_linear_3d(&self.proj_in, &tokens)?;
        for block in &self.blocks {
            tokens = block.forward(&tokens, context, (h, w), rec)?;
        }
        let out = apply_linear_3d(&self.proj_out, &tokens)?;
        let out = out.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?;
        Ok((out + x)?)
    }

    /// Its attention maps in forward order: each transformer block's `attn1` (self) and `attn2`
    /// (cross).
    pub fn attention_modules(&self, stride: usize) -> Vec<AttentionInfo> {
        self.blocks
            .iter()
            .flat_map(|b| {
                [
                    b.attn1.info(AttentionKind::SelfAttention, stride),
                    b.attn2.info(AttentionKind::CrossAttention, stride),
                ]
            })
            .collect()
    }
}
