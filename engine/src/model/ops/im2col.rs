//! im2col and its adjoint for square-kernel 2-D convolutions on the CPU. A convolution becomes
//! one matrix product: the weight `[Co, Ci*k*k]` (PyTorch's layout, flattened) times the patch
//! matrix `[Ci*k*k, pixels]`. Inference builds it for a band of output rows at a time (bounded
//! memory); training one image at a time, and sums gradients back with [`ConvGeometry::col2im_add`].

use std::ops::Range;

use crate::parallel::{parallel_chunks, parallel_for, SharedSlice};

/// A `kernel x kernel` convolution with `stride` and symmetric zero `padding` over `[B,C,H,W]`.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeometry {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    /// Whether the kernel fits the padded input at all.
    pub fn is_valid(&self) -> bool {
        self.kernel > 0
            && self.stride > 0
            && self.height + 2 * self.padding >= self.kernel
            && self.width + 2 * self.padding >= self.kernel
    }

    /// Output (height, width).
    pub fn out_size(&self) -> (usize, usize) {
        let out = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        (out(self.height), out(self.width))
    }

    /// Rows of the patch matrix: `channels * kernel * kernel`.
    pub fn patch_len(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// The outputs `o` whose input index `o*s + offset - p` lies inside `0..size`.
    fn valid_outputs(&self, offset: usize, size: usize, out: usize) -> Range<usize> {
        // o*s + offset - p in [0, size): o >= ceil((p - offset)/s), o*s < size + p - offset.
        let lo = self.padding.saturating_sub(offset).div_ceil(self.stride);
        let hi = (size + self.padding)
            .saturating_sub(offset)
            .div_ceil(self.stride)
            .min(out);
        lo..hi.max(lo)
    }

    /// Fill `cols` (`[Ci*k*k, B*rows*Ow]`, `rows` a range of output rows) from the contiguous input
    /// `xs`: row (c, ky, kx) holds input channel c shifted by (ky, kx) at every output position in
    /// the band of every image. `cols` must come zeroed: positions that fall outside the image
    /// are left as they are.
    pub fn im2col_rows(&self, xs: &[f32], rows: Range<usize>, cols: &mut [f32]) {
        let (oh, ow) = self.out_size();
        let k = self.kernel;
        let (h, w, s, p) = (self.height, self.width, self.stride, self.padding);
        let band = rows.end.min(oh).saturating_sub(rows.start);
        let n = self.batch * band * ow;
        debug_assert_eq!(cols.len(), self.patch_len() * n);
        parallel_chunks(cols, self.patch_len(), |row, dst| {
            let (c, ky, kx) = (row / (k * k), (row / k) % k, row % k);
            let xs_range = self.valid_outputs(kx, w, ow);
            let ys = self.valid_outputs(ky, h, oh);
            let ys_range = ys.start.max(rows.start)..ys.end.min(rows.end).max(rows.start);
            for b in 0..self.batch {
                let plane = &xs[(b * self.channels + c) * h * w..][..h * w];
                for oy in ys_range.clone() {
                    let iy = oy * s + ky - p;
                    let src = &plane[iy * w..(iy + 1) * w];
                    let out = &mut dst[(b * band + oy - rows.start) * ow..][..ow];
                    let (lo, hi) = (xs_range.start, xs_range.end);
                    if s == 1 {
                        if lo < hi {
                            out[lo..hi].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
                        }
                    } else {
                        for ox in lo..hi {
                            out[ox] = src[ox * s + kx - p];
                        }
                    }
                }
            }
        });
    }

    /// The same convolution over one image of the batch.
    pub fn one_image(&self) -> ConvGeometry {
        ConvGeometry { batch: 1, ..*self }
    }

    /// Values of one input image, `C*H*W`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// `[Ci*k*k, B*Oh*Ow]` for the whole output.
    #[cfg(test)]
    fn im2col(&self, xs: &[f32]) -> Vec<f32> {
        let (oh, ow) = self.out_size();
        let mut cols = vec![0f32; self.patch_len() * self.batch * oh * ow];
        self.im2col_rows(xs, 0..oh, &mut cols);
        cols
    }

    /// The adjoint of [`Self::im2col_rows`] over all rows: sum each column entry back into the
    /// input position it came from, adding to `out` (`[B,C,H,W]` values).
    pub fn col2im_add(&self, cs: &[f32], out: &mut [f32]) {
        let (oh, ow) = self.out_size();
        let k = self.kernel;
        let (h, w, s, p) = (self.height, self.width, self.stride, self.padding);
        let n = self.batch * oh * ow;
        debug_assert_eq!(out.len(), self.batch * self.image_len());
        let out_ptr = SharedSlice(out.as_mut_ptr());
        parallel_for(self.channels, |channels| {
            for c in channels {
                for ky in 0..k {
                    let ys_range = self.valid_outputs(ky, h, oh);
                    for kx in 0..k {
                        let xs_range = self.valid_outputs(kx, w, ow);
                        let row = &cs[((c * k + ky) * k + kx) * n..][..n];
                        for b in 0..self.batch {
                            let plane = ((b * self.channels + c) * h) * w;
                            for oy in ys_range.clone() {
                                let iy = oy * s + ky - p;
                                let src = &row[(b * oh + oy) * ow..][..ow];
                                let (lo, hi) = (xs_range.start, xs_range.end);
                                if s == 1 && lo < hi {
                                    // SAFETY: channel c's planes are written only by this
                                    // worker; columns lo+kx-p..hi+kx-p lie inside row iy.
                                    let dst = unsafe {
                                        std::slice::from_raw_parts_mut(
                                            out_ptr.at(plane + iy * w + lo + kx - p),
                                            hi - lo,
                                        )
                                    };
                                    for (d, v) in dst.iter_mut().zip(&src[lo..hi]) {
                                        *d += v;
                                    }
                                    continue;
                                }
                                for ox in xs_range.clone() {
                                    let ix = ox * s + kx - p;
                                    // SAFETY: channel c's planes are written only by this worker.
                                    unsafe { *out_ptr.at(plane + iy * w + ix) += src[ox] };
                                }
                            }
                        }
                    }
                }
            }
        });
    }

    /// [`Self::col2im_add`] into zeros.
    #[cfg(test)]
    fn col2im(&self, cs: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.batch * self.image_len()];
        self.col2im_add(cs, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution sums, the definition.
    fn direct(g: &ConvGeometry, xs: &[f32], weight: &[f32], c_out: usize) -> Vec<f32> {
        let (oh, ow) = g.out_size();
        let k = g.kernel;
        let mut out = vec![0f32; g.batch * c_out * oh * ow];
        for b in 0..g.batch {
            for o in 0..c_out {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0f32;
                        for c in 0..g.channels {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= g.height as isize
                                        || ix >= g.width as isize
                                    {
                                        continue;
                                    }
                                    let x = xs[((b * g.channels + c) * g.height + iy as usize)
                                        * g.width
                                        + ix as usize];
                                    acc += x * weight[((o * g.channels + c) * k + ky) * k + kx];
                                }
                            }
                        }
                        out[((b * c_out + o) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn banded_patches_times_weights_are_the_convolution() {
        let values = |n: usize, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0
                })
                .collect()
        };
        for (stride, padding, kernel, h, w) in [
            (1, 1, 3, 7, 5),
            (2, 1, 3, 8, 9),
            (2, 0, 3, 9, 8),
            (1, 0, 1, 4, 3),
        ] {
            let g = ConvGeometry {
                batch: 2,
                channels: 3,
                height: h,
                width: w,
                kernel,
                stride,
                padding,
            };
            let c_out = 4;
            let xs = values(g.batch * g.channels * h * w, 7);
            let weight = values(c_out * g.patch_len(), 11);
            let expected = direct(&g, &xs, &weight, c_out);
            let (oh, ow) = g.out_size();
            // Bands of two output rows, products written per band.
            let mut got = vec![0f32; expected.len()];
            let mut start = 0;
            while start < oh {
                let end = (start + 2).min(oh);
                let n = g.batch * (end - start) * ow;
                let mut cols = vec![0f32; g.patch_len() * n];
                g.im2col_rows(&xs, start..end, &mut cols);
                for b in 0..g.batch {
                    for o in 0..c_out {
                        for r in 0..end - start {
                            for ox in 0..ow {
                                let col = (b * (end - start) + r) * ow + ox;
                                let v: f32 = (0..g.patch_len())
                                    .map(|i| weight[o * g.patch_len() + i] * cols[i * n + col])
                                    .sum();
                                got[((b * c_out + o) * oh + start + r) * ow + ox] = v;
                            }
                        }
                    }
                }
                start = end;
            }
            for (a, e) in got.iter().zip(&expected) {
                assert!(
                    (a - e).abs() < 1e-4,
                    "stride {stride} padding {padding}: {a} vs {e}"
                );
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> == <x, col2im(y)> for any x, y.
        let g = ConvGeometry {
            batch: 2,
            channels: 2,
            height: 5,
            width: 6,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        let xs: Vec<f32> = (0..2 * 2 * 5 * 6).map(|i| (i % 7) as f32 - 3.0).collect();
        let cols = g.im2col(&xs);
        let ys: Vec<f32> = (0..cols.len()).map(|i| (i % 5) as f32 - 2.0).collect();
        let lhs: f32 = cols.iter().zip(&ys).map(|(a, b)| a * b).sum();
        let back = g.col2im(&ys);
        let rhs: f32 = xs.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs}");
    }
}
