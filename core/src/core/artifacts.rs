//! The artifact index: which artifacts the master stores, who owns each,
//! when each was last used, and what every principal holds.
//!
//! The bytes live on the masters' disks (the shell's `ArtifactStore`); the
//! index lives here, so that every change to it is an input of the one
//! actor turn, joined to its commit (behind its fence, on etcd) and stamped
//! by its one clock, and so that the rules that read it (who may launch a
//! task on an artifact, how many bytes its inputs take) are applied to the
//! same state, in the same turn, as the rest of an `Accept`.

use crate::maps::{HashMap, HashSet};
use std::time::Duration;

use wasmos_proto::v1;

use super::{Core, CoreError, Reply};
use crate::access::{Denied, Principal};
use crate::artifact_limits::{Claim, Holdings, StoreLimits, admit};
use crate::store::{Record, Table, Write};
use crate::time::Time;

/// How often, at most, a use of an artifact is written into its record.
pub const LAST_USE_RESOLUTION: Duration = Duration::from_secs(60);

/// The artifact store's rules (`wasmos master --max-artifacts…`,
/// `--artifact-quota`, `--artifact-ttl`).
#[derive(Clone, Copy, Debug)]
pub struct ArtifactRules {
    pub limits: StoreLimits,
    /// The most bytes one principal (not an admin) may have stored.
    pub quota: u64,
    /// Artifacts unused for this long expire.
    pub ttl: Duration,
}

impl Default for ArtifactRules {
    fn default() -> Self {
        ArtifactRules {
            limits: StoreLimits::new(100_000, 64 << 30),
            quota: 4 << 30,
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// What the registry holds, by digest, and what each principal holds: kept
/// together so they never disagree.
#[derive(Default)]
pub(super) struct ArtifactIndex {
    records: HashMap<String, v1::StoredArtifact>,
    holdings: Holdings,
    /// Digests changed by the current input, to persist.
    dirty: HashSet<String>,
}

impl ArtifactIndex {
    pub(super) fn recover(records: Vec<v1::StoredArtifact>) -> ArtifactIndex {
        let mut index = ArtifactIndex::default();
        for record in records {
            index.holdings.add(&record);
            index.records.insert(record.digest.clone(), record);
        }
        index
    }

    fn insert(&mut self, record: v1::StoredArtifact) {
        self.holdings.add(&record);
        self.dirty.insert(record.digest.clone());
        if let Some(old) = self.records.insert(record.digest.clone(), record) {
            self.holdings.remove(&old);
        }
    }

    fn remove(&mut self, digest: &str) {
        if let Some(old) = self.records.remove(digest) {
            self.holdings.remove(&old);
            self.dirty.insert(digest.to_string());
        }
    }

    /// The writes for every digest changed since the last call.
    pub(super) fn take_writes(&mut self) -> impl Iterator<Item = Write> + '_ {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|digest| match self.records.get(&digest) {
                Some(record) => Write::Put(Record::Artifact(record.clone())),
                None => Write::Delete(Table::Artifacts, digest),
            })
    }

    pub(super) fn records(&self) -> impl Iterator<Item = &v1::StoredArtifact> {
        self.records.values()
    }
}

/// What the shell should do with its files once the index is reconciled
/// with them at start (see [`Core::reconcile_artifact_files`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilesToRemove(pub Vec<String>);

impl Core {
    /// Indexes an upload of `size` bytes named `digest` for `owner`, if the
    /// store's limits and `owner`'s quota let it (the refusal names the
    /// limit and its flag); uploaded again, it counts as a use.
    pub(super) fn store_artifact(
        &mut self,
        owner: &Principal,
        digest: String,
        size: u64,
        now: Time,
    ) -> Result<Reply, CoreError> {
        crate::ids::validate_digest(&digest).map_err(CoreError::InvalidArgument)?;
        let index = &self.artifacts;
        let existing = index.records.get(&digest);
        let claim = Claim {
            principal: &owner.name,
            admin: owner.is_admin(),
            size,
            new: existing.is_none(),
            owned: existing.is_some_and(|a| a.owners.contains(&owner.name)),
        };
        admit(
            &index.holdings,
            &self.config.artifacts.limits,
            self.config.artifacts.quota,
            claim,
        )
        .map_err(CoreError::Exhausted)?;
        let wall = self.wall(now);
        let mut record = existing.cloned().unwrap_or(v1::StoredArtifact {
            digest,
            size,
            stored_ms: wall,
            owners: Vec::new(),
            last_used_ms: 0,
        });
        record.last_used_ms = wall;
        if !record.owners.contains(&owner.name) {
            record.owners.push(owner.name.clone());
        }
        self.artifacts.insert(record);
        Ok(Reply::Done)
    }

    /// Notes a use of `digest` (fetched, asked about) in its record, at
    /// most once a [`LAST_USE_RESOLUTION`]: a busy artifact costs the
    /// registry a write a minute, not one a fetch.
    pub(super) fn note_artifact_use(
        &mut self,
        digest: &str,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let wall = self.wall(now);
        if let Some(record) = self.artifacts.records.get(digest) {
            let last = record.last_used_ms.max(record.stored_ms);
            if wall.saturating_sub(last) >= LAST_USE_RESOLUTION.as_millis() as u64 {
                let mut record = record.clone();
                record.last_used_ms = wall;
                self.artifacts.insert(record);
            }
        }
        Ok(Reply::Done)
    }

