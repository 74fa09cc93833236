//! Writing credentials to disk, and the directories that hold them.

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` whole: to a temporary file beside it, synced,
/// then renamed over it, so a crash leaves the old file or the new one,
/// never half of either. `private` makes it readable by its owner only
/// (mode 0600 on Unix): keys, tokens, profiles.
pub fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Makes `dir` (and its parents) if missing, and readable by its owner only
/// (mode 0700 on Unix) even if it existed: a work directory holds keys,
/// tokens, the registry and tasks' files, and a directory others cannot
/// enter keeps every file in it from them, whatever the file's own mode.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
