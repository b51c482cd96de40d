//! A verified handle on /proc, and the paths through it that mount(2) and friends use.
//!
//! Mounts onto an O_PATH fd go through the magic link `/proc/<pid>/task/<tid>/fd/N`. That is
//! only as safe as the /proc it resolves in: after pivot_root it is the container's, which
//! the spec (a tmpfs or a bind of some other directory at /proc) or the image could fake, and
//! a mount over `/proc/<pid>/task/<tid>/fd` would send every later mount elsewhere
//! (CVE-2025-52881, the procfs redirects). So /proc is opened once, checked to be the root
//! of a real procfs (filesystem magic PROC_SUPER_MAGIC and inode PROC_ROOT_INO, which no
//! subdirectory bound in its place has), and our task's fd directory is reached from it by
//! openat2 with RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV: no link and
//! no mount crossed. Only `thread-self` itself is read with readlinkat, as libpathrs does:
//! its target is made by the kernel of this procfs, and only digits are accepted from it.
//!
//! Init runs alone in its mount namespace until execve, and the mounts it makes may not land
//! under /proc (see `mounts::check_proc_destination`), so a path checked here stays valid.

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// PROC_ROOT_INO in the kernel's fs/proc: the inode of every procfs's root directory.
const PROC_ROOT_INO: u64 = 1;

/// A failure opening or trusting procfs.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    /// Opening procfs failed.
    #[error("opening {}", path.display())]
    Open {
        /// The procfs path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a procfs.
    #[error("{} is not a procfs (filesystem magic {magic:#x}); refusing to use it", path.display())]
    NotProcfs {
        /// The path.
        path: PathBuf,
        /// The filesystem magic found.
        magic: i64,
    },
    /// The path is not a procfs mount's root.
    #[error(
        "{} is not the root of a procfs mount (inode {ino}, not {PROC_ROOT_INO}); refusing to use it",
        path.display()
    )]
    NotRoot {
        /// The path.
        path: PathBuf,
        /// The inode found.
        ino: u64,
    },
    /// thread-self points somewhere other than this thread.
    #[error("{}/thread-self points to {target:?}, not <pid>/task/<tid>", path.display())]
    ThreadSelf {
        /// The procfs path.
        path: PathBuf,
        /// Where it points.
        target: String,
    },
    /// Reaching a file inside procfs failed.
    #[error("reaching {} inside the verified procfs (no link, no mount crossed)", what.display())]
    Resolve {
        /// The file inside procfs.
        what: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}

/// A verified procfs root, and the path of our own task in it. The task is the thread that
/// opened it: [`ProcRoot::fd_path`] names descriptors in that thread's table (shared by all
/// threads of the process), so it is valid while that thread lives (init and exec processes
/// have one thread).
#[derive(Debug)]
pub struct ProcRoot {
    dir: OwnedFd,
    /// Where it was opened, for the paths handed to mount(2) ("/proc").
    path: PathBuf,
    /// "<pid>/task/<tid>", as this procfs names our task.
    task: PathBuf,
}

fn open_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProcfsError + '_ {
    move |source| ProcfsError::Open {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `fd` is the root directory of a procfs.
fn verify_root(fd: BorrowedFd, path: &Path) -> Result<(), ProcfsError> {
    let fs = nix::sys::statfs::fstatfs(fd).map_err(|e| open_err(path)(e.into()))?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(ProcfsError::NotProcfs {
            path: path.to_path_buf(),
            magic: fs.filesystem_type().0 as i64,
        });
    }
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| open_err(path)(e.into()))?;
    if st.st_ino != PROC_ROOT_INO {
        return Err(ProcfsError::NotRoot {
            path: path.to_path_buf(),
            ino: st.st_ino,
        });
    }
    Ok(())
}

/// "<pid>/task/<tid>" from the target of `thread-self`, or None if it is anything else.
fn task_of(target: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = target.split('/').collect();
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        [pid, "task", tid] if number(pid) && number(tid) => Some(PathBuf::from(target)),
        _ => None,
    }
}

impl ProcRoot {
    /// Opens and verifies the procfs at /proc (the host's before pivot_root, the
    /// container's after).
    pub fn open() -> Result<ProcRoot, ProcfsError> {
        Self::open_at(Path::new("/proc"))
    }

    fn open_at(path: &Path) -> Result<ProcRoot, ProcfsError> {
        // O_NOFOLLOW: a symlink at /proc is refused (ENOTDIR with O_DIRECTORY).
        let raw = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_err(path)(e.into()))?;
        // SAFETY: open returned a fresh descriptor that only we own.
        let dir = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        verify_root(dir.as_fd(), path)?;
        let target = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), "thread-self").map_err(|e| {
            ProcfsError::Resolve {
                what: path.join("thread-self"),
                source: e.into(),
            }
        })?;
        let target = target.to_string_lossy().into_owned();
        let task = task_of(&target).ok_or_else(|| ProcfsError::ThreadSelf {
            path: path.to_path_buf(),
            target: target.clone(),
        })?;
        let root = ProcRoot {
            dir,
            path: path.to_path_buf(),
            task,
        };
        // Our fd directory must be reachable without a link or a mount on the way: a mount
        // over it (or over the task) would redirect every path below.
        root.open_file(&root.task.join("fd"), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        Ok(root)
    }

    /// The verified procfs root, for openat-style access below it.
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Opens `rel` below the procfs: no symlink, no magic link, no mount crossed.
    pub fn open_file(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd, ProcfsError> {
        super::resolve::open_proc_file(self.dir.as_fd(), rel, flags).map_err(|source| {
            ProcfsError::Resolve {
                what: self.path.join(rel),
                source,
            }
        })
    }

    /// The magic-link path through which mount(2) reaches the object of `fd`:
    /// `/proc/<pid>/task/<tid>/fd/N`, in the verified procfs.
    pub fn fd_path(&self, fd: BorrowedFd) -> PathBuf {
        self.path
            .join(&self.task)
            .join("fd")
            .join(fd.as_raw_fd().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pid_task_tid_target_is_taken_from_thread_self() {
        assert_eq!(task_of("12/task/13"), Some(PathBuf::from("12/task/13")));
        for bad in [
            "",
            "12",
            "12/task",
            "../1/task/1",
            "12/task/13/..",
            "/12/task/13",
            "a/task/1",
        ] {
            assert_eq!(task_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_hosts_proc_is_a_verified_procfs_root() {
        let proc = ProcRoot::open().unwrap();
        let f = std::fs::File::open("/").unwrap();
        let p = proc.fd_path(f.as_fd());
        assert_eq!(std::fs::read_link(&p).unwrap(), PathBuf::from("/"));
    }

    #[test]
    fn a_procfs_subdirectory_or_another_filesystem_is_refused() {
        let e = ProcRoot::open_at(Path::new("/proc/sys")).unwrap_err();
        assert!(matches!(e, ProcfsError::NotRoot { .. }), "{e}");
        let e = ProcRoot::open_at(Path::new("/dev")).unwrap_err();
        assert!(matches!(e, ProcfsError::NotProcfs { .. }), "{e}");
    }
}
