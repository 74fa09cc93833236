//! Test support: a real master in-process, a *scripted agent* that speaks
//! the real `AgentLink.Attach` protocol, and a TCP proxy that can cut or
//! stall a connection.
//!
//! The scripted agent is not the wasmos agent: it runs no wasm. It is a
//! protocol peer that registers with resources, heartbeats, answers
//! `RunTasks` with STARTING, RUNNING and then what its script says (FINISHED,
//! FAILED with an exit code, or nothing until killed or released), answers
//! `KillTasks` with KILLED, keeps every update until the master forwards its
//! acknowledgement, and resends unacknowledged updates, as the protocol asks
//! of agents. Updates caused by one master message go in one
//! `StatusUpdates` message per state, as a batching agent would send them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use wasmos_master::server::{Master, MasterConfig};
use wasmos_sdk::proto as v1;
use wasmos_sdk::proto::agent_link_client::AgentLinkClient;
use wasmos_sdk::proto::agent_message::Kind as AgentKind;
use wasmos_sdk::proto::master_message::Kind as MasterKind;

/// The guest every test runs (as text: the SDK compiles it).
pub const HELLO_WAT: &str = include_str!("../../../examples/wat/hello.wat");

/// A master on 127.0.0.1 with a temporary work directory and fast timers:
/// allocation every 50 ms, framework and agent heartbeats every 200 ms,
/// agents lost after 1 s of silence.
pub struct TestMaster {
    pub master: Master,
    pub addr: SocketAddr,
    pub url: String,
    _dir: tempfile::TempDir,
}

pub async fn start_master() -> TestMaster {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = MasterConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.core.agent_heartbeat_interval = Duration::from_millis(200);
    config.transport = wasmos_master::server::Transport::Insecure;
    config.core.agent_timeout = Duration::from_millis(1000);
    config.actor.min_tick_interval = Duration::from_millis(50);
    config.core.framework_heartbeat_interval = Duration::from_millis(200);
    let master = Master::start(config).await.expect("master starts");
    let addr = master.grpc_addr();
    TestMaster {
        master,
        addr,
        url: format!("http://{addr}"),
        _dir: dir,
    }
}

/// What the scripted agent does with a task after RUNNING.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Script {
    /// FINISHED, exit code 0.
    Finish,
    /// FAILED with REASON_EXIT_NONZERO and this exit code.
    Fail(i32),
    /// Stays RUNNING until killed or [`ScriptedAgent::finish_all`].
    Hang,
}

type ScriptFn = Arc<dyn Fn(&v1::TaskSpec) -> Script + Send + Sync>;

struct State {
    id: String,
    out: Mutex<Option<mpsc::Sender<v1::AgentMessage>>>,
    script: ScriptFn,
    /// Hanging tasks: task id -> framework id.
    hanging: Mutex<HashMap<String, String>>,
    /// Every task id ever launched here.
    launched: Mutex<Vec<String>>,
    unacked: Mutex<HashMap<(String, Vec<u8>), v1::TaskStatus>>,
    resent: AtomicU64,
    acked: AtomicU64,
}

