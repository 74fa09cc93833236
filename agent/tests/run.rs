//! Basic outcomes: FINISHED, EXIT_NONZERO, TRAP, INVALID_MODULE, what a task
//! sees (args, env, cwd, stdin) and its stdout/stderr files; modules, and
//! components where they differ in kind.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wasmos_agent::{LaunchError, SandboxFile};
use wasmos_proto::v1::{Reason, TaskState};

#[test]
fn hello_sees_exactly_its_args_and_env() {
    let h = Harness::new();
    // The test process has PATH, HOME, ...: the exact output below shows
    // that none of it reaches the task.
    assert!(std::env::var_os("PATH").is_some());
    // A module and the same program as a component see the same.
    for (kind, program) in [
        ("module", guest("hello")),
        ("component", component("hello")),
    ] {
        let id = format!("hello-{kind}");
        let mut s = spec(&id, &["one", "two words"]);
        s.name = "greeter".into();
        s.env = env(&[("COLOR", "blue"), ("EMPTY", "")]);
        let statuses = h.run(s, program);
        assert_path(
            &statuses,
            &[TaskState::Starting, TaskState::Running, TaskState::Finished],
            kind,
        );
        let end = statuses.last().unwrap();
        assert_eq!(end.exit_code, Some(0), "{kind}");
        assert_eq!(end.task_id, id);
        assert_eq!(end.framework_id, "fw-test");
        let out = h.stdout(&id);
        assert_eq!(
            out,
            "argv[0]=greeter\nargv[1]=one\nargv[2]=two words\nenv COLOR=blue\nenv EMPTY=\ncwd=/\n",
            "{kind}"
        );
        let err = h.executor.read(&id, &SandboxFile::Stderr, 0, 1000).unwrap();
        assert_eq!(err, b"hello on stderr\n", "{kind}");
        let usage = end.usage.unwrap();
        assert_eq!(usage.stdout_bytes, out.len() as u64, "{kind}");
        assert_eq!(usage.stderr_bytes, 16, "{kind}");
        assert!(!usage.stdout_truncated, "{kind}");
        assert!(usage.fuel_consumed > 1000, "{kind}: {usage:?}");
        assert!(usage.peak_mem >= 64 << 10, "{kind}: {usage:?}");
        // Every status has its own 16-byte uuid.
        let mut uuids: Vec<_> = statuses.iter().map(|s| s.uuid.clone()).collect();
        assert!(uuids.iter().all(|u| u.len() == 16));
        uuids.sort();
        uuids.dedup();
        assert_eq!(uuids.len(), statuses.len(), "{kind}");
    }
}

#[test]
fn stdin_is_empty() {
    let h = Harness::new();
    let end = h
        .run(spec("stdin", &[]), fixture("stdin_empty"))
        .pop()
        .unwrap();
    assert_eq!(
        (end.state(), end.exit_code),
        (TaskState::Finished, Some(0)),
        "{}",
        end.message
    );
}

/// What makes a task's output and fuel the same on every agent: NaNs made
/// by arithmetic are canonical (x86_64 would make a negative one, aarch64 a
/// positive one), and initialising memory costs the same fuel everywhere
/// (copied, as on an OS without copy-on-write images, never mapped for
/// free on one OS and charged on another).
#[test]
fn float_bits_and_fuel_do_not_depend_on_the_cpu_or_os() {
    let h = Harness::new();
    for (kind, program) in [
        ("module", guest("floats")),
        ("component", component("floats")),
    ] {
        let mut fuel = Vec::new();
        for run in 0..2 {
            let id = format!("floats-{kind}-{run}");
            let statuses = h.run(spec(&id, &["1000"]), program.clone());
            let end = statuses.last().unwrap();
            assert_eq!(end.state(), TaskState::Finished, "{kind}: {end:?}");
            let out = h.stdout(&id);
            for line in [
                "nan 7ff8000000000000",
                "nan+1 7ff8000000000000",
                "nan32 7fc00000",
                "sqrt(-1) 7ff8000000000000",
                "min(nan,2) 4000000000000000",
            ] {
                assert!(
                    out.lines().any(|l| l == line),
                    "{kind}: no `{line}` in\n{out}"
                );
            }
            fuel.push(end.usage.unwrap().fuel_consumed);
        }
        assert_eq!(fuel[0], fuel[1], "{kind}: fuel is deterministic");
    }
    let fuel = |name: &str| {
        let statuses = h.run(spec(&format!("fuel-{name}"), &[]), fixture(name));
        let end = statuses.last().unwrap();
        assert_eq!(end.state(), TaskState::Finished, "{name}: {end:?}");
        end.usage.unwrap().fuel_consumed
    };
    let (with_data, without) = (fuel("data"), fuel("no_data"));
    assert!(
        with_data > without,
        "copying the data segment is charged: {with_data} vs {without}"
    );
}

