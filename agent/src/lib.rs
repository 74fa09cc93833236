//! The wasmos agent: the executor that runs WASI tasks in wasmtime lands next.
