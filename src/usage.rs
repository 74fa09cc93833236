//! `wasmos usage`: what tasks used, from the master's usage ledger.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmos_proto::v1;
use wasmos_proto::v1::jobs_client::JobsClient;

use crate::{cli_args, ops};

const AFTER_HELP: &str = "\
The ledger counts every task once, when its end is settled (a task retried counts each \
attempt; `first` is how many were first attempts), in hourly buckets by the time it ended: \
--since rounds down to the hour. CPU is the time the task's thread ran, task time its wall \
time, memory its `mem` reservation times its wall time. A principal sees its own usage; \
admin and read-only tokens everyone's.

Examples:
  wasmos usage                       # per principal, the last 7 days
  wasmos usage --by job --since 1d   # per job of the last day
  wasmos usage --by role --csv > usage.csv";

/// What tasks used, per role, principal or job (see `wasmos usage --help`).
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    master: ops::MasterArg,
    /// Rows per role, principal or job.
    #[arg(long, default_value = "principal", value_parser = ["role", "principal", "job"])]
    by: String,
    /// How far back, e.g. 1h, 1d, 30d.
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = cli_args::duration)]
    since: Duration,
    /// One JSON object per row.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Comma-separated values with a header line.
    #[arg(long)]
    csv: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.master.client().await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let since_ms = now.saturating_sub(args.since).as_millis() as u64;
    let answer = JobsClient::new(client.channel())
        .max_decoding_message_size(64 << 20)
        .usage(v1::UsageRequest {
            since_ms,
            by: args.by.clone(),
        })
        .await
        .map_err(ops::grpc)?
        .into_inner();
    let columns: &[&str] = match args.by.as_str() {
        "role" => &["role"],
        "job" => &["role", "principal", "job"],
        _ => &["principal"],
    };
    if args.json {
        for row in &answer.rows {
            println!("{}", row_json(row));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let header: Vec<&str> = columns
        .iter()
        .copied()
        .chain(["tasks", "first", "cpu_s", "task_s", "mem_gib_s", "fuel"])
        .collect();
    let lines: Vec<Vec<String>> = answer
        .rows
        .iter()
        .map(|row| {
            let mut line: Vec<String> = columns
                .iter()
                .map(|c| match *c {
                    "role" => row.role.clone(),
                    "job" if row.job.is_empty() => "-".to_string(),
                    "job" => row.job.clone(),
                    _ => row.principal.clone(),
                })
                .collect();
            line.extend([
                row.tasks.to_string(),
                row.first_attempts.to_string(),
                format!("{:.3}", row.cpu_seconds),
                format!("{:.3}", row.task_seconds),
                format!("{:.3}", row.mem_gib_seconds),
                row.fuel.to_string(),
            ]);
            line
        })
        .collect();
    if args.csv {
        println!("{}", header.join(","));
        for line in &lines {
            println!("{}", line.join(","));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let print = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    print(&header.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>());
    for line in &lines {
        print(line);
    }
    if lines.is_empty() {
        eprintln!(
            "no usage since {} ago",
            humantime::format_duration(args.since)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn row_json(row: &v1::UsageRow) -> serde_json::Value {
    serde_json::json!({
        "role": row.role,
        "principal": row.principal,
        "job": row.job,
        "tasks": row.tasks,
        "first_attempts": row.first_attempts,
        "cpu_seconds": row.cpu_seconds,
        "task_seconds": row.task_seconds,
        "mem_gib_seconds": row.mem_gib_seconds,
        "fuel": row.fuel,
    })
}
