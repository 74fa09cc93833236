//! Where modules and input files come from: content-addressed by sha256.
//!
//! The executor only needs "bytes for this digest"; the cluster link will
//! implement [`ArtifactSource`] by fetching from the master, while
//! [`DirArtifacts`] serves a local directory (the `wasmos local` mode and
//! tests). The executor verifies every digest itself, so a source cannot
//! hand a task the wrong bytes.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// Lowercase hex sha256 of `bytes`: the name of an artifact.
pub fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// True when `s` looks like a digest: 64 lowercase hex characters.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A boxed future of an artifact's bytes.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<u8>>> + Send + 'a>>;

/// A boxed future of the size of what was written.
pub type SpoolFuture<'a> = Pin<Box<dyn Future<Output = io::Result<u64>> + Send + 'a>>;

/// Fetches artifacts by digest. Implementations need not verify the digest:
/// the executor does.
pub trait ArtifactSource: Send + Sync + 'static {
    /// The bytes of the artifact named `digest` (modules: compiled whole).
    fn fetch<'a>(&'a self, digest: &'a str) -> FetchFuture<'a>;

    /// Writes the artifact named `digest` into the new file `dest` and
    /// returns its size, refusing (`FileTooLarge`) more than `limit` bytes.
    /// Inputs come this way. The default fetches it whole first; a source
    /// that can stream writes it as it comes, so it is never all in memory.
    fn spool<'a>(&'a self, digest: &'a str, dest: &'a Path, limit: u64) -> SpoolFuture<'a> {
        Box::pin(async move { write_new(dest, &self.fetch(digest).await?, limit).await })
    }
}

/// Writes `bytes` as the new file `dest` (for sources that have them whole),
/// refusing (`FileTooLarge`) more than `limit`; returns their size.
pub async fn write_new(dest: &Path, bytes: &[u8], limit: u64) -> io::Result<u64> {
    check_limit(bytes.len() as u64, limit)?;
    let mut file = create_new(dest).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
    Ok(bytes.len() as u64)
}

/// Creates `dest`, which must not exist yet (never follows a link there).
pub async fn create_new(dest: &Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .await
}

/// The words of a `FileTooLarge` refusal: the executor process knows one
/// its agent sent back by them.
pub const TOO_LARGE: &str = "passes the task's disk";

/// `FileTooLarge` when `size` passes `limit`.
pub fn check_limit(size: u64, limit: u64) -> io::Result<()> {
    if size > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("it {TOO_LARGE} ({limit} bytes left)"),
        ));
    }
    Ok(())
}

/// The sha256 of the file at `path`, read in blocks (blocking).
pub fn digest_of_file(path: &Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Artifacts stored as files named by their digest in one directory.
#[derive(Debug, Clone)]
pub struct DirArtifacts {
    dir: PathBuf,
}

impl DirArtifacts {
    /// Serves (and stores into) `dir`, creating it if needed.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Stores `bytes` and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> io::Result<String> {
        let digest = digest_of(bytes);
        let tmp = self.dir.join(format!(".{digest}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, self.dir.join(&digest))?;
        Ok(digest)
    }
}

impl ArtifactSource for DirArtifacts {
    fn fetch<'a>(&'a self, digest: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            if !is_digest(digest) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{digest}` is not a sha256 digest"),
                ));
            }
            tokio::fs::read(self.dir.join(digest)).await
        })
    }

    fn spool<'a>(&'a self, digest: &'a str, dest: &'a Path, limit: u64) -> SpoolFuture<'a> {
        Box::pin(async move {
            if !is_digest(digest) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{digest}` is not a sha256 digest"),
                ));
            }
            let source = tokio::fs::File::open(self.dir.join(digest)).await?;
            check_limit(source.metadata().await?.len(), limit)?;
            let mut file = create_new(dest).await?;
            let copied = tokio::io::copy(&mut source.take(limit), &mut file).await?;
            Ok(copied)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_lowercase_hex_sha256() {
        let d = digest_of(b"hi");
        assert_eq!(
            d,
            "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"
        );
        assert!(is_digest(&d));
        assert!(!is_digest(&d.to_uppercase()));
        assert!(!is_digest("../etc/passwd"));
    }
}
