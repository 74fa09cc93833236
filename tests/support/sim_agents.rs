//! Simulated agents: `AgentLink` streams opened from the test (or bench)
//! process as real agents open them, for what would need hundreds of agent
//! processes. Attach-only agents (`attach_all`) need an insecure master
//! (they name their own ids); working agents (`spawn_worker`) join a TLS
//! master through a [`Link`]. Self-contained, so benches include it too
//! (`#[path]`).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use wasmos_agent::link::Backoff;
use wasmos_proto::v1;
use wasmos_proto::v1::agent_link_client::AgentLinkClient;
use wasmos_proto::v1::agent_message::Kind as ToMaster;

/// Connections the simulated agents share (streams spread over them), at
/// least; and the most streams one carries (a master takes 1,024).
const CONNECTIONS: usize = 8;
const STREAMS_PER_CONNECTION: usize = 500;

/// How working agents reach a TLS master, as real agents reach it: each
/// agent joins with the join token (a key of its own, the CA's certificate
/// for it) and holds a connection of its own over mTLS, from a loopback
/// source address of its own among `127.0.0.2`.., so that no address comes
/// near the master's cap of connections per address.
#[derive(Clone)]
pub struct Link(std::sync::Arc<TlsLink>);

/// What agents need to join a TLS master.
pub struct TlsLink {
    /// `https://127.0.0.1:<port>`.
    url: String,
    ca_pem: String,
    /// The join token (the secret part of a join string).
    token: String,
    /// Source addresses the agents are dealt to, from 127.0.0.2 up.
    sources: u8,
    /// Joins in flight at once: each is a handshake without a client
    /// certificate, which a master sheds first when it has many.
    joining: tokio::sync::Semaphore,
}

impl Link {
    /// Agents that join the TLS master at `url` (`https://…`) trusting
    /// `ca_pem`, with the join string `join` (`wasmos token create
    /// --agent`, with uses to spare: a join whose answer is lost is tried
    /// again); from `sources` source addresses (at most 253).
    pub fn tls(url: &str, ca_pem: &str, join: &str, sources: u8) -> Link {
        let token = wasmos_tls::JoinString::parse(join)
            .expect("a join string")
            .token
            .to_string();
        Link(std::sync::Arc::new(TlsLink {
            url: url.to_string(),
            ca_pem: ca_pem.to_string(),
            token,
            // 127.0.0.2 up to 127.0.0.254.
            sources: sources.clamp(1, 253),
            joining: tokio::sync::Semaphore::new(64),
        }))
    }

    /// Agent `i`'s id and its channel to the master, once it has joined.
    async fn connect(&self, i: usize) -> Result<(String, Channel), String> {
        self.0.join(i).await
    }
}

impl TlsLink {
    async fn join(&self, i: usize) -> Result<(String, Channel), String> {
        use wasmos_tls::{AgentKey, ClientTls};
        let source = std::net::IpAddr::from([127, 0, 0, 2 + (i % self.sources as usize) as u8]);
        let endpoint = |tls: ClientTls| {
            tonic::transport::Endpoint::from_shared(self.url.clone())
                .map_err(|e| e.to_string())?
                .local_address(Some(source))
                .connect_timeout(Duration::from_secs(10))
                .tls_config(tls.tonic())
                .map_err(|e| e.to_string())
        };
        let key = AgentKey::generate().map_err(|e| e.to_string())?;
        let joined = {
            let _turn = self.joining.acquire().await.expect("never closed");
            let channel = endpoint(ClientTls::trusting(self.ca_pem.clone()))?
                .connect()
                .await
                .map_err(|e| format!("connect: {e}"))?;
            AgentLinkClient::new(channel)
                .join(v1::JoinRequest {
                    token: self.token.clone(),
                    csr_pem: key.csr_pem().map_err(|e| e.to_string())?,
                    hostname: format!("sim-{i}"),
                })
                .await
                .map_err(|s| format!("join: {}", s.message()))?
                .into_inner()
        };
        let tls = ClientTls {
            ca_pem: self.ca_pem.clone(),
            identity: Some((joined.cert_pem, key.key_pem())),
        };
        Ok((joined.agent_id, endpoint(tls)?.connect_lazy()))
    }
}

/// An attached agent: what keeps its stream open.
pub struct Attached {
    _tx: mpsc::Sender<v1::AgentMessage>,
    _inbound: tonic::Streaming<v1::MasterMessage>,
}

