//! The agent's side of its executor: [`start`] gives the link a command
//! sender and a stream of [`Event`]s, whether the executor is a process of
//! its own ([`Mode::Process`], found on its socket or started, and started
//! again when it dies) or runs in the agent's process ([`Mode::InProcess`]:
//! `wasmos local`, benchmarks, and platforms without Unix sockets).

use std::path::PathBuf;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use wasmos_proto::v1;
use wasmos_proto::v1::from_executor::Kind as Out;

use super::service::{Input, Service, ServiceConfig};

/// Where the executor runs.
#[derive(Clone, Debug)]
pub enum Mode {
    /// In the agent's own process: its tasks end with it.
    InProcess,
    /// `<program> executor …` in a session of its own, reached on
    /// `<work-dir>/executor.sock`.
    #[cfg(unix)]
    Process { program: PathBuf },
}

impl Mode {
    /// The executor process where the platform has Unix sockets, else in
    /// process: the one place that decides it.
    pub fn for_platform(program: PathBuf) -> Mode {
        #[cfg(unix)]
        return Mode::Process { program };
        #[cfg(not(unix))]
        {
            let _ = program;
            Mode::InProcess
        }
    }
}

/// What the agent hears from its executor.
#[derive(Debug)]
pub enum Event {
    /// Attached (first, and again after each new executor): every task and
    /// unacknowledged update it holds.
    Attached(v1::ExecutorWelcome),
    /// A message of the attached executor.
    Message(Out),
    /// The executor went away; a new one is being started.
    Detached(String),
}

/// Sends commands to the executor. Commands sent while none is attached
/// wait for the next one.
#[derive(Clone)]
pub struct ExecutorHandle {
    commands: UnboundedSender<v1::ToExecutor>,
}

impl ExecutorHandle {
    /// Sends `kind` to the executor.
    pub fn send(&self, kind: v1::to_executor::Kind) {
        let _ = self.commands.send(v1::ToExecutor { kind: Some(kind) });
    }
}

/// Starts (or finds) the executor.
pub fn start(
    mode: Mode,
    config: ServiceConfig,
    agent_id: String,
) -> anyhow::Result<(ExecutorHandle, UnboundedReceiver<Event>)> {
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let hello = v1::ExecutorHello {
        protocol: Some(config.protocol.clone()),
        agent_id,
    };
    match mode {
        Mode::InProcess => in_process(config, hello, commands_rx, events_tx)?,
        #[cfg(unix)]
        Mode::Process { program } => {
            tokio::spawn(super::supervise::supervise(
                program,
                config,
                hello,
                commands_rx,
                events_tx,
            ));
        }
    }
    Ok((ExecutorHandle { commands }, events))
}

/// The service in this process, its messages passed as they are.
fn in_process(
    config: ServiceConfig,
    hello: v1::ExecutorHello,
    mut commands: UnboundedReceiver<v1::ToExecutor>,
    events: UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let service = Service::start(ServiceConfig {
        orphan_timeout: None,
        ..config
    })?;
    let (inputs, inputs_rx) = mpsc::unbounded_channel();
    let (outlet, mut outgoing) = mpsc::unbounded_channel();
    let _ = inputs.send(Input::Connected {
        id: 1,
        hello,
        outlet,
    });
    tokio::spawn(service.run(inputs_rx));
    tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            if inputs.send(Input::Message(1, command)).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let event = match message.kind {
                Some(Out::Welcome(welcome)) => Event::Attached(welcome),
                Some(kind) => Event::Message(kind),
                None => continue,
            };
            if events.send(event).is_err() {
                return;
            }
        }
    });
    Ok(())
}
