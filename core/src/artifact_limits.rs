//! The artifact store's bounds as pure logic, apart from files and
//! streams: who holds how many artifacts and bytes, who may store one more,
//! how many uploads run at once and for whom, and whether an upload keeps
//! up the minimum rate. Every refusal names the limit, its flag and who
//! holds what it bounds, so the one refused knows whether it is their own
//! doing or another principal's.

use std::collections::HashMap;
use std::time::Duration;

use wasmos_proto::v1;

/// The artifact store's caps (`wasmos master --max-artifacts…`,
/// `--max-uploads…`, `--upload-…`).
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    /// The most artifacts stored in all (`--max-artifacts`).
    pub count: usize,
    /// The most bytes stored in all (`--max-artifact-bytes`).
    pub bytes: u64,
    /// The most artifacts one principal (not an admin) may have stored
    /// (`--max-artifacts-per-principal`): without it one principal could
    /// fill `count` and lock every other out.
    pub count_per_principal: usize,
    /// The most uploads in progress at once in the master (`--max-uploads`):
    /// each holds a connection's buffers, a chunk and a temp file.
    pub uploads: usize,
    /// The most uploads in progress at once for one principal
    /// (`--max-uploads-per-principal`); never more than half of `uploads`,
    /// so one principal cannot take every slot.
    pub uploads_per_principal: usize,
    /// The slowest an upload may be once past its grace.
    pub min_rate: MinRate,
}

impl StoreLimits {
    /// The defaults for `count` artifacts and `bytes` in all: a tenth of
    /// the artifacts per principal, 128 uploads at once, 8 per principal,
    /// and [`MinRate::DEFAULT`].
    pub fn new(count: usize, bytes: u64) -> StoreLimits {
        StoreLimits {
            count,
            bytes,
            count_per_principal: (count / 10).max(1),
            uploads: 128,
            uploads_per_principal: 8,
            min_rate: MinRate::DEFAULT,
        }
    }
}

/// An upload slower than `bytes_per_sec`, averaged over `window`, once
/// `grace` has passed since it began, is cut: a stalled or trickling upload
/// would otherwise hold its slot, connection and temp file for as long as
/// its sender likes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinRate {
    /// 0: no minimum.
    pub bytes_per_sec: u64,
    pub window: Duration,
    pub grace: Duration,
}

impl MinRate {
    /// 64 KiB/s over 30 s after 10 s. Bytes count when a whole chunk has
    /// arrived, so a window must span several chunks at the minimum rate:
    /// at 30 s, a client sending 1 MiB chunks (the SDK's) passes from about
    /// 70 KiB/s; over 10 s it would need a chunk every 10 s, 100 KiB/s.
    pub const DEFAULT: MinRate = MinRate {
        bytes_per_sec: 64 << 10,
        window: Duration::from_secs(30),
        grace: Duration::from_secs(10),
    };
}

/// Where one upload stands against its [`MinRate`].
#[derive(Debug)]
pub struct RateCheck {
    floor: MinRate,
    /// When the current window began (time since the upload began), and
    /// the bytes received by then.
    window_start: Duration,
    bytes_at_start: u64,
}

impl RateCheck {
    pub fn new(floor: MinRate) -> RateCheck {
        RateCheck {
            floor,
            window_start: Duration::ZERO,
            bytes_at_start: 0,
        }
    }

    /// When (since the upload began) the next check falls due, if any: an
    /// upload that sends nothing is checked then all the same.
    pub fn next_check(&self) -> Option<Duration> {
        (self.floor.bytes_per_sec > 0)
            .then(|| (self.window_start + self.floor.window).max(self.floor.grace))
    }

