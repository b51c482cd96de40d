//! The monitor process, `capsa-cri-monitor` (see the parent module for the sequence).
//!
//! Single-threaded and without an async runtime: one poll(2) loop over a signalfd, the
//! control socket, the container's output and the attach clients. Memory per container is
//! what this costs, so it holds nothing but buffers of data in flight.
//!
//! Signals: SIGTERM, SIGINT, SIGHUP and SIGQUIT to the monitor are passed on to the
//! container's init, and the monitor stays to record the exit (stopping a container through
//! its monitor is the same as through capsa). A SIGKILLed monitor leaves its container
//! running, as a killed conmon does: its init is re-parented, its output has no reader any
//! more (its next write fails with EPIPE, or SIGPIPE kills it), and no exit is recorded;
//! `connect` then fails and the container can still be killed and deleted through capsa.

use super::log::{CriLog, LogOpenError, Stream};
use super::proto::{self, MonitorStatus, Ready, Request};
use super::{is_open, Exit, MonitorSpec, CONTROL_SOCKET, EXIT_FILE};
use capsa::{CreateOptions, Runtime};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// An attach client is dropped when this much output waits for it.
const CLIENT_BACKLOG: usize = 4 << 20;
/// Attach clients' stdin is not read while this much waits for the container to read it.
const STDIN_BACKLOG: usize = 1 << 20;
/// The signals passed on to the container.
const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{step}")]
    Sys {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {} (at most 107 bytes)", path.display())]
    SocketPath { path: PathBuf },
    #[error("binding {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] LogOpenError),
    #[error("the container's terminal did not arrive on {}", path.display())]
    NoTerminal { path: PathBuf },
    #[error("receiving the container's terminal")]
    Terminal(#[from] capsa::console::ConsoleError),
    #[error(transparent)]
    Capsa(#[from] capsa::Error),
}

impl SetupError {
    pub(crate) fn kind(&self) -> capsa::ErrorKind {
        match self {
            SetupError::Capsa(e) => e.kind(),
            SetupError::SocketPath { .. } => capsa::ErrorKind::InvalidInput,
            _ => capsa::ErrorKind::Other,
        }
    }
}

pub(crate) fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> SetupError {
    move |e| SetupError::Sys {
        step,
        source: e.into(),
    }
}

pub(crate) fn sys_io(step: &'static str) -> impl FnOnce(std::io::Error) -> SetupError {
    move |source| SetupError::Sys { step, source }
}

/// The binary's `main`: parses the arguments, detaches, creates the container, reports
/// readiness and runs until the container's exit is recorded. The exit code is for the
/// first process only (the one that forks the monitor).
pub fn main() -> i32 {
    let (spec, ready_fd) = match MonitorSpec::from_argv(std::env::args_os().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("capsa-cri-monitor: {e}");
            return 2;
        }
    };
    let ready = match ready_fd {
        Some(fd) if is_open(fd) => {
            // SAFETY: our starter handed this descriptor over; nothing else here owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // Not for the container, nor for hooks.
            let _ = nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            Some(fd)
        }
        Some(fd) => {
            eprintln!("capsa-cri-monitor: --ready-fd {fd} is not open");
            return 2;
        }
        None => None,
    };
    // Whatever else our starter let us inherit (a jobserver pipe, a daemon's socket) is not
    // ours to keep open for the container's lifetime.
    close_inherited(ready.as_ref().map(|fd| fd.as_raw_fd()));
    // Detach: the first process exits now (its parent reaps it); the monitor, re-parented,
    // leads a session of its own, so neither its starter's death nor its terminal's
    // hang-up reaches it.
    // SAFETY: single-threaded here; the child goes on with ordinary code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => return 0,
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            eprintln!("capsa-cri-monitor: fork: {e}");
            return 1;
        }
    }
    let _ = nix::unistd::setsid();
    match Monitor::setup(&spec) {
        Ok(mut monitor) => {
            drop(send_ready(
                ready,
                &Ready::Ok {
                    pid: monitor.init.as_raw(),
                    monitor_pid: std::process::id() as i32,
                },
            ));
            monitor.run();
            0
        }
        Err(e) => {
            let message = crate::cni::error_chain(&e);
            eprintln!("capsa-cri-monitor: {}: {message}", spec.id);
            let held = send_ready(
                ready,
                &Ready::Error {
                    kind: e.kind(),
                    message,
                },
            );
            // The pipe stays open until the exit closes it: the starter's end of file then
            // means this process is gone, and a failed spawn leaves nothing behind.
            std::mem::forget(held);
            1
        }
    }
}

