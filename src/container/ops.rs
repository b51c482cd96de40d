//! start, kill, delete.

use super::claim;
use super::lock::DirLock;
use super::state::{self, Status, StoredState};
use super::{Container, ContainerError};
use crate::hooks;
use crate::sys::pidfd::pidfd_open;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

/// A signal `kill` sends: any number from 0 to SIGRTMAX. 0 sends nothing and only checks
/// that the container runs (kill(2)); the realtime ones are why this is not nix's `Signal`,
/// which has none of them: systemd in a container stops on SIGRTMIN+3, which podman sends
/// as 37.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillSignal(i32);

impl KillSignal {
    /// SIGKILL.
    pub const KILL: KillSignal = KillSignal(libc::SIGKILL);

    /// The signal numbered `n`, if there is one (0 included).
    pub fn from_number(n: i32) -> Option<Self> {
        (0..=libc::SIGRTMAX()).contains(&n).then_some(KillSignal(n))
    }

    /// The signal number.
    pub fn number(self) -> i32 {
        self.0
    }
}

impl From<Signal> for KillSignal {
    fn from(s: Signal) -> Self {
        KillSignal(s as i32)
    }
}

/// "KILL", "SIGKILL", "kill", "9", and the realtime ones as crun names them: "RTMIN",
/// "RTMIN+3", "SIGRTMAX-1" (glibc's SIGRTMIN, 34, as in every C program) or "37".
pub fn parse_signal(s: &str) -> Result<KillSignal, ContainerError> {
    let unknown = || ContainerError::UnknownSignal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return KillSignal::from_number(n).ok_or_else(unknown);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = if let Some(rest) = name.strip_prefix("RTMIN") {
        realtime(libc::SIGRTMIN(), rest, '+')
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        realtime(libc::SIGRTMAX(), rest, '-')
    } else {
        format!("SIG{name}")
            .parse::<Signal>()
            .ok()
            .map(|sig| sig as i32)
    };
    number.and_then(KillSignal::from_number).ok_or_else(unknown)
}

/// SIGRTMIN+k or SIGRTMAX-k from what follows the name ("" for k = 0, else `sign` and k),
/// if it stays within the realtime range.
fn realtime(base: i32, rest: &str, sign: char) -> Option<i32> {
    let k = match rest {
        "" => 0,
        _ => i32::from(rest.strip_prefix(sign)?.parse::<u8>().ok()?),
    };
    let n = if sign == '+' { base + k } else { base - k };
    (libc::SIGRTMIN()..=libc::SIGRTMAX())
        .contains(&n)
        .then_some(n)
}

fn send(pid: Pid, signal: KillSignal) -> Result<(), ContainerError> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid.as_raw(), signal.0) } == 0 {
        return Ok(());
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::ESRCH => Ok(()),
        e => Err(ContainerError::Signal {
            signal: signal.0,
            pid: pid.as_raw(),
            source: e.into(),
        }),
    }
}

/// A lock that failed because the directory is gone (deleted while we waited) means the
/// container does not exist; any other failure (EACCES, EMFILE, ENOLCK...) is reported as
/// itself, not hidden behind "does not exist".
fn not_exist_if_gone(e: ContainerError, id: &str) -> ContainerError {
    match e {
        ContainerError::Lock { ref source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            ContainerError::NotExist { id: id.to_string() }
        }
        other => other,
    }
}

impl Container {
    /// Takes the container's lock and re-reads its state: another command may have changed
    /// or deleted it while we waited.
    pub(super) fn locked(&self) -> crate::Result<(DirLock, Container)> {
        let id = &self.state.id;
        let lock = DirLock::acquire(&self.dir).map_err(|e| not_exist_if_gone(e, id))?;
        let c = match StoredState::load(&self.dir, id) {
            Ok(state) => Container {
                dir: self.dir.clone(),
                state,
                damaged: false,
            },
            // Damaged when loaded, and still: salvage again (a delete may have removed it).
            Err(ContainerError::NotExist { .. } | ContainerError::CorruptState { .. })
                if self.damaged && self.dir.is_dir() =>
            {
                Container::salvaged(self.dir.clone(), id)
            }
            Err(e) => return Err(e.into()),
        };
        Ok((lock, c))
    }

