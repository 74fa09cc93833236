//! The service files in `dist/services/`: `systemd-analyze verify` accepts
//! the systemd unit, and the commands of the unit and of the launchd job,
//! run as their managers run them (the unit's environment file, the launchd
//! job's join file), start an agent that joins a TLS master, stops cleanly
//! on the SIGTERM a manager sends, leaves its executor running the task, and
//! takes the task back when started again.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Cluster, alive, wait_for};
use wasmos_sdk::{Client, ConnectOptions};

fn services() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/services")
}

/// The systemd unit, with the installed paths replaced by this test's.
fn unit(work_dir: &Path) -> String {
    std::fs::read_to_string(services().join("wasmos-agent.service"))
        .expect("the unit")
        .replace("/usr/local/bin/wasmos", env!("CARGO_BIN_EXE_wasmos"))
        .replace("/var/lib/wasmos-agent", work_dir.to_str().unwrap())
}

/// The value of `key=` in the unit's `[Service]` section.
fn directive<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the unit sets {key}"))
}

/// The launchd job's ProgramArguments, with the installed paths replaced.
fn launchd_arguments(work_dir: &Path) -> Vec<String> {
    let plist = std::fs::read_to_string(services().join("io.wasmos.agent.plist"))
        .expect("the plist")
        .replace("/usr/local/bin/wasmos", env!("CARGO_BIN_EXE_wasmos"))
        .replace("/usr/local/var/wasmos-agent", work_dir.to_str().unwrap());
    let array = plist
        .split("<key>ProgramArguments</key>")
        .nth(1)
        .and_then(|rest| rest.split("</array>").next())
        .expect("ProgramArguments");
    array
        .split("<string>")
        .skip(1)
        .map(|s| s.split("</string>").next().unwrap().to_string())
        .collect()
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    // The account the unit names exists only where it is installed.
    let unit = unit(dir.path())
        .replace("User=wasmos", "User=root")
        .replace("Group=wasmos", "Group=root");
    let path = dir.path().join("wasmos-agent.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd; scripts/test installs it)");
    // A directive it cannot parse is only a warning: none may be printed.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_units_agent_stops_on_sigterm_and_keeps_its_task() {
    let cluster = Cluster::start_tls(0, &["--agent-timeout", "30s"], &[]);
    let work_dir = cluster.dir.path().join("systemd-agent");
    let unit = unit(&work_dir);
    let argv: Vec<String> = directive(&unit, "ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let env_file = cluster.dir.path().join("agent.env");
    let join = &cluster.tls.as_ref().unwrap().join;
    std::fs::write(
        &env_file,
        format!("WASMOS_JOIN={join}\nWASMOS_MASTER={}\n", cluster.url),
    )
    .unwrap();
    std::fs::create_dir_all(&work_dir).unwrap();
    // As systemd runs it: the environment file's variables, and SIGTERM
    // to the main process only (KillMode=process).
    assert_eq!(directive(&unit, "KillMode"), "process");
    let env: Vec<(String, String)> = std::fs::read_to_string(&env_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let start = || {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(env.iter().cloned())
            .current_dir(directive(&unit, "WorkingDirectory"));
        cmd
    };
    stops_on_sigterm_and_keeps_its_task(&cluster, &work_dir, start).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launchd_jobs_agent_stops_on_sigterm_and_keeps_its_task() {
    let cluster = Cluster::start_tls(0, &["--agent-timeout", "30s"], &[]);
    let work_dir = cluster.dir.path().join("launchd-agent");
    let argv = launchd_arguments(&work_dir);
    let join_file = argv
        .iter()
        .position(|a| a == "--join-file")
        .map(|i| argv[i + 1].clone())
        .expect("the job joins with a join file");
    std::fs::create_dir_all(&work_dir).unwrap();
    std::fs::write(&join_file, &cluster.tls.as_ref().unwrap().join).unwrap();
    let url = cluster.url.clone();
    let start = || {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env("WASMOS_MASTER", &url);
        cmd
    };
    stops_on_sigterm_and_keeps_its_task(&cluster, &work_dir, start).await;
    assert!(
        !Path::new(&join_file).exists(),
        "the agent restarted without its join file"
    );
}

/// A three-second sleeper runs on the agent `start` makes; SIGTERM stops
/// the agent (exit 0, "stopping (SIGTERM)") while the executor keeps the
/// task; the join file or variable is then removed, and the agent started
/// again (as `Restart=` or `KeepAlive` would) takes the task back and it
/// finishes, on the same agent id.
async fn stops_on_sigterm_and_keeps_its_task(
    cluster: &Cluster,
    work_dir: &Path,
    start: impl Fn() -> Command,
) {
    let stdout = work_dir.join("agent.stdout");
    let spawn = |start: &dyn Fn() -> Command| -> Child {
        let mut cmd = start();
        cmd.env("WASMOS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap());
        cmd.spawn().expect("start the service's command")
    };
    let mut agent = spawn(&start);
    cluster.wait_agents(1);
    let tls = cluster.tls.as_ref().unwrap();
    let options = ConnectOptions {
        ca_pem: Some(tls.ca_pem.clone()),
        token: Some(tls.token.clone()),
        identity: None,
    };
    let client = Client::connect_with(cluster.url.clone(), options)
        .await
        .unwrap();
    let (run, first_id) =
        support::run_one_sleeper(&client, "service", 3000, Duration::from_secs(60)).await;
    let executor: u32 = std::fs::read_to_string(work_dir.join("executor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let status = wait_for(Duration::from_secs(30), || agent.try_wait().unwrap())
        .expect("the agent stopped on SIGTERM");
    assert!(status.success(), "{status}");
    let said = std::fs::read_to_string(&stdout).unwrap();
    assert!(said.contains("stopping (SIGTERM)"), "{said}");
    assert!(alive(executor), "the executor went with the agent");

    // Joined once, the agent never reads the join string again.
    let _ = std::fs::remove_file(work_dir.join("join"));
    agent = spawn(&|| {
        let mut cmd = start();
        cmd.env_remove("WASMOS_JOIN");
        cmd
    });
    let report = tokio::time::timeout(Duration::from_secs(60), run).await;
    let _ = agent.kill();
    let _ = agent.wait();
    let report = report
        .expect("the restarted agent ended the task within 60 s")
        .unwrap()
        .unwrap();
    assert!(report.succeeded(), "{:?}", report.tasks);
    let task = &report.tasks[0];
    assert_eq!(task.attempts, 1, "the task ran once, across the restart");
    assert_eq!(task.agent_id, first_id);
}
