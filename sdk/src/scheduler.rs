//! A framework's session with the master: subscription, calls, events,
//! automatic acknowledgements and re-subscription.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::connect::Channel;
use tokio::sync::{Notify, mpsc};
use tonic::Streaming;
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind;
use wasmos_proto::v1::scheduler_client::SchedulerClient;

use crate::client::Client;
use crate::error::{Error, Result};

/// How long the first `Subscribe` may take before [`Client::subscribe`]
/// gives up.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Is `state` one a task never leaves (`FINISHED`, `FAILED`, `KILLED`,
/// `LOST`, `ERROR`)?
pub fn is_terminal(state: v1::TaskState) -> bool {
    state.is_terminal()
}

/// How a framework presents itself to the master, and how its session
/// behaves. Build with [`FrameworkConfig::new`] and the setters; every
/// setter documents its default.
#[derive(Clone, Debug)]
pub struct FrameworkConfig {
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) user: String,
    pub(crate) failover_timeout: Duration,
    pub(crate) auto_acknowledge: bool,
    pub(crate) min_heartbeat_timeout: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) demand: Option<v1::Demand>,
}

impl FrameworkConfig {
    /// A framework called `name` (shown to operators; need not be unique).
    pub fn new(name: impl Into<String>) -> FrameworkConfig {
        FrameworkConfig {
            name: name.into(),
            role: "default".into(),
            user: String::new(),
            failover_timeout: Duration::from_secs(60),
            auto_acknowledge: true,
            min_heartbeat_timeout: Duration::from_secs(15),
            max_backoff: Duration::from_secs(5),
            demand: None,
        }
    }

    /// What the framework waits to launch when it first subscribes:
    /// `tasks` tasks asking for `task` each. The master then sizes its
    /// offers by dominant resource fairness at task granularity, so
    /// frameworks of different task shapes share agents fairly, and counts
    /// one off for every task launched; raise it with
    /// [`Scheduler::set_demand`] or [`Scheduler::revive_with_demand`].
    /// Default: none (whole free agents are offered).
    pub fn demand(mut self, task: v1::Resources, tasks: u64) -> Self {
        self.demand = Some(v1::Demand {
            task: Some(task),
            tasks,
        });
        self
    }

    /// The role whose weight, quota and reservations apply to this
    /// framework. Lowercase letters, digits, `-`, `_`, `.`. Default
    /// `default`. A framework cannot change role when it re-subscribes.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    /// The user the framework acts for; informational. Default empty.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// How long the master keeps this framework's tasks running after its
    /// event stream drops, waiting for the session to re-subscribe. Longer
    /// survives longer outages; shorter frees the cluster sooner after a
    /// crash. Default 60 s; the master caps it.
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.failover_timeout = timeout;
        self
    }

    /// Whether the session acknowledges status updates by itself as they
    /// arrive (default `true`). Turn it off only to acknowledge after the
    /// update is safely processed (e.g. written to a database), with
    /// [`Scheduler::acknowledge`]: unacknowledged updates are sent again.
    pub fn auto_acknowledge(mut self, on: bool) -> Self {
        self.auto_acknowledge = on;
        self
    }

    /// The shortest silence after which the session declares its event
    /// stream dead and re-subscribes. The session waits three heartbeat
    /// intervals (as announced by the master, or as observed, whichever is
    /// longer) but never less than this. Default 15 s: generous, because a
    /// false alarm costs a re-subscription and a reconciliation.
    pub fn min_heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.min_heartbeat_timeout = timeout;
        self
    }

    /// The longest pause between re-subscription attempts (they start at
    /// 100 ms and double). Default 5 s.
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff.max(Duration::from_millis(10));
        self
    }

    fn info(&self, framework_id: &str) -> v1::FrameworkInfo {
        v1::FrameworkInfo {
            framework_id: framework_id.to_string(),
            name: self.name.clone(),
            role: self.role.clone(),
            failover_timeout_ms: self.failover_timeout.as_millis().max(1) as u64,
            user: self.user.clone(),
            principal: String::new(),
            // Only the first subscription declares it: a re-subscription
            // keeps what the master counted down since.
            demand: if framework_id.is_empty() {
                self.demand
            } else {
                None
            },
        }
    }
}