    /// Waits until the container's init exits, reaps it, and returns its exit status (a
    /// code, or the signal that killed it: `ExitStatusExt::signal`). Blocks; a signal that
    /// interrupts the wait does not end it.
    ///
    /// Only init's parent can do this: the caller of `create` when it is single-threaded, or
    /// a child subreaper (`PR_SET_CHILD_SUBREAPER`) that init was re-parented to (a
    /// multithreaded caller of `create`, whose clone chain ran in a child that has exited).
    /// Otherwise the error is [`ContainerError::NotChild`]; once init has been reaped (by an
    /// earlier `wait` or the caller's own waitpid) it is [`ContainerError::Reaped`]. The
    /// container's record stays until `delete`, which may come before or after.
    pub fn wait(&self) -> crate::Result<std::process::ExitStatus> {
        use nix::sys::wait::{waitpid, WaitStatus};
        use std::os::unix::process::ExitStatusExt;
        let pid = self.state.pid;
        // Still our init (alive or a zombie), not a process that got its number since.
        let ours = pid > 0
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| state::parse_proc_stat(&t))
                .is_some_and(|(_, start)| {
                    // 0: /proc could not be read when init was recorded.
                    self.state.pid_start_time == 0 || start == self.state.pid_start_time
                });
        if !ours {
            return Err(ContainerError::Reaped {
                id: self.state.id.clone(),
            }
            .into());
        }
        loop {
            let raw = match waitpid(Pid::from_raw(pid), None) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ECHILD) => {
                    return Err(ContainerError::NotChild {
                        id: self.state.id.clone(),
                        pid,
                    }
                    .into())
                }
                Err(e) => return Err(ContainerError::Wait(e.into()).into()),
                Ok(WaitStatus::Exited(_, code)) => (code & 0xff) << 8,
                Ok(WaitStatus::Signaled(_, sig, core)) => sig as i32 | if core { 0x80 } else { 0 },
                Ok(_) => continue,
            };
            return Ok(std::process::ExitStatus::from_raw(raw));
        }
    }

    /// `start`: lets init past exec.fifo, waits until it has exec'd the container process
    /// (init's close-on-exec end of the fifo closes), then runs the poststart hooks.
    pub fn start(&self) -> crate::Result<()> {
        let (_lock, c) = self.locked()?;
        let pid = Pid::from_raw(c.state.pid);
        // The pidfd before anything lets init go: a quick container process (`echo hi`) can
        // run, exit and be reaped by its parent (conmon, a shim) between our open of the
        // fifo and any later pidfd_open, which would then fail with ESRCH although the start
        // worked. Taken before the status check, it is init's if the status says created.
        let pidfd = pidfd_open(pid);
        match c.status() {
            Status::Created => {}
            Status::Stopped => return Err(ContainerError::StartStopped.into()),
            _ => return Err(ContainerError::AlreadyRunning.into()),
        }
        let fifo_path = c.dir.join(state::EXEC_FIFO);
        let fifo_err = |source: std::io::Error| ContainerError::Fifo {
            path: fifo_path.clone(),
            source,
        };
        let exited_before_start =
            |pidfd: Option<&std::os::fd::OwnedFd>| ContainerError::ExitedBeforeStart {
                id: c.state.id.clone(),
                pid: c.state.pid,
                cause: pidfd.map(crate::process::exit_cause).unwrap_or_default(),
            };
        let pidfd = match pidfd {
            Ok(fd) => fd,
            // Gone between the pidfd and the status check (killed, and reaped by its parent).
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(exited_before_start(None).into())
            }
            Err(e) => return Err(fifo_err(e).into()),
        };
        // Non-blocking open: if init died meanwhile a blocking open would wait forever.
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo_path)
            .map_err(fifo_err)?;
        // Opening it has let init go: the fifo goes now, so a start killed from here on
        // leaves a container that reads as running (which it is), not one still "created"
        // whose next start would wait on a fifo nobody writes.
        std::fs::remove_file(&fifo_path).map_err(fifo_err)?;
        let mut started = false;
        loop {
            let (ready, exited) = {
                let mut fds = [
                    PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
                    PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(fifo_err(e.into()).into()),
                    Ok(_) => {}
                }
                (
                    fds[0].revents().is_some_and(|r| !r.is_empty()),
                    fds[1].revents().is_some_and(|r| !r.is_empty()),
                )
            };
            if ready {
                let mut byte = [0u8; 1];
                match fifo.read(&mut byte) {
                    Ok(1) => started = true,
                    // End of file after the start byte: init has exec'd (or died trying,
                    // and said why on the container's stderr).
                    Ok(_) if started => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(fifo_err(e).into()),
                }
            }
            if exited {
                if started {
                    break;
                }
                return Err(exited_before_start(Some(&pidfd)).into());
            }
        }
        let state = c.hook_state(Status::Running);
        let poststart = c.state.hooks.as_ref().and_then(|h| h.poststart().as_ref());
        let ctx = hooks::Context {
            cwd: Some(&c.state.bundle),
            env: None,
        };
        if let Err(e) = hooks::run_all("poststart", poststart, &state, ctx) {
            let _ = send(pid, KillSignal::KILL);
            return Err(e.into());
        }
        Ok(())
    }

    /// `kill`: one signal to init, or with `all` to every process in the container's cgroup
    /// (none once it has stopped: not an error, as in runc). A frozen container is thawed after SIGKILL so the processes can act on it.
    pub fn kill(&self, signal: KillSignal, all: bool) -> crate::Result<()> {
        let (_lock, c) = self.locked()?;
        // /proc/<init>/stat is read once: init is alive exactly when the status is not
        // stopped. A stopped container in a shared pid namespace may still have processes.
        let init = c.live_pid();
        let status = c.status_given(init.is_some(), || {
            c.cgroup().map(|cg| cg.is_frozen()).unwrap_or(false)
        });
        if all {
            // Whatever the status, as runc: a stopped container has no process left to
            // signal (or, sharing a pid namespace, those still in its cgroup).
            for pid in c.pids()? {
                send(pid, signal)?;
            }
        } else if let Some(pid) = init {
            send(pid, signal)?;
        } else {
            return Err(ContainerError::NotRunning.into());
        }
        if signal == KillSignal::KILL && status == Status::Paused {
            c.cgroup()?.thaw()?;
        }
        Ok(())
    }

    /// `delete`: a created or stopped container always; a running or paused one only with
    /// `force`. Removes every process, the cgroup and the state, then runs poststop hooks.
    pub fn delete(&self, force: bool) -> crate::Result<()> {
        let (_lock, c) = self.locked()?;
        // Each fact is read once: /proc/<init>/stat, the cgroup's mounts.
        let init = c.live_pid();
        let cg = c.cgroup()?;
        let status = c.status_given(init.is_some(), || cg.is_frozen());
        if matches!(status, Status::Running | Status::Paused | Status::Unknown) && !force {
            return Err(ContainerError::NotStopped {
                id: c.state.id.clone(),
                status,
            }
            .into());
        }
        if let Some(pid) = init {
            send(pid, KillSignal::KILL)?;
            // A frozen init cannot act on SIGKILL (a damaged state cannot say it is paused).
            if status == Status::Paused || (status == Status::Unknown && cg.is_frozen()) {
                cg.thaw()?;
            }
            wait_killed(pid)?;
        }
        // The cgroup is ours unless another container holds the claim on its path (then
        // this one never made it: a create killed before claiming, or one of an older
        // capsa): its processes are not ours to kill.
        let root = c.dir.parent().unwrap_or(std::path::Path::new("/"));
        let cgroup_path = &c.state.cgroup_path;
        if !claim::owned_by_other(root, cgroup_path, &c.state.id) {
            kill_all_and_wait(&cg)?;
            cg.remove()?;
            let default_parent = std::path::Path::new(crate::cgroups::DEFAULT_PARENT);
            if cgroup_path.parent() == Some(default_parent) {
                cg.at(default_parent).remove_if_unused();
            }
            claim::release(root, cgroup_path, &c.state.id);
        }
        let poststop = c.state.hooks.as_ref().and_then(|h| h.poststop().as_ref());
        // The spec's rule: a failing poststop hook is a warning, the others still run and
        // the delete completes.
        let ctx = hooks::Context {
            cwd: Some(&c.state.bundle),
            env: None,
        };
        hooks::run_all_warning("poststop", poststop, &c.hook_state(Status::Stopped), ctx);
        // Out of sight first, as `@<id>.<pid>` ('@' is in no id): `list` and `state` never see
        // a half-removed directory, and what a delete killed here leaves, the next `delete
        // --force` of the id sweeps.
        let tomb = root.join(format!("@{}.{}", c.state.id, std::process::id()));
        let dir = match std::fs::rename(&c.dir, &tomb) {
            Ok(()) => &tomb,
            Err(_) => &c.dir,
        };
        state::remove_state_dir(dir).map_err(|source| ContainerError::StateDir {
            path: dir.clone(),
            source,
        })?;
        Ok(())
    }
}

