//! Allocator benchmark: the cost of one full allocation cycle.
//!
//! Every agent has free resources and every framework wants them; shares are
//! updated as grants are made (progressive filling), and the bench takes the
//! grants back between cycles, untimed. Prints one JSON line per shape.
//!
//! ```text
//! cargo bench -p wasmos-core --bench allocator                      # the grid
//! cargo bench -p wasmos-core --bench allocator -- --agents 10000 --frameworks 1000
//! ```

use std::time::{Duration, Instant};

use wasmos_core::allocator::{Allocator, AllocatorConfig, Scope};
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
    for (agents, frameworks) in shapes {
        bench_shape(agents, frameworks);
    }
}

fn bench_shape(agents: usize, frameworks: usize) {
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
        allocator
            .add_framework(FrameworkId::from(format!("fw-{f}")), &role)
            .unwrap();
    }

    // Small shapes run more cycles; every shape runs at least 5.
    let cycles = (2_000_000 / agents).clamp(5, 101);
    let mut times = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let start = Instant::now();
        let grants = allocator.allocate(Time::ZERO, Scope::All);
        times.push(start.elapsed());
        assert_eq!(
            grants.len(),
            agents,
            "every agent is granted in a full cycle"
        );
        for g in grants {
            allocator
                .recover(&g.framework, &g.agent, None, g.resources, None, Time::ZERO)
                .unwrap();
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{}",
        serde_json::json!({
            "agents": agents,
            "frameworks": frameworks,
            "roles": roles,
            "cycles": cycles,
            "cycle_ms_median": (ms(times[cycles / 2]) * 1000.0).round() / 1000.0,
            "cycle_ms_min": (ms(times[0]) * 1000.0).round() / 1000.0,
            "cycle_ms_max": (ms(times[cycles - 1]) * 1000.0).round() / 1000.0,
        })
    );
}
