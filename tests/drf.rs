//! DRF in fact, through real processes: the DRF paper's example (Ghodsi et
//! al., NSDI 2011, section 4) as two `wasmos run` jobs on one agent of 9
//! cpus and 18 GiB. Framework A runs tasks of <1 cpu, 4 GiB>, B tasks of
//! <3 cpus, 1 GiB>; DRF gives A 3 tasks and B 2. Sampling the master shows
//! what each framework actually runs over time.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{Cluster, guest};

/// A `wasmos run` of 600 sleepers of 300 ms, each asking for `cpus` and
/// `mem`, in role `r`.
fn job(cluster: &Cluster, name: &str, cpus: &str, mem: &str) -> Child {
    cluster
        .cli()
        .args(["run", "--master", &cluster.url, "--role", "r", "-n", "600"])
        .args(["--cpus", cpus, "--mem", mem, "--timeout", "30s"])
        .arg(guest("sleeper"))
        .args(["--", "300", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wasmos run")
}

/// The tasks' worth each framework holds now (running, or offered to it
/// for the next: what DRF divides), by its cpus over the cpus of one of
/// its tasks; the frameworks are told apart by their memory per cpu.
fn running(cluster: &Cluster) -> Option<(f64, f64)> {
    let state: serde_json::Value = serde_json::from_str(&cluster.get("/state")).ok()?;
    let (mut a, mut b) = (None, None);
    for fw in state["frameworks"].as_array()? {
        let cpus = fw["allocated"]["cpu_millis"].as_f64()? / 1000.0;
        let mem = fw["allocated"]["mem"].as_f64()?;
        if cpus == 0.0 {
            continue;
        }
        // A's tasks hold 4 GiB per cpu, B's a third of a GiB.
        if mem / cpus > (1u64 << 30) as f64 {
            a = Some((cpus).min(mem / (4u64 << 30) as f64));
        } else {
            b = Some((cpus / 3.0).min(mem / (1u64 << 30) as f64));
        }
    }
    Some((a.unwrap_or(0.0), b.unwrap_or(0.0)))
}

#[test]
fn the_papers_example_runs_three_tasks_of_a_and_two_of_b() {
    let cluster = Cluster::start(1, &[], &["--cpus", "9", "--mem", "18GiB"]);
    cluster.wait_agents(1);
    let mut a = job(&cluster, "a", "1", "4GiB");
    let mut b = job(&cluster, "b", "3", "1GiB");
    // Both subscribe and upload; then a few task lengths to settle.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some((ra, rb)) = running(&cluster)
            && ra > 0.0
            && rb > 0.0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut samples = Vec::new();
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(12) {
        if let Some(sample) = running(&cluster) {
            samples.push(sample);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // What operators see: each framework's share next to its DRF-fair
    // share (2/3 each), and the fairness gauge.
    let out = cluster
        .cli()
        .args(["frameworks", "--json", "--master", &cluster.url])
        .output()
        .expect("wasmos frameworks");
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for fw in &listed {
        let fair = fw["fair_share"].as_f64().expect("fair_share");
        assert!((fair - 2.0 / 3.0).abs() < 0.01, "{fw}");
    }
    let metrics = cluster.get("/metrics");
    let gap: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasmos_fairness_gap "))
        .expect("the fairness gauge")
        .trim()
        .parse()
        .expect("a number");
    assert!(gap < 0.2, "fairness gap {gap}");
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
    let n = samples.len() as f64;
    let mean_a = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_b = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let at_drf = samples.iter().filter(|s| **s == (3.0, 2.0)).count();
    println!(
        "A runs {mean_a:.2} tasks on average, B {mean_b:.2}; {at_drf} of {} samples at (3, 2)",
        samples.len()
    );
    assert!(samples.len() >= 30, "{} samples", samples.len());
    assert!(
        (mean_a - 3.0).abs() <= 0.3,
        "A ran {mean_a:.2} tasks on average: {samples:?}"
    );
    assert!(
        (mean_b - 2.0).abs() <= 0.2,
        "B ran {mean_b:.2} tasks on average: {samples:?}"
    );
}
