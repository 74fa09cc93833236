//! Fails until its job's attempt reaches a number: prints `attempt A` (from
//! `WASMOS_ATTEMPT`), then exits with `CODE` (first argument, default 75)
//! while A is below `UNTIL` (second argument, default 2), else 0. Tests of
//! retries see each attempt and its exit code.
fn main() {
    let arg = |i: usize, default: i32| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (code, until) = (arg(1, 75), arg(2, 2));
    let attempt: i32 = std::env::var("WASMOS_ATTEMPT")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    println!("attempt {attempt}");
    std::process::exit(if attempt < until { code } else { 0 });
}
