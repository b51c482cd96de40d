//! The real [`Host`] and [`Accounts`]: the running system and an image's rootfs.

use super::{Accounts, EtcFile, Host, HostDevice};
use capsa::security::lsm::Lsm;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest Localhost seccomp profile read (containerd's default profile is ~20 KiB).
const MAX_PROFILE: u64 = 1 << 20;

pub use capsa::internal::{mount_containing, MountEntry};

/// The running system. `target_pid` answers for TARGET pid namespaces from the daemon's
/// container records.
pub struct SystemHost<F: Fn(&str, &str) -> Option<i32>> {
    pub target_pid: F,
}

fn device_of(meta: &std::fs::Metadata) -> Option<HostDevice> {
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else if meta.file_type().is_block_device() {
        'b'
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(HostDevice {
        kind,
        major: libc::major(rdev) as i64,
        minor: libc::minor(rdev) as i64,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// The device nodes under `dir`, as containerd's `HostDevices` walks /dev: not into pts,
/// shm, fd, mqueue or the container managers' own directories, not /dev/console, not
/// through symlinks.
fn walk_devices(dir: &Path, depth: u32, out: &mut Vec<(PathBuf, HostDevice)>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let skip = [".lxc", ".lxd-mounts", ".udev", "fd", "mqueue", "pts", "shm"];
            if depth < 8 && !skip.iter().any(|s| name == *s) {
                walk_devices(&path, depth + 1, out)?;
            }
        } else if name != "console" {
            if let Some(d) = device_of(&meta) {
                out.push((path, d));
            }
        }
    }
    Ok(())
}

impl<F: Fn(&str, &str) -> Option<i32>> Host for SystemHost<F> {
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn device(&self, path: &Path) -> io::Result<Option<HostDevice>> {
        Ok(device_of(&std::fs::metadata(path)?))
    }

    fn mount_of(&self, path: &Path) -> io::Result<MountEntry> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        mount_containing(&info, path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "on no mount of /proc/self/mountinfo",
            )
        })
    }

    fn host_devices(&self) -> io::Result<Vec<(PathBuf, HostDevice)>> {
        let mut out = Vec::new();
        walk_devices(Path::new("/dev"), 0, &mut out)?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn all_capabilities(&self) -> Vec<String> {
        capsa::security::current_capabilities()
    }

    fn lsm_enabled(&self, lsm: Lsm) -> bool {
        lsm.enabled()
    }

    fn read_profile(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)?;
        capsa::internal::require_regular(&file, &path.display().to_string())?;
        let mut bytes = Vec::new();
        file.take(MAX_PROFILE + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_PROFILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_PROFILE} bytes"),
            ));
        }
        Ok(bytes)
    }

    fn cgroup_v2(&self) -> bool {
        capsa::cgroups::is_unified()
    }

    fn target_pid(&self, sandbox: &str, target: &str) -> Option<i32> {
        (self.target_pid)(sandbox, target)
    }
}

/// An image's rootfs: /etc/passwd and /etc/group resolved inside it (a symlink in the
/// image cannot point at the host's), checked to be regular files before they are opened
/// for reading (opening a device node can have effects), and read in bounded lines.
pub struct RootfsAccounts {
    root: OwnedFd,
}

impl RootfsAccounts {
    pub fn open(rootfs: &Path) -> io::Result<Self> {
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(rootfs)?;
        Ok(RootfsAccounts { root: root.into() })
    }
}

impl Accounts for RootfsAccounts {
    fn scan(&self, file: EtcFile, visit: &mut dyn FnMut(&[&str]) -> bool) -> io::Result<()> {
        use nix::fcntl::OFlag;
        let name = file.path();
        let handle = match capsa::internal::open_in_root(
            self.root.as_fd(),
            Path::new(name),
            OFlag::O_PATH | OFlag::O_CLOEXEC,
        ) {
            Ok(fd) => std::fs::File::from(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        capsa::internal::require_regular(&handle, name)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
        capsa::internal::scan(io::BufReader::new(file), name, |f| visit(f).then_some(()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw
40 22 0:35 / /mnt/private rw,relatime - tmpfs tmpfs rw
41 40 0:36 / /mnt/private/slave rw,relatime master:7 - tmpfs tmpfs rw
42 22 0:37 / /mnt/with\\040space rw shared:9 master:3 - tmpfs tmpfs rw
43 40 0:38 / /mnt/private rw shared:11 - tmpfs tmpfs rw
";

    #[test]
    fn the_deepest_and_topmost_mount_holds_a_path() {
        let m = |p: &str| mount_containing(MOUNTINFO, Path::new(p)).unwrap();
        assert_eq!(m("/etc/hosts").mountpoint, Path::new("/"));
        assert_eq!(m("/etc/hosts").optional, vec!["shared:1"]);
        assert_eq!(m("/mnt/private/slave/x").optional, vec!["master:7"]);
        // /mnt/private is mounted twice: the later mount is on top.
        assert_eq!(m("/mnt/private/y").optional, vec!["shared:11"]);
        let s = m("/mnt/with space/z");
        assert_eq!(s.mountpoint, Path::new("/mnt/with space"));
        assert_eq!(s.optional, vec!["shared:9", "master:3"]);
        // A path is not on a mount that only shares a name prefix.
        assert_eq!(m("/procfs").mountpoint, Path::new("/"));
    }
}
