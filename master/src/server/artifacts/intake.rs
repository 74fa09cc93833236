//! The upload intake: an upload's chunks go to a temp file as they arrive,
//! hashed on the way, so the master holds at most one chunk of each upload
//! (tonic decodes one message at a time, bounded by
//! [`MAX_UPLOAD_MESSAGE`]). What may arrive, and how slowly, is decided by
//! [`UploadState`], pure logic the fuzz targets drive; [`receive`] is the
//! I/O around it. The temp file goes whenever an upload ends without
//! being stored, however it ends (refused, cut, its future dropped).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use wasmos_proto::v1;

use super::limits::{MinRate, RateCheck};
use crate::ids::validate_digest;

/// The most bytes of data one `UploadChunk` may carry (the SDK and the
/// Python client send 1 MiB): each upload in progress holds about this
/// much while a chunk is decoded and written.
pub const MAX_UPLOAD_CHUNK: usize = 1 << 20;

/// The largest `UploadChunk` message the master decodes: a chunk's data,
/// its digest and the framing.
pub const MAX_UPLOAD_MESSAGE: usize = MAX_UPLOAD_CHUNK + 1024;

/// An upload that sends no chunk for this long is dropped, whatever its
/// rate so far.
const UPLOAD_IDLE: Duration = Duration::from_secs(30);

/// Why an upload is refused or cut.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// A malformed digest, or bytes that hash to another.
    Invalid(String),
    /// Larger than the master takes.
    TooLarge(String),
    /// Slower than the minimum rate, or silent for too long.
    TooSlow(String),
}

impl From<Refused> for Status {
    fn from(refused: Refused) -> Status {
        match refused {
            Refused::Invalid(m) => Status::invalid_argument(m),
            Refused::TooLarge(m) => Status::resource_exhausted(m),
            Refused::TooSlow(m) => Status::deadline_exceeded(m),
        }
    }
}

/// What an upload has sent so far, and whether it may go on.
#[derive(Debug)]
pub struct UploadState {
    expected: Option<String>,
    size: u64,
    max_size: u64,
    chunks: u64,
    rate: RateCheck,
}

impl UploadState {
    /// An upload of at most `max_size` bytes that keeps up `floor`.
    pub fn new(max_size: u64, floor: MinRate) -> UploadState {
        UploadState {
            expected: None,
            size: 0,
            max_size,
            chunks: 0,
            rate: RateCheck::new(floor),
        }
    }

    /// `chunk` arrived `elapsed` after the upload began. The digest is read
    /// from the first chunk only (as the protocol says); later ones are
    /// ignored.
    pub fn chunk(&mut self, elapsed: Duration, chunk: &v1::UploadChunk) -> Result<(), Refused> {
        if self.chunks == 0 && !chunk.digest.is_empty() {
            validate_digest(&chunk.digest).map_err(Refused::Invalid)?;
            self.expected = Some(chunk.digest.clone());
        }
        self.chunks += 1;
        self.size = self.size.saturating_add(chunk.data.len() as u64);
        if self.size > self.max_size {
            return Err(Refused::TooLarge(format!(
                "artifact larger than the master's limit of {} bytes (--max-artifact-size)",
                self.max_size
            )));
        }
        self.tick(elapsed)
    }

    /// No chunk yet `elapsed` after the upload began: still fast enough?
    pub fn tick(&mut self, elapsed: Duration) -> Result<(), Refused> {
        self.rate
            .check(elapsed, self.size)
            .map_err(Refused::TooSlow)
    }

    /// When (since the upload began) the rate is next checked.
    pub fn next_check(&self) -> Option<Duration> {
        self.rate.next_check()
    }

