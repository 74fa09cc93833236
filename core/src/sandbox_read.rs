//! Which sandbox reads are allowed: one check, used by every reader (the
//! `Operator.ReadSandbox` call, and any page or endpoint that shows a
//! task's files), so no reader can forget a rule.
//!
//! A read names a task the caller may see, by an id that is valid as every
//! task id is at intake, and a path inside that task's root. Ids and paths
//! become paths on an agent's disk: a task id of `/`, `..` or `/proc/self`
//! would name a directory outside every sandbox, so it is refused here,
//! before any agent is asked (and the agent checks again).

use std::path::{Component, Path};

use wasmos_proto::v1;

use crate::access::Principal;
use crate::ids::{AgentId, validate_task_id};
use crate::limits::{MAX_ID_BYTES, check_bytes};

/// The longest path a read may name (Linux's `PATH_MAX`).
pub const MAX_SANDBOX_PATH_BYTES: usize = 4096;

/// A read that passed [`check`]: where it goes and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The agent that holds the sandbox.
    pub agent: AgentId,
    pub task_id: String,
    pub target: v1::SandboxTarget,
    /// Relative to the task's root, `/`-separated, with no `.` or `..`;
    /// empty for the root itself (and for stdout and stderr).
    pub path: String,
}

/// Why a read was refused; each says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The request itself is malformed (`INVALID_ARGUMENT`).
    Invalid(String),
    /// The caller may not see the task (`PERMISSION_DENIED`).
    Denied(String),
    /// No such task (`NOT_FOUND`).
    Unknown(String),
}

/// What the master knows of the task a read names.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    /// Its owner (empty: the admin's).
    pub owner: &'a str,
    /// The agent it was placed on.
    pub agent: &'a AgentId,
}

/// Checks `request` by `who`, given what the master lists of its task
/// (`None`: the master no longer lists it, and only an operator who sees
/// everything may then name the agent it ran on).
pub fn check(
    who: &Principal,
    request: &v1::ReadSandboxRequest,
    listed: Option<Listed<'_>>,
) -> Result<Checked, Refused> {
    let task_id = &request.task_id;
    validate_task_id(task_id).map_err(Refused::Invalid)?;
    let target = v1::SandboxTarget::try_from(request.target)
        .ok()
        .filter(|t| *t != v1::SandboxTarget::Unspecified)
        .ok_or_else(|| {
            Refused::Invalid(format!(
                "sandbox read of task {task_id} names no target (stdout, stderr, file or list)"
            ))
        })?;
    let path = match target {
        v1::SandboxTarget::Stdout | v1::SandboxTarget::Stderr => String::new(),
        _ => sandbox_path(&request.path).map_err(Refused::Invalid)?,
    };
    if target == v1::SandboxTarget::File && path.is_empty() {
        return Err(Refused::Invalid(format!(
            "a file read of task {task_id} names no file"
        )));
    }
    let agent = match listed {
        Some(task) if !who.may_see(task.owner) => {
            let owner = if task.owner.is_empty() {
                "admin"
            } else {
                task.owner
            };
            return Err(Refused::Denied(format!(
                "task {task_id} belongs to principal `{owner}`, not to {}",
                who.describe()
            )));
        }
        Some(task) => task.agent.clone(),
        None if request.agent_id.is_empty() => {
            return Err(Refused::Unknown(format!(
                "unknown task {task_id} (the master no longer lists it: name the agent it ran on to read its sandbox there)"
            )));
        }
        None if !who.sees_all() => {
            return Err(Refused::Denied(format!(
                "the master no longer lists task {task_id}, so it cannot tell whose it is: only admins and read-only operators read a sandbox by agent"
            )));
        }
        None => {
            check_bytes("agent_id", &request.agent_id, MAX_ID_BYTES).map_err(Refused::Invalid)?;
            AgentId::from(request.agent_id.as_str())
        }
    };
    Ok(Checked {
        agent,
        task_id: task_id.clone(),
        target,
        path,
    })
}

