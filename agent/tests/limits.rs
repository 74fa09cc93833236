//! mem, max_fuel, timeout and kill, of modules and of components.
mod common;

use std::time::{Duration, Instant};

use common::*;
use wasmos_proto::v1::{Reason, TaskState};

#[test]
fn memory_grow_past_the_cap_traps_at_once() {
    let h = Harness::new();
    // A module and the same program as a component.
    for (kind, program) in [
        ("module", guest("memhog")),
        ("component", component("memhog")),
    ] {
        let id = format!("hog-{kind}");
        let mut s = spec(&id, &["64"]);
        s.resources.as_mut().unwrap().mem = 16 << 20;
        let end = h.run(s, program.clone()).pop().unwrap();
        assert_eq!(
            (end.state(), end.reason()),
            (TaskState::Failed, Reason::MemoryLimit),
            "{kind}: {}",
            end.message
        );
        assert!(end.message.contains("16777216"), "{kind}: {}", end.message);
        let usage = end.usage.unwrap();
        assert!(
            usage.peak_mem <= 16 << 20 && usage.peak_mem > 8 << 20,
            "{kind}: {usage:?}"
        );
        // It got partway before the cap.
        let out = h.stdout(&id);
        assert!(out.contains("holding 8 MiB"), "{kind}: {out}");

        // The same guest under a larger cap finishes.
        let id = format!("hog-ok-{kind}");
        let mut s = spec(&id, &["64"]);
        s.resources.as_mut().unwrap().mem = 128 << 20;
        let end = h.run(s, program).pop().unwrap();
        assert_eq!(end.state(), TaskState::Finished, "{kind}: {}", end.message);
        assert!(end.usage.unwrap().peak_mem >= 64 << 20, "{kind}");
    }
}

#[test]
fn a_refused_grow_never_returns_minus_one() {
    let h = Harness::new();
    let mut s = spec("grow", &[]);
    s.resources.as_mut().unwrap().mem = 1 << 20;
    let end = h.run(s, fixture("grow")).pop().unwrap();
    // Exit 42 would mean the guest saw -1 from memory.grow.
    assert_eq!(end.reason(), Reason::MemoryLimit, "{}", end.message);
    assert_eq!(end.usage.unwrap().peak_mem, 1 << 20);
}

#[test]
fn initial_memory_above_the_cap_refuses_the_start() {
    let h = Harness::new();
    let mut s = spec("big", &[]);
    s.resources.as_mut().unwrap().mem = 1 << 20;
    let statuses = h.run(s, fixture("big_memory"));
    assert_path(
        &statuses,
        &[TaskState::Starting, TaskState::Failed],
        "never RUNNING",
    );
    let end = statuses.last().unwrap();
    assert_eq!(end.reason(), Reason::MemoryLimit);
    assert!(end.message.contains("initial memory"), "{}", end.message);
}

#[test]
fn max_fuel_is_a_budget() {
    let h = Harness::new();
    let mut s = spec("fuel-spin", &[]);
    s.max_fuel = 20_000_000;
    let end = h.run(s, fixture("spin")).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Failed, Reason::OutOfFuel),
        "{}",
        end.message
    );
    assert_eq!(end.usage.unwrap().fuel_consumed, 20_000_000);

    for (kind, program) in [
        ("module", guest("primes")),
        ("component", component("primes")),
    ] {
        let mut s = spec(&format!("fuel-primes-{kind}"), &["10000000"]);
        s.max_fuel = 5_000_000;
        let end = h.run(s, program.clone()).pop().unwrap();
        assert_eq!(end.reason(), Reason::OutOfFuel, "{kind}");
        assert_eq!(end.usage.unwrap().fuel_consumed, 5_000_000, "{kind}");

        // Enough fuel: finishes, and reports what it used (under the budget).
        let id = format!("fuel-enough-{kind}");
        let mut s = spec(&id, &["1000"]);
        s.max_fuel = 50_000_000;
        let end = h.run(s, program).pop().unwrap();
        assert_eq!(end.state(), TaskState::Finished, "{kind}: {}", end.message);
        let used = end.usage.unwrap().fuel_consumed;
        assert!(used > 10_000 && used < 50_000_000, "{kind}: {used}");
        assert_eq!(h.stdout(&id), "primes below 1000: 168\n", "{kind}");
    }
}

#[test]
fn timeouts_stop_busy_and_idle_tasks() {
    let h = Harness::new();
    for (id, module, args) in [
        ("timeout-spin", fixture("spin"), vec![]),
        ("timeout-sleep", guest("sleeper"), vec!["60000"]),
        (
            "timeout-sleep-component",
            component("sleeper"),
            vec!["60000"],
        ),
    ] {
        let mut s = spec(id, &args);
        s.timeout_ms = 300;
        let t = Instant::now();
        let end = h.run(s, module).pop().unwrap();
        assert_eq!(
            (end.state(), end.reason()),
            (TaskState::Failed, Reason::Timeout),
            "{id}"
        );
        let wall = end.usage.unwrap().wall_time_ms;
        assert!((300..2_000).contains(&wall), "{id}: {wall} ms");
        assert!(t.elapsed() < Duration::from_secs(20), "{id}");
    }
    // A task that ends before its timeout is not affected.
    let mut s = spec("timeout-ok", &["50"]);
    s.timeout_ms = 30_000;
    let end = h.run(s, guest("sleeper")).pop().unwrap();
    assert_eq!(end.state(), TaskState::Finished);
    assert_eq!(h.stdout("timeout-ok"), "slept 50\n");
}

