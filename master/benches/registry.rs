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
//! - the registry's bytes on disk per task.
//!
//! Prints one JSON line.

use std::time::{Duration, Instant};

use serde_json::json;
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
    }))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
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
        })
    );
}