#[test]
fn argv0_defaults_to_the_task_id() {
    let h = Harness::new();
    let statuses = h.run(spec("unnamed-7", &[]), guest("hello"));
    assert_eq!(statuses.last().unwrap().state(), TaskState::Finished);
    assert!(h.stdout("unnamed-7").starts_with("argv[0]=unnamed-7\n"));
}

#[test]
fn wat_modules_run_too() {
    let h = Harness::new();
    let statuses = h.run(spec("hi-wat", &[]), fixture("hi"));
    assert_eq!(statuses.last().unwrap().state(), TaskState::Finished);
    assert_eq!(h.stdout("hi-wat"), "hi");
    // It imports only `fd_write`: no preopen, no disk walk, exact usage,
    // and a sandbox on disk written behind the task, with no root (it
    // could touch no file).
    let usage = statuses.last().unwrap().usage.unwrap();
    assert_eq!((usage.stdout_bytes, usage.disk_bytes), (2, 0));
    let sandbox = h.executor.sandbox("hi-wat");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sandbox.stdout.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sandbox.dir.is_dir() && !sandbox.root.exists());
    assert_eq!(std::fs::read(&sandbox.stdout).unwrap(), b"hi");
    assert_eq!(h.stdout("hi-wat"), "hi", "the same read from disk");
}

#[test]
fn nonzero_exit_fails_with_the_code() {
    let h = Harness::new();
    // Preview 2's `exit` carries success or failure, not a number: a
    // component's nonzero code arrives as 1.
    for (kind, program, code) in [
        ("module", guest("exitcode"), 42),
        ("component", component("exitcode"), 1),
    ] {
        let id = format!("exit-42-{kind}");
        let end = h.run(spec(&id, &["42"]), program.clone()).pop().unwrap();
        assert_eq!(end.state(), TaskState::Failed, "{kind}");
        assert_eq!(end.reason(), Reason::ExitNonzero, "{kind}");
        assert_eq!(end.exit_code, Some(code), "{kind}");
        assert!(
            end.message.contains(&code.to_string()),
            "{kind}: {}",
            end.message
        );
        assert_eq!(h.stdout(&id), "exiting with 42\n", "{kind}");

        let id = format!("exit-0-{kind}");
        let end = h.run(spec(&id, &["0"]), program).pop().unwrap();
        assert_eq!(
            (end.state(), end.exit_code),
            (TaskState::Finished, Some(0)),
            "{kind}"
        );
    }

    let end = h.run(spec("exit-7", &[]), fixture("exit7")).pop().unwrap();
    assert_eq!(
        (end.reason(), end.exit_code),
        (Reason::ExitNonzero, Some(7))
    );
}

#[test]
fn traps_fail_with_a_wasm_backtrace() {
    let h = Harness::new();
    for (kind, program) in [("module", guest("trap")), ("component", component("trap"))] {
        let end = h
            .run(spec(&format!("trap-{kind}"), &[]), program)
            .pop()
            .unwrap();
        assert_eq!(end.state(), TaskState::Failed, "{kind}");
        assert_eq!(end.reason(), Reason::Trap, "{kind}");
        assert!(
            end.message.contains("unreachable"),
            "{kind}: {}",
            end.message
        );
        assert!(
            end.message.contains("innermost"),
            "{kind}: no backtrace: {}",
            end.message
        );
        assert_eq!(end.exit_code, None, "{kind}");
    }

    let end = h.run(spec("trap-wat", &[]), fixture("trap")).pop().unwrap();
    assert_eq!(end.reason(), Reason::Trap);
    assert!(end.message.contains("deep_failure"), "{}", end.message);
}

/// A module whose `_start` calls `$bad_call`, which makes one WASI preview
/// 1 call, `name`, with `args` (i32s), over one page of memory that starts
/// with `data`.
fn wasi_call(name: &str, args: &[u32], data: &str) -> Arc<[u8]> {
    let params = " i32".repeat(args.len());
    let args: String = args.iter().map(|a| format!(" (i32.const {a})")).collect();
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "{name}" (func $wasi (param{params}) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{data}")
  (func $bad_call (drop (call $wasi{args})))
  (func (export "_start") (call $bad_call)))"#
    )
    .into_bytes()
    .into()
}

