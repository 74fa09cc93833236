//! Counters the master keeps for `/metrics` (Prometheus text format).
//!
//! Gauges (agents, frameworks, offers, tasks by state) are read from the core
//! at scrape time; counters (terminal tasks by reason, fuel and task-seconds
//! per role and principal, allocation cycle time) are kept here, fed by the
//! events the actor routes.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;

use super::histogram::Histogram;
use crate::core::{Core, is_terminal};
use crate::ids::TaskId;

/// Usage accounted to one (role, principal): never per framework or job,
/// whose ids grow without end.
#[derive(Default, Clone, Copy)]
struct Usage {
    fuel: u64,
    task_seconds: f64,
    tasks: u64,
}

#[derive(Default)]
pub struct Metrics {
    cycles: u64,
    cycle_seconds_sum: f64,
    last_cycle_seconds: f64,
    terminal: BTreeMap<(String, String), u64>,
    usage: BTreeMap<(String, String), Usage>,
    /// Terminal updates already counted: updates are delivered at least
    /// once.
    counted: RecentIds,
    /// Framework streams closed because they fell too far behind.
    streams_shed: u64,
    /// Tasks re-registering agents reported that the master had lost:
    /// adopted, refused.
    adoptions: (u64, u64),
    /// Connections closed for passing a cap (counted by the gatekeeper).
    pub connections_shed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Uploads answered while no other master held a copy (counted by the
    /// artifact store).
    pub artifacts_held_alone: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// From a task's launch (its `Accept`) to its first RUNNING or
    /// terminal update on its way to the framework.
    launch: Histogram,
    /// Tasks launched and not yet heard RUNNING or ended, since when.
    launching: HashMap<TaskId, Instant>,
    /// Tasks launched since the master started.
    launched: u64,
    /// How long each registry commit took.
    pub commit: Histogram,
    /// How long agents' executors took to sync a batch of updates (from
    /// the `synced` marks they send).
    pub checkpoint_sync: Histogram,
}

/// Launches timed at once, at most: past it new ones go untimed until
/// some end (a framework torn down may leave entries that never end).
const MAX_LAUNCHING: usize = 1_000_000;

/// Counted update ids remembered, the most recent: a resend comes soon
/// after its first sending (a framework subscribing again), one older is
/// counted again, and the count it doubles is a metric, not a bill (the
/// usage ledger counts every task exactly once). A fixed cost of a few MiB,
/// not one that grows with every task run.
const MAX_COUNTED: usize = 65_536;

/// The most recent ids seen, by a hash of each (a collision among 65,536
/// of 64 bits is too rare to matter for a metric).
struct RecentIds {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    hasher: RandomState,
}

impl Default for RecentIds {
    fn default() -> RecentIds {
        RecentIds {
            seen: HashSet::with_capacity(MAX_COUNTED),
            order: VecDeque::with_capacity(MAX_COUNTED),
            hasher: RandomState::new(),
        }
    }
}

impl RecentIds {
    /// Remembers `id`; false if it was already among the recent ones.
    fn insert(&mut self, id: &[u8]) -> bool {
        let hash = self.hasher.hash_one(id);
        if !self.seen.insert(hash) {
            return false;
        }
        if self.order.len() == MAX_COUNTED
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(hash);
        true
    }
}

impl Metrics {
    /// A framework stream was closed for falling behind.
    pub fn stream_shed(&mut self) {
        self.streams_shed += 1;
    }

    pub fn adoptions(&mut self, adoptions: &crate::core::Adoptions) {
        self.adoptions.0 += adoptions.adopted.len() as u64;
        self.adoptions.1 += adoptions.refused.len() as u64;
    }

    pub fn record_cycle(&mut self, elapsed: Duration) {
        self.cycles += 1;
        self.last_cycle_seconds = elapsed.as_secs_f64();
        self.cycle_seconds_sum += self.last_cycle_seconds;
    }

    /// Counts these tasks' launch and starts their launch clock.
    pub fn launched(&mut self, tasks: &[TaskId]) {
        self.launched += tasks.len() as u64;
        if self.launching.len() + tasks.len() > MAX_LAUNCHING {
            return;
        }
        let now = Instant::now();
        for task in tasks {
            self.launching.insert(task.clone(), now);
        }
    }