/// A scripted agent attached to a master. See the module docs.
pub struct ScriptedAgent {
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl State {
    fn status(
        &self,
        task_id: &str,
        framework_id: &str,
        state: v1::TaskState,
        reason: v1::Reason,
        exit_code: Option<i32>,
    ) -> v1::TaskStatus {
        let status = v1::TaskStatus {
            task_id: task_id.to_string(),
            framework_id: framework_id.to_string(),
            agent_id: self.id.clone(),
            state: state as i32,
            reason: reason as i32,
            message: format!("scripted agent: {state:?}"),
            exit_code,
            usage: exit_code.map(|_| v1::TaskUsage {
                fuel_consumed: 1234,
                wall_time_ms: 1,
                stdout_bytes: 6,
                ..Default::default()
            }),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            timestamp_ms: now_ms(),
            source: v1::StatusSource::Agent as i32,
            ..Default::default()
        };
        self.unacked.lock().unwrap().insert(
            (status.task_id.clone(), status.uuid.clone()),
            status.clone(),
        );
        status
    }

    async fn send(&self, statuses: Vec<v1::TaskStatus>) {
        if statuses.is_empty() {
            return;
        }
        let out = self.out.lock().unwrap().clone();
        if let Some(out) = out {
            let _ = out
                .send(v1::AgentMessage {
                    kind: Some(AgentKind::Updates(v1::StatusUpdates {
                        statuses,
                        unsynced: None,
                    })),
                })
                .await;
        }
    }

    async fn run_tasks(&self, launches: Vec<v1::TaskLaunch>) {
        let mut starting = Vec::new();
        let mut running = Vec::new();
        let mut ended = Vec::new();
        for launch in launches {
            let spec = launch.spec.unwrap_or_default();
            let fw = launch.framework_id;
            self.launched.lock().unwrap().push(spec.task_id.clone());
            use v1::{Reason as R, TaskState as S};
            starting.push(self.status(&spec.task_id, &fw, S::Starting, R::Unspecified, None));
            running.push(self.status(&spec.task_id, &fw, S::Running, R::Unspecified, None));
            match (self.script)(&spec) {
                Script::Finish => ended.push(self.status(
                    &spec.task_id,
                    &fw,
                    S::Finished,
                    R::Unspecified,
                    Some(0),
                )),
                Script::Fail(code) => ended.push(self.status(
                    &spec.task_id,
                    &fw,
                    S::Failed,
                    R::ExitNonzero,
                    Some(code),
                )),
                Script::Hang => {
                    self.hanging
                        .lock()
                        .unwrap()
                        .insert(spec.task_id.clone(), fw);
                }
            }
        }
        self.send(starting).await;
        self.send(running).await;
        self.send(ended).await;
    }

    async fn kill(&self, ids: Vec<String>) {
        let mut killed = Vec::new();
        for id in ids {
            let fw = self.hanging.lock().unwrap().remove(&id);
            if let Some(fw) = fw {
                killed.push(self.status(&id, &fw, v1::TaskState::Killed, v1::Reason::Killed, None));
            }
        }
        self.send(killed).await;
    }
}

impl ScriptedAgent {
    /// Registers with `cpus` cores and `mem` bytes (and as much disk).
    pub async fn start(
        master: SocketAddr,
        cpus: f64,
        mem: u64,
        script: impl Fn(&v1::TaskSpec) -> Script + Send + Sync + 'static,
    ) -> ScriptedAgent {
        Self::start_with(master, cpus, mem, &[], script).await
    }

