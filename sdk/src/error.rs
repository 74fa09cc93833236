//! The SDK's one error type.

use std::time::Duration;

/// Everything that can go wrong in the SDK.
///
/// Every variant's message says what happened *and* what to try next, because
/// the usual consumer is a command-line tool that prints it as is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The master URL could not be parsed.
    #[error(
        "invalid master URL `{url}`: {message}; use the form http://HOST:PORT (e.g. http://127.0.0.1:5050)"
    )]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },

    /// No connection to the master could be made.
    #[error(
        "cannot connect to the master at {url}: {source}; is `wasmos master` running there and reachable?"
    )]
    Connect {
        /// The URL dialled.
        url: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },

    /// The master refused or failed a call. `status.message()` is the
    /// master's own explanation (an invalid task spec, an unknown offer, ...).
    #[error("{call} failed: {}{}", status.message(), hint(status))]
    Rpc {
        /// The call that failed (`Accept`, `Upload`, ...).
        call: &'static str,
        /// The gRPC status returned.
        status: tonic::Status,
    },

    /// Text given as a module was neither a wasm binary nor valid `.wat`.
    #[error(
        "the module is not valid WebAssembly text: {0}; pass a `.wasm` binary or fix the `.wat` source"
    )]
    Wat(String),

    /// The subscription ended for good: the master removed the framework
    /// (teardown, or it did not re-subscribe within its failover timeout).
    #[error("the framework's subscription ended: {0}; subscribe again to start a new framework")]
    SubscriptionEnded(String),

    /// The master did not answer the first subscription in time.
    #[error("the master did not confirm the subscription within {0:?}; check the master's logs")]
    SubscribeTimeout(Duration),

    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The job's session was lost and could not be recovered.
    #[error("job `{job}` failed: {message}")]
    Job {
        /// The job's name.
        job: String,
        /// What went wrong, and what to do.
        message: String,
    },
}

fn hint(status: &tonic::Status) -> &'static str {
    use tonic::Code;
    match status.code() {
        Code::Unavailable => {
            " (the master is unreachable or shutting down: retry, or check that it runs)"
        }
        Code::NotFound => " (the master does not know it: it may have expired or been removed)",
        Code::InvalidArgument => " (the request was rejected: fix the values named above)",
        Code::PermissionDenied => " (it belongs to another framework)",
        Code::AlreadyExists => " (ids must be unique across the cluster: pick a fresh one)",
        Code::ResourceExhausted => {
            " (a size limit was hit: make it smaller or raise the master's limit)"
        }
        _ => "",
    }
}

impl Error {
    pub(crate) fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Rpc { call, status }
    }

    /// The gRPC status code, if this error came from a call to the master.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