    /// Counts terminal status updates on their way to frameworks, and
    /// times launches to their first RUNNING or end.
    pub fn observe_event(&mut self, event: &v1::Event, core: &Core) {
        let Some(EventKind::Updates(updates)) = &event.kind else {
            return;
        };
        for status in &updates.statuses {
            let state = status.state();
            if (state == v1::TaskState::Running || is_terminal(state))
                && let Some(start) = self.launching.remove(status.task_id.as_str())
            {
                self.launch.observe(start.elapsed());
            }
            if !is_terminal(state) || status.uuid.is_empty() {
                continue;
            }
            if !self.counted.insert(&status.uuid) {
                continue;
            }
            let state = format!("{:?}", status.state()).to_lowercase();
            let reason = format!("{:?}", status.reason()).to_lowercase();
            *self.terminal.entry((state, reason)).or_default() += 1;
            let (role, principal) = core
                .framework_owner(&status.framework_id)
                .map(|(role, principal)| (role.to_string(), principal.to_string()))
                .unwrap_or_default();
            let usage = self.usage.entry((role, principal)).or_default();
            let u = status.usage.unwrap_or_default();
            usage.fuel += u.fuel_consumed;
            usage.task_seconds += u.wall_time_ms as f64 / 1000.0;
            usage.tasks += 1;
        }
    }

    /// Terminal updates sent to frameworks since the master started.
    pub fn ended_total(&self) -> u64 {
        self.terminal.values().sum()
    }

