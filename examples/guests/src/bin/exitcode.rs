//! Exits with the code given as its first argument (default 3), after
//! writing one line (and, for a code other than 0, one on stderr), so tests
//! see the output, the error output and `REASON_EXIT_NONZERO`.
fn main() {
    let code: i32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    println!("exiting with {code}");
    if code != 0 {
        eprintln!("failing on purpose with {code}");
    }
    std::process::exit(code);
}
