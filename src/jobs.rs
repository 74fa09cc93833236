//! `wasmos submit`, `wasmos jobs`, `wasmos job ...`: jobs that live in the
//! master. `submit` checks the module locally, uploads it once, prints the
//! job id and exits; the master runs the job whether or not anyone waits.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmos_master::retry;
use wasmos_proto::v1;
use wasmos_proto::v1::jobs_client::JobsClient;
use wasmos_sdk::{Channel, Client};

use crate::run::{TaskArgs, job_name, upload};
use crate::{cli_args, ops};

const SUBMIT_HELP: &str = "\
The job is checked here first (the module validated, `.wat` compiled), its module and inputs \
uploaded once, and it is handed to the master, which runs it: `submit` prints the job id and \
exits at once, whatever the job's size. Each index sees its index in `{i}` (ARGS and --env \
values) and in WASMOS_INDEX, its attempt in WASMOS_ATTEMPT, its job in WASMOS_JOB; its task id \
is <job>-<index>-<attempt>, so `wasmos ps`, `logs` and `kill` work on it.

Examples:
  # 10,000 indices, each told its index; retry LOST ones and exit code 75
  wasmos submit worker.wasm -n 10000 --cpus 0.5 --retry-on lost,exit:75 -- part-{i}
  # a second job that starts once the first succeeded
  wasmos submit merge.wasm --after j1.1
  wasmos job wait j1.2 && wasmos job results j1.2 --output ./out";

/// Submit a job to the master and exit (see `wasmos submit --help`).
#[derive(clap::Args, Debug)]
#[command(after_help = SUBMIT_HELP)]
pub struct SubmitArgs {
    #[command(flatten)]
    task: TaskArgs,

    /// A name for people (default: the module's file name).
    #[arg(long)]
    name: Option<String>,

    /// Orders your jobs in a role: higher first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,

    /// Attempts in all per index, the first included (at most 10).
    #[arg(long, value_name = "K")]
    retries: Option<u32>,

    /// What is retried, comma-separated: states (lost, failed, killed,
    /// error), reasons (timeout, out_of_fuel, agent_lost, ...), exit:N,
    /// any; `+` joins conditions that must all hold. Default: lost and the
    /// agent's loss.
    #[arg(long, value_name = "RULES", value_parser = retry_rules)]
    retry_on: Option<RetryRules>,

    /// Stop the job once this many indices failed for good.
    #[arg(long, default_value_t = 0, value_name = "N")]
    max_failed: u32,

    /// Run at most this many indices at once.
    #[arg(long, default_value_t = 0, value_name = "N")]
    max_running: u32,

    /// Fail what has not finished this long after submission (e.g. 1h).
    #[arg(long, value_name = "DUR", value_parser = cli_args::duration)]
    deadline: Option<Duration>,

    /// Start once these jobs all succeeded (a failed one fails this job).
    #[arg(long, value_delimiter = ',', value_name = "JOB")]
    after: Vec<String>,

    /// Start once these jobs ended, however they ended.
    #[arg(long, value_delimiter = ',', value_name = "JOB")]
    after_any: Vec<String>,

    /// Start only if one of these jobs failed.
    #[arg(long, value_delimiter = ',', value_name = "JOB")]
    after_failed: Vec<String>,

    /// Run index i once index i of this job succeeded.
    #[arg(long, value_name = "JOB")]
    after_each: Option<String>,

    /// Submit held: nothing starts until `wasmos job release`.
    #[arg(long)]
    hold: bool,

    /// Submitting again with the same key answers the first job's id.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,

    /// Print {"job_id": ...} instead of the id alone.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct JobsArgs {
    #[command(flatten)]
    master: ops::MasterArg,
    /// One JSON object per job.
    #[arg(long)]
    json: bool,
    /// At most this many jobs (a page; oldest first).
    #[arg(long, default_value_t = 1000)]
    limit: u32,
}

#[derive(clap::Args, Debug)]
pub struct JobArgs {
    #[command(subcommand)]
    action: JobAction,
    #[command(flatten)]
    master: ops::MasterArg,
}

