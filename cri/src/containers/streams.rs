//! The streaming server's [`Backend`] on the daemon's containers: exec through the exec
//! helper ([`crate::exec::ExecSession`]), attach through the container's monitor (its
//! control socket's `attach` frames), port-forward into the pod's pinned network namespace.

use crate::daemon::Daemon;
use crate::exec::{ExecError, ExecRequest, ExecSession};
use crate::monitor::proto::{self, Request};
use crate::monitor::CONTROL_SOCKET;
use crate::streaming::backend::{Backend, BackendError, ExecIo, ProcRead, ProcWrite};
use futures_util::future::BoxFuture;
use k8s_cri::v1::ContainerState;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// The daemon, held weakly: the daemon owns the streaming server that owns this.
pub struct DaemonBackend(pub Weak<Daemon>);

fn failed(
    op: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> BackendError {
    BackendError::Failed {
        op: op.into(),
        source: Box::new(e),
    }
}

impl DaemonBackend {
    fn daemon(&self) -> Result<std::sync::Arc<Daemon>, BackendError> {
        self.0.upgrade().ok_or_else(|| {
            failed(
                "the daemon is stopping",
                std::io::Error::from(std::io::ErrorKind::NotConnected),
            )
        })
    }

    /// The running container `id` (NotFound, or NotReady naming its state).
    fn running(&self, daemon: &Daemon, id: &str) -> Result<(), BackendError> {
        let r = daemon
            .containers()
            .get(id)
            .ok_or_else(|| BackendError::NotFound {
                what: "container",
                id: id.to_string(),
            })?;
        let state = daemon.observe(&r).state;
        if state != ContainerState::ContainerRunning {
            return Err(BackendError::NotReady {
                what: "container",
                id: id.to_string(),
                state: state.as_str_name().to_string(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Backend for DaemonBackend {
    async fn check_container(&self, container_id: &str) -> Result<(), BackendError> {
        let daemon = self.daemon()?;
        self.running(&daemon, container_id)
    }

    async fn check_sandbox(&self, sandbox_id: &str) -> Result<(), BackendError> {
        let daemon = self.daemon()?;
        let record = daemon
            .sandbox(sandbox_id)
            .ok_or_else(|| BackendError::NotFound {
                what: "sandbox",
                id: sandbox_id.to_string(),
            })?;
        if !daemon.is_ready(&record) {
            return Err(BackendError::NotReady {
                what: "sandbox",
                id: sandbox_id.to_string(),
                state: "SANDBOX_NOTREADY".into(),
            });
        }
        Ok(())
    }

    async fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<Box<dyn ExecIo>, BackendError> {
        let daemon = self.daemon()?;
        self.running(&daemon, container_id)?;
        let root = daemon.config().capsa_root();
        let (id, cmd) = (container_id.to_string(), cmd.to_vec());
        let req = tokio::task::spawn_blocking(move || {
            ExecRequest::for_container(root, &id, &cmd, tty, stdin)
        })
        .await
        .map_err(|e| failed("preparing the exec", e))?
        .map_err(|e| failed(format!("exec in {container_id}"), e))?;
        let mut session = ExecSession::spawn(&req)
            .await
            .map_err(|e| failed(format!("exec in {container_id}"), e))?;
        let resizer = session
            .resizer()
            .map_err(|e| failed("the exec's terminal", e))?;
        let (stdin, stdout, stderr): (Option<ProcWrite>, Option<ProcRead>, Option<ProcRead>) =
            match session.take_terminal() {
                Some(term) => {
                    let (r, w) = tokio::io::split(term);
                    (
                        stdin.then(|| Box::new(w) as ProcWrite),
                        Some(Box::new(r)),
                        None,
                    )
                }
                None => (
                    session.take_stdin().map(|w| Box::new(w) as ProcWrite),
                    session.take_stdout().map(|r| Box::new(r) as ProcRead),
                    session.take_stderr().map(|r| Box::new(r) as ProcRead),
                ),
            };
        Ok(Box::new(Exec {
            session: tokio::sync::Mutex::new(session),
            resizer,
            stdin,
            stdout,
            stderr,
        }))
    }

    async fn attach(
        &self,
        container_id: &str,
        stdin: bool,
        _tty: bool,
    ) -> Result<Box<dyn ExecIo>, BackendError> {
        let daemon = self.daemon()?;
        self.running(&daemon, container_id)?;
        let dir = daemon.monitor_dir(container_id);
        Attached::connect(&dir, stdin)
            .await
            .map(|a| Box::new(a) as Box<dyn ExecIo>)
            .map_err(|e| failed(format!("attaching to {container_id}"), e))
    }

    async fn port_forward_netns(&self, sandbox_id: &str) -> Result<Option<PathBuf>, BackendError> {
        let daemon = self.daemon()?;
        let record = daemon
            .sandbox(sandbox_id)
            .ok_or_else(|| BackendError::NotFound {
                what: "sandbox",
                id: sandbox_id.to_string(),
            })?;
        if record.host_network {
            return Ok(None);
        }
        record
            .netns
            .map(Some)
            .ok_or_else(|| BackendError::NotReady {
                what: "sandbox",
                id: sandbox_id.to_string(),
                state: "without a network namespace (stopped)".into(),
            })
    }
}

/// An exec session: dropped, it kills the process.
struct Exec {
    session: tokio::sync::Mutex<ExecSession>,
    resizer: Option<crate::exec::Resizer>,
    stdin: Option<ProcWrite>,
    stdout: Option<ProcRead>,
    stderr: Option<ProcRead>,
}

impl ExecIo for Exec {
    fn take_stdin(&mut self) -> Option<ProcWrite> {
        self.stdin.take()
    }

    fn take_stdout(&mut self) -> Option<ProcRead> {
        self.stdout.take()
    }

    fn take_stderr(&mut self) -> Option<ProcRead> {
        self.stderr.take()
    }

    fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        match &self.resizer {
            Some(r) => r.resize(rows, cols),
            None => Ok(()),
        }
    }

    fn wait(&self) -> BoxFuture<'_, Result<i32, BackendError>> {
        Box::pin(async move {
            self.session
                .lock()
                .await
                .wait()
                .await
                .map_err(|e: ExecError| failed("waiting for the exec", e))
        })
    }
}

/// An attach to the container's own stdio through its monitor. Dropped, it detaches (the
/// container goes on).
struct Attached {
    stdin: Option<ProcWrite>,
    stdout: Option<ProcRead>,
    stderr: Option<ProcRead>,
    frames: mpsc::UnboundedSender<Vec<u8>>,
    exit: watch::Receiver<Option<Result<i32, String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Room between the monitor's frames and the client's streams.
const PIPE: usize = 256 * 1024;

impl Attached {
    async fn connect(dir: &Path, stdin: bool) -> std::io::Result<Attached> {
        let path = dir.join(CONTROL_SOCKET);
        let mut sock = tokio::net::UnixStream::connect(&path).await?;
        sock.write_all(format!("{}\n", Request::Attach { stdin }.line()).as_bytes())
            .await?;
        let (read, mut write) = sock.into_split();
        let mut read = tokio::io::BufReader::new(read);
        let mut line = String::new();
        read.read_line(&mut line).await?;
        let line = line.trim_end();
        if line != "ok" && !line.starts_with("ok ") {
            return Err(std::io::Error::other(format!(
                "the monitor at {} answered {line:?}",
                path.display()
            )));
        }
        let (out_w, out_r) = tokio::io::duplex(PIPE);
        let (err_w, err_r) = tokio::io::duplex(PIPE);
        let (exit_tx, exit) = watch::channel(None);
        let (frames, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
        let mut tasks = Vec::new();
        // Monitor -> client: output frames to the two streams, the exit last.
        tasks.push(tokio::spawn(async move {
            let (mut out_w, mut err_w) = (out_w, err_w);
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let outcome = loop {
                match proto::take_frame(&mut buf) {
                    Ok(Some((proto::FRAME_STDOUT, data))) => {
                        // A client that stopped reading stdout: its other streams go on.
                        let _ = out_w.write_all(&data).await;
                        continue;
                    }
                    Ok(Some((proto::FRAME_STDERR, data))) => {
                        let _ = err_w.write_all(&data).await;
                        continue;
                    }
                    Ok(Some((proto::FRAME_EXIT, data))) => {
                        break serde_json::from_slice::<crate::monitor::Exit>(&data)
                            .map(|e| e.code)
                            .map_err(|e| format!("the exit frame: {e}"));
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
                match read.read(&mut chunk).await {
                    Ok(0) => break Err("the monitor closed the attach before an exit".into()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => break Err(format!("reading the attach: {e}")),
                }
            };
            drop((out_w, err_w));
            let _ = exit_tx.send(Some(outcome));
        }));
        // Frames to the monitor: stdin and resizes.
        tasks.push(tokio::spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                if write.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }));
        let stdin_w: Option<ProcWrite> = if stdin {
            let (w, mut r) = tokio::io::duplex(PIPE);
            let frames = frames.clone();
            tasks.push(tokio::spawn(async move {
                let mut chunk = vec![0u8; proto::MAX_FRAME];
                loop {
                    match r.read(&mut chunk).await {
                        Ok(0) | Err(_) => {
                            let _ = frames.send(proto::frame(proto::FRAME_STDIN_CLOSE, b""));
                            return;
                        }
                        Ok(n) => {
                            if frames
                                .send(proto::frame(proto::FRAME_STDIN, &chunk[..n]))
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            }));
            Some(Box::new(w))
        } else {
            None
        };
        Ok(Attached {
            stdin: stdin_w,
            stdout: Some(Box::new(out_r)),
            stderr: Some(Box::new(err_r)),
            frames,
            exit,
            tasks,
        })
    }
}

impl ExecIo for Attached {
    fn take_stdin(&mut self) -> Option<ProcWrite> {
        self.stdin.take()
    }

    fn take_stdout(&mut self) -> Option<ProcRead> {
        self.stdout.take()
    }

    fn take_stderr(&mut self) -> Option<ProcRead> {
        self.stderr.take()
    }

    fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.frames
            .send(proto::frame(
                proto::FRAME_RESIZE,
                &proto::resize_payload(rows, cols),
            ))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    fn wait(&self) -> BoxFuture<'_, Result<i32, BackendError>> {
        let mut exit = self.exit.clone();
        Box::pin(async move {
            let outcome = exit
                .wait_for(Option::is_some)
                .await
                .map_err(|e| failed("waiting for the container", e))?
                .clone();
            match outcome {
                Some(Ok(code)) => Ok(code),
                Some(Err(e)) => Err(failed(
                    "waiting for the container",
                    std::io::Error::other(e),
                )),
                None => Err(failed(
                    "waiting for the container",
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                )),
            }
        })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
