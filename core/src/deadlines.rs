//! Deadlines of one kind of thing, earliest first.
//!
//! The core keeps one of these per kind of timer (offer expiry, agent
//! timeouts, framework failover, offer filters) instead of scanning every
//! agent, offer and framework on a clock tick: the earliest deadline is
//! [`Core::next_timeout`](crate::core::Core::next_timeout), and a tick pops
//! only what is due. Each key holds at most one deadline; setting it again
//! moves it, so a heartbeat pushes an agent's timeout forward and leaves
//! nothing stale behind to wake the master early.
//!
//! Keys are bucketed by their millisecond: thousands of offers made in one
//! cycle expire in the same millisecond, and a tree of `(time, key)` pairs
//! would compare their ids byte by byte on every insert and removal; here
//! the tree holds times and each bucket is a hash set.

use crate::maps::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::hash::Hash;

use crate::time::Time;

#[derive(Debug)]
pub struct Deadlines<K> {
    by_time: BTreeMap<Time, HashSet<K>>,
    by_key: HashMap<K, Time>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            by_time: BTreeMap::new(),
            by_key: HashMap::default(),
        }
    }
}

impl<K: Ord + Hash + Clone> Deadlines<K> {
    /// Sets `key`'s deadline to `at`, replacing any it had.
    pub fn set(&mut self, key: K, at: Time) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            if old == at {
                return;
            }
            self.unbucket(&key, old);
        }
        self.by_time.entry(at).or_default().insert(key);
    }

    /// Forgets `key`'s deadline, if it has one.
    pub fn clear(&mut self, key: &K) {
        if let Some(at) = self.by_key.remove(key) {
            self.unbucket(key, at);
        }
    }

    fn unbucket(&mut self, key: &K, at: Time) {
        if let Some(bucket) = self.by_time.get_mut(&at) {
            bucket.remove(key);
            if bucket.is_empty() {
                self.by_time.remove(&at);
            }
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Time> {
        self.by_time.first_key_value().map(|(at, _)| *at)
    }

    /// `key`'s deadline.
    pub fn get(&self, key: &K) -> Option<Time> {
        self.by_key.get(key).copied()
    }

    /// Removes and returns the keys whose deadline is at or before `now`,
    /// earliest first (keys due in the same millisecond in their order).
    pub fn pop_due(&mut self, now: Time) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((&at, _)) = self.by_time.first_key_value() {
            if at > now {
                break;
            }
            let (_, bucket) = self.by_time.pop_first().expect("non-empty");
            let mut keys: Vec<K> = bucket.into_iter().collect();
            keys.sort_unstable();
            for key in &keys {
                self.by_key.remove(key);
            }
            due.extend(keys);
        }
        due
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_a_deadline_leaves_nothing_behind() {
        let mut d = Deadlines::default();
        d.set("a", Time(30));
        d.set("b", Time(20));
        assert_eq!(d.next(), Some(Time(20)));
        d.set("b", Time(40)); // a heartbeat moved it
        assert_eq!(d.next(), Some(Time(30)));
        assert_eq!(d.len(), 2);
        d.clear(&"a");
        assert_eq!(d.next(), Some(Time(40)));
        assert_eq!(d.pop_due(Time(39)), Vec::<&str>::new());
        assert_eq!(d.pop_due(Time(40)), vec!["b"]);
        assert_eq!(d.len(), 0);
        assert_eq!(d.next(), None);
    }

    #[test]
    fn due_keys_come_out_earliest_first() {
        let mut d = Deadlines::default();
        for (key, at) in [("c", 3), ("a", 1), ("b", 2), ("z", 9)] {
            d.set(key, Time(at));
        }
        assert_eq!(d.pop_due(Time(5)), vec!["a", "b", "c"]);
        assert_eq!(d.get(&"z"), Some(Time(9)));
    }
}
