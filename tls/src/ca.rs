//! The cluster's certificate authority and the certificates it issues.
//!
//! One CA per cluster, made by the master on its first start and kept in its
//! registry (so masters sharing a registry share it). It issues the
//! master's server certificate at every start (covering the names the
//! master is reached by today) and each agent's client certificate, whose
//! subject names the agent id the master assigned at join. Keys are ECDSA
//! P-256: small, fast to make and to verify.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::{Result, TlsError, cert, rcgen};

/// How long before "now" a new certificate is already valid: clocks of the
/// machines of one cluster are never quite equal.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The CA: its certificate and its key.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    key: KeyPair,
    pin: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// A certificate chain and its key, both PEM: what a TLS server shows.
#[derive(Clone)]
pub struct ServerIdentity {
    /// The server certificate, then the CA's.
    pub cert_chain_pem: String,
    pub key_pem: String,
}

/// A certificate the CA signed for an agent.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub cert_pem: String,
    /// When it stops being valid, in ms since the Unix epoch.
    pub not_after_ms: u64,
}

impl Ca {
    /// A new CA, valid for ten years. `cluster` goes into its name, so an
    /// operator looking at a certificate can tell which cluster made it.
    pub fn generate(cluster: &str) -> Result<Ca> {
        let key = KeyPair::generate().map_err(rcgen("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("wasmos cluster CA {cluster}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, Duration::from_secs(10 * 365 * 24 * 3600));
        let cert = params
            .self_signed(&key)
            .map_err(rcgen("signing the CA certificate"))?;
        Ca::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// The CA of an earlier start (or an operator's), from its certificate
    /// and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen("reading the CA key"))?;
        let der = cert::first_cert_der(cert_pem)?;
        let pin = cert::ca_pin(&der)?;
        // Refuse a key that is not the certificate's: every certificate it
        // signed would fail to verify, far from here.
        Issuer::from_ca_cert_pem(cert_pem, &key).map_err(rcgen("reading the CA certificate"))?;
        if cert::public_key_der(&der)? != rcgen::PublicKeyData::subject_public_key_info(&key) {
            return Err(TlsError::Invalid(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            key,
            pin,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// `sha256:<hex>` of the CA's public key: what a join string pins.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(rcgen("reading the CA"))
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid
    /// for `valid_for`, with a new key.
    pub fn issue_server(&self, names: &[String], valid_for: Duration) -> Result<ServerIdentity> {
        let key = KeyPair::generate().map_err(rcgen("generating the server key"))?;
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(rcgen("naming the server certificate"))?;
        params.distinguished_name = name("wasmos master");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, valid_for);
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(rcgen("signing the server certificate"))?;
        Ok(ServerIdentity {
            cert_chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs an agent's certificate request: the certificate carries the
    /// request's public key and nothing else of it; its name is
    /// `agent_id`, chosen by the master.
    pub fn sign_agent(
        &self,
        csr_pem: &str,
        agent_id: &str,
        valid_for: Duration,
    ) -> Result<IssuedCert> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(rcgen("reading the agent's certificate request"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("wasmos agent {agent_id}"));
        params.subject_alt_names = vec![SanType::URI(
            cert::agent_uri(agent_id)
                .try_into()
                .map_err(rcgen("naming the agent certificate"))?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let not_after_ms = validity(&mut params, valid_for);
        let cert = params
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(rcgen("signing the agent certificate"))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            not_after_ms,
        })
    }

    /// A client certificate (with a new key) naming master `master_id`:
    /// what masters of one cluster show each other when they trade
    /// artifacts (see [`master_id_of`](crate::master_id_of)).
    pub fn issue_master(&self, master_id: &str, valid_for: Duration) -> Result<ServerIdentity> {
        let key = KeyPair::generate().map_err(rcgen("generating the master's client key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("wasmos master {master_id}"));
        params.subject_alt_names = vec![SanType::URI(
            cert::master_uri(master_id)
                .try_into()
                .map_err(rcgen("naming the master's client certificate"))?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, valid_for);
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(rcgen("signing the master's client certificate"))?;
        Ok(ServerIdentity {
            cert_chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

/// An agent's own key, made on its machine; the key never leaves it.
pub struct AgentKey {
    key: KeyPair,
}

impl AgentKey {
    pub fn generate() -> Result<AgentKey> {
        Ok(AgentKey {
            key: KeyPair::generate().map_err(rcgen("generating the agent key"))?,
        })
    }

    pub fn from_pem(key_pem: &str) -> Result<AgentKey> {
        Ok(AgentKey {
            key: KeyPair::from_pem(key_pem).map_err(rcgen("reading the agent key"))?,
        })
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate request for this key: proof that the agent holds it.
    pub fn csr_pem(&self) -> Result<String> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name("wasmos agent");
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .map_err(rcgen("making the certificate request"))
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Sets the certificate's validity to [`BACKDATE`] before now until
/// `valid_for` after; returns the end in ms since the Unix epoch.
fn validity(params: &mut CertificateParams, valid_for: Duration) -> u64 {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    let not_after = now + valid_for;
    params.not_after = not_after;
    (not_after.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_survives_its_pem_and_signs_agents_by_the_id_it_chooses() {
        let ca = Ca::generate("test").unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(ca.pin(), again.pin());
        assert!(ca.pin().starts_with("sha256:") && ca.pin().len() == 7 + 64);

        let agent = AgentKey::generate().unwrap();
        let issued = ca
            .sign_agent(&agent.csr_pem().unwrap(), "A7", Duration::from_secs(60))
            .unwrap();
        let der = cert::first_cert_der(&issued.cert_pem).unwrap();
        assert_eq!(cert::agent_id_of(&der).as_deref(), Some("A7"));
        let now = crate::now_ms();
        assert!(issued.not_after_ms > now && issued.not_after_ms <= now + 61_000);
        assert_eq!(
            cert::not_after_ms(&der).unwrap() / 1000,
            issued.not_after_ms / 1000
        );

        let server = ca
            .issue_server(
                &["127.0.0.1".into(), "localhost".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let server_der = cert::first_cert_der(&server.cert_chain_pem).unwrap();
        assert_eq!(cert::agent_id_of(&server_der), None, "a server is no agent");
        assert_eq!(cert::master_id_of(&server_der), None);

        let master = ca.issue_master("M1", Duration::from_secs(60)).unwrap();
        let master_der = cert::first_cert_der(&master.cert_chain_pem).unwrap();
        assert_eq!(cert::master_id_of(&master_der).as_deref(), Some("M1"));
        assert_eq!(cert::agent_id_of(&master_der), None, "a master is no agent");
        assert_eq!(cert::master_id_of(&der), None, "an agent is no master");
    }

    #[test]
    fn a_key_of_another_ca_is_refused() {
        let a = Ca::generate("a").unwrap();
        let b = Ca::generate("b").unwrap();
        let err = Ca::from_pem(a.cert_pem(), b.key_pem()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn garbage_requests_are_refused() {
        let ca = Ca::generate("t").unwrap();
        assert!(
            ca.sign_agent("not a csr", "A1", Duration::from_secs(1))
                .is_err()
        );
    }
}
