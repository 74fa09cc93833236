//! One job's indices: which wait, which run, how each ended.
//!
//! An array costs nothing per index until its indices start: what waits
//! is a counter (every index at or past it has never started) and a queue
//! of indices to run again; outcomes are kept in chunks of
//! [`CHUNK`] indices, each made when its first index starts, a few fixed
//! bytes per index (the agent is a number into the job's own list).

use std::collections::{BTreeSet, HashMap, VecDeque};

use wasmos_proto::v1::{self, IndexState};

/// Indices per chunk of outcomes in memory.
pub const CHUNK: u32 = 4096;

/// Indices per stored chunk: small, since a turn rewrites every stored
/// chunk one of whose indices changed (2.75 KiB each). Masters before
/// wrote chunks of 256: they read as they are, and are split into chunks
/// of this size the next time their job is written.
pub const STORED_CHUNK: u32 = 64;

/// Names per stored record of a job's agents (`StoredJobAgents`): a turn
/// rewrites the last one and those it filled, never the whole list.
pub const STORED_AGENTS: usize = 256;

/// Bytes per stored outcome (the layout is `StoredJobChunk.outcomes`').
const STORED_OUTCOME: usize = 44;

/// How one index stands: a few fixed fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub state: IndexState,
    /// The last attempt's final task state and reason (`v1` numbers).
    pub task_state: i32,
    pub reason: i32,
    pub exit_code: Option<i32>,
    /// Attempts started so far.
    pub attempts: u32,
    /// The last attempt's agent: 1 + its place in the job's list of
    /// agents; 0 before any attempt ended.
    pub agent: u32,
    pub cpu_time_ms: u64,
    pub wall_time_ms: u64,
    pub fuel: u64,
}

/// Counts by final state; the rest are pending or running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl Counts {
    pub fn ended(&self) -> u32 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// A job's indices.
#[derive(Debug)]
pub struct Indices {
    count: u32,
    /// Every index at or past this one has never been taken (unless the
    /// job's indices come in as they become ready: see `ready`).
    next_fresh: u32,
    /// Indices to run (again): retries, returned launches, and for a job
    /// that runs index i after another job's index i, those now ready.
    queue: VecDeque<u32>,
    /// Fresh indices come only through `queue` (index-wise dependencies).
    queued_only: bool,
    /// Running indices and their attempt.
    running: HashMap<u32, u32>,
    /// Every index from this one on in a chunk never made ended with this
    /// state at once (its job was told to stop): counted, not stored.
    unstarted_end: Option<(u32, IndexState)>,
    chunks: Vec<Option<Box<[Outcome]>>>,
    /// Agents of last attempts, numbered by first appearance (empty while
    /// the job's outcomes are unloaded).
    agents: Vec<String>,
    agent_numbers: HashMap<String, u32>,
    /// How many of `agents` the registry holds (`job_agents`).
    agents_written: usize,
    counts: Counts,
    /// Stored chunks (numbered from 0, of [`STORED_CHUNK`] indices) one of
    /// whose outcomes changed since they were last taken.
    dirty: BTreeSet<u32>,
    /// Stored chunks of ours that a larger chunk of an older master holds:
    /// written with the first of them that changes (it takes the larger
    /// chunk's key, so the rest must follow).
    split: BTreeSet<u32>,
}