/// What happens to a framework, as the session reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// New offers. Use them with [`Scheduler::accept`] or give them back
    /// with [`Scheduler::decline`]; held offers are resources nobody else
    /// can use.
    Offers(Vec<v1::Offer>),
    /// The master withdrew these offers (agent gone, timeout, re-subscription);
    /// accepting them now fails.
    Rescind(Vec<String>),
    /// A task changed state. With automatic acknowledgement (the default)
    /// the session has already queued its acknowledgement. The same update
    /// may arrive more than once (delivery is at least once), and
    /// reconciliation answers arrive this way too.
    Update(v1::TaskStatus),
    /// An agent the framework had tasks on is gone; `LOST` updates for its
    /// tasks follow.
    Failure {
        /// The agent.
        agent_id: String,
        /// Why, for people.
        message: String,
    },
    /// The subscription ended for good (teardown, or failover timeout
    /// passed). The last event: the stream ends after it.
    Error(String),
    /// The event stream dropped; the session is re-subscribing. Offers held
    /// until now are void. Tasks keep running.
    Disconnected {
        /// What was seen: a stream error, an end, or missing heartbeats.
        reason: String,
    },
    /// The session re-subscribed with the same framework id and asked for
    /// the state of its known tasks (answers arrive as `Update`s).
    Resubscribed {
        /// The framework's id, unchanged.
        framework_id: String,
    },
}

/// The framework's events, in order. Ends after [`Event::Error`] or when
/// every [`Scheduler`] handle is dropped.
///
/// Unbounded: the session never blocks on a slow consumer (that would stall
/// heartbeats and acknowledgements), so consume events promptly.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event, or `None` when the session is over.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl futures::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// Counters of a session, for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// `Acknowledge` calls made by automatic acknowledgement.
    pub acknowledge_calls: u64,
    /// Updates acknowledged by those calls.
    pub acknowledged: u64,
    /// Successful re-subscriptions.
    pub resubscriptions: u64,
}

#[derive(Default)]
struct Counters {
    acknowledge_calls: AtomicU64,
    acknowledged: AtomicU64,
    resubscriptions: AtomicU64,
}

struct Shared {
    /// The master's scheduler service: the leader's, followed after a
    /// failover (see `drive`).
    grpc: Mutex<SchedulerClient<Channel>>,
    /// The URL of the master `grpc` calls.
    url: Mutex<String>,
    /// The cluster's masters, to find the leader again.
    client: Client,
    framework_id: String,
    config: FrameworkConfig,
    /// Tasks launched and not yet seen terminal: reconciled after a
    /// re-subscription.
    known: Mutex<HashSet<String>>,
    counters: Counters,
    /// Set by teardown: the stream's end is expected.
    ended: AtomicBool,
    reconnect: Notify,
    /// The newest master epoch seen: a master of an older one is a stale
    /// master still running (a deposed leader), and is refused.
    master_epoch: std::sync::atomic::AtomicU64,
}

/// Stops the session's background tasks when the last handle goes.
struct Guard {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A subscribed framework: the calls it can make. Cheap to clone.
///
/// A background task reads the event stream and forwards it to [`Events`];
/// acknowledges updates in batches (one `Acknowledge` call carries every
/// update that arrived while the previous call was in flight, never one call
/// per task); and when the stream drops or goes silent for three heartbeat
/// intervals, re-subscribes with the same framework id (backing off up to
/// [`FrameworkConfig::max_backoff`]) and reconciles the tasks it knows.
///
/// Dropping every handle closes the stream without tearing the framework
/// down: the master keeps its tasks for the failover timeout. Call
/// [`Scheduler::teardown`] to end it for good.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
    _guard: Arc<Guard>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("framework_id", &self.shared.framework_id)
            .finish_non_exhaustive()
    }
}

async fn open(
    grpc: &mut SchedulerClient<Channel>,
    info: v1::FrameworkInfo,
) -> Result<(Streaming<v1::Event>, v1::Subscribed)> {
    let mut stream = grpc
        .subscribe(v1::SubscribeRequest {
            framework: Some(info),
        })
        .await
        .map_err(Error::rpc("Subscribe"))?
        .into_inner();
    let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, stream.message())
        .await
        .map_err(|_| Error::SubscribeTimeout(SUBSCRIBE_TIMEOUT))?
        .map_err(Error::rpc("Subscribe"))?;
    match first.and_then(|e| e.kind) {
        Some(Kind::Subscribed(subscribed)) => Ok((stream, subscribed)),
        Some(Kind::Error(e)) => Err(Error::SubscriptionEnded(e.message)),
        other => Err(Error::SubscriptionEnded(format!(
            "the master's first event was {other:?}, not SUBSCRIBED"
        ))),
    }
}