#[test]
fn invalid_wasi_calls_are_traps_of_the_guest() {
    let h = Harness::new();
    // Memory is one page: 65536 bytes.
    let cases = [
        (
            "poll-misaligned",
            // Subscriptions are 8-aligned; these start at 1.
            wasi_call("poll_oneoff", &[1, 1024, 1, 2048], ""),
            "not aligned",
        ),
        (
            "buf-past-end",
            // One iovec at 0: 100 bytes from 65534.
            wasi_call("fd_write", &[1, 0, 1, 16], r"\fe\ff\00\00\64\00\00\00"),
            "out of bounds",
        ),
        (
            "iovs-past-end",
            wasi_call("fd_write", &[1, 65532, 1, 16], ""),
            "out of bounds",
        ),
        (
            "buf-wraps",
            // One iovec at 0: 256 bytes from 0xffff_fff0.
            wasi_call("fd_write", &[1, 0, 1, 16], r"\f0\ff\ff\ff\00\01\00\00"),
            "out of bounds",
        ),
        (
            "args-past-end",
            // The argument strings would go from 65530.
            wasi_call("args_get", &[0, 65530], ""),
            "out of bounds",
        ),
    ];
    for (id, program, needle) in cases {
        let end = h.run(spec(id, &[]), program).pop().unwrap();
        assert_eq!(
            (end.state(), end.reason()),
            (TaskState::Failed, Reason::Trap),
            "{id}: {}",
            end.message
        );
        assert!(end.message.contains(needle), "{id}: {}", end.message);
        assert!(end.message.contains("bad_call"), "{id}: {}", end.message);
    }

    // A program's bad call, as a module (preview 1, as above) and as a
    // component: there the preview 1 adapter reads the iovecs (those past
    // the end trap on its own load), then hands the buffer to preview 2's
    // `blocking-write-and-flush`, which wasmtime finds past the end of
    // memory when it lifts the list.
    for (kind, program) in [
        ("module", guest("badcall")),
        ("component", component("badcall")),
    ] {
        for case in ["buf-past-end", "iovs-past-end"] {
            let id = format!("badcall-{case}-{kind}");
            let end = h.run(spec(&id, &[case]), program.clone()).pop().unwrap();
            assert_eq!(
                (end.state(), end.reason()),
                (TaskState::Failed, Reason::Trap),
                "{id}: {}",
                end.message
            );
            assert!(
                end.message.contains("out of bounds"),
                "{id}: {}",
                end.message
            );
            assert!(
                end.message.contains("write_past_the_end"),
                "{id}: no backtrace: {}",
                end.message
            );
            assert_eq!(h.stdout(&id), "", "{id}");
        }
    }
}

#[test]
fn invalid_programs_are_errors_that_name_the_problem() {
    let h = Harness::new();
    let cases: Vec<(&str, Arc<[u8]>, &str)> = vec![
        (
            "garbage",
            Arc::from(&b"\0asm\x01\0\0\0\xff\xff"[..]),
            "not a valid wasm module",
        ),
        (
            "not-wasm",
            Arc::from(&b"#!/bin/sh\necho hi\n"[..]),
            "not a valid wasm module",
        ),
        (
            "invalid",
            Arc::from(&br#"(module (func (export "_start") (result i32)))"#[..]),
            "not a valid wasm module",
        ),
        ("foreign", fixture("foreign_import"), "env::host_clock"),
        ("no-start", fixture("no_start"), "_start"),
        // Components: the same reason, in their own words.
        ("c-no-run", fixture("component_no_run"), "wasi:cli/run"),
        ("c-foreign", fixture("component_foreign"), "acme:clock/now"),
        (
            "c-garbage",
            Arc::from(&b"\0asm\x0d\0\x01\0\xff\xff"[..]),
            "not a valid wasm component",
        ),
    ];
    for (id, bytes, needle) in cases {
        let statuses = h.run(spec(id, &[]), bytes);
        assert_path(&statuses, &[TaskState::Starting, TaskState::Error], id);
        let end = statuses.last().unwrap();
        assert_eq!(end.reason(), Reason::InvalidModule, "{id}");
        assert!(end.message.contains(needle), "{id}: {}", end.message);
    }
}

#[test]
fn invalid_specs_are_errors_and_ids_are_never_reused() {
    let h = Harness::new();
    let mut s = spec("no-mem", &[]);
    s.resources.as_mut().unwrap().mem = 0;
    let end = h.run(s, fixture("hi")).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Error, Reason::InvalidTask)
    );

    let mut s = spec("bad-cpus", &[]);
    s.resources.as_mut().unwrap().cpus = f64::NAN;
    let end = h.run(s, fixture("hi")).pop().unwrap();
    assert_eq!(end.reason(), Reason::InvalidTask);

    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let err = h
        .executor
        .launch(
            "fw",
            spec("../escape", &[]),
            wasmos_agent::ModuleSource::Bytes(fixture("hi")),
            tx.clone(),
        )
        .unwrap_err();
    assert!(matches!(err, LaunchError::InvalidId(_)), "{err}");

    h.run(spec("once", &[]), fixture("hi"));
    let err = h
        .executor
        .launch(
            "fw",
            spec("once", &[]),
            wasmos_agent::ModuleSource::Bytes(fixture("hi")),
            tx,
        )
        .unwrap_err();
    assert!(matches!(err, LaunchError::Duplicate(_)), "{err}");

    // A second executor on a work dir in use is refused, with the reason.
    let work = h.dir.path().join("work");
    let err = wasmos_agent::Executor::new(wasmos_agent::ExecutorConfig::new(&work))
        .err()
        .expect("the work dir is in use");
    assert!(err.to_string().contains("in use"), "{err:#}");
    // A restarted one finds the old sandbox: ERROR, and the old output is
    // untouched.
    let Harness {
        dir: _keep,
        executor,
    } = h;
    drop(executor);
    let again = wasmos_agent::Executor::new(wasmos_agent::ExecutorConfig::new(&work)).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    again
        .launch(
            "fw",
            spec("once", &[]),
            wasmos_agent::ModuleSource::Bytes(fixture("exit7")),
            tx,
        )
        .unwrap();
    let end = collect(rx, Duration::from_secs(30)).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Error, Reason::InvalidTask)
    );
    assert!(end.message.contains("already exists"), "{}", end.message);
    assert_eq!(
        again.read("once", &SandboxFile::Stdout, 0, 100).unwrap(),
        b"hi"
    );
}

