//! Read-only views of the core for operators, the HTTP `/state` and tests.

use std::borrow::Borrow;

use serde::Serialize;
use wasmos_proto::v1;

use super::pages::{Page, first_after};
use super::{Agent, Core, Framework};
use crate::access::Principal;
use crate::ids::{AgentId, FrameworkId, Role, TaskId};
use crate::resources::Resources;

/// A task as the master knows it.
#[derive(Clone, Debug)]
pub struct TaskView {
    pub id: TaskId,
    pub framework: FrameworkId,
    pub agent: AgentId,
    pub resources: Resources,
    /// The spec as launched.
    pub spec: v1::TaskSpec,
    pub status: v1::TaskStatus,
    /// The principal owning its framework.
    pub owner: String,
    /// Its framework's role.
    pub role: Role,
    /// Its last changes of state, oldest first.
    pub transitions: Vec<super::Transition>,
}

impl TaskView {
    pub fn state(&self) -> v1::TaskState {
        self.status.state()
    }
}

/// An agent as the master knows it.
#[derive(Clone, Debug, Serialize)]
pub struct AgentView {
    pub id: AgentId,
    pub hostname: String,
    pub total: Resources,
    /// Resources in offers.
    pub offered: Resources,
    /// Resources held by tasks.
    pub used: Resources,
    pub connected: bool,
    pub draining: bool,
    pub tasks: usize,
    /// When the master last heard from it, in wall-clock milliseconds.
    pub last_seen_ms: u64,
}

/// A framework as the master knows it.
#[derive(Clone, Debug, Serialize)]
pub struct FrameworkView {
    pub id: FrameworkId,
    pub name: String,
    pub role: Role,
    /// The principal that owns it.
    pub principal: String,
    pub connected: bool,
    pub suppressed: bool,
    /// Offered plus used.
    pub allocated: Resources,
    /// In outstanding offers.
    pub offered: Resources,
    pub dominant_share: f64,
    pub offers: usize,
    pub active_tasks: usize,
}

impl Core {
    /// One task, if the master still knows it.
    pub fn task(&self, id: &str) -> Option<TaskView> {
        let task = self.tasks.get(id).or_else(|| self.graveyard.get(id));
        task.map(|t| TaskView {
            id: t.id.clone(),
            framework: t.framework.clone(),
            agent: t.agent.clone(),
            resources: t.resources,
            spec: t.spec.clone(),
            status: t.status.clone(),
            owner: t.owner.clone(),
            role: t.role.clone(),
            transitions: t.transitions.list(),
        })
    }

    /// The ids of the tasks of framework `framework` not yet archived
    /// (running, or ended with the end not yet acknowledged).
    pub fn framework_tasks(&self, framework: &str) -> Vec<String> {
        self.tasks
            .values()
            .filter(|t| t.framework.as_str() == framework)
            .map(|t| t.id.to_string())
            .collect()
    }

