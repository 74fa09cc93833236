//! The master's state machine: agents, frameworks, offers and tasks.
//!
//! Sans-IO in the manner of quinn-proto: [`Core::handle`] takes one
//! [`Input`] and the current [`Time`] and returns [`Outputs`]: the answer to
//! the call, and the messages to send to frameworks and agents. The core never
//! reads a clock, opens a socket or spawns a task; a single actor in the shell
//! owns it and feeds it. That makes every behaviour testable by calling
//! `handle` directly, and a 50,000-agent simulation cheap.
//!
//! The core trusts nothing it is given: every call is validated first and
//! either applied whole or refused with a [`CoreError`] that changes nothing.
//!
//! Nothing is lost with the process: every input also returns the registry
//! [`Write`]s for what it changed (`persist.rs`), and [`Core::recover`]
//! rebuilds a core from what was written (`recover.rs`). The shell decides
//! which messages wait for those writes: offers and launches do not (a
//! launch is signed, `launch_key.rs`, and adopted from its agent if the
//! master crashes before it is durable); what a framework is told about
//! its calls and its tasks' ends does.
//!
//! Files: `agents.rs` (register, heartbeat, lose), `frameworks.rs`
//! (subscribe, failover, teardown), `offers.rs` (offer, accept, decline,
//! rescind), `tasks.rs` (status updates, acks, kill, reconcile),
//! `adopt.rs` (tasks a re-registering agent reports that the master lost),
//! `launch_key.rs` (signed launches),
//! `validate.rs` (task specs), `outbox.rs` (batching messages), `view.rs`
//! (what operators see), `invariants.rs` (the accounting checks tests run).

mod access;
mod adopt;
mod agents;
mod artifacts;
mod bounds;
mod error;
mod frameworks;
mod invariants;
mod launch_key;
mod ledger;
mod offers;
mod outbox;
mod pages;
mod persist;
mod recover;
mod tasks;
mod timers;
mod transitions;
mod trust;
mod validate;
mod view;

use crate::maps::{HashMap, HashSet};
use std::collections::VecDeque;
use std::time::Duration;

use wasmos_proto::v1;

use crate::access::Principal;
use crate::allocator::{Allocator, AllocatorConfig, Scope};
use crate::ids::{AgentId, FrameworkId, OfferId, Role, TaskId};
use crate::resources::Resources;
use crate::store::Write;
use crate::time::Time;
pub use adopt::{Adoptions, RefusedAdoption};
pub use artifacts::{ArtifactRules, FilesToRemove, LAST_USE_RESOLUTION};
pub use bounds::bound;
pub use error::CoreError;
pub use launch_key::LaunchKey;
pub use ledger::HOUR_MS;
use outbox::Outbox;
pub use pages::{Page, TaskFilter, TaskLine, TaskPage};
pub use recover::Recovered;
pub use tasks::{is_terminal, progress};
pub use transitions::Transition;
pub use trust::token_expired;
pub use validate::validate_task;
pub use view::{AgentView, FrameworkView, TaskView};

