//! The one harness that drives the core as the shell would (feature
//! `testing`): tests, the seeded simulation, fuzz targets and benches set the
//! core up through it.
//!
//! [`Harness::handle`] feeds one input at the harness's `now`, commits the
//! writes to a [`MemoryStore`] as the shell would, keeps what the core sent
//! (outstanding offers, status updates, events, agent messages, closed
//! streams), and after every step checks the core's invariants and that the
//! registry holds exactly what the core would rebuild itself from.
//! [`Harness::refused`] proves a refused call sent nothing and changed
//! nothing; [`Harness::restart`] crashes the master onto its registry;
//! [`run_seeds`] runs seeded randomized scenarios and names the seed to replay.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;
use wasmos_proto::v1::master_message::Kind as AgentKind;

use crate::core::{Core, CoreConfig, CoreError, Input, Output, Reply};
use crate::store::{MemoryStore, Record, Store, Table};
use crate::{AgentId, FrameworkId, Resources, Time};

pub const GIB: u64 = 1 << 30;

pub struct Harness {
    pub core: Core,
    pub config: CoreConfig,
    /// What the core asked to persist, applied as the shell would.
    pub store: MemoryStore,
    pub restarts: u32,
    core_has_audit: bool,
    pub now: Time,
    next_connection: u64,
    pub agent_connections: HashMap<AgentId, u64>,
    pub framework_connections: HashMap<FrameworkId, u64>,
    /// Outstanding offers per framework, as the framework would track them.
    pub offers: HashMap<FrameworkId, Vec<v1::Offer>>,
    pub updates: HashMap<FrameworkId, Vec<v1::TaskStatus>>,
    pub events: HashMap<FrameworkId, Vec<v1::Event>>,
    pub agent_messages: HashMap<AgentId, Vec<v1::MasterMessage>>,
    pub closed_frameworks: Vec<FrameworkId>,
    pub closed_agents: Vec<AgentId>,
    /// Writes of inputs handled with [`Harness::handle_uncommitted`], or
    /// while `hold_commits` is set: the messages went out, the commit has
    /// not landed.
    pub uncommitted: Vec<crate::store::Write>,
    /// Every input's writes wait in `uncommitted` until [`Harness::commit`]
    /// (or are lost by [`Harness::restart`]).
    pub hold_commits: bool,
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(CoreConfig::default())
    }

    pub fn with_config(config: CoreConfig) -> Harness {
        Harness {
            core: Core::new(config.clone()),
            config,
            store: MemoryStore::new(),
            restarts: 0,
            core_has_audit: false,
            now: Time(1_000_000),
            next_connection: 0,
            agent_connections: HashMap::new(),
            framework_connections: HashMap::new(),
            offers: HashMap::new(),
            updates: HashMap::new(),
            events: HashMap::new(),
            agent_messages: HashMap::new(),
            closed_frameworks: Vec::new(),
            closed_agents: Vec::new(),
            uncommitted: Vec::new(),
            hold_commits: false,
        }
    }

    /// Feeds one input, persists and records the outputs, checks
    /// invariants: the core's own, and that the registry holds exactly what
    /// the core would rebuild itself from.
    ///
    /// A tick before the core's [`Core::next_timeout`] must change nothing,
    /// and a tick must leave nothing due: so no deadline is ever missed.
    pub fn handle(&mut self, input: Input) -> Result<Reply, CoreError> {
        let early_tick = matches!(input, Input::Tick)
            && self.core.next_timeout().is_none_or(|due| self.now < due);
        let tick = matches!(input, Input::Tick);
        let out = self.core.handle(input, self.now);
        if early_tick && (!out.messages.is_empty() || !out.writes.is_empty()) {
            panic!(
                "a tick at {:?}, before the next timeout {:?}, changed something: {:?}",
                self.now,
                self.core.next_timeout(),
                out.messages
            );
        }
        if tick && self.core.next_timeout().is_some_and(|due| due <= self.now) {
            panic!("a tick at {:?} left a deadline due", self.now);
        }
        if self.uncommitted.is_empty() && !self.hold_commits {
            self.store.commit(&out.writes).expect("memory store");
        } else {
            self.uncommitted.extend(out.writes);
        }
        for message in out.messages {
            self.absorb(message);
        }
        self.check();
        out.reply
    }

    /// Feeds one input whose messages go out (launches to agents, ends to
    /// the allocator) while its commit has not landed yet: its writes wait
    /// in `uncommitted` until [`Harness::commit`], or are lost by
    /// [`Harness::restart`]. Later inputs' writes queue behind them, as
    /// commits land in order.
    pub fn handle_uncommitted(&mut self, input: Input) -> Result<Reply, CoreError> {
        let out = self.core.handle(input, self.now);
        self.uncommitted.extend(out.writes);
        for message in out.messages {
            self.absorb(message);
        }
        self.check();
        out.reply
    }

    /// The commits held by [`Harness::handle_uncommitted`] land.
    pub fn commit(&mut self) {
        self.hold_commits = false;
        let writes = std::mem::take(&mut self.uncommitted);
        self.store.commit(&writes).expect("memory store");
        self.check();
    }

    /// The checks run after every step: the core's invariants, and the
    /// registry against the core (once no commit is outstanding).
    pub fn check(&self) {
        if let Err(e) = self.core.check_invariants() {
            panic!("invariant broken: {e}");
        }
        if self.uncommitted.is_empty() && !self.hold_commits {
            self.check_registry();
        }
    }

    /// The registry equals the core's records (last-seen times aside,
    /// which heartbeats move in memory only).
    pub fn check_registry(&self) {
        let persisted = records_by_key(self.store.load().expect("memory store").records());
        let expected = records_by_key(self.core.registry_records());
        let core_ledger = self.core.usage_buckets();
        let hour = core_ledger
            .first()
            .map_or(self.config.wall_clock_origin_ms + self.now.millis(), |b| {
                b.hour_ms
            });
        let mut ledger = crate::store::usage_of_hour(&self.store, hour).expect("memory store");
        ledger
            .sort_by(|a, b| (&a.role, &a.principal, &a.job).cmp(&(&b.role, &b.principal, &b.job)));
        assert_eq!(
            ledger, core_ledger,
            "the registry's usage ledger differs from the core's"
        );
        if persisted != expected {
            let missing: Vec<_> = expected
                .keys()
                .filter(|k| !persisted.contains_key(*k))
                .collect();
            let extra: Vec<_> = persisted
                .keys()
                .filter(|k| !expected.contains_key(*k))
                .collect();
            let stale: Vec<_> = expected
                .iter()
                .filter(|(k, v)| persisted.get(*k).is_some_and(|p| p != *v))
                .map(|(k, _)| k)
                .collect();
            panic!(
                "registry differs from the core: missing {missing:?}, extra {extra:?}, stale {stale:?}"
            );
        }
    }

    /// The master crashes and restarts on its registry: every stream and
    /// offer is gone; agents and frameworks must come back.
    pub fn restart(&mut self) {
        // Commits still outstanding die with the process.
        self.uncommitted.clear();
        self.hold_commits = false;
        self.restarts += 1;
        let mut config = self.config.clone();
        config.master_id = format!("{}r{}", self.config.master_id, self.restarts);
        config.master_epoch = self.restarts as u64 + 1;
        let mut registry = self.store.load().expect("memory store");
        registry.usage = crate::store::usage_of_hour(
            &self.store,
            config.wall_clock_origin_ms + self.now.millis(),
        )
        .expect("memory store");
        let (mut core, _) = Core::recover(config, registry, self.now).expect("recovers");
        self.store
            .commit(&core.take_writes())
            .expect("memory store");
        if self.core_has_audit {
            core.enable_audit();
        }
        self.core = core;
        // What was on the old streams went with them.
        self.agent_connections.clear();
        self.framework_connections.clear();
        self.offers.clear();
        self.updates.clear();
        self.events.clear();
        self.agent_messages.clear();
        if let Err(e) = self.core.check_invariants() {
            panic!("invariant broken after restart: {e}");
        }
        self.check_registry();
    }

    fn absorb(&mut self, message: Output) {
        match message {
            Output::Framework(fw, event) => {
                match event.kind.as_ref().expect("event kind") {
                    EventKind::Offers(o) => self
                        .offers
                        .entry(fw.clone())
                        .or_default()
                        .extend(o.offers.clone()),
                    EventKind::Rescind(r) => {
                        if let Some(list) = self.offers.get_mut(&fw) {
                            list.retain(|o| !r.offer_ids.contains(&o.offer_id));
                        }
                    }
                    EventKind::Updates(u) => self
                        .updates
                        .entry(fw.clone())
                        .or_default()
                        .extend(u.statuses.clone()),
                    _ => {}
                }
                self.events.entry(fw).or_default().push(event);
            }
            Output::Agent(agent, message) => {
                self.agent_messages.entry(agent).or_default().push(message)
            }
            Output::CloseFramework(fw) => self.closed_frameworks.push(fw),
            Output::CloseAgent(agent) => self.closed_agents.push(agent),
        }
    }

    pub fn enable_audit(&mut self) {
        self.core_has_audit = true;
        self.core.enable_audit();
    }

    /// Lets `ms` pass as the shell would: the core is ticked at each of its
    /// deadlines on the way, then once more at the end (a tick that must
    /// change nothing unless something is due).
    pub fn advance(&mut self, ms: u64) {
        let end = Time(self.now.0 + ms);
        while let Some(due) = self.core.next_timeout().filter(|&due| due < end) {
            self.now = self.now.max(due);
            self.handle(Input::Tick).expect("tick");
        }
        self.now = end;
        self.handle(Input::Tick).expect("tick");
    }

    fn connection(&mut self) -> u64 {
        self.next_connection += 1;
        self.next_connection
    }

    pub fn agent_info(cpus: f64, mem: u64) -> v1::AgentInfo {
        v1::AgentInfo {
            hostname: "host".into(),
            resources: Some(v1::Resources { cpus, mem, disk: 0 }),
            ..Default::default()
        }
    }

    pub fn add_agent(&mut self, cpus: f64, mem: u64) -> AgentId {
        self.register_agent(Harness::agent_info(cpus, mem), vec![])
            .expect("agent registers")
    }

    pub fn register_agent(
        &mut self,
        info: v1::AgentInfo,
        tasks: Vec<v1::RunningTask>,
    ) -> Result<AgentId, CoreError> {
        let connection = self.connection();
        let reply = self.handle(Input::AgentRegister {
            connection,
            register: v1::Register {
                agent: Some(info),
                tasks,
            },
        })?;
        let Reply::Registered(id) = reply else {
            panic!("unexpected reply {reply:?}")
        };
        self.agent_connections.insert(id.clone(), connection);
        Ok(id)
    }

    pub fn disconnect_agent(&mut self, agent: &AgentId) {
        let connection = self.agent_connections[agent];
        self.handle(Input::AgentDisconnected {
            agent: agent.clone(),
            connection,
        })
        .unwrap();
    }

    pub fn subscribe(&mut self, name: &str, role: &str) -> FrameworkId {
        self.subscribe_with(v1::FrameworkInfo {
            name: name.into(),
            role: role.into(),
            ..Default::default()
        })
        .expect("subscribes")
    }

    pub fn subscribe_with(&mut self, info: v1::FrameworkInfo) -> Result<FrameworkId, CoreError> {
        let connection = self.connection();
        let reply = self.handle(Input::Subscribe {
            connection,
            framework: info,
        })?;
        let Reply::Subscribed(id) = reply else {
            panic!("unexpected reply {reply:?}")
        };
        self.framework_connections.insert(id.clone(), connection);
        Ok(id)
    }

    pub fn disconnect_framework(&mut self, fw: &FrameworkId) {
        let connection = self.framework_connections[fw];
        self.handle(Input::FrameworkDisconnected {
            framework: fw.clone(),
            connection,
        })
        .unwrap();
    }

    /// Takes the framework's outstanding offers.
    pub fn take_offers(&mut self, fw: &FrameworkId) -> Vec<v1::Offer> {
        self.offers.remove(fw).unwrap_or_default()
    }

    pub fn take_updates(&mut self, fw: &FrameworkId) -> Vec<v1::TaskStatus> {
        self.updates.remove(fw).unwrap_or_default()
    }

    pub fn take_agent_messages(&mut self, agent: &AgentId) -> Vec<v1::MasterMessage> {
        self.agent_messages.remove(agent).unwrap_or_default()
    }

    pub fn accept(
        &mut self,
        fw: &FrameworkId,
        offers: &[&v1::Offer],
        tasks: Vec<v1::TaskSpec>,
        refuse_seconds: Option<f64>,
    ) -> Result<Reply, CoreError> {
        let ids: Vec<String> = offers.iter().map(|o| o.offer_id.clone()).collect();
        self.accept_ids(fw, ids, tasks, refuse_seconds)
    }

    pub fn accept_ids(
        &mut self,
        fw: &FrameworkId,
        offer_ids: Vec<String>,
        tasks: Vec<v1::TaskSpec>,
        refuse_seconds: Option<f64>,
    ) -> Result<Reply, CoreError> {
        let result = self.handle(Input::Accept(v1::AcceptRequest {
            framework_id: fw.to_string(),
            offer_ids: offer_ids.clone(),
            tasks,
            filters: Some(v1::Filters { refuse_seconds }),
        }));
        if result.is_ok()
            && let Some(list) = self.offers.get_mut(fw)
        {
            list.retain(|o| !offer_ids.contains(&o.offer_id));
        }
        result
    }

    pub fn decline(
        &mut self,
        fw: &FrameworkId,
        offers: &[v1::Offer],
        refuse_seconds: Option<f64>,
    ) -> Result<Reply, CoreError> {
        let ids: Vec<String> = offers.iter().map(|o| o.offer_id.clone()).collect();
        self.decline_ids(fw, ids, refuse_seconds)
    }

    pub fn decline_ids(
        &mut self,
        fw: &FrameworkId,
        ids: Vec<String>,
        refuse_seconds: Option<f64>,
    ) -> Result<Reply, CoreError> {
        if let Some(list) = self.offers.get_mut(fw) {
            list.retain(|o| !ids.contains(&o.offer_id));
        }
        self.handle(Input::Decline(v1::DeclineRequest {
            framework_id: fw.to_string(),
            offer_ids: ids,
            filters: Some(v1::Filters { refuse_seconds }),
        }))
    }

    /// An agent reports a task's new state, as the executor would.
    pub fn report(&mut self, agent: &AgentId, task: &str, state: v1::TaskState) -> v1::TaskStatus {
        let status = v1::TaskStatus {
            task_id: task.into(),
            state: state as i32,
            uuid: format!("{task}-{state:?}-{}", self.now.0).into_bytes(),
            source: v1::StatusSource::Agent as i32,
            ..Default::default()
        };
        self.handle(Input::AgentUpdates {
            agent: agent.clone(),
            statuses: vec![status.clone()],
            unsynced: None,
        })
        .expect("updates");
        status
    }

    pub fn ack(&mut self, fw: &FrameworkId, statuses: &[v1::TaskStatus]) {
        let acks = statuses
            .iter()
            .filter(|s| !s.uuid.is_empty())
            .map(|s| v1::Ack {
                task_id: s.task_id.clone(),
                agent_id: s.agent_id.clone(),
                uuid: s.uuid.clone(),
            })
            .collect();
        self.handle(Input::Acknowledge(v1::AcknowledgeRequest {
            framework_id: fw.to_string(),
            acks,
        }))
        .expect("ack");
    }

    pub fn state_of(&self, task: &str) -> Option<v1::TaskState> {
        self.core.task(task).map(|t| t.state())
    }
}

