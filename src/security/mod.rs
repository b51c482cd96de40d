//! What the container process may do: capabilities, identity, rlimits, no_new_privs.

pub(crate) mod accounts;
mod capabilities;
mod identity;
pub mod lsm;
mod rlimits;
pub(crate) mod sealed;
pub(crate) mod seccomp;

pub(crate) use capabilities::{apply as apply_capabilities, drop_bounding, CapabilitySets};
pub use capabilities::{current_capabilities, parse_capability};
pub(crate) use identity::{join_session_keyring, set_identity, set_no_new_privs};
pub(crate) use rlimits::{apply as apply_rlimits, resource_name};

/// A failure applying what the process may do.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// Protecting the runtime binary (CVE-2019-5736) failed.
    #[error("protecting the runtime binary (CVE-2019-5736): {step}")]
    Sealing {
        /// The step that failed.
        step: &'static str,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A label for an LSM the host does not run.
    #[error("{lsm} label {label:?} requested, but {lsm} is not enabled on this host")]
    LsmUnavailable {
        /// The security module (AppArmor or SELinux).
        lsm: &'static str,
        /// The requested label.
        label: String,
    },
    /// Setting the LSM label failed.
    #[error("setting the {lsm} label {label:?} for the container process")]
    Lsm {
        /// The security module (AppArmor or SELinux).
        lsm: &'static str,
        /// The requested label.
        label: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Building or loading the seccomp filter failed.
    #[error("seccomp: {what}")]
    Seccomp {
        /// What was being done.
        what: String,
        /// The underlying failure.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// Loading the compiled seccomp filter failed.
    #[error("seccomp: {what}")]
    SeccompLoad {
        /// The step that failed.
        what: &'static str,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The seccomp filter is longer than the kernel accepts.
    #[error("seccomp: the filter has {len} instructions, more than the kernel's {max}")]
    SeccompTooLong {
        /// Its length in instructions.
        len: usize,
        /// The kernel's limit.
        max: usize,
    },
    /// A capability name the kernel does not know.
    #[error("unknown capability {name:?}")]
    UnknownCapability {
        /// The name as given.
        name: String,
    },
    /// Changing a capability failed.
    #[error("{what} capability {cap}")]
    Capability {
        /// What was being done.
        what: &'static str,
        /// The capability.
        cap: String,
        /// The underlying failure.
        #[source]
        source: caps::errors::CapsError,
    },
    /// Setting a capability set failed.
    #[error("setting the {set} capability set")]
    CapabilitySet {
        /// The capability set.
        set: &'static str,
        /// The underlying failure.
        #[source]
        source: caps::errors::CapsError,
    },
    /// Setting an rlimit failed.
    #[error("setting {resource} to soft {soft}, hard {hard}")]
    Rlimit {
        /// The resource (RLIMIT_...).
        resource: &'static str,
        /// The soft limit.
        soft: u64,
        /// The hard limit.
        hard: u64,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Setting the user, group or supplementary groups failed.
    #[error("{what} {value}")]
    Identity {
        /// What was being done.
        what: &'static str,
        /// The id or list asked for.
        value: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Setting no_new_privs failed.
    #[error("setting no_new_privs")]
    NoNewPrivs(#[source] std::io::Error),
    /// Clearing the dumpable flag failed.
    #[error("making the runtime process non-dumpable (CVE-2019-5736)")]
    Dumpable(#[source] std::io::Error),
    /// A string the sealed re-exec passes on holds a NUL byte.
    #[error("re-executing the sealed binary: {what} holds a NUL byte")]
    Nul {
        /// Which string.
        what: String,
    },
    /// Joining a new session keyring failed.
    #[error("joining a new session keyring {name:?}")]
    Keyring {
        /// The keyring name.
        name: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}
