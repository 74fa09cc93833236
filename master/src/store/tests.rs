use super::power_loss::PowerLossDisk;
use super::*;
use wasmos_proto::v1;

fn task(id: &str, agent: &str) -> Record {
    Record::Task(Box::new(v1::StoredTask {
        framework_id: "f1".into(),
        agent_id: agent.into(),
        spec: Some(v1::TaskSpec {
            task_id: id.into(),
            artifact: "ab".repeat(32),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

fn task_ids(registry: &Registry) -> Vec<String> {
    let mut ids: Vec<String> = registry
        .tasks
        .iter()
        .map(|t| t.spec.as_ref().unwrap().task_id.clone())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_redb_registry_keeps_records_and_counts_epochs_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = RedbStore::path_in(dir.path());
    {
        let store = RedbStore::open(&path).unwrap();
        let opened = open(&store).unwrap();
        assert_eq!(opened.epoch, 1);
        assert!(opened.registry.is_empty());
        store
            .commit(&[
                Write::Put(task("t1", "a1")),
                Write::Put(task("t2", "a1")),
                Write::Put(task("t3", "a2")),
            ])
            .unwrap();
        store
            .commit(&[
                Write::Delete(Table::Tasks, "t2".into()),
                Write::Put(task("t3", "a3")),
            ])
            .unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let opened = open(&store).unwrap();
    assert_eq!(opened.epoch, 2);
    assert_eq!(task_ids(&opened.registry), ["t1", "t3"]);
    let t3 = opened
        .registry
        .tasks
        .iter()
        .find(|t| t.spec.as_ref().unwrap().task_id == "t3")
        .unwrap();
    assert_eq!(t3.agent_id, "a3", "the later write of a key wins");
    drop(store);
    assert_eq!(open(&RedbStore::open(&path).unwrap()).unwrap().epoch, 3);
}

#[test]
fn a_registry_of_another_schema_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = RedbStore::path_in(dir.path());
    {
        let store = RedbStore::open(&path).unwrap();
        store
            .commit(&[
                Write::Put(Record::Meta(v1::RegistryMeta {
                    schema_version: SCHEMA_VERSION + 1,
                    epoch: 7,
                    ..Default::default()
                })),
                Write::Put(task("t1", "a1")),
            ])
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    // Refused read-only, before the file is opened for writing.
    let err = RedbStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("schema version 2"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(std::fs::read(&path).unwrap() == before, "the file changed");
    // And by `open`, for stores without a file of their own.
    let memory = MemoryStore::new();
    memory
        .commit(&[Write::Put(Record::Meta(v1::RegistryMeta {
            schema_version: SCHEMA_VERSION + 1,
            epoch: 7,
            ..Default::default()
        }))])
        .unwrap();
    let err = open(&memory).unwrap_err().to_string();
    assert!(err.contains("schema version 2"), "{err}");
    assert_eq!(memory.load().unwrap().meta.unwrap().epoch, 7);
}

#[test]
fn records_without_a_header_are_refused() {
    let store = MemoryStore::new();
    store.commit(&[Write::Put(task("t1", "a1"))]).unwrap();
    let err = open(&store).unwrap_err().to_string();
    assert!(err.contains("no header"), "{err}");
    assert_eq!(task_ids(&store.load().unwrap()), ["t1"]);
}

#[test]
fn a_file_that_is_not_a_registry_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = RedbStore::path_in(dir.path());
    let garbage = b"this is not a redb file, but it is somebody's data".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let err = RedbStore::open(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn a_record_that_does_not_decode_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = RedbStore::path_in(dir.path());
    {
        let store = RedbStore::open(&path).unwrap();
        open(&store).unwrap();
        let txn = store.db.begin_write().unwrap();
        {
            let mut table = txn
                .open_table(::redb::TableDefinition::<&str, &[u8]>::new("tasks"))
                .unwrap();
            table.insert("t9", &[0xff, 0xff, 0xff][..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = open(&RedbStore::open(&path).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tasks/t9"), "{err}");
}

#[test]
fn committed_writes_survive_power_loss_and_unsynced_ones_do_not() {
    let disk = PowerLossDisk::new();
    {
        let store = RedbStore::with_backend(disk.backend(), "the test disk").unwrap();
        open(&store).unwrap();
        for batch in 0..20 {
            let writes: Vec<Write> = (0..50)
                .map(|i| Write::Put(task(&format!("t{batch}-{i}"), "a1")))
                .collect();
            store.commit(&writes).unwrap();
        }
        // A write that never synced: redb's non-durable commit.
        let mut txn = store.db.begin_write().unwrap();
        txn.set_durability(::redb::Durability::None).unwrap();
        {
            let mut table = txn
                .open_table(::redb::TableDefinition::<&str, &[u8]>::new("tasks"))
                .unwrap();
            table
                .insert("unsynced", task("unsynced", "a1").encode().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(
            store.load().unwrap().tasks.len(),
            1001,
            "visible before the power goes"
        );
        disk.power_off();
        assert!(
            store.commit(&[Write::Put(task("late", "a1"))]).is_err(),
            "the old process is gone"
        );
    }
    let store = RedbStore::with_backend(disk.backend(), "the test disk").unwrap();
    let opened = open(&store).unwrap();
    assert_eq!(opened.epoch, 2);
    assert_eq!(
        opened.registry.tasks.len(),
        1000,
        "every commit, and nothing unsynced"
    );
    assert!(!task_ids(&opened.registry).contains(&"unsynced".to_string()));
}

#[test]
fn the_launch_key_is_made_once_and_kept_and_an_old_registry_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = RedbStore::path_in(dir.path());
    // A registry written before launches were signed: a header without a
    // key, and a task.
    {
        let store = RedbStore::open(&path).unwrap();
        store
            .commit(&[
                Write::Put(Record::Meta(v1::RegistryMeta {
                    schema_version: SCHEMA_VERSION,
                    epoch: 3,
                    ..Default::default()
                })),
                Write::Put(task("t1", "a1")),
            ])
            .unwrap();
    }
    let first = {
        let store = RedbStore::open(&path).unwrap();
        let opened = open(&store).unwrap();
        assert_eq!(opened.epoch, 4);
        assert_eq!(task_ids(&opened.registry), ["t1"]);
        assert!(opened.registry.jobs.is_empty(), "no jobs table yet: none");
        opened.launch_key
    };
    // Every later start signs with the same key, so launches made before a
    // crash are adopted after it.
    for epoch in 5..7 {
        let store = RedbStore::open(&path).unwrap();
        let opened = open(&store).unwrap();
        assert_eq!(opened.epoch, epoch);
        assert_eq!(opened.launch_key, first);
    }
    // Another registry gets another key.
    let other = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&RedbStore::path_in(other.path())).unwrap();
    assert_ne!(open(&store).unwrap().launch_key, first);
}

#[test]
fn a_launch_key_of_the_wrong_length_is_refused_not_replaced() {
    let store = MemoryStore::new();
    store
        .commit(&[Write::Put(Record::Meta(v1::RegistryMeta {
            schema_version: SCHEMA_VERSION,
            epoch: 3,
            launch_key: vec![1; 5],
        }))])
        .unwrap();
    let err = open(&store).unwrap_err().to_string();
    assert!(err.contains("launch key is 5 bytes"), "{err}");
    assert_eq!(
        store.load().unwrap().meta.unwrap().launch_key,
        vec![1; 5],
        "left as it was"
    );
}

fn key_of(record: &Record) -> String {
    record.key()
}

/// Keyed and range reads answer the same on every backend, and read what
/// the last commit left (a delete included).
fn reads_by_key_and_range(store: &dyn Store) {
    open(store).unwrap();
    let ids = ["j1/0002", "j1/0000", "j1/0001", "j10/0000", "j2/0000", "k"];
    let writes: Vec<Write> = ids.iter().map(|id| Write::Put(task(id, "a1"))).collect();
    store.commit(&writes).unwrap();
    store
        .commit(&[Write::Put(Record::Role(v1::StoredRole {
            name: "j1/0001".into(),
            ..Default::default()
        }))])
        .unwrap();

    let got = store.get(Table::Tasks, "j1/0001").unwrap().unwrap();
    assert_eq!(got, task("j1/0001", "a1"));
    assert_eq!(store.get(Table::Tasks, "j1/0003").unwrap(), None);
    assert_eq!(store.get(Table::Identities, "j1/0001").unwrap(), None);
    assert!(matches!(
        store.get(Table::Roles, "j1/0001").unwrap(),
        Some(Record::Role(_))
    ));

    let under = |prefix: &str, limit| -> Vec<String> {
        let end = prefix_end(prefix);
        store
            .range(Table::Tasks, prefix, end.as_deref(), limit)
            .unwrap()
            .iter()
            .map(key_of)
            .collect()
    };
    assert_eq!(under("j1/", 10), ["j1/0000", "j1/0001", "j1/0002"]);
    assert_eq!(under("j1/", 2), ["j1/0000", "j1/0001"], "a page");
    assert_eq!(under("j1", 10).len(), 4, "j1/ and j10/");
    assert_eq!(under("z", 10), Vec::<String>::new());
    let rest: Vec<String> = store
        .range(Table::Tasks, "j1/0001", None, 100)
        .unwrap()
        .iter()
        .map(key_of)
        .collect();
    assert_eq!(rest, ["j1/0001", "j1/0002", "j10/0000", "j2/0000", "k"]);
    assert!(
        store
            .range(Table::Tasks, "j2", Some("j1"), 10)
            .unwrap()
            .is_empty(),
        "an empty span"
    );
    assert!(
        store.range(Table::Tokens, "", None, 10).unwrap().is_empty(),
        "a table never written"
    );

    store
        .commit(&[Write::Delete(Table::Tasks, "j1/0001".into())])
        .unwrap();
    assert_eq!(store.get(Table::Tasks, "j1/0001").unwrap(), None);
    assert_eq!(under("j1/", 10), ["j1/0000", "j1/0002"]);
}

/// Runs `check` on a fresh store of each backend: memory, redb on a
/// file, redb on the power-loss disk.
fn on_every_backend(check: fn(&dyn Store)) {
    check(&MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    check(&RedbStore::open(&RedbStore::path_in(dir.path())).unwrap());
    let disk = PowerLossDisk::new();
    check(&RedbStore::with_backend(disk.backend(), "the test disk").unwrap());
}

#[test]
fn every_backend_reads_by_key_and_range() {
    on_every_backend(reads_by_key_and_range);
}

/// A scan visits every key of its range once, in order, across pages: a
/// key right at a page's end, keys that extend another (`k` and `k\0`),
/// and nothing past the range.
fn scans_across_pages(store: &dyn Store) {
    open(store).unwrap();
    let mut ids: Vec<String> = (0..2 * SCAN_PAGE + 1)
        .map(|i| format!("j1/{i:06}"))
        .collect();
    ids.push(format!("j1/{:06}\0", SCAN_PAGE - 1));
    ids.push(format!("j1/{:06}\0\0", SCAN_PAGE - 1));
    let writes: Vec<Write> = ids
        .iter()
        .chain(&["j0/x".to_string(), "j10/x".to_string(), "j2".to_string()])
        .map(|id| Write::Put(task(id, "a1")))
        .collect();
    store.commit(&writes).unwrap();
    ids.sort();
    let mut seen = Vec::new();
    scan_prefix(store, Table::Tasks, "j1/", &mut |r| seen.push(r.key())).unwrap();
    assert_eq!(seen.len(), ids.len());
    assert!(seen == ids, "every key once, in order");
    let mut seen = Vec::new();
    scan(store, Table::Tasks, "j10/", None, &mut |r| {
        seen.push(r.key())
    })
    .unwrap();
    assert_eq!(seen, ["j10/x", "j2"], "to the table's end");
    let mut seen = 0;
    scan_prefix(store, Table::Roles, "", &mut |_| seen += 1).unwrap();
    assert_eq!(seen, 0, "a table never written");
}

#[test]
fn every_backend_scans_across_pages() {
    on_every_backend(scans_across_pages);
}

/// A commit that writes a key several times leaves its last write: a
/// record put and then deleted is gone, one deleted and put again holds
/// its new value, and the other keys of the commit are all applied.
fn a_keys_last_write_in_a_commit_wins(store: &dyn Store) {
    open(store).unwrap();
    store
        .commit(&[
            Write::Put(task("t-kept", "a0")),
            Write::Put(task("t-gone", "a0")),
        ])
        .unwrap();
    store
        .commit(&[
            Write::Put(task("t-new", "a1")),
            Write::Put(task("t-kept", "a1")),
            Write::Delete(Table::Tasks, "t-kept".into()),
            Write::Put(task("t-kept", "a2")),
            Write::Put(task("t-gone", "a1")),
            Write::Delete(Table::Tasks, "t-gone".into()),
            Write::Put(task("t-brief", "a1")),
            Write::Delete(Table::Tasks, "t-brief".into()),
            Write::Put(task("t-new", "a3")),
        ])
        .unwrap();
    let agent_of = |id: &str| match store.get(Table::Tasks, id).unwrap() {
        Some(Record::Task(t)) => Some(t.agent_id.clone()),
        _ => None,
    };
    assert_eq!(agent_of("t-kept").as_deref(), Some("a2"));
    assert_eq!(agent_of("t-new").as_deref(), Some("a3"));
    assert_eq!(agent_of("t-gone"), None);
    assert_eq!(agent_of("t-brief"), None);
    assert_eq!(task_ids(&store.load().unwrap()), ["t-kept", "t-new"]);
}

#[test]
fn on_every_backend_a_keys_last_write_in_a_commit_wins() {
    on_every_backend(a_keys_last_write_in_a_commit_wins);
}

#[test]
fn a_keyed_read_after_power_loss_sees_every_commit() {
    let disk = PowerLossDisk::new();
    {
        let store = RedbStore::with_backend(disk.backend(), "the test disk").unwrap();
        open(&store).unwrap();
        store.commit(&[Write::Put(task("kept", "a1"))]).unwrap();
        disk.power_off();
    }
    let store = RedbStore::with_backend(disk.backend(), "the test disk").unwrap();
    assert_eq!(
        store.get(Table::Tasks, "kept").unwrap(),
        Some(task("kept", "a1"))
    );
}

#[test]
fn a_record_that_does_not_decode_is_named_by_a_keyed_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&RedbStore::path_in(dir.path())).unwrap();
    open(&store).unwrap();
    let txn = store.db.begin_write().unwrap();
    {
        let mut table = txn
            .open_table(::redb::TableDefinition::<&str, &[u8]>::new("tasks"))
            .unwrap();
        table.insert("broken", &[0xff, 0xff, 0xff][..]).unwrap();
    }
    txn.commit().unwrap();
    for error in [
        store.get(Table::Tasks, "broken").unwrap_err(),
        store.range(Table::Tasks, "", None, 10).unwrap_err(),
    ] {
        let message = error.to_string();
        assert!(
            message.contains("tasks/broken") && message.contains("registry.redb"),
            "{message}"
        );
    }
}

#[test]
fn prefix_ends_sort_after_every_key_under_the_prefix() {
    assert_eq!(prefix_end("j1/").as_deref(), Some("j10"));
    assert_eq!(prefix_end("").as_deref(), None);
    assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
    assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
    for key in ["j1/", "j1/zzz", "j1/\u{10FFFF}"] {
        assert!(key < prefix_end("j1/").unwrap().as_str(), "{key}");
    }
}

#[test]
fn jobs_load_at_start_and_their_chunks_only_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = RedbStore::path_in(dir.path());
    let chunk = |first| {
        Record::JobChunk(v1::StoredJobChunk {
            job_id: "j1.1".into(),
            first,
            outcomes: vec![7; 44],
        })
    };
    {
        let store = RedbStore::open(&path).unwrap();
        open(&store).unwrap();
        store
            .commit(&[
                Write::Put(Record::Job(Box::new(v1::StoredJob {
                    job_id: "j1.1".into(),
                    principal: "alice".into(),
                    ..Default::default()
                }))),
                Write::Put(chunk(256)),
                Write::Put(chunk(0)),
                Write::Put(Record::JobChunk(v1::StoredJobChunk {
                    job_id: "j1.10".into(),
                    ..Default::default()
                })),
            ])
            .unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let opened = open(&store).unwrap();
    assert_eq!(opened.registry.jobs.len(), 1);
    assert_eq!(opened.registry.jobs[0].principal, "alice");
    assert_eq!(opened.registry.len(), 1, "chunks are not loaded");
    let prefix = "j1.1/";
    let end = prefix_end(prefix);
    let chunks = store
        .range(Table::JobChunks, prefix, end.as_deref(), 100)
        .unwrap();
    assert_eq!(
        chunks,
        [chunk(0), chunk(256)],
        "in index order, j1.10 apart"
    );
    assert_eq!(chunk_key("j1.1", 256), "j1.1/0000000256");
}
