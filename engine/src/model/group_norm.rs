//! GroupNorm, optionally followed by SiLU, in one pass over the data on the CPU.
//!
//! Why: candle-nn's GroupNorm is seven tensor operations, each allocating a tensor the size of its
//! input (plus one more for the SiLU that usually follows). On the VAE's 128 x 512 x 512 maps that
//! is ~1 GB of fresh memory per norm, and page faults cost as much as the arithmetic. Here each
//! group's mean and variance are summed in f64 and the normalised, scaled, shifted (and activated)
//! values are written once. Same formula as candle's (biased variance, eps inside the square root,
//! SiLU as `x / (1 + exp(-x))`); only float rounding differs.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};

use crate::error::Result;

pub struct GroupNorm {
    /// candle's version, for other devices and dtypes.
    general: candle_nn::GroupNorm,
    fused: FusedGroupNorm,
    /// Weight and bias being trained on the CPU: the training op, which has a backward pass.
    training: Option<(Tensor, Tensor)>,
}

impl GroupNorm {
    pub fn new(
        weight: Tensor,
        bias: Tensor,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let fused = FusedGroupNorm {
            weight: weight.to_dtype(DType::F32)?.to_vec1()?,
            bias: bias.to_dtype(DType::F32)?.to_vec1()?,
            groups,
            eps,
            silu: false,
        };
        let training = (weight.is_variable() && weight.device().is_cpu())
            .then(|| (weight.clone(), bias.clone()));
        Ok(Self {
            general: candle_nn::GroupNorm::new(weight, bias, channels, groups, eps)?,
            fused,
            training,
        })
    }

    fn forward_training(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        silu: bool,
    ) -> candle_core::Result<Tensor> {
        crate::train::ops::group_norm(x, weight, bias, self.fused.groups, self.fused.eps, silu)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    /// `silu(group_norm(x))`.
    pub fn forward_silu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some((w, b)) = &self.training {
            return self.forward_training(x, w, b, true);
        }
        if Self::fusable(x) {
            let op = FusedGroupNorm {
                silu: true,
                ..self.fused.clone()
            };
            x.contiguous()?.apply_op1_no_bwd(&op)
        } else {
            self.general.forward(x)?.silu()
        }
    }

    fn fusable(x: &Tensor) -> bool {
        x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() >= 3
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some((w, b)) = &self.training {
            return self.forward_training(x, w, b, false);
        }
        if Self::fusable(x) {
            x.contiguous()?.apply_op1_no_bwd(&self.fused)
        } else {
            self.general.forward(x)
        }
    }
}

#[derive(Clone)]
struct FusedGroupNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    groups: usize,
    eps: f64,
    silu: bool,
}

impl FusedGroupNorm {
    /// Normalise one group: `x` and `out` hold its channels, `spatial` values each, starting at channel `c0`.
    fn group(&self, x: &[f32], out: &mut [f32], c0: usize, spatial: usize) {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x
            .iter()
            .map(|&v| {
                let d = v as f64 - mean;
                d * d
            })
            .sum::<f64>()
            / n;
        let inv_std = 1.0 / (var + self.eps).sqrt();
        for (c, (xc, oc)) in x.chunks(spatial).zip(out.chunks_mut(spatial)).enumerate() {
            // y = (x - mean) * inv_std * w + b = x * scale + shift
            let scale = inv_std * self.weight[c0 + c] as f64;
            let shift = self.bias[c0 + c] as f64 - mean * scale;
            let (scale, shift) = (scale as f32, shift as f32);
            if self.silu {
                for (o, &v) in oc.iter_mut().zip(xc) {
                    let y = v * scale + shift;
                    *o = y / (1.0 + (-y).exp());
                }
            } else {
                for (o, &v) in oc.iter_mut().zip(xc) {
                    *o = v * scale + shift;
                }
            }
        }
    }
}

impl CustomOp1 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "fused-group-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.dims();
        let (Some(&channels), Some((start, end))) = (dims.get(1), layout.contiguous_offsets())
        else {
            candle_core::bail!(
                "group norm: expected a contiguous [B, C, ...] tensor, got {dims:?}"
            );
        };
        if self.groups == 0 || channels % self.groups != 0 || channels != self.weight.len() {
            candle_core::bail!(
                "group norm: {} groups, {} weights, input has {channels} channels",
                self.groups,
                self.weight.len()
            );
        }
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("group norm: float32 input expected");
        };
        let x = &data[start..end];
        let spatial: usize = dims[2..].iter().product();
        let group_len = channels / self.groups * spatial;
        let mut out = vec![0f32; x.len()];
        // Empty inputs (no groups) have nothing to normalise.
        if let Some(n_groups) = x.len().checked_div(group_len).filter(|&n| n > 0) {
            let per_group = channels / self.groups;
            crate::parallel::parallel_chunks(&mut out, n_groups, |g, og| {
                let xg = &x[g * group_len..(g + 1) * group_len];
                self.group(xg, og, g % self.groups * per_group, spatial);
            });
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}
