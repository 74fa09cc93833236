//! What differs between the operating systems wasmos runs on.
//!
//! One module a concern, each with a counterpart on every OS, so that the
//! rest of the workspace has no `cfg` of its own for these and a port to a
//! new OS is a change here alone. Where an OS has no such thing (rlimits on
//! Windows), the counterpart says so in its doc and returns what a caller
//! can act on (`None`), never a silent wrong answer.

pub mod cpu_time;
pub mod disk;
pub mod host;
pub mod limits;
pub mod private;
pub mod socket;
