//! End-to-end tests of the command line: `wasmos run` and the operator
//! commands (`ps`, `logs`, `kill`, `ls`, `cat`, `agents`, `frameworks`,
//! `roles`) as real processes against real `wasmos master`/`wasmos agent`
//! processes on loopback (or, for `run --local`, no cluster at all).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::{Cluster, component, guest, wait_for, wasmos};

const SPIN_WAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"#;

const TRAP_WAT: &str = r#"(module (func (export "_start") unreachable))"#;

/// Runs `cmd` to its end (at most 90 s, generous for a loaded machine).
fn output(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.output().expect("run wasmos"));
    });
    rx.recv_timeout(Duration::from_secs(90))
        .unwrap_or_else(|_| panic!("{what} did not end within 90 s"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `wasmos ARGS --master URL`, run to its end.
fn cli(url: &str, args: &[&str]) -> Output {
    let mut cmd = wasmos();
    cmd.args(args).args(["--master", url]);
    output(cmd)
}

/// Like [`cli`], asserting success; returns stdout.
fn cli_ok(url: &str, args: &[&str]) -> String {
    let o = cli(url, args);
    assert!(
        o.status.success(),
        "wasmos {args:?} failed ({}):\n{}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

/// `wasmos run MODULE OPTIONS -- ARGS` against the cluster at `url`.
fn run(url: &str, module: &Path, options: &[&str], args: &[&str]) -> Output {
    let mut cmd = wasmos();
    cmd.arg("run")
        .arg(module)
        .args(options)
        .args(["--master", url, "--"])
        .args(args);
    output(cmd)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The task's entry in `wasmos ps --json`.
fn ps_task(url: &str, id: &str) -> Option<Value> {
    json_lines(&cli_ok(url, &["ps", "--json"]))
        .into_iter()
        .find(|t| t["id"] == id)
}

/// Waits until `ps --json` shows the task in `state`.
fn wait_state(url: &str, id: &str, state: &str) {
    wait_for(Duration::from_secs(30), || {
        (ps_task(url, id)?["state"] == state).then_some(())
    })
    .unwrap_or_else(|| panic!("task {id} never got {state}: {:?}", ps_task(url, id)));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

/// The one line of an error, checked to be one line.
fn one_line_error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn run_expands_the_index_reports_json_per_task_and_prints_a_single_stdout() {
    let cluster = Cluster::start(2, &[], &["--cpus", "1"]);
    let url = &cluster.url;
    let o = run(
        url,
        &guest("hello"),
        &["--instances", "6", "--json", "--env", "IDX=v{i}"],
        &["item-{i}", "plain"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let tasks = json_lines(&stdout(&o));
    assert_eq!(tasks.len(), 6, "{}", stdout(&o));
    let mut seen: Vec<u64> = tasks.iter().map(|t| t["index"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..6).collect::<Vec<u64>>());
    for t in &tasks {
        let i = t["index"].as_u64().unwrap();
        let out = t["stdout"].as_str().unwrap();
        assert_eq!(t["state"], "FINISHED", "{t}");
        assert_eq!(t["reason"], "", "{t}");
        assert_eq!(t["exit_code"], 0, "{t}");
        assert!(!t["agent"].as_str().unwrap().is_empty(), "{t}");
        assert!(t["usage"]["fuel"].as_u64().unwrap() > 0, "{t}");
        assert_eq!(
            t["usage"]["stdout_bytes"].as_u64().unwrap(),
            out.len() as u64
        );
        assert!(
            out.contains(&format!("argv[1]=item-{i}\n")),
            "task {i}: {out}"
        );
        assert!(out.contains("argv[2]=plain\n"), "task {i}: {out}");
        assert!(out.contains(&format!("env IDX=v{i}\n")), "task {i}: {out}");
        assert!(
            out.contains(&format!("argv[0]={}\n", t["id"].as_str().unwrap())),
            "{out}"
        );
    }

    // The table: on stderr; several instances print no stdout.
    let o = run(url, &guest("hello"), &["-n", "3"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let table = stderr(&o);
    assert!(table.contains("3 tasks"), "{table}");
    assert!(table.contains("FINISHED"), "{table}");
    assert!(table.contains("p50") && table.contains("p99"), "{table}");
    assert!(table.contains("fuel"), "{table}");

    // One instance: its stdout is ours.
    let o = run(url, &guest("hello"), &["--env", "K=x"], &["solo-{i}"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("argv[1]=solo-0\nenv K=x\n"), "{out}");
}

#[test]
fn a_failed_task_exits_1_and_a_usage_error_exits_2() {
    let cluster = Cluster::start(1, &[], &[]);
    let url = &cluster.url;
    let o = run(url, &guest("exitcode"), &["-n", "2"], &["3"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let table = stderr(&o);
    assert!(table.contains("FAILED"), "{table}");
    assert!(table.contains("EXIT_NONZERO"), "{table}");
    assert!(table.contains("exit 3"), "{table}");

    let dir = tempfile::tempdir().unwrap();
    let trap = write(dir.path(), "trap.wat", TRAP_WAT);
    let o = run(url, &trap, &["--json"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let tasks = json_lines(&stdout(&o));
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["state"], "FAILED", "{}", tasks[0]);
    assert_eq!(tasks[0]["reason"], "TRAP", "{}", tasks[0]);

    // The same guest succeeding exits 0 (the failure above was the task's).
    let o = run(url, &guest("exitcode"), &[], &["0"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "exiting with 0\n");

    for (flags, named) in [
        (&["--cpus", "abc"][..], "abc"),
        (&["--mem", "12parsecs"][..], "12parsecs"),
        (&["--instances", "0"][..], "0"),
        (&["--timeout", "soon"][..], "soon"),
        (&["--env", "NOEQUALS"][..], "NOEQUALS"),
    ] {
        let o = run(url, &guest("hello"), flags, &[]);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(named), "{flags:?}: {}", stderr(&o));
    }
}

#[test]
fn inputs_of_a_file_and_a_directory_land_in_the_sandbox_root() {
    let cluster = Cluster::start(1, &[], &[]);
    let url = &cluster.url;
    let dir = tempfile::tempdir().unwrap();
    let notes = write(dir.path(), "notes.txt", "file input\n");
    write(dir.path(), "books/sub/deep.txt", "deep input\n");
    write(dir.path(), "books/top.txt", "top\n");
    let books = dir.path().join("books");
    let inputs = [
        "--input",
        notes.to_str().unwrap(),
        "--input",
        books.to_str().unwrap(),
    ];
    let files = guest("files");
    for (args, expected) in [
        (&["read", "notes.txt"][..], "file input\n"),
        (&["read", "books/sub/deep.txt"][..], "deep input\n"),
        (&["ls", "books"][..], "sub\ntop.txt\n"),
        (&["ls"][..], "books\nnotes.txt\n"),
    ] {
        let o = run(url, &files, &inputs, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), expected, "{args:?}");
    }
}

/// Under a `ulimit -v` of 16 GiB the agent's engine fits what it may map
/// (a fixed pool of 2,000 slots of 4 GiB could not be made).
#[test]
fn run_local_works_under_an_address_space_limit() {
    let program = env!("CARGO_BIN_EXE_wasmos");
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -v 16777216 && exec "$0" run --local "$1" --instances 20 -- x"#)
        .arg(program)
        .arg(guest("hello"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("FINISHED"), "{}", stderr(&o));
}

/// A component built for wasm32-wasip2 runs as a module does: validated
/// on the way in, its output and outcome printed.
#[test]
fn run_local_runs_a_preview_2_component() {
    let mut cmd = wasmos();
    cmd.args(["run", "--local", "--json", "--instances", "3"])
        .arg(component("hello"))
        .args(["--", "p2-{i}"]);
    let o = output(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut seen: Vec<String> = stdout(&o)
        .lines()
        .map(|line| {
            let task: Value = serde_json::from_str(line).unwrap();
            assert_eq!(task["state"], "FINISHED", "{line}");
            task["stdout"]
                .as_str()
                .unwrap()
                .lines()
                .nth(1)
                .unwrap()
                .to_owned()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ["argv[1]=p2-0", "argv[1]=p2-1", "argv[1]=p2-2"]);
    let mut cmd = wasmos();
    cmd.args(["run", "--local"]).arg(component("trap"));
    let o = output(cmd);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("TRAP"), "{}", stderr(&o));
}

#[test]
fn run_local_needs_no_cluster_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let unused = unused_port();
    let mut cmd = wasmos();
    cmd.args(["run", "--local"])
        .arg(guest("hello"))
        .args(["--", "local-{i}"])
        .env("WASMOS_MASTER", format!("http://127.0.0.1:{unused}"))
        .env("TMPDIR", tmp.path());
    let o = output(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("argv[1]=local-0\n"), "{}", stdout(&o));
    assert!(stderr(&o).contains("FINISHED"), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the throwaway cluster left {left:?}");

    // A failing task on the local cluster fails the command too.
    let dir = tempfile::tempdir().unwrap();
    let trap = write(dir.path(), "trap.wat", TRAP_WAT);
    let mut cmd = wasmos();
    cmd.args(["run", "--local"])
        .arg(&trap)
        .env("TMPDIR", tmp.path());
    let o = output(cmd);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("TRAP"), "{}", stderr(&o));
}

#[test]
fn on_picks_agents_by_what_they_report_and_no_operator_can_fake_it() {
    let tmp = tempfile::tempdir().unwrap();
    let here = format!("arch={}", std::env::consts::ARCH);
    let mut cmd = wasmos();
    cmd.args([
        "run",
        "--local",
        "--on",
        &here,
        "--on",
        &format!("os={}", std::env::consts::OS),
    ])
    .arg(guest("hello"))
    .env("TMPDIR", tmp.path());
    let o = output(cmd);
    assert!(o.status.success(), "{}", stderr(&o));

    let mut cmd = wasmos();
    cmd.args(["run", "--local", "--on", "arch=sparc64"])
        .arg(guest("hello"))
        .env("TMPDIR", tmp.path());
    let err = one_line_error(&output(cmd));
    assert!(err.contains("--on arch=sparc64"), "{err}");
    assert!(err.contains(&here), "it says what this machine is: {err}");

    // The agent's own attributes are not an operator's to set.
    let mut cmd = wasmos();
    cmd.args(["agent", "--attr", "arch=aarch64", "--work-dir"])
        .arg(tmp.path().join("agent"))
        .args(["--master", &format!("http://127.0.0.1:{}", unused_port())]);
    let err = one_line_error(&output(cmd));
    assert!(
        err.contains("the attribute `arch` is the agent's own"),
        "{err}"
    );
    assert!(err.contains(&here), "{err}");
}

/// A loopback port nothing listens on (bound, then released).
fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn errors_are_one_line_and_say_what_to_do() {
    let url = format!("http://127.0.0.1:{}", unused_port());
    let o = run(&url, &guest("hello"), &[], &[]);
    let err = one_line_error(&o);
    assert!(err.contains(&format!("no master at {url}")), "{err}");
    assert!(err.contains("wasmos local"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wasm");
    let err = one_line_error(&run(&url, &missing, &[], &[]));
    assert!(err.contains("missing.wasm: no such file"), "{err}");

    let junk = write(dir.path(), "junk.wasm", "hello, not a module\n");
    let err = one_line_error(&run(&url, &junk, &[], &[]));
    assert!(err.contains("junk.wasm is not a wasm module"), "{err}");
    assert!(err.contains("magic"), "{err}");

    let bad_wat = write(
        dir.path(),
        "bad.wat",
        "(module\n  (func (export \"_start\") bogus))",
    );
    let err = one_line_error(&run(&url, &bad_wat, &[], &[]));
    assert!(err.contains("bad.wat is not a wasm module"), "{err}");
    assert!(err.contains("bad.wat:2:"), "{err}");

    // Valid text, invalid module: the validator's message.
    let invalid = write(
        dir.path(),
        "invalid.wat",
        r#"(module (func (export "_start") (result i32)))"#,
    );
    let err = one_line_error(&run(&url, &invalid, &[], &[]));
    assert!(err.contains("invalid.wat is not a wasm module"), "{err}");
    assert!(err.contains("type mismatch"), "{err}");

    let err = one_line_error(&run(
        &url,
        &guest("hello"),
        &["--input", dir.path().join("absent.csv").to_str().unwrap()],
        &[],
    ));
    assert!(err.contains("absent.csv: no such file"), "{err}");

    let o = output({
        let mut cmd = wasmos();
        cmd.args(["run", "--help"]);
        cmd
    });
    assert!(o.status.success());
    let help = stdout(&o);
    for flag in [
        "--instances",
        "--cpus",
        "--mem",
        "--disk",
        "--max-fuel",
        "--timeout",
        "--env",
        "--input",
        "--role",
        "--master",
        "--local",
        "--detach",
        "--json",
        "Examples:",
        "{i}",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn detached_jobs_run_in_the_master_and_ps_logs_kill_follow_their_tasks() {
    let cluster = Cluster::start(1, &[], &[]);
    let url = &cluster.url;
    let o = run(url, &guest("sleeper"), &["--detach"], &["1500"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let job = stdout(&o).trim().to_string();
    assert!(job.starts_with('j') && !job.contains('\n'), "{job}");
    assert!(stderr(&o).contains("wasmos job wait"), "{}", stderr(&o));
    let task_id = format!("{job}-0-1");
    let id = task_id.as_str();
    wait_for(Duration::from_secs(30), || ps_task(url, id)).expect("ps lists the job's task");
    // Once it runs (and has printed nothing yet), `logs --follow` waits for
    // the end of the task and prints everything.
    wait_for(Duration::from_secs(30), || {
        let state = ps_task(url, id)?["state"].clone();
        (state == "RUNNING" || state == "FINISHED").then_some(())
    })
    .expect("the detached task never ran");
    let logs = cli_ok(url, &["logs", "--follow", id]);
    assert_eq!(logs, "slept 1500\n");
    wait_state(url, id, "FINISHED");
    let pieces = json_lines(&cli_ok(url, &["logs", "--json", id]));
    assert_eq!(pieces.len(), 1, "{pieces:?}");
    assert_eq!(pieces[0]["text"], "slept 1500\n");
    assert_eq!(pieces[0]["stream"], "stdout");
    // The master runs the job: it ends as its task did.
    let waited = cli(url, &["job", "wait", &job]);
    assert!(waited.status.success(), "{}", stderr(&waited));

    // A task that never ends, killed by `wasmos kill`.
    let dir = tempfile::tempdir().unwrap();
    let spin = write(dir.path(), "spin.wat", SPIN_WAT);
    let o = run(url, &spin, &["--detach", "--json", "-n", "2"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let submitted = json_lines(&stdout(&o));
    assert_eq!(submitted.len(), 1, "{}", stdout(&o));
    let job = submitted[0]["job_id"].as_str().unwrap();
    let ids: Vec<String> = (0..2).map(|i| format!("{job}-{i}-1")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for id in &ids {
        wait_state(url, id, "RUNNING");
    }
    let said = cli_ok(url, &["kill", ids[0]]);
    assert!(said.contains(ids[0]), "{said}");
    wait_state(url, ids[0], "KILLED");
    // Only the one named.
    assert_eq!(ps_task(url, ids[1]).unwrap()["state"], "RUNNING");
    let said = json_lines(&cli_ok(url, &["kill", "--json", ids[1]]));
    assert_eq!(said[0]["task"], ids[1]);
    assert_eq!(said[0]["kill_sent"], true);
    wait_state(url, ids[1], "KILLED");

    // Without --detach, Ctrl-C kills the job's tasks and tears it down.
    let mut cmd = wasmos();
    cmd.arg("run")
        .arg(&spin)
        .args(["-n", "2", "--json", "--master", url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id().to_string();
    let running = wait_for(Duration::from_secs(30), || {
        let tasks = json_lines(&cli_ok(url, &["ps", "--json"]));
        let spinning: Vec<String> = tasks
            .iter()
            .filter(|t| t["state"] == "RUNNING" && !ids.contains(&t["id"].as_str().unwrap()))
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        (spinning.len() == 2).then_some(spinning)
    })
    .expect("the attached job's tasks never ran");
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().unwrap());
    });
    let o = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("run did not end after Ctrl-C");
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let reported = json_lines(&stdout(&o));
    assert_eq!(reported.len(), 2);
    for t in &reported {
        assert_eq!(t["state"], "KILLED", "{t}");
    }
    for id in &running {
        wait_state(url, id, "KILLED");
    }
}

#[test]
fn operator_commands_list_agents_frameworks_roles_and_task_files() {
    let cluster = Cluster::start(2, &[], &[]);
    let url = &cluster.url;

    let agents = json_lines(&cli_ok(url, &["agents", "--json"]));
    assert_eq!(agents.len(), 2, "{agents:?}");
    for a in &agents {
        assert_eq!(a["state"], "connected", "{a}");
    }
    let table = cli_ok(url, &["agents"]);
    assert!(table.starts_with("AGENT"), "{table}");
    let platform = format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH);
    for a in &agents {
        assert!(table.contains(a["id"].as_str().unwrap()), "{table}");
        let attributes = a["attributes"].as_array().unwrap();
        assert!(
            attributes.contains(&Value::from(format!("os={}", std::env::consts::OS))),
            "{a}"
        );
        assert!(
            attributes.contains(&Value::from(format!("arch={}", std::env::consts::ARCH))),
            "{a}"
        );
    }
    assert_eq!(table.matches(&platform).count(), 2, "{table}");
    // A page at a time: the same agents in the same order, and --limit
    // says what it left out.
    let ids = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect()
    };
    let paged = json_lines(&cli_ok(url, &["agents", "--json", "--page-size", "1"]));
    assert_eq!(ids(&paged), ids(&agents));
    let limited = cli(url, &["agents", "--limit", "1"]);
    assert!(limited.status.success(), "{}", stderr(&limited));
    assert_eq!(stdout(&limited).lines().count(), 2, "{}", stdout(&limited));
    assert!(
        stderr(&limited).contains("1 of 2 agents shown (--limit 1)"),
        "{}",
        stderr(&limited)
    );

    // A task that writes a file: `ls` and `cat` read it back.
    let o = run(
        url,
        &guest("files"),
        &["--json", "--disk", "1MiB"],
        &["write", "out.txt", "hello-file"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let task = &json_lines(&stdout(&o))[0];
    let id = task["id"].as_str().unwrap();
    let entries = json_lines(&cli_ok(url, &["ls", id, "--json"]));
    assert!(
        entries
            .iter()
            .any(|e| e["name"] == "out.txt" && e["size"] == 10 && e["dir"] == false),
        "{entries:?}"
    );
    assert!(cli_ok(url, &["ls", id]).contains("out.txt"));
    assert_eq!(cli_ok(url, &["cat", id, "out.txt"]), "hello-file");
    let pieces = json_lines(&cli_ok(url, &["cat", "--json", id, "out.txt"]));
    assert_eq!(pieces[0]["text"], "hello-file");
    assert_eq!(pieces[0]["path"], "out.txt");
    let err = cli(url, &["cat", id, "nope.txt"]);
    assert!(!err.status.success());

    // A detached job in a role of its own shows in frameworks and roles.
    let o = run(
        url,
        &guest("sleeper"),
        &["--detach", "--role", "analytics"],
        &["30000"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let sleeper = format!("{}-0-1", stdout(&o).trim());
    wait_state(url, &sleeper, "RUNNING");
    let frameworks = json_lines(&cli_ok(url, &["frameworks", "--json"]));
    assert!(
        frameworks
            .iter()
            .any(|f| f["role"] == "analytics" && f["name"] == "jobs of local"),
        "{frameworks:?}"
    );
    assert!(cli_ok(url, &["frameworks"]).contains("analytics"));
    let paged = json_lines(&cli_ok(url, &["frameworks", "--json", "--page-size", "1"]));
    assert_eq!(ids(&paged), ids(&frameworks));
    let tasks = json_lines(&cli_ok(url, &["ps", "--json"]));
    assert!(tasks.len() >= 2, "{tasks:?}");
    let paged = json_lines(&cli_ok(url, &["ps", "--json", "--page-size", "1"]));
    assert_eq!(ids(&paged), ids(&tasks));
    let one = json_lines(&cli_ok(url, &["ps", "--json", "--limit", "1"]));
    assert_eq!(ids(&one), ids(&tasks[..1]));

    let set = cli_ok(url, &["roles", "set", "analytics", "--weight", "3"]);
    assert!(set.contains("analytics"), "{set}");
    let roles = json_lines(&cli_ok(url, &["roles", "--json"]));
    let role = roles
        .iter()
        .find(|r| r["role"] == "analytics")
        .unwrap_or_else(|| panic!("no role analytics: {roles:?}"));
    assert_eq!(role["weight"], 3.0, "{role}");
    assert!(cli_ok(url, &["roles"]).contains("analytics"));
    let o = cli(url, &["roles", "set", "analytics"]);
    assert_eq!(o.status.code(), Some(1));

    cli_ok(url, &["kill", &sleeper]);
    wait_state(url, &sleeper, "KILLED");
}

#[test]
fn an_input_dir_with_a_symlink_out_or_a_loop_is_refused_naming_it() {
    let cluster = Cluster::start(1, &[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write(&data, "ok.txt", "fine\n");
    std::os::unix::fs::symlink("/etc/passwd", data.join("passwd")).unwrap();
    let files = guest("files");
    let input = ["--input", data.to_str().unwrap()];
    let o = run(&cluster.url, &files, &input, &["ls", "data"]);
    let err = one_line_error(&o);
    assert!(err.contains("passwd") && err.contains("outside"), "{err}");
    std::fs::remove_file(data.join("passwd")).unwrap();

    std::os::unix::fs::symlink(".", data.join("self")).unwrap();
    let start = std::time::Instant::now();
    let o = run(&cluster.url, &files, &input, &["ls", "data"]);
    assert!(one_line_error(&o).contains("loop"), "{}", stderr(&o));
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn a_trap_message_holds_the_wasm_backtrace_and_no_host_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trap = write(dir.path(), "trap.wat", TRAP_WAT);
    let mut cmd = wasmos();
    cmd.args(["run", "--local", "--json"])
        .arg(&trap)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .env("TMPDIR", tmp.path());
    let o = output(cmd);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let task = json_lines(&stdout(&o))
        .into_iter()
        .find(|t| t["reason"] == "TRAP")
        .unwrap_or_else(|| panic!("no TRAP in {}", stdout(&o)));
    let message = task["message"].as_str().unwrap();
    assert!(message.contains("wasm backtrace"), "{message}");
    for host in ["stack backtrace", "rust_begin_unwind", "/rustc/", ".rs:"] {
        assert!(
            !message.contains(host),
            "host frames ({host}) in: {message}"
        );
    }
}