    /// The whole upload hashed to `digest`: is it what was expected?
    pub fn finish(&self, digest: &str) -> Result<(), Refused> {
        match &self.expected {
            Some(expected) if expected != digest => Err(Refused::Invalid(format!(
                "artifact digest mismatch: expected {expected}, the bytes hash to {digest}; the upload is corrupt"
            ))),
            _ => Ok(()),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// A temp file removed when dropped, unless [`TempFile::stored`].
pub struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// It was renamed into the store: nothing to remove.
    pub fn stored(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            // One unlink, quick enough for any thread.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// An upload received whole and synced to its temp file.
pub struct Received {
    pub tmp: TempFile,
    pub digest: String,
    pub size: u64,
}

/// Receives `chunks` into a new file in `tmp_dir`: each chunk is hashed
/// and written on the blocking pool as it arrives (the master's I/O
/// threads only move bytes), and the upload is cut when it passes
/// `max_size`, falls under `floor` or sends nothing for 30 s.
pub async fn receive(
    tmp_dir: &Path,
    max_size: u64,
    floor: MinRate,
    mut chunks: impl Stream<Item = Result<v1::UploadChunk, Status>> + Unpin,
) -> Result<Received, Status> {
    let start = Instant::now();
    let mut state = UploadState::new(max_size, floor);
    let tmp = TempFile {
        path: tmp_dir.join(format!("{:016x}", rand::random::<u64>())),
        keep: false,
    };
    let path = tmp.path.clone();
    let mut writer =
        Some(blocking(move || Ok((std::fs::File::create(path)?, Sha256::new()))).await?);
    let mut last = start;
    loop {
        let idle_at = last + UPLOAD_IDLE;
        let wake_at = state
            .next_check()
            .map_or(idle_at, |check| idle_at.min(start + check));
        match tokio::time::timeout_at(wake_at, chunks.next()).await {
            Ok(Some(chunk)) => {
                let chunk = chunk?;
                last = Instant::now();
                state.chunk(start.elapsed(), &chunk)?;
                if !chunk.data.is_empty() {
                    let (mut file, mut hasher) = writer.take().expect("put back after each chunk");
                    let data = chunk.data;
                    writer = Some(
                        blocking(move || {
                            hasher.update(&data);
                            file.write_all(&data)?;
                            Ok((file, hasher))
                        })
                        .await?,
                    );
                }
            }
            Ok(None) => break,
            Err(_) if Instant::now() >= idle_at => {
                return Err(Status::deadline_exceeded(format!(
                    "the upload sent nothing for {} s",
                    UPLOAD_IDLE.as_secs()
                )));
            }
            Err(_) => state.tick(start.elapsed())?,
        }
    }
    let (file, hasher) = writer.take().expect("put back after each chunk");
    // On disk before it is indexed and the upload answered.
    blocking(move || file.sync_all()).await?;
    let digest = hex::encode(hasher.finalize());
    state.finish(&digest)?;
    Ok(Received {
        tmp,
        digest,
        size: state.size(),
    })
}

/// Runs file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("artifact store: {e}")))?
        .map_err(|e| Status::internal(format!("artifact store: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(digest: &str, len: usize) -> v1::UploadChunk {
        v1::UploadChunk {
            digest: digest.into(),
            data: vec![7; len],
        }
    }

    const OFF: MinRate = MinRate {
        bytes_per_sec: 0,
        window: Duration::from_secs(1),
        grace: Duration::ZERO,
    };

    #[test]
    fn the_first_chunk_names_the_digest_and_the_last_is_checked_against_it() {
        let digest = hex::encode(Sha256::digest([7u8; 10]));
        let mut state = UploadState::new(100, OFF);
        state.chunk(Duration::ZERO, &chunk(&digest, 4)).unwrap();
        // Later digests are ignored.
        state.chunk(Duration::ZERO, &chunk("junk", 6)).unwrap();
        state.finish(&digest).unwrap();
        assert!(
            matches!(state.finish(&"0".repeat(64)), Err(Refused::Invalid(m)) if m.contains("mismatch"))
        );

        let mut bad = UploadState::new(100, OFF);
        assert!(matches!(
            bad.chunk(Duration::ZERO, &chunk("not-hex", 1)),
            Err(Refused::Invalid(_))
        ));
    }

    #[test]
    fn an_upload_past_the_size_limit_is_refused() {
        let mut state = UploadState::new(10, OFF);
        state.chunk(Duration::ZERO, &chunk("", 10)).unwrap();
        assert!(matches!(
            state.chunk(Duration::ZERO, &chunk("", 1)),
            Err(Refused::TooLarge(m)) if m.contains("--max-artifact-size")
        ));
    }

    #[test]
    fn a_trickle_is_cut_once_the_grace_is_over() {
        let floor = MinRate {
            bytes_per_sec: 1000,
            window: Duration::from_secs(2),
            grace: Duration::from_secs(3),
        };
        let mut state = UploadState::new(u64::MAX, floor);
        let s = Duration::from_secs;
        state.chunk(s(1), &chunk("", 1)).unwrap();
        state.chunk(s(2), &chunk("", 1)).unwrap();
        assert_eq!(state.next_check(), Some(s(3)));
        assert!(matches!(state.tick(s(3)), Err(Refused::TooSlow(m)) if m.contains("bytes/s")));
        assert_eq!(
            Status::from(Refused::TooSlow(String::new())).code(),
            tonic::Code::DeadlineExceeded
        );
    }
}
