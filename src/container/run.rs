//! `run`: create and start, then (in the foreground) wait for the container's init while
//! forwarding signals to it, and delete it; capsa's exit status is the container's.

use super::{ContainerError, CreateOptions, Runtime};
use crate::process::{exit_code, ProcessError};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

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

/// Waits for `pid` (our child) to exit, forwarding every other signal to it.
pub(super) fn forward_until_exit(pid: Pid, set: &SigSet) -> crate::Result<i32> {
    loop {
        if let Some(code) = reap(pid)? {
            return Ok(code);
        }
        let sig = set.wait().map_err(|e| ProcessError::Signals(e.into()))?;
        if sig != Signal::SIGCHLD {
            let _ = kill(pid, sig);
        }
    }
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
    /// the container's exit status (128+N for a signal) after deleting it.
    pub fn run(&self, id: &str, opts: &CreateOptions, detach: bool) -> crate::Result<i32> {
        if detach {
            let c = self.create(id, opts)?;
            if let Err(e) = c.start() {
                let _ = c.delete(true);
                return Err(e);
            }
            return Ok(0);
        }
        // Block before the clone so no signal (and no SIGCHLD) is lost; init unblocks its own.
        let set = blocked_set();
        let old = set
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(|e| ProcessError::Signals(e.into()))?;
        let result = (|| {
            let c = self.create(id, opts)?;
            let pid = Pid::from_raw(c.stored().pid);
            let outcome = c.start().and_then(|()| forward_until_exit(pid, &set));
            let deleted = c.delete(true);
            let code = outcome?;
            deleted?;
            Ok(code)
        })();
        let _ = old.thread_set_mask();
        result
    }
}
