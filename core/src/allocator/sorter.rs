//! An ordered set of clients keyed by share: the DRF sorter.
//!
//! Mesos' sorter re-sorts all clients whenever it is asked for the order.
//! Here the clients sit in a binary min-heap: the lowest share is the root,
//! and a client whose share changed moves up or down a path of the heap
//! (O(log n), no search: its owner remembers where it sits, told through
//! the `moved` callback every time it moves). The usual move is the root's
//! (the lowest share was just granted something), which a B-tree would pay
//! for with a removal and a search from the top. Walking the order
//! (`iter`) enumerates the heap lazily and stops at the first client that
//! can take an offer; its first step allocates nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Sort key: the share as ordered bits, then a stable tie-break (the
/// client's index), so no two clients have the same key.
///
/// Shares are finite and non-negative, and for such `f64`s the IEEE bit
/// pattern orders exactly like the number, so no float comparison is needed.
pub type Key = (u64, u32);

/// The key of a client with `share` and tie-break `index`.
pub fn key(share: f64, index: u32) -> Key {
    debug_assert!(share.is_finite() && share >= 0.0, "share {share}");
    (share.max(0.0).to_bits(), index)
}

/// Clients (by index, the key's second half) in ascending order of share.
///
/// Every method that moves clients calls `moved(client, position)` for each
/// client whose position changed (the one inserted or updated included);
/// `update` and `remove` take that position back.
#[derive(Debug, Default)]
pub struct Sorter {
    heap: Vec<Key>,
}

impl Sorter {
    /// Adds a client.
    pub fn insert(&mut self, key: Key, moved: &mut impl FnMut(u32, u32)) {
        self.heap.push(key);
        self.sift_up(self.heap.len() - 1, moved);
    }

    /// Removes the client at `position`.
    pub fn remove(&mut self, position: u32, moved: &mut impl FnMut(u32, u32)) {
        let at = position as usize;
        let last = self.heap.pop().expect("remove from an empty sorter");
        if at < self.heap.len() {
            self.heap[at] = last;
            self.place(at, moved);
        }
    }

    /// Gives the client at `position` its new key.
    pub fn update(&mut self, position: u32, new: Key, moved: &mut impl FnMut(u32, u32)) {
        let at = position as usize;
        debug_assert_eq!(self.heap[at].1, new.1, "a client keeps its index");
        if self.heap[at] != new {
            self.heap[at] = new;
            self.place(at, moved);
        }
    }

    /// The key at `position` (for consistency checks).
    pub fn at(&self, position: u32) -> Option<Key> {
        self.heap.get(position as usize).copied()
    }

    /// The client right after `key` in order.
    pub fn next_after(&self, key: Key) -> Option<Key> {
        self.iter().find(|k| *k > key)
    }

    /// Clients from the lowest share up: the first for free, each next one
    /// for O(log k) at the k-th.
    pub fn iter(&self) -> Ascending<'_> {
        Ascending {
            heap: &self.heap,
            frontier: BinaryHeap::new(),
            expand: None,
            started: false,
        }
    }

    /// Every client's key, in no particular order.
    pub fn unordered(&self) -> impl Iterator<Item = Key> + '_ {
        self.heap.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Moves the key at `at` up or down to where it belongs.
    fn place(&mut self, at: usize, moved: &mut impl FnMut(u32, u32)) {
        if at > 0 && self.heap[at] < self.heap[(at - 1) / 2] {
            self.sift_up(at, moved);
        } else {
            self.sift_down(at, moved);
        }
    }

    fn sift_up(&mut self, mut at: usize, moved: &mut impl FnMut(u32, u32)) {
        let key = self.heap[at];
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.heap[parent] < key {
                break;
            }
            self.heap[at] = self.heap[parent];
            moved(self.heap[at].1, at as u32);
            at = parent;
        }
        self.heap[at] = key;
        moved(key.1, at as u32);
    }

    fn sift_down(&mut self, mut at: usize, moved: &mut impl FnMut(u32, u32)) {
        let key = self.heap[at];
        let len = self.heap.len();
        loop {
            let left = 2 * at + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right] < self.heap[left] {
                right
            } else {
                left
            };
            if key < self.heap[child] {
                break;
            }
            self.heap[at] = self.heap[child];
            moved(self.heap[at].1, at as u32);
            at = child;
        }
        self.heap[at] = key;
        moved(key.1, at as u32);
    }
}

