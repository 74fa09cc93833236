//! The disk under an agent's work directory: how much is free, and syncing
//! all that was written to it.

use std::io;
use std::path::Path;

/// Bytes free for an unprivileged user on the file system holding `path`
/// (`None` if it cannot be read).
pub fn free_space(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `c_path` is NUL-terminated and `stat` is a valid out
        // pointer for one `statvfs`.
        if unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: statvfs succeeded, so it filled `stat`.
        let stat = unsafe { stat.assume_init() };
        #[allow(clippy::unnecessary_cast)] // the field types differ by platform
        Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
    }
    #[cfg(windows)]
    {
        use std::os::windows::ffi::OsStrExt;
        use windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW;
        let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
        let mut free = 0u64;
        // SAFETY: a NUL-terminated wide path and one valid out pointer; the
        // totals it may also fill are not asked for (null).
        let ok = unsafe {
            GetDiskFreeSpaceExW(
                wide.as_ptr(),
                &mut free,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        (ok != 0).then_some(free)
    }
}

/// Syncs the file system `file` lives on: whatever was written to it is
/// then on the disk. `syncfs` on Linux; elsewhere on Unix `sync`, which
/// syncs every file system. Windows has no whole-volume flush an
/// unprivileged process may call, nor one for a directory handle: there
/// this syncs nothing, and what a task wrote is durable once the OS writes
/// it back (the agent's README says so).
pub fn sync_file_system(file: &std::fs::File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; syncfs reads nothing else.
        if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        let _ = file;
        // SAFETY: sync takes no arguments and cannot fail.
        unsafe { libc::sync() };
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(())
    }
}

/// Syncs the directory `dir` itself, so the names just made or removed in
/// it survive a power loss. Windows cannot open a directory for flushing:
/// there NTFS's own metadata journal is what there is, and this does
/// nothing.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_directory_has_free_space_and_a_missing_one_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_space(dir.path()).is_some_and(|n| n > 0));
        assert_eq!(free_space(&dir.path().join("missing")), None);
    }

    #[test]
    fn syncs_a_file_system() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        sync_file_system(&crate::private::open_dir(dir.path()).unwrap()).unwrap();
        sync_dir(dir.path()).unwrap();
    }
}
