//! Starting a `wasmos` process and waiting for it to say it is ready, and
//! reading a bench's flags.
//! Self-contained, so benches include it (`#[path]`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `cmd` and waits (60 s at most) for a stdout line with `marker`;
/// the rest of its output is dropped, and its stderr too unless
/// `WASMOS_BENCH_STDERR` names a file to append it to.
pub fn spawn_until(mut cmd: Command, marker: &str) -> Child {
    cmd.stdout(Stdio::piped());
    match std::env::var_os("WASMOS_BENCH_STDERR") {
        Some(path) => cmd.stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open WASMOS_BENCH_STDERR"),
        ),
        None => cmd.stderr(Stdio::null()),
    };
    let mut child = cmd.spawn().expect("spawn wasmos");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = marker.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&wanted) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("wasmos did not print {marker:?} within 60 s"));
    child
}

/// The value after `name` on the bench's command line, or `default`.
pub fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}
