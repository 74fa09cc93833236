//! The one task that owns the core.
//!
//! gRPC handlers send [`Command`]s; the actor feeds them to the core with the
//! current time, routes the core's outputs to the right streams, ticks the
//! core every allocation interval and sends framework heartbeats. Nothing
//! else touches the core, so there are no locks around it.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;
use wasmos_proto::v1::master_message::Kind as AgentKind;

use super::metrics::Metrics;
use crate::core::{ConnectionId, Core, CoreError, Input, Output, Reply};
use crate::ids::{AgentId, FrameworkId};
use crate::time::Time;

/// Events for one framework's stream.
pub type EventSender = mpsc::Sender<Result<v1::Event, Status>>;
/// Messages for one agent's stream.
pub type AgentSender = mpsc::Sender<Result<v1::MasterMessage, Status>>;

/// How many messages may wait for a slow stream before it is cut off (it
/// then re-subscribes and reconciles, losing nothing).
pub const STREAM_BUFFER: usize = 8192;

/// A read of the core, run inside the actor.
pub type Query = Box<dyn FnOnce(&Core, &Metrics) + Send>;

/// A request to the actor.
pub enum Command {
    /// Any core input, answered with the core's reply.
    Call {
        input: Input,
        reply: oneshot::Sender<Result<Reply, CoreError>>,
    },
    /// A framework's new event stream.
    Subscribe {
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
        reply: oneshot::Sender<Result<(AgentId, ConnectionId), CoreError>>,
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
        request: v1::ReadSandboxRequest,
        reply: oneshot::Sender<Result<v1::SandboxReadReply, Status>>,
    },
    /// Read the core (for Operator, `/state` and `/metrics`).
    Query(Query),
}

/// Timing of the actor.
#[derive(Clone, Debug)]
pub struct ActorConfig {
    /// How often the core expires things and runs a full allocation cycle.
    pub allocation_interval: Duration,
}

pub struct Actor {
    core: Core,
    config: ActorConfig,
    frameworks: HashMap<FrameworkId, (ConnectionId, EventSender)>,
    agents: HashMap<AgentId, (ConnectionId, AgentSender)>,
    sandbox_reads: HashMap<u64, oneshot::Sender<Result<v1::SandboxReadReply, Status>>>,
    next_connection: ConnectionId,
    next_request: u64,
    metrics: Metrics,
    /// Streams cut off while routing; the core hears of it after routing.
    dropped: Vec<Input>,
}

/// Wall-clock time as the core sees it: milliseconds since the Unix epoch.
pub fn now() -> Time {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Time(since.as_millis() as u64)
}

impl Actor {
    pub fn new(core: Core, config: ActorConfig) -> Actor {
        Actor {
            core,
            config,
            frameworks: HashMap::new(),
            agents: HashMap::new(),
            sandbox_reads: HashMap::new(),
            next_connection: 0,
            next_request: 0,
            metrics: Metrics::default(),
            dropped: Vec::new(),
        }
    }

    /// Runs until every command sender is dropped.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(self.config.allocation_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.core.config().framework_heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                _ = tick.tick() => {
                    let start = Instant::now();
                    self.notify(Input::Tick);
                    self.metrics.record_cycle(start.elapsed());
                }
                _ = heartbeat.tick() => self.heartbeat(),
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Call { input, reply } => {
                let result = self.input(input);
                let _ = reply.send(result);
            }
            Command::Subscribe {
                info,
                events,
                reply,
            } => {
                let connection = self.connection();
                // The stream must be known before the core's SUBSCRIBED and
                // first offers are routed, so route after registering it.
                let out = self.core.handle(
                    Input::Subscribe {
                        connection,
                        framework: info,
                    },
                    now(),
                );
                let result = match out.reply {
                    Ok(Reply::Subscribed(id)) => {
                        self.frameworks.insert(id.clone(), (connection, events));
                        Ok((id, connection))
                    }
                    Ok(other) => unreachable!("subscribe replied {other:?}"),
                    Err(e) => Err(e),
                };
                self.route(out.messages);
                let _ = reply.send(result);
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
                let out = self.core.handle(
                    Input::AgentRegister {
                        connection,
                        register,
                    },
                    now(),
                );
                let result = match out.reply {
                    Ok(Reply::Registered(id)) => {
                        self.agents.insert(id.clone(), (connection, messages));
                        Ok((id, connection))
                    }
                    Ok(other) => unreachable!("register replied {other:?}"),
                    Err(e) => Err(e),
                };
                self.route(out.messages);
                let _ = reply.send(result);
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
            Command::ReadSandbox { request, reply } => self.read_sandbox(request, reply),
            Command::Query(query) => query(&self.core, &self.metrics),
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
                });
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
        request: v1::ReadSandboxRequest,
        reply: oneshot::Sender<Result<v1::SandboxReadReply, Status>>,
    ) {
        let Some(task) = self.core.task(&request.task_id) else {
            let _ = reply.send(Err(Status::not_found(format!(
                "unknown task {}",
                request.task_id
            ))));
            return;
        };
        let Some((_, sender)) = self.agents.get(&task.agent) else {
            let _ = reply.send(Err(Status::unavailable(format!(
                "agent {} of task {} is not connected",
                task.agent, request.task_id
            ))));
            return;
        };
        self.sandbox_reads.retain(|_, waiter| !waiter.is_closed());
        self.next_request += 1;
        let message = v1::MasterMessage {
            kind: Some(AgentKind::SandboxRead(v1::SandboxRead {
                request_id: self.next_request,
                task_id: request.task_id,
                target: request.target,
                path: request.path,
                offset: request.offset,
                length: request.length,
            })),
        };
        if sender.try_send(Ok(message)).is_err() {
            let _ = reply.send(Err(Status::unavailable(
                "the agent's stream is full or closed",
            )));
            return;
        }
        self.sandbox_reads.insert(self.next_request, reply);
    }

    fn input(&mut self, input: Input) -> Result<Reply, CoreError> {
        let out = self.core.handle(input, now());
        self.route(out.messages);
        out.reply
    }

    /// An input nobody waits on: a refusal is only worth a log line.
    fn notify(&mut self, input: Input) {
        if let Err(e) = self.input(input) {
            tracing::warn!("{e}");
        }
    }

    fn connection(&mut self) -> ConnectionId {
        self.next_connection += 1;
        self.next_connection
    }

    fn heartbeat(&mut self) {
        let heartbeat = v1::Event {
            kind: Some(EventKind::Heartbeat(v1::Heartbeat {})),
        };
        let ids: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
        for id in ids {
            self.send_event(&id, heartbeat.clone());
        }
        self.route(Vec::new());
    }

    /// Delivers the core's outputs to their streams. A stream that cannot
    /// take more is cut off and the core told, as if it had dropped.
    fn route(&mut self, outputs: Vec<Output>) {
        self.deliver(outputs);
        while let Some(input) = self.dropped.pop() {
            let out = self.core.handle(input, now());
            self.deliver(out.messages);
        }
    }

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
        if let Some((connection, sender)) = self.frameworks.get(id)
            && sender.try_send(Ok(event)).is_err()
        {
            tracing::warn!(framework = %id, "framework stream full or closed; dropping it");
            self.dropped.push(Input::FrameworkDisconnected {
                framework: id.clone(),
                connection: *connection,
            });
            self.frameworks.remove(id);
        }
    }
}