    /// Checks the upload `elapsed` after it began, having received `bytes`:
    /// once past the grace, each window of at least `window` must average
    /// the rate; then the next window begins.
    pub fn check(&mut self, elapsed: Duration, bytes: u64) -> Result<(), String> {
        let Some(due) = self.next_check() else {
            return Ok(());
        };
        if elapsed < due {
            return Ok(());
        }
        let span = elapsed - self.window_start;
        let received = bytes.saturating_sub(self.bytes_at_start);
        let wanted = (self.floor.bytes_per_sec as f64 * span.as_secs_f64()) as u64;
        if received < wanted {
            let rate = (received as f64 / span.as_secs_f64().max(0.001)) as u64;
            return Err(format!(
                "the upload sent {received} bytes in the last {:.1} s ({rate} bytes/s), under the \
                 master's minimum of {} bytes/s over {} s once {} s have passed \
                 (--upload-min-rate, --upload-rate-window, --upload-grace)",
                span.as_secs_f64(),
                self.floor.bytes_per_sec,
                self.floor.window.as_secs_f64(),
                self.floor.grace.as_secs_f64(),
            ));
        }
        self.window_start = elapsed;
        self.bytes_at_start = bytes;
        Ok(())
    }
}

/// Artifacts and bytes held, by one principal or in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub count: usize,
    pub bytes: u64,
}

/// What every principal holds, kept beside the index as records come and
/// go, so a check costs a lookup rather than a walk over every artifact.
/// An artifact counts fully against each of its owners.
#[derive(Debug, Default)]
pub struct Holdings {
    total: Held,
    by_principal: HashMap<String, Held>,
}

impl Holdings {
    pub fn add(&mut self, record: &v1::StoredArtifact) {
        self.total.count += 1;
        self.total.bytes += record.size;
        for owner in &record.owners {
            let held = self.by_principal.entry(owner.clone()).or_default();
            held.count += 1;
            held.bytes += record.size;
        }
    }

    pub fn remove(&mut self, record: &v1::StoredArtifact) {
        self.total.count = self.total.count.saturating_sub(1);
        self.total.bytes = self.total.bytes.saturating_sub(record.size);
        for owner in &record.owners {
            if let Some(held) = self.by_principal.get_mut(owner) {
                held.count = held.count.saturating_sub(1);
                held.bytes = held.bytes.saturating_sub(record.size);
                if held.count == 0 {
                    self.by_principal.remove(owner);
                }
            }
        }
    }

    pub fn total(&self) -> Held {
        self.total
    }

    pub fn of(&self, principal: &str) -> Held {
        self.by_principal
            .get(principal)
            .copied()
            .unwrap_or_default()
    }

    /// The principal holding the most artifacts (by name on a tie).
    pub fn top(&self) -> Option<(&str, Held)> {
        self.by_principal
            .iter()
            .max_by(|a, b| a.1.count.cmp(&b.1.count).then_with(|| b.0.cmp(a.0)))
            .map(|(name, held)| (name.as_str(), *held))
    }
}

/// One more artifact for a principal, as [`admit`] weighs it.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    pub principal: &'a str,
    /// Admins have no per-principal limits (neither count nor quota).
    pub admin: bool,
    pub size: u64,
    /// No one stores these bytes yet: they count against the master's caps.
    pub new: bool,
    /// The principal owns them already: nothing changes.
    pub owned: bool,
}

/// May `claim` be stored under `limits`, the per-principal byte `quota`,
/// with `holdings` as they are? The refusal names the limit, its flag and
/// who holds what fills it.
pub fn admit(
    holdings: &Holdings,
    limits: &StoreLimits,
    quota: u64,
    claim: Claim,
) -> Result<(), String> {
    if claim.owned {
        return Ok(());
    }
    let mine = holdings.of(claim.principal);
    if !claim.admin {
        if mine.count >= limits.count_per_principal {
            return Err(format!(
                "principal {} holds {} artifacts, the most one principal may store \
                 (--max-artifacts-per-principal)",
                claim.principal,
                thousands(mine.count as u64)
            ));
        }
        if mine.bytes + claim.size > quota {
            return Err(format!(
                "principal {} holds {} bytes of artifacts; {} more would pass its quota of {} \
                 bytes (--artifact-quota)",
                claim.principal,
                thousands(mine.bytes),
                thousands(claim.size),
                thousands(quota)
            ));
        }
    }
    let total = holdings.total();
    if claim.new && (total.count >= limits.count || total.bytes + claim.size > limits.bytes) {
        let top = holdings.top().map_or(String::new(), |(name, held)| {
            format!(
                "; the most are principal {name}'s: {} artifacts of {} bytes",
                thousands(held.count as u64),
                thousands(held.bytes)
            )
        });
        return Err(format!(
            "the master is full: it stores {} artifacts of {} bytes, and one more of {} bytes \
             would pass its limits of {} artifacts and {} bytes for all principals \
             (--max-artifacts, --max-artifact-bytes){top}",
            thousands(total.count as u64),
            thousands(total.bytes),
            thousands(claim.size),
            thousands(limits.count as u64),
            thousands(limits.bytes)
        ));
    }
    Ok(())
}

