//! A redb backend that loses what was not synced, for tests of real
//! processes: the database lives in memory, and only `sync_data` writes it
//! to its file (whole, then renamed over the old one). A process killed
//! with `kill -9` leaves the file as of its last sync, as a power cut would
//! leave a disk, whereas a plain file would keep every write in the page
//! cache.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::StorageBackend;

/// The database's bytes in memory, and the file they are synced to.
#[derive(Debug)]
pub struct FileImage {
    path: PathBuf,
    bytes: Mutex<Vec<u8>>,
}

impl FileImage {
    /// The image of `path` as last synced (empty when there is none).
    pub fn open(path: &Path) -> io::Result<FileImage> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(FileImage {
            path: path.to_path_buf(),
            bytes: Mutex::new(bytes),
        })
    }
}

impl StorageBackend for FileImage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.lock().unwrap();
        let start = offset as usize;
        let source = bytes
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past the end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.bytes.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let bytes = self.bytes.lock().unwrap();
        let tmp = self.path.with_extension("redb.syncing");
        std::fs::write(&tmp, &*bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.bytes.lock().unwrap();
        let start = offset as usize;
        let end = start + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(data);
        Ok(())
    }
}
