//! The job service end to end: a master and two agents (real processes,
//! plaintext on loopback, the registry on disk, executor processes), jobs
//! submitted through the SDK as `wasmos submit` does. One JSON line:
//!
//! - `submit_1m_s`: submitting a held job of 1,000,000 indices;
//!   `bytes_per_index_pending`: the master's RSS it added, per index.
//! - `tasks_per_s`: a job of `--tasks` (100,000) trivial indices at
//!   `--task-cpus` (0.2) from submission to its end;
//!   `bytes_per_index_finished`: the master's RSS it added, per index, once
//!   it ended.
//! - `list_10k_jobs_ms`: listing 10,000 jobs (page by page).
//!
//! `cargo bench --bench jobs [-- --tasks N --task-cpus C --skip-1m]`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use wasmos_sdk::{Client, JobSpec, TaskTemplate, proto as v1};

/// Resident set of a process, in bytes (`/proc`, Linux).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn ended(job: &v1::JobSummary) -> bool {
    matches!(
        job.state(),
        v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let tasks: u32 = arg("--tasks").unwrap_or(100_000);
    let task_cpus: f64 = arg("--task-cpus").unwrap_or(0.2);
    let skip_1m = std::env::args().any(|a| a == "--skip-1m");
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm".into()
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::tempdir_in(&base).expect("work dir");
    let master_dir = tempfile::tempdir().expect("the master's work dir");
    let (master, lines) = spawn(
        &[
            "master",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--insecure",
        ],
        master_dir.path(),
        &["listening on", "/metrics on"],
    );
    let master_pid = master.id();
    let mut processes = Processes(vec![master], Vec::new());
    let url = url_in(&lines[0]);
    let http = last_word(&lines[1]);
    for i in 0..2 {
        let hostname = format!("agent-{i}");
        let (agent, _) = spawn(
            &[
                "agent",
                "--master",
                &url,
                "--cpus",
                "1",
                "--mem",
                "4GiB",
                "--hostname",
                &hostname,
            ],
            &dir.path().join(&hostname),
            &["wasmos agent offering"],
        );
        processes.0.push(agent);
    }
    wait_agents(&http, 2, None);
    let client = Client::connect(&url).await.expect("connect");
    let digest = client.upload(HI_WAT).await.expect("upload").digest;
    let template = TaskTemplate::new(&digest).cpus(task_cpus).mem(8 << 20);
    let mut result = json!({"bench": "jobs", "agents": 2, "agent_cpus": 1, "task_cpus": task_cpus});

    // A million indices, held: what submitting costs, and what waiting costs.
    if !skip_1m {
        let before = rss(master_pid);
        let started = Instant::now();
        let big = client
            .submit(&JobSpec::new(&template, 1_000_000).hold())
            .await
            .expect("submit 1M");
        let submit_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pending = rss(master_pid).saturating_sub(before) as f64 / 1e6;
        result["submit_1m_s"] = json!((submit_s * 1000.0).round() / 1000.0);
        result["bytes_per_index_pending"] = json!(pending.round());
        client.cancel_job(&big).await.expect("cancel the 1M job");
    }

    // A job of trivial indices, from submission to its end.
    let before = rss(master_pid);
    let cpu_before: f64 = cpu_seconds(master_pid);
    let started = Instant::now();
    let id = client
        .submit(&JobSpec::new(&template, tasks).name("bench"))
        .await
        .expect("submit");
    let job = loop {
        let job = client.job(&id).await.expect("job");
        if ended(&job) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(job.succeeded, tasks, "every index succeeds: {job:?}");
    let finished = rss(master_pid).saturating_sub(before) as f64 / f64::from(tasks);
    result["tasks"] = json!(tasks);
    result["tasks_per_s"] = json!((f64::from(tasks) / wall).round());
    result["master_cpu_us_per_task"] =
        json!(((cpu_seconds(master_pid) - cpu_before) * 1e6 / f64::from(tasks)).round());
    result["bytes_per_index_finished"] = json!(finished.round());

    // Listing 10,000 jobs.
    let mut held = Vec::new();
    for _ in 0..10_000 {
        held.push(
            client
                .submit(&JobSpec::new(&template, 1).hold())
                .await
                .expect("submit a small job"),
        );
    }
    let started = Instant::now();
    let listed = client.jobs().await.expect("list");
    result["list_10k_jobs_ms"] = json!((started.elapsed().as_secs_f64() * 1e4).round() / 10.0);
    assert!(listed.len() >= 10_000, "{} jobs listed", listed.len());
    result["targets"] = json!({"submit_1m_s": 1.0, "bytes_per_index_pending": 64,
        "bytes_per_index_finished": 64, "list_10k_jobs_ms": 100});
    println!("{result}");
    drop(processes);
}
