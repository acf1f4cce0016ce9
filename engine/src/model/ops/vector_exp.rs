//! e^x written so that loops over it vectorise (a call to libm's `expf` does not): Cephes' `expf`
//! scheme, exp(x) = 2^n * exp(r) with |r| <= ln 2 / 2 and a degree-6 polynomial for exp(r),
//! within 2 ulp of the exact value. Used by the attention softmax and the training ops' sigmoid.

/// e^x; 0 below -87 (under the smallest normal result), e^88 above 88.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a rounding instruction.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.0, 88.0);
    let rounded = clamped * LOG2E + ROUND;
    let n = rounded - ROUND;
    // n sits in the low bits of `rounded`: read it there rather than by a float-to-int cast,
    // whose saturating semantics keep the loop from vectorising. After the clamp it is in
    // -126..=127, a normal exponent.
    let n_int = rounded.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = (p * r2 + r) + 1.0;
    let scale = f32::from_bits((n_int.wrapping_add(127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        e * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worst relative error against f64's exp over `from..=to`.
    fn worst_relative_error(from: f32, to: f32, samples: usize) -> f64 {
        (0..=samples)
            .map(|i| from + (to - from) * i as f32 / samples as f32)
            .map(|x| {
                let exact = (x as f64).exp();
                ((exp(x) as f64 - exact) / exact).abs()
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn within_two_ulp_where_softmax_uses_it() {
        let worst = worst_relative_error(-87.0, 0.0, 67_000);
        // 2 ulp of float32 at worst is 2^-22 relative.
        assert!(
            worst < 2.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
    }

    #[test]
    fn matches_libm_over_the_whole_range() {
        let worst = worst_relative_error(-87.0, 88.0, 200_000);
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!(exp(-1000.0) < 1e-37 && exp(1000.0) > 1e38);
    }
}
