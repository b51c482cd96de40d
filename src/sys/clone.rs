//! clone3, the guard that owns a child pid, and how a child ended.

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// struct clone_args of <linux/sched.h> (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

pub enum Forked {
    Child,
    Parent(Pid),
}

/// Forks with `flags` (new namespaces, CLONE_PARENT). Behaves like fork(2): the child returns
/// `Forked::Child` on a copy of the address space. capsa calls this single-threaded.
pub fn clone_process(flags: CloneFlags, parent: bool) -> io::Result<Forked> {
    clone_into(flags, parent, None)
}

/// As [`clone_process`], and with `cgroup` (a cgroup v2 directory) the child is born in that
/// cgroup (CLONE_INTO_CGROUP, 5.7+): it is never charged to the runtime's cgroup.
pub fn clone_into(
    flags: CloneFlags,
    parent: bool,
    cgroup: Option<BorrowedFd>,
) -> io::Result<Forked> {
    let mut all = flags.bits() as u64;
    if parent {
        all |= libc::CLONE_PARENT as u64;
    }
    // With CLONE_PARENT the kernel requires exit_signal 0: the child inherits the caller's
    // own exit signal (SIGCHLD for the stage), which goes to the shared parent.
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let mut args = CloneArgs {
        flags: all,
        exit_signal: if parent { 0 } else { libc::SIGCHLD as u64 },
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM duplicates the process like fork; the args struct is
    // valid for the call and its size is passed. The caller is single-threaded, so no lock
    // can be held by a thread that does not exist in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// Ends a forked child without running the parent's destructors or atexit handlers, which
/// belong to the parent's copy of the process (what crun and youki do too).
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Owns a child's pid: unless disarmed, dropping it kills and reaps the child, so a create
/// that fails half way leaves no process behind.
pub struct ChildGuard {
    pid: Pid,
    armed: bool,
}

impl ChildGuard {
    /// Guards `pid`: killed and reaped on drop.
    pub fn new(pid: Pid) -> Self {
        ChildGuard { pid, armed: true }
    }

    /// The guarded pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Gives up ownership: the child lives on.
    pub fn disarm(mut self) -> Pid {
        self.armed = false;
        self.pid
    }

    /// Waits for the child and returns its status; the guard is spent.
    pub fn wait(mut self) -> io::Result<WaitStatus> {
        self.armed = false;
        loop {
            match waitpid(self.pid, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => return other.map_err(Into::into),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// "exit status 1", "killed by signal 9": a wait status as a user reads it.
pub fn describe_status(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by signal {}", *sig as i32),
        other => format!("{other:?}"),
    }
}

/// The shell convention capsa `run` uses for its own exit status: code, or 128 + signal.
pub fn exit_code(status: &WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => *code,
        WaitStatus::Signaled(_, sig, _) => 128 + *sig as i32,
        _ => 255,
    }
}

/// How the exited process of `pidfd` ended, as `": exit status 1"`, without reaping it
/// (WNOWAIT), so that its parent still collects the status; empty when the caller is not
/// its parent (ECHILD) or it has not exited.
pub fn exit_cause(pidfd: &OwnedFd) -> String {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    match waitid(Id::PIDFd(pidfd.as_fd()), flags) {
        Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
            format!(": {}", describe_status(&status))
        }
        _ => String::new(),
    }
}
