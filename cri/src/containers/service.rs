//! The container RPCs of the RuntimeService.
//!
//! ```text
//! CreateContainer   validate -> reserve the name -> pending record -> image root (lease +
//!                   overlay) -> OCI spec -> bundle -> monitor (capsa create, joins the pod)
//!                   -> record; any failure undoes what was done, a killed daemon's pending
//!                   record is swept at startup
//! StartContainer    "start" to the monitor -> started_at in the record
//! StopContainer     StopSignal (image's, else SIGTERM), `timeout` s for exit.json, SIGKILL
//! RemoveContainer   SIGKILL if running -> capsa delete -> monitor dir -> root and lease ->
//!                   files -> record -> name
//! ```
//! States are observed, never stored (see [`record`](super::record)).

use super::record::{self, ContainerRecord, Observed};
use super::spec::{self, RootfsAccounts, SandboxFacts, SpecInput, SystemHost};
use crate::daemon::Daemon;
use crate::monitor::{Monitor, MonitorHandle, MonitorSpec};
use crate::pods::{capsa_status, internal, now_ns};
use crate::store::Store;
use k8s_cri::v1::*;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Status;

/// The containers by id and their names, with the store they are saved in.
pub struct Containers {
    store: Store<ContainerRecord>,
    table: Mutex<Table>,
    /// Exits already observed: final, so not read from disk again (ListContainers and the
    /// stats calls look at every container).
    exits: Mutex<HashMap<String, Observed>>,
    /// Containers whose monitor is known to run: a task holds a pidfd of each and takes
    /// the id out when the monitor exits. Their state needs no look at the disk or /proc.
    watched: Arc<Mutex<HashSet<String>>>,
    unfinished: Mutex<Vec<ContainerRecord>>,
    /// Where a watch reports its container's exit (GetContainerEvents).
    events: crate::events::Queue,
}

#[derive(Default)]
struct Table {
    records: HashMap<String, ContainerRecord>,
    names: HashMap<String, String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn store_status(e: crate::store::StoreError) -> Status {
    Status::internal(crate::cni::error_chain(&e))
}

impl Containers {
    /// Opens `<state>/container-records` and reads back what a previous run kept.
    pub fn open(
        state_dir: &Path,
        events: crate::events::Queue,
    ) -> Result<Containers, crate::store::StoreError> {
        let store: Store<ContainerRecord> = Store::open(&state_dir.join("container-records"))?;
        let loaded = store.load_all()?;
        for e in &loaded.broken {
            log::error!(
                "skipping a container record: {}",
                crate::cni::error_chain(e)
            );
        }
        let mut table = Table::default();
        let mut unfinished = Vec::new();
        for (id, r) in loaded.records {
            if r.pending {
                unfinished.push(r);
                continue;
            }
            table.names.insert(r.name_key.clone(), id.clone());
            table.records.insert(id, r);
        }
        Ok(Containers {
            store,
            table: Mutex::new(table),
            exits: Mutex::new(HashMap::new()),
            watched: Arc::new(Mutex::new(HashSet::new())),
            unfinished: Mutex::new(unfinished),
            events,
        })
    }

    pub fn get(&self, id: &str) -> Option<ContainerRecord> {
        lock(&self.table).records.get(id).cloned()
    }

    pub fn all(&self) -> Vec<ContainerRecord> {
        lock(&self.table).records.values().cloned().collect()
    }

    fn reserve(&self, key: &str, id: &str) -> Result<(), Status> {
        let mut t = lock(&self.table);
        if let Some(owner) = t.names.get(key) {
            return Err(Status::already_exists(format!(
                "the container name {key:?} is already reserved for {owner}"
            )));
        }
        t.names.insert(key.into(), id.into());
        Ok(())
    }

