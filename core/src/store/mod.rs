//! The master's registry: what it persists because it cannot be rebuilt
//! from what agents and frameworks tell it again.
//!
//! The pure half of the master's store: the records and writes the core
//! returns ([`Record`], [`Write`], [`Table`]), the [`Registry`] it recovers
//! from, the [`Store`] trait and its start-up check ([`open`]), and
//! [`MemoryStore`] (nothing survives the process; for benchmarks and tests).
//! The durable backend (redb) lives in `wasmos-master`'s `store` module,
//! which re-exports all of this. Backends' shape is the one an etcd backend
//! needs too: one key per record (`tasks/<id>`, never one big blob), a header
//! with a schema version checked at start, and writes grouped into one
//! transaction per turn of the master's actor ([`Store::commit`]): one fsync
//! per batch, never one per task.
//!
//! Most of the registry is read whole at start ([`Store::load`]); what the
//! master reads only when asked (a job's per-index chunks) is read by key
//! ([`Store::get`]) or by key range, a page at a time ([`Store::range`]).
//!
//! The core decides *what* to persist (it returns [`Write`]s among its
//! outputs and never touches a store); the shell decides *when*: it commits a
//! turn's writes before it sends anything that depends on them.
//!
//! Files: `mod.rs` (the trait, records and the start-up check), `memory.rs`.

mod memory;

use std::fmt;

use prost::Message;
use wasmos_proto::v1;

use crate::core::LaunchKey;

pub use memory::MemoryStore;

/// The layout of the records this master writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// The kinds of record, each its own table (redb) or key prefix (etcd).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// The header: schema version and epoch, under the key `meta`.
    Meta,
    Agents,
    Frameworks,
    Roles,
    Tasks,
    Artifacts,
    /// The cluster's CA, under the key `ca`.
    Trust,
    /// Tokens by accessor (secrets kept hashed).
    Tokens,
    /// Agent identities the CA issued, by agent id.
    Identities,
    /// The job service's jobs, by job id.
    Jobs,
    /// What a job's indices did, under `<job id>/<first index>`: read by
    /// range with its job, never by [`Store::load`].
    JobChunks,
    /// The first bytes of each index's stdout, under `<job id>/<index>`:
    /// read by range with a page of results, never by [`Store::load`].
    JobOutputs,
    /// The usage ledger, hourly, under `<hour ms>/<role>/<principal>/<job>`:
    /// read by range (the current hour's at start), never by
    /// [`Store::load`].
    Usage,
    /// The jobs' specs, by job id: written once, so the job's record a
    /// turn rewrites stays small.
    JobSpecs,
    /// The agents a job's indices ran on, in records of names under
    /// `<job id>/<first place>`: read by range with its chunks, never by
    /// [`Store::load`].
    JobAgents,
}

impl Table {
    /// Every table, header first.
    pub const ALL: [Table; 15] = [
        Table::Meta,
        Table::Agents,
        Table::Frameworks,
        Table::Roles,
        Table::Tasks,
        Table::Artifacts,
        Table::Trust,
        Table::Tokens,
        Table::Identities,
        Table::Jobs,
        Table::JobChunks,
        Table::JobOutputs,
        Table::Usage,
        Table::JobSpecs,
        Table::JobAgents,
    ];

    /// Does [`Store::load`] read it? Every table but the jobs' chunks,
    /// which may hold millions of indices (and their outputs and agents
    /// with them), and the usage ledger, which grows by the hour: the
    /// master reads those by range when it needs them.
    pub fn is_loaded(self) -> bool {
        !matches!(
            self,
            Table::JobChunks | Table::JobOutputs | Table::Usage | Table::JobAgents
        )
    }

