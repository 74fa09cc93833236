//! The README's first command, as a new user runs it.

mod support;

#[test]
fn the_demo_runs_real_work_and_reports_every_outcome() {
    let out = support::wasmos()
        .arg("demo")
        .output()
        .expect("run wasmos demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("216816 primes below 3000000"), "{stdout}");
    assert!(stdout.contains("(correct:"), "{stdout}");
    for needle in ["MEMORY_LIMIT", "OUT_OF_FUEL", "INVALID_MODULE"] {
        assert!(stdout.contains(needle), "no {needle} row: {stdout}");
    }
    let finished = stdout
        .lines()
        .filter(|l| l.contains("FINISHED") && l.split_whitespace().nth(2) == Some("150"))
        .count();
    assert_eq!(
        finished, 2,
        "both prime jobs finish all 150 tasks: {stdout}"
    );
    // The roles are weighted 2:1, and with declared demand DRF gives them
    // the cluster 67/33 while both have tasks waiting.
    let share = |role: &str| -> u32 {
        let line = stdout
            .lines()
            .skip_while(|l| !l.starts_with("shares while"))
            .find(|l| l.starts_with(role))
            .unwrap_or_else(|| panic!("no share of {role}: {stdout}"));
        let pct = line.split_whitespace().last().expect("a share");
        pct.trim_end_matches('%').parse().expect("a percentage")
    };
    let analytics = share("analytics");
    assert!(
        (64..=70).contains(&analytics),
        "analytics (weight 2) held {analytics}% against reports (weight 1): {stdout}"
    );
}
