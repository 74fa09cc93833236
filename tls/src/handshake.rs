//! The two TLS handshakes a process makes before it trusts anything:
//!
//! - [`fetch_pinned_ca`]: a joining agent knows only the hash of the CA's
//!   public key. It accepts the master's chain only if a certificate in it
//!   has that key and the master's certificate verifies against it (name
//!   included), and from then on trusts that CA alone.
//! - [`speaks_tls`]: whether a server that refused a plaintext client
//!   answers a TLS hello, so the client can say "use https://".

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use crate::{Result, TlsError, cert, provider};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `master` (`host:port`), checks its chain against `pin`
/// (`sha256:<hex>`) and returns the pinned CA's certificate, PEM.
pub async fn fetch_pinned_ca(master: &str, pin: &str) -> Result<String> {
    let verifier = Arc::new(Pinned {
        pin: pin.to_string(),
        provider: provider(),
        found: Mutex::new(None),
    });
    handshake(master, verifier.clone())
        .await
        .map_err(|e| TlsError::Handshake(format!("{master}: {e}")))?;
    let ca = verifier
        .found
        .lock()
        .expect("not poisoned")
        .take()
        .ok_or_else(|| TlsError::Handshake(format!("{master} showed no certificate")))?;
    Ok(cert::to_pem(&ca))
}

/// True when `server` (`host:port`) answers a TLS hello with a certificate.
pub async fn speaks_tls(server: &str) -> bool {
    let verifier = Arc::new(Sniff {
        provider: provider(),
        saw_certificate: Mutex::new(false),
    });
    let _ = handshake(server, verifier.clone()).await;
    *verifier.saw_certificate.lock().expect("not poisoned")
}

async fn handshake(server: &str, verifier: Arc<dyn ServerCertVerifier>) -> Result<(), String> {
    let host = server
        .rsplit_once(':')
        .map_or(server, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("bad host: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let attempt = async {
        let tcp = TcpStream::connect(server)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        connector
            .connect(name, tcp)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"))?
}

/// Accepts a chain only through the CA whose public key hashes to `pin`.
#[derive(Debug)]
struct Pinned {
    pin: String,
    provider: Arc<CryptoProvider>,
    found: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| cert::ca_pin(c).is_ok_and(|pin| pin == self.pin))
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the master's certificate is not from the CA the join string pins ({})",
                    self.pin
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        *self.found.lock().expect("not poisoned") = Some(ca.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Notes that the server showed a certificate, then ends the handshake:
/// nothing is ever sent over it.
#[derive(Debug)]
struct Sniff {
    provider: Arc<CryptoProvider>,
    saw_certificate: Mutex<bool>,
}

impl ServerCertVerifier for Sniff {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.saw_certificate.lock().expect("not poisoned") = true;
        Err(rustls::Error::General("only probing".into()))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("only probing".into()))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("only probing".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
