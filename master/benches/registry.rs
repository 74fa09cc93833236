//! The registry: `cargo bench -p wasmos-master --bench registry [-- --agents
//! N] [--frameworks N] [--tasks N]`.
//!
//! On the temporary directory's disk (ext4 here), it measures
//! - the commit of one turn of the actor (a launch of 4 tasks: 4 records
//!   put), as the master does it before the launch goes to its agent:
//!   median and p99 of 2,000;
//! - a restart: `Master::start` on a registry of 10,000 agents, 1,000
//!   frameworks and 100,000 tasks, until it serves (the registry loaded,
//!   the core rebuilt, the new epoch durable, the ports bound); median of 5,
//!   and of that, the median of 3 plain loads (read and decode);
//! - the registry's bytes on disk per task;
//! - a restart on a registry of jobs (`--jobs`, 10,000, of 100 indices,
//!   ended, and one array of 1,000,000 indices half done), until the job
//!   service answers its first call (`restart_with_jobs_p50_ms`): an ended
//!   job's chunks are not read at start, the live array's are.
//!
//! Prints one JSON line.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmos_master::jobs::{Jobs, Owner};
use wasmos_master::server::{Master, MasterConfig};
use wasmos_master::store::{Record, RedbStore, Store, Write};
use wasmos_proto::v1;

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn resources(cpus: f64, mem: u64) -> Option<v1::Resources> {
    Some(v1::Resources { cpus, mem, disk: 0 })
}

fn agent(i: usize) -> Record {
    Record::Agent(v1::StoredAgent {
        info: Some(v1::AgentInfo {
            agent_id: format!("bench-A{i}"),
            hostname: format!("node-{i}.rack-{}.example", i / 40),
            resources: resources(64.0, 256 << 30),
            version: "0.1.0".into(),
            ..Default::default()
        }),
        last_seen_ms: 1_767_000_000_000,
        draining: false,
    })
}

fn framework(i: usize) -> Record {
    Record::Framework(v1::StoredFramework {
        info: Some(v1::FrameworkInfo {
            framework_id: format!("bench-F{i}"),
            name: format!("job-{i}"),
            role: "default".into(),
            failover_timeout_ms: 600_000,
            ..Default::default()
        }),
        connected: true,
        failover_deadline_ms: 0,
        failover_timeout_ms: 600_000,
        suppressed: false,
    })
}