#[test]
fn output_past_the_cap_is_dropped_not_fatal() {
    let h = Harness::with(|c| c.output_cap(40));
    let end = h
        .run(spec("chatty", &["a", "b", "c", "d"]), guest("hello"))
        .pop()
        .unwrap();
    assert_eq!(end.state(), TaskState::Finished);
    let usage = end.usage.unwrap();
    assert!(usage.stdout_truncated);
    assert!(usage.stdout_bytes > 40, "{usage:?}");
    assert_eq!(h.stdout("chatty").len(), 40);
    assert_eq!(
        h.stdout("chatty"),
        "argv[0]=chatty\nargv[1]=a\nargv[2]=b\nargv["[..40].to_string()
    );
}

#[test]
fn output_is_readable_while_the_task_runs() {
    let h = Harness::new();
    let mut rx = h.launch(spec("ticker", &[]), fixture("tick"));
    assert_eq!(
        next(&mut rx, Duration::from_secs(30)).state(),
        TaskState::Starting
    );
    assert_eq!(
        next(&mut rx, Duration::from_secs(30)).state(),
        TaskState::Running
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.stdout("ticker").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no output while running"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(h.stdout("ticker"), "tick\n");
    assert_eq!(h.executor.running_tasks(), ["ticker"]);
    assert_eq!(h.executor.running_count(), 1);
    assert_eq!(h.executor.state("ticker"), Some(TaskState::Running));
    h.executor.kill("ticker").unwrap();
    let end = collect(rx, Duration::from_secs(10)).pop().unwrap();
    assert_eq!(end.state(), TaskState::Killed);
    assert_eq!(h.executor.running_count(), 0, "counted until its end");
    assert!(h.executor.running_tasks().is_empty());
    assert_eq!(h.stdout("ticker"), "tick\n", "still readable after the end");
    assert!(h.executor.kill("ticker").is_err(), "already ended");
}

#[test]
fn a_failing_task_does_not_harm_its_neighbours() {
    let h = Harness::new();
    let receivers: Vec<_> = (0..6)
        .map(|i| {
            let (id, module) = match i % 3 {
                0 => (format!("n-trap-{i}"), fixture("trap")),
                1 => (format!("n-grow-{i}"), fixture("grow")),
                _ => (format!("n-ok-{i}"), guest("hello")),
            };
            let mut s = spec(&id, &[]);
            s.resources.as_mut().unwrap().mem = 4 << 20;
            (id, h.launch(s, module))
        })
        .collect();
    for (id, rx) in receivers {
        let end = collect(rx, Duration::from_secs(60)).pop().unwrap();
        let expected = if id.contains("trap") {
            Reason::Trap
        } else if id.contains("grow") {
            Reason::MemoryLimit
        } else {
            Reason::Unspecified
        };
        assert_eq!(end.reason(), expected, "{id}: {}", end.message);
    }
    // The executor still works, and counts no task of them as running.
    let end = h.run(spec("after", &[]), fixture("hi")).pop().unwrap();
    assert_eq!(end.state(), TaskState::Finished);
    assert_eq!(h.executor.running_count(), 0);
}
