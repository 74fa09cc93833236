//! Gives memory the allocator holds free back to the system.

/// glibc keeps the blocks of a large, long-lived structure (an ended job's
/// per-index outcomes: tens of MiB for a million indices) for reuse once
/// freed, so the master's resident set never shows them gone;
/// `malloc_trim` returns every whole free page. Elsewhere, nothing to do.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of glibc's own heaps; it
    // takes the allocator's locks like any malloc call.
    unsafe {
        libc::malloc_trim(0);
    }
}
