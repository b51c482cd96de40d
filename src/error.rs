//! The crate-level error: one variant per module, each module owning its own enum.

// The error enums of the modules that are private to the crate, so that a caller can match
// on them; the public modules' own (container, pod, cgroups, ...) are in those modules.
pub use crate::hooks::HookError;
pub use crate::kernel::KernelError;
pub use crate::namespaces::NamespaceError;
pub use crate::process::{ProcessError, RemoteError};
pub use crate::rootfs::RootfsError;
pub use crate::sys::procfs::ProcfsError;

/// Any error the library returns. Each variant is transparent: the message and the cause
/// chain are the module error's own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle's config.json.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// A container operation.
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    /// Checkpointing or restoring a container through CRIU.
    #[error(transparent)]
    Checkpoint(#[from] crate::container::CheckpointError),
    /// Making or running the container process.
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// Joining or making namespaces.
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    /// Setting up the container's root filesystem.
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    /// cgroups.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    /// Capabilities, identity, rlimits, LSM labels, seccomp.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// A hook.
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// The terminal.
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// Layers and overlay mounts.
    #[error(transparent)]
    Overlay(#[from] crate::overlay::OverlayError),
    /// A pod operation.
    #[error(transparent)]
    Pod(#[from] crate::pod::PodError),
    /// The kernel is older than capsa needs.
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),
    /// An error from the single-threaded child that did the work for a multithreaded
    /// caller (see `process::isolate`): its chain, errno and kind, as text.
    #[error(transparent)]
    Remote(#[from] Remote),
}

/// What kind of failure an error is, for callers that map errors onto their own codes (a
/// CRI server onto gRPC's); kept when the error crosses a process boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ErrorKind {
    /// The container or pod does not exist.
    NotFound,
    /// A container or pod of that id exists already.
    AlreadyExists,
    /// The request or config is wrong (the message names the field).
    InvalidInput,
    /// The object is in a state that does not allow the operation.
    WrongState,
    /// Anything else: a failure of the system or of the container's setup.
    Other,
}

/// An error that happened in another process (see [`Error::Remote`]).
#[derive(Debug)]
pub struct Remote {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// The error, its chain and errno.
    pub error: crate::process::RemoteError,
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error.message)
    }
}

impl std::error::Error for Remote {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.cause.as_deref().map(|c| c as _)
    }
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The kind of failure (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        use crate::container::ContainerError as C;
        use crate::pod::PodError as P;
        match self {
            Error::Spec(_) => ErrorKind::InvalidInput,
            Error::Container(C::NotExist { .. }) | Error::Pod(P::NotExist { .. }) => {
                ErrorKind::NotFound
            }
            Error::Container(C::Exists { .. }) | Error::Pod(P::Exists { .. }) => {
                ErrorKind::AlreadyExists
            }
            Error::Container(C::InvalidId { .. } | C::StdioWithTerminal)
            | Error::Checkpoint(
                crate::container::CheckpointError::Terminal
                | crate::container::CheckpointError::JoinedNamespace { .. }
                | crate::container::CheckpointError::Directory { .. }
                | crate::container::CheckpointError::NotACheckpoint { .. },
            )
            | Error::Pod(P::BadShare(_) | P::BadSysctl { .. } | P::ReservedId { .. }) => {
                ErrorKind::InvalidInput
            }
            Error::Container(
                C::NotRunning
                | C::ExecStopped
                | C::ExecPaused
                | C::NotPaused
                | C::AlreadyRunning
                | C::StartStopped
                | C::NotStopped { .. }
                | C::NotChild { .. }
                | C::Reaped { .. },
            )
            | Error::Pod(P::NotRunning { .. } | P::HasContainers { .. }) => ErrorKind::WrongState,
            Error::Remote(r) => r.kind,
            _ => ErrorKind::Other,
        }
    }

    /// The errno at the bottom of the cause chain, if the failure came from a syscall.
    pub fn errno(&self) -> Option<i32> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        let mut found = None;
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                found = io.raw_os_error().or(found);
            } else if let Some(remote) = e.downcast_ref::<crate::process::RemoteError>() {
                found = remote.errno.or(found);
            }
            cur = e.source();
        }
        found
    }
}
