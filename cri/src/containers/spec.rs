//! CreateContainer's OCI runtime spec: a `ContainerConfig`, its sandbox and its image become
//! the config.json capsa runs, built as containerd 1.6's CRI plugin builds it
//! (`container_create_linux.go`), with the differences written where they are made.
//!
//! ```text
//! build_spec   process   args (command/args over entrypoint/cmd), env, cwd, tty, user
//!              mounts    default mounts, sandbox files, host-path binds, image volumes
//!              security  capabilities, masked/readonly paths, seccomp, LSM checks, devices
//!              linux     namespaces (the pod's), resources, cgroupsPath
//! ```
//! [`build_spec`] is a pure function of its input: the few facts it needs from the host (a
//! path's symlinks resolved, a device's numbers, a mount's propagation, whether an LSM is
//! on) come through [`Host`], and the image's accounts through [`Accounts`], so unit tests
//! fake both. [`SystemHost`] and [`RootfsAccounts`] are the real ones.
//!
//! Namespaces: the spec joins the pod's net, ipc and uts (and pid when the pod shares it)
//! by `/proc/<infra pid>/ns/*` paths, and the container is to be created with capsa's
//! `CreateOptions::pod` as well (CreateContainer's job). Both: the paths make the spec whole (runc runs it as is, and
//! the CONTAINER/NODE/TARGET pid modes are not the pod's to decide), while the pod option
//! records the container as the pod's, so removing the pod removes it, and re-checks at
//! create time that the infra pid is still the pod's (it rewrites the shared kinds to the
//! same paths).
//!
//! Sysctls: a ContainerConfig has none of its own, and the pod's are not repeated here: the
//! infra process set them once in the namespaces the container joins (containerd's
//! container spec has none either; a NODE-network container writing them would write the
//! host's).

mod host;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod security;
mod user;

pub use host::{mount_containing, MountEntry, RootfsAccounts, SystemHost};
pub use mounts::image_volumes;
pub use security::DEFAULT_CAPABILITIES;
pub use user::{EtcFile, User};

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, PodSandboxConfig};
use oci_spec::runtime::Spec;
use serde_json::json;
use std::path::{Path, PathBuf};

/// What CreateContainer takes from the image's config: the image store's record of it.
pub use crate::images::store::ImageConfig;

/// What the sandbox made that its containers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFacts {
    pub id: String,
    /// The pod's infra process, which holds its shared namespaces.
    pub infra_pid: i32,
    /// The pod's hostname (the HOSTNAME variable).
    pub hostname: String,
    pub hostname_path: PathBuf,
    pub resolv_conf_path: PathBuf,
    pub hosts_path: PathBuf,
    /// The pod's /dev/shm tmpfs; none when the pod uses the host's IPC.
    pub shm_path: Option<PathBuf>,
    /// The cgroup the container's goes below: the capsa pod's own
    /// (`<cgroup_parent>/<sandbox id>`), so the sandbox's stats count its containers.
    pub cgroup: PathBuf,
}

/// Everything [`build_spec`] reads.
pub struct SpecInput<'a> {
    /// The new container's id.
    pub id: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox_config: &'a PodSandboxConfig,
    pub sandbox: &'a SandboxFacts,
    pub image: &'a ImageConfig,
    /// The image's name as the store knows it (the `io.kubernetes.cri.image-name` annotation).
    pub image_name: &'a str,
    /// The container's root filesystem (mounted).
    pub rootfs: &'a Path,
    /// Where the host directories of the image's volumes go (see [`image_volumes`]); none
    /// ignores the image's volumes (containerd's `ignore_image_defined_volumes`).
    pub volumes_dir: Option<&'a Path>,
    pub host: &'a dyn Host,
    pub accounts: &'a dyn Accounts,
}

/// A host device as stat(2) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostDevice {
    /// 'c' or 'b'.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    /// The permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The facts about the host the spec depends on.
