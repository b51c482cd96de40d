//! What the streaming server needs from the runtime: containers to check and run processes
//! in, and pods' network namespaces. The daemon implements [`Backend`] on its container
//! store; tests implement it on host processes to hold the protocols alone.

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use std::io;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite};

/// A client's stream, as a transport gives it.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
/// A process's stream (shared with the session's other tasks while it runs, hence Sync).
pub type ProcRead = Box<dyn AsyncRead + Send + Sync + Unpin>;
pub type ProcWrite = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// A runtime-side failure, for the CRI call or the stream that asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No such container or sandbox (the CRI call answers NotFound).
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// It exists but cannot take the request, e.g. a container not running
    /// (FailedPrecondition).
    #[error("{what} {id} is {state}")]
    NotReady {
        what: &'static str,
        id: String,
        state: String,
    },
    /// Anything else, its cause kept.
    #[error("{op}")]
    Failed {
        op: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<BackendError> for tonic::Status {
    fn from(e: BackendError) -> tonic::Status {
        match e {
            BackendError::NotFound { .. } => tonic::Status::not_found(e.to_string()),
            BackendError::NotReady { .. } => tonic::Status::failed_precondition(e.to_string()),
            BackendError::Failed { .. } => tonic::Status::internal(crate::cni::error_chain(&e)),
        }
    }
}

/// The process side of an exec or an attach. The server takes each stream once; dropping
/// an exec's `ExecIo` kills its process (the client went away), dropping an attach's only
/// detaches.
pub trait ExecIo: Send + Sync {
    /// The process's stdin, when one was asked for; shut down (or dropped) for EOF.
    fn take_stdin(&mut self) -> Option<ProcWrite>;
    /// Its stdout, or the terminal's output with a tty; EOF once nothing can write to it.
    fn take_stdout(&mut self) -> Option<ProcRead>;
    /// Its stderr (never with a tty).
    fn take_stderr(&mut self) -> Option<ProcRead>;
    /// Sets the terminal's size (a no-op without one).
    fn resize(&self, rows: u16, cols: u16) -> io::Result<()>;
    /// Resolves to the exit code (128+N for a signal N): the exec'd process's, or the
    /// container's for an attach.
    fn wait(&self) -> BoxFuture<'_, Result<i32, BackendError>>;
}

/// See the module documentation.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Ok when `container_id` exists and runs (Exec and Attach ask before minting a URL).
    async fn check_container(&self, container_id: &str) -> Result<(), BackendError>;
    /// Ok when the sandbox exists and is ready (PortForward asks).
    async fn check_sandbox(&self, sandbox_id: &str) -> Result<(), BackendError>;
    /// Starts `cmd` in the container: stdin piped when `stdin`, a terminal when `tty`.
    async fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<Box<dyn ExecIo>, BackendError>;
    /// Joins the container's own stdio (stdin only when asked for and the container has
    /// one).
    async fn attach(
        &self,
        container_id: &str,
        stdin: bool,
        tty: bool,
    ) -> Result<Box<dyn ExecIo>, BackendError>;
    /// The pod's network namespace file; `None` for a pod on the host's network.
    async fn port_forward_netns(&self, sandbox_id: &str) -> Result<Option<PathBuf>, BackendError>;
}
