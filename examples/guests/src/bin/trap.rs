//! Traps with `unreachable` a few calls deep, so the failure message carries
//! a wasm backtrace with recognisable function names.
#[inline(never)]
fn innermost(depth: u32) -> u32 {
    if std::hint::black_box(depth) < 100 {
        core::arch::wasm32::unreachable()
    }
    depth
}

#[inline(never)]
fn middle(depth: u32) -> u32 {
    innermost(depth + 1) + 1
}

fn main() {
    println!("about to trap");
    let r = middle(std::hint::black_box(1));
    println!("unreachable: {r}");
}
