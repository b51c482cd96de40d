//! Layers: each unpacked once per chain id by `capsa::overlay::unpack` (whiteouts turned into
//! overlay's own form, escapes refused) into tmp/, checked against its diff id and media
//! type, then renamed to `layers/<chain hex>/`. Layers do not depend on each other on disk
//! (each holds only its own diff), so a stack's layers unpack in parallel.

use super::fsutil::TempPath;
use super::{
    chain_ids, layer_compression, layer_key, ChainId, Descriptor, Digest, Result, Store, StoreError,
};
use capsa::overlay::Compression;
use tokio::task::JoinSet;

impl Store {
    /// Whether layer `c` is unpacked; a true answer keeps it from collection for a while.
    pub fn has_layer(&self, c: &ChainId) -> bool {
        self.present_and_fresh(layer_key(c), &self.layer_path(c))
    }

    /// Unpacks a stack of layers, given bottom first as (diff id from the image config,
    /// blob descriptor from the manifest), each blob already ingested. Returns the chain
    /// ids, bottom first. A layer already unpacked is not unpacked again, and two calls
    /// sharing a layer unpack it once.
    pub async fn unpack_layers(&self, layers: &[(Digest, Descriptor)]) -> Result<Vec<ChainId>> {
        let diff_ids: Vec<Digest> = layers.iter().map(|(d, _)| d.clone()).collect();
        let chains = chain_ids(&diff_ids);
        // Refuse what cannot be unpacked before starting anything.
        for (_, desc) in layers {
            if layer_compression(&desc.media_type).is_none() {
                return Err(StoreError::MediaType {
                    digest: desc.digest.clone(),
                    media_type: desc.media_type.clone(),
                });
            }
        }
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(workers));
        let mut tasks = JoinSet::new();
        for ((diff_id, desc), chain) in layers.iter().cloned().zip(chains.iter().cloned()) {
            let (store, limit) = (self.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                store.unpack_one(diff_id, desc, chain).await
            });
        }
        // The first error wins; dropping the set aborts the rest (their temps go with them).
        while let Some(done) = tasks.join_next().await {
            done.map_err(StoreError::Task)??;
        }
        Ok(chains)
    }

    async fn unpack_one(&self, diff_id: Digest, desc: Descriptor, chain: ChainId) -> Result<()> {
        let flight = self.inner.flights.enter(&layer_key(&chain)).await;
        if self.has_layer(&chain) {
            return Ok(());
        }
        if !self.has_blob(&desc.digest) {
            return Err(StoreError::MissingBlob {
                digest: desc.digest,
            });
        }
        let store = self.clone();
        // The flight ends with the blocking work, not with this future, which a failed
        // sibling layer may abort while the unpack runs on.
        self.blocking(move || {
            let _flight = flight;
            store.unpack_blocking(&diff_id, &desc, &chain)
        })
        .await
    }

    fn unpack_blocking(&self, diff_id: &Digest, desc: &Descriptor, chain: &ChainId) -> Result<()> {
        let digest = &desc.digest;
        let tmp = TempPath::new(&self.tmp(), "layer");
        let summary = capsa::overlay::unpack(&self.blob_path(digest), tmp.path(), None).map_err(
            |source| StoreError::Unpack {
                digest: digest.clone(),
                source: Box::new(source),
            },
        )?;
        if summary.diff_id != diff_id.as_str() {
            return Err(StoreError::DiffId {
                digest: digest.clone(),
                expected: diff_id.clone(),
                actual: summary.diff_id,
            });
        }
        let declared = layer_compression(&desc.media_type);
        if declared != summary.compression {
            return Err(StoreError::Compression {
                digest: digest.clone(),
                media_type: desc.media_type.clone(),
                declared: compression_name(declared),
                found: compression_name(summary.compression),
            });
        }
        self.publish(tmp, layer_key(chain), &self.layer_path(chain))
    }
}

fn compression_name(c: Option<Compression>) -> &'static str {
    match c {
        Some(Compression::None) => "plain tar",
        Some(Compression::Gzip) => "gzip",
        Some(Compression::Zstd) => "zstd",
        None => "unknown",
    }
}
