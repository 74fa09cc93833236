//! `wasmos simulate`: the master core and its DRF allocator driven in
//! simulated time, with no network and no wasm. Frameworks in weighted roles
//! pack tasks onto the offers they get; tasks finish after a while; a
//! framework joins late and one leaves early. Every simulated second prints
//! each framework's running tasks and dominant share, so fairness can be
//! watched as it happens.
//!
//! It keeps its own loop rather than `wasmos_core::testing::Harness`: that
//! harness is a test fixture (feature `testing`, which the binary does not ask
//! for) that commits each step to a store and compares the whole registry
//! with the core after it, which a demo of thousands of tasks has no use for;
//! here the core is fed directly.

use std::collections::{BTreeMap, VecDeque};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wasmos_master::core::{Core, CoreConfig, Input, Output, Reply};
use wasmos_master::packing;
use wasmos_master::{FrameworkId, Resources, Time};
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;

#[derive(clap::Args)]
pub struct Args {
    /// Agents in the simulated cluster, each with 4 cpus and 8 GiB.
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// Simulated seconds to run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seed of the task durations, for a different (reproducible) run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object per simulated second instead of a table.
    #[arg(long)]
    json: bool,
    /// Frameworks declare their task shape as demand, so offers are sized
    /// by DRF at task granularity (without it they take whole agents).
    #[arg(long)]
    demand: bool,
}

/// One simulated framework: what its tasks need and when it is around.
struct Plan {
    name: &'static str,
    role: &'static str,
    need: Resources,
    joins_at: u64,
    leaves_at: Option<u64>,
}

struct Running {
    agent: String,
    task: String,
    ends_at: u64,
}

struct Sim {
    core: Core,
    now: u64,
    rng: StdRng,
    offers: BTreeMap<String, Vec<v1::Offer>>,
    running: BTreeMap<String, Vec<Running>>,
    next_task: u64,
    connection: u64,
    demand: bool,
    /// Each second: the mean gap between a framework's dominant share and
    /// the share DRF says it should hold.
    gaps: Vec<f64>,
}

const TICK_MS: u64 = 100;

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.agents == 0 || args.seconds == 0 {
        bail!("--agents and --seconds must be at least 1");
    }
    let plans = [
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
            joins_at: args.seconds / 3,
            leaves_at: Some(args.seconds * 2 / 3),
        },
    ];
    let mut sim = Sim {
        core: Core::new(CoreConfig::default()),
        now: 0,
        rng: StdRng::seed_from_u64(args.seed),
        offers: BTreeMap::new(),
        running: BTreeMap::new(),
        next_task: 0,
        connection: 0,
        demand: args.demand,
        gaps: Vec::new(),
    };
    sim.input(Input::UpdateRole {
        role: "batch".into(),
        weight: Some(2.0),
        quota: None,
    })?;
    let mut ids: BTreeMap<&str, FrameworkId> = BTreeMap::new();
    for plan in plans.iter().filter(|p| p.joins_at == 0) {
        ids.insert(plan.name, sim.subscribe(plan)?);
    }
    let mut agents = Vec::new();
    for i in 0..args.agents {
        sim.connection += 1;
        let reply = sim.input(Input::AgentRegister {
            connection: sim.connection,
            register: v1::Register {
                agent: Some(v1::AgentInfo {
                    hostname: format!("node-{i}"),
                    resources: Some(v1::Resources {
                        cpus: 4.0,
                        mem: 8 << 30,
                        disk: 0,
                    }),
                    ..Default::default()
                }),
                tasks: vec![],
            },
        })?;
        if let Reply::Registered(id) = reply {
            agents.push(id);
        }
    }
    println!(
        "simulating {} agents ({}) for {}s: roles batch (weight 2), service and etl (weight 1)",
        args.agents,
        Resources::new(
            4.0 * args.agents as f64,
            (8u64 << 30) * args.agents as u64,
            0
        ),
        args.seconds
    );
    if !args.json {
        print!("{:>5}", "t(s)");
        for plan in &plans {
            print!("  {:>22}", format!("{} ({})", plan.name, plan.role));
        }
        println!();
    }
    while sim.now <= args.seconds * 1000 {
        let second = sim.now / 1000;
        for plan in &plans {
            if plan.joins_at == second
                && sim.now.is_multiple_of(1000)
                && !ids.contains_key(plan.name)
            {
                let id = sim.subscribe(plan)?;
                ids.insert(plan.name, id);
            }
            if plan.leaves_at == Some(second)
                && sim.now.is_multiple_of(1000)
                && let Some(id) = ids.remove(plan.name)
            {
                sim.input(Input::Teardown(v1::TeardownRequest {
                    framework_id: id.to_string(),
                }))?;
                sim.running.remove(id.as_str());
                sim.offers.remove(id.as_str());
            }
        }
        sim.finish_due_tasks()?;
        for plan in &plans {
            if let Some(id) = ids.get(plan.name).cloned() {
                sim.use_offers(&id, plan.need)?;
            }
        }
        if sim.now.is_multiple_of(1000) {
            for agent in &agents {
                sim.input(Input::AgentHeartbeat {
                    agent: agent.clone(),
                })?;
            }
            sim.print_row(&plans, &ids, args.json);
            sim.record_gap(&ids);
        }
        sim.now += TICK_MS;
        sim.input(Input::Tick)?;
    }
    let mean_gap = sim.gaps.iter().sum::<f64>() / sim.gaps.len().max(1) as f64;
    let worst = sim.gaps.iter().cloned().fold(0.0, f64::max);
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
    println!("\nDRF at work: the two batch frameworks share their role's double weight;");
    println!("each framework's dominant share is the larger of its cpu and mem fractions.");
    Ok(())
}

