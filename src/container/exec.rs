//! `exec`: run another process in a running container.

use super::run::{blocked_set, forward_until_exit};
use super::{Container, ContainerError, Status};
use crate::process::{self, ChildGuard, ExecConfig, ProcessError};
use nix::sys::signal::SigmaskHow;
use nix::unistd::Pid;
use oci_spec::runtime::Process;
use std::os::fd::AsFd;
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

    fn spawn_exec(&self, process: &Process, opts: &ExecOptions) -> crate::Result<ChildGuard> {
        // Each fact is read once: /proc/<init>/stat, the cgroup's mounts, the freezer.
        let init = self.live_pid().ok_or(ContainerError::ExecStopped)?;
        let cgroup = self.cgroup()?;
        let status = self.status_given(true, || cgroup.is_frozen());
        if status == Status::Paused {
            return Err(ContainerError::ExecPaused.into());
        }
        super::create::check_lsm(Some(process))?;
        let terminal = process.terminal().unwrap_or(false);
        let stdio = super::create::stdio_for(terminal, opts.stdio.as_ref())?;
        let socket = super::create::console_for(terminal, opts.console_socket.as_deref())?;
        process::spawn_exec(&ExecConfig {
            init,
            process,
            cgroup: &cgroup,
            console_socket: socket.as_ref().map(|s| s.as_fd()),
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
            Ok(self.spawn_exec(process, opts)?.disarm().as_raw())
        })?;
        Ok(Pid::from_raw(pid))
    }

    /// Runs `process` in the container, forwarding signals to it, and returns its exit status
    /// (128+N for a signal). `on_start` gets its pid once it runs (for --pid-file).
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
            let guard = self.spawn_exec(process, opts)?;
            on_start(guard.pid())?;
            let code = forward_until_exit(guard.pid(), &set, None)?;
            guard.disarm();
            Ok(code)
        })();
        let _ = old.thread_set_mask();
        result
    }
}
