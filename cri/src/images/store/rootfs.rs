//! Container leases and roots. A lease (`leases/<container>.json`) copies the chain ids and
//! blobs of the container's image, so removing the image later keeps what the container
//! runs on. A container root is overlay(lower = the image's layers top first, upper and work
//! under the container's directory), mounted at `<dir>/rootfs`.

use super::fsutil;
use super::{io_err, ChainId, Digest, Result, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub image: Digest,
    pub chain_ids: Vec<ChainId>,
    pub blobs: Vec<Digest>,
    /// The directory holding `upper`, `work` and `rootfs`, once a root was prepared.
    pub dir: Option<PathBuf>,
}

/// A prepared container root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// The merged view, mounted: the container's root.
    pub rootfs: PathBuf,
    /// The container's writable layer.
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl RootfsMount {
    fn under(dir: &Path) -> RootfsMount {
        RootfsMount {
            rootfs: dir.join("rootfs"),
            upper: dir.join("upper"),
            work: dir.join("work"),
        }
    }
}

/// Bytes (allocated) and inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Usage of one filesystem role, with the directory CRI reports as its mountpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub usage: Usage,
}

/// ImageFsInfo's two answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// Blobs, layers and records: the store directory.
    pub images: FsUsage,
    /// The containers' writable layers, summed; the mountpoint is the filesystem that holds
    /// them (the store's, while there are none).
    pub containers: FsUsage,
}

/// Container ids become file names: capsa's own rule for them ([A-Za-z0-9_+.-], not "."
/// or "..") keeps them inside `leases/`.
fn check_container_id(id: &str) -> Result<()> {
    capsa::container::validate_id(id).map_err(|_| StoreError::BadContainerId(id.into()))
}

pub fn load_leases(dir: &Path) -> Result<BTreeMap<String, Lease>> {
    let mut out = BTreeMap::new();
    for name in fsutil::names(dir)? {
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if check_container_id(id).is_err() {
            continue;
        }
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(io_err("reading", &path))?;
        let lease = serde_json::from_slice(&bytes)
            .map_err(|source| StoreError::Corrupt { path, source })?;
        out.insert(id.to_string(), lease);
    }
    Ok(out)
}

impl Store {
    fn lease_path(&self, container_id: &str) -> PathBuf {
        self.inner
            .root
            .join("leases")
            .join(format!("{container_id}.json"))
    }

    /// Keeps the layers and blobs of `image` (any reference form) for `container_id` until
    /// [`Store::release`], even if the image is removed. Persisted.
    pub async fn lease(&self, container_id: &str, image: &str) -> Result<()> {
        let (store, id, image) = (self.clone(), container_id.to_string(), image.to_string());
        self.blocking(move || store.lease_blocking(&id, &image, None).map(drop))
            .await
    }

