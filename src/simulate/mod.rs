//! `wasmos simulate`: the master core and its DRF allocator driven in
//! simulated time, with no network and no wasm. Frameworks in weighted roles
//! pack tasks onto the offers they get and acknowledge their updates; tasks
//! finish after a while; some frameworks join late and leave early. Every
//! simulated second prints each kind of framework's running tasks and
//! dominant share, so fairness can be watched as it happens, and the run
//! ends with what it cost: wall time against simulated time, tasks launched
//! per simulated second and the process's memory.
//!
//! It keeps its own loop rather than `wasmos_core::testing::Harness`: that
//! harness is a test fixture (feature `testing`, which the binary does not ask
//! for) that commits each step to a store and compares the whole registry
//! with the core after it, which a run of 100,000 agents has no use for;
//! here the core is fed directly (`world.rs`).

mod world;

use std::time::Instant;

use anyhow::bail;
use wasmos_master::core::Input;
use wasmos_master::{FrameworkId, Resources};

use world::World;

#[derive(clap::Args)]
pub struct Args {
    /// Agents in the simulated cluster, each with 4 cpus and 8 GiB.
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// Frameworks, dealt in turn to the four kinds (analytics, ml-training,
    /// web, nightly-etl): copies of a kind share its role, task shape and
    /// schedule, and the rows add them up.
    #[arg(long, default_value_t = 4)]
    frameworks: usize,
    /// Simulated seconds to run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seed of the task durations, for a different (reproducible) run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object per simulated second, and a last one with the
    /// run's cost, instead of a table.
    #[arg(long)]
    json: bool,
    /// Frameworks declare their task shape as demand, so offers are sized
    /// by DRF at task granularity (without it they take whole agents).
    #[arg(long)]
    demand: bool,
    /// Check the core's accounting invariants after every simulated tick
    /// (slow: a pass over every agent, offer and task; for tests).
    #[arg(long, hide = true)]
    check: bool,
}

/// One kind of simulated framework: what its tasks need and when it is
/// around.
struct Plan {
    name: &'static str,
    role: &'static str,
    need: Resources,
    joins_at: u64,
    leaves_at: Option<u64>,
}

/// One simulated framework, while it is subscribed.
struct Member {
    plan: usize,
    name: String,
    id: Option<FrameworkId>,
}

const TICK_MS: u64 = 100;

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.agents == 0 || args.seconds == 0 || args.frameworks == 0 {
        bail!("--agents, --frameworks and --seconds must be at least 1");
    }
    let plans = plans(args.seconds);
    let mut members: Vec<Member> = (0..args.frameworks)
        .map(|i| {
            let plan = i % plans.len();
            let name = if args.frameworks <= plans.len() {
                plans[plan].name.to_string()
            } else {
                format!("{}-{}", plans[plan].name, i / plans.len())
            };
            Member {
                plan,
                name,
                id: None,
            }
        })
        .collect();
    let started = Instant::now();
    let mut world = World::new(args.agents, args.frameworks, args.seed, args.demand);
    world.input(Input::UpdateRole {
        role: "batch".into(),
        weight: Some(2.0),
        quota: None,
    })?;
    for member in members.iter_mut().filter(|m| plans[m.plan].joins_at == 0) {
        let plan = &plans[member.plan];
        member.id = Some(world.subscribe(member.name.clone(), plan.role, plan.need)?);
    }
    let rss_before_agents = memory::resident();
    let mut agents = Vec::new();
    for i in 0..args.agents {
        agents.extend(world.add_agent(format!("node-{i}"))?);
    }
    // What agents cost with no task running: their records, the
    // allocator's books and the offers made to the frameworks.
    let per_agent = match (rss_before_agents, memory::resident()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) / args.agents as u64),
        _ => None,
    };
    let copies = args.frameworks.div_ceil(plans.len());
    println!(
        "simulating {} agents ({}) and {} frameworks for {}s: roles batch (weight 2), service and etl (weight 1){}",
        args.agents,
        Resources::new(
            4.0 * args.agents as f64,
            (8u64 << 30) * args.agents as u64,
            0
        ),
        args.frameworks,
        args.seconds,
        if copies > 1 {
            format!("; each column adds up to {copies} frameworks of its kind")
        } else {
            String::new()
        }
    );
    if !args.json {
        print!("{:>5}", "t(s)");
        for plan in &plans {
            print!("  {:>24}", format!("{} ({})", plan.name, plan.role));
        }
        println!();
    }
    let mut gaps = Vec::new();
    while world.now <= args.seconds * 1000 {
        if world.now.is_multiple_of(1000) {
            let second = world.now / 1000;
            for member in members.iter_mut() {
                let plan = &plans[member.plan];
                if plan.joins_at == second && second > 0 && member.id.is_none() {
                    member.id = Some(world.subscribe(member.name.clone(), plan.role, plan.need)?);
                }
                if plan.leaves_at == Some(second)
                    && let Some(id) = member.id.take()
                {
                    world.teardown(&id)?;
                }
            }
        }
        world.finish_due_tasks()?;
        for member in &members {
            if let Some(id) = &member.id {
                world.use_offers(id, plans[member.plan].need)?;
            }
        }
        world.acknowledge()?;
        if world.now.is_multiple_of(1000) {
            for agent in &agents {
                world.input(Input::AgentHeartbeat {
                    agent: agent.clone(),
                })?;
            }
            print_row(&world, &plans, &members, args.json);
            gaps.extend(world.fairness_gap(members.iter().filter_map(|m| m.id.as_ref())));
        }
        world.now += TICK_MS;
        world.input(Input::Tick)?;
        if args.check
            && let Err(broken) = world.core.check_invariants()
        {
            bail!("at {} ms: {broken}", world.now);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    // The process ends here: freeing a large cluster's records one by one
    // would only add seconds that no master spends.
    let launched = world.launched;
    std::mem::forget(world);
    let mean_gap = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    let worst = gaps.iter().cloned().fold(0.0, f64::max);
    let simulated = args.seconds as f64;
    let peak = memory::peak();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "agents": args.agents,
                "frameworks": args.frameworks,
                "simulated_s": simulated,
                "wall_s": wall,
                "speed_over_real_time": simulated / wall,
                "tasks_launched": launched,
                "tasks_per_simulated_s": launched as f64 / simulated,
                "fairness_gap_mean": mean_gap,
                "fairness_gap_worst": worst,
                "rss_per_agent_bytes": per_agent,
                "peak_rss_bytes": peak,
            })
        );
        return Ok(());
    }
    println!(
        "\nfairness: each framework's dominant share is {:.1} points from its DRF share on average (worst second {:.1}), offers {}",
        mean_gap * 100.0,
        worst * 100.0,
        if args.demand {
            "sized by declared demand"
        } else {
            "of whole agents (frameworks declare no demand; --demand to)"
        }
    );
    println!(
        "cost: {simulated:.0} simulated seconds in {wall:.1} s of wall time ({:.1}x real time), {} tasks launched ({:.0} a simulated second){}",
        simulated / wall,
        launched,
        launched as f64 / simulated,
        match (per_agent, peak) {
            (Some(a), Some(p)) => format!(", {a} bytes an idle agent, peak memory {} MiB", p >> 20),
            _ => String::new(),
        }
    );
    println!("\nDRF at work: the two batch frameworks share their role's double weight;");
    println!("each framework's dominant share is the larger of its cpu and mem fractions.");
    Ok(())
}

