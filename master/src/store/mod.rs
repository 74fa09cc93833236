//! The master's registry: what it persists because it cannot be rebuilt
//! from what agents and frameworks tell it again.
//!
//! The records, the [`Store`] trait, its start-up check ([`open`]) and
//! [`MemoryStore`] are pure and live in `wasmos-core` (its `store` module,
//! re-exported here whole); this module adds the durable backend,
//! [`RedbStore`] (embedded, the default, in the work dir), and the registry
//! several masters share, [`EtcdStore`].
//!
//! Files: `redb.rs`, `etcd.rs`, `power_loss.rs` (a redb storage backend for tests that
//! loses every write not yet synced when its "power" goes), `gated.rs` (a
//! store whose commits tests hold).

mod etcd;
mod gated;
pub mod power_loss;
mod redb;

pub use etcd::{EtcdStore, Fence, MAX_TXN_BYTES, MAX_TXN_OPS};
pub use gated::GatedStore;
pub use redb::RedbStore;
pub use wasmos_core::store::*;

/// Opens `store` as [`wasmos_core::store::open`] does, giving a registry
/// without a launch key a new random one.
pub fn open(store: &dyn Store) -> Result<Opened, StoreError> {
    wasmos_core::store::open(store, rand::random())
}

#[cfg(test)]
mod tests;
