//! The simulated cluster around the core: frameworks that pack tasks onto
//! their offers and acknowledge their updates, and agents whose tasks end
//! after a while. Everything is fed to the core directly, in simulated time.
//!
//! Every per-step cost here stays independent of the cluster's size (tasks
//! end from a queue ordered by time, offers and acks are kept per
//! framework), so a run measures the core, not the simulator around it.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wasmos_master::core::{Core, CoreConfig, Input, Output, Reply};
use wasmos_master::packing;
use wasmos_master::{AgentId, FrameworkId, Resources, Time};
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;

/// A task the simulation launched, until its agent reports it ended.
struct Running {
    agent: AgentId,
    framework: FrameworkId,
    task: String,
}

pub struct World {
    pub core: Core,
    /// Simulated milliseconds since the start.
    pub now: u64,
    rng: StdRng,
    offers: HashMap<FrameworkId, Vec<v1::Offer>>,
    /// Launched tasks by the millisecond they end at.
    ending: BTreeMap<u64, Vec<Running>>,
    /// Tasks running per framework.
    running: HashMap<FrameworkId, usize>,
    /// Updates each framework has received and not yet acknowledged.
    unacked: HashMap<FrameworkId, Vec<v1::Ack>>,
    next_task: u64,
    next_uuid: u64,
    connection: u64,
    demand: bool,
    /// Tasks launched so far.
    pub launched: u64,
}

impl World {
    pub fn new(agents: usize, frameworks: usize, seed: u64, demand: bool) -> World {
        let mut config = CoreConfig::default();
        // The simulation sets its own caps: the master's defaults (50,000
        // agents, a quarter of a role per principal) guard a real master
        // with many principals, where here every framework is anonymous.
        let caps = &mut config.caps;
        caps.agents = caps.agents.max(agents);
        caps.frameworks_per_role = caps.frameworks_per_role.max(frameworks);
        caps.frameworks_per_principal = caps.frameworks_per_principal.max(frameworks);
        caps.tasks_per_principal = usize::MAX;
        World {
            core: Core::new(config),
            now: 0,
            rng: StdRng::seed_from_u64(seed),
            offers: HashMap::new(),
            ending: BTreeMap::new(),
            running: HashMap::new(),
            unacked: HashMap::new(),
            next_task: 0,
            next_uuid: 0,
            connection: 0,
            demand,
            launched: 0,
        }
    }

    /// Feeds one input to the core and keeps what frameworks are sent.
    pub fn input(&mut self, input: Input) -> anyhow::Result<Reply> {
        let out = self.core.handle(input, Time(self.now));
        for message in out.messages {
            let Output::Framework(fw, event) = message else {
                continue;
            };
            match event.kind {
                Some(EventKind::Offers(o)) => {
                    self.offers.entry(fw).or_default().extend(o.offers);
                }
                Some(EventKind::Rescind(r)) => {
                    if let Some(list) = self.offers.get_mut(&fw) {
                        let gone: HashSet<String> = r.offer_ids.into_iter().collect();
                        list.retain(|o| !gone.contains(&o.offer_id));
                    }
                }
                Some(EventKind::Updates(u)) => {
                    let acks = self.unacked.entry(fw).or_default();
                    acks.extend(u.statuses.into_iter().map(|s| v1::Ack {
                        task_id: s.task_id,
                        agent_id: s.agent_id,
                        uuid: s.uuid,
                    }));
                }
                _ => {}
            }
        }
        out.reply.context("the core refused a simulated call")
    }

    pub fn add_agent(&mut self, hostname: String) -> anyhow::Result<Option<AgentId>> {
        self.connection += 1;
        let reply = self.input(Input::AgentRegister {
            connection: self.connection,
            register: v1::Register {
                agent: Some(v1::AgentInfo {
                    hostname,
                    resources: Some(v1::Resources {
                        cpus: 4.0,
                        mem: 8 << 30,
                        disk: 0,
                    }),
                    ..Default::default()
                }),
                tasks: vec![],
            },
        })?;
        Ok(match reply {
            Reply::Registered(id) => Some(id),
            _ => None,
        })
    }