/// The heap's keys in ascending order: a frontier of the positions whose
/// parents were yielded, smallest first.
pub struct Ascending<'a> {
    heap: &'a [Key],
    frontier: BinaryHeap<Reverse<(Key, usize)>>,
    /// The position yielded last, whose children join the frontier on the
    /// next step.
    expand: Option<usize>,
    started: bool,
}

impl Iterator for Ascending<'_> {
    type Item = Key;

    fn next(&mut self) -> Option<Key> {
        if !self.started {
            self.started = true;
            self.expand = (!self.heap.is_empty()).then_some(0);
            return self.heap.first().copied();
        }
        if let Some(at) = self.expand.take() {
            for child in [2 * at + 1, 2 * at + 2] {
                if let Some(&key) = self.heap.get(child) {
                    self.frontier.push(Reverse((key, child)));
                }
            }
        }
        let Reverse((key, at)) = self.frontier.pop()?;
        self.expand = Some(at);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn orders_by_share_then_index() {
        let mut s = Sorter::default();
        let mut at = HashMap::new();
        let mut moved = |c: u32, p: u32| {
            at.insert(c, p);
        };
        s.insert(key(0.5, 1), &mut moved);
        s.insert(key(0.25, 2), &mut moved);
        s.insert(key(0.5, 0), &mut moved);
        let order: Vec<u32> = s.iter().map(|k| k.1).collect();
        assert_eq!(order, vec![2, 0, 1]);
        let p = at[&2];
        s.update(p, key(0.75, 2), &mut |c, p| {
            at.insert(c, p);
        });
        let order: Vec<u32> = s.iter().map(|k| k.1).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(s.next_after(key(0.5, 0)), Some(key(0.5, 1)));
        assert_eq!(s.next_after(key(0.75, 2)), None);
        assert_eq!(f64::from_bits(key(0.75, 2).0), 0.75);
    }

    /// Random inserts, updates and removals keep the same order as a
    /// B-tree of the same keys, and every client where `moved` last said.
    #[test]
    fn matches_a_sorted_set_under_random_moves() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut sorter = Sorter::default();
        let mut set = BTreeSet::new();
        let mut keys: HashMap<u32, Key> = HashMap::new();
        let mut at: HashMap<u32, u32> = HashMap::new();
        for step in 0..20_000 {
            let client = rng.random_range(0..200u32);
            let share = rng.random_range(0..50u32) as f64 / 50.0;
            let position = at.get(&client).copied();
            let mut moved = |c: u32, p: u32| {
                at.insert(c, p);
            };
            match keys.get(&client).copied() {
                None => {
                    let k = key(share, client);
                    sorter.insert(k, &mut moved);
                    set.insert(k);
                    keys.insert(client, k);
                }
                Some(old) if rng.random_bool(0.3) => {
                    sorter.remove(position.unwrap(), &mut moved);
                    set.remove(&old);
                    keys.remove(&client);
                    at.remove(&client);
                }
                Some(old) => {
                    let k = key(share, client);
                    sorter.update(position.unwrap(), k, &mut moved);
                    set.remove(&old);
                    set.insert(k);
                    keys.insert(client, k);
                }
            }
            if step % 97 == 0 {
                let ours: Vec<Key> = sorter.iter().collect();
                let theirs: Vec<Key> = set.iter().copied().collect();
                assert_eq!(ours, theirs, "step {step}");
                for (client, k) in &keys {
                    assert_eq!(sorter.heap[at[client] as usize], *k);
                    assert_eq!(sorter.next_after(*k), set.range(k..).nth(1).copied());
                }
            }
        }
    }
}
