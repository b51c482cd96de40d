//! The per-container monitor, the daemon's side. One small process (`capsa-cri-monitor`,
//! [`server`]) per container owns its stdio, as CRI-O's conmon does: it creates the container
//! through the capsa library with the container's stdout/stderr on pipes it holds (or a pty
//! whose master it holds), writes kubelet's log format ([`log`]), keeps stdin for attach,
//! reaps init and records the exit in `<dir>/exit.json`. It is detached from whoever started
//! it, so the daemon can die (SIGKILL included) and come back: [`MonitorHandle::connect`]
//! finds it again, [`exit_status`] reads what happened meanwhile.
//!
//! ```text
//!   daemon                              monitor (double-forked, own session)
//!   Monitor::spawn ── argv, ready pipe ─▶ subreaper; log open; <dir>/ctl bound
//!                                        stdio pipes -> capsa create (container "created")
//!        ◀── {"ok":{pid}} or {"error":{kind,message}} ──
//!   handle.start() ──── "start" on ctl ─▶ capsa start, started_ns
//!   reopen_log / resize / attach / status on ctl
//!                                        init exits: reaped, output drained, log closed,
//!   exit_status(dir) ◀── exit.json ────── exit.json (temp + rename), ctl removed, exit
//! ```
//!
//! `exit.json` appears only once the log is complete: a reader that sees it sees every line.

pub mod log;
pub mod proto;
pub mod server;

use proto::{MonitorStatus, Ready, Request};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The control socket in the monitor's directory.
pub const CONTROL_SOCKET: &str = "ctl";
/// The exit record in the monitor's directory.
pub const EXIT_FILE: &str = "exit.json";
/// The monitor's own diagnostics (its stderr), in its directory.
pub const MONITOR_LOG: &str = "monitor.log";
/// The descriptor the ready pipe is handed over on.
const READY_FD: i32 = 3;

/// What a monitor is asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSpec {
    /// The `capsa-cri-monitor` binary; [`MonitorSpec::default_program`] finds the one next to
    /// the running executable.
    pub program: PathBuf,
    /// The monitor's own directory (control socket, exit.json, monitor.log): made if missing.
    /// Short: `<dir>/ctl` must fit a socket address (107 bytes).
    pub dir: PathBuf,
    /// The capsa state root and the container.
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    /// Join this capsa pod.
    pub pod: Option<String>,
    /// The CRI log file (its directory must exist).
    pub log_path: PathBuf,
    /// The process wants a terminal (the bundle's `process.terminal` must say the same).
    pub tty: bool,
    /// Keep the container's stdin open for attach; else it reads /dev/null.
    pub stdin: bool,
    /// Close the container's stdin when the first attach client with stdin leaves. With a
    /// terminal only the monitor's writing handle closes: the container sees the end of its
    /// input when the client sends ^D, as on any terminal.
    pub stdin_once: bool,
}

impl MonitorSpec {
    /// `capsa-cri-monitor` next to the running executable.
    pub fn default_program() -> PathBuf {
        std::env::current_exe()
            .map(|p| p.with_file_name("capsa-cri-monitor"))
            .unwrap_or_else(|_| PathBuf::from("capsa-cri-monitor"))
    }

