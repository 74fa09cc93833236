//! The process's memory allocator: mimalloc, for every role the binary
//! plays. The master, agents and executors allocate and free small
//! messages by the million; glibc's malloc spent about a third of the
//! master's CPU on it (its consolidation of freed chunks most of all), and
//! mimalloc's thread-local pages cut the master's CPU per task by a
//! quarter (BENCHMARKS.md, "mimalloc").

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in `mimalloc.h`: its options keep their numbers
/// across versions (retired ones stay as `deprecated_` placeholders), but
/// `libmimalloc-sys` does not name this one.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays mapped before mimalloc hands it back:
/// mimalloc 3 waits a second, which made a master that just dropped a
/// burst of large messages look 90 MiB bigger for that long; 10 ms,
/// mimalloc 2's delay, returns it before anyone measures, at no cost
/// measured in the jobs bench. `MIMALLOC_PURGE_DELAY` (or its old name
/// `MIMALLOC_RESET_DELAY`) still wins.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Sets the allocator's options. Call it first thing in `main`, before any
/// other thread exists: mimalloc stores option values without atomics.
pub fn configure() {
    let set_by_user = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if !set_by_user {
        // SAFETY: a plain store into mimalloc's option table, made while
        // no other thread can read it (see above).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        if ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
            .iter()
            .any(|name| std::env::var_os(name).is_some())
        {
            return;
        }
        // SAFETY: reads an option's value.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc 3's purge delay is the one option that defaults to 1000.
        // (`configure` is not called: other tests' threads are running.)
        assert_eq!(
            get(),
            1000,
            "option {MI_OPTION_PURGE_DELAY} is not mimalloc 3's purge delay"
        );
    }
}
