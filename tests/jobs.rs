//! Jobs that live in the master, through real processes: a master and
//! agents, and `wasmos submit` / `wasmos job ...` as separate commands, so
//! the client that submitted a job is gone long before the job ends.

mod support;

use std::process::Output;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde_json::Value;
use support::{Cluster, guest, output_within};

const LIMIT: Duration = Duration::from_secs(120);

/// The 100,000-index test keeps both cores busy: it runs alone, the others
/// side by side (their heartbeats and deadlines are short).
static CORES: RwLock<()> = RwLock::new(());

fn side_by_side() -> RwLockReadGuard<'static, ()> {
    CORES.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> RwLockWriteGuard<'static, ()> {
    CORES.write().unwrap_or_else(|e| e.into_inner())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `wasmos ARGS` against the cluster, run to its end.
fn cli(cluster: &Cluster, args: &[&str]) -> Output {
    let mut cmd = cluster.cli();
    cmd.env("WASMOS_MASTER", &cluster.url).args(args);
    output_within(cmd, LIMIT)
}

fn cli_ok(cluster: &Cluster, args: &[&str]) -> String {
    let o = cli(cluster, args);
    assert!(
        o.status.success(),
        "wasmos {args:?} failed ({}):\n{}",
        o.status,
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Submits and returns the job id; the submitting process has exited.
fn submit(cluster: &Cluster, module: &str, options: &[&str], args: &[&str]) -> String {
    let path = guest(module);
    let mut all = vec!["submit", path.to_str().unwrap()];
    all.extend(options);
    all.push("--");
    all.extend(args);
    let id = cli_ok(cluster, &all).trim().to_string();
    assert!(id.starts_with('j'), "{id}");
    id
}

/// The usage ledger's row for `job` (`wasmos usage --by job`).
fn usage_of(cluster: &Cluster, job: &str) -> Value {
    json_lines(&cli_ok(cluster, &["usage", "--by", "job", "--json"]))
        .into_iter()
        .find(|r| r["job"] == job)
        .unwrap_or_else(|| panic!("no usage of {job}"))
}

/// The ledger's row for `job` equals the sum of its indices' own usage
/// (every index ran once).
fn assert_ledger_matches(cluster: &Cluster, job: &str, results: &[Value]) {
    let sum = |field: &str| {
        results
            .iter()
            .map(|r| r[field].as_u64().unwrap())
            .sum::<u64>()
    };
    let row = usage_of(cluster, job);
    assert_eq!(row["tasks"], results.len() as u64, "{row}");
    assert_eq!(row["first_attempts"], results.len() as u64, "{row}");
    assert_eq!(row["fuel"], sum("fuel"), "{row}");
    let seconds = |ms: u64| ms as f64 / 1000.0;
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-6;
    assert!(
        close(&row["cpu_seconds"], seconds(sum("cpu_time_ms"))),
        "{row}"
    );
    assert!(
        close(&row["task_seconds"], seconds(sum("wall_time_ms"))),
        "{row}"
    );
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn show(cluster: &Cluster, job: &str) -> Value {
    serde_json::from_str(&cli_ok(cluster, &["job", "show", job, "--json"])).unwrap()
}

/// `wasmos job wait`: its exit code and what it said.
fn wait(cluster: &Cluster, job: &str) -> (i32, String) {
    let o = cli(cluster, &["job", "wait", job]);
    (o.status.code().unwrap_or(-1), text(&o.stderr))
}

#[test]
fn a_submitted_job_runs_without_its_client_and_reports_every_index() {
    let _cores = side_by_side();
    let cluster = Cluster::start(2, &[], &[]);
    let job = submit(
        &cluster,
        "hello",
        &["-n", "300", "--cpus", "0.05", "--env", "PART=p{i}"],
        &["--index={i}"],
    );
    let (code, said) = wait(&cluster, &job);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains(&format!("{job} SUCCEEDED")), "{said}");

    let results = json_lines(&cli_ok(&cluster, &["job", "results", &job, "--json"]));
    assert_eq!(results.len(), 300);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i as u64, "{r}");
        assert_eq!(r["state"], "SUCCEEDED", "{r}");
        assert_eq!(r["attempts"], 1, "{r}");
        assert_eq!(r["task_id"], format!("{job}-{i}-1"), "{r}");
        assert!(r["agent"].as_str().unwrap().len() > 3, "{r}");
    }
    let summary = show(&cluster, &job);
    assert_eq!(summary["succeeded"], 300);
    assert_eq!(summary["owner"], "local");
    assert_ledger_matches(&cluster, &job, &results);
    let by_principal = json_lines(&cli_ok(&cluster, &["usage", "--json"]));
    assert_eq!(by_principal.len(), 1, "{by_principal:?}");
    assert_eq!(by_principal[0]["principal"], "local");
    assert_eq!(by_principal[0]["tasks"], 300);
    let csv = cli_ok(&cluster, &["usage", "--by", "role", "--csv"]);
    assert!(csv.starts_with("role,tasks,first,"), "{csv}");
    assert!(csv.contains("\ndefault,300,300,"), "{csv}");

    // Every index's stdout, as the task printed it.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    cli_ok(&cluster, &["job", "results", &job, "--output", dir]);
    for i in [0, 7, 299] {
        let stdout = std::fs::read_to_string(out.path().join(i.to_string())).unwrap();
        assert!(
            stdout.contains(&format!("argv[1]=--index={i}\n")),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("env PART=p{i}\n")), "{stdout}");
        assert!(
            stdout.contains(&format!("env WASMOS_INDEX={i}\n")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("env WASMOS_JOB={job}\n")),
            "{stdout}"
        );
        assert!(stdout.contains("env WASMOS_ATTEMPT=1\n"), "{stdout}");
    }
    // The master kept each index's stdout head: it outlives the sandboxes.
    for r in &results {
        let i = r["index"].as_u64().unwrap();
        let head = r["stdout_head"].as_str().unwrap_or_default();
        assert!(head.contains(&format!("argv[1]=--index={i}\n")), "{r}");
    }
    for agent in &cluster.agents {
        let _ = std::fs::remove_dir_all(agent.work_dir.join("sandboxes"));
    }
    let kept = tempfile::tempdir().unwrap();
    let o = cli(
        &cluster,
        &[
            "job",
            "results",
            &job,
            "--output",
            kept.path().to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("the master kept"),
        "{}",
        text(&o.stderr)
    );
    let stdout = std::fs::read_to_string(kept.path().join("7")).unwrap();
    assert!(stdout.contains("env WASMOS_INDEX=7\n"), "{stdout}");
    // The job's tasks are tasks like any other.
    let ps = cli_ok(&cluster, &["ps"]);
    assert!(ps.contains(&format!("{job}-")), "{ps}");
    let jobs = cli_ok(&cluster, &["jobs"]);
    assert!(jobs.contains(&job) && jobs.contains("300/300"), "{jobs}");
}

