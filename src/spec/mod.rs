//! Loading a bundle's config.json, the defaults (`capsa spec`, the device list) and the
//! errors that name a field.
//!
//! Validation (in the container layer, before anything is created, so that a bad config
//! leaves nothing behind) reports through [`SpecError`]: every error names the field it is
//! about (`process.args`, `mounts[3].type`, ...).

mod default;

pub(crate) use default::DEFAULT_DEVICES;
pub use default::{default_spec, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::{Path, PathBuf};

/// What is wrong with a bundle's config.json, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The bundle has no config.json.
    #[error("JSON specification file config.json not found in {}", bundle.display())]
    NotFound {
        /// The bundle directory.
        bundle: PathBuf,
    },
    /// Reading config.json failed.
    #[error("reading {}", path.display())]
    Read {
        /// The config.json read.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// config.json does not parse.
    #[error("{}: {field}: {message}", path.display())]
    Parse {
        /// The config.json parsed.
        path: PathBuf,
        /// The field path where parsing stopped.
        field: String,
        /// serde's message.
        message: String,
    },
    /// A field with a value that is refused.
    #[error("{field}: {reason}")]
    Invalid {
        /// The config field concerned.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// A path in the config cannot be used.
    #[error("{field} {}", path.display())]
    Path {
        /// The config field concerned.
        field: String,
        /// The path resolved.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}

impl SpecError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Reads `<bundle>/config.json`. Parse errors carry the JSON path of the offending field.
pub(crate) fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SpecError::NotFound {
                bundle: bundle.to_path_buf(),
            })
        }
        Err(source) => return Err(SpecError::Read { path, source }),
    };
    parse(&bytes, &path)
}

/// The fields of a `mounts[]` entry that oci-spec 0.8 does not keep (it has them on the
/// spec, not on the mount): read on their own so that they are refused, not dropped.
#[derive(serde::Deserialize)]
struct MountMappings {
    #[serde(default, rename = "uidMappings")]
    uid: Option<serde_json::Value>,
    #[serde(default, rename = "gidMappings")]
    gid: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct MountsOnly {
    #[serde(default)]
    mounts: Option<Vec<MountMappings>>,
}

/// Parses config.json bytes (`origin` names the file in errors).
pub(crate) fn parse(bytes: &[u8], origin: &Path) -> Result<Spec, SpecError> {
    let spec = parse_spec(bytes, origin)?;
    if let Ok(only) = serde_json::from_slice::<MountsOnly>(bytes) {
        for (i, m) in only.mounts.iter().flatten().enumerate() {
            if m.uid.is_some() || m.gid.is_some() {
                return Err(SpecError::invalid(
                    format!("mounts[{i}].uidMappings"),
                    "per-mount id mappings are not supported; idmap/ridmap map a mount with linux.uidMappings and linux.gidMappings",
                ));
            }
        }
    }
    Ok(spec)
}

fn parse_spec(bytes: &[u8], origin: &Path) -> Result<Spec, SpecError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        SpecError::Parse {
            path: origin.to_path_buf(),
            field: if field == "." {
                "(document)".into()
            } else {
                field
            },
            message: inner.to_string(),
        }
    })
}

/// The rootfs path of a spec, resolved against the bundle when relative.
pub(crate) fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf, SpecError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| SpecError::invalid("root", "missing"))?;
    Ok(if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    })
}

/// sysctls that belong to a namespace, and which: runc's list. Others would change the host.
pub(crate) fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

/// A sysctl name that names one file under /proc/sys: dotted, no '/', no empty or ".." part.
pub(crate) fn sysctl_name_ok(key: &str) -> bool {
    !key.contains('/') && !key.split('.').any(|p| p.is_empty() || p == "..")
}
