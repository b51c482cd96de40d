//! Mounts: the standard container mounts, the sandbox's files, the request's host paths and
//! the image's volumes.
//!
//! A host path is resolved (its symlinks followed, on the host, as containerd does) before
//! it is bound, so what the spec names is what was checked. A missing host path is an error
//! naming it: containerd 1.6 creates it as an empty directory instead, but kubelet already
//! creates what a pod asks to be created (hostPath DirectoryOrCreate, emptyDir, its own
//! files), so a missing path is a mistake or a race, and a root-owned directory made on the
//! host would hide it and outlive the failed request.

use super::{Host, SpecError, SpecInput};
use k8s_cri::v1::{LinuxContainerSecurityContext, Mount, MountPropagation, NamespaceMode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub(super) struct Mounts {
    pub mounts: Vec<Value>,
    /// "rshared" or "rslave" when a bind needs the root's propagation to carry it.
    pub rootfs_propagation: Option<&'static str>,
}

/// The image's volumes the request does not mount itself, each with the host directory
/// that backs it (`<volumes_dir>/<n>`); the caller creates those directories before the
/// container runs (containerd makes them under the container's root too).
pub fn image_volumes(
    image: &super::ImageConfig,
    config: &k8s_cri::v1::ContainerConfig,
    volumes_dir: &Path,
) -> Vec<(PathBuf, String)> {
    let mut volumes: Vec<&String> = image.volumes.iter().collect();
    volumes.sort();
    volumes.dedup();
    volumes
        .into_iter()
        .filter(|v| !mounted(&config.mounts, v))
        .enumerate()
        .map(|(i, v)| (volumes_dir.join(i.to_string()), v.clone()))
        .collect()
}

/// Whether the request mounts something at `path` (compared as clean paths).
fn mounted(mounts: &[Mount], path: &str) -> bool {
    let path = clean(path);
    mounts.iter().any(|m| clean(&m.container_path) == path)
}

fn clean(path: &str) -> PathBuf {
    Path::new(path).components().collect()
}

/// The mounts of the spec, in containerd's order: the standard ones (unless the request
/// mounts the same place, or /dev), then every bind sorted by depth so that a parent never
/// hides a child.
pub(super) fn build(
    input: &SpecInput,
    sc: &LinuxContainerSecurityContext,
) -> Result<Mounts, SpecError> {
    let config = input.config;
    let mut binds: Vec<(String, Mount)> = config
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("config.mounts[{i}]"), m.clone()))
        .collect();
    binds.extend(sandbox_mounts(input, sc));
    if let Some(dir) = input.volumes_dir {
        for (host, dest) in image_volumes(input.image, config, dir) {
            let field = format!("the image's volume {dest}");
            let mount = Mount {
                container_path: dest,
                host_path: host.to_string_lossy().into_owned(),
                ..Default::default()
            };
            binds.push((field, mount));
        }
    }
    binds.sort_by_key(|(_, m)| clean(&m.container_path).components().count());
    let all: Vec<&Mount> = binds.iter().map(|(_, m)| m).collect();
    let dev_mounted = all
        .iter()
        .any(|m| clean(&m.container_path) == Path::new("/dev"));
    let mut mounts: Vec<Value> = standard_mounts(sc.privileged)
        .into_iter()
        .filter(|m| {
            let dest = m["destination"].as_str().unwrap_or_default();
            let replaced = all.iter().any(|b| clean(&b.container_path) == clean(dest))
                || (dev_mounted && dest.starts_with("/dev/"));
            !replaced
        })
        .collect();
    let mut rootfs_propagation = None;
    for (field, m) in &binds {
        let (bind, propagation) = bind(field, m, input.host)?;
        mounts.push(bind);
        match propagation {
            "rshared" => rootfs_propagation = Some("rshared"),
            "rslave" if rootfs_propagation.is_none() => rootfs_propagation = Some("rslave"),
            _ => {}
        }
    }
    Ok(Mounts {
        mounts,
        rootfs_propagation,
    })
}

/// proc, /dev, devpts, /dev/shm, mqueue, sysfs and the cgroup hierarchy read-only: capsa's
/// default spec, which is containerd's default spec without /run. A privileged container's
/// sysfs and cgroups are writable.
fn standard_mounts(privileged: bool) -> Vec<Value> {
    let spec = capsa::spec::default_spec(None);
    let mut mounts: Vec<Value> = spec
        .mounts()
        .iter()
        .flatten()
        .filter_map(|m| serde_json::to_value(m).ok())
        .collect();
    if privileged {
        for m in &mut mounts {
            if matches!(m["type"].as_str(), Some("sysfs" | "cgroup")) {
                if let Some(opts) = m["options"].as_array_mut() {
                    opts.retain(|o| o != "ro");
                }
            }
        }
    }
    mounts
}

