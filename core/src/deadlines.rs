//! Deadlines of one kind of thing, earliest first.
//!
//! The core keeps one of these per kind of timer (offer expiry, agent
//! timeouts, framework failover, offer filters) instead of scanning every
//! agent, offer and framework on a clock tick: the earliest deadline is
//! [`Core::next_timeout`](crate::core::Core::next_timeout), and a tick pops
//! only what is due. Each key holds at most one deadline; setting it again
//! moves it, so a heartbeat pushes an agent's timeout forward in O(log n)
//! and leaves nothing stale behind to wake the master early.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use crate::time::Time;

#[derive(Debug)]
pub struct Deadlines<K> {
    by_time: BTreeSet<(Time, K)>,
    by_key: HashMap<K, Time>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            by_time: BTreeSet::new(),
            by_key: HashMap::new(),
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
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// Forgets `key`'s deadline, if it has one.
    pub fn clear(&mut self, key: &K) {
        if let Some(at) = self.by_key.remove(key) {
            self.by_time.remove(&(at, key.clone()));
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Time> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// `key`'s deadline.
    pub fn get(&self, key: &K) -> Option<Time> {
        self.by_key.get(key).copied()
    }

    /// Removes and returns the keys whose deadline is at or before `now`,
    /// earliest first.
    pub fn pop_due(&mut self, now: Time) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            let (_, key) = self.by_time.pop_first().expect("non-empty");
            self.by_key.remove(&key);
            due.push(key);
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
