//! Jobs written to a real (in-memory) store and rebuilt from it, as a
//! restarted master rebuilds them: what was written comes back, what ran
//! runs on, and what was taken but never written is not lost.

use super::tests::{ended, finish, job_spec, place, run_out, submit};
use super::*;
use crate::store::{MemoryStore, Record, Store, Table};

/// Commits what changed to `store`.
fn write(jobs: &mut Jobs, store: &MemoryStore) {
    store.commit(&jobs.writes()).expect("committed");
}

/// The jobs a master of start `epoch` rebuilds from `store`, with `tasks`
/// known to its core.
fn restart(store: &MemoryStore, epoch: u64, tasks: &[String]) -> Jobs {
    let records = store.load().expect("loads").take_jobs();
    let (jobs, notes) = Jobs::restore(epoch, records, |job| Ok(stored_outcomes(store, job)), tasks);
    assert!(notes.is_empty(), "{notes:?}");
    jobs
}

/// The task ids placed on one agent of `cpus` cores, sorted.
fn placed(jobs: &mut Jobs, cpus: f64) -> Vec<String> {
    let mut ids: Vec<String> = place(jobs, cpus).into_iter().map(|t| t.task_id).collect();
    ids.sort();
    ids
}

fn outcomes(jobs: &Jobs, id: &str) -> Vec<indices::Outcome> {
    let job = jobs.job(id).expect("known");
    (0..job.indices.count())
        .map(|i| job.indices.outcome(i))
        .collect()
}

#[test]
fn a_restarted_master_finds_every_job_as_written_and_what_ran_runs_on() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let mut spec = job_spec(600);
    spec.idempotency_key = "k".into();
    let id = submit(&mut jobs, spec.clone());
    // 300 start; 290 finish, one fails (retried), 9 still run.
    let mut tasks = Vec::new();
    while tasks.len() < 300 {
        tasks.extend(place(&mut jobs, (300 - tasks.len()) as f64));
    }
    for task in &tasks[..290] {
        jobs.update(&finish(task), Time(5));
    }
    let failed = super::tests::ended(&tasks[290].task_id, v1::TaskState::Lost, None);
    jobs.update(&failed, Time(5));
    write(&mut jobs, &store);
    let running: Vec<String> = tasks[291..].iter().map(|t| t.task_id.clone()).collect();

    let mut again = restart(&store, 2, &running);
    assert_eq!(outcomes(&again, &id), outcomes(&jobs, &id));
    let job = again.job(&id).expect("restored");
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.indices.counts().succeeded, 290);
    assert_eq!(job.indices.running(), 9);
    // Ids of an earlier start still name their jobs, keys still match,
    // and a new job gets an id of this start.
    assert_eq!(
        again
            .by_key(&super::tests::alice(), "k")
            .map(|j| j.id.clone()),
        Some(id.clone())
    );
    assert_eq!(submit(&mut again, job_spec(1)), "j2.1");

    // What ran finishes; the rest starts, the lost index as its second
    // attempt, and nothing that finished runs again.
    for task in &tasks[291..] {
        again.update(&finish(task), Time(6));
    }
    let mut started = Vec::new();
    run_out(&mut again, 1000.0, |task| {
        started.push(task.task_id.clone());
        finish(task)
    });
    let job = again.job(&id).expect("known");
    assert_eq!(job.state, JobState::Succeeded);
    assert!(started.contains(&format!("{id}-290-2")), "{started:?}");
    let fresh = started
        .iter()
        .filter(|t| t.starts_with(&format!("{id}-")))
        .count();
    assert_eq!(fresh, 1 + 300, "the lost index and the 300 never started");
}

/// What reconciliation answers for a task the master does not know.
fn unknown(task: &str) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task.into(),
        state: v1::TaskState::Lost as i32,
        reason: v1::Reason::TaskUnknown as i32,
        ..Default::default()
    }
}

#[test]
fn an_attempt_written_as_taken_whose_task_the_master_does_not_know_runs_on_until_found_lost() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(3));
    assert_eq!(place(&mut jobs, 2.0).len(), 2);
    write(&mut jobs, &store);
    // The launches' commit never happened: the core knows no task. Their
    // launches may yet be adopted from their agent: no next attempt
    // starts beside them, they are reconciled.
    let mut again = restart(&store, 2, &[]);
    let mut running = again.running_tasks(&super::tests::alice());
    running.sort();
    assert_eq!(running, [format!("{id}-0-1"), format!("{id}-1-1")]);
    assert_eq!(placed(&mut again, 3.0), [format!("{id}-2-1")]);
    // Reconciliation finds them lost: retried per the policy.
    for task in &running {
        again.update(&unknown(task), Time(5));
    }
    assert_eq!(
        placed(&mut again, 3.0),
        [format!("{id}-0-2"), format!("{id}-1-2")]
    );
}

