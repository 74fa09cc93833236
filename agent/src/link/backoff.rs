//! How long an agent waits before it dials its master again.
//!
//! The wait doubles after each failure, up to a cap, and is drawn at random
//! from the upper half of its current step. Without the draw, every agent
//! of a master that restarts lost its stream in the same instant and would
//! knock again in the same instants (100 ms, 200 ms, ... 5 s later) for as
//! long as the master is away: ten thousand TLS handshakes at once, of
//! which those that time out start over at the cap. With it, the knocks of
//! one step spread over half of it. No wait is shorter than half its step
//! (on average three quarters of it), and the steps still double, so a
//! master that is down is asked at most twice as often as without the draw.

use std::time::Duration;

use rand::Rng;

/// An agent's first wait before it dials again, by default.
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(100);
/// An agent's longest wait, by default.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Exponential backoff with jitter. Not a timer: [`Backoff::wait`] says
/// how long to wait, the caller sleeps.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Default for Backoff {
    /// `wasmos agent`'s steps: 100 ms, doubled up to 5 s.
    fn default() -> Backoff {
        Backoff::new(DEFAULT_MIN_BACKOFF, DEFAULT_MAX_BACKOFF)
    }
}

impl Backoff {
    /// Starts at `min` (at least a millisecond: a zero step would retry
    /// in a busy loop), doubles up to `max` (at least `min`).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            step: min,
        }
    }

    /// The wait before the next try: between half the current step and the
    /// step itself. The step then doubles, up to the cap.
    pub fn wait(&mut self) -> Duration {
        let wait = jittered(self.step, &mut rand::rng());
        self.step = self.step.saturating_mul(2).min(self.max);
        wait
    }

    /// The current step (the most [`Backoff::wait`] will return), for logs.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// After a success: the next failure waits the shortest step again.
    pub fn reset(&mut self) {
        self.step = self.min;
    }

    /// Lowers the cap (e.g. to look for a new leader at least every
    /// second), the current step with it; never raises it, nor puts it
    /// under the first step.
    pub fn cap(&mut self, max: Duration) {
        self.max = self.max.min(max).max(self.min);
        self.step = self.step.min(self.max);
    }
}

/// A wait drawn uniformly from `[step / 2, step]`.
fn jittered(step: Duration, rng: &mut impl Rng) -> Duration {
    let half = step / 2;
    let spread = u64::try_from((step - half).as_micros()).unwrap_or(u64::MAX);
    half + Duration::from_micros(rng.random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn waits_double_up_to_the_cap_each_within_the_upper_half_of_its_step() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let steps = [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000];
        for step in steps {
            assert_eq!(backoff.step(), Duration::from_millis(step));
            let wait = backoff.wait();
            assert!(
                wait >= Duration::from_millis(step / 2) && wait <= Duration::from_millis(step),
                "step {step} ms waited {wait:?}"
            );
        }
        backoff.reset();
        assert_eq!(backoff.step(), Duration::from_millis(100));
        backoff.cap(Duration::from_millis(50));
        assert_eq!(
            backoff.step(),
            Duration::from_millis(100),
            "never below min"
        );
    }

    #[test]
    fn a_cap_only_lowers_the_longest_step() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        backoff.cap(Duration::from_secs(1));
        for _ in 0..5 {
            backoff.wait();
        }
        assert_eq!(backoff.step(), Duration::from_millis(400), "not raised");
        backoff.cap(Duration::from_millis(200));
        assert_eq!(backoff.step(), Duration::from_millis(200), "lowered");
        backoff.wait();
        assert_eq!(backoff.step(), Duration::from_millis(200));
    }

    #[test]
    fn no_step_is_zero_and_none_overflows() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(backoff.wait() >= Duration::from_micros(500));
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..80 {
            backoff.wait();
        }
        assert_eq!(backoff.step(), Duration::MAX);
    }

    #[test]
    fn the_waits_of_one_step_spread_over_its_upper_half() {
        // Ten thousand agents at the 5 s step: their knocks fall in every
        // tenth of the half, not in one instant.
        let mut rng = StdRng::seed_from_u64(7);
        let step = Duration::from_secs(5);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let wait = jittered(step, &mut rng);
            assert!(wait >= step / 2 && wait <= step);
            let tenth =
                ((wait - step / 2).as_secs_f64() / (step / 2).as_secs_f64() * 10.0) as usize;
            buckets[tenth.min(9)] += 1;
        }
        for (i, count) in buckets.iter().enumerate() {
            assert!(
                (800..=1_200).contains(count),
                "tenth {i} of the half took {count} of 10,000 waits: {buckets:?}"
            );
        }
    }
}
