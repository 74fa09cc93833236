//! `wasmos`: the one binary of the cluster (master, agent, local cluster and
//! client commands as they land).

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
    /// Simulate the master's core and DRF allocator in one process: agents,
    /// frameworks in weighted roles, tasks coming and going, in simulated
    /// time. Prints each framework's dominant share as it changes.
    Simulate(simulate::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Simulate(args) => simulate::run(args),
    }
}
