//! Who a caller is and what it may do: the permission rules, as pure
//! functions of a [`Principal`] (no tonic, no store).
//!
//! Default deny, after Mesos' ACLs without their `permissive` default:
//! - an **admin** may do everything;
//! - a **read-only** operator lists and reads everything and changes nothing;
//! - a **principal** (a framework or CLI user) subscribes only in its roles
//!   and sees, uses, kills and reads only what its frameworks own.
//!
//! The core applies these to its inputs (`core/access.rs`); the shell to
//! what lives beside the core (artifacts, tokens, the audit log).

use std::fmt;

/// What a credential grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    Admin,
    ReadOnly,
    /// A framework or CLI user, with the roles it may subscribe in.
    Roles(Vec<String>),
}

/// An authenticated caller of the framework and operator APIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Its name: what owns frameworks, tasks and artifacts.
    pub name: String,
    /// The public part of its token (empty on an insecure master), for the
    /// audit log and revocation.
    pub accessor: String,
    pub grant: Grant,
}

/// The principal every caller of an insecure (loopback, `wasmos local`)
/// master is: there are no credentials to tell callers apart.
pub const LOCAL: &str = "local";

/// The largest and smallest role weight an operator may set: beyond these,
/// DRF's weighted shares lose their precision and one role starves all.
pub const WEIGHT_RANGE: std::ops::RangeInclusive<f64> = 0.001..=1000.0;

/// A refusal, naming what was missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Principal {
    /// The admin of an insecure master.
    pub fn local() -> Principal {
        Principal {
            name: LOCAL.into(),
            accessor: String::new(),
            grant: Grant::Admin,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.grant == Grant::Admin
    }

    /// Admins and read-only operators see everything.
    pub fn sees_all(&self) -> bool {
        matches!(self.grant, Grant::Admin | Grant::ReadOnly)
    }

    /// What the principal is, for messages: `alice (roles batch, ci)`.
    pub fn describe(&self) -> String {
        match &self.grant {
            Grant::Admin => format!("{} (admin)", self.name),
            Grant::ReadOnly => format!("{} (read-only)", self.name),
            Grant::Roles(roles) => format!("{} (roles {})", self.name, roles.join(", ")),
        }
    }

    /// Operator changes: weights, quotas, drains, revocations, tokens.
    pub fn require_admin(&self, what: &str) -> Result<(), Denied> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Denied(format!(
                "{what} needs an admin token; {} is not an admin",
                self.describe()
            )))
        }
    }

    /// Any change at all: everyone but read-only operators.
    pub fn require_writer(&self, what: &str) -> Result<(), Denied> {
        if self.grant == Grant::ReadOnly {
            Err(Denied(format!(
                "{what} changes the cluster; {} may only look",
                self.describe()
            )))
        } else {
            Ok(())
        }
    }

    /// May it subscribe a framework in `role`?
    pub fn require_role(&self, role: &str) -> Result<(), Denied> {
        match &self.grant {
            Grant::Admin => Ok(()),
            Grant::ReadOnly => Err(Denied(format!(
                "subscribing changes the cluster; {} may only look",
                self.describe()
            ))),
            Grant::Roles(roles) if roles.iter().any(|r| r == role) => Ok(()),
            Grant::Roles(_) => Err(Denied(format!(
                "role `{role}` is not one of {}'s",
                self.describe()
            ))),
        }
    }

    /// May it use (change) what `owner` owns? Admins may use everything; an
    /// empty owner (a framework from before principals) is the admins'.
    pub fn may_use(&self, owner: &str) -> bool {
        self.is_admin()
            || (!owner.is_empty() && matches!(self.grant, Grant::Roles(_)) && self.name == owner)
    }

    /// May it see (list, read) what `owner` owns?
    pub fn may_see(&self, owner: &str) -> bool {
        self.sees_all() || self.may_use(owner)
    }

    /// [`Principal::may_use`], as a refusal naming the owner.
    pub fn require_use(&self, what: &str, owner: &str) -> Result<(), Denied> {
        if self.may_use(owner) {
            Ok(())
        } else if self.grant == Grant::ReadOnly {
            Err(Denied(format!(
                "{what} changes the cluster; {} may only look",
                self.describe()
            )))
        } else {
            Err(Denied(format!(
                "{what} belongs to principal `{}`, not to {}",
                if owner.is_empty() { "admin" } else { owner },
                self.describe()
            )))
        }
    }

    /// What it may do, in words (`wasmos whoami`).
    pub fn abilities(&self) -> Vec<String> {
        match &self.grant {
            Grant::Admin => vec![
                "everything: subscribe in any role, see and change every framework, task, agent, role and token".into(),
            ],
            Grant::ReadOnly => vec![
                "list and read every framework, task, agent, role, token, sandbox and the audit log".into(),
                "change nothing".into(),
            ],
            Grant::Roles(roles) => vec![
                format!("subscribe frameworks in role(s) {}", roles.join(", ")),
                "see, use, kill and read the sandboxes of its own frameworks' tasks".into(),
                "upload artifacts and read the ones it uploaded".into(),
                "list agents and roles".into(),
            ],
        }
    }
}

