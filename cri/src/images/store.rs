//! The image store: content-addressed blobs, layers unpacked once per chain id, image
//! records, container leases and container roots, under `<state_dir>/images/`:
//!
//! ```text
//! lock                 flock(LOCK_EX) held by the one daemon that owns the store
//! blobs/sha256/<hex>   verified blobs (manifests, configs, compressed layers)
//! layers/<chain hex>/  one unpacked layer (capsa::overlay::unpack: whiteouts in overlay form)
//! images.json          every image record, keyed by config digest, in one atomic write
//! leases/<ctr>.json    what a container keeps alive (its image's layers and blobs, its root)
//! tmp/                 everything being written; emptied at open
//! ```
//!
//! Crash safety: nothing appears under `blobs/` or `layers/` but by rename(2) of a complete,
//! verified temp from `tmp/`; records are written after what they name, and removed before
//! it is. A daemon killed at any line leaves only temps (swept at open) and unreferenced
//! blobs or layers (collected at open), never something half-written under a final name.
//!
//! Garbage: a blob or layer stays while an image record, a container lease, or a pull in
//! progress ("fresh": fetched or unpacked by this process in the last hour and not yet
//! named by a record, like containerd's pull leases) uses it. Collection renames what goes
//! into `tmp/` while holding the state lock, so a concurrent `has_blob` or unpack either
//! sees it gone or marks it fresh first.
//!
//! RemoveImage semantics follow containerd's CRI: whichever reference names the image (id,
//! short id, tag, digest reference), the whole image goes, with all its tags.

mod blobs;
mod digest;
mod flight;
pub(crate) mod fsutil;
mod layers;
mod record;
mod rootfs;

pub use digest::{chain_ids, layer_compression, BadDigest, ChainId, Descriptor, Digest};
pub use record::{split_user, ImageConfig, ImageRecord};
pub use rootfs::{FsInfo, FsUsage, RootfsMount, Usage};

use capsa::overlay::OverlayError;
use fsutil::TempPath;
use record::Index;
use rootfs::Lease;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store {}: locked by another process (is another capsa-cri running?)", path.display())]
    Locked {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image store record {} is corrupt", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("fetching blob {digest}")]
    Fetch {
        digest: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("writing blob {digest}")]
    Write {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest}: the descriptor says {expected} bytes, the content is {actual}")]
    Size {
        digest: Digest,
        expected: u64,
        actual: String,
    },
    #[error("blob {digest}: digest mismatch: the content is {actual}")]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error("layer {digest}: media type {media_type:?} is not a tar, tar+gzip or tar+zstd layer")]
    MediaType { digest: Digest, media_type: String },
    #[error("layer {digest}: media type {media_type:?} says {declared}, the content is {found}")]
    Compression {
        digest: Digest,
        media_type: String,
        declared: &'static str,
        found: &'static str,
    },
    #[error("blob {digest} is not in the store")]
    MissingBlob { digest: Digest },
    #[error("unpacking layer {digest}")]
    Unpack {
        digest: Digest,
        #[source]
        source: Box<OverlayError>,
    },
    #[error(
        "layer {digest}: diff id mismatch: the config says {expected}, the content is {actual}"
    )]
    DiffId {
        digest: Digest,
        expected: Digest,
        actual: String,
    },
    #[error("image {image}: layer {chain_id} is not unpacked in the store")]
    MissingLayer { image: Digest, chain_id: ChainId },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("{0:?} matches more than one image id")]
    Ambiguous(String),
    #[error("image {0}: it has no layers to make a root filesystem of")]
    NoLayers(Digest),
    #[error("{0:?} is not a container id (want [A-Za-z0-9_+.-], not \".\" or \"..\")")]
    BadContainerId(String),
    #[error("container {id} already holds image {image}: release it first")]
    Leased { id: String, image: Digest },
    #[error("container {id}: root filesystem at {}", dir.display())]
    Rootfs {
        id: String,
        dir: PathBuf,
        #[source]
        source: Box<OverlayError>,
    },
    #[error("image store task")]
    Task(#[source] tokio::task::JoinError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long a blob or layer fetched by a pull stays safe from collection before a record
/// names it (a failed pull's leftovers go at the first collection after this).
const FRESH_FOR: Duration = Duration::from_secs(3600);

/// The image store. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Held (flock) for the store's life: two daemons must not share one store.
    _lock: nix::fcntl::Flock<std::fs::File>,
    state: Mutex<State>,
    flights: flight::Flights,
}

