//! TLS for a wasmos cluster, shared by the master, the agents and every
//! client.
//!
//! - [`Ca`]: the cluster's certificate authority, made by the master on its
//!   first start and kept in its registry; it issues the master's server
//!   certificate and each agent's client certificate.
//! - [`AgentKey`]: an agent's own key and the request it sends when it
//!   joins; its certificate names its agent id, which the master takes as
//!   the agent's identity (see [`agent_id_of`]).
//! - [`Secret`] and [`JoinString`]: bearer tokens (a public accessor and a
//!   secret the master keeps only as a hash) and the one string an operator
//!   hands to a new agent.
//! - [`fetch_pinned_ca`] and [`speaks_tls`]: the two handshakes made before
//!   any trust exists: fetching the CA by the hash a join string pins, and
//!   telling a user whose `http://` URL points at a TLS master to use
//!   `https://`.
//! - [`ClientTls`]: what a client trusts and shows, as tonic's config.
//!
//! Everything is rustls on ring: no OpenSSL, one crypto provider.

mod ca;
mod cert;
mod client;
mod files;
mod handshake;
mod server;
mod token;

pub use ca::{AgentKey, Ca, IssuedCert, ServerIdentity};
pub use cert::{agent_id_of, ca_pin, first_cert_der, master_id_of, not_after_ms};
pub use client::ClientTls;
pub use files::{private_dir, write_file};
pub use handshake::{fetch_pinned_ca, speaks_tls};
pub use token::{JoinString, Secret, hash_secret};

/// What went wrong with a certificate, key or token. Messages say which.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("{0}")]
    Handshake(String),
}

pub type Result<T, E = TlsError> = std::result::Result<T, E>;

fn rcgen(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Rcgen { what, source }
}

/// Milliseconds since the Unix epoch, now.
#[cfg(test)]
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// rustls's crypto: ring, and only ring.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