/// Task `i`, RUNNING, of framework `i % frameworks` on agent `i % agents`.
fn task(i: usize, agents: usize, frameworks: usize) -> Record {
    let id = format!("job-{}-{i}-1", i % frameworks);
    let agent_id = format!("bench-A{}", i % agents);
    let framework_id = format!("bench-F{}", i % frameworks);
    Record::Task(Box::new(v1::StoredTask {
        framework_id: framework_id.clone(),
        agent_id: agent_id.clone(),
        spec: Some(v1::TaskSpec {
            task_id: id.clone(),
            artifact: "ab".repeat(32),
            resources: resources(0.1, 64 << 20),
            args: vec!["--shard".into(), i.to_string()],
            ..Default::default()
        }),
        status: Some(v1::TaskStatus {
            task_id: id,
            framework_id,
            agent_id,
            state: v1::TaskState::Running as i32,
            uuid: vec![7; 16],
            timestamp_ms: 1_767_000_000_000,
            source: v1::StatusSource::Agent as i32,
            ..Default::default()
        }),
        consumption: vec![v1::StoredConsumption {
            reservation_role: String::new(),
            resources: resources(0.1, 64 << 20),
        }],
        kill_requested: false,
        master_update: None,
        end_unsynced: false,
        usage_counted: false,
    }))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A job service's registry as a master would have written it: `jobs`
/// jobs of 100 indices, all finished, then one array of 1,000,000 indices
/// of which half finished. Driven through the job service's own state
/// machine, so the records are what it writes.
fn write_jobs(store: &RedbStore, jobs: usize) {
    let owner = Owner {
        role: "default".into(),
        principal: "alice".into(),
    };
    let spec = |count: u32| v1::JobSpec {
        name: "bench".into(),
        task: Some(v1::TaskSpec {
            artifact: "ab".repeat(32),
            args: vec!["--index={i}".into()],
            resources: resources(0.1, 1 << 20),
            ..Default::default()
        }),
        count,
        ..Default::default()
    };
    let offers = |n: usize| -> Vec<v1::Offer> {
        (0..n)
            .map(|i| v1::Offer {
                offer_id: format!("o{i}"),
                agent_id: format!("agent-{i}"),
                resources: resources(6.4, 1 << 40),
                ..Default::default()
            })
            .collect()
    };
    let mut state = Jobs::new(1);
    // Runs `owner`'s jobs until `left` indices are done.
    let run = |state: &mut Jobs, mut left: usize| {
        while left > 0 {
            let placement = state.place(&owner, offers(100.min(left.div_ceil(64))));
            let tasks: Vec<v1::TaskSpec> = placement
                .launches
                .into_iter()
                .flat_map(|l| l.tasks)
                .collect();
            assert!(!tasks.is_empty(), "nothing placed");
            for task in tasks.iter().take(left) {
                let status = v1::TaskStatus {
                    task_id: task.task_id.clone(),
                    agent_id: "agent-1".into(),
                    state: v1::TaskState::Finished as i32,
                    exit_code: Some(0),
                    ..Default::default()
                };
                state.update(&status, wasmos_master::Time(1));
            }
            left = left.saturating_sub(tasks.len());
            let writes = state.writes();
            for batch in writes.chunks(2_000) {
                store.commit(batch).expect("commit");
            }
        }
    };
    for _ in 0..jobs {
        state
            .submit(owner.clone(), spec(100), wasmos_master::Time(0))
            .expect("submitted");
    }
    run(&mut state, jobs * 100);
    state
        .submit(owner.clone(), spec(1_000_000), wasmos_master::Time(0))
        .expect("submitted");
    run(&mut state, 500_000);
    store.commit(&state.writes()).expect("commit");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let agents = arg("--agents").unwrap_or(10_000);
    let frameworks = arg("--frameworks").unwrap_or(1_000);
    let tasks = arg("--tasks").unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temporary dir");
    let path = RedbStore::path_in(dir.path());

    // One turn's commit, on a registry that already holds a few thousand
    // tasks (the state of a busy cluster).
    let turns = {
        let store = RedbStore::open(&path).expect("registry");
        wasmos_master::store::open(&store).expect("header");
        let mut next = 0;
        let mut commit_ms = Vec::with_capacity(2_000);
        for _ in 0..2_000 {
            let writes: Vec<Write> = (0..4)
                .map(|_| {
                    next += 1;
                    Write::Put(task(next, 100, 10))
                })
                .collect();
            let start = Instant::now();
            store.commit(&writes).expect("commit");
            commit_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        commit_ms.sort_by(f64::total_cmp);
        commit_ms
    };
    std::fs::remove_file(&path).expect("remove the registry");

    // The big registry, written in batches as a master would have.
    {
        let store = RedbStore::open(&path).expect("registry");
        wasmos_master::store::open(&store).expect("header");
        let records: Vec<Record> = (0..agents)
            .map(agent)
            .chain((0..frameworks).map(framework))
            .chain((0..tasks).map(|i| task(i, agents, frameworks)))
            .collect();
        for batch in records.chunks(5_000) {
            let writes: Vec<Write> = batch.iter().cloned().map(Write::Put).collect();
            store.commit(&writes).expect("commit");
        }
    }
    let bytes = std::fs::metadata(&path).expect("registry file").len();

    // Of which reading and decoding the records.
    let mut load_ms = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let store = RedbStore::open(&path).expect("registry");
        let registry = store.load().expect("load");
        assert_eq!(registry.tasks.len(), tasks);
        load_ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    load_ms.sort_by(f64::total_cmp);

    let mut restart_ms = Vec::new();
    for _ in 0..5 {
        let mut config = MasterConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
        config.core.agent_reregister_timeout = Duration::from_secs(600);
        config.transport = wasmos_master::server::Transport::Insecure;
        let start = Instant::now();
        let master = Master::start(config).await.expect("master starts");
        restart_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        master.stop().await;
    }
    restart_ms.sort_by(f64::total_cmp);

    let jobs = arg("--jobs").unwrap_or(10_000);
    let jobs_dir = tempfile::tempdir().expect("temporary dir");
    {
        let store = RedbStore::open(&RedbStore::path_in(jobs_dir.path())).expect("registry");
        wasmos_master::store::open(&store).expect("header");
        write_jobs(&store, jobs);
    }
    let mut jobs_restart_ms = Vec::new();
    for _ in 0..3 {
        let mut config = MasterConfig::new("127.0.0.1:0".parse().unwrap(), jobs_dir.path().into());
        config.transport = wasmos_master::server::Transport::Insecure;
        let start = Instant::now();
        let master = Master::start(config).await.expect("master starts");
        // Calls wait until the jobs are rebuilt.
        let mut client = v1::jobs_client::JobsClient::connect(master.url())
            .await
            .expect("connects");
        let listed = client
            .list(v1::ListJobsRequest {
                limit: 1,
                ..Default::default()
            })
            .await
            .expect("lists")
            .into_inner();
        jobs_restart_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(listed.jobs.len(), 1);
        master.stop().await;
    }
    jobs_restart_ms.sort_by(f64::total_cmp);

    println!(
        "{}",
        json!({
            "bench": "registry",
            "turn_commit_p50_ms": round3(percentile(&turns, 50.0)),
            "turn_commit_p99_ms": round3(percentile(&turns, 99.0)),
            "agents": agents,
            "frameworks": frameworks,
            "tasks": tasks,
            "restart_to_serving_p50_ms": round3(percentile(&restart_ms, 50.0)),
            "restart_to_serving_max_ms": round3(percentile(&restart_ms, 100.0)),
            "load_p50_ms": round3(percentile(&load_ms, 50.0)),
            "registry_bytes": bytes,
            "bytes_per_task": bytes / tasks.max(1) as u64,
            "target_restart_ms": 1000,
            "jobs": jobs,
            "restart_with_jobs_p50_ms": round3(percentile(&jobs_restart_ms, 50.0)),
        })
    );
}