    pub fn subscribe(
        &mut self,
        name: String,
        role: &str,
        need: Resources,
    ) -> anyhow::Result<FrameworkId> {
        self.connection += 1;
        match self.input(Input::Subscribe {
            connection: self.connection,
            framework: v1::FrameworkInfo {
                name,
                role: role.into(),
                // Simulated frameworks always have more to run.
                demand: self.demand.then(|| v1::Demand {
                    task: Some((&need).into()),
                    tasks: 1_000_000_000,
                }),
                ..Default::default()
            },
        })? {
            Reply::Subscribed(id) => Ok(id),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    pub fn teardown(&mut self, id: &FrameworkId) -> anyhow::Result<()> {
        self.input(Input::Teardown(v1::TeardownRequest {
            framework_id: id.to_string(),
        }))?;
        self.running.remove(id);
        self.offers.remove(id);
        self.unacked.remove(id);
        Ok(())
    }

    /// Tasks running for one framework.
    pub fn running(&self, id: &FrameworkId) -> usize {
        self.running.get(id).copied().unwrap_or(0)
    }

    /// Packs as many tasks as fit into each offer; declines empty-handed.
    pub fn use_offers(&mut self, fw: &FrameworkId, need: Resources) -> anyhow::Result<()> {
        let offers = self.offers.remove(fw).unwrap_or_default();
        if need.cpu_millis == 0 {
            bail!("a simulated task needs some cpus");
        }
        for pool in packing::by_agent(offers) {
            let agent = AgentId::from(pool.agent_id.as_str());
            let mut tasks = Vec::new();
            for _ in 0..pool.copies_of(&need) {
                self.next_task += 1;
                let id = format!("task-{}", self.next_task);
                let ends_at = self.now + self.rng.random_range(1_000..6_000);
                self.ending.entry(ends_at).or_default().push(Running {
                    agent: agent.clone(),
                    framework: fw.clone(),
                    task: id.clone(),
                });
                tasks.push(v1::TaskSpec {
                    task_id: id,
                    artifact: "0".repeat(64),
                    resources: Some((&need).into()),
                    ..Default::default()
                });
            }
            let count = tasks.len();
            self.input(Input::Accept(v1::AcceptRequest {
                framework_id: fw.to_string(),
                offer_ids: pool.offer_ids,
                tasks,
                filters: Some(v1::Filters {
                    refuse_seconds: Some(0.2),
                }),
            }))?;
            self.launched += count as u64;
            *self.running.entry(fw.clone()).or_default() += count;
        }
        Ok(())
    }

    /// Tasks whose time is up report FINISHED, as their agent would, one
    /// batch per agent.
    pub fn finish_due_tasks(&mut self) -> anyhow::Result<()> {
        let later = self.ending.split_off(&(self.now + 1));
        let due = std::mem::replace(&mut self.ending, later);
        let mut by_agent: HashMap<AgentId, Vec<v1::TaskStatus>> = HashMap::new();
        for task in due.into_values().flatten() {
            // A framework torn down took its tasks with it.
            let Some(count) = self.running.get_mut(&task.framework) else {
                continue;
            };
            *count -= 1;
            self.next_uuid += 1;
            by_agent
                .entry(task.agent)
                .or_default()
                .push(v1::TaskStatus {
                    task_id: task.task,
                    state: v1::TaskState::Finished as i32,
                    uuid: self.next_uuid.to_be_bytes().to_vec(),
                    ..Default::default()
                });
        }
        for (agent, statuses) in by_agent {
            self.input(Input::AgentUpdates {
                agent,
                statuses,
                unsynced: None,
            })?;
        }
        Ok(())
    }

    /// Each framework acknowledges every update it got, as the SDK does,
    /// so that ended tasks are archived and forgotten.
    pub fn acknowledge(&mut self) -> anyhow::Result<()> {
        let pending: Vec<_> = self.unacked.drain().collect();
        for (fw, acks) in pending {
            for acks in acks.chunks(wasmos_master::limits::MAX_IDS_PER_CALL) {
                self.input(Input::Acknowledge(v1::AcknowledgeRequest {
                    framework_id: fw.to_string(),
                    acks: acks.to_vec(),
                }))?;
            }
        }
        Ok(())
    }

    /// The mean gap between each framework's dominant share and the share
    /// DRF says it should hold.
    pub fn fairness_gap<'a>(&self, ids: impl Iterator<Item = &'a FrameworkId>) -> Option<f64> {
        let fair = self.core.allocator().fair_shares();
        let gaps: Vec<f64> = ids
            .filter_map(|id| {
                let share = self.core.allocator().framework_share(id)?;
                Some((share - fair.frameworks.get(id).copied()?).abs())
            })
            .collect();
        (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64)
    }
}
