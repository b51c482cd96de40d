//! The crate-level error: one variant per module, each module owning its own enum.

/// Any error the library returns. Each variant is transparent: the message and the cause
/// chain are the module error's own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    #[error(transparent)]
    Overlay(#[from] crate::overlay::OverlayError),
    #[error(transparent)]
    Pod(#[from] crate::pod::PodError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
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
