//! Bind-mount sources opened by the runtime, before init is cloned.
//!
//! In a new user namespace, init is root only over the ids it maps: a bind source inside a
//! directory only host root may search (0700) fails with EACCES when init resolves it. runc
//! opens such sources from the runtime's side and hands init descriptors; capsa does the
//! same with open_tree(OPEN_TREE_CLONE): a detached copy of the source's mount (tree, for an
//! rbind), made with the runtime's credentials, which init attaches with move_mount(2).
//! Descriptors survive the clone (init's table is a copy) and are close-on-exec.
//!
//! An id-mapped bind (`idmap`/`ridmap`) is prepared here too, whatever the namespaces:
//! MOUNT_ATTR_IDMAP needs CAP_SYS_ADMIN over the source's filesystem and a detached mount,
//! so the runtime makes a user namespace with the mount's mappings (as runc 1.2 does) and
//! sets it on the copy before init ever sees it.

use super::options::{self, Idmap};
use super::RootfsError;
use crate::sys::clone::{clone_process, ChildGuard, Forked};
use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Descriptors of prepared bind sources, by index in `mounts[]`.
#[derive(Debug, Default)]
pub struct MountSources {
    fds: Vec<Option<OwnedFd>>,
}

/// A bind source as the spec gives it: relative paths are relative to the bundle.
pub(super) fn bind_source(m: &Mount, bundle: &Path) -> PathBuf {
    let source = m.source().clone().unwrap_or_default();
    if source.is_absolute() {
        source
    } else {
        bundle.join(source)
    }
}

fn syscall_result(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// open_tree(2) of `path` with OPEN_TREE_CLONE: a detached copy of its mount (with
/// `recursive`, of the whole tree below it).
fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `c` is a valid C string for the duration of the call.
    let fd = syscall_result(unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags)
    })?;
    // SAFETY: the kernel returned a new descriptor that only we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// mount_setattr(2) on the mount of `fd` (and below it with `recursive`).
pub(super) fn mount_setattr(
    fd: BorrowedFd,
    recursive: bool,
    set: u64,
    clear: u64,
    userns: Option<BorrowedFd>,
) -> io::Result<()> {
    let mut attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.map(|u| u.as_raw_fd() as u64).unwrap_or(0),
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: an empty C string and a properly initialised mount_attr whose size we pass; the
    // kernel only reads them.
    syscall_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })?;
    Ok(())
}

/// move_mount(2) of the detached mount `from` onto the object of the O_PATH handle `to`.
pub(super) fn move_mount(from: BorrowedFd, to: BorrowedFd) -> io::Result<()> {
    // SAFETY: two descriptors and empty C strings; the kernel only reads them.
    syscall_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// A user namespace whose maps are `uids`/`gids`, as a descriptor: a child is cloned into a
/// new one, the maps written, its ns file opened, and the child killed and reaped (the guard).
fn userns_with(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> io::Result<OwnedFd> {
    let pid = match clone_process(nix::sched::CloneFlags::CLONE_NEWUSER, false)? {
        // The child only waits for the SIGKILL of the guard below.
        Forked::Child => loop {
            // SAFETY: pause(2) has no arguments and touches no memory.
            unsafe { libc::pause() };
        },
        Forked::Parent(pid) => pid,
    };
    let child = ChildGuard::new(pid);
    crate::namespaces::write_id_maps(child.pid(), uids, gids).map_err(io::Error::other)?;
    let ns = std::fs::File::open(format!("/proc/{}/ns/user", child.pid()))?;
    drop(child);
    Ok(ns.into())
}

impl MountSources {
    /// Prepares every bind source init could not open itself (`new_user_ns`) and every
    /// id-mapped bind, which is mapped with `linux.uidMappings`/`gidMappings` (a mount's own
    /// mappings are refused when the spec is parsed: oci-spec 0.8 does not keep them).
    pub fn open(spec: &Spec, bundle: &Path, new_user_ns: bool) -> Result<Self, RootfsError> {
        let linux = spec.linux().as_ref();
        let none = Vec::new();
        let default_uids = linux
            .and_then(|l| l.uid_mappings().as_ref())
            .unwrap_or(&none);
        let default_gids = linux
            .and_then(|l| l.gid_mappings().as_ref())
            .unwrap_or(&none);
        let mut fds = Vec::new();
        for (index, m) in spec.mounts().iter().flatten().enumerate() {
            let (_, opts) = super::mounts::parse_entry(index, m)?;
            if !opts.is_bind() || !(new_user_ns || opts.idmap.is_some()) {
                fds.push(None);
                continue;
            }
            let source = bind_source(m, bundle);
            let err = |e: io::Error| RootfsError::Source {
                index,
                path: source.clone(),
                source: e,
            };
            let fd = match open_tree_clone(&source, opts.flags.contains(MsFlags::MS_REC)) {
                Ok(fd) => fd,
                // A rootless runtime may not clone mounts; its user can reach its own
                // sources anyway, so init mounts them by path as before.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && opts.idmap.is_none() => {
                    fds.push(None);
                    continue;
                }
                Err(e) => return Err(err(e)),
            };
            if let Some(idmap) = opts.idmap {
                let (uids, gids) = (default_uids, default_gids);
                idmap_tree(fd.as_fd(), idmap, uids, gids).map_err(|e| RootfsError::Idmap {
                    index,
                    path: source.clone(),
                    source: e,
                })?;
            }
            fds.push(Some(fd));
        }
        Ok(MountSources { fds })
    }

    /// The prepared source of `mounts[index]`, if there is one.
    pub fn get(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.fds
            .get(index)
            .and_then(|f| f.as_ref())
            .map(|f| f.as_fd())
    }

    /// The descriptors init must keep open until it has mounted them.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.fds.iter().flatten().map(|f| f.as_raw_fd()).collect()
    }
}

fn idmap_tree(
    fd: BorrowedFd,
    idmap: Idmap,
    uids: &[LinuxIdMapping],
    gids: &[LinuxIdMapping],
) -> io::Result<()> {
    if uids.is_empty() || gids.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an id-mapped mount needs linux.uidMappings and linux.gidMappings",
        ));
    }
    let userns = userns_with(uids, gids)?;
    mount_setattr(
        fd,
        idmap == Idmap::Recursive,
        options::ATTR_IDMAP,
        0,
        Some(userns.as_fd()),
    )
}

/// What a prepared source is (directory or not), for the destination to match it.
pub(super) fn is_dir(fd: BorrowedFd) -> io::Result<bool> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    Ok(
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
            == nix::sys::stat::SFlag::S_IFDIR,
    )
}
