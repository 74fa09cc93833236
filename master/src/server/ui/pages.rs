//! The pages people read: overview, jobs, tasks, agents, roles, usage.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use wasmos_proto::v1;
use wasmos_proto::v1::jobs_server::Jobs;
use wasmos_proto::v1::operator_server::Operator;

use super::html::{self, bar, csrf, page, query, resources, resources_wire};
use super::session::Viewer;
use super::{Shared, as_viewer, error_page, page_viewer};
use std::collections::BTreeMap;

use crate::core::TaskFilter;
use crate::ids::Role;
use crate::resources::Resources;

/// Rows a table page shows.
const ROWS: usize = 50;
/// How often live pages refresh, in milliseconds.
const LIVE_MS: u32 = 2000;

macro_rules! viewer_or_return {
    ($ui:expr, $headers:expr) => {
        match page_viewer(&$ui, &$headers) {
            Ok(viewer) => viewer,
            Err(refused) => return refused.into_response(),
        }
    };
}

macro_rules! call_or_return {
    ($viewer:expr, $call:expr) => {
        match $call.await {
            Ok(response) => response.into_inner(),
            Err(status) => return error_page(Some(&$viewer), &status),
        }
    };
}

pub async fn overview(State(ui): Shared, headers: HeaderMap) -> Response {
    let viewer = viewer_or_return!(ui, headers);
    let who = viewer.who.clone();
    let cluster = ui
        .actor
        .query(move |core, _| {
            let agents = core.agents();
            let connected = agents.iter().filter(|a| a.connected).count();
            let draining = agents.iter().filter(|a| a.draining).count();
            let sum = |pick: fn(&crate::core::AgentView) -> Resources| {
                agents
                    .iter()
                    .filter(|a| a.connected)
                    .map(pick)
                    .fold(Resources::ZERO, |x, y| x + y)
            };
            let counts = core.task_counts(&who);
            (
                (agents.len(), connected, draining),
                (sum(|a| a.total), sum(|a| a.used)),
                counts,
                core.role_reservations(),
            )
        })
        .await;
    let Ok(((agents, connected, draining), (total, used), counts, reserved)) = cluster else {
        return error_page(Some(&viewer), &tonic::Status::unavailable("shutting down"));
    };
    let roles = call_or_return!(
        viewer,
        ui.operator
            .list_roles(as_viewer(&viewer, v1::ListRolesRequest {}))
    )
    .roles;
    let running = counts
        .get(&v1::TaskState::Running)
        .copied()
        .unwrap_or_default();
    let rate = ui.history.tasks_per_second();
    let body = html! {
        section.cards {
            div.card { h2 { "Agents" } p.big { (connected) } p { (agents) " known, " (draining) " draining" } }
            div.card { h2 { "Tasks running" } p.big id="running" { (running) } }
            div.card {
                h2 { "Tasks ended a second" }
                p.big { @match rate { Some(r) => (format!("{r:.1}")), None => "-" } }
                p { "over the last " (super::history::EVERY.as_secs()) " s" }
            }
        }
        section {
            h2 { "Resources of connected agents" }
            (bar(used.cpu_millis as f64, total.cpu_millis as f64,
                 &format!("cpus {} of {}", html::cpus(used.cpu_millis), html::cpus(total.cpu_millis))))
            (bar(used.mem as f64, total.mem as f64,
                 &format!("mem {} of {}", html::bytes(used.mem), html::bytes(total.mem))))
            (bar(used.disk as f64, total.disk as f64,
                 &format!("disk {} of {}", html::bytes(used.disk), html::bytes(total.disk))))
        }
        section {
            h2 { "Tasks by state" }
            table {
                tr { th { "state" } th.num { "tasks" } }
                @for (state, count) in &counts {
                    tr {
                        td { a href={ "/ui/tasks" (query(&[("state", html::state(*state))])) } { (html::state(*state)) } }
                        td.num { (count) }
                    }
                }
            }
        }
        section {
            h2 { "Dominant share of each role (solid) against its fair share (dashed), last 15 minutes" }
            (html::trusted(ui.history.chart()))
            (roles_table(&roles, &reserved, None))
        }
    };
    page("Overview", Some(&viewer), LIVE_MS, body).into_response()
}

/// A role's quota; none set reads as "none".
fn quota(quota: Option<&v1::Resources>) -> String {
    match quota.and_then(|q| Resources::try_from(q).ok()) {
        Some(q) if !q.is_zero() => resources(&q),
        _ => "none".to_string(),
    }
}

