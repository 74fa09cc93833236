//! Example frameworks for wasmos arrive with the SDK. The guest programs live
//! in `examples/guests/`, a workspace of its own built for `wasm32-wasip1`.
