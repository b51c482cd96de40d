//! Processes run in a running container: ExecSync (probes, lifecycle hooks) and the
//! interactive exec of the streaming server.
//!
//! The daemon is multithreaded, so capsa runs an exec from a forked single-threaded child
//! and the process ends up the daemon's grandchild: its exit cannot be waited for. So each
//! exec runs under a helper of its own, `capsa-cri-monitor exec` ([`helper`]), a
//! single-threaded process whose child the exec'd process is. It reports on a socket
//! ([`proto`]) and is gone once the process is.
//!
//! ```text
//!   daemon (ExecSession::spawn)           helper                          process
//!   socketpair, pipes (or /dev/null) ──▶  0-2: the process's stdio
//!   Start {root, id, process} ─────────▶  capsa load + exec_detached ──▶  setns, user, execve
//!        ◀── started {pid} + pidfd [+ pty master] ──
//!   stdout/stderr pipes or the pty ◀──────────────────────────────────── output
//!   "kill" or its end closed ──────────▶  SIGKILL to the process group
//!        ◀── exited {code} ──────────────  pidfd readable, reaped; exits
//!   the helper reaped; wait() answers
//! ```
//!
//! A setup failure (container not running, user unknown, executable not found) comes back
//! as [`ExecError::Setup`] with capsa's cause chain and errno, never as output or an exit
//! code. Dropping an [`ExecSession`] (or an [`exec_sync`] future) kills the process; the
//! helper is reaped by a task of its own.

pub mod helper;
pub mod proto;
mod session;

pub use session::{ExecSession, Resizer, Terminal};

use capsa::error::RemoteError;
use oci_spec::runtime::Process;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// The cap kubelet's ExecSync output gets on each stream (as containerd's).
pub const DEFAULT_OUTPUT_CAP: usize = 16 << 20;

/// One exec.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The helper binary (`capsa-cri-monitor`); [`default_program`] finds the one next to the
    /// running executable.
    pub program: PathBuf,
    /// The capsa state root and the container.
    pub root: PathBuf,
    pub id: String,
    /// What to run: see [`exec_process`].
    pub process: Process,
    /// A pty instead of pipes (`process.terminal` is set to match).
    pub tty: bool,
    /// The process's stdin is a pipe (the pty with `tty`) the caller writes; else /dev/null.
    pub stdin: bool,
}

/// `capsa-cri-monitor` next to the running executable.
pub fn default_program() -> PathBuf {
    crate::monitor::MonitorSpec::default_program()
}

impl ExecRequest {
    /// `cmd` in container `id` of `root`, as the container's own process runs (see
    /// [`exec_process`]), with the default helper program.
    pub fn for_container(
        root: impl Into<PathBuf>,
        id: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<ExecRequest, ExecError> {
        let root = root.into();
        let container =
            capsa::Runtime::new(&root)
                .load(id)
                .map_err(|source| ExecError::Container {
                    id: id.to_string(),
                    source,
                })?;
        let template = container
            .process()
            .ok_or_else(|| ExecError::NoProcess { id: id.to_string() })?;
        Ok(ExecRequest {
            program: default_program(),
            root,
            id: id.to_string(),
            process: exec_process(template, cmd, tty)?,
            tty,
            stdin,
        })
    }
}

/// The process of an exec: the container's own (user, groups, env, cwd, capabilities,
/// rlimits, AppArmor profile, SELinux label, no_new_privileges, oom_score_adj) with `cmd` as
/// its arguments and a terminal when `tty`, as containerd builds it.
pub fn exec_process(container: &Process, cmd: &[String], tty: bool) -> Result<Process, ExecError> {
    if cmd.is_empty() {
        return Err(ExecError::EmptyCommand);
    }
    let mut p = container.clone();
    p.set_args(Some(cmd.to_vec()));
    p.set_command_line(None);
    p.set_terminal(Some(tty));
    Ok(p)
}

/// What an ExecSync gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// At most the cap each; what came after was read and dropped.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The process's exit code, or 128 + N if signal N killed it.
    pub exit_code: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("exec: the command is empty")]
    EmptyCommand,
    #[error("container {id}")]
    Container {
        id: String,
        #[source]
        source: capsa::Error,
    },
    #[error("container {id} has no process to take the exec's user and environment from")]
    NoProcess { id: String },
    #[error("starting the exec helper {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the exec helper of container {id}")]
    Io {
        id: String,
        #[source]
        source: std::io::Error,
    },
    /// The process could not be started: capsa's error, whole (`kind` for the caller's codes).
    #[error("exec in container {id}")]
    Setup {
        id: String,
        kind: capsa::ErrorKind,
        #[source]
        error: RemoteError,
    },
    #[error("the exec helper of container {id} ended before reporting {expected} ({status})")]
    HelperDied {
        id: String,
        expected: &'static str,
        status: String,
    },
    #[error("the exec helper of container {id} sent {text:?}, which is not understood")]
    Protocol { id: String, text: String },
    /// The timeout passed: the process was killed and reaped, the helper is gone (see
    /// [`exec_sync`] for a deadline that falls during the process's setup).
    #[error("exec in container {id} timed out after {timeout:?}")]
    Timeout { id: String, timeout: Duration },
    #[error("the exec in container {id} has no terminal")]
    NoTerminal { id: String },
    #[error("resizing the terminal of an exec in container {id}")]
    Resize {
        id: String,
        #[source]
        source: std::io::Error,
    },
}

