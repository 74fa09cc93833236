//! The tasks pages: the paged table, a task's page and its sandbox's files.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use wasmos_proto::v1;
use wasmos_proto::v1::operator_server::Operator;

use super::super::html::{self, page, query, resources};
use super::super::{Shared, api, as_viewer, error_page, page_viewer};
use super::{LIVE_MS, ROWS};
use crate::core::TaskFilter;

/// The tasks page's filters and place, from its query string.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TasksQuery {
    pub state: String,
    pub reason: String,
    pub role: String,
    pub framework: String,
    pub agent: String,
    pub job: String,
    pub after: String,
    pub limit: usize,
}

impl TasksQuery {
    /// The filter it asks for, or why it cannot be read.
    pub fn filter(&self) -> Result<TaskFilter, tonic::Status> {
        let state = match self.state.as_str() {
            "" => None,
            s => Some(
                v1::TaskState::from_str_name(&format!("TASK_STATE_{}", s.to_uppercase()))
                    .ok_or_else(|| {
                        tonic::Status::invalid_argument(format!("`{s}` is not a task state"))
                    })?,
            ),
        };
        let reason = match self.reason.as_str() {
            "" => None,
            r => Some(
                v1::Reason::from_str_name(&format!("REASON_{}", r.to_uppercase())).ok_or_else(
                    || tonic::Status::invalid_argument(format!("`{r}` is not a reason")),
                )?,
            ),
        };
        Ok(TaskFilter {
            state,
            reason,
            role: self.role.clone(),
            framework: self.framework.clone(),
            agent: self.agent.clone(),
            job: self.job.clone(),
        })
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        vec![
            ("state", &self.state),
            ("reason", &self.reason),
            ("role", &self.role),
            ("framework", &self.framework),
            ("agent", &self.agent),
            ("job", &self.job),
        ]
    }
}

pub async fn tasks(
    State(ui): Shared,
    headers: HeaderMap,
    Query(asked): Query<TasksQuery>,
) -> Response {
    let viewer = viewer_or_return!(ui, headers);
    let filter = match asked.filter() {
        Ok(filter) => filter,
        Err(status) => return error_page(Some(&viewer), &status),
    };
    let page_of = match api::task_page(&ui, &viewer, filter, &asked.after, ROWS).await {
        Ok(page) => page,
        Err(status) => return error_page(Some(&viewer), &status),
    };
    let states = [
        "", "STAGING", "STARTING", "RUNNING", "FINISHED", "FAILED", "KILLED", "LOST", "ERROR",
    ];
    let body = html! {
        form.filters method="get" action="/ui/tasks" {
            label { "state " select name="state" {
                @for s in states {
                    option value=(s) selected[s == asked.state.to_uppercase()] { @if s.is_empty() { "any" } @else { (s) } }
                }
            } }
            @for (name, value) in [("reason", &asked.reason), ("role", &asked.role), ("framework", &asked.framework), ("agent", &asked.agent), ("job", &asked.job)] {
                label { (name) " " input name=(name) value=(value) size="12"; }
            }
            button type="submit" { "Filter" }
        }
        p { (page_of.matching) " tasks match" @if !asked.after.is_empty() { ", after " (asked.after) } "." }
        table {
            tr {
                th { "task" } th { "name" } th { "state" } th { "reason" } th { "role" }
                th { "owner" } th { "agent" } th { "resources" } th { "updated (UTC)" }
            }
            @for t in &page_of.tasks {
                tr {
                    td { a href={ "/ui/tasks/" (html::encode(t.id.as_str())) } { (t.id) } }
                    td { (t.name) }
                    td { span.badge.(html::state_class(t.state)) { (html::state(t.state)) } }
                    td { (html::reason(t.reason)) }
                    td { (t.role) }
                    td { (t.owner) }
                    td { (t.agent) }
                    td { (resources(&t.resources)) }
                    td { (html::time(t.updated_ms)) }
                }
            }
        }
        nav.pages {
            @if !asked.after.is_empty() {
                a href={ "/ui/tasks" (query(&asked.pairs())) } { "First page" } " "
            }
            @if let Some(next) = &page_of.next {
                a href={ "/ui/tasks" (query(&[asked.pairs(), vec![("after", next.as_str())]].concat())) } { "Next page" }
            }
        }
    };
    page("Tasks", Some(&viewer), LIVE_MS, body).into_response()
}