/// `path` as a path inside a task's root: the task sees its root as `/`, so
/// a leading `/` is the root; `.` parts are dropped; `..`, NUL and paths
/// past [`MAX_SANDBOX_PATH_BYTES`] are refused. `""` is the root.
pub fn sandbox_path(path: &str) -> Result<String, String> {
    check_bytes("path", path, MAX_SANDBOX_PATH_BYTES)?;
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().unwrap_or_default()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!(
                    "path `{path}` leaves the task's root: `..` is not allowed"
                ));
            }
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Grant;

    fn principal(name: &str, grant: Grant) -> Principal {
        Principal {
            name: name.into(),
            accessor: String::new(),
            grant,
        }
    }

    fn read(task_id: &str, target: v1::SandboxTarget, path: &str) -> v1::ReadSandboxRequest {
        v1::ReadSandboxRequest {
            task_id: task_id.into(),
            target: target.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn task_ids_that_name_directories_outside_a_sandbox_are_refused() {
        let admin = principal("admin", Grant::Admin);
        for bad in ["/", ".", "..", "/proc/self", "a/../b", "", "x\0y"] {
            let mut request = read(bad, v1::SandboxTarget::List, "");
            request.agent_id = "agent-1".into();
            assert!(
                matches!(check(&admin, &request, None), Err(Refused::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn paths_stay_inside_the_root() {
        assert_eq!(sandbox_path("").unwrap(), "");
        assert_eq!(sandbox_path("/").unwrap(), "");
        assert_eq!(sandbox_path("./out//a.txt").unwrap(), "out/a.txt");
        assert_eq!(sandbox_path("/out/a.txt").unwrap(), "out/a.txt");
        for bad in ["..", "../x", "out/../../etc", "/..", "a\0b"] {
            assert!(sandbox_path(bad).is_err(), "{bad:?}");
        }
        assert!(sandbox_path(&"a/".repeat(3000)).is_err());
    }

    #[test]
    fn only_what_the_caller_may_see_is_read() {
        let agent = AgentId::from("agent-1");
        let alice_task = Listed {
            owner: "alice",
            agent: &agent,
        };
        let request = read("t1", v1::SandboxTarget::Stdout, "ignored/../..");
        let alice = principal("alice", Grant::Roles(vec!["batch".into()]));
        let bob = principal("bob", Grant::Roles(vec!["batch".into()]));
        let viewer = principal("viewer", Grant::ReadOnly);
        let checked = check(&alice, &request, Some(alice_task)).unwrap();
        assert_eq!(checked.agent, agent);
        assert_eq!(checked.path, "");
        assert!(check(&viewer, &request, Some(alice_task)).is_ok());
        let Err(Refused::Denied(why)) = check(&bob, &request, Some(alice_task)) else {
            panic!("bob read alice's task");
        };
        assert!(why.contains("alice"), "{why}");
        // A task the master forgot: only by agent, only for operators.
        let mut forgotten = read("t2", v1::SandboxTarget::List, "/");
        assert!(matches!(
            check(&viewer, &forgotten, None),
            Err(Refused::Unknown(_))
        ));
        forgotten.agent_id = "agent-1".into();
        assert!(matches!(
            check(&alice, &forgotten, None),
            Err(Refused::Denied(_))
        ));
        assert_eq!(check(&viewer, &forgotten, None).unwrap().agent, agent);
        // A file read names a file; a read names a target.
        assert!(matches!(
            check(
                &alice,
                &read("t1", v1::SandboxTarget::File, "/"),
                Some(alice_task)
            ),
            Err(Refused::Invalid(_))
        ));
        assert!(matches!(
            check(
                &alice,
                &read("t1", v1::SandboxTarget::Unspecified, ""),
                Some(alice_task)
            ),
            Err(Refused::Invalid(_))
        ));
    }
}
