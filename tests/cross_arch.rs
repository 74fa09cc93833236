//! Another CPU: the cross-built aarch64 `wasmos agent`, run by
//! `qemu-aarch64`, beside a native x86_64 agent, both joined with join
//! tokens to one x86_64 master over TLS. The same jobs run on each (pinned
//! with `--on arch=...`): every task's stdout and fuel are the same on both
//! CPUs, and the memory cap, fuel limit, timeout and kill hold under the
//! emulator too.
//!
//! Ignored by `cargo test`: it needs the aarch64 binary and qemu-user.
//! `scripts/cross` (which `.ci/run` calls) builds and installs them and
//! runs it with `--ignored`. The aarch64 agent runs its executor in process:
//! qemu-user cannot start another aarch64 program (the executor process)
//! without the kernel's binfmt_misc, which a container does not have.
mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cluster, guest, spawn_until, wait_for};

/// An emulated CPU on a loaded 2-core machine: compiling a module under
/// qemu takes seconds, not milliseconds.
const PATIENCE: Duration = Duration::from_secs(240);

/// The aarch64 agent, killed when dropped.
struct Foreign(Child);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_aarch64_agent(cluster: &Cluster) -> Foreign {
    let bin = std::env::var("WASMOS_AARCH64_BIN")
        .expect("WASMOS_AARCH64_BIN names the cross-built aarch64 wasmos (scripts/cross)");
    let join = cluster.token(&["--agent"]);
    let mut cmd = Command::new("qemu-aarch64");
    cmd.args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(bin)
        .args(["agent", "--master", &cluster.url, "--work-dir"])
        .arg(cluster.dir.path().join("agent-aarch64"))
        .args([
            "--hostname",
            "emulated",
            "--cpus",
            "2",
            "--mem",
            "1GiB",
            "--in-process-executor",
        ])
        .env("WASMOS_JOIN", join)
        .env("WASMOS_LOG", "warn")
        .stdin(Stdio::null());
    Foreign(spawn_until(cmd, &["wasmos agent offering"]).0)
}

fn cli(cluster: &Cluster, args: &[&str]) -> Output {
    let mut cmd = cluster.cli();
    cmd.args(args).args(["--master", &cluster.url]);
    let o = cmd.output().expect("run wasmos");
    o
}

/// `wasmos run --json` of `guest` pinned to `arch`: each task's JSON line,
/// by index.
fn run_on(
    cluster: &Cluster,
    arch: &str,
    guest_name: &str,
    options: &[&str],
    args: &[&str],
) -> Vec<Value> {
    let on = format!("arch={arch}");
    let mut all = vec!["run", "--json", "--on", &on];
    all.extend(options);
    let module = guest(guest_name);
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
        "{arch} {guest_name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    tasks.sort_by_key(|t| t["index"].as_u64());
    tasks
}

#[test]
#[ignore = "needs the cross-built aarch64 wasmos and qemu-user: scripts/cross runs it"]
fn the_same_job_on_aarch64_and_x86_64_gives_the_same_output_and_fuel_and_keeps_its_limits() {
    let cluster = Cluster::start_tls(1, &[], &[]);
    let _foreign = start_aarch64_agent(&cluster);
    cluster.wait_agents(2);

    // Each agent says what it is, and the emulated one is aarch64.
    let agents = String::from_utf8(cli(&cluster, &["agents", "--json"]).stdout).unwrap();
    let arch_of: BTreeMap<String, String> = agents
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|a| {
            let arch = a["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|x| x.as_str()?.strip_prefix("arch=").map(String::from))
                .expect("every agent reports its arch");
            (a["id"].as_str().unwrap().to_string(), arch)
        })
        .collect();
    let mut arches: Vec<&str> = arch_of.values().map(String::as_str).collect();
    arches.sort();
    assert_eq!(arches, ["aarch64", "x86_64"], "{agents}");

    // The same output and the same fuel, task by task.
    for (guest_name, args) in [("primes", ["20000"]), ("floats", ["20000"])] {
        let x86 = run_on(&cluster, "x86_64", guest_name, &["-n", "2"], &args);
        let arm = run_on(&cluster, "aarch64", guest_name, &["-n", "2"], &args);
        for (a, b) in x86.iter().zip(&arm) {
            assert_eq!(arch_of[a["agent"].as_str().unwrap()], "x86_64", "{a}");
            assert_eq!(arch_of[b["agent"].as_str().unwrap()], "aarch64", "{b}");
            assert_eq!(
                (&a["state"], &b["state"]),
                (&"FINISHED".into(), &"FINISHED".into()),
                "{a}\n{b}"
            );
            assert_eq!(a["stdout"], b["stdout"], "{guest_name}: the same output");
            assert_eq!(
                a["usage"]["fuel"], b["usage"]["fuel"],
                "{guest_name}: the same fuel"
            );
            assert!(a["usage"]["fuel"].as_u64().unwrap() > 10_000, "{a}");
        }
    }

    // The limits hold under the emulator.
    let [hog] = &run_on(&cluster, "aarch64", "memhog", &["--mem", "2MiB"], &["64"])[..] else {
        panic!()
    };
    assert_eq!(
        (&hog["state"], &hog["reason"]),
        (&"FAILED".into(), &"MEMORY_LIMIT".into()),
        "{hog}"
    );
    let [spin] = &run_on(
        &cluster,
        "aarch64",
        "primes",
        &["--max-fuel", "100000"],
        &["100000000"],
    )[..] else {
        panic!()
    };
    assert_eq!(
        (&spin["state"], &spin["reason"]),
        (&"FAILED".into(), &"OUT_OF_FUEL".into()),
        "{spin}"
    );
    assert_eq!(spin["usage"]["fuel"], 100_000, "{spin}");
    let started = Instant::now();
    let [slow] = &run_on(
        &cluster,
        "aarch64",
        "sleeper",
        &["--timeout", "2s"],
        &["600000"],
    )[..] else {
        panic!()
    };
    assert_eq!(
        (&slow["state"], &slow["reason"]),
        (&"FAILED".into(), &"TIMEOUT".into()),
        "{slow}"
    );
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());

    // A kill: a detached job's task, killed while it sleeps.
    let sleeper = guest("sleeper");
    let o = cli(
        &cluster,
        &[
            "run",
            "--detach",
            "--on",
            "arch=aarch64",
            sleeper.to_str().unwrap(),
            "--",
            "600000",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let job = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let task = format!("{job}-0-1");
    let state = |cluster: &Cluster| -> Option<Value> {
        let out = String::from_utf8(cli(cluster, &["ps", "--json"]).stdout).ok()?;
        out.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|t| t["id"] == task.as_str())
    };
    let running = wait_for(PATIENCE, || {
        state(&cluster).filter(|t| t["state"] == "RUNNING")
    })
    .expect("the sleeper runs on the aarch64 agent");
    assert_eq!(
        arch_of[running["agent"].as_str().unwrap()],
        "aarch64",
        "{running}"
    );
    let o = cli(&cluster, &["kill", &task]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(Duration::from_secs(60), || {
        state(&cluster).filter(|t| t["state"] == "KILLED")
    })
    .expect("the kill lands under qemu");
}
