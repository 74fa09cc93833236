//! Framing on the executor socket: each message is a 4-byte big-endian
//! length and then its prost encoding. Writers batch: every message queued
//! while one write is under way goes out in the next single write.

use std::io;

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::UnboundedReceiver;

/// The largest message either side accepts: an artifact fits in it.
pub const MAX_FRAME: usize = 256 << 20;

/// Reads framed messages through a buffer: one `read` of the socket
/// brings every frame that arrived, not one call for a length and another
/// for its message, and one buffer holds each message's bytes in turn.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    bytes: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(64 << 10, reader),
            bytes: Vec::new(),
        }
    }

    /// Reads one message; `None` at a clean end of the stream.
    pub async fn read<M: Message + Default>(&mut self) -> io::Result<Option<M>> {
        let len = match self.inner.read_u32().await {
            Ok(len) => len as usize,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        };
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message of {len} bytes is over the {MAX_FRAME}-byte limit"),
            ));
        }
        self.bytes.clear();
        self.bytes.resize(len, 0);
        self.inner.read_exact(&mut self.bytes).await?;
        let message = M::decode(self.bytes.as_slice())
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        // An artifact's frame may be large: its buffer is not kept.
        if self.bytes.capacity() > 1 << 20 {
            self.bytes = Vec::new();
        }
        message
    }
}

/// Appends one framed message to `buffer`.
pub fn frame(message: &impl Message, buffer: &mut Vec<u8>) {
    let len = message.encoded_len();
    buffer.extend_from_slice(&(len as u32).to_be_bytes());
    message
        .encode(buffer)
        .expect("a Vec grows to fit any message");
}

/// Writes every message from `messages` until the channel closes or a
/// write fails, as many per write as are queued.
pub async fn write_all<M: Message>(
    writer: &mut (impl AsyncWrite + Unpin),
    messages: &mut UnboundedReceiver<M>,
) -> io::Result<()> {
    let mut buffer = Vec::new();
    while let Some(first) = messages.recv().await {
        buffer.clear();
        frame(&first, &mut buffer);
        while buffer.len() < (1 << 20) {
            match messages.try_recv() {
                Ok(next) => frame(&next, &mut buffer),
                Err(_) => break,
            }
        }
        writer.write_all(&buffer).await?;
        writer.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmos_proto::v1;

    #[tokio::test]
    async fn messages_cross_whole_and_in_order() {
        let (mut a, b) = tokio::io::duplex(64);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..100u64 {
            tx.send(v1::ArtifactRequest {
                request_id: i,
                digest: "d".repeat(i as usize),
                ..Default::default()
            })
            .unwrap();
        }
        drop(tx);
        let writer = tokio::spawn(async move { write_all(&mut a, &mut rx).await });
        let mut b = FrameReader::new(b);
        for i in 0..100u64 {
            let m: v1::ArtifactRequest = b.read().await.unwrap().unwrap();
            assert_eq!((m.request_id, m.digest.len()), (i, i as usize));
        }
        writer.await.unwrap().unwrap();
        assert!(b.read::<v1::ArtifactRequest>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_not_allocated() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = FrameReader::new(b)
            .read::<v1::ArtifactRequest>()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
