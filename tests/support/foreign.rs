//! Agents of another CPU or OS, run by an emulator (`qemu-aarch64`) or a
//! compatibility layer (`wine`), joined to a native master: what
//! `tests/cross_arch.rs` and `tests/windows_agent.rs` share. Each compares
//! a job run on the foreign agent with the same job on a native one, and
//! checks the limits there.

use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{Cluster, guest, spawn_until, wait_for};

/// An emulated CPU on a loaded 2-core machine: compiling a module there
/// takes seconds, not milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// Master flags for clusters with a foreign agent: an emulated agent may
/// be slow to heartbeat while it compiles, and must not be declared lost.
pub const PATIENT_MASTER: &[&str] = &["--agent-heartbeat", "1s", "--agent-timeout", "60s"];

/// A foreign agent process, killed when dropped.
pub struct Foreign(Child);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` (the emulator or layer and its arguments, then the
/// foreign `wasmos`) as `wasmos agent`, joined to `cluster` with a join
/// token, named `hostname`, with `extra` agent flags.
pub fn start_agent(cluster: &Cluster, program: &[&str], hostname: &str, extra: &[&str]) -> Foreign {
    let join = cluster.token(&["--agent"]);
    let mut cmd = Command::new(program[0]);
    cmd.args(&program[1..])
        .args(["agent", "--master", &cluster.url, "--work-dir"])
        .arg(cluster.dir.path().join(format!("agent-{hostname}")))
        .args(["--hostname", hostname, "--cpus", "2", "--mem", "1GiB"])
        .args(extra)
        .env("WASMOS_JOIN", join)
        .env("WASMOS_LOG", "warn")
        .env("WINEDEBUG", "-all")
        .stdin(Stdio::null());
    Foreign(spawn_until(cmd, &["wasmos agent offering"]).0)
}

/// `wasmos ARGS` against the cluster, as its admin.
pub fn cli(cluster: &Cluster, args: &[&str]) -> Output {
    let mut cmd = cluster.cli();
    cmd.args(args).env("WASMOS_MASTER", &cluster.url);
    cmd.output().expect("run wasmos")
}

/// Every agent's id and attributes (`key=value`), from `wasmos agents`.
pub fn agents(cluster: &Cluster) -> BTreeMap<String, Vec<String>> {
    let out = String::from_utf8(cli(cluster, &["agents", "--json"]).stdout).unwrap();
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|a| {
            let attributes = a["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            (a["id"].as_str().unwrap().to_string(), attributes)
        })
        .collect()
}

/// `wasmos run --json --on ON OPTIONS GUEST -- ARGS`: each task's JSON
/// line, by index.
pub fn run_on(
    cluster: &Cluster,
    on: &str,
    guest_name: &str,
    options: &[&str],
    args: &[&str],
) -> Vec<Value> {
    let module = guest(guest_name);
    let mut all = vec!["run", "--json", "--on", on];
    all.extend(options);
    all.push(module.to_str().unwrap());
    all.push("--");
    all.extend(args);
    let o = cli(cluster, &all);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let mut tasks: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        !tasks.is_empty(),
        "--on {on} {guest_name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    tasks.sort_by_key(|t| t["index"].as_u64());
    tasks
}

/// The primes and floats guests give the same stdout and burn the same fuel
/// on the agents `native` and `foreign` pick (`--on` values), task by task,
/// and run where they were asked to.
pub fn assert_same_output_and_fuel(cluster: &Cluster, native: &str, foreign: &str) {
    let agents = agents(cluster);
    let has = |agent: &Value, on: &str| agents[agent.as_str().unwrap()].iter().any(|a| a == on);
    for (guest_name, arg) in [("primes", "20000"), ("floats", "20000")] {
        let here = run_on(cluster, native, guest_name, &["-n", "2"], &[arg]);
        let there = run_on(cluster, foreign, guest_name, &["-n", "2"], &[arg]);
        assert_eq!(here.len(), there.len());
        for (a, b) in here.iter().zip(&there) {
            assert!(has(&a["agent"], native), "{a}");
            assert!(has(&b["agent"], foreign), "{b}");
            assert_eq!(a["state"], "FINISHED", "{a}");
            assert_eq!(b["state"], "FINISHED", "{b}");
            assert_eq!(a["stdout"], b["stdout"], "{guest_name}: the same output");
            assert_eq!(
                a["usage"]["fuel"], b["usage"]["fuel"],
                "{guest_name}: the same fuel"
            );
            assert!(a["usage"]["fuel"].as_u64().unwrap() > 10_000, "{a}");
        }
    }
}

/// The memory cap, the fuel limit, the timeout and a kill hold on the
/// agents `on` picks.
pub fn assert_limits_hold(cluster: &Cluster, on: &str) {
    let one = |guest_name: &str, options: &[&str], args: &[&str]| {
        let mut tasks = run_on(cluster, on, guest_name, options, args);
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        tasks.remove(0)
    };
    let outcome = |t: &Value| {
        (
            t["state"].as_str().unwrap().to_string(),
            t["reason"].as_str().unwrap().to_string(),
        )
    };
    let hog = one("memhog", &["--mem", "2MiB"], &["64"]);
    assert_eq!(
        outcome(&hog),
        ("FAILED".into(), "MEMORY_LIMIT".into()),
        "{hog}"
    );
    let spin = one("primes", &["--max-fuel", "100000"], &["100000000"]);
    assert_eq!(
        outcome(&spin),
        ("FAILED".into(), "OUT_OF_FUEL".into()),
        "{spin}"
    );
    assert_eq!(spin["usage"]["fuel"], 100_000, "{spin}");
    let slow = one("sleeper", &["--timeout", "2s"], &["600000"]);
    assert_eq!(
        outcome(&slow),
        ("FAILED".into(), "TIMEOUT".into()),
        "{slow}"
    );

    // A detached job's task, killed while it sleeps.
    let sleeper = guest("sleeper");
    let o = cli(
        cluster,
        &[
            "run",
            "--detach",
            "--on",
            on,
            sleeper.to_str().unwrap(),
            "--",
            "600000",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let job = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let task = format!("{job}-0-1");
    let state = |wanted: &str| {
        let out = String::from_utf8(cli(cluster, &["ps", "--json"]).stdout).ok()?;
        out.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|t| t["id"] == task.as_str() && t["state"] == wanted)
    };
    wait_for(PATIENCE, || state("RUNNING")).expect("the sleeper runs");
    let o = cli(cluster, &["kill", &task]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(Duration::from_secs(60), || state("KILLED")).expect("the kill lands");
}