    /// The table's name: a redb table, or an etcd key prefix.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Agents => "agents",
            Table::Frameworks => "frameworks",
            Table::Roles => "roles",
            Table::Tasks => "tasks",
            Table::Artifacts => "artifacts",
            Table::Trust => "trust",
            Table::Tokens => "tokens",
            Table::Identities => "identities",
            Table::Jobs => "jobs",
            Table::JobChunks => "job_chunks",
            Table::JobOutputs => "job_outputs",
            Table::Usage => "usage",
            Table::JobSpecs => "job_specs",
            Table::JobAgents => "job_agents",
        }
    }
}

/// One record, typed. A task is much larger than the rest; records live
/// only from a turn's end to its commit, so boxing it would buy an
/// allocation per task for no memory saved.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Meta(v1::RegistryMeta),
    Agent(v1::StoredAgent),
    Framework(v1::StoredFramework),
    Role(v1::StoredRole),
    /// Boxed: a task's record is most of the registry's traffic and several
    /// times the size of the others, and writes are moved through a turn.
    Task(Box<v1::StoredTask>),
    Artifact(v1::StoredArtifact),
    Ca(v1::StoredCa),
    Token(v1::StoredToken),
    Identity(v1::StoredIdentity),
    Job(Box<v1::StoredJob>),
    JobChunk(v1::StoredJobChunk),
    Usage(v1::StoredUsage),
    JobOutput(v1::StoredJobOutput),
    JobSpec(Box<v1::StoredJobSpec>),
    JobAgents(v1::StoredJobAgents),
}

impl Record {
    /// Where the record lives.
    pub fn table(&self) -> Table {
        match self {
            Record::Meta(_) => Table::Meta,
            Record::Agent(_) => Table::Agents,
            Record::Framework(_) => Table::Frameworks,
            Record::Role(_) => Table::Roles,
            Record::Task(_) => Table::Tasks,
            Record::Artifact(_) => Table::Artifacts,
            Record::Ca(_) => Table::Trust,
            Record::Token(_) => Table::Tokens,
            Record::Identity(_) => Table::Identities,
            Record::Job(_) => Table::Jobs,
            Record::JobChunk(_) => Table::JobChunks,
            Record::Usage(_) => Table::Usage,
            Record::JobOutput(_) => Table::JobOutputs,
            Record::JobSpec(_) => Table::JobSpecs,
            Record::JobAgents(_) => Table::JobAgents,
        }
    }

    /// Its key within the table.
    pub fn key(&self) -> String {
        match self {
            Record::Meta(_) => "meta".into(),
            Record::Agent(a) => a
                .info
                .as_ref()
                .map(|i| i.agent_id.clone())
                .unwrap_or_default(),
            Record::Framework(f) => f
                .info
                .as_ref()
                .map(|i| i.framework_id.clone())
                .unwrap_or_default(),
            Record::Role(r) => r.name.clone(),
            Record::Task(t) => t
                .spec
                .as_ref()
                .map(|s| s.task_id.clone())
                .unwrap_or_default(),
            Record::Artifact(a) => a.digest.clone(),
            Record::Ca(_) => "ca".into(),
            Record::Token(t) => t.accessor.clone(),
            Record::Identity(i) => i.agent_id.clone(),
            Record::Job(j) => j.job_id.clone(),
            Record::JobChunk(c) => chunk_key(&c.job_id, c.first),
            Record::Usage(u) => usage_key(u),
            Record::JobOutput(o) => chunk_key(&o.job_id, o.index),
            Record::JobSpec(s) => s.job_id.clone(),
            Record::JobAgents(a) => chunk_key(&a.job_id, a.first),
        }
    }

