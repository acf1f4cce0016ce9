//! Position embeddings at another patch grid, exactly as transformers resizes them: PyTorch's
//! `F.interpolate(mode="bicubic", align_corners=False)` (Keys' cubic with A = -0.75, edges
//! clamped) for `Dinov2Model`, and with `antialias=True` (Pillow's cubic with a = -0.5, widened
//! when shrinking, weights normalised) for `Dinov2WithRegistersModel`. Computed in float64 from
//! float32 inputs, as PyTorch's CPU kernels accumulate.

/// For each output index along one axis: the input indices it reads and their weights.
type AxisTaps = Vec<Vec<(usize, f64)>>;

fn keys_cubic(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

fn plain_axis(from: usize, to: usize) -> AxisTaps {
    let scale = from as f64 / to as f64;
    (0..to)
        .map(|i| {
            let source = scale * (i as f64 + 0.5) - 0.5;
            let first = source.floor();
            let weights = keys_cubic(source - first);
            (0..4)
                .map(|k| {
                    let index = (first as i64 - 1 + k as i64).clamp(0, from as i64 - 1);
                    (index as usize, weights[k])
                })
                .collect()
        })
        .collect()
}

fn pillow_cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn antialiased_axis(from: usize, to: usize) -> AxisTaps {
    let scale = from as f64 / to as f64;
    let (support, inverse) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    (0..to)
        .map(|i| {
            let centre = scale * (i as f64 + 0.5);
            // C++ truncation toward zero, as PyTorch computes the window.
            let lo = ((centre - support + 0.5) as i64).max(0) as usize;
            let hi = ((centre + support + 0.5) as i64).min(from as i64) as usize;
            let weights: Vec<(usize, f64)> = (lo..hi)
                .map(|j| (j, pillow_cubic((j as f64 - centre + 0.5) * inverse)))
                .collect();
            let total: f64 = weights.iter().map(|(_, w)| w).sum();
            weights
                .into_iter()
                .map(|(j, w)| (j, if total != 0.0 { w / total } else { w }))
                .collect()
        })
        .collect()
}

/// Resize a `[channels, from.0, from.1]` (rows, columns) float32 grid to `to`.
pub fn resize_bicubic(
    values: &[f32],
    channels: usize,
    from: (usize, usize),
    to: (usize, usize),
    antialias: bool,
) -> Vec<f32> {
    let axis = if antialias {
        antialiased_axis
    } else {
        plain_axis
    };
    let (rows, cols) = (axis(from.0, to.0), axis(from.1, to.1));
    let mut out = Vec::with_capacity(channels * to.0 * to.1);
    for channel in values.chunks_exact(from.0 * from.1).take(channels) {
        for row in &rows {
            for col in &cols {
                let mut sum = 0f64;
                for &(y, wy) in row {
                    for &(x, wx) in col {
                        sum += wy * wx * f64::from(channel[y * from.1 + x]);
                    }
                }
                out.push(sum as f32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity_and_constants_stay_constant() {
        let grid: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(resize_bicubic(&grid, 1, (4, 4), (4, 4), false), grid);
        for antialias in [false, true] {
            let out = resize_bicubic(&[2.5; 16], 1, (4, 4), (3, 7), antialias);
            assert!(out.iter().all(|v| (v - 2.5).abs() < 1e-6), "{out:?}");
        }
    }

    /// torch.nn.functional.interpolate(torch.arange(4.).view(1, 1, 1, 4), size=(1, 3),
    /// mode="bicubic", align_corners=False) -> [0.1261573, 1.5, 2.8738430]; with antialias=True
    /// -> [0.1899313, 1.5, 2.8100688].
    #[test]
    fn matches_pytorch_on_a_shrinking_ramp() {
        let ramp = [0.0, 1.0, 2.0, 3.0];
        let plain = resize_bicubic(&ramp, 1, (1, 4), (1, 3), false);
        let aa = resize_bicubic(&ramp, 1, (1, 4), (1, 3), true);
        for (a, b) in plain.iter().zip([0.126_157_3, 1.5, 2.873_843]) {
            assert!((a - b).abs() < 1e-5, "{plain:?}");
        }
        for (a, b) in aa.iter().zip([0.189_931_3, 1.5, 2.810_068_8]) {
            assert!((a - b).abs() < 1e-5, "{aa:?}");
        }
    }
}
