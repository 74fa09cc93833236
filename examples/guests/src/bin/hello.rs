//! Prints its argv (one per line, `argv[i]=...`) and every env var it was
//! given (`env NAME=VALUE`), so tests can check that a task sees exactly its
//! spec and nothing of the host.
fn main() {
    for (i, arg) in std::env::args().enumerate() {
        println!("argv[{i}]={arg}");
    }
    for (name, value) in std::env::vars() {
        println!("env {name}={value}");
    }
    match std::env::current_dir() {
        Ok(dir) => println!("cwd={}", dir.display()),
        Err(e) => println!("cwd error: {e}"),
    }
    eprintln!("hello on stderr");
}