/// The four kinds of framework, the etl one around for the middle third.
fn plans(seconds: u64) -> [Plan; 4] {
    [
        Plan {
            name: "analytics",
            role: "batch",
            need: Resources::new(1.0, 2 << 30, 0),
            joins_at: 0,
            leaves_at: None,
        },
        Plan {
            name: "ml-training",
            role: "batch",
            need: Resources::new(2.0, 1 << 30, 0),
            joins_at: 0,
            leaves_at: None,
        },
        Plan {
            name: "web",
            role: "service",
            need: Resources::new(0.5, 512 << 20, 0),
            joins_at: 0,
            leaves_at: None,
        },
        Plan {
            name: "nightly-etl",
            role: "etl",
            need: Resources::new(1.0, 4 << 30, 0),
            joins_at: seconds / 3,
            leaves_at: Some(seconds * 2 / 3),
        },
    ]
}

/// One simulated second: per kind of framework, the tasks its frameworks
/// run and the dominant share they hold together (absent while none of
/// them is subscribed).
fn print_row(world: &World, plans: &[Plan], members: &[Member], json: bool) {
    let second = world.now / 1000;
    let cells: Vec<Option<(usize, f64)>> = (0..plans.len())
        .map(|plan| {
            let mut live = members
                .iter()
                .filter(|m| m.plan == plan)
                .filter_map(|m| m.id.as_ref())
                .filter_map(|id| {
                    let share = world.core.allocator().framework_share(id)?;
                    Some((world.running(id), share))
                })
                .peekable();
            live.peek()?;
            Some(live.fold((0, 0.0), |(t, s), (tasks, share)| (t + tasks, s + share)))
        })
        .collect();
    if json {
        let frameworks: serde_json::Map<String, serde_json::Value> = plans
            .iter()
            .zip(&cells)
            .filter_map(|(plan, cell)| {
                cell.map(|(tasks, share)| {
                    (
                        plan.name.to_string(),
                        serde_json::json!({"tasks": tasks, "share": share}),
                    )
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "t": second,
                "frameworks": frameworks,
                "rss_bytes": memory::resident(),
            })
        );
        return;
    }
    print!("{second:>5}");
    for cell in cells {
        match cell {
            Some((tasks, share)) => print!(
                "  {:>24}",
                format!("{tasks:>5} tasks {:>5.1}%", share * 100.0)
            ),
            None => print!("  {:>24}", "-"),
        }
    }
    println!();
}

/// This process's memory, from `/proc/self/status` (None elsewhere).
mod memory {
    /// Resident now (`VmRSS`), in bytes.
    pub fn resident() -> Option<u64> {
        status("VmRSS:")
    }

    /// The most resident so far (`VmHWM`), in bytes.
    pub fn peak() -> Option<u64> {
        status("VmHWM:")
    }

    fn status(field: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }
}
