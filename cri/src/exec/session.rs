//! The daemon's side of one exec: the helper started, its report read, the process's stdio
//! handed to the caller as tokio types.

use super::proto::{Report, Start, CONTROL_FD, KILL, MAX_LINE};
use super::{ExecError, ExecRequest};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::process::Stdio;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::unix::{pipe, OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::oneshot;

/// A running exec. Dropping it kills the process (and its process group); the helper is
/// reaped by a task of its own.
pub struct ExecSession {
    id: String,
    pid: i32,
    helper_pid: u32,
    /// The process, for a kill that needs no helper (one that died).
    pidfd: OwnedFd,
    control: OwnedWriteHalf,
    stdin: Option<pipe::Sender>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    terminal: Option<Terminal>,
    /// The pty master again, for resizes once the terminal is taken.
    master: Option<OwnedFd>,
    exit: Option<oneshot::Receiver<Result<i32, ExecError>>>,
    code: Option<i32>,
}

/// The helper's child process, reaped even if its owner is dropped before waiting.
struct Reaper(Option<Child>);

impl Reaper {
    async fn wait(mut self) -> String {
        match self.0.take() {
            Some(mut child) => match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("waiting for it: {e}"),
            },
            None => String::new(),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = child.wait().await;
                });
            }
            // Without a runtime, tokio's own orphan queue reaps it.
        }
    }
}

fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Into::into)
}

/// The process's ends of its stdio the daemon keeps (none with a terminal).
#[derive(Default)]
struct Pipes {
    stdin: Option<pipe::Sender>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
}

/// `capsa-cri-monitor exec` with `control` as its descriptor 3 and the process's stdio as
/// its own 0, 1 and 2 (pipes whose other ends are returned, or /dev/null).
fn helper_command(
    req: &ExecRequest,
    control: &std::os::unix::net::UnixStream,
) -> std::io::Result<(tokio::process::Command, Pipes)> {
    let mut cmd = tokio::process::Command::new(&req.program);
    cmd.arg("exec")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut pipes = Pipes::default();
    if !req.tty {
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = pipe_pair()?;
        cmd.stdout(out_w).stderr(err_w);
        pipes.stdout = Some(pipe::Receiver::from_owned_fd(out_r)?);
        pipes.stderr = Some(pipe::Receiver::from_owned_fd(err_r)?);
        if req.stdin {
            let (in_r, in_w) = pipe_pair()?;
            cmd.stdin(in_r);
            pipes.stdin = Some(pipe::Sender::from_owned_fd(in_w)?);
        }
    }
    // SAFETY: the hook runs only async-signal-safe calls between fork and exec.
    unsafe { cmd.pre_exec(crate::monitor::hand_over(control.as_raw_fd(), CONTROL_FD)) };
    Ok((cmd, pipes))
}

/// The helper's first report: the pid and the descriptors that came with it, and what was
/// read after it; or why the process did not start (the helper then reaped).
async fn started(
    id: &str,
    stream: &UnixStream,
    reaper: Reaper,
) -> Result<(i32, Vec<OwnedFd>, Vec<u8>, Reaper), ExecError> {
    let (first, fds, rest) = read_first(stream).await.map_err(|source| ExecError::Io {
        id: id.to_string(),
        source,
    })?;
    let Some(line) = first else {
        return Err(ExecError::HelperDied {
            id: id.to_string(),
            expected: "the process's start",
            status: reaper.wait().await,
        });
    };
    match parse(id, &line)? {
        Report::Started { pid } => Ok((pid, fds, rest, reaper)),
        Report::Failed { kind, error } => {
            // It exits right after saying so.
            reaper.wait().await;
            Err(ExecError::Setup {
                id: id.to_string(),
                kind,
                error,
            })
        }
        Report::Exited { .. } => Err(ExecError::Protocol {
            id: id.to_string(),
            text: "an exit before the start".into(),
        }),
    }
}

