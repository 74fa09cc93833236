//! Why the core refused a call.
//!
//! Every variant names the thing that was wrong, so the gRPC shell can pass
//! the message to the caller as it is. A refused call changes nothing.

use crate::ids::{AgentId, FrameworkId, OfferId, TaskId};

/// A call the core refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error(
        "unknown framework {0}: it was torn down or missed its failover timeout; subscribe without an id to start over"
    )]
    UnknownFramework(FrameworkId),
    #[error("framework {0} cannot change its role from `{1}` to `{2}`")]
    RoleChange(FrameworkId, String, String),
    #[error("offer {0} is unknown or no longer valid (already used, declined or rescinded)")]
    UnknownOffer(OfferId),
    #[error("offer {offer} belongs to another framework, not {framework}")]
    ForeignOffer {
        offer: OfferId,
        framework: FrameworkId,
    },
    #[error("offer {0} is listed twice")]
    DuplicateOffer(OfferId),
    #[error("offers {0} and {1} are on different agents: one accept uses offers of one agent")]
    OffersOnDifferentAgents(OfferId, OfferId),
    #[error("accept names no offer")]
    NoOffers,
    #[error("task {task}: {message}")]
    InvalidTask { task: String, message: String },
    #[error("task id {0} is already in use")]
    DuplicateTask(TaskId),
    #[error("tasks need more {resource} than the offers hold: {needed} > {offered}")]
    InsufficientResources {
        resource: &'static str,
        needed: String,
        offered: String,
    },
    #[error("unknown task {0}")]
    UnknownTask(TaskId),
    #[error("task {task} belongs to another framework, not {framework}")]
    ForeignTask {
        task: TaskId,
        framework: FrameworkId,
    },
    #[error("{0}")]
    InvalidRole(String),
    #[error("agent registration refused: {0}")]
    InvalidAgent(String),
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Exhausted(String),
    /// What the call names is not there (its message says what).
    #[error("{0}")]
    NotFound(String),
    /// What the call needs is out of reach for now (an agent not
    /// connected); trying again later may work.
    #[error("{0}")]
    Unavailable(String),
}
