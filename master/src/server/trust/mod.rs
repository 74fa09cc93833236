//! Who may call the master: the cluster's CA, the tokens it issued and the
//! agents that joined with them.
//!
//! The tokens and identities are core state (`wasmos_core`'s
//! `core/trust.rs`): every change is a core input, committed in the
//! actor's turn before it is answered. What stays here is what is secret
//! or slow (the CA's key, signing certificates, the admin token's file)
//! and a copy of the tables, refreshed from the records those inputs
//! answer, so that every call's credentials are checked without a turn.
//!
//! Rules (see `SECURITY.md`):
//! - every call but health and reflection carries a token (admin,
//!   read-only or principal; what each may do is `crate::access`'s), or
//!   comes from an agent whose certificate the CA signed (and only where
//!   agents call: `AgentLink`, `Artifacts`);
//! - an agent's id is the one its certificate names, never a message field;
//! - a join token is spent by use and worthless once spent or expired; the
//!   registry keeps secrets only as hashes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};
use wasmos_proto::v1;
use wasmos_tls::{Ca, Secret, ServerIdentity};

mod tokens;

use super::WallClock;
use super::handle::ActorHandle;
use crate::access::{Principal, takes_a_reserved_name};
use crate::core::{Input, Reply};
use crate::resources::Resources;
use crate::store::{Record, Store, Write};

/// How the master's gRPC and HTTP ports speak.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Plaintext, no credentials asked: for loopback only (`--insecure`,
    /// `wasmos local`, tests).
    Insecure,
    /// TLS, with a token or an agent certificate on every call.
    Tls(TlsSettings),
}

/// The TLS settings of a master.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// An operator's own server certificate chain and key, PEM; `None` to
    /// have the cluster's CA issue one at every start.
    pub own_identity: Option<(String, String)>,
    /// More CAs whose client certificates are accepted, PEM.
    pub client_ca_pem: Option<String>,
    /// Names the issued server certificate covers beyond the listen
    /// address, `localhost`, loopback and this host's name.
    pub sans: Vec<String>,
    /// `host:port` agents and clients reach the master by, for join
    /// strings; default the listen address (or this host's name, for an
    /// unspecified listen address).
    pub advertise: Vec<String>,
    /// How long an agent certificate is valid; agents renew at two thirds.
    pub agent_cert_ttl: Duration,
}

impl TlsSettings {
    pub fn new() -> TlsSettings {
        TlsSettings {
            agent_cert_ttl: Duration::from_secs(30 * 24 * 3600),
            ..TlsSettings::default()
        }
    }
}

/// Who made a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The holder of an admin, read-only or principal token.
    Principal(Principal),
    /// An agent, by the id its certificate names.
    Agent(String),
}
/// What a joined agent may do.
#[derive(Clone, Debug)]
pub struct AgentIdentity {
    pub agent_id: String,
    /// The most it may advertise, from its join token.
    pub max_resources: Option<Resources>,
}

/// The master's CA, tokens and agent identities.
pub struct Trust {
    ca: Ca,
    identity: ServerIdentity,
    /// The CA clients verify the server by, and its pin: the cluster's CA,
    /// or the root of an operator's own chain (`--tls-cert`).
    server_ca_pem: String,
    server_pin: String,
    /// PEM of every CA whose client certificates are accepted.
    client_roots: String,
    settings: TlsSettings,
    clock: WallClock,
    /// A copy of the core's tables, for reading credentials.
    state: Mutex<State>,
    admin_token_path: PathBuf,
    /// A new admin token is to be made ([`Trust::make_admin_token`]).
    needs_admin_token: bool,
    /// Where the tables live: the core, behind the actor.
    actor: ActorHandle,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, v1::StoredToken>,
    identities: HashMap<String, v1::StoredIdentity>,
    /// Cancelled when a token is revoked: the streams it opened end.
    revocations: HashMap<String, CancellationToken>,
}

/// The registry's trust records, as loaded.
#[derive(Default)]
pub struct Records {
    pub ca: Option<v1::StoredCa>,
    pub tokens: Vec<v1::StoredToken>,
    pub identities: Vec<v1::StoredIdentity>,
}

impl Records {
    /// The CA out of a loaded registry, and a copy of its tokens and
    /// identities (the core recovers those as its own).
    pub fn take(registry: &mut crate::store::Registry) -> Records {
        Records {
            ca: registry.ca.take(),
            tokens: registry.tokens.clone(),
            identities: registry.identities.clone(),
        }
    }
}

