//! After pivot_root: sysctls, read-only paths, masked paths, and the read-only root.

use super::procfs::ProcRoot;
use super::resolve;
use super::RootfsError;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, SFlag};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

fn root() -> std::io::Result<OwnedFd> {
    std::fs::File::open("/").map(OwnedFd::from)
}

/// Writes each sysctl through /proc/sys of the container's own mount of proc, through a
/// verified handle: /proc must be procfs, and the file is reached without crossing a mount or
/// following a link, so nothing mounted or linked over it gets the write (CVE-2025-52881).
/// Keys were validated (no "/" or "..") with the spec.
pub(super) fn write_sysctls(
    proc: &ProcRoot,
    sysctl: &HashMap<String, String>,
) -> Result<(), RootfsError> {
    let mut keys: Vec<_> = sysctl.iter().collect();
    keys.sort();
    for (key, value) in keys {
        let err = |source: std::io::Error| RootfsError::Sysctl {
            key: key.clone(),
            value: value.clone(),
            source,
        };
        let rel = PathBuf::from("sys").join(key.replace('.', "/"));
        let fd = resolve::open_proc_file(proc.dir(), &rel, OFlag::O_WRONLY).map_err(err)?;
        std::io::Write::write_all(&mut std::fs::File::from(fd), value.as_bytes()).map_err(err)?;
    }
    Ok(())
}

/// Remounts an existing mount read-only, keeping its other flags.
pub(super) fn remount_readonly(proc: &ProcRoot, path: &Path) -> Result<(), RootfsError> {
    let err = |source: std::io::Error| RootfsError::Readonly {
        path: path.to_path_buf(),
        source,
    };
    let root = root().map_err(err)?;
    let fd = resolve::open_path(root.as_fd(), path).map_err(err)?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | super::mounts::current_flags(fd.as_fd());
    mount(
        None::<&str>,
        &proc.fd_path(fd.as_fd()),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(|e| err(e.into()))
}

/// Bind-mounts each path onto itself and remounts it read-only. Missing paths are skipped.
pub(super) fn make_readonly(proc: &ProcRoot, paths: &[String]) -> Result<(), RootfsError> {
    for p in paths {
        let path = Path::new(p);
        let err = |source: std::io::Error| RootfsError::Readonly {
            path: path.to_path_buf(),
            source,
        };
        let root = root().map_err(err)?;
        let fd = match resolve::open_path(root.as_fd(), path) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(err(e)),
        };
        let target = proc.fd_path(fd.as_fd());
        mount(
            Some(&target),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| err(e.into()))?;
        remount_readonly(proc, path)?;
    }
    Ok(())
}

/// Opens /dev/null and checks it is the real null device before anything is masked with it:
/// a rootfs whose /dev/null is a symlink or a regular file would otherwise expose that file
/// (CVE-2025-31133).
fn verified_dev_null(root: BorrowedFd) -> Result<OwnedFd, RootfsError> {
    let fd = resolve::open_in_root(
        root,
        Path::new("/dev/null"),
        OFlag::O_PATH | OFlag::O_NOFOLLOW,
    )
    .map_err(|source| RootfsError::Mask {
        path: PathBuf::from("/dev/null"),
        source,
    })?;
    let st = fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(|e| RootfsError::Mask {
        path: PathBuf::from("/dev/null"),
        source: e.into(),
    })?;
    let is_char = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_char || st.st_rdev != nix::sys::stat::makedev(1, 3) {
        return Err(RootfsError::FakeDevNull);
    }
    Ok(fd)
}

/// Hides each path: directories under an empty read-only tmpfs, files under /dev/null.
pub(super) fn mask(proc: &ProcRoot, paths: &[String]) -> Result<(), RootfsError> {
    let root = root().map_err(|source| RootfsError::Mask {
        path: PathBuf::from("/"),
        source,
    })?;
    let mut null: Option<OwnedFd> = None;
    for p in paths {
        let path = Path::new(p);
        let err = |source: std::io::Error| RootfsError::Mask {
            path: path.to_path_buf(),
            source,
        };
        // Nothing to hide where the path does not resolve: it does not exist, or the image
        // has a symlink loop on the way, which the container meets just the same (ELOOP).
        let fd = match resolve::open_in_root(root.as_fd(), path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
        {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ELOOP)) => {
                continue
            }
            Err(e) => return Err(err(e)),
        };
        let st = fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(|e| err(e.into()))?;
        let target = proc.fd_path(fd.as_fd());
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )
            .map_err(|e| err(e.into()))?;
        } else {
            if null.is_none() {
                null = Some(verified_dev_null(root.as_fd())?);
            }
            let null_path = null
                .as_ref()
                .map(|n| proc.fd_path(n.as_fd()))
                .unwrap_or_default();
            mount(
                Some(&null_path),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| err(e.into()))?;
        }
    }
    Ok(())
}
