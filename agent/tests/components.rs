//! WASI preview 2 components (the guests built for wasm32-wasip2) run as
//! `wasi:cli/command`s with everything a module gets: args, env, stdio, the
//! sandbox root, exit codes, traps, and every limit (mem, max_fuel,
//! timeout, kill, cpus, disk), with the same reasons and messages.
mod common;

use std::time::{Duration, Instant};

use common::*;
use wasmos_proto::v1::{Reason, TaskState};

#[test]
fn a_component_sees_exactly_its_args_env_and_root() {
    let h = Harness::new();
    let mut s = spec("c-hello", &["one", "two words"]);
    s.name = "greeter".into();
    s.env = env(&[("COLOR", "blue"), ("EMPTY", "")]);
    let statuses = h.run(s, component("hello"));
    assert_eq!(
        states(&statuses),
        [TaskState::Starting, TaskState::Running, TaskState::Finished],
        "{statuses:#?}"
    );
    let end = statuses.last().unwrap();
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(
        h.stdout("c-hello"),
        "argv[0]=greeter\nargv[1]=one\nargv[2]=two words\nenv COLOR=blue\nenv EMPTY=\ncwd=/\n"
    );
    let err = h
        .executor
        .read("c-hello", &wasmos_agent::SandboxFile::Stderr, 0, 1000)
        .unwrap();
    assert_eq!(err, b"hello on stderr\n");
    let usage = end.usage.unwrap();
    assert!(usage.fuel_consumed > 1000, "{usage:?}");
    assert!(usage.peak_mem >= 64 << 10, "{usage:?}");
    assert_eq!(usage.stderr_bytes, 16);
}

#[test]
fn exits_and_traps_end_a_component_as_they_end_a_module() {
    let h = Harness::new();
    let end = h
        .run(spec("c-exit-0", &["0"]), component("exitcode"))
        .pop()
        .unwrap();
    assert_eq!((end.state(), end.exit_code), (TaskState::Finished, Some(0)));

    // Preview 2's `exit` carries success or failure, not a number: any
    // nonzero code arrives as 1.
    let end = h
        .run(spec("c-exit-42", &["42"]), component("exitcode"))
        .pop()
        .unwrap();
    assert_eq!(
        (end.state(), end.reason(), end.exit_code),
        (TaskState::Failed, Reason::ExitNonzero, Some(1)),
        "{}",
        end.message
    );
    assert_eq!(h.stdout("c-exit-42"), "exiting with 42\n");

    let end = h.run(spec("c-trap", &[]), component("trap")).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Failed, Reason::Trap)
    );
    assert!(end.message.contains("unreachable"), "{}", end.message);
    assert!(
        end.message.contains("innermost"),
        "no backtrace: {}",
        end.message
    );
    assert_eq!(end.exit_code, None);
}

#[test]
fn the_mem_cap_holds_a_component() {
    let h = Harness::new();
    let mut s = spec("c-hog", &["64"]);
    s.resources.as_mut().unwrap().mem = 16 << 20;
    let end = h.run(s, component("memhog")).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Failed, Reason::MemoryLimit),
        "{}",
        end.message
    );
    assert!(end.message.contains("16777216"), "{}", end.message);
    let usage = end.usage.unwrap();
    assert!(
        usage.peak_mem <= 16 << 20 && usage.peak_mem > 8 << 20,
        "{usage:?}"
    );

    let mut s = spec("c-hog-ok", &["64"]);
    s.resources.as_mut().unwrap().mem = 128 << 20;
    let end = h.run(s, component("memhog")).pop().unwrap();
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    assert!(end.usage.unwrap().peak_mem >= 64 << 20);
}

#[test]
fn max_fuel_is_a_components_budget_too() {
    let h = Harness::new();
    let mut s = spec("c-fuel", &["10000000"]);
    s.max_fuel = 5_000_000;
    let end = h.run(s, component("primes")).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Failed, Reason::OutOfFuel),
        "{}",
        end.message
    );
    assert_eq!(end.usage.unwrap().fuel_consumed, 5_000_000);

    let mut s = spec("c-fuel-enough", &["1000"]);
    s.max_fuel = 50_000_000;
    let end = h.run(s, component("primes")).pop().unwrap();
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    assert_eq!(h.stdout("c-fuel-enough"), "primes below 1000: 168\n");
}

#[test]
fn timeouts_and_kills_stop_a_component() {
    let h = Harness::new();
    let mut s = spec("c-timeout", &["60000"]);
    s.timeout_ms = 300;
    let end = h.run(s, component("sleeper")).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Failed, Reason::Timeout)
    );
    let wall = end.usage.unwrap().wall_time_ms;
    assert!((300..2_000).contains(&wall), "{wall} ms");

    for (id, args) in [
        ("c-kill-primes", ["100000000"]),
        ("c-kill-sleep", ["60000"]),
    ] {
        let module = if id == "c-kill-primes" {
            component("primes")
        } else {
            component("sleeper")
        };
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
        assert_eq!(
            (end.state(), end.reason()),
            (TaskState::Killed, Reason::Killed),
            "{id}"
        );
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{id}: {:?}",
            t.elapsed()
        );
    }
}

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
fn invalid_components_are_errors_that_name_the_problem() {
    let h = Harness::new();
    for (id, bytes, needle) in [
        ("c-no-run", fixture("component_no_run"), "wasi:cli/run"),
        ("c-foreign", fixture("component_foreign"), "acme:clock/now"),
        (
            "c-garbage",
            std::sync::Arc::from(&b"\0asm\x0d\0\x01\0\xff\xff"[..]),
            "not a valid wasm component",
        ),
    ] {
        let statuses = h.run(spec(id, &[]), bytes);
        assert_eq!(
            states(&statuses),
            [TaskState::Starting, TaskState::Error],
            "{id}"
        );
        let end = statuses.last().unwrap();
        assert_eq!(end.reason(), Reason::InvalidModule, "{id}");
        assert!(end.message.contains(needle), "{id}: {}", end.message);
    }
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
