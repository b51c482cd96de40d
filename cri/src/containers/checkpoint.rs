//! CheckpointContainer: kubelet's `/checkpoint` API (forensic container checkpointing).
//!
//! The container keeps running. The archive at the request's `location` is laid out as
//! containerd 1.7 and CRI-O lay theirs out, so that checkpointctl reads it:
//!
//! ```text
//! checkpoint/       CRIU's images (capsa's checkpoint, with --leave-running)
//! dump.log          CRIU's log of the dump
//! config.dump       id, name, image, runtime, created and checkpointed times (JSON)
//! spec.dump         the container's OCI config.json
//! status.dump       the container's CRI ContainerStatus (JSON)
//! rootfs-diff.tar   the writable layer, as an OCI layer (deletions as .wh. entries)
//! ```
//!
//! Everything is made in a directory of the container's own, archived to a temporary name
//! beside `location` and renamed into place: a failure, or a caller's timeout, leaves no
//! partial archive and no work files.

use super::record::ContainerRecord;
use crate::daemon::Daemon;
use crate::pods::internal;
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// What `config.dump` holds (checkpointctl's ContainerConfig).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigDump<'a> {
    id: &'a str,
    name: &'a str,
    rootfs_image: &'a str,
    rootfs_image_ref: &'a str,
    rootfs_image_name: &'a str,
    #[serde(rename = "runtime")]
    oci_runtime: &'static str,
    created_time: String,
    checkpointed_time: String,
}

/// Removes a directory on drop, whatever happened.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rfc3339(ns: i64) -> String {
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    capsa::internal::format_rfc3339(ns.div_euclid(1_000_000_000), Some(nanos))
}

/// The files of the archive, made in `scratch`, then archived to `location`.
struct Job {
    runtime: capsa::Runtime,
    id: String,
    upper: PathBuf,
    scratch: PathBuf,
    location: PathBuf,
    files: Vec<(&'static str, Vec<u8>)>,
    abandoned: Arc<AtomicBool>,
}

impl Job {
    fn run(self) -> Result<(), String> {
        let _scratch = Scratch(self.scratch.clone());
        std::fs::create_dir_all(&self.scratch)
            .map_err(|e| format!("creating {}: {e}", self.scratch.display()))?;
        let images = self.scratch.join("checkpoint");
        let work = self.scratch.join("criu");
        let container = self
            .runtime
            .load(&self.id)
            .map_err(|e| crate::cni::error_chain(&e))?;
        let mut opts = capsa::CheckpointOptions::new(&images);
        opts.work_path = Some(work.clone());
        opts.leave_running = true;
        opts.file_locks = true;
        container
            .checkpoint(&opts)
            .map_err(|e| crate::cni::error_chain(&e))?;
        let copy = |from: &Path, to: &str| {
            std::fs::copy(from, self.scratch.join(to))
                .map(drop)
                .map_err(|e| format!("copying {}: {e}", from.display()))
        };
        copy(&work.join("dump.log"), "dump.log")?;
        capsa::overlay::diff(&self.upper, &self.scratch.join("rootfs-diff.tar"))
            .map_err(|e| crate::cni::error_chain(&e))?;
        for (name, bytes) in &self.files {
            std::fs::write(self.scratch.join(name), bytes)
                .map_err(|e| format!("writing {name}: {e}"))?;
        }
        let _ = std::fs::remove_dir_all(&work);
        self.archive()
    }

    /// Archives the scratch directory to a temporary name beside `location`, then renames
    /// it into place unless the caller gave up meanwhile.
    fn archive(&self) -> Result<(), String> {
        let parent = self.location.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        let name = self
            .location
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| -> std::io::Result<()> {
            let file = std::fs::File::create(&tmp)?;
            let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
            tar.follow_symlinks(false);
            tar.append_dir_all(".", &self.scratch)?;
            let file = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
        })();
        let renamed = written.and_then(|()| {
            if self.abandoned.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("the caller's timeout passed"));
            }
            std::fs::rename(&tmp, &self.location)
        });
        renamed.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("writing the archive {}: {e}", self.location.display())
        })
    }
}

