//! End-to-end tests of a real cluster: `wasmos master` and `wasmos agent`
//! processes on loopback, frameworks written with the SDK, guests built by
//! `scripts/test` (examples/guests) and `.wat` fixtures.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Cluster, wait_for};
use wasmos_proto::v1;
use wasmos_proto::v1::operator_client::OperatorClient;
use wasmos_sdk::{Client, Job, RetryPolicy, TaskTemplate};

/// A guest's bytes (see [`support::guest`]).
fn guest(name: &str) -> Vec<u8> {
    std::fs::read(support::guest(name)).expect("read the guest")
}

const SPIN_WAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"#;

async fn operator(cluster: &Cluster) -> OperatorClient<tonic::transport::Channel> {
    OperatorClient::connect(cluster.url.clone())
        .await
        .expect("operator client")
}

async fn stdout_of(cluster: &Cluster, task: &str) -> String {
    let reply = operator(cluster)
        .await
        .read_sandbox(v1::ReadSandboxRequest {
            task_id: task.into(),
            target: v1::SandboxTarget::Stdout as i32,
            ..Default::default()
        })
        .await
        .expect("sandbox read")
        .into_inner();
    String::from_utf8_lossy(&reply.data).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_task_job_finishes_with_the_right_outputs() {
    // Every other test runs the master on its default one thread.
    let cluster = Cluster::start(2, &["--threads", "3"], &["--cpus", "1"]);
    let client = Client::connect(&cluster.url).await.unwrap();
    let hello = client.upload(guest("hello")).await.unwrap();
    let tasks = (0..100).map(|i| {
        TaskTemplate::new(&hello.digest)
            .arg(format!("item-{i}"))
            .env("INDEX", i.to_string())
    });
    let report = Job::new("hundred").tasks(tasks).run(&client).await.unwrap();
    assert_eq!(report.tasks.len(), 100);
    assert!(
        report.succeeded(),
        "{:?}",
        report.failed().collect::<Vec<_>>()
    );
    let agents: std::collections::HashSet<&str> =
        report.tasks.iter().map(|t| t.agent_id.as_str()).collect();
    assert_eq!(agents.len(), 2, "both agents ran tasks");
    for outcome in report.tasks.iter().step_by(9) {
        let out = stdout_of(&cluster, &outcome.task_id).await;
        let i = outcome.index;
        assert!(
            out.contains(&format!("argv[1]=item-{i}\n")),
            "task {i}: {out}"
        );
        assert!(out.contains(&format!("env INDEX={i}\n")), "task {i}: {out}");
        assert_eq!(outcome.usage.unwrap().stdout_bytes, out.len() as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_module_fails_with_its_reason_and_the_cluster_stays_healthy() {
    let cluster = Cluster::start(1, &[], &[]);
    let client = Client::connect(&cluster.url).await.unwrap();
    let junk = client
        .upload_raw(b"\0asm but not really a module")
        .await
        .unwrap();
    let report = Job::new("junk")
        .task(TaskTemplate::new(&junk.digest))
        .retry(RetryPolicy::never())
        .run(&client)
        .await
        .unwrap();
    let outcome = &report.tasks[0];
    assert_eq!(outcome.state, v1::TaskState::Error);
    assert_eq!(outcome.reason, v1::Reason::InvalidModule);
    assert!(!outcome.message.is_empty());
    // The same agent still runs good work.
    let hello = client.upload(guest("hello")).await.unwrap();
    let report = Job::new("after")
        .task(TaskTemplate::new(&hello.digest))
        .run(&client)
        .await
        .unwrap();
    assert!(report.succeeded());
    assert_eq!(cluster.get("/health"), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_artifact_upload_is_refused_and_nothing_is_stored() {
    let cluster = Cluster::start(0, &[], &[]);
    let client = Client::connect(&cluster.url).await.unwrap();
    let bytes = guest("hello");
    let wrong = "0".repeat(64);
    let err = client.upload_expecting(&bytes, &wrong).await.unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    let mut artifacts = v1::artifacts_client::ArtifactsClient::connect(cluster.url.clone())
        .await
        .unwrap();
    for digest in [wrong, wasmos_sdk::digest_of(&bytes)] {
        let status = artifacts
            .stat(v1::StatRequest { digest })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_weighted_two_to_one_run_tasks_two_to_one_on_a_saturated_cluster() {
    // What this measures is the allocator's weights, so the registry stays
    // in memory: on a loaded machine, registry syncs on every launch slow the
    // role that launches twice as often more, and blur the ratio.
    let cluster = Cluster::start(
        2,
        &["--role-weight", "gold=2", "--ephemeral"],
        &["--cpus", "1"],
    );
    let client = Client::connect(&cluster.url).await.unwrap();
    let sleeper = client.upload(guest("sleeper")).await.unwrap();
    // 20 slots of 0.1 cpus; each role has far more work than fits for the
    // whole measurement. Sleeps of 250-349 ms: tasks launched together
    // would otherwise end together, and each agent's whole cpu would come
    // free (and be offered to one role) at once.
    let job = |role: &str| {
        let tasks = (0..1000).map(|i| {
            TaskTemplate::new(&sleeper.digest)
                .arg((250 + i * 37 % 100).to_string())
                .cpus(0.1)
                .mem(16 << 20)
        });
        Job::new(role).role(role).tasks(tasks)
    };
    let (c1, c2) = (client.clone(), client.clone());
    let (gold, silver) = (job("gold"), job("silver"));
    let gold = tokio::spawn(async move { gold.run(&c1).await });
    let silver = tokio::spawn(async move { silver.run(&c2).await });
    // The cpus each role holds (running tasks and offers), as the master
    // sees them, averaged over a window once both are busy.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (mut g, mut s) = (0.0, 0.0);
    for _ in 0..60 {
        let state: serde_json::Value = serde_json::from_str(&cluster.get("/state")).unwrap();
        for role in state["roles"].as_array().unwrap() {
            let cpus = role["allocated"]["cpu_millis"].as_f64().unwrap() / 1000.0;
            match role["name"].as_str() {
                Some("gold") => g += cpus,
                Some("silver") => s += cpus,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        s > 60.0 * 0.3,
        "silver barely ran: gold {g:.1}, silver {s:.1} cpu-samples"
    );
    assert!(
        g + s > 60.0 * 1.8,
        "the cluster was not saturated: {:.2} cpus held",
        (g + s) / 60.0
    );
    let ratio = g / s;
    eprintln!("gold/silver cpus held: {ratio:.3}");
    assert!(
        (1.7..=2.3).contains(&ratio),
        "gold/silver cpus = {g:.1}/{s:.1} = {ratio:.2}, want 2 ± 15%"
    );
    gold.abort();
    silver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_agent_loses_its_tasks_quickly_and_the_job_completes_elsewhere() {
    // Heartbeats every 300 ms; lost after 700 ms of silence (< 3 intervals).
    let master = ["--agent-heartbeat", "300ms", "--agent-timeout", "700ms"];
    let mut cluster = Cluster::start(2, &master, &["--cpus", "1"]);
    let client = Client::connect(&cluster.url).await.unwrap();
    let sleeper = client.upload(guest("sleeper")).await.unwrap();
    let ids = [cluster.agent_id(0), cluster.agent_id(1)];
    // The victim is the agent the first task runs on.
    let victim = Arc::new(Mutex::new(None::<String>));
    let lost_at = Arc::new(Mutex::new(None::<Instant>));
    let (v, l) = (victim.clone(), lost_at.clone());
    let tasks = (0..10).map(|_| {
        TaskTemplate::new(&sleeper.digest)
            .arg("3000")
            .cpus(0.1)
            .mem(16 << 20)
    });
    let job = Job::new("survivor").tasks(tasks).on_update(move |u| {
        if u.status.state() == v1::TaskState::Running {
            v.lock().unwrap().get_or_insert(u.status.agent_id.clone());
        }
        if u.status.state() == v1::TaskState::Lost {
            l.lock().unwrap().get_or_insert(Instant::now());
        }
    });
    let c = client.clone();
    let run = tokio::spawn(async move { job.run(&c).await });
    let victim =
        wait_for(Duration::from_secs(30), || victim.lock().unwrap().clone()).expect("tasks run");
    let index = ids
        .iter()
        .position(|id| *id == victim)
        .expect("a known agent");
    let killed_at = Instant::now();
    // The agent's machine goes: its executor with it.
    cluster.kill_machine(index);
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let lost_after = lost_at.lock().unwrap().expect("tasks were reported LOST") - killed_at;
    assert!(
        lost_after < Duration::from_millis(900),
        "LOST after {lost_after:?}, over 3 heartbeat intervals"
    );
    assert!(
        report.succeeded(),
        "{:?}",
        report.failed().collect::<Vec<_>>()
    );
    let rerun: Vec<_> = report.tasks.iter().filter(|t| t.attempts > 1).collect();
    assert!(!rerun.is_empty(), "some tasks ran again");
    assert!(
        rerun.iter().all(|t| t.agent_id != victim),
        "reruns went elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_re_registers_under_its_id() {
    let mut cluster = Cluster::start(1, &[], &[]);
    let id = cluster.agent_id(0);
    cluster.kill_agent(0);
    wait_for(Duration::from_secs(10), || {
        let state: serde_json::Value = serde_json::from_str(&cluster.get("/state")).ok()?;
        state["agents"].as_array()?.is_empty().then_some(())
    })
    .expect("the master notices the agent is gone");
    cluster.restart_agent(0);
    cluster.wait_agents(1);
    let state: serde_json::Value = serde_json::from_str(&cluster.get("/state")).unwrap();
    assert_eq!(
        state["agents"][0]["id"],
        id.as_str(),
        "same id after restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_that_resubscribes_in_time_keeps_its_tasks() {
    use tokio_stream::StreamExt;
    use v1::scheduler_client::SchedulerClient;
    let cluster = Cluster::start(1, &[], &[]);
    let client = Client::connect(&cluster.url).await.unwrap();
    let sleeper = client.upload(guest("sleeper")).await.unwrap();
    let mut scheduler = SchedulerClient::connect(cluster.url.clone()).await.unwrap();
    let info = v1::FrameworkInfo {
        name: "fo".into(),
        failover_timeout_ms: 10_000,
        ..Default::default()
    };
    let mut events = scheduler
        .subscribe(v1::SubscribeRequest {
            framework: Some(info.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let mut framework_id = String::new();
    let offer = loop {
        match events.next().await.unwrap().unwrap().kind.unwrap() {
            v1::event::Kind::Subscribed(s) => framework_id = s.framework_id,
            v1::event::Kind::Offers(o) => break o.offers[0].clone(),
            _ => {}
        }
    };
    let spec = TaskTemplate::new(&sleeper.digest)
        .arg("2500")
        .spec("failover-task");
    scheduler
        .accept(v1::AcceptRequest {
            framework_id: framework_id.clone(),
            offer_ids: vec![offer.offer_id],
            tasks: vec![spec],
            filters: None,
        })
        .await
        .unwrap();
    drop(events); // the stream drops
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut info = info;
    info.framework_id = framework_id.clone();
    let mut events = scheduler
        .subscribe(v1::SubscribeRequest {
            framework: Some(info),
        })
        .await
        .expect("re-subscription within the failover timeout")
        .into_inner();
    scheduler
        .reconcile(v1::ReconcileRequest {
            framework_id: framework_id.clone(),
            task_ids: vec![],
        })
        .await
        .unwrap();
    let mut saw_alive = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(v1::event::Kind::Subscribed(s)) = &event.kind {
            assert_eq!(s.framework_id, framework_id);
        }
        if let Some(v1::event::Kind::Updates(u)) = event.kind {
            for s in u.statuses.iter().filter(|s| s.task_id == "failover-task") {
                match s.state() {
                    v1::TaskState::Staging | v1::TaskState::Starting | v1::TaskState::Running => {
                        saw_alive = true
                    }
                    v1::TaskState::Finished => {
                        assert!(saw_alive, "reconciliation showed the task alive first");
                        return;
                    }
                    other => panic!("task ended {other:?}: {}", s.message),
                }
            }
        }
    }
    panic!("the task never finished after failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_file_read_through_the_master_equals_what_the_task_wrote() {
    let cluster = Cluster::start(1, &[], &[]);
    let client = Client::connect(&cluster.url).await.unwrap();
    let files = client.upload(guest("files")).await.unwrap();
    let text = "written by a task, read through the master";
    let report = Job::new("writer")
        .task(
            TaskTemplate::new(&files.digest)
                .args(["write", "result.txt", text])
                .disk(1 << 20),
        )
        .run(&client)
        .await
        .unwrap();
    assert!(report.succeeded(), "{:?}", report.tasks);
    let task = report.tasks[0].task_id.clone();
    let mut op = operator(&cluster).await;
    let reply = op
        .read_sandbox(v1::ReadSandboxRequest {
            task_id: task.clone(),
            target: v1::SandboxTarget::File as i32,
            path: "result.txt".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&reply.data), text);
    let listing = op
        .read_sandbox(v1::ReadSandboxRequest {
            task_id: task.clone(),
            target: v1::SandboxTarget::List as i32,
            path: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.entries[0].name, "result.txt");
    assert_eq!(listing.entries[0].size, text.len() as u64);
    // A path out of the root is refused.
    let escape = op
        .read_sandbox(v1::ReadSandboxRequest {
            task_id: task,
            target: v1::SandboxTarget::File as i32,
            path: "../stdout".into(),
            ..Default::default()
        })
        .await;
    assert!(escape.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_tasks_sandbox_goes_after_the_retention_time() {
    let cluster = Cluster::start(
        1,
        &[],
        &["--sandbox-retention", "2s", "--gc-interval", "200ms"],
    );
    let client = Client::connect(&cluster.url).await.unwrap();
    let hello = client.upload(guest("hello")).await.unwrap();
    let report = Job::new("short-lived")
        .task(TaskTemplate::new(&hello.digest).args(["kept"]))
        .run(&client)
        .await
        .unwrap();
    assert!(report.succeeded(), "{:?}", report.tasks);
    let task = report.tasks[0].task_id.clone();
    // Readable at first (the job acknowledged its updates)...
    assert!(stdout_of(&cluster, &task).await.contains("kept"));
    // ...and gone once the retention time passed.
    let read = |task: String| {
        let cluster = &cluster;
        async move {
            operator(cluster)
                .await
                .read_sandbox(v1::ReadSandboxRequest {
                    task_id: task,
                    target: v1::SandboxTarget::Stdout as i32,
                    ..Default::default()
                })
                .await
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match read(task.clone()).await {
            Err(_) => break,
            Ok(r) if !r.get_ref().error.is_empty() => break,
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "the sandbox outlived its retention"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_stops_a_looping_task_within_a_second() {
    let cluster = Cluster::start(1, &[], &[]);
    let client = Client::connect(&cluster.url).await.unwrap();
    let spin = client.upload(SPIN_WAT).await.unwrap();
    let running = Arc::new(Mutex::new(None::<String>));
    let killed = Arc::new(Mutex::new(None::<Instant>));
    let (r, k) = (running.clone(), killed.clone());
    let job = Job::new("spinner")
        .task(TaskTemplate::new(&spin.digest))
        .on_update(move |u| match u.status.state() {
            v1::TaskState::Running => *r.lock().unwrap() = Some(u.status.task_id.clone()),
            v1::TaskState::Killed => *k.lock().unwrap() = Some(Instant::now()),
            _ => {}
        });
    let c = client.clone();
    let run = tokio::spawn(async move { job.run(&c).await });
    let task = wait_for(Duration::from_secs(30), || running.lock().unwrap().clone())
        .expect("the task runs");
    let start = Instant::now();
    let status = support::wasmos()
        .args(["kill", "--master", &cluster.url, &task])
        .status()
        .unwrap();
    assert!(status.success());
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let took = killed.lock().unwrap().expect("KILLED arrived") - start;
    assert!(took < Duration::from_secs(1), "kill took {took:?}");
    assert_eq!(report.tasks[0].state, v1::TaskState::Killed);
    assert_eq!(report.tasks[0].reason, v1::Reason::Killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_state_answer_with_the_cluster() {
    let cluster = Cluster::start(2, &[], &[]);
    let client = Client::connect(&cluster.url).await.unwrap();
    let hello = client.upload(guest("hello")).await.unwrap();
    let tasks = (0..5).map(|_| TaskTemplate::new(&hello.digest));
    let report = Job::new("metered")
        .role("metered")
        .tasks(tasks)
        .run(&client)
        .await
        .unwrap();
    assert!(report.succeeded());
    let metrics = cluster.get("/metrics");
    assert!(
        metrics.contains("wasmos_agents{state=\"connected\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("wasmos_tasks_terminal_total{state=\"finished\",reason=\"unspecified\"} 5"),
        "{metrics}"
    );
    let fuel_line = metrics
        .lines()
        .find(|l| l.starts_with("wasmos_fuel_consumed_total{role=\"metered\""))
        .expect("fuel accounted to the role");
    assert!(
        fuel_line.contains("principal=\"local\"") && !fuel_line.contains("framework="),
        "labels carry the role and principal, never a framework id: {fuel_line}"
    );
    let fuel: f64 = fuel_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(fuel > 0.0, "{fuel_line}");
    // Every launch timed to its first RUNNING (or end), within the buckets.
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name}: {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("wasmos_tasks_launched_total "), 5.0);
    assert_eq!(value("wasmos_launch_seconds_count"), 5.0);
    assert_eq!(value("wasmos_launch_seconds_bucket{le=\"10\"}"), 5.0);
    assert!(value("wasmos_launch_seconds_sum") > 0.0);
    assert!(value("wasmos_registry_commit_seconds_count") >= 1.0);
    // Each end was sent before the executor synced it; the syncs that
    // confirmed them are timed (at least one: a sync may cover several).
    assert!(value("wasmos_checkpoint_sync_seconds_count") >= 1.0);
    assert!(value("wasmos_checkpoint_sync_seconds_sum") > 0.0);
    // None was lost in a crash: nothing adopted.
    assert_eq!(value("wasmos_adoptions_total{outcome=\"adopted\"}"), 0.0);
    assert!(metrics.contains("wasmos_fairness_gap "), "{metrics}");
    let state: serde_json::Value = serde_json::from_str(&cluster.get("/state")).unwrap();
    assert_eq!(state["agents"].as_array().unwrap().len(), 2);
    assert_eq!(state["tasks"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_framework_runs() {
    let cluster = Cluster::start(1, &[], &[]);
    let example = std::path::Path::new(env!("CARGO_BIN_EXE_wasmos")).with_file_name("hello_job");
    assert!(
        example.exists(),
        "{} missing: build the workspace (scripts/test)",
        example.display()
    );
    let wat = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wat/hello.wat");
    let out = std::process::Command::new(example)
        .args(["--master", &cluster.url, "--instances", "3"])
        .arg(wat)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.contains("Finished")).count(),
        3,
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_artifact_is_missing_fails_as_unavailable() {
    let cluster = Cluster::start(1, &[], &[]);
    let client = Client::connect(&cluster.url).await.unwrap();
    let never_uploaded = "ab".repeat(32);
    let report = Job::new("missing")
        .task(TaskTemplate::new(&never_uploaded))
        .retry(RetryPolicy::never())
        .run(&client)
        .await
        .unwrap();
    assert_eq!(
        report.tasks[0].reason,
        v1::Reason::ArtifactUnavailable,
        "{:?}",
        report.tasks[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_artifacts_expire_and_used_ones_stay() {
    let cluster = Cluster::start(0, &["--artifact-ttl", "1500ms"], &[]);
    let client = Client::connect(&cluster.url).await.unwrap();
    let kept = client.upload(guest("hello")).await.unwrap();
    let dropped = client.upload(SPIN_WAT).await.unwrap();
    let mut artifacts = v1::artifacts_client::ArtifactsClient::connect(cluster.url.clone())
        .await
        .unwrap();
    // Asking about `kept` now and then counts as using it.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        artifacts
            .stat(v1::StatRequest {
                digest: kept.digest.clone(),
            })
            .await
            .expect("kept");
    }
    let gone = artifacts
        .stat(v1::StatRequest {
            digest: dropped.digest,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
}
