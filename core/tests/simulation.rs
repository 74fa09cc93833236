//! Seeded randomized simulation of the master core.
//!
//! Agents join, drop their streams, come back, die and return from the dead;
//! frameworks subscribe, fail over, tear down, decline with filters, launch
//! tasks, suppress and revive; tasks run, finish, fail and are killed; roles
//! change weights and quotas; time passes; the master crashes and restarts
//! on its registry (a core rebuilt from what it had persisted), after which
//! agents re-register and frameworks re-subscribe, sometimes with commits
//! outstanding: launches that reached their agents and ends that freed
//! resources, neither durable, which the agents report back (adopted, or
//! applied before any adoption), or with part of them landed (a registry
//! that cuts a commit into transactions, as etcd's does, may apply some of
//! them and not others before the crash); agents' updates are lost,
//! duplicated and reordered on the way. After every step the harness checks
//! that no task's state moves back from what its framework was told, and
//! the core's invariants (per agent and pool, offered + used + free = total,
//! so nothing is offered twice; each framework's allocation is the sum of its
//! offers and tasks; no task is left running on a removed agent), and the
//! allocator's audit checks that no grant skipped a framework of lower
//! (weighted) share that wanted the resources, and the registry holds exactly
//! what the core would rebuild itself from (so nothing acknowledged is lost).
//!
//! `WASMOS_SIM_SEEDS=N` runs seeds 0..N (default 40; `scripts/test` runs 300).
//! A failing seed prints itself; `WASMOS_SIM_SEED=S` replays just that one.

