//! The one task that owns the core.
//!
//! gRPC handlers send [`Command`]s; the actor feeds them to the core with the
//! current time, routes the core's outputs to the right streams, ticks the
//! core every allocation interval and sends framework heartbeats. Nothing
//! else touches the core, so there are no locks around it.
//!
//! # Turns and group commit
//!
//! The actor works in turns: it takes every command already waiting (up to
//! [`MAX_TURN`]), feeds each to the core, and holds what the core returns.
//! At the end of the turn it commits the turn's registry writes as one
//! transaction, off its thread, and only then routes the held messages and
//! answers the held calls: nothing leaves the master that depends on a write
//! that is not durable. While a commit runs, new commands queue up and make
//! the next turn's batch, so the fsyncs per second stay few however many
//! tasks go through. That batch is bounded ([`ActorConfig::max_backlog`]):
//! a disk that falls behind makes callers wait, not the master's memory
//! grow.
//!
//! Offers, rescinds, launches and the updates that do not end a task
//! (`STARTING`, `RUNNING`) are the exception: they go out at the end of
//! their turn, commit or no commit.
//!
//! - An offer promises nothing durable, and what a framework does with it
//!   (an `Accept`) is answered only once its launch is durable, after every
//!   earlier commit, so a framework never builds on an end a crash could
//!   take back.
//! - A launch goes to its agent while its commit runs: what must be durable
//!   is what a framework is *told* (the `Accept`'s answer waits for the
//!   commit), never what an agent is asked to do. A master that dies in
//!   between adopts the task when its agent re-registers and reports it
//!   with the launch's MAC (the core's `adopt.rs`); until every agent is
//!   back, it answers no reconciliation with "unknown".
//! - An update that does not end its task may reach the framework before
//!   its commit: a crash can only make the agent send it again. An end
//!   waits: a framework never hears of an end a crash could take back.
//!
//! None of them overtakes a message of its stream held for a commit ahead
//! of it: offers and updates wait behind a held `SUBSCRIBED` or `ERROR`
//! (and every later one of the batch behind them), a launch behind its
//! agent's held `Registered` or a held launch (or the end of its stream).
//! An offer may overtake held ends, which frameworks must not order against
//! offers anyway, and a launch may overtake held kills and acks of other
//! tasks. Together this takes every commit off the path from `Accept` to
//! the task's start.
//!
//! The job service runs here too (`actor/jobs.rs`): its frameworks' events
//! reach it at the end of their turn, ends included, and what it does is
//! inputs and writes of that turn's commit: its writes, acknowledgements,
//! kills and answers wait for the commit the ends they follow wait for, so
//! an end costs it no commit of its own.
//!
//! Time: the core runs on a monotonic clock (milliseconds since the actor's
//! start); the wall clock is read once, at start, to map it to timestamps
//! and persisted deadlines. A step of the wall clock changes no timer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;
use wasmos_proto::v1::master_message::Kind as AgentKind;

use super::jobs::driver::Driver;
use super::metrics::Metrics;
use crate::access::Principal;
use crate::core::{Adoptions, ConnectionId, Core, CoreError, Input, Output, Reply, is_terminal};
use crate::ids::{AgentId, FrameworkId};
use crate::server::handle::status_of;
use crate::store::{Store, StoreError, Write};
use crate::time::Time;

pub use super::event_queue::EventSender;
/// Messages for one agent's stream.
pub type AgentSender = mpsc::Sender<Result<v1::MasterMessage, Status>>;

/// How many messages may wait for a slow stream before it is cut off (it
/// then re-subscribes and reconciles, losing nothing).
pub const STREAM_BUFFER: usize = 8192;

/// A read of the core, run inside the actor.
pub type Query = Box<dyn FnOnce(&Core, &Metrics) + Send>;

/// The most commands one turn takes before it commits and sends.
pub const MAX_TURN: usize = 4096;

/// How often a full backlog is logged at most.
const BACKLOG_WARNING_EVERY: Duration = Duration::from_secs(10);

