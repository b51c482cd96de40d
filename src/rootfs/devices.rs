//! Device nodes and the standard /dev symlinks.

use super::procfs::ProcRoot;
use super::resolve;
use super::RootfsError;
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fchmodat, fstatat, makedev, mknodat, FchmodatFlags, FileStat, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

struct Node {
    path: PathBuf,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
}

fn from_spec(d: &LinuxDevice) -> Node {
    let kind = match d.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    Node {
        path: d.path().clone(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid(),
        gid: d.gid(),
    }
}

fn device_err(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Device {
        path: path.to_path_buf(),
        source,
    }
}

/// lstat of `name` in `dir`; None when nothing is there.
fn existing(dir: BorrowedFd, name: &std::ffi::OsStr) -> std::io::Result<Option<FileStat>> {
    match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether `st` is already the node asked for: same type and, for devices, same numbers.
fn is_node(st: &FileStat, kind: SFlag, dev: libc::dev_t) -> bool {
    let same_kind = st.st_mode & libc::S_IFMT == kind.bits();
    same_kind && (kind == SFlag::S_IFIFO || st.st_rdev == dev)
}

/// "a regular file", "a directory", ... for a mode, in errors.
fn describe(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFCHR => "another character device",
        libc::S_IFBLK => "another block device",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        _ => "a file of unknown type",
    }
}

fn make_node(
    proc: &ProcRoot,
    root: BorrowedFd,
    node: &Node,
    new_user_ns: bool,
) -> Result<(), RootfsError> {
    let err = device_err(&node.path);
    let parent_path = node.path.parent().unwrap_or(Path::new("/dev"));
    let parent = resolve::mkdir_all(root, parent_path, 0o755).map_err(device_err(&node.path))?;
    let name = node
        .path
        .file_name()
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))
        .map_err(device_err(&node.path))?;
    let dev = makedev(node.major, node.minor);
    // Without a tmpfs on /dev, the image's own files are here: never unlink one (its data
    // would be gone from the image for good). The node we would make is kept as it is (as
    // runc keeps whatever exists); anything else is refused, where runc silently keeps it
    // and the container runs without the device it asked for.
    match existing(parent.as_fd(), name).map_err(device_err(&node.path))? {
        None => {}
        Some(st) if is_node(&st, node.kind, dev) => return Ok(()),
        Some(st) => {
            return Err(RootfsError::DeviceInTheWay {
                path: node.path.clone(),
                what: describe(st.st_mode),
            })
        }
    }
    let mode = Mode::from_bits_truncate(node.mode);
    match mknodat(Some(parent.as_raw_fd()), name, node.kind, mode, dev) {
        Ok(()) => {}
        // A user namespace may not create device nodes: bind the host's node instead.
        Err(Errno::EPERM) if new_user_ns => {
            let target =
                resolve::ensure(root, &node.path, false).map_err(device_err(&node.path))?;
            mount(
                Some(&node.path),
                &proc.fd_path(std::os::fd::AsFd::as_fd(&target)),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| err(e.into()))?;
            return Ok(());
        }
        Err(e) => return Err(err(e.into())),
    }
    // mknod honours the umask; set the mode the spec asked for exactly.
    fchmodat(
        Some(parent.as_raw_fd()),
        name,
        mode,
        FchmodatFlags::NoFollowSymlink,
    )
    .or_else(|e| {
        if e == Errno::EOPNOTSUPP {
            Ok(())
        } else {
            Err(e)
        }
    })
    .map_err(|e| device_err(&node.path)(e.into()))?;
    if node.uid.is_some() || node.gid.is_some() {
        fchownat(
            Some(parent.as_raw_fd()),
            name,
            node.uid.map(Uid::from_raw),
            node.gid.map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| device_err(&node.path)(e.into()))?;
    }
    Ok(())
}

fn symlink(root: BorrowedFd, target: &str, link: &str, replace: bool) -> Result<(), RootfsError> {
    let link = Path::new(link);
    let parent = resolve::mkdir_all(root, Path::new("/dev"), 0o755).map_err(device_err(link))?;
    let name = link.file_name().unwrap_or_default();
    if replace {
        // A link or a device node holds no data: replaced, as runc does. A file of the
        // image is not removed.
        match existing(parent.as_fd(), name).map_err(device_err(link))? {
            None => {}
            Some(st) if matches!(st.st_mode & libc::S_IFMT, libc::S_IFLNK | libc::S_IFCHR) => {
                nix::unistd::unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| device_err(link)(e.into()))?;
            }
            Some(st) => {
                return Err(RootfsError::DeviceInTheWay {
                    path: link.to_path_buf(),
                    what: describe(st.st_mode),
                })
            }
        }
    }
    match nix::unistd::symlinkat(target, Some(parent.as_raw_fd()), name) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(device_err(link)(e.into())),
    }
}

/// Creates the default nodes (unless the spec lists the same path), the spec's devices, the
/// /dev/fd and stdio links, /dev/ptmx -> pts/ptmx when a devpts is mounted, and /dev/shm.
pub(super) fn create_all(
    proc: &ProcRoot,
    root: BorrowedFd,
    spec_devices: &[LinuxDevice],
    new_user_ns: bool,
) -> Result<(), RootfsError> {
    let defaults = crate::spec::DEFAULT_DEVICES
        .iter()
        .filter(|(p, _, _)| !spec_devices.iter().any(|d| d.path() == Path::new(p)))
        .map(|&(p, major, minor)| Node {
            path: PathBuf::from(p),
            kind: SFlag::S_IFCHR,
            major,
            minor,
            mode: 0o666,
            uid: None,
            gid: None,
        });
    for node in defaults.chain(spec_devices.iter().map(from_spec)) {
        make_node(proc, root, &node, new_user_ns)?;
    }
    for (target, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        symlink(root, target, link, false)?;
    }
    if Path::new("/proc/kcore").exists() {
        symlink(root, "/proc/kcore", "/dev/core", false)?;
    }
    if resolve::open_path(root, Path::new("/dev/pts/ptmx")).is_ok() {
        symlink(root, "pts/ptmx", "/dev/ptmx", true)?;
    }
    resolve::mkdir_all(root, Path::new("/dev/shm"), 0o1777)
        .map_err(device_err(Path::new("/dev/shm")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_node_counts_as_already_made() {
        // SAFETY: an all-zero stat is a valid value to fill in.
        let mut st: FileStat = unsafe { std::mem::zeroed() };
        st.st_mode = libc::S_IFCHR | 0o666;
        st.st_rdev = makedev(1, 3);
        assert!(is_node(&st, SFlag::S_IFCHR, makedev(1, 3)));
        assert!(!is_node(&st, SFlag::S_IFCHR, makedev(1, 5)));
        assert!(!is_node(&st, SFlag::S_IFBLK, makedev(1, 3)));
        st.st_mode = libc::S_IFREG | 0o644;
        assert!(!is_node(&st, SFlag::S_IFCHR, makedev(1, 3)));
        assert_eq!(describe(st.st_mode), "a regular file");
        st.st_mode = libc::S_IFIFO | 0o644;
        assert!(is_node(&st, SFlag::S_IFIFO, 0));
    }
}