impl Indices {
    /// `count` indices, all pending. With `queued_only`, none is taken
    /// until [`Indices::ready`] names it.
    pub fn new(count: u32, queued_only: bool) -> Indices {
        Indices {
            count,
            next_fresh: if queued_only { count } else { 0 },
            queue: VecDeque::new(),
            queued_only,
            running: HashMap::new(),
            unstarted_end: None,
            chunks: (0..count.div_ceil(CHUNK)).map(|_| None).collect(),
            agents: Vec::new(),
            agent_numbers: HashMap::new(),
            agents_written: 0,
            counts: Counts::default(),
            dirty: BTreeSet::new(),
            split: BTreeSet::new(),
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// The attempt of index `index` now running, if it runs.
    pub fn running_attempt(&self, index: u32) -> Option<u32> {
        self.running.get(&index).copied()
    }

    /// Running indices and their attempts.
    pub fn running_attempts(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.running.iter().map(|(i, a)| (*i, *a))
    }

    /// Is an index waiting to be taken?
    pub fn has_pending(&self) -> bool {
        !self.queue.is_empty() || self.next_fresh < self.count
    }

    /// Every index has a final outcome.
    pub fn all_ended(&self) -> bool {
        self.counts.ended() == self.count
    }

    /// Makes index `index` takeable (its index-wise dependency succeeded).
    pub fn ready(&mut self, index: u32) {
        debug_assert!(self.queued_only);
        if index < self.count && self.outcome(index).state == IndexState::Pending {
            self.queue.push_back(index);
        }
    }

    /// Takes up to `n` indices to start, retries first, each with its
    /// attempt number (counted as started).
    pub fn take(&mut self, n: usize) -> Vec<(u32, u32)> {
        let mut taken = Vec::with_capacity(n.min(self.count as usize));
        while taken.len() < n {
            let index = match self.queue.pop_front() {
                Some(index) => index,
                None if self.next_fresh < self.count => {
                    self.next_fresh += 1;
                    self.next_fresh - 1
                }
                None => break,
            };
            if self.outcome(index).state != IndexState::Pending {
                continue; // queued twice (ready, then retried), or settled
            }
            // Written with the turn: a master that restarts finds the
            // attempt used, whether or not its launch got out.
            let outcome = self.changed(index);
            outcome.attempts += 1;
            outcome.state = IndexState::Running;
            let attempt = outcome.attempts;
            self.running.insert(index, attempt);
            taken.push((index, attempt));
        }
        taken
    }

    /// Takes up attempt `attempt` of a waiting index that runs without the
    /// job having taken it: its launch reached an agent in a turn whose
    /// commit a crash lost, and the agent brought the task back to the
    /// restarted master (which adopted it). The index runs that attempt,
    /// so no other starts beside it. False if the index is not waiting or
    /// had that attempt already (a late update of an older attempt).
    pub fn adopt(&mut self, index: u32, attempt: u32) -> bool {
        if index >= self.count || self.running.contains_key(&index) {
            return false;
        }
        let known = self.outcome(index);
        if known.state != IndexState::Pending || attempt <= known.attempts {
            return false;
        }
        // Left in the queue (or past `next_fresh`) if it is there: `take`
        // skips an index that no longer waits.
        let outcome = self.changed(index);
        outcome.attempts = attempt;
        outcome.state = IndexState::Running;
        self.running.insert(index, attempt);
        true
    }

    /// Puts back an index whose launch never happened (its offers went
    /// away): it waits again, under the same attempt number next time.
    /// False if that attempt was not running (it ended meanwhile).
    pub fn untake(&mut self, index: u32, attempt: u32) -> bool {
        if self.running.get(&index) != Some(&attempt) {
            return false;
        }
        self.running.remove(&index);
        let outcome = self.outcome_mut(index);
        outcome.attempts -= 1;
        outcome.state = IndexState::Pending;
        self.queue.push_front(index);
        true
    }

    /// Records how attempt `attempt` of `index` ended, and where that
    /// leaves the index: `Pending` puts it back in the queue (a retry), any
    /// other state is its final outcome. False when that attempt is not
    /// the one running (a duplicate, an older attempt): nothing changes.
    pub fn end(
        &mut self,
        index: u32,
        attempt: u32,
        status: &v1::TaskStatus,
        outcome: IndexState,
    ) -> bool {
        if self.running.get(&index) != Some(&attempt) {
            return false;
        }
        self.running.remove(&index);
        let agent = self.agent_number(&status.agent_id);
        let usage = status.usage.unwrap_or_default();
        let kept = self.changed(index);
        kept.state = outcome;
        kept.task_state = status.state;
        kept.reason = status.reason;
        kept.exit_code = status.exit_code;
        kept.agent = agent;
        kept.cpu_time_ms = usage.cpu_time_ms;
        kept.wall_time_ms = usage.wall_time_ms;
        kept.fuel = usage.fuel_consumed;
        match outcome {
            IndexState::Pending => self.queue.push_back(index),
            IndexState::Running => unreachable!("an ended attempt does not run"),
            state => self.count_final(state),
        }
        true
    }

    /// Ends an index that will not run (again) with `state` (`Failed` or
    /// `Cancelled`): what waits, not what runs.
    pub fn settle(&mut self, index: u32, state: IndexState) {
        if self.outcome(index).state != IndexState::Pending {
            return;
        }
        self.queue.retain(|&i| i != index);
        self.changed(index).state = state;
        self.count_final(state);
    }

    /// Ends every waiting index with `state`; the running ones stay.
    /// Indices in chunks never made stay unmade: a cancelled array of a
    /// million costs no more than a counter.
    pub fn settle_pending(&mut self, state: IndexState) {
        let waiting: Vec<u32> = self.queue.drain(..).collect();
        for index in waiting {
            if self.outcome(index).state == IndexState::Pending {
                self.changed(index).state = state;
                self.count_final(state);
            }
        }
        let from = if self.queued_only { 0 } else { self.next_fresh };
        self.next_fresh = self.count;
        let mut settled = 0;
        let mut unmade = 0;
        for (c, chunk) in self.chunks.iter_mut().enumerate() {
            let first = c as u32 * CHUNK;
            let end = (first + CHUNK).min(self.count);
            match chunk {
                Some(chunk) => {
                    for index in first.max(from)..end {
                        let outcome = &mut chunk[(index - first) as usize];
                        if outcome.state == IndexState::Pending {
                            outcome.state = state;
                            self.dirty.insert(index / STORED_CHUNK);
                            settled += 1;
                        }
                    }
                }
                None => unmade += end.saturating_sub(first.max(from)),
            }
        }
        for _ in 0..settled + unmade {
            self.count_final(state);
        }
        if unmade > 0 {
            self.unstarted_end = Some((from, state));
        }
    }

    /// Puts every index that failed (or was cancelled, with `cancelled`)
    /// and that `may` allows back in the queue, to run as a new attempt;
    /// how many.
    pub fn reopen(&mut self, cancelled: bool, may: impl Fn(u32) -> bool) -> u32 {
        let again = |state: IndexState| {
            state == IndexState::Failed || (cancelled && state == IndexState::Cancelled)
        };
        let unstarted = self.unstarted_end;
        let mut reopened = 0;
        for c in 0..self.chunks.len() {
            let first = c as u32 * CHUNK;
            let end = (first + CHUNK).min(self.count);
            let made = self.chunks[c].is_some();
            if !made {
                // All of it ended at once, or none of it: reopened whole
                // (made now) or left unmade. An index-wise dependent's wait
                // for their counterparts instead.
                match unstarted {
                    Some((from, state)) if again(state) && !self.queued_only && end > from => {}
                    _ => continue,
                }
            }
            for index in first..end {
                // Read before the chunk is made (it reads as pending after).
                let state = match unstarted {
                    Some((from, state)) if !made && index >= from => state,
                    _ => self.outcome(index).state,
                };
                if !again(state) || !may(index) {
                    continue;
                }
                match state {
                    IndexState::Cancelled => self.counts.cancelled -= 1,
                    _ => self.counts.failed -= 1,
                }
                self.changed(index).state = IndexState::Pending;
                self.queue.push_back(index);
                reopened += 1;
            }
        }
        // Every unmade index of that end was made and reopened above.
        if let Some((_, state)) = self.unstarted_end
            && again(state)
            && !self.queued_only
        {
            self.unstarted_end = None;
        }
        reopened
    }

    fn count_final(&mut self, state: IndexState) {
        match state {
            IndexState::Succeeded => self.counts.succeeded += 1,
            IndexState::Failed => self.counts.failed += 1,
            IndexState::Cancelled => self.counts.cancelled += 1,
            IndexState::Pending | IndexState::Running => {}
        }
    }

    /// Drops every index's outcome (the counts stay): an ended job past
    /// its retention.
    pub fn forget_outcomes(&mut self) {
        self.chunks.iter_mut().for_each(|chunk| *chunk = None);
        self.chunks.shrink_to_fit();
        self.agents = Vec::new();
        self.agent_numbers = HashMap::new();
        self.agents_written = 0;
        self.queue = VecDeque::new();
        self.running = HashMap::new();
    }

    /// Drops every index's outcome and the list of agents from memory, the
    /// counts kept: the registry holds them, and [`Indices::restore`] and
    /// [`Indices::restore_agents`] read them back. Only for indices that
    /// all ended and were all written. Names not yet written (an older
    /// master's record held them) stay until they are.
    pub fn unload(&mut self) {
        debug_assert!(self.running.is_empty() && self.dirty.is_empty());
        if self.agents_written == self.agents.len() {
            self.agents = Vec::new();
            self.agent_numbers = HashMap::new();
            self.agents_written = 0;
        }
        self.chunks.iter_mut().for_each(|chunk| *chunk = None);
        self.queue = VecDeque::new();
        self.running = HashMap::new();
    }

    /// Outcomes held in memory (whole chunks, made as their first index
    /// starts).
    pub fn outcomes_in_memory(&self) -> u64 {
        self.chunks.iter().filter(|c| c.is_some()).count() as u64 * u64::from(CHUNK)
    }

    /// Were outcomes changed since they were last taken?
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Every index's outcome, in index order (those never started are
    /// skipped with their chunk).
    pub fn outcomes(&self) -> impl Iterator<Item = (u32, &Outcome)> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .filter_map(|(c, chunk)| Some((c, chunk.as_ref()?)))
            .flat_map(|(c, chunk)| {
                chunk
                    .iter()
                    .enumerate()
                    .map(move |(i, o)| (c as u32 * CHUNK + i as u32, o))
            })
            .filter(|(index, _)| *index < self.count)
    }

    /// How index `index` stands.
    pub fn outcome(&self, index: u32) -> Outcome {
        let chunk = self
            .chunks
            .get((index / CHUNK) as usize)
            .and_then(|chunk| chunk.as_ref());
        match (chunk, self.unstarted_end) {
            (Some(chunk), _) => chunk[(index % CHUNK) as usize],
            (None, Some((from, state))) if index >= from => Outcome {
                state,
                ..Outcome::default()
            },
            (None, _) => Outcome::default(),
        }
    }

    /// The agent an outcome names.
    pub fn agent(&self, outcome: &Outcome) -> &str {
        (outcome.agent as usize)
            .checked_sub(1)
            .and_then(|i| self.agents.get(i))
            .map_or("", String::as_str)
    }

    /// An outcome about to change: its stored chunk is written with the
    /// turn.
    fn changed(&mut self, index: u32) -> &mut Outcome {
        self.dirty.insert(index / STORED_CHUNK);
        self.outcome_mut(index)
    }

    fn outcome_mut(&mut self, index: u32) -> &mut Outcome {
        let chunk = &mut self.chunks[(index / CHUNK) as usize];
        let chunk = chunk
            .get_or_insert_with(|| vec![Outcome::default(); CHUNK as usize].into_boxed_slice());
        &mut chunk[(index % CHUNK) as usize]
    }

    fn agent_number(&mut self, agent: &str) -> u32 {
        if let Some(&number) = self.agent_numbers.get(agent) {
            return number;
        }
        self.agents.push(agent.to_string());
        let number = self.agents.len() as u32;
        self.agent_numbers.insert(agent.to_string(), number);
        number
    }
}

/// What a job's record keeps of its indices (the rest is in its chunks,
/// its agents in records of their own).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Kept {
    pub next_fresh: u32,
    pub unstarted_end: Option<(u32, IndexState)>,
    pub counts: Counts,
}

