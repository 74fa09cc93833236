//! Sleeps MS milliseconds (first argument, default 1000) through WASI
//! `poll_oneoff`, then prints `slept`. Used for timeouts, kills of an idle
//! task and the density benchmark.
fn main() {
    let ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    println!("slept {ms}");
}