    /// The monitor's command line (without the program).
    pub fn argv(&self, ready_fd: Option<i32>) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut pair = |k: &str, v: &Path| {
            a.push(k.into());
            a.push(v.as_os_str().to_owned());
        };
        pair("--dir", &self.dir);
        pair("--root", &self.root);
        pair("--bundle", &self.bundle);
        pair("--log", &self.log_path);
        a.push("--id".into());
        a.push(self.id.clone().into());
        if let Some(p) = &self.pod {
            a.push("--pod".into());
            a.push(p.into());
        }
        for (on, flag) in [
            (self.tty, "--tty"),
            (self.stdin, "--stdin"),
            (self.stdin_once, "--stdin-once"),
        ] {
            if on {
                a.push(flag.into());
            }
        }
        if let Some(fd) = ready_fd {
            a.push("--ready-fd".into());
            a.push(fd.to_string().into());
        }
        a
    }

    /// Parses [`MonitorSpec::argv`]'s output: the spec (its `program` empty) and the ready fd.
    pub fn from_argv(
        args: impl IntoIterator<Item = OsString>,
    ) -> Result<(MonitorSpec, Option<i32>), String> {
        let mut spec = MonitorSpec {
            program: PathBuf::new(),
            dir: PathBuf::new(),
            root: PathBuf::new(),
            id: String::new(),
            bundle: PathBuf::new(),
            pod: None,
            log_path: PathBuf::new(),
            tty: false,
            stdin: false,
            stdin_once: false,
        };
        let mut ready = None;
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let flag = flag.to_string_lossy().into_owned();
            let mut value = |what: &str| {
                it.next()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("{what} needs a value"))
            };
            let text = |v: OsString, what: &str| {
                v.into_string().map_err(|_| format!("{what} is not UTF-8"))
            };
            match flag.as_str() {
                "--dir" => spec.dir = value("--dir")?.into(),
                "--root" => spec.root = value("--root")?.into(),
                "--bundle" => spec.bundle = value("--bundle")?.into(),
                "--log" => spec.log_path = value("--log")?.into(),
                "--id" => spec.id = text(value("--id")?, "--id")?,
                "--pod" => spec.pod = Some(text(value("--pod")?, "--pod")?),
                "--tty" => spec.tty = true,
                "--stdin" => spec.stdin = true,
                "--stdin-once" => spec.stdin_once = true,
                "--ready-fd" => {
                    let v = text(value("--ready-fd")?, "--ready-fd")?;
                    ready =
                        Some(v.parse::<i32>().ok().filter(|fd| *fd > 2).ok_or_else(|| {
                            format!("--ready-fd {v:?} is not a descriptor above 2")
                        })?);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        for (missing, name) in [
            (spec.dir.as_os_str().is_empty(), "--dir"),
            (spec.root.as_os_str().is_empty(), "--root"),
            (spec.bundle.as_os_str().is_empty(), "--bundle"),
            (spec.log_path.as_os_str().is_empty(), "--log"),
            (spec.id.is_empty(), "--id"),
        ] {
            if missing {
                return Err(format!("{name} is required"));
            }
        }
        Ok((spec, ready))
    }
}

/// How a container's init ended, as `exit.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The exit code, or 128 + n when killed by signal n (as a shell reports it).
    pub code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// When the monitor started it, ns since the epoch; 0 if it never was.
    pub started_ns: i64,
    pub finished_ns: i64,
    /// The container's cgroup counted an OOM kill.
    pub oom_killed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("monitor directory {}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the monitor {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the monitor's readiness")]
    Ready(#[source] std::io::Error),
    #[error("the monitor of {id} exited before it was ready ({status}); see {}", log.display())]
    Died {
        id: String,
        status: String,
        log: PathBuf,
    },
    #[error("the monitor's readiness message {text:?} is not understood")]
    BadReady { text: String },
    /// The container could not be created; `kind` is capsa's, for the caller's error codes.
    #[error("creating container {id}: {message}")]
    Create {
        id: String,
        kind: capsa::ErrorKind,
        message: String,
    },
    #[error("connecting to the monitor at {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the monitor at {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The monitor refused a request; its reason.
    #[error("monitor at {}: {message}", path.display())]
    Refused { path: PathBuf, message: String },
    #[error("reading {}", path.display())]
    ExitFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not an exit record", path.display())]
    BadExitFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl MonitorError {
    /// capsa's kind of the failure (creates keep theirs; anything else is `Other`).
    pub fn kind(&self) -> capsa::ErrorKind {
        match self {
            MonitorError::Create { kind, .. } => *kind,
            _ => capsa::ErrorKind::Other,
        }
    }
}

pub struct Monitor;

impl Monitor {
    /// Starts a monitor for `spec` and waits until its container is created (or failed to
    /// be, with the whole cause). Blocking: from async code, call it in `spawn_blocking`.
    /// The monitor is detached at once: killing the caller at any point leaves it running.
    pub fn spawn(spec: &MonitorSpec) -> Result<MonitorHandle, MonitorError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&spec.dir)
            .map_err(|source| MonitorError::Dir {
                path: spec.dir.clone(),
                source,
            })?;
        let log = spec.dir.join(MONITOR_LOG);
        let stderr = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .map_err(|source| MonitorError::Dir {
                path: log.clone(),
                source,
            })?;
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| MonitorError::Spawn {
                program: spec.program.clone(),
                source: e.into(),
            })?;
        let write_fd = write.as_raw_fd();
        let mut cmd = std::process::Command::new(&spec.program);
        cmd.args(spec.argv(Some(READY_FD)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        // SAFETY: the hook runs only async-signal-safe calls between fork and exec.
        unsafe { cmd.pre_exec(hand_over(write_fd, READY_FD)) };
        let mut child = cmd.spawn().map_err(|source| MonitorError::Spawn {
            program: spec.program.clone(),
            source,
        })?;
        drop(write);
        // The first process only forks the monitor and exits; reap it now.
        let status = child.wait().map_err(MonitorError::Ready)?;
        let mut text = String::new();
        std::fs::File::from(read)
            .read_to_string(&mut text)
            .map_err(MonitorError::Ready)?;
        if text.is_empty() {
            return Err(MonitorError::Died {
                id: spec.id.clone(),
                status: status.to_string(),
                log,
            });
        }
        match serde_json::from_str::<Ready>(text.trim_end()) {
            Ok(Ready::Ok { pid, monitor_pid }) => Ok(MonitorHandle {
                dir: spec.dir.clone(),
                pid,
                monitor_pid,
            }),
            Ok(Ready::Error { kind, message }) => Err(MonitorError::Create {
                id: spec.id.clone(),
                kind,
                message,
            }),
            Err(_) => Err(MonitorError::BadReady { text }),
        }
    }
}

