//! capsa: a low-level OCI container runtime.
//!
//! The library does all the work; the `capsa` binary is a thin runc-compatible front end.
//! Data flows top to bottom: [`container`] (lifecycle, state) -> [`process`] (clone chain,
//! sync channel, container init) -> [`namespaces`], [`rootfs`], [`cgroups`], [`security`]
//! -> execve.
//!
//! ```no_run
//! use capsa::{Runtime, CreateOptions};
//! let runtime = Runtime::new("/run/capsa");
//! let container = runtime.create("demo", &CreateOptions::new("/path/to/bundle"))?;
//! container.start()?;
//! # Ok::<(), capsa::Error>(())
//! ```
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cgroups;
pub mod console;
pub mod container;
pub mod error;
pub mod hooks;
pub mod namespaces;
pub mod overlay;
pub mod pod;
pub mod process;
pub mod rootfs;
pub mod security;
pub mod spec;
pub mod time;

pub use container::{
    CheckpointOptions, Container, CreateOptions, RestoreOptions, Runtime, Status, StdioFds,
};
pub use error::{Error, ErrorKind, Result};
pub use pod::{Pod, PodOptions};

/// The OCI runtime-spec version capsa implements.
pub const OCI_VERSION: &str = "1.2.0";

/// The README's embedding example, compiled by `cargo test --doc` so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