/// An answer held until the turn's writes are durable.
type HeldReply = Box<dyn FnOnce() + Send>;

/// A request to the actor.
pub enum Command {
    /// Any core input, answered with the core's reply. With `who`, only if
    /// that principal may make it.
    Call {
        input: Input,
        who: Option<Principal>,
        reply: oneshot::Sender<Result<Reply, CoreError>>,
    },
    /// A framework's new event stream, for `who` (who owns it if new).
    Subscribe {
        who: Principal,
        info: v1::FrameworkInfo,
        events: EventSender,
        reply: oneshot::Sender<Result<(FrameworkId, ConnectionId), CoreError>>,
    },
    /// A framework's stream ended.
    FrameworkGone {
        framework: FrameworkId,
        connection: ConnectionId,
    },
    /// An agent's new stream, after its `register` message.
    AttachAgent {
        register: v1::Register,
        messages: AgentSender,
        reply: oneshot::Sender<Result<Attached, CoreError>>,
    },
    /// A message on an agent's stream after registration.
    FromAgent {
        agent: AgentId,
        message: v1::agent_message::Kind,
    },
    /// An agent's stream ended.
    AgentGone {
        agent: AgentId,
        connection: ConnectionId,
    },
    /// Read a task's sandbox through its agent.
    ReadSandbox {
        who: Principal,
        request: v1::ReadSandboxRequest,
        reply: oneshot::Sender<Result<v1::SandboxReadReply, Status>>,
    },
    /// Read the core (for Operator, `/state` and `/metrics`).
    Query(Query),
    /// Registry writes made outside the core and the job service (the
    /// deletes of expired jobs' stdout heads), joined to this turn's
    /// commit; answered once they are durable.
    Persist {
        writes: Vec<Write>,
        reply: oneshot::Sender<()>,
    },
    /// A call of the job service, which runs in the actor's turns.
    Jobs(super::jobs::driver::Call),
}

/// Where a framework's events go.
enum Stream {
    /// A client's event stream.
    Client(EventSender),
    /// The job service, for the jobs of this owner (see `actor/jobs.rs`).
    Jobs(crate::jobs::Owner),
}

/// An agent's stream, attached.
#[derive(Debug)]
pub struct Attached {
    pub agent: AgentId,
    pub connection: ConnectionId,
    /// Tasks it reported that the master had lost and took in, and those
    /// it would not (the agent was told to kill them), for the log and the
    /// audit log.
    pub adoptions: Adoptions,
}

/// Timing of the actor.
#[derive(Clone, Debug)]
pub struct ActorConfig {
    /// The shortest time between two ticks: the actor wakes the core at its
    /// [`Core::next_timeout`], but no sooner than this after the last tick,
    /// so expiries due close together are handled in one turn. Freed
    /// resources never wait for it: the core offers them in the input that
    /// freed them.
    pub min_tick_interval: Duration,
    /// The most registry writes and held answers that wait behind a commit
    /// in flight: past it the actor takes no command until that commit
    /// ends, so a slow disk slows callers (the command queue fills, then
    /// their calls wait) instead of growing the master's memory without
    /// bound.
    pub max_backlog: usize,
}

/// The default of [`ActorConfig::max_backlog`]: a few seconds of a busy
/// master's writes, tens of MiB at most.
pub const MAX_BACKLOG: usize = 32_768;

/// The core's monotonic clock: milliseconds since the actor's start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    pub fn now(&self) -> Time {
        Time(self.origin.elapsed().as_millis() as u64)
    }

    /// The instant at which [`Clock::now`] reaches `time`.
    pub fn instant(&self, time: Time) -> Instant {
        self.origin + Duration::from_millis(time.0)
    }
}

