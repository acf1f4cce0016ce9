//! What the hand-written CPU kernels share: borrowing a tensor's float32 values, one gemm call
//! with named operand layouts, and sums that vectorise.

use candle_core::{CpuStorage, Layout, Tensor};

pub fn candle_err(message: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(message.to_string())
}

/// The contiguous float32 values of a CPU storage seen through `layout`.
pub fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_err("CPU kernel: input is not contiguous"))?;
    Ok(&s.as_slice::<f32>()?[start..end])
}

/// The float32 values of a CPU tensor in row-major order: borrowed from its storage when it is
/// contiguous (the usual case for activations and gradients), else copied.
pub enum F32Values<'a> {
    Borrowed(candle_core::StorageRef<'a>, std::ops::Range<usize>),
    Owned(Vec<f32>),
}

impl std::ops::Deref for F32Values<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            F32Values::Borrowed(storage, range) => match &**storage {
                candle_core::Storage::Cpu(CpuStorage::F32(v)) => &v[range.clone()],
                // `values` only borrows float32 CPU storage.
                _ => &[],
            },
            F32Values::Owned(v) => v,
        }
    }
}

pub fn values(t: &Tensor) -> candle_core::Result<F32Values<'_>> {
    let (storage, layout) = t.storage_and_layout();
    let borrowable = matches!(&*storage, candle_core::Storage::Cpu(CpuStorage::F32(_)));
    match layout.contiguous_offsets() {
        Some((start, end)) if borrowable => Ok(F32Values::Borrowed(storage, start..end)),
        _ => {
            drop(storage);
            Ok(F32Values::Owned(t.flatten_all()?.to_vec1::<f32>()?))
        }
    }
}

fn gemm_parallelism() -> gemm::Parallelism {
    match crate::parallel::threads() {
        0 | 1 => gemm::Parallelism::None,
        threads => gemm::Parallelism::Rayon(threads),
    }
}

/// A gemm operand: where the matrix starts and how it is laid out.
#[derive(Clone, Copy)]
pub struct Operand<P> {
    ptr: P,
    col_stride: isize,
    row_stride: isize,
}

impl<P> Operand<P> {
    /// Element (i, j) at `ptr[i + j * ld]`.
    pub fn column_major(ptr: P, ld: usize) -> Self {
        Self {
            ptr,
            col_stride: ld as isize,
            row_stride: 1,
        }
    }

    /// Element (i, j) at `ptr[i * ld + j]`.
    pub fn row_major(ptr: P, ld: usize) -> Self {
        Self {
            ptr,
            col_stride: 1,
            row_stride: ld as isize,
        }
    }
}

/// `dst [m, n] = lhs [m, k] · rhs [k, n]`, or `dst +=` it when `accumulate`.
///
/// # Safety
/// Each operand must cover its matrix at its strides, and `dst` must overlap neither input.
pub unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: Operand<*mut f32>,
    accumulate: bool,
    lhs: Operand<*const f32>,
    rhs: Operand<*const f32>,
) {
    // SAFETY: the caller's contract; alpha (1) only scales dst when it is read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride,
            dst.row_stride,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm_parallelism(),
        )
    }
}

/// Sum of `v`, in 16 f32 lanes (they vectorize) totalled in f64.
pub fn lane_sum(v: &[f32]) -> f64 {
    lane_sums(v, v, |a, _| (a, 0.0)).0
}

/// The two sums `Σ f(a_j, b_j)` over equal-length slices, in 16 f32 lanes each (they
/// vectorize) totalled in f64.
pub fn lane_sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f64, f64) {
    const LANES: usize = 16;
    let (mut first, mut second) = ([0f32; LANES], [0f32; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            let (u, v) = f(xa[l], xb[l]);
            first[l] += u;
            second[l] += v;
        }
    }
    let mut total = (
        first.iter().map(|&v| v as f64).sum::<f64>(),
        second.iter().map(|&v| v as f64).sum::<f64>(),
    );
    for (&xa, &xb) in ra.iter().zip(rb) {
        let (u, v) = f(xa, xb);
        total.0 += u as f64;
        total.1 += v as f64;
    }
    total
}

/// Run a float32 CPU kernel on a half-precision tensor as PyTorch's CPU kernels do: widen to
/// float32, compute, round the result back once.
pub fn in_f32(
    x: &Tensor,
    kernel: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    if dtype == candle_core::DType::F32 {
        return kernel(x);
    }
    kernel(&x.to_dtype(candle_core::DType::F32)?)?.to_dtype(dtype)
}