#[test]
fn retries_follow_exit_codes_and_the_task_sees_its_attempt() {
    let _cores = side_by_side();
    let cluster = Cluster::start(1, &[], &[]);
    // Exits 75 on its first attempt: retried, it succeeds on the second.
    let retried = submit(
        &cluster,
        "flaky",
        &["-n", "5", "--retry-on", "exit:75"],
        &["75", "2"],
    );
    assert_eq!(wait(&cluster, &retried).0, 0);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let results = json_lines(&cli_ok(
        &cluster,
        &["job", "results", &retried, "--json", "--output", dir],
    ));
    for r in &results {
        assert_eq!(
            (r["attempts"].as_u64(), r["exit_code"].as_i64()),
            (Some(2), Some(0)),
            "{r}"
        );
    }
    let stdout = std::fs::read_to_string(out.path().join("3")).unwrap();
    assert_eq!(stdout, "attempt 2\n");

    // Without a rule for its exit code a failure is final (the default
    // retries only lost tasks): the job fails and says how.
    let failing = submit(&cluster, "flaky", &["-n", "3"], &["9", "2"]);
    let (code, said) = wait(&cluster, &failing);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("3 of 3 indices failed"), "{said}");
    let detail = show(&cluster, &failing)["detail"].clone();
    assert_eq!(
        detail["failed_indices"],
        serde_json::json!([0, 1, 2]),
        "{detail}"
    );
    assert_eq!(detail["ends"][0]["reason"], "EXIT_NONZERO", "{detail}");
    assert_eq!(detail["ends"][0]["count"], 3, "{detail}");
    let failed = json_lines(&cli_ok(
        &cluster,
        &["job", "results", &failing, "--json", "--failed"],
    ));
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0]["reason"], "EXIT_NONZERO");
    assert_eq!(failed[0]["exit_code"], 9);
    assert_eq!(failed[0]["attempts"], 1);
    // Run again by hand: each as a second attempt, which succeeds.
    let said = text(&cli(&cluster, &["job", "retry", &failing, "--failed"]).stderr);
    assert!(said.contains("3 indices run again"), "{said}");
    let (code, said) = wait(&cluster, &failing);
    assert_eq!(code, 0, "{said}");
    let results = json_lines(&cli_ok(&cluster, &["job", "results", &failing, "--json"]));
    assert!(
        results
            .iter()
            .all(|r| r["attempts"] == 2 && r["state"] == "SUCCEEDED"),
        "{results:?}"
    );

    // Bad rules are refused before anything is sent.
    let o = cli(
        &cluster,
        &[
            "submit",
            guest("flaky").to_str().unwrap(),
            "--retry-on",
            "sometimes",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("not a retry condition"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn dependencies_holds_and_cancels() {
    let _cores = side_by_side();
    let cluster = Cluster::start(1, &[], &[]);
    // A job refused by the master leaves nothing behind, not even its
    // owner's framework.
    let o = cli(
        &cluster,
        &[
            "submit",
            guest("hello").to_str().unwrap(),
            "--after",
            "j9.9",
        ],
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("j9.9: no such job"),
        "{}",
        text(&o.stderr)
    );
    let frameworks = cli_ok(&cluster, &["frameworks", "--json"]);
    assert!(frameworks.trim().is_empty(), "{frameworks}");

    // A held job holds back the one that runs after it.
    let first = submit(&cluster, "hello", &["-n", "3", "--hold"], &[]);
    let second = submit(&cluster, "hello", &["-n", "2", "--after", &first], &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(show(&cluster, &first)["state"], "HELD");
    assert_eq!(show(&cluster, &second)["state"], "WAITING");
    cli_ok(&cluster, &["job", "release", &first]);
    assert_eq!(wait(&cluster, &second).0, 0);
    assert_eq!(show(&cluster, &first)["state"], "SUCCEEDED");

    // A failed dependency fails the job after it, naming it.
    let broken = submit(&cluster, "exitcode", &[], &["4"]);
    let after_broken = submit(&cluster, "hello", &["--after", &broken], &[]);
    let cleanup = submit(&cluster, "hello", &["--after-failed", &broken], &[]);
    let (code, said) = wait(&cluster, &after_broken);
    assert_eq!(code, 1);
    assert!(
        said.contains(&format!("{broken}, which it runs after, failed")),
        "{said}"
    );
    assert_eq!(wait(&cluster, &cleanup).0, 0, "it runs because one failed");

    // Cancelling a long array kills what runs and starts nothing more.
    let long = submit(
        &cluster,
        "sleeper",
        &["-n", "50", "--cpus", "0.25"],
        &["60000"],
    );
    support::wait_for(LIMIT, || {
        (show(&cluster, &long)["running"].as_u64() > Some(0)).then_some(())
    })
    .expect("the array never started");
    cli_ok(&cluster, &["job", "cancel", &long]);
    let (code, said) = wait(&cluster, &long);
    assert_eq!(code, 1);
    assert!(said.contains("CANCELLED"), "{said}");
    let summary = show(&cluster, &long);
    assert_eq!(summary["cancelled"], 50, "{summary}");
    assert_eq!(summary["running"], 0, "{summary}");
    let o = cli(&cluster, &["job", "cancel", &long]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("has ended"), "{}", text(&o.stderr));
}

#[test]
fn a_principal_sees_and_changes_only_its_own_jobs() {
    let _cores = side_by_side();
    let cluster = Cluster::start_tls(1, &[], &[]);
    let alice = cluster.token(&["--principal", "alice", "--roles", "default"]);
    let bob = cluster.token(&["--principal", "bob", "--roles", "default"]);
    let viewer = cluster.token(&["--read-only"]);
    let as_token = |token: &str, args: &[&str]| {
        let mut cmd = cluster.cli();
        cmd.env("WASMOS_TOKEN", token)
            .env("WASMOS_MASTER", &cluster.url)
            .args(args);
        output_within(cmd, LIMIT)
    };
    let hello = guest("hello");
    let o = as_token(
        &alice,
        &["submit", hello.to_str().unwrap(), "-n", "2", "--hold"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let job = text(&o.stdout).trim().to_string();

    let o = as_token(&bob, &["job", "show", &job]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("no such job"),
        "{}",
        text(&o.stderr)
    );
    let o = as_token(&bob, &["job", "cancel", &job]);
    assert!(
        text(&o.stderr).contains("no such job"),
        "{}",
        text(&o.stderr)
    );
    let o = as_token(&bob, &["jobs"]);
    assert!(!text(&o.stdout).contains(&job), "{}", text(&o.stdout));
    let o = as_token(
        &bob,
        &["submit", hello.to_str().unwrap(), "--role", "batch"],
    );
    assert!(!o.status.success(), "bob holds no role batch");

    let o = as_token(&viewer, &["job", "show", &job, "--json"]);
    assert!(
        o.status.success(),
        "read-only sees all: {}",
        text(&o.stderr)
    );
    let o = as_token(&viewer, &["job", "release", &job]);
    assert!(!o.status.success(), "but changes nothing");

    let o = as_token(&alice, &["job", "release", &job]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = as_token(&alice, &["job", "wait", &job]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Usage: alice's own, none of it to bob, all of it to read-only.
    let usage = |token: &str| {
        let o = as_token(token, &["usage", "--json"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        json_lines(&text(&o.stdout))
    };
    let mine = usage(&alice);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(
        (&mine[0]["principal"], &mine[0]["tasks"]),
        (&"alice".into(), &2.into())
    );
    assert!(usage(&bob).is_empty(), "bob sees none of alice's usage");
    assert!(usage(&viewer).iter().any(|r| r["principal"] == "alice"));
    let audit = cli_ok(&cluster, &["audit"]);
    assert!(
        audit.contains("Jobs.Submit") && audit.contains("Jobs.Release"),
        "{audit}"
    );
}

#[test]
fn jobs_survive_their_master_killed_mid_array_and_nothing_finished_runs_again() {
    let _cores = side_by_side();
    let mut cluster = Cluster::start(2, &[], &[]);
    let done_before = submit(&cluster, "hello", &["-n", "2"], &[]);
    assert_eq!(wait(&cluster, &done_before).0, 0);
    // 120 sleepers of 300 ms, 8 at a time per agent: about 2.5 s of work.
    let job = submit(
        &cluster,
        "sleeper",
        &["-n", "120", "--cpus", "0.25"],
        &["300", "i{i}"],
    );
    let finished = |cluster: &Cluster| show(cluster, &job)["succeeded"].as_u64().unwrap();
    support::wait_for(LIMIT, || (finished(&cluster) >= 20).then_some(()))
        .expect("the array never got going");
    let before: Vec<Value> = json_lines(&cli_ok(&cluster, &["job", "results", &job, "--json"]))
        .into_iter()
        .filter(|r| r["state"] == "SUCCEEDED")
        .collect();
    assert!(before.len() < 120, "the array ended before the kill");

    cluster.kill_master();
    cluster.restart_master();
    cluster.wait_agents(2);

    let (code, said) = wait(&cluster, &job);
    assert_eq!(code, 0, "{said}");
    let results = json_lines(&cli_ok(&cluster, &["job", "results", &job, "--json"]));
    assert_eq!(results.len(), 120);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["state"], "SUCCEEDED", "{r}");
        assert_eq!(r["index"], i as u64, "{r}");
    }
    // The ledger counted every task once, redelivered ends included
    // (exactly, when no launch was lost in flight with the master).
    if results.iter().all(|r| r["attempts"] == 1) {
        assert_ledger_matches(&cluster, &job, &results);
    } else {
        let row = usage_of(&cluster, &job);
        let fuel: u64 = results.iter().map(|r| r["fuel"].as_u64().unwrap()).sum();
        assert!(row["fuel"].as_u64().unwrap() >= fuel, "{row}");
    }
    // What had finished is as it was: same attempt, same task, same agent.
    for r in &before {
        let after = &results[r["index"].as_u64().unwrap() as usize];
        for field in ["attempts", "task_id", "agent", "exit_code"] {
            assert_eq!(after[field], r[field], "{field}: {r} then {after}");
        }
    }
    let out = tempfile::tempdir().unwrap();
    cli_ok(
        &cluster,
        &[
            "job",
            "results",
            &job,
            "--output",
            out.path().to_str().unwrap(),
        ],
    );
    for i in 0..120 {
        let stdout = std::fs::read_to_string(out.path().join(i.to_string())).unwrap();
        assert_eq!(stdout, format!("slept 300 i{i}\n"), "index {i}");
    }
    // A job that ended before the restart keeps its results, and new
    // jobs get ids of the new start.
    assert_eq!(show(&cluster, &done_before)["succeeded"], 2);
    let kept = json_lines(&cli_ok(
        &cluster,
        &["job", "results", &done_before, "--json"],
    ));
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|r| r["state"] == "SUCCEEDED"), "{kept:?}");
    let second = submit(&cluster, "hello", &["-n", "2"], &[]);
    assert_ne!(job, second);
    assert_ne!(done_before, second);
    assert_eq!(wait(&cluster, &second).0, 0);
}

#[test]
fn an_ended_job_past_the_retention_keeps_its_summary_only() {
    let _cores = side_by_side();
    let cluster = Cluster::start(1, &["--job-retention", "1s"], &[]);
    let job = submit(&cluster, "hello", &["-n", "3"], &[]);
    assert_eq!(wait(&cluster, &job).0, 0);
    let expired = support::wait_for(LIMIT, || {
        let summary = show(&cluster, &job);
        (summary["expired"] == true).then_some(summary)
    })
    .expect("the job's results never expired");
    assert_eq!(expired["state"], "SUCCEEDED");
    assert_eq!(expired["succeeded"], 3);
    let o = cli(&cluster, &["job", "results", &job]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("retention"), "{}", text(&o.stderr));
}

#[test]
fn a_held_job_keeps_its_module_past_the_artifact_ttl() {
    let _cores = side_by_side();
    let cluster = Cluster::start(1, &["--artifact-ttl", "1s"], &[]);
    let job = submit(&cluster, "hello", &["-n", "2", "--hold"], &[]);
    // Several sweeps pass while nothing uses the module.
    std::thread::sleep(Duration::from_secs(4));
    cli_ok(&cluster, &["job", "release", &job]);
    let (code, said) = wait(&cluster, &job);
    assert_eq!(code, 0, "{said}");
}

#[test]
fn a_machine_lost_mid_array_has_its_indices_retried_once() {
    let _cores = side_by_side();
    let mut cluster = Cluster::start(
        2,
        &["--agent-heartbeat", "300ms", "--agent-timeout", "1500ms"],
        &[],
    );
    // 80 sleepers of 2 s, 4 at a time per agent: 20 s of work in all.
    let job = submit(
        &cluster,
        "sleeper",
        &["-n", "80", "--cpus", "0.25"],
        &["2000", "i{i}"],
    );
    let agent = cluster.agent_id(0);
    let running_on_victim = || {
        let state: Value = serde_json::from_str(&cluster.get("/state")).ok()?;
        let ids: Vec<String> = state["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["agent"] == agent.as_str() && t["state"] == "RUNNING")
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        (ids.len() >= 2).then_some(ids)
    };
    let victims = support::wait_for(LIMIT, running_on_victim).expect("agent 0 never ran tasks");
    cluster.kill_machine(0);

    let (code, said) = wait(&cluster, &job);
    assert_eq!(code, 0, "{said}");
    let results = json_lines(&cli_ok(&cluster, &["job", "results", &job, "--json"]));
    assert_eq!(results.len(), 80);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["state"], "SUCCEEDED", "{r}");
        assert_eq!(r["stdout_head"], format!("slept 2000 i{i}\n"), "{r}");
        assert!(
            r["attempts"].as_u64().unwrap() <= 2,
            "ran more than twice: {r}"
        );
    }
    // What ran on the lost machine ran again, once, on the other one (a
    // task seen running may yet have finished before the kill landed).
    let mut retried = 0;
    for victim in &victims {
        let index: usize = victim.rsplit('-').nth(1).unwrap().parse().unwrap();
        let r = &results[index];
        if r["attempts"] == 2 {
            assert_ne!(r["agent"], agent.as_str(), "{r}");
            retried += 1;
        } else {
            assert_eq!(r["agent"], agent.as_str(), "{r}");
        }
    }
    assert!(retried > 0, "nothing of the lost machine was retried");
}

/// A 100,000-index array of a real guest, every index's result checked:
/// its state, its one attempt, its task and the stdout it printed (kept by
/// the master; the agents keep few sandboxes), and the ledger's sum.
#[test]
fn a_hundred_thousand_index_array_runs_and_every_result_is_checked() {
    let _cores = alone();
    const N: usize = 100_000;
    // Busy cores delay heartbeats: an agent is not declared lost over it
    // (its tasks would run again, and this test counts one attempt each).
    let cluster = Cluster::start(2, &["--agent-timeout", "30s"], &["--max-sandboxes", "1000"]);
    let job = submit(
        &cluster,
        "hello",
        &["-n", &N.to_string(), "--cpus", "0.05"],
        &["--index={i}"],
    );
    let mut cmd = cluster.cli();
    cmd.env("WASMOS_MASTER", &cluster.url)
        .args(["job", "wait", &job]);
    let o = output_within(cmd, Duration::from_secs(900));
    assert!(o.status.success(), "{}", text(&o.stderr));

    let results = json_lines(&cli_ok(&cluster, &["job", "results", &job, "--json"]));
    assert_eq!(results.len(), N);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i as u64, "{r}");
        assert_eq!(r["state"], "SUCCEEDED", "{r}");
        assert_eq!(r["exit_code"], 0, "{r}");
        assert_eq!(r["attempts"], 1, "{r}");
        assert_eq!(r["task_id"], format!("{job}-{i}-1"), "{r}");
        let head = r["stdout_head"].as_str().unwrap_or_default();
        assert!(head.contains(&format!("argv[1]=--index={i}\n")), "{r}");
        assert!(head.contains(&format!("env WASMOS_INDEX={i}\n")), "{r}");
    }
    let summary = show(&cluster, &job);
    assert_eq!(summary["succeeded"], N as u64, "{summary}");
    assert_ledger_matches(&cluster, &job, &results);
}

/// Priorities order an owner's jobs, `--max-running` caps an array,
/// `--after-each` runs index i after index i of another job succeeded (and
/// fails it where that one failed), `--after-any` runs after a job however
/// it ended.
#[test]
fn priorities_caps_and_index_wise_dependencies() {
    let _cores = side_by_side();
    // One agent that runs one whole-cpu task at a time.
    let cluster = Cluster::start(1, &[], &["--cpus", "1"]);

    // Two jobs freed by the same gate: the later, higher-priority one runs
    // first, all of it, while the older one waits.
    let gate = submit(&cluster, "sleeper", &["--cpus", "1", "--hold"], &["100"]);
    let low = submit(
        &cluster,
        "sleeper",
        &["-n", "3", "--cpus", "1", "--after", &gate],
        &["3000"],
    );
    let high = submit(
        &cluster,
        "sleeper",
        &[
            "-n",
            "3",
            "--cpus",
            "1",
            "--priority",
            "10",
            "--after",
            &gate,
        ],
        &["100"],
    );
    cli_ok(&cluster, &["job", "release", &gate]);
    assert_eq!(wait(&cluster, &high).0, 0);
    let low_then = show(&cluster, &low);
    assert_eq!(
        low_then["succeeded"], 0,
        "the older, lower job waited: {low_then}"
    );
    assert_eq!(wait(&cluster, &low).0, 0);

    // At most two of an array at once.
    let capped = submit(
        &cluster,
        "sleeper",
        &["-n", "6", "--cpus", "0.1", "--max-running", "2"],
        &["400"],
    );
    let mut most = 0;
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed() < LIMIT, "the capped job never ended");
        let job = show(&cluster, &capped);
        most = most.max(job["running"].as_u64().unwrap_or(0));
        if job["state"] == "SUCCEEDED" {
            break;
        }
        assert_ne!(job["state"], "FAILED", "{job}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!((1..=2).contains(&most), "{most} ran at once");

    // Index i of `each` runs once index i of `parts` succeeded: only index
    // 0 of `parts` exits 0.
    let parts = submit(
        &cluster,
        "exitcode",
        &["-n", "4", "--cpus", "0.1"],
        &["{i}"],
    );
    let each = submit(
        &cluster,
        "hello",
        &["-n", "4", "--cpus", "0.1", "--after-each", &parts],
        &["--index={i}"],
    );
    let any = submit(&cluster, "hello", &["--after-any", &parts], &[]);
    assert_eq!(wait(&cluster, &parts).0, 1);
    assert_eq!(wait(&cluster, &each).0, 1);
    let results = json_lines(&cli_ok(&cluster, &["job", "results", &each, "--json"]));
    let states: Vec<&str> = results
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["SUCCEEDED", "FAILED", "FAILED", "FAILED"],
        "{results:?}"
    );
    assert_eq!(results[1]["attempts"], 0, "never started: {}", results[1]);
    assert_eq!(wait(&cluster, &any).0, 0, "it runs after a failed job too");
}
