//! Keeping etcd's history short. etcd keeps every revision of every key
//! until told to compact; each task makes several writes, so at thousands
//! of tasks a second its default 2 GiB quota would fill in minutes, and
//! then it refuses every write of every client. The leader compacts on a
//! timer, keeping one interval of history (what a reader that began a
//! moment ago may still read), and defragments rarely: a defragmentation
//! stalls the member while it rewrites its file, so only when compacted
//! space is most of the file.

use std::time::Duration;

use wasmos_proto::etcd::etcdserverpb::{CompactionRequest, DefragmentRequest, StatusRequest};

use super::Etcd;

/// Free space in etcd's file past which the leader defragments it: the
/// file is at least this large and more than half of it unused.
const DEFRAGMENT_OVER: i64 = 256 << 20;

/// Compacts etcd's history every `every`, up to the revision seen one
/// interval before, forever (the leader runs it while it leads).
pub async fn compact_forever(etcd: Etcd, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = None;
    loop {
        ticks.tick().await;
        let status = match etcd.maintenance.clone().status(StatusRequest {}).await {
            Ok(status) => status.into_inner(),
            Err(e) => {
                tracing::warn!("etcd's status: {}; compaction waits", e.message());
                continue;
            }
        };
        let revision = status.header.as_ref().map_or(0, |h| h.revision);
        if let Some(upto) = previous.filter(|&r| r > 1) {
            match compact(&etcd, upto).await {
                Ok(()) => tracing::debug!(revision = upto, "compacted etcd's history"),
                Err(e) => tracing::warn!("cannot compact etcd's history: {e}"),
            }
        }
        previous = Some(revision);
        let unused = status.db_size - status.db_size_in_use;
        if status.db_size >= DEFRAGMENT_OVER && unused * 2 > status.db_size {
            tracing::info!(
                size = status.db_size,
                in_use = status.db_size_in_use,
                "defragmenting etcd's file (the member stalls meanwhile)"
            );
            if let Err(e) = etcd
                .maintenance
                .clone()
                .defragment(DefragmentRequest {})
                .await
            {
                tracing::warn!("cannot defragment etcd: {}", e.message());
            }
        }
    }
}

/// Drops the history before `revision`. A revision already compacted is
/// no error.
pub async fn compact(etcd: &Etcd, revision: i64) -> Result<(), String> {
    let compacted = etcd
        .kv
        .clone()
        .compact(CompactionRequest {
            revision,
            physical: false,
        })
        .await;
    match compacted {
        Ok(_) => Ok(()),
        Err(e) if e.message().contains("compacted") => Ok(()),
        Err(e) => Err(e.message().to_string()),
    }
}
