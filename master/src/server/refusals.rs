//! Refusals, counted: repeats of one kind of refusal are summed into one
//! audit line, and a caller refused too often is throttled.
//!
//! Pure: every method takes `now_ms` (from the audit's [`super::WallClock`]),
//! so the tests drive the clock. The I/O is `audit.rs`'s (which records
//! every refusal and charges the caller here) and the gate's (which asks
//! here before a call whether its caller may go on).
//!
//! Why: without these, one principal could flush the audit trail (35,000
//! refused calls of 4.4 KB each filled a 64 MiB file in 20 s) and probe the
//! master as fast as it answers.
//!
//! A throttled caller hears `RESOURCE_EXHAUSTED` at once, naming the limit
//! and when to retry, for every call it makes until its bucket refills; the
//! call is not tried. Not a delay: a delayed answer would hold a stream and
//! a task on the master for each waiting call (an attacker opens up to
//! 1,024 streams per connection), and a legitimate client would see only
//! unexplained slowness; `RESOURCE_EXHAUSTED` is gRPC's code for "a quota
//! or rate was exceeded", which clients back off on, and the master does no
//! work for the throttled call. Not only the refusals: a caller that hears
//! its refusals alone replaced would still learn, from which calls pass,
//! what it probes for. Allowed calls of other principals, and of the same
//! principal when it is not refused, are never slowed.

use std::collections::HashMap;
use std::net::IpAddr;

use tonic::Code;

/// How long repeats of one kind of refusal are counted, not written: the
/// first is written in full at once, the ones after it within this window
/// as one summary line when it closes. Short, so the summary is on disk
/// (and in `wasmos audit`) seconds after a flood; long enough that a flood
/// costs two lines per kind every five seconds, not one per call.
pub const WINDOW_MS: u64 = 5_000;

/// Refusals a caller may have at once before it is throttled: a client
/// with a bug, or an operator trying what a token may do (every row of
/// SECURITY.md's permission table is about 25 refusals), is never slowed.
pub const BURST: i64 = 50;

/// Refusals a second a caller may have after its burst.
pub const PER_SECOND: i64 = 10;

/// Refusals past the bucket (concurrent calls that all passed the gate
/// while it still had a token) are owed, up to this many: the next calls
/// wait for them too, so concurrency does not buy a higher rate, but a
/// caller is never locked out for longer than this many tenths of seconds.
pub const MAX_DEBT: i64 = 100;

/// The most kinds (or buckets) tracked at once. Past it, idle buckets are
/// forgotten; new kinds are then written without aggregation (as before
/// this module) and new callers not limited, rather than grow the map.
pub const MAX_KEYS: usize = 100_000;

/// The codes that refuse a caller (rather than fail its call): these are
/// charged to it.
pub fn is_refusal(code: Code) -> bool {
    matches!(code, Code::PermissionDenied | Code::Unauthenticated)
}

/// A caller without a valid credential is known by its address; an IPv6
/// host by its /64, which one host usually owns whole.
pub fn source_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// One kind of refusal: who, by which call, with which code. Not the error
/// text, which may carry ids that differ on every call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kind {
    /// The principal or agent; empty for a caller without a credential.
    pub who: String,
    pub accessor: String,
    /// The source address ([`source_of`]) of a caller without a credential.
    pub source: String,
    pub call: String,
    pub code: Code,
}

struct Window {
    opened_ms: u64,
    repeated: u64,
    first_ms: u64,
    last_ms: u64,
}

/// Repeats of a kind in a window that closed, for one summary line.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub kind: Kind,
    /// The refusals not written one by one (the one written in full when
    /// the window opened is not counted).
    pub repeated: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// Whether to write a refusal.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// It opens a window: write it in full.
    First,
    /// Counted in its window's summary.
    Repeat,
}

/// The open windows.
#[derive(Default)]
pub struct Aggregator {
    windows: HashMap<Kind, Window>,
    /// When the earliest open window closes: [`Aggregator::due`] scans the
    /// windows only then, not on every refusal.
    next_due_ms: Option<u64>,
}

impl Aggregator {
    /// A refusal of `kind` at `now`. Take the [`Aggregator::due`] summaries
    /// first, so a closed window of this kind is summed up before a new one
    /// opens.
    pub fn refused(&mut self, kind: &Kind, now: u64) -> Seen {
        if let Some(w) = self.windows.get_mut(kind) {
            w.repeated += 1;
            if w.repeated == 1 {
                w.first_ms = now;
            }
            w.last_ms = w.last_ms.max(now);
            return Seen::Repeat;
        }
        if self.windows.len() < MAX_KEYS {
            self.windows.insert(
                kind.clone(),
                Window {
                    opened_ms: now,
                    repeated: 0,
                    first_ms: now,
                    last_ms: now,
                },
            );
            let closes = now + WINDOW_MS;
            self.next_due_ms = Some(self.next_due_ms.map_or(closes, |d| d.min(closes)));
        }
        Seen::First
    }

