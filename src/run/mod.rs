//! `wasmos run`: submit a `.wasm`/`.wat` module as a job of N tasks, follow
//! it to the end and report what happened.
//!
//! The module is checked locally first (`.wat` compiled, the binary
//! validated), so a typo fails in a second with the validator's message
//! instead of as N failed tasks. Inputs are uploaded as artifacts (a
//! directory as a tar archive). Without `--detach` the job runs under the
//! SDK's [`Job`], which tears its framework down at the end or on Ctrl-C;
//! with `--detach` it is submitted to the master's job service (as
//! `wasmos submit` does, with its defaults) and the command exits at once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmos_proto::v1;
use wasmos_proto::v1::operator_client::OperatorClient;
use wasmos_sdk::{Client, Job, TaskTemplate};

use crate::{cli_args, local, ops};

pub(crate) mod inputs;
mod report;

pub(crate) use inputs::{Input, load_module, upload};
pub(crate) use report::read_stdout;
use report::{Progress, outcome_json, summary};

/// How much of each task's stdout `--json` includes.
const JSON_STDOUT_LIMIT: u64 = 64 << 10;

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

    /// Submit the job to the master, print its id and exit 0 at once,
    /// whatever the cluster's size: the master runs it (`wasmos submit`
    /// with its defaults; see there for retries, dependencies, priorities).
    /// Its tasks are <job>-<index>-<attempt>; follow it with `wasmos job
    /// wait ID`, `wasmos job results ID`, `wasmos ps`, `wasmos logs`;
    /// stop it with `wasmos job cancel ID`.
    #[arg(long)]
    detach: bool,

    /// Print one JSON object per task on stdout instead of the summary:
    /// id, index, state, reason, message, exit_code, usage, agent and the
    /// first 64 KiB of its stdout. With --detach: the job's id.
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

    /// Run only on agents with this attribute, KEY=VALUE (repeatable: all
    /// must hold). Every agent reports `os` (linux, macos, windows) and
    /// `arch` (x86_64, aarch64): `--on arch=aarch64`; operators add their
    /// own with `wasmos agent --attr`. `wasmos agents` shows them.
    #[arg(long, value_name = "KEY=VALUE", value_parser = cli_args::key_value)]
    pub on: Vec<(String, String)>,

    #[command(flatten)]
    pub master: ops::MasterArg,
}

impl TaskArgs {
    /// The module (checked, `.wat` compiled) and the inputs, read before
    /// anything is sent.
    /// `--on` as the attributes the master matches.
    pub(crate) fn on(&self) -> Vec<v1::Attribute> {
        self.on
            .iter()
            .map(|(key, value)| v1::Attribute {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }

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
        detach(&client, &args, &name, template).await
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
    // The one local agent is this machine: a job it cannot match would
    // wait forever.
    let here = wasmos_platform::host::attributes();
    if let Some((key, value)) = args
        .task
        .on
        .iter()
        .find(|(k, v)| !here.contains(&(k.as_str(), v.as_str())))
    {
        anyhow::bail!(
            "--on {key}={value}: the local cluster's one agent is this machine ({}), so nothing would run",
            here.map(|(k, v)| format!("{k}={v}")).join(", ")
        );
    }
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
    let mut job = Job::new(name).role(&args.task.role);
    for (key, value) in &args.task.on {
        job = job.on(key, value);
    }
    let job = job
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

/// `--detach`: the job is submitted to the master's job service, which
/// runs it (and retries its lost tasks) with nobody attached; its id is
/// printed and `wasmos job wait|results|cancel` follow it.
async fn detach(
    client: &Client,
    args: &Args,
    name: &str,
    template: TaskTemplate,
) -> anyhow::Result<ExitCode> {
    let mut template = template.args(args.task.args.iter().cloned());
    for (var, value) in &args.task.env {
        template = template.env(var, value);
    }
    let spec = v1::JobSpec {
        name: name.to_string(),
        role: args.task.role.clone(),
        task: Some(template.spec(String::new())),
        count: args.task.instances,
        on: args.task.on(),
        ..Default::default()
    };
    let answer = crate::jobs::submit_spec(client, spec).await?;
    if args.json {
        println!("{}", serde_json::json!({"job_id": answer.job_id}));
    } else {
        println!("{}", answer.job_id);
    }
    eprintln!(
        "job {} submitted: its tasks are {}-<index>-<attempt>; follow it with `wasmos job wait {}`, `wasmos job results {}`, `wasmos ps`; stop it with `wasmos job cancel {}`",
        answer.job_id, answer.job_id, answer.job_id, answer.job_id, answer.job_id
    );
    Ok(ExitCode::SUCCESS)
}
