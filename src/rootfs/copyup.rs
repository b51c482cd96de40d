//! podman's `tmpcopyup`: a tmpfs mounted over a directory starts with that directory's content.

use super::RootfsError;
use nix::dir::{Dir, Type};
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode};
use nix::unistd::{fchown, fchownat, symlinkat, Gid, Uid};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

fn open_at(
    dir: BorrowedFd,
    name: &std::ffi::CStr,
    flags: OFlag,
    mode: u32,
) -> nix::Result<OwnedFd> {
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(mode),
    )?;
    // SAFETY: openat returned a fresh descriptor that only we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn copy_tree(src: BorrowedFd, dst: BorrowedFd) -> nix::Result<()> {
    let dup = nix::unistd::dup(src.as_raw_fd())?;
    let mut dir = Dir::from_fd(dup)?;
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let st = fstatat(Some(src.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let mode = st.st_mode & 0o7777;
        let (uid, gid) = (
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        );
        match entry.file_type() {
            Some(Type::Directory) => {
                mkdirat(Some(dst.as_raw_fd()), name, Mode::from_bits_truncate(0o700))?;
                let s = open_at(src, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
                let d = open_at(dst, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
                copy_tree(std::os::fd::AsFd::as_fd(&s), std::os::fd::AsFd::as_fd(&d))?;
                fchown(d.as_raw_fd(), uid, gid)?;
                fchmod(d.as_raw_fd(), Mode::from_bits_truncate(mode))?;
            }
            Some(Type::File) => {
                let s = open_at(src, name, OFlag::O_RDONLY, 0)?;
                let d = open_at(
                    dst,
                    name,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                    0o600,
                )?;
                let (mut sf, mut df) = (std::fs::File::from(s), std::fs::File::from(d));
                std::io::copy(&mut sf, &mut df).map_err(|e| {
                    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
                })?;
                fchown(df.as_raw_fd(), uid, gid)?;
                fchmod(df.as_raw_fd(), Mode::from_bits_truncate(mode))?;
            }
            Some(Type::Symlink) => {
                let target = readlinkat(Some(src.as_raw_fd()), name)?;
                symlinkat(target.as_os_str(), Some(dst.as_raw_fd()), name)?;
                fchownat(
                    Some(dst.as_raw_fd()),
                    name,
                    uid,
                    gid,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
            }
            // Sockets, fifos and device nodes are not copied, as podman's own copy-up skips them.
            _ => {}
        }
    }
    Ok(())
}

/// Copies the tree under `src` (the hidden directory) into `dst` (the new tmpfs).
pub(super) fn copy_dir(src: BorrowedFd, dst: BorrowedFd, dest: &Path) -> Result<(), RootfsError> {
    // The handle from the mount step is O_PATH; reopen it for reading, relative to itself
    // (no path through /proc needed).
    let reopen = |fd: BorrowedFd| -> std::io::Result<OwnedFd> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let raw = openat(Some(fd.as_raw_fd()), ".", flags, Mode::empty())?;
        // SAFETY: openat returned a fresh descriptor that only we own.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    };
    let err = |source: std::io::Error| RootfsError::CopyUp {
        path: dest.to_path_buf(),
        source,
    };
    let dst = reopen(dst).map_err(err)?;
    copy_tree(src, std::os::fd::AsFd::as_fd(&dst)).map_err(|e| err(e.into()))
}
