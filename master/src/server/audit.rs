//! The audit log: one JSON line per change and per refusal, in
//! `<work-dir>/audit.log`.
//!
//! Who (principal, token accessor or agent), what (the call and its
//! arguments, never a secret), when, and whether it was allowed. Lines are
//! written through to the file at once (no buffering in the process), so a
//! `kill -9` loses none that were answered; they are not synced, so a power
//! loss may lose the last ones, as the system log would.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};
use tonic::Status;

use super::WallClock;
use crate::access::Principal;

pub struct Audit {
    path: PathBuf,
    file: Mutex<Open>,
    clock: WallClock,
    /// Past this size the log is rotated: `audit.log` becomes
    /// `audit.log.1` (replacing the one before), so a flood of refusals
    /// costs at most twice this much disk.
    max_bytes: u64,
}

struct Open {
    file: File,
    bytes: u64,
}

/// The default rotation size.
pub const AUDIT_LOG_BYTES: u64 = 64 << 20;

/// Who an entry is about.
pub enum Actor<'a> {
    Principal(&'a Principal),
    Agent(&'a str),
    /// A caller whose credential did not check out.
    Unknown,
}

/// The first ids of a list, for an entry: a kill of 100,000 tasks is one
/// line, not megabytes (the entry also carries the count).
pub fn some_ids(ids: &[String]) -> &[String] {
    &ids[..ids.len().min(20)]
}

impl Audit {
    /// Opens (creating, appending to) `<work_dir>/audit.log`.
    pub fn open(work_dir: &Path, clock: WallClock) -> std::io::Result<Audit> {
        Audit::open_rotating(work_dir, clock, AUDIT_LOG_BYTES)
    }

    /// [`Audit::open`], rotating at `max_bytes`.
    pub fn open_rotating(
        work_dir: &Path,
        clock: WallClock,
        max_bytes: u64,
    ) -> std::io::Result<Audit> {
        let path = work_dir.join("audit.log");
        let file = File::options().create(true).append(true).open(&path)?;
        let bytes = file.metadata()?.len();
        Ok(Audit {
            path,
            file: Mutex::new(Open { file, bytes }),
            clock,
            max_bytes,
        })
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_extension("log.1")
    }

    /// Records a change `call` with `args` and its outcome.
    pub fn record<T>(&self, who: Actor<'_>, call: &str, args: Value, outcome: &Result<T, Status>) {
        let (who, accessor) = match who {
            Actor::Principal(p) => (p.name.as_str(), p.accessor.as_str()),
            Actor::Agent(id) => (id, ""),
            Actor::Unknown => ("", ""),
        };
        let mut entry = json!({
            "ts_ms": self.clock.now_ms(),
            "who": who,
            "call": call,
            "args": args,
            "allowed": outcome.is_ok(),
        });
        if !accessor.is_empty() {
            entry["accessor"] = accessor.into();
        }
        if let Err(status) = outcome {
            entry["code"] = format!("{:?}", status.code()).into();
            entry["error"] = status.message().into();
        }
        self.write(&entry);
    }

    /// Records a refusal of a call without a valid credential.
    pub fn refused_credential(&self, status: &Status) {
        self.record::<()>(
            Actor::Unknown,
            "(credential)",
            Value::Null,
            &Err(status.clone()),
        );
    }

    /// Records `outcome` if it is a refusal (`PERMISSION_DENIED`,
    /// `UNAUTHENTICATED`): for reads, which are not audited when allowed.
    pub fn refusal<T>(&self, who: Actor<'_>, call: &str, args: Value, outcome: &Result<T, Status>) {
        if let Err(status) = outcome
            && matches!(
                status.code(),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
            )
        {
            self.record(who, call, args, outcome);
        }
    }

    fn write(&self, entry: &Value) {
        let mut line = entry.to_string();
        line.push('\n');
        let mut open = self.file.lock().expect("not poisoned");
        if open.bytes + line.len() as u64 > self.max_bytes && open.bytes > 0 {
            let reopened = std::fs::rename(&self.path, self.rotated())
                .and_then(|()| File::options().create(true).append(true).open(&self.path));
            match reopened {
                Ok(file) => *open = Open { file, bytes: 0 },
                Err(e) => {
                    tracing::error!("cannot rotate the audit log {}: {e}", self.path.display())
                }
            }
        }
        match open.file.write_all(line.as_bytes()) {
            Ok(()) => open.bytes += line.len() as u64,
            Err(e) => tracing::error!("cannot write the audit log {}: {e}", self.path.display()),
        }
    }

    /// The newest `limit` entries at or after `since_ms`, oldest first.
    pub fn read(&self, since_ms: u64, limit: usize) -> std::io::Result<Vec<String>> {
        let mut kept = std::collections::VecDeque::new();
        let rotated = File::open(self.rotated())
            .ok()
            .map(|f| BufReader::new(f).lines());
        let current = BufReader::new(File::open(&self.path)?).lines();
        for line in rotated.into_iter().flatten().chain(current) {
            let line = line?;
            let ts = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["ts_ms"].as_u64())
                .unwrap_or(0);
            if ts >= since_ms {
                kept.push_back(line);
                if kept.len() > limit {
                    kept.pop_front();
                }
            }
        }
        Ok(kept.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Grant;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn entries_say_who_what_when_and_whether() {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicU64::new(1000));
        let clock = {
            let now = now.clone();
            WallClock(Arc::new(move || now.load(Ordering::SeqCst)))
        };
        let audit = Audit::open(dir.path(), clock).unwrap();
        let alice = Principal {
            name: "alice".into(),
            accessor: "acc1".into(),
            grant: Grant::Roles(vec!["batch".into()]),
        };
        audit.record::<()>(
            Actor::Principal(&alice),
            "Scheduler.Teardown",
            json!({"framework_id": "F1"}),
            &Ok(()),
        );
        now.store(2000, Ordering::SeqCst);
        audit.refusal::<()>(
            Actor::Principal(&alice),
            "Operator.ListTasks",
            Value::Null,
            &Err(Status::not_found("not a refusal")),
        );
        audit.refusal::<()>(
            Actor::Principal(&alice),
            "Operator.DrainAgent",
            json!({"agent_id": "A1"}),
            &Err(Status::permission_denied("needs an admin token")),
        );
        let all = audit.read(0, 100).unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        let first: Value = serde_json::from_str(&all[0]).unwrap();
        assert_eq!(first["who"], "alice");
        assert_eq!(first["accessor"], "acc1");
        assert_eq!(first["allowed"], true);
        assert_eq!(first["ts_ms"], 1000);
        let second: Value = serde_json::from_str(&all[1]).unwrap();
        assert_eq!(second["allowed"], false);
        assert_eq!(second["code"], "PermissionDenied");
        assert_eq!(audit.read(1500, 100).unwrap().len(), 1);
        assert_eq!(audit.read(0, 1).unwrap(), vec![all[1].clone()]);
        // Reopened, it appends.
        drop(audit);
        let audit = Audit::open(dir.path(), WallClock::system()).unwrap();
        audit.refused_credential(&Status::unauthenticated("token x is unknown"));
        assert_eq!(audit.read(0, 100).unwrap().len(), 3);
    }

    #[test]
    fn a_flood_rotates_the_log_and_costs_at_most_twice_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open_rotating(dir.path(), WallClock::system(), 10_000).unwrap();
        for _ in 0..2000 {
            audit.refused_credential(&Status::unauthenticated("token x is unknown"));
        }
        let size = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(size("audit.log") <= 10_000 && size("audit.log.1") <= 10_000);
        let kept = audit.read(0, 100_000).unwrap();
        assert!(!kept.is_empty() && kept.len() < 2000, "{}", kept.len());
    }
}
