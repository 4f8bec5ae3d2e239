//! Allocator tuning. Every layer of a forward pass allocates multi-megabyte activation and
//! im2col buffers. With glibc's defaults those are mmap'ed and unmapped on every call (or the
//! heap is trimmed back to the OS), so each forward pass pays page faults and zeroing of fresh
//! pages: measured on the retrieval network, a third of the monolithic network's time went to
//! the kernel (`sys` 3.5 s of 10 s in `onionnet bench`), and small stages run right after a
//! large one were slowed 2.5x. Keeping freed memory in the process removes that.

/// Raises glibc's mmap and trim thresholds to their maxima (no-op elsewhere). Call once at
/// start-up, before the first large allocation.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before worker threads start.
    unsafe {
        // 32 MiB is glibc's largest mmap threshold on 64-bit; larger blocks are still mmap'ed
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