impl Indices {
    /// What the job's record keeps of them.
    pub fn kept(&self) -> Kept {
        Kept {
            next_fresh: self.next_fresh,
            unstarted_end: self.unstarted_end,
            counts: self.counts,
        }
    }

    /// The names added to the list of agents since the last call, as
    /// stored records: (first place, names), the last record written
    /// before rewritten whole with the names that joined it.
    pub fn take_new_agents(&mut self) -> Vec<(u32, Vec<String>)> {
        let len = self.agents.len();
        if self.agents_written >= len {
            return Vec::new();
        }
        let from = self.agents_written / STORED_AGENTS * STORED_AGENTS;
        self.agents_written = len;
        (from..len)
            .step_by(STORED_AGENTS)
            .map(|first| {
                let end = (first + STORED_AGENTS).min(len);
                (first as u32, self.agents[first..end].to_vec())
            })
            .collect()
    }

    /// Takes back the job's list of agents as read: `written` of them are
    /// in the registry's records of agents (the rest are written with the
    /// next turn).
    pub fn restore_agents(&mut self, names: Vec<String>, written: usize) {
        self.agent_numbers = names
            .iter()
            .enumerate()
            .map(|(i, agent)| (agent.clone(), i as u32 + 1))
            .collect();
        self.agents_written = written.min(names.len());
        self.agents = names;
    }

