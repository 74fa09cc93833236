//! CPU time the calling thread has used: what the `cpus` limit charges a
//! task for each poll, so it must be fine-grained (well under a millisecond).

/// CPU time the calling thread has used, in nanoseconds (0 if the OS will
/// not tell).
#[cfg(unix)]
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // every Linux, BSD and macOS supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time the calling thread has used, in nanoseconds (0 if the OS will
/// not tell).
///
/// `GetThreadTimes` counts in 100 ns units but advances only at the clock
/// interrupt (15.6 ms by default), coarser than the `cpus` limit's 20 ms
/// window. `QueryThreadCycleTime` counts the thread's cycles of the
/// processor's constant-rate cycle counter, exactly; on x86_64 that rate
/// is the time stamp counter's, measured once against the monotonic clock.
#[cfg(windows)]
pub fn thread_cpu_ns() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use windows_sys::Win32::System::Threading::GetCurrentThread;
        use windows_sys::Win32::System::WindowsProgramming::QueryThreadCycleTime;
        let mut cycles = 0u64;
        // SAFETY: the pseudo-handle of the calling thread and a valid out
        // pointer.
        if unsafe { QueryThreadCycleTime(GetCurrentThread(), &mut cycles) } == 0 {
            return thread_times_ns();
        }
        (cycles as f64 / tsc::cycles_per_ns()) as u64
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        thread_times_ns()
    }
}

/// User plus kernel time from `GetThreadTimes`, in nanoseconds.
#[cfg(windows)]
fn thread_times_ns() -> u64 {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{GetCurrentThread, GetThreadTimes};
    let mut times = [FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    }; 4];
    let [created, exited, kernel, user] = &mut times;
    // SAFETY: the pseudo-handle of the calling thread and four valid out
    // pointers.
    if unsafe { GetThreadTimes(GetCurrentThread(), created, exited, kernel, user) } == 0 {
        return 0;
    }
    let ticks = |t: &FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    (ticks(kernel) + ticks(user)) * 100
}

#[cfg(all(windows, target_arch = "x86_64"))]
mod tsc {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// Time stamp counter cycles a nanosecond, measured over 10 ms the
    /// first time it is asked for.
    pub fn cycles_per_ns() -> f64 {
        static RATE: OnceLock<f64> = OnceLock::new();
        *RATE.get_or_init(|| {
            // SAFETY: rdtsc has no preconditions on x86_64.
            let (t0, c0) = (Instant::now(), unsafe { core::arch::x86_64::_rdtsc() });
            std::thread::sleep(Duration::from_millis(10));
            let (t1, c1) = (Instant::now(), unsafe { core::arch::x86_64::_rdtsc() });
            let ns = t1.duration_since(t0).as_nanos().max(1) as f64;
            (c1.wrapping_sub(c0) as f64 / ns).max(f64::MIN_POSITIVE)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn counts_this_threads_work_and_not_its_sleep() {
        let start = thread_cpu_ns();
        let spin_until = Instant::now() + Duration::from_millis(30);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spun = thread_cpu_ns() - start;
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_ns() - start - spun;
        // A loaded machine may take the core away during the spin, so only
        // a floor of the 30 ms; sleeping costs next to nothing.
        assert!(spun >= 5_000_000, "spun {spun} ns");
        assert!(slept < 5_000_000, "slept {slept} ns");
    }
}
