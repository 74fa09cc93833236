//! The master's shell in-process: a real `Master` on loopback with real
//! gRPC, real agents running wasm, and registries that misbehave on
//! purpose (a write that fails, a write that panics, a disk that loses
//! power, a crash between applying a launch and answering it, a wall clock
//! that steps).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use wasmos_agent::ExecutorConfig;
use wasmos_agent::link::{Agent, AgentConfig};
use wasmos_master::server::{Master, MasterConfig, WallClock};
use wasmos_master::store::power_loss::PowerLossDisk;
use wasmos_master::store::{
    MemoryStore, Record, RedbStore, Registry, Store, StoreError, Table, Write,
};
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind;
use wasmos_proto::v1::operator_client::OperatorClient;
use wasmos_proto::v1::scheduler_client::SchedulerClient;
use wasmos_sdk::{Client, TaskTemplate};

const HELLO_WAT: &str = include_str!("../examples/wat/hello.wat");

/// A master config with fast timers, files in `dir`.
fn config(dir: &std::path::Path) -> MasterConfig {
    let mut config = MasterConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("master"));
    config.core.agent_heartbeat_interval = Duration::from_millis(100);
    config.transport = wasmos_master::server::Transport::Insecure;
    config.core.agent_timeout = Duration::from_millis(600);
    config.core.framework_heartbeat_interval = Duration::from_millis(200);
    config.actor.min_tick_interval = Duration::from_millis(20);
    config
}

fn url(master: &Master) -> String {
    format!("http://{}", master.grpc_addr())
}

/// A real agent (wasmtime, sandboxes in `dir`) attached to `url`.
fn agent(url: &str, dir: &std::path::Path) -> JoinHandle<()> {
    let info = v1::AgentInfo {
        hostname: "shell-agent".into(),
        resources: Some(v1::Resources {
            cpus: 2.0,
            mem: 1 << 30,
            disk: 1 << 30,
        }),
        ..Default::default()
    };
    let executor = ExecutorConfig::new(dir.join("agent")).cpus(2.0);
    let agent = Agent::new(AgentConfig::new(url.to_string(), info, executor)).expect("agent");
    tokio::spawn(async move {
        let _ = agent.run().await;
    })
}

async fn operator(url: &str) -> OperatorClient<tonic::transport::Channel> {
    OperatorClient::connect(url.to_string()).await.unwrap()
}

