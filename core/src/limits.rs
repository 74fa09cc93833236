//! The documented maximum of everything that enters the master from the
//! wire, checked before anything is stored (see `proto/` for each field).
//!
//! Without them, one client could make the master hold any amount of
//! memory for a week (a framework name of megabytes kept for its failover
//! timeout), or answer one call with more bytes than any client accepts.
//! Each refusal names the field and the limit.

use crate::maps::HashSet;
use std::hash::Hash;

/// Names people read: framework names and users, task names.
pub const MAX_NAME_BYTES: usize = 256;
/// An agent's host name (as DNS bounds it).
pub const MAX_HOSTNAME_BYTES: usize = 255;
/// Ids a client names (agents naming their own on an insecure master).
pub const MAX_ID_BYTES: usize = 200;
/// Attributes one agent may carry, and the size of each key and value.
pub const MAX_ATTRIBUTES: usize = 64;
/// Labels one task may carry.
pub const MAX_LABELS: usize = 64;
pub const MAX_KEY_BYTES: usize = 128;
pub const MAX_VALUE_BYTES: usize = 1024;
/// Reservations one agent may declare.
pub const MAX_RESERVATIONS: usize = 64;
/// All of a task's arguments together, and all its environment.
pub const MAX_ARGS_BYTES: usize = 256 * 1024;
pub const MAX_ENV_BYTES: usize = 256 * 1024;
/// Ids one Kill, Reconcile, Acknowledge, Decline or operator kill may name
/// (after removing repeats).
pub const MAX_IDS_PER_CALL: usize = 50_000;
/// Items one page of a list call (`ListTasks`, `ListAgents`,
/// `ListFrameworks`) holds at most.
pub const MAX_PAGE: usize = 5_000;
/// Tasks one Accept may launch, and offers it may use.
pub const MAX_TASKS_PER_ACCEPT: usize = 10_000;
pub const MAX_OFFERS_PER_ACCEPT: usize = 1_000;
/// Task ids an agent reports on registration.
pub const MAX_TASKS_PER_AGENT: usize = 1_000_000;
/// A status message from an agent is cut to this many bytes.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 4096;
/// The head of a task's stdout a terminal status carries: at most this
/// many bytes (the agent sends no more; the master cuts what does).
pub const STDOUT_HEAD_BYTES: usize = 4096;
/// No event or agent message the master sends exceeds this: larger batches
/// are split (every SDK's default receive limit is 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Attempts one task of a job may have in all, and rules one retry policy
/// may hold (`wasmos_core::retry`).
pub const MAX_ATTEMPTS: u32 = 10;
pub const MAX_RETRY_RULES: usize = 5;

/// Refuses `value` longer than `max` bytes, naming `field`.
pub fn check_bytes(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        Err(format!(
            "{field} is {} bytes; the limit is {max}",
            value.len()
        ))
    } else {
        Ok(())
    }
}

/// Refuses a list of more than `max` items, naming `field`.
pub fn check_count(field: &str, count: usize, max: usize) -> Result<(), String> {
    if count > max {
        Err(format!("{field} has {count} items; the limit is {max}"))
    } else {
        Ok(())
    }
}

/// Key-value pairs (attributes, labels): their number and each size.
pub fn check_pairs<'a>(
    field: &str,
    pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    max: usize,
) -> Result<(), String> {
    check_count(field, pairs.len(), max)?;
    for (key, value) in pairs {
        check_bytes(&format!("{field} key"), key, MAX_KEY_BYTES)?;
        check_bytes(&format!("{field} `{key}`"), value, MAX_VALUE_BYTES)?;
    }
    Ok(())
}

/// `ids` without repeats, in first-seen order, refused past `max` distinct
/// ones: a call naming one id a million times costs what naming it once
/// does.
pub fn distinct<T: Clone + Eq + Hash>(
    field: &str,
    ids: Vec<T>,
    max: usize,
) -> Result<Vec<T>, String> {
    let mut seen = HashSet::with_capacity_and_hasher(ids.len().min(max + 1), Default::default());
    let mut out = Vec::with_capacity(ids.len().min(max + 1));
    for id in ids {
        if seen.insert(id.clone()) {
            out.push(id);
            if out.len() > max {
                return Err(format!(
                    "{field} names more than {max} distinct ids; the limit is {max}"
                ));
            }
        }
    }
    Ok(out)
}

/// Cuts `text` to at most `max` bytes, on a character boundary, marking
/// the cut.
pub fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
}

/// Splits `items` into batches whose encoding stays within `max` bytes
/// (an item larger than `max` goes alone).
pub fn split_by_bytes<T: prost::Message>(items: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for item in items {
        // The item, its field tag and its length prefix.
        let len = item.encoded_len() + 1 + prost::length_delimiter_len(item.encoded_len());
        if !batch.is_empty() && bytes + len > max {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += len;
        batch.push(item);
    }
    if !batch.is_empty() || batches.is_empty() {
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use wasmos_proto::v1;

    #[test]
    fn refusals_name_the_field_and_the_limit() {
        let err = check_bytes("framework.name", &"x".repeat(300), MAX_NAME_BYTES).unwrap_err();
        assert_eq!(err, "framework.name is 300 bytes; the limit is 256");
        assert!(check_bytes("n", "ok", 2).is_ok());
        let err = check_count("labels", 65, MAX_LABELS).unwrap_err();
        assert!(err.contains("65") && err.contains("64"), "{err}");
    }

    #[test]
    fn repeats_cost_nothing_and_distinct_ids_are_capped() {
        let ids = vec!["a".to_string(); 1_000_000];
        assert_eq!(
            distinct("task_ids", ids, 10).unwrap(),
            vec!["a".to_string()]
        );
        let many: Vec<u32> = (0..11).collect();
        assert!(distinct("task_ids", many, 10).unwrap_err().contains("10"));
        assert_eq!(
            distinct("x", vec![3, 1, 3, 2, 1], 10).unwrap(),
            vec![3, 1, 2]
        );
    }

    #[test]
    fn batches_stay_within_the_message_limit() {
        let status = |i: usize| v1::TaskStatus {
            task_id: format!("task-{i}"),
            message: "m".repeat(1000),
            ..Default::default()
        };
        let items: Vec<v1::TaskStatus> = (0..5000).map(status).collect();
        let batches = split_by_bytes(items, MAX_MESSAGE_BYTES);
        assert!(batches.len() > 1);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 5000);
        for batch in &batches {
            let event = v1::Updates {
                statuses: batch.clone(),
            };
            assert!(
                event.encoded_len() <= MAX_MESSAGE_BYTES,
                "{}",
                event.encoded_len()
            );
        }
        assert_eq!(split_by_bytes(Vec::<v1::TaskStatus>::new(), 10).len(), 1);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let mut text = "é".repeat(10);
        truncate(&mut text, 8);
        assert!(text.len() <= 8 && text.ends_with("..."), "{text}");
        let mut short = "ok".to_string();
        truncate(&mut short, 8);
        assert_eq!(short, "ok");
    }
}
