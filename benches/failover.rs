//! `cargo bench --bench failover`: how long a cluster of three masters on
//! etcd goes without a leader. Each round `kill -9`s the leader and times
//! from the kill to the first job the new leader accepts (`wasmos submit`,
//! tried every 20 ms against every master; a standby names the leader),
//! then starts the killed master
//! again as a standby; a last round stops the leader with SIGTERM (it
//! resigns). One agent, TLS, a real etcd (Debian's) on loopback.
//!
//! Flags: `--kills N` (5), `--lease 5s` (the masters' `--leader-lease`).
//! Prints one JSON line: `failover_median_s`, `failover_max_s`, `lease_s`,
//! `graceful_s`, and each round's time.

#[path = "../tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;
#[path = "support/spawn.rs"]
mod spawn;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use spawn::{flag, spawn_until};
use wasmos_master::etcd::{Etcd, Keys, endpoints, leadership};

const WASMOS: &str = env!("CARGO_BIN_EXE_wasmos");

struct Masters {
    etcd_url: String,
    lease: String,
    dir: PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl Masters {
    fn spawn(&mut self, i: usize, marker: &str) {
        let mut cmd = Command::new(WASMOS);
        cmd.arg("master")
            .args(["--etcd", &self.etcd_url, "--leader-lease", &self.lease])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[i])])
            .arg("--no-http")
            .arg("--work-dir")
            .arg(self.dir.join(format!("master-{i}")))
            .env("WASMOS_LOG", "error");
        self.children[i] = Some(spawn_until(cmd, marker));
    }

    fn urls(&self) -> String {
        let urls: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("https://127.0.0.1:{p}"))
            .collect();
        urls.join(",")
    }

    /// The master that leads, as etcd says (its proclaimed gRPC URL).
    fn leader(&self) -> Option<usize> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let leader = runtime.block_on(async {
            let etcd = Etcd::connect(&endpoints(&self.etcd_url, None).unwrap());
            let keys = Keys::new("/wasmos").unwrap();
            leadership::current_leader(&etcd, &keys).await
        });
        let url = leader.ok()??.grpc_url;
        self.ports
            .iter()
            .position(|p| url.ends_with(&format!(":{p}")))
    }

    fn cli(&self) -> Command {
        let admin = self.dir.join("master-0");
        let token = std::fs::read_to_string(admin.join("admin.token")).expect("admin.token");
        let mut cmd = Command::new(WASMOS);
        cmd.env("WASMOS_CA", admin.join("ca.pem"))
            .env("WASMOS_TOKEN", token.trim())
            .env("WASMOS_MASTER", self.urls())
            .env("WASMOS_LOG", "error");
        cmd
    }

    /// Submits a one-task job until a master accepts it; when it did.
    fn submit_until_accepted(&self, module: &Path) -> Instant {
        loop {
            let out = self
                .cli()
                .args(["submit"])
                .arg(module)
                .args(["-n", "1", "--cpus", "0.1"])
                .output()
                .expect("run wasmos submit");
            if out.status.success() {
                return Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Masters {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn main() {
    let kills: usize = flag("--kills", "5").parse().expect("--kills N");
    let lease = flag("--lease", "5s");
    let lease_s: f64 = lease.trim_end_matches('s').parse().expect("--lease Ns");
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wat/hello.wat");

    let etcd = etcd::Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let mut masters = Masters {
        etcd_url: etcd.url.clone(),
        lease,
        dir: dir.path().to_path_buf(),
        ports: (0..3).map(|_| etcd::free_port()).collect(),
        children: (0..3).map(|_| None).collect(),
    };
    masters.spawn(0, "listening on");
    masters.spawn(1, "standing by");
    masters.spawn(2, "standing by");
    let join = masters
        .cli()
        .args(["token", "create", "--agent", "--uses", "10"])
        .output()
        .expect("token create");
    assert!(
        join.status.success(),
        "{}",
        String::from_utf8_lossy(&join.stderr)
    );
    let agent_dir = dir.path().join("agent");
    let mut agent = Command::new(WASMOS);
    agent
        .args([
            "agent",
            "--master",
            &masters.urls(),
            "--cpus",
            "1",
            "--work-dir",
        ])
        .arg(&agent_dir)
        .env("WASMOS_JOIN", String::from_utf8_lossy(&join.stdout).trim())
        .env("WASMOS_LOG", "error");
    let mut agent = spawn_until(agent, "wasmos agent offering");
    masters.submit_until_accepted(&module);

    let mut rounds = Vec::new();
    for _ in 0..kills {
        let leader = masters.leader().expect("a leader");
        let mut child = masters.children[leader].take().unwrap();
        let killed = Instant::now();
        let _ = child.kill();
        let _ = child.wait();
        let accepted = masters.submit_until_accepted(&module);
        rounds.push((accepted - killed).as_secs_f64());
        masters.spawn(leader, "standing by");
    }
    let leader = masters.leader().expect("a leader");
    let mut child = masters.children[leader].take().unwrap();
    let stopped = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let accepted = masters.submit_until_accepted(&module);
    let graceful_s = (accepted - stopped).as_secs_f64();
    let _ = child.wait();

    let _ = agent.kill();
    let _ = agent.wait();
    if let Some(pid) = std::fs::read_to_string(agent_dir.join("executor.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    println!(
        "{}",
        serde_json::json!({
            "failover_median_s": (median * 1000.0).round() / 1000.0,
            "failover_max_s": (max * 1000.0).round() / 1000.0,
            "lease_s": lease_s,
            "graceful_s": (graceful_s * 1000.0).round() / 1000.0,
            "rounds_s": rounds.iter().map(|r| (r * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        })
    );
}