impl Daemon {
    pub async fn checkpoint_container(
        &self,
        req: CheckpointContainerRequest,
    ) -> Result<CheckpointContainerResponse, Status> {
        if req.container_id.is_empty() {
            return Err(Status::invalid_argument("container_id is required"));
        }
        let location = PathBuf::from(&req.location);
        if !location.is_absolute() || location.file_name().is_none() {
            return Err(Status::invalid_argument(format!(
                "location {:?}: an absolute path of the archive to write is required",
                req.location
            )));
        }
        let r = self.containers().get(&req.container_id).ok_or_else(|| {
            Status::not_found(format!("container {} does not exist", req.container_id))
        })?;
        let _op = self.sandbox_lock(&r.id).await;
        let seen = self.observe(&r);
        if seen.state != ContainerState::ContainerRunning {
            return Err(Status::failed_precondition(format!(
                "container {} is not running: only a running container can be checkpointed",
                r.id
            )));
        }
        let job = self.checkpoint_job(&r, location).await?;
        let abandoned = job.abandoned.clone();
        let work = tokio::task::spawn_blocking(move || job.run());
        let done = if req.timeout > 0 {
            match tokio::time::timeout(Duration::from_secs(req.timeout as u64), work).await {
                Ok(done) => done,
                Err(_) => {
                    // The dump runs on to its end (stopping CRIU half way could leave the
                    // container's processes seized); its archive is not kept.
                    abandoned.store(true, Ordering::SeqCst);
                    return Err(Status::deadline_exceeded(format!(
                        "checkpointing container {} took longer than {} s",
                        r.id, req.timeout
                    )));
                }
            }
        } else {
            work.await
        };
        done.map_err(|e| internal("checkpointing the container", e))?
            .map_err(|e| Status::internal(format!("checkpointing container {}: {e}", r.id)))?;
        log::info!("container {} checkpointed to {}", r.id, req.location);
        Ok(CheckpointContainerResponse {})
    }

    async fn checkpoint_job(&self, r: &ContainerRecord, location: PathBuf) -> Result<Job, Status> {
        let dir = self.container_dir(&r.id);
        let spec = std::fs::read(dir.join("config.json"))
            .map_err(|e| internal("reading the container's config.json", e))?;
        let status = self
            .container_status(ContainerStatusRequest {
                container_id: r.id.clone(),
                verbose: false,
            })
            .await?
            .status;
        let status = serde_json::to_vec_pretty(&status_json(status.as_ref()))
            .map_err(|e| internal("serialising the status", e))?;
        let config = ConfigDump {
            id: &r.id,
            name: r
                .config
                .metadata
                .as_ref()
                .map(|m| m.name.as_str())
                .unwrap_or_default(),
            rootfs_image: &r.image_id,
            rootfs_image_ref: &r.image_ref,
            rootfs_image_name: &r.image_name,
            oci_runtime: "capsa",
            created_time: rfc3339(r.created_at),
            checkpointed_time: rfc3339(crate::pods::now_ns()),
        };
        let config = serde_json::to_vec_pretty(&config)
            .map_err(|e| internal("serialising config.dump", e))?;
        Ok(Job {
            runtime: self.runtime().clone(),
            id: r.id.clone(),
            upper: dir.join("upper"),
            scratch: dir.join("checkpoint.tmp"),
            location,
            files: vec![
                ("config.dump", config),
                ("spec.dump", spec),
                ("status.dump", status),
            ],
            abandoned: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// The CRI ContainerStatus fields a reader of the archive needs, as JSON.
fn status_json(s: Option<&ContainerStatus>) -> serde_json::Value {
    let Some(s) = s else {
        return serde_json::Value::Null;
    };
    serde_json::json!({
        "id": s.id,
        "name": s.metadata.as_ref().map(|m| m.name.clone()),
        "attempt": s.metadata.as_ref().map(|m| m.attempt),
        "state": s.state().as_str_name(),
        "createdAt": s.created_at,
        "startedAt": s.started_at,
        "image": s.image.as_ref().map(|i| i.image.clone()),
        "imageRef": s.image_ref,
        "labels": s.labels,
        "annotations": s.annotations,
        "logPath": s.log_path,
    })
}
