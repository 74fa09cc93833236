//! `wasmos local`: a whole cluster in one process that the other commands
//! reach, stopped cleanly by Ctrl-C.

mod support;

use std::time::Duration;

#[test]
fn local_runs_a_cluster_the_other_commands_reach_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    let mut cmd = support::wasmos();
    cmd.env("WASMOS_PROFILE", &profile);
    cmd.args([
        "local",
        "--agents",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--work-dir",
    ])
    .arg(dir.path());
    let (mut child, lines) = support::spawn_until(cmd, &["master on"]);
    let url = lines[0]
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the master's URL")
        .to_string();
    let agents = support::wait_for(Duration::from_secs(30), || {
        // No --master: the profile `local` saved says where it is.
        let out = support::wasmos()
            .env("WASMOS_PROFILE", &profile)
            .args(["agents", "--json"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.lines().filter(|l| l.contains("\"connected\"")).count() == 2).then_some(text)
    })
    .expect("two agents connect");
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
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = support::wait_for(Duration::from_secs(10), || child.try_wait().unwrap());
    assert!(exited.expect("local stops on Ctrl-C").success());
}
