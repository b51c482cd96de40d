//! `run` in the foreground while the container is still being set up (create, then start up
//! to the container process's execve and the poststart hooks).
//!
//! A terminating signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT) cannot be forwarded then: init is
//! not yet the container's process, and as pid 1 of its namespace it ignores any signal it
//! has no handler for. Holding it until the setup ends could mean forever (a hook without a
//! timeout). runc holds it and forwards it after start (and loses it while a startContainer
//! hook runs). capsa gives up instead: a watcher thread, woken by the signal, kills every
//! child of the runtime (stage, init, hooks) until the setup has failed, and `run` deletes
//! what was made and returns 128+N, the status the caller would have seen had the container
//! died of the signal. Any other signal stays pending, to be forwarded once the container's
//! process runs (as runc does).
//!
//! `create` and `run --detach` ([`abortable`]) give up the same way, with
//! [`ContainerError::Interrupted`] once everything is undone: killed in the middle by the
//! signal's default action, they left init's cgroups, the state directory and the hooks.

use super::{Container, ContainerError};
use crate::sys::pidfd::pidfd_open;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The signals that end a `run` still setting up.
const ABORTING: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

fn aborting_set() -> SigSet {
    let mut set = SigSet::empty();
    for sig in ABORTING {
        set.add(sig);
    }
    set
}

/// Runs `setup` (a create, or a create and start) with the terminating signals blocked in
/// this thread and watched. If one comes, `setup`'s children are killed, the container it
/// made (if it got that far) is deleted, and the result is [`ContainerError::Interrupted`].
/// The mask is restored afterwards: a second such signal, held meanwhile, then ends us.
pub(super) fn abortable(
    setup: impl FnOnce() -> crate::Result<Container>,
) -> crate::Result<Container> {
    let old = aborting_set()
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .map_err(|e| ContainerError::SetupWatch(e.into()))?;
    let result = SetupWatch::start().and_then(|watch| {
        let made = setup();
        match watch.finish() {
            None => made,
            Some(signal) => {
                if let Ok(c) = made {
                    let _ = c.delete(true);
                }
                Err(ContainerError::Interrupted { signal }.into())
            }
        }
    });
    let _ = old.thread_set_mask();
    result
}

/// How often the children are killed again once aborting: a child the setup starts after
/// the first round (the next hook of a list) is gone within this time.
const AGAIN_MS: u16 = 10;

/// The watcher thread. It must be started with [`ABORTING`] blocked in the calling thread
/// (the thread inherits the mask; a signalfd sees only blocked signals).
pub(super) struct SetupWatch {
    /// Write end of a pipe: closing it tells the thread the setup is over.
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<Option<Signal>>>,
}

impl SetupWatch {
    pub(super) fn start() -> crate::Result<Self> {
        let sfd = SignalFd::with_flags(&aborting_set(), SfdFlags::SFD_CLOEXEC)
            .map_err(|e| ContainerError::SetupWatch(e.into()))?;
        let (stopped, stop) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ContainerError::SetupWatch(e.into()))?;
        // The setup clones init without fork's atfork handlers: the thread must be parked in
        // poll, holding no lock (malloc's among them) that init would inherit taken, before
        // the setup begins.
        let parked = std::sync::Arc::new(std::sync::Barrier::new(2));
        let ready = parked.clone();
        let thread = std::thread::Builder::new()
            .name("setup-watch".into())
            .spawn(move || {
                ready.wait();
                let aborted = watch(sfd, stopped);
                // Freed here, once the setup is over, not while it may be cloning.
                drop(ready);
                aborted
            })
            .map_err(ContainerError::SetupWatch)?;
        parked.wait();
        Ok(SetupWatch {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Ends the watch; the signal that aborted the setup, if one did (the setup has failed
    /// then, or its container process been killed).
    pub(super) fn finish(mut self) -> Option<Signal> {
        self.end()
    }

    fn end(&mut self) -> Option<Signal> {
        drop(self.stop.take());
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl Drop for SetupWatch {
    fn drop(&mut self) {
        self.end();
    }
}

fn readable(fd: &PollFd) -> bool {
    fd.revents().is_some_and(|r| !r.is_empty())
}

fn watch(sfd: SignalFd, stopped: OwnedFd) -> Option<Signal> {
    let sig = loop {
        let mut fds = [
            PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
        // Setup over: a signal not yet read stays pending, for `run` to forward.
        if readable(&fds[0]) {
            return None;
        }
        if let Ok(Some(info)) = sfd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                break sig;
            }
        }
    };
    loop {
        kill_children();
        let mut fds = [PollFd::new(stopped.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(AGAIN_MS)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            _ => return Some(sig),
        }
    }
}

/// The parent pid in /proc/<pid>/stat (the field after the state, past the last ')').
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// SIGKILLs every child of this process. Each is pinned by a pidfd before its parent is
/// checked, so the signal cannot reach a process that took the pid of a reaped child.
fn kill_children() {
    let me = nix::unistd::getpid().as_raw();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        if parent_of(pid) != Some(me) {
            continue;
        }
        let Ok(fd) = pidfd_open(Pid::from_raw(pid)) else {
            continue;
        };
        if parent_of(pid) == Some(me) {
            // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }
}