    /// [`start`](Self::start), reporting `attributes` (`("arch",
    /// "aarch64")`: a scripted agent claims whatever a test needs).
    pub async fn start_with(
        master: SocketAddr,
        cpus: f64,
        mem: u64,
        attributes: &[(&str, &str)],
        script: impl Fn(&v1::TaskSpec) -> Script + Send + Sync + 'static,
    ) -> ScriptedAgent {
        let mut client = AgentLinkClient::connect(format!("http://{master}"))
            .await
            .expect("agent connects");
        let (tx, rx) = mpsc::channel(4096);
        tx.send(v1::AgentMessage {
            kind: Some(AgentKind::Register(v1::Register {
                agent: Some(v1::AgentInfo {
                    hostname: "scripted".into(),
                    resources: Some(v1::Resources {
                        cpus,
                        mem,
                        disk: mem,
                    }),
                    version: "scripted-test-agent".into(),
                    attributes: attributes
                        .iter()
                        .map(|&(key, value)| v1::Attribute {
                            key: key.into(),
                            value: value.into(),
                        })
                        .collect(),
                    ..Default::default()
                }),
                tasks: Vec::new(),
            })),
        })
        .await
        .unwrap();
        let mut inbound = client
            .attach(ReceiverStream::new(rx))
            .await
            .expect("attach")
            .into_inner();
        let Some(v1::MasterMessage {
            kind: Some(MasterKind::Registered(registered)),
        }) = inbound.message().await.expect("registered")
        else {
            panic!("the master's first message was not `registered`");
        };
        let state = Arc::new(State {
            id: registered.agent_id.clone(),
            out: Mutex::new(Some(tx.clone())),
            script: Arc::new(script),
            hanging: Mutex::new(HashMap::new()),
            launched: Mutex::new(Vec::new()),
            unacked: Mutex::new(HashMap::new()),
            resent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
        });
        let interval = Duration::from_millis(registered.heartbeat_interval_ms.max(10));
        let heartbeat = {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    let beat = v1::AgentMessage {
                        kind: Some(AgentKind::Heartbeat(v1::AgentHeartbeat {})),
                    };
                    if tx.send(beat).await.is_err() {
                        return;
                    }
                }
            })
        };
        let resender = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let statuses: Vec<v1::TaskStatus> =
                        state.unacked.lock().unwrap().values().cloned().collect();
                    state
                        .resent
                        .fetch_add(statuses.len() as u64, Ordering::Relaxed);
                    state.send(statuses).await;
                }
            })
        };
        let reader = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok(Some(message)) = inbound.message().await {
                    match message.kind {
                        Some(MasterKind::RunTasks(run)) => state.run_tasks(run.tasks).await,
                        Some(MasterKind::KillTasks(kill)) => state.kill(kill.task_ids).await,
                        Some(MasterKind::AckUpdates(acks)) => {
                            let mut unacked = state.unacked.lock().unwrap();
                            for ack in acks.acks {
                                if unacked.remove(&(ack.task_id, ack.uuid)).is_some() {
                                    state.acked.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            })
        };
        ScriptedAgent {
            state,
            tasks: vec![heartbeat, resender, reader],
        }
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Task ids launched here so far.
    pub fn launched(&self) -> Vec<String> {
        self.state.launched.lock().unwrap().clone()
    }

    /// Tasks RUNNING here (scripted to hang).
    pub fn hanging(&self) -> usize {
        self.state.hanging.lock().unwrap().len()
    }

    /// Updates not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.state.unacked.lock().unwrap().len()
    }

    /// Updates sent again because they were not acknowledged in time.
    pub fn resent(&self) -> u64 {
        self.state.resent.load(Ordering::Relaxed)
    }

    /// Acknowledgements received.
    pub fn acked(&self) -> u64 {
        self.state.acked.load(Ordering::Relaxed)
    }

    /// Lets every hanging task finish (exit 0), in one message.
    pub async fn finish_all(&self) {
        let hanging: Vec<(String, String)> = self.state.hanging.lock().unwrap().drain().collect();
        let statuses = hanging
            .iter()
            .map(|(id, fw)| {
                self.state.status(
                    id,
                    fw,
                    v1::TaskState::Finished,
                    v1::Reason::Unspecified,
                    Some(0),
                )
            })
            .collect();
        self.state.send(statuses).await;
    }

    /// Vanishes: closes the stream and stops heartbeating, as a crashed
    /// host would. The master declares it lost after its agent timeout.
    pub fn disconnect(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.state.out.lock().unwrap().take();
    }
}

impl Drop for ScriptedAgent {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// A TCP proxy on 127.0.0.1 in front of an upstream address, to break the
/// network between a framework and the master.
pub struct Proxy {
    pub addr: SocketAddr,
    paused: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    paused: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while paused.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let (paused, connections) = (paused.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let mut list = connections.lock().unwrap();
                    list.push(tokio::spawn(pipe(cr, sw, paused.clone())));
                    list.push(tokio::spawn(pipe(sr, cw, paused.clone())));
                }
            })
        };
        Proxy {
            addr,
            paused,
            connections,
            acceptor,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every proxied connection (new ones are still accepted).
    pub fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Stops (or resumes) forwarding bytes without closing anything: a
    /// silent network.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
