//! Namespaces: which to create with clone, which to join by path (and in what order), and the
//! uid/gid maps and time offsets the runtime writes for a new one.

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespace, LinuxNamespaceType, LinuxTimeOffset};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// A failure joining or making a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// Opening a namespace path failed.
    #[error("opening {kind} namespace {}", path.display())]
    Open {
        /// The namespace kind.
        kind: &'static str,
        /// The namespace path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// setns failed.
    #[error("joining {kind} namespace {}", path.display())]
    Join {
        /// The namespace kind.
        kind: &'static str,
        /// The namespace path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Making a new namespace failed.
    #[error("creating a new {kind} namespace")]
    Unshare {
        /// The namespace kind.
        kind: &'static str,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Writing a uid or gid map failed.
    #[error("writing {} {value:?}", path.display())]
    Write {
        /// The map file.
        path: PathBuf,
        /// The map written.
        value: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Setting the hostname or domain name failed.
    #[error("setting {what} to {value:?}")]
    Uts {
        /// hostname or domainname.
        what: &'static str,
        /// The name given.
        value: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}

/// The short name runc and the kernel use (`mnt`, `net`, ...).
pub fn kind_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

pub(crate) fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// What the clone chain does about namespaces, computed from the spec alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePlan {
    /// New namespaces created by the clone of init itself.
    pub clone_flags: CloneFlags,
    /// New cgroup namespace: unshared by init *after* the runtime has placed it in its cgroup,
    /// so the namespace root is the container's cgroup, not the runtime's.
    pub unshare_cgroup: bool,
    /// New time namespace: unshared before the clone so offsets can be written first.
    pub new_time: bool,
    /// Existing namespaces to join, in the order to join them (user first, mount last).
    pub joins: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl NamespacePlan {
    pub fn from_spec(namespaces: &[LinuxNamespace]) -> Self {
        let mut plan = NamespacePlan {
            clone_flags: CloneFlags::empty(),
            unshare_cgroup: false,
            new_time: false,
            joins: Vec::new(),
        };
        for ns in namespaces {
            match (ns.typ(), ns.path()) {
                (t, Some(p)) => plan.joins.push((t, p.clone())),
                (LinuxNamespaceType::Cgroup, None) => plan.unshare_cgroup = true,
                (LinuxNamespaceType::Time, None) => plan.new_time = true,
                (t, None) => plan.clone_flags |= clone_flag(t),
            }
        }
        // The user namespace decides what the others may do, so it is joined first; joining
        // the mount namespace changes how paths resolve, so it comes last (as in runc's nsexec).
        plan.joins.sort_by_key(|(t, _)| match t {
            LinuxNamespaceType::User => 0,
            LinuxNamespaceType::Mount => 2,
            _ => 1,
        });
        plan
    }

    /// Whether the container has a mount namespace of its own (new or joined); without one
    /// it runs in the runtime's, where nothing may be mounted.
    pub fn has_mount_ns(&self) -> bool {
        self.clone_flags.contains(CloneFlags::CLONE_NEWNS)
            || self
                .joins
                .iter()
                .any(|(t, _)| *t == LinuxNamespaceType::Mount)
    }

    pub fn new_user(&self) -> bool {
        self.clone_flags.contains(CloneFlags::CLONE_NEWUSER)
    }

    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        match t {
            LinuxNamespaceType::Cgroup => self.unshare_cgroup,
            LinuxNamespaceType::Time => self.new_time,
            t => self.clone_flags.contains(clone_flag(t)),
        }
    }

    /// A short-lived stage process is needed when something must happen to the clone's
    /// parent first: joining existing namespaces or preparing a time namespace.
    pub fn needs_stage(&self) -> bool {
        !self.joins.is_empty() || self.new_time
    }
}

/// Joins the planned namespaces. All paths are opened before the first setns, because joining
/// a mount namespace changes what later paths would resolve to.
pub fn join_all(joins: &[(LinuxNamespaceType, PathBuf)]) -> Result<(), NamespaceError> {
    let mut fds: Vec<(LinuxNamespaceType, &PathBuf, OwnedFd)> = Vec::with_capacity(joins.len());
    for (t, path) in joins {
        let fd = open(
            path.as_path(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| NamespaceError::Open {
            kind: kind_name(*t),
            path: path.clone(),
            source: e.into(),
        })?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        fds.push((*t, path, fd));
    }
    for (t, path, fd) in &fds {
        setns(fd, clone_flag(*t)).map_err(|e| NamespaceError::Join {
            kind: kind_name(*t),
            path: (*path).clone(),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// Creates a new namespace of the given kind for the caller (cgroup) or its children (time).
pub fn unshare_kind(t: LinuxNamespaceType) -> Result<(), NamespaceError> {
    unshare(clone_flag(t)).map_err(|e| NamespaceError::Unshare {
        kind: kind_name(t),
        source: e.into(),
    })
}

/// The text the kernel expects in uid_map/gid_map: one "inside outside count" line per range.
pub fn id_map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

fn write_proc(path: PathBuf, value: String) -> Result<(), NamespaceError> {
    std::fs::write(&path, value.as_bytes()).map_err(|source| NamespaceError::Write {
        path,
        value: value.trim_end().to_string(),
        source,
    })
}

/// Writes the uid and gid maps of a process that has just entered a new user namespace.
pub fn write_id_maps(
    pid: Pid,
    uid_maps: &[LinuxIdMapping],
    gid_maps: &[LinuxIdMapping],
) -> Result<(), NamespaceError> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    if !uid_maps.is_empty() {
        write_proc(base.join("uid_map"), id_map_text(uid_maps))?;
    }
    if !gid_maps.is_empty() {
        if !nix::unistd::geteuid().is_root() {
            // An unprivileged writer may map its own gid only after giving up setgroups(2)
            // in that namespace (user_namespaces(7); CVE-2014-8989).
            write_proc(base.join("setgroups"), "deny".to_string())?;
        }
        write_proc(base.join("gid_map"), id_map_text(gid_maps))?;
    }
    Ok(())
}

/// The text for /proc/self/timens_offsets: "monotonic SECS NANOS" per clock.
pub fn time_offsets_text(offsets: &HashMap<String, LinuxTimeOffset>) -> String {
    let mut clocks: Vec<_> = offsets.iter().collect();
    clocks.sort_by(|a, b| a.0.cmp(b.0));
    clocks
        .into_iter()
        .map(|(clock, o)| {
            format!(
                "{clock} {} {}\n",
                o.secs().unwrap_or(0),
                o.nanosecs().unwrap_or(0)
            )
        })
        .collect()
}

/// Unshares a time namespace for the children of the caller and writes its offsets; must run
/// before any process enters it (the kernel refuses offsets afterwards).
pub fn prepare_time_namespace(
    offsets: Option<&HashMap<String, LinuxTimeOffset>>,
) -> Result<(), NamespaceError> {
    unshare_kind(LinuxNamespaceType::Time)?;
    if let Some(offsets) = offsets.filter(|o| !o.is_empty()) {
        write_proc(
            PathBuf::from("/proc/self/timens_offsets"),
            time_offsets_text(offsets),
        )?;
    }
    Ok(())
}

/// Sets hostname and domainname (requires a private UTS namespace; validated earlier).
pub fn set_uts(hostname: Option<&str>, domainname: Option<&str>) -> Result<(), NamespaceError> {
    if let Some(h) = hostname {
        nix::unistd::sethostname(h).map_err(|e| NamespaceError::Uts {
            what: "hostname",
            value: h.to_string(),
            source: e.into(),
        })?;
    }
    if let Some(d) = domainname {
        // SAFETY: the pointer and length describe `d`'s bytes, valid for the call.
        let rc = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if rc != 0 {
            return Err(NamespaceError::Uts {
                what: "domainname",
                value: d.to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut n = LinuxNamespace::default();
        n.set_typ(t);
        n.set_path(path.map(PathBuf::from));
        n
    }

    #[test]
    fn plan_splits_new_and_joined_namespaces() {
        let plan = NamespacePlan::from_spec(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/proc/1/ns/net")),
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Cgroup, None),
            ns(LinuxNamespaceType::User, Some("/proc/1/ns/user")),
        ]);
        assert_eq!(
            plan.clone_flags,
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID
        );
        assert!(plan.unshare_cgroup);
        assert!(!plan.new_time);
        assert_eq!(plan.joins[0].0, LinuxNamespaceType::User);
        assert_eq!(plan.joins[1].0, LinuxNamespaceType::Network);
        assert!(plan.needs_stage());
    }

    #[test]
    fn mount_namespace_is_joined_last() {
        let plan = NamespacePlan::from_spec(&[
            ns(LinuxNamespaceType::Mount, Some("/m")),
            ns(LinuxNamespaceType::Ipc, Some("/i")),
            ns(LinuxNamespaceType::User, Some("/u")),
        ]);
        let order: Vec<_> = plan.joins.iter().map(|j| j.0).collect();
        assert_eq!(
            order,
            vec![
                LinuxNamespaceType::User,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Mount
            ]
        );
    }

    #[test]
    fn id_maps_render_one_line_per_range() {
        let a: LinuxIdMapping =
            serde_json::from_str(r#"{"containerID":0,"hostID":100000,"size":65536}"#).unwrap();
        assert_eq!(id_map_text(&[a]), "0 100000 65536\n");
    }
}
