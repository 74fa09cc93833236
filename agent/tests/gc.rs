//! The disk collector on a real executor: sandboxes of ended tasks go
//! oldest first under disk pressure, a running task's never.
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use tokio::sync::mpsc::UnboundedReceiver;
use wasmos_agent::gc::{self, Collector};
use wasmos_agent::{DirArtifacts, Executor, ExecutorConfig, ModuleSource};
use wasmos_proto::v1::{Input, InputKind, TaskSpec, TaskState, TaskStatus};

const MIB: u64 = 1 << 20;

fn launch(ex: &Executor, spec: TaskSpec, module: Arc<[u8]>) -> UnboundedReceiver<TaskStatus> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    ex.launch("fw", spec, ModuleSource::Bytes(module), tx)
        .unwrap();
    rx
}

fn run(ex: &Executor, spec: TaskSpec, module: Arc<[u8]>) {
    let id = spec.task_id.clone();
    let end = collect(launch(ex, spec, module), Duration::from_secs(60))
        .pop()
        .unwrap();
    assert_eq!(end.state(), TaskState::Finished, "{id}: {}", end.message);
}

/// A sleeper with a 2 MiB input: a running task with a sizeable sandbox.
fn start_big_sleeper(
    ex: &Executor,
    store: &DirArtifacts,
    id: &str,
) -> UnboundedReceiver<TaskStatus> {
    let blob = store.put(&vec![7u8; 2 * MIB as usize]).unwrap();
    let mut s = spec(id, &["60000"]);
    s.inputs = vec![Input {
        path: "big.bin".into(),
        artifact: blob,
        kind: InputKind::File as i32,
    }];
    let mut rx = launch(ex, s, guest("sleeper"));
    loop {
        let status = next(&mut rx, Duration::from_secs(60));
        match status.state() {
            TaskState::Running => return rx,
            TaskState::Starting => {}
            other => panic!("{id} ended {other:?}: {}", status.message),
        }
    }
}

fn exists(ex: &Executor, task: &str) -> bool {
    ex.sandbox(task).dir.exists()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn past_the_sandbox_limit_the_oldest_ended_sandboxes_go_and_running_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirArtifacts::new(dir.path().join("artifacts")).unwrap());
    // 2 MiB for the running task, room for two more 1 MiB sandboxes and a half.
    let limit = 2 * MIB + 5 * MIB / 2;
    let ex = Arc::new(
        Executor::new(
            ExecutorConfig::new(dir.path().join("work"))
                .max_instances(50)
                .artifacts(store.clone())
                .sandbox_disk_limit(Some(limit))
                .min_free_disk(0)
                .gc_interval(Duration::from_millis(50)),
        )
        .unwrap(),
    );
    let collector = gc::spawn(ex.clone()).unwrap();
    let sleeper = start_big_sleeper(&ex, &store, "running");
    let files = guest("files");
    let fill = |id: &str| {
        run(&ex, spec(id, &["fill", "data.bin", "1"]), files.clone());
        // As the agent's link does when a terminal status arrives.
        collector.task_ended(id, None);
        std::thread::sleep(Duration::from_millis(20));
    };
    fill("e0");
    fill("e1");
    // Under the limit: nothing goes, whatever the passes.
    std::thread::sleep(Duration::from_millis(200));
    assert!(["e0", "e1", "running"].iter().all(|t| exists(&ex, t)));

    fill("e2");
    wait_until("e0 is deleted", || !exists(&ex, "e0"));
    assert!(["e1", "e2", "running"].iter().all(|t| exists(&ex, t)));
    assert_eq!(ex.state("e0"), None, "a deleted task is forgotten");

    fill("e3");
    wait_until("e1 is deleted", || !exists(&ex, "e1"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(["e2", "e3", "running"].iter().all(|t| exists(&ex, t)));
    assert_eq!(ex.state("running"), Some(TaskState::Running));
    let big = ex.sandbox("running").root.join("big.bin");
    assert_eq!(std::fs::metadata(big).unwrap().len(), 2 * MIB);

    ex.kill("running").unwrap();
    collect(sleeper, Duration::from_secs(30));
    drop(collector);
}

/// Sets a path's mtime `secs` seconds into the past.
fn age(path: &Path, secs: u64) {
    std::fs::File::open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn short_of_free_space_every_ended_sandbox_goes_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirArtifacts::new(dir.path().join("artifacts")).unwrap());
    let work = dir.path().join("work");
    // No file system has this much free: the collector frees all it may.
    let ex = Executor::new(
        ExecutorConfig::new(&work)
            .max_instances(50)
            .artifacts(store.clone())
            .min_free_disk(u64::MAX),
    )
    .unwrap();
    // A sandbox left by an earlier run of the agent, unknown to this one.
    let stray = work.join("sandboxes/earlier-run");
    std::fs::create_dir_all(stray.join("root")).unwrap();
    std::fs::write(stray.join("root/old.txt"), b"old").unwrap();
    std::fs::write(stray.join("stdout"), b"").unwrap();
    for path in ["", "root", "stdout"] {
        age(&stray.join(path), 3600);
    }

    let sleeper = start_big_sleeper(&ex, &store, "running");
    let files = guest("files");
    run(&ex, spec("first", &["write", "a.txt", "A"]), files.clone());
    std::thread::sleep(Duration::from_millis(20));
    run(&ex, spec("second", &["write", "b.txt", "B"]), files.clone());

    let collector = Collector::new();
    let report = collector.collect(&ex);
    assert_eq!(report.removed, ["earlier-run", "first", "second"]);
    assert!(report.sandbox_bytes >= 2 * MIB, "{report:?}");
    assert!(report.free_bytes.is_some_and(|b| b > 0), "{report:?}");
    assert!(!stray.exists());
    assert!(exists(&ex, "running"));
    assert_eq!(ex.state("running"), Some(TaskState::Running));

    // Once it ends, the next pass deletes it too.
    ex.kill("running").unwrap();
    collect(sleeper, Duration::from_secs(30));
    assert_eq!(collector.collect(&ex).removed, ["running"]);
    assert!(!exists(&ex, "running"));
    assert!(collector.collect(&ex).removed.is_empty());
}