/// Settings of the core, with the defaults an operator would expect.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Prefix of every id this master hands out. The shell picks a random one
    /// per run so ids never repeat across restarts.
    pub master_id: String,
    pub allocator: AllocatorConfig,
    /// How often agents send heartbeats. Default 1 s.
    pub agent_heartbeat_interval: Duration,
    /// An agent silent for this long is declared lost and its tasks `LOST`.
    /// Default 3 heartbeat intervals (3 s).
    pub agent_timeout: Duration,
    /// How often the shell sends frameworks a HEARTBEAT event (told to them
    /// in SUBSCRIBED). Default 5 s.
    pub framework_heartbeat_interval: Duration,
    /// Failover timeout for frameworks that ask for none. Default 60 s.
    pub default_failover_timeout: Duration,
    /// The longest failover timeout a framework may ask for. Default 1 week.
    pub max_failover_timeout: Duration,
    /// Offers not used for this long are rescinded. Default 60 s.
    pub offer_timeout: Option<Duration>,
    /// How long a declined agent is held back when the framework gives no
    /// filter. Default 5 s.
    pub default_refuse: Duration,
    /// Finished tasks remembered per framework (for `ps` and reconciliation).
    /// Default 1,000.
    pub completed_tasks_per_framework: usize,
    /// Tasks of frameworks that are gone, remembered for `ps` and `logs`
    /// (oldest forgotten first). Default 10,000.
    pub removed_framework_tasks: usize,
    /// After a restart, how long an agent of the registry has to
    /// re-register before it is declared gone and its tasks `LOST`. Until
    /// then its tasks are never reported lost. Default 10 minutes.
    pub agent_reregister_timeout: Duration,
    /// Wall-clock milliseconds since the Unix epoch at `Time::ZERO`. The
    /// core's timers run on the monotonic `Time` it is given; this maps it to
    /// wall time for timestamps people read and for deadlines that must
    /// survive a restart. Default 0 (tests).
    pub wall_clock_origin_ms: u64,
    /// This start's epoch: it grows at every start on the same registry and
    /// is sent to agents and frameworks. Default 0.
    pub master_epoch: u64,
    /// The key launches are signed with (see `launch_key.rs`): the
    /// registry's, so a restarted master adopts tasks it launched before
    /// its crash. Default all zeros (tests).
    pub launch_key: LaunchKey,
    /// Capacity caps (`wasmos master --max-…`): see [`Caps`].
    pub caps: Caps,
    /// The artifact store's limits, quota and TTL.
    pub artifacts: ArtifactRules,
}

/// How much the master takes on, so that no client can make it hold
/// without bound. Past a cap a call is refused with RESOURCE_EXHAUSTED
/// (or INVALID_ARGUMENT for a claim no agent may make) and nothing changes.
#[derive(Clone, Debug)]
pub struct Caps {
    /// Agents the master keeps. Default 50,000.
    pub agents: usize,
    /// The most one agent may advertise. Default 256 cpus, 2 TiB of memory
    /// and 64 TiB of disk: a large machine of today, so an agent with a
    /// careless join token cannot claim a data centre; with the agent cap,
    /// the cluster's totals stay far inside 64 bits.
    pub agent_resources: Resources,
    /// Frameworks subscribed in one role. Default 1,000.
    pub frameworks_per_role: usize,
    /// Tasks one framework holds (running, or ended and unacknowledged).
    /// Default 1,000,000.
    pub tasks_per_framework: usize,
    /// Frameworks one principal holds in one role: its share of
    /// `frameworks_per_role`, so no principal can take a shared role's
    /// every slot. Default 250 (a quarter).
    pub frameworks_per_principal: usize,
    /// Tasks all of one principal's frameworks hold together. Default
    /// 1,000,000.
    pub tasks_per_principal: usize,
    /// A framework disconnected for longer than this gives its slot under
    /// `frameworks_per_role` and `frameworks_per_principal` back: it keeps
    /// its tasks until its failover timeout, but a principal cannot hold a
    /// role's slots with frameworks it left behind. Default 60 s.
    pub framework_slot_grace: Duration,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            agents: 50_000,
            agent_resources: Resources::new(256.0, 2 << 40, 64 << 40),
            frameworks_per_role: 1_000,
            tasks_per_framework: 1_000_000,
            frameworks_per_principal: 250,
            tasks_per_principal: 1_000_000,
            framework_slot_grace: Duration::from_secs(60),
        }
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            master_id: "m".into(),
            allocator: AllocatorConfig::default(),
            agent_heartbeat_interval: Duration::from_secs(1),
            agent_timeout: Duration::from_secs(3),
            framework_heartbeat_interval: Duration::from_secs(5),
            default_failover_timeout: Duration::from_secs(60),
            max_failover_timeout: Duration::from_secs(7 * 24 * 3600),
            offer_timeout: Some(Duration::from_secs(60)),
            default_refuse: Duration::from_secs(5),
            completed_tasks_per_framework: 1000,
            removed_framework_tasks: 10_000,
            agent_reregister_timeout: Duration::from_secs(600),
            wall_clock_origin_ms: 0,
            master_epoch: 0,
            launch_key: LaunchKey::default(),
            caps: Caps::default(),
            artifacts: ArtifactRules::default(),
        }
    }
}

