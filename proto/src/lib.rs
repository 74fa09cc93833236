//! The `wasmos.v1` wire protocol: prost messages and tonic services generated
//! from `proto/wasmos/v1/*.proto`, which are the single source of truth for
//! the wire format and its reference documentation.
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
    tonic::include_proto!("wasmos.v1");
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
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("wasmos_descriptor");
