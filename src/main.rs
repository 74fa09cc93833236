//! `wasmos`: the one binary of the cluster: master, agent, and the commands
//! people and scripts use to drive it.

mod access;
mod agent;
mod allocator;
mod cli_args;
mod demo;
mod etcd_tls;
mod executor;
mod jobs;
mod local;
mod master;
mod master_ha;
mod ops;
mod paging;
mod registry;
mod run;
mod shutdown;
mod simulate;
mod usage;
#[cfg(windows)]
mod windows_service;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// wasmos: a cluster manager where every task is a WebAssembly module.
///
/// Client commands find the master by --master, then WASMOS_MASTER, then
/// the profile `wasmos login` saved, then http://127.0.0.1:5050; its CA by
/// --ca / WASMOS_CA / the profile, and their token by --token /
/// WASMOS_TOKEN / the profile.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The tour: a local cluster runs two weighted jobs of real work plus
    /// tasks that break their limits, with live progress and a summary.
    Demo(demo::Args),
    /// Run a `.wasm` or `.wat` module as a job of N tasks and report each
    /// outcome. Exits non-zero if any task failed.
    Run(Box<run::Args>),
    /// Submit a job to the master, print its id and exit: the master runs
    /// it (N indices of a module, retried, after other jobs) without you.
    Submit(Box<jobs::SubmitArgs>),
    /// List jobs: id, name, role, owner, state, done/total, failed, age.
    Jobs(jobs::JobsArgs),
    /// One job: show, wait, results, hold, release, cancel.
    Job(jobs::JobArgs),
    /// What tasks used (cpu, task time, memory, fuel) per role, principal
    /// or job, from the master's usage ledger.
    Usage(usage::Args),
    /// Run a master and agents in this process, on the default addresses.
    Local(local::Args),
    /// Run the master: pools agents' resources, offers them to frameworks.
    Master(Box<master::Args>),
    /// Run an agent: runs the wasm tasks a master sends it.
    Agent(Box<agent::Args>),
    /// Run an agent's tasks (started by `wasmos agent`; outlives it).
    Executor(Box<executor::Args>),
    /// List tasks: id, state, reason, agent, framework, resources.
    Ps(ops::PsArgs),
    /// Print a task's stdout (or --stderr), optionally following it.
    Logs(ops::LogsArgs),
    /// Kill tasks.
    Kill(ops::KillArgs),
    /// List the files a task wrote in its root directory.
    Ls(ops::LsArgs),
    /// Print a file a task wrote.
    Cat(ops::CatArgs),
    /// List agents: resources, usage, state.
    Agents(ops::PagedListArgs),
    /// List the masters: on etcd, the leader (with its epoch) and the
    /// standbys, each with where it serves and since when.
    Masters(ops::ListArgs),
    /// List frameworks: role, state, tasks, dominant share and the share DRF
    /// says each should hold.
    Frameworks(ops::PagedListArgs),
    /// List roles with weights, quotas, dominant shares and the shares DRF
    /// says they should hold; `roles set` changes weights and quotas.
    Roles(ops::RolesArgs),
    /// Make, list and revoke tokens: for principals (frameworks and CLI
    /// users in their roles), admins, read-only operators and joining agents.
    Token(access::TokenArgs),
    /// Say who the CLI is to the master and what it may do.
    Whoami(access::WhoAmIArgs),
    /// Print the master's audit log: one JSON line per change or refusal.
    Audit(access::AuditArgs),
    /// Save a master's URL, CA and token in the profile the CLI and SDK
    /// read, after checking that the master accepts them.
    Login(access::LoginArgs),
    /// Move a master's registry: `registry migrate` copies a stopped
    /// master's registry into etcd, for masters that share it.
    Registry(registry::Args),
    /// Simulate the master's core and DRF allocator in one process: agents,
    /// frameworks in weighted roles, tasks coming and going, in simulated
    /// time. Prints each framework's dominant share as it changes.
    Simulate(simulate::Args),
}

