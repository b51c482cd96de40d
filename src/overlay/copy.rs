//! Copying a tree of a root into a directory of its own: how an image's volume gets the
//! image's files at its path (containerd and Docker fill a fresh volume the same way).
//!
//! The root is an image's, so untrusted: the path is resolved inside it (its symlinks cannot
//! leave it), and below it every entry is read and written from directory descriptors with
//! O_NOFOLLOW. A symlink is copied as a link and never followed.

use super::fsutil::{self, cstr};
use super::OverlayError;
use crate::sys::resolve::open_in_root;
use nix::fcntl::OFlag;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How deep a copied tree may go: each level holds two descriptors while it is copied.
pub const MAX_DEPTH: usize = 128;

/// What [`copy_into`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopySummary {
    /// Entries created under the destination (directories, files, links, nodes).
    pub entries: u64,
    /// Bytes of regular files copied.
    pub bytes: u64,
}

/// Copies what `root` holds at `path` into the directory `dest`, which must exist and be
/// empty: `dest` takes the owner and mode of the directory at `path`, and every entry below
/// it is copied with its type, owner, mode and modification time. Symlinks are copied as
/// links; device nodes, fifos and sockets are made anew; names of one file stay hard links
/// of one copy; extended attributes are not copied. Nothing at `path`, or something that is not a
/// directory there, copies nothing.
pub fn copy_into(root: &Path, path: &Path, dest: &Path) -> Result<CopySummary, OverlayError> {
    let io_err = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source: io::Error| OverlayError::Io {
            op,
            path: p,
            source,
        }
    };
    let root_fd = fsutil::open_dir(root).map_err(io_err("opening", root))?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let src = match open_in_root(root_fd.as_fd(), path, flags) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(CopySummary::default())
        }
        Err(e) => return Err(io_err("opening", &root.join(rel(path)))(e)),
    };
    let dst = fsutil::open_dir(dest).map_err(io_err("opening", dest))?;
    if std::fs::read_dir(dest)
        .map_err(io_err("reading", dest))?
        .next()
        .is_some()
    {
        return Err(OverlayError::Target {
            path: dest.to_path_buf(),
            reason: "not empty: a copy goes into an empty directory",
        });
    }
    let top = rel(path);
    let mut copy = Copy {
        root,
        top: top.clone(),
        dest: dst.try_clone().map_err(io_err("opening", dest))?,
        links: HashMap::new(),
        summary: CopySummary::default(),
    };
    copy.dir(&src, &dst, &top, 0)?;
    let st = fstat(&src).map_err(io_err("reading", &root.join(&top)))?;
    set_owner_and_mode(&dst, &st).map_err(io_err("setting the owner and mode of", dest))?;
    Ok(copy.summary)
}

/// `path` without its leading `/`, to join under the root in messages.
fn rel(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

struct Copy<'a> {
    root: &'a Path,
    /// The copied path, relative to the root.
    top: PathBuf,
    /// The destination directory.
    dest: OwnedFd,
    /// Files with more than one link: the first copy of each inode (device, inode), relative
    /// to the destination; the other names become links to it, so a file linked a thousand
    /// times in the image is not copied a thousand times.
    links: HashMap<(u64, u64), PathBuf>,
    summary: CopySummary,
}

