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
