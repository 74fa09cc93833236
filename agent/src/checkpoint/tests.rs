use super::*;

fn status(task: &str, state: v1::TaskState) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task.into(),
        state: state as i32,
        uuid: vec![1, 2, 3],
        ..Default::default()
    }
}

fn state(state: v1::TaskState) -> v1::CheckpointTask {
    v1::CheckpointTask {
        framework_id: "f".into(),
        artifact: "a".into(),
        state: state as i32,
        ..Default::default()
    }
}

fn launch(id: &str) -> v1::TaskLaunch {
    v1::TaskLaunch {
        framework_id: "f".into(),
        spec: Some(v1::TaskSpec {
            task_id: id.into(),
            artifact: "a".into(),
            ..Default::default()
        }),
        mac: vec![9; 32],
        master_epoch: 4,
    }
}

fn reopen(dir: &Path, backend: Backend) -> Loaded {
    Checkpoint::open(dir, backend).unwrap().1
}

fn update_tasks(loaded: &Loaded) -> Vec<&str> {
    loaded
        .updates
        .values()
        .map(|s| s.task_id.as_str())
        .collect()
}

#[test]
fn what_is_committed_is_loaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, loaded) = Checkpoint::open(dir.path(), Backend::File).unwrap();
    assert!(loaded.tasks.is_empty() && loaded.updates.is_empty());
    let task = state(v1::TaskState::Running);
    c.commit(
        vec![
            Write::Task("t1".into(), task.clone()),
            Write::Task("t2".into(), task.clone()),
            Write::Update(1, status("t1", v1::TaskState::Running)),
            Write::Update(2, status("t1", v1::TaskState::Finished)),
        ],
        false,
    )
    .unwrap();
    c.commit(
        vec![Write::ForgetUpdate(1), Write::ForgetTask("t2".into())],
        true,
    )
    .unwrap();
    drop(c);
    let loaded = reopen(dir.path(), Backend::File);
    assert_eq!(loaded.tasks.keys().collect::<Vec<_>>(), ["t1"]);
    assert_eq!(loaded.tasks["t1"], task);
    assert_eq!(loaded.updates.len(), 1);
    assert_eq!(loaded.updates[&2].state(), v1::TaskState::Finished);
}

/// Lists committed together are one batch, applied in their order: a
/// later list's forget wins over an earlier list's write.
#[test]
fn lists_committed_together_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = Checkpoint::open(dir.path(), Backend::File).unwrap();
    let running = state(v1::TaskState::Running);
    c.commit_lists(
        vec![
            vec![
                Write::Task("t1".into(), running.clone()),
                Write::Update(1, status("t1", v1::TaskState::Running)),
            ],
            Vec::new(),
            vec![
                Write::Task("t2".into(), running.clone()),
                Write::ForgetTask("t1".into()),
                Write::ForgetUpdate(1),
                Write::Update(2, status("t2", v1::TaskState::Finished)),
            ],
        ],
        true,
    )
    .unwrap();
    drop(c);
    let loaded = reopen(dir.path(), Backend::File);
    assert_eq!(loaded.tasks.keys().collect::<Vec<_>>(), ["t2"]);
    assert_eq!(update_tasks(&loaded), ["t2"]);
}

#[test]
fn a_launch_is_written_once_and_comes_back_with_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = Checkpoint::open(dir.path(), Backend::File).unwrap();
    c.commit(
        vec![
            Write::Task("t1".into(), state(v1::TaskState::Staging)),
            Write::Launch("t1".into(), launch("t1")),
            Write::Task("t2".into(), state(v1::TaskState::Staging)),
            Write::Launch("t2".into(), launch("t2")),
        ],
        false,
    )
    .unwrap();
    // State changes rewrite the small record only; t2 is forgotten.
    c.commit(
        vec![
            Write::Task("t1".into(), state(v1::TaskState::Running)),
            Write::ForgetTask("t2".into()),
        ],
        true,
    )
    .unwrap();
    drop(c);
    let loaded = reopen(dir.path(), Backend::File);
    assert_eq!(loaded.tasks.keys().collect::<Vec<_>>(), ["t1"]);
    let t1 = &loaded.tasks["t1"];
    assert_eq!(t1.state(), v1::TaskState::Running);
    assert_eq!(t1.spec, launch("t1").spec);
    assert_eq!(t1.launch_mac, vec![9; 32]);
    assert_eq!(t1.launch_epoch, 4);
}

#[test]
fn the_power_loss_backend_keeps_only_synced_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = Checkpoint::open(dir.path(), Backend::PowerLoss).unwrap();
    c.commit(
        vec![Write::Update(1, status("synced", v1::TaskState::Finished))],
        true,
    )
    .unwrap();
    c.commit(
        vec![Write::Update(2, status("unsynced", v1::TaskState::Running))],
        false,
    )
    .unwrap();
    // A process that dies here: its memory (the unsynced batch) is gone.
    drop(c);
    let loaded = reopen(dir.path(), Backend::PowerLoss);
    assert_eq!(update_tasks(&loaded), ["synced"]);

    // A synced batch takes the unsynced ones before it along.
    let (mut c, _) = Checkpoint::open(dir.path(), Backend::PowerLoss).unwrap();
    c.commit(
        vec![Write::Update(3, status("before", v1::TaskState::Running))],
        false,
    )
    .unwrap();
    c.commit(vec![], true).unwrap();
    drop(c);
    assert_eq!(
        update_tasks(&reopen(dir.path(), Backend::PowerLoss)),
        ["synced", "before"]
    );
}