    fn lease_blocking(&self, id: &str, image: &str, dir: Option<&Path>) -> Result<Lease> {
        check_container_id(id)?;
        let mut st = self.state();
        let record = match st.index.resolve(image) {
            Ok(Some(r)) => r.clone(),
            Ok(None) => return Err(StoreError::NotFound(image.into())),
            Err(_) => return Err(StoreError::Ambiguous(image.into())),
        };
        if let Some(held) = st.leases.get(id).filter(|l| l.image != record.id) {
            // Its root may be mounted on the other image's layers: they must stay.
            return Err(StoreError::Leased {
                id: id.into(),
                image: held.image.clone(),
            });
        }
        let dir = dir
            .map(Path::to_path_buf)
            .or_else(|| st.leases.get(id).and_then(|l| l.dir.clone()));
        let lease = Lease {
            image: record.id,
            chain_ids: record.chain_ids,
            blobs: record.blobs,
            dir,
        };
        let path = self.lease_path(id);
        let bytes = serde_json::to_vec(&lease).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            source,
        })?;
        fsutil::write_atomic(&self.tmp(), &path, &bytes)?;
        st.leases.insert(id.to_string(), lease.clone());
        Ok(lease)
    }

    /// Drops `container_id`'s lease: its root is unmounted and its directories (upper, work,
    /// rootfs) removed first if one was prepared, then what nothing else uses is collected.
    /// Releasing an unknown container is not an error.
    pub async fn release(&self, container_id: &str) -> Result<()> {
        let (store, id) = (self.clone(), container_id.to_string());
        self.blocking(move || store.release_blocking(&id)).await
    }

    fn release_blocking(&self, id: &str) -> Result<()> {
        check_container_id(id)?;
        let lease = self.state().leases.get(id).cloned();
        let Some(lease) = lease else { return Ok(()) };
        if let Some(dir) = &lease.dir {
            remove_root(id, dir)?;
        }
        let path = self.lease_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &path)(e)),
        }
        self.state().leases.remove(id);
        self.collect().map(drop)
    }

    /// Makes `container_id`'s root from `image` (any reference form): leases the image,
    /// creates `<dir>/upper`, `<dir>/work` and `<dir>/rootfs`, and mounts the overlay at
    /// `<dir>/rootfs`. Called again for a root already mounted (a restarted daemon), it
    /// mounts nothing more. On error nothing is left: no mount, no directory, no lease.
    pub async fn prepare_rootfs(
        &self,
        container_id: &str,
        image: &str,
        dir: &Path,
    ) -> Result<RootfsMount> {
        let (store, id, image) = (self.clone(), container_id.to_string(), image.to_string());
        let dir = dir.to_path_buf();
        self.blocking(move || store.prepare_blocking(&id, &image, &dir))
            .await
    }

    fn prepare_blocking(&self, id: &str, image: &str, dir: &Path) -> Result<RootfsMount> {
        let had_lease = self.state().leases.contains_key(id);
        // The lease names the directory before anything exists in it: a crash from here on
        // leaves something release() knows how to remove.
        let lease = self.lease_blocking(id, image, Some(dir))?;
        let made = self.mount_root(id, &lease, dir);
        // Undo only what this call made: a root prepared before holds the container's
        // writes, which a failed re-mount must not destroy.
        if made.is_err() && !had_lease {
            let _ = self.release_blocking(id);
        }
        made
    }

    fn mount_root(&self, id: &str, lease: &Lease, dir: &Path) -> Result<RootfsMount> {
        if lease.chain_ids.is_empty() {
            return Err(StoreError::NoLayers(lease.image.clone()));
        }
        let m = RootfsMount::under(dir);
        for d in [dir, &m.upper, &m.work, &m.rootfs] {
            std::fs::create_dir_all(d).map_err(io_err("creating", d))?;
        }
        if is_mounted(&m.rootfs, dir)? {
            return Ok(m);
        }
        let mut lower = Vec::with_capacity(lease.chain_ids.len());
        for c in lease.chain_ids.iter().rev() {
            let p = self.layer_path(c);
            if !p.is_dir() {
                return Err(StoreError::MissingLayer {
                    image: lease.image.clone(),
                    chain_id: c.clone(),
                });
            }
            lower.push(p);
        }
        let upper = capsa::overlay::Upper::new(&m.upper, &m.work);
        capsa::overlay::mount(&lower, Some(upper), &m.rootfs).map_err(|source| {
            StoreError::Rootfs {
                id: id.into(),
                dir: dir.to_path_buf(),
                source: Box::new(source),
            }
        })?;
        Ok(m)
    }

    /// The same as [`Store::release`], named for the container side: unmounts and removes
    /// the root, then drops the lease.
    pub async fn remove_rootfs(&self, container_id: &str) -> Result<()> {
        self.release(container_id).await
    }

    /// Disk used by `container_id`'s writable layer (None without a prepared root).
    pub async fn rootfs_usage(&self, container_id: &str) -> Result<Option<Usage>> {
        let dir = self
            .state()
            .leases
            .get(container_id)
            .and_then(|l| l.dir.clone());
        let Some(dir) = dir else { return Ok(None) };
        self.blocking(move || usage(&dir.join("upper")).map(Some))
            .await
    }

    /// Bytes and inodes used by the store and, separately, by the containers' writable
    /// layers, each with its mountpoint (CRI ImageFsInfo).
    pub async fn fs_info(&self) -> Result<FsInfo> {
        let store = self.clone();
        self.blocking(move || store.fs_info_blocking()).await
    }

    fn fs_info_blocking(&self) -> Result<FsInfo> {
        let root = self.inner.root.clone();
        let dirs: Vec<PathBuf> = (self.state().leases.values())
            .filter_map(|l| l.dir.clone())
            .collect();
        let mut containers = Usage::default();
        for d in &dirs {
            let u = usage(&d.join("upper"))?;
            containers.bytes += u.bytes;
            containers.inodes += u.inodes;
        }
        let on = dirs.iter().find(|d| d.exists()).unwrap_or(&root);
        Ok(FsInfo {
            images: FsUsage {
                mountpoint: root.clone(),
                usage: usage(&root)?,
            },
            containers: FsUsage {
                mountpoint: fsutil::mountpoint_of(on)?,
                usage: containers,
            },
        })
    }
}

fn usage(path: &Path) -> Result<Usage> {
    fsutil::disk_usage(path).map(|(bytes, inodes)| Usage { bytes, inodes })
}

/// Whether something is mounted on `target` (its device differs from its parent's).
fn is_mounted(target: &Path, parent: &Path) -> Result<bool> {
    let t = target.metadata().map_err(io_err("inspecting", target))?;
    let p = parent.metadata().map_err(io_err("inspecting", parent))?;
    Ok(t.dev() != p.dev())
}

/// Unmounts `<dir>/rootfs` if mounted and removes the three directories (not `dir` itself,
/// which belongs to the caller).
fn remove_root(id: &str, dir: &Path) -> Result<()> {
    let m = RootfsMount::under(dir);
    if m.rootfs.is_dir() && is_mounted(&m.rootfs, dir)? {
        capsa::overlay::unmount(&m.rootfs).map_err(|source| StoreError::Rootfs {
            id: id.into(),
            dir: dir.to_path_buf(),
            source: Box::new(source),
        })?;
    }
    for d in [&m.rootfs, &m.upper, &m.work] {
        match std::fs::remove_dir_all(d) {
            Ok(()) => {}
            // Never made (or `dir` was never a directory): nothing to remove.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(e) => return Err(io_err("removing", d)(e)),
        }
    }
    Ok(())
}
