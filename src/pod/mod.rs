//! Pods: an infra process holding shared namespaces, and containers that join them
//! (docs/design.md, "Pods").
//!
//! ```text
//! <root>/.pods/<id>/pod.json        the pod: infra pid (+ start time), shared namespaces, cgroup
//! cgroup <parent>/<id>/infra        the infra process (capsa-pause)
//! cgroup <parent>/<id>/<container>  each container of the pod
//! ```
//! A container joins with [`CreateOptions::pod`](crate::CreateOptions): its namespaces of the
//! shared kinds become `/proc/<infra>/ns/<kind>` paths, and it records the pod in its state,
//! so the pod's container list is derived from the containers' own state, never stored twice.

mod infra;

use crate::cgroups::{self, Manager};
use crate::container::{self, Runtime, Status};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::container::state::PODS_DIR;
const POD_FILE: &str = "pod.json";
/// Where pod cgroups go when no parent is given (an absolute default, as for containers:
/// never below the caller's own cgroup).
pub const DEFAULT_CGROUP_PARENT: &str = "/capsa-pods";
/// The infra process's leaf cgroup inside the pod's (v2 allows processes only in leaves).
pub(crate) const INFRA_CGROUP: &str = "infra";

/// A failure of a pod operation.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// A pod of that id exists already.
    #[error("pod {id} already exists")]
    Exists {
        /// The pod's id.
        id: String,
    },
    /// No pod of that id.
    #[error("pod {id} does not exist")]
    NotExist {
        /// The pod's id.
        id: String,
    },
    /// The pod's infra process is gone.
    #[error("pod {id} is not running (its infra process has exited)")]
    NotRunning {
        /// The pod's id.
        id: String,
    },
    /// Removal, without force, of a pod that still has containers.
    #[error("pod {id} has {count} container(s) not stopped ({ids}): stop them or use --force")]
    HasContainers {
        /// The pod's id.
        id: String,
        /// How many containers are not stopped.
        count: usize,
        /// Their ids, comma-separated.
        ids: String,
    },
    /// A namespace name that a pod cannot share.
    #[error("--share {0:?}: a pod shares only net, ipc, uts and pid")]
    BadShare(String),
    /// An id kept for the infra process.
    #[error("container id {id:?} is reserved inside a pod (the infra process's cgroup)")]
    ReservedId {
        /// The container id asked for.
        id: String,
    },
    /// The pause program is not there.
    #[error("pause program {}: build capsa-pause next to capsa, or name it explicitly", path.display())]
    PauseMissing {
        /// Where the pause program was looked for.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the pod's state failed.
    #[error("pod state {}", path.display())]
    State {
        /// The pod's state file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The pod's state does not parse.
    #[error("pod state {} is corrupt", path.display())]
    CorruptState {
        /// The pod's state file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: serde_json::Error,
    },
    /// Making the infra process failed.
    #[error("starting the infra process of pod {id}")]
    Infra {
        /// The pod's id.
        id: String,
        /// The setup error.
        #[source]
        source: Box<crate::Error>,
    },
    /// A sysctl that is not namespaced or not in a shared namespace.
    #[error("sysctl {key}: {reason}")]
    BadSysctl {
        /// The sysctl name.
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// Setting a sysctl failed.
    #[error("setting sysctl {key}={value:?} in the pod's namespaces")]
    Sysctl {
        /// The sysctl name.
        key: String,
        /// The value written.
        value: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Bringing up the pod's loopback failed.
    #[error("bringing up lo in the pod's network namespace")]
    Loopback(#[source] std::io::Error),
    /// Setting up the infra process's stdio failed.
    #[error("pointing the infra process's stdio at /dev/null")]
    Stdio(#[source] std::io::Error),
    /// Stopping the infra process failed.
    #[error("stopping the infra process {pid} of pod {id}")]
    Stop {
        /// The pod's id.
        id: String,
        /// The infra process's pid.
        pid: i32,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}

/// What `create_pod` needs beyond an id: built with [`PodOptions::new`] and the chainable
/// setters of the same names as the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PodOptions {
    /// The namespaces the pod's containers share: a subset of net, ipc, uts, pid.
    pub share: Vec<LinuxNamespaceType>,
    /// The pod's cgroup is `<parent>/<id>`.
    pub cgroup_parent: PathBuf,
    /// The pod's hostname when it shares uts (default: the pod id).
    pub hostname: Option<String>,
    /// The pause program (default: `capsa-pause` next to the running executable).
    pub pause_binary: Option<PathBuf>,
    /// Namespaced sysctls the infra process sets in the pod's shared namespaces before the
    /// first container joins (`net.*` needs a shared net namespace, the IPC ones ipc).
    pub sysctls: std::collections::BTreeMap<String, String>,
}

impl PodOptions {
    /// Shares net, ipc and uts; cgroup under [`DEFAULT_CGROUP_PARENT`]; the pod id as
    /// hostname; `capsa-pause` next to the running executable; no sysctls.
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Sets [`PodOptions::share`].
        share: Vec<LinuxNamespaceType>;
        /// Sets [`PodOptions::cgroup_parent`].
        cgroup_parent: PathBuf;
        /// Sets [`PodOptions::hostname`].
        hostname: String => Some;
        /// Sets [`PodOptions::pause_binary`].
        pause_binary: PathBuf => Some;
    }

    /// Adds one sysctl to [`PodOptions::sysctls`].
    pub fn sysctl(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.sysctls.insert(key.into(), value.into());
        self
    }
}

impl Default for PodOptions {
    fn default() -> Self {
        PodOptions {
            share: vec![
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
            ],
            cgroup_parent: PathBuf::from(DEFAULT_CGROUP_PARENT),
            hostname: None,
            pause_binary: None,
            sysctls: Default::default(),
        }
    }
}

/// Parses a `--share` name.
pub fn parse_share(name: &str) -> Result<LinuxNamespaceType, PodError> {
    match name {
        "net" | "network" => Ok(LinuxNamespaceType::Network),
        "ipc" => Ok(LinuxNamespaceType::Ipc),
        "uts" => Ok(LinuxNamespaceType::Uts),
        "pid" => Ok(LinuxNamespaceType::Pid),
        other => Err(PodError::BadShare(other.to_string())),
    }
}

/// The /proc/<pid>/ns/ name of a namespace kind.
fn ns_file(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
    }
}

/// What the pod's state file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    /// The pod's id.
    pub id: String,
    /// The infra process's pid.
    pub pid: i32,
    /// Its start time (field 22 of `/proc/<pid>/stat`), to tell a reused pid apart.
    pub pid_start_time: u64,
    /// Shared namespace kinds, as `/proc/<pid>/ns` names (net, ipc, uts, pid).
    pub shares: Vec<String>,
    /// The pod's cgroup; its containers' are below it.
    pub cgroup_path: PathBuf,
    /// The hostname, when the pod shares uts.
    pub hostname: Option<String>,
    /// When it was created (RFC 3339).
    pub created: String,
}

/// A pod as loaded from its state directory.
#[derive(Debug, Clone)]
pub struct Pod {
    dir: PathBuf,
    state: PodState,
}

impl Pod {
    /// The pod's id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// The state as stored.
    pub fn state(&self) -> &PodState {
        &self.state
    }

    /// The infra process, when it is still the one this pod started.
    pub fn live_pid(&self) -> Option<Pid> {
        let alive = container::live_start_time(self.state.pid) == Some(self.state.pid_start_time);
        alive.then(|| Pid::from_raw(self.state.pid))
    }

    /// Whether the pod shares this namespace with its containers.
    pub fn shares(&self, t: LinuxNamespaceType) -> bool {
        self.state.shares.iter().any(|s| s == ns_file(t))
    }

    /// The cgroup of a container of this pod.
    pub fn container_cgroup(&self, id: &str) -> PathBuf {
        self.state.cgroup_path.join(id)
    }

    /// Rewrites a container's spec to join this pod: every shared kind becomes a path to the
    /// infra's namespace, the hostname is the pod's, and the cgroup (unless the bundle names
    /// one) is a child of the pod's.
    pub fn adopt(&self, id: &str, spec: &mut Spec) -> Result<(), PodError> {
        if id == INFRA_CGROUP {
            return Err(PodError::ReservedId { id: id.into() });
        }
        let pid = self.live_pid().ok_or_else(|| PodError::NotRunning {
            id: self.id().into(),
        })?;
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        for kind in [
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Pid,
        ] {
            if !self.shares(kind) {
                continue;
            }
            namespaces.retain(|n| n.typ() != kind);
            let path = PathBuf::from(format!("/proc/{pid}/ns/{}", ns_file(kind)));
            let mut ns = LinuxNamespace::default();
            ns.set_typ(kind);
            ns.set_path(Some(path));
            namespaces.push(ns);
        }
        linux.set_namespaces(Some(namespaces));
        if linux.cgroups_path().is_none() {
            linux.set_cgroups_path(Some(self.container_cgroup(id)));
        }
        spec.set_linux(Some(linux));
        if self.shares(LinuxNamespaceType::Uts) {
            // The pod owns the hostname; a container setting its own would rename the pod.
            spec.set_hostname(None);
            spec.set_domainname(None);
        }
        Ok(())
    }

    fn infra_cgroup(&self) -> Result<Manager, cgroups::CgroupError> {
        Manager::new(&self.state.cgroup_path.join(INFRA_CGROUP))
    }
}

impl Runtime {
    fn pods_dir(&self) -> PathBuf {
        self.root().join(PODS_DIR)
    }

    fn pod_dir(&self, id: &str) -> Result<PathBuf, crate::Error> {
        container::validate_id(id)?;
        Ok(self.pods_dir().join(id))
    }

    /// Creates pod `id`: its cgroup and its infra process, which holds the new shared
    /// namespaces. On any failure nothing is left (process, cgroup or state).
    ///
    /// Safe from a multithreaded caller: the clone then happens in a single-threaded child
    /// (see `process::isolate`).
    pub fn create_pod(&self, id: &str, opts: &PodOptions) -> crate::Result<Pod> {
        crate::kernel::check()?;
        self.pod_dir(id)?;
        check_sysctls(opts)?;
        crate::process::isolate::single_threaded(|| self.create_pod_here(id, opts).map(|_| ()))?;
        self.load_pod(id)
    }

    fn create_pod_here(&self, id: &str, opts: &PodOptions) -> crate::Result<Pod> {
        let dir = self.pod_dir(id)?;
        std::fs::create_dir_all(self.pods_dir()).map_err(|source| PodError::State {
            path: self.pods_dir(),
            source,
        })?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(PodError::Exists { id: id.into() }.into())
            }
            Err(source) => return Err(PodError::State { path: dir, source }.into()),
        }
        let mut dir_guard = container::DirGuard::new(dir.clone());
        let _lock = container::DirLock::acquire(&dir)?;
        let pause = match &opts.pause_binary {
            Some(p) => p.clone(),
            None => default_pause_binary(),
        };
        std::fs::metadata(&pause).map_err(|source| PodError::PauseMissing {
            path: pause.clone(),
            source,
        })?;
        let cgroup_path = opts.cgroup_parent.join(id);
        let infra_cgroup = Manager::new(&cgroup_path.join(INFRA_CGROUP))?;
        infra_cgroup.create()?;
        let mut cgroup_guard =
            container::CgroupGuard::new(vec![infra_cgroup.clone(), Manager::new(&cgroup_path)?]);
        let hostname = opts
            .share
            .contains(&LinuxNamespaceType::Uts)
            .then(|| opts.hostname.clone().unwrap_or_else(|| id.to_string()));
        let infra = infra::spawn(&infra::InfraConfig {
            pause: &pause,
            share: &opts.share,
            cgroup: &infra_cgroup,
            hostname: hostname.as_deref(),
            sysctls: &opts.sysctls,
        })
        .map_err(|e| PodError::Infra {
            id: id.into(),
            source: Box::new(e),
        })?;
        let pid = infra.pid();
        let state = PodState {
            id: id.into(),
            pid: pid.as_raw(),
            pid_start_time: container::live_start_time(pid.as_raw()).unwrap_or(0),
            shares: opts.share.iter().map(|t| ns_file(*t).to_string()).collect(),
            cgroup_path,
            hostname,
            created: crate::time::now_rfc3339_nanos(),
        };
        save(&dir, &state)?;
        infra.disarm();
        cgroup_guard.disarm();
        dir_guard.disarm();
        Ok(Pod { dir, state })
    }

    /// Loads pod `id`; "pod ID does not exist" when there is none.
    pub fn load_pod(&self, id: &str) -> crate::Result<Pod> {
        let dir = self.pod_dir(id)?;
        let path = dir.join(POD_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PodError::NotExist { id: id.into() }.into())
            }
            Err(source) => return Err(PodError::State { path, source }.into()),
        };
        let state = serde_json::from_slice(&bytes)
            .map_err(|source| PodError::CorruptState { path, source })?;
        Ok(Pod { dir, state })
    }

    /// As `load_pod`; a pod directory without its record yet is a create under way, which
    /// holds the directory's lock until the record is written (or the directory is gone):
    /// that is waited for, and the pod looked at again.
    fn load_pod_once_created(&self, id: &str) -> crate::Result<Pod> {
        match self.load_pod(id) {
            Err(crate::Error::Pod(PodError::NotExist { .. })) => {
                let dir = self.pod_dir(id)?;
                // Gone meanwhile (a failed create removed it): then it does not exist.
                drop(container::DirLock::acquire(&dir));
                self.load_pod(id)
            }
            other => other,
        }
    }

    /// Every pod under the root, sorted by id.
    pub fn list_pods(&self) -> crate::Result<Vec<Pod>> {
        let names = container::entry_names(&self.pods_dir()).map_err(|source| PodError::State {
            path: self.pods_dir(),
            source,
        })?;
        Ok(names.iter().filter_map(|n| self.load_pod(n).ok()).collect())
    }

    /// The ids of the containers that joined pod `id`.
    pub fn pod_containers(&self, id: &str) -> crate::Result<Vec<container::Container>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|c| c.stored().pod.as_deref() == Some(id))
            .collect())
    }

    /// Removes pod `id`: its containers first (only stopped ones unless `force`), then the
    /// infra process (SIGTERM, SIGKILL after 5 s), its cgroups and its state.
    ///
    /// A pod whose create is still under way (another process, such as the helper of a
    /// caller that was killed meanwhile) is waited for, then removed: it is not reported as
    /// absent only to appear a moment later.
    pub fn remove_pod(&self, id: &str, force: bool) -> crate::Result<()> {
        let pod = self.load_pod_once_created(id)?;
        let _lock = container::DirLock::acquire(&pod.dir)?;
        let containers = self.pod_containers(id)?;
        if !force {
            let busy: Vec<&str> = containers
                .iter()
                .filter(|c| c.status() != Status::Stopped)
                .map(|c| c.id())
                .collect();
            if !busy.is_empty() {
                return Err(PodError::HasContainers {
                    id: id.into(),
                    count: busy.len(),
                    ids: busy.join(", "),
                }
                .into());
            }
        }
        for c in &containers {
            c.delete(true)?;
        }
        if let Some(pid) = pod.live_pid() {
            stop_infra(id, pid)?;
        }
        pod.infra_cgroup()?.remove()?;
        let cgroup = Manager::new(&pod.state.cgroup_path)?;
        cgroup.remove()?;
        let default_parent = Path::new(DEFAULT_CGROUP_PARENT);
        if pod.state.cgroup_path.parent() == Some(default_parent) {
            cgroup.at(default_parent).remove_if_unused();
        }
        std::fs::remove_dir_all(&pod.dir).map_err(|source| PodError::State {
            path: pod.dir.clone(),
            source,
        })?;
        // The pods directory goes with the last pod (another pod keeps it: ENOTEMPTY).
        let _ = std::fs::remove_dir(self.pods_dir());
        Ok(())
    }
}

