//! Who is looking at the UI: server-side sessions and CSRF tokens.
//!
//! On a TLS master a browser logs in once with a token; the master keeps
//! the token in memory under a random session id, and the cookie holds only
//! that id (`HttpOnly`, `Secure`, `SameSite=Strict`). Every request checks
//! the token again, so a revoked or expired token ends its sessions at
//! once. An insecure master (`wasmos local`) asks nothing: everyone is the
//! local admin, as on its gRPC port.
//!
//! Every change (a form's POST) carries a CSRF token: an HMAC of the
//! session id under a key the master draws at start, which another site's
//! page cannot read and so cannot forge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::access::Principal;
use crate::server::trust::Trust;

/// The session cookie's name.
pub const COOKIE: &str = "wasmos_session";
/// A session lasts this long after its login.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first.
const MAX_SESSIONS: usize = 10_000;
/// What an insecure master's one shared "session" is called.
const LOCAL: &str = "local";

/// Someone allowed to look: who, and the CSRF token their forms carry.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub who: Principal,
    pub csrf: String,
    /// False on an insecure master: there is nobody to log out.
    pub logged_in: bool,
}

/// Why a request has no viewer.
#[derive(Debug)]
pub enum NoViewer {
    /// No session (or an expired one): log in.
    LogIn,
    /// The session's token was revoked or expired; the session is gone.
    Ended(String),
}

struct Session {
    /// The token, as an `authorization` header value.
    bearer: String,
    since: Instant,
}

pub struct Sessions {
    trust: Option<Arc<Trust>>,
    key: [u8; 32],
    live: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(trust: Option<Arc<Trust>>) -> Sessions {
        Sessions {
            trust,
            key: rand::rng().random(),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// True when viewers must log in (a TLS master).
    pub fn needs_login(&self) -> bool {
        self.trust.is_some()
    }

    /// Who sent `headers`.
    pub fn viewer(&self, headers: &HeaderMap) -> Result<Viewer, NoViewer> {
        let Some(trust) = &self.trust else {
            return Ok(Viewer {
                who: Principal::local(),
                csrf: self.csrf(LOCAL),
                logged_in: false,
            });
        };
        let id = session_cookie(headers).ok_or(NoViewer::LogIn)?;
        let bearer = {
            let mut live = self.live.lock().expect("not poisoned");
            match live.get(id) {
                Some(s) if s.since.elapsed() < SESSION_LIFETIME => s.bearer.clone(),
                Some(_) => {
                    live.remove(id);
                    return Err(NoViewer::LogIn);
                }
                None => return Err(NoViewer::LogIn),
            }
        };
        match trust.principal(&bearer) {
            Ok(who) => Ok(Viewer {
                who,
                csrf: self.csrf(id),
                logged_in: true,
            }),
            Err(status) => {
                self.live.lock().expect("not poisoned").remove(id);
                Err(NoViewer::Ended(status.message().to_string()))
            }
        }
    }

    /// Checks `token` and opens a session for it: the cookie's value, or
    /// why the token was refused.
    pub fn log_in(&self, token: &str) -> Result<(String, Principal), tonic::Status> {
        let Some(trust) = &self.trust else {
            return Err(tonic::Status::failed_precondition(
                "this master has no tokens: everyone on it is the local admin",
            ));
        };
        let bearer = format!("Bearer {}", token.trim());
        let who = trust.principal(&bearer)?;
        let id = hex::encode(rand::rng().random::<[u8; 32]>());
        let mut live = self.live.lock().expect("not poisoned");
        live.retain(|_, s| s.since.elapsed() < SESSION_LIFETIME);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.since)
                .map(|(id, _)| id.clone())
        {
            live.remove(&oldest);
        }
        live.insert(
            id.clone(),
            Session {
                bearer,
                since: Instant::now(),
            },
        );
        Ok((id, who))
    }

    /// Ends the session `headers` carry, if any.
    pub fn log_out(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            self.live.lock().expect("not poisoned").remove(id);
        }
    }

    /// True when `token` is the CSRF token of the session `headers` carry.
    pub fn csrf_matches(&self, headers: &HeaderMap, token: &str) -> bool {
        let id = match &self.trust {
            None => LOCAL,
            Some(_) => match session_cookie(headers) {
                Some(id) => id,
                None => return false,
            },
        };
        let Ok(token) = hex::decode(token) else {
            return false;
        };
        self.mac(id).verify_slice(&token).is_ok()
    }

    fn csrf(&self, session: &str) -> String {
        hex::encode(self.mac(session).finalize().into_bytes())
    }

    fn mac(&self, session: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(session.as_bytes());
        mac
    }
}

/// The `Set-Cookie` value that opens session `id` (`secure` on TLS).
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict")
}

/// The `Set-Cookie` value that ends the session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_csrf_token_belongs_to_its_session_and_a_forged_one_fails() {
        let sessions = Sessions::new(None);
        let viewer = sessions.viewer(&HeaderMap::new()).unwrap();
        assert!(sessions.csrf_matches(&HeaderMap::new(), &viewer.csrf));
        assert!(!sessions.csrf_matches(&HeaderMap::new(), ""));
        assert!(!sessions.csrf_matches(&HeaderMap::new(), &"0".repeat(64)));
        // Another master's key makes other tokens.
        let other = Sessions::new(None);
        assert!(!other.csrf_matches(&HeaderMap::new(), &viewer.csrf));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            HeaderValue::from_static("a=1; wasmos_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("abc"));
        headers.insert(
            axum::http::header::COOKIE,
            HeaderValue::from_static("wasmos_session="),
        );
        assert_eq!(session_cookie(&headers), None);
    }
}