    /// Its bytes (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::Meta(r) => r.encode_to_vec(),
            Record::Agent(r) => r.encode_to_vec(),
            Record::Framework(r) => r.encode_to_vec(),
            Record::Role(r) => r.encode_to_vec(),
            Record::Task(r) => r.encode_to_vec(),
            Record::Artifact(r) => r.encode_to_vec(),
            Record::Ca(r) => r.encode_to_vec(),
            Record::Token(r) => r.encode_to_vec(),
            Record::Identity(r) => r.encode_to_vec(),
            Record::Job(r) => r.encode_to_vec(),
            Record::JobChunk(r) => r.encode_to_vec(),
            Record::Usage(r) => r.encode_to_vec(),
            Record::JobOutput(r) => r.encode_to_vec(),
            Record::JobSpec(r) => r.encode_to_vec(),
            Record::JobAgents(r) => r.encode_to_vec(),
        }
    }

    /// Decodes the bytes stored under `table`/`key`, naming them if they
    /// do not decode.
    pub fn decode_at(table: Table, key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
        Record::decode(table, bytes).map_err(|e| {
            StoreError::Corrupt(format!(
                "record {}/{key} does not decode: {e}",
                table.name()
            ))
        })
    }

    fn decode(table: Table, bytes: &[u8]) -> Result<Record, prost::DecodeError> {
        Ok(match table {
            Table::Meta => Record::Meta(Message::decode(bytes)?),
            Table::Agents => Record::Agent(Message::decode(bytes)?),
            Table::Frameworks => Record::Framework(Message::decode(bytes)?),
            Table::Roles => Record::Role(Message::decode(bytes)?),
            Table::Tasks => Record::Task(Box::new(Message::decode(bytes)?)),
            Table::Artifacts => Record::Artifact(Message::decode(bytes)?),
            Table::Trust => Record::Ca(Message::decode(bytes)?),
            Table::Tokens => Record::Token(Message::decode(bytes)?),
            Table::Identities => Record::Identity(Message::decode(bytes)?),
            Table::Jobs => Record::Job(Box::new(Message::decode(bytes)?)),
            Table::JobChunks => Record::JobChunk(Message::decode(bytes)?),
            Table::Usage => Record::Usage(Message::decode(bytes)?),
            Table::JobOutputs => Record::JobOutput(Message::decode(bytes)?),
            Table::JobSpecs => Record::JobSpec(Box::new(Message::decode(bytes)?)),
            Table::JobAgents => Record::JobAgents(Message::decode(bytes)?),
        })
    }
}

/// One change to the registry.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Put(Record),
    Delete(Table, String),
}

impl Write {
    /// `writes` with each key written once: its last value, at the place
    /// of its first write. For a store that cannot take a key twice in one
    /// transaction and may apply a commit's transactions only in part (in
    /// order): every prefix of the result is a registry a master can start
    /// on, since a record's last value is never further from the end than
    /// its first (a task that ended frees what it held before any later
    /// launch is placed; nothing goes back from ended to running).
    pub fn once_each(writes: &[Write]) -> Vec<Write> {
        let mut place: std::collections::HashMap<(Table, String), usize> =
            std::collections::HashMap::with_capacity(writes.len());
        let mut once: Vec<Write> = Vec::with_capacity(writes.len());
        for write in writes {
            match place.entry(write.target()) {
                std::collections::hash_map::Entry::Occupied(at) => once[*at.get()] = write.clone(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(once.len());
                    once.push(write.clone());
                }
            }
        }
        once
    }

    /// The table and key the write touches.
    pub fn target(&self) -> (Table, String) {
        match self {
            Write::Put(record) => (record.table(), record.key()),
            Write::Delete(table, key) => (*table, key.clone()),
        }
    }
}

/// Everything a registry holds, decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registry {
    /// The header; `None` for a registry never written.
    pub meta: Option<v1::RegistryMeta>,
    pub agents: Vec<v1::StoredAgent>,
    pub frameworks: Vec<v1::StoredFramework>,
    pub roles: Vec<v1::StoredRole>,
    pub tasks: Vec<v1::StoredTask>,
    pub artifacts: Vec<v1::StoredArtifact>,
    /// The cluster's CA; `None` until a TLS master made one.
    pub ca: Option<v1::StoredCa>,
    pub tokens: Vec<v1::StoredToken>,
    pub identities: Vec<v1::StoredIdentity>,
    /// The job service's jobs (their chunks are read by range), their
    /// specs in [`Registry::job_specs`] (see [`Registry::take_jobs`]).
    pub jobs: Vec<v1::StoredJob>,
    pub job_specs: Vec<v1::StoredJobSpec>,
    /// The usage ledger's buckets of the current hour: not read by
    /// [`Store::load`]; the shell reads them by range ([`usage_hour_prefix`])
    /// before the core recovers, so that it adds to them.
    pub usage: Vec<v1::StoredUsage>,
}