/// Attaches agent `id` over `channel`; Ok once the master sent its first
/// message (`Registered`).
async fn attach(channel: Channel, id: String) -> Result<Attached, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    let info = v1::AgentInfo {
        agent_id: id.clone(),
        hostname: id,
        resources: Some(v1::Resources {
            cpus: 2.0,
            mem: 1 << 30,
            disk: 1 << 30,
        }),
        ..Default::default()
    };
    tx.send(v1::AgentMessage {
        kind: Some(ToMaster::Register(v1::Register {
            agent: Some(info),
            tasks: vec![],
        })),
    })
    .await
    .expect("a fresh channel");
    let mut inbound = AgentLinkClient::new(channel)
        .attach(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match inbound.next().await {
        Some(Ok(_)) => Ok(Attached {
            _tx: tx,
            _inbound: inbound,
        }),
        Some(Err(status)) => Err(status),
        None => Err(tonic::Status::unavailable("the stream ended")),
    }
}

/// Attaches agents `sim-0` .. `sim-<n-1>` at once to the master at `url`
/// (`http://…`), each retrying every 20 ms (for 2 minutes at most); when
/// each got in, and their streams.
pub async fn attach_all(url: &str, n: usize) -> (Vec<Instant>, Vec<Attached>) {
    let channels = channels(url, n);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match attach(channel.clone(), format!("sim-{i}")).await {
                        Ok(attached) => return (Instant::now(), attached),
                        Err(e) if Instant::now() > deadline => {
                            panic!("agent sim-{i} could not attach: {e}")
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    let mut times = Vec::with_capacity(n);
    let mut attached = Vec::with_capacity(n);
    for task in tasks {
        let (at, a) = task.await.expect("an agent task");
        times.push(at);
        attached.push(a);
    }
    (times, attached)
}

/// What simulated working agents have done, counted across all of them.
#[derive(Default)]
pub struct Counters {
    /// Registrations the master answered (first ones and re-registrations).
    pub registered: std::sync::atomic::AtomicU64,
    /// Tasks given to run.
    pub launched: std::sync::atomic::AtomicU64,
    /// Ends reported (resends not counted).
    pub finished: std::sync::atomic::AtomicU64,
}

/// A task a working agent holds: running until `ends` (FINISHED, or
/// KILLED once the master asked), then reported and kept until the master
/// acknowledges its end.
struct Held {
    launch: v1::TaskLaunch,
    ends: tokio::time::Instant,
    killed: bool,
    reported: Option<v1::TaskStatus>,
}

/// Starts agent `i` (under the id it joined with) that runs what
/// it is given as a real agent would, without wasm: each task "runs" for
/// `run_for`, then reports
/// FINISHED (exit 0), or KILLED at once when the master kills it, and
/// resends the end on every reconnect until acknowledged.
/// It heartbeats at the interval the master asks and re-registers with
/// the tasks it holds whenever its stream ends (a master restart), backing
/// off as a real agent does. Runs until the runtime stops.
pub fn spawn_worker(
    link: Link,
    i: usize,
    cpus: f64,
    run_for: Duration,
    counters: std::sync::Arc<Counters>,
) -> tokio::task::JoinHandle<()> {
    use std::collections::HashMap;
    use std::sync::atomic::Ordering::Relaxed;
    use v1::master_message::Kind as FromMaster;

    tokio::spawn(async move {
        // As a real agent backs off: 100 ms, doubled per failure up to 5 s,
        // each wait drawn from the upper half of its step, from the start
        // again once registered.
        let mut backoff = Backoff::default();
        let (id, channel) = loop {
            match link.connect(i).await {
                Ok(connected) => break connected,
                Err(_) => {
                    tokio::time::sleep(backoff.wait()).await;
                }
            }
        };
        let mut held: HashMap<String, Held> = HashMap::new();
        let mut next_uuid = (i as u64) << 32;
        loop {
            let (tx, rx) = mpsc::channel(64);
            let tasks = held
                .values()
                .map(|h| v1::RunningTask {
                    task_id: h
                        .launch
                        .spec
                        .as_ref()
                        .map(|s| s.task_id.clone())
                        .unwrap_or_default(),
                    framework_id: h.launch.framework_id.clone(),
                    state: h
                        .reported
                        .as_ref()
                        .map_or(v1::TaskState::Running as i32, |s| s.state),
                    spec: h.launch.spec.clone(),
                    launch_mac: h.launch.mac.clone(),
                    launch_epoch: h.launch.master_epoch,
                    ..Default::default()
                })
                .collect();
            let register = v1::Register {
                agent: Some(v1::AgentInfo {
                    agent_id: id.clone(),
                    hostname: id.clone(),
                    resources: Some(v1::Resources {
                        cpus,
                        mem: 4 << 30,
                        disk: 1 << 30,
                    }),
                    ..Default::default()
                }),
                tasks,
            };
            let _ = tx
                .send(v1::AgentMessage {
                    kind: Some(ToMaster::Register(register)),
                })
                .await;
            let inbound = AgentLinkClient::new(channel.clone())
                .attach(ReceiverStream::new(rx))
                .await;
            let Ok(inbound) = inbound else {
                tokio::time::sleep(backoff.wait()).await;
                continue;
            };
            let mut inbound = inbound.into_inner();
            let interval = match inbound.next().await {
                Some(Ok(v1::MasterMessage {
                    kind: Some(FromMaster::Registered(r)),
                })) => {
                    for killed in &r.kill_task_ids {
                        held.remove(killed);
                    }
                    Duration::from_millis(r.heartbeat_interval_ms.max(100))
                }
                _ => {
                    tokio::time::sleep(backoff.wait()).await;
                    continue;
                }
            };
            counters.registered.fetch_add(1, Relaxed);
            backoff.reset();
            // Ends not yet acknowledged go again on the new stream.
            let resend: Vec<v1::TaskStatus> =
                held.values().filter_map(|h| h.reported.clone()).collect();
            if !resend.is_empty() {
                let _ = tx
                    .send(v1::AgentMessage {
                        kind: Some(ToMaster::Updates(v1::StatusUpdates {
                            statuses: resend,
                            unsynced: None,
                        })),
                    })
                    .await;
            }
            let mut heartbeat = tokio::time::interval(interval);
            loop {
                let next_end = held
                    .values()
                    .filter(|h| h.reported.is_none())
                    .map(|h| h.ends)
                    .min();
                let wake = next_end
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
                tokio::select! {
                    message = inbound.next() => match message {
                        Some(Ok(v1::MasterMessage { kind: Some(kind) })) => match kind {
                            FromMaster::RunTasks(run) => {
                                counters.launched.fetch_add(run.tasks.len() as u64, Relaxed);
                                let ends = tokio::time::Instant::now() + run_for;
                                for launch in run.tasks {
                                    let task = launch.spec.as_ref().map(|s| s.task_id.clone()).unwrap_or_default();
                                    held.insert(task, Held { launch, ends, killed: false, reported: None });
                                }
                            }
                            FromMaster::KillTasks(kill) => {
                                let now = tokio::time::Instant::now();
                                for task in kill.task_ids {
                                    if let Some(h) = held.get_mut(&task).filter(|h| h.reported.is_none()) {
                                        h.killed = true;
                                        h.ends = now;
                                    }
                                }
                            }
                            FromMaster::AckUpdates(acks) => {
                                for ack in acks.acks {
                                    let acked = held.get(&ack.task_id).and_then(|h| h.reported.as_ref()).is_some_and(|s| s.uuid == ack.uuid);
                                    if acked {
                                        held.remove(&ack.task_id);
                                    }
                                }
                            }
                            _ => {}
                        },
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    _ = heartbeat.tick() => {
                        let beat = v1::AgentMessage { kind: Some(ToMaster::Heartbeat(v1::AgentHeartbeat {})) };
                        if tx.send(beat).await.is_err() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(wake) => {
                        let now = tokio::time::Instant::now();
                        let mut statuses = Vec::new();
                        for h in held.values_mut().filter(|h| h.reported.is_none() && h.ends <= now) {
                            next_uuid += 1;
                            let status = v1::TaskStatus {
                                task_id: h.launch.spec.as_ref().map(|s| s.task_id.clone()).unwrap_or_default(),
                                framework_id: h.launch.framework_id.clone(),
                                agent_id: id.clone(),
                                state: if h.killed { v1::TaskState::Killed } else { v1::TaskState::Finished } as i32,
                                exit_code: (!h.killed).then_some(0),
                                uuid: next_uuid.to_be_bytes().to_vec(),
                                source: v1::StatusSource::Agent as i32,
                                ..Default::default()
                            };
                            h.reported = Some(status.clone());
                            statuses.push(status);
                        }
                        counters.finished.fetch_add(statuses.len() as u64, Relaxed);
                        let update = v1::AgentMessage {
                            kind: Some(ToMaster::Updates(v1::StatusUpdates { statuses, unsynced: None })),
                        };
                        if tx.send(update).await.is_err() {
                            break;
                        }
                    }
                }
            }
            tokio::time::sleep(backoff.wait()).await;
        }
    })
}

/// Lazy channels to the master at `url` for `agents` agents to share.
pub fn channels(url: &str, agents: usize) -> Vec<Channel> {
    (0..CONNECTIONS.max(agents.div_ceil(STREAMS_PER_CONNECTION)))
        .map(|_| {
            tonic::transport::Endpoint::from_shared(url.to_string())
                .unwrap()
                .connect_lazy()
        })
        .collect()
}
