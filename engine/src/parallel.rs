//! Splitting CPU loops over the cores candle uses (its thread count), for the hand-written
//! kernels of inference and training.

use std::cell::Cell;
use std::ops::Range;

thread_local! {
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with this thread's kernels single-threaded: for work that is already split across
/// the cores at a coarser grain (a training batch split into one shard per core).
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    let before = SERIAL.with(|s| s.replace(true));
    let result = f();
    SERIAL.with(|s| s.set(before));
    result
}

/// The threads a kernel on this thread may use: candle's thread count, or 1 inside `serial`.
pub fn threads() -> usize {
    if SERIAL.with(|s| s.get()) {
        1
    } else {
        candle_core::utils::get_num_threads()
    }
}

/// Run `work(range)` over `0..n`, split into one contiguous range per thread.
pub fn parallel_for(n: usize, work: impl Fn(Range<usize>) + Sync) {
    let threads = threads().min(n.max(1));
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
    let threads = threads().min(n);
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
