//! The wasmos master.
//!
//! The pure parts live in `wasmos-core` and are re-exported here at their
//! old paths:
//!
//! - [`allocator`]: hierarchical weighted DRF, a pure module.
//! - [`core`]: the master's state machine (agents, frameworks, offers, tasks):
//!   `Core::handle(input, now) -> outputs`, with no tokio, no sockets and no
//!   clock, so it can be driven by tests and simulations directly.
//!
//! This crate is the shell:
//!
//! - [`server`]: the gRPC/HTTP shell that feeds the core from the network;
//!   the only part that knows about tokio, tonic or axum.
//! - [`store`]: the registry's durable backend (redb), beside the core's
//!   records and [`store::MemoryStore`].
//! - [`jobs`]: the job service's state machine (sans-IO, like the core):
//!   jobs that live in the master, run as one framework per owner.

pub mod etcd;
pub mod jobs;
pub mod server;
pub mod store;

pub use wasmos_core::{
    access, allocator, core, ids, limits, packing, resources, retry, sandbox_read, time,
};

pub use allocator::{Allocation, Allocator, AllocatorConfig};
pub use ids::{AgentId, FrameworkId, OfferId, Role, TaskId};
pub use resources::Resources;
pub use time::Time;
