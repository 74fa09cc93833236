//! Several masters on one etcd: one leads, the others stand by, every
//! registry write is fenced by the leader's election, and a standby takes
//! over a job when the leader is killed, paused or stopped. Real etcd
//! (Debian's), real `wasmos master` and `wasmos agent` processes, TLS, on
//! loopback with ephemeral ports.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::etcd::{Etcd, free_port};
use support::{FAST_MASTER, guest, wait_for, wasmos};
use wasmos_master::etcd::{Etcd as EtcdClient, Keys, endpoints, leadership};
use wasmos_master::store::{EtcdStore, Record, Store, StoreError, Table, Write};
use wasmos_proto::v1;

/// Generous bounds: tests bound failover, the bench measures it.
const LIMIT: Duration = Duration::from_secs(60);
const LEASE: &str = "2s";
const PREFIX: &str = "/ha-test";

/// One `wasmos master --etcd` process and what it printed (stdout and
/// stderr, line by line).
struct MasterProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl MasterProcess {
    /// Waits for a line containing `marker`.
    fn wait_line(&mut self, marker: &str, limit: Duration) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| l.contains(marker)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(marker) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit; its code.
    fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        wait_for(limit, || self.child.try_wait().ok().flatten())
            .map(|status| status.code().unwrap_or(-1))
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        signal(self.pid(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A cluster of masters on one etcd, and agents that know them all.
struct Ha {
    etcd: Etcd,
    dir: tempfile::TempDir,
    /// Each master's gRPC and HTTP ports, fixed so clients can list them.
    ports: Vec<(u16, u16)>,
    masters: Vec<Option<MasterProcess>>,
    /// The master whose work dir holds the admin token (the first leader).
    admin: usize,
    agents: Vec<(Child, PathBuf)>,
}

impl Ha {
    /// `n` masters: the first started (and leading) before the others.
    fn start(n: usize) -> Ha {
        let mut ha = Ha::new(n);
        ha.spawn(0);
        ha.wait_leading(0);
        for i in 1..n {
            ha.spawn(i);
            ha.master(i)
                .wait_line("standing by", LIMIT)
                .expect("a second master stands by");
        }
        ha
    }

    fn new(n: usize) -> Ha {
        Ha {
            etcd: Etcd::start(),
            dir: tempfile::tempdir().unwrap(),
            ports: (0..n).map(|_| (free_port(), free_port())).collect(),
            masters: (0..n).map(|_| None).collect(),
            admin: 0,
            agents: Vec::new(),
        }
    }

    fn work_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("master-{i}"))
    }

    fn spawn(&mut self, i: usize) {
        let (grpc, http) = self.ports[i];
        self.spawn_listening(
            i,
            &format!("127.0.0.1:{grpc}"),
            &format!("127.0.0.1:{http}"),
        );
    }

    /// Starts master `i` on the given addresses instead of its ports.
    fn spawn_listening(&mut self, i: usize, grpc: &str, http: &str) {
        let mut cmd = wasmos();
        cmd.arg("master")
            .args(["--etcd", &self.etcd.url, "--etcd-prefix", PREFIX])
            .args(["--leader-lease", LEASE, "--etcd-compact-every", "1s"])
            .args(["--listen", grpc])
            .args(["--http", http])
            .arg("--work-dir")
            .arg(self.work_dir(i))
            .args(FAST_MASTER)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn wasmos master");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    eprintln!("[master-{i}] {line}");
                    let _ = tx.send(line);
                }
            });
        }
        self.masters[i] = Some(MasterProcess {
            child,
            lines,
            seen: Vec::new(),
        });
    }

    fn master(&mut self, i: usize) -> &mut MasterProcess {
        self.masters[i].as_mut().expect("the master runs")
    }

    /// Waits until master `i` leads and serves; its epoch.
    fn wait_leading(&mut self, i: usize) -> u64 {
        let line = self
            .master(i)
            .wait_line("listening on", LIMIT)
            .unwrap_or_else(|| panic!("master {i} did not lead within {LIMIT:?}"));
        line.rsplit("epoch ")
            .next()
            .and_then(|e| e.trim_end_matches(')').parse().ok())
            .expect("the epoch")
    }

    /// Every master's gRPC URL, comma-separated, as clients take them.
    fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|(grpc, _)| format!("https://127.0.0.1:{grpc}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `wasmos` as the cluster's admin (the first leader's token; every
    /// master's CA is the same), pointed at every master.
    fn cli(&self) -> Command {
        let first = self.work_dir(self.admin);
        let token = std::fs::read_to_string(first.join("admin.token")).expect("admin.token");
        let mut cmd = wasmos();
        cmd.env("WASMOS_CA", first.join("ca.pem"))
            .env("WASMOS_TOKEN", token.trim())
            .env("WASMOS_MASTER", self.urls());
        cmd
    }

    /// Submits a job of `n` sleepers of a quarter cpu, each sleeping
    /// `ms` milliseconds; its id.
    fn submit_sleepers(&self, n: u32, ms: u32) -> String {
        let sleeper = guest("sleeper");
        self.cli_ok(&[
            "submit",
            sleeper.to_str().unwrap(),
            "-n",
            &n.to_string(),
            "--cpus",
            "0.25",
            "--",
            &ms.to_string(),
            "i{i}",
        ])
        .trim()
        .to_string()
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli().args(args).output().expect("run wasmos");
        assert!(
            out.status.success(),
            "wasmos {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `wasmos ARGS`, tried again until it succeeds (a standby is taking
    /// over meanwhile).
    fn cli_eventually(&self, args: &[&str]) -> String {
        let done = wait_for(LIMIT, || {
            let out: Output = self.cli().args(args).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8(out.stdout).unwrap())
        });
        done.unwrap_or_else(|| panic!("wasmos {args:?} did not succeed within {LIMIT:?}"))
    }

    /// `path` on master `i`'s HTTP port, as the admin.
    fn http_admin(&self, i: usize, path: &str) -> String {
        let first = self.work_dir(self.admin);
        let ca = std::fs::read_to_string(first.join("ca.pem")).unwrap();
        let token = std::fs::read_to_string(first.join("admin.token")).unwrap();
        support::https_get(
            &format!("https://127.0.0.1:{}{path}", self.ports[i].1),
            &ca,
            Some(token.trim()),
        )
    }

    /// A metric's value on master `i` (which must lead).
    fn metric(&self, i: usize, name: &str) -> Option<f64> {
        self.http_admin(i, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
    }

    /// Starts an agent that joins the cluster: it knows every master from
    /// its join string (the leader lists the others).
    fn add_agent(&mut self) {
        let join = self.cli_ok(&["token", "create", "--agent", "--uses", "10"]);
        let i = self.agents.len();
        let work_dir = self.dir.path().join(format!("agent-{i}"));
        let mut cmd = wasmos();
        cmd.arg("agent")
            .args(["--hostname", &format!("agent-{i}")])
            .args(["--cpus", "2"])
            .arg("--work-dir")
            .arg(&work_dir)
            .env("WASMOS_JOIN", join.trim());
        let (child, _) = support::spawn_until(cmd, &["wasmos agent offering"]);
        self.agents.push((child, work_dir));
    }

    /// Waits until the leading master knows `n` agents connected.
    fn wait_agents(&self, n: usize) {
        let connected = wait_for(LIMIT, || {
            let out = self.cli().args(["agents", "--json"]).output().ok()?;
            let text = String::from_utf8(out.stdout).ok()?;
            let agents: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            (agents.iter().filter(|a| a["state"] == "connected").count() >= n).then_some(())
        });
        assert!(
            connected.is_some(),
            "{n} agents did not connect within {LIMIT:?}"
        );
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        for (agent, work_dir) in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
            // Executors outlive their agents by design: end them too.
            if let Some(pid) = std::fs::read_to_string(work_dir.join("executor.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                support::kill_9(pid);
            }
        }
        self.masters.clear();
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_killed_leader_is_replaced_and_its_job_completes() {
    let mut ha = Ha::start(3);
    ha.add_agent();
    ha.add_agent();
    ha.wait_agents(2);
    // The join string named every master, and the agents keep them all.
    let identity = std::fs::read_to_string(ha.agents[0].1.join("tls/identity.json")).unwrap();
    for (grpc, _) in &ha.ports {
        assert!(
            identity.contains(&format!("127.0.0.1:{grpc}")),
            "{identity}"
        );
    }
    let job = ha.submit_sleepers(2000, 20);
    wait_for(LIMIT, || (succeeded(&ha, &job) >= 200).then_some(()))
        .expect("the job never got going");

    let killed_at = Instant::now();
    let old_epoch = 1;
    support::kill_9(ha.master(0).pid());
    let leader = (1..3)
        .find_map(|i| {
            let line = ha
                .master(i)
                .wait_line("listening on", Duration::from_secs(1))?;
            Some((i, line))
        })
        .or_else(|| (1..3).find_map(|i| Some((i, ha.master(i).wait_line("listening on", LIMIT)?))))
        .expect("a standby leads");
    eprintln!(
        "master-{} leads {:?} after the kill",
        leader.0,
        killed_at.elapsed()
    );
    let epoch = ha.wait_leading(leader.0);
    assert!(epoch > old_epoch, "the new leader's epoch {epoch}");

    let retried = wait_all_succeeded(&ha, &job, 2000);
    // Only launches in flight when the leader died may run again: at most
    // the slots of two agents of 2 cpus at 0.25 each.
    assert!(retried <= 16, "{retried} indices ran more than once");
}

/// The artifacts (64-hex-digit names) in master `i`'s store.
fn stored_artifacts(ha: &Ha, i: usize) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(ha.work_dir(i).join("artifacts")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64)
        })
        .collect()
}

#[test]
fn an_artifact_outlives_the_leader_that_stored_it() {
    let mut ha = Ha::start(2);
    let sleeper = guest("sleeper");
    let job = ha
        .cli_ok(&[
            "submit",
            sleeper.to_str().unwrap(),
            "--hold",
            "-n",
            "4",
            "--",
            "5",
            "i{i}",
        ])
        .trim()
        .to_string();
    // Answered: the standby holds the module's bytes already.
    let held = stored_artifacts(&ha, 1);
    assert_eq!(held.len(), 1, "the standby holds the upload: {held:?}");
    support::kill_9(ha.master(0).pid());
    ha.wait_leading(1);

    // The new leader loses its copy too (a disk replaced): it fetches the
    // bytes from the old leader, back as a standby, when a task needs them.
    std::fs::remove_file(&held[0]).unwrap();
    ha.masters[0] = None;
    ha.spawn(0);
    ha.master(0)
        .wait_line("standing by", LIMIT)
        .expect("the old leader stands by");
    ha.add_agent();
    ha.wait_agents(1);
    ha.cli_eventually(&["job", "release", &job]);
    ha.cli_eventually(&["job", "wait", &job]);
    let results = json_lines(&ha.cli_ok(&["job", "results", &job, "--json"]));
    assert_eq!(results.len(), 4);
    for r in &results {
        assert_eq!(r["state"], "SUCCEEDED", "{r}");
    }
    assert_eq!(
        stored_artifacts(&ha, 1).len(),
        1,
        "fetched back from a peer"
    );

    // The new leader's audit log names it in every line, and `wasmos
    // audit` says where the lines of the first leader are.
    let masters = json_lines(&ha.cli_ok(&["masters", "--json"]));
    let leader_id = masters[0]["id"]
        .as_str()
        .expect("the leader's id")
        .to_string();
    let out = ha.cli().args(["audit"]).output().unwrap();
    assert!(out.status.success());
    let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert!(
        lines.iter().any(|l| l["call"] == "Operator.CreateToken"),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| l["master"] == leader_id.as_str()),
        "{lines:?}"
    );
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("lines of earlier leaders are in their own audit.log"),
        "{note}"
    );

    // Only masters trade artifacts: a client with the cluster's CA but no
    // master certificate is refused by the standby and by the leader.
    let digest = held[0].file_name().unwrap().to_str().unwrap().to_string();
    let ca = std::fs::read_to_string(ha.work_dir(0).join("ca.pem")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (grpc, _) in ha.ports.clone() {
        let refused = runtime.block_on(async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{grpc}"))
                    .unwrap()
                    .tls_config(wasmos_tls::ClientTls::trusting(ca.clone()).tonic())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
            v1::master_peers_client::MasterPeersClient::new(channel)
                .give(v1::FetchRequest {
                    digest: digest.clone(),
                })
                .await
                .unwrap_err()
        });
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    }
}

