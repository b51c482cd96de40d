//! The CRI ImageService on the store and the registry client.
//!
//! ```text
//! PullImage(ref, auth)
//!   Reference::parse                        busybox -> docker.io/library/busybox:latest
//!   Registry::resolve                       manifest (the host's platform of an index), config
//!   ingest index?, manifest, config         from the bytes resolve already verified
//!   ingest layers, PULL_PARALLEL at once    each streamed from the registry, verified on disk
//!   Store::unpack_layers                    once per chain id, in parallel
//!   Store::put_image                        the record: tags and digest references move to it
//!   -> image_ref = config digest = Image.id
//! ```
//!
//! Lookups (ImageStatus, ListImages' filter, RemoveImage) take what kubelet sends: an image
//! id (`sha256:<hex>`, or the hex alone or a prefix of it), or a reference in any form, which
//! is normalised first, as containerd's CRI resolves them.

use super::reference::Reference;
use super::registry::{Auth, Registry, RegistryError, Resolved};
use super::store::{Descriptor, Digest, FsUsage, ImageRecord, Store, StoreError};
use crate::cni::error_chain;
use crate::config::RegistryConfig;
use crate::daemon::Daemon;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::path::Path;
use tonic::Status;

/// Layers downloaded at once by one pull (containerd's `max_concurrent_downloads` is 3;
/// a local mirror or registry answers faster with a little more).
const PULL_PARALLEL: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The image store and the registry client of one daemon.
pub struct Images {
    store: Store,
    registry: Registry,
}

impl Images {
    /// Opens the store under `state_dir/images` (collecting what a killed daemon left).
    pub fn open(state_dir: &Path, registry: &RegistryConfig) -> Result<Images, ImagesError> {
        Ok(Images {
            store: Store::open(&state_dir.join("images"))?,
            registry: Registry::new(registry)?,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The image kubelet's `image` string names, if the store has it.
    pub fn lookup(&self, image: &str) -> Option<ImageRecord> {
        if let Some(r) = self.store.get(image) {
            return Some(r);
        }
        let normalized = Reference::parse(image).ok()?.to_string();
        self.store.get(&normalized)
    }

    /// Pulls `image` and records it; returns its id (the config digest).
    async fn pull(&self, image: &str, auth: Option<&AuthConfig>) -> Result<Digest, Status> {
        let reference = Reference::parse(image)
            .map_err(|e| Status::invalid_argument(format!("image {image:?}: {e}")))?;
        let auth = Auth::from_cri(auth)
            .map_err(|e| Status::invalid_argument(format!("pulling {reference}: {e}")))?;
        let resolved = self
            .registry
            .resolve(&reference, &auth)
            .await
            .map_err(|e| registry_status(&reference, &e))?;
        log::debug!(
            "pulling {reference}: resolved {} ({} layers)",
            resolved.manifest_digest,
            resolved.layers.len()
        );
        let failed = |e: StoreError| store_status(&format!("pulling {reference}"), &e);
        let id = parse_digest(&resolved.config_descriptor.digest).map_err(failed)?;

        // The small blobs resolve fetched and verified: kept so the image is whole on disk.
        let mut blobs = vec![id.clone()];
        let mut size = 0u64;
        for (digest, media_type, bytes) in small_blobs(&resolved) {
            let desc = Descriptor {
                digest: parse_digest(digest).map_err(failed)?,
                size: bytes.len() as u64,
                media_type: media_type.to_string(),
            };
            self.store.ingest(&desc, bytes).await.map_err(failed)?;
            size += desc.size;
            if desc.digest != id {
                blobs.push(desc.digest);
            }
        }

        let mut layers = Vec::with_capacity(resolved.layers.len());
        for l in &resolved.layers {
            let desc = Descriptor {
                digest: parse_digest(&l.descriptor.digest).map_err(failed)?,
                size: l.descriptor.size,
                media_type: l.descriptor.media_type.clone(),
            };
            size += desc.size;
            blobs.push(desc.digest.clone());
            layers.push((parse_digest(&l.diff_id).map_err(failed)?, desc));
        }
        self.fetch_layers(&reference, &resolved, &auth)
            .await
            .map_err(failed)?;
        log::debug!("pulling {reference}: layers fetched");
        let chain_ids = self.store.unpack_layers(&layers).await.map_err(failed)?;
        log::debug!("pulling {reference}: layers unpacked");

        let repo_digest = reference
            .with_digest(&resolved.digest)
            .map_err(|e| Status::internal(format!("pulling {reference}: {e}")))?;
        let record = ImageRecord {
            id: id.clone(),
            repo_tags: match reference.tag() {
                Some(_) if reference.digest().is_none() => vec![reference.to_string()],
                _ => Vec::new(),
            },
            repo_digests: vec![repo_digest.to_string()],
            size,
            config: resolved.config.config.clone(),
            chain_ids,
            blobs,
        };
        self.store.put_image(record).await.map_err(failed)?;
        log::info!("pulled {reference} as {id}");
        Ok(id)
    }

    /// Downloads every layer blob the store does not have, `PULL_PARALLEL` at once.
    async fn fetch_layers(
        &self,
        reference: &Reference,
        resolved: &Resolved,
        auth: &Auth,
    ) -> Result<(), StoreError> {
        use futures_util::stream::TryStreamExt;
        futures_util::stream::iter(resolved.layers.iter().map(Ok))
            .try_for_each_concurrent(PULL_PARALLEL, |layer| async move {
                let desc = Descriptor {
                    digest: parse_digest(&layer.descriptor.digest)?,
                    size: layer.descriptor.size,
                    media_type: layer.descriptor.media_type.clone(),
                };
                self.store
                    .ingest_with(&desc, || {
                        self.registry.fetch_blob(reference, &layer.descriptor, auth)
                    })
                    .await
                    .map(drop)
            })
            .await
    }
}

/// The index (when the reference named one), manifest and config, with their media types.
fn small_blobs(r: &Resolved) -> Vec<(&str, &str, &[u8])> {
    let mut out = Vec::with_capacity(3);
    if let Some(index) = &r.index {
        out.push((
            r.digest.as_str(),
            "application/vnd.oci.image.index.v1+json",
            &index[..],
        ));
    }
    out.push((
        r.manifest_digest.as_str(),
        r.manifest_media_type.as_str(),
        &r.manifest[..],
    ));
    out.push((
        r.config_descriptor.digest.as_str(),
        r.config_descriptor.media_type.as_str(),
        &r.config_bytes[..],
    ));
    out
}

fn parse_digest(d: &str) -> Result<Digest, StoreError> {
    Digest::parse(d).map_err(|e| StoreError::Fetch {
        digest: Digest::of(d.as_bytes()),
        source: Box::new(e),
    })
}

/// A registry failure as PullImage's answer, naming the reference.
fn registry_status(reference: &Reference, e: &RegistryError) -> Status {
    Status::new(e.code(), format!("pulling {reference}: {}", error_chain(e)))
}

/// A store failure as a gRPC status: a registry error found inside keeps its code; content
/// the registry got wrong is Unknown (containerd's answer), a full disk ResourceExhausted.
fn store_status(what: &str, e: &StoreError) -> Status {
    let message = format!("{what}: {}", error_chain(e));
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<RegistryError>() {
            return Status::new(r.code(), message);
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::ENOSPC) {
                return Status::resource_exhausted(message);
            }
        }
        cause = c.source();
    }
    match e {
        StoreError::Ambiguous(_) => Status::invalid_argument(message),
        StoreError::NotFound(_) => Status::not_found(message),
        StoreError::Io { .. } | StoreError::Locked { .. } | StoreError::Task(_) => {
            Status::internal(message)
        }
        _ => Status::unknown(message),
    }
}

/// A record as CRI's Image.
fn cri_image(r: &ImageRecord) -> Image {
    Image {
        id: r.id.to_string(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid: r.uid().map(|value| Int64Value { value }),
        username: r.username().to_string(),
        spec: Some(ImageSpec {
            image: r.id.to_string(),
            ..Default::default()
        }),
        pinned: false,
    }
}

fn fs_usage(u: &FsUsage, timestamp: i64) -> FilesystemUsage {
    FilesystemUsage {
        timestamp,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: u.mountpoint.to_string_lossy().into_owned(),
        }),
        used_bytes: Some(UInt64Value {
            value: u.usage.bytes,
        }),
        inodes_used: Some(UInt64Value {
            value: u.usage.inodes,
        }),
    }
}

