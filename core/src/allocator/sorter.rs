//! An ordered set of clients keyed by share: the DRF sorter.
//!
//! Mesos' sorter re-sorts all clients whenever it is asked for the order. Here
//! a client's position is updated when its share changes (O(log n)), so
//! finding the client with the lowest share is O(log n) and walking the order
//! stops at the first client that can take an offer.

use std::collections::BTreeSet;

/// Sort key: the share as ordered bits, then a stable tie-break.
///
/// Shares are finite and non-negative, and for such `f64`s the IEEE bit
/// pattern orders exactly like the number, so no float comparison is needed.
pub type Key = (u64, u32);

/// The key of a client with `share` and tie-break `index`.
pub fn key(share: f64, index: u32) -> Key {
    debug_assert!(share.is_finite() && share >= 0.0, "share {share}");
    (share.max(0.0).to_bits(), index)
}

/// Clients (by index) in ascending order of share.
#[derive(Debug, Default)]
pub struct Sorter {
    order: BTreeSet<Key>,
}

impl Sorter {
    /// Adds a client. The caller remembers `key` to update or remove it.
    pub fn insert(&mut self, key: Key) {
        let fresh = self.order.insert(key);
        debug_assert!(fresh, "client {} inserted twice", key.1);
    }

    /// Removes a client by the key it was inserted with.
    pub fn remove(&mut self, key: Key) {
        let found = self.order.remove(&key);
        debug_assert!(found, "client {} not in sorter", key.1);
    }

    /// Moves a client from `old` to `new`.
    pub fn update(&mut self, old: Key, new: Key) {
        if old == new {
            return;
        }
        // The usual move: the lowest share was just granted something. Its
        // key is the first, taken off the tree's left edge with no search.
        if self.order.first() == Some(&old) {
            self.order.pop_first();
        } else {
            self.remove(old);
        }
        self.insert(new);
    }

    /// The client right after `key` in order.
    pub fn next_after(&self, key: Key) -> Option<Key> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.order.range((Excluded(key), Unbounded)).next().copied()
    }

    /// Clients from the lowest share up.
    pub fn iter(&self) -> impl Iterator<Item = Key> + '_ {
        self.order.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn clear(&mut self) {
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_share_then_index() {
        let mut s = Sorter::default();
        s.insert(key(0.5, 1));
        s.insert(key(0.25, 2));
        s.insert(key(0.5, 0));
        let order: Vec<u32> = s.iter().map(|k| k.1).collect();
        assert_eq!(order, vec![2, 0, 1]);
        s.update(key(0.25, 2), key(0.75, 2));
        let order: Vec<u32> = s.iter().map(|k| k.1).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(f64::from_bits(key(0.75, 2).0), 0.75);
    }
}
