//! The engine's own CUDA kernels (`kernels.cu`, compiled to PTX by `engine/build.rs` with nvcc)
//! and their launchers: group norm with SiLU, and a fused attention for half precision.
//!
//! They are off unless `DIFFSCOPE_CUDA_KERNELS=1` is set: they compile and their CPU-side
//! arithmetic is tested, but they have not yet run on a GPU (no GPU was at hand when they were
//! written). Until `bench/gpu/check.py` has shown them equal to diffusers there, the GPU runs
//! candle's operations (checked on an H200 to match diffusers to 2e-6), which these replace.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    sys::CUfunction_attribute_enum, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, CustomOp3, DType, Layout, Shape, Tensor};

use crate::error::Result;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/diffscope_kernels.ptx"));
const MODULE: &str = "diffscope_kernels";

/// The part of a storage a contiguous layout covers.
fn contiguous<'a, T>(
    slice: &'a CudaSlice<T>,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => candle_core::bail!("{what}: the CUDA kernel needs a contiguous input"),
    }
}

fn suffix(dtype: DType) -> candle_core::Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => candle_core::bail!("no CUDA kernel for {other:?}"),
    })
}

// ---------------------------------------------------------------------------------------------
// Group norm

/// `GroupNorm(groups, eps)` of `x` `[B, C, ...]` with a per-channel affine, then SiLU when
/// `silu`, in x's dtype (statistics in float32).
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    let (weight, bias) = (weight.to_dtype(dtype)?, bias.to_dtype(dtype)?);
    x.contiguous()?.apply_op3_no_bwd(
        &weight.contiguous()?,
        &bias.contiguous()?,
        &GroupNormKernel { groups, eps, silu },
    )
}

