//! Path resolution inside the container's rootfs that never leaves it.
//!
//! Every mount destination is resolved with openat2(RESOLVE_IN_ROOT): a symlink in the rootfs
//! (absolute or through "..") is followed *inside* the rootfs, never out to the host
//! (CVE-2021-30465, and the 2025 runc mount races CVE-2025-31133/52565/52881). The result is an
//! O_PATH fd; mounts go onto its magic link in a verified procfs (see [`super::procfs`]), so
//! the path cannot be swapped between the check and the mount.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The components of an absolute in-container path, without "/" and ".".
fn components(path: &Path) -> Vec<&std::ffi::OsStr> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            Component::ParentDir => Some(std::ffi::OsStr::new("..")),
            _ => None,
        })
        .collect()
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
pub fn open_in_root(root: BorrowedFd, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    openat2(
        root,
        path,
        flags,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// A file below a procfs directory, for writing: no symlink, no magic link, and no mount
/// crossed (RESOLVE_NO_XDEV), so a bind mount or a link planted over a /proc file cannot
/// redirect the write (CVE-2025-52881).
pub fn open_proc_file(proc_dir: BorrowedFd, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    openat2(
        proc_dir,
        path,
        flags,
        libc::RESOLVE_BENEATH
            | libc::RESOLVE_NO_XDEV
            | libc::RESOLVE_NO_SYMLINKS
            | libc::RESOLVE_NO_MAGICLINKS,
    )
}

fn openat2(dir: BorrowedFd, path: &Path, flags: OFlag, resolve: u64) -> io::Result<OwnedFd> {
    let root = dir;
    let rel: PathBuf = components(path).into_iter().collect();
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    let c = cstring(&rel)?;
    // SAFETY: open_how is a plain C struct for which all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | OFlag::O_CLOEXEC).bits() as u64;
    how.resolve = resolve;
    loop {
        // SAFETY: `c` is a valid C string and `how` a properly initialised open_how whose size
        // we pass; the kernel only reads them.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel returned a new descriptor that only we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let err = io::Error::last_os_error();
        // EAGAIN: a concurrent rename raced the resolution; the kernel asks us to retry.
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
}

/// O_PATH handle of `path` inside the root (following symlinks within it).
pub fn open_path(root: BorrowedFd, path: &Path) -> io::Result<OwnedFd> {
    open_in_root(root, path, OFlag::O_PATH)
}

/// `mkdir -p` inside the root; returns an O_PATH handle of the final directory. A dangling
/// symlink on the way is followed the way the kernel would inside the root: its target is
/// created under the root (never on the host).
pub fn mkdir_all(root: BorrowedFd, path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let mut pending: Vec<std::ffi::OsString> = components(path)
        .into_iter()
        .rev()
        .map(|c| c.to_os_string())
        .collect();
    let mut partial = PathBuf::from("/");
    let mut parent = open_in_root(root, &partial, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        let candidate = partial.join(&comp);
        match open_in_root(root, &candidate, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(fd) => {
                parent = fd;
                partial = candidate;
                continue;
            }
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
            Err(_) => {}
        }
        match nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            comp.as_os_str(),
            Mode::from_bits_truncate(mode),
        ) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                // Exists but did not resolve: a dangling symlink. Continue at its target.
                let target = nix::fcntl::readlinkat(Some(parent.as_raw_fd()), comp.as_os_str())?;
                links += 1;
                if links > 40 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = PathBuf::from(target);
                pending.extend(
                    components(&target)
                        .into_iter()
                        .rev()
                        .map(|c| c.to_os_string()),
                );
                if target.is_absolute() {
                    partial = PathBuf::from("/");
                    parent = open_in_root(root, &partial, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        parent = open_in_root(root, &candidate, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        partial = candidate;
    }
    Ok(parent)
}

/// Makes sure `path` exists inside the root, as a directory (`dir`) or an empty file, and
/// returns its O_PATH handle. An existing entry of either kind is kept as it is.
pub fn ensure(root: BorrowedFd, path: &Path, dir: bool) -> io::Result<OwnedFd> {
    match open_path(root, path) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
        Err(_) => {}
    }
    if dir {
        return mkdir_all(root, path, 0o755);
    }
    let parent = mkdir_all(root, path.parent().unwrap_or(Path::new("/")), 0o755)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    match nix::fcntl::openat(
        Some(parent.as_raw_fd()),
        name,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    ) {
        // SAFETY: openat returned a fresh descriptor; wrapping it closes it on drop.
        Ok(fd) => drop(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(Errno::EEXIST) | Err(Errno::ELOOP) => {}
        Err(e) => return Err(e.into()),
    }
    open_path(root, path)
}
