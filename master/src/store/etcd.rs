//! The registry on etcd, shared by the masters of one cluster: one key per
//! record (`<prefix>/registry/<table>/<key>`, see `crate::etcd::Keys`),
//! protobuf values, as in redb.
//!
//! **Fenced writes.** A leader's store holds the fence of its election: its
//! campaign key and the revision that key was created at. Every commit is
//! a transaction that applies only while that key still exists with that
//! revision; once the leader's lease ended (expired while it was paused,
//! or revoked) or another master leads, its writes fail whole with
//! [`StoreError::Fenced`] and the master stops. No timing is trusted: the
//! compare is evaluated by etcd, at the transaction's revision.
//!
//! **etcd's limits.** A transaction holds at most 128 operations and 1.5
//! MiB by default, and no key twice: a commit's writes are de-duplicated
//! (a key's last value, at the place of its first write) and sent in chunks
//! of at most [`MAX_TXN_OPS`] operations and [`MAX_TXN_BYTES`], each
//! fenced, one after another. A turn larger than one chunk is not atomic: a
//! master that dies while they are in flight leaves a prefix of them
//! applied, which is a registry it can start on (launches not applied are
//! adopted from their agents; the seeded simulation crashes between
//! chunks).
//!
//! **Reads at one revision.** [`Store::load`] reads the registry a page at a
//! time, every page at the revision of the first, so a start sees one
//! registry even while another master still writes.
//!
//! **An etcd that does not answer** is retried (a fenced transaction may
//! be sent again: if it applied, applying it again changes nothing) for at
//! most `retry_for`, the leader's lease, and then the commit fails.
//!
//! The calls run on a runtime of the store's own (one thread), so the
//! store can be called from the actor's blocking commits and from async
//! code alike, as redb is.

use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use wasmos_proto::etcd::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
    compare, kv_client::KvClient, range_request, request_op,
};

use super::{Record, Registry, Store, StoreError, Table, Write};
use crate::etcd::{Etcd, Keys, is_transient, prefix_end};

/// The most operations one transaction carries (etcd's default
/// `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// The most bytes of keys and values one transaction carries, under etcd's
/// default `--max-request-bytes` (1.5 MiB) with room for framing.
pub const MAX_TXN_BYTES: usize = 1 << 20;

/// How many records one read of a page asks for.
const PAGE: i64 = 1000;

/// What a leader's writes are fenced by: its campaign key and the revision
/// it was created at (etcd's `LeaderKey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub revision: i64,
}

/// The registry of a cluster on etcd.
pub struct EtcdStore {
    keys: Keys,
    fence: Option<Fence>,
    retry_for: Duration,
    kv: KvClient<Channel>,
    runtime: tokio::runtime::Handle,
    /// Ends the store's runtime when the store is dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
    name: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("name", &self.name)
            .field("fence", &self.fence)
            .finish()
    }
}