struct GroupNormKernel {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl GroupNormKernel {
    #[allow(clippy::too_many_arguments)]
    fn launch<T: DeviceRepr>(
        &self,
        dev: &CudaDevice,
        sfx: &str,
        x: &CudaSlice<T>,
        xl: &Layout,
        w: &CudaSlice<T>,
        wl: &Layout,
        b: &CudaSlice<T>,
        bl: &Layout,
    ) -> candle_core::Result<CudaSlice<T>> {
        let (x, w, b) = (
            contiguous(x, xl, "group norm")?,
            contiguous(w, wl, "group norm")?,
            contiguous(b, bl, "group norm")?,
        );
        let dims = xl.dims();
        let (batch, channels) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        if channels % self.groups != 0 || wl.shape().elem_count() != channels {
            candle_core::bail!("group norm: {} groups, {channels} channels", self.groups);
        }
        let total = xl.shape().elem_count();
        let groups_total = batch * self.groups;
        let n = channels / self.groups * spatial;
        // Enough blocks to fill the GPU when there are few groups (the VAE at batch 1).
        let chunks = (512 / groups_total.max(1)).clamp(1, n.div_ceil(4096).max(1));
        let partial = dev.alloc_zeros::<f32>(groups_total * chunks * 3)?;
        let stats = dev.alloc_zeros::<f32>(groups_total * 2)?;
        // SAFETY: every element is written by gn_apply below.
        let y = unsafe { dev.alloc::<T>(total)? };

        let stats_fn = dev.get_or_load_custom_func(&format!("gn_stats_{sfx}"), MODULE, PTX)?;
        let mut args = stats_fn.builder();
        let (n_arg, chunks_arg) = (n as i64, chunks as i32);
        args.arg(&x).arg(&partial).arg(&n_arg).arg(&chunks_arg);
        let cfg = LaunchConfig {
            grid_dim: (chunks as u32, groups_total as u32, 1),
            block_dim: (512, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match gn_stats's signature; `partial` holds chunks x groups x 3.
        unsafe { args.launch(cfg) }.w()?;

        let finalize = dev.get_or_load_custom_func("gn_finalize", MODULE, PTX)?;
        let mut args = finalize.builder();
        let (groups_arg, eps_arg) = (groups_total as i32, self.eps as f32);
        args.arg(&partial)
            .arg(&stats)
            .arg(&groups_arg)
            .arg(&chunks_arg)
            .arg(&eps_arg);
        let cfg = LaunchConfig {
            grid_dim: (groups_total.div_ceil(128) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as above; one thread per group.
        unsafe { args.launch(cfg) }.w()?;

        let apply = dev.get_or_load_custom_func(&format!("gn_apply_{sfx}"), MODULE, PTX)?;
        let mut args = apply.builder();
        let (total_arg, channels_arg, spatial_arg, per_arg, silu_arg) = (
            total as i64,
            channels as i32,
            spatial as i64,
            self.groups as i32,
            self.silu as i32,
        );
        args.arg(&x)
            .arg(&y)
            .arg(&stats)
            .arg(&w)
            .arg(&b)
            .arg(&total_arg)
            .arg(&channels_arg)
            .arg(&spatial_arg)
            .arg(&per_arg)
            .arg(&silu_arg);
        let cfg = LaunchConfig {
            grid_dim: (total.div_ceil(256).min(65_535 * 8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as above; a grid-stride loop covers `total` elements.
        unsafe { args.launch(cfg) }.w()?;
        Ok(y)
    }
}

impl CustomOp3 for GroupNormKernel {
    fn name(&self) -> &'static str {
        "group-norm-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("group-norm-cuda runs on CUDA tensors only")
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = xs.device().clone();
        let sfx = suffix(xs.dtype())?;
        let slice = match (&xs.slice, &ws.slice, &bs.slice) {
            (CudaStorageSlice::F32(x), CudaStorageSlice::F32(w), CudaStorageSlice::F32(b)) => {
                CudaStorageSlice::F32(self.launch(&dev, sfx, x, xl, w, wl, b, bl)?)
            }
            (CudaStorageSlice::F16(x), CudaStorageSlice::F16(w), CudaStorageSlice::F16(b)) => {
                CudaStorageSlice::F16(self.launch(&dev, sfx, x, xl, w, wl, b, bl)?)
            }
            (CudaStorageSlice::BF16(x), CudaStorageSlice::BF16(w), CudaStorageSlice::BF16(b)) => {
                CudaStorageSlice::BF16(self.launch(&dev, sfx, x, xl, w, wl, b, bl)?)
            }
            _ => candle_core::bail!("group norm: input, weight and bias of one float dtype"),
        };
        Ok((CudaStorage { slice, device: dev }, xl.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Fused attention

/// Head sizes the fused kernel is compiled for: a head of size d uses the smallest one >= d
/// (the padding is zero).
const FLASH_HEAD_SIZES: [usize; 7] = [32, 48, 64, 80, 96, 128, 160];
const FLASH_QUERIES: usize = 64;
const FLASH_KEYS: usize = 64;
const FLASH_WARPS: usize = FLASH_QUERIES / 16;

/// Shared memory of one block, as `FaLayout<D>::TOTAL` in kernels.cu computes it.
fn flash_shared_bytes(d: usize) -> usize {
    let half_tile = FLASH_QUERIES * (d + 8) * 2;
    let kv_tile = FLASH_KEYS * (d + 8) * 2;
    let scores = FLASH_WARPS * 16 * (FLASH_KEYS + 4) * 4;
    let probs = FLASH_WARPS * 16 * (FLASH_KEYS + 8) * 2;
    let out = FLASH_WARPS * 16 * (d + 4) * 4;
    let rows = FLASH_WARPS * 16 * 3 * 4;
    half_tile + 2 * kv_tile + scores + probs + out + rows
}

/// Whether the engine's own CUDA kernels are used (`DIFFSCOPE_CUDA_KERNELS=1`; see the module
/// documentation for why they are off by default).
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        matches!(
            std::env::var("DIFFSCOPE_CUDA_KERNELS").as_deref(),
            Ok("1" | "on" | "true" | "yes")
        )
    })
}

/// `softmax(q kᵀ · scale) v` by the fused kernel, for `q` `[B, N, heads*d]` and `k`, `v`
/// `[B or 1, M, heads*d]` in f16 or bf16 on a CUDA device; None where the kernel does not apply
/// (another dtype or device, a head larger than 160, or the kernels not [`enabled`]).
pub fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Option<Tensor>> {
    let d = q.dim(2)? / heads;
    let padded = FLASH_HEAD_SIZES.iter().copied().find(|&p| p >= d);
    let half = matches!(q.dtype(), DType::F16 | DType::BF16);
    let (Some(padded), true, true, true) = (padded, half, q.device().is_cuda(), enabled()) else {
        return Ok(None);
    };
    let op = FlashAttention {
        heads,
        head_dim: d,
        padded,
        scale: scale as f32,
    };
    Ok(Some(q.contiguous()?.apply_op3_no_bwd(
        &k.contiguous()?,
        &v.contiguous()?,
        &op,
    )?))
}

struct FlashAttention {
    heads: usize,
    head_dim: usize,
    padded: usize,
    scale: f32,
}

impl FlashAttention {
    #[allow(clippy::too_many_arguments)]
    fn launch<T: DeviceRepr>(
        &self,
        dev: &CudaDevice,
        sfx: &str,
        q: &CudaSlice<T>,
        ql: &Layout,
        k: &CudaSlice<T>,
        kl: &Layout,
        v: &CudaSlice<T>,
        vl: &Layout,
    ) -> candle_core::Result<CudaSlice<T>> {
        let (q, k, v) = (
            contiguous(q, ql, "attention q")?,
            contiguous(k, kl, "attention k")?,
            contiguous(v, vl, "attention v")?,
        );
        let (b, n, c) = ql.shape().dims3()?;
        let (kb, m, _) = kl.shape().dims3()?;
        let total = b * n * c;
        // SAFETY: every output element (each query's row of each head) is written by the kernel.
        let out = unsafe { dev.alloc::<T>(total)? };
        let name = format!("flash_attention_{sfx}_d{}", self.padded);
        let func = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
        let shared = flash_shared_bytes(self.padded);
        func.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            shared as i32,
        )
        .w()?;
        let mut args = func.builder();
        let (n_q, n_k, heads, d) = (n as i32, m as i32, self.heads as i32, self.head_dim as i32);
        let q_batch = (n * c) as i64;
        let kv_batch = if kb == 1 && b > 1 { 0 } else { (m * c) as i64 };
        let row = c as i64;
        args.arg(&q)
            .arg(&k)
            .arg(&v)
            .arg(&out)
            .arg(&n_q)
            .arg(&n_k)
            .arg(&heads)
            .arg(&d)
            .arg(&q_batch)
            .arg(&row)
            .arg(&kv_batch)
            .arg(&row)
            .arg(&q_batch)
            .arg(&row)
            .arg(&self.scale);
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(FLASH_QUERIES) as u32, (b * self.heads) as u32, 1),
            block_dim: ((FLASH_WARPS * 32) as u32, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        // SAFETY: the arguments match the kernel's signature; q, k, v, out cover the shapes and
        // strides passed.
        unsafe { args.launch(cfg) }.w()?;
        Ok(out)
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "flash-attention-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("flash-attention-cuda runs on CUDA tensors only")
    }

    fn cuda_fwd(
        &self,
        qs: &CudaStorage,
        ql: &Layout,
        ks: &CudaStorage,
        kl: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = qs.device().clone();
        let sfx = suffix(qs.dtype())?;
        let slice = match (&qs.slice, &ks.slice, &vs.slice) {
            (CudaStorageSlice::F16(q), CudaStorageSlice::F16(k), CudaStorageSlice::F16(v)) => {
                CudaStorageSlice::F16(self.launch(&dev, sfx, q, ql, k, kl, v, vl)?)
            }
            (CudaStorageSlice::BF16(q), CudaStorageSlice::BF16(k), CudaStorageSlice::BF16(v)) => {
                CudaStorageSlice::BF16(self.launch(&dev, sfx, q, ql, k, kl, v, vl)?)
            }
            _ => candle_core::bail!("fused attention: q, k, v in f16 or bf16"),
        };
        Ok((CudaStorage { slice, device: dev }, ql.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher's shared-memory sum for the head sizes SD uses (checked against ptxas'
    /// layout by the GPU parity run; here its arithmetic).
    #[test]
    fn shared_memory_fits_a_hopper_or_ampere_block() {
        assert_eq!(
            flash_shared_bytes(64),
            64 * 72 * 2 * 3 + 17_408 + 9_216 + 64 * 68 * 4 + 768
        );
        for d in FLASH_HEAD_SIZES {
            assert!(flash_shared_bytes(d) <= 163 * 1024, "d={d}");
        }
    }
}
