//! `wasmos demo`: the README's first command. A local cluster of 3 agents
//! runs two jobs of real work in roles weighted 2:1 (counting the primes
//! below 3,000,000 in 300 ranges), plus three tasks that break their limits:
//! a memory hog, a spinner out of fuel and a module that is not wasm. It
//! shows live progress, then outcomes by role and reason, the roles' shares
//! while both jobs competed, and checks the answer. Needs no wasm toolchain:
//! the guests are `.wat` text in `examples/wat/`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wasmos_proto::v1;
use wasmos_sdk::{Client, Job, JobReport, RetryPolicy, TaskTemplate};

use crate::{local, ops};

const PRIMES_WAT: &str = include_str!("../examples/wat/primes.wat");
const MEMHOG_WAT: &str = include_str!("../examples/wat/memhog.wat");
const SPIN_WAT: &str = include_str!("../examples/wat/spin.wat");

/// The cpus of each prime-counting task: 4 run at once on each 1-cpu agent.
const PRIME_TASK_CPUS: f64 = 0.25;
/// Numbers each job counts primes in, and how many tasks split them.
const LIMIT: u64 = 3_000_000;
const TASKS_PER_JOB: u64 = 150;
/// π(3,000,000), for checking the cluster's answer.
const PRIMES_BELOW_LIMIT: u64 = 216_816;

/// Run the tour: a local cluster, two weighted jobs, three broken tasks.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Agents in the local cluster (1 cpu each).
    #[arg(long, default_value_t = 3)]
    agents: usize,
}

/// Tasks finished so far, per job.
type Progress = Arc<Mutex<BTreeMap<&'static str, (usize, usize)>>>;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let work_dir = std::env::temp_dir().join(format!("wasmos-demo-{}", std::process::id()));
    let cluster = local::start(&local::Args {
        agents: args.agents,
        listen: "127.0.0.1:0".parse()?,
        http: "127.0.0.1:0".parse()?,
        work_dir: Some(work_dir.clone()),
        cpus: 1.0,
        mem: 2 << 30,
        disk: 1 << 30,
    })
    .await?;
    let result = tour(&cluster.url, args.agents, started).await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&work_dir);
    result
}

