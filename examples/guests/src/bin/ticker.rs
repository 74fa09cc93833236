//! Prints `tick I` COUNT times (first argument, default 10), one every MS
//! milliseconds (second argument, default 200), then `done`: a task whose
//! output grows while it runs, for following a log live.
fn main() {
    let mut args = std::env::args().skip(1);
    let count: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    for i in 0..count {
        println!("tick {i}");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    println!("done");
}