impl Registry {
    /// Decodes raw `(table, key, bytes)` entries, naming the first that
    /// does not decode.
    pub fn decode(
        entries: impl IntoIterator<Item = (Table, String, Vec<u8>)>,
    ) -> Result<Registry, StoreError> {
        let mut registry = Registry::default();
        for (table, key, bytes) in entries {
            registry.insert(table, &key, &bytes)?;
        }
        Ok(registry)
    }

    /// Decodes one entry into the registry (without copying it first:
    /// loading 100,000 tasks is mostly allocation), naming it if it does
    /// not decode.
    pub fn insert(&mut self, table: Table, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if !table.is_loaded() {
            return Ok(());
        }
        match Record::decode_at(table, key, bytes)? {
            Record::Meta(m) => self.meta = Some(m),
            Record::Agent(a) => self.agents.push(a),
            Record::Framework(f) => self.frameworks.push(f),
            Record::Role(r) => self.roles.push(r),
            Record::Task(t) => self.tasks.push(*t),
            Record::Artifact(a) => self.artifacts.push(a),
            Record::Ca(c) => self.ca = Some(c),
            Record::Token(t) => self.tokens.push(t),
            Record::Identity(i) => self.identities.push(i),
            Record::Job(j) => self.jobs.push(*j),
            Record::JobSpec(s) => self.job_specs.push(*s),
            Record::JobChunk(_)
            | Record::JobOutput(_)
            | Record::Usage(_)
            | Record::JobAgents(_) => {
                unreachable!("tables not loaded are skipped above")
            }
        }
        Ok(())
    }

    /// Every record but the header.
    pub fn records(&self) -> Vec<Record> {
        let mut records = Vec::with_capacity(self.len());
        records.extend(self.agents.iter().cloned().map(Record::Agent));
        records.extend(self.frameworks.iter().cloned().map(Record::Framework));
        records.extend(self.roles.iter().cloned().map(Record::Role));
        records.extend(self.tasks.iter().map(|t| Record::Task(Box::new(t.clone()))));
        records.extend(self.artifacts.iter().cloned().map(Record::Artifact));
        records.extend(self.ca.iter().cloned().map(Record::Ca));
        records.extend(self.tokens.iter().cloned().map(Record::Token));
        records.extend(self.identities.iter().cloned().map(Record::Identity));
        records.extend(self.jobs.iter().map(|j| Record::Job(Box::new(j.clone()))));
        records.extend(
            self.job_specs
                .iter()
                .map(|s| Record::JobSpec(Box::new(s.clone()))),
        );
        records
    }

    /// Records of every kind but the header.
    pub fn len(&self) -> usize {
        self.agents.len()
            + self.frameworks.len()
            + self.roles.len()
            + self.tasks.len()
            + self.artifacts.len()
            + usize::from(self.ca.is_some())
            + self.tokens.len()
            + self.identities.len()
            + self.jobs.len()
            + self.job_specs.len()
    }

    /// Holds no record but (perhaps) the header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the jobs out, each with its spec: from `job_specs`, or from
    /// its record as masters before `job_specs` wrote it.
    pub fn take_jobs(&mut self) -> Vec<v1::StoredJob> {
        let mut specs: std::collections::HashMap<String, v1::JobSpec> =
            std::mem::take(&mut self.job_specs)
                .into_iter()
                .filter_map(|s| Some((s.job_id, s.spec?)))
                .collect();
        let mut jobs = std::mem::take(&mut self.jobs);
        for job in &mut jobs {
            if let Some(spec) = specs.remove(&job.job_id) {
                job.spec = Some(spec);
            }
        }
        jobs
    }
}