    /// The job's list of agents and how many of them the registry holds,
    /// taken out (for [`Indices::restore_agents`] of indices rebuilt).
    pub fn take_agents(&mut self) -> (Vec<String>, usize) {
        self.agent_numbers = HashMap::new();
        let written = std::mem::take(&mut self.agents_written);
        (std::mem::take(&mut self.agents), written)
    }

    /// The stored chunks changed since the last call: each one's first
    /// index and its outcomes' bytes.
    pub fn take_changed_chunks(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut changed = std::mem::take(&mut self.dirty);
        if !changed.is_empty() {
            changed.append(&mut self.split);
        }
        changed
            .into_iter()
            .map(|stored| {
                let first = stored * STORED_CHUNK;
                let end = (first + STORED_CHUNK).min(self.count);
                let mut bytes = Vec::with_capacity((end - first) as usize * STORED_OUTCOME);
                for index in first..end {
                    encode(&self.outcome(index), &mut bytes);
                }
                (first, bytes)
            })
            .collect()
    }

    /// `count` indices as their job's record kept them and its stored
    /// chunks (`(first index, bytes)`) say, with `running` (index and
    /// attempt, from the tasks the master knows) running again. What
    /// waits is queued again; `ready` says which indices of a job that
    /// runs index i after another's index i may start.
    pub fn restore(
        count: u32,
        queued_only: bool,
        kept: Kept,
        chunks: Vec<(u32, Vec<u8>)>,
        running: &[(u32, u32)],
        ready: impl Fn(u32) -> bool,
    ) -> Result<Indices, String> {
        let mut indices = Indices::new(count, queued_only);
        indices.next_fresh = kept.next_fresh.min(count);
        indices.unstarted_end = kept.unstarted_end;
        indices.counts = kept.counts;
        let mut split = BTreeSet::new();
        for (first, bytes) in chunks {
            if bytes.len() % STORED_OUTCOME != 0 || first % STORED_CHUNK != 0 {
                return Err(format!(
                    "its chunk at index {first} holds {} bytes, not whole outcomes",
                    bytes.len()
                ));
            }
            for (i, record) in bytes.chunks_exact(STORED_OUTCOME).enumerate() {
                let index = first + i as u32;
                if index >= count {
                    break;
                }
                *indices.outcome_mut(index) = decode(record);
            }
            let held = (bytes.len() / STORED_OUTCOME) as u32;
            if held > STORED_CHUNK {
                let end = (first + held).min(count);
                split.extend((first / STORED_CHUNK)..end.div_ceil(STORED_CHUNK));
            }
        }
        for &(index, attempt) in running {
            if index >= count || is_final(indices.outcome(index).state) {
                continue;
            }
            let outcome = indices.outcome_mut(index);
            outcome.state = IndexState::Running;
            outcome.attempts = outcome.attempts.max(attempt);
            indices.running.insert(index, attempt);
        }
        if indices.all_ended() {
            // Nothing waits (and an ended job read without its chunks
            // reads as all pending).
            indices.next_fresh = count;
            indices.dirty.clear();
            indices.split = split;
            return Ok(indices);
        }
        indices.split = split;
        // What waits: taken before (below the counter, or made ready) and
        // neither running nor ended. An attempt written as taken whose task
        // the master does not know runs on under its attempt: its launch may
        // have reached its agent, which adopts it when it comes back;
        // reconciliation answers it LOST otherwise (then retried per the
        // job's policy), so no next attempt starts beside it.
        let below = if queued_only {
            count
        } else {
            indices.next_fresh
        };
        for c in 0..indices.chunks.len() {
            if indices.chunks[c].is_none() {
                continue;
            }
            let first = c as u32 * CHUNK;
            for index in first..(first + CHUNK).min(below) {
                if indices.running.contains_key(&index) {
                    continue;
                }
                let outcome = indices.outcome(index);
                if outcome.state == IndexState::Running {
                    indices.running.insert(index, outcome.attempts);
                } else if outcome.state == IndexState::Pending && (!queued_only || ready(index)) {
                    indices.queue.push_back(index);
                }
            }
        }
        // Taken, never written, no task: as if never taken.
        if !queued_only {
            let unwritten = (0..below).filter(|&i| {
                indices.chunks[(i / CHUNK) as usize].is_none() && !indices.running.contains_key(&i)
            });
            indices.queue.extend(unwritten);
        } else {
            let unwritten: Vec<u32> = (0..count)
                .filter(|&i| indices.chunks[(i / CHUNK) as usize].is_none())
                .filter(|&i| !indices.running.contains_key(&i) && ready(i))
                .filter(|&i| indices.outcome(i).state == IndexState::Pending)
                .collect();
            indices.queue.extend(unwritten);
        }
        indices.dirty.clear();
        Ok(indices)
    }
}

