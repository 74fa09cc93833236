//! `cargo bench --bench agents`: many agents on one real `wasmos master`.
//! N simulated agents (`AgentLink` streams from this process, speaking the
//! agent protocol as real agents do: each joins the TLS master with a join
//! token and its own key, connects with its own certificate over a
//! connection of its own, from one of several loopback source addresses;
//! they heartbeat, "run" each task they are given for a set time without
//! wasm, report its end and resend it until acknowledged). Measured:
//!
//! - `connect_s`: until every agent heard `Registered` (joins included);
//! - `master_cpu_share` and `master_rss_per_agent_bytes`: the master at
//!   steady heartbeats (1 s) for `--steady` seconds, its RSS less what it
//!   held before any agent;
//! - `tasks_per_s`: a job of `--tasks` indices (0.5 cpus each, each
//!   "running" `--run-ms`) from `wasmos submit` to its end, and how many
//!   attempts it took (`attempts`; an agent whose stream broke re-registers
//!   without the launches it never read, and those are retried);
//! - `reregister_s`: after a `kill -9` of the master, from its restart's
//!   first word to every agent registered again (TLS handshakes included).
//!
//! Flags: `--agents N` (10000), `--tasks N` (100000), `--steady S` (10),
//! `--run-ms MS` (1000), `--sources N` (source addresses 127.0.0.2 up, 8).
//! Prints one JSON line, with the file limit the bench ran under (raised to
//! the hard limit first). `WASMOS_BENCH_STDERR=<file>` keeps the master's
//! warnings.

#[path = "../tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;
#[path = "../tests/support/sim_agents.rs"]
#[allow(dead_code)] // its attach-only agents are for benches/reregister.rs
mod sim_agents;
#[path = "support/spawn.rs"]
mod spawn;

use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use sim_agents::{Counters, Link, spawn_worker};
use spawn::{flag, spawn_until};

const WASMOS: &str = env!("CARGO_BIN_EXE_wasmos");

struct Master {
    port: u16,
    http: u16,
    dir: std::path::PathBuf,
}

impl Master {
    fn start(&self) -> Child {
        let mut cmd = Command::new(WASMOS);
        cmd.arg("master")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--http", &format!("127.0.0.1:{}", self.http)])
            .args(["--agent-heartbeat", "1s", "--agent-timeout", "30s"])
            .arg("--work-dir")
            .arg(&self.dir)
            // Warnings (agent streams dropped, commits behind) go where
            // WASMOS_BENCH_STDERR says, when it says.
            .env(
                "WASMOS_LOG",
                match std::env::var_os("WASMOS_BENCH_STDERR") {
                    Some(_) => "warn",
                    None => "error",
                },
            );
        spawn_until(cmd, "listening on")
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.pem")).expect("the master's CA")
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(WASMOS)
            .args(args)
            .env("WASMOS_MASTER", self.url())
            .env("WASMOS_CA", self.dir.join("ca.pem"))
            .env(
                "WASMOS_TOKEN",
                std::fs::read_to_string(self.dir.join("admin.token")).expect("the admin token"),
            )
            .output()
            .expect("run wasmos");
        assert!(
            out.status.success(),
            "wasmos {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A field of `/proc/<pid>/status` in bytes (`VmRSS:` and the like).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// CPU seconds the process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The soft and hard limits of open files of this process.
fn file_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not done within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = flag("--agents", "10000").parse().expect("--agents N");
    let tasks: u64 = flag("--tasks", "100000").parse().expect("--tasks N");
    let steady: u64 = flag("--steady", "10").parse().expect("--steady S");
    let run_ms: u64 = flag("--run-ms", "1000").parse().expect("--run-ms MS");
    let sources: u8 = flag("--sources", "8").parse().expect("--sources N");
    wasmos_platform::limits::raise_open_files();
    let limit = Duration::from_secs(600);

    let dir = tempfile::tempdir().unwrap();
    let master = Master {
        port: etcd::free_port(),
        http: etcd::free_port(),
        dir: dir.path().join("master"),
    };
    let mut process = master.start();
    std::thread::sleep(Duration::from_millis(500));
    let rss_alone = status_bytes(process.id(), "VmRSS:");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Uses to spare: a join whose answer is lost is tried again.
    let join = master.cli(&["token", "create", "--agent", "--uses", &(2 * n).to_string()]);
    let link = Link::tls(&master.url(), &master.ca_pem(), join.trim(), sources);
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let workers: Vec<_> = {
        let _entered = runtime.enter();
        (0..n)
            .map(|i| {
                spawn_worker(
                    link.clone(),
                    i,
                    1.0,
                    Duration::from_millis(run_ms),
                    counters.clone(),
                )
            })
            .collect()
    };
    wait_until(limit, || counters.registered.load(Relaxed) >= n as u64);
    let connect_s = started.elapsed().as_secs_f64();

    let cpu_before = cpu_seconds(process.id());
    std::thread::sleep(Duration::from_secs(steady));
    let master_cpu_share = (cpu_seconds(process.id()) - cpu_before) / steady as f64;
    let rss = status_bytes(process.id(), "VmRSS:");
    let per_agent = rss.saturating_sub(rss_alone) / n as u64;

    let module = dir.path().join("nothing.wat");
    std::fs::write(&module, "(module (func (export \"_start\")))").unwrap();
    let started = Instant::now();
    let job = master.cli(&[
        "submit",
        module.to_str().unwrap(),
        "-n",
        &tasks.to_string(),
        "--cpus",
        "0.5",
    ]);
    let job = job.trim().to_string();
    let show = || -> serde_json::Value {
        let shown = master.cli(&["job", "show", &job, "--json"]);
        serde_json::from_str(&shown).unwrap_or_default()
    };
    let mut shown = serde_json::Value::Null;
    wait_until(limit, || {
        std::thread::sleep(Duration::from_millis(200));
        shown = show();
        shown["ended_ms"].as_u64().unwrap_or(0) > 0
    });
    let tasks_per_s = tasks as f64 / started.elapsed().as_secs_f64();
    let succeeded = shown["succeeded"].as_u64().unwrap_or(0);
    let attempts = shown["detail"]["attempts"].as_u64().unwrap_or(0);

    let _ = process.kill();
    let _ = process.wait();
    let before = counters.registered.load(Relaxed);
    let restarted = Instant::now();
    let mut process = master.start();
    wait_until(limit, || {
        counters.registered.load(Relaxed) >= before + n as u64
    });
    let reregister_s = restarted.elapsed().as_secs_f64();
    let _ = process.kill();
    let _ = process.wait();
    for worker in workers {
        worker.abort();
    }

    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "agents": n,
            "connect_s": round(connect_s),
            "master_cpu_share": round(master_cpu_share),
            "master_rss_per_agent_bytes": per_agent,
            "tasks": tasks,
            "tasks_per_s": tasks_per_s.round(),
            "succeeded": succeeded,
            "attempts": attempts,
            "run_ms": run_ms,
            "reregister_s": round(reregister_s),
            "file_limit_soft_hard": file_limit(),
        })
    );
}
