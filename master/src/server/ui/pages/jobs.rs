//! The jobs pages: the list, and a job's page with its failures by reason.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use wasmos_proto::v1;
use wasmos_proto::v1::jobs_server::Jobs;

use super::super::html::{self, bar, csrf, page, query};
use super::super::{Shared, as_viewer, error_page, page_viewer};
use super::{LIVE_MS, ROWS};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobsQuery {
    pub after: String,
}

fn job_state(state: i32) -> &'static str {
    let state = v1::JobState::try_from(state).unwrap_or_default();
    state
        .as_str_name()
        .strip_prefix("JOB_STATE_")
        .unwrap_or("UNSPECIFIED")
}

fn job_progress(job: &v1::JobSummary) -> Markup {
    let done = job.succeeded + job.failed + job.cancelled;
    bar(
        f64::from(done),
        f64::from(job.count),
        &format!(
            "{done} of {} done: {} ok, {} failed, {} cancelled, {} running",
            job.count, job.succeeded, job.failed, job.cancelled, job.running
        ),
    )
}

pub async fn jobs(
    State(ui): Shared,
    headers: HeaderMap,
    Query(asked): Query<JobsQuery>,
) -> Response {
    let viewer = viewer_or_return!(ui, headers);
    let request = v1::ListJobsRequest {
        after: asked.after.clone(),
        limit: ROWS as u32,
    };
    let listed = call_or_return!(viewer, ui.jobs.list(as_viewer(&viewer, request)));
    let body = html! {
        table {
            tr {
                th { "job" } th { "name" } th { "state" } th { "role" } th { "owner" }
                th.wide { "progress" } th { "submitted (UTC)" }
            }
            @for job in &listed.jobs {
                tr {
                    td { a href={ "/ui/jobs/" (html::encode(&job.job_id)) } { (job.job_id) } }
                    td { (job.name) }
                    td { (job_state(job.state)) @if job.held { " (held)" } }
                    td { (job.role) }
                    td { (job.owner) }
                    td { (job_progress(job)) }
                    td { (html::time(job.submitted_ms)) }
                }
            }
        }
        @if listed.jobs.is_empty() { p { "No jobs that you may see." } }
        nav.pages {
            @if !asked.after.is_empty() { a href="/ui/jobs" { "First page" } " " }
            @if !listed.next.is_empty() {
                a href={ "/ui/jobs" (query(&[("after", &listed.next)])) } { "Next page" }
            }
        }
    };
    page("Jobs", Some(&viewer), LIVE_MS, body).into_response()
}

/// Failed indices the job page shows with their output.
const FAILURES_SHOWN: u32 = 20;

pub async fn job(State(ui): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let viewer = viewer_or_return!(ui, headers);
    let request = v1::JobRequest {
        job_id: id.clone(),
        detail: true,
    };
    let job = call_or_return!(viewer, ui.jobs.get(as_viewer(&viewer, request)));
    let failures = if job.failed + job.cancelled > 0 && !job.expired {
        let request = v1::JobResultsRequest {
            job_id: id.clone(),
            from_index: 0,
            limit: FAILURES_SHOWN,
            failed_only: true,
        };
        call_or_return!(viewer, ui.jobs.results(as_viewer(&viewer, request))).results
    } else {
        Vec::new()
    };
    // The failures grouped by reason, each with its task's last message
    // while the master still knows the task.
    let task_ids: Vec<String> = failures.iter().map(|r| r.task_id.clone()).collect();
    let messages: BTreeMap<String, String> = ui
        .actor
        .query(move |core, _| {
            task_ids
                .into_iter()
                .filter_map(|id| {
                    let message = core.task(&id)?.status.message;
                    Some((id, message))
                })
                .collect()
        })
        .await
        .unwrap_or_default();
    let mut by_reason: BTreeMap<&'static str, Vec<&v1::IndexResult>> = BTreeMap::new();
    for result in &failures {
        let reason = result
            .outcome
            .as_ref()
            .map_or(v1::Reason::Unspecified, |o| o.reason());
        let reason = match html::reason(reason) {
            "" => "no reason (killed or cancelled before it ran)",
            named => named,
        };
        by_reason.entry(reason).or_default().push(result);
    }
    let detail = job.detail.clone().unwrap_or_default();
    let ended = job.ended_ms != 0;
    let body = html! {
        (job_progress(&job))
        dl {
            dt { "name" } dd { (job.name) }
            dt { "state" } dd { (job_state(job.state)) @if job.held { " (held)" } }
            @if !job.reason.is_empty() { dt { "reason" } dd { (job.reason) } }
            dt { "role" } dd { (job.role) }
            dt { "owner" } dd { (job.owner) }
            dt { "priority" } dd { (job.priority) }
            dt { "submitted (UTC)" } dd { (html::time(job.submitted_ms)) }
            @if ended { dt { "ended (UTC)" } dd { (html::time(job.ended_ms)) } }
            dt { "run time" } dd { "p50 " (html::duration(detail.run_time_p50_ms)) ", p99 " (html::duration(detail.run_time_p99_ms)) }
            dt { "fuel" } dd { (detail.fuel) }
            dt { "attempts" } dd { (detail.attempts) }
            dt { "tasks" } dd { a href={ "/ui/tasks" (query(&[("job", &job.job_id)])) } { "this job's tasks" } }
        }
        @if !ended {
            div.actions {
                @for change in ["cancel", if job.held { "release" } else { "hold" }] {
                    form.inline method="post" action={ "/ui/jobs/" (html::encode(&id)) "/" (change) } {
                        (csrf(&viewer))
                        button type="submit" { (change) }
                    }
                }
            }
        }
        @if !detail.ends.is_empty() {
            h2 { "Ends by state and reason" }
            table {
                tr { th { "state" } th { "reason" } th.num { "indices" } }
                @for end in &detail.ends {
                    @let state = v1::TaskState::try_from(end.state).unwrap_or_default();
                    @let reason = v1::Reason::try_from(end.reason).unwrap_or_default();
                    tr {
                        td { (html::state(state)) }
                        td {
                            @if reason == v1::Reason::Unspecified { "-" }
                            @else { a href={ "/ui/tasks" (query(&[("job", &job.job_id), ("reason", html::reason(reason))])) } { (html::reason(reason)) } }
                        }
                        td.num { (end.count) }
                    }
                }
            }
        }
        @if !failures.is_empty() {
            h2 { "Failed indices by reason (the first " (FAILURES_SHOWN) ")" }
            @for (reason, results) in &by_reason {
                h3 { (reason) " (" (results.len()) ")" }
                table {
                    tr { th.num { "index" } th { "task" } th.num { "exit" } th { "message" } th { "stdout (head)" } }
                    @for result in results {
                        @let outcome = result.outcome.clone().unwrap_or_default();
                        tr {
                            td.num { (result.index) }
                            td { a href={ "/ui/tasks/" (html::encode(&result.task_id)) } { (result.task_id) } }
                            td.num { @if let Some(code) = outcome.exit_code { (code) } }
                            td { pre.inline { (messages.get(&result.task_id).map_or("", String::as_str)) } }
                            td { pre.inline { (String::from_utf8_lossy(result.stdout_head.as_deref().unwrap_or_default())) } }
                        }
                    }
                }
            }
        }
    };
    page(&format!("Job {id}"), Some(&viewer), LIVE_MS, body).into_response()
}
