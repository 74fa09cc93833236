//! End-to-end tests of restarts mid-job: `kill -9` of the master (alone, or
//! with an agent's machine: the agent and its executor) while `wasmos run` runs a 2,000-task job, then a start on
//! the same work dir. Real processes on loopback; each kill lands when 25–75%
//! of the tasks are done (the test watches the agents' sandboxes for that).
//!
//! What is checked: the job completes, every task `FINISHED` with its own
//! answer, and no task ran more often than the job was told (a sandbox per
//! attempt at most, counted on the agents' disks).

mod support;

use std::collections::HashMap;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Cluster, wait_for, wasmos};

const TASKS: usize = 2000;

/// Short windows so a test sees recovery decisions within seconds.
const MASTER: &[&str] = &["--agent-reregister-timeout", "20s"];

/// 2 cpus and 0.02 cpus a task: 100 tasks at a time on each agent.
const AGENT: &[&str] = &["--cpus", "2", "--mem", "4GiB"];

/// `wasmos run` of TASKS sleepers of a second each, task `i` printing
/// `slept 1000 i`; its stdout (one JSON line per task) is read to the end on
/// a thread.
struct RunningJob {
    child: Child,
    stdout: std::thread::JoinHandle<String>,
}

impl RunningJob {
    fn start(cluster: &Cluster) -> RunningJob {
        let mut child = wasmos()
            .arg("run")
            .arg(support::guest("sleeper"))
            .args(["-n", &TASKS.to_string(), "--cpus", "0.02", "--mem", "16MiB"])
            .args(["--json", "--master", &cluster.url])
            .args(["--", "1000", "{i}"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wasmos run");
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        RunningJob { child, stdout }
    }

    /// Waits for the job to end (at most 5 minutes); returns its JSON lines.
    fn finish(mut self) -> Vec<Value> {
        let status = wait_for(Duration::from_secs(300), || {
            self.child.try_wait().expect("wait for wasmos run")
        })
        .unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!("the job did not end within 5 minutes")
        });
        let text = self.stdout.join().expect("stdout reader");
        assert!(status.success(), "wasmos run failed ({status})");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// The sandboxes on every agent's disk: task id -> its stdout.
fn sandboxes(cluster: &Cluster) -> HashMap<String, String> {
    let mut found = HashMap::new();
    for agent in &cluster.agents {
        let Ok(dirs) = std::fs::read_dir(agent.work_dir.join("sandboxes")) else {
            continue;
        };
        for dir in dirs.flatten() {
            let id = dir.file_name().to_string_lossy().into_owned();
            let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap_or_default();
            found.insert(id, stdout);
        }
    }
    found
}

/// Tasks whose sandbox holds their answer.
fn done(cluster: &Cluster) -> usize {
    sandboxes(cluster)
        .values()
        .filter(|out| out.starts_with("slept"))
        .count()
}

/// Waits until a quarter of the job is done; checks that it is not yet
/// three quarters done (so the kill lands mid-job).
fn wait_a_quarter_done(cluster: &Cluster) {
    wait_for(Duration::from_secs(120), || {
        (done(cluster) >= TASKS / 4).then_some(())
    })
    .expect("a quarter of the job did not finish within 2 minutes");
    let now = done(cluster);
    assert!(now < TASKS * 3 / 4, "{now} tasks done before the kill");
}

/// The report's task ids are `<job>-<run>-<index>-<attempt>`: the sandboxes
/// of the job, counted per index.
fn sandboxes_per_index(cluster: &Cluster, prefix: &str) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for id in sandboxes(cluster).keys() {
        let Some(rest) = id.strip_prefix(prefix) else {
            continue;
        };
        let index: u64 = rest
            .split('-')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("sandbox {id} is not of a job task"));
        *counts.entry(index).or_default() += 1;
    }
    counts
}

