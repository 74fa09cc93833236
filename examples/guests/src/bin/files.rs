//! Works with files in its sandbox root, and tries to leave it.
//!
//! * `files write PATH TEXT`: writes TEXT to PATH, prints `wrote PATH`
//! * `files read PATH`: prints the contents of PATH
//! * `files ls [DIR]`: prints the names in DIR (default `.`), sorted
//! * `files fill PATH MIB`: appends MIB mebibytes to PATH (0 = without end)
//! * `files pace PATH KIB MS`: appends KIB kibibytes to PATH every MS
//!   milliseconds, forever
//! * `files escape HOSTPATH...`: tries every escape it knows and prints one
//!   line per attempt, `blocked NAME: error` or `ESCAPED NAME: detail`
use std::fs;
use std::io::Write;

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    /// `path_symlink(old_path, fd, new_path)`: std's wrapper is unstable.
    fn path_symlink(old: *const u8, old_len: usize, fd: u32, new: *const u8, new_len: usize)
    -> u16;
}

/// Creates `link` (relative to the root, the first preopen: fd 3) pointing
/// at `target`.
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    // SAFETY: both pointers are valid for their lengths during the call.
    let errno =
        unsafe { path_symlink(target.as_ptr(), target.len(), 3, link.as_ptr(), link.len()) };
    match errno {
        0 => Ok(()),
        e => Err(std::io::Error::other(format!("path_symlink errno {e}"))),
    }
}

fn attempt(name: &str, result: std::io::Result<String>) {
    match result {
        Ok(detail) => println!("ESCAPED {name}: {detail}"),
        Err(e) => println!("blocked {name}: {e}"),
    }
}

fn escape(host_paths: &[String]) {
    attempt("read ../stdout", fs::read_to_string("../stdout"));
    attempt("read /../stdout", fs::read_to_string("/../stdout"));
    attempt(
        "read ../../..",
        fs::read_dir("../../..").map(|d| format!("{} entries", d.count())),
    );
    attempt(
        "write ../pwned",
        fs::write("../pwned", "x").map(|_| "written".into()),
    );
    attempt(
        "write /../../pwned",
        fs::write("/../../pwned", "x").map(|_| "written".into()),
    );
    for path in host_paths {
        attempt(&format!("read {path}"), fs::read_to_string(path));
        attempt(
            &format!("write {path}"),
            fs::write(path, "overwritten by a task").map(|_| "written".into()),
        );
        // An absolute symlink the task creates must not lead to the host.
        let link = format!("abs-link-{}", path.len());
        attempt(
            &format!("symlink {link} -> {path}"),
            symlink(path, &link).and_then(|_| fs::read_to_string(&link)),
        );
    }
    // A relative symlink pointing out of the root.
    attempt(
        "symlink up -> ..",
        symlink("..", "up").and_then(|_| fs::read_to_string("up/stdout")),
    );
    attempt(
        "symlink up2 -> ../..",
        symlink("../..", "up2")
            .and_then(|_| fs::read_dir("up2").map(|d| format!("{} entries", d.count()))),
    );
    attempt(
        "write through up2",
        fs::write("up2/pwned", "x").map(|_| "written".into()),
    );
    println!("escape attempts done");
}

fn fill(path: &str, mib: u64) -> std::io::Result<()> {
    let chunk = vec![b'z'; 1 << 20];
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut written = 0u64;
    while mib == 0 || written < mib {
        file.write_all(&chunk)?;
        written += 1;
    }
    println!("filled {path} with {written} MiB");
    Ok(())
}

fn pace(path: &str, kib: usize, ms: u64) -> std::io::Result<()> {
    let chunk = vec![b'p'; kib << 10];
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    loop {
        file.write_all(&chunk)?;
        file.flush()?;
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let result = match (cmd, &args[1.min(args.len())..]) {
        ("write", [path, text]) => fs::write(path, text).map(|_| println!("wrote {path}")),
        ("read", [path]) => fs::read_to_string(path).map(|s| print!("{s}")),
        ("ls", rest) => {
            let dir = rest.first().map(String::as_str).unwrap_or(".");
            fs::read_dir(dir).map(|entries| {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for name in names {
                    println!("{name}");
                }
            })
        }
        ("fill", [path, mib]) => fill(path, mib.parse().unwrap_or(1)),
        ("pace", [path, kib, ms]) => {
            pace(path, kib.parse().unwrap_or(1), ms.parse().unwrap_or(100))
        }
        ("escape", hosts) => {
            escape(hosts);
            Ok(())
        }
        _ => {
            eprintln!("usage: files write|read|ls|fill|escape ...");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("files {cmd}: {e}");
        std::process::exit(1);
    }
}