async fn tour(url: &str, agents: usize, started: Instant) -> anyhow::Result<()> {
    println!("wasmos demo: a local cluster of {agents} agents (1 cpu, 2 GiB each) at {url}");
    let mut operator = ops::operator(url).await?;
    for (role, weight) in [("analytics", 2.0), ("reports", 1.0)] {
        operator
            .update_role(v1::UpdateRoleRequest {
                role: role.into(),
                weight: Some(weight),
                quota: None,
            })
            .await
            .map_err(ops::grpc)?;
    }
    let client = Client::connect_with(url, wasmos_sdk::ConnectOptions::default()).await?;
    // Wait for the agents: offers need them.
    wait_for_agents(&mut operator, agents).await?;
    let primes = client.upload(PRIMES_WAT).await?.digest;
    let memhog = client.upload(MEMHOG_WAT).await?.digest;
    let spin = client.upload(SPIN_WAT).await?.digest;
    let junk = client
        .upload_raw(b"this is not a wasm module")
        .await?
        .digest;

    let half = LIMIT / 2;
    let step = half / TASKS_PER_JOB;
    println!("  role analytics (weight 2): {TASKS_PER_JOB} tasks count primes in [0, {half})");
    println!(
        "  role reports   (weight 1): {TASKS_PER_JOB} tasks count primes in [{half}, {LIMIT})"
    );
    println!(
        "  role edge-cases: a memory hog capped at 8 MiB, a spinner with 20M fuel, a file that is not wasm"
    );
    let prime_job = |name: &'static str, base: u64| {
        let primes = primes.clone();
        let tasks = (0..TASKS_PER_JOB).map(move |i| {
            let lo = base + i * step;
            TaskTemplate::new(&primes)
                .args([lo.to_string(), (lo + step).to_string()])
                .cpus(PRIME_TASK_CPUS)
                .mem(16 << 20)
        });
        Job::new(name).role(name).tasks(tasks)
    };
    let edge = Job::new("edge-cases")
        .role("edge-cases")
        .task(TaskTemplate::new(&memhog).cpus(0.1).mem(8 << 20))
        .task(
            TaskTemplate::new(&spin)
                .cpus(0.1)
                .mem(8 << 20)
                .max_fuel(20_000_000),
        )
        .task(TaskTemplate::new(&junk).cpus(0.1).mem(8 << 20))
        .retry(RetryPolicy::never());

    let progress: Progress = Arc::new(Mutex::new(BTreeMap::new()));
    let track = |job: Job, name: &'static str, total: usize| {
        progress.lock().unwrap().insert(name, (0, total));
        let progress = progress.clone();
        job.on_update(move |u| {
            progress.lock().unwrap().insert(name, (u.done, u.total));
        })
    };
    let analytics = track(
        prime_job("analytics", 0),
        "analytics",
        TASKS_PER_JOB as usize,
    );
    let reports = track(
        prime_job("reports", half),
        "reports",
        TASKS_PER_JOB as usize,
    );
    let edge = track(edge, "edge-cases", 3);
    let jobs = [
        ("analytics", tokio::spawn(analytics.run(client.clone()))),
        ("reports", tokio::spawn(reports.run(client.clone()))),
        ("edge-cases", tokio::spawn(edge.run(client.clone()))),
    ];

    // Watch progress and sample the roles' allocations while both compete.
    let mut samples: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let tty = std::io::stderr().is_terminal();
    let mut last_print = Instant::now();
    loop {
        let done = jobs.iter().all(|(_, j)| j.is_finished());
        let snapshot = progress.lock().unwrap().clone();
        let line = snapshot
            .iter()
            .map(|(name, (done, total))| format!("{name} {done}/{total}"))
            .collect::<Vec<_>>()
            .join(" | ");
        if tty {
            eprint!("\r  progress: {line}   ");
        } else if last_print.elapsed() >= Duration::from_secs(1) || done {
            eprintln!("  progress: {line}");
            last_print = Instant::now();
        }
        if done {
            break;
        }
        // Both jobs compete while each has tasks waiting to launch: more
        // left than the whole cluster could be running.
        let slots = (agents as f64 / PRIME_TASK_CPUS) as usize;
        let both_busy = ["analytics", "reports"].iter().all(|n| {
            snapshot
                .get(n)
                .is_some_and(|(d, t)| *d > 0 && d + slots < *t)
        });
        if both_busy {
            let roles = operator
                .list_roles(v1::ListRolesRequest {})
                .await
                .map_err(ops::grpc)?
                .into_inner();
            for role in roles.roles {
                let cpus = role.allocated.map_or(0.0, |r| r.cpus);
                let entry = samples.entry(role.name).or_default();
                entry.0 += cpus;
                entry.1 += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if tty {
        eprintln!();
    }

    let mut reports = Vec::new();
    for (name, job) in jobs {
        let report = job
            .await
            .context("a job panicked")?
            .with_context(|| format!("job {name}"))?;
        reports.push((name, report));
    }
    print_outcomes(&reports);
    print_shares(&samples);
    let total = count_primes(&mut operator, &reports).await?;
    let verdict = if total == PRIMES_BELOW_LIMIT {
        "correct"
    } else {
        "WRONG"
    };
    println!(
        "\nresult: {total} primes below {LIMIT}, counted by {} wasm tasks ({verdict}: π({LIMIT}) = {PRIMES_BELOW_LIMIT})",
        2 * TASKS_PER_JOB
    );
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    if total != PRIMES_BELOW_LIMIT {
        bail!("the cluster counted {total} primes, not {PRIMES_BELOW_LIMIT}");
    }
    Ok(())
}

async fn wait_for_agents(
    operator: &mut wasmos_proto::v1::operator_client::OperatorClient<wasmos_sdk::Channel>,
    agents: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = operator
            .list_agents(v1::ListAgentsRequest::default())
            .await
            .map_err(ops::grpc)?
            .into_inner();
        if list.agents.iter().filter(|a| a.connected).count() >= agents {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {agents} agents connected within 20 s",
                list.agents.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Outcomes by role, state and reason, with run times and fuel.
fn print_outcomes(reports: &[(&str, JobReport)]) {
    println!("\noutcomes by role and reason");
    println!(
        "{:<12} {:<9} {:<16} {:>6} {:>8} {:>8} {:>14}",
        "ROLE", "STATE", "REASON", "TASKS", "P50 MS", "P99 MS", "FUEL"
    );
    for (role, report) in reports {
        let mut groups: BTreeMap<(String, String), Vec<&wasmos_sdk::TaskOutcome>> = BTreeMap::new();
        for task in &report.tasks {
            groups
                .entry((ops::state_name(task.state), ops::reason_name(task.reason)))
                .or_default()
                .push(task);
        }
        for ((state, reason), tasks) in groups {
            let mut times: Vec<u64> = tasks
                .iter()
                .map(|t| t.usage.map_or(0, |u| u.wall_time_ms))
                .collect();
            times.sort_unstable();
            let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
            let fuel: u64 = tasks
                .iter()
                .map(|t| t.usage.map_or(0, |u| u.fuel_consumed))
                .sum();
            println!(
                "{:<12} {:<9} {:<16} {:>6} {:>8} {:>8} {:>14}",
                role,
                state,
                reason,
                tasks.len(),
                pick(0.5),
                pick(0.99),
                fuel
            );
            if state != "FINISHED" {
                for t in &tasks {
                    println!(
                        "{:>12} └ {}",
                        "",
                        t.message.lines().next().unwrap_or_default()
                    );
                }
            }
        }
    }
}

/// The cpus each role held, on average, while both prime jobs had work.
fn print_shares(samples: &BTreeMap<String, (f64, usize)>) {
    let avg = |role: &str| {
        samples
            .get(role)
            .map_or(0.0, |(sum, n)| sum / (*n).max(1) as f64)
    };
    let (a, r) = (avg("analytics"), avg("reports"));
    let n = samples.get("analytics").map_or(0, |s| s.1);
    println!("\nshares while both prime jobs had work ({n} samples of the master's roles)");
    println!(
        "{:<12} {:>6} {:>10} {:>7}",
        "ROLE", "WEIGHT", "CPUS HELD", "SHARE"
    );
    for (role, weight, cpus) in [("analytics", 2, a), ("reports", 1, r)] {
        let share = if a + r > 0.0 {
            cpus / (a + r) * 100.0
        } else {
            0.0
        };
        println!("{role:<12} {weight:>6} {cpus:>10.2} {share:>6.0}%");
    }
}

/// Sums the counts the prime tasks printed, read back through the master.
async fn count_primes(
    operator: &mut wasmos_proto::v1::operator_client::OperatorClient<wasmos_sdk::Channel>,
    reports: &[(&str, JobReport)],
) -> anyhow::Result<u64> {
    let mut total = 0;
    for (_, report) in reports.iter().filter(|(name, _)| *name != "edge-cases") {
        for task in &report.tasks {
            let reply = operator
                .read_sandbox(v1::ReadSandboxRequest {
                    task_id: task.task_id.clone(),
                    target: v1::SandboxTarget::Stdout as i32,
                    ..Default::default()
                })
                .await
                .map_err(ops::grpc)?
                .into_inner();
            let text = String::from_utf8_lossy(&reply.data);
            total += text
                .trim()
                .parse::<u64>()
                .with_context(|| format!("task {} printed `{text}`, not a count", task.task_id))?;
        }
    }
    Ok(total)
}