impl Container {
    /// `pause`: freezes every process of a running container.
    pub fn pause(&self) -> crate::Result<()> {
        let (_lock, c) = self.locked()?;
        if c.status() != Status::Running {
            return Err(ContainerError::NotRunning.into());
        }
        c.cgroup()?.freeze()?;
        Ok(())
    }

    /// `resume`: thaws a paused container.
    pub fn resume(&self) -> crate::Result<()> {
        let (_lock, c) = self.locked()?;
        if c.status() != Status::Paused {
            return Err(ContainerError::NotPaused.into());
        }
        c.cgroup()?.thaw()?;
        Ok(())
    }

    /// `update`: writes the given resource fields to the cgroup (others keep their values).
    pub fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> crate::Result<()> {
        let (_lock, c) = self.locked()?;
        if c.status() == Status::Stopped {
            return Err(ContainerError::NotRunning.into());
        }
        c.cgroup()?.apply(resources, &[], false)?;
        Ok(())
    }

    /// The host pids of every process in the container's cgroup.
    pub fn pids(&self) -> crate::Result<Vec<Pid>> {
        if self.state.no_cgroup {
            // No cgroup to list: init is known, and its pid namespace holds the rest.
            return Ok(self.live_pid().into_iter().collect());
        }
        Ok(self.cgroup()?.procs()?)
    }
}

