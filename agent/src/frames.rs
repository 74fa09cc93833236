//! Checksummed frames, the unit of the executor's append-only files (the
//! checkpoint and the output log):
//!
//! ```text
//! frame := len u32 LE, crc32 u32 LE, body (len bytes)
//! ```
//!
//! A file is appended whole frames at a time. After a crash its tail may
//! hold part of one, or bytes the disk never wrote; the checksum tells,
//! and reading stops at the first frame that is not whole. A body is never
//! empty: eight zero bytes (a file extended but never written) would
//! otherwise read as an empty frame, the checksum of nothing being 0.

/// The bytes before a frame's body.
pub const HEADER: usize = 8;

/// Appends a frame whose body `write` appends to `buf` (no copy of it).
pub fn push_with(buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    write(buf);
    let body = &buf[start + HEADER..];
    assert!(!body.is_empty(), "a frame's body is never empty");
    let len = u32::try_from(body.len()).expect("a frame's body fits in 4 GiB");
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a frame holding `body`.
pub fn push(buf: &mut Vec<u8>, body: &[u8]) {
    push_with(buf, |buf| buf.extend_from_slice(body));
}

/// The whole frames at the start of some bytes, in order.
pub struct Frames<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Frames<'a> {
    pub fn new(bytes: &'a [u8]) -> Frames<'a> {
        Frames { bytes, at: 0 }
    }

    /// Where the whole frames read so far end: once the iterator is done,
    /// the length of the good prefix.
    pub fn end(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let header = self.bytes.get(self.at..self.at + HEADER)?;
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        if len == 0 {
            return None;
        }
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
        let start = self.at + HEADER;
        let body = self.bytes.get(start..start.checked_add(len)?)?;
        if crc32fast::hash(body) != crc {
            return None;
        }
        self.at = start + len;
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frames_are_read_back_and_a_torn_or_corrupt_one_ends_them() {
        let mut buf = Vec::new();
        push(&mut buf, b"one");
        push_with(&mut buf, |b| b.extend_from_slice(b"two"));
        let whole = buf.len();
        push(&mut buf, b"three");
        let mut frames = Frames::new(&buf);
        assert_eq!(
            frames.by_ref().collect::<Vec<_>>(),
            [&b"one"[..], b"two", b"three"]
        );
        assert_eq!(frames.end(), buf.len());

        // Torn: the last frame lacks a byte.
        let mut frames = Frames::new(&buf[..buf.len() - 1]);
        assert_eq!(frames.by_ref().count(), 2);
        assert_eq!(frames.end(), whole);

        // Corrupt: a byte of the last body changed.
        let mut corrupt = buf.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        let mut frames = Frames::new(&corrupt);
        assert_eq!(frames.by_ref().count(), 2);
        assert_eq!(frames.end(), whole);

        // Zeros where a frame should be (a disk that extended the file
        // but never wrote it) are no frame.
        let mut zeros = buf[..whole].to_vec();
        zeros.extend_from_slice(&[0; 64]);
        let mut frames = Frames::new(&zeros);
        assert_eq!(frames.by_ref().count(), 2);
        assert_eq!(frames.end(), whole);
    }
}