/// The uploads in progress, in all and by principal.
#[derive(Debug)]
pub struct UploadSlots {
    total_limit: usize,
    per_principal: usize,
    total: usize,
    by_principal: HashMap<String, usize>,
}

impl UploadSlots {
    /// `per_principal` is held to half of `total` (at least one), so one
    /// principal always leaves slots to the others.
    pub fn new(total: usize, per_principal: usize) -> UploadSlots {
        UploadSlots {
            total_limit: total,
            per_principal: per_principal.min((total / 2).max(1)),
            total: 0,
            by_principal: HashMap::new(),
        }
    }

    /// Takes a slot for `principal`, or says which limit is full and who
    /// holds it.
    pub fn take(&mut self, principal: &str) -> Result<(), String> {
        let mine = self.by_principal.get(principal).copied().unwrap_or(0);
        if mine >= self.per_principal {
            return Err(format!(
                "principal {principal} holds {mine} uploads in progress, the most one principal \
                 may run at once (--max-uploads-per-principal)"
            ));
        }
        if self.total >= self.total_limit {
            let top = self
                .by_principal
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map_or(String::new(), |(name, n)| {
                    format!("; the most are principal {name}'s: {n}")
                });
            return Err(format!(
                "the master has {} uploads in progress, the most it runs at once for all \
                 principals (--max-uploads){top}",
                self.total
            ));
        }
        self.total += 1;
        *self.by_principal.entry(principal.to_string()).or_default() += 1;
        Ok(())
    }

    /// Gives back a slot [`UploadSlots::take`] gave `principal`.
    pub fn release(&mut self, principal: &str) {
        if let Some(n) = self.by_principal.get_mut(principal) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.by_principal.remove(principal);
            }
        }
    }

    #[cfg(test)]
    fn in_progress(&self) -> usize {
        self.total
    }
}