impl Scheduler {
    pub(crate) async fn subscribe(
        client: Client,
        config: FrameworkConfig,
    ) -> Result<(Scheduler, Events)> {
        if config.name.is_empty() {
            return Err(Error::Config(
                "a framework needs a name: FrameworkConfig::new(\"my-framework\")".into(),
            ));
        }
        let mut grpc = client.scheduler_client();
        let (stream, subscribed) = open(&mut grpc, config.info("")).await?;
        let liveness = Liveness::new(&subscribed, config.min_heartbeat_timeout);
        tracing::info!(framework = %subscribed.framework_id, "subscribed");
        let shared = Arc::new(Shared {
            grpc: Mutex::new(grpc),
            url: Mutex::new(client.url().to_string()),
            client,
            framework_id: subscribed.framework_id,
            config,
            known: Mutex::new(HashSet::new()),
            counters: Counters::default(),
            ended: AtomicBool::new(false),
            reconnect: Notify::new(),
            master_epoch: std::sync::atomic::AtomicU64::new(subscribed.master_epoch),
        });
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let acker = tokio::spawn(acknowledge_loop(shared.clone(), ack_rx));
        let driver = tokio::spawn(drive(shared.clone(), stream, liveness, event_tx, ack_tx));
        let scheduler = Scheduler {
            shared,
            _guard: Arc::new(Guard {
                tasks: vec![acker, driver],
            }),
        };
        Ok((scheduler, Events { rx: event_rx }))
    }

    /// The id the master gave this framework. Stays the same across
    /// re-subscriptions.
    pub fn framework_id(&self) -> &str {
        &self.shared.framework_id
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        let c = &self.shared.counters;
        SessionStats {
            acknowledge_calls: c.acknowledge_calls.load(Ordering::Relaxed),
            acknowledged: c.acknowledged.load(Ordering::Relaxed),
            resubscriptions: c.resubscriptions.load(Ordering::Relaxed),
        }
    }

    fn grpc(&self) -> SchedulerClient<Channel> {
        self.shared.grpc()
    }

    fn id(&self) -> String {
        self.shared.framework_id.clone()
    }

    /// Launches `tasks` on `offer_ids`, which must all be offers of one
    /// agent; the tasks' resources must fit in their sum. What the tasks
    /// leave unused goes back to the pool, held back from this framework for
    /// `refuse_seconds` (`None`: the master's default of 5 s; `Some(0.0)`:
    /// offer it again at once). Returns the launched task ids.
    ///
    /// Task ids must be unique across the cluster; the whole call is refused
    /// (and nothing launched) if one spec is invalid.
    ///
    /// An error for which [`launch_in_doubt`] is true (the master went away
    /// mid-call) leaves the launch in doubt: the master may have applied it.
    /// The session then keeps the ids among its known tasks and reconciles
    /// them after it re-subscribes; the answers (their updates, or `LOST`
    /// with `REASON_TASK_UNKNOWN` for a launch that never happened) arrive
    /// as events. Never launch the same ids again on a guess.
    pub async fn accept(
        &self,
        offer_ids: Vec<String>,
        tasks: Vec<v1::TaskSpec>,
        refuse_seconds: Option<f64>,
    ) -> Result<Vec<String>> {
        let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
        // Known before the call: an update may overtake the reply.
        self.shared
            .known
            .lock()
            .unwrap()
            .extend(ids.iter().cloned());
        let result = self
            .grpc()
            .accept(v1::AcceptRequest {
                framework_id: self.id(),
                offer_ids,
                tasks,
                filters: Some(v1::Filters { refuse_seconds }),
            })
            .await;
        match result {
            Ok(reply) => Ok(reply.into_inner().task_ids),
            Err(status) => {
                if !launch_in_doubt(status.code()) {
                    let mut known = self.shared.known.lock().unwrap();
                    for id in &ids {
                        known.remove(id);
                    }
                }
                Err(Error::rpc("Accept")(status))
            }
        }
    }

