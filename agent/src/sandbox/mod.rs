//! A task's sandbox on the agent's disk:
//!
//! ```text
//! <work_dir>/sandboxes/<task_id>/
//!     root/     preopened as `/` (and the working directory) for the task
//!     stdout    capped output, beside the root: the task cannot reach it
//!     stderr
//! ```
//!
//! A task that can touch no file gets no `root/` at all: its root is empty,
//! and reads and listings say so; one `mkdir` fewer for each of the
//! thousands of trivial tasks a second an agent ends.
//!
//! Task ids are unique in the cluster, so the path is stable across agent
//! restarts. Everything the agent itself does inside `root/` (placing
//! inputs, reading files for operators) goes through `cap-std`, so a symlink
//! a task planted can never make the agent touch a host file.
//!
//! The room holds a task's directory (here), its capped stdout and stderr
//! ([`output`]) and the thread that writes sandboxes behind their tasks
//! ([`persist`]). It knows nothing of wasmtime's engine, of how tasks are
//! scheduled or of the master: the executor uses it, never the other way.

mod output;
pub(crate) mod output_log;
pub(crate) mod persist;

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

pub use wasmos_platform::disk::sync_file_system;

/// The paths of one sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// `sandboxes/<task_id>`.
    pub dir: PathBuf,
    /// The task's `/`.
    pub root: PathBuf,
    /// The task's stdout file.
    pub stdout: PathBuf,
    /// The task's stderr file.
    pub stderr: PathBuf,
}

/// The directories of one task's sandbox as the executor holds them while
/// it knows the task: created when first needed. A task that can touch no
/// file and has no inputs runs without them (nothing it can do tells them
/// apart); they are made when its output spills to disk or, after it ended,
/// by the [`Persister`](persist::Persister), off the worker thread.
pub struct SandboxDirs {
    /// The paths.
    pub paths: Sandbox,
    task_id: String,
    /// `<work_dir>/sandboxes`, open.
    sandboxes: Arc<std::fs::File>,
    state: Mutex<DirState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirState {
    Absent,
    Created,
    /// Deleted by the executor: never created again.
    Removed,
}

impl SandboxDirs {
    /// The (not yet created) directories of `task_id`'s sandbox.
    pub fn new(work_dir: &Path, sandboxes: Arc<std::fs::File>, task_id: &str) -> Self {
        Self {
            paths: Sandbox::at(work_dir, task_id),
            task_id: task_id.to_owned(),
            sandboxes,
            state: Mutex::new(DirState::Absent),
        }
    }

    /// The task whose sandbox this is.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// Creates the directories now. Fails with `AlreadyExists` if they
    /// exist on disk (a task id is never reused), or if they were created
    /// or removed before.
    pub fn create(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if *state != DirState::Absent {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        self.paths.create_in(&self.sandboxes, &self.task_id)?;
        *state = DirState::Created;
        Ok(())
    }

    /// Creates the sandbox's directory (not its root: a task that can
    /// touch no file has none) unless it was created already. Fails if the
    /// executor removed the sandbox.
    pub fn ensure(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        match *state {
            DirState::Created => Ok(()),
            DirState::Removed => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the sandbox was removed",
            )),
            DirState::Absent => {
                self.paths.create_dir_in(&self.sandboxes, &self.task_id)?;
                *state = DirState::Created;
                Ok(())
            }
        }
    }

    /// True once the directories exist (as far as the executor knows).
    pub fn created(&self) -> bool {
        *self.state.lock().unwrap() == DirState::Created
    }

    /// Syncs the file system the sandboxes live on (`syncfs`): every
    /// sandbox written so far is then on the disk. One call covers a whole
    /// batch of ended tasks, however many files they wrote.
    pub fn sync_file_system(&self) -> io::Result<()> {
        sync_file_system(&self.sandboxes)
    }

    /// Marks the sandbox removed: [`ensure`](Self::ensure) never makes it
    /// again, so a late write-behind cannot resurrect a deleted sandbox.
    pub fn mark_removed(&self) {
        *self.state.lock().unwrap() = DirState::Removed;
    }
}

/// A file of a sandbox that can be read from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxFile {
    /// The task's standard output.
    Stdout,
    /// The task's standard error.
    Stderr,
    /// A file under the task's root, by relative path (`out/result.txt`).
    Root(String),
}

impl Sandbox {
    /// The sandbox of `task_id` under `work_dir` (not created).
    pub fn at(work_dir: &Path, task_id: &str) -> Self {
        let dir = work_dir.join("sandboxes").join(task_id);
        Self {
            root: dir.join("root"),
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
            dir,
        }
    }

