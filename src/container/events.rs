//! `events`: resource statistics, and OOM kills as they happen.

use super::{Container, ContainerError, Status};
use crate::cgroups::stats::Stats;
use crate::process::clone::pidfd_open;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// One line of `capsa events`.
#[derive(Debug, serde::Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Stats>,
}

impl Container {
    fn no_events(&self) -> crate::Error {
        ContainerError::NoEvents {
            id: self.id().to_string(),
        }
        .into()
    }

    /// The statistics of a created, running or paused container; a stopped one has none.
    pub fn stats_event(&self) -> crate::Result<Event> {
        if self.live_pid().is_none() {
            return Err(self.no_events());
        }
        self.stats_now()
    }

    /// Statistics without the liveness check: `watch` knows init was alive when it began,
    /// and reports its exit itself.
    fn stats_now(&self) -> crate::Result<Event> {
        Ok(Event {
            kind: "stats",
            id: self.id().to_string(),
            data: Some(self.cgroup()?.stats()?),
        })
    }

    /// Calls `emit` with a stats event every `interval` and an "oom" event whenever the OOM
    /// killer fires in the container, until the container stops. OOM kills are noticed through
    /// inotify on the cgroup's OOM counter file, not by polling.
    pub fn watch(&self, interval: Duration, emit: &mut dyn FnMut(&Event)) -> crate::Result<()> {
        let Some(pid) = self.live_pid() else {
            return Err(self.no_events());
        };
        let cg = self.cgroup()?;
        let pidfd = pidfd_open(Pid::from_raw(pid.as_raw())).map_err(ContainerError::Wait)?;
        let notifier = oom_notifier(&cg)?;
        let mut ooms = cg.oom_kills();
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                emit(&self.stats_now()?);
                next += interval;
            }
            let wait = next.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(wait.as_millis() as i32).unwrap_or(PollTimeout::MAX);
            let exited = {
                let mut fds = [
                    PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(notifier.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, ms) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(ContainerError::Wait(e.into()).into()),
                }
                fds[0].revents().is_some_and(|r| !r.is_empty())
            };
            // Drain the notification; the counter says whether it was a kill.
            let mut buf = [0u8; 4096];
            let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&notifier), &mut buf);
            let now = cg.oom_kills();
            if now > ooms {
                ooms = now;
                emit(&Event {
                    kind: "oom",
                    id: self.id().to_string(),
                    data: None,
                });
            }
            if exited || self.status() == Status::Stopped {
                return Ok(());
            }
        }
    }
}

/// A descriptor that becomes readable when the cgroup runs out of memory: on v1 an eventfd
/// registered for memory.oom_control through cgroup.event_control; on v2 an inotify watch on
/// memory.events (whose oom_kill counter the kernel updates).
fn oom_notifier(cg: &crate::cgroups::Manager) -> crate::Result<OwnedFd> {
    let err = |e: std::io::Error| crate::Error::from(ContainerError::Wait(e));
    match cg {
        crate::cgroups::Manager::None(_) => {
            Err(crate::cgroups::CgroupError::Disabled { what: "OOM events" }.into())
        }
        crate::cgroups::Manager::V1(m) => {
            let dir = m.controller_dir("memory").ok_or_else(|| {
                crate::cgroups::CgroupError::ControllerMissing {
                    controller: "memory".into(),
                    file: "memory.oom_control".into(),
                }
            })?;
            // SAFETY: eventfd(0, flags) returns a new descriptor or -1.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if efd < 0 {
                return Err(err(std::io::Error::last_os_error()));
            }
            // SAFETY: the kernel returned a new descriptor that only we own.
            let efd = unsafe { OwnedFd::from_raw_fd(efd) };
            let control = std::fs::File::open(dir.join("memory.oom_control")).map_err(err)?;
            let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
            std::fs::write(dir.join("cgroup.event_control"), &line).map_err(|source| {
                crate::cgroups::CgroupError::Write {
                    path: dir.join("cgroup.event_control"),
                    value: line.clone(),
                    source,
                }
            })?;
            Ok(efd)
        }
        crate::cgroups::Manager::V2(m) => {
            // SAFETY: inotify_init1 returns a new descriptor or -1.
            let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
            if fd < 0 {
                return Err(err(std::io::Error::last_os_error()));
            }
            // SAFETY: the kernel returned a new descriptor that only we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let path = std::ffi::CString::new(
                m.dir()
                    .join("memory.events")
                    .into_os_string()
                    .into_encoded_bytes(),
            )
            .map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
            // SAFETY: a valid inotify fd and NUL-terminated path.
            if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) }
                < 0
            {
                return Err(err(std::io::Error::last_os_error()));
            }
            Ok(fd)
        }
    }
}