/// The sandbox's /etc/hostname, /etc/hosts, /etc/resolv.conf (read-only with a read-only
/// root) and /dev/shm (the host's with host IPC), each unless the request mounts it.
fn sandbox_mounts(input: &SpecInput, sc: &LinuxContainerSecurityContext) -> Vec<(String, Mount)> {
    let s = input.sandbox;
    let host_ipc = sc
        .namespace_options
        .as_ref()
        .is_some_and(|n| n.ipc == NamespaceMode::Node as i32);
    let shm = match (&s.shm_path, host_ipc) {
        (Some(p), false) => p.clone(),
        _ => PathBuf::from("/dev/shm"),
    };
    let ro = sc.readonly_rootfs;
    [
        ("/etc/hostname", &s.hostname_path, ro),
        ("/etc/hosts", &s.hosts_path, ro),
        ("/etc/resolv.conf", &s.resolv_conf_path, ro),
        ("/dev/shm", &shm, false),
    ]
    .into_iter()
    .filter(|(dest, _, _)| !mounted(&input.config.mounts, dest))
    .map(|(dest, host, readonly)| {
        let mount = Mount {
            container_path: dest.into(),
            host_path: host.to_string_lossy().into_owned(),
            readonly,
            ..Default::default()
        };
        (format!("the sandbox's {dest}"), mount)
    })
    .collect()
}

/// One bind mount, with its propagation checked against the host mount it comes from.
fn bind(field: &str, m: &Mount, host: &dyn Host) -> Result<(Value, &'static str), SpecError> {
    let invalid = |name: &str, value: String, reason| SpecError::Invalid {
        field: format!("{field}.{name}"),
        value,
        reason,
    };
    if !m.container_path.starts_with('/') {
        return Err(invalid(
            "container_path",
            m.container_path.clone(),
            "must be an absolute path",
        ));
    }
    if !m.host_path.starts_with('/') {
        return Err(invalid(
            "host_path",
            m.host_path.clone(),
            "must be an absolute path",
        ));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::Unsupported {
            field: field.into(),
            what: "an id-mapped mount",
        });
    }
    if m.image.is_some() {
        return Err(SpecError::Unsupported {
            field: format!("{field}.image"),
            what: "an image volume",
        });
    }
    let src = host
        .canonicalize(Path::new(&m.host_path))
        .map_err(|source| SpecError::HostPath {
            field: format!("{field}.host_path"),
            path: m.host_path.clone().into(),
            source,
        })?;
    let propagation = match MountPropagation::try_from(m.propagation) {
        Ok(MountPropagation::PropagationPrivate) => "rprivate",
        Ok(MountPropagation::PropagationHostToContainer) => {
            check_propagation(field, &src, host, "rslave", &["shared:", "master:"])?;
            "rslave"
        }
        Ok(MountPropagation::PropagationBidirectional) => {
            check_propagation(field, &src, host, "rshared", &["shared:"])?;
            "rshared"
        }
        Err(_) => {
            return Err(invalid(
                "propagation",
                m.propagation.to_string(),
                "not a MountPropagation value",
            ))
        }
    };
    if m.selinux_relabel && host.lsm_enabled(capsa::security::lsm::Lsm::SeLinux) {
        return Err(SpecError::Unsupported {
            field: format!("{field}.selinux_relabel"),
            what: "SELinux relabeling",
        });
    }
    let mut options = vec!["rbind", propagation, if m.readonly { "ro" } else { "rw" }];
    if m.recursive_read_only {
        if !m.readonly || propagation != "rprivate" {
            return Err(invalid(
                "recursive_read_only",
                "true".into(),
                "needs readonly and PROPAGATION_PRIVATE",
            ));
        }
        options.push("rro");
    }
    let mount = json!({
        "destination": m.container_path,
        "type": "bind",
        "source": src,
        "options": options,
    });
    Ok((mount, propagation))
}

/// containerd's `ensureShared` / `ensureSharedOrSlave`: the mount holding `src` must carry
/// one of the `tags` in its optional fields, else the propagation asked for cannot happen.
fn check_propagation(
    field: &str,
    src: &Path,
    host: &dyn Host,
    propagation: &'static str,
    tags: &[&str],
) -> Result<(), SpecError> {
    let entry = host.mount_of(src).map_err(|source| SpecError::HostPath {
        field: format!("{field}.host_path"),
        path: src.to_path_buf(),
        source,
    })?;
    if entry
        .optional
        .iter()
        .any(|o| tags.iter().any(|t| o.starts_with(t)))
    {
        return Ok(());
    }
    Err(SpecError::Propagation {
        field: format!("{field}.propagation"),
        propagation,
        path: src.to_path_buf(),
        mountpoint: entry.mountpoint,
        need: if tags.len() == 1 {
            "shared"
        } else {
            "shared or slave"
        },
    })
}
