//! `cpus`: CPU-bound tasks share a core in proportion to their `cpus`, and
//! a lone task is held to its rate. Measured by fuel (work done) and CPU
//! time, not by absolute wall times, so that a loaded machine moves the
//! numbers little. Tests here run one at a time (they measure CPU shares).
mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use wasmos_proto::v1::{TaskState, TaskStatus};

static SERIAL: Mutex<()> = Mutex::new(());

fn with_cpus(id: &str, args: &[&str], cpus: f64) -> wasmos_proto::v1::TaskSpec {
    let mut s = spec(id, args);
    s.resources.as_mut().unwrap().cpus = cpus;
    s
}

/// Runs two endless prime counters at 0.25 and 0.75 on a one-core agent for
/// `secs`, kills them, and returns their final statuses.
fn share_run(h: &Harness, round: usize, secs: f64) -> (TaskStatus, TaskStatus) {
    let module = guest("primes");
    let (a, b) = (
        format!("quarter-{round}"),
        format!("three-quarters-{round}"),
    );
    let mut rx_a = h.launch(with_cpus(&a, &["4000000000"], 0.25), module.clone());
    let mut rx_b = h.launch(with_cpus(&b, &["4000000000"], 0.75), module);
    for rx in [&mut rx_a, &mut rx_b] {
        assert_eq!(
            next(rx, Duration::from_secs(60)).state(),
            TaskState::Starting
        );
        assert_eq!(
            next(rx, Duration::from_secs(60)).state(),
            TaskState::Running
        );
    }
    std::thread::sleep(Duration::from_secs_f64(secs));
    h.executor.kill(&a).unwrap();
    h.executor.kill(&b).unwrap();
    let end_a = next(&mut rx_a, Duration::from_secs(10));
    let end_b = next(&mut rx_b, Duration::from_secs(10));
    assert_eq!(end_a.state(), TaskState::Killed);
    assert_eq!(end_b.state(), TaskState::Killed);
    (end_a, end_b)
}

#[test]
fn two_tasks_share_one_core_in_proportion_to_cpus() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let h = Harness::with(|c| c.cpus(1.0));
    // Warm the module cache so both start together.
    h.run(with_cpus("warm", &["10"], 1.0), guest("primes"));
    let mut seen = Vec::new();
    for round in 0..2 {
        let (a, b) = share_run(&h, round, 2.0);
        let (ua, ub) = (a.usage.unwrap(), b.usage.unwrap());
        let fuel_ratio = ub.fuel_consumed as f64 / ua.fuel_consumed as f64;
        let cpu_ratio = ub.cpu_time_ms as f64 / ua.cpu_time_ms.max(1) as f64;
        eprintln!(
            "round {round}: fuel {} vs {} (ratio {fuel_ratio:.3}), cpu {} ms vs {} ms (ratio {cpu_ratio:.3})",
            ua.fuel_consumed, ub.fuel_consumed, ua.cpu_time_ms, ub.cpu_time_ms
        );
        if (fuel_ratio - 3.0).abs() <= 0.3 {
            // Both used about a share of the core (no more than their rates).
            assert!(
                ua.cpu_time_ms as f64 <= 0.25 * 2000.0 * 1.15 + 50.0,
                "{ua:?}"
            );
            return;
        }
        seen.push(fuel_ratio);
    }
    panic!("fuel ratios {seen:?} are not within 10% of 3");
}

/// Wall time of a fixed amount of prime counting at `cpus`.
fn timed(h: &Harness, id: &str, cpus: f64) -> (Duration, TaskStatus) {
    let t = Instant::now();
    let end = h
        .run(with_cpus(id, &["2500000"], cpus), guest("primes"))
        .pop()
        .unwrap();
    let took = t.elapsed();
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    (took, end)
}

#[test]
fn a_lone_half_cpu_task_takes_twice_as_long() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let h = Harness::with(|c| c.cpus(1.0));
    h.run(with_cpus("warm-lone", &["10"], 1.0), guest("primes"));
    let mut seen = Vec::new();
    let mut fallback = None;
    for round in 0..5 {
        let (full, end_full) = timed(&h, &format!("full-{round}"), 1.0);
        let (half, end_half) = timed(&h, &format!("half-{round}"), 0.5);
        let ratio = half.as_secs_f64() / full.as_secs_f64();
        let (uf, uh) = (end_full.usage.unwrap(), end_half.usage.unwrap());
        eprintln!(
            "round {round}: cpus=1 {full:?} ({} ms cpu), cpus=0.5 {half:?} ({} ms cpu): ratio {ratio:.3}",
            uf.cpu_time_ms, uh.cpu_time_ms
        );
        // The same work both times.
        assert_eq!(uf.fuel_consumed, uh.fuel_consumed);
        if (ratio - 2.0).abs() <= 0.3 {
            return;
        }
        seen.push(ratio);
        // Did the cpus=1 run get a whole core? If other processes took part
        // of it, "twice as long as cpus=1" is not what the agent controls;
        // keep what the agent does control: wall time = CPU time / 0.5.
        let contended = full.as_secs_f64() > 1.15 * uf.cpu_time_ms as f64 / 1000.0;
        if contended {
            fallback = Some(half.as_secs_f64() / (uf.cpu_time_ms as f64 / 1000.0));
        } else {
            fallback = None;
        }
    }
    if let Some(rate_ratio) = fallback {
        eprintln!("machine busy in every round: cpus=0.5 wall / cpus=1 CPU time = {rate_ratio:.3}");
        assert!(
            (rate_ratio - 2.0).abs() <= 0.3,
            "cpus=0.5 took {rate_ratio:.3} times the CPU time of the work (wall ratios {seen:?})"
        );
        return;
    }
    panic!("cpus=0.5 took {seen:?} times as long as cpus=1, not 2 (within 15%)");
}

#[test]
fn an_idle_neighbour_leaves_its_share_unused_not_stolen() {
    // A throttled task (0.25) next to a sleeping one: the sleeper's share is
    // not given to the throttled task (a limit, not only a weight).
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let h = Harness::with(|c| c.cpus(1.0));
    h.run(with_cpus("warm-idle", &["10"], 1.0), guest("primes"));
    let mut sleeper = h.launch(with_cpus("idle", &["60000"], 0.75), guest("sleeper"));
    let mut busy = h.launch(with_cpus("capped", &["4000000000"], 0.25), guest("primes"));
    for rx in [&mut sleeper, &mut busy] {
        next(rx, Duration::from_secs(60));
        next(rx, Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_millis(1500));
    h.executor.kill("capped").unwrap();
    h.executor.kill("idle").unwrap();
    let end = next(&mut busy, Duration::from_secs(10));
    let usage = end.usage.unwrap();
    let (cpu, wall) = (
        usage.cpu_time_ms as f64 / 1000.0,
        usage.wall_time_ms as f64 / 1000.0,
    );
    eprintln!("cpus=0.25 used {cpu:.3} s of CPU in {wall:.3} s");
    assert!(cpu <= 0.25 * wall * 1.15 + 0.03, "used {cpu} s in {wall} s");
    assert!(cpu >= 0.25 * wall * 0.5, "starved: {cpu} s in {wall} s");
}
