//! `run`: create and start, then (in the foreground) wait for the container's init while
//! forwarding signals to it, and delete it; capsa's exit status is the container's.

use super::abort::{self, SetupWatch};
use super::relay;
use super::{ContainerError, CreateOptions, Runtime};
use crate::process::{exit_code, ProcessError};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, BorrowedFd};

/// Signals capsa keeps for itself instead of forwarding: the ones the kernel sends for a
/// fault of our own, and SIGCHLD, which tells us init has exited.
fn is_forwarded(sig: Signal) -> bool {
    !matches!(
        sig,
        Signal::SIGCHLD
            | Signal::SIGKILL
            | Signal::SIGSTOP
            | Signal::SIGSEGV
            | Signal::SIGBUS
            | Signal::SIGILL
            | Signal::SIGFPE
            | Signal::SIGTRAP
            | Signal::SIGABRT
            | Signal::SIGSYS
    )
}

pub(super) fn blocked_set() -> SigSet {
    let mut set = SigSet::empty();
    for sig in Signal::iterator().filter(|s| is_forwarded(*s) || *s == Signal::SIGCHLD) {
        set.add(sig);
    }
    set
}

/// Waits for `pid` (our child) to exit, forwarding every other signal to it. With a console
/// of ours, SIGWINCH resizes the pty instead (the kernel then signals the container).
pub(super) fn forward_until_exit(
    pid: Pid,
    set: &SigSet,
    console: Option<BorrowedFd>,
) -> crate::Result<i32> {
    loop {
        if let Some(code) = reap(pid)? {
            return Ok(code);
        }
        let sig = set.wait().map_err(|e| ProcessError::Signals(e.into()))?;
        match (sig, console) {
            (Signal::SIGCHLD, _) => {}
            (Signal::SIGWINCH, Some(master)) => relay::copy_window_size(master),
            _ => {
                let _ = kill(pid, sig);
            }
        }
    }
}

/// The status of a process killed by `sig`.
fn killed_by(sig: Signal) -> i32 {
    128 + sig as i32
}

fn reap(pid: Pid) -> crate::Result<Option<i32>> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => Ok(None),
        Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
            Ok(Some(exit_code(&status)))
        }
        Ok(_) => Ok(None),
        Err(nix::errno::Errno::EINTR) => Ok(None),
        Err(e) => Err(ContainerError::Wait(e.into()).into()),
    }
}

impl Runtime {
    /// Creates and starts `id`. Detached, returns 0 once it runs. In the foreground, returns
    /// the container's exit status (128+N for a signal) after deleting it, or, with `keep`
    /// (runc's `run --keep`), leaving it stopped for `state` and `delete`.
    pub fn run(
        &self,
        id: &str,
        opts: &CreateOptions,
        detach: bool,
        keep: bool,
    ) -> crate::Result<i32> {
        if detach {
            abort::abortable(|| {
                let c = self.create_with_console(id, opts, None)?;
                match c.start() {
                    Ok(()) => Ok(c),
                    Err(e) => {
                        let _ = c.delete(true);
                        Err(e)
                    }
                }
            })?;
            return Ok(0);
        }
        // Block before the clone so no signal (and no SIGCHLD) is lost; init unblocks its own.
        let set = blocked_set();
        let old = set
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(|e| ProcessError::Signals(e.into()))?;
        let result = (|| {
            // Our own console socket, used only if the process wants a terminal and the
            // caller gave no --console-socket: then capsa is the console.
            let (ours, theirs) = match opts.console_socket {
                None => {
                    let (a, b) = relay::socket_pair()?;
                    (Some(a), Some(b))
                }
                Some(_) => (None, None),
            };
            let watch = SetupWatch::start()?;
            let c = match self.create_with_console(id, opts, theirs) {
                Ok(c) => c,
                // The create cleaned up after itself.
                Err(e) => return watch.finish().map_or(Err(e), |sig| Ok(killed_by(sig))),
            };
            let terminal = c
                .stored()
                .process
                .as_ref()
                .and_then(|p| p.terminal())
                .unwrap_or(false);
            let console = match ours
                .filter(|_| terminal)
                .map(|s| relay::Console::attach(&s))
            {
                Some(Err(e)) => {
                    let aborted = watch.finish();
                    let _ = c.delete(true);
                    return aborted.map_or(Err(e.into()), |sig| Ok(killed_by(sig)));
                }
                Some(Ok(console)) => Some(console),
                None => None,
            };
            let pid = Pid::from_raw(c.stored().pid);
            let master = console.as_ref().map(|c| c.master.as_fd());
            let started = c.start();
            // The watch ends before delete: its poststop hooks are not to be killed.
            let aborted = watch.finish();
            let outcome = match aborted {
                Some(sig) => Ok(killed_by(sig)),
                None => started.and_then(|()| forward_until_exit(pid, &set, master)),
            };
            // Kept only when it ran to its end; a run undone by a signal is deleted.
            let deleted = match (keep, aborted, &outcome) {
                (true, None, Ok(_)) => Ok(()),
                _ => c.delete(true),
            };
            if aborted.is_some() {
                // Killed, and waited for by delete: reap it, as forward_until_exit would.
                let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
            }
            drop(console); // waits for the copy to drain, then restores the terminal
            let code = outcome?;
            deleted?;
            Ok(code)
        })();
        let _ = old.thread_set_mask();
        result
    }
}