/// SIGKILL to everything in a container's cgroup `cg`, then wait for each to exit.
pub(super) fn kill_all_and_wait(cg: &crate::cgroups::Manager) -> crate::Result<()> {
    let frozen = cg.is_frozen();
    // Repeat: a process may fork while we are killing its siblings.
    for _ in 0..16 {
        let pids = cg.procs()?;
        if pids.is_empty() {
            break;
        }
        for pid in &pids {
            send(*pid, KillSignal::KILL)?;
        }
        if frozen {
            cg.thaw()?;
        }
        for pid in pids {
            wait_killed(pid)?;
        }
    }
    Ok(())
}

/// How long a process may take to exit after SIGKILL before `delete` gives up on it.
const KILL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for `pid`, sent SIGKILL, to exit; one that does not (frozen in a cgroup the
/// runtime did not thaw, stuck in the kernel) is an error naming it rather than a hang.
fn wait_killed(pid: Pid) -> Result<(), ContainerError> {
    match crate::sys::pidfd::wait_exited(pid, Some(KILL_TIMEOUT)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ContainerError::NotKilled {
            pid: pid.as_raw(),
            timeout: KILL_TIMEOUT,
        }),
        Err(e) => Err(ContainerError::Wait(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::{not_exist_if_gone, parse_signal, KillSignal};
    use crate::container::{ContainerError, DirLock};

    #[test]
    fn a_lock_error_other_than_a_missing_directory_is_reported_as_itself() {
        let dir = std::env::temp_dir().join(format!("capsa-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Gone: "does not exist", as runc says.
        let gone = DirLock::acquire(&dir.join("gone")).err().unwrap();
        let e = not_exist_if_gone(gone, "c1");
        assert!(matches!(e, ContainerError::NotExist { .. }), "{e}");
        // A component that is a file (ENOTDIR): the lock error, naming the path and errno.
        let file = dir.join("file");
        std::fs::write(&file, b"").unwrap();
        let odd = DirLock::acquire(&file.join("x")).err().unwrap();
        let e = not_exist_if_gone(odd, "c1");
        let _ = std::fs::remove_dir_all(&dir);
        match &e {
            ContainerError::Lock { path, source } => {
                assert_eq!(path, &file.join("x"));
                assert_eq!(source.raw_os_error(), Some(libc::ENOTDIR));
            }
            other => panic!("expected the lock error, got {other}"),
        }
        assert!(!e.to_string().contains("does not exist"), "{e}");
    }

    fn number(s: &str) -> Option<i32> {
        parse_signal(s).ok().map(KillSignal::number)
    }

    #[test]
    fn signals_by_name_and_number_as_runc_and_crun_take_them() {
        for (s, n) in [
            ("KILL", 9),
            ("SIGKILL", 9),
            ("kill", 9),
            ("9", 9),
            ("term", 15),
        ] {
            assert_eq!(number(s), Some(n), "{s}");
        }
        // 0 checks that the container runs; realtime signals by number and by name.
        assert_eq!(number("0"), Some(0));
        assert_eq!(number("37"), Some(37));
        assert_eq!(number("64"), Some(64));
        assert_eq!(number("RTMIN"), Some(34));
        assert_eq!(number("SIGRTMIN+3"), Some(37));
        assert_eq!(number("rtmax-1"), Some(63));
        assert_eq!(number("RTMAX"), Some(64));
    }

    #[test]
    fn what_no_signal_is_named_is_refused() {
        for s in [
            "", "NOPE", "SIG", "-1", "65", "RTMIN+31", "RTMAX-31", "RTMIN-1", "RTMIN+-1", "RTMIN3",
            "RTMAX+1",
        ] {
            assert!(parse_signal(s).is_err(), "{s:?}");
        }
    }
}
