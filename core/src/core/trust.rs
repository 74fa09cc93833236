//! The trust tables: the tokens the master issued (only their secrets'
//! hashes) and the identities of the agents that joined with them.
//!
//! Certificates, secrets and the CA's key stay in the shell; what they
//! decide lives here, so that every change (a token made or revoked, a
//! join token's use spent, an agent joined, renewed or revoked) is an
//! input of the actor's turn: in its one commit, behind its fence, stamped
//! by its clock, and serialized with every other input, so two joins can
//! never both spend a token's last use. The shell keeps a copy of the
//! tables to check each call's credentials without a turn, refreshed from
//! the records these inputs answer.

use crate::maps::{HashMap, HashSet};

use wasmos_proto::v1;

use super::{Core, CoreError, Reply};
use crate::store::{Record, Table, Write};
use crate::time::Time;

#[derive(Default)]
pub(super) struct TrustTables {
    tokens: HashMap<String, v1::StoredToken>,
    identities: HashMap<String, v1::StoredIdentity>,
    /// Accessors and agent ids changed by the current input, to persist.
    dirty_tokens: HashSet<String>,
    dirty_identities: HashSet<String>,
}

impl TrustTables {
    pub(super) fn recover(
        tokens: Vec<v1::StoredToken>,
        identities: Vec<v1::StoredIdentity>,
    ) -> TrustTables {
        TrustTables {
            tokens: tokens
                .into_iter()
                .map(|t| (t.accessor.clone(), t))
                .collect(),
            identities: identities
                .into_iter()
                .map(|i| (i.agent_id.clone(), i))
                .collect(),
            ..TrustTables::default()
        }
    }

    fn put_token(&mut self, token: v1::StoredToken) {
        self.dirty_tokens.insert(token.accessor.clone());
        self.tokens.insert(token.accessor.clone(), token);
    }

    fn put_identity(&mut self, identity: v1::StoredIdentity) {
        self.dirty_identities.insert(identity.agent_id.clone());
        self.identities.insert(identity.agent_id.clone(), identity);
    }

    /// The writes for every token and identity changed since the last call.
    pub(super) fn take_writes(&mut self) -> Vec<Write> {
        let mut writes = Vec::new();
        for accessor in std::mem::take(&mut self.dirty_tokens) {
            writes.push(match self.tokens.get(&accessor) {
                Some(token) => Write::Put(Record::Token(token.clone())),
                None => Write::Delete(Table::Tokens, accessor),
            });
        }
        for agent in std::mem::take(&mut self.dirty_identities) {
            if let Some(identity) = self.identities.get(&agent) {
                writes.push(Write::Put(Record::Identity(identity.clone())));
            }
        }
        writes
    }

    pub(super) fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.tokens
            .values()
            .cloned()
            .map(Record::Token)
            .chain(self.identities.values().cloned().map(Record::Identity))
    }
}

/// Is `token` past its expiry at wall time `now_ms`?
pub fn token_expired(token: &v1::StoredToken, now_ms: u64) -> bool {
    token.expires_ms != 0 && now_ms >= token.expires_ms
}

impl Core {
    /// Takes in a token the shell made (its secret stays with the shell;
    /// `token` holds its hash), stamped now and expiring `ttl_ms` later
    /// (0: never). Answers the record as stored.
    pub(super) fn create_token(
        &mut self,
        mut token: v1::StoredToken,
        ttl_ms: u64,
        now: Time,
    ) -> Result<Reply, CoreError> {
        if token.accessor.is_empty() || self.trust.tokens.contains_key(&token.accessor) {
            return Err(CoreError::InvalidArgument(format!(
                "token accessor `{}` is empty or taken; make the token again",
                token.accessor
            )));
        }
        let wall = self.wall(now);
        token.created_ms = wall;
        token.expires_ms = match ttl_ms {
            0 => 0,
            ttl => wall.saturating_add(ttl),
        };
        self.trust.put_token(token.clone());
        Ok(Reply::Token(Box::new(token)))
    }

