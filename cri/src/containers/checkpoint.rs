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
//! Everything is made in a directory of the container's own, then archived to an unnamed
//! file beside `location` that is linked into place once complete: a failure, a caller's
//! timeout or a daemon killed half way leaves no partial archive and no work files (the
//! work directory is removed when done, and before the next checkpoint of the container).

use super::record::ContainerRecord;
use crate::daemon::Daemon;
use crate::pods::internal;
use k8s_cri::v1::*;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
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
        // Held until this job ends, even when its caller gave up waiting: the next
        // checkpoint of the container waits for none and shares no work directory.
        let lock = self.scratch.with_extension("lock");
        let _lock = crate::images::store::fsutil::lock_exclusive(&lock).map_err(|e| {
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                "an earlier checkpoint of this container is still being made".to_string()
            } else {
                format!("locking {}: {e}", lock.display())
            }
        })?;
        // What a daemon killed during an earlier checkpoint left.
        let _ = std::fs::remove_dir_all(&self.scratch);
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
        write_archive(&self.scratch, &self.location, &self.abandoned)
    }
}

/// The archive locations this process is writing (of any container): a second checkpoint
/// to the same location is refused while the first is under way.
static WRITING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// `location` in [`WRITING`] for as long as this lives.
struct Writing(PathBuf);

impl Writing {
    fn claim(location: &Path) -> Result<Writing, String> {
        let mut writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        if writing.iter().any(|l| l == location) {
            return Err(format!(
                "the archive {} is being written by another checkpoint",
                location.display()
            ));
        }
        writing.push(location.to_path_buf());
        Ok(Writing(location.to_path_buf()))
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        writing.retain(|l| *l != self.0);
    }
}

