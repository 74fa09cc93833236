//! What a run sends before any task starts: the module, checked locally
//! (`.wat` compiled, the binary validated) so a typo fails at once with the
//! validator's message, and the `--input` files and directories (a directory
//! as a tar archive), uploaded as artifacts.

use std::path::{Path, PathBuf};

use anyhow::Context;
use wasmos_sdk::{Client, TaskTemplate};

use super::{TaskArgs, one_line};

pub(super) fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "{}: no such file; check the path (relative paths start at {})",
            path.display(),
            std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string())
        ),
        _ => anyhow::anyhow!("cannot read {}: {e}", path.display()),
    })
}

/// Reads the module; compiles `.wat` text; validates the binary.
pub(crate) fn load_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = read_file(path)?;
    let is_wat_name = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wat"));
    let binary = if bytes.starts_with(b"\0asm") {
        bytes
    } else if is_wat_name || looks_like_text(&bytes) {
        wat::parse_bytes(&bytes)
            .map(|b| b.into_owned())
            .map_err(|mut e| {
                e.set_path(path);
                anyhow::anyhow!(
                    "{} is not a wasm module: {}; fix the .wat text or pass a .wasm binary",
                    path.display(),
                    one_line(&e.to_string())
                )
            })?
    } else {
        bytes
    };
    wasmparser::Validator::new()
        .validate_all(&binary)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not a wasm module: {}; pass a .wasm binary built for wasm32-wasip1 (a module) or wasm32-wasip2 (a component), or .wat text",
                path.display(),
                e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })?;
    Ok(binary)
}

/// UTF-8 text whose first non-blank character opens an S-expression or a
/// `;;` comment: worth trying as `.wat`.
pub(super) fn looks_like_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|t| {
        let t = t.trim_start();
        t.starts_with('(') || t.starts_with(";;")
    })
}

/// An `--input`, read into memory: a file's bytes or a directory's tar.
pub(crate) struct Input {
    name: String,
    bytes: Vec<u8>,
    dir: bool,
    /// Bytes it places in the sandbox (a directory: its files' sizes).
    size: u64,
}

impl Input {
    pub(crate) fn read(path: &Path) -> anyhow::Result<Input> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "--input {}: no such file or directory; check the path",
                path.display()
            ),
            _ => anyhow::anyhow!("--input {}: {e}", path.display()),
        })?;
        let name = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .with_context(|| format!("--input {}: has no file name", path.display()))?;
        if meta.is_dir() {
            let (bytes, size) = tar_dir(path)
                .with_context(|| format!("--input {}: cannot archive it", path.display()))?;
            Ok(Input {
                name,
                bytes,
                dir: true,
                size,
            })
        } else {
            let bytes = read_file(path)?;
            Ok(Input {
                name,
                size: bytes.len() as u64,
                bytes,
                dir: false,
            })
        }
    }
}

/// A tar archive of everything under `dir`, with paths relative to it, and
/// the bytes of its files.
///
/// A symlink is followed only while it stays inside `dir` (the sandbox gets
/// what it points at); one that leads out of `dir` is refused, naming it,
/// so `--input ./data` never uploads `/etc/passwd`, and a directory reached
/// twice on one path (a loop) is refused too.
pub(super) fn tar_dir(dir: &Path) -> std::io::Result<(Vec<u8>, u64)> {
    let root = std::fs::canonicalize(dir)?;
    let mut size = 0u64;
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    // Each directory to visit, with the real directories on its path.
    let mut stack = vec![(PathBuf::new(), vec![root.clone()])];
    while let Some((rel, ancestors)) = stack.pop() {
        let mut entries: Vec<_> =
            std::fs::read_dir(dir.join(&rel))?.collect::<std::io::Result<Vec<_>>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = rel.join(entry.file_name());
            let full = entry.path();
            let real = if entry.file_type()?.is_symlink() {
                let target = std::fs::canonicalize(&full).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "{}: a symlink whose target cannot be read: {e}",
                            full.display()
                        ),
                    )
                })?;
                if !target.starts_with(&root) {
                    return Err(std::io::Error::other(format!(
                        "{} is a symlink to {}, outside {}: inputs never leave their directory; copy the file in instead",
                        full.display(),
                        target.display(),
                        dir.display()
                    )));
                }
                target
            } else {
                full.clone()
            };
            let meta = std::fs::metadata(&real)?;
            if meta.is_dir() {
                let real = std::fs::canonicalize(&real)?;
                if ancestors.contains(&real) {
                    return Err(std::io::Error::other(format!(
                        "{} leads back to {}: a symlink loop",
                        full.display(),
                        real.display()
                    )));
                }
                builder.append_dir(&rel, &real)?;
                let mut path = ancestors.clone();
                path.push(real);
                stack.push((rel, path));
            } else if meta.is_file() {
                builder.append_path_with_name(&real, &rel)?;
                size += meta.len();
            }
        }
    }
    Ok((builder.into_inner()?, size))
}

/// Uploads the module and the inputs; returns the task template.
pub(crate) async fn upload(
    client: &Client,
    task: &TaskArgs,
    module: &[u8],
    inputs: &[Input],
) -> anyhow::Result<TaskTemplate> {
    let uploaded = client
        .upload_raw(module)
        .await
        .with_context(|| format!("uploading {}", task.module.display()))?;
    // `--disk` caps what a task writes; its inputs come on top (the task's
    // disk resource counts both).
    let inputs_size: u64 = inputs.iter().map(|i| i.size).sum();
    let mut template = TaskTemplate::new(uploaded.digest)
        .cpus(task.cpus)
        .mem(task.mem)
        .disk(task.disk.saturating_add(inputs_size))
        .max_fuel(task.max_fuel);
    if let Some(timeout) = task.timeout {
        template = template.timeout(timeout);
    }
    for input in inputs {
        let digest = client
            .upload_raw(&input.bytes)
            .await
            .with_context(|| format!("uploading --input {}", input.name))?
            .digest;
        template = if input.dir {
            template.input_dir(&input.name, digest)
        } else {
            template.input(&input.name, digest)
        };
    }
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn symlinks_inside_are_followed_and_out_or_in_loops_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("sub/a.txt", data.join("link.txt")).unwrap();
        std::os::unix::fs::symlink("sub", data.join("again")).unwrap();
        assert_eq!(
            names(&tar_dir(&data).unwrap().0),
            ["again", "again/a.txt", "link.txt", "sub", "sub/a.txt"]
        );

        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink("../secret", data.join("out")).unwrap();
        let err = tar_dir(&data).unwrap_err().to_string();
        assert!(err.contains("out") && err.contains("outside"), "{err}");
        std::fs::remove_file(data.join("out")).unwrap();

        std::os::unix::fs::symlink("..", data.join("sub/up")).unwrap();
        let err = tar_dir(&data).unwrap_err().to_string();
        assert!(err.contains("loop"), "{err}");
    }
}
