//! Real clusters for end-to-end tests: `wasmos master` and `wasmos agent`
//! processes on loopback with ephemeral ports, in a temporary directory,
//! killed when the test ends.
#![allow(dead_code)]

pub mod etcd;
pub mod events;
pub mod foreign;
pub mod sim_agents;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Master flags that make failures show up fast in tests.
pub const FAST_MASTER: &[&str] = &[
    "--agent-heartbeat",
    "200ms",
    "--agent-timeout",
    "1s",
    "--min-tick-interval",
    "50ms",
    "--framework-heartbeat",
    "500ms",
];

/// The `defaults` flag/value pairs that `args` does not set itself.
fn with_defaults(defaults: &[&str], args: &[&str]) -> Vec<String> {
    defaults
        .chunks(2)
        .filter(|pair| !args.contains(&pair[0]))
        .flatten()
        .map(|s| s.to_string())
        .collect()
}

/// The path of a guest built for wasm32-wasip1 by `scripts/test`
/// (`examples/guests`); panics with what to run if it is missing.
pub fn guest(name: &str) -> PathBuf {
    built_guest("wasm32-wasip1", name)
}

/// The same guest built for wasm32-wasip2: a WASI preview 2 component.
pub fn component(name: &str) -> PathBuf {
    built_guest("wasm32-wasip2", name)
}

fn built_guest(target: &str, name: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/guests/target")
        .join(target)
        .join("release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "guest {} is missing: run scripts/test (it builds examples/guests)",
        path.display()
    );
    path
}

/// The `wasmos` binary, logging only warnings (tests print enough), or what
/// `WASMOS_TEST_LOG` asks for when a failing test needs a closer look.
pub fn wasmos() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmos"));
    let level = std::env::var("WASMOS_TEST_LOG").unwrap_or_else(|_| "warn".into());
    cmd.env("WASMOS_LOG", level);
    cmd
}

/// Starts `cmd` and waits for stdout lines containing each of `markers`, in
/// order; returns the child and those lines. Later output goes to stderr.
pub fn spawn_until(mut cmd: Command, markers: &[&str]) -> (Child, Vec<String>) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn wasmos");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let markers: Vec<String> = markers.iter().map(|m| m.to_string()).collect();
    let wanted = markers.len();
    std::thread::spawn(move || {
        let mut next = 0;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if next < markers.len() && line.contains(&markers[next]) {
                let _ = tx.send(line.clone());
                next += 1;
            }
            eprintln!("[wasmos] {line}");
        }
    });
    let lines: Vec<String> = (0..wanted)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("wasmos did not print its start-up lines within 60 s")
        })
        .collect();
    (child, lines)
}

/// Runs `cmd` to its end with its output captured; `kill -9` and a panic
/// if it has not ended within `limit` (a process expected to exit).
pub fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let id = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("wait"));
    if wait_for(limit, || waiter.is_finished().then_some(())).is_none() {
        kill_9(id);
        panic!("the process did not exit within {limit:?}");
    }
    waiter.join().expect("the waiter")
}

/// The last whitespace-separated word of a line (an address or URL).
fn last_word(line: &str) -> String {
    line.split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string()
}

pub struct AgentProcess {
    pub child: Option<Child>,
    pub work_dir: PathBuf,
    /// Its flags (a restart takes them as they are then).
    pub args: Vec<String>,
}

/// What a client of a TLS cluster needs.
pub struct Tls {
    /// The master's CA certificate file.
    pub ca: PathBuf,
    pub ca_pem: String,
    /// The admin token.
    pub token: String,
    /// A join string good for many agents.
    pub join: String,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// `Some` for a TLS cluster ([`Cluster::start_tls`]).
    pub tls: Option<Tls>,
    master: Option<Child>,
    master_args: Vec<String>,
    /// gRPC URL of the master, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// HTTP base URL of the master.
    pub http: String,
    pub agents: Vec<AgentProcess>,
}

