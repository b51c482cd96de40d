//! Blobs: streamed into tmp/, hashed while written, capped at the descriptor's size,
//! verified, fsynced, renamed into `blobs/sha256/<hex>`. A blob already there is not fetched
//! again, and two ingests of one digest at once fetch it once.

use super::fsutil::{self, TempPath};
use super::{blob_key, Descriptor, Digest, Result, Store, StoreError};
use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes read per step; each step's write and hash run off the async workers.
const CHUNK: usize = 1 << 20;

/// The temp file being filled, moved into a blocking task for each chunk.
struct Sink {
    file: std::fs::File,
    hasher: Sha256,
}

impl Store {
    /// Whether blob `d` is in the store. A true answer also keeps it from collection for a
    /// while, so that the pull that asked can still find it when it records the image.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.present_and_fresh(blob_key(d), &self.blob_path(d))
    }

    /// Stores the blob `desc` from `reader`; see [`Store::ingest_with`].
    pub async fn ingest<R>(&self, desc: &Descriptor, reader: R) -> Result<PathBuf>
    where
        R: AsyncRead + Unpin + Send,
    {
        self.ingest_with(desc, || async { Ok::<_, std::io::Error>(reader) })
            .await
    }

    /// Stores the blob `desc`, reading it from what `open` returns, unless it is already
    /// there (then `open` is not called). Concurrent calls for one digest fetch it once: the
    /// others wait and find it. The content must be exactly `desc.size` bytes with digest
    /// `desc.digest`: reading stops after `size + 1` bytes, and on any error nothing is kept.
    pub async fn ingest_with<F, Fut, R, E>(&self, desc: &Descriptor, open: F) -> Result<PathBuf>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<R, E>>,
        R: AsyncRead + Unpin + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        let digest = &desc.digest;
        let path = self.blob_path(digest);
        let _flight = self.inner.flights.enter(&blob_key(digest)).await;
        if self.has_blob(digest) {
            return Ok(path);
        }
        let fetch_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Fetch {
            digest: digest.clone(),
            source,
        };
        let reader = open().await.map_err(|e| fetch_err(Box::new(e)))?;
        let tmp = TempPath::new(&self.tmp(), "blob");
        let file = fsutil::create_new(tmp.path()).map_err(|source| StoreError::Write {
            digest: digest.clone(),
            source,
        })?;
        let mut sink = Sink {
            file,
            hasher: Sha256::new(),
        };
        let mut reader = reader.take(desc.size.saturating_add(1));
        let mut buf = vec![0u8; CHUNK];
        let mut written: u64 = 0;
        loop {
            let n = read_chunk(&mut reader, &mut buf)
                .await
                .map_err(|e| fetch_err(Box::new(e)))?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > desc.size {
                return Err(StoreError::Size {
                    digest: digest.clone(),
                    expected: desc.size,
                    actual: format!("more than {}", desc.size),
                });
            }
            let (s, b, r) = self
                .blocking(move || {
                    let r = sink.file.write_all(&buf[..n]);
                    sink.hasher.update(&buf[..n]);
                    Ok((sink, buf, r))
                })
                .await?;
            (sink, buf) = (s, b);
            r.map_err(|source| StoreError::Write {
                digest: digest.clone(),
                source,
            })?;
        }
        if written != desc.size {
            return Err(StoreError::Size {
                digest: digest.clone(),
                expected: desc.size,
                actual: written.to_string(),
            });
        }
        let actual = Digest::from_hasher(sink.hasher);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                digest: digest.clone(),
                actual,
            });
        }
        let file = sink.file;
        let store = self.clone();
        let key = blob_key(digest);
        let final_path = path.clone();
        let d = digest.clone();
        self.blocking(move || {
            file.sync_all()
                .map_err(|source| StoreError::Write { digest: d, source })?;
            store.publish(tmp, key, &final_path)?;
            fsutil::sync_dir(final_path.parent().unwrap_or(&final_path))
        })
        .await?;
        Ok(path)
    }
}

/// Fills `buf` as far as the stream allows (fewer, larger writes); 0 at the end.
async fn read_chunk<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let got = r.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}
