//! Capabilities, masked and read-only paths, seccomp, the LSM checks and devices.
//!
//! A privileged container (which needs a privileged sandbox) gets every capability, every
//! host device with all access, no masked or read-only paths, no seccomp filter and no
//! LSM profile (containerd's `WithPrivileged`, `WithHostDevices`, `WithAllDevicesAllowed`).
//!
//! Masked and read-only paths: the request's lists, else capsa's defaults (containerd's).
//! An empty list cannot be told from an absent one on the wire (proto3), and kubelet sends
//! its own defaults for the Default procMount, so the only request an empty list changes is
//! procMount Unmasked, which needs a user namespace capsa-cri does not offer: it gets the
//! defaults.

use super::{sc_field, Host, SpecError};
use crate::containers::seccomp_default;
use capsa::security::lsm::Lsm;
use k8s_cri::v1::{
    security_profile::ProfileType, ContainerConfig, LinuxContainerSecurityContext, SecurityProfile,
};
use serde_json::{json, Value};
use std::path::Path;

/// containerd's default capability set (its default spec's, runc's before 1.0's trimming).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

pub(super) struct Security {
    /// The bounding, effective and permitted sets (inheritable and ambient stay empty:
    /// CVE-2022-24769, and containerd clears ambient).
    pub capabilities: Vec<String>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub seccomp: Option<Value>,
}

pub(super) fn build(
    sc: &LinuxContainerSecurityContext,
    host: &dyn Host,
) -> Result<Security, SpecError> {
    check_lsms(sc, host)?;
    if sc.privileged {
        return Ok(Security {
            capabilities: host.all_capabilities(),
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
            seccomp: None,
        });
    }
    let capabilities = capabilities(sc, host)?;
    let or_default = |given: &[String], default: &[&str]| -> Vec<String> {
        if given.is_empty() {
            default.iter().map(|s| s.to_string()).collect()
        } else {
            given.to_vec()
        }
    };
    let seccomp = seccomp(sc, &capabilities, host)?;
    Ok(Security {
        masked_paths: or_default(&sc.masked_paths, capsa::spec::DEFAULT_MASKED_PATHS),
        readonly_paths: or_default(&sc.readonly_paths, capsa::spec::DEFAULT_READONLY_PATHS),
        capabilities,
        seccomp,
    })
}

/// "CAP_X" for a CRI name given with or without the prefix, in any case; the error names
/// the list and index.
fn capability_name(field: &str, i: usize, name: &str) -> Result<String, SpecError> {
    capsa::security::parse_capability(name)
        .map(|c| c.to_string())
        .map_err(|_| SpecError::Capability {
            field: format!("{field}[{i}]"),
            name: name.into(),
        })
}

/// The default set; "ALL" in add gives every capability and in drop none (then the named
/// ones are added and dropped, so add ALL + drop CHOWN is everything but CHOWN).
fn capabilities(
    sc: &LinuxContainerSecurityContext,
    host: &dyn Host,
) -> Result<Vec<String>, SpecError> {
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    let Some(c) = &sc.capabilities else {
        return Ok(caps);
    };
    if !c.add_ambient_capabilities.is_empty() {
        return Err(SpecError::Unsupported {
            field: sc_field("capabilities.add_ambient_capabilities"),
            what: "ambient capabilities",
        });
    }
    let is_all = |s: &String| s.eq_ignore_ascii_case("ALL");
    if c.add_capabilities.iter().any(is_all) {
        caps = host.all_capabilities();
    }
    if c.drop_capabilities.iter().any(is_all) {
        caps.clear();
    }
    let add = sc_field("capabilities.add_capabilities");
    for (i, name) in c.add_capabilities.iter().enumerate() {
        if !is_all(name) {
            let cap = capability_name(&add, i, name)?;
            if !caps.contains(&cap) {
                caps.push(cap);
            }
        }
    }
    let drop = sc_field("capabilities.drop_capabilities");
    for (i, name) in c.drop_capabilities.iter().enumerate() {
        if !is_all(name) {
            let cap = capability_name(&drop, i, name)?;
            caps.retain(|c| *c != cap);
        }
    }
    caps.sort();
    Ok(caps)
}

