//! The job service end to end, and the e2e bench's path beside it in the
//! same run: each on a new master and two agents of one cpu (real
//! processes, plaintext on loopback, the registry on disk, executor
//! processes). Jobs are submitted through the SDK as `wasmos submit` does.
//! One JSON line:
//!
//! - `tasks_per_s`: a job of `--tasks` (100,000) trivial indices at
//!   `--task-cpus` (0.2) from submission to its end; `launch_p50_ms` and
//!   `launch_p99_ms` of its tasks as the master times them (from the
//!   service's `Accept` to RUNNING, `wasmos_launch_seconds`);
//!   `master_cpu_us_per_task` and `cores_busy` (master; each agent with its
//!   executor).
//! - `submit_1m_s`: submitting a held job of 1,000,000 indices;
//!   `bytes_per_index_pending`: the master's RSS it added, per index. Then
//!   it is released and runs to its end: `bytes_per_index_running` (once
//!   half of it ended), `bytes_per_index_finished`, `tasks_per_s_1m`.
//!   `--skip-1m` skips it all; `--hold-1m` measures only the submission.
//! - `list_10k_jobs_ms`: listing 10,000 jobs (page by page).
//! - `e2e_*`: the same tasks through the e2e bench's path (an SDK framework
//!   taking offers and sending `Accept`s, `benches/e2e.rs`) on a new
//!   cluster of the same shape: its rate, launch times (at the framework and
//!   as the master times them) and `cores_busy`; `jobs_over_e2e` is the
//!   ratio of the rates. `--skip-e2e` skips it.
//!
//! `cargo bench --bench jobs [-- --tasks N --task-cpus C --skip-1m
//! --hold-1m --skip-e2e]`.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{cluster, wait};
use support::framework_path::{self, Executor, Registry, Transport, round3};
use support::*;
use wasmos_sdk::{Client, JobSpec, TaskTemplate};

const AGENTS: usize = framework_path::AGENTS;

/// Resident set of a process, in bytes (`/proc`, Linux).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let tasks: u32 = arg("--tasks").unwrap_or(100_000);
    let task_cpus: f64 = arg("--task-cpus").unwrap_or(0.2);
    let flag = |name: &str| std::env::args().any(|a| a == name);
    let c = cluster(&[]);
    let client = Client::connect(&c.url).await.expect("connect");
    let digest = client.upload(HI_WAT).await.expect("upload").digest;
    let template = TaskTemplate::new(&digest).cpus(task_cpus).mem(8 << 20);
    let mut result = json!({"bench": "jobs", "agents": AGENTS, "agent_cpus": 1,
        "task_cpus": task_cpus, "transport": "insecure"});

    // A job of trivial indices, from submission to its end.
    let launches_before = launch_histogram(&c.http, None);
    let cpu_before = c.cpu();
    let started = Instant::now();
    let id = client
        .submit(&JobSpec::new(&template, tasks).name("bench"))
        .await
        .expect("submit");
    let job = wait(&client, &id, |_| {}).await;
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(job.succeeded, tasks, "every index succeeds: {job:?}");
    let cpu: Vec<f64> = c
        .cpu()
        .iter()
        .zip(&cpu_before)
        .map(|(after, before)| after - before)
        .collect();
    let launches = launch_histogram(&c.http, None);
    let launch_ms = |q| round3(launch_quantile_ms(&launches_before, &launches, q));
    result["tasks"] = json!(tasks);
    result["tasks_per_s"] = json!((f64::from(tasks) / wall).round());
    result["launch_p50_ms"] = json!(launch_ms(0.5));
    result["launch_p99_ms"] = json!(launch_ms(0.99));
    result["master_cpu_us_per_task"] = json!((cpu[0] * 1e6 / f64::from(tasks)).round());
    result["cores_busy"] = json!({
        "master": round3(cpu[0] / wall),
        "agents": cpu[1..].iter().map(|c| round3(c / wall)).collect::<Vec<_>>(),
    });

    // A million indices: held, then run to their end.
    if !flag("--skip-1m") {
        const BIG: u32 = 1_000_000;
        let per_index = |before: u64| (rss(c.master).saturating_sub(before) as f64 / 1e6).round();
        let before = rss(c.master);
        let started = Instant::now();
        let big = client
            .submit(&JobSpec::new(&template, BIG).hold())
            .await
            .expect("submit 1M");
        result["submit_1m_s"] = json!(round3(started.elapsed().as_secs_f64()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        result["bytes_per_index_pending"] = json!(per_index(before));
        if flag("--hold-1m") {
            client.cancel_job(&big).await.expect("cancel the 1M job");
        } else {
            let started = Instant::now();
            client.release_job(&big).await.expect("release the 1M job");
            let mut running = None;
            let job = wait(&client, &big, |job| {
                if running.is_none() && job.succeeded >= BIG / 2 {
                    running = Some(per_index(before));
                }
            })
            .await;
            assert_eq!(job.succeeded, BIG, "every index succeeds: {job:?}");
            result["tasks_per_s_1m"] =
                json!((f64::from(BIG) / started.elapsed().as_secs_f64()).round());
            result["bytes_per_index_running"] = json!(running);
            result["bytes_per_index_finished"] = json!(per_index(before));
        }
    }

    // Listing 10,000 jobs.
    for _ in 0..10_000 {
        client
            .submit(&JobSpec::new(&template, 1).hold())
            .await
            .expect("submit a small job");
    }
    let started = Instant::now();
    let listed = client.jobs().await.expect("list");
    result["list_10k_jobs_ms"] = json!((started.elapsed().as_secs_f64() * 1e4).round() / 10.0);
    assert!(listed.len() >= 10_000, "{} jobs listed", listed.len());
    drop(client);
    drop(c);

    // The same tasks through a framework of the SDK, on a new cluster.
    if !flag("--skip-e2e") {
        let e2e = framework_path::run(
            Registry::Durable,
            Transport::Insecure,
            Executor::Process,
            tasks as usize,
            (task_cpus * 1000.0).round() as u64,
        )
        .await;
        for field in [
            "tasks_per_s",
            "launch_p50_ms",
            "launch_p99_ms",
            "master_launch_p50_ms",
            "master_launch_p99_ms",
            "cpu_us_per_task",
            "cores_busy",
        ] {
            result[format!("e2e_{field}")] = e2e[field].clone();
        }
        let rate = |r: &serde_json::Value| r.as_f64().unwrap_or(0.0);
        result["jobs_over_e2e"] = json!(round3(
            rate(&result["tasks_per_s"]) / rate(&e2e["tasks_per_s"]).max(1.0)
        ));
    }
    result["targets"] = json!({"submit_1m_s": 1.0, "bytes_per_index_pending": 64,
        "bytes_per_index_finished": 64, "list_10k_jobs_ms": 100, "jobs_over_e2e": 1.5});
    println!("{result}");
}
