//! Assembling a container root from layers: overlay(lowerdir = layers top-first, upperdir,
//! workdir), or read-only without an upper.
//!
//! Layer paths never appear in the option string: each layer is opened and named by its
//! /proc/self/fd path, which keeps options short, needs no escaping of `:` or `,` and cannot
//! be redirected by a rename between check and mount. A stack whose options still exceed one
//! page goes through the new mount API, one `lowerdir+` per layer (Linux 6.8+).

use super::OverlayError;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The writable part of an overlay: both on the same filesystem, work empty.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Upper<'a> {
    /// Where the container's writes land.
    pub upper: &'a Path,
    /// overlayfs's scratch directory, empty, on the upper's filesystem.
    pub work: &'a Path,
}

impl<'a> Upper<'a> {
    /// The upper directory and its work directory.
    pub fn new(upper: &'a Path, work: &'a Path) -> Self {
        Upper { upper, work }
    }
}

/// mount(2) copies its data argument into one page.
const MAX_OPTIONS: usize = 4095;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

fn open_path(what: &'static str, path: &Path) -> Result<OwnedFd, OverlayError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| OverlayError::Io {
            op: what,
            path: path.to_path_buf(),
            source,
        })
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Mounts `lower` (top layer first) with an optional upper on `target`.
pub fn mount(lower: &[PathBuf], upper: Option<Upper>, target: &Path) -> Result<(), OverlayError> {
    if lower.is_empty() {
        return Err(OverlayError::Target {
            path: target.to_path_buf(),
            reason: "an overlay needs at least one lower layer",
        });
    }
    let target_fd = open_path("opening mount target", target)?;
    let lower_fds = lower
        .iter()
        .map(|l| open_path("opening lower layer", l))
        .collect::<Result<Vec<_>, _>>()?;
    let mount_err = |source| OverlayError::Mount {
        target: target.to_path_buf(),
        layers: lower.len(),
        source,
    };
    let upper_fds = match upper {
        Some(u) => Some((
            open_path("opening upper dir", u.upper)?,
            open_path("opening work dir", u.work)?,
        )),
        None if lower.len() == 1 => {
            // overlayfs wants two lowers when read-only; one layer alone is the same view as
            // a read-only bind (what containerd's overlay snapshotter does).
            return bind_read_only(&lower_fds[0], &target_fd).map_err(mount_err);
        }
        None => None,
    };
    let lowers: Vec<String> = lower_fds.iter().map(fd_path).collect();
    let uppers = upper_fds.as_ref().map(|(u, w)| (fd_path(u), fd_path(w)));
    let mut options = format!("lowerdir={}", lowers.join(":"));
    if let Some((u, w)) = &uppers {
        options.push_str(&format!(",upperdir={u},workdir={w}"));
    }
    if options.len() <= MAX_OPTIONS {
        nix::mount::mount(
            Some("overlay"),
            fd_path(&target_fd).as_str(),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| mount_err(e.into()))
    } else {
        mount_with_fsconfig(&lowers, uppers.as_ref(), &target_fd).map_err(mount_err)
    }
}

fn bind_read_only(src: &OwnedFd, target: &OwnedFd) -> io::Result<()> {
    use nix::mount::MsFlags;
    let t = fd_path(target);
    nix::mount::mount(
        Some(fd_path(src).as_str()),
        t.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    nix::mount::mount(
        None::<&str>,
        t.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .inspect_err(|_| {
        let _ = nix::mount::umount2(t.as_str(), nix::mount::MntFlags::MNT_DETACH);
    })?;
    Ok(())
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn c(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn fsconfig_string(fs: &OwnedFd, key: &str, value: &str) -> io::Result<()> {
    let (k, v) = (c(key)?, c(value)?);
    // SAFETY: fsconfig with a filesystem-context fd and two NUL-terminated strings.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            k.as_ptr(),
            v.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// fsopen/fsconfig/fsmount/move_mount: every layer is its own `lowerdir+` parameter, so the
/// one-page limit of mount(2) does not apply.
fn mount_with_fsconfig(
    lowers: &[String],
    uppers: Option<&(String, String)>,
    target: &OwnedFd,
) -> io::Result<()> {
    let name = c("overlay")?;
    // SAFETY: fsopen with a NUL-terminated filesystem name; the fd is owned below.
    let fs = check(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fs was just returned by fsopen and is ours.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    for l in lowers {
        fsconfig_string(&fs, "lowerdir+", l)?;
    }
    if let Some((u, w)) = uppers {
        fsconfig_string(&fs, "upperdir", u)?;
        fsconfig_string(&fs, "workdir", w)?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount of a created context; the fd is owned below.
    let mnt =
        check(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
    // SAFETY: mnt was just returned by fsmount and is ours.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as i32) };
    let empty = c("")?;
    // SAFETY: move_mount from the detached mount fd onto the target fd (both ours).
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Unmounts an overlay (or the read-only bind of a single layer) from `target`.
pub fn unmount(target: &Path) -> Result<(), OverlayError> {
    nix::mount::umount2(target, nix::mount::MntFlags::UMOUNT_NOFOLLOW).map_err(|e| {
        OverlayError::Unmount {
            target: target.to_path_buf(),
            source: e.into(),
        }
    })
}