/// A valid task spec asking for `cpus` and `mem`.
pub fn task(id: &str, cpus: f64, mem: u64) -> v1::TaskSpec {
    v1::TaskSpec {
        task_id: id.into(),
        artifact: "ab".repeat(32),
        resources: Some(v1::Resources { cpus, mem, disk: 0 }),
        ..Default::default()
    }
}

pub fn offered(offer: &v1::Offer) -> Resources {
    Resources::try_from(offer.resources.as_ref().unwrap()).unwrap()
}

/// Tasks an agent was told to run, from its messages.
pub fn launched(messages: &[v1::MasterMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match &m.kind {
            Some(AgentKind::RunTasks(r)) => Some(
                r.tasks
                    .iter()
                    .map(|t| t.spec.as_ref().unwrap().task_id.clone()),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The launches an agent was sent, as sent (with their MACs).
pub fn launches(messages: &[v1::MasterMessage]) -> Vec<v1::TaskLaunch> {
    messages
        .iter()
        .filter_map(|m| match &m.kind {
            Some(AgentKind::RunTasks(r)) => Some(r.tasks.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// How an agent reports `launch` on re-registration, in `state`.
pub fn reported(launch: &v1::TaskLaunch, state: v1::TaskState) -> v1::RunningTask {
    let spec = launch.spec.clone().expect("a launch has a spec");
    v1::RunningTask {
        task_id: spec.task_id.clone(),
        framework_id: launch.framework_id.clone(),
        resources: None,
        state: state as i32,
        artifact: spec.artifact.clone(),
        spec: Some(spec),
        launch_mac: launch.mac.clone(),
        launch_epoch: launch.master_epoch,
    }
}

/// Tasks an agent was told to kill, from its messages.
pub fn killed(messages: &[v1::MasterMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match &m.kind {
            Some(AgentKind::KillTasks(k)) => Some(k.task_ids.clone()),
            Some(AgentKind::Registered(r)) => Some(r.kill_task_ids.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Calls the scenario tests make beyond the basics.
impl Harness {
    /// Like [`Harness::handle`], but also returns the messages the input
    /// produced, so a test can check that a refused call sent nothing.
    pub fn handle_seen(&mut self, input: Input) -> (Result<Reply, CoreError>, Vec<Output>) {
        let out = self.core.handle(input, self.now);
        self.store.commit(&out.writes).expect("memory store");
        for message in out.messages.clone() {
            self.absorb(message);
        }
        self.check();
        (out.reply, out.messages)
    }

    /// What a refused call must leave as it was: the core's tasks, agents,
    /// frameworks and roles, and the registry (agents' last-seen times
    /// aside, as in [`Harness::check_registry`]).
    pub fn snapshot(&self) -> String {
        let registry = records_by_key(self.store.load().expect("memory store").records());
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{registry:?}",
            self.core.tasks(),
            self.core.agents(),
            self.core.frameworks(),
            self.core.allocator().roles()
        )
    }

    /// Feeds a call that must be refused; checks that it sent nothing and
    /// changed nothing ([`Harness::snapshot`] before and after), and returns
    /// the error.
    pub fn refused(&mut self, input: Input) -> CoreError {
        let before = self.snapshot();
        let (reply, messages) = self.handle_seen(input);
        let err = reply.expect_err("the call must be refused");
        assert!(
            messages.is_empty(),
            "refused call ({err}) sent {messages:?}"
        );
        assert_eq!(
            self.snapshot(),
            before,
            "refused call ({err}) changed the state"
        );
        err
    }

    pub fn heartbeat(&mut self, agent: &AgentId) {
        self.handle(Input::AgentHeartbeat {
            agent: agent.clone(),
        })
        .expect("heartbeat");
    }

    /// Advances `ms` in steps of one second, ticking each time, while the
    /// given agents keep heartbeating.
    pub fn advance_with_heartbeats(&mut self, ms: u64, agents: &[&AgentId]) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(1000);
            for agent in agents {
                self.heartbeat(agent);
            }
            self.advance(step);
            left -= step;
        }
    }

    /// Re-registers a known (or lost) agent under its id on a new stream,
    /// reporting `tasks` as still held.
    pub fn reregister_agent(
        &mut self,
        agent: &AgentId,
        mut info: v1::AgentInfo,
        tasks: &[&str],
    ) -> Result<AgentId, CoreError> {
        info.agent_id = agent.to_string();
        // In the state the master last heard (RUNNING for one it does not
        // know): an agent reports what it last said.
        let tasks = tasks
            .iter()
            .map(|t| v1::RunningTask {
                task_id: t.to_string(),
                state: self
                    .core
                    .task(t)
                    .map_or(v1::TaskState::Running, |t| t.state()) as i32,
                ..Default::default()
            })
            .collect();
        self.register_agent(info, tasks)
    }

    /// Subscribes again with an existing framework id (failover).
    pub fn resubscribe(&mut self, fw: &FrameworkId, role: &str) -> Result<FrameworkId, CoreError> {
        self.subscribe_with(v1::FrameworkInfo {
            framework_id: fw.to_string(),
            name: "again".into(),
            role: role.into(),
            ..Default::default()
        })
    }

    pub fn kill(&mut self, fw: &FrameworkId, tasks: &[&str]) -> Result<Reply, CoreError> {
        self.handle(Input::Kill(v1::KillRequest {
            framework_id: fw.to_string(),
            task_ids: tasks.iter().map(|t| t.to_string()).collect(),
        }))
    }

    pub fn reconcile(&mut self, fw: &FrameworkId, tasks: &[&str]) -> Result<Reply, CoreError> {
        self.handle(Input::Reconcile(v1::ReconcileRequest {
            framework_id: fw.to_string(),
            task_ids: tasks.iter().map(|t| t.to_string()).collect(),
        }))
    }

    pub fn suppress(&mut self, fw: &FrameworkId) -> Result<Reply, CoreError> {
        self.handle(Input::Suppress(v1::SuppressRequest {
            framework_id: fw.to_string(),
        }))
    }

    pub fn revive(&mut self, fw: &FrameworkId) -> Result<Reply, CoreError> {
        self.handle(Input::Revive(v1::ReviveRequest {
            demand: None,
            framework_id: fw.to_string(),
        }))
    }

    pub fn teardown(&mut self, fw: &FrameworkId) -> Result<Reply, CoreError> {
        self.handle(Input::Teardown(v1::TeardownRequest {
            framework_id: fw.to_string(),
        }))
    }

    pub fn take_events(&mut self, fw: &FrameworkId) -> Vec<v1::Event> {
        self.events.remove(fw).unwrap_or_default()
    }

    /// Forgets everything recorded so far (offers stay outstanding).
    pub fn clear_messages(&mut self) {
        self.updates.clear();
        self.events.clear();
        self.agent_messages.clear();
        self.closed_frameworks.clear();
        self.closed_agents.clear();
    }
}

/// Offer ids rescinded in these events.
pub fn rescinded(events: &[v1::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(EventKind::Rescind(r)) => Some(r.offer_ids.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Acks an agent was sent, as (task id, uuid).
pub fn acked(messages: &[v1::MasterMessage]) -> Vec<(String, Vec<u8>)> {
    messages
        .iter()
        .filter_map(|m| match &m.kind {
            Some(AgentKind::AckUpdates(a)) => Some(
                a.acks
                    .iter()
                    .map(|a| (a.task_id.clone(), a.uuid.clone()))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Records keyed for comparison, agents' last-seen times zeroed.
fn records_by_key(records: Vec<Record>) -> BTreeMap<(Table, String), Vec<u8>> {
    records
        .into_iter()
        .map(|mut record| {
            if let Record::Agent(agent) = &mut record {
                agent.last_seen_ms = 0;
            }
            ((record.table(), record.key()), record.encode())
        })
        .collect()
}

/// Runs `run` on every seed, one worker per core, and panics naming the first
/// seed that failed and how to replay it (`replay`, the command that runs
/// this scenario). `WASMOS_SIM_SEEDS=N` runs seeds 0..N (default `default`);
/// `WASMOS_SIM_SEED=S` replays just that one.
pub fn run_seeds(default: u64, replay: &str, run: impl Fn(u64) + Sync) {
    let seeds: Vec<u64> = match std::env::var("WASMOS_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("WASMOS_SIM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("WASMOS_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default);
            (0..n).collect()
        }
    };
    // Seeds are independent: one worker per core takes the next seed.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers.min(seeds.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { break };
                    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(seed))) {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures.lock().unwrap().push((seed, message));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(seed, _)| *seed);
    if let Some((seed, message)) = failures.first() {
        panic!(
            "{} of {} simulation seeds failed; the first, seed {seed}: {message}\nreplay with: WASMOS_SIM_SEED={seed} {replay}",
            failures.len(),
            seeds.len()
        );
    }
}