    /// Watches the monitor of `r` (when it runs): its id is in `watched` until it exits.
    /// Needs a tokio runtime.
    pub fn watch(&self, r: &ContainerRecord) {
        let Ok(pidfd) = capsa::internal::pidfd_open(nix::unistd::Pid::from_raw(r.monitor_pid))
        else {
            return;
        };
        // Opened, the pidfd names that process for good: check it is still the monitor.
        if !record::monitor_alive(r) {
            return;
        }
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open (and its number
        // the same) until the AsyncFd is dropped.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        };
        let Ok(fd) = registered else {
            return;
        };
        lock(&self.watched).insert(r.id.clone());
        let watched = self.watched.clone();
        let (id, sandbox) = (r.id.clone(), r.sandbox_id.clone());
        let events = self.events.clone();
        tokio::spawn(async move {
            // A pidfd turns readable when its process exits.
            let _ = fd.readable().await;
            // Queued first: a Stop or Remove that waits for the exit queues after it.
            events.push(&id, &sandbox, ContainerEventType::ContainerStoppedEvent);
            lock(&watched).remove(&id);
        });
    }

    fn watching(&self, id: &str) -> bool {
        lock(&self.watched).contains(id)
    }

    fn release(&self, key: &str) {
        lock(&self.table).names.remove(key);
    }

    fn save_pending(&self, r: &ContainerRecord) -> Result<(), Status> {
        self.store.save(&r.id, r).map_err(store_status)
    }

    fn save(&self, r: ContainerRecord) -> Result<(), Status> {
        self.store.save(&r.id, &r).map_err(store_status)?;
        lock(&self.table).records.insert(r.id.clone(), r);
        Ok(())
    }

    fn forget(&self, r: &ContainerRecord) -> Result<(), Status> {
        self.store.remove(&r.id).map_err(store_status)?;
        let mut t = lock(&self.table);
        t.records.remove(&r.id);
        t.names.remove(&r.name_key);
        drop(t);
        lock(&self.exits).remove(&r.id);
        Ok(())
    }
}

/// The id prefix, sandbox id prefix and label filters ListContainers and
/// ListContainerStats share.
fn matches(r: &ContainerRecord, id: &str, sandbox: &str, labels: &HashMap<String, String>) -> bool {
    r.id.starts_with(id)
        && r.sandbox_id.starts_with(sandbox)
        && labels
            .iter()
            .all(|(k, v)| r.config.labels.get(k) == Some(v))
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!(
        "an error occurred when try to find container {id:?}: does not exist"
    ))
}

fn state_name(s: ContainerState) -> &'static str {
    s.as_str_name()
}

