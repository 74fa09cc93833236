//! The pages people read: the overview, roles, agents and usage here;
//! tasks and jobs in their own modules.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use wasmos_proto::v1;
use wasmos_proto::v1::jobs_server::Jobs;
use wasmos_proto::v1::operator_server::Operator;

use std::collections::BTreeMap;

use super::html::{self, bar, csrf, page, query, resources, resources_wire};
use super::session::Viewer;
use super::{Shared, as_viewer, error_page, page_viewer};
use crate::ids::Role;
use crate::resources::Resources;

/// Rows a table page shows.
pub(super) const ROWS: usize = 50;
/// How often live pages refresh, in milliseconds.
pub(super) const LIVE_MS: u32 = 2000;

/// The page's viewer, or the way to the login page.
macro_rules! viewer_or_return {
    ($ui:expr, $headers:expr) => {
        match page_viewer(&$ui, &$headers) {
            Ok(viewer) => viewer,
            Err(refused) => return refused.into_response(),
        }
    };
}

/// A service call's answer, or a page that says why it failed.
macro_rules! call_or_return {
    ($viewer:expr, $call:expr) => {
        match $call.await {
            Ok(response) => response.into_inner(),
            Err(status) => return error_page(Some(&$viewer), &status),
        }
    };
}

// After the macros, which they use.
mod jobs;
mod tasks;

pub use jobs::{job, jobs};
pub use tasks::{PathQuery, TasksQuery, files, task, tasks};

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

/// The agents page's place: the agent id its page starts after.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AgentsQuery {
    pub after: String,
}

/// Agents on one page of the agents page.
const AGENT_ROWS: u32 = 100;

pub async fn agents(
    State(ui): Shared,
    headers: HeaderMap,
    Query(asked): Query<AgentsQuery>,
) -> Response {
    let viewer = viewer_or_return!(ui, headers);
    let listed = call_or_return!(
        viewer,
        ui.operator.list_agents(as_viewer(
            &viewer,
            v1::ListAgentsRequest {
                page_size: AGENT_ROWS,
                page_token: asked.after.clone(),
            }
        ))
    );
    let agents = listed.agents;
    let admin = viewer.who.is_admin();
    let body = html! {
        p { (listed.matching) " agents" @if !asked.after.is_empty() { ", after " (asked.after) } "." }
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
        nav.pages {
            @if !asked.after.is_empty() {
                a href="/ui/agents" { "First page" } " "
            }
            @if !listed.next_page_token.is_empty() {
                a href={ "/ui/agents" (query(&[("after", listed.next_page_token.as_str())])) } { "Next page" }
            }
        }
    };
    page("Agents", Some(&viewer), LIVE_MS, body).into_response()
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