#[test]
fn an_sdk_framework_follows_the_new_leader() {
    let mut ha = Ha::start(2);
    ha.add_agent();
    ha.wait_agents(1);
    let admin = ha.work_dir(ha.admin);
    let options = wasmos_sdk::ConnectOptions {
        ca_pem: Some(std::fs::read_to_string(admin.join("ca.pem")).unwrap()),
        token: Some(
            std::fs::read_to_string(admin.join("admin.token"))
                .unwrap()
                .trim()
                .to_string(),
        ),
        identity: None,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (framework, mut events) = runtime.block_on(async {
        let client = wasmos_sdk::Client::connect_with(ha.urls(), options)
            .await
            .unwrap();
        client
            .subscribe(wasmos_sdk::FrameworkConfig::new("follows"))
            .await
            .unwrap()
    });
    // The next event of a kind, within the test's limit.
    let next = |events: &mut wasmos_sdk::Events, wanted: fn(&wasmos_sdk::Event) -> bool| {
        runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + LIMIT;
            while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
                if wanted(&event) {
                    return Some(event);
                }
            }
            None
        })
    };
    next(&mut events, |e| matches!(e, wasmos_sdk::Event::Offers(_))).expect("offers");

    support::kill_9(ha.master(0).pid());
    ha.wait_leading(1);
    let resubscribed = next(&mut events, |e| {
        matches!(e, wasmos_sdk::Event::Resubscribed { .. })
    })
    .expect("the framework re-subscribes to the new leader");
    let wasmos_sdk::Event::Resubscribed { framework_id } = resubscribed else {
        unreachable!()
    };
    assert_eq!(framework_id, framework.framework_id());
    // Offers again: only the leader makes them, from the agent it took over.
    next(&mut events, |e| matches!(e, wasmos_sdk::Event::Offers(_)))
        .expect("offers from the new leader");
    assert_eq!(framework.stats().resubscriptions, 1);
    // The new leader counts the change, and the time nobody led.
    assert_eq!(ha.metric(1, "wasmos_leader_changes_total"), Some(1.0));
    let gap = ha.metric(1, "wasmos_leaderless_last_seconds").unwrap();
    assert!(gap > 0.0 && gap < LIMIT.as_secs_f64(), "{gap}");
}