#[test]
fn indices_taken_after_the_last_write_start_again_under_a_new_attempt_or_run_on() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(4));
    write(&mut jobs, &store);
    // Taken and launched, but the job's write did not happen.
    let tasks = place(&mut jobs, 2.0);
    let running = vec![tasks[0].task_id.clone()];
    let mut again = restart(&store, 2, &running);
    assert_eq!(again.job(&id).unwrap().indices.running(), 1);
    assert_eq!(
        placed(&mut again, 4.0),
        [
            format!("{id}-1-1"),
            format!("{id}-2-1"),
            format!("{id}-3-1")
        ]
    );
}

#[test]
fn a_job_told_to_stop_kills_again_at_restart_and_ends_once_nothing_of_it_runs() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(10));
    place(&mut jobs, 2.0);
    let effects = jobs.cancel(&id, "by alice", Time(3)).expect("known");
    assert!(matches!(&effects[..], [Effect::Kill { .. }]));
    write(&mut jobs, &store);
    // The kills landed while the master was down: no task is left. The
    // kills go again; reconciliation finds the tasks gone.
    let mut again = restart(&store, 2, &[]);
    let effects = again.resume(Time(4));
    let [Effect::Kill { task_ids, .. }] = &effects[..] else {
        panic!("{effects:?}")
    };
    let mut effects = Vec::new();
    for task in task_ids {
        effects.extend(again.update(&unknown(task), Time(5)));
    }
    assert_eq!(
        effects,
        [Effect::Ended {
            job: id.clone(),
            state: JobState::Cancelled
        }]
    );
    let counts = again.job(&id).unwrap().indices.counts();
    assert_eq!(counts.cancelled, 10);
}

#[test]
fn a_job_past_its_retention_loses_its_stored_chunks_and_keeps_its_summary() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(1000));
    run_out(&mut jobs, 100.0, finish);
    write(&mut jobs, &store);
    let (from, to) = persist::chunk_range(&id);
    let stored = |store: &MemoryStore| {
        store
            .range(Table::JobChunks, &from, to.as_deref(), usize::MAX)
            .unwrap()
            .len()
    };
    assert_eq!(stored(&store), 16, "1,000 indices in chunks of 64");
    let ended = jobs.job(&id).unwrap().ended_at.unwrap();
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(jobs.expire(Time(ended.millis() + 86_400_000), day), 1);
    assert_eq!(jobs.take_forgotten_outputs(), std::slice::from_ref(&id));
    write(&mut jobs, &store);
    assert_eq!(stored(&store), 0);
    let mut again = restart(&store, 2, &[]);
    let job = again.job(&id).expect("its summary stays");
    assert!(job.expired);
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.indices.counts().succeeded, 1000);

    // The master stopped before its stdout heads and agent records were
    // deleted: the restarted one lists the job for deleting again, until
    // its record says they are gone.
    assert_eq!(again.take_forgotten_outputs(), std::slice::from_ref(&id));
    write(&mut again, &store);
    let mut third = restart(&store, 3, &[]);
    assert_eq!(third.take_forgotten_outputs(), std::slice::from_ref(&id));
    third.outputs_swept(&id);
    write(&mut third, &store);
    let mut fourth = restart(&store, 4, &[]);
    assert!(fourth.job(&id).unwrap().outputs_swept);
    assert!(fourth.take_forgotten_outputs().is_empty());
}

#[test]
fn only_an_expired_job_is_marked_swept() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(10));
    run_out(&mut jobs, 100.0, finish);
    jobs.outputs_swept(&id);
    jobs.outputs_swept("j-not-a-job");
    write(&mut jobs, &store);
    let mut again = restart(&store, 2, &[]);
    assert!(!again.job(&id).unwrap().outputs_swept);
    assert!(again.take_forgotten_outputs().is_empty());
}

