//! Compiles `proto/wasmos/v1/*.proto` with protox (pure Rust, no `protoc`)
//! and generates prost messages, plus tonic clients and servers with the
//! `grpc` feature (without it the generated code never names tonic).

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
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
    Ok(())
}