/// The profile asked for, from the field or the legacy string ("runtime/default",
/// "docker/default", "unconfined", "localhost/<path>"); none when neither is set.
fn profile(
    given: Option<&SecurityProfile>,
    legacy: &str,
    field: &str,
) -> Result<Option<(ProfileType, String)>, SpecError> {
    if let Some(p) = given {
        let t = ProfileType::try_from(p.profile_type).map_err(|_| SpecError::Invalid {
            field: format!("{field}.profile_type"),
            value: p.profile_type.to_string(),
            reason: "not a ProfileType value",
        })?;
        if t != ProfileType::Localhost && !p.localhost_ref.is_empty() {
            return Err(SpecError::Invalid {
                field: format!("{field}.localhost_ref"),
                value: p.localhost_ref.clone(),
                reason: "set only with profile_type Localhost",
            });
        }
        return Ok(Some((t, p.localhost_ref.clone())));
    }
    Ok(match legacy {
        "" => None,
        "runtime/default" | "docker/default" => Some((ProfileType::RuntimeDefault, String::new())),
        "unconfined" => Some((ProfileType::Unconfined, String::new())),
        other => match other.strip_prefix("localhost/") {
            Some(path) => Some((ProfileType::Localhost, path.to_string())),
            None => {
                return Err(SpecError::Invalid {
                    field: format!("{field}_profile_path"),
                    value: other.into(),
                    reason: "not runtime/default, docker/default, unconfined or localhost/<path>",
                })
            }
        },
    })
}