impl Cluster {
    /// A master with `master_args` (after [`FAST_MASTER`]) and `agents`
    /// agents with `agent_args` each.
    /// The master serves plaintext (`--insecure`) and agents name their
    /// own ids; [`Cluster::start_tls`] is the secure default.
    pub fn start(agents: usize, master_args: &[&str], agent_args: &[&str]) -> Cluster {
        let mut args = master_args.to_vec();
        args.push("--insecure");
        Cluster::start_with(agents, &args, agent_args, false)
    }

    /// A master with TLS, its admin token and CA, and agents that join it
    /// with a join token.
    pub fn start_tls(agents: usize, master_args: &[&str], agent_args: &[&str]) -> Cluster {
        Cluster::start_with(agents, master_args, agent_args, true)
    }

    fn start_with(agents: usize, master_args: &[&str], agent_args: &[&str], tls: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = with_defaults(FAST_MASTER, master_args);
        args.extend(master_args.iter().map(|s| s.to_string()));
        let (master, url, http) = spawn_master(dir.path(), "127.0.0.1:0", "127.0.0.1:0", &args);
        let tls = tls.then(|| {
            let master_dir = dir.path().join("master");
            let ca = master_dir.join("ca.pem");
            let token = std::fs::read_to_string(master_dir.join("admin.token"))
                .expect("the master wrote its admin token")
                .trim()
                .to_string();
            let out = wasmos()
                .args([
                    "token", "create", "--agent", "--uses", "1000", "--master", &url,
                ])
                .env("WASMOS_CA", &ca)
                .env("WASMOS_TOKEN", &token)
                .output()
                .expect("run wasmos token create");
            assert!(
                out.status.success(),
                "token create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Tls {
                ca_pem: std::fs::read_to_string(&ca).expect("the CA"),
                ca,
                token,
                join: String::from_utf8(out.stdout)
                    .expect("utf-8")
                    .trim()
                    .to_string(),
            }
        });
        let mut cluster = Cluster {
            dir,
            tls,
            master: Some(master),
            master_args: args,
            url,
            http,
            agents: Vec::new(),
        };
        for _ in 0..agents {
            cluster.add_agent(agent_args);
        }
        cluster.wait_agents(agents);
        cluster
    }

    /// The master process's id.
    pub fn master_pid(&self) -> u32 {
        self.master.as_ref().expect("the master runs").id()
    }

    /// `kill -9` of the master process.
    pub fn kill_master(&mut self) {
        if let Some(mut child) = self.master.take() {
            child.kill().expect("kill -9 master");
            let _ = child.wait();
        }
    }

    /// Starts a killed master again on the same work dir and ports, so
    /// agents and frameworks find it where it was.
    pub fn restart_master(&mut self) {
        assert!(self.master.is_none(), "the master still runs");
        let strip = |url: &str| {
            url.split_once("://")
                .map_or(url, |(_, rest)| rest)
                .to_string()
        };
        let (grpc, http) = (strip(&self.url), strip(&self.http));
        let (master, _, _) = spawn_master(self.dir.path(), &grpc, &http, &self.master_args);
        self.master = Some(master);
    }

    /// Starts one more agent; returns its index.
    pub fn add_agent(&mut self, args: &[&str]) -> usize {
        let work_dir = self.dir.path().join(format!("agent-{}", self.agents.len()));
        self.add_agent_in(work_dir, args)
    }

    /// Starts one more agent in `work_dir`; returns its index.
    pub fn add_agent_in(&mut self, work_dir: PathBuf, args: &[&str]) -> usize {
        let i = self.agents.len();
        let mut all: Vec<String> = vec!["--hostname".into(), format!("agent-{i}")];
        all.extend(args.iter().map(|s| s.to_string()));
        let mut agent = AgentProcess {
            child: None,
            work_dir,
            args: all,
        };
        agent.child = Some(self.spawn_agent(&agent));
        self.agents.push(agent);
        i
    }

