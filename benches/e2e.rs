//! End to end: `cargo bench --bench e2e [-- --tasks N] [--task-cpus C]
//! [--master-threads T] [--compare-in-memory] [--compare-insecure] [--compare-etcd]
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
//! `running_skipped`). `master_launch_p50_ms` and `_p99_ms` are the same
//! span as the master times it (`wasmos_launch_seconds`, without the
//! framework's round trip). A task that ends within its executor's batch
//! reports its end alone (its STARTING and RUNNING are dropped), so for
//! trivial tasks launch latency is the time to their end: `end_p50_ms` and
//! `end_p99_ms` time every task from its `Accept` to its end. Prints one
//! JSON line.
//!
//! The run itself (the cluster and the framework) is
//! `support/framework_path.rs`, which the jobs bench runs too.
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
//! `--compare-etcd` runs it a second time with the registry in etcd (a
//! throwaway Debian etcd on loopback; the master leads two standbys) and
//! adds `etcd_tasks_per_s`, `etcd_launch_p50_ms`, `etcd_over_redb` and
//! etcd's own counts: transactions, puts and bytes received per task, and
//! its file's size at the end (`etcd`).
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

use support::arg;
use support::framework_path::{Executor, Registry, Transport, round3};

/// Default `cpus` of each task, in thousandths (`--task-cpus` changes it).
const TASK_CPU_MILLIS: u64 = 200;

/// One run of the bench with the command line's `--tasks` (default
/// 10,000) and `--task-cpus`; returns its JSON.
async fn run(registry: Registry, transport: Transport, executor: Executor) -> serde_json::Value {
    let tasks = arg("--tasks").unwrap_or(10_000usize);
    let task_cpu_millis =
        arg("--task-cpus").map_or(TASK_CPU_MILLIS, |c: f64| (c * 1000.0).round() as u64);
    support::framework_path::run(registry, transport, executor, tasks, task_cpu_millis).await
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
    if std::env::args().any(|a| a == "--compare-etcd") {
        let etcd = run(Registry::Etcd, Transport::Tls, Executor::Process).await;
        let (redb, on_etcd) = (
            result["tasks_per_s"].as_f64().unwrap_or(0.0),
            etcd["tasks_per_s"].as_f64().unwrap_or(0.0),
        );
        for field in [
            "tasks_per_s",
            "launch_p50_ms",
            "launch_p99_ms",
            "cpu_us_per_task",
        ] {
            result[format!("etcd_{field}")] = etcd[field].clone();
        }
        result["etcd"] = etcd["etcd"].clone();
        result["etcd_over_redb"] = round3(on_etcd / redb.max(1.0)).into();
        result["target_etcd_over_redb"] = 0.8.into();
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
