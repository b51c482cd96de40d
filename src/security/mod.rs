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

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("protecting the runtime binary (CVE-2019-5736): {step}")]
    Sealing {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{lsm} label {label:?} requested, but {lsm} is not enabled on this host")]
    LsmUnavailable { lsm: &'static str, label: String },
    #[error("setting the {lsm} label {label:?} for the container process")]
    Lsm {
        lsm: &'static str,
        label: String,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp: {what}")]
    Seccomp {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("unknown capability {name:?}")]
    UnknownCapability { name: String },
    #[error("{what} capability {cap}")]
    Capability {
        what: &'static str,
        cap: String,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("setting the {set} capability set")]
    CapabilitySet {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("setting {resource} to soft {soft}, hard {hard}")]
    Rlimit {
        resource: &'static str,
        soft: u64,
        hard: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {value}")]
    Identity {
        what: &'static str,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setting no_new_privs")]
    NoNewPrivs(#[source] std::io::Error),
    #[error("making the runtime process non-dumpable (CVE-2019-5736)")]
    Dumpable(#[source] std::io::Error),
    #[error("re-executing the sealed binary: {what} holds a NUL byte")]
    Nul { what: String },
    #[error("joining a new session keyring {name:?}")]
    Keyring {
        name: String,
        #[source]
        source: std::io::Error,
    },
}
