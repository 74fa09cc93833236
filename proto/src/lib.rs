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

/// The encoded `FileDescriptorSet` of all `wasmos.v1` files, for gRPC
/// reflection (so `grpcurl` can list and call the services).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("wasmos_descriptor");