/// Closes every descriptor above stdio but `keep`.
fn close_inherited(keep: Option<RawFd>) {
    let close_range = |first: RawFd, last: RawFd| {
        if first <= last {
            // SAFETY: close_range only closes descriptors of ours; none is in use by Rust
            // objects here (only `keep` is, and it is outside the range).
            unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
        }
    };
    match keep {
        Some(k) => {
            close_range(3, k - 1);
            close_range(k + 1, RawFd::MAX);
        }
        None => close_range(3, RawFd::MAX),
    }
}

/// One line to the starter; a starter that died meanwhile is no error (SIGPIPE is blocked).
/// Writes `ready` to the starter; the descriptor comes back for the caller to close (or to
/// keep until exit).
fn send_ready(fd: Option<OwnedFd>, ready: &Ready) -> Option<OwnedFd> {
    let mut file = std::fs::File::from(fd?);
    let mut line = serde_json::to_vec(ready).unwrap_or_default();
    line.push(b'\n');
    let _ = file.write_all(&line);
    Some(file.into())
}

/// Our stdio replaced by /dev/null for a create with a terminal, restored on drop: capsa
/// refuses stdio descriptors beside a terminal (the pty is the container's stdio), and
/// nothing the runtime runs meanwhile may write to whatever our own 0, 1 and 2 are.
struct StdioSwap {
    saved: Vec<OwnedFd>,
}

impl StdioSwap {
    fn install(ends: [BorrowedFd; 3]) -> Result<StdioSwap, SetupError> {
        let mut saved = Vec::new();
        for target in 0..3 {
            // SAFETY: 0, 1 and 2 are open (the starter set them); we only duplicate them.
            let ours = unsafe { BorrowedFd::borrow_raw(target) };
            saved.push(
                ours.try_clone_to_owned()
                    .map_err(sys_io("saving the monitor's stdio"))?,
            );
        }
        let swap = StdioSwap { saved };
        for (target, end) in ends.iter().enumerate() {
            nix::unistd::dup2(end.as_raw_fd(), target as RawFd)
                .map_err(sys("handing the container its stdio"))?;
        }
        Ok(swap)
    }
}

impl Drop for StdioSwap {
    fn drop(&mut self) {
        for (target, fd) in self.saved.iter().enumerate() {
            let _ = nix::unistd::dup2(fd.as_raw_fd(), target as RawFd);
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SetupError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))
}

pub(crate) fn set_nonblocking(fd: BorrowedFd) -> Result<(), SetupError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(sys("reading fd flags"))?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(sys("making a descriptor non-blocking"))?;
    Ok(())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// What the container's output comes from: two pipes, or the pty master.
struct Outputs {
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

struct Client {
    sock: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Attached, and whether with stdin.
    attached: Option<bool>,
    /// Close once `outbuf` is written.
    closing: bool,
    gone: bool,
}

impl Client {
    fn reply(&mut self, result: Result<String, String>) {
        let line = match result {
            Ok(p) if p.is_empty() => "ok\n".to_string(),
            Ok(p) => format!("ok {p}\n"),
            Err(e) => format!("error {}\n", e.replace('\n', " ")),
        };
        self.outbuf.extend_from_slice(line.as_bytes());
    }

    /// Writes what it can without blocking.
    fn flush(&mut self) {
        while !self.outbuf.is_empty() {
            match self.sock.write(&self.outbuf) {
                Ok(0) => {
                    self.gone = true;
                    return;
                }
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.gone = true;
                    return;
                }
            }
        }
        if self.closing {
            self.gone = true;
        }
    }
}