    /// Creates the directories. Fails with `AlreadyExists` if the sandbox
    /// exists: a task id is never reused, and an old sandbox is never
    /// silently mixed into a new task.
    pub fn create(&self) -> io::Result<()> {
        match std::fs::create_dir(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(self.dir.parent().unwrap_or(Path::new(".")))?;
                std::fs::create_dir(&self.dir)?;
            }
            other => other?,
        }
        std::fs::create_dir(&self.root)
    }

    /// [`create`](Self::create), given `sandboxes`, an open handle on the
    /// directory that holds this sandbox (named `task_id` in it): the
    /// `mkdir`s then resolve one or two path components instead of the
    /// whole work-dir path, which matters at thousands of launches a second.
    pub fn create_in(&self, sandboxes: &std::fs::File, task_id: &str) -> io::Result<()> {
        if !self.create_dir_in(sandboxes, task_id)? {
            return Ok(());
        }
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        wasmos_platform::private::create_dir_at(sandboxes, parent, &format!("{task_id}/root"))
    }

    /// Creates the sandbox's directory alone, as
    /// [`create_in`](Self::create_in) does: the sandbox of a task that can
    /// touch no file. False when it had to make the whole sandbox by path
    /// (the sandboxes directory had gone).
    pub fn create_dir_in(&self, sandboxes: &std::fs::File, task_id: &str) -> io::Result<bool> {
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        match wasmos_platform::private::create_dir_at(sandboxes, parent, task_id) {
            // The sandboxes directory went away: make it again by path.
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.create().map(|()| false),
            other => other.map(|()| true),
        }
    }

    /// The root as a capability: nothing reached through it leaves it.
    pub fn root_dir(&self) -> io::Result<Dir> {
        Dir::open_ambient_dir(&self.root, ambient_authority())
    }

    /// Reads up to `max` bytes of `file` from `offset`, and the file's
    /// size. A missing stdout or stderr reads as empty (a task that writes
    /// nothing gets no file).
    pub fn read(&self, file: &SandboxFile, offset: u64, max: usize) -> io::Result<(Vec<u8>, u64)> {
        let mut f = match file {
            SandboxFile::Stdout | SandboxFile::Stderr => {
                let path = if *file == SandboxFile::Stdout {
                    &self.stdout
                } else {
                    &self.stderr
                };
                match std::fs::File::open(path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound && self.dir.exists() => {
                        return Ok((Vec::new(), 0));
                    }
                    Err(e) => return Err(e),
                }
            }
            SandboxFile::Root(rel) => {
                let rel = relative_path(rel)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                // No root (a task that could touch no file): no such file.
                self.root_dir()?.open(rel)?.into_std()
            }
        };
        let size = f.metadata()?.len();
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.take(max as u64).read_to_end(&mut buf)?;
        Ok((buf, size))
    }
}

/// Checks a task id: 1-200 characters of `[A-Za-z0-9._-]`, not `.` or `..`
/// (it names a directory).
pub fn check_task_id(id: &str) -> Result<(), String> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if id.is_empty() || id.len() > 200 || !ok_chars || id == "." || id == ".." {
        return Err(format!(
            "task id `{id}` must be 1-200 characters of [A-Za-z0-9._-], not `.` or `..`"
        ));
    }
    Ok(())
}

/// `path` as a relative path of plain components (no `..`, no root, not
/// empty).
pub fn relative_path(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "path `{path}` must be relative and must not contain `..`"
                ));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("path `{path}` names no file"));
    }
    Ok(out)
}

/// Unpacks the tar archive read from `archive` into the directory `rel`
/// under `root`.
/// Only regular files and directories are accepted: links in an input could
/// point anywhere. Refused once the files would pass `budget` bytes (a small
/// archive may claim any size), before the file that would pass it is made.
/// Returns the bytes of the files made.
pub fn unpack_tar(root: &Dir, rel: &Path, archive: impl Read, budget: u64) -> io::Result<u64> {
    root.create_dir_all(rel)?;
    let target = root.open_dir(rel)?;
    let mut archive = tar::Archive::new(archive);
    let mut written = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let path =
            relative_path(&name).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => target.create_dir_all(&path)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    target.create_dir_all(parent)?;
                }
                written = written.saturating_add(entry.header().size()?);
                if written > budget {
                    return Err(io::Error::new(
                        io::ErrorKind::FileTooLarge,
                        format!(
                            "unpacked, it passes the task's disk of {budget} bytes at `{name}`"
                        ),
                    ));
                }
                let mut file = target.create(&path)?;
                io::copy(&mut entry.by_ref().take(budget), &mut file)?;
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "tar entry `{name}` is a {other:?}: only files and directories are allowed"
                    ),
                ));
            }
        }
    }
    Ok(written)
}

/// Bytes of everything under `dir`, like `du --apparent-size`: file sizes,
/// symlinks counted as themselves (never followed). Entries that vanish
/// while walking are skipped.
pub fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_name_one_directory() {
        assert!(check_task_id("job-1.a_b").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(201)] {
            assert!(check_task_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(relative_path("in/./x").unwrap(), PathBuf::from("in/x"));
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "."] {
            assert!(relative_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tar_inputs_unpack_files_and_refuse_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(dir.path(), ambient_authority()).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "sub/a.txt", &b"hello"[..]).unwrap();
        let good = b.into_inner().unwrap();
        assert_eq!(
            unpack_tar(&root, Path::new("in"), &good[..], u64::MAX).unwrap(),
            5
        );
        let err = unpack_tar(&root, Path::new("small"), &good[..], 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge, "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("in/sub/a.txt")).unwrap(),
            b"hello"
        );
        assert_eq!(disk_usage(dir.path()), 5);

        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "evil", "/etc").unwrap();
        let evil = b.into_inner().unwrap();
        let err = unpack_tar(&root, Path::new("in2"), &evil[..], u64::MAX).unwrap_err();
        assert!(
            err.to_string().contains("only files and directories"),
            "{err}"
        );
    }
}