pub trait Host {
    /// The path with every symlink resolved; an error when it does not exist.
    fn canonicalize(&self, path: &Path) -> std::io::Result<PathBuf>;
    /// The device at `path` (already resolved); `None` when it is not a device node.
    fn device(&self, path: &Path) -> std::io::Result<Option<HostDevice>>;
    /// The mount `path` (already resolved) lives on.
    fn mount_of(&self, path: &Path) -> std::io::Result<MountEntry>;
    /// Every device node under /dev, with its path (a privileged container gets them all).
    fn host_devices(&self) -> std::io::Result<Vec<(PathBuf, HostDevice)>>;
    /// Every capability a container can be given ("CAP_..." names): the daemon's own.
    fn all_capabilities(&self) -> Vec<String>;
    fn lsm_enabled(&self, lsm: capsa::security::lsm::Lsm) -> bool;
    /// The contents of a Localhost seccomp profile.
    fn read_profile(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// Whether the cgroup hierarchy is v2 (containers then get a cgroup namespace).
    fn cgroup_v2(&self) -> bool;
    /// The init pid of `target`, when it is a running container of sandbox `sandbox`.
    fn target_pid(&self, sandbox: &str, target: &str) -> Option<i32>;
}

/// The image's /etc/passwd and /etc/group.
pub trait Accounts {
    /// Calls `visit` with the ':'-separated fields of each line of `file` until it returns
    /// true. A missing file visits nothing.
    fn scan(&self, file: EtcFile, visit: &mut dyn FnMut(&[&str]) -> bool) -> std::io::Result<()>;
}

/// Why a spec could not be built; every message names the request field or object.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("config.metadata is required")]
    NoMetadata,
    #[error(
        "container {container:?}: no command to run: the request gives neither command nor \
         args, and the image has no entrypoint or cmd"
    )]
    NoCommand { container: String },
    #[error("{field} {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "config.linux.security_context.run_as_group {gid} is set without run_as_user or \
         run_as_username"
    )]
    GroupWithoutUser { gid: i64 },
    #[error("{field}: user {name:?} is not in the image's /etc/passwd")]
    UnknownUser { field: String, name: String },
    #[error("{field}: group {name:?} is not in the image's /etc/group")]
    UnknownGroup { field: String, name: String },
    #[error("reading the image's {file} for the container's user")]
    Accounts {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: host path {}", path.display())]
    HostPath {
        field: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{field}: {propagation} propagation needs {} to be on a {need} mount, but its mount {} \
         is not", path.display(), mountpoint.display()
    )]
    Propagation {
        field: String,
        propagation: &'static str,
        path: PathBuf,
        mountpoint: PathBuf,
        need: &'static str,
    },
    #[error("{field}: {} is not a device node", path.display())]
    NotADevice { field: String, path: PathBuf },
    #[error("{field}: unknown capability {name:?}")]
    Capability { field: String, name: String },
    #[error("{field}: {lsm} is not enabled on this host")]
    LsmDisabled { field: String, lsm: &'static str },
    #[error("{field}: {what} is not supported by capsa-cri")]
    Unsupported { field: String, what: &'static str },
    #[error("{field}: seccomp profile {}", path.display())]
    SeccompFile {
        field: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: seccomp profile {} is not an OCI LinuxSeccomp JSON object", path.display())]
    SeccompJson {
        field: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "config.linux.security_context.namespace_options.target_id {target:?} is not a running \
         container of sandbox {sandbox}"
    )]
    Target { target: String, sandbox: String },
    #[error("config.linux.security_context.privileged: the sandbox is not privileged")]
    PrivilegedSandbox,
    #[error("assembling the OCI spec (a capsa-cri bug)")]
    Assemble(#[source] serde_json::Error),
}

impl SpecError {
    /// The gRPC code kubelet gets: the request's fault unless the host refused.
    pub fn code(&self) -> tonic::Code {
        match self {
            SpecError::Target { .. } | SpecError::LsmDisabled { .. } => {
                tonic::Code::FailedPrecondition
            }
            SpecError::Assemble(_) => tonic::Code::Internal,
            _ => tonic::Code::InvalidArgument,
        }
    }
}

impl From<SpecError> for tonic::Status {
    fn from(e: SpecError) -> Self {
        tonic::Status::new(e.code(), crate::cni::error_chain(&e))
    }
}

/// The fields of the container's security context (all defaults when absent).
fn security_context(config: &ContainerConfig) -> LinuxContainerSecurityContext {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default()
}

/// A field name under the container's security context.
fn sc_field(name: &str) -> String {
    format!("config.linux.security_context.{name}")
}

/// The OCI spec of container `input.id`.
pub fn build_spec(input: &SpecInput) -> Result<Spec, SpecError> {
    let config = input.config;
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .ok_or(SpecError::NoMetadata)?;
    let sc = security_context(config);
    if sc.privileged && !sandbox_privileged(input.sandbox_config) {
        return Err(SpecError::PrivilegedSandbox);
    }
    let user = user::resolve(&sc, &input.image.user, input.accounts)?;
    let sec = security::build(&sc, input.host)?;
    let devices = security::devices(config, sc.privileged, input.host)?;
    let mounts = mounts::build(input, &sc)?;
    let ns = namespaces::build(input, &sc)?;
    let resources = resources::build(config.linux.as_ref().and_then(|l| l.resources.as_ref()))?;
    let mut process = json!({
        "terminal": config.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": process::args(config, input.image, &name)?,
        "env": process::env(config, input.image, &input.sandbox.hostname),
        "cwd": process::cwd(config, input.image)?,
        "capabilities": {
            "bounding": sec.capabilities,
            "effective": sec.capabilities,
            "permitted": sec.capabilities,
        },
        "noNewPrivileges": sc.no_new_privs,
    });
    if let Some(adj) = resources.oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }
    let mut linux = json!({
        "namespaces": ns,
        "cgroupsPath": input.sandbox.cgroup.join(input.id),
        "resources": resources.linux,
        "devices": devices.nodes,
        "maskedPaths": sec.masked_paths,
        "readonlyPaths": sec.readonly_paths,
    });
    linux["resources"]["devices"] = json!(devices.rules);
    if let Some(seccomp) = sec.seccomp {
        linux["seccomp"] = seccomp;
    }
    if let Some(p) = mounts.rootfs_propagation {
        linux["rootfsPropagation"] = json!(p);
    }
    let spec = json!({
        "ociVersion": capsa::OCI_VERSION,
        "process": process,
        "root": {"path": input.rootfs, "readonly": sc.readonly_rootfs},
        "mounts": mounts.mounts,
        "annotations": annotations(input, &name),
        "linux": linux,
    });
    serde_json::from_value(spec).map_err(SpecError::Assemble)
}

/// UpdateContainerResources' request as the OCI resources capsa applies (the same rules
/// as CreateContainer's; the process's oom_score_adj cannot change after start).
pub fn linux_resources(
    r: Option<&k8s_cri::v1::LinuxContainerResources>,
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    serde_json::from_value(resources::build(r)?.linux).map_err(SpecError::Assemble)
}

fn sandbox_privileged(config: &PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged)
}

/// The request's annotations, then containerd's `io.kubernetes.cri.*` ones (which a request
/// cannot override: tools trust them to say which sandbox a container belongs to).
fn annotations(input: &SpecInput, name: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut out: serde_json::Map<String, serde_json::Value> = input
        .config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let meta = input.sandbox_config.metadata.clone().unwrap_or_default();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.sandbox-id", input.sandbox.id.as_str()),
        (
            "io.kubernetes.cri.sandbox-namespace",
            meta.namespace.as_str(),
        ),
        ("io.kubernetes.cri.sandbox-name", meta.name.as_str()),
        ("io.kubernetes.cri.container-name", name),
        ("io.kubernetes.cri.image-name", input.image_name),
    ] {
        out.insert(k.to_string(), json!(v));
    }
    out
}

#[cfg(test)]
pub(crate) mod fakes;
#[cfg(test)]
mod tests;
