//! The sandbox: inputs, escapes, reads from outside, and the disk limit.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wasmos_agent::{DirArtifacts, ModuleSource, SandboxFile};
use wasmos_proto::v1::{Input, InputKind, Reason, TaskState};

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn inputs_are_placed_in_the_root_and_nothing_else_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirArtifacts::new(dir.path().join("artifacts")).unwrap());
    let data = store.put(b"forty-two\n").unwrap();
    let tree = store
        .put(&tar_of(&[("a.txt", b"A"), ("deep/b.txt", b"B")]))
        .unwrap();
    let module = store.put(&guest("files")).unwrap();
    let h = Harness::with(|c| c.artifacts(store.clone()));

    let inputs = vec![
        Input {
            path: "data.txt".into(),
            artifact: data.clone(),
            kind: InputKind::File as i32,
        },
        Input {
            path: "in/tree".into(),
            artifact: tree,
            kind: InputKind::TarDirectory as i32,
        },
    ];
    let run = |id: &str, args: &[&str]| {
        let mut s = spec(id, args);
        s.artifact = module.clone();
        s.inputs = inputs.clone();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        h.executor
            .launch("fw", s, ModuleSource::Artifact, tx)
            .unwrap();
        collect(rx, Duration::from_secs(60)).pop().unwrap()
    };
    let end = run("ls-root", &["ls"]);
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    assert_eq!(h.stdout("ls-root"), "data.txt\nin\n");
    let end = run("read-input", &["read", "data.txt"]);
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    assert_eq!(h.stdout("read-input"), "forty-two\n");
    let end = run("read-tar", &["read", "/in/tree/deep/b.txt"]);
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    assert_eq!(h.stdout("read-tar"), "B");
    assert_eq!(end.usage.unwrap().disk_bytes, 10 + 1 + 1);

    // A missing input artifact, and one whose bytes do not match its digest.
    let mut s = spec("missing-input", &["ls"]);
    s.inputs = vec![Input {
        path: "x".into(),
        artifact: "ab".repeat(32),
        kind: 0,
    }];
    let end = h.run(s, guest("files")).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Failed, Reason::ArtifactUnavailable)
    );
    std::fs::write(dir.path().join("artifacts").join(&data), b"tampered").unwrap();
    let mut s = spec("tampered-input", &["ls"]);
    s.inputs = vec![Input {
        path: "x".into(),
        artifact: data,
        kind: 0,
    }];
    let end = h.run(s, guest("files")).pop().unwrap();
    assert_eq!(end.reason(), Reason::ArtifactUnavailable);
    assert!(end.message.contains("sha256"), "{}", end.message);

    // Input paths must stay inside the root.
    let mut s = spec("escaping-input", &["ls"]);
    s.inputs = vec![Input {
        path: "../x".into(),
        artifact: "ab".repeat(32),
        kind: 0,
    }];
    let end = h.run(s, guest("files")).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Error, Reason::InvalidTask)
    );
}

#[test]
fn escapes_fail_inside_the_task_and_never_touch_host_files() {
    let h = Harness::new();
    let secret = h.dir.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    let secret_path = secret.to_str().unwrap().to_owned();
    let end = h
        .run(
            spec("escaper", &["escape", &secret_path, "/etc/passwd"]),
            guest("files"),
        )
        .pop()
        .unwrap();
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    let out = h.stdout("escaper");
    assert!(out.ends_with("escape attempts done\n"), "{out}");
    assert!(!out.contains("ESCAPED"), "{out}");
    assert!(out.matches("blocked").count() >= 14, "{out}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
    let work = h.dir.path().join("work");
    assert!(!work.join("sandboxes/escaper/pwned").exists());
    assert!(!work.join("sandboxes/pwned").exists());
    assert!(!work.join("pwned").exists());

    // The task did create symlinks (pointing out); reading them from
    // outside through the executor must not follow them either.
    let root = work.join("sandboxes/escaper/root");
    let links: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        !links.is_empty(),
        "the task made its symlinks in its own root"
    );
    for name in links {
        let name = name.to_string_lossy().into_owned();
        let read = h.executor.read(
            "escaper",
            &SandboxFile::Root(format!("{name}/stdout")),
            0,
            100,
        );
        assert!(read.is_err(), "{name}/stdout read through a link: {read:?}");
        let read = h
            .executor
            .read("escaper", &SandboxFile::Root(name.clone()), 0, 100);
        if let Ok(bytes) = read {
            assert!(
                !String::from_utf8_lossy(&bytes).contains("host secret"),
                "{name}"
            );
        }
    }
    let read = h
        .executor
        .read("escaper", &SandboxFile::Root("../stdout".into()), 0, 100);
    assert!(read.is_err());
}

