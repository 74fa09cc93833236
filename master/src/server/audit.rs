//! The audit log: one JSON line per change and per refusal, in
//! `<work-dir>/audit.log`.
//!
//! Who (principal, token accessor or agent), what (the call and its
//! arguments, never a secret), when, and whether it was allowed. Lines are
//! written through to the file at once (no buffering in the process), so a
//! `kill -9` loses none that were answered; they are not synced, so a power
//! loss may lose the last ones, as the system log would.
//!
//! So that no caller can flush the trail: repeats of a failure (same
//! caller, call and code) within a few seconds are one line in full and one
//! summary with their count (`refusals.rs`); callers refused too often are
//! throttled (`Audit::throttle`, asked by the gate); and rotation keeps
//! several files within a budget, noting up to when it deleted lines so a
//! read can say so.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};
use tonic::Status;

use super::WallClock;
use super::refusals::{self, Aggregator, Kind, Limiter, Seen, Summary};
use crate::access::Principal;

pub struct Audit {
    path: PathBuf,
    state: Mutex<State>,
    limiter: Mutex<Limiter>,
    clock: WallClock,
    /// Past this size `audit.log` is rotated: it becomes `audit.log.1`,
    /// each `audit.log.N` becomes `.N+1`, and the oldest past `files` is
    /// deleted, so the log costs at most `max_bytes * files` of disk.
    max_bytes: u64,
    /// How many files are kept, `audit.log` included (at least 2).
    files: u32,
    /// Written into every line (`"master"`): masters on etcd each keep
    /// their own log, and a reader must tell whose line it is.
    master_id: Option<String>,
}

struct State {
    open: Open,
    /// Repeats of a failure, summed up (see `refusals.rs`).
    aggregate: Aggregator,
}

struct Open {
    file: File,
    bytes: u64,
}

/// The size of one file of the log, past which it is rotated.
pub const AUDIT_LOG_BYTES: u64 = 64 << 20;

/// How many files of [`AUDIT_LOG_BYTES`] are kept, `audit.log` included:
/// a 320 MiB budget, so a flood (now summed up, see `refusals.rs`) would
/// have to last far longer to push out a week's changes.
pub const AUDIT_LOG_FILES: u32 = 5;

/// What [`Audit::read`] found.
#[derive(Debug, Default)]
pub struct AuditRead {
    /// The newest matching entries, oldest first.
    pub entries: Vec<String>,
    /// Lines up to this time were deleted by rotation; 0 if none ever were.
    pub dropped_until_ms: u64,
    /// The time of the oldest line kept; 0 if there is none.
    pub oldest_kept_ms: u64,
}

