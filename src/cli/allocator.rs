//! The binary's allocator settings (mimalloc's `purge_delay`): how long freed memory stays
//! with the process before it goes back to the system. The library itself is
//! allocator-agnostic.

/// mimalloc's `purge_delay` option (its index in `mi_option_t`, the same in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Training keeps freed memory for reuse (−1: never purged), where mimalloc's default gives
/// it back 10 ms after it is freed. A training step frees its activations and allocates them
/// again one step later, and each epoch's evaluation a second or more later; purged in
/// between, every page was faulted in and zeroed again (`perf stat -e page-faults` on one
/// `resnet` epoch: 4,473 faults with the default, 487 with this; a delay of 1 s still gave
/// 6,692). The process's memory stays at its peak, as PyTorch's caching allocator does.
const TRAINING_PURGE_DELAY_MS: std::ffi::c_long = -1;

/// The default for every command but `serve`: freed memory kept
/// ([`TRAINING_PURGE_DELAY_MS`]).
pub fn keep_freed_memory_between_steps() {
    set_purge_delay(TRAINING_PURGE_DELAY_MS);
}

/// Tells the allocator to give freed memory back to the system at once instead of later: a
/// server decoding one 150 MB image after another would otherwise hold two at a time, and the
/// decode budget's memory ceiling would be twice what it says (measured with
/// scripts/hostile_load.py: peak 245 MB, 205 MB with this).
pub fn purge_freed_memory_at_once() {
    set_purge_delay(0);
}

fn set_purge_delay(ms: std::ffi::c_long) {
    // SAFETY: sets one integer option; mimalloc allows it at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}