#[test]
fn a_torn_batch_at_the_end_is_cut_off_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = Checkpoint::open(dir.path(), Backend::File).unwrap();
    c.commit(
        vec![Write::Update(1, status("whole", v1::TaskState::Finished))],
        true,
    )
    .unwrap();
    c.commit(
        vec![Write::Update(2, status("torn", v1::TaskState::Finished))],
        true,
    )
    .unwrap();
    drop(c);
    let path = Checkpoint::path_in(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    // The power went during the second append: its last bytes never
    // reached the disk, and zeros follow.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 5).unwrap();
    file.set_len(len + 100).unwrap();
    drop(file);

    let (mut c, loaded) = Checkpoint::open(dir.path(), Backend::File).unwrap();
    assert_eq!(update_tasks(&loaded), ["whole"]);
    c.commit(
        vec![Write::Update(3, status("after", v1::TaskState::Finished))],
        true,
    )
    .unwrap();
    drop(c);
    assert_eq!(
        update_tasks(&reopen(dir.path(), Backend::File)),
        ["whole", "after"]
    );
}

#[test]
fn a_snapshot_keeps_the_log_to_its_live_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = Checkpoint::path_in(dir.path());
    let (mut c, _) = Checkpoint::open(dir.path(), Backend::File).unwrap();
    // Tasks come and go, one stays; every 50th batch synced.
    let long = vec![7; 2048];
    c.commit(
        vec![
            Write::Task("stays".into(), state(v1::TaskState::Running)),
            Write::Launch("stays".into(), launch("stays")),
        ],
        false,
    )
    .unwrap();
    let mut biggest = 0;
    for n in 0..10_000u64 {
        let id = format!("t{n}");
        let mut end = status(&id, v1::TaskState::Finished);
        end.stdout_head = long.clone();
        c.commit(
            vec![
                Write::Task(id.clone(), state(v1::TaskState::Finished)),
                Write::Launch(id.clone(), launch(&id)),
                Write::Update(n + 1, end),
            ],
            n % 50 == 49,
        )
        .unwrap();
        c.commit(
            vec![Write::ForgetUpdate(n + 1), Write::ForgetTask(id)],
            false,
        )
        .unwrap();
        biggest = biggest.max(std::fs::metadata(&path).unwrap().len());
    }
    // About 2.1 KiB a task, 21 MiB in all, in a log that never grew
    // much past the snapshot threshold.
    assert!(
        biggest < SNAPSHOT_AFTER + 256 * 1024,
        "the log grew to {biggest} bytes"
    );
    assert!(biggest >= SNAPSHOT_AFTER, "{biggest}");
    drop(c);
    let loaded = reopen(dir.path(), Backend::File);
    assert_eq!(loaded.tasks.keys().collect::<Vec<_>>(), ["stays"]);
    assert_eq!(loaded.tasks["stays"].spec, launch("stays").spec);
    assert!(loaded.updates.is_empty());
}

#[test]
fn a_redb_checkpoint_of_an_older_executor_moves_into_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let legacy_path = dir.path().join("checkpoint.redb");
    let mut old = Live::default();
    old.apply(Write::Task("t1".into(), state(v1::TaskState::Running)));
    old.apply(Write::Launch("t1".into(), launch("t1")));
    old.apply(Write::Update(7, status("t0", v1::TaskState::Finished)));
    legacy::write(&legacy_path, 1, &old);

    let (mut c, loaded) = Checkpoint::open(dir.path(), Backend::File).unwrap();
    assert!(!legacy_path.exists(), "moved, not kept beside the log");
    assert_eq!(loaded.tasks["t1"].spec, launch("t1").spec);
    assert_eq!(loaded.tasks["t1"].launch_mac, vec![9; 32]);
    assert_eq!(update_tasks(&loaded), ["t0"]);
    assert_eq!(loaded.updates.keys().collect::<Vec<_>>(), [&7]);
    c.commit(vec![Write::ForgetUpdate(7)], true).unwrap();
    drop(c);
    let loaded = reopen(dir.path(), Backend::File);
    assert!(loaded.updates.is_empty());
    assert_eq!(loaded.tasks.keys().collect::<Vec<_>>(), ["t1"]);
}

#[test]
fn a_newer_format_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    legacy::write(&dir.path().join("checkpoint.redb"), 99, &Live::default());
    let err = Checkpoint::open(dir.path(), Backend::File).err().unwrap();
    assert!(err.to_string().contains("schema 99"), "{err}");
    assert!(dir.path().join("checkpoint.redb").exists());
    std::fs::remove_file(dir.path().join("checkpoint.redb")).unwrap();

    let path = Checkpoint::path_in(dir.path());
    let mut newer = MAGIC.to_vec();
    newer.extend_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, &newer).unwrap();
    let err = Checkpoint::open(dir.path(), Backend::File).err().unwrap();
    assert!(err.to_string().contains("format 2"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), newer);
}

#[test]
fn every_write_reads_back_as_it_was_written() {
    let writes = vec![
        Write::Task("t".into(), state(v1::TaskState::Running)),
        Write::Launch("t".into(), launch("t")),
        Write::ForgetTask("ü-1".into()),
        Write::Update(u64::MAX, status("t", v1::TaskState::Failed)),
        Write::ForgetUpdate(0),
    ];
    let mut body = Vec::new();
    for write in &writes {
        record::encode(&mut body, write);
    }
    assert_eq!(record::decode(&body).unwrap(), writes);
    assert!(record::decode(&[42]).is_err(), "an unknown kind");
    assert!(
        record::decode(&body[..body.len() - 1]).is_err(),
        "a record cut short"
    );
}