impl Copy<'_> {
    fn err(&self, op: &'static str, at: &Path) -> impl FnOnce(io::Error) -> OverlayError {
        let path = self.root.join(at);
        move |source| OverlayError::Io { op, path, source }
    }

    /// Copies the entries of `src` into `dst` (`at`: where `src` is, for messages).
    fn dir(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        at: &Path,
        depth: usize,
    ) -> Result<(), OverlayError> {
        if depth >= MAX_DEPTH {
            return Err(OverlayError::Target {
                path: self.root.join(at),
                reason: "nested too deep to copy (more than 128 levels)",
            });
        }
        let listing =
            std::fs::read_dir(fsutil::proc_path(src, None)).map_err(self.err("reading", at))?;
        let mut names = Vec::new();
        for e in listing {
            names.push(e.map_err(self.err("reading", at))?.file_name());
        }
        names.sort();
        for name in &names {
            let here = at.join(name);
            let Some(st) = fsutil::lstat_at(src, name).map_err(self.err("reading", &here))? else {
                continue;
            };
            self.entry(src, dst, name, &st, &here, depth)?;
            self.summary.entries += 1;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &OsStr,
        st: &libc::stat,
        here: &Path,
        depth: usize,
    ) -> Result<(), OverlayError> {
        let kind = st.st_mode & libc::S_IFMT;
        let perm = st.st_mode & 0o7777;
        match kind {
            libc::S_IFDIR => {
                fsutil::mkdir_at(dst, name, 0o700).map_err(self.err("creating", here))?;
                let from = fsutil::open_dir_at(src, name).map_err(self.err("opening", here))?;
                let to = fsutil::open_dir_at(dst, name).map_err(self.err("opening", here))?;
                self.dir(&from, &to, here, depth + 1)?;
                set_owner_and_mode(&to, st)
                    .map_err(self.err("setting the owner and mode of", here))?;
            }
            libc::S_IFREG if st.st_nlink > 1 && self.link_again(dst, name, st, here)? => {
                return Ok(());
            }
            libc::S_IFREG => {
                let mut from = open_file_at(src, name).map_err(self.err("opening", here))?;
                let mut to =
                    fsutil::create_file_at(dst, name).map_err(self.err("creating", here))?;
                self.summary.bytes +=
                    io::copy(&mut from, &mut to).map_err(self.err("copying", here))?;
                // The owner first: chown clears the set-id bits that the mode then restores.
                set_owner_and_mode(&to, st)
                    .map_err(self.err("setting the owner and mode of", here))?;
                if st.st_nlink > 1 {
                    let rel = here.strip_prefix(&self.top).unwrap_or(here).to_path_buf();
                    self.links.insert((st.st_dev, st.st_ino), rel);
                }
            }
            libc::S_IFLNK => {
                let target = read_link_at(src, name).map_err(self.err("reading", here))?;
                fsutil::symlink_at(OsStr::from_bytes(&target), dst, name)
                    .map_err(self.err("creating", here))?;
                fsutil::chown_at(dst, name, st.st_uid, st.st_gid)
                    .map_err(self.err("chown", here))?;
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK => {
                fsutil::mknod_at(dst, name, kind | perm, st.st_rdev)
                    .map_err(self.err("creating", here))?;
                fsutil::chown_at(dst, name, st.st_uid, st.st_gid)
                    .map_err(self.err("chown", here))?;
                fsutil::chmod_at(dst, name, perm).map_err(self.err("chmod", here))?;
            }
            _ => return Ok(()),
        }
        fsutil::set_mtime_at(dst, name, st.st_mtime).map_err(self.err("setting the time of", here))
    }
}

impl Copy<'_> {
    /// Makes `name` in `dst` a hard link to the copy already made of `st`'s inode; false
    /// when there is none yet. The first copy is reached from the destination one directory
    /// at a time without following links (the copied tree holds the image's symlinks).
    fn link_again(
        &self,
        dst: &OwnedFd,
        name: &OsStr,
        st: &libc::stat,
        here: &Path,
    ) -> Result<bool, OverlayError> {
        let Some(first) = self.links.get(&(st.st_dev, st.st_ino)) else {
            return Ok(false);
        };
        let (Some(parent), Some(file)) = (first.parent(), first.file_name()) else {
            return Ok(false);
        };
        let mut dir = self.dest.try_clone().map_err(self.err("opening", here))?;
        for part in parent.components() {
            dir = fsutil::open_dir_at(&dir, part.as_os_str()).map_err(self.err("opening", here))?;
        }
        fsutil::link_at(&dir, file, dst, name).map_err(self.err("linking", here))?;
        Ok(true)
    }
}

/// Opens regular file `name` under `dir` for reading: never through a link, and never
/// blocking (a fifo swapped in meanwhile is not waited on).
fn open_file_at(dir: &OwnedFd, name: &OsStr) -> io::Result<std::fs::File> {
    let c = cstr(name)?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: openat with a valid descriptor and NUL-terminated name; the result is owned.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat and is ours.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    if !file.metadata()?.is_file() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(file)
}

