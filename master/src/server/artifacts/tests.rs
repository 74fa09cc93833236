//! Expiry: the core decides on its clock, from the later of the record's
//! last use and this disk's file time; the store deletes the files.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use wasmos_proto::v1;

use super::{ArtifactStore, StoreLimits};
use crate::core::{ArtifactRules, Core, CoreConfig};
use crate::server::actor::{Actor, ActorConfig, Clock, MAX_BACKLOG};
use crate::server::handle::ActorHandle;
use crate::store::{MemoryStore, Record, Store, Table, Write};

const HOUR: Duration = Duration::from_secs(3600);

fn digest(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
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
    let puts: Vec<_> = [record(&recent, wall_ms() - 60_000), record(&idle, 0)]
        .into_iter()
        .map(|r| Write::Put(Record::Artifact(r)))
        .collect();
    registry.commit(&puts).unwrap();
    let config = CoreConfig {
        wall_clock_origin_ms: wall_ms(),
        artifacts: ArtifactRules {
            ttl: HOUR,
            ..ArtifactRules::default()
        },
        ..CoreConfig::default()
    };
    let clock = Clock::start();
    let (core, _) = Core::recover(config, registry.load().unwrap(), clock.now()).unwrap();
    let (commands, inbox) = mpsc::channel(16);
    let timing = ActorConfig {
        min_tick_interval: Duration::from_millis(50),
        max_backlog: MAX_BACKLOG,
    };
    tokio::spawn(Actor::new(core, timing, clock, registry.clone()).run(inbox));
    let store = ArtifactStore::new(
        dir.path(),
        1 << 20,
        StoreLimits::new(100, 1 << 30),
        ActorHandle::new(commands),
    );
    // Files nobody indexes: one long idle, one just handed over.
    file(dir.path(), &orphan, 2 * HOUR);
    file(dir.path(), &fresh, Duration::ZERO);

    let expired = store.expire(HOUR, Default::default()).await.unwrap();
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