fn gc_executor(dir: &Path, tweak: impl FnOnce(ExecutorConfig) -> ExecutorConfig) -> Executor {
    let config = ExecutorConfig::new(dir.join("work"))
        .cpus(1.0)
        .min_free_disk(0)
        .max_instances(50);
    Executor::new(tweak(config)).unwrap()
}

#[test]
fn past_max_sandboxes_the_oldest_ended_go_whatever_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let ex = gc_executor(dir.path(), |c| c.max_sandboxes(3));
    let collector = Collector::new();
    let ids: Vec<String> = (0..6).map(|i| format!("cap-{i}")).collect();
    for id in &ids {
        run(&ex, spec(id, &[]), fixture("hi"));
        collector.task_ended(id, None);
        collector.task_retired(id);
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_until("every sandbox is on disk", || {
        ids.iter().all(|id| ex.sandbox(id).stdout.exists())
    });
    let report = collector.collect(&ex);
    assert_eq!(report.removed, ids[..3]);
    assert!(ids[..3].iter().all(|id| !exists(&ex, id)));
    assert!(ids[3..].iter().all(|id| exists(&ex, id)));
    assert!(collector.collect(&ex).removed.is_empty(), "within the cap");
}

#[test]
fn retired_and_stray_sandboxes_go_after_the_retention_time_unretired_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Duration::from_secs(1);
    let ex = gc_executor(dir.path(), |c| c.sandbox_retention(retention));
    // Two tasks of this run, only one of them acknowledged, and a sandbox
    // of an earlier run of the agent.
    let collector = Collector::new();
    for id in ["acked", "unacked"] {
        run(&ex, spec(id, &[]), fixture("hi"));
        collector.task_ended(id, None);
    }
    wait_until("both sandboxes are on disk", || {
        ["acked", "unacked"]
            .iter()
            .all(|id| ex.sandbox(id).stdout.exists())
    });
    std::fs::create_dir_all(dir.path().join("work/sandboxes/stray/root")).unwrap();
    collector.task_retired("acked");
    assert!(collector.collect(&ex).removed.is_empty(), "too young");
    // A stray that appears after the pass that listed the first one.
    let late = dir.path().join("work/sandboxes/late-stray");
    std::fs::create_dir_all(late.join("root")).unwrap();
    for path in ["", "root"] {
        age(&late.join(path), 3600);
    }
    std::thread::sleep(retention + Duration::from_millis(200));
    // A pass a task's end asks for looks at the sandboxes the collector
    // knows of, not at the directory: the late stray waits for a pass
    // that lists it.
    let mut removed = collector.collect_known(&ex).removed;
    removed.sort();
    assert_eq!(removed, ["acked", "stray"]);
    assert!(exists(&ex, "late-stray"));
    assert_eq!(collector.collect(&ex).removed, ["late-stray"]);
    assert!(exists(&ex, "unacked"), "never acknowledged: kept");
}
