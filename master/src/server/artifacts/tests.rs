//! Expiry: the last use is the later of the record's and the file's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wasmos_proto::v1;

use super::{ArtifactStore, StoreLimits, wall_ms};
use crate::store::{MemoryStore, Record, Store, Table};

const HOUR: Duration = Duration::from_secs(3600);

fn digest(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// Writes artifact `digest`'s file, last modified `age` ago.
fn file(dir: &std::path::Path, digest: &str, age: Duration) {
    let path = dir.join(digest);
    std::fs::write(&path, b"bytes").unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[tokio::test]
async fn the_last_use_in_the_record_keeps_an_artifact_whose_file_looks_idle() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(MemoryStore::new());
    let (recent, idle, orphan, fresh) = (digest('a'), digest('b'), digest('c'), digest('d'));
    let long_ago = wall_ms() - 3 * HOUR.as_millis() as u64;
    let record = |digest: &str, last_used_ms: u64| v1::StoredArtifact {
        digest: digest.to_string(),
        size: 5,
        stored_ms: long_ago,
        owners: vec!["p".into()],
        last_used_ms,
    };
    // Both files look idle for two hours; one was used a minute ago on
    // another master (its record says so).
    file(dir.path(), &recent, 2 * HOUR);
    file(dir.path(), &idle, 2 * HOUR);
    let indexed = [record(&recent, wall_ms() - 60_000), record(&idle, 0)];
    let puts: Vec<_> = indexed
        .iter()
        .map(|r| crate::store::Write::Put(Record::Artifact(r.clone())))
        .collect();
    registry.commit(&puts).unwrap();
    let store = ArtifactStore::open(
        dir.path(),
        1 << 20,
        1 << 30,
        StoreLimits::new(100, 1 << 30),
        registry.clone(),
        &indexed,
    )
    .unwrap();
    // Files nobody indexes: one long idle, one just handed over.
    file(dir.path(), &orphan, 2 * HOUR);
    file(dir.path(), &fresh, Duration::ZERO);

    let expired = store.expire(HOUR, &Default::default()).await.unwrap();
    assert_eq!(expired, 1);
    assert!(dir.path().join(&recent).exists());
    assert!(!dir.path().join(&idle).exists());
    assert!(!dir.path().join(&orphan).exists(), "an unindexed file goes");
    assert!(dir.path().join(&fresh).exists(), "within its grace");
    assert!(matches!(
        registry.get(Table::Artifacts, &recent).unwrap(),
        Some(Record::Artifact(_))
    ));
    assert!(registry.get(Table::Artifacts, &idle).unwrap().is_none());
}
