//! What the end-to-end benches share: real `wasmos` processes on loopback
//! (a master, agents), their CPU, the master's HTTP endpoints, and the
//! command line. Each bench uses part of it.
#![allow(dead_code)]

pub mod cluster;
#[path = "../../tests/support/etcd.rs"]
pub mod etcd;
pub mod framework_path;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

/// Writes "hi" to stdout and returns (exit 0).
pub const HI_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hi")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// The value of `--name V` on the command line, if given.
pub fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("bad value `{v}` for {name}"))
        })
}

/// The processes of the cluster, killed on drop.
/// The bench's processes, and the executor processes its agents started
/// (by pid: they are not our children).
pub struct Processes(pub Vec<Child>, pub Vec<u32>);

impl Drop for Processes {
    fn drop(&mut self) {
        // Agents first, so they do not log the master's going.
        for child in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in &self.1 {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Starts `wasmos <args> --work-dir <work_dir>` and waits for stdout lines
/// containing each of `markers`, in order; returns the child and those
/// lines. Later output is drained and dropped.
pub fn spawn(args: &[&str], work_dir: &Path, markers: &[&str]) -> (Child, Vec<String>) {
    let mut child = Command::new(wasmos_bin())
        .args(args)
        .arg("--work-dir")
        .arg(work_dir)
        .env("WASMOS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn wasmos");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std_mpsc::channel();
    let wanted: Vec<String> = markers.iter().map(|m| m.to_string()).collect();
    std::thread::spawn(move || {
        let mut next = 0;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if next < wanted.len() && line.contains(&wanted[next]) {
                let _ = tx.send(line);
                next += 1;
            }
        }
    });
    let lines = markers
        .iter()
        .map(|marker| {
            rx.recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("`wasmos {}` printed no `{marker}` line", args[0]))
        })
        .collect();
    (child, lines)
}

/// CPU time (user + system) a process has used so far, in seconds, from
/// `/proc` (Linux; 0 elsewhere). Clock ticks are 100 per second on Linux.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after comm.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

pub fn last_word(line: &str) -> String {
    line.split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// The first URL in a line (`wasmos master listening on http://... (epoch 1)`).
pub fn url_in(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .expect("a URL in the master's start-up line")
        .to_string()
}

/// The CA and admin token of a TLS master.
pub struct Credentials {
    pub ca_pem: String,
    pub token: String,
}

/// A minimal HTTP/1.1 GET (the body; chunked encoding is good enough to
/// search in), over TLS with the admin token when `tls` is given.
pub fn http_get(url: &str, tls: Option<&Credentials>) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let Ok(tcp) = std::net::TcpStream::connect(host) else {
        return String::new();
    };
    let mut stream: Box<dyn ReadWrite> = match tls {
        None => Box::new(tcp),
        Some(tls) => {
            let config = wasmos_tls::ClientTls::trusting(tls.ca_pem.clone())
                .rustls()
                .expect("client TLS");
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h).to_string();
            let conn = rustls::ClientConnection::new(config, name.try_into().expect("name"))
                .expect("TLS client");
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let auth = tls.map_or(String::new(), |t| {
        format!("Authorization: Bearer {}\r\n", t.token)
    });
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Waits until the master's `/state` shows `n` connected agents.
pub fn wait_agents(http: &str, n: usize, tls: Option<&Credentials>) {
    let start = Instant::now();
    loop {
        let state = http_get(&format!("{http}/state"), tls);
        let connected = state.matches(r#""connected":true"#).count();
        if connected >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{n} agents did not connect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The `wasmos` binary the bench runs: this build's, or `WASMOS_BIN` (to
/// measure another build, e.g. the previous commit's, the same way).
pub fn wasmos_bin() -> std::ffi::OsString {
    std::env::var_os("WASMOS_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_wasmos").into())
}

/// `wasmos token create ARGS` against the master at `url` as its admin;
/// what it prints (a join string or a token).
pub fn token_create(url: &str, master_dir: &Path, admin_token: &str, args: &[&str]) -> String {
    let out = Command::new(wasmos_bin())
        .args(["token", "create", "--master", url])
        .args(args)
        .env("WASMOS_CA", master_dir.join("ca.pem"))
        .env("WASMOS_TOKEN", admin_token)
        .output()
        .expect("wasmos token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// The master's launch histogram (`wasmos_launch_seconds`, from a task's
/// `Accept` to its first RUNNING or end, as the master sees it) from its
/// `/metrics`: each bucket's upper bound in seconds and its cumulative
/// count.
pub fn launch_histogram(http: &str, tls: Option<&Credentials>) -> Vec<(f64, f64)> {
    let metrics = http_get(&format!("{http}/metrics"), tls);
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("wasmos_launch_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect()
}

/// The `q` quantile (0–1), in milliseconds, of what a launch histogram
/// counted between `before` and `after` (two [`launch_histogram`]s):
/// linear within the bucket it falls in, as Prometheus'
/// `histogram_quantile` does. NaN when nothing was counted.
pub fn launch_quantile_ms(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let counted = |i: usize| after[i].1 - before.get(i).map_or(0.0, |b| b.1);
    let Some(total) = after.len().checked_sub(1).map(counted) else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (i, &(bound, _)) in after.iter().enumerate() {
        let upto = counted(i);
        if upto >= rank {
            if bound.is_infinite() {
                return lower * 1000.0;
            }
            let within = (rank - below) / (upto - below).max(1.0);
            return (lower + (bound - lower) * within) * 1000.0;
        }
        (lower, below) = (bound, upto);
    }
    f64::NAN
}
