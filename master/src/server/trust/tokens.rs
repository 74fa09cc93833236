//! Tokens: who a bearer is ([`Trust::principal`]), making, listing and
//! revoking them, and the end of the streams a revoked or expired token
//! opened.

use std::time::Duration;

use tonic::Status;
use wasmos_proto::v1;
use wasmos_tls::{JoinString, Secret};

use super::{Trust, expired};
use crate::access::{Grant, Principal, takes_a_reserved_name, validate_principal};
use crate::core::{Input, Reply};
use crate::resources::Resources;

impl Trust {
    /// The principal behind an `authorization` header's value, `Bearer
    /// <token>`: an admin, read-only or principal token that is neither
    /// revoked nor expired.
    pub fn principal(&self, header: &str) -> Result<Principal, Status> {
        let token = header
            .strip_prefix("Bearer ")
            .and_then(|v| Secret::parse(v).ok())
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header is not `Bearer <token>`")
            })?;
        let state = self.state.lock().expect("not poisoned");
        let stored = state
            .tokens
            .get(&token.accessor)
            .filter(|t| token.matches(&t.secret_sha256) && !expired(t, self.clock.now_ms()))
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "token {} is unknown, revoked or expired",
                    token.accessor
                ))
            })?;
        let grant = grant_of(stored).ok_or_else(|| {
            Status::permission_denied("a join token only joins agents (`wasmos agent --join`)")
        })?;
        let name = if stored.principal.is_empty() {
            "admin".to_string()
        } else {
            stored.principal.clone()
        };
        if takes_a_reserved_name(grant.clone(), &name) {
            return Err(Status::unauthenticated(reserved_name_refusal(
                &token.accessor,
                &name,
            )));
        }
        Ok(Principal {
            name,
            accessor: token.accessor,
            grant,
        })
    }

    /// Resolves once the token behind `accessor` is revoked or expires, with
    /// why: a stream it opened then ends.
    pub fn token_ended(
        &self,
        accessor: &str,
    ) -> impl std::future::Future<Output = String> + Send + 'static {
        let (revoked, expires_ms) = {
            let mut state = self.state.lock().expect("not poisoned");
            let expires_ms = state.tokens.get(accessor).map(|t| t.expires_ms);
            let revoked = match expires_ms {
                Some(_) => state
                    .revocations
                    .entry(accessor.to_string())
                    .or_default()
                    .clone(),
                // Revoked since the call that asks was let in: ended now,
                // and no entry is left behind for a token that is gone.
                None => {
                    let ended = tokio_util::sync::CancellationToken::new();
                    ended.cancel();
                    ended
                }
            };
            (revoked, expires_ms.unwrap_or(0))
        };
        let now = self.clock.now_ms();
        let accessor = accessor.to_string();
        async move {
            let expiry = async {
                if expires_ms == 0 {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(expires_ms.saturating_sub(now))).await;
            };
            tokio::select! {
                () = revoked.cancelled_owned() => format!("token {accessor} was revoked"),
                () = expiry => format!("token {accessor} expired"),
            }
        }
    }

    /// Makes a token. Join tokens default to one use within an hour.
    /// Makes a token; a join token's join string names this master, then
    /// `other_masters` (`host:port`: the cluster's other masters on etcd),
    /// so that its agents know them all.
    pub async fn create_token(
        &self,
        request: v1::CreateTokenRequest,
        other_masters: &[String],
    ) -> Result<v1::CreateTokenResponse, Status> {
        let kind = request.kind();
        let principal = match (kind, request.principal.as_str()) {
            (v1::TokenKind::Unspecified, _) => {
                return Err(Status::invalid_argument("say what the token is for (kind)"));
            }
            (v1::TokenKind::AgentJoin, "") => String::new(),
            (v1::TokenKind::AgentJoin, _) => {
                return Err(Status::invalid_argument(
                    "a join token names no principal: the agent gets its own identity",
                ));
            }
            (v1::TokenKind::Principal, "") => {
                return Err(Status::invalid_argument(
                    "a principal token needs a principal (--principal NAME)",
                ));
            }
            (v1::TokenKind::Admin, "") => "admin".into(),
            (v1::TokenKind::ReadOnly, "") => "read-only".into(),
            (_, name) => {
                validate_principal(name).map_err(Status::invalid_argument)?;
                name.to_string()
            }
        };
        let mut roles = request.roles.clone();
        if kind == v1::TokenKind::Principal {
            if roles.is_empty() {
                return Err(Status::invalid_argument(
                    "a principal token needs the roles it may subscribe in (--roles a,b)",
                ));
            }
            for role in &roles {
                crate::ids::validate_role(role).map_err(Status::invalid_argument)?;
            }
            roles.sort();
            roles.dedup();
        } else if !roles.is_empty() {
            return Err(Status::invalid_argument(
                "only principal tokens carry roles (admins may use every role)",
            ));
        }
        if let Some(max) = &request.max_resources {
            if kind != v1::TokenKind::AgentJoin {
                return Err(Status::invalid_argument(
                    "only join tokens carry max_resources",
                ));
            }
            Resources::try_from(max)
                .map_err(|e| Status::invalid_argument(format!("max_resources: {e}")))?;
        }
        let ttl = match (kind, request.ttl_ms) {
            (v1::TokenKind::AgentJoin, 0) => 3600 * 1000,
            (_, ttl) => ttl,
        };
        let token = Secret::generate();
        let stored = self
            .create(
                v1::StoredToken {
                    accessor: token.accessor.clone(),
                    secret_sha256: token.hash(),
                    kind: kind as i32,
                    uses_left: if kind == v1::TokenKind::AgentJoin {
                        request.uses.max(1)
                    } else {
                        0
                    },
                    max_resources: request.max_resources,
                    principal,
                    roles,
                    ..Default::default()
                },
                ttl,
            )
            .await?;
        tracing::info!(accessor = %token.accessor, ?kind, principal = %stored.principal, "token created");
        let join = if kind == v1::TokenKind::AgentJoin {
            JoinString {
                token: token.clone(),
                masters: self
                    .settings
                    .advertise
                    .iter()
                    .chain(other_masters)
                    .cloned()
                    .collect(),
                ca_pin: self.server_pin.clone(),
            }
            .to_string()
        } else {
            String::new()
        };
        Ok(v1::CreateTokenResponse {
            token: token.to_string(),
            accessor: token.accessor,
            expires_ms: stored.expires_ms,
            join,
        })
    }

    /// Every token, without secrets, by accessor.
    pub fn list_tokens(&self) -> Vec<v1::TokenInfo> {
        let state = self.state.lock().expect("not poisoned");
        let mut tokens: Vec<v1::TokenInfo> = state.tokens.values().map(info_of).collect();
        tokens.sort_by(|a, b| a.accessor.cmp(&b.accessor));
        tokens
    }

    /// Ends a token: it is deleted from the registry, and the streams it
    /// opened are told to close.
    pub async fn revoke_token(&self, accessor: &str) -> Result<v1::TokenInfo, Status> {
        let revoked = match self
            .actor
            .call(Input::RevokeToken {
                accessor: accessor.to_string(),
            })
            .await?
        {
            Reply::Token(revoked) => *revoked,
            other => unreachable!("a token's revocation answered {other:?}"),
        };
        let info = info_of(&revoked);
        let mut state = self.state.lock().expect("not poisoned");
        state.tokens.remove(accessor);
        if let Some(revoked) = state.revocations.remove(accessor) {
            revoked.cancel();
        }
        tracing::warn!(%accessor, "token revoked");
        Ok(info)
    }
}

