//! Example frameworks for wasmos, built on `wasmos-sdk`.
//!
//! - `src/bin/hello_job.rs`: runs a `.wasm`/`.wat` module N times as a
//!   [`wasmos_sdk::Job`] and prints one line per task.
//! - `wat/hello.wat`: a tiny WASI guest that prints `hello` (used by the
//!   SDK's end-to-end tests).
//!
//! The guest programs in Rust live in `examples/guests/`, a workspace of its
//! own built for `wasm32-wasip1`.
