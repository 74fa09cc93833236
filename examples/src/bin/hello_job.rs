//! Runs a WASI module N times on a wasmos cluster and prints one line per
//! task: the smallest complete framework built on the SDK's `Job`.
//!
//! ```sh
//! cargo run --release -p wasmos-examples --bin hello_job -- \
//!     --master http://127.0.0.1:5050 examples/wat/hello.wat --instances 4
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use wasmos_sdk::{Client, Job, TaskTemplate};

/// Run a `.wasm` or `.wat` module as N tasks and report each outcome.
#[derive(Parser)]
struct Args {
    /// The master's gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:5050")]
    master: String,
    /// The module: a `.wasm` binary or `.wat` text.
    module: PathBuf,
    /// How many tasks to run.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// CPU share of each task, in cores.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory cap of each task, in MiB.
    #[arg(long, default_value_t = 64)]
    mem_mib: u64,
    /// Wall-clock limit of each task, in seconds (0: none).
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// The role to run in.
    #[arg(long, default_value = "default")]
    role: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("cannot read the module {}", args.module.display()))?;
    let client = Client::connect(&args.master).await?;
    let module = client.upload(&bytes).await?;
    eprintln!(
        "module {} ({} bytes{})",
        module.digest,
        module.size,
        if module.already_present {
            ", already uploaded"
        } else {
            ""
        }
    );
    let mut template = TaskTemplate::new(module.digest)
        .cpus(args.cpus)
        .mem(args.mem_mib << 20);
    if args.timeout_secs > 0 {
        template = template.timeout(Duration::from_secs(args.timeout_secs));
    }
    let job = Job::new("hello-job")
        .role(args.role)
        .tasks((0..args.instances).map(|i| template.clone().arg(i.to_string())))
        .on_update(|u| {
            if u.status.state() != wasmos_sdk::proto::TaskState::Running {
                return;
            }
            eprintln!("[{}/{}] {} running", u.done, u.total, u.status.task_id);
        });
    let cancel = job.cancel_handle();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cancelling...");
            cancel.cancel();
        }
    });
    let report = job.run(&client).await?;
    for task in &report.tasks {
        println!(
            "task {} {} {:?} reason={:?} exit={} agent={} attempts={}{}",
            task.index,
            task.task_id,
            task.state,
            task.reason,
            task.exit_code.map_or("-".to_string(), |c| c.to_string()),
            if task.agent_id.is_empty() {
                "-"
            } else {
                &task.agent_id
            },
            task.attempts,
            if task.message.is_empty() {
                String::new()
            } else {
                format!(" message={:?}", task.message)
            },
        );
    }
    let failed = report.failed().count();
    eprintln!(
        "{} of {} tasks finished in {:.1?}{}",
        report.tasks.len() - failed,
        report.tasks.len(),
        report.elapsed,
        if report.cancelled { " (cancelled)" } else { "" }
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