/// Removes the temporary names (`.NAME.PID.tmp`) of `name` in `parent` that a process no
/// longer running left (a daemon killed between linking and renaming), and this process's
/// own (nothing of this process writes to the location: see [`Writing`]). A live process's
/// is left alone: another daemon may be writing it.
fn remove_stale_temporaries(parent: &Path, name: &str) {
    let prefix = format!(".{name}.");
    for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Archives `dir` to `location`, mode 0600 (the archive holds the container's memory).
///
/// The archive is written to an unnamed file (O_TMPFILE) in `location`'s directory and only
/// linked in once complete and synced, unless `abandoned` is set by then: a failure, a
/// caller's timeout or a daemon killed while writing leaves no file at all. A `location`
/// that exists already is replaced through a temporary name and a rename; a crash between
/// those two calls leaves `.NAME.PID.tmp`, which the next archive written to `location`
/// removes. A file system without O_TMPFILE gets that temporary name for the whole write.
fn write_archive(dir: &Path, location: &Path, abandoned: &AtomicBool) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("writing the archive {}: {e}", location.display());
    let parent = location.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let _writing = Writing::claim(location)?;
    let name = location.file_name().unwrap_or_default().to_string_lossy();
    remove_stale_temporaries(parent, &name);
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = |file: std::fs::File| -> std::io::Result<()> {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        tar.follow_symlinks(false);
        tar.append_dir_all(".", dir)?;
        let file = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if abandoned.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the caller's timeout passed"));
        }
        Ok(())
    };
    let unnamed = std::fs::OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(parent);
    let file = match unnamed {
        Ok(file) => file,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
            let named = (|| {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                write(file)?;
                std::fs::rename(&tmp, location)
            })();
            return named.map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                fail(e)
            });
        }
        Err(e) => return Err(fail(e)),
    };
    let fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let link = |to: &Path| {
        nix::unistd::linkat(
            None,
            fd.as_path(),
            None,
            to,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(std::io::Error::from)
    };
    write(file.try_clone().map_err(fail)?).map_err(fail)?;
    match link(location) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            link(&tmp).map_err(fail)?;
            std::fs::rename(&tmp, location).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                fail(e)
            })
        }
        linked => linked.map_err(fail),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let dir = std::env::temp_dir()
                .join(format!("capsa-cri-archive-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("work")).unwrap();
            std::fs::create_dir_all(dir.join("out")).unwrap();
            // Big enough that the write takes a while for the watcher below.
            std::fs::write(dir.join("work/pages.img"), vec![7u8; 32 << 20]).unwrap();
            std::fs::write(dir.join("work/dump.log"), "done\n").unwrap();
            Dir(dir)
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.0.join("out"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn entries(archive: &Path) -> Vec<String> {
        let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
        let mut names: Vec<String> = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .filter(|n| n != "./")
            .collect();
        names.sort();
        names
    }

    /// While the archive is written, its directory shows no name at all (what a daemon
    /// killed at any point of the write leaves); then the complete archive, mode 0600.
    #[test]
    fn the_archive_has_no_name_until_it_is_complete() {
        let d = Dir::new("fresh");
        let location = d.0.join("out/ck.tar");
        let done = AtomicBool::new(false);
        let seen = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut seen = std::collections::BTreeSet::new();
                while !done.load(Ordering::SeqCst) {
                    for name in d.names() {
                        if location.exists() {
                            // Linked: it must be whole already.
                            assert_eq!(entries(&location).len(), 2);
                        }
                        seen.insert(name);
                    }
                }
                seen
            });
            write_archive(&d.0.join("work"), &location, &AtomicBool::new(false)).unwrap();
            done.store(true, Ordering::SeqCst);
            watcher.join().unwrap()
        });
        assert!(seen.iter().all(|n| n == "ck.tar"), "{seen:?}");
        assert_eq!(d.names(), ["ck.tar"]);
        assert_eq!(entries(&location), ["dump.log", "pages.img"]);
        let mode = std::fs::metadata(&location).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_existing_archive_is_replaced_and_nothing_else_is_left() {
        let d = Dir::new("replace");
        let location = d.0.join("out/ck.tar");
        std::fs::write(&location, "old").unwrap();
        write_archive(&d.0.join("work"), &location, &AtomicBool::new(false)).unwrap();
        assert_eq!(d.names(), ["ck.tar"]);
        assert_eq!(entries(&location), ["dump.log", "pages.img"]);
    }

    /// What a daemon killed between the link and the rename left, and what one of this
    /// process's pid left, go with the next archive to the location; a live process's stays.
    #[test]
    fn the_next_archive_removes_what_a_killed_daemon_left() {
        let d = Dir::new("stale");
        let location = d.0.join("out/ck.tar");
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let left = [
            format!(".ck.tar.{dead}.tmp"),
            format!(".ck.tar.{}.tmp", std::process::id()),
            ".ck.tar.1.tmp".to_string(),
            ".other.tar.999999999.tmp".to_string(),
        ];
        for f in &left {
            std::fs::write(d.0.join("out").join(f), "partial").unwrap();
        }
        std::fs::write(&location, "old").unwrap();
        write_archive(&d.0.join("work"), &location, &AtomicBool::new(false)).unwrap();
        assert_eq!(
            d.names(),
            [".ck.tar.1.tmp", ".other.tar.999999999.tmp", "ck.tar"]
        );
        assert_eq!(entries(&location), ["dump.log", "pages.img"]);
    }

    #[test]
    fn a_second_archive_to_the_same_location_is_refused_while_the_first_is_written() {
        let d = Dir::new("twice");
        let location = d.0.join("out/ck.tar");
        let first = Writing::claim(&location).unwrap();
        let err = write_archive(&d.0.join("work"), &location, &AtomicBool::new(false)).unwrap_err();
        assert!(err.contains("being written by another checkpoint"), "{err}");
        assert!(d.names().is_empty(), "{:?}", d.names());
        drop(first);
        write_archive(&d.0.join("work"), &location, &AtomicBool::new(false)).unwrap();
        assert_eq!(d.names(), ["ck.tar"]);
    }

    #[test]
    fn an_abandoned_archive_leaves_nothing() {
        let d = Dir::new("abandoned");
        let location = d.0.join("out/ck.tar");
        let err = write_archive(&d.0.join("work"), &location, &AtomicBool::new(true)).unwrap_err();
        assert!(err.contains("timeout"), "{err}");
        assert!(d.names().is_empty(), "{:?}", d.names());
    }
}
