//! `/ui/api/...`: the JSON the pages' script reads (and anyone else may),
//! and a sandbox file as a download.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use wasmos_proto::v1;
use wasmos_proto::v1::operator_server::Operator;

use super::pages::{PathQuery, TasksQuery};
use super::session::Viewer;
use super::{Shared, Ui, api_viewer, as_viewer, html, http_status, page_viewer};
use crate::core::{TaskFilter, TaskPage};

/// Rows one API page holds at most, and by default.
const MAX_ROWS: usize = 1000;
const DEFAULT_ROWS: usize = 100;
/// Bytes of a log one read returns.
const LOG_CHUNK: u64 = 64 * 1024;

fn refused(status: &tonic::Status) -> Response {
    (
        http_status(status),
        Json(json!({ "error": status.message() })),
    )
        .into_response()
}

/// A page of the tasks `viewer` may see: one short query on the actor.
pub async fn task_page(
    ui: &Ui,
    viewer: &Viewer,
    filter: TaskFilter,
    after: &str,
    limit: usize,
) -> Result<TaskPage, tonic::Status> {
    let who = viewer.who.clone();
    let after = (!after.is_empty()).then(|| after.to_string());
    ui.actor
        .query(move |core, _| core.task_page(&filter, &who, after.as_deref(), limit))
        .await
}

pub async fn tasks(
    State(ui): Shared,
    headers: HeaderMap,
    Query(asked): Query<TasksQuery>,
) -> Response {
    let viewer = match api_viewer(&ui, &headers) {
        Ok(viewer) => viewer,
        Err(refused) => return refused.into_response(),
    };
    let limit = match asked.limit {
        0 => DEFAULT_ROWS,
        n => n.min(MAX_ROWS),
    };
    let page = match asked.filter() {
        Ok(filter) => task_page(&ui, &viewer, filter, &asked.after, limit).await,
        Err(status) => Err(status),
    };
    match page {
        Ok(page) => Json(json!({
            "matching": page.matching,
            "next": page.next.map(|id| id.to_string()),
            "tasks": page.tasks.iter().map(|t| json!({
                "id": t.id,
                "name": t.name,
                "state": html::state(t.state),
                "reason": html::reason(t.reason),
                "role": t.role,
                "owner": t.owner,
                "framework": t.framework,
                "agent": t.agent,
                "resources": t.resources,
                "updated_ms": t.updated_ms,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(status) => refused(&status),
    }
}

pub async fn overview(State(ui): Shared, headers: HeaderMap) -> Response {
    let viewer = match api_viewer(&ui, &headers) {
        Ok(viewer) => viewer,
        Err(refused) => return refused.into_response(),
    };
    let who = viewer.who.clone();
    let counts = ui
        .actor
        .query(move |core, _| {
            let agents = core.agents();
            let counts: serde_json::Map<String, serde_json::Value> = core
                .task_counts(&who)
                .into_iter()
                .map(|(state, n)| (html::state(state).to_string(), json!(n)))
                .collect();
            json!({
                "agents": agents.len(),
                "agents_connected": agents.iter().filter(|a| a.connected).count(),
                "tasks": counts,
            })
        })
        .await;
    match counts {
        Ok(mut body) => {
            body["tasks_per_second"] = json!(ui.history.tasks_per_second());
            Json(body).into_response()
        }
        Err(status) => refused(&status),
    }
}

/// What a page shows of a log, and where to read on from.
pub struct Log {
    pub text: String,
    pub next_offset: u64,
    /// The task ended: the log will not grow.
    pub complete: bool,
}

/// Reads up to [`LOG_CHUNK`] bytes of a task's stdout or stderr from
/// `offset`, through `Operator.ReadSandbox` as `viewer` (audited).
pub async fn read_log(
    ui: &Ui,
    viewer: &Viewer,
    task: &str,
    target: v1::SandboxTarget,
    offset: u64,
) -> Result<Log, tonic::Status> {
    let request = v1::ReadSandboxRequest {
        task_id: task.to_string(),
        target: target as i32,
        offset,
        length: LOG_CHUNK,
        ..Default::default()
    };
    let reply = ui
        .operator
        .read_sandbox(as_viewer(viewer, request))
        .await?
        .into_inner();
    let at_end = reply.complete && offset + reply.data.len() as u64 >= reply.size;
    let whole = whole_characters(&reply.data, at_end);
    Ok(Log {
        text: String::from_utf8_lossy(&reply.data[..whole]).into_owned(),
        next_offset: offset + whole as u64,
        complete: reply.complete && offset + whole as u64 >= reply.size,
    })
}

/// How much of `data` to show now: up to its last whole character, so
/// the next read starts on the rest of one cut in two; all of it when it
/// ends the file (`at_end`), or the page would wait for the rest forever.
fn whole_characters(data: &[u8], at_end: bool) -> usize {
    match std::str::from_utf8(data) {
        Err(e) if e.error_len().is_none() && !at_end => e.valid_up_to(),
        _ => data.len(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LogQuery {
    pub stream: String,
    pub offset: u64,
}

pub async fn log(
    State(ui): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(asked): Query<LogQuery>,
) -> Response {
    let viewer = match api_viewer(&ui, &headers) {
        Ok(viewer) => viewer,
        Err(refused) => return refused.into_response(),
    };
    let target = match asked.stream.as_str() {
        "stdout" | "" => v1::SandboxTarget::Stdout,
        "stderr" => v1::SandboxTarget::Stderr,
        other => {
            return refused(&tonic::Status::invalid_argument(format!(
                "`{other}` is not a stream: stdout or stderr"
            )));
        }
    };
    match read_log(&ui, &viewer, &id, target, asked.offset).await {
        Ok(log) => Json(json!({
            "text": log.text,
            "next_offset": log.next_offset,
            "complete": log.complete,
        }))
        .into_response(),
        Err(status) => refused(&status),
    }
}

/// A file of a task's sandbox, as a download of plain text: whatever the
/// task wrote, the browser neither renders nor runs it.
pub async fn file(
    State(ui): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(at): Query<PathQuery>,
) -> Response {
    let viewer = match page_viewer(&ui, &headers) {
        Ok(viewer) => viewer,
        Err(refused) => return refused.into_response(),
    };
    let request = v1::ReadSandboxRequest {
        task_id: id,
        target: v1::SandboxTarget::File as i32,
        path: at.path.clone(),
        ..Default::default()
    };
    match ui.operator.read_sandbox(as_viewer(&viewer, request)).await {
        Ok(reply) => {
            let name: String = at
                .path
                .rsplit('/')
                .next()
                .unwrap_or("file")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                .collect();
            let name = if name.is_empty() { "file".into() } else { name };
            (
                [
                    (
                        header::CONTENT_TYPE,
                        "text/plain; charset=utf-8".to_string(),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}\""),
                    ),
                ],
                reply.into_inner().data,
            )
                .into_response()
        }
        Err(status) => (http_status(&status), format!("{}\n", status.message())).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::whole_characters;

    #[test]
    fn a_character_cut_in_two_waits_for_its_rest_unless_the_file_ends() {
        let text = "tick é".as_bytes();
        let cut = &text[..text.len() - 1];
        assert_eq!(whole_characters(text, false), text.len());
        assert_eq!(whole_characters(cut, false), cut.len() - 1);
        assert_eq!(whole_characters(cut, true), cut.len());
        // Bytes that are no UTF-8 at all are shown (replaced), not held.
        assert_eq!(whole_characters(b"a\xffb", false), 3);
    }
}
