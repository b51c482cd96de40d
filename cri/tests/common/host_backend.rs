//! A streaming [`Backend`] on host processes: a fixture to hold the streaming protocols
//! alone (what a container adds is proven against the daemon's own backend). "Containers"
//! are names in a set; exec runs `cmd` on the host in a process group of its own (killed
//! whole when the session drops it), on pipes or, with a tty, on a pseudo-terminal whose
//! size the resize stream sets; sandboxes map to a network namespace file, or to none (host
//! network).

use capsa_cri::streaming::backend::{ProcRead as BoxRead, ProcWrite as BoxWrite};
use capsa_cri::streaming::{Backend, BackendError, ExecIo};
use futures_util::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

#[derive(Default)]
pub struct HostBackend {
    pub containers: HashSet<String>,
    pub sandboxes: HashMap<String, Option<PathBuf>>,
}

impl HostBackend {
    pub fn new(containers: &[&str], sandboxes: &[(&str, Option<PathBuf>)]) -> HostBackend {
        HostBackend {
            containers: containers.iter().map(|c| c.to_string()).collect(),
            sandboxes: sandboxes
                .iter()
                .map(|(id, ns)| (id.to_string(), ns.clone()))
                .collect(),
        }
    }

    fn known(&self, id: &str) -> Result<(), BackendError> {
        if self.containers.contains(id) {
            Ok(())
        } else {
            Err(BackendError::NotFound {
                what: "container",
                id: id.into(),
            })
        }
    }
}

/// A host process: its streams, its terminal, its process group.
pub struct HostProcess {
    child: tokio::sync::Mutex<tokio::process::Child>,
    pgid: i32,
    stdin: Option<BoxWrite>,
    stdout: Option<BoxRead>,
    stderr: Option<BoxRead>,
    pty: Option<OwnedFd>,
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A terminal's master read as a stream: EIO (no slave open any more) is its end.
struct PtyReader(tokio::fs::File);

impl AsyncRead for PtyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl ExecIo for HostProcess {
    fn take_stdin(&mut self) -> Option<BoxWrite> {
        self.stdin.take()
    }
    fn take_stdout(&mut self) -> Option<BoxRead> {
        self.stdout.take()
    }
    fn take_stderr(&mut self) -> Option<BoxRead> {
        self.stderr.take()
    }
    fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let Some(pty) = &self.pty else { return Ok(()) };
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is ours.
        if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    fn wait(&self) -> BoxFuture<'_, Result<i32, BackendError>> {
        Box::pin(async move {
            let status =
                self.child
                    .lock()
                    .await
                    .wait()
                    .await
                    .map_err(|e| BackendError::Failed {
                        op: "waiting for the process".into(),
                        source: Box::new(e),
                    })?;
            Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        })
    }
}

fn failed(op: &str) -> impl FnOnce(io::Error) -> BackendError + '_ {
    move |e| BackendError::Failed {
        op: op.into(),
        source: Box::new(e),
    }
}

/// Starts `cmd` on pipes, or on a terminal with `tty`.
pub fn spawn(cmd: &[String], tty: bool, stdin: bool) -> Result<HostProcess, BackendError> {
    let mut c = tokio::process::Command::new(&cmd[0]);
    c.args(&cmd[1..]).kill_on_drop(true);
    if !tty {
        c.process_group(0)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(failed("spawning"))?;
        return Ok(HostProcess {
            pgid: child.id().unwrap_or(0) as i32,
            stdin: child.stdin.take().map(|s| Box::new(s) as BoxWrite),
            stdout: child.stdout.take().map(|s| Box::new(s) as BoxRead),
            stderr: child.stderr.take().map(|s| Box::new(s) as BoxRead),
            child: tokio::sync::Mutex::new(child),
            pty: None,
        });
    }
    let pty = nix::pty::openpty(None, None).map_err(|e| failed("openpty")(e.into()))?;
    // openpty's fds are inherited by every exec: a child of a concurrent test holding the
    // terminal's slave would keep its master from ever seeing the end.
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| failed("FD_CLOEXEC")(e.into()))?;
    }
    let slave = |what| pty.slave.try_clone().map_err(failed(what));
    c.stdin(Stdio::from(slave("stdin")?))
        .stdout(Stdio::from(slave("stdout")?))
        .stderr(Stdio::from(slave("stderr")?));
    // SAFETY: between fork and exec only async-signal-safe calls: a new session, and the
    // terminal on fd 0 as its controlling terminal.
    unsafe {
        c.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = c.spawn().map_err(failed("spawning"))?;
    drop(c);
    drop(pty.slave);
    let master = pty.master;
    let reader = std::fs::File::from(master.try_clone().map_err(failed("dup"))?);
    let writer = std::fs::File::from(master.try_clone().map_err(failed("dup"))?);
    Ok(HostProcess {
        pgid: child.id().unwrap_or(0) as i32,
        stdin: stdin.then(|| Box::new(tokio::fs::File::from_std(writer)) as BoxWrite),
        stdout: Some(Box::new(PtyReader(tokio::fs::File::from_std(reader)))),
        stderr: None,
        child: tokio::sync::Mutex::new(child),
        pty: Some(master),
    })
}

#[async_trait::async_trait]
impl Backend for HostBackend {
    async fn check_container(&self, container_id: &str) -> Result<(), BackendError> {
        self.known(container_id)
    }
    async fn check_sandbox(&self, sandbox_id: &str) -> Result<(), BackendError> {
        self.port_forward_netns(sandbox_id).await.map(|_| ())
    }
    async fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<Box<dyn ExecIo>, BackendError> {
        self.known(container_id)?;
        Ok(Box::new(spawn(cmd, tty, stdin)?))
    }
    async fn attach(
        &self,
        container_id: &str,
        stdin: bool,
        tty: bool,
    ) -> Result<Box<dyn ExecIo>, BackendError> {
        // The fixture's "container" for attach: a fresh process printing a line and
        // echoing its input back, as a container started with stdin would.
        self.known(container_id)?;
        let script = "echo attached; while read -r l; do echo \"got $l\"; done";
        let cmd = ["sh".to_string(), "-c".to_string(), script.to_string()];
        Ok(Box::new(spawn(&cmd, tty, stdin)?))
    }
    async fn port_forward_netns(&self, sandbox_id: &str) -> Result<Option<PathBuf>, BackendError> {
        self.sandboxes
            .get(sandbox_id)
            .cloned()
            .ok_or_else(|| BackendError::NotFound {
                what: "sandbox",
                id: sandbox_id.into(),
            })
    }
}

/// The URL of a PortForward of `sandbox` on our server, limited to `ports` (none: any).
pub async fn port_forward_url(
    srv: &capsa_cri::streaming::StreamingServer,
    sandbox: &str,
    ports: &[u16],
) -> String {
    srv.get_port_forward(&k8s_cri::v1::PortForwardRequest {
        pod_sandbox_id: sandbox.into(),
        port: ports.iter().map(|p| i32::from(*p)).collect(),
    })
    .await
    .unwrap()
    .url
}