/// A commit in flight and the messages and answers it holds back.
struct Committing {
    /// The commit's result, and how long it took.
    commit: tokio::task::JoinHandle<(Result<(), StoreError>, Duration)>,
    held: Vec<Output>,
    held_replies: Vec<HeldReply>,
    /// Frameworks whose stream has a held `SUBSCRIBED`, `ERROR` or close in
    /// `held`: their offers wait behind it.
    held_streams: HashSet<FrameworkId>,
    /// Agents whose stream has a held `Registered` or close in `held`: their
    /// launches wait behind it.
    held_agents: HashSet<AgentId>,
}

pub struct Actor {
    core: Core,
    config: ActorConfig,
    clock: Clock,
    store: Arc<dyn Store>,
    /// The messages, answers and writes of the turns since the last commit
    /// began: the messages and answers wait until the writes (and every
    /// earlier batch) are durable.
    held: Vec<Output>,
    held_replies: Vec<HeldReply>,
    held_streams: HashSet<FrameworkId>,
    held_agents: HashSet<AgentId>,
    writes: Vec<Write>,
    /// Offers, rescinds and launches of this turn: they go at its end,
    /// durable or not.
    early: Vec<Output>,
    /// The commit in flight on a blocking thread, with what waits on it.
    /// While it runs the actor goes on with the next turns (pipelining):
    /// their writes form the next commit, so a busy master commits large
    /// batches back to back instead of idling through every fsync.
    committing: Option<Committing>,
    frameworks: HashMap<FrameworkId, (ConnectionId, Stream)>,
    agents: HashMap<AgentId, (ConnectionId, AgentSender)>,
    sandbox_reads: HashMap<u64, oneshot::Sender<Result<v1::SandboxReadReply, Status>>>,
    next_connection: ConnectionId,
    metrics: Metrics,
    /// Streams cut off while routing; the core hears of it after routing.
    dropped: Vec<Input>,
    /// When a full backlog was last logged.
    last_backlog_warning: Option<Instant>,
    /// The job service, if this master runs one (out while it runs).
    jobs: Option<Box<Driver>>,
    /// Events of job frameworks, for the job service once routing ends.
    job_events: Vec<(crate::jobs::Owner, v1::Event)>,
}

impl Actor {
    /// Counts shed connections in this actor's metrics.
    pub fn with_connections_shed(mut self, counter: Arc<std::sync::atomic::AtomicU64>) -> Actor {
        self.metrics.connections_shed = counter;
        self
    }

    /// Counts uploads answered with no other master holding a copy (see
    /// `artifacts::ArtifactStore::with_peers`), for the metrics.
    pub fn with_artifacts_held_alone(
        mut self,
        counter: Arc<std::sync::atomic::AtomicU64>,
    ) -> Actor {
        self.metrics.artifacts_held_alone = counter;
        self
    }

    /// An actor for `core`, whose times come from `clock` and whose writes
    /// go to `store`.
    pub fn new(core: Core, config: ActorConfig, clock: Clock, store: Arc<dyn Store>) -> Actor {
        Actor {
            core,
            config,
            clock,
            store,
            held: Vec::new(),
            held_replies: Vec::new(),
            held_streams: HashSet::new(),
            held_agents: HashSet::new(),
            writes: Vec::new(),
            early: Vec::new(),
            committing: None,
            frameworks: HashMap::new(),
            agents: HashMap::new(),
            sandbox_reads: HashMap::new(),
            next_connection: 0,
            metrics: Metrics::default(),
            dropped: Vec::new(),
            last_backlog_warning: None,
            jobs: None,
            job_events: Vec::new(),
        }
    }

    /// Runs the job service `driver` in this actor's turns.
    pub fn with_jobs(mut self, driver: Driver) -> Actor {
        self.jobs = Some(Box::new(driver));
        self
    }

