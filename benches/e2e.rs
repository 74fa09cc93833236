//! End to end: `cargo bench --bench e2e [-- --tasks N] [--task-cpus C]
//! [--master-threads T] [--compare-in-memory] [--compare-insecure]
//! [--compare-in-process [--rounds R]] [--compare-bare [--rounds R]]`;
//! `WASMOS_BIN=path` runs another
//! build of `wasmos` (the previous commit's, say) the same way.
//!
//! Starts a real `wasmos master` and two `wasmos agent` processes (each
//! offering 1 cpu and 4 GiB) on loopback, subscribes one framework with the
//! SDK's lower level (`Client::subscribe`: offers, `Accept`, updates, batched
//! automatic acknowledgements) and runs N (default 10,000) trivial tasks: a
//! `.wat` module that writes "hi" to stdout through WASI `fd_write` and
//! exits 0, each asking for 0.2 cpus (`--task-cpus` changes it) and 8 MiB,
//! so 5 run at once per agent. Every offer is used whole: one `Accept` per
//! agent carries every task that fits in that agent's offers.
//!
//! The framework always fills the cluster, so `in_flight` tasks are
//! accepted and not yet ended at any time, and by Little's law launch
//! latency is about `in_flight / tasks_per_s` plus the round trip: small
//! tasks (`--task-cpus 0.01`: 200 in flight) buy throughput with queueing
//! at the agents; 0.2 keeps queues short. BENCHMARKS.md has both.
//!
//! Launch latency of a task: from the moment its `Accept` is sent until its
//! `RUNNING` update reaches the framework (or its terminal update, if the
//! framework never saw `RUNNING`; those are counted in
//! `running_skipped`). Prints one JSON line.
//!
//! Agent work directories go on `/dev/shm` (tmpfs) when it exists, as in the
//! executor bench: on this VM an ext4 `mkdir` costs ~300 µs, which would
//! measure the disk, not wasmos. `WASMOS_BENCH_WORK_DIR=<dir>` puts them
//! elsewhere. The master's work dir, and so its registry, goes on the
//! temporary directory's disk (ext4 here; `WASMOS_BENCH_REGISTRY_DIR=<dir>`
//! moves it): every `Accept`'s answer and every task's end wait there for
//! their commit, as in production (launches and STARTING/RUNNING go out
//! while it runs). `registry_fs` says which file system that was.
//!
//! `--compare-in-memory` runs the bench twice in one process, first with
//! that durable registry and then with `wasmos master --ephemeral` (an
//! in-memory registry), and adds `in_memory_tasks_per_s`,
//! `in_memory_launch_p50_ms` and `durable_over_in_memory` to the one JSON
//! line.
//!
//! The master serves TLS, as `wasmos master` does by default: agents join
//! with a join token and connect with their own certificates, the framework
//! verifies the master by its CA and sends a principal's token (role
//! `default`), checked with its permissions on every call.
//! `--compare-insecure` runs the bench a second time with `wasmos master
//! --insecure` (plaintext, no credentials) and adds
//! `insecure_tasks_per_s`, `insecure_launch_p50_ms` and
//! `tls_over_insecure`.
//!
//! Agents run their tasks in an executor process (`wasmos executor`), as
//! `wasmos agent` does by default; its CPU counts with its agent's in
//! `cores_busy`. `--compare-in-process` runs the bench a second time with
//! `wasmos agent --in-process-executor`, alternating with executor-process
//! runs `--rounds R` times each (default 3), and prints the executor-process
//! run of median rate with `in_process_tasks_per_s`,
//! `in_process_launch_p50_ms` (of the median in-process run),
//! `process_over_in_process` (the ratio of the medians) and every round's
//! rate. `--compare-bare` does the same against the bare cluster (`wasmos
//! master --ephemeral --insecure`, agents `--in-process-executor`) and adds
//! `bare_tasks_per_s`, `bare_launch_p50_ms` and `default_over_bare`: what
//! durability and trust cost together.
//!
//! Every run reports `cpu_us_per_task`: the CPU time of every process (the
//! master, the agents and their executors, and this framework) over the
//! tasks run.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tokio::sync::mpsc;
use wasmos_master::Resources;
use wasmos_master::packing;
use wasmos_sdk::proto as v1;
use wasmos_sdk::{Client, ConnectOptions, Event, FrameworkConfig, is_terminal};

const AGENTS: usize = 2;
const AGENT_CPUS: &str = "1";
const AGENT_MEM: &str = "4GiB";
/// Default `cpus` of each task, in thousandths (`--task-cpus` changes it).
const TASK_CPU_MILLIS: u64 = 200;
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
enum Registry {
    /// `registry.redb` in its work dir, on disk.
    Durable,
    /// `--ephemeral`: in memory.
    InMemory,
}

/// Where the agents run their tasks in one run of the bench.
#[derive(Clone, Copy, PartialEq)]
enum Executor {
    /// The default: `wasmos executor`, a process of its own per agent.
    Process,
    /// `--in-process-executor`: tasks run in the agent's process.
    InProcess,
}

/// How the master's port speaks in one run of the bench.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    /// The default: TLS, mTLS agents, a token on every call.
    Tls,
    /// `--insecure`: plaintext.
    Insecure,
}

