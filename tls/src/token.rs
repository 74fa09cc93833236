//! Bearer tokens and join strings.
//!
//! A token is a public accessor (to find it, to name it in logs and to
//! revoke it) and a secret, written `<accessor>.<secret>`. The master keeps
//! only the secret's SHA-256, so a copy of its registry grants nothing.
//!
//! A join string is what an operator hands to a new agent:
//! `wasmos-join://<accessor>.<secret>@<host:port>[,<host:port>…]?ca=sha256:<hex>`:
//! where the masters are, the hash of the CA's public key (the agent trusts
//! the master only if its chain holds that key: no trust on first use), and
//! the token that pays for one certificate.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::{Result, TlsError};

/// A token: accessor and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub accessor: String,
    pub secret: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}.…)", self.accessor)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.accessor, self.secret)
    }
}

impl Secret {
    /// A new token: 64 random bits of accessor, 256 of secret.
    pub fn generate() -> Secret {
        Secret {
            accessor: hex::encode(rand::random::<[u8; 8]>()),
            secret: hex::encode(rand::random::<[u8; 32]>()),
        }
    }

    /// Reads `<accessor>.<secret>`.
    pub fn parse(text: &str) -> Result<Secret> {
        let text = text.trim();
        match text.split_once('.') {
            Some((accessor, secret)) if is_hex(accessor, 16) && is_hex(secret, 64) => Ok(Secret {
                accessor: accessor.to_string(),
                secret: secret.to_string(),
            }),
            _ => Err(TlsError::Invalid(
                "a token looks like <16 hex digits>.<64 hex digits>".into(),
            )),
        }
    }

    /// The secret's hash, as the master keeps it.
    pub fn hash(&self) -> String {
        hash_secret(&self.secret)
    }

    /// True when `hash` is this secret's, compared in constant time.
    pub fn matches(&self, hash: &str) -> bool {
        let mine = self.hash();
        mine.len() == hash.len()
            && mine
                .bytes()
                .zip(hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The SHA-256 of a token's secret, lowercase hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What an agent needs to join a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinString {
    pub token: Secret,
    /// `host:port` of each master.
    pub masters: Vec<String>,
    /// `sha256:<hex>` of the CA's public key.
    pub ca_pin: String,
}

impl fmt::Debug for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinString")
            .field("token", &self.token)
            .field("masters", &self.masters)
            .field("ca_pin", &self.ca_pin)
            .finish()
    }
}

const SCHEME: &str = "wasmos-join://";

impl fmt::Display for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}@{}?ca={}",
            self.token,
            self.masters.join(","),
            self.ca_pin
        )
    }
}

impl JoinString {
    pub fn parse(text: &str) -> Result<JoinString> {
        let bad = |why: &str| {
            TlsError::Invalid(format!(
                "not a join string ({why}); it looks like \
                 {SCHEME}<token>@<host:port>?ca=sha256:<hex>, as `wasmos token create --agent` prints"
            ))
        };
        let rest = text
            .trim()
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it must start with wasmos-join://"))?;
        let (token, rest) = rest.split_once('@').ok_or_else(|| bad("no `@`"))?;
        let (masters, pin) = rest.split_once("?ca=").ok_or_else(|| bad("no `?ca=`"))?;
        let token = Secret::parse(token).map_err(|_| bad("its token is malformed"))?;
        let masters: Vec<String> = masters.split(',').map(str::to_string).collect();
        if masters.iter().any(|m| m.is_empty() || !m.contains(':')) {
            return Err(bad("each master is host:port"));
        }
        let digest = pin.strip_prefix("sha256:").unwrap_or_default();
        if !is_hex(digest, 64) {
            return Err(bad("the CA pin is sha256:<64 hex digits>"));
        }
        Ok(JoinString {
            token,
            masters,
            ca_pin: pin.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_join_strings_round_trip_and_bad_ones_say_why() {
        let token = Secret::generate();
        assert_eq!(Secret::parse(&token.to_string()).unwrap(), token);
        assert!(token.matches(&token.hash()));
        assert!(!Secret::generate().matches(&token.hash()));
        assert!(Secret::parse("abc.def").is_err());
        assert!(
            !format!("{token:?}").contains(&token.secret),
            "Debug hides the secret"
        );

        let join = JoinString {
            token,
            masters: vec!["127.0.0.1:5050".into(), "m2:5050".into()],
            ca_pin: format!("sha256:{}", "ab".repeat(32)),
        };
        assert_eq!(JoinString::parse(&join.to_string()).unwrap(), join);
        for bad in [
            "http://x",
            "wasmos-join://nope",
            &join.to_string().replace("?ca=sha256:", "?ca=md5:"),
            &join.to_string().replace("@127.0.0.1:5050", "@host"),
        ] {
            let err = JoinString::parse(bad).unwrap_err().to_string();
            assert!(err.contains("not a join string"), "{err}");
        }
    }
}
