//! The e2e bench's path, shared with the jobs bench: a master and two
//! agents (real processes on loopback) and one framework that fills the
//! cluster with trivial tasks through offers and `Accept`s, timed from
//! each `Accept` to its task's `RUNNING` (see `benches/e2e.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use wasmos_master::Resources;
use wasmos_master::packing;
use wasmos_sdk::proto as v1;
use wasmos_sdk::{Client, ConnectOptions, Event, FrameworkConfig, is_terminal};

use super::*;

pub const AGENTS: usize = 2;
const AGENT_CPUS: &str = "1";
const AGENT_MEM: &str = "4GiB";
const TASK_MEM: u64 = 8 << 20;
/// No progress for this long: the bench fails instead of hanging.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The type of the file system holding `path`, from `/proc/mounts` (the
/// longest mount point that contains it); "unknown" elsewhere.
fn file_system_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point)
                .then(|| (point.len(), kind.to_string()))
        })
        .max()
        .map_or_else(|| "unknown".into(), |(_, kind)| kind)
}

/// Where the master keeps its registry in one run of the bench.
#[derive(Clone, Copy, PartialEq)]
pub enum Registry {
    /// `registry.redb` in its work dir, on disk.
    Durable,
    /// `--ephemeral`: in memory.
    InMemory,
    /// `--etcd`: in an etcd of the bench's own (Debian's `etcd`, its data
    /// in the temp dir), the master leading two standbys.
    Etcd,
}

/// Where the agents run their tasks in one run of the bench.
#[derive(Clone, Copy, PartialEq)]
pub enum Executor {
    /// The default: `wasmos executor`, a process of its own per agent.
    Process,
    /// `--in-process-executor`: tasks run in the agent's process.
    InProcess,
}

