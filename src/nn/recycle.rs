//! Reuse of the big per-step arrays.
//!
//! A training step makes and drops the same large activations and gradients every time
//! (a conv layer's output at 64 px and batch 32 is 8 MB). Memory the allocator hands back to
//! the system must be faulted in and zeroed by the kernel again on the next step, which
//! measured about a quarter of a CNN step here. So layers take their large outputs from this
//! pool ([`zeros`]), and a [`Pass`](super::Pass) and the backward pass give them back
//! ([`give`]) when done. Small arrays bypass the pool, and it holds a bounded amount: what it
//! cannot keep is freed as usual. It changes no value, only where the memory comes from:
//! [`scratch`] arrays hold stale values until written, and are only used for outputs that are
//! written in full.

use ndarray::Array2;
use std::cell::RefCell;
use std::sync::Mutex;

/// Arrays smaller than this many values are allocated as usual.
const MIN_POOLED: usize = 1 << 16;
/// The most values the pool keeps (1 GiB of f32).
const MAX_KEPT: usize = 1 << 28;

/// Spare buffers, and the values they can hold in all.
static POOL: Mutex<(Vec<Vec<f32>>, usize)> = Mutex::new((Vec::new(), 0));

/// A zero-filled standard-layout array, in a recycled buffer when one is big enough.
pub fn zeros(shape: (usize, usize)) -> Array2<f32> {
    let len = shape.0 * shape.1;
    let Some(mut buf) = take(len) else {
        return Array2::zeros(shape);
    };
    buf.clear();
    buf.resize(len, 0.0);
    Array2::from_shape_vec(shape, buf).unwrap_or_else(|_| Array2::zeros(shape))
}

/// A standard-layout array whose values are unspecified (left from an earlier use, or zero):
/// for outputs the caller writes in full, so no pass is spent zeroing them first.
pub fn scratch(shape: (usize, usize)) -> Array2<f32> {
    let len = shape.0 * shape.1;
    let Some(mut buf) = take(len) else {
        return Array2::zeros(shape);
    };
    buf.resize(len, 0.0);
    buf.truncate(len);
    Array2::from_shape_vec(shape, buf).unwrap_or_else(|_| Array2::zeros(shape))
}

/// The smallest spare buffer that holds `len` values, if any.
fn take(len: usize) -> Option<Vec<f32>> {
    if len < MIN_POOLED {
        return None;
    }
    let mut pool = POOL.lock().ok()?;
    let (buffers, kept) = &mut *pool;
    let best = buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i)?;
    let buf = buffers.swap_remove(best);
    *kept -= buf.capacity();
    Some(buf)
}

/// Hands an array's memory back to the pool (or frees it, when it is small or the pool full).
pub fn give(a: Array2<f32>) {
    let (buf, _) = a.into_raw_vec_and_offset();
    if buf.capacity() < MIN_POOLED {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        let (buffers, kept) = &mut *pool;
        if *kept + buf.capacity() <= MAX_KEPT {
            *kept += buf.capacity();
            buffers.push(buf);
        }
    }
}

thread_local! {
    /// Each thread's patch buffers, kept between calls so steps do not allocate them again.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a buffer of at least `len` values from this thread's scratch (contents
/// unspecified). The buffer is taken out while `f` runs, so a nested call (should `f` ever
/// run another task on this thread) gets a fresh one instead of a conflict.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let result = f(&mut buf[..len]);
    SCRATCH.with(|s| {
        let mut slot = s.borrow_mut();
        if slot.len() < buf.len() {
            *slot = buf;
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_arrays_come_back_zeroed_and_shaped() {
        let mut a = zeros((300, 1000));
        a.fill(7.0);
        let ptr = a.as_ptr();
        give(a);
        let b = zeros((200, 1000));
        assert_eq!(b.dim(), (200, 1000));
        assert!(b.iter().all(|&v| v == 0.0));
        assert!(b.is_standard_layout());
        // Tests run in parallel and share the pool, so the buffer may have gone elsewhere;
        // when it came back here, it is the same memory.
        if b.as_ptr() == ptr {
            assert_eq!(b.len(), 200_000);
        }
        let small = zeros((2, 3));
        assert_eq!(small.dim(), (2, 3));
    }
}

/// An array that goes back to the pool when it is dropped: what layers keep from a training
/// pass for backward (patch matrices, dropout masks), so each step reuses the last one's.
#[derive(Debug)]
pub struct Pooled(pub Array2<f32>);

impl std::ops::Deref for Pooled {
    type Target = Array2<f32>;
    fn deref(&self) -> &Array2<f32> {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give(std::mem::replace(&mut self.0, Array2::zeros((0, 0))));
    }
}