impl Trust {
    /// Loads the CA (making one, durably, on first start), the tokens and
    /// identities, issues this start's server certificate for `names`, and
    /// makes sure `<work_dir>/admin.token` holds a valid admin token (on a
    /// shared registry, only when the registry holds no admin token).
    pub fn open(
        store: Arc<dyn Store>,
        records: Records,
        settings: TlsSettings,
        names: &[String],
        work_dir: &Path,
        clock: WallClock,
        actor: ActorHandle,
    ) -> anyhow::Result<Trust> {
        let Records {
            ca: registry_ca,
            tokens,
            identities,
        } = records;
        let ca = match registry_ca {
            Some(stored) => Ca::from_pem(&stored.cert_pem, &stored.key_pem)
                .map_err(|e| anyhow::anyhow!("the CA in {}: {e}", store.describe()))?,
            None => {
                // The one write outside the core: the CA is made once, as
                // the registry's first record, before any master serves.
                let ca = Ca::generate(&format!("{:08x}", rand::random::<u32>()))?;
                store.commit(&[Write::Put(Record::Ca(v1::StoredCa {
                    cert_pem: ca.cert_pem().to_string(),
                    key_pem: ca.key_pem().to_string(),
                }))])?;
                tracing::info!(pin = ca.pin(), "made the cluster's CA");
                ca
            }
        };
        let identity = match &settings.own_identity {
            Some((chain, key)) => ServerIdentity {
                cert_chain_pem: chain.clone(),
                key_pem: key.clone(),
            },
            None => ca.issue_server(names, Duration::from_secs(365 * 24 * 3600))?,
        };
        let server_ca_pem = identity.chain_root_pem()?;
        let server_pin = identity.chain_pin()?;
        let mut client_roots = ca.cert_pem().to_string();
        if let Some(extra) = &settings.client_ca_pem {
            client_roots.push_str(extra);
        }
        let state = State {
            tokens: tokens
                .into_iter()
                .map(|t| (t.accessor.clone(), t))
                .collect(),
            identities: identities
                .into_iter()
                .map(|i| (i.agent_id.clone(), i))
                .collect(),
            revocations: HashMap::new(),
        };
        for token in state.tokens.values() {
            if let Some(grant) = tokens::grant_of(token)
                && takes_a_reserved_name(grant, &token.principal)
            {
                tracing::error!(
                    "{}",
                    tokens::reserved_name_refusal(&token.accessor, &token.principal)
                );
            }
        }
        let admin_token_path = work_dir.join("admin.token");
        let current = std::fs::read_to_string(&admin_token_path)
            .ok()
            .and_then(|text| Secret::parse(&text).ok())
            .filter(|token| {
                state.tokens.get(&token.accessor).is_some_and(|t| {
                    t.kind() == v1::TokenKind::Admin && token.matches(&t.secret_sha256)
                })
            });
        // A registry several masters share holds the admin token the first
        // of them made (its secret in that master's work dir, only its hash
        // here): the others make none, or every failover would add one.
        let shared_has_admin = store.is_shared()
            && state
                .tokens
                .values()
                .any(|t| t.kind() == v1::TokenKind::Admin);
        let needs_admin_token = current.is_none() && !shared_has_admin;
        // The CA certificate is public: clients need it (`--ca`).
        std::fs::write(work_dir.join("ca.pem"), &server_ca_pem)
            .with_context(|| format!("cannot write {}", work_dir.join("ca.pem").display()))?;
        Ok(Trust {
            ca,
            identity,
            server_ca_pem,
            server_pin,
            client_roots,
            settings,
            clock,
            state: Mutex::new(state),
            admin_token_path,
            needs_admin_token,
            actor,
        })
    }