/// AppArmor and SELinux: asking for a profile or label where the LSM is off is refused
/// (running unconfined instead is what the user would not expect). capsa-cri ships no
/// AppArmor profile and does no SELinux labelling, so where the LSM is on, such a request
/// is refused as unsupported rather than ignored.
#[allow(deprecated)]
fn check_lsms(sc: &LinuxContainerSecurityContext, host: &dyn Host) -> Result<(), SpecError> {
    let field = sc_field("apparmor");
    let apparmor = profile(sc.apparmor.as_ref(), &sc.apparmor_profile, &field)?;
    // containerd applies no AppArmor profile to a privileged container's RuntimeDefault.
    let wants_apparmor = apparmor.is_some_and(|(t, _)| {
        t != ProfileType::Unconfined && !(sc.privileged && t == ProfileType::RuntimeDefault)
    });
    refuse(
        host,
        wants_apparmor,
        Lsm::AppArmor,
        field,
        "an AppArmor profile",
    )?;
    let wants_selinux = sc.selinux_options.as_ref().is_some_and(|o| {
        [&o.user, &o.role, &o.r#type, &o.level]
            .iter()
            .any(|s| !s.is_empty())
    });
    let field = sc_field("selinux_options");
    refuse(host, wants_selinux, Lsm::SeLinux, field, "an SELinux label")
}

/// The error for a request of `lsm` (`wanted`): disabled on the host, or unsupported.
fn refuse(
    host: &dyn Host,
    wanted: bool,
    lsm: Lsm,
    field: String,
    what: &'static str,
) -> Result<(), SpecError> {
    if !wanted {
        return Ok(());
    }
    if !host.lsm_enabled(lsm) {
        let lsm = match lsm {
            Lsm::AppArmor => "AppArmor",
            Lsm::SeLinux => "SELinux",
        };
        return Err(SpecError::LsmDisabled { field, lsm });
    }
    Err(SpecError::Unsupported { field, what })
}

/// The seccomp profile as spec JSON: the built-in default, a Localhost file, or none.
#[allow(deprecated)]
fn seccomp(
    sc: &LinuxContainerSecurityContext,
    caps: &[String],
    host: &dyn Host,
) -> Result<Option<Value>, SpecError> {
    let field = sc_field("seccomp");
    match profile(sc.seccomp.as_ref(), &sc.seccomp_profile_path, &field)? {
        None | Some((ProfileType::Unconfined, _)) => Ok(None),
        Some((ProfileType::RuntimeDefault, _)) => Ok(Some(seccomp_default::profile(caps))),
        Some((ProfileType::Localhost, path)) => {
            let field = format!("{field}.localhost_ref");
            let path = Path::new(&path);
            if !path.is_absolute() {
                return Err(SpecError::Invalid {
                    field,
                    value: path.display().to_string(),
                    reason: "must be an absolute path",
                });
            }
            let bytes = host
                .read_profile(path)
                .map_err(|source| SpecError::SeccompFile {
                    field: field.clone(),
                    path: path.to_path_buf(),
                    source,
                })?;
            let parsed: oci_spec::runtime::LinuxSeccomp =
                serde_json::from_slice(&bytes).map_err(|source| SpecError::SeccompJson {
                    field: field.clone(),
                    path: path.to_path_buf(),
                    source,
                })?;
            serde_json::to_value(parsed)
                .map(Some)
                .map_err(SpecError::Assemble)
        }
    }
}

/// The device nodes and their cgroup rules: deny all, then each device asked for.
pub(super) struct Devices {
    pub nodes: Vec<Value>,
    pub rules: Vec<Value>,
}

fn device_json(path: &Path, d: &super::HostDevice) -> Value {
    json!({
        "path": path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
        "fileMode": d.mode, "uid": d.uid, "gid": d.gid,
    })
}

pub(super) fn devices(
    config: &ContainerConfig,
    privileged: bool,
    host: &dyn Host,
) -> Result<Devices, SpecError> {
    let mut nodes = Vec::new();
    let mut rules = vec![json!({"allow": false, "access": "rwm"})];
    if privileged {
        let all = host.host_devices().map_err(|source| SpecError::HostPath {
            field: sc_field("privileged"),
            path: "/dev".into(),
            source,
        })?;
        nodes = all.iter().map(|(p, d)| device_json(p, d)).collect();
        rules = vec![json!({"allow": true, "access": "rwm"})];
    }
    for (i, d) in config.devices.iter().enumerate() {
        let field = format!("config.devices[{i}]");
        let permissions = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !permissions.chars().all(|c| "rwm".contains(c)) {
            return Err(SpecError::Invalid {
                field: format!("{field}.permissions"),
                value: d.permissions.clone(),
                reason: "only the letters r, w and m",
            });
        }
        let dest = if d.container_path.is_empty() {
            &d.host_path
        } else {
            &d.container_path
        };
        for (name, path) in [("container_path", dest), ("host_path", &d.host_path)] {
            if !path.starts_with('/') {
                return Err(SpecError::Invalid {
                    field: format!("{field}.{name}"),
                    value: path.clone(),
                    reason: "must be an absolute path",
                });
            }
        }
        let host_err = |path: &Path| {
            let field = format!("{field}.host_path");
            let path = path.to_path_buf();
            move |source| SpecError::HostPath {
                field,
                path,
                source,
            }
        };
        let src = host
            .canonicalize(Path::new(&d.host_path))
            .map_err(host_err(Path::new(&d.host_path)))?;
        let dev =
            host.device(&src)
                .map_err(host_err(&src))?
                .ok_or_else(|| SpecError::NotADevice {
                    field: format!("{field}.host_path"),
                    path: src.clone(),
                })?;
        nodes.push(device_json(Path::new(dest), &dev));
        rules.push(json!({
            "allow": true, "type": dev.kind.to_string(), "major": dev.major,
            "minor": dev.minor, "access": permissions,
        }));
    }
    Ok(Devices { nodes, rules })
}
