//! WASI preview 2 components (the guests built for wasm32-wasip2) run as
//! `wasi:cli/command`s with everything a module gets, with the same reasons
//! and messages: cpus, the sandbox root and the disk cap, the fast path and
//! the cache here; args, env, stdio, exit codes, traps and invalid programs
//! in `run.rs`, and mem, max_fuel, timeout and kill in `limits.rs`, beside
//! the modules' cases.
mod common;

use std::time::Duration;

use common::*;
use wasmos_proto::v1::{Reason, TaskState};

#[test]
fn a_component_is_held_to_its_cpus() {
    let h = Harness::with(|c| c.cpus(1.0));
    let mut s = spec("c-quarter", &["4000000000"]);
    s.resources.as_mut().unwrap().cpus = 0.25;
    let mut rx = h.launch(s, component("primes"));
    next(&mut rx, Duration::from_secs(30));
    next(&mut rx, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    h.executor.kill("c-quarter").unwrap();
    let end = next(&mut rx, Duration::from_secs(10));
    let usage = end.usage.unwrap();
    let share = usage.cpu_time_ms as f64 / usage.wall_time_ms as f64;
    // Held near 0.25 (a lone task would take a whole core).
    assert!((0.15..0.4).contains(&share), "{share:.2}: {usage:?}");
}

#[test]
fn a_component_lives_in_its_sandbox_root_under_the_disk_cap() {
    let h = Harness::new();
    let end = h
        .run(
            spec("c-write", &["write", "note.txt", "from a component"]),
            component("files"),
        )
        .pop()
        .unwrap();
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    let root = h.executor.sandbox("c-write").root;
    assert_eq!(
        std::fs::read_to_string(root.join("note.txt")).unwrap(),
        "from a component"
    );
    assert_eq!(end.usage.unwrap().disk_bytes, 16);

    let secret = h.dir.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    let end = h
        .run(
            spec("c-escape", &["escape", secret.to_str().unwrap()]),
            component("files"),
        )
        .pop()
        .unwrap();
    let out = h.stdout("c-escape");
    assert!(out.contains("blocked"), "{out}");
    assert!(!out.contains("ESCAPED"), "{out}");
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);

    let mut s = spec("c-fill", &["fill", "big", "0"]);
    s.resources.as_mut().unwrap().disk = 1 << 20;
    let end = h.run(s, component("files")).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Failed, Reason::DiskLimit),
        "{}",
        end.message
    );
}

#[test]
fn a_component_that_reaches_no_file_gets_no_root() {
    let h = Harness::new();
    let end = h
        .run(spec("c-ok", &[]), fixture("component_ok"))
        .pop()
        .unwrap();
    assert_eq!((end.state(), end.exit_code), (TaskState::Finished, Some(0)));
    assert_eq!(end.usage.unwrap().disk_bytes, 0);
}

#[test]
fn compiled_components_are_cached_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let config = || wasmos_agent::ExecutorConfig::new(work.clone()).max_instances(50);
    let run = |ex: &wasmos_agent::Executor, id: &str| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        ex.launch(
            "fw",
            spec(id, &["10"]),
            wasmos_agent::ModuleSource::Bytes(component("primes")),
            tx,
        )
        .unwrap();
        let end = collect(rx, Duration::from_secs(60)).pop().unwrap();
        assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    };
    {
        let ex = wasmos_agent::Executor::new(config()).unwrap();
        run(&ex, "c-cache-1");
        run(&ex, "c-cache-2");
        let stats = ex.cache_stats();
        assert_eq!((stats.compiled, stats.memory_hits), (1, 1), "{stats:?}");
    }
    let ex = wasmos_agent::Executor::new(config()).unwrap();
    run(&ex, "c-cache-3");
    let stats = ex.cache_stats();
    assert_eq!((stats.compiled, stats.disk_hits), (0, 1), "{stats:?}");
}