#[test]
fn a_job_that_runs_after_each_index_of_another_is_rebuilt_with_what_is_ready() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let first = submit(&mut jobs, job_spec(4));
    let mut spec = job_spec(4);
    spec.after_each = first.clone();
    let second = submit(&mut jobs, spec);
    // Index 0 and 1 of the first finish: those of the second may start.
    let tasks = place(&mut jobs, 2.0);
    for task in &tasks {
        jobs.update(&finish(task), Time(2));
    }
    write(&mut jobs, &store);
    let mut again = restart(&store, 2, &[]);
    assert_eq!(
        placed(&mut again, 10.0),
        [
            format!("{first}-2-1"),
            format!("{first}-3-1"),
            format!("{second}-0-1"),
            format!("{second}-1-1"),
        ]
    );
}

#[test]
fn an_ended_job_keeps_its_outcomes_in_the_store_until_they_are_asked_for() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(700));
    run_out(&mut jobs, 50.0, finish);
    let before = outcomes(&jobs, &id);
    write(&mut jobs, &store);
    assert!(jobs.unloaded(&id), "written, they leave memory");
    assert_eq!(jobs.job(&id).unwrap().indices.counts().succeeded, 700);
    jobs.load(&id, stored_outcomes(&store, &id)).expect("loads");
    assert_eq!(outcomes(&jobs, &id), before);

    let mut again = restart(&store, 2, &[]);
    assert!(again.unloaded(&id), "not read at start");
    let job = again.job(&id).unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.indices.counts().succeeded, 700);
    assert!(!job.indices.has_pending(), "nothing of an ended job waits");
    again
        .load(&id, stored_outcomes(&store, &id))
        .expect("loads");
    assert!(!again.unloaded(&id));
    assert_eq!(outcomes(&again, &id), before);
    assert!(again.writes().is_empty(), "reading writes nothing");
}

#[test]
fn ended_jobs_read_stay_in_memory_within_a_bound_least_recently_read_first() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let ids: Vec<String> = (0..3).map(|_| submit(&mut jobs, job_spec(300))).collect();
    run_out(&mut jobs, 50.0, finish);
    write(&mut jobs, &store);
    for id in &ids {
        assert!(jobs.unloaded(id));
        jobs.load(id, stored_outcomes(&store, id)).expect("loads");
    }
    // Each holds one chunk of outcomes in memory; room for two: the
    // first read goes.
    let chunk = u64::from(indices::CHUNK);
    assert_eq!(
        jobs.job(&ids[0]).unwrap().indices.outcomes_in_memory(),
        chunk
    );
    jobs.unload_read_beyond(2 * chunk);
    assert!(jobs.unloaded(&ids[0]));
    assert!(!jobs.unloaded(&ids[1]) && !jobs.unloaded(&ids[2]));
    // Read again, it is the newest; the next oldest goes.
    jobs.load(&ids[0], stored_outcomes(&store, &ids[0]))
        .expect("loads");
    jobs.unload_read_beyond(2 * chunk);
    assert!(jobs.unloaded(&ids[1]));
    assert!(!jobs.unloaded(&ids[0]) && !jobs.unloaded(&ids[2]));
    // The newest stays however big.
    jobs.unload_read_beyond(0);
    assert!(!jobs.unloaded(&ids[0]), "the newest read stays");
    assert!(jobs.unloaded(&ids[2]));
    assert_eq!(jobs.job(&ids[2]).unwrap().indices.counts().succeeded, 300);
}

#[test]
fn an_ended_dependent_out_of_memory_is_not_rewritten_when_its_counterpart_runs_again() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let first = submit(&mut jobs, job_spec(4));
    let mut each = job_spec(4);
    each.after_each = first.clone();
    let second = submit(&mut jobs, each);
    // Index 3 of the first job fails; the rest of both succeed.
    run_out(&mut jobs, 50.0, |task| {
        if task.task_id.starts_with(&format!("{first}-3-")) {
            ended(&task.task_id, v1::TaskState::Failed, Some(1))
        } else {
            finish(task)
        }
    });
    write(&mut jobs, &store);
    assert!(jobs.unloaded(&second), "ended and written");
    let before = stored_chunks(&store, &second);
    let counts = jobs.job(&second).unwrap().indices.counts();
    assert_eq!((counts.succeeded, counts.failed), (3, 1));

    // The first job runs its failed index again, and it fails again.
    jobs.load(&first, stored_outcomes(&store, &first))
        .expect("loads");
    assert_eq!(jobs.retry_failed(&first, false), Some(1));
    run_out(&mut jobs, 50.0, |task| {
        ended(&task.task_id, v1::TaskState::Failed, Some(1))
    });
    assert_eq!(jobs.job(&first).unwrap().state, JobState::Failed);
    write(&mut jobs, &store);
    assert_eq!(stored_chunks(&store, &second), before, "what ended stays");
    assert_eq!(jobs.job(&second).unwrap().indices.counts(), counts);
}