    /// Closes the windows open for [`WINDOW_MS`] by `now`: the summaries
    /// of those with repeats, in the order their repeats began.
    pub fn due(&mut self, now: u64) -> Vec<Summary> {
        if self.next_due_ms.is_none_or(|due| now < due) {
            return Vec::new();
        }
        self.close(|w| now >= w.opened_ms + WINDOW_MS)
    }

    /// Closes every window (the master is stopping).
    pub fn all(&mut self) -> Vec<Summary> {
        self.close(|_| true)
    }

    fn close(&mut self, closes: impl Fn(&Window) -> bool) -> Vec<Summary> {
        let mut summaries = Vec::new();
        self.windows.retain(|kind, w| {
            if !closes(w) {
                return true;
            }
            if w.repeated > 0 {
                summaries.push(Summary {
                    kind: kind.clone(),
                    repeated: w.repeated,
                    first_ms: w.first_ms,
                    last_ms: w.last_ms,
                });
            }
            false
        });
        self.next_due_ms = self.windows.values().map(|w| w.opened_ms + WINDOW_MS).min();
        summaries.sort_by_key(|s| s.first_ms);
        summaries
    }
}

/// Thousandths of a refusal, so a millisecond refills a whole number.
const MILLI: i64 = 1000;

/// A token bucket of refusals: [`BURST`] at most, refilled at
/// [`PER_SECOND`], down to `-MAX_DEBT` when charged past empty; in
/// thousandths.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli_tokens: i64,
    at_ms: u64,
}

impl Bucket {
    fn refill(&mut self, now: u64) {
        // A clock that steps back refills nothing.
        let elapsed = now.saturating_sub(self.at_ms).min(3_600_000) as i64;
        self.milli_tokens = (self.milli_tokens + elapsed * PER_SECOND).min(BURST * MILLI);
        self.at_ms = self.at_ms.max(now);
    }

    /// Milliseconds until the bucket holds a whole token; 0 if it does.
    fn wait_ms(&self) -> u64 {
        let short = MILLI - self.milli_tokens;
        if short <= 0 {
            0
        } else {
            (short + PER_SECOND - 1) as u64 / PER_SECOND as u64
        }
    }
}

/// The buckets, by caller ([`Limiter`] keys: a principal's name, or a
/// source address).
#[derive(Default)]
pub struct Limiter {
    buckets: HashMap<String, Bucket>,
}

impl Limiter {
    /// `Ok` while `key` may be refused once more; else how many
    /// milliseconds until it may. A caller never refused has no bucket and
    /// gets none here.
    pub fn check(&mut self, key: &str, now: u64) -> Result<(), u64> {
        match self.buckets.get_mut(key) {
            None => Ok(()),
            Some(bucket) => {
                bucket.refill(now);
                match bucket.wait_ms() {
                    0 => Ok(()),
                    wait => Err(wait),
                }
            }
        }
    }

    /// Charges a refusal to `key`.
    pub fn charge(&mut self, key: &str, now: u64) {
        if !self.buckets.contains_key(key) && !self.make_room(now) {
            return;
        }
        let bucket = self.buckets.entry(key.to_string()).or_insert(Bucket {
            milli_tokens: BURST * MILLI,
            at_ms: now,
        });
        bucket.refill(now);
        bucket.milli_tokens = (bucket.milli_tokens - MILLI).max(-MAX_DEBT * MILLI);
    }