/// Every task finished with its own answer; no index has more sandboxes
/// than attempts the job counted. Returns how many tasks were retried and
/// how many of those ran more than once (more than one sandbox).
fn check_report(cluster: &Cluster, report: &[Value]) -> Outcome {
    assert_eq!(report.len(), TASKS, "one line per task");
    let first = report[0]["id"].as_str().unwrap();
    // `<job>-<run>-<index>-<attempt>` -> `<job>-<run>-`.
    let prefix = first
        .rsplitn(3, '-')
        .nth(2)
        .map(|p| format!("{p}-"))
        .unwrap();
    let ran = sandboxes_per_index(cluster, &prefix);
    let all = sandboxes(cluster);
    let mut outcome = Outcome::default();
    for task in report {
        let i = task["index"].as_u64().unwrap();
        let id = task["id"].as_str().unwrap();
        assert_eq!(task["state"], "FINISHED", "task {i}: {task}");
        assert_eq!(
            task["stdout"],
            format!("slept 1000 {i}\n"),
            "task {i}: {task}"
        );
        assert_eq!(all[id], format!("slept 1000 {i}\n"), "sandbox of {id}");
        let attempts = task["attempts"].as_u64().unwrap() as usize;
        let sandboxes = ran.get(&i).copied().unwrap_or(0);
        assert!(
            (1..=attempts).contains(&sandboxes),
            "task {i}: {sandboxes} sandboxes for {attempts} attempts"
        );
        if sandboxes > 1 {
            outcome.ran_twice += 1;
        }
        if attempts > 1 {
            outcome.retried += 1;
            if outcome.retried <= 3 {
                let mine: Vec<_> = all
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("{prefix}{i}-")))
                    .collect();
                eprintln!("RETRIED {i} sandboxes {mine:?}");
            }
        }
    }
    eprintln!(
        "{} of {TASKS} tasks retried, {} ran more than once",
        outcome.retried, outcome.ran_twice
    );
    outcome
}

#[derive(Default)]
struct Outcome {
    retried: usize,
    ran_twice: usize,
}

#[test]
fn kill_9_of_the_master_mid_job_and_a_restart_finish_the_job() {
    let mut cluster = Cluster::start(2, MASTER, AGENT);
    let job = RunningJob::start(&cluster);
    wait_a_quarter_done(&cluster);
    cluster.kill_master();
    std::thread::sleep(Duration::from_millis(500));
    cluster.restart_master();
    let report = job.finish();
    let outcome = check_report(&cluster, &report);
    // The agents kept running everything, and reported what ended while
    // the master was away: only a launch in flight at the crash (made
    // durable, never received) can have been retried, and it never ran
    // before.
    assert_eq!(outcome.ran_twice, 0, "no task ran twice");
    assert!(
        outcome.retried < TASKS / 10,
        "{} tasks retried",
        outcome.retried
    );
    let state: Value = serde_json::from_str(&cluster.get("/state")).unwrap();
    assert_eq!(
        state["agents"].as_array().unwrap().len(),
        2,
        "both agents are back: {state}"
    );
}