/// Waits for `job` to end; asserts its `n` indices all SUCCEEDED, in
/// order; how many ran more than once.
fn wait_all_succeeded(ha: &Ha, job: &str, n: usize) -> usize {
    ha.cli_eventually(&["job", "wait", job]);
    let results = json_lines(&ha.cli_ok(&["job", "results", job, "--json"]));
    assert_eq!(results.len(), n);
    let mut retried = 0;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i as u64, "{r}");
        assert_eq!(r["state"], "SUCCEEDED", "{r}");
        if r["attempts"] != 1 {
            retried += 1;
        }
    }
    retried
}

/// How many indices of `job` succeeded so far (0 while no master answers).
fn succeeded(ha: &Ha, job: &str) -> u64 {
    let Ok(out) = ha.cli().args(["job", "show", job, "--json"]).output() else {
        return 0;
    };
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["succeeded"].as_u64())
        .unwrap_or(0)
}

/// The leader killed three times during one job: each time a standby
/// leads at a newer epoch, the killed master comes back as a standby, and
/// the job ends with every index succeeded, only launches in flight at a
/// kill run again.
#[test]
fn a_job_outlives_three_leaders_killed_in_turn() {
    let mut ha = Ha::start(3);
    ha.add_agent();
    ha.add_agent();
    ha.wait_agents(2);
    let job = ha.submit_sleepers(1500, 200);
    let (mut leader, mut epoch) = (0, 1);
    for round in 1..=3u64 {
        wait_for(LIMIT, || {
            (succeeded(&ha, &job) >= round * 150).then_some(())
        })
        .expect("the job goes on");
        support::kill_9(ha.master(leader).pid());
        let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        let next = others
            .iter()
            .copied()
            .find(|&i| {
                ha.master(i)
                    .wait_line("listening on", Duration::from_secs(1))
                    .is_some()
            })
            .or_else(|| {
                others
                    .iter()
                    .copied()
                    .find(|&i| ha.master(i).wait_line("listening on", LIMIT).is_some())
            })
            .expect("a standby leads");
        let next_epoch = ha.wait_leading(next);
        assert!(
            next_epoch > epoch,
            "round {round}: epoch {next_epoch} after {epoch}"
        );
        epoch = next_epoch;
        // The killed master comes back, as a standby.
        ha.masters[leader] = None;
        ha.spawn(leader);
        ha.master(leader)
            .wait_line("standing by", LIMIT)
            .expect("the killed master stands by");
        leader = next;
    }
    let retried = wait_all_succeeded(&ha, &job, 1500);
    // At most the slots of two agents of 2 cpus at 0.25 each, per kill.
    assert!(retried <= 3 * 16, "{retried} indices ran more than once");
}