/// What the registry holds of job `id` beside its record: chunks and
/// records of agents.
fn stored_outcomes(store: &MemoryStore, id: &str) -> persist::StoredOutcomes {
    persist::read_outcomes(store, id).expect("read")
}

/// The stored chunks of job `id`.
fn stored_chunks(store: &MemoryStore, id: &str) -> Vec<v1::StoredJobChunk> {
    stored_outcomes(store, id).chunks
}

#[test]
fn stdout_heads_are_kept_per_index_within_the_jobs_share() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(3));
    let head = vec![b'x'; 4096];
    let mut n = 0;
    run_out(&mut jobs, 10.0, |task| {
        let mut status = finish(task);
        status.stdout_head = head.clone();
        n += 1;
        status
    });
    assert_eq!(n, 3);
    write(&mut jobs, &store);
    let (from, to) = persist::chunk_range(&id);
    let kept = store
        .range(Table::JobOutputs, &from, to.as_deref(), 10)
        .unwrap();
    assert_eq!(kept.len(), 3);
    let Record::JobOutput(first) = &kept[0] else {
        panic!("{kept:?}")
    };
    assert_eq!(
        (first.index, first.attempt, first.stdout_head.len()),
        (0, 1, 4096)
    );
    assert_eq!(jobs.job(&id).unwrap().output_bytes, 3 * 4096);

    // Past the share, successes' heads are dropped and counted.
    let big = submit(&mut jobs, job_spec(2));
    jobs.jobs
        .get_mut(&submit::parse_job_id(&big).unwrap())
        .unwrap()
        .output_bytes = submit::MAX_OUTPUT_BYTES_PER_JOB;
    run_out(&mut jobs, 10.0, |task| {
        let mut status = finish(task);
        status.stdout_head = b"more".to_vec();
        status
    });
    assert_eq!(jobs.job(&big).unwrap().outputs_dropped, 2);
    write(&mut jobs, &store);
    let again = restart(&store, 2, &[]);
    assert_eq!(
        again.job(&big).unwrap().outputs_dropped,
        2,
        "kept in its record"
    );
}

/// The records `writes` puts of one kind.
fn puts(writes: &[crate::store::Write], table: Table) -> Vec<Record> {
    writes
        .iter()
        .filter_map(|w| match w {
            crate::store::Write::Put(r) if r.table() == table => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_jobs_spec_is_written_once_and_its_record_without_it() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let mut spec = job_spec(20);
    spec.task.as_mut().unwrap().args = vec!["x".repeat(4096)];
    let id = submit(&mut jobs, spec);
    let first = jobs.writes();
    let specs = puts(&first, Table::JobSpecs);
    assert_eq!(specs.len(), 1);
    let Record::Job(record) = &puts(&first, Table::Jobs)[0] else {
        unreachable!()
    };
    assert!(record.spec.is_none(), "the record a turn rewrites is small");
    let len = prost::Message::encoded_len(&**record);
    assert!(len < 512, "{len}");
    store.commit(&first).unwrap();
    // Turns that change the job rewrite its record, never its spec.
    let tasks = place(&mut jobs, 20.0);
    for task in &tasks[..10] {
        jobs.update(&finish(task), Time(5));
    }
    let later = jobs.writes();
    assert_eq!(puts(&later, Table::Jobs).len(), 1);
    assert!(puts(&later, Table::JobSpecs).is_empty());
    store.commit(&later).unwrap();
    let running: Vec<String> = tasks[10..].iter().map(|t| t.task_id.clone()).collect();
    let again = restart(&store, 2, &running);
    assert_eq!(again.job(&id).unwrap().spec, jobs.job(&id).unwrap().spec);
}

#[test]
fn a_record_that_holds_its_spec_as_older_masters_wrote_it_restores_and_moves_it_out() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(20));
    let writes = jobs.writes();
    // As a master before `job_specs` wrote it: the spec in the record.
    let Record::Job(mut old) = puts(&writes, Table::Jobs)[0].clone() else {
        unreachable!()
    };
    old.spec = Some(jobs.job(&id).unwrap().spec.clone());
    store
        .commit(&[crate::store::Write::Put(Record::Job(old))])
        .unwrap();
    let mut again = restart(&store, 2, &[]);
    assert_eq!(again.job(&id).unwrap().spec, jobs.job(&id).unwrap().spec);
    // Its next record goes without the spec, which goes to `job_specs`
    // in the same commit.
    let tasks = place(&mut again, 1.0);
    again.update(&finish(&tasks[0]), Time(5));
    let next = again.writes();
    assert_eq!(puts(&next, Table::JobSpecs).len(), 1);
    let Record::Job(record) = &puts(&next, Table::Jobs)[0] else {
        unreachable!()
    };
    assert!(record.spec.is_none());
    store.commit(&next).unwrap();
    let third = restart(&store, 3, &[]);
    assert_eq!(third.job(&id).unwrap().spec, jobs.job(&id).unwrap().spec);
}

