//! Floating-point work whose every bit is printed, to show that a task
//! computes the same on every agent's CPU: sums, square roots, a software
//! `sin`, `f32` rounding, and NaNs made by arithmetic, whose sign and
//! payload the hardware chooses (x86_64 makes a negative NaN where aarch64
//! makes a positive one) unless the engine canonicalizes them. With N (the
//! first argument, default 100000) terms of each series.
use std::hint::black_box;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut harmonic = 0.0f64;
    let mut roots = 0.0f64;
    let mut waves = 0.0f64;
    let mut single = 0.0f32;
    for k in 1..=n {
        let x = f64::from(k);
        harmonic += 1.0 / x;
        roots += x.sqrt();
        waves += (x * 0.001).sin();
        single += 1.0 / (k as f32);
    }
    let zero = black_box(0.0f64);
    let nan = zero / zero;
    let nan_sum = nan + black_box(1.0);
    let nan_f32 = black_box(0.0f32) / black_box(0.0f32);
    let root_of_negative = black_box(-1.0f64).sqrt();
    let min_with_nan = black_box(nan).min(black_box(2.0));
    println!("harmonic {:016x} {harmonic}", harmonic.to_bits());
    println!("roots {:016x} {roots}", roots.to_bits());
    println!("waves {:016x} {waves}", waves.to_bits());
    println!("single {:08x} {single}", single.to_bits());
    println!("nan {:016x}", nan.to_bits());
    println!("nan+1 {:016x}", nan_sum.to_bits());
    println!("nan32 {:08x}", nan_f32.to_bits());
    println!("sqrt(-1) {:016x}", root_of_negative.to_bits());
    println!("min(nan,2) {:016x}", min_with_nan.to_bits());
}