/// `1234567` as `1,234,567`: limits in messages are read by people.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(digest: &str, size: u64, owners: &[&str]) -> v1::StoredArtifact {
        v1::StoredArtifact {
            digest: digest.into(),
            size,
            stored_ms: 0,
            owners: owners.iter().map(|o| o.to_string()).collect(),
            last_used_ms: 0,
        }
    }

    fn claim(principal: &str, size: u64) -> Claim<'_> {
        Claim {
            principal,
            admin: false,
            size,
            new: true,
            owned: false,
        }
    }

    fn limits(count: usize, per_principal: usize) -> StoreLimits {
        StoreLimits {
            count_per_principal: per_principal,
            ..StoreLimits::new(count, 1 << 30)
        }
    }

    #[test]
    fn holdings_follow_records_in_and_out() {
        let mut h = Holdings::default();
        h.add(&record("a", 10, &["alice", "bob"]));
        h.add(&record("b", 5, &["alice"]));
        assert_eq!(
            h.of("alice"),
            Held {
                count: 2,
                bytes: 15
            }
        );
        assert_eq!(
            h.of("bob"),
            Held {
                count: 1,
                bytes: 10
            }
        );
        assert_eq!(
            h.total(),
            Held {
                count: 2,
                bytes: 15
            }
        );
        assert_eq!(h.top().unwrap().0, "alice");
        h.remove(&record("a", 10, &["alice", "bob"]));
        assert_eq!(h.of("bob"), Held::default());
        assert_eq!(h.total(), Held { count: 1, bytes: 5 });
        h.remove(&record("b", 5, &["alice"]));
        assert!(h.top().is_none());
    }

    #[test]
    fn a_principal_past_its_count_is_refused_by_name_and_others_are_not() {
        let mut h = Holdings::default();
        for i in 0..3 {
            h.add(&record(&format!("{i}"), 1, &["alice"]));
        }
        let l = limits(10, 3);
        let refused = admit(&h, &l, u64::MAX, claim("alice", 1)).unwrap_err();
        assert!(
            refused.contains("principal alice holds 3 artifacts")
                && refused.contains("--max-artifacts-per-principal"),
            "{refused}"
        );
        admit(&h, &l, u64::MAX, claim("bob", 1)).unwrap();
        // What alice owns already, or an admin's upload, passes.
        let owned = Claim {
            owned: true,
            ..claim("alice", 1)
        };
        admit(&h, &l, u64::MAX, owned).unwrap();
        let admin = Claim {
            admin: true,
            ..claim("alice", 1)
        };
        admit(&h, &l, u64::MAX, admin).unwrap();
    }

    #[test]
    fn the_byte_quota_names_the_principal_and_the_flag() {
        let mut h = Holdings::default();
        h.add(&record("a", 2000, &["alice"]));
        let refused = admit(&h, &limits(10, 10), 2500, claim("alice", 1000)).unwrap_err();
        assert!(
            refused.contains("principal alice holds 2,000 bytes")
                && refused.contains("quota of 2,500 bytes (--artifact-quota)"),
            "{refused}"
        );
    }

    #[test]
    fn a_full_master_says_so_and_names_the_top_holder() {
        let mut h = Holdings::default();
        h.add(&record("a", 1, &["alice"]));
        h.add(&record("b", 1, &["bob"]));
        h.add(&record("c", 1, &["bob"]));
        let refused = admit(&h, &limits(3, 10), u64::MAX, claim("carol", 1)).unwrap_err();
        assert!(
            refused.contains("the master is full")
                && refused.contains("--max-artifacts")
                && refused.contains("principal bob's: 2 artifacts"),
            "{refused}"
        );
        // Bytes someone stores already take no room: carol may own them too.
        let shared = Claim {
            new: false,
            ..claim("carol", 1)
        };
        admit(&h, &limits(3, 10), u64::MAX, shared).unwrap();
    }

    #[test]
    fn upload_slots_bound_each_principal_and_the_total() {
        let mut slots = UploadSlots::new(4, 8);
        // Held to half the total.
        slots.take("alice").unwrap();
        slots.take("alice").unwrap();
        let refused = slots.take("alice").unwrap_err();
        assert!(
            refused.contains("principal alice holds 2 uploads")
                && refused.contains("--max-uploads-per-principal"),
            "{refused}"
        );
        slots.take("bob").unwrap();
        slots.take("carol").unwrap();
        let refused = slots.take("dave").unwrap_err();
        assert!(
            refused.contains("--max-uploads)") && refused.contains("principal alice's: 2"),
            "{refused}"
        );
        slots.release("alice");
        slots.take("dave").unwrap();
        assert_eq!(slots.in_progress(), 4);
        slots.release("nobody");
        assert_eq!(slots.in_progress(), 4);
    }

    #[test]
    fn a_slow_upload_is_cut_after_the_grace_and_a_steady_one_is_not() {
        let floor = MinRate {
            bytes_per_sec: 100,
            window: Duration::from_secs(4),
            grace: Duration::from_secs(6),
        };
        let s = Duration::from_secs;
        // Nothing in the grace is checked, however slow.
        let mut slow = RateCheck::new(floor);
        assert_eq!(slow.next_check(), Some(s(6)));
        slow.check(s(5), 0).unwrap();
        let cut = slow.check(s(6), 10).unwrap_err();
        assert!(
            cut.contains("10 bytes in the last 6.0 s") && cut.contains("--upload-min-rate"),
            "{cut}"
        );

        let mut steady = RateCheck::new(floor);
        for t in 1..=30 {
            steady.check(s(t), 100 * t).unwrap();
        }
        assert_eq!(steady.next_check(), Some(s(34)));
        // It slows down: the next full window is under the rate.
        steady.check(s(31), 3050).unwrap();
        assert!(steady.check(s(34), 3100).is_err());

        let off = MinRate {
            bytes_per_sec: 0,
            ..floor
        };
        let mut unchecked = RateCheck::new(off);
        assert_eq!(unchecked.next_check(), None);
        unchecked.check(s(1000), 0).unwrap();
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
