//! The `sandbox_reads` target: any sandbox read request, from any kind of
//! caller, is either refused by the master's one check or names a path the
//! agent also accepts and that stays inside the task's root.

use prost::Message;
use wasmos_master::AgentId;
use wasmos_master::access::{Grant, Principal};
use wasmos_master::sandbox_read::{Listed, check};
use wasmos_proto::v1;

pub fn sandbox_reads(data: &[u8]) {
    // The bytes as a request, or as the path and task id of one.
    let request = v1::ReadSandboxRequest::decode(data).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(data);
        let (task_id, path) = text.split_once('\n').unwrap_or(("t1", &text));
        v1::ReadSandboxRequest {
            task_id: task_id.to_string(),
            target: (data.len() % 5) as i32,
            path: path.to_string(),
            agent_id: if data.len().is_multiple_of(2) {
                "a1".into()
            } else {
                String::new()
            },
            ..Default::default()
        }
    });
    let agent = AgentId::from("a1");
    let principal = |name: &str, grant| Principal {
        name: name.into(),
        accessor: String::new(),
        grant,
    };
    let callers = [
        principal("admin", Grant::Admin),
        principal("viewer", Grant::ReadOnly),
        principal("alice", Grant::Roles(vec!["batch".into()])),
    ];
    for who in &callers {
        for owner in [None, Some("alice"), Some("bob")] {
            let listed = owner.map(|owner| Listed {
                owner,
                agent: &agent,
            });
            let Ok(read) = check(who, &request, listed) else {
                continue;
            };
            assert!(
                wasmos_agent::check_task_id(&read.task_id).is_ok(),
                "the agent refuses task id {:?} the master let through",
                read.task_id
            );
            if !read.path.is_empty() {
                let rel = wasmos_agent::relative_path(&read.path)
                    .unwrap_or_else(|e| panic!("the agent refuses {:?}: {e}", read.path));
                assert!(
                    rel.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_))),
                    "{rel:?} leaves the root"
                );
            }
            if let Some(owner) = owner {
                assert!(who.may_see(owner), "{} read {owner}'s task", who.name);
            } else {
                assert!(who.sees_all(), "{} read a task by agent", who.name);
            }
        }
    }
}