impl ExecSession {
    /// Starts `req`'s process through a helper; returns once it runs, or with the reason it
    /// could not start ([`ExecError::Setup`]). Dropped before it returns, it kills what it
    /// started.
    pub async fn spawn(req: &ExecRequest) -> Result<ExecSession, ExecError> {
        let id = req.id.clone();
        let spawn_err = |source| ExecError::Spawn {
            program: req.program.clone(),
            source,
        };
        let io_err = |source| ExecError::Io {
            id: id.clone(),
            source,
        };
        let mut process = req.process.clone();
        process.set_terminal(Some(req.tty));
        let mut start = serde_json::to_vec(&Start {
            root: req.root.clone(),
            id: req.id.clone(),
            process,
        })
        .map_err(|e| io_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        start.push(b'\n');
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(spawn_err)?;
        let (mut cmd, pipes) = helper_command(req, &theirs).map_err(spawn_err)?;
        let child = cmd.spawn().map_err(spawn_err)?;
        // The helper's ends are the helper's only (the command holds copies).
        drop(cmd);
        drop(theirs);
        let helper_pid = child.id().unwrap_or_default();
        let reaper = Reaper(Some(child));
        ours.set_nonblocking(true).map_err(io_err)?;
        let mut stream = UnixStream::from_std(ours).map_err(io_err)?;
        // A helper gone already shows in its report.
        let _ = stream.write_all(&start).await;
        let (pid, fds, rest, reaper) = started(&id, &stream, reaper).await?;
        let mut fds = fds.into_iter();
        let protocol = |text: &str| ExecError::Protocol {
            id: id.clone(),
            text: text.into(),
        };
        let pidfd = fds
            .next()
            .ok_or_else(|| protocol("a start without the process's pidfd"))?;
        let (terminal, master) = if req.tty {
            let master = fds
                .next()
                .ok_or_else(|| protocol("a start without the terminal"))?;
            let resize = master.try_clone().map_err(io_err)?;
            (Some(Terminal::new(master).map_err(io_err)?), Some(resize))
        } else {
            (None, None)
        };
        let (read, control) = stream.into_split();
        let (tx, exit) = oneshot::channel();
        let killer = pidfd.try_clone().map_err(io_err)?;
        tokio::spawn(watch(id.clone(), read, rest, reaper, killer, tx));
        Ok(ExecSession {
            id,
            pid,
            helper_pid,
            pidfd,
            control,
            stdin: pipes.stdin,
            stdout: pipes.stdout,
            stderr: pipes.stderr,
            terminal,
            master,
            exit: Some(exit),
            code: None,
        })
    }

    /// The process's host pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The helper's pid.
    pub fn helper_pid(&self) -> u32 {
        self.helper_pid
    }

    /// The process's stdin (without a terminal, when asked for); dropping it closes it.
    pub fn take_stdin(&mut self) -> Option<pipe::Sender> {
        self.stdin.take()
    }

    /// The process's stdout and stderr (without a terminal).
    pub fn take_stdout(&mut self) -> Option<pipe::Receiver> {
        self.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<pipe::Receiver> {
        self.stderr.take()
    }

    /// The pty master (with a terminal): the process's output, and its input when written.
    /// Reading ends (0 bytes) once the process and what it started are gone.
    pub fn take_terminal(&mut self) -> Option<Terminal> {
        self.terminal.take()
    }

    /// A handle that sets the terminal's size apart from the session, whose
    /// [`wait`](Self::wait) borrows it mutably; `None` without a terminal.
    pub fn resizer(&self) -> Result<Option<Resizer>, ExecError> {
        let Some(master) = &self.master else {
            return Ok(None);
        };
        let master = master.try_clone().map_err(|source| ExecError::Io {
            id: self.id.clone(),
            source,
        })?;
        Ok(Some(Resizer { master }))
    }

    /// Sets the terminal's size; the process gets SIGWINCH.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), ExecError> {
        let Some(master) = &self.master else {
            return Err(ExecError::NoTerminal {
                id: self.id.clone(),
            });
        };
        crate::monitor::set_window_size(master.as_fd(), rows, cols).map_err(|source| {
            ExecError::Resize {
                id: self.id.clone(),
                source,
            }
        })
    }

    /// Waits for the process's exit code (128 + N if signal N killed it). Once it returns the
    /// process is reaped and the helper gone. Cancel-safe.
    pub async fn wait(&mut self) -> Result<i32, ExecError> {
        if let Some(code) = self.code {
            return Ok(code);
        }
        let Some(exit) = self.exit.as_mut() else {
            return Err(self.died("the exit status", "its failure was reported already"));
        };
        let outcome = exit
            .await
            .unwrap_or_else(|_| Err(self.died("the exit status", "the watching task ended")));
        self.exit = None;
        if let Ok(code) = outcome {
            self.code = Some(code);
        }
        outcome
    }

    fn died(&self, expected: &'static str, status: &str) -> ExecError {
        ExecError::HelperDied {
            id: self.id.clone(),
            expected,
            status: status.to_string(),
        }
    }

    /// SIGKILL to the process and its process group; [`wait`](Self::wait) then answers.
    pub fn kill(&self) {
        if self.code.is_some() {
            return;
        }
        // The helper kills the group; the pidfd reaches the process even without a helper.
        let _ = self.control.try_write(KILL);
        pidfd_kill(&self.pidfd);
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        // Dropping `control` then closes the helper's input, which kills as well.
        self.kill();
    }
}

fn pidfd_kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
}

