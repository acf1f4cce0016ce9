//! Helpers of the engine's unit tests.

use candle_core::Tensor;

/// The largest absolute elementwise difference of two tensors of one shape (in float32).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32);
    f32(a)
        .and_then(|a| f32(b).and_then(|b| a - b))
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of one shape and dtype")
}
