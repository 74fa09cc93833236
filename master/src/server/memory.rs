//! Gives memory the allocator holds free back to the system.

/// An ended job's per-index outcomes (tens of MiB for a million indices)
/// are freed at once, and allocators keep freed pages for reuse: the
/// master's resident set would not show them gone. This asks whichever
/// allocator the process uses to hand free pages back now: mimalloc (the
/// `wasmos` binary, feature `mimalloc`) purges the free memory of its
/// arenas at once rather than after its delay (pages a thread's own heap
/// still caches stay); glibc's `malloc_trim` returns its heaps' whole free
/// pages. Elsewhere, nothing to do.
pub fn return_free_memory() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: a forced collection of mimalloc's heap of this thread and of
    // its arenas; callable from any thread at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of glibc's own heaps; it
    // takes the allocator's locks like any malloc call.
    unsafe {
        libc::malloc_trim(0);
    }
}
