//! Writing credentials to disk.

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