    /// Deletes a token; answers its record as it was.
    pub(super) fn revoke_token(&mut self, accessor: &str) -> Result<Reply, CoreError> {
        let token = self
            .trust
            .tokens
            .remove(accessor)
            .ok_or_else(|| CoreError::NotFound(format!("no token {accessor}")))?;
        self.trust.dirty_tokens.insert(accessor.to_string());
        Ok(Reply::Token(Box::new(token)))
    }

    /// Spends one use of the join token `accessor` (whose secret hashes to
    /// `secret_sha256`) on `identity`, a new agent's, whose certificate the
    /// shell signed. Refused, spending nothing, if the token is not a join
    /// token with that secret, is expired on the core's clock or has no use
    /// left, or if the agent id is taken. Answers the identity as stored
    /// (with the token's bound on what the agent may advertise).
    pub(super) fn join(
        &mut self,
        accessor: &str,
        secret_sha256: &str,
        mut identity: v1::StoredIdentity,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let wall = self.wall(now);
        let denied =
            || CoreError::PermissionDenied("the join token is unknown, spent or expired".into());
        let token = self
            .trust
            .tokens
            .get(accessor)
            .filter(|t| {
                t.kind() == v1::TokenKind::AgentJoin
                    && t.secret_sha256 == secret_sha256
                    && !token_expired(t, wall)
                    && t.uses_left > 0
            })
            .ok_or_else(denied)?;
        if self.trust.identities.contains_key(&identity.agent_id) {
            return Err(CoreError::InvalidArgument(format!(
                "agent id {} is taken; join again",
                identity.agent_id
            )));
        }
        let mut token = token.clone();
        token.uses_left -= 1;
        identity.token_accessor = token.accessor.clone();
        identity.max_resources = token.max_resources;
        identity.joined_ms = wall;
        identity.revoked = false;
        self.trust.put_token(token);
        self.trust.put_identity(identity.clone());
        Ok(Reply::Identity(Box::new(identity)))
    }

    /// A renewed certificate for `agent`, valid until `not_after_ms`.
    pub(super) fn renew_identity(
        &mut self,
        agent: &str,
        not_after_ms: u64,
    ) -> Result<Reply, CoreError> {
        let mut identity = self.identity(agent)?;
        if identity.revoked {
            return Err(CoreError::PermissionDenied(format!(
                "agent {agent} was revoked; join again with a new token"
            )));
        }
        identity.not_after_ms = not_after_ms;
        self.trust.put_identity(identity.clone());
        Ok(Reply::Identity(Box::new(identity)))
    }

    /// Ends `agent`'s identity for good, and removes the agent (its tasks
    /// `LOST`) in the same input: it can never attach again.
    pub(super) fn revoke_identity(&mut self, agent: &str, now: Time) -> Result<Reply, CoreError> {
        let mut identity = self.identity(agent)?;
        identity.revoked = true;
        self.trust.put_identity(identity.clone());
        let id = crate::ids::AgentId::from(agent);
        if self.agents.contains_key(&id) {
            self.remove_agent(&id, "the agent's certificate was revoked", now);
        }
        Ok(Reply::Identity(Box::new(identity)))
    }

    /// Was `agent`'s identity revoked (for good)?
    pub fn identity_revoked(&self, agent: &str) -> bool {
        self.trust.identities.get(agent).is_some_and(|i| i.revoked)
    }

    fn identity(&self, agent: &str) -> Result<v1::StoredIdentity, CoreError> {
        self.trust
            .identities
            .get(agent)
            .cloned()
            .ok_or_else(|| CoreError::NotFound(format!("agent {agent} never joined")))
    }

    /// Every token, with its secret's hash: for the shell's copy.
    pub fn tokens(&self) -> impl Iterator<Item = &v1::StoredToken> {
        self.trust.tokens.values()
    }

    /// Every agent identity: for the shell's copy.
    pub fn identities(&self) -> impl Iterator<Item = &v1::StoredIdentity> {
        self.trust.identities.values()
    }
}