/// How the master's port speaks in one run of the bench.
#[derive(Clone, Copy, PartialEq)]
pub enum Transport {
    /// The default: TLS, mTLS agents, a token on every call.
    Tls,
    /// `--insecure`: plaintext.
    Insecure,
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn task_spec(artifact: &str, i: usize, cpu_millis: u64) -> v1::TaskSpec {
    v1::TaskSpec {
        task_id: format!("e2e-{i}"),
        artifact: artifact.to_string(),
        resources: Some(v1::Resources {
            cpus: cpu_millis as f64 / 1000.0,
            mem: TASK_MEM,
            disk: 0,
        }),
        ..Default::default()
    }
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn task_index(task_id: &str) -> Option<usize> {
    task_id.strip_prefix("e2e-")?.parse().ok()
}

#[derive(Clone, Copy, Default)]
struct TaskTimes {
    accepted: Option<Instant>,
    /// Wall clock of the Accept, and the agent's timestamps of STARTING,
    /// RUNNING and the end (ms since the epoch): where the time goes.
    accepted_ms: u64,
    starting_ms: u64,
    running_ms: u64,
    ended_ms: u64,
    running: bool,
    done: bool,
}

/// One run: `tasks` tasks of `task_cpu_millis` thousandths of a cpu each
/// on a new cluster; returns its JSON.
pub async fn run(
    registry: Registry,
    transport: Transport,
    executor: Executor,
    tasks: usize,
    task_cpu_millis: u64,
) -> serde_json::Value {
    let base = std::env::var_os("WASMOS_BENCH_WORK_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| Path::new("/dev/shm").is_dir().then(|| "/dev/shm".into()))
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("temporary work dir");

    let master_threads = arg("--master-threads").unwrap_or(1u16).to_string();
    let registry_base = std::env::var_os("WASMOS_BENCH_REGISTRY_DIR")
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let master_dir = tempfile::tempdir_in(&registry_base).expect("the master's work dir");
    let mut master_args = vec![
        "master",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--threads",
        &master_threads,
    ];
    if registry == Registry::InMemory {
        master_args.push("--ephemeral");
    }
    let etcd = (registry == Registry::Etcd).then(super::etcd::Etcd::start);
    if let Some(etcd) = &etcd {
        // Compaction within the run's seconds, not once a minute: the file
        // size reported is then what a long run settles at.
        master_args.extend(["--etcd", etcd.url.as_str(), "--etcd-compact-every", "5s"]);
    }
    if transport == Transport::Insecure {
        master_args.push("--insecure");
    }
    let (master, lines) = spawn(
        &master_args,
        master_dir.path(),
        &["listening on", "/metrics on"],
    );
    let mut processes = Processes(vec![master], Vec::new());
    // Two standbys beside the leader, as a cluster on etcd runs (their CPU
    // is not counted: they only renew their leases).
    let standby_dirs: Vec<tempfile::TempDir> = etcd
        .iter()
        .flat_map(|_| (0..2).map(|_| tempfile::tempdir_in(&registry_base).expect("work dir")))
        .collect();
    let mut standbys = Processes(Vec::new(), Vec::new());
    for (etcd, dir) in etcd
        .iter()
        .flat_map(|e| standby_dirs.iter().map(move |d| (e, d)))
    {
        let args = [
            "master",
            "--etcd",
            &etcd.url,
            "--listen",
            "127.0.0.1:0",
            "--no-http",
        ];
        standbys
            .0
            .push(spawn(&args, dir.path(), &["standing by"]).0);
    }
    let etcd_before = etcd.as_ref().map(etcd_counters);
    let url = url_in(&lines[0]);
    let http = last_word(&lines[1]);
    let credentials = (transport == Transport::Tls).then(|| Credentials {
        ca_pem: std::fs::read_to_string(master_dir.path().join("ca.pem")).expect("the CA"),
        token: std::fs::read_to_string(master_dir.path().join("admin.token"))
            .expect("the admin token")
            .trim()
            .to_string(),
    });
    let join = credentials.as_ref().map(|c| {
        token_create(
            &url,
            master_dir.path(),
            &c.token,
            &["--agent", "--uses", "10"],
        )
    });
    for i in 0..AGENTS {
        let hostname = format!("agent-{i}");
        let mut agent_args = vec![
            "agent",
            "--master",
            &url,
            "--cpus",
            AGENT_CPUS,
            "--mem",
            AGENT_MEM,
            "--hostname",
            &hostname,
        ];
        // The join string from a file, as an operator gives it (on the
        // command line it would show in `ps`).
        let join_file = dir.path().join("join");
        let join_file = join_file.display().to_string();
        if let Some(join) = &join {
            std::fs::write(&join_file, join).expect("write the join string");
            agent_args.extend(["--join-file", join_file.as_str()]);
        }
        if executor == Executor::InProcess {
            agent_args.push("--in-process-executor");
        }
        let (agent, _) = spawn(
            &agent_args,
            &dir.path().join(&hostname),
            &["wasmos agent offering"],
        );
        processes.0.push(agent);
    }
    wait_agents(&http, AGENTS, credentials.as_ref());
    let launches_before = launch_histogram(&http, credentials.as_ref());
    // Each agent's executor, whose CPU counts with its agent's.
    let executors: Vec<Option<u32>> = (0..AGENTS)
        .map(|i| {
            let pid_file = dir.path().join(format!("agent-{i}")).join("executor.pid");
            (executor == Executor::Process).then(|| {
                std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no executor pid in {}", pid_file.display()))
            })
        })
        .collect();
    processes.1.extend(executors.iter().flatten());

    // The framework is a principal, not an admin: every call goes through
    // the ownership, role and artifact checks a real user's would.
    let principal_token = credentials.as_ref().map(|c| {
        token_create(
            &url,
            master_dir.path(),
            &c.token,
            &["--principal", "bench", "--roles", "default"],
        )
    });
    let options = ConnectOptions {
        ca_pem: credentials.as_ref().map(|c| c.ca_pem.clone()),
        token: principal_token,
        identity: None,
    };
    let client = Client::connect_with(&url, options)
        .await
        .expect("connect to the master");
    let artifact = client.upload(HI_WAT).await.expect("upload").digest;
    let (scheduler, mut events) = client
        .subscribe(FrameworkConfig::new("e2e-bench"))
        .await
        .expect("subscribe");

    let mut times = vec![TaskTimes::default(); tasks];
    let mut next = 0usize; // next task never launched
    let mut retry: Vec<usize> = Vec::new(); // refused by a failed Accept
    let mut latencies_ms: Vec<f64> = Vec::with_capacity(tasks);
    // From the `Accept` to the task's end, as the framework hears it.
    let mut ends_ms: Vec<f64> = Vec::with_capacity(tasks);
    let (mut finished, mut failed, mut running_skipped) = (0usize, 0usize, 0usize);
    let mut accept_calls = 0usize;
    let mut accept_errors = 0usize;
    let mut failures: HashMap<String, usize> = HashMap::new();
    let (refused_tx, mut refused_rx) = mpsc::unbounded_channel::<(Vec<usize>, String)>();

    let pids: Vec<u32> = processes.0.iter().map(Child::id).collect();
    let own = std::process::id();
    let cpu_before: Vec<f64> = pids.iter().chain([&own]).map(|&p| cpu_seconds(p)).collect();
    let executor_cpu_before: Vec<f64> = executors
        .iter()
        .map(|e| e.map_or(0.0, cpu_seconds))
        .collect();
    let start = Instant::now();
    let mut last_progress = Instant::now();
    while finished + failed < tasks {
        let event = tokio::select! {
            event = events.next() => event.expect("the event stream ended"),
            Some((indices, error)) = refused_rx.recv() => {
                accept_errors += 1;
                eprintln!("accept failed ({} tasks will be retried): {error}", indices.len());
                for &i in &indices {
                    times[i].accepted = None;
                }
                retry.extend(indices);
                continue;
            }
            _ = tokio::time::sleep(STALL_LIMIT.saturating_sub(last_progress.elapsed())) => {
                panic!(
                    "no progress for {STALL_LIMIT:?}: {finished} finished, {failed} failed, {next} launched of {tasks}"
                );
            }
        };
        match event {
            Event::Offers(offers) => {
                // One Accept per agent takes all its offers.
                let shape = Resources {
                    cpu_millis: task_cpu_millis,
                    mem: TASK_MEM,
                    disk: 0,
                };
                for pool in packing::by_agent(offers) {
                    let fit = pool.copies_of(&shape) as usize;
                    let offer_ids = pool.offer_ids;
                    let mut batch = Vec::with_capacity(fit);
                    while batch.len() < fit {
                        if let Some(i) = retry.pop() {
                            batch.push(i);
                        } else if next < tasks {
                            batch.push(next);
                            next += 1;
                        } else {
                            break;
                        }
                    }
                    if batch.is_empty() {
                        // Nothing left to launch (or too small an offer).
                        let refuse = if next >= tasks { 3600.0 } else { 0.0 };
                        let scheduler = scheduler.clone();
                        tokio::spawn(async move {
                            let _ = scheduler.decline(offer_ids, Some(refuse)).await;
                        });
                        continue;
                    }
                    let specs: Vec<v1::TaskSpec> = batch
                        .iter()
                        .map(|&i| task_spec(&artifact, i, task_cpu_millis))
                        .collect();
                    let scheduler = scheduler.clone();
                    let refused = refused_tx.clone();
                    accept_calls += 1;
                    let sent = Instant::now();
                    let sent_ms = epoch_ms();
                    for &i in &batch {
                        times[i].accepted = Some(sent);
                        times[i].accepted_ms = sent_ms;
                    }
                    tokio::spawn(async move {
                        // Leftovers go back at once: they are offered again
                        // with the resources the next tasks free.
                        if let Err(e) = scheduler.accept(offer_ids, specs, Some(0.0)).await {
                            let _ = refused.send((batch, e.to_string()));
                        }
                    });
                }
            }
            Event::Update(status) => {
                let now = Instant::now();
                let Some(i) = task_index(&status.task_id).filter(|&i| i < tasks) else {
                    continue;
                };
                let state = status.state();
                let t = &mut times[i];
                if t.done {
                    continue; // a duplicate (delivery is at least once)
                }
                let terminal = is_terminal(state);
                match state {
                    v1::TaskState::Starting => t.starting_ms = status.timestamp_ms,
                    v1::TaskState::Running => t.running_ms = status.timestamp_ms,
                    _ if terminal => t.ended_ms = status.timestamp_ms,
                    _ => {}
                }
                if (state == v1::TaskState::Running || terminal) && !t.running {
                    t.running = true;
                    if terminal {
                        running_skipped += 1;
                    }
                    if let Some(accepted) = t.accepted {
                        latencies_ms.push((now - accepted).as_secs_f64() * 1000.0);
                    }
                }
                if terminal {
                    t.done = true;
                    last_progress = now;
                    if let Some(accepted) = t.accepted {
                        ends_ms.push((now - accepted).as_secs_f64() * 1000.0);
                    }
                    if state == v1::TaskState::Finished && status.exit_code == Some(0) {
                        finished += 1;
                    } else {
                        failed += 1;
                        let key = format!("{:?}/{:?}", state, status.reason());
                        *failures.entry(key).or_default() += 1;
                        if failed <= 5 {
                            eprintln!("task {} failed: {status:?}", status.task_id);
                        }
                    }
                }
            }
            Event::Error(message) => panic!("the subscription ended: {message}"),
            Event::Disconnected { reason } => eprintln!("disconnected: {reason}"),
            _ => {}
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .chain([&own])
        .zip(&cpu_before)
        .map(|(&p, before)| (cpu_seconds(p) - before) / wall)
        .collect();
    let agents_busy: Vec<f64> = (0..AGENTS)
        .map(|i| {
            let executor = executors[i].map_or(0.0, |pid| {
                (cpu_seconds(pid) - executor_cpu_before[i]) / wall
            });
            round3(cpu[1 + i] + executor)
        })
        .collect();
    // All of the cluster's and the framework's CPU, per task.
    let cores_total = cpu[0] + agents_busy.iter().sum::<f64>() + cpu[AGENTS + 1];
    let cpu_us_per_task = (cores_total * wall * 1e6 / tasks.max(1) as f64).round();
    let launches = launch_histogram(&http, credentials.as_ref());
    let master_launch_ms = |q| round3(launch_quantile_ms(&launches_before, &launches, q));
    let stats = scheduler.stats();
    let _ = scheduler.teardown().await;
    let etcd_after = etcd.as_ref().map(etcd_counters);
    drop(processes);
    drop(standbys);

    latencies_ms.sort_by(f64::total_cmp);
    ends_ms.sort_by(f64::total_cmp);
    // Medians of each stage, from the agents' millisecond timestamps.
    let stage = |f: &dyn Fn(&TaskTimes) -> (u64, u64)| {
        let mut v: Vec<f64> = times
            .iter()
            .map(f)
            .filter(|&(a, b)| a > 0 && b >= a)
            .map(|(a, b)| (b - a) as f64)
            .collect();
        v.sort_by(f64::total_cmp);
        json!({"p50": percentile(&v, 50.0), "p99": percentile(&v, 99.0)})
    };
    let stages = json!({
        "accept_to_starting": stage(&|t| (t.accepted_ms, t.starting_ms)),
        "starting_to_running": stage(&|t| (t.starting_ms, t.running_ms)),
        "running_to_end": stage(&|t| (t.running_ms, t.ended_ms)),
    });
    let registry_bytes =
        std::fs::metadata(master_dir.path().join("registry.redb")).map_or(0, |m| m.len());
    json!({
        "bench": "e2e",
        "registry": match registry {
            Registry::Durable => "redb",
            Registry::InMemory => "in-memory",
            Registry::Etcd => "etcd",
        },
        "registry_fs": match registry {
            Registry::Durable => file_system_of(master_dir.path()),
            Registry::InMemory | Registry::Etcd => "none".into(),
        },
        // etcd's work over the run, per task, and its file at the end.
        "etcd": match (etcd_before, etcd_after) {
            (Some(before), Some(after)) => json!({
                "cpu_us_per_task": ((after.cpu_s - before.cpu_s) * 1e6 / tasks.max(1) as f64).round(),
                "txns_per_task": round3((after.txns - before.txns) / tasks.max(1) as f64),
                "puts_per_task": round3((after.puts - before.puts) / tasks.max(1) as f64),
                "bytes_in_per_task": ((after.bytes_in - before.bytes_in) / tasks.max(1) as f64).round(),
                "db_bytes": after.db_bytes,
                "db_bytes_in_use": after.db_bytes_in_use,
            }),
            _ => serde_json::Value::Null,
        },
        "registry_bytes": registry_bytes,
        "transport": match transport {
            Transport::Tls => "tls",
            Transport::Insecure => "insecure",
        },
        "agents": AGENTS,
        "executor": match executor {
            Executor::Process => "process",
            Executor::InProcess => "in-process",
        },
        "agent_cpus": 1,
        "tasks": tasks,
        "finished": finished,
        "failed": failed,
        "failures": failures,
        "running_skipped": running_skipped,
        "wall_s": round3(wall),
        "tasks_per_s": (tasks as f64 / wall).round(),
        "launch_p50_ms": round3(percentile(&latencies_ms, 50.0)),
        "launch_p90_ms": round3(percentile(&latencies_ms, 90.0)),
        "launch_p99_ms": round3(percentile(&latencies_ms, 99.0)),
        "launch_max_ms": round3(percentile(&latencies_ms, 100.0)),
        "end_p50_ms": round3(percentile(&ends_ms, 50.0)),
        "end_p99_ms": round3(percentile(&ends_ms, 99.0)),
        // The same span as the master times it (no framework round trip),
        // from its histogram's buckets.
        "master_launch_p50_ms": master_launch_ms(0.5),
        "master_launch_p99_ms": master_launch_ms(0.99),
        "accept_calls": accept_calls,
        "accept_errors": accept_errors,
        "tasks_per_accept": round3(tasks as f64 / accept_calls.max(1) as f64),
        "acknowledge_calls": stats.acknowledge_calls,
        "acknowledged": stats.acknowledged,
        "task_cpus": task_cpu_millis as f64 / 1000.0,
        "in_flight": AGENTS as u64 * 1000 / task_cpu_millis,
        "master_threads": master_threads.parse::<u16>().unwrap_or(1),
        "task_mem": TASK_MEM,
        "stages_ms": stages,
        "work_dir": base.display().to_string(),
        // Every process's CPU time (master, agents, executors, framework)
        // over the tasks run.
        "cpu_us_per_task": cpu_us_per_task,
        "target_cpu_us_per_task": 40,
        // Cores each process kept busy during the run (CPU time / wall).
        "cores_busy": {
            "master": round3(cpu[0]),
            "agents": agents_busy,
            "framework": round3(cpu[AGENTS + 1]),
        },
        "target_tasks_per_s": 5000,
        "target_launch_p50_ms": 2,
        "target_launch_p99_ms": 10,
    })
}

/// What etcd counts, from its `/metrics`.
struct EtcdCounters {
    cpu_s: f64,
    txns: f64,
    puts: f64,
    bytes_in: f64,
    db_bytes: f64,
    db_bytes_in_use: f64,
}

fn etcd_counters(etcd: &super::etcd::Etcd) -> EtcdCounters {
    let text = http_get(&format!("{}/metrics", etcd.url), None);
    let metric = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    EtcdCounters {
        cpu_s: cpu_seconds(etcd.pid()),
        txns: metric("etcd_mvcc_txn_total"),
        puts: metric("etcd_mvcc_put_total"),
        bytes_in: metric("etcd_network_client_grpc_received_bytes_total"),
        db_bytes: metric("etcd_mvcc_db_total_size_in_bytes"),
        db_bytes_in_use: metric("etcd_mvcc_db_total_size_in_use_in_bytes"),
    }
}
