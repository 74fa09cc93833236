//! The answers of `ListTasks`, `ListAgents` and `ListFrameworks`, read
//! off the core in the actor's turn: a page at a time when the caller sets
//! `page_size` (a pass over ids, views made of the page's items alone), or
//! everything at once for clients from before paging.

use wasmos_proto::v1;

use super::wire;
use crate::access::Principal;
use crate::core::{AgentView, Core, FrameworkView, TaskFilter, TaskView};
use crate::limits::MAX_PAGE;

/// What a request asks of paging: `None` for everything at once, else
/// the page's size (capped) and the id to start after.
fn paging(page_size: u32, page_token: &str) -> Option<(usize, Option<&str>)> {
    (page_size > 0).then(|| {
        let size = (page_size as usize).min(MAX_PAGE);
        (size, (!page_token.is_empty()).then_some(page_token))
    })
}

pub fn tasks(core: &Core, who: &Principal, request: v1::ListTasksRequest) -> v1::ListTasksResponse {
    let framework = request.framework_id.as_str();
    let wanted = |t: &TaskView| {
        who.may_see(&t.owner) && (framework.is_empty() || framework == t.framework.as_str())
    };
    let Some((size, after)) = paging(request.page_size, &request.page_token) else {
        let tasks = core
            .tasks()
            .into_iter()
            .filter(|t| {
                request.task_ids.is_empty() || request.task_ids.iter().any(|id| id == t.id.as_str())
            })
            .filter(wanted)
            .map(task_info)
            .collect();
        return v1::ListTasksResponse {
            tasks,
            ..Default::default()
        };
    };
    if request.task_ids.is_empty() {
        let filter = TaskFilter {
            framework: request.framework_id.clone(),
            ..Default::default()
        };
        let page = core.task_page(&filter, who, after, size);
        return v1::ListTasksResponse {
            tasks: page
                .tasks
                .iter()
                .filter_map(|line| core.task(line.id.as_str()))
                .map(task_info)
                .collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
            matching: page.matching as u64,
        };
    }
    // Named tasks: as many as the request could name, so sorting them is
    // bounded by its size.
    let mut named: Vec<TaskView> = request
        .task_ids
        .iter()
        .filter_map(|id| core.task(id))
        .filter(wanted)
        .collect();
    named.sort_by(|a, b| a.id.cmp(&b.id));
    named.dedup_by(|a, b| a.id == b.id);
    let matching = named.len() as u64;
    let mut rest = named
        .into_iter()
        .filter(|t| after.is_none_or(|after| t.id.as_str() > after));
    let tasks: Vec<TaskView> = rest.by_ref().take(size).collect();
    let more = rest.next().is_some();
    v1::ListTasksResponse {
        next_page_token: match tasks.last() {
            Some(last) if more => last.id.to_string(),
            _ => String::new(),
        },
        tasks: tasks.into_iter().map(task_info).collect(),
        matching,
    }
}

pub fn agents(core: &Core, request: v1::ListAgentsRequest) -> v1::ListAgentsResponse {
    let agent = |a: AgentView| v1::AgentState {
        info: core.agent_info(&a.id).cloned(),
        used: wire(&a.used),
        offered: wire(&a.offered),
        connected: a.connected,
        draining: a.draining,
        tasks: a.tasks as u32,
        last_seen_ms: a.last_seen_ms,
    };
    match paging(request.page_size, &request.page_token) {
        None => v1::ListAgentsResponse {
            agents: core.agents().into_iter().map(agent).collect(),
            ..Default::default()
        },
        Some((size, after)) => {
            let page = core.agent_page(after, size);
            v1::ListAgentsResponse {
                agents: page.items.into_iter().map(agent).collect(),
                next_page_token: page.next.unwrap_or_default(),
                matching: page.matching as u64,
            }
        }
    }
}

pub fn frameworks(
    core: &Core,
    who: &Principal,
    request: v1::ListFrameworksRequest,
) -> v1::ListFrameworksResponse {
    let fair = core.allocator().fair_shares();
    let framework = |f: FrameworkView| v1::FrameworkState {
        fair_share: fair.frameworks.get(&f.id).copied().unwrap_or(0.0),
        info: Some(v1::FrameworkInfo {
            framework_id: f.id.to_string(),
            name: f.name,
            role: f.role.to_string(),
            principal: f.principal,
            ..Default::default()
        }),
        connected: f.connected,
        suppressed: f.suppressed,
        used: wire(&f.allocated.saturating_sub(&f.offered)),
        offered: wire(&f.offered),
        dominant_share: f.dominant_share,
        active_tasks: f.active_tasks as u32,
    };
    match paging(request.page_size, &request.page_token) {
        None => v1::ListFrameworksResponse {
            frameworks: core
                .frameworks()
                .into_iter()
                .filter(|f| who.may_see(&f.principal))
                .map(framework)
                .collect(),
            ..Default::default()
        },
        Some((size, after)) => {
            let page = core.framework_page(who, after, size);
            v1::ListFrameworksResponse {
                frameworks: page.items.into_iter().map(framework).collect(),
                next_page_token: page.next.unwrap_or_default(),
                matching: page.matching as u64,
            }
        }
    }
}

fn task_info(t: TaskView) -> v1::TaskInfo {
    v1::TaskInfo {
        task_id: t.id.to_string(),
        framework_id: t.framework.to_string(),
        agent_id: t.agent.to_string(),
        name: t.spec.name.clone(),
        resources: wire(&t.resources),
        status: Some(t.status),
        principal: t.owner,
    }
}