    /// Makes an admin token and writes it to `<work_dir>/admin.token` if
    /// [`Trust::open`] found none that works (on a shared registry, only
    /// when it holds no admin token at all: every failover would add one).
    /// Returns the file when it made one.
    pub async fn make_admin_token(&self) -> anyhow::Result<Option<PathBuf>> {
        if !self.needs_admin_token {
            return Ok(None);
        }
        let token = Secret::generate();
        let stored = v1::StoredToken {
            accessor: token.accessor.clone(),
            secret_sha256: token.hash(),
            kind: v1::TokenKind::Admin as i32,
            principal: "admin".into(),
            ..Default::default()
        };
        self.create(stored, 0)
            .await
            .map_err(|e| anyhow::anyhow!("cannot make the admin token: {}", e.message()))?;
        let path = &self.admin_token_path;
        wasmos_tls::write_file(path, format!("{token}\n").as_bytes(), true)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Some(path.clone()))
    }

    /// Takes a token into the core's tables (stamped and given its expiry
    /// there) and this copy; answers the record as stored.
    async fn create(&self, token: v1::StoredToken, ttl_ms: u64) -> Result<v1::StoredToken, Status> {
        let stored = match self
            .actor
            .call(Input::CreateToken { token, ttl_ms })
            .await?
        {
            Reply::Token(stored) => *stored,
            other => unreachable!("a token's creation answered {other:?}"),
        };
        self.state
            .lock()
            .expect("not poisoned")
            .tokens
            .insert(stored.accessor.clone(), stored.clone());
        Ok(stored)
    }

    /// The chain and key the master serves.
    pub fn server_identity(&self) -> &ServerIdentity {
        &self.identity
    }

    /// What this master shows the other masters of its cluster, and
    /// trusts them by: the CA clients verify masters by, and a client
    /// certificate the cluster's CA issues now for `master_id`.
    pub fn peer_tls(&self, master_id: &str) -> anyhow::Result<wasmos_tls::ClientTls> {
        let identity = self
            .ca
            .issue_master(master_id, std::time::Duration::from_secs(365 * 24 * 3600))?;
        Ok(wasmos_tls::ClientTls {
            ca_pem: self.server_ca_pem.clone(),
            identity: Some((identity.cert_chain_pem, identity.key_pem)),
        })
    }

    /// PEM of the CAs whose client certificates are verified.
    pub fn client_roots(&self) -> &str {
        &self.client_roots
    }

    /// The CA clients verify this master by.
    pub fn ca_pem(&self) -> &str {
        &self.server_ca_pem
    }

    pub fn admin_token_path(&self) -> &Path {
        &self.admin_token_path
    }

    /// Who made `request`: a token in `authorization: Bearer`, or an agent
    /// certificate (accepted only when `agents` may make this call).
    pub fn caller<T>(&self, request: &Request<T>, agents: bool) -> Result<Caller, Status> {
        if let Some(value) = request.metadata().get("authorization") {
            return self
                .principal(value.to_str().unwrap_or_default())
                .map(Caller::Principal);
        }
        if let Some(agent) = self.agent_of(request)? {
            if agents {
                return Ok(Caller::Agent(agent.agent_id));
            }
            return Err(Status::permission_denied(format!(
                "agent {} may not make this call",
                agent.agent_id
            )));
        }
        Err(Status::unauthenticated(
            "this call needs a token: pass --token, set WASMOS_TOKEN or run `wasmos login` \
             (a new master writes its admin token to <work-dir>/admin.token)",
        ))
    }

    /// The agent whose certificate `request` came with, if any. Its chain
    /// was verified against the CA in the TLS handshake; here it must name
    /// an agent that joined and was not revoked.
    pub fn agent_of<T>(&self, request: &Request<T>) -> Result<Option<AgentIdentity>, Status> {
        let Some(certs) = request.peer_certs() else {
            return Ok(None);
        };
        let Some(leaf) = certs.first() else {
            return Ok(None);
        };
        let agent_id = wasmos_tls::agent_id_of(leaf).ok_or_else(|| {
            Status::permission_denied("the client certificate names no wasmos agent")
        })?;
        let state = self.state.lock().expect("not poisoned");
        match state.identities.get(&agent_id) {
            Some(identity) if identity.revoked => Err(Status::permission_denied(format!(
                "agent {agent_id} was revoked; join again with a new token"
            ))),
            Some(identity) => Ok(Some(AgentIdentity {
                agent_id,
                max_resources: identity
                    .max_resources
                    .as_ref()
                    .and_then(|r| Resources::try_from(r).ok()),
            })),
            None => Err(Status::permission_denied(format!(
                "agent {agent_id} is not known to this master"
            ))),
        }
    }

    /// Spends one use of a join token on a certificate for a new agent id.
    pub async fn join(&self, request: v1::JoinRequest) -> Result<v1::JoinResponse, Status> {
        let denied = || Status::permission_denied("the join token is unknown, spent or expired");
        let token = Secret::parse(&request.token).map_err(|_| denied())?;
        if request.hostname.len() > 255 {
            return Err(Status::invalid_argument("hostname longer than 255 bytes"));
        }
        // Checked here first (the secret, in constant time), so a bad
        // token costs no signature; the core checks again as it spends
        // the use, in the one turn that can.
        let agent_id = {
            let state = self.state.lock().expect("not poisoned");
            state
                .tokens
                .get(&token.accessor)
                .filter(|t| {
                    t.kind() == v1::TokenKind::AgentJoin
                        && token.matches(&t.secret_sha256)
                        && !expired(t, self.clock.now_ms())
                        && t.uses_left > 0
                })
                .ok_or_else(denied)?;
            loop {
                let id = format!("A{}", hex::encode(rand::random::<[u8; 6]>()));
                if !state.identities.contains_key(&id) {
                    break id;
                }
            }
        };
        let issued = self
            .ca
            .sign_agent(&request.csr_pem, &agent_id, self.settings.agent_cert_ttl)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let identity = match self
            .actor
            .call(Input::Join {
                accessor: token.accessor.clone(),
                secret_sha256: token.hash(),
                identity: v1::StoredIdentity {
                    agent_id: agent_id.clone(),
                    not_after_ms: issued.not_after_ms,
                    hostname: request.hostname.clone(),
                    ..Default::default()
                },
            })
            .await?
        {
            Reply::Identity(identity) => *identity,
            other => unreachable!("a join answered {other:?}"),
        };
        let max_resources = identity.max_resources;
        {
            let mut state = self.state.lock().expect("not poisoned");
            if let Some(spent) = state.tokens.get_mut(&token.accessor) {
                spent.uses_left = spent.uses_left.saturating_sub(1);
            }
            state.identities.insert(agent_id.clone(), identity);
        }
        tracing::info!(agent = %agent_id, hostname = %request.hostname, token = %token.accessor, "agent joined");
        Ok(v1::JoinResponse {
            agent_id,
            cert_pem: issued.cert_pem,
            ca_pem: self.server_ca_pem.clone(),
            not_after_ms: issued.not_after_ms,
            max_resources,
        })
    }

    /// A new certificate for `agent` (which proved itself with its current
    /// one).
    pub async fn renew(&self, agent: &str, csr_pem: &str) -> Result<v1::RenewResponse, Status> {
        let issued = self
            .ca
            .sign_agent(csr_pem, agent, self.settings.agent_cert_ttl)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.change_identity(Input::RenewIdentity {
            agent: agent.to_string(),
            not_after_ms: issued.not_after_ms,
        })
        .await?;
        tracing::info!(%agent, "agent certificate renewed");
        Ok(v1::RenewResponse {
            cert_pem: issued.cert_pem,
            not_after_ms: issued.not_after_ms,
        })
    }

    /// Ends an agent's identity for good; the core removes the agent (its
    /// tasks `LOST`) in the same turn.
    pub async fn revoke(&self, agent: &str) -> Result<(), Status> {
        self.change_identity(Input::RevokeIdentity {
            agent: agent.to_string(),
        })
        .await?;
        tracing::warn!(%agent, "agent revoked");
        Ok(())
    }

    /// Changes an identity in the core, then in this copy. Answers to
    /// changes made together may arrive in either order: a revocation is
    /// for good, so no answer clears it from the copy.
    async fn change_identity(&self, input: Input) -> Result<(), Status> {
        let mut identity = match self.actor.call(input).await? {
            Reply::Identity(identity) => *identity,
            other => unreachable!("an identity's change answered {other:?}"),
        };
        let mut state = self.state.lock().expect("not poisoned");
        if let Some(known) = state.identities.get(&identity.agent_id) {
            identity.revoked |= known.revoked;
        }
        state.identities.insert(identity.agent_id.clone(), identity);
        Ok(())
    }
}