    /// Room for one more bucket: forgets the full ones (callers not refused
    /// for a while) when the map is at [`MAX_KEYS`].
    fn make_room(&mut self, now: u64) -> bool {
        if self.buckets.len() < MAX_KEYS {
            return true;
        }
        self.buckets.retain(|_, b| {
            b.refill(now);
            b.milli_tokens < BURST * MILLI
        });
        self.buckets.len() < MAX_KEYS
    }
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A code as gRPC spells it: `PERMISSION_DENIED`.
pub fn code_name(code: Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A summary in words: `bob: 35,000 × Scheduler.Kill refused
/// PERMISSION_DENIED in 20 s`.
pub fn describe(s: &Summary) -> String {
    let k = &s.kind;
    let who = match (k.who.is_empty(), k.source.is_empty()) {
        (false, _) => k.who.clone(),
        (true, false) => format!("{} (no valid credential)", k.source),
        (true, true) => "(unknown)".into(),
    };
    let verb = if is_refusal(k.code) || k.code == Code::ResourceExhausted {
        "refused"
    } else {
        "failed"
    };
    let secs = s.last_ms.saturating_sub(s.first_ms) as f64 / 1000.0;
    let secs = if secs < 10.0 {
        format!("{secs:.1}")
    } else {
        format!("{secs:.0}")
    };
    format!(
        "{who}: {} × {} {verb} {} in {secs} s",
        grouped(s.repeated),
        k.call,
        code_name(k.code)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(who: &str, call: &str) -> Kind {
        Kind {
            who: who.into(),
            accessor: String::new(),
            source: String::new(),
            call: call.into(),
            code: Code::PermissionDenied,
        }
    }

    #[test]
    fn repeats_in_a_window_make_one_summary_with_their_count() {
        let mut agg = Aggregator::default();
        let kill = kind("bob", "Scheduler.Kill");
        assert_eq!(agg.refused(&kill, 1_000), Seen::First);
        // Another caller, another call: their own windows.
        assert_eq!(
            agg.refused(&kind("eve", "Scheduler.Kill"), 1_000),
            Seen::First
        );
        assert_eq!(
            agg.refused(&kind("bob", "Scheduler.Teardown"), 1_000),
            Seen::First
        );
        for i in 0..35_000u64 {
            assert_eq!(agg.refused(&kill, 1_001 + i / 10), Seen::Repeat);
        }
        assert!(agg.due(1_000 + WINDOW_MS - 1).is_empty(), "still open");
        let summaries = agg.due(1_000 + WINDOW_MS);
        assert_eq!(
            summaries.len(),
            1,
            "only bob's kills repeated: {summaries:?}"
        );
        assert_eq!(summaries[0].kind, kill);
        assert_eq!(summaries[0].repeated, 35_000);
        assert_eq!(
            (summaries[0].first_ms, summaries[0].last_ms),
            (1_001, 4_500)
        );
        assert_eq!(
            describe(&summaries[0]),
            "bob: 35,000 × Scheduler.Kill refused PERMISSION_DENIED in 3.5 s"
        );
        // The window closed: the next one is written in full again.
        assert_eq!(agg.refused(&kill, 7_000), Seen::First);
        assert!(agg.due(7_001).is_empty());
        assert_eq!(agg.refused(&kill, 7_002), Seen::Repeat);
        assert_eq!(agg.all().len(), 1, "stopping sums up the open window");
        assert!(agg.all().is_empty());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_its_rate_and_charges_debt() {
        let mut limiter = Limiter::default();
        assert_eq!(limiter.check("bob", 0), Ok(()), "never refused");
        for _ in 0..BURST {
            assert_eq!(limiter.check("bob", 0), Ok(()));
            limiter.charge("bob", 0);
        }
        assert_eq!(limiter.check("bob", 0), Err(100), "a token every 100 ms");
        assert_eq!(limiter.check("alice", 0), Ok(()), "others are not slowed");
        assert_eq!(limiter.check("bob", 99), Err(1));
        assert_eq!(limiter.check("bob", 100), Ok(()));
        // Over ten seconds of trying all the time, ten a second pass.
        let mut passed = 0;
        for now in (100..10_100).step_by(5) {
            if limiter.check("bob", now).is_ok() {
                limiter.charge("bob", now);
                passed += 1;
            }
        }
        assert!((99..=101).contains(&passed), "{passed}");
        // Concurrent refusals past the bucket are owed, up to MAX_DEBT.
        for _ in 0..1_000 {
            limiter.charge("bob", 10_100);
        }
        let wait = limiter.check("bob", 10_100).unwrap_err();
        assert_eq!(wait, ((MAX_DEBT + 1) * 1000 / PER_SECOND) as u64);
        // A clock that steps back refills nothing; one that goes on does.
        assert!(limiter.check("bob", 0).is_err());
        assert_eq!(limiter.check("bob", 10_100 + wait), Ok(()));
    }

    #[test]
    fn sources_are_addresses_and_ipv6_hosts_their_64() {
        assert_eq!(source_of("127.0.0.1".parse().unwrap()), "127.0.0.1");
        assert_eq!(source_of("::ffff:10.0.0.7".parse().unwrap()), "10.0.0.7");
        let a = source_of("2001:db8:1:2:aaaa::1".parse().unwrap());
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, source_of("2001:db8:1:2:bbbb::9".parse().unwrap()));
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