pub async fn task(State(ui): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let viewer = viewer_or_return!(ui, headers);
    let who = viewer.who.clone();
    let lookup = id.clone();
    let task = ui
        .actor
        .query(move |core, _| core.task(&lookup).filter(|t| who.may_see(&t.owner)))
        .await;
    let task = match task {
        Ok(Some(task)) => task,
        Ok(None) => {
            let status = tonic::Status::not_found(format!("no task {id} that you may see"));
            return error_page(Some(&viewer), &status);
        }
        Err(status) => return error_page(Some(&viewer), &status),
    };
    let stdout = api::read_log(&ui, &viewer, &id, v1::SandboxTarget::Stdout, 0).await;
    let stderr = api::read_log(&ui, &viewer, &id, v1::SandboxTarget::Stderr, 0).await;
    let status = &task.status;
    let usage = status.usage.unwrap_or_default();
    let spec = &task.spec;
    let body = html! {
        dl {
            dt { "name" } dd { (spec.name) }
            dt { "state" } dd { span.badge.(html::state_class(task.state())) { (html::state(task.state())) } }
            @if !html::reason(status.reason()).is_empty() {
                dt { "reason" } dd.reason { (html::reason(status.reason())) }
            }
            @if !status.message.is_empty() { dt { "message" } dd { pre.inline { (status.message) } } }
            @if let Some(code) = status.exit_code { dt { "exit code" } dd { (code) } }
            dt { "updated (UTC)" } dd { (html::time(status.timestamp_ms)) }
            dt { "framework" } dd { a href={ "/ui/tasks" (query(&[("framework", task.framework.as_str())])) } { (task.framework) } }
            @if let Some((job, _, _)) = crate::jobs::submit::parse_task_id(task.id.as_str()) {
                dt { "job" } dd { a href={ "/ui/jobs/" (html::encode(job)) } { (job) } }
            }
            dt { "role" } dd { (task.role) }
            dt { "owner" } dd { (task.owner) }
            dt { "agent" } dd { (task.agent) }
            dt { "artifact" } dd { code { (spec.artifact) } }
            dt { "args" } dd { code { (spec.args.join(" ")) } }
            dt { "env" } dd { @for e in &spec.env { code { (e.name) } " " } }
            dt { "resources" } dd { (resources(&task.resources)) }
            dt { "limits" } dd {
                (if spec.max_fuel == 0 { "no fuel cap".to_string() } else { format!("{} fuel", spec.max_fuel) })
                ", "
                (if spec.timeout_ms == 0 { "no deadline".to_string() } else { format!("deadline {}", html::duration(spec.timeout_ms)) })
            }
            dt { "usage" } dd {
                (usage.fuel_consumed) " fuel, " (html::duration(usage.wall_time_ms)) " wall, "
                (html::duration(usage.cpu_time_ms)) " cpu, peak mem " (html::bytes(usage.peak_mem))
            }
        }
        h2 { "Last changes of state" }
        table {
            tr { th { "state" } th { "reason" } th { "at (UTC)" } }
            @for change in &task.transitions {
                tr { td { (html::state(change.state)) } td { (html::reason(change.reason)) } td { (html::time_ms(change.at_ms)) } }
            }
        }
        p { a href={ "/ui/tasks/" (html::encode(&id)) "/files" } { "Files in its sandbox" } }
        @for (label, target, read) in [("stdout", "stdout", &stdout), ("stderr", "stderr", &stderr)] {
            h2 { (label) }
            @match read {
                Ok(log) => {
                    pre.log id=(label)
                        data-follow={ "/ui/api/tasks/" (html::encode(&id)) "/log?stream=" (target) }
                        data-offset=(log.next_offset) data-complete=(log.complete) { (log.text) }
                }
                Err(status) => p.error { (status.message()) }
            }
        }
    };
    // The task page refreshes by following its logs, not by reloading.
    page(&format!("Task {id}"), Some(&viewer), 0, body).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PathQuery {
    pub path: String,
}

pub async fn files(
    State(ui): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(at): Query<PathQuery>,
) -> Response {
    let viewer = viewer_or_return!(ui, headers);
    let request = v1::ReadSandboxRequest {
        task_id: id.clone(),
        target: v1::SandboxTarget::List as i32,
        path: at.path.clone(),
        ..Default::default()
    };
    let listing = call_or_return!(
        viewer,
        ui.operator.read_sandbox(as_viewer(&viewer, request))
    );
    let base = at.path.trim_matches('/');
    let join = |name: &str| {
        if base.is_empty() || base == "." {
            name.to_string()
        } else {
            format!("{base}/{name}")
        }
    };
    let body = html! {
        p { "In " code { "/" (base) } " of task " a href={ "/ui/tasks/" (html::encode(&id)) } { (id) } "." }
        table {
            tr { th { "name" } th.num { "size" } }
            @for entry in &listing.entries {
                tr {
                    td {
                        @if entry.is_dir {
                            a href={ "/ui/tasks/" (html::encode(&id)) "/files" (query(&[("path", &join(&entry.name))])) } { (entry.name) "/" }
                        } @else {
                            a href={ "/ui/tasks/" (html::encode(&id)) "/file" (query(&[("path", &join(&entry.name))])) } { (entry.name) }
                        }
                    }
                    td.num { @if !entry.is_dir { (html::bytes(entry.size)) } }
                }
            }
        }
    };
    page(&format!("Files of {id}"), Some(&viewer), 0, body).into_response()
}
