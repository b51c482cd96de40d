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
mod sources;

pub use pivot::{chroot_into, chroot_only, enter, open_root_of};
pub use sources::MountSources;

use crate::cgroups::MountSource;
use crate::sys::{procfs, resolve};
use mountinfo::MountEntry;
use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Spec;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A failure setting up the container's root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A mount failed.
    #[error("mounting {what} on {} (type {fstype})", dest.display())]
    Mount {
        /// The source.
        what: String,
        /// The mount destination.
        dest: PathBuf,
        /// The filesystem type.
        fstype: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A mount's options are refused.
    #[error("mounts[{index}]: {reason}")]
    Options {
        /// The index in `mounts`.
        index: usize,
        /// Why it is refused.
        reason: String,
    },
    /// A mount on /proc or below it is refused.
    #[error("mounts[{index}]: refusing to mount on {}: {why}", dest.display())]
    ProcMount {
        /// The index in `mounts`.
        index: usize,
        /// The mount destination.
        dest: PathBuf,
        /// Why it is refused.
        why: String,
    },
    /// Opening or trusting procfs failed.
    #[error(transparent)]
    Procfs(#[from] procfs::ProcfsError),
    /// A mount's source cannot be used.
    #[error("mounts[{index}]: source {}", path.display())]
    Source {
        /// The index in `mounts`.
        index: usize,
        /// The source path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Id-mapping a mount (idmap, ridmap) failed.
    #[error("mounts[{index}]: id-mapping {}", path.display())]
    Idmap {
        /// The mount's index in the spec.
        index: usize,
        /// The mount's source.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Setting a mount's recursive attributes (rro, rnosuid, ...) failed.
    #[error("mounts[{index}]: setting the recursive options on {}", dest.display())]
    RecursiveAttr {
        /// The mount's index in the spec.
        index: usize,
        /// The mount's destination.
        dest: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Making a mount point or file inside the container failed.
    #[error("creating {} inside the container", path.display())]
    Create {
        /// The path, inside the container.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Changing mount propagation failed.
    #[error("changing propagation of {} to {flags:?}", path.display())]
    Propagation {
        /// The mount point.
        path: PathBuf,
        /// The propagation flags.
        flags: MsFlags,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Making a device node failed.
    #[error("creating device {}", path.display())]
    Device {
        /// The device path, inside the container.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The rootfs holds something else where a device goes.
    #[error(
        "creating device {}: the rootfs holds {what} there, which is kept; mount a tmpfs on /dev",
        path.display()
    )]
    DeviceInTheWay {
        /// The device path, inside the container.
        path: PathBuf,
        /// What the rootfs holds there.
        what: &'static str,
    },
    /// pivot_root (or MS_MOVE and chroot) failed.
    #[error("{step} into {}", rootfs.display())]
    Enter {
        /// The step that failed.
        step: &'static str,
        /// The root filesystem.
        rootfs: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Opening the root directory of a container's init (exec without a mount namespace).
    #[error("opening {}, the root of the container's init", path.display())]
    InitRoot {
        /// The `/proc/<pid>/root` path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Removing the host's mounts from the namespace of a --no-pivot container failed.
    #[error("--no-pivot: {step} {} of the old root", path.display())]
    HideOldRoot {
        /// What was being done.
        step: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Masking a path failed.
    #[error("masking {}", path.display())]
    Mask {
        /// The path masked.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The container's /dev/null is not the null device (a hostile image's trap).
    #[error(
        "/dev/null in the container is not the null device (char 1:3); refusing to mask with it"
    )]
    FakeDevNull,
    /// Making a path read-only failed.
    #[error("making {} read-only", path.display())]
    Readonly {
        /// The path made read-only.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Copying into a new tmpfs (tmpcopyup) failed.
    #[error("copying {} into the new tmpfs (tmpcopyup)", path.display())]
    CopyUp {
        /// The mount destination.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Writing a sysctl failed.
    #[error("writing sysctl {key}={value:?}")]
    Sysctl {
        /// The sysctl name.
        key: String,
        /// The value written.
        value: String,
        /// The underlying failure.
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
