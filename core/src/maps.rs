//! The core's hash maps and sets: std's, hashed with foldhash instead of
//! SipHash.
//!
//! Every map the core keeps is keyed by string ids (tasks, offers, agents,
//! frameworks), many of them chosen by clients, and looked up several
//! times per task. foldhash is seeded at random for each map, so a client
//! cannot pick ids that collide in every master, and hashes a short id in
//! a fraction of SipHash's time: 100,000 simulated agents run about 9%
//! faster with it (BENCHMARKS.md). Build them with `default()` (or
//! `with_capacity_and_hasher`), not `new()`.

/// A `std::collections::HashMap` hashed with foldhash.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A `std::collections::HashSet` hashed with foldhash.
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
