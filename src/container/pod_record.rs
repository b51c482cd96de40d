//! The pod record: what a container reads of the pod it joins (`CreateOptions::pod`).
//!
//! A pod's record is `<root>/.pods/<id>/pod.json`, in the container layer's state root.
//! The record, its loading and the rewrite of a joining container's spec live here, below
//! the pod layer (`crate::pod`), which makes pods (infra process, cgroups, sysctls) and
//! removes them on top of this: so create reads a pod without reaching up into `pod`.

use super::state::PODS_DIR;
use super::Runtime;
use crate::cgroups::{self, Manager};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const POD_FILE: &str = "pod.json";
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

/// The /proc/<pid>/ns/ name of a namespace kind.
pub(crate) fn ns_file(t: LinuxNamespaceType) -> &'static str {
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
    pub(crate) dir: PathBuf,
    pub(crate) state: PodState,
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
        let alive = super::live_start_time(self.state.pid) == Some(self.state.pid_start_time);
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

    pub(crate) fn infra_cgroup(&self) -> Result<Manager, cgroups::CgroupError> {
        Manager::new(&self.state.cgroup_path.join(INFRA_CGROUP))
    }
}

impl Runtime {
    pub(crate) fn pods_dir(&self) -> PathBuf {
        self.root().join(PODS_DIR)
    }

    pub(crate) fn pod_dir(&self, id: &str) -> Result<PathBuf, crate::Error> {
        super::validate_id(id)?;
        Ok(self.pods_dir().join(id))
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
}

pub(crate) fn save(dir: &Path, state: &PodState) -> Result<(), PodError> {
    let path = dir.join(POD_FILE);
    let bytes = serde_json::to_vec(state).map_err(|source| PodError::CorruptState {
        path: path.clone(),
        source,
    })?;
    super::write_atomic(&path, &bytes, 0o600).map_err(|source| PodError::State { path, source })
}
