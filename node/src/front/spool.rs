//! A request body held whole before it reaches the cluster (its hash decides where it goes):
//! in memory up to a limit, in a file of the front's spool directory beyond.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

/// Where a whole body waits.
pub(crate) enum Held {
    Memory(Bytes),
    /// Removed when dropped.
    Spooled(tempfile::NamedTempFile),
}

impl Held {
    /// Stores the body under `hash` (`len` bytes) through the node's cluster client.
    pub(crate) async fn put(
        &self,
        client: &cairn_client::Client,
        hash: cairn_client::Hash,
        len: u64,
    ) -> Result<cairn_client::PutOutcome, cairn_client::ClientError> {
        match self {
            Held::Memory(bytes) => client.put_known(hash, bytes.clone()).await,
            Held::Spooled(file) => client.put_file_known(hash, len, file.path()).await,
        }
    }
}

/// A body being taken in.
pub(crate) struct Spool {
    dir: PathBuf,
    in_memory_max: u64,
    memory: BytesMut,
    file: Option<(tempfile::NamedTempFile, tokio::fs::File)>,
    len: u64,
}

impl Spool {
    pub(crate) fn new(dir: PathBuf, in_memory_max: u64) -> Spool {
        Spool {
            dir,
            in_memory_max,
            memory: BytesMut::new(),
            file: None,
            len: 0,
        }
    }

    /// Appends a piece, moving to a spool file once the body outgrows memory.
    pub(crate) async fn push(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.len += data.len() as u64;
        if self.file.is_none() && self.len > self.in_memory_max {
            let named = tempfile::NamedTempFile::new_in(&self.dir)?;
            let mut file = tokio::fs::File::from_std(named.reopen()?);
            file.write_all(&self.memory).await?;
            self.memory = BytesMut::new();
            self.file = Some((named, file));
        }
        match &mut self.file {
            Some((_, file)) => file.write_all(data).await,
            None => {
                self.memory.extend_from_slice(data);
                Ok(())
            }
        }
    }

    /// The whole body, once every piece is in.
    pub(crate) async fn finish(self) -> std::io::Result<Held> {
        match self.file {
            Some((named, mut file)) => {
                file.flush().await?;
                Ok(Held::Spooled(named))
            }
            None => Ok(Held::Memory(self.memory.freeze())),
        }
    }
}