#[test]
fn chunks_of_256_indices_as_older_masters_wrote_them_read_and_are_split_at_the_next_write() {
    use crate::store::{Write, chunk_key};
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(600));
    let mut tasks = Vec::new();
    while tasks.len() < 300 {
        tasks.extend(place(&mut jobs, (300 - tasks.len()) as f64));
    }
    tasks.sort_by_key(|t| submit::parse_task_id(&t.task_id).unwrap().1);
    // The first 9 indices still run; the rest of the 300 finished.
    for task in &tasks[9..] {
        jobs.update(&finish(task), Time(5));
    }
    write(&mut jobs, &store);

    // Rewritten as an older master kept them: indices 0..256 in one chunk.
    let chunks = stored_chunks(&store, &id);
    assert_eq!(
        chunks.iter().map(|c| c.first).collect::<Vec<_>>(),
        vec![0, 64, 128, 192, 256]
    );
    let mut merged = v1::StoredJobChunk {
        job_id: id.clone(),
        first: 0,
        outcomes: Vec::new(),
    };
    let mut old = Vec::new();
    for chunk in chunks.into_iter().filter(|c| c.first < 256) {
        merged.outcomes.extend(chunk.outcomes);
        if chunk.first > 0 {
            old.push(Write::Delete(Table::JobChunks, chunk_key(&id, chunk.first)));
        }
    }
    old.push(Write::Put(Record::JobChunk(merged)));
    store.commit(&old).unwrap();

    let running: Vec<String> = tasks[..9].iter().map(|t| t.task_id.clone()).collect();
    let mut again = restart(&store, 2, &running);
    assert_eq!(outcomes(&again, &id), outcomes(&jobs, &id));

    // Index 0 ends: its chunk of 64 takes the old chunk's key, and the
    // three after it are written with it, so nothing of the old is lost.
    again.update(&finish(&tasks[0]), Time(6));
    write(&mut again, &store);
    let chunks = stored_chunks(&store, &id);
    assert_eq!(
        chunks.iter().map(|c| c.first).collect::<Vec<_>>(),
        vec![0, 64, 128, 192, 256]
    );
    assert!(chunks.iter().all(|c| c.outcomes.len() == 64 * 44));
    let third = restart(&store, 3, &running[1..]);
    assert_eq!(outcomes(&third, &id), outcomes(&again, &id));
    assert_eq!(third.job(&id).unwrap().indices.counts().succeeded, 292);
}

/// Ends each of `tasks` (FINISHED) on an agent of its own, `agent-<n>`
/// from `first` on.
fn finish_on_own_agents(jobs: &mut Jobs, tasks: &[v1::TaskSpec], first: usize) {
    for (n, task) in tasks.iter().enumerate() {
        let mut status = finish(task);
        status.agent_id = format!("agent-{}", first + n);
        jobs.update(&status, Time(5));
    }
}

/// `writes` (of one job) as a master before `job_agents` wrote them: its
/// `count` agents' names in the job's record, no record of agents.
fn as_older_masters_wrote(
    writes: Vec<crate::store::Write>,
    count: usize,
) -> Vec<crate::store::Write> {
    let Record::Job(mut old) = puts(&writes, Table::Jobs)[0].clone() else {
        unreachable!()
    };
    old.agents = (0..count).map(|n| format!("agent-{n}")).collect();
    let mut writes: Vec<_> = writes
        .into_iter()
        .filter(|w| !matches!(w, crate::store::Write::Put(r) if r.table() == Table::JobAgents))
        .collect();
    writes.push(crate::store::Write::Put(Record::Job(old)));
    writes
}