    /// Drops the records of artifacts unused for the TTL, but never those
    /// `pinned` (named by a job that has not ended: a held job may go long
    /// without starting a task). The last use is the later of the record's
    /// (any master's, to the minute) and `touched`, this master's file
    /// times (exact). Answers the digests dropped, whose files the shell
    /// then deletes.
    pub(super) fn expire_artifacts(
        &mut self,
        pinned: &std::collections::HashSet<String>,
        touched: &std::collections::HashMap<String, u64>,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let wall = self.wall(now);
        let ttl = self.config.artifacts.ttl.as_millis() as u64;
        let mut expired: Vec<String> = self
            .artifacts
            .records
            .values()
            .filter(|record| !pinned.contains(&record.digest))
            .filter(|record| {
                let file = touched.get(&record.digest).copied().unwrap_or(0);
                let last_use = record.last_used_ms.max(record.stored_ms).max(file);
                wall.saturating_sub(last_use) > ttl
            })
            .map(|record| record.digest.clone())
            .collect();
        expired.sort();
        for digest in &expired {
            self.artifacts.remove(digest);
        }
        Ok(Reply::Expired(expired))
    }

    /// Reconciles the index with the artifact files `on_disk` (digest,
    /// size) as a master starts. On a registry of its own, a record whose
    /// file is gone is dropped and a file without a record (stored just
    /// before a crash, before its record) is indexed with no owner:
    /// whoever uploaded it uploads it again to own it. On a registry
    /// masters share, the index is not this disk's: a record whose file is
    /// missing here stays (another master holds the bytes), and a file
    /// without a record (expired meanwhile) is answered for the shell to
    /// delete.
    /// Its changes are marked like an input's: the shell takes them with
    /// [`Core::take_writes`] into the commit it makes as it starts.
    pub fn reconcile_artifact_files(
        &mut self,
        on_disk: Vec<(String, u64)>,
        shared: bool,
        now: Time,
    ) -> FilesToRemove {
        let wall = self.wall(now);
        let mut unindexed = Vec::new();
        let mut present = HashSet::default();
        for (digest, size) in on_disk {
            if self.artifacts.records.contains_key(&digest) {
                present.insert(digest);
            } else {
                unindexed.push((digest, size));
            }
        }
        let mut remove = Vec::new();
        if shared {
            remove = unindexed.into_iter().map(|(digest, _)| digest).collect();
        } else {
            let gone: Vec<String> = self
                .artifacts
                .records
                .keys()
                .filter(|digest| !present.contains(*digest))
                .cloned()
                .collect();
            for digest in gone {
                self.artifacts.remove(&digest);
            }
            for (digest, size) in unindexed {
                self.artifacts.insert(v1::StoredArtifact {
                    digest,
                    size,
                    stored_ms: wall,
                    owners: Vec::new(),
                    last_used_ms: 0,
                });
            }
        }
        remove.sort();
        FilesToRemove(remove)
    }

    /// Is `digest` in the index (whoever may read it)?
    pub fn artifact_indexed(&self, digest: &str) -> bool {
        self.artifacts.records.contains_key(digest)
    }

    /// Every indexed digest: what a master's disk should hold.
    pub fn indexed_artifacts(&self) -> std::collections::HashSet<String> {
        self.artifacts.records.keys().cloned().collect()
    }

    /// May `who` read `digest`? Those who uploaded it may, and admins and
    /// read-only operators read all; an artifact nobody stored is no one's.
    pub fn artifact_readable(&self, who: &Principal, digest: &str) -> bool {
        self.artifacts
            .records
            .get(digest)
            .is_some_and(|a| who.sees_all() || a.owners.contains(&who.name))
    }

    /// Refuses `who` a task on an artifact (module or input) someone else
    /// uploaded. An artifact nobody stored passes: a task using it fails to
    /// fetch it, as it would for anyone.
    pub fn require_task_artifacts(
        &self,
        who: &Principal,
        spec: &v1::TaskSpec,
    ) -> Result<(), Denied> {
        if who.sees_all() {
            return Ok(());
        }
        std::iter::once(spec.artifact.as_str())
            .chain(spec.inputs.iter().map(|i| i.artifact.as_str()))
            .try_for_each(|digest| match self.artifacts.records.get(digest) {
                Some(a) if !a.owners.contains(&who.name) => Err(Denied(format!(
                    "artifact {digest} was not uploaded by {}; upload it yourself (the same bytes are stored once)",
                    who.describe()
                ))),
                _ => Ok(()),
            })
    }

    /// Refuses a task whose file inputs, at the sizes the index holds,
    /// pass its disk: inputs count against disk, and a task that cannot
    /// hold them is refused before an agent fetches a byte (tar inputs are
    /// checked by the agent as they unpack).
    pub fn check_input_bytes(&self, spec: &v1::TaskSpec) -> Result<(), CoreError> {
        let inputs = spec
            .inputs
            .iter()
            .filter(|i| i.kind() == v1::InputKind::File)
            .filter_map(|i| self.artifacts.records.get(&i.artifact).map(|a| a.size))
            .fold(0u64, u64::saturating_add);
        let disk = spec.resources.as_ref().map_or(0, |r| r.disk);
        if inputs > disk {
            return Err(CoreError::InvalidTask {
                task: spec.task_id.clone(),
                message: format!(
                    "its inputs are {inputs} bytes, more than its disk of {disk} bytes (inputs count against disk)"
                ),
            });
        }
        Ok(())
    }
}