    /// `wasmos token create ARGS` as the admin of a TLS cluster; the token.
    pub fn token(&self, args: &[&str]) -> String {
        let out = self
            .cli()
            .args(["token", "create", "--master", &self.url])
            .args(args)
            .output()
            .expect("run wasmos token create");
        assert!(
            out.status.success(),
            "token create {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    }

    /// A new connection to a TLS cluster's master as the holder of
    /// `token`, as an attacker's (or any client's) own.
    pub async fn channel_as(&self, token: &str) -> wasmos_sdk::Channel {
        let options = wasmos_sdk::ConnectOptions {
            ca_pem: Some(self.tls.as_ref().expect("a TLS cluster").ca_pem.clone()),
            token: Some(token.to_string()),
            identity: None,
        };
        wasmos_sdk::Client::connect_with(self.url.clone(), options)
            .await
            .expect("connect to the master")
            .channel()
    }

    /// `wasmos`, with the CA and admin token of a TLS cluster in its
    /// environment.
    pub fn cli(&self) -> Command {
        let mut cmd = wasmos();
        if let Some(tls) = &self.tls {
            cmd.env("WASMOS_CA", &tls.ca)
                .env("WASMOS_TOKEN", &tls.token);
        }
        cmd
    }

    fn spawn_agent(&self, agent: &AgentProcess) -> Child {
        let mut cmd = wasmos();
        cmd.arg("agent")
            .args(["--master", &self.url, "--work-dir"])
            .arg(&agent.work_dir)
            .args(&agent.args);
        if let Some(tls) = &self.tls {
            cmd.env("WASMOS_JOIN", &tls.join);
        }
        spawn_until(cmd, &["wasmos agent offering"]).0
    }

    /// `kill -9` of an agent process.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut child) = self.agents[i].child.take() {
            child.kill().expect("kill -9 agent");
            let _ = child.wait();
        }
    }

