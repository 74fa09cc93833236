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
}
