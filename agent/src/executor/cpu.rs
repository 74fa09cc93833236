//! The `cpus` limit as pure logic: a token bucket of CPU time per task.
//!
//! Why CPU time and not calibrated fuel: fuel counts wasm instructions, and
//! the time an instruction takes differs by an order of magnitude between,
//! say, a division and an add, so any fuel-per-second calibration is wrong
//! for guests whose instruction mix differs from the calibration workload.
//! The worker thread's own CPU clock (`CLOCK_THREAD_CPUTIME_ID` on Unix,
//! `QueryThreadCycleTime` on Windows; read around each poll of a task)
//! measures exactly what the task used, whatever it executes and however
//! busy the machine is. Fuel yields are only the points where a task that
//! used up its share is made to wait.

use std::time::{Duration, Instant};

pub use wasmos_platform::cpu_time::thread_cpu_ns;

/// How much CPU time a task may run ahead of its rate: enough to cover a few
/// polls, small enough that a task's long-run rate is its `cpus`.
pub const BURST: Duration = Duration::from_millis(20);

/// A task that ran out of CPU time waits until it has earned this much
/// wall time's worth again (or half of [`BURST`], if less), not just until
/// its balance is back to zero: it then runs and waits in slices of
/// milliseconds rather than of one fuel-yield interval, so a throttled task
/// does not pay a cold cache and a thread wake-up every few hundred
/// microseconds. The long-run rate is the same either way.
pub const RESUME_WINDOW: Duration = Duration::from_millis(20);

/// A token bucket of CPU nanoseconds, refilled at `cpus` per wall-clock
/// nanosecond, holding at most [`BURST`].
#[derive(Debug, Clone)]
pub struct CpuBucket {
    rate: f64,
    capacity: f64,
    resume_at: f64,
    tokens: f64,
    throttled: bool,
    last: Instant,
}

impl CpuBucket {
    /// An empty bucket for a task limited to `cpus` cores, at `now`: a new
    /// task starts with no credit, so its CPU time over any period from its
    /// start is at most `cpus` times that period plus one poll.
    pub fn new(cpus: f64, now: Instant) -> Self {
        let capacity = BURST.as_nanos() as f64;
        Self {
            rate: cpus,
            capacity,
            resume_at: (capacity / 2.0).min(cpus * RESUME_WINDOW.as_nanos() as f64),
            tokens: 0.0,
            throttled: false,
            last: now,
        }
    }

    /// True when the limit can never bind on one thread (`cpus >= 1`).
    pub fn unlimited(&self) -> bool {
        self.rate >= 1.0
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_nanos() as f64;
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        self.last = now;
    }

    /// Takes `cpu_ns` of CPU time the task just used.
    pub fn charge(&mut self, cpu_ns: u64, now: Instant) {
        self.refill(now);
        self.tokens -= cpu_ns as f64;
    }

    /// `None` if the task may run at `now`, else when it may run again.
    pub fn throttled_until(&mut self, now: Instant) -> Option<Instant> {
        if self.unlimited() {
            return None;
        }
        self.refill(now);
        let threshold = if self.throttled { self.resume_at } else { 0.0 };
        if self.tokens >= threshold {
            self.throttled = false;
            return None;
        }
        self.throttled = true;
        let wait_ns = (self.resume_at - self.tokens) / self.rate;
        Some(now + Duration::from_nanos(wait_ns.ceil() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_task_gets_its_rate_over_time() {
        // Simulate a task that always wants to run, in 1 ms polls, for 10 s
        // of wall time at cpus = 0.25: it must get 2.5 s (+ one poll).
        let start = Instant::now();
        let mut bucket = CpuBucket::new(0.25, start);
        let mut now = start;
        let mut used = Duration::ZERO;
        let end = start + Duration::from_secs(10);
        while now < end {
            match bucket.throttled_until(now) {
                Some(t) => now = t,
                None => {
                    now += Duration::from_millis(1);
                    used += Duration::from_millis(1);
                    bucket.charge(1_000_000, now);
                }
            }
        }
        let expected = Duration::from_millis(2501);
        let diff = used.abs_diff(expected);
        assert!(
            diff <= Duration::from_millis(2),
            "used {used:?}, expected {expected:?}"
        );
    }

    #[test]
    fn whole_cores_never_throttle_and_idle_time_is_not_banked() {
        let t0 = Instant::now();
        let mut one = CpuBucket::new(1.0, t0);
        one.charge(5_000_000_000, t0);
        assert_eq!(one.throttled_until(t0), None);

        let mut half = CpuBucket::new(0.5, t0);
        // Idle for a minute: the bucket holds only BURST.
        let later = t0 + Duration::from_secs(60);
        half.charge(BURST.as_nanos() as u64 + 1_000_000, later);
        let until = half.throttled_until(later).expect("throttled");
        // 1 ms owed plus the 10 ms resume level, earned at 0.5 per ns.
        assert_eq!(until - later, Duration::from_millis(22));
        assert!(
            half.throttled_until(until - Duration::from_millis(1))
                .is_some()
        );
        assert_eq!(half.throttled_until(until), None);
    }

    #[test]
    fn thread_cpu_clock_advances_with_work_not_sleep() {
        let a = thread_cpu_ns();
        std::thread::sleep(Duration::from_millis(30));
        let b = thread_cpu_ns();
        let mut x = 0u64;
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let c = thread_cpu_ns();
        assert!(b - a < 10_000_000, "sleeping used {} ns", b - a);
        assert!(c - b > 5_000_000, "spinning used only {} ns", c - b);
    }
}