/// Who an entry is about.
pub enum Actor<'a> {
    Principal(&'a Principal),
    Agent(&'a str),
    /// A caller whose credential did not check out, from this address (if
    /// known): such callers are summed up and limited by address.
    Unknown(Option<IpAddr>),
}

/// The first ids of a list, for an entry: a kill of 100,000 tasks is one
/// line, not megabytes (the entry also carries the count).
pub fn some_ids(ids: &[String]) -> &[String] {
    &ids[..ids.len().min(20)]
}

/// The limiter's key for a principal.
fn principal_key(p: &Principal) -> String {
    format!("principal {}", p.name)
}

impl Audit {
    /// Opens (creating, appending to) `<work_dir>/audit.log`.
    pub fn open(work_dir: &Path, clock: WallClock) -> std::io::Result<Audit> {
        Audit::open_rotating(work_dir, clock, AUDIT_LOG_BYTES, AUDIT_LOG_FILES)
    }

    /// [`Audit::open`], rotating at `max_bytes` and keeping `files` files.
    pub fn open_rotating(
        work_dir: &Path,
        clock: WallClock,
        max_bytes: u64,
        files: u32,
    ) -> std::io::Result<Audit> {
        let path = work_dir.join("audit.log");
        let file = File::options().create(true).append(true).open(&path)?;
        let bytes = file.metadata()?.len();
        Ok(Audit {
            path,
            state: Mutex::new(State {
                open: Open { file, bytes },
                aggregate: Aggregator::default(),
            }),
            limiter: Mutex::new(Limiter::default()),
            clock,
            max_bytes,
            files: files.max(2),
            master_id: None,
        })
    }

    /// Names `master_id` in every line from now on.
    pub fn with_master(mut self, master_id: &str) -> Audit {
        self.master_id = Some(master_id.to_string());
        self
    }

    /// `audit.log.k`; `audit.log` for 0.
    fn numbered(&self, k: u32) -> PathBuf {
        match k {
            0 => self.path.clone(),
            k => self.path.with_extension(format!("log.{k}")),
        }
    }

    /// Where the time up to which lines were deleted is kept.
    fn dropped_path(&self) -> PathBuf {
        self.path.with_extension("dropped")
    }

    /// Records a change `call` with `args` and its outcome. A failure that
    /// repeats one of the same kind (caller, call, code) within
    /// [`refusals::WINDOW_MS`] is only counted, for a summary line; a
    /// refusal is charged to its caller (see [`Audit::throttle`]).
    pub fn record<T>(&self, who: Actor<'_>, call: &str, args: Value, outcome: &Result<T, Status>) {
        let now = self.clock.now_ms();
        let (name, accessor, source) = match &who {
            Actor::Principal(p) => (p.name.as_str(), p.accessor.as_str(), None),
            Actor::Agent(id) => (*id, "", None),
            Actor::Unknown(ip) => ("", "", ip.map(refusals::source_of)),
        };
        let kind = outcome.as_ref().err().map(|status| Kind {
            who: name.to_string(),
            accessor: accessor.to_string(),
            source: source.clone().unwrap_or_default(),
            call: call.to_string(),
            code: status.code(),
        });
        if let Some(kind) = &kind
            && refusals::is_refusal(kind.code)
        {
            let key = match &who {
                Actor::Principal(p) => Some(principal_key(p)),
                Actor::Unknown(_) => source.clone(),
                Actor::Agent(_) => None,
            };
            if let Some(key) = key {
                self.limiter.lock().expect("not poisoned").charge(&key, now);
            }
        }
        let mut state = self.state.lock().expect("not poisoned");
        self.write_due(&mut state, now);
        if let Some(kind) = &kind
            && state.aggregate.refused(kind, now) == Seen::Repeat
        {
            return;
        }
        let mut entry = json!({
            "ts_ms": now,
            "who": name,
            "call": call,
            "args": args,
            "allowed": outcome.is_ok(),
        });
        if !accessor.is_empty() {
            entry["accessor"] = accessor.into();
        }
        if let Some(source) = source {
            entry["source"] = source.into();
        }
        if let Err(status) = outcome {
            entry["code"] = format!("{:?}", status.code()).into();
            entry["error"] = status.message().into();
        }
        self.write(&mut state.open, &entry);
    }

    /// Records a refusal of a call without a valid credential from
    /// `source`, and returns what to answer: `status`, or
    /// `RESOURCE_EXHAUSTED` when that address was refused too often.
    pub fn refused_credential(&self, status: Status, source: Option<IpAddr>) -> Status {
        if let Err(throttled) = self.throttle_source(source, "(credential)") {
            return throttled;
        }
        self.record::<()>(
            Actor::Unknown(source),
            "(credential)",
            Value::Null,
            &Err(status.clone()),
        );
        status
    }

    /// Lets a caller without a credential (yet) from `source` make `call`
    /// unless that address was refused too often: then it is answered
    /// `RESOURCE_EXHAUSTED` (and that is audited).
    pub fn throttle_source(&self, source: Option<IpAddr>, call: &str) -> Result<(), Status> {
        let Some(ip) = source else {
            return Ok(());
        };
        let key = refusals::source_of(ip);
        let checked = self
            .limiter
            .lock()
            .expect("not poisoned")
            .check(&key, self.clock.now_ms());
        let Err(wait) = checked else {
            return Ok(());
        };
        let refused = Err(throttled(
            &format!("{key} (no valid credential)"),
            "address",
            wait,
        ));
        self.record::<()>(Actor::Unknown(source), call, Value::Null, &refused);
        refused
    }

    /// Lets `who` make a call to `service` unless it was refused too often
    /// (see `refusals.rs`): then the call is answered `RESOURCE_EXHAUSTED`
    /// and not tried, and counted as `<service>.*`.
    pub fn throttle(&self, who: &Principal, service: &str) -> Result<(), Status> {
        let now = self.clock.now_ms();
        let checked = self
            .limiter
            .lock()
            .expect("not poisoned")
            .check(&principal_key(who), now);
        let Err(wait) = checked else {
            return Ok(());
        };
        let refused = Err(throttled(&who.name, "principal", wait));
        self.record::<()>(
            Actor::Principal(who),
            &format!("{service}.*"),
            Value::Null,
            &refused,
        );
        refused
    }

    /// Records `outcome` if it is a refusal (`PERMISSION_DENIED`,
    /// `UNAUTHENTICATED`): for reads, which are not audited when allowed.
    pub fn refusal<T>(&self, who: Actor<'_>, call: &str, args: Value, outcome: &Result<T, Status>) {
        if let Err(status) = outcome
            && refusals::is_refusal(status.code())
        {
            self.record(who, call, args, outcome);
        }
    }

    /// Writes the summaries of the windows that closed by now: called by
    /// every write and read, and by the master's one-second tick, so a
    /// summary is on disk within a second of its window closing.
    pub fn flush_due(&self) {
        let mut state = self.state.lock().expect("not poisoned");
        self.write_due(&mut state, self.clock.now_ms());
    }

    /// Writes the summaries of every open window: the master is stopping.
    pub fn flush_all(&self) {
        let mut state = self.state.lock().expect("not poisoned");
        let now = self.clock.now_ms();
        for summary in state.aggregate.all() {
            self.write(&mut state.open, &summary_entry(&summary, now));
        }
    }

    fn write_due(&self, state: &mut State, now: u64) {
        for summary in state.aggregate.due(now) {
            self.write(&mut state.open, &summary_entry(&summary, now));
        }
    }

    fn write(&self, open: &mut Open, entry: &Value) {
        let mut line = match (&self.master_id, entry) {
            (Some(master), Value::Object(fields)) => {
                let mut fields = fields.clone();
                fields.insert("master".into(), master.as_str().into());
                Value::Object(fields).to_string()
            }
            _ => entry.to_string(),
        };
        line.push('\n');
        if open.bytes + line.len() as u64 > self.max_bytes && open.bytes > 0 {
            match self.rotate() {
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

    /// Shifts the files by one, deleting the oldest (and noting up to when
    /// its lines went, for [`Audit::read`]); a new `audit.log`.
    fn rotate(&self) -> std::io::Result<File> {
        let oldest = self.numbered(self.files - 1);
        if oldest.exists() {
            let until = newest_ts(&oldest).unwrap_or_else(|| self.clock.now_ms());
            let until = until.max(self.dropped_until());
            std::fs::write(self.dropped_path(), format!("{until}\n"))?;
            std::fs::remove_file(&oldest)?;
        }
        for k in (0..self.files - 1).rev() {
            let from = self.numbered(k);
            if from.exists() {
                std::fs::rename(&from, self.numbered(k + 1))?;
            }
        }
        File::options().create(true).append(true).open(&self.path)
    }

    fn dropped_until(&self) -> u64 {
        std::fs::read_to_string(self.dropped_path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The newest `limit` entries at or after `since_ms`, oldest first, and
    /// what rotation deleted. Summaries of closed windows are written first.
    pub fn read(&self, since_ms: u64, limit: usize) -> std::io::Result<AuditRead> {
        self.flush_due();
        let mut kept = std::collections::VecDeque::new();
        let mut oldest_kept_ms = None;
        let older = (1..self.files)
            .rev()
            .filter_map(|k| File::open(self.numbered(k)).ok())
            .flat_map(|f| BufReader::new(f).lines());
        let current = BufReader::new(File::open(&self.path)?).lines();
        for line in older.chain(current) {
            let line = line?;
            let ts = ts_of(&line).unwrap_or(0);
            oldest_kept_ms.get_or_insert(ts);
            if ts >= since_ms {
                kept.push_back(line);
                if kept.len() > limit {
                    kept.pop_front();
                }
            }
        }
        Ok(AuditRead {
            entries: kept.into(),
            dropped_until_ms: self.dropped_until(),
            oldest_kept_ms: oldest_kept_ms.unwrap_or(0),
        })
    }
}

/// The answer to a throttled caller: which limit, and when to retry.
fn throttled(who: &str, per: &str, wait_ms: u64) -> Status {
    Status::resource_exhausted(format!(
        "{who} was refused too often: after {} refusals, at most {} a second per {per}; \
         calls are refused unheard for the next {wait_ms} ms",
        refusals::BURST,
        refusals::PER_SECOND
    ))
}

fn ts_of(line: &str) -> Option<u64> {
    serde_json::from_str::<Value>(line).ok()?["ts_ms"].as_u64()
}

/// The newest time in the last 64 KiB of a log file.
fn newest_ts(path: &Path) -> Option<u64> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(64 << 10)))
        .ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .filter_map(ts_of)
        .max()
}

/// One line for the repeats of a kind in a window.
fn summary_entry(s: &Summary, now: u64) -> Value {
    let mut entry = json!({
        "ts_ms": now,
        "who": s.kind.who,
        "call": s.kind.call,
        "allowed": false,
        "code": format!("{:?}", s.kind.code),
        "repeated": s.repeated,
        "first_ts_ms": s.first_ms,
        "last_ts_ms": s.last_ms,
        "summary": refusals::describe(s),
    });
    if !s.kind.accessor.is_empty() {
        entry["accessor"] = s.kind.accessor.clone().into();
    }
    if !s.kind.source.is_empty() {
        entry["source"] = s.kind.source.clone().into();
    }
    entry
}

#[cfg(test)]
mod tests;