pub struct Monitor {
    id: String,
    runtime: Runtime,
    dir: PathBuf,
    init: Pid,
    tty: bool,
    stdin_once: bool,
    log: CriLog,
    out: Outputs,
    /// The write end of the container's stdin (the pty master with a terminal).
    stdin: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    close_stdin_when_written: bool,
    has_stdin: bool,
    listener: UnixListener,
    clients: Vec<Client>,
    signals: SignalFd,
    started_ns: i64,
    status: Option<WaitStatus>,
    finished_ns: i64,
}

impl Monitor {
    fn setup(spec: &MonitorSpec) -> Result<Monitor, SetupError> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.add(Signal::SIGPIPE);
        for s in FORWARDED {
            mask.add(s);
        }
        // Blocked before the create: one that comes during it undoes it (create_abortable),
        // later ones wait in the signalfd. The container's init unblocks all its signals.
        mask.thread_block().map_err(sys("blocking signals"))?;
        nix::sys::prctl::set_child_subreaper(true).map_err(sys("PR_SET_CHILD_SUBREAPER"))?;

        let ctl = spec.dir.join(CONTROL_SOCKET);
        if ctl.as_os_str().len() > 107 {
            return Err(SetupError::SocketPath { path: ctl });
        }
        // A socket left by a monitor of an earlier container in this directory.
        let _ = std::fs::remove_file(&ctl);
        let listener = UnixListener::bind(&ctl).map_err(|source| SetupError::Bind {
            path: ctl.clone(),
            source,
        })?;
        set_nonblocking(listener.as_fd())?;
        // Removed again on any failure below: a starter that retries finds no stale socket.
        let made = Self::create(spec, listener);
        if made.is_err() {
            let _ = std::fs::remove_file(&ctl);
        }
        made
    }

    fn create(spec: &MonitorSpec, listener: UnixListener) -> Result<Monitor, SetupError> {
        let log = CriLog::open(&spec.log_path)?;
        let runtime = Runtime::new(&spec.root);
        let mut opts = CreateOptions::new(&spec.bundle);
        opts.pod = spec.pod.clone();
        let dev_null: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(sys_io("opening /dev/null"))?
            .into();
        let (out, stdin) = if spec.tty {
            let path = spec.dir.join("console");
            let _ = std::fs::remove_file(&path);
            let console = UnixListener::bind(&path).map_err(|source| SetupError::Bind {
                path: path.clone(),
                source,
            })?;
            opts.console_socket = Some(path.clone());
            let created = {
                let _swap =
                    StdioSwap::install([dev_null.as_fd(), dev_null.as_fd(), dev_null.as_fd()])?;
                runtime.create_abortable(&spec.id, &opts)
            };
            let _ = std::fs::remove_file(&path);
            let container = created?;
            let master = receive_terminal(&console, &path).inspect_err(|_| {
                let _ = container.delete(true);
            })?;
            set_nonblocking(master.as_fd())?;
            let stdin = if spec.stdin {
                Some(
                    master
                        .try_clone()
                        .map_err(sys_io("duplicating the pty master"))?,
                )
            } else {
                None
            };
            let out = Outputs {
                stdout: Some(master),
                stderr: None,
            };
            (out, stdin)
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (in_r, in_w) = if spec.stdin {
                let (r, w) = pipe()?;
                (r, Some(w))
            } else {
                (
                    dev_null
                        .try_clone()
                        .map_err(sys_io("duplicating /dev/null"))?,
                    None,
                )
            };
            // Handed to the container process alone (capsa dup's them onto its 0, 1 and 2).
            opts.stdio = Some(capsa::StdioFds::new(in_r, out_w, err_w));
            let created = runtime.create_abortable(&spec.id, &opts);
            // The container's ends are the container's only: EOF comes when it is gone.
            opts.stdio = None;
            created?;
            for fd in [out_r.as_fd(), err_r.as_fd()] {
                set_nonblocking(fd)?;
            }
            if let Some(w) = &in_w {
                set_nonblocking(w.as_fd())?;
            }
            let out = Outputs {
                stdout: Some(out_r),
                stderr: Some(err_r),
            };
            (out, in_w)
        };
        let container = runtime.load(&spec.id)?;
        let init = Pid::from_raw(container.stored().pid);
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        for s in FORWARDED {
            mask.add(s);
        }
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(sys("creating a signalfd"))?;
        let mut m = Monitor {
            id: spec.id.clone(),
            runtime,
            dir: spec.dir.clone(),
            init,
            tty: spec.tty,
            stdin_once: spec.stdin_once,
            log,
            out,
            has_stdin: stdin.is_some(),
            stdin,
            stdin_pending: Vec::new(),
            close_stdin_when_written: false,
            listener,
            clients: Vec::new(),
            signals,
            started_ns: 0,
            status: None,
            finished_ns: 0,
        };
        // A SIGCHLD from before the signalfd existed is not lost: ask once.
        m.reap();
        release_free_memory();
        Ok(m)
    }

    /// Serves until the container's init has exited, then records it and returns.
    fn run(&mut self) {
        while self.status.is_none() {
            self.turn();
        }
        self.finish();
    }

    /// One poll(2) and what it reported.
    fn turn(&mut self) {
        let stdin_full = self.stdin_pending.len() >= STDIN_BACKLOG;
        let readable = PollFlags::POLLIN;
        let (sig, listen, out, err, stdin, clients) = {
            let mut fds = vec![
                PollFd::new(self.signals.as_fd(), readable),
                PollFd::new(self.listener.as_fd(), readable),
            ];
            fn slot<'a>(
                fd: Option<&'a OwnedFd>,
                flags: PollFlags,
                fds: &mut Vec<PollFd<'a>>,
            ) -> Option<usize> {
                fd.map(|fd| {
                    fds.push(PollFd::new(fd.as_fd(), flags));
                    fds.len() - 1
                })
            }
            let out = slot(self.out.stdout.as_ref(), readable, &mut fds);
            let err = slot(self.out.stderr.as_ref(), readable, &mut fds);
            let stdin = if self.stdin_pending.is_empty() {
                None
            } else {
                slot(self.stdin.as_ref(), PollFlags::POLLOUT, &mut fds)
            };
            let first_client = fds.len();
            for c in &self.clients {
                let mut flags = PollFlags::empty();
                if !(stdin_full && c.attached == Some(true)) {
                    flags |= readable;
                }
                if !c.outbuf.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.sock.as_fd(), flags));
            }
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("capsa-cri-monitor: poll: {e}");
                    return;
                }
            }
            let fired = |i: Option<usize>| {
                i.is_some_and(|i| fds[i].revents().is_some_and(|r| !r.is_empty()))
            };
            let clients: Vec<bool> = (0..self.clients.len())
                .map(|i| fired(Some(first_client + i)))
                .collect();
            (
                fired(Some(0)),
                fired(Some(1)),
                fired(out),
                fired(err),
                fired(stdin),
                clients,
            )
        };
        if out {
            self.read_output(Stream::Stdout);
        }
        if err {
            self.read_output(Stream::Stderr);
        }
        if stdin {
            self.write_stdin();
        }
        for (i, fired) in clients.into_iter().enumerate() {
            if fired {
                self.serve_client(i);
            }
        }
        if listen {
            self.accept();
        }
        self.clients.retain(|c| !c.gone);
        if let Some(e) = self.log.take_write_error() {
            eprintln!(
                "capsa-cri-monitor: {}: writing {}: {e}",
                self.id,
                self.log.path().display()
            );
        }
        if sig {
            self.signals();
        }
    }

    fn output_fd(&mut self, stream: Stream) -> &mut Option<OwnedFd> {
        match stream {
            Stream::Stdout => &mut self.out.stdout,
            Stream::Stderr => &mut self.out.stderr,
        }
    }

    /// Reads what is there now (one read); copies it to the log and the attached clients.
    /// Returns false once the stream has ended or has nothing more for now.
    fn read_output(&mut self, stream: Stream) -> bool {
        let Some(fd) = self.output_fd(stream).as_ref() else {
            return false;
        };
        let mut buf = [0u8; 32 * 1024];
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) | Err(Errno::EIO) => {
                // EOF; a pty master reads EIO once the last slave end closed.
                *self.output_fd(stream) = None;
                false
            }
            Ok(n) => {
                let data = &buf[..n];
                self.log.write(stream, data);
                let kind = match stream {
                    Stream::Stdout => proto::FRAME_STDOUT,
                    Stream::Stderr => proto::FRAME_STDERR,
                };
                for c in self.clients.iter_mut().filter(|c| c.attached.is_some()) {
                    proto::push_frame(&mut c.outbuf, kind, data);
                    if c.outbuf.len() > CLIENT_BACKLOG {
                        c.gone = true;
                    } else {
                        c.flush();
                    }
                }
                true
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => false,
            Err(e) => {
                eprintln!(
                    "capsa-cri-monitor: {}: reading {}: {e}",
                    self.id,
                    stream.name()
                );
                *self.output_fd(stream) = None;
                false
            }
        }
    }

    fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.stdin_pending.clear();
            return;
        };
        match nix::unistd::write(fd, &self.stdin_pending) {
            Ok(n) => {
                self.stdin_pending.drain(..n);
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            Err(_) => {
                // EPIPE: the container closed its stdin.
                self.stdin = None;
                self.stdin_pending.clear();
            }
        }
        if self.stdin_pending.is_empty() && self.close_stdin_when_written {
            self.stdin = None;
        }
    }

    /// An attach client with stdin ended its input: with stdin_once the container's stdin
    /// closes (once what it sent is written).
    fn stdin_ended(&mut self) {
        if self.stdin_once {
            self.close_stdin_when_written = true;
            if self.stdin_pending.is_empty() {
                self.stdin = None;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            sock,
                            inbuf: Vec::new(),
                            outbuf: Vec::new(),
                            attached: None,
                            closing: false,
                            gone: false,
                        });
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn serve_client(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let c = &mut self.clients[i];
            if c.gone || c.closing {
                break;
            }
            match c.sock.read(&mut buf) {
                Ok(0) => {
                    let had_stdin = c.attached == Some(true);
                    c.gone = true;
                    if had_stdin {
                        self.stdin_ended();
                    }
                    return;
                }
                Ok(n) => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    self.handle_input(i);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.gone = true;
                    return;
                }
            }
            if self.stdin_pending.len() >= STDIN_BACKLOG {
                break;
            }
        }
        self.clients[i].flush();
    }

    /// Acts on what client `i` sent: its request line, then (attached) its frames.
    fn handle_input(&mut self, i: usize) {
        if self.clients[i].attached.is_none() {
            let c = &mut self.clients[i];
            let Some(end) = c.inbuf.iter().position(|&b| b == b'\n') else {
                if c.inbuf.len() > proto::MAX_REQUEST {
                    c.reply(Err("request line too long".into()));
                    c.closing = true;
                }
                return;
            };
            let line: Vec<u8> = c.inbuf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            let answer = match Request::parse(&line) {
                Ok(req) => self.request(i, req),
                Err(e) => Err(e),
            };
            let c = &mut self.clients[i];
            if c.attached.is_none() {
                c.closing = true;
            }
            c.reply(answer);
        }
        while self.clients[i].attached.is_some() && !self.clients[i].gone {
            let with_stdin = self.clients[i].attached == Some(true);
            match proto::take_frame(&mut self.clients[i].inbuf) {
                Ok(None) => break,
                Ok(Some((proto::FRAME_STDIN, data))) if with_stdin => {
                    if self.stdin.is_some() {
                        self.stdin_pending.extend_from_slice(&data);
                    }
                }
                Ok(Some((proto::FRAME_STDIN_CLOSE, _))) if with_stdin => {
                    self.clients[i].attached = Some(false);
                    self.stdin_ended();
                }
                Ok(Some((proto::FRAME_RESIZE, data))) => {
                    if let Some((rows, cols)) = proto::parse_resize(&data) {
                        let _ = self.resize(rows, cols);
                    }
                }
                Ok(Some(_)) | Err(_) => self.clients[i].gone = true,
            }
        }
        if !self.stdin_pending.is_empty() {
            self.write_stdin();
        }
    }

    /// The `ok` payload of a request, or why not.
    fn request(&mut self, client: usize, req: Request) -> Result<String, String> {
        match req {
            Request::Start => {
                let container = self.runtime.load(&self.id).map_err(|e| chain(&e))?;
                container.start().map_err(|e| chain(&e))?;
                self.started_ns = now_ns();
                // The start time with the reply: a container that exits at once takes its
                // monitor with it before a `status` could ask.
                Ok(self.started_ns.to_string())
            }
            Request::Status => {
                let status = MonitorStatus {
                    pid: self.init.as_raw(),
                    monitor_pid: std::process::id() as i32,
                    started_ns: self.started_ns,
                    tty: self.tty,
                    stdin: self.has_stdin,
                };
                serde_json::to_string(&status).map_err(|e| e.to_string())
            }
            Request::Reopen => {
                self.log.reopen().map_err(|e| chain(&e))?;
                Ok(String::new())
            }
            Request::Resize { rows, cols } => self.resize(rows, cols).map(|()| String::new()),
            Request::Attach { stdin } => {
                if stdin && !self.has_stdin {
                    return Err("the container was not created with stdin".into());
                }
                self.clients[client].attached = Some(stdin);
                Ok(String::new())
            }
        }
    }

    fn resize(&self, rows: u16, cols: u16) -> Result<(), String> {
        let Some(master) = self.out.stdout.as_ref().filter(|_| self.tty) else {
            return Err("the container has no terminal to resize".into());
        };
        super::set_window_size(master.as_fd(), rows, cols)
            .map_err(|e| format!("resizing the terminal: {e}"))
    }

    fn signals(&mut self) {
        let mut child = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => child = true,
                Ok(sig) if self.status.is_none() => {
                    let _ = nix::sys::signal::kill(self.init, sig);
                }
                _ => {}
            }
        }
        if child {
            self.reap();
        }
    }

    /// Reaps every child that has exited (orphans of the container come to us too).
    fn reap(&mut self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) if status.pid() == Some(self.init) => {
                    self.status = Some(status);
                    self.finished_ns = now_ns();
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// Init is gone: the rest of the output to the log, the log closed, then the exit
    /// recorded (so a reader of exit.json finds the log complete), then the clients told.
    fn finish(&mut self) {
        // In its own pid namespace every process of the container is dead by now, so the
        // pipes end; one whose writer lives on (a shared pid namespace) stops at "empty".
        for stream in [Stream::Stdout, Stream::Stderr] {
            while self.read_output(stream) {}
        }
        self.log.finish();
        let exit = self.exit();
        let path = self.dir.join(EXIT_FILE);
        let json = serde_json::to_vec(&exit).unwrap_or_default();
        if let Err(e) = capsa::internal::write_atomic(&path, &json, 0o644) {
            eprintln!(
                "capsa-cri-monitor: {}: writing {}: {e}",
                self.id,
                path.display()
            );
        }
        let _ = std::fs::remove_file(self.dir.join(CONTROL_SOCKET));
        for c in self.clients.iter_mut().filter(|c| c.attached.is_some()) {
            proto::push_frame(&mut c.outbuf, proto::FRAME_EXIT, &json);
            // A client gets a moment to take its last output; a stuck one is not waited for.
            if c.sock.set_nonblocking(false).is_ok()
                && c.sock
                    .set_write_timeout(Some(std::time::Duration::from_secs(1)))
                    .is_ok()
            {
                let _ = c.sock.write_all(&c.outbuf);
            }
        }
    }

    fn exit(&self) -> Exit {
        let (code, signal) = match self.status {
            Some(WaitStatus::Exited(_, code)) => (code, None),
            Some(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, Some(sig as i32)),
            _ => (255, None),
        };
        let oom_killed = self
            .runtime
            .load(&self.id)
            .and_then(|c| c.cgroup())
            .map(|cg| cg.oom_kills() > 0)
            .unwrap_or(false);
        Exit {
            code,
            signal,
            started_ns: self.started_ns,
            finished_ns: self.finished_ns,
            oom_killed,
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::cni::error_chain(e)
}

/// The pty master capsa's create sent to our console socket (already queued: the create has
/// returned, so no wait).
pub(crate) fn receive_terminal(console: &UnixListener, path: &Path) -> Result<OwnedFd, SetupError> {
    set_nonblocking(console.as_fd())?;
    let (conn, _) = console.accept().map_err(|_| SetupError::NoTerminal {
        path: path.to_path_buf(),
    })?;
    conn.set_nonblocking(false)
        .map_err(sys_io("reading the console socket"))?;
    Ok(capsa::console::receive_master(conn.as_fd())?)
}

/// Hands back what the create needed and the monitor's loop does not: the monitor lives as
/// long as its container, and its resident size is its cost. The free heap goes back to the
/// kernel, and the pages of our executable's read-only mappings that are still the file's
/// own (the library's create code, mostly) leave our page tables: they stay in the page
/// cache, shared, and fault back in if ever run again. A mapping with any page of its own
/// (relocated at start, then made read-only) is left alone: dropping it would bring back
/// the file's unrelocated bytes.
fn release_free_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_readonly_mappings(&smaps, &exe.to_string_lossy()) {
        // SAFETY: [start, end) is a whole read-only private mapping of our executable with
        // no anonymous (copied) page: later accesses fault in the same file pages.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// The address ranges of /proc/self/smaps entries that map `path` private, not writable,
/// with no anonymous page.
fn clean_readonly_mappings(smaps: &str, path: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or_default();
        if let Some(kib) = line.strip_prefix("Anonymous:") {
            let clean = kib.trim().trim_end_matches("kB").trim() == "0";
            if let Some(range) = current.take().filter(|_| clean) {
                out.push(range);
            }
            continue;
        }
        if first.ends_with(':') {
            continue; // another field of the current entry
        }
        // An entry's header: range perms offset dev inode path.
        current = None;
        let perms = f.next().unwrap_or_default();
        let private_readonly = perms.as_bytes().get(1) == Some(&b'-') && perms.ends_with('p');
        if f.nth(3) == Some(path) && private_readonly {
            current = first.split_once('-').and_then(|(a, b)| {
                Some((
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(b, 16).ok()?,
                ))
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean_readonly_mappings;

    #[test]
    fn only_clean_readonly_private_mappings_of_the_file_are_picked() {
        let smaps = "\
00400000-00401000 r--p 00000000 08:01 12 /usr/bin/m
Size:                  4 kB
Anonymous:             0 kB
00401000-00500000 r-xp 00001000 08:01 12 /usr/bin/m
Anonymous:             0 kB
VmFlags: rd ex mr mw me
00500000-00501000 r--p 00100000 08:01 12 /usr/bin/m
Anonymous:             4 kB
00600000-00601000 rw-p 00200000 08:01 12 /usr/bin/m
Anonymous:             0 kB
00700000-00701000 r--s 00000000 08:01 12 /usr/bin/m
Anonymous:             0 kB
00800000-00801000 r-xp 00000000 08:01 13 /usr/bin/other
Anonymous:             0 kB
00900000-00901000 rw-p 00000000 00:00 0                                  [heap]
Anonymous:             4 kB";
        assert_eq!(
            clean_readonly_mappings(smaps, "/usr/bin/m"),
            vec![(0x400000, 0x401000), (0x401000, 0x500000)]
        );
    }
}
