//! The wasmos master's pure half: everything that decides, nothing that
//! waits. No tokio, no sockets, no files and no clock (the shell,
//! `wasmos-master`, passes the time in), so tests, simulations, fuzz targets
//! and benchmarks drive it directly, and `.ci/run` checks its dependency
//! graph holds none of tokio, tonic, axum, hyper or redb.
//!
//! - [`allocator`]: hierarchical weighted DRF.
//! - [`core`]: the master's state machine (agents, frameworks, offers, tasks):
//!   `Core::handle(input, now) -> outputs`.
//! - [`store`]: the registry's records and writes (what the core asks the
//!   shell to persist), the `Store` trait and an in-memory store.
//! - [`access`], [`limits`], [`sandbox_read`]: the rules for callers, as
//!   pure functions; the core applies those that need its records
//!   (`Core::authorize`, and `Input::ReadSandbox`, which checks a read
//!   and sends it to its agent) and the shell the
//!   rest.
//! - [`artifact_limits`]: the artifact store's bounds (who holds how many
//!   artifacts and bytes, who may store one more, uploads at once).
//! - [`packing`]: how a framework fills its offers, and [`retry`]: which
//!   failed tasks run again; for every scheduler (the SDK, the CLI, the
//!   job service, simulations, benches) to share.
//! - [`ids`], [`resources`], [`time`]: the types they share; `deadlines`,
//!   the timer index both keep; [`maps`], the hash maps they key by id.
//! - `testing` (feature `testing`): the harness that drives the core as the
//!   shell would, checking its invariants after every step.

pub mod access;
pub mod allocator;
pub mod artifact_limits;
pub mod core;
mod deadlines;
pub mod ids;
pub mod limits;
pub mod maps;
pub mod packing;
pub mod resources;
pub mod retry;
pub mod sandbox_read;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;

pub use allocator::{Allocation, Allocator, AllocatorConfig};
pub use ids::{AgentId, FrameworkId, OfferId, Role, TaskId};
pub use resources::Resources;
pub use time::Time;
