//! Splitting CPU loops over the cores candle uses (its thread count), for the hand-written
//! kernels of inference and training.

use std::ops::Range;

/// Run `work(range)` over `0..n`, split into one contiguous range per thread.
pub fn parallel_for(n: usize, work: impl Fn(Range<usize>) + Sync) {
    let threads = candle_core::utils::get_num_threads().min(n.max(1));
    if threads <= 1 {
        work(0..n);
        return;
    }
    let per = n.div_ceil(threads);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let range = (t * per)..((t + 1) * per).min(n);
            let work = &work;
            scope.spawn(move || work(range));
        }
    });
}

/// Split `out` into `n` equal chunks and fill each with `fill(index, chunk)` in parallel.
pub fn parallel_chunks(out: &mut [f32], n: usize, fill: impl Fn(usize, &mut [f32]) + Sync) {
    if n == 0 || out.is_empty() {
        return;
    }
    let len = out.len() / n;
    let threads = candle_core::utils::get_num_threads().min(n);
    if threads <= 1 {
        for (i, chunk) in out.chunks_mut(len).enumerate() {
            fill(i, chunk);
        }
        return;
    }
    let per = n.div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, block) in out.chunks_mut(per * len).enumerate() {
            let fill = &fill;
            scope.spawn(move || {
                for (j, chunk) in block.chunks_mut(len).enumerate() {
                    fill(t * per + j, chunk);
                }
            });
        }
    });
}

/// A raw pointer that parallel workers write disjoint ranges through.
#[derive(Clone, Copy)]
pub struct SharedSlice(pub *mut f32);
// SAFETY: only used for disjoint writes inside `parallel_for`, which joins before the Vec is read.
unsafe impl Send for SharedSlice {}
unsafe impl Sync for SharedSlice {}

impl SharedSlice {
    pub fn at(&self, i: usize) -> *mut f32 {
        // SAFETY (of callers): `i` is inside the Vec this pointer came from.
        self.0.wrapping_add(i)
    }
}