use std::collections::{HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use wasmos_core::core::{CoreConfig, Input, progress};
use wasmos_core::packing::{self, Fill};
use wasmos_core::store::{Store, Write};
use wasmos_core::testing::{GIB, Harness};
use wasmos_core::{AgentId, FrameworkId, Resources};
use wasmos_proto::v1;

const STEPS: usize = 400;
const ROLES: [&str; 3] = ["alpha", "beta", "gamma"];

struct SimAgent {
    id: AgentId,
    info: v1::AgentInfo,
    /// Sends heartbeats; a dead agent is silent until the master gives up.
    alive: bool,
    connected: bool,
    /// Tasks the agent still runs, remembered across its death.
    remembered: Vec<v1::RunningTask>,
}

struct Sim {
    h: Harness,
    rng: StdRng,
    agents: Vec<SimAgent>,
    frameworks: Vec<(FrameworkId, String, bool)>,
    next_task: u64,
    /// Every update an agent sent, delivered or lost on the way: agents
    /// resend, the network duplicates and reorders, so any of them may
    /// arrive again, late.
    sent: Vec<(AgentId, v1::TaskStatus)>,
    /// The latest state each task's framework was told.
    seen: HashMap<String, v1::TaskState>,
    next_update: u64,
    /// What live agents ran when the master crashed with commits
    /// outstanding: what they report when they re-register.
    truth: HashMap<AgentId, Vec<v1::RunningTask>>,
    /// Tasks re-registering agents had adopted and refused, in all.
    adoptions: (usize, usize),
}

fn run_seed(seed: u64) {
    let config = CoreConfig {
        master_id: format!("s{seed}"),
        offer_timeout: Some(std::time::Duration::from_secs(20)),
        agent_reregister_timeout: std::time::Duration::from_secs(30),
        ..CoreConfig::default()
    };
    let mut sim = Sim {
        h: Harness::with_config(config),
        rng: StdRng::seed_from_u64(seed),
        agents: Vec::new(),
        frameworks: Vec::new(),
        next_task: 0,
        sent: Vec::new(),
        seen: HashMap::new(),
        next_update: 0,
        truth: HashMap::new(),
        adoptions: (0, 0),
    };
    sim.h.enable_audit();
    for _ in 0..3 {
        sim.add_agent();
    }
    for _ in 0..2 {
        sim.subscribe();
    }
    for step in 0..STEPS {
        let action = sim.rng.random_range(0..100);
        match action {
            0..=4 => sim.add_agent(),
            5..=6 => sim.drop_agent_stream(),
            7..=9 => sim.reconnect_agent(),
            10..=11 => sim.kill_agent(),
            12..=15 => sim.subscribe(),
            16..=17 => sim.drop_framework_stream(),
            18..=20 => sim.resubscribe(),
            21 => sim.teardown(),
            22..=49 => sim.use_offers(),
            50..=69 => sim.progress_tasks(),
            70..=74 => sim.kill_task(),
            75..=77 => sim.suppress_or_revive(),
            78..=79 => sim.change_role(),
            80..=84 => sim.reconcile(),
            85..=86 => sim.restart_master(),
            90 => sim.crash_with_commits_outstanding(Landed::None),
            91 => sim.crash_with_commits_outstanding(Landed::Part),
            87..=89 => sim.replay_update(),
            92..=94 => sim.confirm_synced(),
            _ => sim.pass_time(),
        }
        let violations = sim.h.core.take_audit_violations();
        assert!(
            violations.is_empty(),
            "step {step} (action {action}): fairness violated: {violations:#?}"
        );
    }
    if std::env::var("WASMOS_SIM_STATS").is_ok() {
        let tasks = sim.h.core.tasks();
        let mut by_state: HashMap<String, usize> = HashMap::new();
        for t in &tasks {
            *by_state.entry(format!("{:?}", t.state())).or_default() += 1;
        }
        eprintln!(
            "seed {seed}: {} tasks launched, {} agents, {} frameworks, states now {by_state:?}, {} adopted, {} refused",
            sim.next_task,
            sim.h.core.agents().len(),
            sim.h.core.frameworks().len(),
            sim.adoptions.0,
            sim.adoptions.1
        );
    }
}

impl Sim {
    fn add_agent(&mut self) {
        let cpus = self.rng.random_range(1..=8) as f64;
        let mem = self.rng.random_range(1..=16) * GIB;
        let mut info = Harness::agent_info(cpus, mem);
        if self.rng.random_bool(0.2) {
            info.reservations.push(v1::Reservation {
                role: ROLES.choose(&mut self.rng).unwrap().to_string(),
                resources: Some(v1::Resources {
                    cpus: cpus / 2.0,
                    mem: mem / 2,
                    disk: 0,
                }),
            });
        }
        let id = self.h.register_agent(info.clone(), vec![]).unwrap();
        info.agent_id = id.to_string();
        self.agents.push(SimAgent {
            id,
            info,
            alive: true,
            connected: true,
            remembered: Vec::new(),
        });
    }

    fn pick_agent(&mut self) -> Option<usize> {
        (!self.agents.is_empty()).then(|| self.rng.random_range(0..self.agents.len()))
    }

    fn drop_agent_stream(&mut self) {
        if let Some(i) = self.pick_agent()
            && self.agents[i].connected
        {
            let id = self.agents[i].id.clone();
            self.h.disconnect_agent(&id);
            self.agents[i].connected = false;
        }
    }

    /// A disconnected (or dead) agent registers again with its id and the
    /// tasks it still runs.
    fn reconnect_agent(&mut self) {
        let Some(i) = self.pick_agent() else { return };
        if self.agents[i].connected && self.agents[i].alive {
            return;
        }
        let id = self.agents[i].id.clone();
        let tasks = if let Some(truth) = self.truth.remove(&id) {
            truth
        } else if self.agents[i].alive {
            self.tasks_on(&id)
        } else {
            std::mem::take(&mut self.agents[i].remembered)
        };
        let reported: Vec<(String, v1::TaskState)> = tasks
            .iter()
            .map(|t| (t.task_id.clone(), t.state()))
            .collect();
        if self.rng.random_bool(0.15) {
            // Restarted with other resources: a new agent under its old id.
            let cpus = self.rng.random_range(1..=8) as f64;
            let mem = self.rng.random_range(1..=16) * GIB;
            let info = &mut self.agents[i].info;
            info.resources = Some(v1::Resources { cpus, mem, disk: 0 });
            for reservation in &mut info.reservations {
                reservation.resources = Some(v1::Resources {
                    cpus: cpus / 2.0,
                    mem: mem / 2,
                    disk: 0,
                });
            }
        }
        let back = self
            .h
            .register_agent(self.agents[i].info.clone(), tasks)
            .unwrap();
        assert_eq!(back, id, "an agent keeps its id");
        let adoptions = self.h.core.take_adoptions();
        self.adoptions.0 += adoptions.adopted.len();
        self.adoptions.1 += adoptions.refused.len();
        if std::env::var("WASMOS_SIM_STATS").is_ok() {
            for r in &adoptions.refused {
                eprintln!("refused {}: {}", r.task, r.why);
            }
        }
        // A task the master no longer holds on this agent must be killed.
        let kills = wasmos_core::testing::killed(&self.h.take_agent_messages(&id));
        for (task, state) in reported {
            // Kept running, or (reported ended) kept ended; or killed.
            let held =
                self.h.core.task(&task).is_some_and(|t| {
                    t.agent == id && (is_terminal(state) || !is_terminal(t.state()))
                });
            assert!(
                held || kills.contains(&task),
                "task {task} reported {state:?} by {id} is neither kept nor killed"
            );
        }
        self.agents[i].alive = true;
        self.agents[i].connected = true;
    }

    /// The agent goes silent; the master will declare it lost.
    fn kill_agent(&mut self) {
        if let Some(i) = self.pick_agent()
            && self.agents[i].alive
        {
            let id = self.agents[i].id.clone();
            self.agents[i].remembered = self.tasks_on(&id);
            self.agents[i].alive = false;
        }
    }

    fn tasks_on(&self, agent: &AgentId) -> Vec<v1::RunningTask> {
        self.h
            .core
            .tasks()
            .into_iter()
            .filter(|t| &t.agent == agent && !is_terminal(t.state()))
            .map(|t| v1::RunningTask {
                task_id: t.id.to_string(),
                framework_id: t.framework.to_string(),
                resources: Some((&t.resources).into()),
                state: t.status.state,
                artifact: t.spec.artifact.clone(),
                ..Default::default()
            })
            .collect()
    }

    fn subscribe(&mut self) {
        let role = ROLES.choose(&mut self.rng).unwrap().to_string();
        // Half the frameworks declare what they wait for: offers sized by
        // progressive filling meet offers of whole agents.
        let demand = self.rng.random_bool(0.5).then(|| self.demand());
        let id = self
            .h
            .subscribe_with(v1::FrameworkInfo {
                name: format!("fw{}", self.frameworks.len()),
                role: role.clone(),
                demand,
                ..Default::default()
            })
            .expect("subscribes");
        self.frameworks.push((id, role, true));
    }

    /// A demand of a random shape and count.
    fn demand(&mut self) -> v1::Demand {
        v1::Demand {
            task: Some(v1::Resources {
                cpus: self.rng.random_range(1..=20) as f64 / 10.0,
                mem: self.rng.random_range(1..=8) * (GIB / 4),
                disk: 0,
            }),
            tasks: self.rng.random_range(0..=12),
        }
    }

    fn pick_framework(&mut self) -> Option<usize> {
        (!self.frameworks.is_empty()).then(|| self.rng.random_range(0..self.frameworks.len()))
    }

    fn drop_framework_stream(&mut self) {
        if let Some(i) = self.pick_framework()
            && self.frameworks[i].2
        {
            let id = self.frameworks[i].0.clone();
            self.h.disconnect_framework(&id);
            self.h.offers.remove(&id);
            self.frameworks[i].2 = false;
        }
    }

    fn resubscribe(&mut self) {
        let Some(i) = self.pick_framework() else {
            return;
        };
        let (id, role, connected) = self.frameworks[i].clone();
        if connected {
            return;
        }
        let result = self.h.subscribe_with(v1::FrameworkInfo {
            framework_id: id.to_string(),
            role,
            ..Default::default()
        });
        match result {
            Ok(back) => {
                assert_eq!(back, id);
                self.frameworks[i].2 = true;
            }
            // Its failover timeout passed: it is gone for good.
            Err(_) => {
                assert!(self.h.core.frameworks().iter().all(|f| f.id != id));
                self.frameworks.remove(i);
            }
        }
    }

    fn teardown(&mut self) {
        if let Some(i) = self.pick_framework() {
            let (id, _, _) = self.frameworks.remove(i);
            let result = self.h.handle(Input::Teardown(v1::TeardownRequest {
                framework_id: id.to_string(),
            }));
            if result.is_ok() {
                assert!(self.h.closed_frameworks.contains(&id));
            }
            assert!(
                self.h
                    .core
                    .tasks()
                    .iter()
                    .all(|t| t.framework != id || is_terminal(t.state())),
                "a torn-down framework left a task running"
            );
        }
    }

    /// Every connected framework looks at its offers: launches tasks that
    /// fit (sometimes across two offers of one agent) or declines.
    fn use_offers(&mut self) {
        let connected: Vec<FrameworkId> = self
            .frameworks
            .iter()
            .filter(|f| f.2)
            .map(|f| f.0.clone())
            .collect();
        for fw in connected {
            for mut pool in packing::by_agent(self.h.take_offers(&fw)) {
                if self.rng.random_bool(0.3) {
                    let refuse = [None, Some(0.0), Some(1.0), Some(3.0)]
                        .choose(&mut self.rng)
                        .copied()
                        .unwrap();
                    self.h.decline_ids(&fw, pool.offer_ids, refuse).unwrap();
                    continue;
                }
                let mut wanted: VecDeque<Resources> = (0..self.rng.random_range(1..=4))
                    .map(|_| {
                        Resources::new(
                            self.rng.random_range(1..=20) as f64 / 10.0,
                            self.rng.random_range(1..=8) * (GIB / 4),
                            0,
                        )
                    })
                    .collect();
                let tasks: Vec<v1::TaskSpec> = pool
                    .take(&mut wanted, Fill::FirstFit, |need| *need)
                    .into_iter()
                    .map(|need| {
                        self.next_task += 1;
                        wasmos_core::testing::task(
                            &format!("t{}", self.next_task),
                            need.cpus(),
                            need.mem,
                        )
                    })
                    .collect();
                let n = tasks.len();
                let refuse = Some(self.rng.random_range(0..3) as f64);
                let reply = self.h.accept_ids(&fw, pool.offer_ids, tasks, refuse);
                assert!(
                    reply.is_ok(),
                    "accept of {n} fitting tasks refused: {reply:?}"
                );
            }
        }
    }

    /// Some tasks on live, connected agents move on; frameworks ack.
    fn progress_tasks(&mut self) {
        let live: Vec<(AgentId, bool)> = self
            .agents
            .iter()
            .map(|a| (a.id.clone(), a.alive && a.connected))
            .collect();
        for task in self.h.core.tasks() {
            if is_terminal(task.state()) || !self.rng.random_bool(0.3) {
                continue;
            }
            if !live.iter().any(|(id, ok)| *id == task.agent && *ok) {
                continue;
            }
            use v1::TaskState as S;
            let next = match task.state() {
                S::Staging => *[S::Starting, S::Running].choose(&mut self.rng).unwrap(),
                S::Starting => *[S::Running, S::Finished, S::Failed]
                    .choose(&mut self.rng)
                    .unwrap(),
                _ => *[S::Finished, S::Failed, S::Running]
                    .choose(&mut self.rng)
                    .unwrap(),
            };
            self.next_update += 1;
            let status = v1::TaskStatus {
                task_id: task.id.to_string(),
                state: next as i32,
                uuid: format!("{}-{next:?}-{}", task.id, self.next_update).into_bytes(),
                source: v1::StatusSource::Agent as i32,
                ..Default::default()
            };
            self.sent.push((task.agent.clone(), status.clone()));
            // Half are sent before they are durable on the agent, and
            // confirmed by a later `synced` (`confirm_synced`).
            let unsynced = self.rng.random_bool(0.5).then_some(v1::SyncMark {
                incarnation: 1,
                seq: self.next_update,
                sync_micros: 0,
            });
            // One in ten is lost on the way (the agent resends it later).
            if self.rng.random_bool(0.9) {
                self.h
                    .handle(Input::AgentUpdates {
                        agent: task.agent.clone(),
                        statuses: vec![status],
                        unsynced,
                    })
                    .expect("updates");
            }
        }
        let frameworks: Vec<FrameworkId> = self.frameworks.iter().map(|f| f.0.clone()).collect();
        for fw in frameworks {
            let updates = self.take_updates(&fw);
            if self.rng.random_bool(0.8) {
                self.h.ack(&fw, &updates);
            }
        }
    }

    /// An update sent before arrives (again): a resend, a duplicate, or
    /// one overtaken by later ones. Sometimes two, in reverse order.
    fn replay_update(&mut self) {
        if self.sent.is_empty() {
            return;
        }
        let n = self.rng.random_range(1..=2);
        let mut picked: Vec<(AgentId, v1::TaskStatus)> = (0..n)
            .map(|_| {
                let i = self.rng.random_range(0..self.sent.len());
                self.sent[i].clone()
            })
            .collect();
        picked.sort_by(|a, b| b.1.uuid.cmp(&a.1.uuid));
        for (agent, status) in picked {
            let connected = self
                .agents
                .iter()
                .any(|a| a.id == agent && a.alive && a.connected);
            if connected {
                // An agent the master removed may be refused: that is fine.
                let _ = self.h.handle(Input::AgentUpdates {
                    agent,
                    statuses: vec![status],
                    unsynced: None,
                });
            }
        }
    }

    /// Takes a framework's updates, checking that no task's state moves
    /// back from what the framework was told before.
    ///
    /// While commits are held, ends are not told (the master holds them
    /// until durable, and they die with a crash); `STARTING` and `RUNNING`
    /// are. An answer flagged `agent_recovering` is the last durable state,
    /// not yet confirmed by the agent, and may lag what was told.
    fn take_updates(&mut self, fw: &FrameworkId) -> Vec<v1::TaskStatus> {
        let mut updates = self.h.take_updates(fw);
        if self.h.hold_commits {
            updates.retain(|u| !is_terminal(u.state()));
        }
        for u in &updates {
            let state = u.state();
            if u.reason() == v1::Reason::TaskUnknown || u.agent_recovering {
                continue; // a forgotten task, or an unconfirmed answer
            }
            if let Some(&before) = self.seen.get(&u.task_id) {
                let forward = if is_terminal(before) {
                    state == before
                } else {
                    progress(state) >= progress(before)
                };
                assert!(
                    forward,
                    "task {} went from {before:?} back to {state:?}: {u:?}",
                    u.task_id
                );
            }
            self.seen.insert(u.task_id.clone(), state);
        }
        updates
    }

    fn kill_task(&mut self) {
        // Tasks of live frameworks (those of removed ones stay visible).
        let frameworks: Vec<FrameworkId> =
            self.h.core.frameworks().into_iter().map(|f| f.id).collect();
        let tasks: Vec<_> = self
            .h
            .core
            .tasks()
            .into_iter()
            .filter(|t| frameworks.contains(&t.framework))
            .collect();
        if let Some(task) = tasks.choose(&mut self.rng) {
            self.h
                .handle(Input::Kill(v1::KillRequest {
                    framework_id: task.framework.to_string(),
                    task_ids: vec![task.id.to_string()],
                }))
                .unwrap();
        }
    }

    fn suppress_or_revive(&mut self) {
        if let Some(i) = self.pick_framework() {
            let framework_id = self.frameworks[i].0.to_string();
            let input = match self.rng.random_range(0..4) {
                0 | 1 => Input::Suppress(v1::SuppressRequest { framework_id }),
                2 => Input::Revive(v1::ReviveRequest {
                    framework_id,
                    demand: self.rng.random_bool(0.5).then(|| self.demand()),
                }),
                _ => Input::SetDemand(v1::SetDemandRequest {
                    framework_id,
                    demand: self.rng.random_bool(0.8).then(|| self.demand()),
                }),
            };
            self.h.handle(input).unwrap();
        }
    }

    fn change_role(&mut self) {
        let role = ROLES.choose(&mut self.rng).unwrap().to_string();
        let weight = Some(self.rng.random_range(1..=4) as f64);
        let quota = self.rng.random_bool(0.3).then(|| {
            Resources::new(
                self.rng.random_range(0..4) as f64,
                self.rng.random_range(0..4) * GIB,
                0,
            )
        });
        self.h
            .handle(Input::UpdateRole {
                role,
                weight,
                quota,
            })
            .unwrap();
    }

    fn reconcile(&mut self) {
        if let Some(i) = self.pick_framework() {
            let fw = self.frameworks[i].0.clone();
            self.h
                .handle(Input::Reconcile(v1::ReconcileRequest {
                    framework_id: fw.to_string(),
                    task_ids: vec![],
                }))
                .unwrap();
            let known = self
                .h
                .core
                .tasks()
                .iter()
                .filter(|t| t.framework == fw)
                .count();
            let answers = self
                .take_updates(&fw)
                .into_iter()
                .filter(|s| s.uuid.is_empty())
                .count();
            if self.frameworks[i].2 {
                assert_eq!(answers, known, "implicit reconciliation answers every task");
            }
        }
    }

    /// The master crashes and comes back on its registry: every task it
    /// held comes back in the state it had, on the agent it had.
    fn restart_master(&mut self) {
        let tasks = |core: &wasmos_core::core::Core| {
            let mut tasks: Vec<(String, String, i32)> = core
                .registry_records()
                .into_iter()
                .filter_map(|r| match r {
                    wasmos_core::store::Record::Task(t) => Some((
                        t.spec.unwrap_or_default().task_id,
                        t.agent_id,
                        t.status.unwrap_or_default().state,
                    )),
                    _ => None,
                })
                .collect();
            tasks.sort();
            tasks
        };
        let before = tasks(&self.h.core);
        self.h.restart();
        assert_eq!(
            tasks(&self.h.core),
            before,
            "a restart keeps every task as it was"
        );
        for agent in &mut self.agents {
            agent.connected = false;
        }
        for framework in &mut self.frameworks {
            framework.2 = false;
        }
    }

    /// Launches go out and ends free resources while their commits wait,
    /// and the master crashes before any lands. Live agents keep what they
    /// were sent and what they said: the tasks they run (with each launch's
    /// spec and MAC) and the ends not yet acknowledged, which they report
    /// when they re-register.
    fn crash_with_commits_outstanding(&mut self, landed: Landed) {
        self.h.hold_commits = true;
        // Several turns' worth when part of them lands: more to cut.
        let turns = match landed {
            Landed::None => 1,
            Landed::Part => self.rng.random_range(1..=3),
        };
        for _ in 0..turns {
            self.use_offers();
            self.progress_tasks();
        }
        if landed == Landed::Part {
            self.land_part();
        }
        let key = self.h.config.launch_key.clone();
        // Launches the crash loses were made by the master now running.
        let epoch = self.h.core.config().master_epoch;
        for agent in self.agents.iter().filter(|a| a.alive && a.connected) {
            let runs = self
                .h
                .core
                .tasks()
                .into_iter()
                .filter(|t| t.agent == agent.id)
                // An end the master made (LOST) is not the agent's to report.
                .filter(|t| !is_terminal(t.state()) || t.status.source() == v1::StatusSource::Agent)
                .map(|t| v1::RunningTask {
                    task_id: t.id.to_string(),
                    framework_id: t.framework.to_string(),
                    resources: None,
                    state: t.status.state,
                    artifact: t.spec.artifact.clone(),
                    launch_mac: key.sign(&t.agent, &t.framework, epoch, &t.spec),
                    launch_epoch: epoch,
                    spec: Some(t.spec),
                })
                .collect();
            self.truth.insert(agent.id.clone(), runs);
        }
        self.h.restart();
        for agent in &mut self.agents {
            agent.connected = false;
        }
        for framework in &mut self.frameworks {
            framework.2 = false;
        }
    }

    /// Some of the outstanding writes land before the crash, as when a
    /// registry cuts commits into transactions (etcd: at most 128
    /// operations each, no key twice) sent one after another: the commits
    /// before a random point whole, then, of the one in flight, a prefix of
    /// its chunks. Each key is written once, its last value at its first
    /// place (see `Write::once_each`), so every prefix is a registry the
    /// master can start on.
    fn land_part(&mut self) {
        let writes = self.h.uncommitted.clone();
        let cut = self.rng.random_range(0..=writes.len());
        let (whole, in_flight) = writes.split_at(cut);
        let in_flight = Write::once_each(in_flight);
        let chunk = self.rng.random_range(1..=4);
        let chunks = in_flight.len().div_ceil(chunk);
        let applied = self.rng.random_range(0..=chunks);
        let mut landed = whole.to_vec();
        landed.extend(in_flight.into_iter().take(applied * chunk));
        self.h.store.commit(&landed).expect("memory store");
    }

    /// Live, connected agents say their updates so far are durable.
    fn confirm_synced(&mut self) {
        let mark = v1::SyncMark {
            incarnation: 1,
            seq: self.next_update,
            sync_micros: 0,
        };
        let agents: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|a| a.alive && a.connected)
            .map(|a| a.id.clone())
            .collect();
        for agent in agents {
            self.h
                .handle(Input::AgentSynced { agent, mark })
                .expect("synced");
        }
        let frameworks: Vec<FrameworkId> = self.frameworks.iter().map(|f| f.0.clone()).collect();
        for fw in frameworks {
            let updates = self.take_updates(&fw);
            self.h.ack(&fw, &updates);
        }
    }

    /// Time passes; live agents heartbeat; the master ticks.
    fn pass_time(&mut self) {
        let ms = self.rng.random_range(100..=2_500);
        let mut running_before = HashMap::new();
        for agent in &self.agents {
            if agent.alive && agent.connected {
                self.h
                    .handle(Input::AgentHeartbeat {
                        agent: agent.id.clone(),
                    })
                    .unwrap();
            }
            if agent.alive {
                running_before.insert(agent.id.clone(), self.tasks_on(&agent.id));
            }
        }
        self.h.advance(ms);
        // Agents the master removed stay away until they come back; those
        // still alive remember what they run and report it when they do.
        let known: Vec<AgentId> = self.h.core.agents().into_iter().map(|a| a.id).collect();
        for agent in &mut self.agents {
            if known.contains(&agent.id) {
                continue;
            }
            assert!(
                !(agent.alive && agent.connected),
                "a heartbeating agent was lost"
            );
            if let Some(tasks) = running_before.remove(&agent.id) {
                agent.remembered = tasks;
            }
            agent.alive = false;
            agent.connected = false;
        }
        // Frameworks past their failover timeout are gone.
        let known: Vec<FrameworkId> = self.h.core.frameworks().into_iter().map(|f| f.id).collect();
        self.frameworks.retain(|f| known.contains(&f.0));
    }
}

/// How much of the outstanding commits lands before a crash.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Landed {
    None,
    Part,
}

fn is_terminal(state: v1::TaskState) -> bool {
    wasmos_core::core::is_terminal(state)
}

#[test]
fn randomized_runs_keep_every_invariant() {
    wasmos_core::testing::run_seeds(
        40,
        "cargo test --release -p wasmos-core --test simulation",
        run_seed,
    );
}
