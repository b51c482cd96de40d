//! One cgroup manager over v1 and v2 (an enum, not a trait object): where a container's
//! cgroup is, placing processes in it, listing and freezing them, and removing it.
//!
//! Layout detection: /sys/fs/cgroup itself being cgroup2 means a unified (v2) host. Anything
//! else is v1; on a hybrid host (v1 controllers plus a cgroup2 without controllers at
//! /sys/fs/cgroup/unified) the v1 hierarchies hold the limits, and the container gets a
//! cgroup in the cgroup2 one too, as runc gives it.

mod bpf;
pub(crate) mod devices;
mod fs;
mod oom;
pub(crate) mod resources;
pub mod stats;
mod sub;
pub(crate) mod v1;
pub(crate) mod v2;

use nix::unistd::Pid;
use std::path::{Component, Path, PathBuf};
pub use sub::SubCgroups;

pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A cgroup operation that failed, naming the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Writing a control file failed.
    #[error("writing {value:?} to {}", path.display())]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Reading a control file failed.
    #[error("reading {}", path.display())]
    Read {
        /// The control file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Making the cgroup directory failed.
    #[error("creating cgroup {}", path.display())]
    Create {
        /// The cgroup directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Removing the cgroup directory failed.
    #[error("removing cgroup {}", path.display())]
    Remove {
        /// The cgroup directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A value in linux.resources that the kernel would not take.
    #[error("linux.resources.{field}: {value}: {reason}")]
    InvalidValue {
        /// The resources field.
        field: String,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A rootless container without a cgroup was asked for something that needs one.
    #[error("{what} needs a cgroup, and this rootless container has none (the host delegates no cgroup to this user; set linux.cgroupsPath to one that is)")]
    Disabled {
        /// What needed the cgroup.
        what: &'static str,
    },
    /// Setting up the OOM notification failed.
    #[error("watching {} for OOM kills", path.display())]
    OomNotifier {
        /// The cgroup file watched.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A resource is set but its controller's file does not exist.
    #[error("the {controller} cgroup controller is not available (needed for {file})")]
    ControllerMissing {
        /// The controller.
        controller: String,
        /// The control file that is missing.
        file: String,
    },
    /// A memory limit below what the group already uses.
    #[error("writing {value:?} to {}: below the current usage of {usage} bytes", path.display())]
    BelowUsage {
        /// The control file.
        path: PathBuf,
        /// The limit asked for.
        value: String,
        /// The current usage, in bytes.
        usage: u64,
    },
    /// Loading or attaching the cgroup v2 device filter failed.
    #[error("{what} {}", path.display())]
    Bpf {
        /// The bpf step.
        what: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The freezer did not reach FROZEN in time.
    #[error("the cgroup of this container did not freeze in {}s: {state}", timeout.as_secs())]
    NotFrozen {
        /// The state read last.
        state: String,
        /// How long freezing was tried.
        timeout: std::time::Duration,
    },
    /// No cgroup hierarchy is mounted.
    #[error("no cgroup hierarchy is mounted under {CGROUP_ROOT}")]
    NoHierarchy,
    /// A cgroupsPath that is refused (escapes the hierarchy, not a path).
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An `exec --cgroup` argument that cannot be parsed.
    #[error("invalid --cgroup argument {arg:?}: {reason}")]
    InvalidSubCgroup {
        /// The argument as given.
        arg: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An `exec --cgroup` sub-cgroup that cannot be used.
    #[error("--cgroup: {reason}")]
    SubCgroup {
        /// Why it cannot be used.
        reason: String,
    },
}

/// What a `cgroup` mount inside the container shows.
#[derive(Debug, Clone)]
pub(crate) enum MountSource {
    /// One (name, host directory) per v1 hierarchy.
    V1(Vec<(String, PathBuf)>),
    /// The container's cgroup2 directory.
    V2(PathBuf),
}

/// A container's or pod's cgroup, on whichever hierarchy the host uses.
#[derive(Debug, Clone)]
pub enum Manager {
    /// Under the v1 hierarchies (one directory per controller).
    V1(v1::Manager),
    /// Under the unified cgroup2 hierarchy.
    V2(v2::Manager),
    /// No cgroup: a rootless container on a host that delegates none to its user. It has no
    /// limits, cannot be paused, and its processes are known through init alone (its own
    /// pid namespace ends them all with init).
    None(PathBuf),
}

/// Where containers without `linux.cgroupsPath` get their cgroup.
pub(crate) const DEFAULT_PARENT: &str = "/capsa";

/// The cgroup path a container uses: `linux.cgroupsPath` (relative paths are taken from the
/// hierarchy root), or `/capsa/<id>` (an absolute default, as crun has: never nested under
/// the caller's own cgroup).
pub(crate) fn container_path(spec_path: Option<&Path>, id: &str) -> Result<PathBuf, CgroupError> {
    let Some(p) = spec_path.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(PathBuf::from(DEFAULT_PARENT).join(id));
    };
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(CgroupError::InvalidPath {
                    path: p.display().to_string(),
                    reason: "must not contain \"..\"",
                })
            }
        }
    }
    if out == Path::new("/") {
        return Err(CgroupError::InvalidPath {
            path: p.display().to_string(),
            reason: "must not be the root cgroup",
        });
    }
    Ok(out)
}

/// Whether the host is unified (cgroup2 mounted at /sys/fs/cgroup).
pub fn is_unified() -> bool {
    nix::sys::statfs::statfs(CGROUP_ROOT)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// A cgroup's per-thread `tasks` files (v1), opened by the runtime before it clones a child.
/// The child, single-threaded until execve, moves itself in by writing "0" to each. A thread
/// moving itself skips the kernel's global threadgroup lock, and the first write under that
/// lock after an idle spell waits a whole RCU grace period (7-15 ms on this kernel, measured
/// with strace -T); writing a pid to cgroup.procs always takes it.
///
/// On a hybrid host the child is instead born in its cgroup of the unified hierarchy
/// (CLONE_INTO_CGROUP with `unified`, opened here before any namespace is joined): writing
/// "0" to a cgroup2 cgroup.procs would take that lock.
#[derive(Debug)]
pub(crate) struct SelfJoin {
    files: Vec<(PathBuf, std::fs::File)>,
    unified: Option<std::fs::File>,
}

impl SelfJoin {
    /// The unified-hierarchy cgroup to clone the child into (hybrid hosts).
    pub fn unified(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd as _;
        self.unified.as_ref().map(|f| f.as_fd())
    }

    /// Moves the calling thread (the whole process, while it has one thread) into the cgroup.
    pub fn enter(&self) -> Result<(), CgroupError> {
        use std::io::Write as _;
        self.files.iter().try_for_each(|(path, file)| {
            (&*file)
                .write_all(b"0")
                .map_err(|source| CgroupError::Write {
                    path: path.clone(),
                    value: "0".into(),
                    source,
                })
        })
    }
}

impl Manager {
    /// The manager for cgroup `path` (as a container's cgroupsPath resolves) on this host.
    pub fn new(path: &Path) -> Result<Self, CgroupError> {
        if is_unified() {
            Ok(Manager::V2(v2::Manager::new(path)))
        } else {
            Ok(Manager::V1(v1::Manager::new(path)?))
        }
    }

    /// The cgroup path relative to the hierarchy root.
    pub fn path(&self) -> &Path {
        match self {
            Manager::V1(m) => m.path(),
            Manager::V2(m) => m.path(),
            Manager::None(p) => p,
        }
    }

    /// Creates the cgroup (every hierarchy on v1). capsa's own parents (`/capsa`) go with
    /// their last child ([`Manager::remove_if_unused`]): a parent removed by a concurrent
    /// delete between our mkdirs shows up as ENOENT, and the walk starts again.
    pub(crate) fn create(&self) -> Result<(), CgroupError> {
        let mut attempt = 0;
        loop {
            let result = match self {
                Manager::V1(m) => m.create(),
                Manager::V2(m) => m.create(),
                Manager::None(_) => Ok(()),
            };
            match result {
                Err(
                    CgroupError::Create { source, .. }
                    | CgroupError::Write { source, .. }
                    | CgroupError::Read { source, .. },
                ) if source.kind() == std::io::ErrorKind::NotFound && attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    /// Moves a process into the cgroup.
    pub(crate) fn add(&self, pid: Pid) -> Result<(), CgroupError> {
        match self {
            Manager::V1(m) => m.add(pid),
            Manager::V2(m) => m.add(pid),
            Manager::None(_) => Ok(()),
        }
    }

    /// The handles a child needs to move itself in (v1 only: v2 children are cloned
    /// straight into their cgroup, and `None` has nothing to join).
    pub(crate) fn self_join(&self) -> Result<Option<SelfJoin>, CgroupError> {
        match self {
            Manager::V1(m) => Ok(Some(SelfJoin {
                files: m.task_files()?,
                unified: m.unified_handle()?,
            })),
            Manager::V2(_) | Manager::None(_) => Ok(None),
        }
    }

    /// The processes in the cgroup.
    pub fn procs(&self) -> Result<Vec<Pid>, CgroupError> {
        match self {
            Manager::V1(m) => m.procs(),
            Manager::V2(m) => m.procs(),
            Manager::None(_) => Ok(Vec::new()),
        }
    }

    /// Whether the group is frozen (paused).
    pub fn is_frozen(&self) -> bool {
        match self {
            Manager::V1(m) => m.is_frozen(),
            Manager::V2(m) => m.is_frozen(),
            Manager::None(_) => false,
        }
    }

    /// Thaws a frozen cgroup (a frozen process cannot act on SIGKILL until thawed).
    pub(crate) fn thaw(&self) -> Result<(), CgroupError> {
        match self {
            Manager::V1(m) => m.set_frozen(false),
            Manager::V2(m) => m.set_frozen(false),
            Manager::None(_) => Ok(()),
        }
    }

    /// Applies `linux.resources` (all of it at create, the given fields on update).
    /// `extra_devices` are allow rules for making the spec's own `linux.devices` nodes; device rules
    /// are written only when `devices` is true (create), never by update.
    pub(crate) fn apply(
        &self,
        r: &oci_spec::runtime::LinuxResources,
        extra_devices: &[String],
        devices: bool,
    ) -> Result<(), CgroupError> {
        if let Some(m) = r.memory() {
            if m.kernel().is_some() || m.kernel_tcp().is_some() {
                // Kernel memory limits are deprecated in the kernel (gone in v2, no-ops or
                // refused on recent v1); runc ignores them with a warning too.
                log::warn!("linux.resources.memory.kernel and kernelTCP are ignored: not supported by recent kernels");
            }
        }
        match self {
            Manager::None(_) if resources::is_empty(r) => Ok(()),
            Manager::None(_) => Err(CgroupError::Disabled {
                what: "linux.resources limits",
            }),
            Manager::V1(m) => {
                let mut writes = resources::v1_writes(r)?;
                if devices {
                    writes.extend(resources::v1_device_writes(
                        r.devices().as_deref(),
                        extra_devices,
                    ));
                }
                m.apply(&writes)
            }
            Manager::V2(m) => {
                m.apply(&resources::v2_writes(r, &m.cpu_max_now())?)?;
                if devices {
                    let rules: Vec<devices::Rule> =
                        resources::v1_device_writes(r.devices().as_deref(), extra_devices)
                            .iter()
                            .filter_map(|w| {
                                devices::Rule::parse(w.file == "devices.allow", &w.value)
                            })
                            .collect();
                    bpf::attach_device_filter(m.dir(), &devices::program(&rules))?;
                }
                Ok(())
            }
        }
    }

    /// Freezes (and waits until the kernel reports frozen) or thaws.
    pub(crate) fn freeze(&self) -> Result<(), CgroupError> {
        match self {
            Manager::V1(m) => m.set_frozen(true),
            Manager::V2(m) => m.set_frozen(true),
            Manager::None(_) => Err(CgroupError::Disabled { what: "pausing" }),
        }
    }

    /// Resource usage, as `events --stats` shows it.
    pub fn stats(&self) -> Result<stats::Stats, CgroupError> {
        match self {
            Manager::V1(m) => Ok(stats::v1(m)),
            Manager::V2(m) => Ok(stats::v2(m.dir())),
            Manager::None(_) => Err(CgroupError::Disabled { what: "statistics" }),
        }
    }

    /// How many times the OOM killer has fired in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        match self {
            Manager::V1(m) => m
                .controller_dir("memory")
                .map(|d| stats::keyed(&d.join("memory.oom_control"), "oom_kill"))
                .unwrap_or(0),
            Manager::V2(m) => stats::keyed(&m.dir().join("memory.events"), "oom_kill"),
            Manager::None(_) => 0,
        }
    }

    /// Removes the cgroup; it must be empty. A cgroup already gone is not an error.
    pub(crate) fn remove(&self) -> Result<(), CgroupError> {
        match self {
            Manager::V1(m) => m.remove(),
            Manager::V2(m) => m.remove(),
            Manager::None(_) => Ok(()),
        }
    }

    /// Removes this cgroup (one of capsa's own default parents, never a client's) when no
    /// cgroup is left in it; still in use (ENOTEMPTY, EBUSY) or already gone is fine.
    pub(crate) fn remove_if_unused(&self) {
        let dirs: Vec<PathBuf> = match self {
            Manager::V1(m) => m.hierarchy_dirs(),
            Manager::V2(m) => vec![m.dir().to_path_buf()],
            Manager::None(_) => Vec::new(),
        };
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// The manager of cgroup `path` on the same hierarchies, without reading the mount
    /// table again.
    pub(crate) fn at(&self, path: &Path) -> Manager {
        match self {
            Manager::V1(m) => Manager::V1(m.at(path)),
            Manager::V2(_) => Manager::V2(v2::Manager::new(path)),
            Manager::None(_) => Manager::None(path.to_path_buf()),
        }
    }

    /// The manager that places a process in the sub-cgroups `sub` of this one (`exec
    /// --cgroup`); they must exist already.
    pub fn below(&self, sub: &SubCgroups) -> Result<Manager, CgroupError> {
        match self {
            Manager::V1(m) => Ok(Manager::V1(m.below(sub)?)),
            Manager::V2(m) => {
                // One hierarchy: every path given must be the same one.
                let mut paths = sub
                    .all
                    .iter()
                    .chain(sub.by_controller.iter().map(|(_, p)| p));
                let first = paths.next().cloned().unwrap_or_default();
                if paths.any(|p| *p != first) {
                    return Err(CgroupError::SubCgroup {
                        reason: "different sub-cgroups for one cgroup v2 hierarchy".into(),
                    });
                }
                Ok(Manager::V2(v2::Manager::new(&m.path().join(first))))
            }
            Manager::None(_) => Err(CgroupError::SubCgroup {
                reason: "the container has no cgroup".into(),
            }),
        }
    }

    /// Whether the cgroup still exists anywhere.
    pub fn exists(&self) -> bool {
        match self {
            Manager::V1(m) => m.exists(),
            Manager::V2(m) => m.exists(),
            Manager::None(_) => false,
        }
    }

    pub(crate) fn mount_source(&self) -> MountSource {
        match self {
            Manager::V1(m) => MountSource::V1(m.mount_dirs()),
            Manager::V2(m) => MountSource::V2(m.dir().to_path_buf()),
            Manager::None(_) => MountSource::V1(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_is_absolute_under_capsa() {
        assert_eq!(container_path(None, "c1").unwrap(), Path::new("/capsa/c1"));
        assert_eq!(
            container_path(Some(Path::new("default/c1")), "x").unwrap(),
            Path::new("/default/c1")
        );
        assert!(container_path(Some(Path::new("/a/../../etc")), "x").is_err());
        assert!(container_path(Some(Path::new("/")), "x").is_err());
    }
}