/// Waits until agent `i` has just started tasks, as the master sees it:
/// 10 or more `RUNNING` there that were not at the last look, 20 ms before.
/// Agents take their tasks in waves (a second's sleep each, started
/// together), so a kill right after this lands mid-sleep, never in the
/// moment a wave ends and nothing would be lost.
fn wait_busy(cluster: &Cluster, i: usize) {
    let agent = cluster.agent_id(i);
    let mut before: Option<std::collections::HashSet<String>> = None;
    wait_for(Duration::from_secs(60), || {
        let state: Value = serde_json::from_str(&cluster.get("/state")).ok()?;
        let running: std::collections::HashSet<String> = state["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["agent"] == agent.as_str() && t["state"] == "RUNNING")
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect();
        let fresh = before
            .as_ref()
            .map_or(0, |before| running.difference(before).count());
        before = Some(running);
        (fresh >= 10).then_some(())
    })
    .unwrap_or_else(|| panic!("agent {i} never started 10 tasks at once"));
}

#[test]
fn kill_9_of_the_master_and_an_agent_then_the_master_first() {
    let mut cluster = Cluster::start(2, MASTER, AGENT);
    let job = RunningJob::start(&cluster);
    wait_a_quarter_done(&cluster);
    wait_busy(&cluster, 1);
    cluster.kill_master();
    cluster.kill_machine(1);
    cluster.restart_master();
    cluster.restart_agent(1);
    // The killed agent's tasks died with it: lost, and run again.
    assert!(check_report(&cluster, &job.finish()).retried > 0);
}

#[test]
fn kill_9_of_the_master_and_an_agent_then_the_agent_first() {
    let mut cluster = Cluster::start(2, MASTER, AGENT);
    let job = RunningJob::start(&cluster);
    wait_a_quarter_done(&cluster);
    wait_busy(&cluster, 0);
    cluster.kill_machine(0);
    cluster.kill_master();
    cluster.restart_agent(0);
    std::thread::sleep(Duration::from_millis(500));
    cluster.restart_master();
    assert!(check_report(&cluster, &job.finish()).retried > 0);
}

/// `/metrics`' count of adopted tasks.
fn adopted(cluster: &Cluster) -> u64 {
    let metrics = cluster.get("/metrics");
    metrics
        .lines()
        .find(|l| l.starts_with(r#"wasmos_adoptions_total{outcome="adopted"}"#))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no adoption count in /metrics:\n{metrics}")) as u64
}

#[test]
fn launches_sent_before_their_commit_are_adopted_after_a_kill_9_and_run_once() {
    launches_before_their_commit_survive(false);
}

#[test]
fn launches_sent_before_their_commit_are_adopted_from_executors_whose_agents_restarted() {
    // The agents die with the master: what they report when they come back
    // comes from their executors' checkpoints (each launch's spec and MAC).
    launches_before_their_commit_survive(true);
}

fn launches_before_their_commit_survive(restart_agents: bool) {
    // The test holds the master's commits (a hidden flag: they wait while
    // the gate file exists), so launches reach the agents and the master
    // dies before they are durable.
    let scratch = tempfile::tempdir().unwrap();
    let gate = scratch.path().join("hold");
    let gate_arg = gate.display().to_string();
    let mut args = MASTER.to_vec();
    args.extend(["--hold-commits-while", &gate_arg]);
    let mut cluster = Cluster::start(2, &args, AGENT);
    let job = RunningJob::start(&cluster);
    wait_a_quarter_done(&cluster);
    let unsaved = hold_a_commit_with_launches(&gate);
    // Each reached its agent's executor (a sandbox each) before the kill.
    wait_for(Duration::from_secs(60), || {
        let made = sandboxes(&cluster);
        unsaved.iter().all(|id| made.contains_key(id)).then_some(())
    })
    .expect("launches held from the registry never reached their agents");
    cluster.kill_master();
    if restart_agents {
        cluster.kill_agent(0);
        cluster.kill_agent(1);
    }
    std::fs::remove_file(&gate).unwrap();
    cluster.restart_master();
    if restart_agents {
        cluster.restart_agent(0);
        cluster.restart_agent(1);
    }
    let report = job.finish();
    let outcome = check_report(&cluster, &report);
    assert_eq!(outcome.ran_twice, 0, "no task ran twice");
    // Each launch the registry never held ran once, under its first
    // attempt: the master adopted it from its agent, and while the agents
    // were away it never told `wasmos run` (which reconciles launches in
    // doubt) that the task was unknown.
    for id in &unsaved {
        let task = report
            .iter()
            .find(|t| t["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} is not in the report"));
        assert_eq!(task["attempts"], 1, "{task}");
    }
    // Each was adopted (and maybe launches that followed them, unsaved too).
    let adopted = adopted(&cluster);
    assert!(
        adopted >= unsaved.len() as u64,
        "{adopted} tasks adopted of {} held from the registry",
        unsaved.len()
    );
}

/// Puts up `gate` for the first commit that launches tasks (commits that
/// launch nothing go through); returns the tasks it launches, as the
/// master lists them in `<gate>.launches` while it holds the commit.
fn hold_a_commit_with_launches(gate: &std::path::Path) -> Vec<String> {
    let listing = std::path::PathBuf::from(format!("{}.launches", gate.display()));
    // Whole or not at all: a gate read half-written would hold any commit.
    let aside = gate.with_extension("tmp");
    std::fs::write(&aside, b"launches").unwrap();
    std::fs::rename(&aside, gate).unwrap();
    let held = wait_for(Duration::from_secs(60), || {
        std::fs::read_to_string(&listing)
            .ok()
            .filter(|l| !l.is_empty())
    })
    .expect("no commit launched tasks within 60 s of the gate going up");
    held.lines().map(str::to_string).collect()
}

/// A framework that saw epoch 3 refuses a master that comes back at epoch
/// 2 (a stale master, as a deposed leader would be), and takes the next
/// one, at epoch 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_refuses_a_master_of_an_older_epoch() {
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(1, &[], &[]));
    let client = wasmos_sdk::Client::connect(cluster.url.clone())
        .await
        .unwrap();
    let (scheduler, mut events) = client
        .subscribe(wasmos_sdk::FrameworkConfig::new("epochs"))
        .await
        .unwrap();
    let registry = cluster.dir.path().join("master").join("registry.redb");
    let at_epoch_1 = cluster.dir.path().join("epoch-1.redb");
    // Waits (10 s at most) for the framework to re-subscribe; whether it did.
    async fn resubscribed(events: &mut wasmos_sdk::Events, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
            if matches!(event, wasmos_sdk::Event::Resubscribed { .. }) {
                return true;
            }
        }
        false
    }
    tokio::task::block_in_place(|| {
        cluster.kill_master();
        std::fs::copy(&registry, &at_epoch_1).unwrap();
        cluster.restart_master(); // epoch 2
    });
    assert!(resubscribed(&mut events, Duration::from_secs(10)).await);
    tokio::task::block_in_place(|| {
        cluster.kill_master();
        cluster.restart_master(); // epoch 3
    });
    assert!(resubscribed(&mut events, Duration::from_secs(10)).await);
    tokio::task::block_in_place(|| {
        cluster.kill_master();
        std::fs::copy(&at_epoch_1, &registry).unwrap();
        cluster.restart_master(); // epoch 2 again: older than 3
    });
    assert!(
        !resubscribed(&mut events, Duration::from_secs(3)).await,
        "the framework took a master of an older epoch"
    );
    assert_eq!(scheduler.stats().resubscriptions, 2);
    tokio::task::block_in_place(|| {
        cluster.kill_master();
        cluster.restart_master(); // epoch 3: as new as the newest seen
    });
    assert!(resubscribed(&mut events, Duration::from_secs(10)).await);
}