impl EtcdStore {
    /// A store on etcd at `endpoints` under `keys`, its writes fenced by
    /// `fence` (`None`: unfenced, for a registry no master runs on, as
    /// `wasmos registry migrate` fills), retrying an etcd that does not
    /// answer for `retry_for`.
    pub fn connect(
        endpoints: &[Endpoint],
        keys: Keys,
        fence: Option<Fence>,
        retry_for: Duration,
    ) -> Result<EtcdStore, StoreError> {
        let (runtime_tx, runtime_rx) = std::sync::mpsc::sync_channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let endpoints = endpoints.to_vec();
        std::thread::Builder::new()
            .name("wasmos-etcd".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = runtime_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let etcd = Etcd::connect(&endpoints);
                    let _ = runtime_tx.send(Ok((tokio::runtime::Handle::current(), etcd.kv)));
                    let _ = stopped.await;
                });
            })
            .map_err(|e| StoreError::Io(format!("cannot start etcd's client thread: {e}")))?;
        let (runtime, kv) = runtime_rx
            .recv()
            .map_err(|_| StoreError::Io("etcd's client thread ended at start".into()))?
            .map_err(|e| StoreError::Io(format!("cannot start etcd's client runtime: {e}")))?;
        let name = format!("the registry in etcd under {}", keys.prefix());
        Ok(EtcdStore {
            keys,
            fence,
            retry_for,
            kv,
            runtime,
            _stop: stop,
            name,
        })
    }

    /// Runs `call` on the store's runtime and waits for it, again while
    /// etcd does not answer, for at most `retry_for`.
    fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(KvClient<Channel>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, tonic::Status>> + Send,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let kv = self.kv.clone();
        let retry_for = self.retry_for;
        self.runtime.spawn(async move {
            let started = Instant::now();
            let mut wait = Duration::from_millis(20);
            let result = loop {
                match call(kv.clone()).await {
                    Ok(answer) => break Ok(answer),
                    Err(status) if is_transient(&status) && started.elapsed() < retry_for => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_millis(500));
                    }
                    Err(status) => break Err(status),
                }
            };
            let _ = tx.send(result);
        });
        rx.recv()
            .map_err(|_| {
                StoreError::Io(format!("cannot {what} {}: its client stopped", self.name))
            })?
            .map_err(|status| {
                StoreError::Io(format!(
                    "cannot {what} {}: {} ({:?})",
                    self.name,
                    status.message(),
                    status.code()
                ))
            })
    }

    /// Reads `[from, to)` of `table` (at most `limit` keys), at `revision`
    /// (0: the newest).
    fn read(
        &self,
        from: Vec<u8>,
        to: Vec<u8>,
        limit: i64,
        revision: i64,
    ) -> Result<RangeResponse, StoreError> {
        self.call("read", move |mut kv| {
            let request = RangeRequest {
                key: from.clone(),
                range_end: to.clone(),
                limit,
                revision,
                ..Default::default()
            };
            async move { kv.range(request).await.map(|a| a.into_inner()) }
        })
    }

    /// The compares of a fenced transaction.
    fn compares(&self) -> Vec<Compare> {
        self.fence
            .iter()
            .map(|fence| Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Create as i32,
                key: fence.key.clone(),
                target_union: Some(compare::TargetUnion::CreateRevision(fence.revision)),
            })
            .collect()
    }

    /// The newest revision of the registry's records: what `wasmos masters`
    /// and the tests read to see whether anyone wrote.
    pub fn newest_revision(&self) -> Result<i64, StoreError> {
        let (start, end) = self.keys.registry_range();
        let answer = self.call("read", move |mut kv| {
            let request = RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                limit: 1,
                sort_order: range_request::SortOrder::Descend as i32,
                sort_target: range_request::SortTarget::Mod as i32,
                ..Default::default()
            };
            async move { kv.range(request).await.map(|a| a.into_inner()) }
        })?;
        Ok(answer.kvs.first().map_or(0, |kv| kv.mod_revision))
    }
}

