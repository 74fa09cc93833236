//! Where the executor's Unix socket lives: in the agent's work directory
//! when the path fits the OS's limit on socket paths, else in a private
//! directory of the temp dir named for the work directory, so an agent in a
//! deep work directory still finds its executor.

use std::path::{Path, PathBuf};

/// The longest socket path this OS takes, in bytes, without the NUL:
/// `sun_path` holds 108 bytes on Linux and 104 on macOS and the BSDs.
pub const MAX_SOCKET_PATH: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    107
} else {
    103
};

/// The socket `name` for the work directory `work_dir`: `work_dir/name` if
/// it fits [`MAX_SOCKET_PATH`], else `<temp>/wasmos-<hash>/name`, where the
/// hash is of the work directory's absolute path, so the agent and its
/// executor (and a later agent on the same work directory) agree on it.
/// That directory is made, owner-only, by [`prepare`].
pub fn socket_path(work_dir: &Path, name: &str) -> PathBuf {
    let direct = work_dir.join(name);
    if direct.as_os_str().len() <= MAX_SOCKET_PATH {
        return direct;
    }
    let absolute = std::path::absolute(work_dir).unwrap_or_else(|_| work_dir.to_path_buf());
    let digest = <sha2::Sha256 as sha2::Digest>::digest(absolute.as_os_str().as_encoded_bytes());
    std::env::temp_dir()
        .join(format!("wasmos-{}", hex::encode(&digest[..8])))
        .join(name)
}

/// Makes the directory `socket` lives in if it is not the work directory:
/// private, and refused if someone else made it first (a socket in a
/// directory another user controls could be swapped for theirs).
pub fn prepare(socket: &Path) -> std::io::Result<()> {
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    if dir.exists() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::symlink_metadata(dir)?;
            // SAFETY: geteuid cannot fail.
            let me = unsafe { libc::geteuid() };
            if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is not a private directory of this user's: remove it, or use a shorter work directory",
                        dir.display()
                    ),
                ));
            }
        }
        return Ok(());
    }
    crate::private::private_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_paths_stay_and_long_ones_move_to_one_private_place() {
        let short = Path::new("/var/lib/wasmos");
        assert_eq!(
            socket_path(short, "executor.sock"),
            short.join("executor.sock")
        );

        let long = PathBuf::from(format!("/tmp/{}", "deep/".repeat(30)));
        let moved = socket_path(&long, "executor.sock");
        assert!(
            moved.as_os_str().len() <= MAX_SOCKET_PATH,
            "{}",
            moved.display()
        );
        assert_eq!(moved, socket_path(&long, "executor.sock"), "stable");
        assert_ne!(moved, socket_path(&long.join("other"), "executor.sock"));
        assert!(moved.starts_with(std::env::temp_dir()));
    }

    #[cfg(unix)]
    #[test]
    fn the_moved_socket_directory_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sockets/executor.sock");
        prepare(&socket).unwrap();
        prepare(&socket).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("sockets"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(
            dir.path().join("sockets"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert!(
            prepare(&socket).is_err(),
            "a directory others can enter is refused"
        );
    }
}
