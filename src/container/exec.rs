//! `exec`: run another process in a running container.

use super::relay;
use super::run::{blocked_set, forward_until_exit};
use super::{Container, ContainerError, Status};
use crate::process::{self, ChildGuard, ExecConfig, ProcessError};
use nix::sys::signal::SigmaskHow;
use nix::unistd::Pid;
use oci_spec::runtime::Process;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

/// Options of `exec` beyond the process: built with [`ExecOptions::new`] and the chainable
/// setters of the same names as the fields.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExecOptions {
    /// The unix socket that receives the pty master when the process has a terminal.
    pub console_socket: Option<PathBuf>,
    /// How many descriptors above 2 the process inherits (`--preserve-fds`).
    pub preserve_fds: u32,
    /// The process's stdin, stdout and stderr, instead of the caller's own 0, 1 and 2.
    pub stdio: Option<super::StdioFds>,
    /// Run it in a paused container too (runc's `--ignore-paused`): it stays frozen with
    /// the rest until `resume`.
    pub ignore_paused: bool,
    /// Sub-cgroups of the container's that the process joins instead (runc's `--cgroup`).
    pub sub_cgroups: crate::cgroups::SubCgroups,
}

impl ExecOptions {
    /// No console socket, no extra descriptors, the caller's stdio.
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Sets [`ExecOptions::console_socket`].
        console_socket: PathBuf => Some;
        /// Sets [`ExecOptions::stdio`].
        stdio: super::StdioFds => Some;
    }

    /// Sets [`ExecOptions::preserve_fds`] (a plain `u32`, so that a literal infers).
    pub fn preserve_fds(mut self, count: u32) -> Self {
        self.preserve_fds = count;
        self
    }
}

impl Container {
    /// The container's own process (from config.json), a template for `exec`.
    pub fn process(&self) -> Option<&Process> {
        self.state.process.as_ref()
    }

    /// `own_console`: the runtime's end of a console socket of its own, used when the
    /// process wants a terminal and no `--console-socket` was given.
    fn spawn_exec(
        &self,
        process: &Process,
        opts: &ExecOptions,
        own_console: Option<OwnedFd>,
    ) -> crate::Result<ChildGuard> {
        // Each fact is read once: /proc/<init>/stat, the cgroup's mounts, the freezer.
        let init = self.live_pid().ok_or(ContainerError::ExecStopped)?;
        let cgroup = self.cgroup()?;
        let status = self.status_given(true, || cgroup.is_frozen());
        if status == Status::Paused && !opts.ignore_paused {
            return Err(ContainerError::ExecPaused.into());
        }
        super::create::check_lsm(Some(process))?;
        let terminal = process.terminal().unwrap_or(false);
        let stdio = super::create::stdio_for(terminal, opts.stdio.as_ref())?;
        let own = own_console.is_some() && opts.console_socket.is_none();
        let socket =
            super::create::console_or_own(terminal, opts.console_socket.as_deref(), own_console)?;
        log::debug!("exec: joining the namespaces of init {init}");
        let placed = if opts.sub_cgroups.is_empty() {
            cgroup
        } else {
            cgroup.below(&opts.sub_cgroups)?
        };
        process::spawn_exec(&ExecConfig {
            init,
            process,
            cgroup: &placed,
            console_socket: socket.as_ref().map(|s| s.as_fd()),
            own_console: own,
            preserve_fds: opts.preserve_fds as i32,
            stdio,
            seccomp: self.state.seccomp.as_ref(),
            state_json: serde_json::to_string(&self.oci_state_given(status)).unwrap_or_default(),
        })
    }

    /// Starts `process` in the container and returns its host pid; it runs on its own.
    /// Safe from a multithreaded caller, as [`Runtime::create`](crate::Runtime::create) is.
    pub fn exec_detached(&self, process: &Process, opts: &ExecOptions) -> crate::Result<Pid> {
        let pid = crate::process::isolate::single_threaded(|| {
            Ok(self.spawn_exec(process, opts, None)?.disarm().as_raw())
        })?;
        Ok(Pid::from_raw(pid))
    }

    /// Runs `process` in the container, forwarding signals to it, and returns its exit status
    /// (128+N for a signal). `on_start` gets its pid once it runs (for --pid-file). A process
    /// with a terminal and no `console_socket` gets a pty that the caller's stdio is relayed
    /// to (as runc's foreground exec).
    pub fn exec_wait(
        &self,
        process: &Process,
        opts: &ExecOptions,
        on_start: &mut dyn FnMut(Pid) -> crate::Result<()>,
    ) -> crate::Result<i32> {
        let set = blocked_set();
        let old = set
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(|e| ProcessError::Signals(e.into()))?;
        let result = (|| {
            let terminal = process.terminal().unwrap_or(false);
            let (ours, theirs) = match opts.console_socket {
                None if terminal => {
                    let (a, b) = relay::socket_pair()?;
                    (Some(a), Some(b))
                }
                _ => (None, None),
            };
            let guard = self.spawn_exec(process, opts, theirs)?;
            let console = ours.map(|s| relay::Console::attach(&s)).transpose()?;
            let master = console.as_ref().map(|c| c.master.as_fd());
            let waited =
                on_start(guard.pid()).and_then(|()| forward_until_exit(guard.pid(), &set, master));
            // The process goes (killed on error) before the console, whose copy runs until
            // the pty's last user is gone.
            match waited {
                Ok(_) => {
                    guard.disarm();
                }
                Err(_) => drop(guard),
            }
            drop(console); // waits for the copy to drain, then restores the terminal
            waited
        })();
        let _ = old.thread_set_mask();
        result
    }
}