fn read_link_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid descriptor and C string; buf is writable for its whole length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// fchown then fchmod of an open file or directory to `st`'s owner and permission bits.
fn set_owner_and_mode(fd: &impl AsRawFd, st: &libc::stat) -> io::Result<()> {
    // SAFETY: a valid descriptor; fchown and fchmod touch only the file it refers to.
    if unsafe { libc::fchown(fd.as_raw_fd(), st.st_uid, st.st_gid) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fchmod(fd.as_raw_fd(), st.st_mode & 0o7777) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("capsa-copy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_tree_is_copied_with_owners_modes_and_links_and_never_leaves_the_root() {
        let base = scratch("tree");
        let root = base.join("root");
        let vol = root.join("srv/data");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(vol.join("a.txt"), "alpha").unwrap();
        std::fs::write(vol.join("sub/secret"), "s").unwrap();
        std::os::unix::fs::chown(vol.join("sub"), Some(1002), Some(1003)).unwrap();
        std::fs::set_permissions(vol.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::chown(vol.join("sub/secret"), Some(1002), Some(1003)).unwrap();
        std::fs::set_permissions(
            vol.join("sub/secret"),
            std::fs::Permissions::from_mode(0o4640),
        )
        .unwrap();
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o711)).unwrap();
        // A link out of the root: copied as a link, the host's file never read.
        std::os::unix::fs::symlink("/etc/hostname", vol.join("escape")).unwrap();
        // The volume reached through a link that points at an absolute path: resolved inside
        // the root.
        std::os::unix::fs::symlink("/srv/data", root.join("vol")).unwrap();
        let dest = base.join("dest");
        std::fs::create_dir(&dest).unwrap();
        let s = copy_into(&root, Path::new("/vol"), &dest).unwrap();
        assert_eq!(
            s,
            CopySummary {
                entries: 4,
                bytes: 6
            }
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).unwrap(),
            "alpha"
        );
        let m = std::fs::metadata(dest.join("sub")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1002, 1003, 0o750));
        let m = std::fs::metadata(dest.join("sub/secret")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1002, 1003, 0o4640));
        assert_eq!(
            std::fs::read_link(dest.join("escape")).unwrap(),
            Path::new("/etc/hostname")
        );
        assert_eq!(std::fs::metadata(&dest).unwrap().mode() & 0o7777, 0o711);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn hard_links_stay_links_and_are_copied_once() {
        let base = scratch("links");
        let vol = base.join("root/v");
        std::fs::create_dir_all(vol.join("a/b")).unwrap();
        std::fs::write(vol.join("a/b/big"), "0123456789").unwrap();
        for other in ["again", "a/b/again", "a/third"] {
            std::fs::hard_link(vol.join("a/b/big"), vol.join(other)).unwrap();
        }
        let dest = base.join("dest");
        std::fs::create_dir(&dest).unwrap();
        let s = copy_into(&base.join("root"), Path::new("/v"), &dest).unwrap();
        assert_eq!(s.bytes, 10, "copied once");
        let ino = std::fs::metadata(dest.join("a/b/big")).unwrap().ino();
        for other in ["again", "a/b/again", "a/third"] {
            let m = std::fs::metadata(dest.join(other)).unwrap();
            assert_eq!(m.ino(), ino, "{other}");
        }
        assert_eq!(std::fs::metadata(dest.join("again")).unwrap().nlink(), 4);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn nothing_there_copies_nothing_and_a_full_destination_is_refused() {
        let base = scratch("empty");
        let root = base.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        let dest = base.join("dest");
        std::fs::create_dir(&dest).unwrap();
        for absent in ["/none", "/file", "/none/deeper"] {
            assert_eq!(
                copy_into(&root, Path::new(absent), &dest).unwrap(),
                CopySummary::default(),
                "{absent}"
            );
        }
        std::fs::write(dest.join("there"), "y").unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        let e = copy_into(&root, Path::new("/d"), &dest).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_tree_deeper_than_the_bound_is_refused() {
        let base = scratch("deep");
        let root = base.join("root");
        let mut p = root.join("v");
        for _ in 0..MAX_DEPTH + 1 {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        let dest = base.join("dest");
        std::fs::create_dir(&dest).unwrap();
        let e = copy_into(&root, Path::new("/v"), &dest).unwrap_err();
        assert!(e.to_string().contains("too deep"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