    /// The Prometheus text exposition of the core's gauges and these counters.
    pub fn render(&self, core: &Core) -> String {
        let mut out = String::new();
        let agents = core.agents();
        let connected = agents.iter().filter(|a| a.connected).count();
        connection_gauge(
            &mut out,
            "wasmos_agents",
            "Agents known to the master.",
            connected,
            agents.len(),
        );
        let frameworks = core.frameworks();
        let connected = frameworks.iter().filter(|f| f.connected).count();
        connection_gauge(
            &mut out,
            "wasmos_frameworks",
            "Frameworks known to the master.",
            connected,
            frameworks.len(),
        );
        counter(
            &mut out,
            "wasmos_tasks_launched_total",
            "Tasks launched (accepted and sent to their agents) since the master started.",
            &[(String::new(), self.launched as f64)],
        );
        counter(
            &mut out,
            "wasmos_adoptions_total",
            "Tasks agents reported on re-registration that the master had lost (launched, not yet durable, at a crash): adopted, or refused and killed.",
            &[
                (r#"outcome="adopted""#.to_string(), self.adoptions.0 as f64),
                (r#"outcome="refused""#.to_string(), self.adoptions.1 as f64),
            ],
        );
        counter(
            &mut out,
            "wasmos_shed_total",
            "Load the master shed to keep serving everyone else, by what.",
            &[
                (r#"what="stream""#.to_string(), self.streams_shed as f64),
                (
                    r#"what="connection""#.to_string(),
                    self.connections_shed
                        .load(std::sync::atomic::Ordering::Relaxed) as f64,
                ),
            ],
        );
        counter(
            &mut out,
            "wasmos_artifacts_held_alone_total",
            "Uploads answered while no other master held a copy (masters on etcd): lost if this master's disk is.",
            &[(
                String::new(),
                self.artifacts_held_alone
                    .load(std::sync::atomic::Ordering::Relaxed) as f64,
            )],
        );
        gauge(
            &mut out,
            "wasmos_offers",
            "Outstanding offers.",
            &[(String::new(), core.offer_count() as f64)],
        );
        self.launch.render(
            &mut out,
            "wasmos_launch_seconds",
            "From a task's Accept to its first RUNNING or terminal update sent to its framework.",
        );
        self.commit.render(
            &mut out,
            "wasmos_registry_commit_seconds",
            "How long each commit of the registry took (one per batch of turns).",
        );
        self.checkpoint_sync.render(
            &mut out,
            "wasmos_checkpoint_sync_seconds",
            "How long agents' executors took to commit and sync a batch of updates holding an end, as their synced marks report.",
        );
        // Each role's dominant share against what DRF says it should hold.
        let fair = core.allocator().fair_shares();
        let mut shares = Vec::new();
        let mut fair_rows = Vec::new();
        let mut gap = 0.0f64;
        for role in core.allocator().roles() {
            let share = role.weighted_share * role.weight;
            let should = fair.roles.get(&role.name).copied().unwrap_or(0.0);
            gap = gap.max((share - should).abs());
            shares.push((format!(r#"role="{}""#, role.name), share));
            fair_rows.push((format!(r#"role="{}""#, role.name), should));
        }
        gauge(
            &mut out,
            "wasmos_role_share",
            "Each role's dominant share of the cluster (offered or used).",
            &shares,
        );
        gauge(
            &mut out,
            "wasmos_role_fair_share",
            "The dominant share DRF says each role should hold, by weight and declared demand.",
            &fair_rows,
        );
        gauge(
            &mut out,
            "wasmos_fairness_gap",
            "The largest gap between a role's dominant share and its fair share.",
            &[(String::new(), gap)],
        );
        let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
        for task in core.tasks() {
            *by_state
                .entry(format!("{:?}", task.state()).to_lowercase())
                .or_default() += 1;
        }
        let rows: Vec<(String, f64)> = by_state
            .into_iter()
            .map(|(s, n)| (format!(r#"state="{s}""#), n as f64))
            .collect();
        gauge(
            &mut out,
            "wasmos_tasks",
            "Tasks the master knows, by state.",
            &rows,
        );
        let rows: Vec<(String, f64)> = self
            .terminal
            .iter()
            .map(|((s, r), n)| (format!(r#"state="{s}",reason="{r}""#), *n as f64))
            .collect();
        counter(
            &mut out,
            "wasmos_tasks_terminal_total",
            "Tasks that ended, by state and reason.",
            &rows,
        );
        counter(
            &mut out,
            "wasmos_allocation_cycles_total",
            "Ticks of the core at its deadlines (expiries, and offers of what they freed).",
            &[(String::new(), self.cycles as f64)],
        );
        counter(
            &mut out,
            "wasmos_allocation_cycle_seconds_total",
            "Time spent in ticks of the core.",
            &[(String::new(), self.cycle_seconds_sum)],
        );
        gauge(
            &mut out,
            "wasmos_allocation_cycle_seconds",
            "Duration of the last tick of the core.",
            &[(String::new(), self.last_cycle_seconds)],
        );
        let label = |(role, principal): &(String, String)| {
            format!(r#"role="{role}",principal="{principal}""#)
        };
        let fuel: Vec<(String, f64)> = self
            .usage
            .iter()
            .map(|(k, u)| (label(k), u.fuel as f64))
            .collect();
        counter(
            &mut out,
            "wasmos_fuel_consumed_total",
            "Fuel burnt by finished tasks.",
            &fuel,
        );
        let secs: Vec<(String, f64)> = self
            .usage
            .iter()
            .map(|(k, u)| (label(k), u.task_seconds))
            .collect();
        counter(
            &mut out,
            "wasmos_task_seconds_total",
            "Wall-clock seconds of finished tasks.",
            &secs,
        );
        let tasks: Vec<(String, f64)> = self
            .usage
            .iter()
            .map(|(k, u)| (label(k), u.tasks as f64))
            .collect();
        counter(
            &mut out,
            "wasmos_tasks_accounted_total",
            "Finished tasks accounted.",
            &tasks,
        );
        out
    }
}

/// A gauge split into `state="connected"` and `state="disconnected"`.
fn connection_gauge(out: &mut String, name: &str, help: &str, connected: usize, total: usize) {
    gauge(
        out,
        name,
        help,
        &[
            (r#"state="connected""#.into(), connected as f64),
            (r#"state="disconnected""#.into(), (total - connected) as f64),
        ],
    );
}

pub(crate) fn gauge(out: &mut String, name: &str, help: &str, rows: &[(String, f64)]) {
    family(out, name, help, "gauge", rows);
}

pub(crate) fn counter(out: &mut String, name: &str, help: &str, rows: &[(String, f64)]) {
    family(out, name, help, "counter", rows);
}

fn family(out: &mut String, name: &str, help: &str, kind: &str, rows: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resent_update_counts_once_while_it_is_recent() {
        let mut ids = RecentIds::default();
        assert!(ids.insert(b"m-U1"));
        assert!(!ids.insert(b"m-U1"), "a resend is not counted again");
        for i in 0..MAX_COUNTED - 1 {
            assert!(ids.insert(format!("other-{i}").as_bytes()));
        }
        assert!(!ids.insert(b"m-U1"), "still among the most recent");
        assert!(ids.insert(b"one more"));
        assert!(ids.insert(b"m-U1"), "forgotten once that many came after");
        assert_eq!(ids.seen.len(), MAX_COUNTED);
        assert_eq!(ids.order.len(), MAX_COUNTED);
    }
}