    /// Gives offers back. Their agents are not offered to this framework
    /// again for `refuse_seconds` (`None`: the master's default of 5 s), so
    /// a framework that needs nothing from an agent should decline with a
    /// long filter, and one that may soon need it with a short one.
    pub async fn decline(&self, offer_ids: Vec<String>, refuse_seconds: Option<f64>) -> Result<()> {
        self.grpc()
            .decline(v1::DeclineRequest {
                framework_id: self.id(),
                offer_ids,
                filters: Some(v1::Filters { refuse_seconds }),
            })
            .await
            .map_err(Error::rpc("Decline"))?;
        Ok(())
    }

    /// Kills tasks (one call for all of them). Their `KILLED` updates
    /// arrive as events.
    pub async fn kill(&self, task_ids: Vec<String>) -> Result<()> {
        self.grpc()
            .kill(v1::KillRequest {
                framework_id: self.id(),
                task_ids,
            })
            .await
            .map_err(Error::rpc("Kill"))?;
        Ok(())
    }

    /// Acknowledges updates in one call, so their agents stop resending
    /// them. Only needed with [`FrameworkConfig::auto_acknowledge`] off;
    /// updates without a uuid (reconciliation answers) are skipped.
    pub async fn acknowledge(&self, statuses: &[v1::TaskStatus]) -> Result<()> {
        let acks: Vec<v1::Ack> = statuses.iter().filter_map(ack_of).collect();
        if acks.is_empty() {
            return Ok(());
        }
        self.grpc()
            .acknowledge(v1::AcknowledgeRequest {
                framework_id: self.id(),
                acks,
            })
            .await
            .map_err(Error::rpc("Acknowledge"))?;
        Ok(())
    }

    /// Asks for the latest state of `task_ids` (all of the framework's tasks
    /// when empty). Answers arrive as [`Event::Update`]s without uuid; a task
    /// the master does not know comes back `LOST` with
    /// `REASON_TASK_UNKNOWN`. The session does this by itself after a
    /// re-subscription.
    pub async fn reconcile(&self, task_ids: Vec<String>) -> Result<()> {
        reconcile(&self.shared, task_ids).await
    }

    /// Stops offers until [`Scheduler::revive`]: for a framework with
    /// nothing to launch, so it does not churn through offers.
    pub async fn suppress(&self) -> Result<()> {
        self.grpc()
            .suppress(v1::SuppressRequest {
                framework_id: self.id(),
            })
            .await
            .map_err(Error::rpc("Suppress"))?;
        Ok(())
    }

    /// Asks for offers again and clears every decline filter.
    pub async fn revive(&self) -> Result<()> {
        self.grpc()
            .revive(v1::ReviveRequest {
                framework_id: self.id(),
                demand: None,
            })
            .await
            .map_err(Error::rpc("Revive"))?;
        Ok(())
    }

    /// Revives (see [`Scheduler::revive`]) and declares that `tasks` tasks
    /// asking for `task` each wait to be launched.
    pub async fn revive_with_demand(&self, task: v1::Resources, tasks: u64) -> Result<()> {
        self.grpc()
            .revive(v1::ReviveRequest {
                framework_id: self.id(),
                demand: Some(v1::Demand {
                    task: Some(task),
                    tasks,
                }),
            })
            .await
            .map_err(Error::rpc("Revive"))?;
        Ok(())
    }

    /// Declares what the framework waits to launch (see
    /// [`FrameworkConfig::demand`]), or with `None` that it declares
    /// nothing (whole free agents are offered again). Filters and
    /// suppression stay as they are.
    pub async fn set_demand(&self, demand: Option<(v1::Resources, u64)>) -> Result<()> {
        self.grpc()
            .set_demand(v1::SetDemandRequest {
                framework_id: self.id(),
                demand: demand.map(|(task, tasks)| v1::Demand {
                    task: Some(task),
                    tasks,
                }),
            })
            .await
            .map_err(Error::rpc("SetDemand"))?;
        Ok(())
    }

    /// Ends the framework: the master kills its tasks and forgets it; the
    /// event stream ends with [`Event::Error`].
    pub async fn teardown(&self) -> Result<()> {
        self.shared.ended.store(true, Ordering::SeqCst);
        self.grpc()
            .teardown(v1::TeardownRequest {
                framework_id: self.id(),
            })
            .await
            .map_err(Error::rpc("Teardown"))?;
        Ok(())
    }

