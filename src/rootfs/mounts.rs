//! One `mounts[]` entry onto its destination inside the rootfs.

use super::options::{self, MountOptions};
use super::resolve::{self, fd_path};
use super::{copyup, RootfsContext, RootfsError};
use crate::cgroups::MountSource;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Mount;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

fn create_err(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Create {
        path: path.to_path_buf(),
        source,
    }
}

fn do_mount(
    what: &str,
    source: Option<&Path>,
    target: BorrowedFd,
    dest: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), RootfsError> {
    mount(source, &fd_path(target), fstype, flags, data).map_err(|e| RootfsError::Mount {
        what: what.to_string(),
        dest: dest.to_path_buf(),
        fstype: fstype.unwrap_or("bind").to_string(),
        source: e.into(),
    })
}

/// nosuid/nodev/noexec and the atime flags a mount has now. A bind remount must repeat them:
/// in a less privileged user namespace the kernel locks them and refuses a remount that drops
/// them (EPERM), and a read-only remount should not change them anyway (as runc does).
pub(super) fn current_flags(target: BorrowedFd) -> MsFlags {
    let Ok(st) = nix::sys::statvfs::fstatvfs(target) else {
        return MsFlags::empty();
    };
    use nix::sys::statvfs::FsFlags as S;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (s, m) in [
        (S::ST_NOSUID, MsFlags::MS_NOSUID),
        (S::ST_NODEV, MsFlags::MS_NODEV),
        (S::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (S::ST_NOATIME, MsFlags::MS_NOATIME),
        (S::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (S::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(s) {
            out |= m;
        }
    }
    out
}

/// Re-resolves the destination (now the root of the new mount) and applies remount flags and
/// propagation changes to it.
fn finish(
    ctx: &RootfsContext,
    root: BorrowedFd,
    dest: &Path,
    opts: &MountOptions,
    remount: MsFlags,
) -> Result<OwnedFd, RootfsError> {
    let fd = resolve::open_path(root, dest).map_err(create_err(dest))?;
    if !remount.is_empty() {
        let extra = if ctx.new_user_ns {
            current_flags(fd.as_fd())
        } else {
            MsFlags::empty()
        };
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | remount | extra;
        do_mount("remount", None, fd.as_fd(), dest, None, flags, None)?;
    }
    for p in &opts.propagation {
        mount(
            None::<&str>,
            &fd_path(fd.as_fd()),
            None::<&str>,
            *p,
            None::<&str>,
        )
        .map_err(|e| RootfsError::Propagation {
            path: dest.to_path_buf(),
            flags: *p,
            source: e.into(),
        })?;
    }
    Ok(fd)
}

fn bind(
    ctx: &RootfsContext,
    root: BorrowedFd,
    index: usize,
    source: &Path,
    dest: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let meta = std::fs::metadata(source).map_err(|e| RootfsError::Source {
        index,
        path: source.to_path_buf(),
        source: e,
    })?;
    let target = resolve::ensure(root, dest, meta.is_dir()).map_err(create_err(dest))?;
    let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
    let what = source.display().to_string();
    do_mount(&what, Some(source), target.as_fd(), dest, None, flags, None)?;
    finish(ctx, root, dest, opts, opts.bind_remount_flags())?;
    Ok(())
}

fn filesystem(
    ctx: &RootfsContext,
    root: BorrowedFd,
    m: &Mount,
    fstype: &str,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let dest = m.destination();
    let target = resolve::ensure(root, dest, true).map_err(create_err(dest))?;
    // tmpcopyup: keep a handle on the directory the tmpfs is about to hide.
    let previous = if opts.tmpcopyup {
        Some(
            resolve::open_in_root(root, dest, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(create_err(dest))?,
        )
    } else {
        None
    };
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(fstype));
    let what = source.display().to_string();
    let data = opts.data_string();
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    let result = do_mount(
        &what,
        Some(&source),
        target.as_fd(),
        dest,
        Some(fstype),
        flags,
        data.as_deref(),
    );
    match result {
        // In a user namespace that does not own the network (sysfs) or IPC (mqueue)
        // namespace the kernel refuses a fresh instance; bind the host's, as runc does.
        Err(RootfsError::Mount { source: e, .. })
            if ctx.new_user_ns
                && e.raw_os_error() == Some(libc::EPERM)
                && (fstype == "sysfs" || fstype == "mqueue") =>
        {
            let host = if fstype == "sysfs" {
                "/sys"
            } else {
                "/dev/mqueue"
            };
            let bind_flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            do_mount(
                host,
                Some(Path::new(host)),
                target.as_fd(),
                dest,
                None,
                bind_flags,
                None,
            )?;
            finish(ctx, root, dest, opts, flags)?;
            return Ok(());
        }
        other => other?,
    }
    let mounted = finish(ctx, root, dest, opts, MsFlags::empty())?;
    if let Some(previous) = previous {
        copyup::copy_dir(previous.as_fd(), mounted.as_fd(), dest)?;
    }
    Ok(())
}

/// A `cgroup` mount: on v1 a tmpfs with one bind per hierarchy of the container's own cgroup;
/// on v2 a fresh cgroup2 in a private cgroup namespace, else a bind of the container's cgroup.
fn cgroup(
    ctx: &RootfsContext,
    root: BorrowedFd,
    dest: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let target = resolve::ensure(root, dest, true).map_err(create_err(dest))?;
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    match ctx.cgroup {
        MountSource::V2(dir) => {
            if ctx.new_cgroup_ns {
                do_mount(
                    "cgroup2",
                    Some(Path::new("cgroup2")),
                    target.as_fd(),
                    dest,
                    Some("cgroup2"),
                    flags,
                    None,
                )?;
            } else {
                let what = dir.display().to_string();
                do_mount(
                    &what,
                    Some(dir),
                    target.as_fd(),
                    dest,
                    None,
                    MsFlags::MS_BIND,
                    None,
                )?;
                finish(ctx, root, dest, opts, flags)?;
            }
        }
        MountSource::V1(hierarchies) => {
            let tmpfs_flags = (flags & !MsFlags::MS_RDONLY) | MsFlags::MS_NOSUID;
            do_mount(
                "tmpfs",
                Some(Path::new("tmpfs")),
                target.as_fd(),
                dest,
                Some("tmpfs"),
                tmpfs_flags,
                Some("mode=755"),
            )?;
            for (name, dir) in hierarchies {
                let sub = dest.join(name);
                let fd = resolve::ensure(root, &sub, true).map_err(create_err(&sub))?;
                let what = dir.display().to_string();
                do_mount(
                    &what,
                    Some(dir),
                    fd.as_fd(),
                    &sub,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                finish(ctx, root, &sub, &MountOptions::default(), flags)?;
            }
            if flags.contains(MsFlags::MS_RDONLY) {
                finish(
                    ctx,
                    root,
                    dest,
                    &MountOptions::default(),
                    tmpfs_flags | MsFlags::MS_RDONLY,
                )?;
            }
        }
    }
    Ok(())
}

/// Mounts `mounts[index]` inside the rootfs held by `root`.
pub(super) fn mount_entry(
    ctx: &RootfsContext,
    root: BorrowedFd,
    index: usize,
    m: &Mount,
) -> Result<(), RootfsError> {
    let fstype = m.typ().as_deref().filter(|t| !t.is_empty());
    let opts = options::parse(m.options().as_deref().unwrap_or(&[]), fstype)
        .map_err(|reason| RootfsError::Options { index, reason })?;
    let dest = m.destination();
    if opts.is_bind() {
        let source = m.source().clone().unwrap_or_default();
        let source = if source.is_absolute() {
            source
        } else {
            ctx.bundle.join(source)
        };
        return bind(ctx, root, index, &source, dest, &opts);
    }
    match fstype {
        Some("cgroup") | Some("cgroup2") => cgroup(ctx, root, dest, &opts),
        Some(t) => filesystem(ctx, root, m, t, &opts),
        None => Err(RootfsError::Options {
            index,
            reason: "a mount needs a type or the bind/rbind option".into(),
        }),
    }
}