impl Daemon {
    /// The directory holding container `id`'s bundle, writable layer and volumes.
    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.config().state_dir.join("containers").join(id)
    }

    pub(crate) fn monitor_dir(&self, id: &str) -> PathBuf {
        record::monitor_dir(&self.runtime_dir().join("m"), id)
    }

    /// The container's state now (see [`record::observe`]).
    pub fn observe(&self, r: &ContainerRecord) -> Observed {
        if let Some(seen) = lock(&self.containers().exits).get(&r.id) {
            return seen.clone();
        }
        if self.containers().watching(&r.id) {
            return record::alive(r);
        }
        let seen = record::observe(r, &self.monitor_dir(&r.id), || {
            self.runtime()
                .load(&r.id)
                .ok()
                .and_then(|c| c.live_pid())
                .is_some()
        });
        if seen.state == ContainerState::ContainerExited {
            lock(&self.containers().exits).insert(r.id.clone(), seen.clone());
        }
        seen
    }

    fn container(&self, id: &str) -> Result<ContainerRecord, Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("container_id is required"));
        }
        self.containers().get(id).ok_or_else(|| not_found(id))
    }

    pub async fn create_container(
        &self,
        req: CreateContainerRequest,
    ) -> Result<CreateContainerResponse, Status> {
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
        if meta.name.is_empty() {
            return Err(Status::invalid_argument("config.metadata.name is required"));
        }
        let image_req = config.image.clone().unwrap_or_default().image;
        if image_req.is_empty() {
            return Err(Status::invalid_argument("config.image.image is required"));
        }
        let sandbox = self.sandbox(&req.pod_sandbox_id).ok_or_else(|| {
            Status::not_found(format!(
                "sandbox {:?} does not exist: cannot create container {:?} in it",
                req.pod_sandbox_id, meta.name
            ))
        })?;
        let infra_pid = match (self.is_ready(&sandbox), self.infra_pid(&sandbox.id)) {
            (true, Some(pid)) => pid,
            _ => {
                return Err(Status::failed_precondition(format!(
                    "sandbox {} is not ready: cannot create container {:?} in it",
                    sandbox.id, meta.name
                )))
            }
        };
        let image = self.images().lookup(&image_req).ok_or_else(|| {
            Status::not_found(format!(
                "config.image.image {image_req:?}: no such image; pull it first"
            ))
        })?;
        let sandbox_config = req
            .sandbox_config
            .clone()
            .unwrap_or_else(|| sandbox.config.clone());
        let key = record::name_key(&config, &sandbox.metadata());
        let id = crate::store::new_id().map_err(|e| internal("making a container id", e))?;
        self.containers().reserve(&key, &id)?;
        let log_path = match (
            sandbox.config.log_directory.as_str(),
            config.log_path.as_str(),
        ) {
            ("", _) | (_, "") => String::new(),
            (dir, file) => Path::new(dir).join(file).to_string_lossy().into_owned(),
        };
        let mut r = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name_key: key.clone(),
            config: config.clone(),
            image_id: image.id.to_string(),
            image_name: image.repo_tags.first().cloned().unwrap_or(image_req),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.to_string()),
            stop_signal: image.config.stop_signal.clone(),
            created_at: now_ns(),
            started_at: 0,
            log_path,
            monitor_pid: 0,
            monitor_start: 0,
            resources: config.linux.as_ref().and_then(|l| l.resources.clone()),
            pending: true,
        };
        if let Err(e) = self.containers().save_pending(&r) {
            self.containers().release(&key);
            return Err(e);
        }
        let made = self
            .make_container(&mut r, &config, &sandbox_config, &image, infra_pid)
            .await;
        if let Err(e) = made {
            log::warn!("CreateContainer {key}: {}", e.message());
            if let Err(undo) = self.tear_down(&r).await {
                log::error!(
                    "undoing the failed create of container {id}: {}",
                    undo.message()
                );
            }
            self.containers().release(&key);
            return Err(e);
        }
        r.pending = false;
        self.containers().watch(&r);
        let sandbox_id = r.sandbox_id.clone();
        self.containers().save(r)?;
        self.events()
            .push(&id, &sandbox_id, ContainerEventType::ContainerCreatedEvent);
        log::info!("container {id} ({key}) created");
        Ok(CreateContainerResponse { container_id: id })
    }

    /// The side effects of CreateContainer, in order; [`Daemon::tear_down`] undoes any
    /// prefix of them.
    async fn make_container(
        &self,
        r: &mut ContainerRecord,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
        image: &crate::images::store::ImageRecord,
        infra_pid: i32,
    ) -> Result<(), Status> {
        let dir = self.container_dir(&r.id);
        let root = self
            .images()
            .store()
            .prepare_rootfs(&r.id, image.id.as_str(), &dir)
            .await
            .map_err(|e| {
                Status::internal(format!(
                    "preparing the root filesystem of {}: {}",
                    r.id,
                    crate::cni::error_chain(&e)
                ))
            })?;
        let sandbox = self
            .sandbox(&r.sandbox_id)
            .ok_or_else(|| Status::not_found(format!("sandbox {} is gone", r.sandbox_id)))?;
        let files = self.sandbox_files(&sandbox.id);
        let pod = self
            .runtime()
            .load_pod(&sandbox.id)
            .map_err(|e| capsa_status("loading the pod", &e))?;
        let facts = SandboxFacts {
            id: sandbox.id.clone(),
            infra_pid,
            hostname: std::fs::read_to_string(files.join("hostname"))
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            hostname_path: files.join("hostname"),
            resolv_conf_path: files.join("resolv.conf"),
            hosts_path: files.join("hosts"),
            shm_path: sandbox.shm.clone(),
            cgroup: pod.state().cgroup_path.clone(),
        };
        let accounts = RootfsAccounts::open(&root.rootfs)
            .map_err(|e| internal("opening the container's root", e))?;
        let host = SystemHost {
            target_pid: |sandbox: &str, target: &str| self.target_pid(sandbox, target),
        };
        let volumes = dir.join("volumes");
        // The host directories behind the image's volumes, filled with what the image has
        // at those paths (owner and mode included), as containerd's and Docker's are; made
        // before the spec, whose binds must name existing sources.
        for (host_dir, dest) in spec::image_volumes(&image.config, config, &volumes) {
            std::fs::create_dir_all(&host_dir).map_err(|e| {
                internal(
                    &format!("creating the volume directory {}", host_dir.display()),
                    e,
                )
            })?;
            let (rootfs, dest_path, host) =
                (root.rootfs.clone(), PathBuf::from(&dest), host_dir.clone());
            tokio::task::spawn_blocking(move || {
                capsa::overlay::copy_into(&rootfs, &dest_path, &host)
            })
            .await
            .map_err(|e| internal("copying the image's volume", e))?
            .map_err(|e| {
                Status::internal(format!(
                    "copying the image's volume {dest}: {}",
                    crate::cni::error_chain(&e)
                ))
            })?;
        }
        let oci = spec::build_spec(&SpecInput {
            id: &r.id,
            config,
            sandbox_config,
            sandbox: &facts,
            image: &image.config,
            image_name: &r.image_name,
            rootfs: &root.rootfs,
            volumes_dir: Some(&volumes),
            host: &host,
            accounts: &accounts,
        })?;
        let bytes =
            serde_json::to_vec_pretty(&oci).map_err(|e| internal("serialising the OCI spec", e))?;
        capsa::internal::write_atomic(&dir.join("config.json"), &bytes, 0o600)
            .map_err(|e| internal("writing the bundle's config.json", e))?;
        let log_path = if r.log_path.is_empty() {
            PathBuf::from("/dev/null")
        } else {
            let p = PathBuf::from(&r.log_path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    internal(
                        &format!("creating the log directory {}", parent.display()),
                        e,
                    )
                })?;
            }
            p
        };
        let mspec = MonitorSpec {
            program: MonitorSpec::default_program(),
            dir: self.monitor_dir(&r.id),
            root: self.config().capsa_root(),
            id: r.id.clone(),
            bundle: dir,
            pod: Some(sandbox.id.clone()),
            log_path,
            tty: config.tty,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
        };
        let spawned = tokio::task::spawn_blocking(move || Monitor::spawn(&mspec))
            .await
            .map_err(|e| internal("starting the container's monitor", e))?;
        let handle = spawned.map_err(|e| {
            let message = crate::cni::error_chain(&e);
            match e.kind() {
                capsa::ErrorKind::InvalidInput | capsa::ErrorKind::NotFound => {
                    Status::invalid_argument(message)
                }
                capsa::ErrorKind::WrongState => Status::failed_precondition(message),
                _ => Status::internal(message),
            }
        })?;
        r.monitor_pid = handle.monitor_pid();
        r.monitor_start = record::process_start(r.monitor_pid).unwrap_or(0);
        Ok(())
    }

    /// The init pid of container `target` when it is a running container of `sandbox`.
    fn target_pid(&self, sandbox: &str, target: &str) -> Option<i32> {
        let r = self.containers().get(target)?;
        if r.sandbox_id != sandbox || self.observe(&r).state != ContainerState::ContainerRunning {
            return None;
        }
        self.runtime()
            .load(target)
            .ok()?
            .live_pid()
            .map(|p| p.as_raw())
    }

    /// Removes whatever exists of container `r` (each step tolerant of what is not there):
    /// its processes and capsa state, its monitor directory, its root and lease, its files,
    /// and its record. The name is the caller's to release.
    async fn tear_down(&self, r: &ContainerRecord) -> Result<(), Status> {
        let rt = self.runtime().clone();
        let id = r.id.clone();
        let removed = tokio::task::spawn_blocking(move || rt.remove(&id, true))
            .await
            .map_err(|e| internal("removing the container", e))?;
        removed.map_err(|e| capsa_status("removing the container", &e))?;
        // The monitor leaves once init is reaped; wait for it so its directory goes whole.
        self.wait_monitor_gone(r, Duration::from_secs(5)).await;
        let mdir = self.monitor_dir(&r.id);
        match std::fs::remove_dir_all(&mdir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal(&format!("removing {}", mdir.display()), e)),
        }
        self.images()
            .store()
            .remove_rootfs(&r.id)
            .await
            .map_err(|e| {
                internal(
                    "removing the container's root filesystem",
                    crate::cni::error_chain(&e),
                )
            })?;
        let dir = self.container_dir(&r.id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal(&format!("removing {}", dir.display()), e)),
        }
        self.containers().forget(r)?;
        self.cpu_samples.forget(&r.id);
        Ok(())
    }

    /// A daemon killed between the monitor's start and the record's save left a started
    /// container recorded as never started: its monitor knows the start time.
    async fn recover_start(&self, mut r: ContainerRecord) {
        if !record::monitor_alive(&r) {
            return;
        }
        let dir = self.monitor_dir(&r.id);
        let asked =
            tokio::task::spawn_blocking(move || MonitorHandle::connect(&dir)?.status()).await;
        if let Ok(Ok(status)) = asked {
            if status.started_ns > 0 {
                r.started_at = status.started_ns;
                log::info!("container {} was started before the daemon died", r.id);
                if let Err(e) = self.containers().save(r) {
                    log::error!("saving a recovered start: {}", e.message());
                }
            }
        }
    }

    async fn wait_monitor_gone(&self, r: &ContainerRecord, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while record::monitor_alive(r) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Removes the containers a killed daemon left half created, and watches the monitors
    /// of the others. Runs once, at startup.
    pub async fn sweep_unfinished_containers(&self) {
        for r in self.containers().all() {
            self.containers().watch(&r);
            if r.started_at == 0 {
                self.recover_start(r).await;
            }
        }
        let pending = std::mem::take(&mut *lock(&self.containers().unfinished));
        for r in pending {
            match self.tear_down(&r).await {
                Ok(()) => log::info!(
                    "container {} was left half created by a killed daemon: removed",
                    r.id
                ),
                Err(e) => log::error!(
                    "container {} was left half created by a killed daemon; removing it: {}",
                    r.id,
                    e.message()
                ),
            }
        }
    }

    pub async fn start_container(
        &self,
        req: StartContainerRequest,
    ) -> Result<StartContainerResponse, Status> {
        let mut r = self.container(&req.container_id)?;
        let _op = self.sandbox_lock(&r.id).await;
        let seen = self.observe(&r);
        if seen.state != ContainerState::ContainerCreated {
            return Err(Status::failed_precondition(format!(
                "container {} is in {} state: only a created container can start",
                r.id,
                state_name(seen.state)
            )));
        }
        let dir = self.monitor_dir(&r.id);
        let started = tokio::task::spawn_blocking(move || MonitorHandle::connect(&dir)?.start())
            .await
            .map_err(|e| internal("starting the container", e))?;
        r.started_at = started.map_err(|e| {
            Status::new(
                match e.kind() {
                    capsa::ErrorKind::WrongState => tonic::Code::FailedPrecondition,
                    _ => tonic::Code::Unknown,
                },
                format!(
                    "starting container {}: {}",
                    r.id,
                    crate::cni::error_chain(&e)
                ),
            )
        })?;
        let (id, sandbox_id) = (r.id.clone(), r.sandbox_id.clone());
        self.containers().save(r)?;
        self.events()
            .push(&id, &sandbox_id, ContainerEventType::ContainerStartedEvent);
        Ok(StartContainerResponse {})
    }

    pub async fn stop_container(
        &self,
        req: StopContainerRequest,
    ) -> Result<StopContainerResponse, Status> {
        let r = self.container(&req.container_id)?;
        let _op = self.sandbox_lock(&r.id).await;
        self.stop(&r, req.timeout).await?;
        Ok(StopContainerResponse {})
    }

    /// Stops container `r`: its StopSignal, up to `timeout` seconds for it to exit, then
    /// SIGKILL to every process of it. A container that is not running is left alone: an
    /// exited one, and (as containerd does) a created one, which can still start.
    async fn stop(&self, r: &ContainerRecord, timeout: i64) -> Result<(), Status> {
        let seen = self.observe(r);
        if seen.state != ContainerState::ContainerRunning {
            return Ok(());
        }
        if timeout > 0 {
            let name = if r.stop_signal.is_empty() {
                "SIGTERM"
            } else {
                r.stop_signal.as_str()
            };
            let signal = capsa::container::parse_signal(name).unwrap_or_else(|_| {
                log::warn!(
                    "container {}: image StopSignal {name:?} unknown: SIGTERM",
                    r.id
                );
                capsa::container::KillSignal::from(nix::sys::signal::Signal::SIGTERM)
            });
            self.kill(r, signal, false).await?;
            if self
                .wait_exited(r, Duration::from_secs(timeout as u64))
                .await
            {
                return Ok(());
            }
        }
        self.kill(r, capsa::container::KillSignal::KILL, true)
            .await?;
        if !self.wait_exited(r, Duration::from_secs(30)).await {
            return Err(Status::deadline_exceeded(format!(
                "container {} did not exit 30 s after SIGKILL",
                r.id
            )));
        }
        Ok(())
    }

    async fn kill(
        &self,
        r: &ContainerRecord,
        signal: capsa::container::KillSignal,
        all: bool,
    ) -> Result<(), Status> {
        let rt = self.runtime().clone();
        let id = r.id.clone();
        let sent = tokio::task::spawn_blocking(move || rt.load(&id)?.kill(signal, all))
            .await
            .map_err(|e| internal("signalling the container", e))?;
        match sent {
            Ok(()) => Ok(()),
            // Gone meanwhile: what stop wanted.
            Err(e)
                if matches!(
                    e.kind(),
                    capsa::ErrorKind::NotFound | capsa::ErrorKind::WrongState
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(capsa_status(&format!("signalling container {}", r.id), &e)),
        }
    }

    /// Waits up to `limit` for the container to be observed exited.
    async fn wait_exited(&self, r: &ContainerRecord, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.observe(r).state == ContainerState::ContainerExited {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn remove_container(
        &self,
        req: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse, Status> {
        let Some(r) = self.containers().get(&req.container_id) else {
            // kubelet repeats Remove: an absent container is removed.
            return Ok(RemoveContainerResponse {});
        };
        let _op = self.sandbox_lock(&r.id).await;
        self.remove(&r).await?;
        Ok(RemoveContainerResponse {})
    }

    async fn remove(&self, r: &ContainerRecord) -> Result<(), Status> {
        self.stop(r, 0).await?;
        // tear_down's capsa delete kills a created container's waiting init too.
        self.tear_down(r).await?;
        self.containers().release(&r.name_key);
        self.events().push(
            &r.id,
            &r.sandbox_id,
            ContainerEventType::ContainerDeletedEvent,
        );
        log::info!("container {} removed", r.id);
        Ok(())
    }

    /// Removes every container of sandbox `id` (RemovePodSandbox).
    pub(crate) async fn remove_sandbox_containers(&self, id: &str) -> Result<(), Status> {
        for r in self.containers().all() {
            if r.sandbox_id == id {
                let _op = self.sandbox_lock(&r.id).await;
                self.remove(&r).await?;
            }
        }
        Ok(())
    }

    pub async fn list_containers(
        &self,
        req: ListContainersRequest,
    ) -> Result<ListContainersResponse, Status> {
        let f = req.filter.unwrap_or_default();
        let mut containers: Vec<Container> = self
            .containers()
            .all()
            .into_iter()
            .filter(|r| matches(r, &f.id, &f.pod_sandbox_id, &f.label_selector))
            .filter_map(|r| {
                let seen = self.observe(&r);
                if let Some(want) = &f.state {
                    if want.state != seen.state as i32 {
                        return None;
                    }
                }
                Some(Container {
                    id: r.id.clone(),
                    pod_sandbox_id: r.sandbox_id.clone(),
                    metadata: r.config.metadata.clone(),
                    image: r.config.image.clone(),
                    image_ref: r.image_id.clone(),
                    state: seen.state as i32,
                    created_at: r.created_at,
                    labels: r.config.labels.clone(),
                    annotations: r.config.annotations.clone(),
                    image_id: r.image_id.clone(),
                })
            })
            .collect();
        containers.sort_by_key(|c| c.created_at);
        Ok(ListContainersResponse { containers })
    }

    pub async fn container_status(
        &self,
        req: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse, Status> {
        let r = self.container(&req.container_id)?;
        let seen = self.observe(&r);
        let mut info = HashMap::new();
        if req.verbose {
            let pid = self
                .runtime()
                .load(&r.id)
                .ok()
                .and_then(|c| c.live_pid())
                .map(|p| p.as_raw());
            let verbose = serde_json::json!({
                "sandboxID": r.sandbox_id,
                "pid": pid,
                "monitorPid": r.monitor_pid,
                "monitorDir": self.monitor_dir(&r.id),
                "bundle": self.container_dir(&r.id),
                "runtimeRoot": self.config().capsa_root(),
                "imageId": r.image_id,
                "config": r.config,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(ContainerStatusResponse {
            status: Some(ContainerStatus {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                state: seen.state as i32,
                created_at: r.created_at,
                started_at: seen.started_at,
                finished_at: seen.finished_at,
                exit_code: seen.exit_code,
                image: Some(ImageSpec {
                    image: r.image_name.clone(),
                    ..Default::default()
                }),
                image_ref: r.image_ref.clone(),
                reason: seen.reason,
                message: seen.message,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                mounts: r.config.mounts.clone(),
                log_path: r.log_path.clone(),
                resources: r.resources.clone().map(|linux| ContainerResources {
                    linux: Some(linux),
                    windows: None,
                }),
                image_id: r.image_id.clone(),
                user: None,
            }),
            info,
        })
    }

    pub async fn update_container_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse, Status> {
        let mut r = self.container(&req.container_id)?;
        let _op = self.sandbox_lock(&r.id).await;
        let seen = self.observe(&r);
        if !matches!(
            seen.state,
            ContainerState::ContainerCreated | ContainerState::ContainerRunning
        ) {
            return Err(Status::failed_precondition(format!(
                "container {} is in {} state: its resources cannot change",
                r.id,
                state_name(seen.state)
            )));
        }
        let Some(linux) = req.linux else {
            return Ok(UpdateContainerResourcesResponse {});
        };
        let oci = spec::linux_resources(Some(&linux)).map_err(|e| {
            Status::invalid_argument(
                crate::cni::error_chain(&e).replace("config.linux.resources", "linux"),
            )
        })?;
        let rt = self.runtime().clone();
        let id = r.id.clone();
        let updated = tokio::task::spawn_blocking(move || rt.load(&id)?.update(&oci))
            .await
            .map_err(|e| internal("updating the container's resources", e))?;
        updated.map_err(|e| capsa_status(&format!("updating the resources of {}", r.id), &e))?;
        r.resources = Some(linux);
        self.containers().save(r)?;
        Ok(UpdateContainerResourcesResponse {})
    }

    pub async fn reopen_container_log(
        &self,
        req: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse, Status> {
        let r = self.container(&req.container_id)?;
        let seen = self.observe(&r);
        if seen.state != ContainerState::ContainerRunning {
            return Err(Status::failed_precondition(format!(
                "container {} is in {} state: only a running container's log can be reopened",
                r.id,
                state_name(seen.state)
            )));
        }
        let dir = self.monitor_dir(&r.id);
        let done = tokio::task::spawn_blocking(move || MonitorHandle::connect(&dir)?.reopen_log())
            .await
            .map_err(|e| internal("reopening the log", e))?;
        done.map_err(|e| {
            Status::unknown(format!(
                "reopening the log of container {}: {}",
                r.id,
                crate::cni::error_chain(&e)
            ))
        })?;
        Ok(ReopenContainerLogResponse {})
    }

    pub async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
        use crate::exec::{self, ExecError, ExecRequest};
        let r = self.container(&req.container_id)?;
        let seen = self.observe(&r);
        if seen.state != ContainerState::ContainerRunning {
            return Err(Status::failed_precondition(format!(
                "container {} is in {} state: exec needs a running container",
                r.id,
                state_name(seen.state)
            )));
        }
        if req.timeout < 0 {
            return Err(Status::invalid_argument(format!(
                "timeout {}: must not be negative",
                req.timeout
            )));
        }
        let status = |e: ExecError| {
            let message = format!(
                "exec in container {}: {}",
                r.id,
                crate::cni::error_chain(&e)
            );
            match &e {
                ExecError::Timeout { .. } => Status::deadline_exceeded(message),
                ExecError::EmptyCommand => Status::invalid_argument(message),
                _ => match e.kind() {
                    capsa::ErrorKind::NotFound => Status::not_found(message),
                    capsa::ErrorKind::InvalidInput => Status::invalid_argument(message),
                    capsa::ErrorKind::WrongState => Status::failed_precondition(message),
                    _ => Status::unknown(message),
                },
            }
        };
        let root = self.config().capsa_root();
        let id = r.id.clone();
        let cmd = req.cmd.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            ExecRequest::for_container(root, &id, &cmd, false, false)
        })
        .await
        .map_err(|e| internal("preparing the exec", e))?;
        let ereq = prepared.map_err(status)?;
        // kubelet's 0 is "no timeout".
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
        let out = exec::exec_sync(&ereq, timeout, exec::DEFAULT_OUTPUT_CAP)
            .await
            .map_err(status)?;
        Ok(ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    pub async fn container_stats(
        &self,
        req: ContainerStatsRequest,
    ) -> Result<ContainerStatsResponse, Status> {
        let r = self.container(&req.container_id)?;
        Ok(ContainerStatsResponse {
            stats: Some(self.stats_of(&r).await),
        })
    }

    pub async fn list_container_stats(
        &self,
        req: ListContainerStatsRequest,
    ) -> Result<ListContainerStatsResponse, Status> {
        let f = req.filter.unwrap_or_default();
        let mut stats = Vec::new();
        for r in self.containers().all() {
            let wanted = matches(&r, &f.id, &f.pod_sandbox_id, &f.label_selector);
            if wanted && self.observe(&r).state != ContainerState::ContainerExited {
                stats.push(self.stats_of(&r).await);
            }
        }
        stats.sort_by(|a, b| {
            let id = |s: &ContainerStats| s.attributes.as_ref().map(|a| a.id.clone());
            id(a).cmp(&id(b))
        });
        Ok(ListContainerStatsResponse { stats })
    }

    /// The container's cgroup counters and its writable layer; what cannot be read (an
    /// exited container has no cgroup) is left out.
    async fn stats_of(&self, r: &ContainerRecord) -> ContainerStats {
        let now = now_ns();
        let cgroup = self
            .runtime()
            .load(&r.id)
            .ok()
            .and_then(|c| c.cgroup().ok())
            .and_then(|c| c.stats().ok());
        let (cpu, memory) = match cgroup {
            Some(st) => {
                let total = st.cpu.usage.total;
                (
                    Some(CpuUsage {
                        timestamp: now,
                        usage_core_nano_seconds: Some(UInt64Value { value: total }),
                        usage_nano_cores: self
                            .cpu_samples
                            .rate(&r.id, now, total)
                            .map(|value| UInt64Value { value }),
                    }),
                    Some(crate::stats::memory(&st, now)),
                )
            }
            None => (None, None),
        };
        let usage = self
            .images()
            .store()
            .rootfs_usage(&r.id)
            .await
            .ok()
            .flatten();
        let writable_layer = usage.map(|u| FilesystemUsage {
            timestamp: now,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self
                    .container_dir(&r.id)
                    .join("upper")
                    .to_string_lossy()
                    .into(),
            }),
            used_bytes: Some(UInt64Value { value: u.bytes }),
            inodes_used: Some(UInt64Value { value: u.inodes }),
        });
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
            }),
            cpu,
            memory,
            writable_layer,
            swap: None,
        }
    }
}
