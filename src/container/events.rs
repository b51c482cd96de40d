//! `events`: resource statistics, and OOM kills as they happen.

use super::{Container, ContainerError, Status};
use crate::cgroups::stats::Stats;
use crate::sys::pidfd::pidfd_open;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// One line of `capsa events`.
#[derive(Debug, serde::Serialize)]
pub struct Event {
    /// "stats", "oom", ... (the JSON `type`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The container's id.
    pub id: String,
    /// The cgroup statistics, for a "stats" event.
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
        let notifier = cg.oom_notifier()?;
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
