//! The `wasmos.v1` wire protocol: prost messages and tonic services generated
//! from `proto/wasmos/v1/*.proto`, which are the single source of truth for
//! the wire format and its reference documentation. The services (clients
//! and servers) need the default `grpc` feature; the messages do not, so a
//! crate that only handles messages can leave tonic out.
//!
//! ```
//! use wasmos_proto::v1::{Resources, TaskSpec};
//!
//! let spec = TaskSpec {
//!     task_id: "hello-0".into(),
//!     resources: Some(Resources { cpus: 0.5, mem: 64 << 20, disk: 0 }),
//!     ..Default::default()
//! };
//! assert_eq!(spec.resources.unwrap().cpus, 0.5);
//! ```

/// Messages and services of the `wasmos.v1` package.
pub mod v1 {
    #![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
    include!(concat!(env!("OUT_DIR"), "/wasmos.v1.rs"));
}

/// The clients of etcd's v3 API that a master on etcd uses (key-value,
/// leases, elections, maintenance): etcd's own packages and field numbers,
/// trimmed to what wasmos calls.
#[cfg(feature = "grpc")]
pub mod etcd {
    #![allow(clippy::all, missing_docs)]
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    }
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    }
    pub mod v3electionpb {
        include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    }
}

/// The metadata key of the leader's gRPC URL in a standby master's
/// answers (`UNAVAILABLE` to every call, before any credential check):
/// clients go there at once.
pub const LEADER_METADATA: &str = "wasmos-leader";

/// The metadata key of how long to wait, in milliseconds, in a standby
/// master's answers while nobody leads (an election is on).
pub const RETRY_METADATA: &str = "wasmos-retry-ms";

/// Where a standby master's answer sends its caller: to the leader, or to
/// wait while an election is on.
#[cfg(feature = "grpc")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StandbyHint {
    /// The leader's gRPC URL ([`LEADER_METADATA`]).
    Leader(String),
    /// How long to wait before asking again ([`RETRY_METADATA`]).
    Wait(std::time::Duration),
}

#[cfg(feature = "grpc")]
impl StandbyHint {
    /// The hint a standby's `UNAVAILABLE` answer carries; `None` for any
    /// other answer.
    pub fn of(status: &tonic::Status) -> Option<StandbyHint> {
        if status.code() != tonic::Code::Unavailable {
            return None;
        }
        let metadata = |key: &str| status.metadata().get(key).and_then(|v| v.to_str().ok());
        if let Some(leader) = metadata(LEADER_METADATA) {
            return Some(StandbyHint::Leader(leader.to_string()));
        }
        let ms = metadata(RETRY_METADATA)?.parse().ok()?;
        Some(StandbyHint::Wait(std::time::Duration::from_millis(ms)))
    }
}

impl v1::TaskState {
    /// Is this a state a task never leaves (`FINISHED`, `FAILED`, `KILLED`,
    /// `LOST`, `ERROR`)? Part of the protocol's meaning, so the master, agents
    /// and SDK all ask it here.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            v1::TaskState::Finished
                | v1::TaskState::Failed
                | v1::TaskState::Killed
                | v1::TaskState::Lost
                | v1::TaskState::Error
        )
    }
}

/// The encoded `FileDescriptorSet` of all `wasmos.v1` files, for gRPC
/// reflection (so `grpcurl` can list and call the services).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wasmos_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_holds_every_file_and_service() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        assert_eq!(fds.file.len(), 8);
        let services: Vec<&str> = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(|s| s.name()))
            .collect();
        for name in ["AgentLink", "Artifacts", "Scheduler", "Operator", "Jobs"] {
            assert!(services.contains(&name), "{name} missing from {services:?}");
        }
    }
}
