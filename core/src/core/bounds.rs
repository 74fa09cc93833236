//! The size limits of [`crate::limits`] applied to every input, before the
//! input is authorized or handled: lists of ids lose their repeats and are
//! capped, strings are checked against their maxima, status messages cut.
//! A refusal is [`CoreError::InvalidArgument`] naming the field and the
//! limit, and changes nothing.

use wasmos_proto::v1;

use super::{CoreError, Input};
use crate::limits::{self, *};

/// `input` within the limits, or why not.
pub fn bound(input: Input) -> Result<Input, CoreError> {
    bound_input(input).map_err(CoreError::InvalidArgument)
}

fn bound_input(input: Input) -> Result<Input, String> {
    Ok(match input {
        Input::Subscribe {
            connection,
            framework,
        } => {
            check_bytes("framework.name", &framework.name, MAX_NAME_BYTES)?;
            check_bytes("framework.user", &framework.user, MAX_NAME_BYTES)?;
            check_bytes(
                "framework.framework_id",
                &framework.framework_id,
                MAX_ID_BYTES,
            )?;
            Input::Subscribe {
                connection,
                framework,
            }
        }
        Input::AgentRegister {
            connection,
            register,
        } => {
            let default = v1::AgentInfo::default();
            let info = register.agent.as_ref().unwrap_or(&default);
            check_bytes("agent.agent_id", &info.agent_id, MAX_ID_BYTES)?;
            check_bytes("agent.hostname", &info.hostname, MAX_HOSTNAME_BYTES)?;
            check_bytes("agent.version", &info.version, MAX_NAME_BYTES)?;
            limits::check_pairs(
                "agent.attributes",
                info.attributes
                    .iter()
                    .map(|a| (a.key.as_str(), a.value.as_str())),
                MAX_ATTRIBUTES,
            )?;
            check_count(
                "agent.reservations",
                info.reservations.len(),
                MAX_RESERVATIONS,
            )?;
            check_count("register.tasks", register.tasks.len(), MAX_TASKS_PER_AGENT)?;
            Input::AgentRegister {
                connection,
                register,
            }
        }
        Input::AgentUpdates {
            agent,
            mut statuses,
            unsynced,
        } => {
            for status in &mut statuses {
                limits::truncate(&mut status.message, MAX_STATUS_MESSAGE_BYTES);
                status.stdout_head.truncate(limits::STDOUT_HEAD_BYTES);
            }
            Input::AgentUpdates {
                agent,
                statuses,
                unsynced,
            }
        }
        Input::Accept(mut r) => {
            check_count("accept.tasks", r.tasks.len(), MAX_TASKS_PER_ACCEPT)?;
            check_count("accept.offer_ids", r.offer_ids.len(), MAX_OFFERS_PER_ACCEPT)?;
            for spec in &mut r.tasks {
                bound_spec(spec)?;
            }
            Input::Accept(r)
        }
        Input::Decline(r) => {
            check_count("decline.offer_ids", r.offer_ids.len(), MAX_IDS_PER_CALL)?;
            Input::Decline(r)
        }
        Input::Kill(mut r) => {
            r.task_ids = distinct("kill.task_ids", r.task_ids, MAX_IDS_PER_CALL)?;
            Input::Kill(r)
        }
        Input::Reconcile(mut r) => {
            r.task_ids = distinct("reconcile.task_ids", r.task_ids, MAX_IDS_PER_CALL)?;
            Input::Reconcile(r)
        }
        Input::Acknowledge(mut r) => {
            let acks: Vec<(String, Vec<u8>)> = r
                .acks
                .iter()
                .map(|a| (a.task_id.clone(), a.uuid.clone()))
                .collect();
            let acks = distinct("acknowledge.acks", acks, MAX_IDS_PER_CALL)?;
            if acks.len() < r.acks.len() {
                r.acks = acks
                    .into_iter()
                    .map(|(task_id, uuid)| v1::Ack {
                        task_id,
                        uuid,
                        agent_id: String::new(),
                    })
                    .collect();
            }
            Input::Acknowledge(r)
        }
        Input::OperatorKill { task_ids } => Input::OperatorKill {
            task_ids: distinct("task_ids", task_ids, MAX_IDS_PER_CALL)?,
        },
        other => other,
    })
}

/// A task spec's strings and lists (its resources and paths are
/// `validate.rs`'s).
fn bound_spec(spec: &v1::TaskSpec) -> Result<(), String> {
    let field = |name: &str| format!("task {}: {name}", spec.task_id);
    check_bytes(&field("name"), &spec.name, MAX_NAME_BYTES)?;
    limits::check_pairs(
        &field("labels"),
        spec.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        MAX_LABELS,
    )?;
    let args: usize = spec.args.iter().map(|a| a.len()).sum();
    if args > MAX_ARGS_BYTES {
        return Err(format!(
            "{} are {args} bytes together; the limit is {MAX_ARGS_BYTES}",
            field("args")
        ));
    }
    let env: usize = spec.env.iter().map(|e| e.name.len() + e.value.len()).sum();
    if env > MAX_ENV_BYTES {
        return Err(format!(
            "{} is {env} bytes together; the limit is {MAX_ENV_BYTES}",
            field("env")
        ));
    }
    Ok(())
}
