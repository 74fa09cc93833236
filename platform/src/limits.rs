//! Process limits that bound how many tasks an agent can hold at once
//! (open files, address space, memory maps) and how many connections a
//! master can take.
//!
//! Windows has none of them: each function says `None` there and raising
//! does nothing, so callers skip their warnings rather than warn of a limit
//! that is not there.

/// Raises this process's open-file limit to its hard limit and returns the
/// limit now in force (`None` where the OS has no such limit).
pub fn raise_open_files() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write `limit`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Some(1024);
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t differs by platform
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// This process's open-file limit (`None` where the OS has none).
pub fn open_files() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t differs by platform
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// This process's address-space limit in bytes (`None` when unlimited or
/// where the OS has none).
pub fn address_space() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
            || limit.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t differs by platform
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// How many memory mappings a process may hold (`vm.max_map_count`; `None`
/// where the OS has no such limit or does not say).
pub fn memory_maps() -> Option<u64> {
    if cfg!(target_os = "linux") {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()?
            .trim()
            .parse()
            .ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_leaves_at_least_the_limit_that_was() {
        let before = open_files();
        let after = raise_open_files();
        assert_eq!(before.is_some(), cfg!(unix));
        assert!(after >= before, "{after:?} < {before:?}");
        assert_eq!(open_files(), after);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_says_how_many_maps() {
        assert!(memory_maps().is_some_and(|n| n > 0));
    }
}