fn parse(id: &str, line: &[u8]) -> Result<Report, ExecError> {
    serde_json::from_slice(line).map_err(|_| ExecError::Protocol {
        id: id.to_string(),
        text: String::from_utf8_lossy(line).trim_end().to_string(),
    })
}

/// The helper's first line (`None` at end of file), the descriptors that came with it, and
/// what was read after it.
async fn read_first(
    stream: &UnixStream,
) -> std::io::Result<(Option<Vec<u8>>, Vec<OwnedFd>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let rest = buf.split_off(end + 1);
            return Ok((Some(buf), fds, rest));
        }
        if buf.len() as u64 > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the helper's report is too long",
            ));
        }
        stream.readable().await?;
        match stream.try_io(tokio::io::Interest::READABLE, || {
            recv_with_fds(stream.as_raw_fd(), &mut chunk, &mut fds)
        }) {
            Ok(0) => return Ok((None, fds, Vec::new())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> std::io::Result<usize> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(
                received
                    .into_iter()
                    .map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
            );
        }
    }
    Ok(msg.bytes)
}

/// Reads the helper's last report, reaps the helper, and answers `tx`. A helper that ended
/// without an exit has not reaped the process: it is killed through its pidfd.
async fn watch(
    id: String,
    read: OwnedReadHalf,
    rest: Vec<u8>,
    reaper: Reaper,
    pidfd: OwnedFd,
    tx: oneshot::Sender<Result<i32, ExecError>>,
) {
    let mut reader = tokio::io::BufReader::new(std::io::Cursor::new(rest).chain(read));
    let mut line = Vec::new();
    let read = (&mut reader)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await;
    let outcome = match read {
        Ok(0) => None,
        Ok(_) => Some(parse(&id, &line)),
        Err(source) => Some(Err(ExecError::Io {
            id: id.clone(),
            source,
        })),
    };
    let outcome = match outcome {
        Some(Ok(Report::Exited { code })) => Ok(code),
        Some(Ok(_)) => Err(ExecError::Protocol {
            id: id.clone(),
            text: String::from_utf8_lossy(&line).trim_end().to_string(),
        }),
        Some(Err(e)) => Err(e),
        None => Err(ExecError::HelperDied {
            id: id.clone(),
            expected: "the exit status",
            status: String::new(),
        }),
    };
    if outcome.is_err() {
        pidfd_kill(&pidfd);
    }
    let status = reaper.wait().await;
    let outcome = outcome.map_err(|e| match e {
        ExecError::HelperDied { id, expected, .. } => ExecError::HelperDied {
            id,
            expected,
            status,
        },
        other => other,
    });
    let _ = tx.send(outcome);
}

/// Sets an exec's terminal size (see [`ExecSession::resizer`]).
pub struct Resizer {
    master: OwnedFd,
}

impl Resizer {
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        crate::monitor::set_window_size(self.master.as_fd(), rows, cols)
    }
}

/// The pty master of an exec with a terminal, as tokio I/O. End of file when the last
/// holder of the terminal is gone (the kernel's EIO).
pub struct Terminal {
    fd: AsyncFd<OwnedFd>,
}

impl Terminal {
    fn new(master: OwnedFd) -> std::io::Result<Terminal> {
        let on: libc::c_int = 1;
        // SAFETY: FIONBIO reads one int from the valid pointer.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::FIONBIO, &on) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: an OwnedFd stays open, and its descriptor the same, for as long as the
        // AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(master) }?;
        Ok(Terminal { fd })
    }
}

impl AsyncRead for Terminal {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.as_raw_fd(), unfilled).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Terminal {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
