//! The container's root filesystem: mounts, devices, pivot_root, masked and read-only paths.
//!
//! Init calls [`prepare`] (everything under the new root, still seeing the host),
//! then the hooks run, then [`enter`] (pivot_root or MS_MOVE+chroot), then [`finalize`]
//! (propagation, masked/readonly paths, read-only root), all inside the container's
//! mount namespace.

mod copyup;
mod devices;
pub mod mountinfo;
mod mounts;
pub mod options;
mod paths;
mod pivot;
pub mod procfs;
pub mod resolve;
mod sources;

pub use devices::DEFAULT_DEVICES;
pub use pivot::{chroot_into, chroot_only, enter, open_root_of};
pub use sources::MountSources;

use crate::cgroups::MountSource;
use mountinfo::MountEntry;
use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Spec;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("mounting {what} on {} (type {fstype})", dest.display())]
    Mount {
        what: String,
        dest: PathBuf,
        fstype: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mounts[{index}]: {reason}")]
    Options { index: usize, reason: String },
    #[error("mounts[{index}]: refusing to mount on {}: {why}", dest.display())]
    ProcMount {
        index: usize,
        dest: PathBuf,
        why: String,
    },
    #[error(transparent)]
    Procfs(#[from] procfs::ProcfsError),
    #[error("mounts[{index}]: source {}", path.display())]
    Source {
        index: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounts[{index}]: id-mapping {}", path.display())]
    Idmap {
        index: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounts[{index}]: setting the recursive options on {}", dest.display())]
    RecursiveAttr {
        index: usize,
        dest: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {} inside the container", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("changing propagation of {} to {flags:?}", path.display())]
    Propagation {
        path: PathBuf,
        flags: MsFlags,
        #[source]
        source: std::io::Error,
    },
    #[error("creating device {}", path.display())]
    Device {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "creating device {}: the rootfs holds {what} there, which is kept; mount a tmpfs on /dev",
        path.display()
    )]
    DeviceInTheWay { path: PathBuf, what: &'static str },
    #[error("{step} into {}", rootfs.display())]
    Enter {
        step: &'static str,
        rootfs: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening {}, the root of the container's init", path.display())]
    InitRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--no-pivot: {step} {} of the old root", path.display())]
    HideOldRoot {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("masking {}", path.display())]
    Mask {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "/dev/null in the container is not the null device (char 1:3); refusing to mask with it"
    )]
    FakeDevNull,
    #[error("making {} read-only", path.display())]
    Readonly {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("copying {} into the new tmpfs (tmpcopyup)", path.display())]
    CopyUp {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing sysctl {key}={value:?}")]
    Sysctl {
        key: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the rootfs steps need to know beyond the spec.
pub struct RootfsContext<'a> {
    pub spec: &'a Spec,
    /// Absolute path of the rootfs on the host.
    pub rootfs: &'a Path,
    /// The bundle, for relative bind-mount sources.
    pub bundle: &'a Path,
    /// Where the container's cgroup lives on the host, for mounts of type `cgroup`.
    pub cgroup: &'a MountSource,
    pub new_user_ns: bool,
    pub new_cgroup_ns: bool,
    /// Bind sources the runtime opened before the clone (see [`MountSources`]).
    pub sources: &'a MountSources,
}

fn propagate(path: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>).map_err(|e| {
        RootfsError::Propagation {
            path: path.to_path_buf(),
            flags,
            source: e.into(),
        }
    })
}

/// Everything before the switch of root: propagation, the rootfs bind, every mount, devices
/// and the process's cwd. Returns an O_PATH handle of the rootfs mount.
pub fn prepare(ctx: &RootfsContext) -> Result<OwnedFd, RootfsError> {
    let linux = ctx.spec.linux().as_ref();
    // Nothing we mount may propagate back to the host: make "/" a slave by default (runc's
    // default), or what rootfsPropagation asks for.
    let root_flags = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(options::parse_propagation)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    propagate(Path::new("/"), root_flags)?;
    // pivot_root refuses a new root whose parent mount is shared, which "/" made rshared
    // (rootfsPropagation: shared, for bidirectional volumes) makes the mount the rootfs is
    // on: that one mount becomes private, as runc does. The rest of the tree stays shared,
    // and "/" is made so again once the root is switched (finalize).
    if let Some(parent) = mountinfo::mount_of(ctx.rootfs)
        .map_err(|source| RootfsError::Create {
            path: "/proc/self/mountinfo".into(),
            source,
        })?
        .filter(MountEntry::is_shared)
    {
        propagate(&parent.mountpoint, MsFlags::MS_PRIVATE)?;
    }
    // pivot_root needs the new root to be a mount point; bind it onto itself.
    mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RootfsError::Mount {
        what: ctx.rootfs.display().to_string(),
        dest: ctx.rootfs.to_path_buf(),
        fstype: "bind".into(),
        source: e.into(),
    })?;
    // pivot_root refuses a new root whose mount is shared.
    propagate(ctx.rootfs, MsFlags::MS_PRIVATE)?;
    let root = std::fs::File::open(ctx.rootfs)
        .map(OwnedFd::from)
        .map_err(|source| RootfsError::Create {
            path: ctx.rootfs.to_path_buf(),
            source,
        })?;
    // The host's /proc (we have not left it yet), verified before mounts go through it.
    let proc = procfs::ProcRoot::open()?;
    for (index, m) in ctx.spec.mounts().iter().flatten().enumerate() {
        mounts::mount_entry(ctx, &proc, root.as_fd(), index, m)?;
    }
    let spec_devices = linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]);
    devices::create_all(&proc, root.as_fd(), spec_devices, ctx.new_user_ns)?;
    // Populated: the read-only tmpfs and /dev mounts can be made so now.
    for (index, m) in ctx.spec.mounts().iter().flatten().enumerate() {
        mounts::readonly_later(ctx, &proc, root.as_fd(), index, m)?;
    }
    if let Some(process) = ctx.spec.process() {
        resolve::mkdir_all(root.as_fd(), process.cwd(), 0o755).map_err(|source| {
            RootfsError::Create {
                path: process.cwd().clone(),
                source,
            }
        })?;
    }
    Ok(root)
}

/// After the switch of root: rootfs propagation, sysctls, read-only and masked paths, and
/// finally the read-only remount of "/".
pub fn finalize(spec: &Spec) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    if let Some(flags) = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(options::parse_propagation)
    {
        propagate(Path::new("/"), flags)?;
    }
    let sysctl = linux
        .and_then(|l| l.sysctl().as_ref())
        .filter(|s| !s.is_empty());
    let ro = linux
        .and_then(|l| l.readonly_paths().as_deref())
        .filter(|p| !p.is_empty());
    let masked = linux
        .and_then(|l| l.masked_paths().as_deref())
        .filter(|p| !p.is_empty());
    let readonly_root = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if sysctl.is_none() && ro.is_none() && masked.is_none() && !readonly_root {
        return Ok(());
    }
    // Everything below writes to /proc or mounts through it: the container's own procfs,
    // verified (a fake /proc in its place is refused, CVE-2025-52881).
    let proc = procfs::ProcRoot::open()?;
    if let Some(sysctl) = sysctl {
        paths::write_sysctls(&proc, sysctl)?;
    }
    if let Some(ro) = ro {
        paths::make_readonly(&proc, ro)?;
    }
    if let Some(masked) = masked {
        paths::mask(&proc, masked)?;
    }
    if readonly_root {
        paths::remount_readonly(&proc, Path::new("/"))?;
    }
    Ok(())
}
