//! A master and two agents of one cpu each as real processes (plaintext
//! on loopback, the registry on disk, agents' work on `/dev/shm`), for the
//! benches that drive the job service.

use std::path::Path;
use std::time::Duration;

use wasmos_sdk::{Client, proto as v1};

use super::framework_path::AGENTS;
use super::*;

/// A master and two agents, the master's pid, its gRPC url and HTTP
/// address, and each agent's pid with its executor's.
pub struct Cluster {
    /// Killed when the cluster is dropped.
    _processes: Processes,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    pub master: u32,
    pub url: String,
    pub http: String,
    pub agents: Vec<(u32, u32)>,
}

/// A new cluster; `master_args` go to `wasmos master` after its defaults.
pub fn cluster(master_args: &[&str]) -> Cluster {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm".into()
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::tempdir_in(&base).expect("work dir");
    let master_dir = tempfile::tempdir().expect("the master's work dir");
    let mut args = vec![
        "master",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--insecure",
    ];
    args.extend(master_args);
    let (master, lines) = spawn(&args, master_dir.path(), &["listening on", "/metrics on"]);
    let master_pid = master.id();
    let mut processes = Processes(vec![master], Vec::new());
    let url = url_in(&lines[0]);
    let http = last_word(&lines[1]);
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let hostname = format!("agent-{i}");
        let (agent, _) = spawn(
            &[
                "agent",
                "--master",
                &url,
                "--cpus",
                "1",
                "--mem",
                "4GiB",
                "--hostname",
                &hostname,
            ],
            &dir.path().join(&hostname),
            &["wasmos agent offering"],
        );
        agents.push(agent.id());
        processes.0.push(agent);
    }
    wait_agents(&http, AGENTS, None);
    // Each agent's executor, whose CPU counts with its agent's.
    let agents: Vec<(u32, u32)> = agents
        .into_iter()
        .enumerate()
        .map(|(i, agent)| {
            let pid_file = dir.path().join(format!("agent-{i}/executor.pid"));
            let executor = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no executor pid in {}", pid_file.display()));
            processes.1.push(executor);
            (agent, executor)
        })
        .collect();
    Cluster {
        _processes: processes,
        _dirs: (dir, master_dir),
        master: master_pid,
        url,
        http,
        agents,
    }
}

impl Cluster {
    /// CPU seconds so far: the master's, then each agent's with its
    /// executor's.
    pub fn cpu(&self) -> Vec<f64> {
        std::iter::once(cpu_seconds(self.master))
            .chain(
                self.agents
                    .iter()
                    .map(|&(agent, executor)| cpu_seconds(agent) + cpu_seconds(executor)),
            )
            .collect()
    }
}

pub fn ended(job: &v1::JobSummary) -> bool {
    matches!(
        job.state(),
        v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled
    )
}

/// Waits for job `id` to end, calling `progress` with each summary seen.
pub async fn wait(
    client: &Client,
    id: &str,
    mut progress: impl FnMut(&v1::JobSummary),
) -> v1::JobSummary {
    loop {
        let job = client.job(id).await.expect("job");
        progress(&job);
        if ended(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
