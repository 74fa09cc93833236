//! The web UI with 100,000 tasks known: `cargo bench --bench webui [--
//! --tasks N --rounds R]`. A new master (remembering every finished task,
//! `--completed-tasks`) and two agents of one cpu, real processes on
//! loopback; a job of `--tasks` (100,000) trivial indices runs to its end
//! first. One JSON line:
//!
//! - `tasks_page_p50_ms`, `_p99_ms` and `tasks_page_bytes`: the tasks page
//!   (`/ui/tasks`, its first page of 50) as a client on loopback times it,
//!   over 200 loads; `tasks_page_filtered_*` the same for a filter that
//!   matches one task in a thousand (`state=FINISHED&job=...`, the last
//!   page of a job); `api_tasks_p50_ms` for `/ui/api/tasks?limit=100`.
//! - `master_cpu_ms_per_page`: the master's CPU (the actor's turn included)
//!   per tasks page served.
//! - `polled_over_quiet`: tasks/s of a job of 20,000 indices while a
//!   browser-like client loads every page of the UI once a second, over the
//!   same without, medians of `--rounds` (3) alternating rounds.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{cluster, wait};
use support::framework_path::round3;
use support::*;
use wasmos_sdk::{Client, JobSpec, TaskTemplate};

/// Loads of each timed page.
const LOADS: usize = 200;
/// Indices of each job timed with and without the poller.
const ROUND_TASKS: u32 = 20_000;

/// Loads `path` `n` times; the sorted times in ms and the body's size.
fn time_loads(http: &str, path: &str, n: usize) -> (Vec<f64>, usize) {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let started = Instant::now();
        let response = http_get(&format!("{http}{path}"), None);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{path}: {response:.300}"
        );
        bytes = response.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    }
    times.sort_by(f64::total_cmp);
    (times, bytes)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs a job of `tasks` indices to its end; its tasks/s.
async fn rate(client: &Client, template: &TaskTemplate, tasks: u32) -> f64 {
    let started = Instant::now();
    let id = client
        .submit(&JobSpec::new(template, tasks))
        .await
        .expect("submit");
    let job = wait(client, &id, |_| {}).await;
    assert_eq!(job.succeeded, tasks, "{job:?}");
    f64::from(tasks) / started.elapsed().as_secs_f64()
}

/// Loads every page of the UI once a second until `stop`, as an open
/// browser tab on each would.
fn poll_every_page(
    http: String,
    job: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let pages = [
            "/".to_string(),
            "/ui/jobs".into(),
            format!("/ui/jobs/{job}"),
            "/ui/tasks".into(),
            "/ui/agents".into(),
            "/ui/roles".into(),
            "/ui/usage".into(),
            "/ui/api/overview".into(),
        ];
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            for page in &pages {
                http_get(&format!("{http}{page}"), None);
            }
            std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
        }
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let tasks: u32 = arg("--tasks").unwrap_or(100_000);
    let rounds: usize = arg("--rounds").unwrap_or(3);
    let remembered = tasks.to_string();
    let c = cluster(&["--completed-tasks", &remembered]);
    let client = Client::connect(&c.url).await.expect("connect");
    let digest = client.upload(HI_WAT).await.expect("upload").digest;
    let template = TaskTemplate::new(&digest).cpus(0.2).mem(8 << 20);
    let mut result = json!({"bench": "webui", "tasks_known": tasks});

    // The tasks the pages page through: one finished job.
    let big = client
        .submit(&JobSpec::new(&template, tasks).name("known"))
        .await
        .expect("submit");
    let job = wait(&client, &big, |_| {}).await;
    assert_eq!(job.succeeded, tasks, "{job:?}");
    let counts = http_get(&format!("{}/ui/api/overview", c.http), None);
    assert!(
        counts.contains(&format!("\"FINISHED\":{tasks}")),
        "every task known: {counts}"
    );

    let cpu_before = cpu_seconds(c.master);
    let (page, bytes) = time_loads(&c.http, "/ui/tasks", LOADS);
    let cpu = cpu_seconds(c.master) - cpu_before;
    result["tasks_page_p50_ms"] = json!(round3(percentile(&page, 50.0)));
    result["tasks_page_p99_ms"] = json!(round3(percentile(&page, 99.0)));
    result["tasks_page_bytes"] = json!(bytes);
    result["master_cpu_ms_per_page"] = json!(round3(cpu * 1e3 / LOADS as f64));
    // The last hundredth of the job's indices (ids sort as text: `-9999`
    // comes late), found among all the tasks.
    let filtered = format!("/ui/tasks?state=FINISHED&job={big}&after={big}-99");
    let (page, bytes) = time_loads(&c.http, &filtered, LOADS);
    result["tasks_page_filtered_p50_ms"] = json!(round3(percentile(&page, 50.0)));
    result["tasks_page_filtered_p99_ms"] = json!(round3(percentile(&page, 99.0)));
    result["tasks_page_filtered_bytes"] = json!(bytes);
    let (api, bytes) = time_loads(&c.http, "/ui/api/tasks?limit=100", LOADS);
    result["api_tasks_p50_ms"] = json!(round3(percentile(&api, 50.0)));
    result["api_tasks_bytes"] = json!(bytes);

    // Tasks/s with every page polled once a second, against without.
    let (mut quiet, mut polled) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        quiet.push(rate(&client, &template, ROUND_TASKS).await);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = poll_every_page(c.http.clone(), big.clone(), stop.clone());
        polled.push(rate(&client, &template, ROUND_TASKS).await);
        stop.store(true, Ordering::Relaxed);
        poller.join().expect("the poller");
    }
    let (quiet, polled) = (median(quiet), median(polled));
    result["quiet_tasks_per_s"] = json!(quiet.round());
    result["polled_tasks_per_s"] = json!(polled.round());
    result["polled_over_quiet"] = json!(round3(polled / quiet));
    result["targets"] = json!({"tasks_page_p99_ms": 100, "tasks_page_bytes": 200_000,
        "polled_over_quiet": 0.95});
    println!("{result}");
}
