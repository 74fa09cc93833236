//! How a run reports: one JSON object per task, the summary table, the
//! progress bar, and each task's stdout read back through the master.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use wasmos_proto::v1;
use wasmos_proto::v1::operator_client::OperatorClient;
use wasmos_sdk::Channel;
use wasmos_sdk::{JobReport, TaskOutcome};

use crate::ops;

pub(super) fn outcome_json(
    t: &TaskOutcome,
    report: &JobReport,
    stdout: anyhow::Result<Vec<u8>>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": t.task_id,
        "index": t.index,
        "framework": report.framework_id,
        "agent": t.agent_id,
        "state": ops::state_name(t.state),
        "reason": ops::reason_name(t.reason),
        "message": t.message,
        "exit_code": t.exit_code,
        "attempts": t.attempts,
        "usage": t.usage.as_ref().map(ops::usage_json),
    });
    match stdout {
        Ok(data) => v["stdout"] = String::from_utf8_lossy(&data).into_owned().into(),
        Err(e) => {
            v["stdout"] = serde_json::Value::Null;
            v["stdout_error"] = format!("{e:#}").into();
        }
    }
    v
}

/// Up to `limit` bytes of a task's stdout, read on `agent` (where the
/// report says it ran) if the master no longer lists the task.
pub(crate) async fn read_stdout(
    operator: &mut OperatorClient<Channel>,
    task: &str,
    agent: &str,
    limit: u64,
) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let want = (limit - data.len() as u64).min(1 << 20);
        if want == 0 {
            return Ok(data);
        }
        let reply = operator
            .read_sandbox(v1::ReadSandboxRequest {
                task_id: task.to_string(),
                target: v1::SandboxTarget::Stdout as i32,
                path: String::new(),
                offset: data.len() as u64,
                length: want,
                agent_id: agent.to_string(),
            })
            .await
            .map_err(ops::grpc)?
            .into_inner();
        if reply.data.is_empty() {
            return Ok(data);
        }
        data.extend_from_slice(&reply.data);
        if data.len() as u64 >= reply.size {
            return Ok(data);
        }
    }
}

/// The summary on stderr: tasks by state and reason, run times, fuel, and
/// the first failures.
pub(super) fn summary(report: &JobReport, elapsed: Duration) {
    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    for t in &report.tasks {
        *by.entry((ops::state_name(t.state), ops::reason_name(t.reason)))
            .or_default() += 1;
    }
    let mut wall: Vec<u64> = report
        .tasks
        .iter()
        .filter_map(|t| t.usage.map(|u| u.wall_time_ms))
        .collect();
    wall.sort_unstable();
    let fuel: u64 = report
        .tasks
        .iter()
        .filter_map(|t| t.usage.map(|u| u.fuel_consumed))
        .sum();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "job {} ({} tasks, framework {}) {} in {:.1}s",
        report.job,
        report.tasks.len(),
        report.framework_id,
        if report.cancelled {
            "cancelled"
        } else {
            "ended"
        },
        elapsed.as_secs_f64()
    );
    let _ = writeln!(err, "  {:<10} {:<20} {:>7}", "STATE", "REASON", "TASKS");
    for ((state, reason), n) in &by {
        let reason = if reason.is_empty() { "-" } else { reason };
        let _ = writeln!(err, "  {state:<10} {reason:<20} {n:>7}");
    }
    if wall.is_empty() {
        let _ = writeln!(err, "  run time: no task reported usage");
    } else {
        let _ = writeln!(
            err,
            "  run time p50 {} ms, p99 {} ms, max {} ms; fuel {fuel}",
            percentile(&wall, 50),
            percentile(&wall, 99),
            wall[wall.len() - 1]
        );
    }
    let failed: Vec<&TaskOutcome> = report.failed().collect();
    for t in failed.iter().take(5) {
        let exit = t.exit_code.map_or(String::new(), |c| format!(" exit {c}"));
        let _ = writeln!(
            err,
            "  failed: {} {} {}{exit}: {}",
            t.task_id,
            ops::state_name(t.state),
            ops::reason_name(t.reason),
            t.message.lines().next().unwrap_or_default()
        );
    }
    if failed.len() > 5 {
        let _ = writeln!(
            err,
            "  ... and {} more; see `wasmos run --json` for every task",
            failed.len() - 5
        );
    }
}

/// Nearest-rank percentile of sorted values.
pub(super) fn percentile(sorted: &[u64], p: usize) -> u64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// The progress bar on stderr, drawn only when stderr is a terminal.
pub(super) struct Progress {
    tty: bool,
    total: usize,
    finished: usize,
    failed: usize,
}

impl Progress {
    pub(super) fn new(total: usize) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            total,
            finished: 0,
            failed: 0,
        }
    }

    pub(super) fn update(&mut self, u: &wasmos_sdk::JobUpdate) {
        if wasmos_sdk::is_terminal(u.status.state()) && !u.retrying {
            if u.status.state() == v1::TaskState::Finished {
                self.finished += 1;
            } else {
                self.failed += 1;
            }
        }
        if !self.tty {
            return;
        }
        const WIDTH: usize = 30;
        let done = self.finished + self.failed;
        let filled = (done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
        let _ = write!(
            std::io::stderr().lock(),
            "\r\x1b[2K[{}{}] {done}/{} finished {} failed {}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.total,
            self.finished,
            self.failed
        );
    }

    /// Erases the bar.
    pub(super) fn clear() {
        if std::io::stderr().is_terminal() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}
