//! `wasmos simulate` at scale, as a real process: 20,000 agents whose
//! frameworks acknowledge their updates keep the core's memory flat over
//! simulated time (ended tasks are archived and forgotten past the
//! retention cap), with the core's accounting invariants checked after
//! every simulated tick.

mod support;

use serde_json::Value;

const AGENTS: u64 = 20_000;

#[test]
fn twenty_thousand_agents_run_in_flat_memory_with_every_invariant_holding() {
    let out = support::wasmos()
        .args(["simulate", "--agents", &AGENTS.to_string()])
        .args(["--seconds", "30", "--json", "--check"])
        .output()
        .expect("run wasmos simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let seconds: Vec<&Value> = lines.iter().filter(|l| l.get("t").is_some()).collect();
    let summary = lines.last().expect("a summary line");
    assert_eq!(seconds.len(), 31, "one line a simulated second: {stdout}");

    // Work kept flowing: each agent's 4 cpus ran many 1-6 s tasks in turn.
    let launched = summary["tasks_launched"].as_u64().expect("tasks_launched");
    assert!(launched >= 20 * AGENTS, "{launched} tasks launched");

    // Memory flat: by the 10th second the frameworks' archives are full;
    // from then on every task that ends is forgotten as a new one starts.
    // (Without acknowledgements each of the ~800,000 tasks stays, and the
    // process grows past three times this size.)
    let rss = |line: &Value| line["rss_bytes"].as_u64().expect("rss_bytes");
    let settled = rss(seconds[10]);
    let most = seconds[10..].iter().map(|l| rss(l)).max().expect("seconds");
    assert!(
        most <= settled + settled / 4,
        "resident memory grew from {} MiB at 10 s to {} MiB",
        settled >> 20,
        most >> 20
    );

    // What an idle agent costs the core: its records, the allocator's books
    // and the offers made of it.
    let per_agent = summary["rss_per_agent_bytes"].as_u64().expect("per agent");
    assert!(per_agent <= 4096, "{per_agent} bytes an agent");
}
