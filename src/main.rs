//! `wasmos`: the one binary of the cluster: master, agent, and the commands
//! people and scripts use to drive it.

mod cli_args;
mod master;
mod simulate;

use clap::{Parser, Subcommand};

/// wasmos: a cluster manager where every task is a WebAssembly module.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the master: pools agents' resources, offers them to frameworks.
    Master(Box<master::Args>),
    /// Simulate the master's core and DRF allocator in one process: agents,
    /// frameworks in weighted roles, tasks coming and going, in simulated
    /// time. Prints each framework's dominant share as it changes.
    Simulate(simulate::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMOS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Master(args) => runtime()?.block_on(master::run(*args)),
        Command::Simulate(args) => simulate::run(args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
