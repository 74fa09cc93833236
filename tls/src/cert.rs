//! Reading certificates: the agent id one names, when it ends, and the pin
//! of a CA's public key.

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Result, TlsError};

/// The URI an agent certificate carries as its name: `wasmos://agent/<id>`.
pub(crate) fn agent_uri(agent_id: &str) -> String {
    format!("wasmos://agent/{agent_id}")
}

pub(crate) fn master_uri(master_id: &str) -> String {
    format!("wasmos://master/{master_id}")
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| TlsError::Invalid(format!("not an X.509 certificate: {e}")))
}

/// The DER of the first certificate in `pem`.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>> {
    pem::parse_many(pem)
        .map_err(|e| TlsError::Invalid(format!("not PEM: {e}")))?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .ok_or_else(|| TlsError::Invalid("no CERTIFICATE in the PEM".into()))
}

/// `der` as a PEM certificate, with `\n` line ends (as rcgen writes).
pub(crate) fn to_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Every certificate in `pem`, as DER, in order.
pub(crate) fn cert_ders(pem: &str) -> Result<Vec<Vec<u8>>> {
    Ok(pem::parse_many(pem)
        .map_err(|e| TlsError::Invalid(format!("not PEM: {e}")))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect())
}

/// The certificate's SubjectPublicKeyInfo, DER.
pub(crate) fn public_key_der(der: &[u8]) -> Result<Vec<u8>> {
    Ok(parse(der)?.tbs_certificate.subject_pki.raw.to_vec())
}

/// `sha256:<hex>` of the certificate's SubjectPublicKeyInfo: the pin a
/// join string carries (as Kubernetes' `--discovery-token-ca-cert-hash`).
pub fn ca_pin(der: &[u8]) -> Result<String> {
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(public_key_der(der)?))
    ))
}

/// The agent id an agent certificate names (its `wasmos://agent/<id>`
/// URI), or `None` for any other certificate. The master trusts it only in
/// a chain it verified against its CA.
pub fn agent_id_of(der: &[u8]) -> Option<String> {
    uri_id(der, "wasmos://agent/")
}

/// The master id a master's client certificate names (see
/// [`Ca::issue_master`](crate::Ca::issue_master)), if it is one. Its chain
/// must have been verified against the cluster's CA already.
pub fn master_id_of(der: &[u8]) -> Option<String> {
    uri_id(der, "wasmos://master/")
}

/// The rest of the first URI name under `prefix`, if not empty.
fn uri_id(der: &[u8], prefix: &str) -> Option<String> {
    let cert = parse(der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) => uri
                .strip_prefix(prefix)
                .filter(|id| !id.is_empty())
                .map(str::to_string),
            _ => None,
        })
}

/// When the certificate stops being valid, in ms since the Unix epoch.
pub fn not_after_ms(der: &[u8]) -> Result<u64> {
    let cert = parse(der)?;
    Ok((cert.validity().not_after.timestamp().max(0) as u64) * 1000)
}