/// The registry commits the master made since it started.
fn commits(cluster: &Cluster) -> u64 {
    support::http_get(&format!("{}/metrics", cluster.http))
        .lines()
        .find_map(|l| {
            l.strip_prefix("wasmos_registry_commit_seconds_count ")?
                .parse()
                .ok()
        })
        .expect("the commit histogram")
}

/// Agents re-registering together after a restart share commits instead
/// of taking one each in turn (what lets a new leader take back a
/// thousand agents within its lease; `cargo bench --bench reregister`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reregistering_at_once_share_commits() {
    const AGENTS: usize = 300;
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(0, &[], &[]));
    let (_, attached) = support::sim_agents::attach_all(&cluster.url, AGENTS).await;
    drop(attached);
    tokio::task::block_in_place(|| {
        cluster.kill_master();
        cluster.restart_master();
    });
    let before = commits(&cluster);
    let (_, attached) = support::sim_agents::attach_all(&cluster.url, AGENTS).await;
    let made = commits(&cluster) - before;
    let state: serde_json::Value =
        serde_json::from_str(&support::http_get(&format!("{}/state", cluster.http))).unwrap();
    let connected = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["connected"] == true)
        .count();
    drop(attached);
    eprintln!("{made} commits for {AGENTS} re-registrations; {connected} connected");
    assert_eq!(connected, AGENTS, "every agent is back");
    assert!(
        made <= (AGENTS / 4) as u64,
        "{made} commits for {AGENTS} re-registrations"
    );
}
