//! End-to-end tests of the executor process (`wasmos executor`): tasks that
//! outlive their agent, an executor that dies, a reboot of both, the
//! version handshake, and an orphaned executor that exits by itself. Real
//! `wasmos master`, `wasmos agent` and `wasmos executor` processes on
//! loopback; jobs of one-second sleepers whose answers are checked; each
//! kill lands when 25–75% of the tasks are done.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Cluster, alive, wait_for};
use wasmos_proto::v1;
use wasmos_proto::v1::operator_client::OperatorClient;
use wasmos_sdk::{Client, Job, JobReport, TaskTemplate};

/// 200 tasks of a second, 100 at a time on the one agent: two waves.
const TASKS: usize = 200;

/// Room for an agent to be restarted without the master declaring it lost.
const MASTER: &[&str] = &["--agent-timeout", "15s"];

/// 2 cpus and 0.02 cpus a task.
const AGENT: &[&str] = &["--cpus", "2", "--mem", "4GiB"];

/// What a job saw while it ran: the terminal statuses, in order.
#[derive(Default)]
struct Seen {
    ended: Vec<v1::TaskStatus>,
}

impl Seen {
    fn done(&self) -> usize {
        self.ended
            .iter()
            .filter(|s| s.state() == v1::TaskState::Finished)
            .count()
    }

    fn lost(&self) -> Vec<v1::TaskStatus> {
        self.ended
            .iter()
            .filter(|s| s.state() == v1::TaskState::Lost)
            .cloned()
            .collect()
    }
}

/// Starts a job of TASKS sleepers (task `i` prints `slept 1000 i`).
async fn start_job(
    cluster: &Cluster,
) -> (Client, Arc<Mutex<Seen>>, tokio::task::JoinHandle<JobReport>) {
    let client = Client::connect(&cluster.url).await.unwrap();
    let sleeper = client
        .upload(std::fs::read(support::guest("sleeper")).unwrap())
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = (0..TASKS).map(|i| {
        TaskTemplate::new(&sleeper.digest)
            .args(["1000".to_string(), i.to_string()])
            .cpus(0.02)
            .mem(16 << 20)
    });
    let s = seen.clone();
    let job = Job::new("outlive").tasks(tasks).on_update(move |u| {
        if u.status.state().is_terminal() {
            s.lock().unwrap().ended.push(u.status.clone());
        }
    });
    let c = client.clone();
    let run = tokio::spawn(async move { job.run(&c).await.expect("the job ran") });
    (client, seen, run)
}

/// Waits until a quarter of the job is done; checks that three quarters
/// are not (so what follows lands mid-job).
async fn wait_a_quarter_done(seen: &Mutex<Seen>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap().done() < TASKS / 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a quarter of the job did not finish within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = seen.lock().unwrap().done();
    assert!(done < TASKS * 3 / 4, "{done} tasks done already");
}

async fn finish(run: tokio::task::JoinHandle<JobReport>) -> JobReport {
    tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the job ended within 5 minutes")
        .unwrap()
}

/// The job's sandboxes on the agents' disks, counted per task index (ids
/// are `<job>-<run>-<index>-<attempt>`).
fn sandboxes_per_index(cluster: &Cluster, report: &JobReport) -> HashMap<usize, usize> {
    let prefix = report.tasks[0]
        .task_id
        .rsplitn(3, '-')
        .nth(2)
        .map(|p| format!("{p}-"))
        .unwrap();
    let mut counts = HashMap::new();
    for agent in &cluster.agents {
        let Ok(dirs) = std::fs::read_dir(agent.work_dir.join("sandboxes")) else {
            continue;
        };
        for dir in dirs.flatten() {
            let id = dir.file_name().to_string_lossy().into_owned();
            if let Some(index) = id
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split('-').next()?.parse().ok())
            {
                *counts.entry(index).or_default() += 1;
            }
        }
    }
    counts
}

