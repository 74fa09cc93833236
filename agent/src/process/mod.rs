//! The executor process: tasks run in `wasmos executor`, a child of the
//! agent in a session of its own, so that an agent can be killed,
//! restarted or upgraded while its tasks go on.
//!
//! The room: the [`service`] (the executor's side: the [`Executor`], its
//! checkpoint and disk collector, and every task and update it holds),
//! [`server`] (that service on a Unix socket, as the process runs it),
//! [`handle`] (the agent's side) with `supervise` (find or start the
//! executor process, shake hands, drain one of another protocol, start a
//! new one when it dies), [`artifacts`] (artifacts fetched through
//! the agent), [`wire`] (framing). Nothing here uses tonic: the messages are
//! `wasmos.v1` prost types (`executor.proto`), the transport a socket.
//!
//! On platforms without Unix sockets the service runs in the agent's own
//! process behind the same handle (see [`handle::Mode`]).
//!
//! [`Executor`]: crate::Executor

pub mod artifacts;
pub mod handle;
mod regroup;
#[cfg(unix)]
pub mod server;
pub mod service;
#[cfg(unix)]
mod supervise;
pub mod wire;

#[cfg(unix)]
pub use supervise::executor_args;

use wasmos_proto::v1;

/// The protocol this build speaks: the major version changes when a message
/// changes meaning; the minor one when fields are added.
pub const PROTOCOL_MAJOR: u32 = 1;
/// 1.1: artifacts spooled to a file (`ArtifactRequest.spool_path`).
/// 1.2: updates sent before their commit (`StatusUpdates.unsynced`, then
/// `synced`), to an agent that says 1.2 or later.
pub const PROTOCOL_MINOR: u32 = 2;

/// Whether an agent of protocol `theirs` takes unsynced updates.
pub fn takes_unsynced(theirs: &v1::ExecutorProtocol) -> bool {
    theirs.major == PROTOCOL_MAJOR && theirs.minor >= 2
}

/// This build's protocol.
pub fn protocol() -> v1::ExecutorProtocol {
    v1::ExecutorProtocol {
        major: PROTOCOL_MAJOR,
        minor: PROTOCOL_MINOR,
        build: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Parses `MAJOR.MINOR` (tests force another version with it).
pub fn parse_protocol(text: &str) -> Result<v1::ExecutorProtocol, String> {
    let (major, minor) = text.split_once('.').unwrap_or((text, "0"));
    let parse = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("`{text}` is not a protocol version like 1.0"))
    };
    Ok(v1::ExecutorProtocol {
        major: parse(major)?,
        minor: parse(minor)?,
        build: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Whether two sides can talk: the same major version.
pub fn compatible(a: &v1::ExecutorProtocol, b: &v1::ExecutorProtocol) -> bool {
    a.major == b.major
}

/// `major.minor`, for messages.
pub fn show(p: &v1::ExecutorProtocol) -> String {
    format!("{}.{}", p.major, p.minor)
}

/// The executor's socket for a work dir: `executor.sock` in it, or, when
/// that path is longer than the OS takes for a socket, in a private
/// directory of the temp dir named for the work dir.
pub fn socket_path(work_dir: &std::path::Path) -> std::path::PathBuf {
    wasmos_platform::socket::socket_path(work_dir, "executor.sock")
}

/// The file the executor writes its process id to.
pub fn pid_path(work_dir: &std::path::Path) -> std::path::PathBuf {
    work_dir.join("executor.pid")
}