#[derive(clap::Subcommand, Debug)]
enum JobAction {
    /// A job's state, counts and why it ended.
    Show {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Wait for a job to end; exit 0 when every index succeeded, else 1.
    Wait {
        job: String,
        /// Give up (exit 2) after this long.
        #[arg(long, value_parser = cli_args::duration)]
        timeout: Option<Duration>,
    },
    /// Each index's outcome: state, reason, exit code, attempts, agent.
    Results {
        job: String,
        /// Only indices that failed or were cancelled.
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        json: bool,
        /// Write each index's stdout to DIR/<index>.
        #[arg(long, value_name = "DIR")]
        output: Option<std::path::PathBuf>,
    },
    /// Nothing more of the job starts until it is released.
    Hold { job: String },
    /// Let a held job start again.
    Release { job: String },
    /// Kill what runs and start nothing more.
    Cancel { job: String },
    /// Run the failed indices again, each as a new attempt.
    Retry {
        job: String,
        /// Only the failed indices (the default, and the only choice but
        /// --cancelled).
        #[arg(long)]
        failed: bool,
        /// The cancelled indices too.
        #[arg(long)]
        cancelled: bool,
    },
}

/// `--retry-on`, read (one value, however many rules).
#[derive(Clone, Debug)]
struct RetryRules(Vec<v1::RetryRule>);

fn retry_rules(text: &str) -> Result<RetryRules, String> {
    retry::parse_rules(text).map(RetryRules)
}

fn jobs_client(client: &Client) -> JobsClient<Channel> {
    JobsClient::new(client.channel()).max_decoding_message_size(64 << 20)
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let (module, inputs) = args.task.read_files()?;
    let retry_policy = match (&args.retries, &args.retry_on) {
        (None, None) => None,
        (attempts, rules) => {
            let mut policy = retry::default_policy();
            if let Some(attempts) = attempts {
                policy.max_attempts = *attempts;
            }
            if let Some(RetryRules(rules)) = rules {
                policy.rules = rules.clone();
            }
            retry::validate(&policy).map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(policy)
        }
    };
    let client = args.task.master.client().await?;
    let mut template = upload(&client, &args.task, &module, &inputs)
        .await?
        .args(args.task.args.iter().cloned());
    for (name, value) in &args.task.env {
        template = template.env(name, value);
    }
    let spec = v1::JobSpec {
        name: args
            .name
            .clone()
            .unwrap_or_else(|| job_name(&args.task.module)),
        role: args.task.role.clone(),
        task: Some(template.spec(String::new())),
        count: args.task.instances,
        retry: retry_policy,
        max_failed: args.max_failed,
        max_running: args.max_running,
        priority: args.priority,
        deadline_ms: args.deadline.map_or(0, |d| d.as_millis() as u64),
        after: args.after.clone(),
        after_any: args.after_any.clone(),
        after_failed: args.after_failed.clone(),
        after_each: args.after_each.clone().unwrap_or_default(),
        hold: args.hold,
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        on: args.task.on(),
    };
    let answer = submit_spec(&client, spec).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"job_id": answer.job_id, "existing": answer.existing})
        );
    } else {
        println!("{}", answer.job_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Submits `spec`: the master's answer (the job's id).
pub async fn submit_spec(
    client: &Client,
    spec: v1::JobSpec,
) -> anyhow::Result<v1::SubmitJobResponse> {
    Ok(jobs_client(client)
        .submit(v1::SubmitJobRequest { spec: Some(spec) })
        .await
        .map_err(ops::grpc)?
        .into_inner())
}

pub async fn list(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let client = args.master.client().await?;
    let mut jobs = jobs_client(&client);
    let mut after = String::new();
    let mut all = Vec::new();
    while all.len() < args.limit as usize {
        let page = jobs
            .list(v1::ListJobsRequest {
                after: after.clone(),
                limit: (args.limit as usize - all.len()).min(1000) as u32,
            })
            .await
            .map_err(ops::grpc)?
            .into_inner();
        all.extend(page.jobs);
        if page.next.is_empty() {
            break;
        }
        after = page.next;
    }
    if args.json {
        for job in &all {
            println!("{}", summary_json(job));
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:<20} {:<10} {:<12} {:<10} {:>15} {:>7}  AGE",
        "ID", "NAME", "ROLE", "OWNER", "STATE", "DONE/TOTAL", "FAILED"
    );
    let now = wall_ms();
    for job in &all {
        println!(
            "{:<8} {:<20} {:<10} {:<12} {:<10} {:>15} {:>7}  {}",
            job.job_id,
            truncate(&job.name, 20),
            truncate(&job.role, 10),
            truncate(&job.owner, 12),
            state_name(job.state),
            format!(
                "{}/{}",
                job.succeeded + job.failed + job.cancelled,
                job.count
            ),
            job.failed,
            age(now.saturating_sub(job.submitted_ms))
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn job(args: JobArgs) -> anyhow::Result<ExitCode> {
    let client = args.master.client().await?;
    let mut jobs = jobs_client(&client);
    let request = |job: &str| v1::JobRequest {
        job_id: job.to_string(),
        ..Default::default()
    };
    match args.action {
        JobAction::Show { job, json } => {
            let job = jobs
                .get(v1::JobRequest {
                    job_id: job,
                    detail: true,
                })
                .await
                .map_err(ops::grpc)?
                .into_inner();
            if json {
                println!("{}", summary_json(&job));
            } else {
                show(&job);
            }
            Ok(ExitCode::SUCCESS)
        }
        JobAction::Wait { job, timeout } => wait(&mut jobs, &job, timeout).await,
        JobAction::Results {
            job,
            failed,
            json,
            output,
        } => results(&client, &mut jobs, &job, failed, json, output).await,
        JobAction::Hold { job } => {
            let job = jobs
                .hold(request(&job))
                .await
                .map_err(ops::grpc)?
                .into_inner();
            eprintln!("{} held", job.job_id);
            Ok(ExitCode::SUCCESS)
        }
        JobAction::Release { job } => {
            let job = jobs
                .release(request(&job))
                .await
                .map_err(ops::grpc)?
                .into_inner();
            eprintln!("{} released", job.job_id);
            Ok(ExitCode::SUCCESS)
        }
        JobAction::Retry {
            job,
            failed: _,
            cancelled,
        } => {
            let before = jobs
                .get(request(&job))
                .await
                .map_err(ops::grpc)?
                .into_inner();
            let after = jobs
                .retry(v1::RetryJobRequest {
                    job_id: job.clone(),
                    cancelled,
                })
                .await
                .map_err(ops::grpc)?
                .into_inner();
            let again =
                (before.failed + before.cancelled).saturating_sub(after.failed + after.cancelled);
            if again == 0 {
                eprintln!("{job}: no failed index to run again");
            } else {
                eprintln!("{job}: {again} indices run again");
            }
            Ok(ExitCode::SUCCESS)
        }
        JobAction::Cancel { job } => {
            let job = jobs
                .cancel(request(&job))
                .await
                .map_err(ops::grpc)?
                .into_inner();
            eprintln!(
                "{} cancelling: {} indices running are being killed",
                job.job_id, job.running
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn ended(state: i32) -> bool {
    matches!(
        v1::JobState::try_from(state),
        Ok(v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled)
    )
}

async fn wait(
    jobs: &mut JobsClient<Channel>,
    id: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    loop {
        let job = jobs
            .get(v1::JobRequest {
                job_id: id.to_string(),
                ..Default::default()
            })
            .await
            .map_err(ops::grpc)?
            .into_inner();
        let done = job.succeeded + job.failed + job.cancelled;
        if tty {
            eprint!(
                "\r{} {}: {done}/{} done, {} running, {} failed   ",
                job.job_id,
                state_name(job.state),
                job.count,
                job.running,
                job.failed
            );
        }
        if ended(job.state) {
            if tty {
                eprintln!();
            }
            let state = state_name(job.state);
            if job.reason.is_empty() {
                eprintln!("{} {state}", job.job_id);
            } else {
                eprintln!("{} {state}: {}", job.job_id, job.reason);
            }
            return Ok(if job.state == v1::JobState::Succeeded as i32 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            eprintln!("{id} has not ended; stopped waiting");
            return Ok(ExitCode::from(2));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn results(
    client: &Client,
    jobs: &mut JobsClient<Channel>,
    id: &str,
    failed_only: bool,
    json: bool,
    output: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let mut operator = ops::operator_of(client);
    if let Some(dir) = &output {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    }
    if !json {
        println!(
            "{:>7} {:<10} {:<16} {:>5} {:>8}  AGENT",
            "INDEX", "STATE", "REASON", "EXIT", "ATTEMPTS"
        );
    }
    let mut from = 0;
    loop {
        let page = jobs
            .results(v1::JobResultsRequest {
                job_id: id.to_string(),
                from_index: from,
                limit: 1000,
                failed_only,
            })
            .await
            .map_err(ops::grpc)?
            .into_inner();
        for result in &page.results {
            let outcome = result.outcome.clone().unwrap_or_default();
            if let Some(dir) = &output
                && !result.task_id.is_empty()
            {
                // The whole stdout from its sandbox; once that is gone, the
                // head the master kept.
                let read = crate::run::read_stdout(
                    &mut operator,
                    &result.task_id,
                    &outcome.agent_id,
                    u64::MAX,
                )
                .await;
                let stdout = match (read, &result.stdout_head) {
                    (Ok(stdout), _) => stdout,
                    (Err(e), Some(head)) => {
                        eprintln!(
                            "index {}: its sandbox cannot be read ({e:#}); wrote the first {} bytes the master kept",
                            result.index,
                            head.len()
                        );
                        head.clone()
                    }
                    (Err(e), None) => {
                        return Err(e).with_context(|| {
                            format!("reading the stdout of index {}", result.index)
                        });
                    }
                };
                let path = dir.join(result.index.to_string());
                std::fs::write(&path, stdout)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "index": result.index,
                        "task_id": result.task_id,
                        "state": index_state_name(outcome.state),
                        "task_state": task_state_name(outcome.task_state),
                        "reason": reason_name(outcome.reason),
                        "exit_code": outcome.exit_code,
                        "attempts": outcome.attempts,
                        "agent": outcome.agent_id,
                        "cpu_time_ms": outcome.usage.map_or(0, |u| u.cpu_time_ms),
                        "wall_time_ms": outcome.usage.map_or(0, |u| u.wall_time_ms),
                        "fuel": outcome.usage.map_or(0, |u| u.fuel_consumed),
                        "stdout_head": result.stdout_head.as_deref().map(String::from_utf8_lossy),
                    })
                );
            } else {
                println!(
                    "{:>7} {:<10} {:<16} {:>5} {:>8}  {}",
                    result.index,
                    index_state_name(outcome.state),
                    reason_name(outcome.reason),
                    outcome.exit_code.map_or("-".into(), |c| c.to_string()),
                    outcome.attempts,
                    outcome.agent_id
                );
            }
        }
        if page.next_index == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        from = page.next_index;
    }
}

fn show(job: &v1::JobSummary) {
    println!("job:       {} ({})", job.job_id, job.name);
    println!("owner:     {} in role {}", job.owner, job.role);
    print!("state:     {}", state_name(job.state));
    if job.held {
        print!(" (held)");
    }
    println!();
    if !job.reason.is_empty() {
        println!("reason:    {}", job.reason);
    }
    println!(
        "indices:   {} in all: {} succeeded, {} failed, {} cancelled, {} running",
        job.count, job.succeeded, job.failed, job.cancelled, job.running
    );
    if job.outputs_dropped > 0 {
        println!(
            "outputs:   the stdout of {} indices was not kept by the master (past the job's 64 MiB; failed indices' are kept first): read it from their sandboxes while they last",
            job.outputs_dropped
        );
    }
    if let Some(detail) = &job.detail {
        println!(
            "run time:  p50 {} ms, p99 {} ms; fuel {}, cpu {} ms; {} attempts",
            detail.run_time_p50_ms,
            detail.run_time_p99_ms,
            detail.fuel,
            detail.cpu_time_ms,
            detail.attempts
        );
        for end in &detail.ends {
            println!(
                "ended:     {} {} x{}",
                task_state_name(end.state),
                reason_name(end.reason),
                end.count
            );
        }
        if !detail.failed_indices.is_empty() {
            let shown: Vec<String> = detail.failed_indices.iter().map(u32::to_string).collect();
            println!("failed:    indices {}", shown.join(", "));
        }
    }
    println!("priority:  {}", job.priority);
    if job.expired {
        println!("results:   expired (past the master's --job-retention); this summary stays");
    }
    println!("framework: {}", job.framework_id);
}

fn summary_json(job: &v1::JobSummary) -> serde_json::Value {
    serde_json::json!({
        "job_id": job.job_id,
        "name": job.name,
        "role": job.role,
        "owner": job.owner,
        "state": state_name(job.state),
        "reason": job.reason,
        "held": job.held,
        "count": job.count,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "cancelled": job.cancelled,
        "running": job.running,
        "submitted_ms": job.submitted_ms,
        "ended_ms": job.ended_ms,
        "priority": job.priority,
        "framework_id": job.framework_id,
        "expired": job.expired,
        "outputs_dropped": job.outputs_dropped,
        "detail": job.detail.as_ref().map(|d| serde_json::json!({
            "run_time_p50_ms": d.run_time_p50_ms,
            "run_time_p99_ms": d.run_time_p99_ms,
            "fuel": d.fuel,
            "cpu_time_ms": d.cpu_time_ms,
            "attempts": d.attempts,
            "failed_indices": d.failed_indices,
            "ends": d.ends.iter().map(|e| serde_json::json!({
                "state": task_state_name(e.state),
                "reason": reason_name(e.reason),
                "count": e.count,
            })).collect::<Vec<_>>(),
        })),
    })
}

fn state_name(state: i32) -> String {
    v1::JobState::try_from(state).map_or_else(
        |_| state.to_string(),
        |s| s.as_str_name().trim_start_matches("JOB_STATE_").to_string(),
    )
}

fn index_state_name(state: i32) -> String {
    v1::IndexState::try_from(state).map_or_else(
        |_| state.to_string(),
        |s| {
            s.as_str_name()
                .trim_start_matches("INDEX_STATE_")
                .to_string()
        },
    )
}

fn task_state_name(state: i32) -> String {
    v1::TaskState::try_from(state).map_or_else(
        |_| state.to_string(),
        |s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATE_")
                .to_string()
        },
    )
}

fn reason_name(reason: i32) -> String {
    match v1::Reason::try_from(reason) {
        Ok(v1::Reason::Unspecified) => "-".into(),
        Ok(r) => r.as_str_name().trim_start_matches("REASON_").to_string(),
        Err(_) => reason.to_string(),
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let cut: String = text.chars().take(width - 1).collect();
        format!("{cut}…")
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