/// Every task finished with its own answer, read through the master; no
/// task ran more often than it was launched. Returns the tasks that ran
/// more than once.
async fn check(cluster: &Cluster, report: &JobReport) -> HashSet<usize> {
    assert_eq!(report.tasks.len(), TASKS);
    // A task that touches no file has its sandbox written behind its
    // terminal status: wait for every task's to be on disk.
    let ran = support::wait_for(Duration::from_secs(20), || {
        let ran = sandboxes_per_index(cluster, report);
        (ran.len() == TASKS).then_some(ran)
    })
    .unwrap_or_else(|| sandboxes_per_index(cluster, report));
    let mut operator = OperatorClient::connect(cluster.url.clone()).await.unwrap();
    let mut twice = HashSet::new();
    for task in &report.tasks {
        let i = task.index;
        assert_eq!(task.state, v1::TaskState::Finished, "task {i}: {task:?}");
        let stdout = operator
            .read_sandbox(v1::ReadSandboxRequest {
                task_id: task.task_id.clone(),
                target: v1::SandboxTarget::Stdout as i32,
                // A master that restarted no longer lists ended tasks.
                agent_id: task.agent_id.clone(),
                ..Default::default()
            })
            .await
            .expect("sandbox read")
            .into_inner();
        assert_eq!(stdout.error, "", "task {i}");
        assert_eq!(
            String::from_utf8_lossy(&stdout.data),
            format!("slept 1000 {i}\n"),
            "task {i}"
        );
        let sandboxes = ran.get(&i).copied().unwrap_or(0);
        assert!(
            (1..=task.attempts as usize).contains(&sandboxes),
            "task {i}: {sandboxes} sandboxes for {} attempts",
            task.attempts
        );
        if sandboxes > 1 {
            twice.insert(i);
        }
    }
    twice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_agent_leaves_its_tasks_running_and_they_finish_on_their_first_attempt() {
    let mut cluster = Cluster::start(1, MASTER, AGENT);
    let executor = cluster.executor_pid(0);
    let (_client, seen, run) = start_job(&cluster).await;
    wait_a_quarter_done(&seen).await;
    cluster.kill_agent(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(alive(executor), "the executor outlived its agent");
    cluster.restart_agent(0);
    let report = finish(run).await;
    assert_eq!(
        cluster.executor_pid(0),
        executor,
        "the agent re-attached to the executor it left"
    );
    let twice = check(&cluster, &report).await;
    assert!(twice.is_empty(), "tasks ran twice: {twice:?}");
    let lost = seen.lock().unwrap().lost();
    // Only a launch in flight at the kill (never received) can be lost.
    assert!(
        lost.len() < TASKS / 10,
        "{} tasks lost: {lost:?}",
        lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_too_deep_for_a_socket_path_finds_its_executor_in_the_temp_dir() {
    // Past 107 bytes (103 on macOS) no Unix socket can be bound: the socket
    // moves to a private directory of the temp dir named for the work dir,
    // where a restarted agent finds the executor again.
    let mut cluster = Cluster::start(0, MASTER, &[]);
    let deep = cluster.dir.path().join("d".repeat(60)).join("e".repeat(60));
    let socket = wasmos_platform::socket::socket_path(&deep, "executor.sock");
    assert!(!socket.starts_with(&deep), "{}", socket.display());
    cluster.add_agent_in(deep.clone(), AGENT);
    cluster.wait_agents(1);
    let executor = cluster.executor_pid(0);
    assert!(socket.exists(), "{}", socket.display());
    assert!(!deep.join("executor.sock").exists());

    cluster.kill_agent(0);
    cluster.restart_agent(0);
    let client = Client::connect(&cluster.url).await.unwrap();
    let hello = client
        .upload(std::fs::read(support::guest("hello")).unwrap())
        .await
        .unwrap();
    let template = TaskTemplate::new(hello.digest).cpus(0.1).mem(16 << 20);
    let report = Job::new("deep")
        .tasks(vec![template; 4])
        .run(&client)
        .await
        .unwrap();
    assert!(report.succeeded(), "{:?}", report.tasks);
    assert_eq!(
        cluster.executor_pid(0),
        executor,
        "the agent re-attached to its executor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_executor_loses_its_tasks_with_its_reason_and_the_job_completes() {
    let mut cluster = Cluster::start(1, MASTER, AGENT);
    let agent_id = cluster.agent_id(0);
    let (_client, seen, run) = start_job(&cluster).await;
    wait_a_quarter_done(&seen).await;
    let killed = cluster.kill_executor(0);
    let report = finish(run).await;
    check(&cluster, &report).await;
    let lost = seen.lock().unwrap().lost();
    assert!(!lost.is_empty(), "the running tasks were lost");
    for status in &lost {
        assert_eq!(
            status.reason(),
            v1::Reason::ExecutorTerminated,
            "{status:?}"
        );
    }
    let rerun = report.tasks.iter().filter(|t| t.attempts > 1).count();
    assert_eq!(rerun, lost.len(), "each lost task ran again");
    // The agent stayed: the same process, connected under its id, with a
    // new executor.
    let agent = cluster.agents[0].child.as_mut().unwrap();
    assert!(agent.try_wait().unwrap().is_none(), "the agent still runs");
    assert_ne!(cluster.executor_pid(0), killed, "a new executor runs");
    let state: serde_json::Value = serde_json::from_str(&cluster.get("/state")).unwrap();
    let agents = state["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1, "{state}");
    assert_eq!(agents[0]["id"], agent_id.as_str());
    assert_eq!(agents[0]["connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_delivers_what_ended_before_it_with_its_outputs() {
    // The checkpoint drops every write that was not synced when its
    // process dies, as a power cut would.
    let agent: Vec<&str> = [AGENT, &["--executor-checkpoint", "power-loss"]].concat();
    let master = ["--agent-reregister-timeout", "60s"];
    let mut cluster = Cluster::start(1, &master, &agent);
    let (_client, seen, run) = start_job(&cluster).await;
    wait_a_quarter_done(&seen).await;
    // With the master away nothing is acknowledged: what ends now waits in
    // the executor's checkpoint.
    cluster.kill_master();
    let received: HashSet<String> = seen
        .lock()
        .unwrap()
        .ended
        .iter()
        .map(|s| s.task_id.clone())
        .collect();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ended_unseen: HashSet<String> =
        std::fs::read_dir(cluster.agents[0].work_dir.join("sandboxes"))
            .unwrap()
            .flatten()
            .filter(|d| {
                std::fs::read_to_string(d.path().join("stdout"))
                    .is_ok_and(|out| out.starts_with("slept"))
            })
            .map(|d| d.file_name().to_string_lossy().into_owned())
            .filter(|id| !received.contains(id))
            .collect();
    cluster.kill_machine(0);
    cluster.restart_master();
    cluster.restart_agent(0);
    let report = finish(run).await;
    let twice = check(&cluster, &report).await;
    // What ended while the master was away was reported from the
    // checkpoint after the reboot: FINISHED on its first attempt, not run
    // again.
    let delivered = report
        .tasks
        .iter()
        .filter(|t| ended_unseen.contains(&t.task_id) && t.attempts == 1)
        .count();
    eprintln!(
        "{} tasks ended unacknowledged before the reboot; {delivered} delivered from the checkpoint; {} ran twice",
        ended_unseen.len(),
        twice.len()
    );
    assert!(
        !ended_unseen.is_empty(),
        "tasks ended while the master was away"
    );
    assert!(
        delivered * 2 >= ended_unseen.len(),
        "{delivered} of {} delivered after the reboot",
        ended_unseen.len()
    );
    // What the framework had received before the crash ran once, and its
    // outputs survived (check read them all).
    for task in report
        .tasks
        .iter()
        .filter(|t| received.contains(&t.task_id))
    {
        assert_eq!(task.attempts, 1, "{task:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_protocol_re_attaches_or_drains_and_replaces_the_executor() {
    let mut cluster = Cluster::start(1, MASTER, AGENT);
    let first = cluster.executor_pid(0);
    let (_client, seen, run) = start_job(&cluster).await;
    wait_a_quarter_done(&seen).await;
    // 1.9 and 1.0 are compatible: the executor stays.
    cluster.kill_agent(0);
    cluster.agents[0]
        .args
        .extend(["--executor-protocol".into(), "1.9".into()]);
    cluster.restart_agent(0);
    cluster.wait_agents(1);
    assert_eq!(
        cluster.executor_pid(0),
        first,
        "a compatible agent re-attached"
    );
    // 2.0 is not: the old executor finishes what runs and makes way.
    let done = seen.lock().unwrap().done();
    assert!(done < TASKS * 3 / 4, "{done} tasks done already");
    cluster.kill_agent(0);
    let n = cluster.agents[0].args.len();
    cluster.agents[0].args[n - 1] = "2.0".into();
    cluster.restart_agent(0);
    let report = finish(run).await;
    wait_for(Duration::from_secs(30), || (!alive(first)).then_some(()))
        .expect("the old executor exited");
    let second = cluster.executor_pid(0);
    assert_ne!(second, first, "a new executor replaced the old one");
    let twice = check(&cluster, &report).await;
    assert!(twice.is_empty(), "tasks ran twice: {twice:?}");
    let cmdline = std::fs::read_to_string(format!("/proc/{second}/cmdline")).unwrap();
    assert!(
        cmdline.contains("--protocol\u{0}2.0\u{0}"),
        "the new executor speaks 2.0: {cmdline:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_executor_exits_once_its_tasks_are_done() {
    let agent: Vec<&str> = [AGENT, &["--executor-orphan-timeout", "300ms"]].concat();
    let mut cluster = Cluster::start(1, MASTER, &agent);
    let client = Client::connect(&cluster.url).await.unwrap();
    support::run_one_sleeper(&client, "orphan", 3000, Duration::from_secs(30)).await;
    let pid = cluster.executor_pid(0);
    cluster.kill_agent(0);
    // Its task still runs: the executor stays for it...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(alive(pid), "the executor left a running task");
    // ...and goes once it ended and the timeout passed, leaving nothing.
    wait_for(Duration::from_secs(30), || (!alive(pid)).then_some(()))
        .expect("the orphaned executor exited");
    let work_dir = &cluster.agents[0].work_dir;
    assert!(!work_dir.join("executor.sock").exists());
    assert!(!work_dir.join("executor.pid").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_lost_with_the_power_before_its_sync_is_never_told_finished() {
    // Ends go out before the executor syncs them: the master frees their
    // resources and holds them from the framework until the agent says
    // they are durable. The power-loss checkpoint's syncs wait while
    // `hold-syncs` exists, and the machine dies before any lands.
    let agent: Vec<&str> = [AGENT, &["--executor-checkpoint", "power-loss"]].concat();
    let master = [
        "--agent-reregister-timeout",
        "60s",
        "--agent-timeout",
        "15s",
    ];
    let mut cluster = Cluster::start(1, &master, &agent);
    let (_client, seen, run) = start_job(&cluster).await;
    wait_a_quarter_done(&seen).await;
    let gate = cluster.agents[0].work_dir.join("hold-syncs");
    std::fs::write(&gate, b"").unwrap();
    let told = |seen: &Mutex<Seen>| -> HashSet<String> {
        seen.lock()
            .unwrap()
            .ended
            .iter()
            .map(|s| s.task_id.clone())
            .collect()
    };
    // Ends the master heard (FINISHED in /state) that the job was not told,
    // and still was not told half a second later: their syncs are held (a
    // sync already under way when the gate appeared lands, and its ends are
    // told).
    let heard_untold = || -> HashSet<String> {
        let state: serde_json::Value = serde_json::from_str(&cluster.get("/state")).unwrap();
        let told = told(&seen);
        state["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "FINISHED")
            .map(|t| t["id"].as_str().unwrap().to_string())
            .filter(|id| !told.contains(id))
            .collect()
    };
    let held = wait_for(Duration::from_secs(60), || {
        let first = heard_untold();
        std::thread::sleep(Duration::from_millis(500));
        let held: HashSet<String> = heard_untold().intersection(&first).cloned().collect();
        (held.len() >= 10).then_some(held)
    })
    .expect("no end was heard while the executor's syncs were held");
    cluster.kill_machine(0);
    std::fs::remove_file(&gate).unwrap();
    cluster.restart_agent(0);
    let report = finish(run).await;
    // The restarted executor found those tasks running in its checkpoint
    // and reported them LOST: that, not FINISHED, is what the job heard,
    // and it ran them again (`check` reads every task's answer).
    let finished_told: HashSet<String> = seen
        .lock()
        .unwrap()
        .ended
        .iter()
        .filter(|s| s.state() == v1::TaskState::Finished)
        .map(|s| s.task_id.clone())
        .collect();
    for id in &held {
        assert!(
            !finished_told.contains(id),
            "{id} was told FINISHED though its end was never durable"
        );
    }
    check(&cluster, &report).await;
    let retried = report.tasks.iter().filter(|t| t.attempts > 1).count();
    assert!(
        retried >= held.len(),
        "{retried} tasks retried, {} ends lost",
        held.len()
    );
}