#[test]
fn the_root_is_writable_and_readable_from_outside() {
    let h = Harness::new();
    let end = h
        .run(
            spec("writer", &["write", "out/../result.txt", "42"]),
            guest("files"),
        )
        .pop()
        .unwrap();
    // `out/` does not exist: the write fails inside the task.
    assert_eq!(end.reason(), Reason::ExitNonzero, "{}", end.message);
    let end = h
        .run(
            spec("writer2", &["write", "result.txt", "42"]),
            guest("files"),
        )
        .pop()
        .unwrap();
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    let bytes = h
        .executor
        .read("writer2", &SandboxFile::Root("result.txt".into()), 0, 100)
        .unwrap();
    assert_eq!(bytes, b"42");
    let part = h
        .executor
        .read("writer2", &SandboxFile::Root("result.txt".into()), 1, 100)
        .unwrap();
    assert_eq!(part, b"2");
    assert_eq!(end.usage.unwrap().disk_bytes, 2);
    h.executor.remove("writer2").unwrap();
    assert!(
        h.executor
            .read("writer2", &SandboxFile::Stdout, 0, 10)
            .is_err()
    );
}

#[test]
fn writing_without_end_hits_the_disk_limit() {
    let h = Harness::with(|c| c.disk_check_interval(Duration::from_millis(100)));
    let mut s = spec("filler", &["fill", "big.bin", "0"]);
    s.resources.as_mut().unwrap().disk = 8 << 20;
    let end = h.run(s, guest("files")).pop().unwrap();
    assert_eq!(
        (end.state(), end.reason()),
        (TaskState::Failed, Reason::DiskLimit),
        "{}",
        end.message
    );
    let usage = end.usage.unwrap();
    assert!(usage.disk_bytes > 8 << 20, "{usage:?}");
    assert!(usage.wall_time_ms < 20_000, "{usage:?}");

    // disk = 0: the task may write nothing.
    let mut s = spec("no-disk", &["pace", "x", "1", "20"]);
    s.resources.as_mut().unwrap().disk = 0;
    let end = h.run(s, guest("files")).pop().unwrap();
    assert_eq!(end.reason(), Reason::DiskLimit, "{}", end.message);
}

#[test]
fn a_paced_writer_is_stopped_within_one_second_of_crossing_the_cap() {
    // Writes 1 MiB every 100 ms; crosses a 3.5 MiB cap with its 4th write,
    // about 300 ms after start.
    let h = Harness::with(|c| c.disk_check_interval(Duration::from_millis(200)));
    let mut s = spec("paced", &["pace", "log.bin", "1024", "100"]);
    s.resources.as_mut().unwrap().disk = (7 << 20) / 2;
    let end = h.run(s, guest("files")).pop().unwrap();
    assert_eq!(end.reason(), Reason::DiskLimit, "{}", end.message);
    let usage = end.usage.unwrap();
    let crossing_ms = 300;
    assert!(
        usage.wall_time_ms < crossing_ms + 1_000,
        "stopped {} ms after start, crossing was at ~{crossing_ms} ms",
        usage.wall_time_ms
    );
    assert!(usage.disk_bytes >= 4 << 20, "{usage:?}");
}

#[test]
fn sandboxes_written_behind_read_the_same_before_and_after() {
    let h = Harness::new();
    let ids: Vec<String> = (0..300).map(|i| format!("wb-{i}")).collect();
    let streams: Vec<_> = ids
        .iter()
        .map(|id| h.launch(spec(id, &[]), fixture("hi")))
        .collect();
    for (id, rx) in ids.iter().zip(streams) {
        let end = collect(rx, Duration::from_secs(60)).pop().unwrap();
        assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
        // Straight after the end, on disk or not yet: the same answers.
        let (data, size) = h
            .executor
            .read_sized(id, &SandboxFile::Stdout, 1, 10)
            .unwrap();
        assert_eq!((data.as_slice(), size), (&b"i"[..], 2));
        assert_eq!(h.executor.list(id, "/").unwrap(), vec![]);
        let missing = h.executor.read(id, &SandboxFile::Root("x".into()), 0, 10);
        assert!(missing.is_err());
    }
    // A sandbox removed before it reached the disk never appears later.
    h.executor.remove("wb-0").unwrap();
    let gone = h.executor.sandbox("wb-0").dir;
    // Once on disk the same answers again, with no root made for tasks
    // that could touch no file.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for id in &ids[1..] {
        let sandbox = h.executor.sandbox(id);
        while !sandbox.stdout.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{id} never reached the disk"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!sandbox.root.exists(), "{id}");
        assert_eq!(h.executor.list(id, "/").unwrap(), vec![]);
        assert!(h.executor.list(id, "/sub").is_err());
        let missing = h.executor.read(id, &SandboxFile::Root("x".into()), 0, 10);
        assert!(missing.is_err());
    }
    // And after the executor is gone.
    let work = h.executor.config().work_dir.clone();
    let Harness { dir, executor } = h;
    drop(executor);
    assert!(!gone.exists(), "a removed sandbox came back");
    for id in &ids[1..] {
        let sandbox = work.join("sandboxes").join(id);
        assert!(!sandbox.join("root").exists(), "{id}");
        assert_eq!(std::fs::read(sandbox.join("stdout")).unwrap(), b"hi");
    }
    drop(dir);
}
