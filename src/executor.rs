//! `wasmos executor`: the process that runs an agent's tasks. The agent
//! starts it (in a session of its own, so the agent's death does not end
//! it) with flags made by `wasmos_agent::process::executor_args`; people
//! rarely run it by hand.

use std::path::PathBuf;
use std::time::Duration;

use wasmos_agent::ExecutorConfig;
use wasmos_agent::checkpoint::Backend;
use wasmos_agent::process::service::ServiceConfig;

use crate::cli_args;

/// Run an agent's tasks, serving the agent on <work-dir>/executor.sock.
/// Started by `wasmos agent`; outlives it, so tasks go on while the agent
/// restarts.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The agent's work dir.
    #[arg(long)]
    work_dir: PathBuf,
    /// CPU cores tasks may use.
    #[arg(long)]
    cpus: f64,
    /// Memory tasks may use: the largest memory one task may have when the
    /// engine is sized.
    #[arg(long, default_value = "4GiB", value_parser = cli_args::size)]
    mem: u64,
    /// Cap on each task's stdout and stderr.
    #[arg(long, default_value = "10MiB", value_parser = cli_args::size)]
    output_cap: u64,
    /// Cap on the on-disk cache of compiled modules.
    #[arg(long, default_value = "1GiB", value_parser = cli_args::size)]
    module_cache_size: u64,
    /// Cap on the disk all sandboxes take together.
    #[arg(long, value_parser = cli_args::size)]
    sandbox_disk_limit: Option<u64>,
    /// Free space to keep on the work dir's file system.
    #[arg(long, default_value = "1GiB", value_parser = cli_args::size)]
    min_free_disk: u64,
    /// How often disk use is checked.
    #[arg(long, default_value = "10s", value_parser = cli_args::duration)]
    gc_interval: Duration,
    /// Sandboxes of acknowledged tasks are deleted after this long.
    #[arg(long, default_value = "1h", value_parser = cli_args::duration)]
    sandbox_retention: Duration,
    /// Most sandboxes of ended tasks kept.
    #[arg(long, default_value_t = wasmos_agent::DEFAULT_MAX_SANDBOXES)]
    max_sandboxes: usize,
    /// With no agent attached for this long and no task left, exit.
    #[arg(long, default_value = "5m", value_parser = cli_args::duration)]
    orphan_timeout: Duration,
    /// The agent/executor protocol to speak, MAJOR.MINOR (tests force
    /// another to check upgrades).
    #[arg(long, hide = true, value_parser = wasmos_agent::process::parse_protocol)]
    protocol: Option<wasmos_proto::v1::ExecutorProtocol>,
    /// `power-loss`: keep unsynced checkpoint writes in memory only, so a
    /// kill loses what a power cut would (tests).
    #[arg(long, hide = true, value_parser = checkpoint_backend)]
    checkpoint: Option<Backend>,
}

/// `file` or `power-loss`.
pub fn checkpoint_backend(text: &str) -> Result<Backend, String> {
    match text {
        "file" => Ok(Backend::File),
        "power-loss" => Ok(Backend::PowerLoss),
        other => Err(format!(
            "`{other}` is not a checkpoint backend (file, power-loss)"
        )),
    }
}

impl Args {
    fn config(&self) -> anyhow::Result<ServiceConfig> {
        anyhow::ensure!(
            self.cpus.is_finite() && self.cpus > 0.0,
            "--cpus must be > 0, got {}",
            self.cpus
        );
        anyhow::ensure!(!self.gc_interval.is_zero(), "--gc-interval must be > 0");
        let executor = ExecutorConfig::new(&self.work_dir)
            .cpus(self.cpus)
            .mem(self.mem)
            .output_cap(self.output_cap)
            .module_cache_bytes(self.module_cache_size)
            .sandbox_disk_limit(self.sandbox_disk_limit)
            .min_free_disk(self.min_free_disk)
            .gc_interval(self.gc_interval)
            .sandbox_retention(self.sandbox_retention)
            .max_sandboxes(self.max_sandboxes);
        Ok(ServiceConfig {
            executor,
            checkpoint: self.checkpoint.unwrap_or_default(),
            protocol: self
                .protocol
                .clone()
                .unwrap_or_else(wasmos_agent::process::protocol),
            orphan_timeout: Some(self.orphan_timeout),
        })
    }
}

#[cfg(unix)]
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    let exit = wasmos_agent::process::server::serve(config).await?;
    tracing::info!(?exit, "wasmos executor exiting");
    Ok(())
}

#[cfg(not(unix))]
pub async fn run(args: Args) -> anyhow::Result<()> {
    let _ = args.config()?;
    anyhow::bail!("the executor process needs Unix sockets; here agents run their tasks in process")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn the_flags_the_agent_passes_are_the_ones_parsed() {
        let config = ServiceConfig {
            executor: ExecutorConfig::new("/tmp/w")
                .cpus(1.5)
                .output_cap(123)
                .module_cache_bytes(456)
                .sandbox_disk_limit(Some(789))
                .min_free_disk(1011)
                .gc_interval(Duration::from_millis(1200))
                .sandbox_retention(Duration::from_secs(7))
                .max_sandboxes(42),
            checkpoint: Backend::PowerLoss,
            protocol: wasmos_agent::process::parse_protocol("3.4").unwrap(),
            orphan_timeout: Some(Duration::from_millis(2500)),
        };
        let mut argv = vec!["wasmos-executor".to_string()];
        argv.extend(wasmos_agent::process::executor_args(&config));
        let parsed = Cli::try_parse_from(argv).unwrap().args.config().unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{config:?}"));
    }
}