    /// Drops the event stream and re-subscribes at once, as if the network
    /// had failed: [`Event::Disconnected`] then [`Event::Resubscribed`]
    /// follow. For a process that knows its network changed, and for tests
    /// of failover.
    pub fn reconnect(&self) {
        self.shared.reconnect.notify_one();
    }
}

/// Does a failed `Accept` with this code leave its launch in doubt? True
/// when the call may have reached the master and been applied before the
/// answer was lost (the connection broke, the master restarted): only a
/// reconciliation can tell. False for refusals, which change nothing.
pub fn launch_in_doubt(code: tonic::Code) -> bool {
    use tonic::Code;
    // ALREADY_EXISTS: an earlier launch in doubt with these ids did happen.
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Aborted
            | Code::AlreadyExists
    )
}

fn ack_of(status: &v1::TaskStatus) -> Option<v1::Ack> {
    (!status.uuid.is_empty()).then(|| v1::Ack {
        task_id: status.task_id.clone(),
        agent_id: status.agent_id.clone(),
        uuid: status.uuid.clone(),
    })
}

impl Shared {
    fn grpc(&self) -> SchedulerClient<Channel> {
        self.grpc.lock().unwrap().clone()
    }
}

async fn reconcile(shared: &Shared, task_ids: Vec<String>) -> Result<()> {
    shared
        .grpc()
        .reconcile(v1::ReconcileRequest {
            framework_id: shared.framework_id.clone(),
            task_ids,
        })
        .await
        .map_err(Error::rpc("Reconcile"))?;
    Ok(())
}

/// Sends queued acknowledgements: one call per batch, the batch being
/// everything queued while the previous call was in flight.
async fn acknowledge_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<v1::Ack>) {
    while let Some(first) = rx.recv().await {
        let mut acks = vec![first];
        while let Ok(ack) = rx.try_recv() {
            acks.push(ack);
        }
        let n = acks.len() as u64;
        let request = v1::AcknowledgeRequest {
            framework_id: shared.framework_id.clone(),
            acks,
        };
        shared
            .counters
            .acknowledge_calls
            .fetch_add(1, Ordering::Relaxed);
        shared.counters.acknowledged.fetch_add(n, Ordering::Relaxed);
        if let Err(status) = shared.grpc().acknowledge(request).await {
            // Harmless: unacknowledged updates are sent again and then
            // acknowledged again.
            tracing::debug!(%status, "acknowledge failed; the updates will be resent");
        }
    }
}

/// Decides when a silent stream is dead.
struct Liveness {
    announced: Duration,
    floor: Duration,
    last_heartbeat: Option<Instant>,
    longest_gap: Duration,
}

impl Liveness {
    fn new(subscribed: &v1::Subscribed, floor: Duration) -> Liveness {
        Liveness {
            announced: Duration::from_millis(subscribed.heartbeat_interval_ms),
            floor,
            last_heartbeat: None,
            longest_gap: Duration::ZERO,
        }
    }

    /// The announced interval is not always the real one, so the longest
    /// gap seen between heartbeats counts too (capped, so one stall of the
    /// master does not blind the session for good).
    fn heartbeat(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.last_heartbeat {
            self.longest_gap = self
                .longest_gap
                .max(now - last)
                .min(Duration::from_secs(120));
        }
        self.last_heartbeat = Some(now);
    }

    fn dead_after(&self) -> Duration {
        (self.announced * 3)
            .max(self.longest_gap * 3)
            .max(self.floor)
    }
}