/// Identifies one stream of an agent or framework, chosen by the shell, so
/// that the end of an old stream is not mistaken for the end of a new one.
pub type ConnectionId = u64;

/// Everything that can happen to the master.
#[derive(Clone, Debug)]
pub enum Input {
    /// An agent's first message on a new stream.
    AgentRegister {
        connection: ConnectionId,
        register: v1::Register,
    },
    /// Any sign of life from an agent.
    AgentHeartbeat {
        agent: AgentId,
    },
    /// Status updates from an agent; `unsynced` when the agent sent them
    /// before they were durable on its side (`tasks.rs`: an end frees its
    /// resources at once and is told once `AgentSynced` covers it).
    AgentUpdates {
        agent: AgentId,
        statuses: Vec<v1::TaskStatus>,
        unsynced: Option<v1::SyncMark>,
    },
    /// Every update of the agent up to `mark` is durable on its side.
    AgentSynced {
        agent: AgentId,
        mark: v1::SyncMark,
    },
    /// An agent's stream ended.
    AgentDisconnected {
        agent: AgentId,
        connection: ConnectionId,
    },
    /// A framework opened its event stream.
    Subscribe {
        connection: ConnectionId,
        framework: v1::FrameworkInfo,
    },
    /// A framework's event stream ended.
    FrameworkDisconnected {
        framework: FrameworkId,
        connection: ConnectionId,
    },
    Accept(v1::AcceptRequest),
    Decline(v1::DeclineRequest),
    Kill(v1::KillRequest),
    Acknowledge(v1::AcknowledgeRequest),
    Reconcile(v1::ReconcileRequest),
    Revive(v1::ReviveRequest),
    Suppress(v1::SuppressRequest),
    SetDemand(v1::SetDemandRequest),
    Teardown(v1::TeardownRequest),
    /// An operator sets a role's weight and/or quota.
    UpdateRole {
        role: String,
        weight: Option<f64>,
        quota: Option<Resources>,
    },
    /// An operator kills tasks, whichever framework they belong to.
    OperatorKill {
        task_ids: Vec<String>,
    },
    /// An operator stops offers of an agent.
    DrainAgent {
        agent: AgentId,
    },
    /// An operator offers a drained agent again.
    UndrainAgent {
        agent: AgentId,
    },
    /// Time passed: expire what is due (offers, agents, frameworks,
    /// filters) and offer what that freed. The shell sends it when
    /// [`Core::next_timeout`] comes; earlier, it changes nothing.
    Tick,
    /// An upload's bytes arrived whole: index them for `owner`, if the
    /// artifact store's limits let it (`artifacts.rs`).
    StoreArtifact {
        owner: Principal,
        digest: String,
        size: u64,
    },
    /// An artifact was fetched or asked about: a use.
    ArtifactUsed {
        digest: String,
    },
    /// Expire artifacts unused for the TTL, but none `pinned`; `touched`
    /// holds this master's file times (wall ms) by digest. Answered with
    /// [`Reply::Expired`].
    ExpireArtifacts {
        pinned: std::collections::HashSet<String>,
        touched: std::collections::HashMap<String, u64>,
    },
    /// `who` reads a task's sandbox: checked against the task as the core
    /// lists it ([`crate::sandbox_read::check`]), and numbered; answered
    /// with [`Reply::SandboxRead`]: what to send, and to which agent.
    ReadSandbox {
        who: Principal,
        request: v1::ReadSandboxRequest,
    },
    /// A token the shell made (`token` holds its secret's hash), stamped
    /// now by the core and expiring `ttl_ms` later (0: never). Answered
    /// with [`Reply::Token`] (`trust.rs`).
    CreateToken {
        token: v1::StoredToken,
        ttl_ms: u64,
    },
    /// Delete a token; answered with its record as it was.
    RevokeToken {
        accessor: String,
    },
    /// Spend one use of join token `accessor` on a new agent's identity;
    /// answered with [`Reply::Identity`].
    Join {
        accessor: String,
        secret_sha256: String,
        identity: v1::StoredIdentity,
    },
    /// An agent's certificate was renewed.
    RenewIdentity {
        agent: String,
        not_after_ms: u64,
    },
    /// End an agent's identity for good (its certificate was revoked) and
    /// remove the agent: its stream is closed and its tasks are `LOST`
    /// now, for it may never come back.
    RevokeIdentity {
        agent: String,
    },
}

