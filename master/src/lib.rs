//! The wasmos master.
//!
//! - [`allocator`]: hierarchical weighted DRF, a pure module.
//! - [`core`]: the master's state machine (agents, frameworks, offers, tasks):
//!   `Core::handle(input, now) -> outputs`, with no tokio, no sockets and no
//!   clock, so it can be driven by tests and simulations directly.
//!
//! - [`server`]: the gRPC/HTTP shell that feeds the core from the network;
//!   the only part that knows about tokio, tonic or axum.

pub mod access;
pub mod allocator;
pub mod core;
pub mod ids;
pub mod limits;
pub mod resources;
pub mod sandbox_read;
pub mod server;
pub mod store;
pub mod time;

pub use allocator::{Allocation, Allocator, AllocatorConfig};
pub use ids::{AgentId, FrameworkId, OfferId, Role, TaskId};
pub use resources::Resources;
pub use time::Time;
