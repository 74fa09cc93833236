//! `wasmos run`: submit a `.wasm`/`.wat` module as a job of N tasks, follow
//! it to the end and report what happened.
//!
//! The module is checked locally first (`.wat` compiled, the binary
//! validated), so a typo fails in a second with the validator's message
//! instead of as N failed tasks. Inputs are uploaded as artifacts (a
//! directory as a tar archive). Without `--detach` the job runs under the
//! SDK's [`Job`], which tears its framework down at the end or on Ctrl-C;
//! with `--detach` a framework of our own launches the tasks and leaves
//! without tearing down, so `wasmos ps/logs/kill` follow them.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wasmos_master::Resources;
use wasmos_master::packing::{self, Fill};
use wasmos_proto::v1;
use wasmos_proto::v1::operator_client::OperatorClient;
use wasmos_sdk::{Client, Event, FrameworkConfig, Job, TaskTemplate};

use crate::{cli_args, local, ops};

pub(crate) mod inputs;
mod report;

pub(crate) use inputs::{Input, load_module, upload};
pub(crate) use report::read_stdout;
use report::{Progress, outcome_json, summary};

/// How much of each task's stdout `--json` includes.
const JSON_STDOUT_LIMIT: u64 = 64 << 10;

/// How long the master keeps a detached job's tasks without a framework
/// attached (the master caps it; its default cap is a week).
const DETACHED_FAILOVER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The end of `wasmos run --help`: how a run goes, exit status, examples.
/// (The subcommand's one-line about comes from its variant in main.rs.)
const AFTER_HELP: &str = "\
The module is validated locally before anything is sent (`.wat` text is compiled to a binary \
first), then uploaded once, named by its sha256. Every instance gets the same ARGS and --env, \
with `{i}` replaced by the instance's index (0, 1, ...). While the job runs, a progress bar is \
drawn on stderr (when stderr is a terminal); at the end a summary goes to stderr: tasks by state \
and reason, the p50/p99 run time and the fuel burnt. With --instances 1 the task's stdout is \
printed on stdout.

Exit status: 0 when every task finished, 1 when any failed (or the job could not run), 2 on a \
usage error, 130 when interrupted. Ctrl-C kills the job's tasks, unless --detach.

Examples:
  # 100 instances, each told its index; exit status 1 if any of them fails
  wasmos run worker.wasm -n 100 --cpus 0.5 --env SHARD={i} -- part-{i}.csv

  # one instance on a throwaway in-process cluster, with a data directory
  wasmos run --local wc.wat --input ./books -- books/moby.txt";

/// Run a WebAssembly (WASI) module as a job of N tasks and report what
/// happened to each (see [`AFTER_HELP`]).
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Run on a throwaway cluster in this process (one agent with all of
    /// this machine's cores) instead of a master: nothing needs to be
    /// running. --master is ignored.
    #[arg(long, conflicts_with = "detach")]
    local: bool,

    /// Submit the tasks, print their ids and exit 0 at once, leaving them
    /// running: follow them with `wasmos ps`, `wasmos logs --follow ID`,
    /// stop them with `wasmos kill ID`.
    #[arg(long)]
    detach: bool,

    /// Print one JSON object per task on stdout instead of the summary:
    /// id, index, state, reason, message, exit_code, usage, agent and the
    /// first 64 KiB of its stdout. With --detach: id and framework.
    #[arg(long)]
    json: bool,
}

/// What each task of a job runs, with what limits, where: shared by
/// `wasmos run` and `wasmos submit`.
#[derive(clap::Args, Debug)]
pub struct TaskArgs {
    /// The module: a `.wasm` binary or `.wat` text.
    #[arg(value_name = "FILE.wasm|FILE.wat")]
    pub module: PathBuf,

    /// Arguments for the module (after `--`); `{i}` becomes the instance
    /// index. The module sees its task id as argv[0].
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,

    /// How many instances (tasks) to run.
    #[arg(long, short = 'n', default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub instances: u32,

    /// CPU share of each instance in cores (0.5 = half a core): the rate at
    /// which it may burn CPU. At least 0.001.
    #[arg(long, default_value_t = 0.1, value_name = "C", value_parser = cpus)]
    pub cpus: f64,

