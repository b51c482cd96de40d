//! Switching the process's root to the container's rootfs.

use super::RootfsError;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use std::os::fd::AsRawFd;
use std::path::Path;

fn step<'a>(step: &'static str, rootfs: &'a Path) -> impl FnOnce(nix::Error) -> RootfsError + 'a {
    move |e| RootfsError::Enter {
        step,
        rootfs: rootfs.to_path_buf(),
        source: e.into(),
    }
}

/// Before `--no-pivot`'s MS_MOVE + chroot, which leave the old root in the namespace: every
/// whole procfs and sysfs mount outside the rootfs is unmounted (its unmount kept from the
/// host by making it a slave first), or, where the kernel refuses (mounts locked by a user
/// namespace), covered with an empty tmpfs. As runc's msMoveRoot: a host procfs left there
/// is reachable from a chroot escape, and is what lets the kernel permit a fresh procfs.
fn hide_pseudo_filesystems(rootfs: &Path) -> Result<(), RootfsError> {
    let io = |step: &'static str| {
        move |e: std::io::Error| RootfsError::Enter {
            step,
            rootfs: rootfs.to_path_buf(),
            source: e,
        }
    };
    // Where the kernel has the rootfs (we are in it), as mountinfo spells it.
    let here = std::fs::read_link("/proc/self/cwd").map_err(io("reading /proc/self/cwd"))?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("reading /proc/self/mountinfo"))?;
    for path in super::mountinfo::full_pseudo_mounts(&text, &here) {
        let err = |step: &'static str| {
            let path = path.clone();
            move |e: nix::Error| RootfsError::HideOldRoot {
                step,
                path,
                source: e.into(),
            }
        };
        match mount(
            None::<&str>,
            &path,
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => {}
            // Gone with a mount above it that was unmounted first.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(err("making a slave of")(e)),
        }
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EPERM) => mount(
                Some("tmpfs"),
                &path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )
            .map_err(err("covering with a tmpfs"))?,
            Err(e) => return Err(err("unmounting")(e)),
        }
    }
    Ok(())
}

/// pivot_root(".", ".") then unmount the old root stacked beneath: no temporary directory
/// is needed inside a possibly read-only rootfs (the same trick as runc). With `no_pivot`
/// (for a rootfs on ramfs, where pivot_root is refused): MS_MOVE onto "/" and chroot.
pub fn enter(rootfs: &Path, no_pivot: bool) -> Result<(), RootfsError> {
    let io = |e: std::io::Error| RootfsError::Enter {
        step: "opening",
        rootfs: rootfs.to_path_buf(),
        source: e,
    };
    if no_pivot {
        chdir(rootfs).map_err(step("chdir", rootfs))?;
        hide_pseudo_filesystems(rootfs)?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(step("moving the rootfs mount", rootfs))?;
        chroot(".").map_err(step("chroot", rootfs))?;
        chdir("/").map_err(step("chdir", rootfs))?;
        return Ok(());
    }
    let old_root = std::fs::File::open("/").map_err(io)?;
    let new_root = std::fs::File::open(rootfs).map_err(io)?;
    fchdir(new_root.as_raw_fd()).map_err(step("chdir", rootfs))?;
    pivot_root(".", ".").map_err(step("pivot_root", rootfs))?;
    fchdir(old_root.as_raw_fd()).map_err(step("chdir to the old root", rootfs))?;
    // The old root must not propagate the unmount to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step("making the old root a slave", rootfs))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("unmounting the old root", rootfs))?;
    chdir("/").map_err(step("chdir", rootfs))?;
    Ok(())
}

/// Without a mount namespace of its own the container shares the runtime's, whose mounts
/// are not ours to change: no bind of the rootfs, no pivot, only chroot into it (as runc
/// does when the config has no mount namespace).
pub fn chroot_only(rootfs: &Path) -> Result<(), RootfsError> {
    chdir(rootfs).map_err(step("chdir", rootfs))?;
    chroot(".").map_err(step("chroot", rootfs))?;
    chdir("/").map_err(step("chdir", rootfs))?;
    Ok(())
}

/// The root directory of process `pid` (`/proc/<pid>/root`), for [`chroot_into`].
pub fn open_root_of(pid: nix::unistd::Pid) -> Result<std::fs::File, RootfsError> {
    let path = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    std::fs::File::open(&path).map_err(|source| RootfsError::InitRoot { path, source })
}

/// chroot into the directory `root` (an exec joining a container that has no mount
/// namespace of its own, whose init is chrooted in ours).
pub fn chroot_into(root: std::os::fd::BorrowedFd) -> Result<(), RootfsError> {
    let here = Path::new("(the container's root)");
    fchdir(root.as_raw_fd()).map_err(step("chdir", here))?;
    chroot(".").map_err(step("chroot", here))?;
    chdir("/").map_err(step("chdir", here))?;
    Ok(())
}