/// Why the registry could not be read or written. Messages name the store
/// (its file, for redb) and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be opened, read or written (permissions, a full disk,
    /// a file that is not a registry).
    #[error("{0}")]
    Io(String),
    /// A record or the header is not what this master wrote.
    #[error("{0}")]
    Corrupt(String),
    /// The registry was written by a master of another schema version.
    #[error("{0}")]
    Schema(String),
    /// The write was refused because this master no longer leads: a
    /// registry shared by several masters (etcd) applies a leader's writes
    /// only while its election holds. The master stops at once.
    #[error("{0}")]
    Fenced(String),
}

/// Where the master's registry lives. Implementations must make a
/// [`Store::commit`] durable before it returns (or, for [`MemoryStore`],
/// say so in their docs), and apply it whole or not at all.
pub trait Store: Send + Sync + 'static {
    /// Reads every record.
    fn load(&self) -> Result<Registry, StoreError>;

    /// Reads one record, `None` if there is none under `key`: for what
    /// the master reads when asked rather than holding it (a job's chunks,
    /// which [`Store::load`] will not read at start).
    fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError>;

    /// Reads at most `limit` records of `table` in key order (bytewise, as
    /// redb and etcd order keys), from the key `from` on (inclusive) and
    /// before `to` (exclusive; `None`: to the table's end). A page of a
    /// listing, or one job's chunks under its key prefix ([`prefix_end`]).
    fn range(
        &self,
        table: Table,
        from: &str,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;

    /// Applies `writes`, in order, as one transaction.
    fn commit(&self, writes: &[Write]) -> Result<(), StoreError>;

    /// Where the registry is, for people ("registry.redb in /var/lib/...").
    fn describe(&self) -> String;

    /// True when a commit is only a memory write, so the shell need not move
    /// it off its thread.
    fn is_in_memory(&self) -> bool {
        false
    }

    /// True when several masters share the registry (etcd), one leading:
    /// what one master made at its first start (the admin token) may live
    /// in another master's work dir.
    fn is_shared(&self) -> bool {
        false
    }
}

/// The key of a job's chunk whose first index is `first`: zero-padded, so
/// a job's chunks sort by index under the prefix `<job id>/`.
pub fn chunk_key(job_id: &str, first: u32) -> String {
    format!("{job_id}/{first:010}")
}

/// The key of a usage bucket: its hour first, so a time range is a key
/// range.
pub fn usage_key(u: &v1::StoredUsage) -> String {
    format!(
        "{}{}/{}/{}",
        usage_hour_prefix(u.hour_ms),
        u.role,
        u.principal,
        u.job
    )
}

/// The usage ledger's buckets of the hour holding `wall_ms` (what a
/// master starting then adds to): [`Registry::usage`].
pub fn usage_of_hour(store: &dyn Store, wall_ms: u64) -> Result<Vec<v1::StoredUsage>, StoreError> {
    let prefix = usage_hour_prefix(wall_ms - wall_ms % crate::core::HOUR_MS);
    let mut buckets = Vec::new();
    scan_prefix(store, Table::Usage, &prefix, &mut |record| {
        if let Record::Usage(u) = record {
            buckets.push(u);
        }
    })?;
    Ok(buckets)
}

/// How many records [`scan`] reads at once.
pub const SCAN_PAGE: usize = 4096;

/// Visits the records of `table` from the key `from` on (inclusive) and
/// before `to` (exclusive; `None`: to the table's end), in key order, a
/// page of [`SCAN_PAGE`] at a time: what a read of a range of unknown size
/// holds at once is a page, whatever the range holds.
pub fn scan(
    store: &dyn Store,
    table: Table,
    from: &str,
    to: Option<&str>,
    visit: &mut dyn FnMut(Record),
) -> Result<(), StoreError> {
    let mut from = from.to_string();
    loop {
        let page = store.range(table, &from, to, SCAN_PAGE)?;
        let full = page.len() == SCAN_PAGE;
        let Some(last) = page.last() else {
            return Ok(());
        };
        // The least key after the last one read.
        let next = format!("{}\0", last.key());
        for record in page {
            visit(record);
        }
        if !full {
            return Ok(());
        }
        from = next;
    }
}

