//! Time as the core sees it: a number the caller passes in.
//!
//! The core never reads a clock. The shell passes `Time` values from a
//! monotonic clock; tests and simulations pass whatever they like, which makes
//! every run reproducible.

use std::ops::Add;
use std::time::Duration;

/// Milliseconds since an arbitrary, fixed origin chosen by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Time(pub u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);

    /// Milliseconds since the origin.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }
}