/// Cuts `ops` (with their sizes) into transactions within etcd's limits.
fn chunks(ops: Vec<(RequestOp, usize)>) -> Vec<Vec<RequestOp>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for (op, size) in ops {
        if !chunk.is_empty() && (chunk.len() == MAX_TXN_OPS || bytes + size > MAX_TXN_BYTES) {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += size;
        chunk.push(op);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Registry, StoreError> {
        let mut registry = Registry::default();
        let mut revision = 0;
        for table in Table::ALL.into_iter().filter(|t| t.is_loaded()) {
            let start = self.keys.table_start(table);
            let end = prefix_end(&start);
            let mut from = start;
            loop {
                let page = self.read(from.clone(), end.clone(), PAGE, revision)?;
                if revision == 0 {
                    revision = page.header.as_ref().map_or(0, |h| h.revision);
                }
                for kv in &page.kvs {
                    let key = self.keys.record_key(table, &kv.key).ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "{}: a key that is no record's: {}",
                            self.name,
                            String::from_utf8_lossy(&kv.key)
                        ))
                    })?;
                    registry
                        .insert(table, key, &kv.value)
                        .map_err(|e| match e {
                            StoreError::Corrupt(m) => {
                                StoreError::Corrupt(format!("{}: {m}", self.name))
                            }
                            other => other,
                        })?;
                }
                match page.kvs.last() {
                    Some(last) if page.more => {
                        from = last.key.clone();
                        from.push(0);
                    }
                    _ => break,
                }
            }
        }
        Ok(registry)
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError> {
        let answer = self.read(self.keys.record(table, key), Vec::new(), 1, 0)?;
        answer
            .kvs
            .first()
            .map(|kv| Record::decode_at(table, key, &kv.value))
            .transpose()
    }

    fn range(
        &self,
        table: Table,
        from: &str,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        if to.is_some_and(|to| to <= from) || limit == 0 {
            return Ok(Vec::new());
        }
        let end = match to {
            Some(to) => self.keys.record(table, to),
            None => prefix_end(&self.keys.table_start(table)),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let answer = self.read(self.keys.record(table, from), end, limit, 0)?;
        answer
            .kvs
            .iter()
            .map(|kv| {
                let key = self.keys.record_key(table, &kv.key).unwrap_or_default();
                Record::decode_at(table, key, &kv.value)
            })
            .collect()
    }

    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let ops: Vec<(RequestOp, usize)> = Write::once_each(writes)
            .iter()
            .map(|write| match write {
                Write::Put(record) => {
                    let key = self.keys.record(record.table(), &record.key());
                    let value = record.encode();
                    let size = key.len() + value.len() + 16;
                    let op = request_op::Request::RequestPut(PutRequest {
                        key,
                        value,
                        ..Default::default()
                    });
                    (RequestOp { request: Some(op) }, size)
                }
                Write::Delete(table, key) => {
                    let key = self.keys.record(*table, key);
                    let size = key.len() + 16;
                    let op = request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                        key,
                        ..Default::default()
                    });
                    (RequestOp { request: Some(op) }, size)
                }
            })
            .collect();
        let requests: Vec<TxnRequest> = chunks(ops)
            .into_iter()
            .map(|chunk| TxnRequest {
                compare: self.compares(),
                success: chunk,
                failure: Vec::new(),
            })
            .collect();
        // One after another: a master that dies meanwhile leaves a prefix
        // of them applied, and every prefix is a registry it can start on
        // (see `Write::once_each`). Side by side, any subset could land:
        // the seeded simulation found a launch applied without the end
        // that freed its resources.
        let answers = self.call("write", move |kv| {
            let requests = requests.clone();
            async move {
                let mut answers = Vec::with_capacity(requests.len());
                for request in requests {
                    let answer = kv.clone().txn(request).await?.into_inner();
                    let fenced = !answer.succeeded;
                    answers.push(answer);
                    if fenced {
                        break;
                    }
                }
                Ok(answers)
            }
        })?;
        if answers.iter().any(|answer| !answer.succeeded) {
            return Err(StoreError::Fenced(format!(
                "{}: this master no longer leads (its election key is gone or was taken over); \
                 its write was refused",
                self.name
            )));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn is_shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmos_proto::v1;

    fn role(name: &str, weight: f64) -> Write {
        Write::Put(Record::Role(v1::StoredRole {
            name: name.into(),
            weight: Some(weight),
            ..Default::default()
        }))
    }

    #[test]
    fn each_key_is_written_once_with_its_last_value_at_its_first_place() {
        let writes = vec![
            role("a", 1.0),
            role("b", 1.0),
            Write::Delete(Table::Roles, "a".into()),
            role("b", 2.0),
        ];
        assert_eq!(
            Write::once_each(&writes),
            vec![writes[2].clone(), writes[3].clone()]
        );
    }

    #[test]
    fn chunks_keep_to_etcds_limits() {
        let op = || RequestOp { request: None };
        let many: Vec<_> = (0..300).map(|_| (op(), 10)).collect();
        let sizes: Vec<usize> = chunks(many).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![128, 128, 44]);
        let big: Vec<_> = (0..5).map(|_| (op(), MAX_TXN_BYTES / 2)).collect();
        let sizes: Vec<usize> = chunks(big).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }
}
