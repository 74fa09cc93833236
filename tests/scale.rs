//! Many agents on one master, as real gRPC streams on loopback: 2,000
//! simulated agents (`support::sim_agents`: the agent protocol spoken from
//! this process, each task "running" for a set time, no wasm) join a TLS
//! master with a join token, each connects with its own certificate from
//! one of eight loopback source addresses, a
//! 20,000-index job runs across them, the master is killed mid-job and
//! restarted, every agent re-registers with what it holds, and the job ends
//! with every index succeeded.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::Value;
use support::sim_agents::{Counters, Link, spawn_worker};
use support::{Cluster, guest, wait_for};
use tokio::task::block_in_place;

const AGENTS: usize = 2_000;
const INDICES: u64 = 20_000;
/// Generous: a loaded 2-core machine runs the master and 2,000 streams.
const PATIENCE: Duration = Duration::from_secs(240);

fn cli_ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster
        .cli()
        .env("WASMOS_MASTER", &cluster.url)
        .args(args)
        .output()
        .expect("run wasmos");
    assert!(
        out.status.success(),
        "wasmos {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Agents the master counts as connected (0 while it does not answer).
fn connected(cluster: &Cluster) -> usize {
    let out = cluster
        .cli()
        .env("WASMOS_MASTER", &cluster.url)
        .args(["agents", "--json"])
        .output();
    let Ok(out) = out else { return 0 };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|a| a["state"] == "connected")
        .count()
}

fn succeeded(cluster: &Cluster, job: &str) -> u64 {
    let out = cluster
        .cli()
        .env("WASMOS_MASTER", &cluster.url)
        .args(["job", "show", job, "--json"])
        .output();
    out.ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| v["succeeded"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_agents_run_a_job_and_all_come_back_after_a_master_restart() {
    // A connection an agent: more files than a default soft limit.
    wasmos_platform::limits::raise_open_files();
    let mut cluster = block_in_place(|| {
        Cluster::start_tls(
            0,
            &["--agent-heartbeat", "1s", "--agent-timeout", "20s"],
            &[],
        )
    });
    let join = block_in_place(|| {
        cli_ok(
            &cluster,
            // Uses to spare: a join whose answer is lost is tried again.
            &[
                "token",
                "create",
                "--agent",
                "--uses",
                &(2 * AGENTS).to_string(),
            ],
        )
    });
    let tls = cluster.tls.as_ref().expect("a TLS cluster");
    let link = Link::tls(&cluster.url, &tls.ca_pem, join.trim(), 8);
    let counters = Arc::new(Counters::default());
    let workers: Vec<_> = (0..AGENTS)
        .map(|i| {
            spawn_worker(
                link.clone(),
                i,
                1.0,
                Duration::from_millis(300),
                counters.clone(),
            )
        })
        .collect();
    block_in_place(|| {
        wait_for(PATIENCE, || (connected(&cluster) == AGENTS).then_some(()))
            .unwrap_or_else(|| panic!("{} of {AGENTS} agents connected", connected(&cluster)));
    });

    let module = guest("hello");
    let job = block_in_place(|| {
        cli_ok(
            &cluster,
            &[
                "submit",
                module.to_str().unwrap(),
                "-n",
                &INDICES.to_string(),
                "--cpus",
                "0.5",
            ],
        )
    })
    .trim()
    .to_string();

    // Kill the master once a quarter of the job is done.
    block_in_place(|| {
        wait_for(PATIENCE, || {
            (succeeded(&cluster, &job) >= INDICES / 4).then_some(())
        })
        .expect("a quarter of the job succeeded");
        cluster.kill_master();
    });
    let registered_before = counters.registered.load(Relaxed);
    block_in_place(|| cluster.restart_master());
    // Back: the master counts them all, and each heard it answer.
    let all_back = || {
        connected(&cluster) == AGENTS
            && counters.registered.load(Relaxed) >= registered_before + AGENTS as u64
    };
    block_in_place(|| {
        wait_for(PATIENCE, || all_back().then_some(())).unwrap_or_else(|| {
            panic!(
                "{} of {AGENTS} agents back after the restart, {} registrations",
                connected(&cluster),
                counters.registered.load(Relaxed) - registered_before
            )
        });
    });

    block_in_place(|| {
        wait_for(PATIENCE, || {
            (succeeded(&cluster, &job) == INDICES).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{} of {INDICES} indices succeeded",
                succeeded(&cluster, &job)
            )
        });
    });
    let launched = counters.launched.load(Relaxed);
    eprintln!(
        "{launched} launches, {} ends reported for {INDICES} indices",
        counters.finished.load(Relaxed)
    );
    // Launches in flight at the kill may run again; nothing else does.
    assert!(
        launched >= INDICES && launched <= INDICES + 3 * AGENTS as u64,
        "{launched} launches"
    );
    for worker in workers {
        worker.abort();
    }
}