    /// Every task the master knows (active, archived, and those of removed
    /// frameworks), in id order.
    pub fn tasks(&self) -> Vec<TaskView> {
        let mut ids: Vec<&TaskId> = self.tasks.keys().chain(self.graveyard.keys()).collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.task(id.as_str()))
            .collect()
    }

    /// Every agent, in id order.
    pub fn agents(&self) -> Vec<AgentView> {
        let mut agents: Vec<AgentView> = self.agents.values().map(|a| self.agent_view(a)).collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        agents
    }

    /// The first `limit` agents after `after`, in id order: one pass over
    /// the agents' ids, views made of the page's alone.
    pub fn agent_page(&self, after: Option<&str>, limit: usize) -> Page<AgentView> {
        let limit = limit.max(1);
        let (ids, matching) = first_after(self.agents.keys(), after, limit);
        page(ids, limit, matching, |id| self.agent_view(&self.agents[id]))
    }

    fn agent_view(&self, a: &Agent) -> AgentView {
        let offered = a
            .offers
            .iter()
            .map(|o| self.offers[o].resources)
            .fold(Resources::ZERO, |x, y| x + y);
        let used = a
            .tasks
            .iter()
            .filter_map(|t| self.tasks.get(t))
            .filter(|t| !t.released)
            .map(|t| t.resources)
            .fold(Resources::ZERO, |x, y| x + y);
        AgentView {
            id: a.id.clone(),
            hostname: a.info.hostname.clone(),
            total: a.total,
            offered,
            used,
            connected: a.connection.is_some(),
            draining: a.draining,
            tasks: a.tasks.len(),
            last_seen_ms: self.wall(a.last_seen),
        }
    }

    /// Every framework, in id order.
    pub fn frameworks(&self) -> Vec<FrameworkView> {
        let mut frameworks: Vec<FrameworkView> = self
            .frameworks
            .values()
            .map(|f| self.framework_view(f))
            .collect();
        frameworks.sort_by(|a, b| a.id.cmp(&b.id));
        frameworks
    }

    /// The first `limit` frameworks `who` may see after `after`, in id
    /// order.
    pub fn framework_page(
        &self,
        who: &Principal,
        after: Option<&str>,
        limit: usize,
    ) -> Page<FrameworkView> {
        let limit = limit.max(1);
        let visible = self
            .frameworks
            .values()
            .filter(|f| who.may_see(&f.info.principal))
            .map(|f| &f.id);
        let (ids, matching) = first_after(visible, after, limit);
        page(ids, limit, matching, |id| {
            self.framework_view(&self.frameworks[id])
        })
    }

    fn framework_view(&self, f: &Framework) -> FrameworkView {
        FrameworkView {
            id: f.id.clone(),
            name: f.info.name.clone(),
            role: f.role.clone(),
            principal: f.info.principal.clone(),
            connected: f.connection.is_some(),
            suppressed: f.suppressed,
            allocated: self
                .allocator
                .framework_allocation(&f.id)
                .unwrap_or_default(),
            offered: f
                .offers
                .iter()
                .map(|o| self.offers[o].resources)
                .fold(Resources::ZERO, |x, y| x + y),
            dominant_share: self.allocator.framework_share(&f.id).unwrap_or_default(),
            offers: f.offers.len(),
            active_tasks: f.tasks.len(),
        }
    }

    /// What an agent said about itself when it registered.
    pub fn agent_info(&self, id: &AgentId) -> Option<&v1::AgentInfo> {
        self.agents.get(id).map(|a| &a.info)
    }

    /// A framework's role.
    pub fn framework_role(&self, id: &str) -> Option<&Role> {
        self.frameworks.get(id).map(|f| &f.role)
    }

    /// A framework's role and the principal that owns it.
    pub fn framework_owner(&self, id: &str) -> Option<(&Role, &str)> {
        self.frameworks
            .get(id)
            .map(|f| (&f.role, f.info.principal.as_str()))
    }

    /// How many offers are outstanding.
    pub fn offer_count(&self) -> usize {
        self.offers.len()
    }

    /// What the agents reserve for each role, in all.
    pub fn role_reservations(&self) -> std::collections::BTreeMap<Role, Resources> {
        let mut reserved = std::collections::BTreeMap::new();
        for agent in self.agents.values() {
            for (role, amount) in &agent.reservations {
                *reserved.entry(role.clone()).or_insert(Resources::ZERO) += *amount;
            }
        }
        reserved
    }

    /// The reservations an agent registered with.
    pub fn agent_reservations(&self, id: &AgentId) -> Option<&[(Role, Resources)]> {
        self.agents.get(id).map(|a| a.reservations.as_slice())
    }
}

/// The page of the first `limit` of `ids` (sorted; one more says a next
/// page exists), each made into its view.
fn page<K: Borrow<str>, T>(
    ids: Vec<&K>,
    limit: usize,
    matching: usize,
    view: impl Fn(&K) -> T,
) -> Page<T> {
    let more = ids.len() > limit;
    let ids = &ids[..ids.len().min(limit)];
    Page {
        next: more
            .then(|| ids.last().map(|id| Borrow::<str>::borrow(*id).to_string()))
            .flatten(),
        items: ids.iter().map(|id| view(id)).collect(),
        matching,
    }
}