#[derive(Default)]
struct State {
    index: Index,
    leases: BTreeMap<String, Lease>,
    /// `blob:<digest>` / `layer:<chain id>` made or found by a pull in progress.
    fresh: HashMap<String, Instant>,
}

fn io_err<'a>(
    step: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

fn blob_key(d: &Digest) -> String {
    format!("blob:{d}")
}

fn layer_key(c: &ChainId) -> String {
    format!("layer:{c}")
}

impl Store {
    /// Opens (creating) the store at `root`: takes its lock, empties `tmp/`, loads records
    /// and leases, and collects garbage a previous daemon left.
    pub fn open(root: &Path) -> Result<Store> {
        for d in ["", "blobs/sha256", "layers", "leases", "tmp"] {
            fsutil::create_private_dir(&root.join(d))?;
        }
        let lock_path = root.join("lock");
        let lock = fsutil::lock_exclusive(&lock_path).map_err(|source| StoreError::Locked {
            path: root.to_path_buf(),
            source,
        })?;
        fsutil::empty_dir(&root.join("tmp"))?;
        let index = match std::fs::read(root.join("images.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: root.join("images.json"),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(io_err("reading", &root.join("images.json"))(e)),
        };
        let leases = rootfs::load_leases(&root.join("leases"))?;
        let store = Store {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                _lock: lock,
                state: Mutex::new(State {
                    index,
                    leases,
                    fresh: HashMap::new(),
                }),
                flights: flight::Flights::default(),
            }),
        };
        store.collect()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock cannot leave State half-updated in a way
        // that matters more than losing the daemon: keep serving.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tmp(&self) -> PathBuf {
        self.inner.root.join("tmp")
    }

    /// Where blob `d` lives once ingested.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.inner.root.join("blobs/sha256").join(d.hex())
    }

    /// The overlay-ready directory of layer `c` once unpacked.
    pub fn layer_path(&self, c: &ChainId) -> PathBuf {
        self.inner.root.join("layers").join(c.hex())
    }

    /// Whether `path` exists; if so it is kept from collection as part of a pull.
    fn present_and_fresh(&self, key: String, path: &Path) -> bool {
        let mut st = self.state();
        let present = path.symlink_metadata().is_ok();
        if present {
            st.fresh.insert(key, Instant::now());
        }
        present
    }

    /// Moves a finished temp into its final name and marks it fresh, as one step for
    /// garbage collection.
    fn publish(&self, tmp: TempPath, key: String, path: &Path) -> Result<()> {
        let mut st = self.state();
        std::fs::rename(tmp.path(), path).map_err(io_err("renaming into place", path))?;
        tmp.keep();
        st.fresh.insert(key, Instant::now());
        Ok(())
    }

    /// The image a reference names: a full or short id, a normalized tag, or a normalized
    /// `name@sha256:` reference (see [`record::Index::resolve`]). An id prefix that matches
    /// two images gives None here, an error from [`Store::remove`].
    pub fn get(&self, reference: &str) -> Option<ImageRecord> {
        self.state()
            .index
            .resolve(reference)
            .ok()
            .flatten()
            .cloned()
    }

    /// Every image.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.state().index.images.values().cloned().collect()
    }

    /// Records an image (or adds names to the one with its id). Its tags and digest
    /// references move to it from any other image; an image left with no name is removed.
    /// Every layer and blob it names must already be in the store.
    pub async fn put_image(&self, record: ImageRecord) -> Result<()> {
        let store = self.clone();
        self.blocking(move || store.put_image_blocking(record))
            .await
    }

    fn put_image_blocking(&self, record: ImageRecord) -> Result<()> {
        let dropped = {
            let mut st = self.state();
            for c in &record.chain_ids {
                if !self.layer_path(c).is_dir() {
                    return Err(StoreError::MissingLayer {
                        image: record.id.clone(),
                        chain_id: c.clone(),
                    });
                }
            }
            for b in &record.blobs {
                if !self.blob_path(b).is_file() {
                    return Err(StoreError::MissingBlob { digest: b.clone() });
                }
            }
            let mut index = st.index.clone();
            let keys: Vec<String> = (record.blobs.iter().map(blob_key))
                .chain(record.chain_ids.iter().map(layer_key))
                .collect();
            let dropped = index.put(record);
            self.write_index(&index)?;
            st.index = index;
            for k in keys {
                st.fresh.remove(&k);
            }
            dropped
        };
        if !dropped.is_empty() {
            self.collect()?;
        }
        Ok(())
    }

    /// Removes the image `reference` names, with all its names (containerd's CRI removes the
    /// whole image whichever reference it is given), then collects what nothing uses any
    /// more. An absent image is not an error; an ambiguous short id is.
    pub async fn remove(&self, reference: &str) -> Result<()> {
        let store = self.clone();
        let reference = reference.to_string();
        self.blocking(move || store.remove_blocking(&reference))
            .await
    }

    fn remove_blocking(&self, reference: &str) -> Result<()> {
        {
            let mut st = self.state();
            let id = match st.index.resolve(reference) {
                Ok(Some(r)) => r.id.clone(),
                Ok(None) => return Ok(()),
                Err(record::Ambiguous) => return Err(StoreError::Ambiguous(reference.into())),
            };
            let mut index = st.index.clone();
            index.images.remove(&id);
            self.write_index(&index)?;
            st.index = index;
        }
        self.collect().map(drop)
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let path = self.inner.root.join("images.json");
        let bytes = serde_json::to_vec(index).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            source,
        })?;
        fsutil::write_atomic(&self.tmp(), &path, &bytes)
    }

    /// Deletes every blob and layer that no record, lease or pull in progress uses.
    /// Returns how many entries went.
    pub fn collect(&self) -> Result<usize> {
        let doomed = {
            let mut st = self.state();
            let now = Instant::now();
            st.fresh.retain(|_, t| now.duration_since(*t) < FRESH_FOR);
            let (mut blobs, mut layers) = st.index.used();
            for l in st.leases.values() {
                blobs.extend(l.blobs.iter().cloned());
                layers.extend(l.chain_ids.iter().cloned());
            }
            let keep = |key: String, used: bool| used || st.fresh.contains_key(&key);
            let mut doomed = Vec::new();
            for (dir, kind) in [("blobs/sha256", true), ("layers", false)] {
                let dir = self.inner.root.join(dir);
                for name in fsutil::names(&dir)? {
                    let digest = Digest::parse(&format!("sha256:{name}")).ok();
                    let kept = digest.is_some_and(|d| {
                        if kind {
                            keep(blob_key(&d), blobs.contains(&d))
                        } else {
                            keep(layer_key(&d), layers.contains(&d))
                        }
                    });
                    if !kept {
                        doomed.push(self.to_trash(&dir.join(&name))?);
                    }
                }
            }
            doomed
        };
        let n = doomed.len();
        for t in doomed {
            t.remove()?;
        }
        Ok(n)
    }

    /// Renames `path` into tmp/ (one atomic step: it is gone from its final name).
    fn to_trash(&self, path: &Path) -> Result<TempPath> {
        let trash = TempPath::new(&self.tmp(), "gc");
        std::fs::rename(path, trash.path()).map_err(io_err("moving to trash", path))?;
        Ok(trash)
    }

    /// Runs blocking filesystem work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(StoreError::Task)?
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .finish()
    }
}
