//! Descriptor-relative file operations that never follow a symlink (shared by unpack and
//! mount). A layer is untrusted input: every path is walked one component at a time from a
//! directory descriptor with O_NOFOLLOW, so no entry can write through a link it planted.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

pub fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens directory `name` under `dir` without following a symlink.
pub fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: openat with a valid descriptor and NUL-terminated name; the result is owned.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by openat and is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?;
    Ok(f.into())
}

/// lstat of `name` under `dir`; None when it does not exist.
pub fn lstat_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    // SAFETY: zeroed stat is a valid out-parameter for fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and out-pointer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(r) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// The path through /proc of `name` in `dir`: for the calls that have no *at form (xattrs).
/// The last component is not followed by the l*xattr calls that use it.
pub fn proc_path(dir: &OwnedFd, name: Option<&OsStr>) -> PathBuf {
    let p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    match name {
        Some(n) => p.join(n),
        None => p,
    }
}

pub fn mkdir_at(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub fn mknod_at(dir: &OwnedFd, name: &OsStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, dev) })
        .map(drop)
}

pub fn symlink_at(target: &OsStr, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let (t, c) = (cstr(target)?, cstr(name)?);
    // SAFETY: valid descriptor and C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }).map(drop)
}

/// A hard link; linkat without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
pub fn link_at(old_dir: &OwnedFd, old: &OsStr, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let (o, c) = (cstr(old)?, cstr(name)?);
    // SAFETY: valid descriptors and C strings.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            dir.as_raw_fd(),
            c.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// Creates a regular file that did not exist (O_EXCL|O_NOFOLLOW: never an existing link).
pub fn create_file_at(dir: &OwnedFd, name: &OsStr) -> io::Result<std::fs::File> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string; the result is owned below.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat and is ours.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Removes `name` under `dir`, recursively when it is a directory.
pub fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match lstat_at(dir, name)? {
        None => Ok(()),
        Some(st) if is_dir(&st) => std::fs::remove_dir_all(proc_path(dir, Some(name))),
        Some(_) => {
            let c = cstr(name)?;
            // SAFETY: valid descriptor and C string.
            check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
        }
    }
}

pub fn chown_at(dir: &OwnedFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string; AT_SYMLINK_NOFOLLOW changes a link itself.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// chmod of an entry we just created (never a symlink: Linux has no lchmod).
pub fn chmod_at(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, 0) }).map(drop)
}

pub fn set_mtime_at(dir: &OwnedFd, name: &OsStr, secs: i64) -> io::Result<()> {
    let c = cstr(name)?;
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid descriptor, C string and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

use std::os::unix::fs::OpenOptionsExt;