#[test]
fn kill_stops_a_tight_loop_within_100ms() {
    let h = Harness::new();
    for (id, module, args) in [
        ("kill-spin", fixture("spin"), vec![]),
        ("kill-primes", guest("primes"), vec!["100000000"]),
        ("kill-sleep", guest("sleeper"), vec!["60000"]),
        (
            "kill-primes-component",
            component("primes"),
            vec!["100000000"],
        ),
        ("kill-sleep-component", component("sleeper"), vec!["60000"]),
    ] {
        let mut rx = h.launch(spec(id, &args), module);
        assert_eq!(
            next(&mut rx, Duration::from_secs(30)).state(),
            TaskState::Starting
        );
        assert_eq!(
            next(&mut rx, Duration::from_secs(30)).state(),
            TaskState::Running
        );
        std::thread::sleep(Duration::from_millis(150));
        let t = Instant::now();
        h.executor.kill(id).unwrap();
        let end = next(&mut rx, Duration::from_secs(10));
        let latency = t.elapsed();
        assert_eq!(
            (end.state(), end.reason()),
            (TaskState::Killed, Reason::Killed),
            "{id}"
        );
        assert!(
            latency < Duration::from_millis(100),
            "{id}: kill took {latency:?}"
        );
        let usage = end.usage.unwrap();
        assert!(usage.wall_time_ms >= 140, "{id}: {usage:?}");
        if !id.starts_with("kill-sleep") {
            assert!(usage.fuel_consumed > 1_000_000, "{id}: {usage:?}");
            assert!(usage.cpu_time_ms > 20, "{id}: {usage:?}");
        }
    }
}

#[test]
fn kill_during_a_throttled_run_is_immediate() {
    // A cpus=0.1 task spends most of its time waiting for its share; a kill
    // must not wait for the share to come back.
    let h = Harness::with(|c| c.cpus(1.0));
    let mut s = spec("kill-throttled", &[]);
    s.resources.as_mut().unwrap().cpus = 0.1;
    let mut rx = h.launch(s, fixture("spin"));
    next(&mut rx, Duration::from_secs(30));
    next(&mut rx, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    h.executor.kill("kill-throttled").unwrap();
    let end = next(&mut rx, Duration::from_secs(10));
    assert_eq!(end.state(), TaskState::Killed);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn a_start_function_that_never_returns_can_be_stopped() {
    let h = Harness::new();
    let mut s = spec("start-timeout", &[]);
    s.timeout_ms = 300;
    let statuses = h.run(s, fixture("start_spin"));
    assert_path(
        &statuses,
        &[TaskState::Starting, TaskState::Failed],
        "never RUNNING",
    );
    assert_eq!(statuses.last().unwrap().reason(), Reason::Timeout);

    let mut rx = h.launch(spec("start-kill", &[]), fixture("start_spin"));
    assert_eq!(
        next(&mut rx, Duration::from_secs(30)).state(),
        TaskState::Starting
    );
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    h.executor.kill("start-kill").unwrap();
    let end = next(&mut rx, Duration::from_secs(10));
    assert_eq!(end.state(), TaskState::Killed);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert!(end.usage.unwrap().fuel_consumed > 1_000_000);
}

/// Every task the master may place runs: an executor with 2.5 cpus takes
/// 2,500 tasks of 0.001 cpus at once (a fixed pool of 2,000 slots failed
/// the last 500 with "maximum concurrent limit").
#[test]
fn every_task_that_fits_the_cpus_runs_at_once() {
    let h = Harness::with(|mut c| {
        c.max_instances = None;
        c.cpus(2.5).mem(2 << 30)
    });
    let n = 2_500;
    let wasm = guest("sleeper");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..n {
        let mut s = spec(&format!("s{i}"), &["60000"]);
        s.resources = Some(wasmos_proto::v1::Resources {
            cpus: 0.001,
            mem: 2 << 20,
            disk: 0,
        });
        h.executor
            .launch(
                "fw-test",
                s,
                wasmos_agent::ModuleSource::Bytes(wasm.clone()),
                tx.clone(),
            )
            .unwrap();
    }
    let mut running = 0;
    while running < n {
        let s = next(&mut rx, Duration::from_secs(60));
        assert!(
            !wasmos_agent::is_terminal(s.state()),
            "{} ended: {:?} {}",
            s.task_id,
            s.state(),
            s.message
        );
        running += usize::from(s.state() == TaskState::Running);
    }
    for i in 0..n {
        h.executor.kill(&format!("s{i}")).unwrap();
    }
    let mut killed = 0;
    while killed < n {
        killed += usize::from(next(&mut rx, Duration::from_secs(60)).state() == TaskState::Killed);
    }
}
