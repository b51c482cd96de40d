//! The exec helper, `capsa-cri-monitor exec`: one short-lived single-threaded process per exec
//! (see the parent module for why and for the sequence).
//!
//! Its stdin, stdout and stderr are the process's (the daemon's pipes, or /dev/null); its
//! descriptor 3 is the socket to the daemon ([`proto`](super::proto)). It runs capsa's exec
//! with those three as the process's stdio (its own become /dev/null, so the process's are
//! the only writers), reports the pid, then waits on a pidfd for the exit while watching the
//! socket: a "kill" line, the daemon's end closing (its session dropped, or the daemon gone)
//! and SIGTERM/SIGINT/SIGHUP to the helper each SIGKILL the process's whole process group
//! (capsa's exec makes the process a session leader, so what it started goes too). Then the
//! process is reaped and its exit code reported.

use super::proto::{Report, Start, CONTROL_FD, MAX_LINE};
use crate::monitor::is_open;
use crate::monitor::server::{receive_terminal, sys, sys_io, SetupError};
use capsa::error::RemoteError;
use capsa::internal::{exit_code, ChildGuard};
use capsa::{ExecOptions, Runtime, StdioFds};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

/// Signals to the helper that end the exec.
const ENDING: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// `capsa-cri-monitor exec`: runs one exec; 0 once its exit is reported.
pub fn main() -> i32 {
    if !is_open(CONTROL_FD) {
        eprintln!(
            "capsa-cri-monitor exec: descriptor {CONTROL_FD} (the daemon's socket) is not open"
        );
        return 2;
    }
    // SAFETY: our starter handed this descriptor over; nothing else here owns it.
    let ctl = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    // Not for the process (capsa closes what it does not pass on anyway).
    let _ = nix::fcntl::fcntl(
        ctl.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let mut reader = BufReader::new(&ctl);
    let outcome = read_start(&mut reader).and_then(|start| {
        // Anything the daemon sent after its request is a kill (or the end of its input).
        let killed = !reader.buffer().is_empty();
        Exec::start(&start, &ctl).map(|exec| (exec, killed))
    });
    match outcome {
        Ok((exec, killed)) => exec.run(&ctl, killed),
        Err(e) => {
            let report = Report::Failed {
                kind: e.kind(),
                error: RemoteError::from_error(&e),
            };
            let _ = send(&ctl, &report.line(), &[]);
            1
        }
    }
}

fn read_start(reader: &mut BufReader<&UnixStream>) -> Result<Start, SetupError> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .map_err(sys_io("reading the exec request"))?;
    serde_json::from_slice(&line).map_err(|e| SetupError::Sys {
        step: "decoding the exec request",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// A process started, not yet reaped: the guard kills and reaps it if the helper fails.
struct Exec {
    process: ChildGuard,
    pidfd: OwnedFd,
    signals: SignalFd,
}

/// A private directory for the console socket capsa connects to; removed on drop.
struct ConsoleDir(PathBuf);

impl Drop for ConsoleDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Exec {
    fn start(start: &Start, ctl: &UnixStream) -> Result<Exec, SetupError> {
        let mut mask = SigSet::empty();
        for s in ENDING {
            mask.add(s);
        }
        // Blocked before the exec, so one sent meanwhile waits in the signalfd; the process
        // unblocks its own.
        mask.thread_block().map_err(sys("blocking signals"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(sys("creating a signalfd"))?;
        let terminal = start.process.terminal().unwrap_or(false);
        let stdio = if terminal {
            None
        } else {
            let dup = |fd: RawFd| {
                // SAFETY: 0, 1 and 2 are open (our starter set them); we only duplicate them.
                unsafe { BorrowedFd::borrow_raw(fd) }
                    .try_clone_to_owned()
                    .map_err(sys_io("taking the process's stdio"))
            };
            Some(StdioFds::new(dup(0)?, dup(1)?, dup(2)?))
        };
        // Our own 0, 1 and 2 become /dev/null: the process's ends are then its own, and its
        // output ends when it (and what it started) is gone.
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(sys_io("opening /dev/null"))?;
        for target in 0..3 {
            nix::unistd::dup2(null.as_raw_fd(), target).map_err(sys("replacing our stdio"))?;
        }
        let mut opts = ExecOptions::new();
        opts.stdio = stdio;
        let console = if terminal {
            let template = std::env::temp_dir().join("capsa-cri-exec.XXXXXX");
            let dir = ConsoleDir(
                nix::unistd::mkdtemp(&template).map_err(sys("making the console directory"))?,
            );
            let path = dir.0.join("console");
            let listener = UnixListener::bind(&path).map_err(|source| SetupError::Bind {
                path: path.clone(),
                source,
            })?;
            opts.console_socket = Some(path.clone());
            Some((dir, listener, path))
        } else {
            None
        };
        let container = Runtime::new(&start.root).load(&start.id)?;
        // We are single-threaded: capsa clones from here, and the process is our child.
        let pid = container.exec_detached(&start.process, &opts)?;
        let process = ChildGuard::new(pid);
        drop(opts); // our copies of its stdio
        let pidfd = capsa::internal::pidfd_open(pid).map_err(sys_io("pidfd_open"))?;
        let master = match &console {
            Some((_, listener, path)) => Some(receive_terminal(listener, path)?),
            None => None,
        };
        drop(console);
        let mut fds = vec![pidfd.as_raw_fd()];
        fds.extend(master.as_ref().map(|m| m.as_raw_fd()));
        // A daemon gone meanwhile is seen in `run` as the end of the socket.
        let _ = send(ctl, &Report::Started { pid: pid.as_raw() }.line(), &fds);
        Ok(Exec {
            process,
            pidfd,
            signals,
        })
    }

    /// Waits for the exit, killing the process when asked; reports the exit code.
    fn run(self, ctl: &UnixStream, mut killed: bool) -> i32 {
        let pid = self.process.pid();
        let mut ctl_open = true;
        if killed {
            kill_group(pid);
        }
        loop {
            let mut fds = vec![
                PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            ];
            // Left out once closed: poll reports a hang-up whatever it is asked.
            if ctl_open {
                fds.push(PollFd::new(ctl.as_fd(), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("capsa-cri-monitor exec: poll: {e}");
                    kill_group(pid);
                    break;
                }
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let (exited, signalled, asked) = (ready(0), ready(1), ready(2));
            // A kill is handled before an exit seen at the same time: the daemon asks, then
            // kills the process itself through its pidfd, and the group still has to go.
            if asked {
                let mut buf = [0u8; 64];
                match (&*ctl).read(&mut buf) {
                    Ok(0) | Err(_) => ctl_open = false,
                    // Only kill requests are sent.
                    Ok(_) => {}
                }
                killed = true;
            }
            if signalled {
                while let Ok(Some(_)) = self.signals.read_signal() {}
                killed = true;
            }
            if killed {
                kill_group(pid);
            }
            if exited {
                break;
            }
        }
        if killed {
            wait_group_gone(pid);
        }
        match self.process.wait() {
            Ok(status) => {
                let _ = send(
                    ctl,
                    &Report::Exited {
                        code: exit_code(&status),
                    }
                    .line(),
                    &[],
                );
                0
            }
            Err(e) => {
                eprintln!("capsa-cri-monitor exec: waiting for {pid}: {e}");
                1
            }
        }
    }
}

/// SIGKILL to the process's group and to the process itself (in case it left the group).
/// Only while it is our unreaped child: its pid, and so its group's id, cannot be reused.
fn kill_group(pid: Pid) {
    let _ = nix::sys::signal::kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
}

/// How long the rest of a killed process group is waited for: a safety net for a process
/// stuck in the kernel (uninterruptible sleep), not an expected duration.
const GROUP_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// After the group's SIGKILL: waits until every other member has exited (became a zombie
/// of the container's init, or was reaped), so that a kill answered means the processes are
/// gone, not dying. The leader is still our unreaped child, so the group's id is not reused
/// meanwhile; each member is checked to be in the group after its pidfd is taken, so a pid
/// reused in between is not waited for.
fn wait_group_gone(leader: Pid) {
    let pidfds: Vec<OwnedFd> = group_members(leader)
        .into_iter()
        .filter_map(|pid| {
            let fd = capsa::internal::pidfd_open(pid).ok()?;
            (process_group(pid) == Some(leader)).then_some(fd)
        })
        .collect();
    let deadline = std::time::Instant::now() + GROUP_EXIT_WAIT;
    for fd in &pidfds {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO);
        let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        while let Err(Errno::EINTR) = nix::poll::poll(&mut p, timeout) {}
    }
}

/// The processes of `leader`'s process group but the leader, from /proc.
fn group_members(leader: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|&pid| pid != leader && process_group(pid) == Some(leader))
        .collect()
}

/// The process group of `pid` (field 5 of /proc/PID/stat, after the command's ")").
fn process_group(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(2)?.parse().ok().map(Pid::from_raw)
}

/// One report, with `fds` attached to its first byte.
fn send(ctl: &UnixStream, line: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let n = loop {
        match sendmsg::<()>(
            ctl.as_raw_fd(),
            &[IoSlice::new(line)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    (&*ctl).write_all(&line[n..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_group_is_read_from_proc() {
        assert_eq!(
            process_group(nix::unistd::getpid()),
            Some(nix::unistd::getpgrp())
        );
        assert_eq!(process_group(Pid::from_raw(i32::MAX)), None);
    }
}