/// A running monitor, found by its directory.
#[derive(Debug, Clone)]
pub struct MonitorHandle {
    dir: PathBuf,
    pid: i32,
    monitor_pid: i32,
}

impl MonitorHandle {
    /// The monitor in `dir`, still running (after a daemon restart, say). An error when it is
    /// gone: then [`exit_status`] says whether its container exited.
    pub fn connect(dir: &Path) -> Result<MonitorHandle, MonitorError> {
        let status = status_at(dir)?;
        Ok(MonitorHandle {
            dir: dir.to_path_buf(),
            pid: status.pid,
            monitor_pid: status.monitor_pid,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The container's init.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn monitor_pid(&self) -> i32 {
        self.monitor_pid
    }

    /// Starts the container (capsa start); the start time the monitor records, ns since the
    /// epoch.
    pub fn start(&self) -> Result<i64, MonitorError> {
        let reply = request(&self.dir, &Request::Start)?;
        reply.parse().map_err(|_| MonitorError::Refused {
            path: self.dir.join(CONTROL_SOCKET),
            message: format!("start reply {reply:?} is not a time"),
        })
    }

    /// Opens the log path anew (kubelet has renamed the file); answered once done.
    pub fn reopen_log(&self) -> Result<(), MonitorError> {
        request(&self.dir, &Request::Reopen).map(drop)
    }

    /// Sets the terminal's size (a container with a tty only).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), MonitorError> {
        request(&self.dir, &Request::Resize { rows, cols }).map(drop)
    }

    pub fn status(&self) -> Result<MonitorStatus, MonitorError> {
        status_at(&self.dir)
    }

    /// Attaches to the container's output (and its stdin with `stdin`, if it has one).
    pub fn attach(&self, stdin: bool) -> Result<Attach, MonitorError> {
        let (stream, _) = exchange(&self.dir, &Request::Attach { stdin })?;
        Ok(Attach {
            path: self.dir.join(CONTROL_SOCKET),
            stream,
            inbuf: Vec::new(),
        })
    }
}

/// The exit of the container of the monitor in `dir`, once it has one.
pub fn exit_status(dir: &Path) -> Result<Option<Exit>, MonitorError> {
    let path = dir.join(EXIT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| MonitorError::BadExitFile { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MonitorError::ExitFile { path, source }),
    }
}

fn status_at(dir: &Path) -> Result<MonitorStatus, MonitorError> {
    let path = dir.join(CONTROL_SOCKET);
    let reply = request(dir, &Request::Status)?;
    serde_json::from_str(&reply).map_err(|_| MonitorError::Refused {
        path,
        message: format!("status reply {reply:?} is not understood"),
    })
}

/// One request, its `ok` payload.
fn request(dir: &Path, req: &Request) -> Result<String, MonitorError> {
    exchange(dir, req).map(|(_, payload)| payload)
}

fn exchange(dir: &Path, req: &Request) -> Result<(UnixStream, String), MonitorError> {
    let path = dir.join(CONTROL_SOCKET);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MonitorError::Io { path, source }
    };
    let mut stream = UnixStream::connect(&path).map_err(|source| MonitorError::Connect {
        path: path.clone(),
        source,
    })?;
    stream
        .write_all(format!("{}\n", req.line()).as_bytes())
        .map_err(io(&path))?;
    // The reply line is read a byte at a time: after `attach`'s, frames follow on the stream.
    let mut line = Vec::new();
    let mut reader = BufReader::with_capacity(1, &stream);
    reader.read_until(b'\n', &mut line).map_err(io(&path))?;
    let line = String::from_utf8_lossy(&line).trim_end().to_string();
    if let Some(rest) = line.strip_prefix("ok") {
        return Ok((stream, rest.trim_start().to_string()));
    }
    let message = match line.strip_prefix("error ") {
        Some(m) => m.to_string(),
        None if line.is_empty() => "closed the connection without a reply".to_string(),
        None => format!("reply {line:?} is not understood"),
    };
    Err(MonitorError::Refused { path, message })
}

