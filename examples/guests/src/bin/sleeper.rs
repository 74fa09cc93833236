//! Sleeps MS milliseconds (first argument, default 1000) through WASI
//! `poll_oneoff`, then prints `slept MS`, followed by the second argument if
//! there is one (so a job of sleepers has an answer per task to check). Used
//! for timeouts, kills of an idle task, restarts mid-job and the density
//! benchmark.
fn main() {
    let mut args = std::env::args().skip(1);
    let ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    match args.next() {
        Some(tag) => println!("slept {ms} {tag}"),
        None => println!("slept {ms}"),
    }
}