/// The answer to one input.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Nothing to say beyond "done".
    Done,
    /// The agent's id (new, or confirmed on re-registration).
    Registered(AgentId),
    /// The framework's id (new, or confirmed on re-subscription).
    Subscribed(FrameworkId),
    /// The tasks an accept launched.
    Launched(Vec<TaskId>),
    /// The artifacts that expired, whose files may go.
    Expired(Vec<String>),
    /// A sandbox read passed: the shell sends `read` to `agent` (at once,
    /// or refuses it if the agent's stream is full: a read must never cost
    /// an agent its stream), and its answer comes back under
    /// `read.request_id`.
    SandboxRead {
        agent: AgentId,
        read: v1::SandboxRead,
    },
    /// A token's record as stored (made) or as it was (revoked).
    Token(Box<v1::StoredToken>),
    /// An agent identity's record as stored.
    Identity(Box<v1::StoredIdentity>),
}

/// A message for the shell to deliver.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// An event on a framework's stream.
    Framework(FrameworkId, v1::Event),
    /// A message on an agent's stream.
    Agent(AgentId, v1::MasterMessage),
    /// End a framework's stream: it was removed.
    CloseFramework(FrameworkId),
    /// End an agent's stream: it was removed.
    CloseAgent(AgentId),
}

/// What `handle` returns.
#[derive(Debug)]
pub struct Outputs {
    pub reply: Result<Reply, CoreError>,
    pub messages: Vec<Output>,
    /// What to persist: durable before any of `messages` is sent, or the
    /// reply given.
    pub writes: Vec<Write>,
}

struct Agent {
    id: AgentId,
    info: v1::AgentInfo,
    total: Resources,
    reservations: Vec<(Role, Resources)>,
    connection: Option<ConnectionId>,
    /// Kept in memory only; its record holds the time it was last written
    /// for another reason (registration, draining).
    last_seen: Time,
    /// Set for an agent recovered from the registry that has not yet
    /// re-registered: it is removed (its tasks `LOST`) at this time.
    recovering_until: Option<Time>,
    draining: bool,
    offers: HashSet<OfferId>,
    /// Tasks on this agent that still hold resources or await an ack.
    tasks: HashSet<TaskId>,
    /// Ends heard before they were durable on the agent, by the mark that
    /// makes them so: told to their frameworks when `AgentSynced` passes it.
    unsynced_ends: Vec<(v1::SyncMark, TaskId)>,
}

struct Framework {
    id: FrameworkId,
    info: v1::FrameworkInfo,
    role: Role,
    connection: Option<ConnectionId>,
    failover_timeout: Duration,
    /// Set while disconnected: removed when it passes.
    failover_deadline: Option<Time>,
    suppressed: bool,
    offers: HashSet<OfferId>,
    /// Tasks not yet archived (running, or terminal and unacknowledged).
    tasks: HashSet<TaskId>,
    /// Archived tasks, oldest first, capped.
    completed: VecDeque<TaskId>,
}

