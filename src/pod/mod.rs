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

pub(crate) use crate::container::pod_record::{ns_file, save, INFRA_CGROUP};
pub use crate::container::pod_record::{Pod, PodError, PodState};

use crate::cgroups::Manager;
use crate::container::{self, Runtime, Status};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where pod cgroups go when no parent is given (an absolute default, as for containers:
/// never below the caller's own cgroup).
pub const DEFAULT_CGROUP_PARENT: &str = "/capsa-pods";

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

impl Runtime {
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

/// `capsa-pause` beside the running executable (both are built and installed together).
pub(crate) fn default_pause_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("capsa-pause")))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/capsa-pause"))
}
