//! `cargo bench --bench reregister`: how fast a new leader takes back a
//! cluster's agents. Two masters on etcd (insecure, loopback); N simulated
//! agents (gRPC `AgentLink` streams from this process, as real agents
//! open them) attach to the leader; then the leader is `kill -9`ed and
//! every agent attaches to the new one, retrying every 20 ms until it is
//! `Registered`. Times from the first agent the new leader takes back to
//! the last (the lease's wait before it leads is the failover bench's).
//!
//! Flags: `--agents N` (1000), `--lease 5s`. Prints one JSON line:
//! `register_s` (N new agents at once), `reregister_s`, `agents`,
//! `lease_s`.

#[path = "../tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;
#[path = "../tests/support/sim_agents.rs"]
#[allow(dead_code)] // its working agents are for benches/agents.rs
mod sim_agents;
#[path = "support/spawn.rs"]
mod spawn;

use std::process::{Child, Command};
use std::time::Instant;

use sim_agents::attach_all;
use spawn::{flag, spawn_until};

const WASMOS: &str = env!("CARGO_BIN_EXE_wasmos");

/// Starts a master on etcd, insecure, on `port`, and waits for `marker`.
fn master(etcd: &str, lease: &str, port: u16, dir: &std::path::Path, marker: &str) -> Child {
    let mut cmd = Command::new(WASMOS);
    cmd.arg("master")
        .args(["--etcd", etcd, "--leader-lease", lease, "--insecure"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--no-http"])
        .arg("--work-dir")
        .arg(dir)
        .env("WASMOS_LOG", "error");
    spawn_until(cmd, marker)
}

fn spread(times: &[Instant]) -> f64 {
    let first = times.iter().min().unwrap();
    let last = times.iter().max().unwrap();
    (*last - *first).as_secs_f64()
}

fn main() {
    let n: usize = flag("--agents", "1000").parse().expect("--agents N");
    let lease = flag("--lease", "5s");
    let lease_s: f64 = lease.trim_end_matches('s').parse().expect("--lease Ns");

    let etcd = etcd::Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let ports = [etcd::free_port(), etcd::free_port()];
    let mut first = master(
        &etcd.url,
        &lease,
        ports[0],
        &dir.path().join("m0"),
        "listening on",
    );
    let mut second = master(
        &etcd.url,
        &lease,
        ports[1],
        &dir.path().join("m1"),
        "standing by",
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let (times, attached) =
        runtime.block_on(attach_all(&format!("http://127.0.0.1:{}", ports[0]), n));
    let register_s = (*times.iter().max().unwrap() - started).as_secs_f64();

    let _ = first.kill();
    let _ = first.wait();
    drop(attached);
    let (times, attached) =
        runtime.block_on(attach_all(&format!("http://127.0.0.1:{}", ports[1]), n));
    let reregister_s = spread(&times);
    drop(attached);
    let _ = second.kill();
    let _ = second.wait();

    println!(
        "{}",
        serde_json::json!({
            "agents": n,
            "register_s": (register_s * 1000.0).round() / 1000.0,
            "reregister_s": (reregister_s * 1000.0).round() / 1000.0,
            "lease_s": lease_s,
        })
    );
}