    /// Runs until every command sender is dropped, or until a write to the
    /// registry fails: then the master's memory is ahead of its disk, and the
    /// only safe course is to stop (the error says why) and be restarted on
    /// what is durable.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) -> Result<(), StoreError> {
        let mut last_tick = Instant::now();
        let mut heartbeat = tokio::time::interval(self.core.config().framework_heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut jobs_tick = tokio::time::interval(super::jobs::driver::TICK);
        jobs_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.with_driver(|driver, actor| driver.start(actor));
        self.end_turn()?;
        loop {
            // Sleep until the core's next deadline, or the next input.
            let wake = self.core.next_timeout().map(|at| {
                self.clock
                    .instant(at)
                    .max(last_tick + self.config.min_tick_interval)
            });
            let deadline = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let taking = !self.backlog_full();
            tokio::select! {
                command = commands.recv(), if taking => match command {
                    Some(command) => {
                        self.turn_command(command).await?;
                        for _ in 1..MAX_TURN {
                            if self.backlog_full() {
                                break;
                            }
                            match commands.try_recv() {
                                Ok(command) => self.turn_command(command).await?,
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                done = async { (&mut self.committing.as_mut().expect("guarded").commit).await },
                    if self.committing.is_some() => self.committed(done)?,
                _ = deadline => {
                    last_tick = Instant::now();
                    self.notify(Input::Tick);
                    self.metrics.record_cycle(last_tick.elapsed());
                }
                _ = heartbeat.tick() => self.heartbeat(),
                _ = jobs_tick.tick(), if self.jobs.is_some() => {
                    self.with_driver(|driver, actor| driver.tick(actor));
                }
            }
            self.end_turn()?;
        }
        self.drain().await
    }

    /// Do the writes and answers waiting behind the commit in flight fill
    /// the backlog?
    fn backlog_full(&mut self) -> bool {
        let waiting = self.writes.len() + self.held_replies.len();
        let full = self.committing.is_some() && waiting >= self.config.max_backlog;
        if full
            && self
                .last_backlog_warning
                .is_none_or(|at| at.elapsed() > BACKLOG_WARNING_EVERY)
        {
            self.last_backlog_warning = Some(Instant::now());
            tracing::warn!(
                writes = self.writes.len(),
                answers = self.held_replies.len(),
                "the registry's commits fall behind: no command is taken until the one in flight ends"
            );
        }
        full
    }

    /// Handles one command of a turn. A new stream first drains what the
    /// turn holds, so that nothing meant for an older stream of the same
    /// framework or agent reaches the new one before its first message.
    /// An agent's stream drains only when something is on its way to that
    /// agent: a new leader's agents, re-registering all at once, share
    /// commits instead of taking one each in turn.
    async fn turn_command(&mut self, command: Command) -> Result<(), StoreError> {
        let drain = match &command {
            Command::Subscribe { .. } => true,
            Command::AttachAgent { register, .. } => register
                .agent
                .as_ref()
                .is_some_and(|a| self.sends_to_agent(&a.agent_id)),
            _ => false,
        };
        if drain {
            self.drain().await?;
        }
        self.command(command);
        Ok(())
    }

    /// Is a message for agent `id` (or the end of its stream) waiting to go:
    /// early in this turn, held in it, or held behind the commit in flight?
    fn sends_to_agent(&self, id: &str) -> bool {
        let for_agent = |o: &Output| matches!(o, Output::Agent(a, _) | Output::CloseAgent(a) if a.as_str() == id);
        self.early.iter().any(for_agent)
            || self.held.iter().any(for_agent)
            || self
                .committing
                .as_ref()
                .is_some_and(|c| c.held.iter().any(for_agent))
    }

    /// Ends a turn. With a commit in flight, what the turn holds waits for
    /// the next one. Otherwise its writes start a commit (an in-memory
    /// registry commits at once), or, with nothing to write, its messages go
    /// now: nothing they say depends on a write still to come.
    fn end_turn(&mut self) -> Result<(), StoreError> {
        loop {
            while !self.early.is_empty() {
                let early = std::mem::take(&mut self.early);
                self.release(early, Vec::new());
            }
            if self.committing.is_some() {
                return Ok(());
            }
            if self.writes.is_empty() {
                if self.held.is_empty() && self.held_replies.is_empty() {
                    return Ok(());
                }
                let (held, replies) = (
                    std::mem::take(&mut self.held),
                    std::mem::take(&mut self.held_replies),
                );
                self.held_streams.clear();
                self.held_agents.clear();
                self.release(held, replies);
                continue;
            }
            let writes = std::mem::take(&mut self.writes);
            if self.store.is_in_memory() {
                let start = Instant::now();
                self.store.commit(&writes)?;
                self.metrics.commit.observe(start.elapsed());
                continue;
            }
            let store = self.store.clone();
            self.committing = Some(Committing {
                commit: tokio::task::spawn_blocking(move || {
                    let start = Instant::now();
                    (store.commit(&writes), start.elapsed())
                }),
                held: std::mem::take(&mut self.held),
                held_replies: std::mem::take(&mut self.held_replies),
                held_streams: std::mem::take(&mut self.held_streams),
                held_agents: std::mem::take(&mut self.held_agents),
            });
        }
    }

    /// The commit in flight finished: on success, what it held goes out.
    fn committed(
        &mut self,
        done: Result<(Result<(), StoreError>, Duration), tokio::task::JoinError>,
    ) -> Result<(), StoreError> {
        let batch = self.committing.take().expect("a commit was in flight");
        let (result, took) =
            done.map_err(|e| StoreError::Io(format!("the registry's writer failed: {e}")))?;
        result?;
        self.metrics.commit.observe(took);
        self.release(batch.held, batch.held_replies);
        Ok(())
    }

    /// Sends messages and answers whose writes are durable. Sending may cut
    /// off full streams, which the core hears of at once; what that writes
    /// and says joins the current batch.
    fn release(&mut self, held: Vec<Output>, replies: Vec<HeldReply>) {
        self.deliver(held);
        for reply in replies {
            reply();
        }
        while let Some(input) = self.dropped.pop() {
            self.notify(input);
        }
        self.drive_jobs();
    }

    /// Makes everything durable and sent before going on: before a new
    /// stream of a framework or agent is attached (nothing meant for its
    /// older stream may reach it first), and at the end.
    async fn drain(&mut self) -> Result<(), StoreError> {
        loop {
            self.end_turn()?;
            let Some(batch) = self.committing.as_mut() else {
                return Ok(());
            };
            let done = (&mut batch.commit).await;
            self.committed(done)?;
        }
    }

    /// Feeds one input to the core and holds what it returns for the end of
    /// the turn: offers for the turn's end, the rest until it is durable.
    fn apply(&mut self, input: Input) -> Result<Reply, CoreError> {
        let out = self.core.handle(input, self.clock.now());
        if let Ok(Reply::Launched(tasks)) = &out.reply {
            self.metrics.launched(tasks);
        }
        for message in out.messages {
            self.sort(message);
        }
        self.writes.extend(out.writes);
        out.reply
    }

    /// Puts a message among the early ones or the held ones (see the
    /// module's doc).
    fn sort(&mut self, message: Output) {
        let stream_held = |actor: &Actor, id: &FrameworkId| {
            actor.held_streams.contains(id)
                || actor
                    .committing
                    .as_ref()
                    .is_some_and(|c| c.held_streams.contains(id))
        };
        let agent_held = |actor: &Actor, id: &AgentId| {
            actor.held_agents.contains(id)
                || actor
                    .committing
                    .as_ref()
                    .is_some_and(|c| c.held_agents.contains(id))
        };
        if let Output::Framework(id, _) | Output::CloseFramework(id) = &message
            && matches!(self.frameworks.get(id), Some((_, Stream::Jobs(_))))
        {
            // The job service hears everything at the turn's end, ends
            // too: what it does about them (its writes, acknowledgements,
            // kills and answers) waits for the same commit they do, and
            // its launches may go early like any other.
            self.early.push(message);
            return;
        }
        match &message {
            Output::Framework(id, event)
                if matches!(
                    event.kind,
                    Some(EventKind::Offers(_) | EventKind::Rescind(_))
                ) =>
            {
                if !stream_held(self, id) {
                    self.early.push(message);
                    return;
                }
                // Held behind its stream's first events: so is every later
                // offer or rescind of this batch, keeping their order.
                self.held_streams.insert(id.clone());
            }
            Output::Framework(
                id,
                v1::Event {
                    kind: Some(EventKind::Updates(_)),
                },
            ) if !stream_held(self, id) => {
                // STARTING and RUNNING go now: a crash can only repeat them.
                // Ends wait for their commit (they are the last word on a
                // task, so nothing of the same task can follow them early).
                let Output::Framework(
                    id,
                    v1::Event {
                        kind: Some(EventKind::Updates(updates)),
                    },
                ) = message
                else {
                    unreachable!("matched above")
                };
                let (ends, progress): (Vec<_>, Vec<_>) = updates
                    .statuses
                    .into_iter()
                    .partition(|s| is_terminal(s.state()));
                let event = |statuses| v1::Event {
                    kind: Some(EventKind::Updates(v1::Updates { statuses })),
                };
                if !progress.is_empty() {
                    self.early
                        .push(Output::Framework(id.clone(), event(progress)));
                }
                if !ends.is_empty() {
                    self.held.push(Output::Framework(id, event(ends)));
                }
                return;
            }
            Output::Framework(
                id,
                v1::Event {
                    kind: Some(EventKind::Updates(_)),
                },
            ) => {
                // Held behind its stream's first events (the arm above takes
                // the others): so is every later update of this batch.
                self.held_streams.insert(id.clone());
            }
            Output::Framework(
                id,
                v1::Event {
                    kind: Some(EventKind::Subscribed(_) | EventKind::Error(_)),
                },
            )
            | Output::CloseFramework(id) => {
                self.held_streams.insert(id.clone());
            }
            Output::Agent(
                id,
                v1::MasterMessage {
                    kind: Some(AgentKind::RunTasks(_)),
                },
            ) => {
                if !agent_held(self, id) {
                    self.early.push(message);
                    return;
                }
                // Held behind its stream's first message: so is every later
                // launch to it, keeping their order.
                self.held_agents.insert(id.clone());
            }
            Output::Agent(
                id,
                v1::MasterMessage {
                    kind: Some(AgentKind::Registered(_)),
                },
            )
            | Output::CloseAgent(id) => {
                self.held_agents.insert(id.clone());
            }
            _ => {}
        }
        self.held.push(message);
    }

    fn hold_reply<T: Send + 'static>(&mut self, reply: oneshot::Sender<T>, value: T) {
        self.held_replies.push(Box::new(move || {
            let _ = reply.send(value);
        }));
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Call { input, who, reply } => {
                // Bounded first, so a million repeated ids cost one check.
                let result = crate::core::bound(input).and_then(|input| {
                    match who.map(|who| self.core.authorize(&who, &input)) {
                        Some(Err(denied)) => Err(denied),
                        _ => self.apply(input),
                    }
                });
                self.hold_reply(reply, result);
            }
            Command::Subscribe {
                who,
                mut info,
                events,
                reply,
            } => {
                let connection = self.connection();
                let jobs_framework = matches!(
                    self.frameworks
                        .get(&FrameworkId::from(info.framework_id.as_str())),
                    Some((_, Stream::Jobs(_)))
                );
                // Whoever subscribes a new framework owns it; a re-subscribed
                // one keeps its owner (the core ignores this field then).
                info.principal = who.name.clone();
                let input = Input::Subscribe {
                    connection,
                    framework: info,
                };
                // The stream must be known before the core's SUBSCRIBED and
                // first offers are routed, so route after registering it.
                let applied = self.core.authorize(&who, &input).and_then(|()| {
                    // The job service's frameworks have no stream to take
                    // over (said only to whoever may see them).
                    if jobs_framework {
                        return Err(CoreError::InvalidArgument(
                            "this framework runs jobs of the job service; it cannot be subscribed by a client"
                                .into(),
                        ));
                    }
                    self.apply(input)
                });
                let result = match applied {
                    Ok(Reply::Subscribed(id)) => {
                        if let Some((_, Stream::Client(old))) = self
                            .frameworks
                            .insert(id.clone(), (connection, Stream::Client(events)))
                        {
                            // The old stream learns why it ends, then ends
                            // when `old` is dropped here.
                            let _ = old.try_send(Ok(v1::Event {
                                kind: Some(EventKind::Error(v1::Error {
                                    message: format!(
                                        "framework {id} re-subscribed on another stream; this one is closed"
                                    ),
                                })),
                            }));
                        }
                        Ok((id, connection))
                    }
                    Ok(other) => unreachable!("subscribe replied {other:?}"),
                    Err(e) => Err(e),
                };
                self.hold_reply(reply, result);
            }
            Command::FrameworkGone {
                framework,
                connection,
            } => {
                if self
                    .frameworks
                    .get(&framework)
                    .is_some_and(|(c, _)| *c == connection)
                {
                    self.frameworks.remove(&framework);
                }
                self.notify(Input::FrameworkDisconnected {
                    framework,
                    connection,
                });
            }
            Command::AttachAgent {
                register,
                messages,
                reply,
            } => {
                let connection = self.connection();
                let result = match self.apply(Input::AgentRegister {
                    connection,
                    register,
                }) {
                    Ok(Reply::Registered(agent)) => {
                        self.agents.insert(agent.clone(), (connection, messages));
                        Ok(Attached {
                            agent,
                            connection,
                            adoptions: {
                                let adoptions = self.core.take_adoptions();
                                self.metrics.adoptions(&adoptions);
                                adoptions
                            },
                        })
                    }
                    Ok(other) => unreachable!("register replied {other:?}"),
                    Err(e) => Err(e),
                };
                self.hold_reply(reply, result);
            }
            Command::FromAgent { agent, message } => self.agent_message(agent, message),
            Command::AgentGone { agent, connection } => {
                if self
                    .agents
                    .get(&agent)
                    .is_some_and(|(c, _)| *c == connection)
                {
                    self.agents.remove(&agent);
                }
                self.notify(Input::AgentDisconnected { agent, connection });
            }
            Command::ReadSandbox {
                who,
                request,
                reply,
            } => self.read_sandbox(who, request, reply),
            Command::Query(query) => query(&self.core, &self.metrics),
            Command::Persist { writes, reply } => {
                self.writes.extend(writes);
                self.hold_reply(reply, ());
            }
            Command::Jobs(call) => self.with_driver(|driver, actor| driver.call(call, actor)),
        }
    }

    fn agent_message(&mut self, agent: AgentId, message: v1::agent_message::Kind) {
        use v1::agent_message::Kind;
        match message {
            Kind::Heartbeat(_) => {
                self.notify(Input::AgentHeartbeat { agent });
            }
            Kind::Updates(updates) => {
                self.notify(Input::AgentUpdates {
                    agent,
                    statuses: updates.statuses,
                    unsynced: updates.unsynced,
                });
            }
            Kind::Synced(mark) => {
                if mark.sync_micros > 0 {
                    let took = Duration::from_micros(mark.sync_micros);
                    self.metrics.checkpoint_sync.observe(took);
                }
                self.notify(Input::AgentSynced { agent, mark });
            }
            Kind::SandboxReadReply(reply) => {
                if let Some(waiter) = self.sandbox_reads.remove(&reply.request_id) {
                    let _ = waiter.send(Ok(reply));
                }
            }
            Kind::Register(_) => {
                tracing::warn!(%agent, "agent sent register twice on one stream; ignored");
            }
        }
    }

    fn read_sandbox(
        &mut self,
        who: Principal,
        request: v1::ReadSandboxRequest,
        reply: oneshot::Sender<Result<v1::SandboxReadReply, Status>>,
    ) {
        // The core checks the read and numbers it; the agent's answer
        // comes back here under that number.
        let (agent, read) = match self.apply(Input::ReadSandbox { who, request }) {
            Ok(Reply::SandboxRead { agent, read }) => (agent, read),
            Ok(other) => unreachable!("a sandbox read answered {other:?}"),
            Err(refused) => {
                let _ = reply.send(Err(status_of(refused)));
                return;
            }
        };
        let Some((_, sender)) = self.agents.get(&agent) else {
            let _ = reply.send(Err(Status::unavailable(format!(
                "agent {agent} of task {} is not connected",
                read.task_id
            ))));
            return;
        };
        let request_id = read.request_id;
        let message = v1::MasterMessage {
            kind: Some(AgentKind::SandboxRead(read)),
        };
        // Not through the turn's delivery, which cuts a full stream: a
        // read must never cost an agent its stream.
        if sender.try_send(Ok(message)).is_err() {
            let _ = reply.send(Err(Status::unavailable(
                "the agent's stream is full or closed",
            )));
            return;
        }
        self.sandbox_reads.retain(|_, waiter| !waiter.is_closed());
        self.sandbox_reads.insert(request_id, reply);
    }

    /// An input nobody waits on: a refusal is only worth a log line.
    fn notify(&mut self, input: Input) {
        if let Err(e) = self.apply(input) {
            tracing::warn!("{e}");
        }
    }

    fn connection(&mut self) -> ConnectionId {
        self.next_connection += 1;
        self.next_connection
    }

    /// A heartbeat on every framework stream, except those whose first
    /// events (SUBSCRIBED, or an ERROR and the end) still wait for their
    /// commit: a heartbeat must not overtake them, and the next one comes
    /// soon enough.
    fn heartbeat(&mut self) {
        let heartbeat = v1::Event {
            kind: Some(EventKind::Heartbeat(v1::Heartbeat {})),
        };
        let held = |id: &FrameworkId| {
            self.held_streams.contains(id)
                || self
                    .committing
                    .as_ref()
                    .is_some_and(|c| c.held_streams.contains(id))
        };
        let ids: Vec<FrameworkId> = self
            .frameworks
            .iter()
            .filter(|(id, (_, stream))| matches!(stream, Stream::Client(_)) && !held(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.send_event(&id, heartbeat.clone());
        }
    }

    /// Delivers the core's outputs to their streams. A stream that cannot
    /// take more is cut off and the core told (by `release`), as if it had
    /// dropped.
    fn deliver(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Framework(id, event) => {
                    self.metrics.observe_event(&event, &self.core);
                    self.send_event(&id, event);
                }
                Output::Agent(id, message) => {
                    if let Some((connection, sender)) = self.agents.get(&id)
                        && sender.try_send(Ok(message)).is_err()
                    {
                        tracing::warn!(agent = %id, "agent stream full or closed; dropping it");
                        self.dropped.push(Input::AgentDisconnected {
                            agent: id.clone(),
                            connection: *connection,
                        });
                        self.agents.remove(&id);
                    }
                }
                Output::CloseFramework(id) => {
                    self.frameworks.remove(&id);
                }
                Output::CloseAgent(id) => {
                    if let Some((_, sender)) = self.agents.remove(&id) {
                        let _ = sender.try_send(Err(Status::not_found(format!(
                            "agent {id} was removed: re-register"
                        ))));
                    }
                }
            }
        }
    }

    fn send_event(&mut self, id: &FrameworkId, event: v1::Event) {
        let sent = match self.frameworks.get(id) {
            Some((_, Stream::Jobs(owner))) => {
                self.job_events.push((owner.clone(), event));
                return;
            }
            Some((connection, Stream::Client(sender))) => {
                sender.try_send(Ok(event)).map_err(|why| (*connection, why))
            }
            None => return,
        };
        if let Err((connection, why)) = sent {
            tracing::warn!(framework = %id, "framework stream closed: {why}");
            self.metrics.stream_shed();
            self.dropped.push(Input::FrameworkDisconnected {
                framework: id.clone(),
                connection,
            });
            self.frameworks.remove(id);
        }
    }
}

mod jobs;
#[cfg(test)]
mod tests;
