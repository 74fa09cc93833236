//! The agent's identity on a TLS master, kept in `<work_dir>/tls/`: its own
//! key (`agent.key`, mode 0600, never sent anywhere), the certificate the
//! cluster's CA signed for it (`agent.crt`, naming its agent id), the CA it
//! verifies the master against (`ca.pem`) and where the master is
//! (`identity.json`).
//!
//! An agent gets it once, by joining: it pins the CA by the hash in the
//! join string, makes its key, and trades the join token and a certificate
//! request for the certificate. From then on it connects with mTLS and
//! that certificate alone, and renews it (with a new key) over the same
//! connection when two thirds of its life have passed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tonic::transport::Endpoint;
use wasmos_proto::v1;
use wasmos_proto::v1::agent_link_client::AgentLinkClient;
use wasmos_tls::{AgentKey, ClientTls, JoinString};

/// What `identity.json` holds beside the PEM files.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Saved {
    agent_id: String,
    /// The masters' URLs, comma-separated: the one the agent joined
    /// through, then the others its join string named.
    master: String,
    /// When the current certificate was issued and when it ends, in ms
    /// since the Unix epoch.
    issued_ms: u64,
    not_after_ms: u64,
}

/// An agent's key, certificate and trusted CA.
#[derive(Clone)]
pub struct Identity {
    dir: PathBuf,
    saved: Saved,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("agent_id", &self.saved.agent_id)
            .field("master", &self.saved.master)
            .finish_non_exhaustive()
    }
}

impl Identity {
    fn dir_in(work_dir: &Path) -> PathBuf {
        work_dir.join("tls")
    }

    /// The identity an earlier join left in `work_dir`, if any.
    pub fn load(work_dir: &Path) -> anyhow::Result<Option<Identity>> {
        let dir = Identity::dir_in(work_dir);
        let saved = match std::fs::read_to_string(dir.join("identity.json")) {
            Ok(text) => serde_json::from_str::<Saved>(&text).with_context(|| {
                format!("{} does not parse", dir.join("identity.json").display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context(format!("cannot read {}", dir.display())),
        };
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("cannot read {}", dir.join(name).display()))
        };
        Ok(Some(Identity {
            ca_pem: read("ca.pem")?,
            cert_pem: read("agent.crt")?,
            key_pem: read("agent.key")?,
            dir,
            saved,
        }))
    }

    /// Joins the cluster `join` names and saves the identity in `work_dir`.
    pub async fn join(
        work_dir: &Path,
        join: &JoinString,
        hostname: &str,
    ) -> anyhow::Result<Identity> {
        let mut last_error = None;
        for master in &join.masters {
            match Identity::join_one(work_dir, join, master, hostname).await {
                Ok(identity) => return Ok(identity),
                Err(e) => {
                    tracing::warn!(%master, "joining failed: {e:#}");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the join string names no master")))
    }

    async fn join_one(
        work_dir: &Path,
        join: &JoinString,
        master: &str,
        hostname: &str,
    ) -> anyhow::Result<Identity> {
        let ca_pem = wasmos_tls::fetch_pinned_ca(master, &join.ca_pin)
            .await
            .context("checking the master against the join string's CA pin")?;
        let url = format!("https://{master}");
        let channel = Endpoint::from_shared(url.clone())?
            .connect_timeout(Duration::from_secs(5))
            .tls_config(ClientTls::trusting(ca_pem.clone()).tonic())?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        let key = AgentKey::generate()?;
        let joined = AgentLinkClient::new(channel)
            .join(v1::JoinRequest {
                token: join.token.to_string(),
                csr_pem: key.csr_pem()?,
                hostname: hostname.to_string(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("the master refused to join this agent: {}", s.message()))?
            .into_inner();
        let identity = Identity {
            dir: Identity::dir_in(work_dir),
            saved: Saved {
                agent_id: joined.agent_id,
                // Every master the join string names, the one that
                // answered first: with several, the agent follows the
                // leader among them.
                master: std::iter::once(url.clone())
                    .chain(
                        join.masters
                            .iter()
                            .filter(|m| *m != master)
                            .map(|m| format!("https://{m}")),
                    )
                    .collect::<Vec<_>>()
                    .join(","),
                issued_ms: now_ms(),
                not_after_ms: joined.not_after_ms,
            },
            ca_pem: joined.ca_pem,
            cert_pem: joined.cert_pem,
            key_pem: key.key_pem(),
        };
        identity.save()?;
        tracing::info!(agent = %identity.saved.agent_id, master = %master, "joined the cluster");
        Ok(identity)
    }

    pub fn agent_id(&self) -> &str {
        &self.saved.agent_id
    }

    /// The master's URL, as joined.
    pub fn master(&self) -> &str {
        &self.saved.master
    }

    /// What the agent trusts and shows.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls {
            ca_pem: self.ca_pem.clone(),
            identity: Some((self.cert_pem.clone(), self.key_pem.clone())),
        }
    }

    /// When to look again whether the certificate is due.
    pub fn check_interval(&self) -> Duration {
        let life = self.saved.not_after_ms.saturating_sub(self.saved.issued_ms);
        Duration::from_millis(life / 20).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }

    /// True once two thirds of the certificate's life have passed.
    pub fn renewal_due(&self) -> bool {
        let life = self.saved.not_after_ms.saturating_sub(self.saved.issued_ms);
        now_ms() >= self.saved.issued_ms + life / 3 * 2
    }

    /// Trades a new key's request for a new certificate over `channel`
    /// (which shows the current one) and saves both.
    pub async fn renew(&mut self, channel: tonic::transport::Channel) -> anyhow::Result<()> {
        let key = AgentKey::generate()?;
        let renewed = AgentLinkClient::new(channel)
            .renew(v1::RenewRequest {
                csr_pem: key.csr_pem()?,
            })
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "the master refused to renew the certificate: {}",
                    s.message()
                )
            })?
            .into_inner();
        self.cert_pem = renewed.cert_pem;
        self.key_pem = key.key_pem();
        self.saved.issued_ms = now_ms();
        self.saved.not_after_ms = renewed.not_after_ms;
        self.save()?;
        tracing::info!(agent = %self.saved.agent_id, "certificate renewed");
        Ok(())
    }

    /// Writes every file, each whole (write, then rename).
    fn save(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        write_file(&self.dir.join("ca.pem"), &self.ca_pem, false)?;
        write_file(&self.dir.join("agent.key"), &self.key_pem, true)?;
        write_file(&self.dir.join("agent.crt"), &self.cert_pem, false)?;
        write_file(
            &self.dir.join("identity.json"),
            &serde_json::to_string_pretty(&self.saved)?,
            false,
        )
    }
}

fn write_file(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    wasmos_tls::write_file(path, text.as_bytes(), private)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
