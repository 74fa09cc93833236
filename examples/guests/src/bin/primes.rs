//! Counts primes below N (first argument, default 200000) by trial
//! division, repeated R times (second argument, default 1). CPU-bound with a
//! mix of divisions, branches and loop overhead that differs from a sieve, so
//! a CPU limit calibrated on any other workload would show up as an error.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut count = 0;
    for _ in 0..rounds {
        count = (0..std::hint::black_box(n))
            .filter(|&k| is_prime(k))
            .count();
    }
    println!("primes below {n}: {count}");
}
