//! What a client of the master trusts and shows.

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The CA a client verifies the master against and, for agents, the
/// certificate it proves itself with.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// PEM of the CA (or CAs) the master's certificate must chain to.
    pub ca_pem: String,
    /// PEM of the client's certificate and key (agents: mTLS).
    pub identity: Option<(String, String)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// A client that trusts `ca_pem` and shows no certificate.
    pub fn trusting(ca_pem: impl Into<String>) -> ClientTls {
        ClientTls {
            ca_pem: ca_pem.into(),
            identity: None,
        }
    }

    /// tonic's form. The master's name is checked against the URL's host.
    pub fn tonic(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .assume_http2(true);
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }
}

impl ClientTls {
    /// rustls's form, for clients other than tonic (HTTP).
    pub fn rustls(&self) -> crate::Result<std::sync::Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for der in crate::cert::cert_ders(&self.ca_pem)? {
            roots
                .add(der.into())
                .map_err(|e| crate::TlsError::Invalid(format!("the CA: {e}")))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| crate::TlsError::Invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(std::sync::Arc::new(config))
    }
}