fn roles_table(
    roles: &[v1::RoleInfo],
    reserved: &BTreeMap<Role, Resources>,
    viewer: Option<&Viewer>,
) -> Markup {
    html! {
        table {
            tr {
                th { "role" } th.num { "weight" } th { "quota" } th { "reserved" } th { "allocated" }
                th.num { "share" } th.num { "fair share" } th.num { "frameworks" }
                @if viewer.is_some() { th { "change" } }
            }
            @for role in roles {
                tr {
                    td { a href={ "/ui/tasks" (query(&[("role", &role.name)])) } { (role.name) } }
                    td.num { (role.weight) }
                    td { (quota(role.quota.as_ref())) }
                    td {
                        @match reserved.get(role.name.as_str()) {
                            Some(r) => (resources(r)),
                            None => "none",
                        }
                    }
                    td { (resources_wire(role.allocated.as_ref())) }
                    td.num { (format!("{:.1}%", role.weighted_share * role.weight * 100.0)) }
                    td.num { (format!("{:.1}%", role.fair_share * 100.0)) }
                    td.num { (role.frameworks) }
                    @if let Some(viewer) = viewer {
                        td {
                            form.inline method="post" action={ "/ui/roles/" (html::encode(&role.name)) } {
                                (csrf(viewer))
                                input name="weight" size="4" value=(role.weight) aria-label="weight";
                                input name="quota" size="18" placeholder="cpus:4,mem:8GiB" aria-label="quota";
                                button type="submit" { "Set" }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn roles(State(ui): Shared, headers: HeaderMap) -> Response {
    let viewer = viewer_or_return!(ui, headers);
    let roles = call_or_return!(
        viewer,
        ui.operator
            .list_roles(as_viewer(&viewer, v1::ListRolesRequest {}))
    )
    .roles;
    let reserved = match ui.actor.query(|core, _| core.role_reservations()).await {
        Ok(reserved) => reserved,
        Err(status) => return error_page(Some(&viewer), &status),
    };
    let admin = viewer.who.is_admin().then_some(&viewer);
    let body = html! {
        (roles_table(&roles, &reserved, admin))
        @if admin.is_some() {
            p.hint { "A quota is written as the CLI takes it (cpus:4,mem:8GiB,disk:10GiB); left empty it stays as it is." }
        }
    };
    page("Roles", Some(&viewer), LIVE_MS, body).into_response()
}

pub async fn agents(State(ui): Shared, headers: HeaderMap) -> Response {
    let viewer = viewer_or_return!(ui, headers);
    let agents = call_or_return!(
        viewer,
        ui.operator
            .list_agents(as_viewer(&viewer, v1::ListAgentsRequest {}))
    )
    .agents;
    let admin = viewer.who.is_admin();
    let body = html! {
        table {
            tr {
                th { "agent" } th { "host" } th { "attributes" } th { "resources" } th { "used" }
                th.num { "tasks" } th { "state" } th { "last heard (UTC)" }
                @if admin { th { "change" } }
            }
            @for agent in &agents {
                @let info = agent.info.clone().unwrap_or_default();
                tr {
                    td { a href={ "/ui/tasks" (query(&[("agent", &info.agent_id)])) } { (info.agent_id) } }
                    td { (info.hostname) }
                    td { @for a in &info.attributes { span.attr { (a.key) "=" (a.value) } " " } }
                    td { (resources_wire(info.resources.as_ref())) }
                    td { (resources_wire(agent.used.as_ref())) }
                    td.num { (agent.tasks) }
                    td {
                        @if !agent.connected { span.badge.bad { "disconnected" } }
                        @else if agent.draining { span.badge.warn { "draining" } }
                        @else { span.badge.ok { "connected" } }
                    }
                    td { (html::time(agent.last_seen_ms)) }
                    @if admin {
                        td {
                            @let change = if agent.draining { "undrain" } else { "drain" };
                            form.inline method="post" action={ "/ui/agents/" (html::encode(&info.agent_id)) "/" (change) } {
                                (csrf(&viewer))
                                button type="submit" { (change) }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Agents", Some(&viewer), LIVE_MS, body).into_response()
}

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
    let page_of = match super::api::task_page(&ui, &viewer, filter, &asked.after, ROWS).await {
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
    let stdout = super::api::read_log(&ui, &viewer, &id, v1::SandboxTarget::Stdout, 0).await;
    let stderr = super::api::read_log(&ui, &viewer, &id, v1::SandboxTarget::Stderr, 0).await;
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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UsageQuery {
    pub by: String,
    /// Only the last this many hours (0: everything the ledger holds).
    pub hours: u64,
}

/// The spans the usage page offers: (hours, label).
const USAGE_SPANS: [(u64, &str); 4] = [
    (1, "last hour"),
    (24, "last day"),
    (168, "last week"),
    (0, "all"),
];

pub async fn usage(
    State(ui): Shared,
    headers: HeaderMap,
    Query(asked): Query<UsageQuery>,
) -> Response {
    let viewer = viewer_or_return!(ui, headers);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let request = v1::UsageRequest {
        since_ms: match asked.hours {
            0 => 0,
            hours => now_ms.saturating_sub(hours.saturating_mul(3_600_000)),
        },
        by: asked.by.clone(),
    };
    let hours = asked.hours.to_string();
    let usage = call_or_return!(viewer, ui.jobs.usage(as_viewer(&viewer, request)));
    let body = html! {
        p {
            "Group by: "
            @for by in ["role", "principal", "job"] {
                a href={ "/ui/usage" (query(&[("by", by), ("hours", &hours)])) } { (by) } " "
            }
            " · Over: "
            @for (span, label) in USAGE_SPANS {
                a href={ "/ui/usage" (query(&[("by", &asked.by), ("hours", &span.to_string())])) } { (label) } " "
            }
        }
        p { "Since " (html::time(usage.since_ms)) " UTC." }
        table {
            tr {
                th { "role" } th { "principal" } th { "job" } th.num { "tasks" } th.num { "first attempts" }
                th.num { "cpu s" } th.num { "fuel" } th.num { "task s" } th.num { "mem GiB·s" }
            }
            @for row in &usage.rows {
                tr {
                    td { (row.role) } td { (row.principal) } td { (row.job) }
                    td.num { (row.tasks) } td.num { (row.first_attempts) }
                    td.num { (format!("{:.1}", row.cpu_seconds)) } td.num { (row.fuel) }
                    td.num { (format!("{:.1}", row.task_seconds)) } td.num { (format!("{:.1}", row.mem_gib_seconds)) }
                }
            }
        }
    };
    page("Usage", Some(&viewer), LIVE_MS, body).into_response()
}