#[test]
fn a_master_reaches_etcd_over_tls_with_a_client_certificate() {
    let ca = wasmos_tls::Ca::generate("etcd").unwrap();
    let etcd = Etcd::start_tls(&ca);
    let dir = tempfile::tempdir().unwrap();
    let client = ca.issue_master("m", Duration::from_secs(3600)).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca_file, cert, key) = (
        file("ca.pem", ca.cert_pem()),
        file("client.pem", &client.cert_chain_pem),
        file("client-key.pem", &client.key_pem),
    );
    let master = |tls: &[&str]| {
        let mut cmd = wasmos();
        cmd.arg("master")
            .args(["--etcd", &etcd.url, "--leader-lease", LEASE])
            .args(tls)
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--work-dir")
            .arg(dir.path().join("master"))
            .args(FAST_MASTER);
        cmd
    };
    // No CA: refused at once, saying what to give.
    let out = master(&[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--etcd-ca"), "{err}");

    // With etcd's CA and a client certificate: it leads, and its registry
    // is in etcd.
    let (mut child, _) = support::spawn_until(
        master(&[
            "--etcd-ca",
            &ca_file,
            "--etcd-cert",
            &cert,
            "--etcd-key",
            &key,
        ]),
        &["listening on"],
    );
    let tls = wasmos_tls::ClientTls {
        ca_pem: ca.cert_pem().to_string(),
        identity: Some((client.cert_chain_pem.clone(), client.key_pem.clone())),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let newest = |tls: wasmos_tls::ClientTls| {
        runtime.block_on(async {
            let store = EtcdStore::connect(
                &endpoints(&etcd.url, Some(&tls)).unwrap(),
                Keys::new("/wasmos").unwrap(),
                None,
                Duration::from_secs(1),
            )
            .unwrap();
            tokio::task::spawn_blocking(move || store.newest_revision())
                .await
                .unwrap()
        })
    };
    let revision = newest(tls.clone()).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(revision > 1, "the master wrote its registry into etcd");
    // etcd admits no client without a certificate of its CA.
    let anonymous = wasmos_tls::ClientTls::trusting(ca.cert_pem());
    assert!(newest(anonymous).is_err());
}

/// A standby told to listen on any free ports registers the ports it was
/// given once it serves, so other masters can reach it (they skip a `:0`).
#[test]
fn a_standby_on_any_free_port_registers_the_port_it_was_given() {
    let mut ha = Ha::new(2);
    ha.spawn(0);
    ha.wait_leading(0);
    ha.spawn_listening(1, "127.0.0.1:0", "127.0.0.1:0");
    let line = ha
        .master(1)
        .wait_line("standby serving on", LIMIT)
        .expect("the standby serves");
    let bound = line
        .split("standby serving on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the address it serves on")
        .to_string();
    assert!(!bound.ends_with(":0"), "{line}");
    let url = format!("https://{bound}");
    let deadline = Instant::now() + LIMIT;
    loop {
        let masters = json_lines(&ha.cli_ok(&["masters", "--json"]));
        if let Some(standby) = masters
            .iter()
            .find(|m| m["role"] == "standby" && m["grpc"] == url.as_str())
        {
            let http = standby["http"].as_str().unwrap_or_default();
            assert!(
                http.starts_with("https://127.0.0.1:") && !http.ends_with(":0"),
                "{standby}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby at {url} is not listed there: {masters:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_standby_points_clients_and_agents_to_the_leader() {
    let mut ha = Ha::start(2);
    let (standby_grpc, standby_http) = ha.ports[1];
    let (leader_grpc, leader_http) = ha.ports[0];
    let standby = format!("https://127.0.0.1:{standby_grpc}");
    // The CLI given only the standby reaches the leader, once the standby
    // serves (it stands by first, then reads the cluster's CA to serve).
    ha.master(1)
        .wait_line("standby serving", LIMIT)
        .expect("the standby serves");
    let roles = ha
        .cli()
        .env("WASMOS_MASTER", &standby)
        .args(["roles"])
        .output()
        .unwrap();
    assert!(
        roles.status.success(),
        "{}",
        String::from_utf8_lossy(&roles.stderr)
    );
    // /health says standby and names the leader.
    let ca = std::fs::read_to_string(ha.work_dir(0).join("ca.pem")).unwrap();
    let health = support::https_get(
        &format!("https://127.0.0.1:{standby_http}/health"),
        &ca,
        None,
    );
    assert!(health.contains("503"), "{health}");
    assert!(health.contains("\"status\":\"standby\""), "{health}");
    assert!(
        health.contains(&format!("127.0.0.1:{leader_grpc}")),
        "{health}"
    );
    assert!(
        health.contains(&format!("127.0.0.1:{leader_http}")),
        "{health}"
    );
    // `wasmos masters`: the leader first, with its epoch, then the standby.
    let masters = json_lines(&ha.cli_ok(&["masters", "--json"]));
    assert_eq!(masters.len(), 2, "{masters:?}");
    assert_eq!(masters[0]["role"], "leader", "{masters:?}");
    assert_eq!(masters[0]["epoch"], 1, "{masters:?}");
    assert_eq!(
        masters[0]["grpc"],
        format!("https://127.0.0.1:{leader_grpc}")
    );
    assert_eq!(masters[1]["role"], "standby", "{masters:?}");
    assert_eq!(masters[1]["grpc"], standby);
    // So does /state, and the metrics count the one term so far.
    let state: Value = serde_json::from_str(&ha.http_admin(0, "/state")).unwrap();
    let listed = state["masters"].as_array().expect("masters in /state");
    assert_eq!(listed.len(), 2, "{state}");
    assert_eq!(listed[0]["leader"], true);
    assert_eq!(listed[0]["epoch"], 1);
    assert_eq!(listed[1]["grpc"], standby);
    assert_eq!(ha.metric(0, "wasmos_master_epoch"), Some(1.0));
    assert_eq!(ha.metric(0, "wasmos_leader_changes_total"), Some(0.0));
    // An agent that knows only the standby attaches to the leader.
    let join = ha.cli_ok(&["token", "create", "--agent"]);
    let work_dir = ha.dir.path().join("agent-via-standby");
    let mut cmd = wasmos();
    cmd.arg("agent")
        .args(["--master", &standby, "--hostname", "via-standby"])
        .arg("--work-dir")
        .arg(&work_dir)
        .env("WASMOS_JOIN", join.trim());
    let (child, _) = support::spawn_until(cmd, &["wasmos agent offering"]);
    let agent = child.id();
    ha.agents.push((child, work_dir));
    ha.wait_agents(1);

    // A silent agent is let go within about a lease (the leader pings every
    // stream every half lease), not after the 40 s of a lone master.
    signal(agent, "STOP");
    let stopped = Instant::now();
    let let_go = wait_for(LIMIT, || {
        let out = ha.cli().args(["agents", "--json"]).output().ok()?;
        let agents = json_lines(&String::from_utf8_lossy(&out.stdout));
        // Disconnected, or (past the test's short agent timeout) removed.
        (out.status.success() && !agents.iter().any(|a| a["state"] == "connected")).then_some(())
    });
    let took = stopped.elapsed();
    signal(agent, "CONT");
    assert!(let_go.is_some(), "the silent agent was never let go");
    assert!(took < Duration::from_secs(20), "let go after {took:?}");
}

#[test]
fn a_paused_leader_is_fenced_and_exits_without_writing() {
    let mut ha = Ha::start(2);
    let old = ha.master(0).pid();
    signal(old, "STOP");
    let epoch = ha.wait_leading(1);
    assert_eq!(epoch, 2);
    // The new leader paused too (its lease then ends as well): whatever
    // reaches the registry from now on would come from the old leader.
    signal(ha.master(1).pid(), "STOP");
    let store = unfenced_store(&ha.etcd.url);
    let before = store.newest_revision().unwrap();
    signal(old, "CONT");
    let code = ha.master(0).exit_code(LIMIT).expect("the old leader exits");
    assert_eq!(code, leadership::LOST_LEADERSHIP_EXIT);
    assert!(
        ha.master(0).wait_line("lost leadership", LIMIT).is_some(),
        "the old leader says why it stops"
    );
    assert_eq!(
        store.newest_revision().unwrap(),
        before,
        "the old leader wrote"
    );
}

#[test]
fn masters_started_together_share_one_ca_and_one_admin_token_and_sigterm_hands_over() {
    let mut ha = Ha::new(2);
    ha.spawn(0);
    ha.spawn(1);
    // One of them leads; the other stands by.
    let first = wait_for(LIMIT, || {
        (0..2).find(|&i| {
            ha.master(i)
                .wait_line("listening on", Duration::from_millis(50))
                .is_some()
        })
    })
    .expect("one master leads");
    let second = 1 - first;
    assert!(ha.master(second).wait_line("standing by", LIMIT).is_some());
    ha.admin = first;
    ha.cli_ok(&["roles", "set", "batch", "--weight", "3"]);

    let stopped = Instant::now();
    signal(ha.master(first).pid(), "TERM");
    assert_eq!(
        ha.master(first).exit_code(LIMIT),
        Some(0),
        "a graceful stop"
    );
    ha.wait_leading(second);
    eprintln!("the standby leads {:?} after SIGTERM", stopped.elapsed());

    let ca = |i: usize| std::fs::read_to_string(ha.work_dir(i).join("ca.pem")).unwrap();
    assert_eq!(ca(0), ca(1), "one CA");
    assert!(
        !ha.work_dir(second).join("admin.token").exists(),
        "the second master made an admin token of its own"
    );
    // The first master's token works on the second, which holds one admin
    // token and the role set on the first.
    let tokens = json_lines(&ha.cli_eventually(&["token", "list", "--json"]));
    let admins = tokens.iter().filter(|t| t["kind"] == "admin").count();
    assert_eq!(admins, 1, "{tokens:?}");
    let roles = ha.cli_ok(&["roles"]);
    assert!(roles.contains("batch"), "{roles}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_outlive_an_etcd_outage_and_the_leader_compacts_history() {
    let mut ha = tokio::task::block_in_place(|| {
        let mut ha = Ha::start(2);
        ha.add_agent();
        ha.wait_agents(1);
        ha
    });
    let hello = guest("hello");
    let submit = |ha: &Ha| {
        let job = ha.cli_eventually(&[
            "submit",
            hello.to_str().unwrap(),
            "-n",
            "50",
            "--cpus",
            "0.1",
        ]);
        let said = ha.cli_eventually(&["job", "wait", job.trim()]);
        let _ = said;
        let results = json_lines(&ha.cli_ok(&["job", "results", job.trim(), "--json"]));
        assert_eq!(results.len(), 50);
        assert!(
            results.iter().all(|r| r["state"] == "SUCCEEDED"),
            "{results:?}"
        );
    };
    tokio::task::block_in_place(|| submit(&ha));

    // The leader compacts: the first revisions are gone from etcd.
    let client = EtcdClient::connect(&endpoints(&ha.etcd.url, None).unwrap());
    let mut compacted = false;
    for _ in 0..600 {
        let old = client
            .kv
            .clone()
            .range(wasmos_proto::etcd::etcdserverpb::RangeRequest {
                key: b"/".to_vec(),
                range_end: vec![0],
                revision: 2,
                count_only: true,
                ..Default::default()
            })
            .await;
        if old.is_err_and(|e| e.message().contains("compacted")) {
            compacted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(compacted, "etcd's history was never compacted");

    // etcd gone for longer than the lease: the leader stops and says why;
    // once etcd is back, the standby leads and the cluster works again.
    ha.etcd.stop();
    tokio::task::block_in_place(|| {
        assert_eq!(
            ha.master(0).exit_code(LIMIT),
            Some(leadership::LOST_LEADERSHIP_EXIT)
        );
        assert!(ha.master(0).wait_line("lost leadership", LIMIT).is_some());
        std::thread::sleep(Duration::from_secs(1));
        ha.etcd.restart();
        assert_eq!(ha.wait_leading(1), 2);
        submit(&ha);
    });
}

/// A store on the test etcd that no election fences.
fn unfenced_store(url: &str) -> EtcdStore {
    EtcdStore::connect(
        &endpoints(url, None).unwrap(),
        Keys::new(PREFIX).unwrap(),
        None,
        Duration::from_secs(5),
    )
    .unwrap()
}

fn role(name: String, weight: f64) -> Write {
    Write::Put(Record::Role(v1::StoredRole {
        name,
        weight: Some(weight),
        ..Default::default()
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_registry_reads_in_pages_writes_in_chunks_and_refuses_a_deposed_leader() {
    let etcd = Etcd::start();
    let client = EtcdClient::connect(&endpoints(&etcd.url, None).unwrap());
    let keys = Keys::new(PREFIX).unwrap();
    let lease = leadership::Lease::grant(&client, Duration::from_secs(2))
        .await
        .unwrap();
    let info = v1::MasterInfo::default();
    let leader = leadership::campaign(&client, &keys, &lease, &info)
        .await
        .unwrap();
    let store = EtcdStore::connect(
        &endpoints(&etcd.url, None).unwrap(),
        keys,
        Some(leader.fence()),
        Duration::from_secs(2),
    )
    .unwrap();
    let store = std::sync::Arc::new(store);

    // 2,500 roles and a key written twice, in one commit: more than one
    // transaction holds, and more than one page of a read.
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut writes: Vec<Write> = (0..2500).map(|i| role(format!("r{i:05}"), 1.0)).collect();
        writes.push(role("r00007".into(), 7.0));
        writes.push(Write::Delete(Table::Roles, "r00008".into()));
        s.commit(&writes).unwrap();
        let registry = s.load().unwrap();
        assert_eq!(registry.roles.len(), 2499);
        let seventh = registry.roles.iter().find(|r| r.name == "r00007").unwrap();
        assert_eq!(seventh.weight, Some(7.0));
        let Some(Record::Role(r)) = s.get(Table::Roles, "r00009").unwrap() else {
            panic!("r00009 is missing");
        };
        assert_eq!(r.name, "r00009");
        assert!(s.get(Table::Roles, "r00008").unwrap().is_none());
        let page = s.range(Table::Roles, "r00100", Some("r00200"), 10).unwrap();
        assert_eq!(page.len(), 10);
        assert_eq!(
            page[0],
            Record::Role(v1::StoredRole {
                name: "r00100".into(),
                weight: Some(1.0),
                ..Default::default()
            })
        );
    })
    .await
    .unwrap();

    // Leadership given up: the same store's writes are refused whole.
    lease.revoke().await;
    let s = store.clone();
    let refused = tokio::task::spawn_blocking(move || s.commit(&[role("late".into(), 1.0)]))
        .await
        .unwrap();
    assert!(matches!(refused, Err(StoreError::Fenced(_))), "{refused:?}");
    let s = store.clone();
    let late = tokio::task::spawn_blocking(move || s.get(Table::Roles, "late").unwrap())
        .await
        .unwrap();
    assert!(late.is_none());
}

#[test]
fn a_migrated_registry_serves_the_same_jobs_roles_and_tokens() {
    let etcd = Etcd::start();
    let mut cluster = support::Cluster::start_tls(1, &[], &[]);
    let cli_ok = |cluster: &support::Cluster, args: &[&str]| {
        let out = cluster
            .cli()
            .env("WASMOS_MASTER", &cluster.url)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    cli_ok(&cluster, &["roles", "set", "batch", "--weight", "3"]);
    cluster.token(&["--principal", "alice", "--roles", "batch"]);
    let hello = guest("hello");
    let job = cli_ok(&cluster, &["submit", hello.to_str().unwrap(), "-n", "5"]);
    let job = job.trim().to_string();
    cli_ok(&cluster, &["job", "wait", &job]);
    cluster.kill_master();

    let work_dir = cluster.dir.path().join("master");
    let migrate = |prefix: &str| {
        wasmos()
            .args([
                "registry",
                "migrate",
                "--etcd",
                &etcd.url,
                "--etcd-prefix",
                prefix,
            ])
            .arg("--work-dir")
            .arg(&work_dir)
            .output()
            .unwrap()
    };
    let out = migrate("/migrated");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 jobs"), "{said}");
    // Into a prefix that holds a registry already: refused.
    let again = migrate("/migrated");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("empty prefix"));

    // A master on etcd, on the same work dir: the same registry.
    let mut cmd = wasmos();
    cmd.arg("master")
        .args(["--etcd", &etcd.url, "--etcd-prefix", "/migrated"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--work-dir",
        ])
        .arg(&work_dir);
    let (mut master, lines) = support::spawn_until(cmd, &["listening on"]);
    assert!(lines[0].contains("(epoch 2)"), "{}", lines[0]);
    let url = lines[0]
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .to_string();
    cluster.url = url;
    let tokens = cli_ok(&cluster, &["token", "list"]);
    assert!(tokens.contains("alice"), "{tokens}");
    assert!(cli_ok(&cluster, &["roles"]).contains("batch"));
    let shown: Value =
        serde_json::from_str(&cli_ok(&cluster, &["job", "show", &job, "--json"])).unwrap();
    assert_eq!(shown["succeeded"], 5, "{shown}");
    assert_eq!(
        json_lines(&cli_ok(&cluster, &["job", "results", &job, "--json"])).len(),
        5
    );
    let _ = master.kill();
    let _ = master.wait();
}
