//! Everything a master and an agent write is their owner's alone, whatever
//! the umask they were started under, and an agent's join secret never
//! shows in `ps`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::{Cluster, guest, spawn_until, wait_for, wasmos};

/// Every file and directory under `dir` whose mode lets anyone but the
/// owner in, with its mode.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map_while(Result::ok) {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.file_type().is_symlink() {
                continue;
            }
            if meta.permissions().mode() & 0o077 != 0 {
                found.push(format!(
                    "{} {:o}",
                    entry.path().display(),
                    meta.permissions().mode() & 0o7777
                ));
            }
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn masters_and_agents_under_umask_022_write_nothing_others_can_read() {
    // SAFETY: umask only sets this test process's mask, which the master
    // and agents it starts inherit; it cannot fail.
    unsafe {
        libc::umask(0o022);
    }
    let cluster = Cluster::start_tls(1, &[], &["--cpus", "2"]);
    let join = cluster.tls.as_ref().unwrap().join.clone();
    let secret = join
        .trim_start_matches("wasmos-join://")
        .split('@')
        .next()
        .unwrap()
        .to_string();

    // A second agent joins with the string in a file, not on its command
    // line (and not in its environment either).
    let join_file = cluster.dir.path().join("join");
    std::fs::write(&join_file, &join).unwrap();
    let work_dir = cluster.dir.path().join("agent-from-file");
    let mut cmd = wasmos();
    cmd.args(["agent", "--master", &cluster.url, "--hostname", "from-file"])
        .args(["--cpus", "1", "--work-dir"])
        .arg(&work_dir)
        .arg("--join-file")
        .arg(&join_file)
        .env_remove("WASMOS_JOIN");
    let (mut from_file, _) = spawn_until(cmd, &["wasmos agent offering"]);
    cluster.wait_agents(2);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", from_file.id())).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&secret),
        "the join secret shows in ps"
    );
    for agent in &cluster.agents {
        let pid = agent.child.as_ref().unwrap().id();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!String::from_utf8_lossy(&cmdline).contains(&secret));
    }

    // Tasks that write files and output, so sandboxes and outputs exist.
    let files = guest("files").display().to_string();
    let out = cluster
        .cli()
        .env("WASMOS_MASTER", &cluster.url)
        .args(["run", &files, "-n", "4", "--disk", "1MiB", "--"])
        .args(["write", "secret.txt", "hunter2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the job: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = cluster.dir.path();
    let sandboxes = wait_for(Duration::from_secs(30), || {
        let count = ["agent-0", "agent-from-file"]
            .iter()
            .filter_map(|a| std::fs::read_dir(root.join(a).join("sandboxes")).ok())
            .map(|d| d.count())
            .sum::<usize>();
        (count >= 4).then_some(count)
    });
    assert!(sandboxes.is_some(), "the tasks' sandboxes are on disk");

    for dir in ["master", "agent-0", "agent-from-file"] {
        let dir = root.join(dir);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        let open = open_to_others(&dir);
        assert!(open.is_empty(), "readable by others: {open:#?}");
    }
    let _ = from_file.kill();
    let _ = from_file.wait();
}

#[test]
fn a_join_string_on_the_command_line_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let out = wasmos()
        .args(["agent", "--master", "https://127.0.0.1:1", "--work-dir"])
        .arg(dir.path().join("agent"))
        .args(["--join", "wasmos-join://not-a-join-string"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shows in `ps`") && stderr.contains("--join-file"),
        "{stderr}"
    );
}