/// [`scan`] of the keys of `table` that start with `prefix`.
pub fn scan_prefix(
    store: &dyn Store,
    table: Table,
    prefix: &str,
    visit: &mut dyn FnMut(Record),
) -> Result<(), StoreError> {
    let end = prefix_end(prefix);
    scan(store, table, prefix, end.as_deref(), visit)
}

/// The prefix of the usage buckets of the hour starting at `hour_ms`.
pub fn usage_hour_prefix(hour_ms: u64) -> String {
    format!("{hour_ms:013}/")
}

/// The first key after every key that starts with `prefix` (`None`: no
/// such key, the prefix is all `\u{10FFFF}`), so that
/// `range(table, prefix, prefix_end(prefix).as_deref(), n)` reads the keys
/// under `prefix`.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next char in order (skipping the surrogate gap).
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A store shows as where it is (the master's config holds one).
impl fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What a master starts from: the registry as loaded, the epoch of this
/// start (already durable) and the key its launches are signed with.
#[derive(Debug)]
pub struct Opened {
    pub registry: Registry,
    pub epoch: u64,
    pub launch_key: LaunchKey,
}

/// Loads the registry, checks its schema version, and makes this start's
/// epoch (one more than the last) durable before returning, with the
/// registry's launch key, or `fresh_launch_key` for a registry that has
/// none yet (new, or written before launches were signed). A registry of
/// another schema version, or records without a header, are refused and
/// left exactly as they are.
pub fn open(store: &dyn Store, fresh_launch_key: [u8; 32]) -> Result<Opened, StoreError> {
    let mut registry = store.load()?;
    let epoch = check_header(registry.meta.as_ref(), registry.len(), &store.describe())?
        .map_or(1, |last| last + 1);
    let key = match registry.meta.as_ref().map(|meta| meta.launch_key.as_slice()) {
        None | Some([]) => fresh_launch_key,
        Some(key) => <[u8; 32]>::try_from(key).map_err(|_| {
            StoreError::Corrupt(format!(
                "{}: its launch key is {} bytes, not 32; refusing to start (a new key would disown every launch made before)",
                store.describe(),
                key.len()
            ))
        })?,
    };
    let meta = v1::RegistryMeta {
        schema_version: SCHEMA_VERSION,
        epoch,
        launch_key: key.to_vec(),
    };
    store.commit(&[Write::Put(Record::Meta(meta.clone()))])?;
    registry.meta = Some(meta);
    Ok(Opened {
        registry,
        epoch,
        launch_key: LaunchKey::new(key),
    })
}

/// Checks a registry's header (`meta`, beside `records` other records):
/// the last epoch if it is one this master may use, `None` if the registry
/// is empty; an error naming `name` if it is of another schema version or
/// has records but no header.
pub fn check_header(
    meta: Option<&v1::RegistryMeta>,
    records: usize,
    name: &str,
) -> Result<Option<u64>, StoreError> {
    match meta {
        Some(meta) if meta.schema_version == SCHEMA_VERSION => Ok(Some(meta.epoch)),
        Some(meta) => Err(StoreError::Schema(format!(
            "{name} has schema version {}, and this master understands version {SCHEMA_VERSION}; \
             refusing to touch it (run the wasmos version that wrote it, or move the file away to start an empty cluster)",
            meta.schema_version
        ))),
        None if records > 0 => Err(StoreError::Corrupt(format!(
            "{name} holds {records} records but no header; refusing to touch it (move the file away to start an empty cluster)"
        ))),
        None => Ok(None),
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
