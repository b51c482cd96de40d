//! capsa: a low-level OCI container runtime.
//!
//! The library does all the work; the `capsa` binary is a thin runc-compatible front end, and
//! capsa-cri (a Kubernetes CRI server) is another client of the same API. Data flows top to
//! bottom: container (lifecycle, state) -> process (clone chain, sync channel, container
//! init) -> namespaces, rootfs, cgroups, security -> execve (docs/design.md, "Layers").
//!
//! The public surface:
//! - [`Runtime`] (a state root), [`Container`], [`CreateOptions`], [`ExecOptions`],
//!   [`StdioFds`], [`Status`]; the rest of a container's API is in [`container`]
//!   ([`container::KillSignal`], [`container::OciState`], ...).
//! - [`Pod`] and [`PodOptions`] ([`pod`]): an infra process whose namespaces containers share.
//! - [`Error`], [`ErrorKind`], [`Result`] ([`error`]): each module's error enum is a variant.
//! - [`overlay`]: OCI layers unpacked, mounted as overlay roots, diffed back into a layer.
//! - [`cgroups`]: a container's or pod's cgroup and its statistics.
//! - [`spec`] (the `capsa spec` defaults), [`security`] (capability names, LSMs),
//!   [`console`] (the pty master sent over a console socket).
//!
//! Option structs are `#[non_exhaustive]`: build them with `new` and the chainable setters.
//! Everything else is private to the crate. `examples/` has whole programs.
//!
//! ```no_run
//! use capsa::{Runtime, CreateOptions};
//! let runtime = Runtime::new("/run/capsa");
//! let container = runtime.create("demo", &CreateOptions::new("/path/to/bundle"))?;
//! container.start()?;
//! # Ok::<(), capsa::Error>(())
//! ```
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

/// Chainable setters for an options struct (they are `#[non_exhaustive]`, so callers outside
/// the crate build them with `new` and these): `field(value) -> Self` for each listed field,
/// taking anything that converts into the field's type, or into the `Some` of an `Option`.
macro_rules! setters {
    (@set $value:expr) => { $value };
    (@set $value:expr, Some) => { Some($value) };
    ($($(#[$attr:meta])* $field:ident: $ty:ty $(=> $some:ident)?;)*) => {
        $(
            $(#[$attr])*
            pub fn $field(mut self, value: impl Into<$ty>) -> Self {
                self.$field = setters!(@set value.into() $(, $some)?);
                self
            }
        )*
    };
}

pub mod cgroups;
pub mod console;
pub mod container;
pub mod error;
pub(crate) mod hooks;
pub(crate) mod kernel;
pub(crate) mod namespaces;
pub mod overlay;
pub mod pod;
pub(crate) mod process;
pub(crate) mod rootfs;
pub mod security;
pub mod spec;
pub(crate) mod sys;
pub(crate) mod time;

pub use container::{
    CheckpointOptions, Container, CreateOptions, ExecOptions, RestoreOptions, Runtime, Status,
    StdioFds,
};
pub use error::{Error, ErrorKind, Result};
pub use pod::{Pod, PodOptions};

/// Helpers that exist for capsa's own binaries (the `capsa` CLI and capsa-cri), which are
/// separate crates: not part of the API, no stability promise, left out of the docs.
#[doc(hidden)]
pub mod internal {
    pub use crate::container::create::write_pid_file;
    pub use crate::container::state::write_atomic;
    pub use crate::process::{exit_code, set_log_fd, ChildGuard};
    pub use crate::rootfs::mountinfo::{mount_containing, MountEntry};
    pub use crate::rootfs::options::known_options;
    pub use crate::security::accounts::{require_regular, scan, MAX_LINE};
    pub use crate::security::sealed::{is_sealed, reexec_sealed};
    pub use crate::sys::pidfd::pidfd_open;
    pub use crate::sys::resolve::open_in_root;
    pub use crate::time::{format_rfc3339, now_rfc3339, now_rfc3339_nanos};
}

/// The OCI runtime-spec version capsa implements.
pub const OCI_VERSION: &str = "1.2.0";

/// The README's embedding example, compiled by `cargo test --doc` so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