/// An index's final states.
fn is_final(state: IndexState) -> bool {
    matches!(
        state,
        IndexState::Succeeded | IndexState::Failed | IndexState::Cancelled
    )
}

/// Appends `outcome`'s 44 bytes (`StoredJobChunk.outcomes`).
fn encode(outcome: &Outcome, bytes: &mut Vec<u8>) {
    bytes.push(outcome.state as u8);
    bytes.push(outcome.task_state as u8);
    bytes.extend_from_slice(&(outcome.reason as u16).to_le_bytes());
    bytes.extend_from_slice(&outcome.exit_code.unwrap_or(0).to_le_bytes());
    bytes.extend_from_slice(&[u8::from(outcome.exit_code.is_some()), 0, 0, 0]);
    bytes.extend_from_slice(&outcome.attempts.to_le_bytes());
    bytes.extend_from_slice(&outcome.agent.to_le_bytes());
    bytes.extend_from_slice(&outcome.cpu_time_ms.to_le_bytes());
    bytes.extend_from_slice(&outcome.wall_time_ms.to_le_bytes());
    bytes.extend_from_slice(&outcome.fuel.to_le_bytes());
}

/// One stored outcome (44 bytes).
fn decode(record: &[u8]) -> Outcome {
    let u32_at = |at: usize| u32::from_le_bytes(record[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().expect("8 bytes"));
    Outcome {
        state: IndexState::try_from(i32::from(record[0])).unwrap_or(IndexState::Pending),
        task_state: i32::from(record[1]),
        reason: i32::from(u16::from_le_bytes([record[2], record[3]])),
        exit_code: (record[8] != 0).then(|| u32_at(4) as i32),
        attempts: u32_at(12),
        agent: u32_at(16),
        cpu_time_ms: u64_at(20),
        wall_time_ms: u64_at(28),
        fuel: u64_at(36),
    }
}