    /// The pid of agent `i`'s executor process, once it wrote it.
    pub fn executor_pid(&self, i: usize) -> u32 {
        let path = self.agents[i].work_dir.join("executor.pid");
        wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(&path).ok()?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("agent {i} has no executor"))
    }

    /// `kill -9` of agent `i`'s executor process (not the agent).
    pub fn kill_executor(&self, i: usize) -> u32 {
        let pid = self.executor_pid(i);
        kill_9(pid);
        pid
    }

    /// `kill -9` of agent `i` and its executor together, as a reboot of
    /// its machine would.
    pub fn kill_machine(&mut self, i: usize) {
        let pid = self.executor_pid(i);
        // Stopped first, so that no task ends between the two kills.
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        self.kill_agent(i);
        kill_9(pid);
        wait_for(Duration::from_secs(10), || (!alive(pid)).then_some(()))
            .expect("the executor died");
        // Its pid may be another process's soon.
        let _ = std::fs::remove_file(self.agents[i].work_dir.join("executor.pid"));
    }

    /// Starts a killed agent again with the same work dir (and so its id).
    pub fn restart_agent(&mut self, i: usize) {
        assert!(self.agents[i].child.is_none(), "agent {i} still runs");
        let child = self.spawn_agent(&self.agents[i]);
        self.agents[i].child = Some(child);
    }

    /// The agent's id as it saved it (waiting for it to register).
    pub fn agent_id(&self, i: usize) -> String {
        let path = self.agents[i].work_dir.join("agent_id");
        wait_for(Duration::from_secs(30), || {
            let id = std::fs::read_to_string(&path).ok()?.trim().to_string();
            (!id.is_empty()).then_some(id)
        })
        .unwrap_or_else(|| panic!("agent {i} saved no id"))
    }

    /// GET a path of the master's HTTP port (with the admin token, on a
    /// TLS cluster).
    pub fn get(&self, path: &str) -> String {
        match &self.tls {
            None => http_get(&format!("{}{path}", self.http)),
            Some(tls) => https_get(
                &format!("{}{path}", self.http),
                &tls.ca_pem,
                Some(&tls.token),
            ),
        }
    }

    /// Waits until the master has `n` connected agents.
    pub fn wait_agents(&self, n: usize) {
        wait_for(Duration::from_secs(60), || {
            let state: serde_json::Value = serde_json::from_str(&self.get("/state")).ok()?;
            let connected = state["agents"]
                .as_array()?
                .iter()
                .filter(|a| a["connected"] == true)
                .count();
            (connected == n).then_some(())
        })
        .unwrap_or_else(|| panic!("{n} agents did not connect"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            if let Some(child) = agent.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Executors outlive their agents by design: end them too.
            if let Some(pid) = std::fs::read_to_string(agent.work_dir.join("executor.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                kill_9(pid);
            }
        }
        if let Some(master) = self.master.as_mut() {
            let _ = master.kill();
            let _ = master.wait();
        }
    }
}

/// Starts `wasmos master` with its work dir in `dir`; returns it with its
/// gRPC and HTTP URLs.
fn spawn_master(
    dir: &std::path::Path,
    grpc: &str,
    http: &str,
    args: &[String],
) -> (Child, String, String) {
    let mut cmd = wasmos();
    cmd.arg("master")
        .args(["--listen", grpc, "--http", http, "--work-dir"])
        .arg(dir.join("master"))
        .args(args);
    let (master, lines) = spawn_until(cmd, &["listening on", "/metrics on"]);
    let url = lines[0]
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .expect("the master's URL")
        .to_string();
    (master, url, last_word(&lines[1]))
}

/// Runs a job of one sleeper task of `ms` milliseconds through `client`;
/// returns the job's run and, once its task is `RUNNING` (within `limit`),
/// the agent it runs on.
pub async fn run_one_sleeper(
    client: &wasmos_sdk::Client,
    name: &str,
    ms: u64,
    limit: Duration,
) -> (
    tokio::task::JoinHandle<wasmos_sdk::Result<wasmos_sdk::JobReport>>,
    String,
) {
    use std::sync::{Arc, Mutex};
    let sleeper = client
        .upload(std::fs::read(guest("sleeper")).unwrap())
        .await
        .unwrap();
    let running = Arc::new(Mutex::new(None));
    let r = running.clone();
    let job = wasmos_sdk::Job::new(name)
        .task(wasmos_sdk::TaskTemplate::new(&sleeper.digest).arg(ms.to_string()))
        .on_update(move |u| {
            if u.status.state() == wasmos_proto::v1::TaskState::Running {
                *r.lock().unwrap() = Some(u.status.agent_id.clone());
            }
        });
    let c = client.clone();
    let run = tokio::spawn(async move { job.run(&c).await });
    let agent = wait_for(limit, || running.lock().unwrap().clone()).expect("the task runs");
    (run, agent)
}

/// Polls `check` every 20 ms until it answers or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal HTTP/1.1 GET over TLS, verifying the server by `ca_pem`.
pub fn https_get(url: &str, ca_pem: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("https://").expect("https URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h).to_string();
    let config = wasmos_tls::ClientTls::trusting(ca_pem)
        .rustls()
        .expect("client TLS");
    let conn = rustls::ClientConnection::new(config, name.try_into().expect("server name"))
        .expect("TLS client");
    let tcp = std::net::TcpStream::connect(host).expect("connect to master HTTP");
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map(|(head, body)| {
            if head.contains(" 200 ") {
                body.to_string()
            } else {
                format!("{head}\n{body}")
            }
        })
        .unwrap_or(response)
}

/// A minimal HTTP/1.1 GET over loopback (no client library needed).
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).expect("connect to master HTTP");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "GET {url}: {head}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// Resident memory of a process, in bytes (`VmRSS`).
pub fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// Peak resident memory of a process so far, in bytes (`VmHWM`).
pub fn peak_rss(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM:")
}

/// A `kB` field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} of {pid}"))
        * 1024
}

/// CPU time a process used so far (user + system), in milliseconds.
pub fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 10 // USER_HZ is 100 on Linux
}

/// `kill -9 pid`.
pub fn kill_9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Whether process `pid` still runs (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}