/// Each sysctl must name a file under /proc/sys and belong to a namespace the pod shares:
/// anything else would be set on the host.
fn check_sysctls(opts: &PodOptions) -> Result<(), PodError> {
    for key in opts.sysctls.keys() {
        let bad = |reason: String| PodError::BadSysctl {
            key: key.clone(),
            reason,
        };
        if !crate::spec::sysctl_name_ok(key) {
            return Err(bad("not a valid sysctl name".into()));
        }
        match crate::spec::sysctl_namespace(key) {
            Some(LinuxNamespaceType::Uts) => {
                return Err(bad("the pod's hostname is set with its own option".into()))
            }
            Some(t) if opts.share.contains(&t) => {}
            Some(t) => {
                return Err(bad(format!(
                    "belongs to the {} namespace, which this pod does not share (it would be set on the host)",
                    ns_file(t)
                )))
            }
            None => {
                return Err(bad(
                    "not a namespaced sysctl (it would be set on the host)".into(),
                ))
            }
        }
    }
    Ok(())
}

/// SIGTERM (the pause program exits 0), then SIGKILL if it is still there after 5 s.
fn stop_infra(id: &str, pid: Pid) -> Result<(), PodError> {
    let err = |source: std::io::Error| PodError::Stop {
        id: id.into(),
        pid: pid.as_raw(),
        source,
    };
    let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    if !crate::sys::pidfd::wait_exited(pid, Some(Duration::from_secs(5))).map_err(err)? {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        crate::sys::pidfd::wait_exited(pid, None).map_err(err)?;
    }
    // Reap it when it is our own child (a library caller that created the pod in-process).
    let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    Ok(())
}

fn save(dir: &Path, state: &PodState) -> Result<(), PodError> {
    let path = dir.join(POD_FILE);
    let bytes = serde_json::to_vec(state).map_err(|source| PodError::CorruptState {
        path: path.clone(),
        source,
    })?;
    container::write_atomic(&path, &bytes, 0o600).map_err(|source| PodError::State { path, source })
}

/// `capsa-pause` beside the running executable (both are built and installed together).
pub(crate) fn default_pause_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("capsa-pause")))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/capsa-pause"))
}
