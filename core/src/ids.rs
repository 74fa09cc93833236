//! Identifiers of agents, frameworks, offers, roles and tasks.
//!
//! Ids are strings on the wire and must survive restarts of the master, so
//! the master does not make them from a process-local counter alone: each is
//! `{master_id}-{kind}{n}`, where the shell picks a fresh random `master_id`
//! per run (and tests pick a fixed one, keeping runs deterministic). Clones
//! are cheap (`Arc<str>`).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(Arc::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Arc::from(s))
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

string_id!(
    /// An agent, assigned by the master at first registration.
    AgentId
);
string_id!(
    /// A framework, assigned by the master at first subscription.
    FrameworkId
);
string_id!(
    /// A role: the unit of weights, quotas and reservations.
    Role
);
string_id!(
    /// A task, chosen by its framework; unique across the cluster.
    TaskId
);
string_id!(
    /// An offer, assigned by the master.
    OfferId
);

/// The role of frameworks that name none.
pub const DEFAULT_ROLE: &str = "default";

/// Checks a role name: 1-64 characters of lowercase letters, digits, `-`,
/// `_` and `.`, not starting with `.` or `-` (so roles can later name
/// directories and metric labels safely).
pub fn validate_role(role: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    if role.is_empty() || role.len() > 64 {
        return Err(format!(
            "invalid role `{role}`: must be 1-64 characters long"
        ));
    }
    if role.starts_with(['.', '-']) || !role.chars().all(ok_char) {
        return Err(format!(
            "invalid role `{role}`: use lowercase letters, digits, `-`, `_` and `.`, not starting with `.` or `-`"
        ));
    }
    Ok(())
}

/// Checks a task id: 1-200 characters of `[A-Za-z0-9._-]`, not `.` or
/// `..` (an agent names the task's sandbox directory after it).
pub fn validate_task_id(id: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if id.is_empty() || id.len() > 200 || !id.chars().all(ok_char) || id == "." || id == ".." {
        return Err(format!(
            "invalid task id `{id}`: use 1-200 characters of letters, digits, `-`, `_` and `.`, not `.` or `..`"
        ));
    }
    Ok(())
}

/// Checks an artifact digest: 64 lowercase hex characters (sha256).
pub fn validate_digest(digest: &str) -> Result<(), String> {
    if digest.len() != 64
        || !digest
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(format!(
            "invalid artifact digest `{digest}`: expected a sha256 as 64 lowercase hex characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert!(validate_role("default").is_ok());
        assert!(validate_role("team-a.batch_1").is_ok());
        for bad in ["", "Admin", "a b", ".hidden", "-x", "a/b", &"x".repeat(65)] {
            assert!(validate_role(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn task_ids_and_digests() {
        assert!(validate_task_id("job-1.task_2").is_ok());
        for bad in ["a/b", ".", "..", "", "/"] {
            assert!(validate_task_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_digest(&"ab".repeat(32)).is_ok());
        assert!(validate_digest(&"AB".repeat(32)).is_err());
        assert!(validate_digest("abc").is_err());
    }
}
