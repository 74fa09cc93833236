//! What a TLS server of the cluster shows and whom it asks for a
//! certificate.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::{Result, ServerIdentity, TlsError, cert, provider};

impl ServerIdentity {
    /// tonic's form for the gRPC port: the chain and key, and (when
    /// `client_ca_pem` is given) client certificates verified against it
    /// but not required, so frameworks with a token connect too.
    pub fn tonic(&self, client_ca_pem: Option<&str>) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_chain_pem, &self.key_pem))
            .timeout(std::time::Duration::from_secs(10));
        if let Some(ca) = client_ca_pem {
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true);
        }
        config
    }

    /// rustls's form for the HTTP port (no client certificates).
    pub fn rustls(&self) -> Result<Arc<rustls::ServerConfig>> {
        self.rustls_with(rustls::server::WebPkiClientVerifier::no_client_auth())
    }

    /// rustls's form for a port that also takes client certificates
    /// chained to `client_ca_pem`, but does not require one (a standby's
    /// gRPC port: masters show theirs, everyone else is redirected).
    pub fn rustls_verifying_clients(
        &self,
        client_ca_pem: &str,
    ) -> Result<Arc<rustls::ServerConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for der in cert::cert_ders(client_ca_pem)? {
            roots
                .add(der.into())
                .map_err(|e| TlsError::Invalid(format!("the client CA: {e}")))?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Invalid(format!("the client CA: {e}")))?;
        self.rustls_with(verifier)
    }

    fn rustls_with(
        &self,
        clients: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Result<Arc<rustls::ServerConfig>> {
        let chain: Vec<CertificateDer<'static>> = cert::cert_ders(&self.cert_chain_pem)?
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let key = pem::parse_many(&self.key_pem)
            .map_err(|e| TlsError::Invalid(format!("the key is not PEM: {e}")))?
            .into_iter()
            .find(|p| p.tag().ends_with("PRIVATE KEY"))
            .ok_or_else(|| TlsError::Invalid("no PRIVATE KEY in the key file".into()))?;
        let key = match key.tag() {
            "PRIVATE KEY" => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.into_contents())),
            "EC PRIVATE KEY" => PrivateKeyDer::Sec1(key.into_contents().into()),
            "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(key.into_contents().into()),
            other => return Err(TlsError::Invalid(format!("unknown key type {other}"))),
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Invalid(format!("the certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The last certificate of the chain, PEM: the CA clients verify this
    /// server by (for chains the cluster's CA made, that CA).
    pub fn chain_root_pem(&self) -> Result<String> {
        let chain = cert::cert_ders(&self.cert_chain_pem)?;
        let last = chain
            .last()
            .ok_or_else(|| TlsError::Invalid("no certificate in the chain".into()))?;
        Ok(cert::to_pem(last))
    }

    /// The pin of the last certificate of the chain (the CA, for chains
    /// the cluster's CA made).
    pub fn chain_pin(&self) -> Result<String> {
        let chain = cert::cert_ders(&self.cert_chain_pem)?;
        let last = chain
            .last()
            .ok_or_else(|| TlsError::Invalid("no certificate in the chain".into()))?;
        cert::ca_pin(last)
    }
}