fn round3(x: f64) -> f64 {
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

// One thread, like the master's default: a framework that does little per
// event loses more to cross-thread wake-ups than it gains from a second
// thread on this 2-core machine (see BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut result = run(Registry::Durable, Transport::Tls, Executor::Process).await;
    if std::env::args().any(|a| a == "--compare-insecure") {
        let insecure = run(Registry::Durable, Transport::Insecure, Executor::Process).await;
        let (tls, plain) = (
            result["tasks_per_s"].as_f64().unwrap_or(0.0),
            insecure["tasks_per_s"].as_f64().unwrap_or(0.0),
        );
        result["insecure_tasks_per_s"] = insecure["tasks_per_s"].clone();
        result["insecure_launch_p50_ms"] = insecure["launch_p50_ms"].clone();
        result["insecure_launch_p99_ms"] = insecure["launch_p99_ms"].clone();
        result["tls_over_insecure"] = round3(tls / plain.max(1.0)).into();
        result["target_tls_over_insecure"] = 0.9.into();
    }
    if std::env::args().any(|a| a == "--compare-in-memory") {
        let in_memory = run(Registry::InMemory, Transport::Tls, Executor::Process).await;
        let (durable, memory) = (
            result["tasks_per_s"].as_f64().unwrap_or(0.0),
            in_memory["tasks_per_s"].as_f64().unwrap_or(0.0),
        );
        result["in_memory_tasks_per_s"] = in_memory["tasks_per_s"].clone();
        result["in_memory_launch_p50_ms"] = in_memory["launch_p50_ms"].clone();
        result["in_memory_launch_p99_ms"] = in_memory["launch_p99_ms"].clone();
        result["durable_over_in_memory"] = round3(durable / memory.max(1.0)).into();
        result["target_durable_over_in_memory"] = 0.9.into();
    }
    if std::env::args().any(|a| a == "--compare-in-process") {
        result = compare_in_process(result).await;
    }
    if std::env::args().any(|a| a == "--compare-bare") {
        result = compare_bare(result).await;
    }
    println!("{result}");
}

/// Runs with the agents' executors in their own processes and in the
/// agents' processes, alternating (see [`alternate`]): adds
/// `in_process_tasks_per_s`, `in_process_launch_p50_ms` and
/// `process_over_in_process`.
async fn compare_in_process(first: serde_json::Value) -> serde_json::Value {
    let other = (Registry::Durable, Transport::Tls, Executor::InProcess);
    alternate(first, other, "in_process", "process_over_in_process", 0.9).await
}

/// Runs the default setup against `other`, alternating, `--rounds` times
/// each (default 3; the first default run is `first`): on a shared machine
/// the load drifts between runs, so the JSON is the default run of median
/// rate, with `other`'s median figures under `prefix` and the ratio of the
/// medians as `ratio` (with its `target_`).
async fn alternate(
    first: serde_json::Value,
    (registry, transport, executor): (Registry, Transport, Executor),
    prefix: &str,
    ratio: &str,
    target: f64,
) -> serde_json::Value {
    let rounds = arg("--rounds").unwrap_or(3usize).max(1);
    let rate = |r: &serde_json::Value| r["tasks_per_s"].as_f64().unwrap_or(0.0);
    let mut default = vec![first];
    let mut others = Vec::new();
    for round in 0..rounds {
        others.push(run(registry, transport, executor).await);
        if round + 1 < rounds {
            default.push(run(Registry::Durable, Transport::Tls, Executor::Process).await);
        }
    }
    let rates = |runs: &[serde_json::Value]| runs.iter().map(rate).collect::<Vec<f64>>();
    let (default_rates, other_rates) = (rates(&default), rates(&others));
    let median = |runs: &mut Vec<serde_json::Value>| {
        runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
        runs.swap_remove(runs.len() / 2)
    };
    let (mut result, other) = (median(&mut default), median(&mut others));
    result["rounds"] = rounds.into();
    result["tasks_per_s_rounds"] = default_rates.into();
    result[format!("{prefix}_tasks_per_s_rounds")] = other_rates.into();
    for field in [
        "tasks_per_s",
        "launch_p50_ms",
        "launch_p99_ms",
        "cores_busy",
        "cpu_us_per_task",
    ] {
        result[format!("{prefix}_{field}")] = other[field].clone();
    }
    result[ratio] = round3(rate(&result) / rate(&other).max(1.0)).into();
    result[format!("target_{ratio}")] = target.into();
    result
}

/// Runs the default (TLS, registry on disk, executor process) against the
/// bare cluster (`--ephemeral --insecure --in-process-executor`),
/// alternating (see [`alternate`]): what durability and trust cost
/// together. Adds `bare_tasks_per_s`, `bare_launch_p50_ms` and
/// `default_over_bare`.
async fn compare_bare(first: serde_json::Value) -> serde_json::Value {
    let bare = (Registry::InMemory, Transport::Insecure, Executor::InProcess);
    alternate(first, bare, "bare", "default_over_bare", 0.85).await
}

/// One run of the bench; returns its JSON.
async fn run(registry: Registry, transport: Transport, executor: Executor) -> serde_json::Value {
    let tasks = arg("--tasks").unwrap_or(10_000usize);
    let task_cpu_millis =
        arg("--task-cpus").map_or(TASK_CPU_MILLIS, |c: f64| (c * 1000.0).round() as u64);
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
    if transport == Transport::Insecure {
        master_args.push("--insecure");
    }
    let (master, lines) = spawn(
        &master_args,
        master_dir.path(),
        &["listening on", "/metrics on"],
    );
    let mut processes = Processes(vec![master], Vec::new());
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
    let stats = scheduler.stats();
    let _ = scheduler.teardown().await;
    drop(processes);

    latencies_ms.sort_by(f64::total_cmp);
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
        },
        "registry_fs": match registry {
            Registry::Durable => file_system_of(master_dir.path()),
            Registry::InMemory => "none".into(),
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