use crate::core::token_expired as expired;

/// The gate in front of a gRPC service: checks the caller before the call
/// and hands it to the handler in the request's extensions (see
/// [`caller_of`]).
#[derive(Clone)]
pub struct Gate {
    /// `None`: an insecure master asks nothing; every caller is
    /// [`Principal::local`].
    pub trust: Option<Arc<Trust>>,
    /// Agents may make this service's calls.
    pub agents: bool,
    pub audit: Arc<super::audit::Audit>,
    /// Told of each connection whose call passed: it proved who it is.
    pub connections: Arc<super::connections::Gatekeeper>,
    /// The service's name, for the audit line of a throttled call (the
    /// gate does not see which call it is).
    pub service: &'static str,
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match &self.trust {
            None => Caller::Principal(Principal::local()),
            Some(trust) => trust.caller(&request, self.agents).map_err(|refused| {
                let source = request.remote_addr().map(|a| a.ip());
                self.audit.refused_credential(refused, source)
            })?,
        };
        // Callers refused too often are throttled here, in one place for
        // every gated call (see `refusals.rs`); agents never are (their
        // fetches are the cluster's own work).
        if let Caller::Principal(who) = &caller {
            self.audit.throttle(who, self.service)?;
        }
        // The call passed: its connection proved who it is.
        if let Some(peer) = request.remote_addr() {
            self.connections.vouch(peer);
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller the [`Gate`] let through.
pub fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("this service has no gate"))
}

/// The principal the [`Gate`] let through; agents may not make this call.
pub fn principal_of<T>(request: &Request<T>) -> Result<Principal, Status> {
    match caller_of(request)? {
        Caller::Principal(p) => Ok(p),
        Caller::Agent(agent) => Err(Status::permission_denied(format!(
            "agent {agent} may not make this call"
        ))),
    }
}