fn image_name(spec: Option<&ImageSpec>, rpc: &str) -> Result<String, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(i) if !i.is_empty() => Ok(i.to_string()),
        _ => Err(Status::invalid_argument(format!(
            "{rpc}: image.image is empty"
        ))),
    }
}

impl Daemon {
    pub async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse, Status> {
        let image = image_name(req.image.as_ref(), "PullImage")?;
        let id = self.images().pull(&image, req.auth.as_ref()).await?;
        Ok(PullImageResponse {
            image_ref: id.to_string(),
        })
    }

    pub async fn image_status(
        &self,
        req: ImageStatusRequest,
    ) -> Result<ImageStatusResponse, Status> {
        let image = image_name(req.image.as_ref(), "ImageStatus")?;
        let Some(record) = self.images().lookup(&image) else {
            return Ok(ImageStatusResponse::default());
        };
        let mut info = HashMap::new();
        if req.verbose {
            let detail = serde_json::json!({
                "id": record.id.to_string(),
                "chainIDs": record.chain_ids.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "blobs": record.blobs.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "config": record.config,
                "layers": record.chain_ids.iter()
                    .map(|c| self.images().store().layer_path(c).to_string_lossy().into_owned())
                    .collect::<Vec<_>>(),
            });
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(ImageStatusResponse {
            image: Some(cri_image(&record)),
            info,
        })
    }

    pub async fn list_images(&self, req: ListImagesRequest) -> Result<ListImagesResponse, Status> {
        let wanted = req
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match wanted {
            Some(w) => self.images().lookup(&w).iter().map(cri_image).collect(),
            None => self.images().store().list().iter().map(cri_image).collect(),
        };
        Ok(ListImagesResponse { images })
    }

    pub async fn remove_image(
        &self,
        req: RemoveImageRequest,
    ) -> Result<RemoveImageResponse, Status> {
        let image = image_name(req.image.as_ref(), "RemoveImage")?;
        if let Some(record) = self.images().lookup(&image) {
            self.images()
                .store()
                .remove(record.id.as_str())
                .await
                .map_err(|e| store_status(&format!("removing image {image}"), &e))?;
            log::info!("removed image {} ({image})", record.id);
        }
        Ok(RemoveImageResponse {})
    }

    pub async fn image_fs_info(
        &self,
        _: ImageFsInfoRequest,
    ) -> Result<ImageFsInfoResponse, Status> {
        let info = self
            .images()
            .store()
            .fs_info()
            .await
            .map_err(|e| store_status("image filesystem usage", &e))?;
        let now = crate::pods::now_ns();
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![fs_usage(&info.images, now)],
            container_filesystems: vec![fs_usage(&info.containers, now)],
        })
    }
}
