//! Attention layers: the multi-head `Attention` of diffusers, its transformer block for the
//! conditional UNet, and the single-map self-attention of VAE and DDPM UNets.
//!
//! Scores are computed a chunk of queries at a time, so memory stays bounded by
//! [`ATTENTION_CHUNK_ELEMENTS`] whatever the image size (SD 2.1 at 768x768 has 9216 tokens).

use candle_core::{Module, Tensor, D};
use candle_nn::{LayerNorm, Linear};

use super::layers::{apply_linear_3d, group_norm, layer_norm, linear, GroupNorm};
use super::weights::Weights;
use crate::error::Result;

/// Largest score matrix (batch x heads x queries x keys) held at once: 4 Mi floats, 16 MiB. Below
/// glibc's largest mmap threshold (32 MiB), so each chunk's buffers are reused from the heap instead
/// of being mapped and faulted in afresh.
pub const ATTENTION_CHUNK_ELEMENTS: usize = 4 << 20;

/// softmax(q kᵀ · scale) v over `[BH, N, d]` inputs, a chunk of queries at a time.
pub fn chunked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    max_elements: usize,
) -> Result<Tensor> {
    let (bh, n, _) = q.dims3()?;
    let m = k.dim(1)?;
    let kt = k.t()?.contiguous()?;
    // Scale the queries rather than the scores: N x d values instead of N x M.
    let q = (q * scale)?;
    let chunk = (max_elements / (bh * m).max(1)).clamp(1, n.max(1));
    let mut outs = Vec::with_capacity(n.div_ceil(chunk));
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let qc = q.narrow(1, start, len)?;
        let scores = qc.matmul(&kt)?;
        let probs = super::softmax::softmax_last_dim(&scores)?;
        outs.push(probs.matmul(v)?);
        start += len;
    }
    Ok(if outs.len() == 1 {
        outs.remove(0)
    } else {
        Tensor::cat(&outs, 1)?
    })
}

/// `[B, N, H*d]` -> `[B*H, N, d]`.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    Ok(x.reshape((b, n, heads, c / heads))?
        .transpose(1, 2)?
        .reshape((b * heads, n, c / heads))?
        .contiguous()?)
}

/// `[B*H, N, d]` -> `[B, N, H*d]`.
fn merge_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (bh, n, d) = x.dims3()?;
    Ok(x.reshape((bh / heads, heads, n, d))?
        .transpose(1, 2)?
        .reshape((bh / heads, n, heads * d))?)
}

/// diffusers' `Attention` on token sequences: q from `x`, k and v from the context (or `x`).
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
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
        })
    }

    /// `x`: `[B, N, query_dim]`; `context`: `[B, M, context_dim]` or None for self-attention.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = split_heads(&apply_linear_3d(&self.to_q, x)?, self.heads)?;
        let k = split_heads(&apply_linear_3d(&self.to_k, ctx)?, self.heads)?;
        let v = split_heads(&apply_linear_3d(&self.to_v, ctx)?, self.heads)?;
        let out = chunked_attention(&q, &k, &v, self.scale, ATTENTION_CHUNK_ELEMENTS)?;
        apply_linear_3d(&self.to_out, &merge_heads(&out, self.heads)?)
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
        let (b, c, h, w) = x.dims4()?;
        let normed = self.group_norm.forward(x)?;
        let tokens = normed
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let out = self.attention.forward(&tokens, None)?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        let out = (out + x)?;
        Ok(if self.rescale_output_factor != 1.0 {
            (out / self.rescale_output_factor)?
        } else {
            out
        })
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

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context))?
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

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let tokens = normed.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?;
        let mut tokens = apply_linear_3d(&self.proj_in, &tokens)?;
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let out = apply_linear_3d(&self.proj_out, &tokens)?;
        let out = out.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?;
        Ok((out + x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::recipe::seeded_normal;
    use candle_core::Device;

    #[test]
    fn query_chunks_give_the_same_attention() {
        let dev = Device::Cpu;
        let (bh, n, m, d) = (3, 50, 40, 8);
        let q = seeded_normal(1, &[bh, n, d], &dev).unwrap();
        let k = seeded_normal(2, &[bh, m, d], &dev).unwrap();
        let v = seeded_normal(3, &[bh, m, d], &dev).unwrap();
        let whole = chunked_attention(&q, &k, &v, 0.3, usize::MAX).unwrap();
        // 7 queries per chunk: 8 chunks, the last one short.
        let chunked = chunked_attention(&q, &k, &v, 0.3, bh * m * 7).unwrap();
        let diff = crate::test_util::max_abs_diff(&whole, &chunked);
        assert!(diff < 1e-6, "{diff}");
    }
}