impl Framework {
    /// Whether it takes a slot under the framework caps: while connected,
    /// and for `grace` after it disconnected.
    fn holds_slot(&self, grace: Duration, now: Time) -> bool {
        match self.failover_deadline {
            None => true,
            Some(deadline) => {
                let disconnected = Time(
                    deadline
                        .0
                        .saturating_sub(self.failover_timeout.as_millis() as u64),
                );
                now.since(disconnected) <= grace
            }
        }
    }
}

struct Offer {
    id: OfferId,
    framework: FrameworkId,
    agent: AgentId,
    resources: Resources,
    reservation: Option<Role>,
    expires: Option<Time>,
}

struct Task {
    id: TaskId,
    framework: FrameworkId,
    agent: AgentId,
    spec: v1::TaskSpec,
    resources: Resources,
    /// Where the resources came from: (reservation role or unreserved, amount).
    consumption: Vec<(Option<Role>, Resources)>,
    /// The latest status.
    status: v1::TaskStatus,
    /// True once the resources went back to the allocator (terminal).
    released: bool,
    /// A kill was asked for; resent when the agent comes back.
    kill_requested: bool,
    /// A status the master made itself (e.g. LOST) that awaits an ack.
    master_update: Option<v1::TaskStatus>,
    /// `status` is an end heard before it was durable on the agent: not
    /// told to the framework yet, and replaceable (by a restarted
    /// executor's LOST).
    end_unsynced: bool,
    archived: bool,
    /// The principal owning its framework (kept after the framework goes).
    owner: String,
    /// Its framework's role (kept after the framework goes).
    role: Role,
    /// Its settled end is in the usage ledger (`ledger.rs`).
    usage_counted: bool,
    /// Its last changes of state, for operators.
    transitions: transitions::Transitions,
}

/// The master's state machine. See the module docs.
pub struct Core {
    config: CoreConfig,
    allocator: Allocator,
    agents: HashMap<AgentId, Agent>,
    frameworks: HashMap<FrameworkId, Framework>,
    offers: HashMap<OfferId, Offer>,
    tasks: HashMap<TaskId, Task>,
    /// Tasks of removed frameworks, kept read-only for operators.
    graveyard: HashMap<TaskId, Task>,
    graveyard_order: VecDeque<TaskId>,
    /// Every task id of `tasks` and `graveyard`, in order, and their
    /// counts by state: what the paged views read.
    known: pages::KnownTasks,
    /// Live tasks each principal's frameworks hold (their `tasks` summed),
    /// kept as tasks come and go so that an `Accept` checks
    /// `tasks_per_principal` without a pass over every framework.
    principal_tasks: HashMap<String, usize>,
    next_id: u64,
    out: Outbox,
    /// What the current input changed, to persist.
    dirty: persist::Dirty,
    /// Roles an operator configured: (weight, quota), as persisted.
    role_settings: HashMap<Role, (Option<f64>, Option<Resources>)>,
    /// When each offer, agent and framework next needs the core's time.
    timers: timers::Timers,
    /// Tasks agents reported that were adopted or refused (`adopt.rs`).
    adoptions: Adoptions,
    /// Reconciliations of tasks the master does not know, asked while an
    /// agent that may hold them has not re-registered: answered once none
    /// is left recovering (`tasks.rs`).
    held_reconciliations: Vec<(FrameworkId, TaskId)>,
    /// The usage ledger's current hour (`ledger.rs`).
    ledger: ledger::Ledger,
    /// The time of the input being handled (the ledger's clock).
    last_now: Time,
    /// The artifact index (`artifacts.rs`).
    artifacts: artifacts::ArtifactIndex,
    /// Tokens and agent identities (`trust.rs`).
    trust: trust::TrustTables,
}

/// Takes `count` tasks off `principal`'s count in
/// [`Core::principal_tasks`] (forgotten at zero). A free function so that
/// it can run while one of the core's frameworks is borrowed.
fn uncount_principal_tasks(counts: &mut HashMap<String, usize>, principal: &str, count: usize) {
    if let Some(held) = counts.get_mut(principal) {
        *held = held.saturating_sub(count);
        if *held == 0 {
            counts.remove(principal);
        }
    }
}