/// What an attached client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(Exit),
}

/// An attach session (blocking std I/O; `stream()` gives the socket for a caller that polls).
pub struct Attach {
    path: PathBuf,
    stream: UnixStream,
    inbuf: Vec<u8>,
}

impl Attach {
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The next piece of output; `None` once the monitor closed the session.
    pub fn read(&mut self) -> Result<Option<Output>, MonitorError> {
        loop {
            let refused = |message: String| MonitorError::Refused {
                path: self.path.clone(),
                message,
            };
            if let Some((kind, payload)) = proto::take_frame(&mut self.inbuf).map_err(refused)? {
                return match kind {
                    proto::FRAME_STDOUT => Ok(Some(Output::Stdout(payload))),
                    proto::FRAME_STDERR => Ok(Some(Output::Stderr(payload))),
                    proto::FRAME_EXIT => serde_json::from_slice(&payload)
                        .map(|e| Some(Output::Exit(e)))
                        .map_err(|e| refused(format!("exit frame: {e}"))),
                    other => Err(refused(format!("unknown frame kind {other}"))),
                };
            }
            let mut buf = [0u8; 64 * 1024];
            let n = self
                .stream
                .read(&mut buf)
                .map_err(|source| MonitorError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.inbuf.extend_from_slice(&buf[..n]);
        }
    }

    pub fn write_stdin(&mut self, data: &[u8]) -> Result<(), MonitorError> {
        self.send(&proto::frame(proto::FRAME_STDIN, data))
    }

    /// This client's stdin ended (with stdin_once, the container's stdin closes).
    pub fn close_stdin(&mut self) -> Result<(), MonitorError> {
        self.send(&proto::frame(proto::FRAME_STDIN_CLOSE, &[]))
    }

    pub fn resize(&mut self, rows: u16, cols: u16) -> Result<(), MonitorError> {
        self.send(&proto::frame(
            proto::FRAME_RESIZE,
            &proto::resize_payload(rows, cols),
        ))
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), MonitorError> {
        self.stream
            .write_all(bytes)
            .map_err(|source| MonitorError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// A `pre_exec` hook that makes `fd` the child's descriptor `target`, kept across the exec.
/// Only dup2 and fcntl run in it, both async-signal-safe.
pub(crate) fn hand_over(fd: i32, target: i32) -> impl FnMut() -> std::io::Result<()> + Send + Sync {
    move || {
        // SAFETY: fcntl and dup2 on descriptors of ours, between fork and exec.
        let r = unsafe {
            if fd == target {
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            }
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Sets the size of the terminal whose master is `master` (the process gets SIGWINCH).
pub(crate) fn set_window_size(
    master: std::os::fd::BorrowedFd,
    rows: u16,
    cols: u16,
) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `fd` is an open descriptor (the monitor checks the one it was handed).
pub(crate) fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_round_trips() {
        let spec = MonitorSpec {
            program: PathBuf::new(),
            dir: "/run/m/a".into(),
            root: "/run/capsa".into(),
            id: "c1".into(),
            bundle: "/b".into(),
            pod: Some("p".into()),
            log_path: "/var/log/pods/x/0.log".into(),
            tty: true,
            stdin: true,
            stdin_once: false,
        };
        assert_eq!(
            MonitorSpec::from_argv(spec.argv(Some(3))).unwrap(),
            (spec.clone(), Some(3))
        );
        let mut args = spec.argv(None);
        args.truncate(2);
        assert!(MonitorSpec::from_argv(args).unwrap_err().contains("--root"));
        assert!(MonitorSpec::from_argv(vec!["--dir".into()])
            .unwrap_err()
            .contains("needs a value"));
        assert!(
            MonitorSpec::from_argv(vec!["--ready-fd".into(), "1".into()])
                .unwrap_err()
                .contains("above 2")
        );
    }
}