/// Reads the stream; on its loss, re-subscribes. Returns when the
/// subscription ends for good.
async fn drive(
    shared: Arc<Shared>,
    mut stream: Streaming<v1::Event>,
    mut liveness: Liveness,
    events: mpsc::UnboundedSender<Event>,
    acks: mpsc::UnboundedSender<v1::Ack>,
) {
    let emit = |event: Event| {
        let _ = events.send(event);
    };
    loop {
        let reason = loop {
            let dead_after = liveness.dead_after();
            tokio::select! {
                _ = shared.reconnect.notified() => break "re-subscription requested".to_string(),
                read = tokio::time::timeout(dead_after, stream.message()) => match read {
                    Err(_) => break format!("no event from the master for {dead_after:?}"),
                    Ok(Ok(Some(event))) => {
                        if let Some(message) = dispatch(&shared, event, &mut liveness, &emit, &acks) {
                            emit(Event::Error(message));
                            return;
                        }
                    }
                    Ok(Ok(None)) => break "the master closed the event stream".to_string(),
                    Ok(Err(status)) => break format!("the event stream failed: {}", status.message()),
                },
            }
        };
        drop(stream);
        if shared.ended.load(Ordering::SeqCst) {
            emit(Event::Error("the framework was torn down".into()));
            return;
        }
        tracing::warn!(framework = %shared.framework_id, %reason, "event stream lost; re-subscribing");
        emit(Event::Disconnected { reason });

        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut grpc = shared.grpc();
        (stream, liveness) = loop {
            if shared.ended.load(Ordering::SeqCst) {
                emit(Event::Error("the framework was torn down".into()));
                return;
            }
            if started.elapsed() > shared.config.failover_timeout {
                emit(Event::Error(format!(
                    "could not re-subscribe within the failover timeout of {:?}; the master has removed the framework and killed its tasks",
                    shared.config.failover_timeout
                )));
                return;
            }
            match open(&mut grpc, shared.config.info(&shared.framework_id)).await {
                Ok((_, subscribed))
                    if subscribed.master_epoch < shared.master_epoch.load(Ordering::SeqCst) =>
                {
                    tracing::warn!(
                        epoch = subscribed.master_epoch,
                        seen = shared.master_epoch.load(Ordering::SeqCst),
                        "a master of an older epoch than one seen before answered: a stale master; refusing it"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(shared.config.max_backoff);
                }
                Ok((stream, subscribed)) => {
                    shared
                        .master_epoch
                        .fetch_max(subscribed.master_epoch, Ordering::SeqCst);
                    break (
                        stream,
                        Liveness::new(&subscribed, shared.config.min_heartbeat_timeout),
                    );
                }
                Err(e)
                    if matches!(
                        e.code(),
                        Some(tonic::Code::NotFound | tonic::Code::InvalidArgument)
                    ) =>
                {
                    emit(Event::Error(format!("re-subscription refused: {e}")));
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?backoff, "re-subscription failed; retrying");
                    // The master may be gone or standing by: find the one
                    // that leads now (at once, with no backoff, when a
                    // standby names it).
                    if let Ok(leader) = shared.client.follow_leader().await
                        && *shared.url.lock().unwrap() != leader.url()
                    {
                        tracing::info!(master = leader.url(), "following the leading master");
                        grpc = leader.scheduler_client();
                        *shared.grpc.lock().unwrap() = grpc.clone();
                        *shared.url.lock().unwrap() = leader.url().to_string();
                        continue;
                    }
                    let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 4);
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(shared.config.max_backoff);
                }
            }
        };
        shared
            .counters
            .resubscriptions
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(framework = %shared.framework_id, "re-subscribed");
        emit(Event::Resubscribed {
            framework_id: shared.framework_id.clone(),
        });
        let known: Vec<String> = shared.known.lock().unwrap().iter().cloned().collect();
        if !known.is_empty()
            && let Err(e) = reconcile(&shared, known).await
        {
            tracing::warn!(error = %e, "reconciliation after re-subscription failed");
        }
    }
}

/// Handles one event; returns the message of an `ERROR` event.
fn dispatch(
    shared: &Shared,
    event: v1::Event,
    liveness: &mut Liveness,
    emit: &impl Fn(Event),
    acks: &mpsc::UnboundedSender<v1::Ack>,
) -> Option<String> {
    match event.kind? {
        Kind::Subscribed(_) => {}
        Kind::Heartbeat(_) => liveness.heartbeat(),
        Kind::Offers(offers) => emit(Event::Offers(offers.offers)),
        Kind::Rescind(rescind) => emit(Event::Rescind(rescind.offer_ids)),
        Kind::Updates(updates) => {
            {
                let mut known = shared.known.lock().unwrap();
                for status in &updates.statuses {
                    if is_terminal(status.state()) {
                        known.remove(&status.task_id);
                    }
                }
            }
            for status in updates.statuses {
                if shared.config.auto_acknowledge
                    && let Some(ack) = ack_of(&status)
                {
                    let _ = acks.send(ack);
                }
                emit(Event::Update(status));
            }
        }
        Kind::Failure(failure) => emit(Event::Failure {
            agent_id: failure.agent_id,
            message: failure.message,
        }),
        Kind::Error(error) => return Some(error.message),
    }
    None
}
