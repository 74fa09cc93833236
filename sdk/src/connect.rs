//! How a client reaches a master: its URL, the CA its certificate must
//! chain to, the token every call carries, and the profile file that holds
//! all three so no flag is needed.
//!
//! The profile is JSON at `$WASMOS_PROFILE`, or
//! `$XDG_CONFIG_HOME/wasmos/profile.json` (`~/.config/wasmos/...`), mode
//! 0600: `{"master": "https://…", "ca": "-----BEGIN CERTIFICATE-----…",
//! "token": "…"}`. `wasmos login` writes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;

use crate::error::{Error, Result};

/// The channel every SDK client uses: a tonic channel whose calls carry
/// the client's token.
pub type Channel = InterceptedService<tonic::transport::Channel, Credentials>;

/// What a connection trusts and shows. Built by hand, from the
/// environment ([`ConnectOptions::from_env`]) or from a [`Profile`].
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// PEM of the CA the master's certificate must chain to (`https://`).
    pub ca_pem: Option<String>,
    /// The token sent with every call, `<accessor>.<secret>`.
    pub token: Option<String>,
    /// A client certificate and key, PEM (agents).
    pub identity: Option<(String, String)>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("ca", &self.ca_pem.is_some())
            .field("token", &self.token.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

impl ConnectOptions {
    /// `WASMOS_CA` (a file) and `WASMOS_TOKEN`, each falling back to the
    /// profile's.
    pub fn from_env() -> Result<ConnectOptions> {
        let profile = Profile::load()?;
        let ca_pem = match std::env::var_os("WASMOS_CA") {
            Some(path) => Some(read_ca(Path::new(&path))?),
            None => profile.as_ref().and_then(|p| p.ca.clone()),
        };
        let token = std::env::var("WASMOS_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| profile.and_then(|p| p.token));
        Ok(ConnectOptions {
            ca_pem,
            token,
            identity: None,
        })
    }

    /// Trust the CA in `path` (PEM).
    pub fn ca_file(mut self, path: &Path) -> Result<ConnectOptions> {
        self.ca_pem = Some(read_ca(path)?);
        Ok(self)
    }

    /// Send `token` with every call.
    pub fn token(mut self, token: impl Into<String>) -> ConnectOptions {
        self.token = Some(token.into());
        self
    }

    /// The interceptor that adds the token to each call.
    pub(crate) fn credentials(&self) -> Result<Credentials> {
        let header = match &self.token {
            None => None,
            Some(token) => Some(
                format!("Bearer {}", token.trim())
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| {
                        Error::Config("the token has characters a header cannot carry".into())
                    })?,
            ),
        };
        Ok(Credentials { header })
    }
}

fn read_ca(path: &Path) -> Result<String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read the CA file {}: {e}", path.display())))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::Config(format!(
            "{} holds no PEM certificate (a master writes its CA to <work-dir>/ca.pem)",
            path.display()
        )));
    }
    Ok(pem)
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Credentials {
    header: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// Address, CA and token of one cluster, as `wasmos login` saves them.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    /// The master's URL.
    pub master: Option<String>,
    /// PEM of the cluster's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Profile {
    /// Where the profile is: `$WASMOS_PROFILE`, else the user's config dir.
    pub fn path() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("WASMOS_PROFILE") {
            return Some(PathBuf::from(path));
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(config.join("wasmos").join("profile.json"))
    }

    /// The profile, if there is one; an error if it exists but does not
    /// parse.
    pub fn load() -> Result<Option<Profile>> {
        let Some(path) = Profile::path() else {
            return Ok(None);
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                Error::Config(format!(
                    "the profile {} does not parse: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Config(format!(
                "cannot read the profile {}: {e}",
                path.display()
            ))),
        }
    }

    /// Writes the profile (mode 0600: it holds a token); returns its path.
    pub fn save(&self) -> Result<PathBuf> {
        let path = Profile::path()
            .ok_or_else(|| Error::Config("no home directory: set WASMOS_PROFILE".into()))?;
        let fail = |e: std::io::Error| {
            Error::Config(format!("cannot write the profile {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let text = serde_json::to_string_pretty(self).expect("a profile serializes");
        wasmos_tls::write_file(&path, text.as_bytes(), true).map_err(fail)?;
        Ok(path)
    }
}