impl ExecError {
    /// capsa's kind of the failure, for the caller's error codes.
    pub fn kind(&self) -> capsa::ErrorKind {
        match self {
            ExecError::Setup { kind, .. } => *kind,
            ExecError::Container { source, .. } => source.kind(),
            ExecError::EmptyCommand | ExecError::NoTerminal { .. } => {
                capsa::ErrorKind::InvalidInput
            }
            _ => capsa::ErrorKind::Other,
        }
    }

    /// The errno at the bottom of the cause chain, if a syscall failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ExecError::Container { source, .. } => source.errno(),
            // capsa's own walk of a chain that crossed a process boundary.
            ExecError::Setup { kind, error, .. } => capsa::Error::Remote(capsa::error::Remote {
                kind: *kind,
                error: error.clone(),
            })
            .errno(),
            ExecError::Spawn { source, .. }
            | ExecError::Io { source, .. }
            | ExecError::Resize { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Runs `req` to completion without a terminal or stdin (both of `req` are ignored), its
/// stdout and stderr captured up to `cap` bytes each. After `timeout` the process is killed
/// and reaped and the helper gone before [`ExecError::Timeout`] returns; a deadline that
/// passes while capsa is still setting the process up returns at once, and the helper kills
/// the process as soon as it runs and is reaped in the background. Dropping the future kills
/// the process the same way.
pub async fn exec_sync(
    req: &ExecRequest,
    timeout: Option<Duration>,
    cap: usize,
) -> Result<ExecOutput, ExecError> {
    let mut req = req.clone();
    req.tty = false;
    req.stdin = false;
    req.process.set_terminal(Some(false));
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let expired = || ExecError::Timeout {
        id: req.id.clone(),
        timeout: timeout.unwrap_or_default(),
    };
    let spawned = match deadline {
        // Dropped at the deadline, the spawn kills what it started (its helper is reaped
        // by a task of its own).
        Some(d) => tokio::time::timeout_at(d, ExecSession::spawn(&req))
            .await
            .map_err(|_| expired())?,
        None => ExecSession::spawn(&req).await,
    };
    let mut session = spawned?;
    let (Some(mut stdout), Some(mut stderr)) = (session.take_stdout(), session.take_stderr())
    else {
        // A session without a terminal has both; this names the impossible.
        return Err(ExecError::Protocol {
            id: req.id.clone(),
            text: "no output pipes".into(),
        });
    };
    let (mut out, mut err) = (Capture::new(cap), Capture::new(cap));
    let (mut out_buf, mut err_buf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let (mut out_open, mut err_open) = (true, true);
    let expiry = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    let code = loop {
        tokio::select! {
            r = stdout.read(&mut out_buf), if out_open => match r {
                Ok(n) if n > 0 => out.push(&out_buf[..n]),
                _ => out_open = false,
            },
            r = stderr.read(&mut err_buf), if err_open => match r {
                Ok(n) if n > 0 => err.push(&err_buf[..n]),
                _ => err_open = false,
            },
            code = session.wait() => break code?,
            () = &mut expiry => {
                session.kill();
                let _ = session.wait().await;
                return Err(expired());
            }
        }
    };
    // Everything the process wrote is in the pipes now; a writer it left behind (a
    // background child) is not waited for.
    out.drain(&stdout, &mut out_buf);
    err.drain(&stderr, &mut err_buf);
    Ok(ExecOutput {
        stdout: out.data,
        stderr: err.data,
        exit_code: code,
    })
}

/// Output kept up to a cap; the rest is dropped as it comes.
struct Capture {
    data: Vec<u8>,
    cap: usize,
}

impl Capture {
    fn new(cap: usize) -> Capture {
        Capture {
            data: Vec::new(),
            cap,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let take = chunk.len().min(self.cap - self.data.len());
        if take == 0 {
            return;
        }
        let need = self.data.len() + take;
        if need > self.data.capacity() {
            // Grown by doubling, but never past the cap.
            let target = need.max(self.data.capacity() * 2).min(self.cap);
            self.data.reserve_exact(target - self.data.len());
        }
        self.data.extend_from_slice(&chunk[..take]);
    }

    /// Takes what is in the pipe now, without waiting.
    fn drain(&mut self, pipe: &pipe::Receiver, buf: &mut [u8]) {
        loop {
            match nix::unistd::read(pipe.as_raw_fd(), buf) {
                Ok(0) => return,
                Ok(n) => self.push(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return, // EAGAIN: empty
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Process {
        serde_json::from_value(serde_json::json!({
            "terminal": true,
            "user": {"uid": 1000, "gid": 100, "additionalGids": [5, 6]},
            "args": ["/bin/server", "--port", "80"],
            "env": ["PATH=/usr/bin:/bin", "A=b"],
            "cwd": "/srv",
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
                             "permitted": ["CAP_CHOWN"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
            "apparmorProfile": "runtime/default",
            "noNewPrivileges": true,
            "oomScoreAdj": 500
        }))
        .unwrap()
    }

    #[test]
    fn exec_process_keeps_the_container_process_but_args_and_terminal() {
        let t = template();
        let cmd = vec!["cat".to_string(), "/etc/hostname".to_string()];
        let p = exec_process(&t, &cmd, false).unwrap();
        assert_eq!(p.args().as_deref(), Some(&cmd[..]));
        assert_eq!(p.terminal(), Some(false));
        let mut want = serde_json::to_value(&t).unwrap();
        let mut got = serde_json::to_value(&p).unwrap();
        for v in [&mut want, &mut got] {
            let o = v.as_object_mut().unwrap();
            o.remove("args");
            o.remove("terminal");
        }
        assert_eq!(got, want);
        assert_eq!(exec_process(&t, &cmd, true).unwrap().terminal(), Some(true));
    }

    #[test]
    fn an_empty_command_is_refused() {
        let e = exec_process(&template(), &[], false).unwrap_err();
        assert!(matches!(e, ExecError::EmptyCommand));
        assert_eq!(e.kind(), capsa::ErrorKind::InvalidInput);
    }

    #[test]
    fn capture_keeps_exactly_the_cap() {
        let mut c = Capture::new(10);
        c.push(b"0123");
        c.push(b"456789abc");
        c.push(b"def");
        assert_eq!(c.data, b"0123456789");
        assert!(c.data.capacity() <= 10);
        let mut z = Capture::new(0);
        z.push(b"x");
        assert!(z.data.is_empty());
    }
}