async fn wait_agents(url: &str, connected: usize) -> Vec<v1::AgentState> {
    for _ in 0..500 {
        let agents = operator(url)
            .await
            .list_agents(v1::ListAgentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agents;
        if agents.iter().filter(|a| a.connected).count() == connected {
            return agents;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{connected} agents did not connect");
}

/// A raw framework session: the event stream of one `Subscribe`.
struct Session {
    client: SchedulerClient<tonic::transport::Channel>,
    events: tonic::Streaming<v1::Event>,
    framework_id: String,
}

async fn subscribe(url: &str, framework_id: &str) -> Session {
    let mut client = SchedulerClient::connect(url.to_string()).await.unwrap();
    let mut events = client
        .subscribe(v1::SubscribeRequest {
            framework: Some(v1::FrameworkInfo {
                name: "shell".into(),
                framework_id: framework_id.into(),
                failover_timeout_ms: 60_000,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut events).await;
    let Some(Kind::Subscribed(subscribed)) = first else {
        panic!("no SUBSCRIBED first: {first:?}")
    };
    Session {
        client,
        events,
        framework_id: subscribed.framework_id,
    }
}

/// The next event's kind, `None` once the stream ended; at most 5 s.
async fn next(events: &mut tonic::Streaming<v1::Event>) -> Option<Kind> {
    tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("no event and no end of the stream within 5 s")
        .ok()
        .flatten()
        .and_then(|e| e.kind)
}

/// Skips heartbeats, offers and updates; returns the first ERROR's message,
/// then asserts that the stream ends.
async fn error_then_end(events: &mut tonic::Streaming<v1::Event>) -> String {
    loop {
        match next(events).await {
            Some(Kind::Error(e)) => {
                assert!(
                    next(events).await.is_none(),
                    "the stream goes on after ERROR"
                );
                return e.message;
            }
            Some(_) => continue,
            None => panic!("the stream ended without an ERROR"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_ends_the_event_stream_from_the_masters_side() {
    let dir = tempfile::tempdir().unwrap();
    let master = Master::start(config(dir.path())).await.unwrap();
    let mut session = subscribe(&url(&master), "").await;
    session
        .client
        .teardown(v1::TeardownRequest {
            framework_id: session.framework_id.clone(),
        })
        .await
        .unwrap();
    // No watchdog here: only the master ending the stream ends this wait.
    let message = error_then_end(&mut session.events).await;
    assert!(!message.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscription_ends_the_old_stream_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let master = Master::start(config(dir.path())).await.unwrap();
    let mut old = subscribe(&url(&master), "").await;
    let new = subscribe(&url(&master), &old.framework_id).await;
    assert_eq!(new.framework_id, old.framework_id);
    let message = error_then_end(&mut old.events).await;
    assert!(message.contains("re-subscribed"), "{message}");
}

/// A registry that works until `fail` is set; then every commit fails, or
/// panics (an in-memory registry commits on the actor itself).
struct Faulty {
    inner: MemoryStore,
    fail: AtomicBool,
    panic: bool,
}

impl Store for Faulty {
    fn load(&self) -> Result<Registry, StoreError> {
        self.inner.load()
    }
    fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.get(table, key)
    }
    fn range(
        &self,
        table: Table,
        from: &str,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.inner.range(table, from, to, limit)
    }
    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            if self.panic {
                panic!("the disk caught fire");
            }
            return Err(StoreError::Io("injected: no space left on device".into()));
        }
        self.inner.commit(writes)
    }
    fn describe(&self) -> String {
        "a faulty registry".into()
    }
    fn is_in_memory(&self) -> bool {
        self.panic
    }
}

async fn master_stops_when_the_registry(panic: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Faulty {
        inner: MemoryStore::new(),
        fail: AtomicBool::new(false),
        panic,
    });
    let mut config = config(dir.path());
    config.store = Some(store.clone());
    let master = Master::start(config).await.unwrap();
    let url = url(&master);
    let waiting = tokio::spawn(master.wait());
    store.fail.store(true, Ordering::SeqCst);
    // A subscription must be durable before SUBSCRIBED: this one never is.
    let mut client = SchedulerClient::connect(url).await.unwrap();
    let subscribed = client
        .subscribe(v1::SubscribeRequest {
            framework: Some(v1::FrameworkInfo {
                name: "doomed".into(),
                ..Default::default()
            }),
        })
        .await;
    if let Ok(events) = subscribed {
        let mut events = events.into_inner();
        assert!(
            !matches!(next(&mut events).await, Some(Kind::Subscribed(_))),
            "SUBSCRIBED without a durable registration"
        );
    }
    let stopped = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the master kept running on a broken registry")
        .unwrap();
    format!("{:#}", stopped.expect_err("Master::wait returned Ok"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_registry_write_stops_the_master_with_the_error() {
    let error = master_stops_when_the_registry(false).await;
    assert!(error.contains("registry write failed"), "{error}");
    assert!(error.contains("no space left on device"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_of_the_actor_stops_the_master() {
    let error = master_stops_when_the_registry(true).await;
    assert!(error.contains("panicked"), "{error}");
    assert!(error.contains("the disk caught fire"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_loses_no_agent() {
    let dir = tempfile::tempdir().unwrap();
    let step = Arc::new(AtomicI64::new(0));
    let mut config = config(dir.path());
    let offset = step.clone();
    config.wall_clock = WallClock(Arc::new(move || {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        (now.as_millis() as i64 + offset.load(Ordering::SeqCst)) as u64
    }));
    let master = Master::start(config).await.unwrap();
    let url = url(&master);
    let _agent = agent(&url, dir.path());
    let before = wait_agents(&url, 1).await;
    // An hour forward, then an hour back: both far beyond the agent
    // timeout (600 ms), each held for several timeouts.
    for ms in [3_600_000, -3_600_000] {
        step.store(ms, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let agents = wait_agents(&url, 1).await;
        assert_eq!(agents[0].info, before[0].info, "the agent re-registered");
    }
    // And a task still runs there.
    let client = Client::connect(&url).await.unwrap();
    let hello = client.upload(HELLO_WAT).await.unwrap();
    let report = wasmos_sdk::Job::new("after-the-step")
        .task(TaskTemplate::new(&hello.digest))
        .run(&client)
        .await
        .unwrap();
    assert!(report.succeeded(), "{:?}", report.tasks);
}

/// Waits for offers on a session; returns them.
async fn offers(session: &mut Session) -> Vec<v1::Offer> {
    loop {
        match next(&mut session.events).await {
            Some(Kind::Offers(o)) if !o.offers.is_empty() => return o.offers,
            Some(_) => continue,
            None => panic!("the stream ended before offers"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_power_loss_every_accepted_launch_is_in_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let disk = PowerLossDisk::new();
    let store = RedbStore::with_backend(disk.backend(), "power-loss disk").unwrap();
    let mut first = config(dir.path());
    first.store = Some(Arc::new(store));
    let master = Master::start(first).await.unwrap();
    let url = url(&master);
    let agent = agent(&url, dir.path());
    wait_agents(&url, 1).await;
    let hello = Client::connect(&url)
        .await
        .unwrap()
        .upload(HELLO_WAT)
        .await
        .unwrap();
    // A raw framework that acknowledges nothing: every task it launched
    // stays in the registry until acknowledged terminal.
    let mut session = subscribe(&url, "").await;
    // Launches until 100 are accepted: an accept may be refused (a stale
    // offer, say) on a loaded machine; the refusals say which.
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for round in 0..60 {
        if accepted.len() >= 100 {
            break;
        }
        let offers = offers(&mut session).await;
        let by_agent = &offers[0];
        let tasks: Vec<v1::TaskSpec> = (0..5)
            .map(|i| {
                TaskTemplate::new(&hello.digest)
                    .cpus(0.01)
                    .mem(16 << 20)
                    .spec(format!("power-{round}-{i}"))
            })
            .collect();
        let reply = session
            .client
            .accept(v1::AcceptRequest {
                framework_id: session.framework_id.clone(),
                offer_ids: vec![by_agent.offer_id.clone()],
                tasks: tasks.clone(),
                filters: Some(v1::Filters {
                    refuse_seconds: Some(0.0),
                }),
            })
            .await;
        match reply {
            Ok(_) => accepted.extend(tasks.into_iter().map(|t| t.task_id)),
            Err(e) => refused.push(format!("round {round}: {e}")),
        }
    }
    assert!(
        accepted.len() >= 50,
        "only {} launches accepted; refused: {refused:#?}",
        accepted.len()
    );
    // The power goes: the process with it (its disk calls fail from now).
    disk.power_off();
    agent.abort();
    drop(session);

    let mut second = config(dir.path());
    second.store = Some(Arc::new(
        RedbStore::with_backend(disk.backend(), "power-loss disk").unwrap(),
    ));
    let master = Master::start(second).await.unwrap();
    assert_eq!(master.epoch(), 2);
    let known: std::collections::HashSet<String> =
        operator(&format!("http://{}", master.grpc_addr()))
            .await
            .list_tasks(v1::ListTasksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .tasks
            .into_iter()
            .map(|t| t.task_id)
            .collect();
    let lost: Vec<&String> = accepted.iter().filter(|id| !known.contains(*id)).collect();
    assert!(lost.is_empty(), "accepted but lost at power-off: {lost:?}");
}

/// A registry that "crashes" at the first commit holding a launch: the
/// commit fails (so the master stops, its `Accept` unanswered), after
/// reaching the disk (`applied`) or not.
struct CrashAtLaunch {
    inner: Arc<MemoryStore>,
    armed: AtomicBool,
    applied: bool,
}

impl Store for CrashAtLaunch {
    fn load(&self) -> Result<Registry, StoreError> {
        self.inner.load()
    }
    fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.get(table, key)
    }
    fn range(
        &self,
        table: Table,
        from: &str,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.inner.range(table, from, to, limit)
    }
    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let launch = writes
            .iter()
            .any(|w| matches!(w, Write::Put(wasmos_master::store::Record::Task(_))));
        if launch && self.armed.swap(false, Ordering::SeqCst) {
            if self.applied {
                self.inner.commit(writes)?;
            }
            return Err(StoreError::Io("injected: the machine went down".into()));
        }
        self.inner.commit(writes)
    }
    fn describe(&self) -> String {
        "a registry that crashes at the first launch".into()
    }
}

/// `wasmos_sdk::Job` across a master that dies between applying (or not)
/// an `Accept` and answering it, restarted on the same port and registry.
async fn job_across_a_crash_at_launch(applied: bool) -> wasmos_sdk::JobReport {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(MemoryStore::new());
    let mut first = config(dir.path());
    first.store = Some(Arc::new(CrashAtLaunch {
        inner: inner.clone(),
        armed: AtomicBool::new(true),
        applied,
    }));
    let master = Master::start(first).await.unwrap();
    let addr = master.grpc_addr();
    let url = url(&master);
    let _agent = agent(&url, dir.path());
    wait_agents(&url, 1).await;
    let client = Client::connect(&url).await.unwrap();
    let hello = client.upload(HELLO_WAT).await.unwrap();
    let job = tokio::spawn(async move {
        wasmos_sdk::Job::new("crash-at-launch")
            .task(TaskTemplate::new(&hello.digest).cpus(0.1))
            .run(&client)
            .await
    });
    let stopped = tokio::time::timeout(Duration::from_secs(20), master.wait())
        .await
        .expect("the launch's commit did not come");
    assert!(format!("{:#}", stopped.unwrap_err()).contains("went down"));
    // The same port and registry, as a supervisor would restart it.
    let mut second = config(dir.path());
    second.listen = addr;
    second.store = Some(inner);
    let mut restarted = None;
    for _ in 0..100 {
        match Master::start(second.clone()).await {
            Ok(master) => {
                restarted = Some(master);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let _master = restarted.expect("the master restarts on its port");
    tokio::time::timeout(Duration::from_secs(60), job)
        .await
        .expect("the job stalled after the lost answer")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_whose_answer_was_lost_is_reconciled_not_relaunched_under_its_id() {
    // Applied: the registry holds the task, and the launch reached its
    // agent before the crash (launches do not wait for their commit). The
    // job reconciles the launch in doubt and finds it there: one attempt.
    let report = job_across_a_crash_at_launch(true).await;
    assert!(report.succeeded(), "{:?}", report.tasks);
    assert_eq!(report.tasks[0].attempts, 1, "{:?}", report.tasks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_the_registry_never_held_is_adopted_not_run_again() {
    // Not applied: the registry never held the task, but its agent ran it;
    // the restarted master adopts it when the agent re-registers, and
    // answers the job's reconciliation only then. One attempt, one run.
    let report = job_across_a_crash_at_launch(false).await;
    assert!(report.succeeded(), "{:?}", report.tasks);
    assert_eq!(report.tasks[0].attempts, 1, "{:?}", report.tasks);
}

/// A registry whose commits wait while its gate is closed: a disk that
/// takes as long as a test needs.
#[derive(Default)]
struct Gated {
    inner: MemoryStore,
    closed: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gated {
    fn set_closed(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }
}

impl Store for Gated {
    fn load(&self) -> Result<Registry, StoreError> {
        self.inner.load()
    }
    fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.get(table, key)
    }
    fn range(
        &self,
        table: Table,
        from: &str,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.inner.range(table, from, to, limit)
    }
    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let closed = self.closed.lock().unwrap();
        drop(self.opened.wait_while(closed, |closed| *closed).unwrap());
        self.inner.commit(writes)
    }
    fn describe(&self) -> String {
        "a gated registry".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_runs_while_its_commit_waits_and_only_its_accept_and_end_wait() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Gated::default());
    let mut config = config(dir.path());
    config.store = Some(store.clone());
    let master = Master::start(config).await.unwrap();
    let url = url(&master);
    let _agent = agent(&url, dir.path());
    wait_agents(&url, 1).await;
    let hello = Client::connect(&url)
        .await
        .unwrap()
        .upload(HELLO_WAT)
        .await
        .unwrap();
    let mut session = subscribe(&url, "").await;
    let offer = offers(&mut session).await.remove(0);

    // The disk stalls: nothing can become durable. (Open again on
    // any exit, or a failed assertion would hang on the stalled commit.)
    struct OpenOnExit(Arc<Gated>);
    impl Drop for OpenOnExit {
        fn drop(&mut self) {
            self.0.set_closed(false);
        }
    }
    let _open = OpenOnExit(store.clone());
    store.set_closed(true);
    let mut client = session.client.clone();
    let accept = tokio::spawn(async move {
        client
            .accept(v1::AcceptRequest {
                framework_id: session.framework_id.clone(),
                offer_ids: vec![offer.offer_id],
                tasks: vec![
                    TaskTemplate::new(&hello.digest)
                        .cpus(0.1)
                        .mem(16 << 20)
                        .spec("gated-0"),
                ],
                filters: Some(v1::Filters {
                    refuse_seconds: Some(0.0),
                }),
            })
            .await
    });
    // What the launch left over is offered again while its commit waits.
    // The task runs meanwhile (the launch went to its agent at once): its
    // STARTING and RUNNING may come before the commit, its end may not.
    let offered = loop {
        match next(&mut session.events).await {
            Some(Kind::Offers(o)) if !o.offers.is_empty() => break o.offers,
            Some(Kind::Updates(u)) => {
                for status in &u.statuses {
                    assert!(
                        !status.state().is_terminal(),
                        "an end before it was durable: {status:?}"
                    );
                }
            }
            Some(_) => continue,
            None => panic!("the stream ended"),
        }
    };
    let cpus: f64 = offered.iter().map(|o| o.resources.unwrap().cpus).sum();
    assert!((cpus - 1.9).abs() < 1e-9, "offered {cpus} cpus of 2 - 0.1");
    // The task (hello prints and returns) is over on its agent by now;
    // neither its end nor the Accept's answer is told while the disk stalls.
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Some(Kind::Updates(u)) = next(&mut session.events).await
                && u.statuses.iter().any(|s| s.state().is_terminal())
            {
                return u;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "an end while the disk stalls: {quiet:?}");
    assert!(
        !accept.is_finished(),
        "Accept answered before its launch was durable"
    );

    let reopened_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    store.set_closed(false);
    accept
        .await
        .unwrap()
        .expect("the launch is accepted once durable");
    loop {
        match next(&mut session.events).await {
            Some(Kind::Updates(u))
                if u.statuses
                    .iter()
                    .any(|s| s.task_id == "gated-0" && s.state() == v1::TaskState::Finished) =>
            {
                let end = u
                    .statuses
                    .iter()
                    .find(|s| s.task_id == "gated-0" && s.state().is_terminal())
                    .unwrap();
                assert!(
                    end.timestamp_ms < reopened_ms,
                    "the task ended at {} ms, not before the disk came back ({reopened_ms} ms)",
                    end.timestamp_ms
                );
                break;
            }
            Some(_) => continue,
            None => panic!("the stream ended before the task finished"),
        }
    }
}