impl Sim {
    fn input(&mut self, input: Input) -> anyhow::Result<Reply> {
        let out = self.core.handle(input, Time(self.now));
        for message in out.messages {
            if let Output::Framework(fw, event) = message {
                match event.kind {
                    Some(EventKind::Offers(o)) => self
                        .offers
                        .entry(fw.to_string())
                        .or_default()
                        .extend(o.offers),
                    Some(EventKind::Rescind(r)) => {
                        if let Some(list) = self.offers.get_mut(fw.as_str()) {
                            list.retain(|o| !r.offer_ids.contains(&o.offer_id));
                        }
                    }
                    _ => {}
                }
            }
        }
        out.reply.context("the core refused a simulated call")
    }

    fn subscribe(&mut self, plan: &Plan) -> anyhow::Result<FrameworkId> {
        self.connection += 1;
        match self.input(Input::Subscribe {
            connection: self.connection,
            framework: v1::FrameworkInfo {
                name: plan.name.into(),
                role: plan.role.into(),
                // Simulated frameworks always have more to run.
                demand: self.demand.then(|| v1::Demand {
                    task: Some((&plan.need).into()),
                    tasks: 1_000_000_000,
                }),
                ..Default::default()
            },
        })? {
            Reply::Subscribed(id) => Ok(id),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    /// Records the mean gap between each framework's share and its fair one.
    fn record_gap(&mut self, ids: &BTreeMap<&str, FrameworkId>) {
        let fair = self.core.allocator().fair_shares();
        let gaps: Vec<f64> = ids
            .values()
            .filter_map(|id| {
                let share = self.core.allocator().framework_share(id)?;
                Some((share - fair.frameworks.get(id).copied()?).abs())
            })
            .collect();
        if !gaps.is_empty() {
            self.gaps.push(gaps.iter().sum::<f64>() / gaps.len() as f64);
        }
    }

    /// Packs as many tasks as fit into each offer; declines empty-handed.
    fn use_offers(&mut self, fw: &FrameworkId, need: Resources) -> anyhow::Result<()> {
        let offers = self.offers.remove(fw.as_str()).unwrap_or_default();
        if need.cpu_millis == 0 {
            bail!("a simulated task needs some cpus");
        }
        for pool in packing::by_agent(offers) {
            let mut tasks = Vec::new();
            for _ in 0..pool.copies_of(&need) {
                self.next_task += 1;
                let id = format!("task-{}", self.next_task);
                let ends_at = self.now + self.rng.random_range(1_000..6_000);
                self.running
                    .entry(fw.to_string())
                    .or_default()
                    .push(Running {
                        agent: pool.agent_id.clone(),
                        task: id.clone(),
                        ends_at,
                    });
                tasks.push(v1::TaskSpec {
                    task_id: id,
                    artifact: "0".repeat(64),
                    resources: Some((&need).into()),
                    ..Default::default()
                });
            }
            self.input(Input::Accept(v1::AcceptRequest {
                framework_id: fw.to_string(),
                offer_ids: pool.offer_ids,
                tasks,
                filters: Some(v1::Filters {
                    refuse_seconds: Some(0.2),
                }),
            }))?;
        }
        Ok(())
    }

    /// Tasks whose time is up report FINISHED, as an agent would.
    fn finish_due_tasks(&mut self) -> anyhow::Result<()> {
        let now = self.now;
        let mut done: BTreeMap<String, VecDeque<(String, String)>> = BTreeMap::new();
        for (fw, tasks) in self.running.iter_mut() {
            tasks.retain(|t| {
                let due = t.ends_at <= now;
                if due {
                    done.entry(t.agent.clone())
                        .or_default()
                        .push_back((fw.clone(), t.task.clone()));
                }
                !due
            });
        }
        for (agent, tasks) in done {
            let statuses = tasks
                .into_iter()
                .map(|(_, task)| v1::TaskStatus {
                    task_id: task,
                    state: v1::TaskState::Finished as i32,
                    uuid: vec![],
                    ..Default::default()
                })
                .collect();
            self.input(Input::AgentUpdates {
                agent: agent.as_str().into(),
                statuses,
                unsynced: None,
            })?;
        }
        Ok(())
    }

    fn print_row(&self, plans: &[Plan], ids: &BTreeMap<&str, FrameworkId>, json: bool) {
        let second = self.now / 1000;
        let mut cells = Vec::new();
        for plan in plans {
            let cell = ids
                .get(plan.name)
                .filter(|id| self.core.allocator().framework_share(id).is_some())
                .map(|id| {
                    let share = self
                        .core
                        .allocator()
                        .framework_share(id)
                        .unwrap_or_default();
                    let tasks = self.running.get(id.as_str()).map_or(0, |t| t.len());
                    (tasks, share)
                });
            cells.push((plan.name, cell));
        }
        if json {
            let frameworks: serde_json::Map<String, serde_json::Value> = cells
                .iter()
                .filter_map(|(name, cell)| {
                    cell.map(|(tasks, share)| {
                        (
                            (*name).to_string(),
                            serde_json::json!({"tasks": tasks, "share": share}),
                        )
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"t": second, "frameworks": frameworks})
            );
            return;
        }
        print!("{second:>5}");
        for (_, cell) in cells {
            match cell {
                Some((tasks, share)) => print!(
                    "  {:>22}",
                    format!("{tasks:>3} tasks {:>5.1}%", share * 100.0)
                ),
                None => print!("  {:>22}", "-"),
            }
        }
        println!();
    }
}
