//! Allocator benchmark: the cost of one full allocation cycle, and of an
//! incremental one.
//!
//! Every agent has free resources and every framework wants them; shares are
//! updated as grants are made (progressive filling), and the bench takes the
//! grants back between cycles, untimed. Then, with every agent offered out,
//! one agent's grant at a time is taken back (untimed) and a cycle over that
//! agent alone is timed: what the master spends when a task ends. Prints one
//! JSON line per shape.
//!
//! ```text
//! cargo bench -p wasmos-core --bench allocator                      # the grid
//! cargo bench -p wasmos-core --bench allocator -- --agents 10000 --frameworks 1000
//! cargo bench -p wasmos-core --bench allocator -- --agents 10000 --frameworks 1000 --demand-cpus 1
//! ```
//!
//! With `--demand-cpus C` every framework declares a demand of tasks of C
//! cpus and 2·C GiB (more than the cluster holds), so each agent of 16 cpus
//! and 64 GiB is split between frameworks by progressive filling at task
//! granularity instead of going whole to one.

use std::time::{Duration, Instant};

use wasmos_core::allocator::{Allocator, AllocatorConfig, Demand, Scope};
use wasmos_core::{AgentId, FrameworkId, Resources, Role, Time};

const AGENTS: [usize; 3] = [1_000, 10_000, 50_000];
const FRAMEWORKS: [usize; 4] = [1, 100, 1_000, 5_000];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse::<usize>()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
    };
    let shapes: Vec<(usize, usize)> = match (flag("--agents"), flag("--frameworks")) {
        (None, None) => AGENTS
            .iter()
            .flat_map(|&a| FRAMEWORKS.iter().map(move |&f| (a, f)))
            .collect(),
        (a, f) => vec![(a.unwrap_or(10_000), f.unwrap_or(1_000))],
    };
    let demand_cpus = args
        .iter()
        .position(|a| a == "--demand-cpus")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse::<f64>().expect("--demand-cpus takes a number"));
    for (agents, frameworks) in shapes {
        bench_shape(agents, frameworks, demand_cpus);
    }
}

fn bench_shape(agents: usize, frameworks: usize, demand_cpus: Option<f64>) {
    let mut allocator = Allocator::new(AllocatorConfig::default());
    for i in 0..agents {
        allocator
            .add_agent(
                AgentId::from(format!("agent-{i}")),
                Resources::new(16.0, 64 << 30, 0),
                &[],
            )
            .unwrap();
    }
    // Frameworks spread over roles (about 100 frameworks a role) with
    // different weights, so both levels of the hierarchy do work.
    let roles = frameworks.div_ceil(100);
    for r in 0..roles {
        allocator
            .set_weight(&Role::from(format!("role-{r}")), 1.0 + (r % 4) as f64)
            .unwrap();
    }
    for f in 0..frameworks {
        let role = Role::from(format!("role-{}", f % roles));
        let id = FrameworkId::from(format!("fw-{f}"));
        allocator.add_framework(id.clone(), &role).unwrap();
        if let Some(cpus) = demand_cpus {
            let task = Resources::new(cpus, (cpus * 2.0) as u64 * (1 << 30), 0);
            let tasks = 1_000_000_000;
            allocator
                .set_demand(&id, Some(Demand { task, tasks }))
                .unwrap();
        }
    }

    // Small shapes run more cycles; every shape runs at least 5.
    let cycles = (2_000_000 / agents).clamp(5, 101);
    let mut times = Vec::with_capacity(cycles);
    let mut offers = 0;
    for _ in 0..cycles {
        let start = Instant::now();
        let grants = allocator.allocate(Time::ZERO, Scope::All);
        times.push(start.elapsed());
        assert!(
            grants.len() >= agents,
            "every agent is granted in a full cycle"
        );
        offers = grants.len();
        for g in grants {
            allocator
                .recover(&g.framework, &g.agent, None, g.resources, None, Time::ZERO)
                .unwrap();
        }
    }
    times.sort();

    // Incremental: everything offered out, then one agent freed at a time.
    let mut held = allocator.allocate(Time::ZERO, Scope::All);
    let rounds = held.len().min(2_000);
    let mut incremental = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let g = held[i].clone();
        allocator
            .recover(&g.framework, &g.agent, None, g.resources, None, Time::ZERO)
            .unwrap();
        let freed = [g.agent.clone()];
        let start = Instant::now();
        let again = allocator.allocate(Time::ZERO, Scope::Agents(&freed));
        incremental.push(start.elapsed());
        assert!(!again.is_empty(), "the freed agent is offered again");
        held.extend(again);
    }
    incremental.sort();
    let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{}",
        serde_json::json!({
            "agents": agents,
            "frameworks": frameworks,
            "roles": roles,
            "demand_cpus": demand_cpus,
            "offers_per_cycle": offers,
            "cycles": cycles,
            "cycle_ms_median": (ms(times[cycles / 2]) * 1000.0).round() / 1000.0,
            "cycle_ms_min": (ms(times[0]) * 1000.0).round() / 1000.0,
            "cycle_ms_max": (ms(times[cycles - 1]) * 1000.0).round() / 1000.0,
            "incremental_cycles": rounds,
            "incremental_us_median": us(incremental[rounds / 2]),
            "incremental_us_p99": us(incremental[rounds * 99 / 100]),
        })
    );
}