fn main() -> ExitCode {
    allocator::configure();
    let cli = Cli::parse();
    // Daemons say what they do; client commands only what goes wrong.
    // WASMOS_LOG (e.g. `debug`, `wasmos_master=debug`) overrides either.
    let default_level = match cli.command {
        Command::Master(_) | Command::Agent(_) | Command::Executor(_) | Command::Local(_) => "info",
        _ => "warn",
    };
    let log_file = match service_log(&cli.command) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("wasmos: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let ansi = log_file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = match log_file {
        Some(file) => BoxMakeWriter::new(std::sync::Mutex::new(file)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMOS_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(writer)
        .with_ansi(ansi)
        .init();
    if matches!(
        cli.command,
        Command::Master(_)
            | Command::Agent(_)
            | Command::Executor(_)
            | Command::Local(_)
            | Command::Demo(_)
    ) {
        // Everything these create is their owner's alone, whatever umask
        // they were started under: a master's registry holds the CA's key
        // and tasks' env, an agent's work dir its key, sandboxes and tasks'
        // outputs; the mask covers files a library (redb, wasmtime's cache)
        // makes too.
        wasmos_platform::private::owner_only_from_now_on();
    }
    #[cfg(windows)]
    if let Command::Agent(args) = &cli.command
        && let Some(name) = &args.windows_service
    {
        return match windows_service::run(name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("wasmos: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmos: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match command {
        Command::Demo(args) => rt()?.block_on(demo::run(args))?,
        Command::Run(args) => return rt()?.block_on(run::run(*args)),
        Command::Local(args) => rt()?.block_on(local::run(args))?,
        Command::Master(args) => {
            let rt = match args.threads {
                1 => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
                n => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(n.into())
                    .enable_all()
                    .build()?,
            };
            rt.block_on(master::run(*args))?
        }
        // The agent's tasks run on the executor's own threads; its runtime
        // only carries the link to the master, and one thread carries it
        // with fewer cross-thread hand-offs (launch latency) than several.
        Command::Agent(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(agent::run(*args, shutdown::requested()))?,
        // Likewise: tasks run on the executor's worker threads.
        Command::Executor(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(executor::run(*args))?,
        Command::Submit(args) => return rt()?.block_on(jobs::submit(*args)),
        Command::Jobs(args) => return rt()?.block_on(jobs::list(args)),
        Command::Job(args) => return rt()?.block_on(jobs::job(args)),
        Command::Usage(args) => return rt()?.block_on(usage::run(args)),
        Command::Ps(args) => rt()?.block_on(ops::ps(args))?,
        Command::Logs(args) => rt()?.block_on(ops::logs(args))?,
        Command::Kill(args) => rt()?.block_on(ops::kill(args))?,
        Command::Ls(args) => rt()?.block_on(ops::ls(args))?,
        Command::Cat(args) => rt()?.block_on(ops::cat(args))?,
        Command::Agents(args) => rt()?.block_on(ops::agents(args))?,
        Command::Masters(args) => rt()?.block_on(ops::masters(args))?,
        Command::Frameworks(args) => rt()?.block_on(ops::frameworks(args))?,
        Command::Roles(args) => rt()?.block_on(ops::roles(args))?,
        Command::Token(args) => rt()?.block_on(access::token(args))?,
        Command::Login(args) => rt()?.block_on(access::login(args))?,
        Command::Whoami(args) => rt()?.block_on(access::whoami(args))?,
        Command::Audit(args) => rt()?.block_on(access::audit(args))?,
        Command::Simulate(args) => simulate::run(args)?,
        Command::Registry(args) => registry::run(args)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a Windows service's logs go: it has no console, so
/// `<work-dir>/agent.log` (appended). None for everything else: stderr.
fn service_log(command: &Command) -> anyhow::Result<Option<std::fs::File>> {
    #[cfg(windows)]
    if let Command::Agent(args) = command
        && args.windows_service.is_some()
    {
        let path = args.work_dir.join("agent.log");
        std::fs::create_dir_all(&args.work_dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        return Ok(Some(file));
    }
    let _ = command;
    Ok(None)
}
