//! End-to-end tests of the SDK against a real in-process master over gRPC
//! on loopback, with scripted agents (see `support/`).

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{HELLO_WAT, Proxy, Script, ScriptedAgent, start_master, wait_until};
use wasmos_sdk::proto::{Reason, TaskState};
use wasmos_sdk::{
    Client, Event, Events, FrameworkConfig, Job, RetryPolicy, TaskTemplate, digest_of,
    module_bytes, proto,
};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Generous: a loaded 2-core machine runs these tests in parallel.
const PATIENCE: Duration = Duration::from_secs(15);

async fn next_event(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("events ended while waiting for {what}"));
        if pick(&event) {
            return event;
        }
    }
}

async fn offers(events: &mut Events) -> Vec<proto::Offer> {
    match next_event(events, "offers", |e| matches!(e, Event::Offers(_))).await {
        Event::Offers(offers) => offers,
        _ => unreachable!(),
    }
}

fn spec(id: &str, digest: &str) -> proto::TaskSpec {
    TaskTemplate::new(digest).cpus(0.1).mem(16 * MIB).spec(id)
}

/// Waits until every id in `ids` was seen in a terminal update.
async fn wait_terminal(events: &mut Events, ids: &[String]) -> Vec<proto::TaskStatus> {
    let mut left: HashSet<&String> = ids.iter().collect();
    let mut seen = Vec::new();
    while !left.is_empty() {
        if let Event::Update(status) = next_event(events, "terminal updates", |e| {
            matches!(e, Event::Update(_))
        })
        .await
        {
            if wasmos_sdk::is_terminal(status.state()) {
                left.remove(&status.task_id);
            }
            seen.push(status);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_skips_known_artifacts_and_refuses_corrupt_ones() {
    let m = start_master().await;
    let client = Client::connect(&m.url).await.unwrap();

    let wasm = module_bytes(HELLO_WAT.as_bytes()).unwrap().into_owned();
    assert!(wasm.starts_with(b"\0asm"));
    let first = client.upload(HELLO_WAT).await.unwrap();
    assert_eq!(
        first.digest,
        digest_of(&wasm),
        "`.wat` is uploaded as its binary"
    );
    assert_eq!(first.size, wasm.len() as u64);
    assert!(!first.already_present);
    let again = client.upload(&wasm).await.unwrap();
    assert_eq!(again.digest, first.digest);
    assert!(
        again.already_present,
        "Stat finds it: nothing is sent twice"
    );

    // Several 1 MiB chunks.
    let big: Vec<u8> = (0..3 * MIB as usize + 12345)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let uploaded = client.upload_raw(&big).await.unwrap();
    assert_eq!(
        (uploaded.digest.clone(), uploaded.size),
        (digest_of(&big), big.len() as u64)
    );

    // Bytes that do not match the digest they claim are refused, and not stored.
    let err = client
        .upload_expecting(b"corrupt", &digest_of(b"original"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("mismatch"), "{err}");
    assert!(!client.upload_raw(b"corrupt").await.unwrap().already_present);
    assert!(client.upload_raw(b"original").await.is_ok());

    // A typo in `.wat` is an error, not an upload of text.
    let err = client
        .upload("(module (func $f (i32.bogus)))")
        .await
        .unwrap_err();
    assert!(matches!(err, wasmos_sdk::Error::Wat(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_accept_decline_reconcile_teardown() {
    let m = start_master().await;
    let _agent = ScriptedAgent::start(m.addr, 2.0, 2 * GIB, |_| Script::Finish).await;
    let client = Client::connect(&m.url).await.unwrap();
    let digest = client.upload(HELLO_WAT).await.unwrap().digest;
    let (scheduler, mut events) = client
        .subscribe(FrameworkConfig::new("sdk-test").role("batch"))
        .await
        .unwrap();
    assert!(!scheduler.framework_id().is_empty());

    // Decline with no filter: the same agent comes back at once.
    let first = offers(&mut events).await;
    scheduler
        .decline(
            first.iter().map(|o| o.offer_id.clone()).collect(),
            Some(0.0),
        )
        .await
        .unwrap();
    let second = offers(&mut events).await;
    assert_eq!(second[0].agent_id, first[0].agent_id);
    assert_ne!(second[0].offer_id, first[0].offer_id);

    // Accept one task; follow it to FINISHED.
    let id = format!("sdk-accept-{}", scheduler.framework_id());
    let launched = scheduler
        .accept(
            vec![second[0].offer_id.clone()],
            vec![spec(&id, &digest)],
            Some(0.0),
        )
        .await
        .unwrap();
    assert_eq!(launched, vec![id.clone()]);
    let seen = wait_terminal(&mut events, std::slice::from_ref(&id)).await;
    let states: Vec<TaskState> = seen.iter().map(|s| s.state()).collect();
    assert_eq!(states.last(), Some(&TaskState::Finished), "{states:?}");
    assert!(states.contains(&TaskState::Running), "{states:?}");

    // A used offer is gone: accepting it again is refused with a clear error.
    let err = scheduler
        .accept(
            vec![second[0].offer_id.clone()],
            vec![spec("sdk-accept-2", &digest)],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");

    // Reconciliation answers without uuid.
    scheduler.reconcile(vec![id.clone()]).await.unwrap();
    let answer = next_event(
        &mut events,
        "reconciliation",
        |e| matches!(e, Event::Update(s) if s.task_id == id && s.uuid.is_empty()),
    )
    .await;
    let Event::Update(answer) = answer else {
        unreachable!()
    };
    assert_eq!(answer.state(), TaskState::Finished);

    scheduler.suppress().await.unwrap();
    scheduler.revive().await.unwrap();
    scheduler.teardown().await.unwrap();
    next_event(&mut events, "the end", |e| matches!(e, Event::Error(_))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_acknowledged_in_batches_and_stop_being_resent() {
    let m = start_master().await;
    let agent = ScriptedAgent::start(m.addr, 8.0, 8 * GIB, |_| Script::Finish).await;
    let client = Client::connect(&m.url).await.unwrap();
    let digest = client.upload(HELLO_WAT).await.unwrap().digest;
    let (scheduler, mut events) = client
        .subscribe(FrameworkConfig::new("acks"))
        .await
        .unwrap();
    let offer = offers(&mut events).await.remove(0);
    let ids: Vec<String> = (0..30)
        .map(|i| format!("acks-{}-{i}", scheduler.framework_id()))
        .collect();
    scheduler
        .accept(
            vec![offer.offer_id],
            ids.iter().map(|id| spec(id, &digest)).collect(),
            None,
        )
        .await
        .unwrap();
    wait_terminal(&mut events, &ids).await;
    wait_until(PATIENCE, "every update is acknowledged", || {
        agent.unacked() == 0
    })
    .await;
    let stats = scheduler.stats();
    assert!(stats.acknowledged >= 90, "{stats:?}");
    assert!(
        stats.acknowledge_calls * 5 <= stats.acknowledged,
        "acknowledgements must be batched, not one call per update: {stats:?}"
    );
    let resent = agent.resent();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        agent.resent(),
        resent,
        "acknowledged updates are not resent"
    );
    assert_eq!(agent.unacked(), 0);
    // Done: give the agent back (an idle framework would keep being offered
    // it, as in Mesos, since filters hold back only what was refused).
    scheduler.teardown().await.unwrap();

    // With automatic acknowledgement off, updates keep coming until acked.
    let (manual, mut events) = client
        .subscribe(FrameworkConfig::new("manual-acks").auto_acknowledge(false))
        .await
        .unwrap();
    let offer = offers(&mut events).await.remove(0);
    let ids: Vec<String> = (0..3)
        .map(|i| format!("manual-{}-{i}", manual.framework_id()))
        .collect();
    manual
        .accept(
            vec![offer.offer_id],
            ids.iter().map(|id| spec(id, &digest)).collect(),
            None,
        )
        .await
        .unwrap();
    let mut statuses = wait_terminal(&mut events, &ids).await;
    let before = agent.resent();
    wait_until(PATIENCE, "unacknowledged updates are resent", || {
        agent.resent() > before
    })
    .await;
    // At least the terminal updates wait (the master itself settles updates
    // superseded by a terminal one).
    assert!(agent.unacked() >= 3, "{}", agent.unacked());
    // Duplicates arrive as events too; acknowledging everything seen ends it.
    // (They keep coming every resend interval: collect for a while.)
    let until = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, events.next()).await {
        if let Event::Update(s) = event {
            statuses.push(s);
        }
    }
    manual.acknowledge(&statuses).await.unwrap();
    wait_until(PATIENCE, "manual acknowledgements reach the agent", || {
        agent.unacked() == 0
    })
    .await;
    assert_eq!(manual.stats().acknowledge_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_50_tasks_finishes_with_an_outcome_per_task() {
    let m = start_master().await;
    let a = ScriptedAgent::start(m.addr, 2.0, 2 * GIB, |_| Script::Finish).await;
    let b = ScriptedAgent::start(m.addr, 2.0, 2 * GIB, |_| Script::Finish).await;
    let client = Client::connect(&m.url).await.unwrap();
    let digest = client.upload(HELLO_WAT).await.unwrap().digest;
    let updates = Arc::new(AtomicUsize::new(0));
    let last_done = Arc::new(AtomicUsize::new(0));
    let template = TaskTemplate::new(digest).cpus(0.1).mem(16 * MIB);
    let report = Job::new("fifty")
        .role("batch")
        .tasks((0..50).map(|i| template.clone().arg(i.to_string())))
        .on_update({
            let (updates, last_done) = (updates.clone(), last_done.clone());
            move |u| {
                updates.fetch_add(1, Ordering::Relaxed);
                last_done.store(u.done, Ordering::Relaxed);
                assert_eq!(u.total, 50);
            }
        })
        .run(&client)
        .await
        .unwrap();
    assert!(
        report.succeeded(),
        "{:?}",
        report.failed().collect::<Vec<_>>()
    );
    assert!(!report.cancelled);
    assert_eq!(report.tasks.len(), 50);
    let ids: HashSet<&str> = report.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids.len(), 50, "task ids are unique");
    for (i, t) in report.tasks.iter().enumerate() {
        assert_eq!(t.index, i);
        assert_eq!(t.state, TaskState::Finished);
        assert_eq!(t.exit_code, Some(0));
        assert_eq!(t.attempts, 1);
        assert!(t.usage.is_some());
        assert!(t.agent_id == a.id() || t.agent_id == b.id(), "{t:?}");
        assert!(
            t.task_id.starts_with("fifty-") && t.task_id.ends_with(&format!("-{i}-1")),
            "{}",
            t.task_id
        );
    }
    assert!(
        updates.load(Ordering::Relaxed) >= 150,
        "STARTING, RUNNING, FINISHED each"
    );
    assert_eq!(last_done.load(Ordering::Relaxed), 50);
    assert_eq!(a.launched().len() + b.launched().len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_an_attribute_runs_only_on_agents_that_have_it() {
    let m = start_master().await;
    let x86 = [("os", "linux"), ("arch", "x86_64")];
    let arm = [("os", "linux"), ("arch", "aarch64")];
    let a = ScriptedAgent::start_with(m.addr, 2.0, 2 * GIB, &x86, |_| Script::Finish).await;
    let b = ScriptedAgent::start_with(m.addr, 2.0, 2 * GIB, &arm, |_| Script::Finish).await;
    let client = Client::connect(&m.url).await.unwrap();
    let digest = client.upload(HELLO_WAT).await.unwrap().digest;
    let template = TaskTemplate::new(digest).cpus(0.5).mem(16 * MIB);
    let report = Job::new("on-arm")
        .on("arch", "aarch64")
        .on("os", "linux")
        .tasks(vec![template; 12])
        .run(&client)
        .await
        .unwrap();
    assert!(report.succeeded(), "{:?}", report.tasks);
    assert!(
        report.tasks.iter().all(|t| t.agent_id == b.id()),
        "{:?}",
        report.tasks
    );
    assert_eq!(b.launched().len(), 12, "four at a time, in three rounds");
    assert!(a.launched().is_empty(), "{:?}", a.launched());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_tasks_are_retried_on_another_agent() {
    let m = start_master().await;
    let mut doomed = ScriptedAgent::start(m.addr, 2.0, 2 * GIB, |_| Script::Hang).await;
    let client = Client::connect(&m.url).await.unwrap();
    let digest = client.upload(HELLO_WAT).await.unwrap().digest;
    let template = TaskTemplate::new(digest).cpus(0.2).mem(16 * MIB);
    let job = Job::new("retry-lost").tasks(vec![template; 4]);
    let run = tokio::spawn(job.run(client.clone()));

    wait_until(PATIENCE, "4 tasks run on the doomed agent", || {
        doomed.hanging() == 4
    })
    .await;
    let healthy = ScriptedAgent::start(m.addr, 2.0, 2 * GIB, |_| Script::Finish).await;
    doomed.disconnect();

    let report = tokio::time::timeout(PATIENCE * 2, run)
        .await
        .expect("job ends")
        .unwrap()
        .unwrap();
    assert!(report.succeeded(), "{:?}", report.tasks);
    for t in &report.tasks {
        assert_eq!(t.attempts, 2, "{t:?}");
        assert_eq!(t.agent_id, healthy.id());
        assert!(
            t.task_id.ends_with(&format!("-{}-2", t.index)),
            "{}",
            t.task_id
        );
    }
    let first_attempts: HashSet<String> = doomed.launched().into_iter().collect();
    assert!(
        report
            .tasks
            .iter()
            .all(|t| !first_attempts.contains(&t.task_id)),
        "retries get fresh ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_nonzero_is_not_retried() {
    let m = start_master().await;
    let agent = ScriptedAgent::start(m.addr, 2.0, 2 * GIB, |spec| {
        if spec.args.first().map(String::as_str) == Some("1") {
            Script::Fail(3)
        } else {
            Script::Finish
        }
    })
    .await;
    let client = Client::connect(&m.url).await.unwrap();
    let digest = client.upload(HELLO_WAT).await.unwrap().digest;
    let template = TaskTemplate::new(digest).mem(16 * MIB);
    let report = Job::new("exit-codes")
        .tasks((0..3).map(|i| template.clone().arg(i.to_string())))
        .run(&m.url)
        .await
        .unwrap();
    assert!(!report.succeeded());
    let failed: Vec<_> = report.failed().collect();
    assert_eq!(failed.len(), 1);
    let t = failed[0];
    assert_eq!(
        (t.index, t.state, t.reason, t.exit_code, t.attempts),
        (1, TaskState::Failed, Reason::ExitNonzero, Some(3), 1)
    );
    assert_eq!(agent.launched().len(), 3, "no task ran twice");

    // The same failure is retried when the policy says so.
    let policy = RetryPolicy::default()
        .retry_reason(Reason::ExitNonzero)
        .max_attempts(2);
    let failing = TaskTemplate::new(client.upload(HELLO_WAT).await.unwrap().digest).arg("1");
    let report = Job::new("exit-retry")
        .task(failing)
        .retry(policy)
        .run(&client)
        .await
        .unwrap();
    assert_eq!(
        (report.tasks[0].state, report.tasks[0].attempts),
        (TaskState::Failed, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_is_resubscribed_and_keeps_its_tasks() {
    let m = start_master().await;
    let agent = ScriptedAgent::start(m.addr, 2.0, 2 * GIB, |_| Script::Hang).await;
    let proxy = Proxy::start(m.addr).await;
    let client = Client::connect(proxy.url()).await.unwrap();
    let digest = client.upload(HELLO_WAT).await.unwrap().digest;
    let (scheduler, mut events) = client
        .subscribe(FrameworkConfig::new("failover").min_heartbeat_timeout(Duration::from_secs(1)))
        .await
        .unwrap();
    let offer = offers(&mut events).await.remove(0);
    let ids: Vec<String> = (0..2)
        .map(|i| format!("failover-{}-{i}", scheduler.framework_id()))
        .collect();
    scheduler
        .accept(
            vec![offer.offer_id],
            ids.iter().map(|id| spec(id, &digest)).collect(),
            None,
        )
        .await
        .unwrap();
    wait_until(PATIENCE, "the tasks run", || agent.hanging() == 2).await;

    // 1. The connection breaks.
    proxy.cut();
    next_event(&mut events, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    let Event::Resubscribed { framework_id } = next_event(&mut events, "resubscribed", |e| {
        matches!(e, Event::Resubscribed { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(framework_id, scheduler.framework_id());
    // The session reconciles its tasks: still RUNNING, not lost.
    let mut reconciled = HashSet::new();
    while reconciled.len() < 2 {
        if let Event::Update(s) = next_event(
            &mut events,
            "reconciliation",
            |e| matches!(e, Event::Update(s) if s.uuid.is_empty()),
        )
        .await
        {
            assert_eq!(s.state(), TaskState::Running, "{s:?}");
            reconciled.insert(s.task_id);
        }
    }

    // 2. The network goes silent: missing heartbeats are noticed.
    proxy.pause(true);
    next_event(
        &mut events,
        "silence noticed",
        |e| matches!(e, Event::Disconnected { reason } if reason.contains("no event")),
    )
    .await;
    proxy.pause(false);
    next_event(&mut events, "resubscribed again", |e| {
        matches!(e, Event::Resubscribed { .. })
    })
    .await;
    assert_eq!(scheduler.stats().resubscriptions, 2);

    // The tasks ran on; their ends reach the new stream.
    agent.finish_all().await;
    let seen = wait_terminal(&mut events, &ids).await;
    assert!(
        seen.iter()
            .filter(|s| s.state() == TaskState::Finished)
            .count()
            >= 2
    );
    wait_until(PATIENCE, "acknowledged through the new stream", || {
        agent.unacked() == 0
    })
    .await;
    scheduler.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_kills_its_tasks_and_reports() {
    let m = start_master().await;
    let agent = ScriptedAgent::start(m.addr, 2.0, 2 * GIB, |_| Script::Hang).await;
    let client = Client::connect(&m.url).await.unwrap();
    let digest = client.upload(HELLO_WAT).await.unwrap().digest;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let job = Job::new("cancel")
        .tasks(vec![TaskTemplate::new(digest).mem(16 * MIB); 3])
        .on_update({
            let seen = seen.clone();
            move |u| seen.lock().unwrap().push(u.status.state())
        });
    let cancel = job.cancel_handle();
    let run = tokio::spawn(job.run(client));
    wait_until(PATIENCE, "the tasks run", || agent.hanging() == 3).await;
    cancel.cancel();
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("job ends")
        .unwrap()
        .unwrap();
    assert!(report.cancelled);
    assert!(
        report.tasks.iter().all(|t| t.state == TaskState::Killed),
        "{:?}",
        report.tasks
    );
    assert_eq!(agent.hanging(), 0, "the agent was told to kill them");
    assert!(seen.lock().unwrap().contains(&TaskState::Killed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_job_is_run_by_the_master_with_retries_by_exit_code() {
    let m = start_master().await;
    // The first attempt of every even index exits 75, "try later".
    let _agent = ScriptedAgent::start(m.addr, 2.0, 2 * GIB, |spec| {
        let env = |name: &str| {
            spec.env
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.value.clone())
                .unwrap_or_default()
        };
        let index: u32 = env("WASMOS_INDEX").parse().unwrap();
        if index.is_multiple_of(2) && env("WASMOS_ATTEMPT") == "1" {
            Script::Fail(75)
        } else {
            Script::Finish
        }
    })
    .await;
    let client = Client::connect(&m.url).await.unwrap();
    let digest = client.upload(HELLO_WAT).await.unwrap().digest;
    let template = TaskTemplate::new(digest).cpus(0.1).mem(16 * MIB).arg("{i}");
    let spec = wasmos_sdk::JobSpec::new(&template, 20)
        .name("sdk-submit")
        .retry(&RetryPolicy::default().retry_exit_code(75));
    let id = client.submit(&spec).await.unwrap();
    let job = tokio::time::timeout(PATIENCE, client.wait_job(&id, Duration::from_millis(50)))
        .await
        .expect("the job ends")
        .unwrap();
    assert_eq!(job.state(), proto::JobState::Succeeded, "{job:?}");
    assert_eq!((job.succeeded, job.count), (20, 20));
    let results = client.job_results(&id, false).await.unwrap();
    assert_eq!(results.len(), 20);
    for r in &results {
        let attempts = r.outcome.as_ref().unwrap().attempts;
        assert_eq!(attempts, if r.index % 2 == 0 { 2 } else { 1 }, "{r:?}");
    }
    assert!(client.job_results(&id, true).await.unwrap().is_empty());
    assert!(client.jobs().await.unwrap().iter().any(|j| j.job_id == id));
    let missing = client.job("j999").await.unwrap_err();
    assert_eq!(missing.code(), Some(tonic::Code::NotFound));
}