/// Names the master gives identities of its own: the first admin token
/// (`admin`), read-only tokens made without a name (`read-only`), every
/// caller of an insecure master (`local`), and names kept for services the
/// master runs itself. Ownership compares names, so a principal that took
/// one would own what that identity owns.
pub const RESERVED_PRINCIPALS: &[&str] = &[
    "admin",
    "read-only",
    LOCAL,
    "master",
    "agent",
    "jobs",
    "system",
    "wasmos",
];

/// Checks a principal's name: the same alphabet as roles, and none of
/// [`RESERVED_PRINCIPALS`].
pub fn validate_principal(name: &str) -> Result<(), String> {
    crate::ids::validate_role(name).map_err(|e| e.replace("role", "principal"))?;
    if RESERVED_PRINCIPALS.contains(&name) {
        return Err(format!(
            "principal `{name}` is a name the master keeps for its own identities ({}): choose another",
            RESERVED_PRINCIPALS.join(", ")
        ));
    }
    Ok(())
}

/// Whether a stored token's name collides with a built-in identity: any
/// reserved name but the ones the master itself gives its admin and
/// read-only tokens. Such a token (made before names were reserved) is
/// refused.
pub fn takes_a_reserved_name(kind: Grant, name: &str) -> bool {
    let own = match kind {
        Grant::Admin => "admin",
        Grant::ReadOnly => "read-only",
        Grant::Roles(_) => "",
    };
    name != own && RESERVED_PRINCIPALS.contains(&name)
}

/// Checks a role weight against [`WEIGHT_RANGE`].
pub fn validate_weight(weight: f64) -> Result<(), String> {
    if WEIGHT_RANGE.contains(&weight) {
        Ok(())
    } else {
        Err(format!(
            "weight {weight} is outside {}..={}",
            WEIGHT_RANGE.start(),
            WEIGHT_RANGE.end()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, roles: &[&str]) -> Principal {
        Principal {
            name: name.into(),
            accessor: "a".into(),
            grant: Grant::Roles(roles.iter().map(|r| r.to_string()).collect()),
        }
    }

    fn read_only() -> Principal {
        Principal {
            name: "ro".into(),
            accessor: "r".into(),
            grant: Grant::ReadOnly,
        }
    }

    #[test]
    fn principals_use_only_what_they_own() {
        let alice = user("alice", &["batch"]);
        assert!(alice.may_use("alice"));
        assert!(!alice.may_use("bob"));
        assert!(
            !alice.may_use(""),
            "pre-principal frameworks are the admins'"
        );
        assert!(Principal::local().may_use("bob"));
        let err = alice.require_use("framework F1", "bob").unwrap_err();
        assert!(err.0.contains("`bob`") && err.0.contains("alice"), "{err}");
    }

    #[test]
    fn read_only_sees_everything_and_changes_nothing() {
        let ro = read_only();
        assert!(ro.may_see("alice") && ro.may_see(""));
        assert!(!ro.may_use("alice"));
        assert!(ro.require_writer("kill").is_err());
        assert!(ro.require_admin("drain").is_err());
        assert!(ro.require_role("batch").is_err());
        // Even a read-only token named like a principal uses nothing of it.
        let ro = Principal {
            name: "alice".into(),
            ..read_only()
        };
        assert!(!ro.may_use("alice"));
    }

    #[test]
    fn roles_bound_subscriptions() {
        let alice = user("alice", &["batch", "ci"]);
        assert!(alice.require_role("ci").is_ok());
        let err = alice.require_role("prod").unwrap_err();
        assert!(err.0.contains("`prod`"), "{err}");
        assert!(Principal::local().require_role("prod").is_ok());
    }

    #[test]
    fn weights_lie_in_the_documented_range() {
        assert!(validate_weight(1.0).is_ok());
        assert!(validate_weight(0.001).is_ok() && validate_weight(1000.0).is_ok());
        for bad in [1e-300, 0.0, -1.0, 1e6, f64::NAN, f64::INFINITY] {
            assert!(validate_weight(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn principals_cannot_take_built_in_names() {
        assert!(validate_principal("alice").is_ok());
        for name in RESERVED_PRINCIPALS {
            let err = validate_principal(name).unwrap_err();
            assert!(err.contains("keeps for its own"), "{err}");
        }
        let roles = || Grant::Roles(vec!["batch".into()]);
        assert!(takes_a_reserved_name(roles(), "admin"));
        assert!(takes_a_reserved_name(roles(), "local"));
        assert!(!takes_a_reserved_name(roles(), "alice"));
        assert!(!takes_a_reserved_name(Grant::Admin, "admin"));
        assert!(!takes_a_reserved_name(Grant::ReadOnly, "read-only"));
        assert!(takes_a_reserved_name(Grant::ReadOnly, "admin"));
    }
}
