//! Compiles `proto/wasmos/v1/*.proto` with protox (pure Rust, no `protoc`)
//! and generates prost messages, plus tonic clients and servers with the
//! `grpc` feature (without it the generated code never names tonic). With
//! `grpc`, also the clients of the subset of etcd's API under `proto/etcd/`
//! that a master on etcd speaks.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/wasmos/v1/common.proto",
    "proto/wasmos/v1/scheduler.proto",
    "proto/wasmos/v1/agent.proto",
    "proto/wasmos/v1/artifacts.proto",
    "proto/wasmos/v1/operator.proto",
    "proto/wasmos/v1/registry.proto",
    "proto/wasmos/v1/executor.proto",
    "proto/wasmos/v1/jobs.proto",
];

const ETCD_PROTOS: &[&str] = &[
    "proto/etcd/mvccpb/kv.proto",
    "proto/etcd/etcdserverpb/rpc.proto",
    "proto/etcd/v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS.iter().chain(ETCD_PROTOS) {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;

    // The encoded descriptor set feeds gRPC reflection on the master.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("wasmos_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .compile_fds(fds)?;

    // etcd's services are only called, never served, and stay out of the
    // descriptor set above (reflection lists wasmos's own services).
    if grpc {
        tonic_prost_build::configure()
            .build_server(false)
            .build_client(true)
            .compile_fds(protox::compile(ETCD_PROTOS, ["proto"])?)?;
    }
    Ok(())
}
