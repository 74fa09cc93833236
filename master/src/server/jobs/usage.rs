//! `Jobs.Usage`: the usage ledger read back, summed per role, principal or
//! job over the hours asked for. Read from the registry (what is durable),
//! never from the core's memory.

use std::collections::BTreeMap;

use tonic::Status;
use wasmos_proto::v1;

use crate::access::Principal;
use crate::core::HOUR_MS;
use crate::store::{Record, Store, Table, scan, usage_hour_prefix};

/// How the rows are keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Role,
    Principal,
    Job,
}

impl By {
    pub fn parse(by: &str) -> Result<By, Status> {
        match by {
            "" | "principal" => Ok(By::Principal),
            "role" => Ok(By::Role),
            "job" => Ok(By::Job),
            other => Err(Status::invalid_argument(format!(
                "usage by `{other}`: say role, principal or job"
            ))),
        }
    }
}

/// The ledger's buckets from the hour holding `since_ms` on, that `who`
/// may see, summed per `by` (rows in key order). A blocking read.
pub fn read(
    store: &dyn Store,
    who: &Principal,
    since_ms: u64,
    by: By,
) -> Result<v1::UsageResponse, Status> {
    let since = since_ms - since_ms % HOUR_MS;
    let from = if since == 0 {
        String::new()
    } else {
        usage_hour_prefix(since)
    };
    let mut rows: BTreeMap<(String, String, String), v1::UsageRow> = BTreeMap::new();
    // A page of buckets at a time: the rows are what is held, not the
    // ledger's hours.
    let mut add = |record| {
        let Record::Usage(bucket) = record else {
            return;
        };
        if !who.may_see(&bucket.principal) {
            return;
        }
        let key = match by {
            By::Role => (bucket.role.clone(), String::new(), String::new()),
            By::Principal => (String::new(), bucket.principal.clone(), String::new()),
            By::Job => (
                bucket.role.clone(),
                bucket.principal.clone(),
                bucket.job.clone(),
            ),
        };
        let row = rows.entry(key.clone()).or_insert_with(|| v1::UsageRow {
            role: key.0,
            principal: key.1,
            job: key.2,
            ..Default::default()
        });
        row.tasks += bucket.tasks;
        row.first_attempts += bucket.first_attempts;
        row.cpu_seconds += bucket.cpu_ms as f64 / 1000.0;
        row.fuel += bucket.fuel;
        row.task_seconds += bucket.wall_ms as f64 / 1000.0;
        row.mem_gib_seconds += bucket.mem_gib_ms / 1000.0;
    };
    scan(store, Table::Usage, &from, None, &mut add)
        .map_err(|e| Status::unavailable(format!("the usage ledger cannot be read: {e}")))?;
    Ok(v1::UsageResponse {
        rows: rows.into_values().collect(),
        since_ms: since,
    })
}