    /// Cap on each instance's linear memory, e.g. 64MiB or 1GiB.
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = cli_args::size)]
    pub mem: u64,

    /// Cap on the files each instance writes in its sandbox, e.g. 100MiB.
    /// 0 (the default) means it writes no files. Inputs come on top: the
    /// task's disk is this plus their size.
    #[arg(long, default_value = "0", value_name = "SIZE", value_parser = cli_args::size)]
    pub disk: u64,

    /// Fuel (about one unit per wasm instruction) each instance may burn
    /// before it fails with OUT_OF_FUEL. 0 (the default): no limit.
    #[arg(long, default_value_t = 0, value_name = "F")]
    pub max_fuel: u64,

    /// Wall-clock deadline of each instance, e.g. 500ms, 30s, 5m; past it
    /// the instance fails with TIMEOUT. Default: none.
    #[arg(long, value_name = "DUR", value_parser = cli_args::duration)]
    pub timeout: Option<Duration>,

    /// An environment variable for the module, NAME=VALUE (repeatable);
    /// `{i}` in VALUE becomes the instance index. The module sees no other
    /// environment.
    #[arg(long, short = 'e', value_name = "K=V", value_parser = cli_args::key_value)]
    pub env: Vec<(String, String)>,

    /// A file or directory to place in each instance's sandbox root under
    /// its own name (repeatable): `--input data/x.csv` appears as `x.csv`, a
    /// directory `--input ./books` as `books/` with everything below it.
    #[arg(long, value_name = "PATH")]
    pub input: Vec<PathBuf>,

    /// The role the job's framework runs in (its weight and quota apply).
    #[arg(long, default_value = "default", value_name = "R")]
    pub role: String,

    #[command(flatten)]
    pub master: ops::MasterArg,
}

impl TaskArgs {
    /// The module (checked, `.wat` compiled) and the inputs, read before
    /// anything is sent.
    pub(crate) fn read_files(&self) -> anyhow::Result<(Vec<u8>, Vec<Input>)> {
        let module = load_module(&self.module)?;
        let inputs = self
            .input
            .iter()
            .map(|path| Input::read(path))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((module, inputs))
    }
}

