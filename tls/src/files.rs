//! Writing credentials to disk, and the directories that hold them.

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` whole: to a temporary file beside it, synced,
/// then renamed over it, so a crash leaves the old file or the new one,
/// never half of either. `private` makes it readable by its owner only
/// (mode 0600 on Unix, an owner-only ACL on Windows): keys, tokens, profiles.
pub fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = wasmos_platform::private::create_new(&tmp, private)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Makes `dir` (and its parents) if missing, and readable by its owner only
/// even if it existed: a work directory holds keys, tokens, the registry
/// and tasks' files.
pub use wasmos_platform::private::private_dir;