/// A token as listed: all but its secret's hash.
fn info_of(t: &v1::StoredToken) -> v1::TokenInfo {
    v1::TokenInfo {
        accessor: t.accessor.clone(),
        kind: t.kind,
        principal: t.principal.clone(),
        roles: t.roles.clone(),
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
        uses_left: t.uses_left,
    }
}

/// Why a token that took a built-in name (made before names were reserved)
/// is refused, and how its holder gets one that works.
pub(super) fn reserved_name_refusal(accessor: &str, name: &str) -> String {
    format!(
        "token {accessor} names principal `{name}`, a name the master keeps for its own identities; \
         it is refused: make its holder a token under another name \
         (`wasmos token create --principal NAME --roles ...`) and revoke this one \
         (`wasmos token revoke {accessor}`)"
    )
}

/// What a stored token grants a caller; `None` for join tokens, which only
/// join agents.
pub(super) fn grant_of(stored: &v1::StoredToken) -> Option<Grant> {
    match stored.kind() {
        v1::TokenKind::Admin => Some(Grant::Admin),
        v1::TokenKind::ReadOnly => Some(Grant::ReadOnly),
        v1::TokenKind::Principal => Some(Grant::Roles(stored.roles.clone())),
        v1::TokenKind::AgentJoin | v1::TokenKind::Unspecified => None,
    }
}