/// `--cpus`: a positive number of cores.
fn cpus(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(c) if c.is_finite() && c >= 0.001 => Ok(c),
        Ok(c) => Err(format!("{c} cores is too few: give at least 0.001")),
        Err(_) => Err(format!("`{text}` is not a number of cores like 0.5 or 2")),
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Everything that can be checked here is checked before any network.
    let (module, inputs) = args.task.read_files()?;
    let name = job_name(&args.task.module);

    if args.local {
        let dir = std::env::temp_dir().join(format!(
            "wasmos-run-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let result = run_local(&args, &name, &module, &inputs, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        return result;
    }
    let client = args.task.master.client().await?;
    let template = upload(&client, &args.task, &module, &inputs).await?;
    if args.detach {
        detach(&client, &args, &name, &template).await
    } else {
        attached(&client, &args, &name, &template).await
    }
}

async fn run_local(
    args: &Args,
    name: &str,
    module: &[u8],
    inputs: &[Input],
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cluster = local::start(&local::Args {
        agents: 1,
        listen: "127.0.0.1:0".parse()?,
        http: "127.0.0.1:0".parse()?,
        work_dir: Some(dir.to_path_buf()),
        cpus: cores.max(args.task.cpus),
        mem: (4u64 << 30).max(args.task.mem),
        disk: (4u64 << 30).max(
            args.task
                .disk
                .saturating_mul(u64::from(args.task.instances)),
        ),
    })
    .await
    .context("starting the local cluster")?;
    let client = ops::client(&cluster.url, wasmos_sdk::ConnectOptions::default()).await?;
    let template = upload(&client, &args.task, module, inputs).await?;
    let code = attached(&client, args, name, &template).await;
    drop(cluster);
    code
}

/// The job's name: the module's file stem.
pub(crate) fn job_name(module: &Path) -> String {
    let stem = module
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    if name.is_empty() { "run".into() } else { name }
}

/// The `.wat` parser's multi-line report as one line: the message and
/// where (`at FILE:LINE:COL`).
fn one_line(text: &str) -> String {
    let mut lines = text.lines();
    let mut out = lines.next().unwrap_or_default().trim().to_string();
    for line in lines {
        if let Some(at) = line.trim().strip_prefix("-->") {
            out.push_str(" at ");
            out.push_str(at.trim());
        }
    }
    out
}

/// The template of instance `i`: args and env values with `{i}` expanded.
fn instance(template: &TaskTemplate, args: &Args, i: u32) -> TaskTemplate {
    let expand = |s: &str| s.replace("{i}", &i.to_string());
    let mut t = template
        .clone()
        .args(args.task.args.iter().map(|a| expand(a)));
    for (k, v) in &args.task.env {
        t = t.env(k, expand(v));
    }
    t
}

/// Runs the job to the end under the SDK's `Job`, with progress, Ctrl-C and
/// the report.
async fn attached(
    client: &Client,
    args: &Args,
    name: &str,
    template: &TaskTemplate,
) -> anyhow::Result<ExitCode> {
    let total = args.task.instances as usize;
    let mut progress = Progress::new(total);
    let job = Job::new(name)
        .role(&args.task.role)
        .tasks((0..args.task.instances).map(|i| instance(template, args, i)))
        .on_update(move |u| progress.update(u));
    let cancel = job.cancel_handle();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\rinterrupted: killing the job's tasks (Ctrl-C again to quit at once)");
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let started = Instant::now();
    let report = job.run(client).await;
    interrupt.abort();
    Progress::clear();
    let report = report.with_context(|| format!("running {}", args.task.module.display()))?;

    let mut operator = OperatorClient::new(client.channel()).max_decoding_message_size(64 << 20);
    if args.json {
        let mut out = std::io::stdout().lock();
        for t in &report.tasks {
            let stdout =
                read_stdout(&mut operator, &t.task_id, &t.agent_id, JSON_STDOUT_LIMIT).await;
            writeln!(out, "{}", outcome_json(t, &report, stdout))?;
        }
    } else {
        if total == 1
            && let Some(t) = report.tasks.first()
            && !t.agent_id.is_empty()
        {
            match read_stdout(&mut operator, &t.task_id, &t.agent_id, u64::MAX).await {
                Ok(data) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&data)?;
                    out.flush()?;
                }
                Err(e) => eprintln!("wasmos: cannot read the task's stdout: {e:#}"),
            }
        }
        summary(&report, started.elapsed());
    }
    Ok(if report.cancelled {
        ExitCode::from(130)
    } else if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--detach`: a framework of our own launches every instance, then leaves
/// without tearing down (its tasks keep running for the failover timeout).
async fn detach(
    client: &Client,
    args: &Args,
    name: &str,
    template: &TaskTemplate,
) -> anyhow::Result<ExitCode> {
    let config = FrameworkConfig::new(name)
        .role(&args.task.role)
        .failover_timeout(DETACHED_FAILOVER);
    let (scheduler, mut events) = client
        .subscribe(config)
        .await
        .context("registering the job's framework")?;
    let prefix = format!("{name}-{:08x}", rand::random::<u32>());
    let specs: Vec<v1::TaskSpec> = (0..args.task.instances)
        .map(|i| instance(template, args, i).spec(format!("{prefix}-{i}")))
        .collect();
    let mut pending: VecDeque<v1::TaskSpec> = specs.into();
    let mut launched: Vec<String> = Vec::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while !pending.is_empty() {
        let event = tokio::select! {
            _ = &mut interrupted => {
                eprintln!("interrupted: tearing the framework down, killing {} launched tasks", launched.len());
                let _ = scheduler.teardown().await;
                return Ok(ExitCode::from(130));
            }
            event = events.next() => event,
        };
        match event {
            None => bail!("the framework's session ended before its tasks were launched"),
            Some(Event::Error(message)) => {
                bail!("the master ended the job's framework: {message}")
            }
            Some(Event::Offers(offers)) => {
                let mut unused = Vec::new();
                for mut pool in packing::by_agent(offers) {
                    // In submission order: the first index goes first.
                    let chosen = pool.take(&mut pending, Fill::InOrder, |spec| {
                        spec.resources
                            .as_ref()
                            .and_then(|r| Resources::try_from(r).ok())
                            .unwrap_or_default()
                    });
                    let ids = pool.offer_ids;
                    if chosen.is_empty() {
                        unused.extend(ids);
                        continue;
                    }
                    match scheduler.accept(ids, chosen.clone(), Some(1.0)).await {
                        Ok(ids) => {
                            for id in ids {
                                if args.json {
                                    println!(
                                        "{}",
                                        serde_json::json!({"id": id, "framework": scheduler.framework_id()})
                                    );
                                } else {
                                    println!("{id}");
                                }
                                launched.push(id);
                            }
                        }
                        Err(e) if e.code() == Some(tonic::Code::InvalidArgument) => {
                            let _ = scheduler.teardown().await;
                            bail!("the master refused the tasks: {e}");
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "accept failed; waiting for other offers");
                            for spec in chosen.into_iter().rev() {
                                pending.push_front(spec);
                            }
                        }
                    }
                }
                if !unused.is_empty() {
                    let _ = scheduler.decline(unused, Some(1.0)).await;
                }
            }
            Some(_) => {}
        }
    }
    let _ = scheduler.suppress().await;
    eprintln!(
        "{} tasks launched by framework {}; follow them with `wasmos ps`, `wasmos logs --follow ID`; stop them with `wasmos kill ID`",
        launched.len(),
        scheduler.framework_id()
    );
    // Dropping the scheduler closes the event stream without a teardown.
    drop(scheduler);
    Ok(ExitCode::SUCCESS)
}
