//! A descriptor that wakes up when the OOM killer fires in a cgroup.

use super::{CgroupError, Manager};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

fn notifier_err(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::OomNotifier {
        path: path.to_path_buf(),
        source,
    }
}

impl Manager {
    /// A descriptor that becomes readable when the cgroup runs out of memory: on v1 an
    /// eventfd registered for memory.oom_control through cgroup.event_control; on v2 an
    /// inotify watch on memory.events (whose oom_kill counter the kernel updates). Read
    /// [`Manager::oom_kills`] after each wake-up to tell a kill from other changes.
    pub fn oom_notifier(&self) -> Result<OwnedFd, CgroupError> {
        match self {
            Manager::None(_) => Err(CgroupError::Disabled { what: "OOM events" }),
            Manager::V1(m) => {
                let dir =
                    m.controller_dir("memory")
                        .ok_or_else(|| CgroupError::ControllerMissing {
                            controller: "memory".into(),
                            file: "memory.oom_control".into(),
                        })?;
                let control_path = dir.join("memory.oom_control");
                let err = notifier_err(&control_path);
                // SAFETY: eventfd(0, flags) returns a new descriptor or -1.
                let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
                if efd < 0 {
                    return Err(err(std::io::Error::last_os_error()));
                }
                // SAFETY: the kernel returned a new descriptor that only we own.
                let efd = unsafe { OwnedFd::from_raw_fd(efd) };
                let control = std::fs::File::open(&control_path).map_err(err)?;
                let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
                std::fs::write(dir.join("cgroup.event_control"), &line).map_err(|source| {
                    CgroupError::Write {
                        path: dir.join("cgroup.event_control"),
                        value: line.clone(),
                        source,
                    }
                })?;
                Ok(efd)
            }
            Manager::V2(m) => {
                let events = m.dir().join("memory.events");
                let err = notifier_err(&events);
                // SAFETY: inotify_init1 returns a new descriptor or -1.
                let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
                if fd < 0 {
                    return Err(err(std::io::Error::last_os_error()));
                }
                // SAFETY: the kernel returned a new descriptor that only we own.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let path =
                    std::ffi::CString::new(events.clone().into_os_string().into_encoded_bytes())
                        .map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
                // SAFETY: a valid inotify fd and NUL-terminated path.
                if unsafe {
                    libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY)
                } < 0
                {
                    return Err(notifier_err(&events)(std::io::Error::last_os_error()));
                }
                Ok(fd)
            }
        }
    }
}
