//! Grows a buffer to MiB mebibytes (first argument, default 64) in steps of
//! STEP MiB (second argument, default 1), touching every page, then prints
//! how much it holds. Used to hit the task's `mem` cap.
fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let step: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut held = 0;
    while held < mib {
        let chunk = vec![0xA5u8; step << 20];
        held += step;
        chunks.push(chunk);
        println!("holding {held} MiB");
    }
    let sum: usize = chunks.iter().map(|c| c[c.len() / 2] as usize).sum();
    println!("done: {held} MiB (check {sum})");
}