impl Core {
    pub fn new(config: CoreConfig) -> Core {
        Core {
            allocator: Allocator::new(config.allocator.clone()),
            config,
            agents: HashMap::default(),
            frameworks: HashMap::default(),
            offers: HashMap::default(),
            tasks: HashMap::default(),
            graveyard: HashMap::default(),
            graveyard_order: VecDeque::new(),
            known: pages::KnownTasks::default(),
            principal_tasks: HashMap::default(),
            next_id: 0,
            out: Outbox::default(),
            dirty: persist::Dirty::default(),
            role_settings: HashMap::default(),
            timers: timers::Timers::default(),
            adoptions: Adoptions::default(),
            held_reconciliations: Vec::new(),
            ledger: ledger::Ledger::default(),
            last_now: Time::ZERO,
            artifacts: artifacts::ArtifactIndex::default(),
            trust: trust::TrustTables::default(),
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The allocator, for reading shares and roles.
    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    /// Turns on the allocator's fairness audit (tests and simulations).
    pub fn enable_audit(&mut self) {
        self.allocator.enable_audit();
    }

    /// Fairness violations the audit found since the last call.
    pub fn take_audit_violations(&mut self) -> Vec<String> {
        self.allocator.take_audit_violations()
    }

    /// Applies one input at time `now`.
    pub fn handle(&mut self, input: Input, now: Time) -> Outputs {
        let input = match bound(input) {
            Ok(input) => input,
            Err(refused) => {
                return Outputs {
                    reply: Err(refused),
                    messages: Vec::new(),
                    writes: Vec::new(),
                };
            }
        };
        self.last_now = now;
        let reply = match input {
            Input::AgentRegister {
                connection,
                register,
            } => self.register_agent(connection, register, now),
            Input::AgentHeartbeat { agent } => self.agent_heartbeat(&agent, now),
            Input::AgentUpdates {
                agent,
                statuses,
                unsynced,
            } => self.agent_updates(&agent, statuses, unsynced, now),
            Input::AgentSynced { agent, mark } => self.agent_synced(&agent, mark, now),
            Input::AgentDisconnected { agent, connection } => {
                self.agent_disconnected(&agent, connection, now)
            }
            Input::Subscribe {
                connection,
                framework,
            } => self.subscribe(connection, framework, now),
            Input::FrameworkDisconnected {
                framework,
                connection,
            } => self.framework_disconnected(&framework, connection, now),
            Input::Accept(request) => self.accept(request, now),
            Input::Decline(request) => self.decline(request, now),
            Input::Kill(request) => self.kill(request, now),
            Input::Acknowledge(request) => self.acknowledge(request, now),
            Input::Reconcile(request) => self.reconcile(request, now),
            Input::Revive(request) => self.revive(
                &request.framework_id.as_str().into(),
                request.demand.as_ref(),
                now,
            ),
            Input::SetDemand(request) => self.set_demand(
                &request.framework_id.as_str().into(),
                request.demand.as_ref(),
                now,
            ),
            Input::Suppress(request) => self.suppress(&request.framework_id.as_str().into()),
            Input::Teardown(request) => self.teardown(&request.framework_id.as_str().into(), now),
            Input::UpdateRole {
                role,
                weight,
                quota,
            } => self.update_role(&role, weight, quota, now),
            Input::DrainAgent { agent } => self.drain_agent(&agent),
            Input::UndrainAgent { agent } => self.undrain_agent(&agent, now),
            Input::OperatorKill { task_ids } => self.operator_kill(task_ids, now),
            Input::Tick => self.tick(now),
            Input::StoreArtifact {
                owner,
                digest,
                size,
            } => self.store_artifact(&owner, digest, size, now),
            Input::ArtifactUsed { digest } => self.note_artifact_use(&digest, now),
            Input::ExpireArtifacts { pinned, touched } => {
                self.expire_artifacts(&pinned, &touched, now)
            }
            Input::ReadSandbox { who, request } => self.read_sandbox(&who, request),
            Input::CreateToken { token, ttl_ms } => self.create_token(token, ttl_ms, now),
            Input::RevokeToken { accessor } => self.revoke_token(&accessor),
            Input::Join {
                accessor,
                secret_sha256,
                identity,
            } => self.join(&accessor, &secret_sha256, identity, now),
            Input::RenewIdentity {
                agent,
                not_after_ms,
            } => self.renew_identity(&agent, not_after_ms),
            Input::RevokeIdentity { agent } => self.revoke_identity(&agent, now),
        };
        self.offer_freed(now);
        Outputs {
            reply,
            messages: self.out.drain(),
            writes: self.take_writes(),
        }
    }

    fn update_role(
        &mut self,
        role: &str,
        weight: Option<f64>,
        quota: Option<Resources>,
        now: Time,
    ) -> Result<Reply, CoreError> {
        crate::ids::validate_role(role).map_err(CoreError::InvalidRole)?;
        let role = Role::from(role);
        if let Some(weight) = weight {
            crate::access::validate_weight(weight)
                .map_err(|e| CoreError::InvalidArgument(format!("role `{role}`: {e}")))?;
            self.allocator
                .set_weight(&role, weight)
                .map_err(|e| CoreError::InvalidArgument(e.to_string()))?;
        }
        if let Some(quota) = quota {
            self.allocator.set_quota(&role, quota);
        }
        let settings = self.role_settings.entry(role.clone()).or_default();
        settings.0 = weight.or(settings.0);
        settings.1 = quota.or(settings.1);
        self.dirty_role(&role);
        self.allocate(now, Scope::All);
        Ok(Reply::Done)
    }

    /// A fresh id of `kind` (`A` agent, `F` framework, `O` offer, `U` update).
    fn fresh_id(&mut self, kind: char) -> String {
        self.next_id += 1;
        format!("{}-{kind}{}", self.config.master_id, self.next_id)
    }

    /// Keeps a task of a removed framework for operators to look at.
    fn bury(&mut self, mut task: Task) {
        self.count_buried(&mut task);
        self.graveyard_order.push_back(task.id.clone());
        self.graveyard.insert(task.id.clone(), task);
        while self.graveyard_order.len() > self.config.removed_framework_tasks {
            let old = self.graveyard_order.pop_front().expect("non-empty");
            if let Some(forgotten) = self.graveyard.remove(&old) {
                self.known.remove(&old, forgotten.status.state());
            }
        }
    }

    /// Is this task id taken, by a live task or a remembered one?
    /// Takes in a task placed on its agent (launched or adopted): in the
    /// task table, its agent's and its framework's indexes, and the writes.
    fn insert_task(&mut self, task: Task) {
        let id = task.id.clone();
        self.agents
            .get_mut(&task.agent)
            .expect("a task's agent is known")
            .tasks
            .insert(id.clone());
        self.add_framework_task(&task.framework, &id);
        self.known.add(&id, task.status.state());
        self.tasks.insert(id.clone(), task);
        self.dirty_task(&id);
    }

    /// Enters a live task in its framework's set and its principal's count.
    fn add_framework_task(&mut self, framework: &FrameworkId, id: &TaskId) {
        let fw = self
            .frameworks
            .get_mut(framework)
            .expect("a task's framework is known");
        if fw.tasks.insert(id.clone()) {
            *self
                .principal_tasks
                .entry(fw.info.principal.clone())
                .or_default() += 1;
        }
    }

    fn task_id_taken(&self, id: &TaskId) -> bool {
        self.tasks.contains_key(id) || self.graveyard.contains_key(id)
    }

    fn framework_mut(&mut self, id: &FrameworkId) -> Result<&mut Framework, CoreError> {
        self.frameworks
            .get_mut(id)
            .ok_or_else(|| CoreError::UnknownFramework(id.clone()))
    }
}