/// The agent each index's last attempt ran on.
fn agents_of(jobs: &Jobs, id: &str) -> Vec<String> {
    let job = jobs.job(id).expect("known");
    (0..job.indices.count())
        .map(|i| job.indices.agent(&job.indices.outcome(i)).to_string())
        .collect()
}

#[test]
fn a_jobs_agents_are_written_once_in_records_of_their_own_and_read_back() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(700));
    // Turns of 100 indices, each on agents never seen before.
    let mut seen = 0;
    let mut expected = Vec::new();
    while seen < 700 {
        let tasks = place(&mut jobs, 100.0);
        finish_on_own_agents(&mut jobs, &tasks, seen);
        seen += tasks.len();
        // (Read before the write that ends the job unloads them.)
        expected = agents_of(&jobs, &id);
        let writes = jobs.writes();
        let Record::Job(record) = &puts(&writes, Table::Jobs)[0] else {
            unreachable!()
        };
        assert!(record.agents.is_empty(), "the record names no agent");
        // Only the last record of names and those the turn filled.
        let names: usize = puts(&writes, Table::JobAgents)
            .iter()
            .map(|r| match r {
                Record::JobAgents(a) => a.agents.len(),
                _ => 0,
            })
            .sum();
        assert!(
            names <= 100 + indices::STORED_AGENTS,
            "{names} names written in a turn that added 100"
        );
        store.commit(&writes).unwrap();
    }
    assert_eq!(jobs.job(&id).unwrap().state, JobState::Succeeded);
    assert!(
        jobs.unloaded(&id),
        "an ended job's outcomes and agents left memory"
    );
    assert_eq!(expected[699], "agent-699");

    // A restarted master reads an ended job's agents back with its
    // outcomes, when they are asked for.
    let mut again = restart(&store, 2, &[]);
    assert!(again.unloaded(&id));
    again.load(&id, stored_outcomes(&store, &id)).unwrap();
    assert_eq!(agents_of(&again, &id), expected);
}

#[test]
fn a_record_that_holds_its_agents_as_older_masters_wrote_it_restores_and_moves_them_out() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(20));
    let tasks = place(&mut jobs, 5.0);
    finish_on_own_agents(&mut jobs, &tasks, 0);
    let expected = agents_of(&jobs, &id);
    store
        .commit(&as_older_masters_wrote(jobs.writes(), 5))
        .unwrap();

    let mut again = restart(&store, 2, &[]);
    assert_eq!(agents_of(&again, &id), expected);
    // Its next record goes without them, which go to `job_agents` in the
    // same commit.
    let more = place(&mut again, 1.0);
    finish_on_own_agents(&mut again, &more, 5);
    let next = again.writes();
    let Record::Job(record) = &puts(&next, Table::Jobs)[0] else {
        unreachable!()
    };
    assert!(record.agents.is_empty());
    assert_eq!(puts(&next, Table::JobAgents).len(), 1);
    store.commit(&next).unwrap();
    let third = restart(&store, 3, &[]);
    assert_eq!(agents_of(&third, &id), agents_of(&again, &id));
    assert_eq!(agents_of(&third, &id)[5], "agent-5");
}

#[test]
fn an_older_masters_names_stay_in_memory_when_its_ended_job_leaves_it() {
    let store = MemoryStore::new();
    let mut jobs = Jobs::new(1);
    let old = submit(&mut jobs, job_spec(5));
    let tasks = place(&mut jobs, 5.0);
    finish_on_own_agents(&mut jobs, &tasks, 0);
    assert_eq!(jobs.job(&old).unwrap().state, JobState::Succeeded);
    let expected = agents_of(&jobs, &old);
    store
        .commit(&as_older_masters_wrote(jobs.writes(), 5))
        .unwrap();
    let newer = submit(&mut jobs, job_spec(5));
    run_out(&mut jobs, 5.0, finish);
    write(&mut jobs, &store);

    // Both ended: read back, then the older one leaves memory for the
    // newer one. Its names were never written to `job_agents`: they stay.
    let mut again = restart(&store, 2, &[]);
    again.load(&old, stored_outcomes(&store, &old)).unwrap();
    assert_eq!(agents_of(&again, &old), expected);
    again.load(&newer, stored_outcomes(&store, &newer)).unwrap();
    again.unload_read_beyond(0);
    assert!(again.unloaded(&old));
    again.load(&old, stored_outcomes(&store, &old)).unwrap();
    assert_eq!(agents_of(&again, &old), expected);
}
