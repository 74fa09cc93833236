//! `wasmos local`: a whole cluster in one process that the other commands
//! reach, stopped cleanly by Ctrl-C.

mod support;

use std::time::Duration;

/// A running `wasmos local`, its URL and its profile.
struct Local {
    child: std::process::Child,
    url: String,
    profile: std::path::PathBuf,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wasmos local --agents N` in `dir` and waits for every agent;
/// returns it and `wasmos agents --json`.
fn start(dir: &std::path::Path, agents: usize) -> (Local, String) {
    let profile = dir.join("profile.json");
    let mut cmd = support::wasmos();
    cmd.env("WASMOS_PROFILE", &profile);
    cmd.args(["local", "--agents", &agents.to_string()])
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--work-dir")
        .arg(dir);
    let (child, lines) = support::spawn_until(cmd, &["master on"]);
    let url = lines[0]
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the master's URL")
        .to_string();
    let listed = support::wait_for(Duration::from_secs(60), || {
        // No --master: the profile `local` saved says where it is.
        let out = support::wasmos()
            .env("WASMOS_PROFILE", &profile)
            .args(["agents", "--json"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.lines().filter(|l| l.contains("\"connected\"")).count() == agents).then_some(text)
    })
    .unwrap_or_else(|| panic!("{agents} agents connect"));
    let local = Local {
        child,
        url,
        profile,
    };
    (local, listed)
}

#[test]
fn local_runs_a_cluster_the_other_commands_reach_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let (mut local, agents) = start(dir.path(), 2);
    let (url, profile) = (local.url.clone(), local.profile.clone());
    assert!(
        agents
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    assert_eq!(saved["master"], url.as_str());
    assert!(
        dir.path().join("master/artifacts").is_dir(),
        "files live under --work-dir"
    );

    // Ctrl-C (SIGINT) stops it cleanly.
    let status = std::process::Command::new("kill")
        .args(["-INT", &local.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = support::wait_for(Duration::from_secs(10), || local.child.try_wait().unwrap());
    assert!(exited.expect("local stops on Ctrl-C").success());
}

/// Sixteen agents share one engine: its pool is sized for all of them
/// within the address space (sixteen engines of 2,000 slots of 4 GiB each
/// could not be mapped), and a job spread over them runs.
#[test]
fn local_with_sixteen_agents_starts_and_runs_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let (local, _) = start(dir.path(), 16);
    let out = support::wasmos()
        .env("WASMOS_PROFILE", &local.profile)
        .arg("run")
        .arg(support::guest("hello"))
        .args([
            "--instances",
            "64",
            "--cpus",
            "0.25",
            "--master",
            &local.url,
        ])
        .args(["--", "task-{i}"])
        .output()
        .unwrap();
    // The report goes to stderr, task outputs to stdout.
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    let finished = report
        .lines()
        .find(|l| l.trim_start().starts_with("FINISHED"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(finished.trim_end().ends_with(" 64"), "{report}");
}
