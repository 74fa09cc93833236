//! Exits with the code given as its first argument (default 3), after
//! writing one line, so tests see both the output and `REASON_EXIT_NONZERO`.
fn main() {
    let code: i32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    println!("exiting with {code}");
    std::process::exit(code);
}
