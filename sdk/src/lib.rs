//! The Rust SDK for wasmos frameworks. Not written yet: it arrives with the
//! networked cluster (scheduler client, job runner). The wire types it will
//! use are re-exported here so early users can already build requests.

pub use wasmos_proto::v1 as proto;
