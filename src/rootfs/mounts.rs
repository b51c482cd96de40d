//! One `mounts[]` entry onto its destination inside the rootfs.

use super::options::{self, MountOptions};
use super::procfs::ProcRoot;
use super::resolve;
use super::{copyup, sources, RootfsContext, RootfsError};
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

/// mount(2) onto `target`, the magic-link path of an O_PATH handle in the verified procfs
/// ([`ProcRoot::fd_path`]); errors name `what` and `dest`.
fn do_mount(
    what: &str,
    source: Option<&Path>,
    target: &Path,
    dest: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), RootfsError> {
    mount(source, target, fstype, flags, data).map_err(|e| RootfsError::Mount {
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
    proc: &ProcRoot,
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
        let target = proc.fd_path(fd.as_fd());
        do_mount("remount", None, &target, dest, None, flags, None)?;
    }
    for p in &opts.propagation {
        mount(
            None::<&str>,
            &proc.fd_path(fd.as_fd()),
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
    proc: &ProcRoot,
    root: BorrowedFd,
    index: usize,
    source: &Path,
    dest: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let source_err = |e: std::io::Error| RootfsError::Source {
        index,
        path: source.to_path_buf(),
        source: e,
    };
    let what = source.display().to_string();
    if let Some(prepared) = ctx.sources.get(index) {
        // Opened (and id-mapped) by the runtime: attach the detached copy.
        let dir = sources::is_dir(prepared).map_err(source_err)?;
        let target = resolve::ensure(root, dest, dir).map_err(create_err(dest))?;
        sources::move_mount(prepared, target.as_fd()).map_err(|e| RootfsError::Mount {
            what,
            dest: dest.to_path_buf(),
            fstype: "bind".into(),
            source: e,
        })?;
    } else {
        let meta = std::fs::metadata(source).map_err(source_err)?;
        let target = resolve::ensure(root, dest, meta.is_dir()).map_err(create_err(dest))?;
        let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        do_mount(
            &what,
            Some(source),
            &proc.fd_path(target.as_fd()),
            dest,
            None,
            flags,
            None,
        )?;
    }
    finish(ctx, proc, root, dest, opts, opts.bind_remount_flags())?;
    Ok(())
}

/// `mounts[index]`'s type (None when empty) and parsed options.
pub(super) fn parse_entry(
    index: usize,
    m: &Mount,
) -> Result<(Option<&str>, MountOptions), RootfsError> {
    let fstype = m.typ().as_deref().filter(|t| !t.is_empty());
    let opts = options::parse(m.options().as_deref().unwrap_or(&[]), fstype)
        .map_err(|reason| RootfsError::Options { index, reason })?;
    Ok((fstype, opts))
}

/// A tmpfs, or whatever is mounted on /dev, is mounted read-write even when asked read-only:
/// devices, /dev/pts and tmpcopyup's files go in first, then [`readonly_later`] remounts it
/// (as runc does).
fn defers_readonly(fstype: Option<&str>, dest: &Path, opts: &MountOptions) -> bool {
    !opts.is_bind()
        && opts.flags.contains(MsFlags::MS_RDONLY)
        && (fstype == Some("tmpfs") || lexical_clean(dest) == Path::new("/dev"))
}

/// The read-only remount a mount of [`defers_readonly`] was spared, once the rootfs is
/// populated; its other flags are kept.
pub(super) fn readonly_later(
    ctx: &RootfsContext,
    proc: &ProcRoot,
    root: BorrowedFd,
    index: usize,
    m: &Mount,
) -> Result<(), RootfsError> {
    let (fstype, opts) = parse_entry(index, m)?;
    if !defers_readonly(fstype, m.destination(), &opts) {
        return Ok(());
    }
    let flags = opts.flags & !(MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_REC);
    finish(
        ctx,
        proc,
        root,
        m.destination(),
        &MountOptions::default(),
        flags,
    )?;
    Ok(())
}

fn filesystem(
    ctx: &RootfsContext,
    proc: &ProcRoot,
    root: BorrowedFd,
    index: usize,
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
    let first_flags = if defers_readonly(Some(fstype), dest, opts) {
        flags & !MsFlags::MS_RDONLY
    } else {
        flags
    };
    let result = do_mount(
        &what,
        Some(&source),
        &proc.fd_path(target.as_fd()),
        dest,
        Some(fstype),
        first_flags,
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
                &proc.fd_path(target.as_fd()),
                dest,
                None,
                bind_flags,
                None,
            )?;
            finish(ctx, proc, root, dest, opts, flags)?;
            return Ok(());
        }
        other => other?,
    }
    let mounted = finish(ctx, proc, root, dest, opts, MsFlags::empty())?;
    // What is now at the destination is what was just mounted there, or the destination
    // was swapped under us: a /proc that is not a procfs is not trusted (runc's
    // checkProcMount).
    if fstype == "proc" && !on_procfs(mounted.as_fd()) {
        return Err(RootfsError::ProcMount {
            index,
            dest: dest.to_path_buf(),
            why: "what is mounted there is not a procfs".into(),
        });
    }
    if let Some(previous) = previous {
        copyup::copy_dir(previous.as_fd(), mounted.as_fd(), dest)?;
    }
    Ok(())
}

/// A `cgroup` mount: on v1 a tmpfs with one bind per hierarchy of the container's own cgroup;
/// on v2 a fresh cgroup2 in a private cgroup namespace, else a bind of the container's cgroup.
fn cgroup(
    ctx: &RootfsContext,
    proc: &ProcRoot,
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
                    &proc.fd_path(target.as_fd()),
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
                    &proc.fd_path(target.as_fd()),
                    dest,
                    None,
                    MsFlags::MS_BIND,
                    None,
                )?;
                finish(ctx, proc, root, dest, opts, flags)?;
            }
        }
        MountSource::V1(hierarchies) => {
            let tmpfs_flags = (flags & !MsFlags::MS_RDONLY) | MsFlags::MS_NOSUID;
            do_mount(
                "tmpfs",
                Some(Path::new("tmpfs")),
                &proc.fd_path(target.as_fd()),
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
                    &proc.fd_path(fd.as_fd()),
                    &sub,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                finish(ctx, proc, root, &sub, &MountOptions::default(), flags)?;
            }
            if flags.contains(MsFlags::MS_RDONLY) {
                finish(
                    ctx,
                    proc,
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

/// The entries below /proc that may be mounted over: the files lxcfs emulates, as runc
/// allows them (its checkProcMount). Anything else under /proc could hide or redirect what
/// the kernel exposes there (core_pattern, sysrq-trigger, our own /proc/<pid>/fd...).
const PROC_MOUNTS_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Where a destination is, with respect to /proc.
#[derive(Debug, PartialEq)]
enum ProcPlace {
    Outside,
    /// /proc itself: only a procfs may go there.
    Proc,
    /// One of [`PROC_MOUNTS_ALLOWED`].
    Allowed,
    Inside,
}

/// An in-container path with "." and ".." folded lexically, as the kernel would fold them
/// inside the root: "/tmp/../proc/" is "/proc".
fn lexical_clean(dest: &Path) -> PathBuf {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in dest.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(s),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    std::iter::once(std::ffi::OsStr::new("/"))
        .chain(parts)
        .collect()
}

/// Places `dest` lexically (see [`lexical_clean`]).
fn proc_place(dest: &Path) -> ProcPlace {
    let clean = lexical_clean(dest);
    let mut parts = clean.components().skip(1);
    if parts
        .next()
        .map(|p| p.as_os_str() != "proc")
        .unwrap_or(true)
    {
        return ProcPlace::Outside;
    }
    if parts.next().is_none() {
        return ProcPlace::Proc;
    }
    if PROC_MOUNTS_ALLOWED.iter().any(|a| clean == Path::new(a)) {
        ProcPlace::Allowed
    } else {
        ProcPlace::Inside
    }
}

fn on_procfs(fd: BorrowedFd) -> bool {
    nix::sys::statfs::fstatfs(fd)
        .map(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Refuses a mount over /proc or below it, except a procfs on /proc and the entries runc
/// allows; a destination that only reaches into a procfs through a symlink in the image is
/// refused too (it is checked where it resolves, not only as written).
fn check_proc_destination(
    root: BorrowedFd,
    index: usize,
    m: &Mount,
    bind_is_procfs: Option<bool>,
) -> Result<(), RootfsError> {
    let dest = m.destination();
    let refuse = |why: &str| RootfsError::ProcMount {
        index,
        dest: dest.to_path_buf(),
        why: why.to_string(),
    };
    match proc_place(dest) {
        ProcPlace::Allowed => Ok(()),
        ProcPlace::Inside => Err(refuse(
            "only /proc itself and the files lxcfs provides may be mounted under /proc",
        )),
        ProcPlace::Proc => {
            let is_procfs = bind_is_procfs.unwrap_or_else(|| m.typ().as_deref() == Some("proc"));
            if is_procfs {
                Ok(())
            } else {
                Err(refuse("only a procfs may be mounted on /proc"))
            }
        }
        ProcPlace::Outside => match resolve::open_path(root, dest) {
            Ok(fd) if on_procfs(fd.as_fd()) => Err(refuse(
                "it resolves into a procfs (through a symlink in the rootfs)",
            )),
            _ => Ok(()),
        },
    }
}

/// Mounts `mounts[index]` inside the rootfs held by `root`.
pub(super) fn mount_entry(
    ctx: &RootfsContext,
    proc: &ProcRoot,
    root: BorrowedFd,
    index: usize,
    m: &Mount,
) -> Result<(), RootfsError> {
    let (fstype, opts) = parse_entry(index, m)?;
    let dest = m.destination();
    if opts.is_bind() {
        let source = sources::bind_source(m, ctx.bundle);
        let is_procfs = match ctx.sources.get(index) {
            Some(fd) => on_procfs(fd),
            None => nix::sys::statfs::statfs(&source)
                .map(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
                .unwrap_or(false),
        };
        check_proc_destination(root, index, m, Some(is_procfs))?;
        bind(ctx, proc, root, index, &source, dest, &opts)?;
    } else {
        check_proc_destination(root, index, m, None)?;
        if matches!(fstype, Some("proc") | Some("sysfs")) {
            check_plain_directory(root, index, m)?;
        }
        match fstype {
            Some("cgroup") | Some("cgroup2") => cgroup(ctx, proc, root, dest, &opts)?,
            Some(t) => filesystem(ctx, proc, root, index, m, t, &opts)?,
            None => {
                return Err(RootfsError::Options {
                    index,
                    reason: "a mount needs a type or the bind/rbind option".into(),
                })
            }
        }
    }
    if !opts.recursive.is_empty() {
        // rro, rnosuid...: on the mount and every mount below it (runc's setRecAttr).
        let err = |source| RootfsError::RecursiveAttr {
            index,
            dest: dest.to_path_buf(),
            source,
        };
        let fd = resolve::open_path(root, dest).map_err(err)?;
        sources::mount_setattr(
            fd.as_fd(),
            true,
            opts.recursive.set,
            opts.recursive.clear,
            None,
        )
        .map_err(err)?;
    }
    Ok(())
}

/// procfs and sysfs go on an ordinary directory of the rootfs, never through a symlink at
/// the destination (which would mount them wherever the image points, CVE-2019-19921 and
/// CVE-2023-27561; runc refuses it the same way). The parents resolve inside the root.
fn check_plain_directory(root: BorrowedFd, index: usize, m: &Mount) -> Result<(), RootfsError> {
    let dest = lexical_clean(m.destination());
    let refuse = |why: String| RootfsError::ProcMount {
        index,
        dest: m.destination().to_path_buf(),
        why,
    };
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(refuse("it is the root of the container".into()));
    };
    let parent = match resolve::open_path(root, parent) {
        Ok(fd) => fd,
        // Missing parents are created as directories later.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(create_err(parent)(e)),
    };
    let st = match nix::sys::stat::fstatat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&parent)),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(create_err(&dest)(e.into())),
    };
    let kind =
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT;
    if kind != nix::sys::stat::SFlag::S_IFDIR {
        let fstype = m.typ().as_deref().unwrap_or_default();
        return Err(refuse(format!(
            "filesystem {fstype:?} must be mounted on an ordinary directory, and the rootfs has {} there",
            if kind == nix::sys::stat::SFlag::S_IFLNK { "a symlink" } else { "a file" }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{proc_place, ProcPlace};
    use std::path::Path;

    #[test]
    fn destinations_under_proc_are_placed_as_runc_checks_them() {
        for (dest, want) in [
            ("/proc", ProcPlace::Proc),
            ("/proc/", ProcPlace::Proc),
            ("/tmp/../proc", ProcPlace::Proc),
            ("/proc/cpuinfo", ProcPlace::Allowed),
            ("/proc/net/dev", ProcPlace::Allowed),
            ("/proc/./sys/kernel/ns_last_pid", ProcPlace::Allowed),
            ("/proc/sys/kernel/core_pattern", ProcPlace::Inside),
            ("/proc/self/fd", ProcPlace::Inside),
            ("/proc/1/task/1/fd", ProcPlace::Inside),
            ("/proc/cpuinfo/../sysrq-trigger", ProcPlace::Inside),
            ("/x/../proc/sys", ProcPlace::Inside),
            ("/procfs", ProcPlace::Outside),
            ("/", ProcPlace::Outside),
            ("/tmp/proc", ProcPlace::Outside),
        ] {
            assert_eq!(proc_place(Path::new(dest)), want, "{dest}");
        }
    }
}
