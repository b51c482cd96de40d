//! Checks a spec before anything is created; each error names its field.
//!
//! Validation sits in the container layer, above the modules whose parsers it asks
//! (namespaces, mount options, capabilities, rlimits, cgroup paths): one parser judges a
//! value both when it is validated and when it is applied.

use crate::namespaces::NamespacePlan;
use crate::rootfs::options;
use crate::spec::{rootfs_path, sysctl_name_ok, sysctl_namespace, SpecError};
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccompAction, Spec};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

fn check(cond: bool, field: impl Into<String>, reason: impl Into<String>) -> Result<(), SpecError> {
    if cond {
        Ok(())
    } else {
        Err(SpecError::invalid(field, reason))
    }
}

/// Filesystem types the kernel knows (/proc/filesystems), plus the pseudo-type "bind".
fn known_filesystems() -> HashSet<String> {
    let mut set: HashSet<String> = std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    set.insert("bind".into());
    set.insert("none".into());
    set
}

fn has_ns(namespaces: &[oci_spec::runtime::LinuxNamespace], t: LinuxNamespaceType) -> bool {
    namespaces.iter().any(|n| n.typ() == t)
}

/// `path` with `.` and `..` resolved lexically, as Go's filepath.Clean does.
fn lexically_clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Refuses a rootfs reached through a symlink (runc: "invalid rootfs: not an absolute path,
/// or a symlink"): the runtime would follow it and create dev/, proc/, sys/ and device nodes
/// in whatever directory the link names. The bundle itself may be reached through one (it is
/// resolved first, as runc's chdir into it does); root.path below it may not.
fn check_no_symlink(root: &Path) -> Result<(), SpecError> {
    let real = std::fs::canonicalize(root).map_err(|source| SpecError::Path {
        field: "root.path".into(),
        path: root.to_path_buf(),
        source,
    })?;
    let clean = lexically_clean(root);
    check(
        real == clean,
        "root.path",
        format!(
            "{} is a symlink or goes through one (to {}); refusing to follow it, as runc does",
            clean.display(),
            real.display()
        ),
    )
}

/// Whether `v` is a SemVer 2.0.0 version (MAJOR.MINOR.PATCH, numbers without leading zeros,
/// then an optional `-pre.release` and `+build`), as the runtime-spec requires of ociVersion.
fn is_semver(v: &str) -> bool {
    let ident_ok = |s: &str, numeric_rule: bool| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !(numeric_rule
                && s.len() > 1
                && s.starts_with('0')
                && s.bytes().all(|b| b.is_ascii_digit()))
    };
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers.iter().all(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
        })
        && pre.is_none_or(|p| p.split('.').all(|i| ident_ok(i, true)))
        && build.is_none_or(|b| b.split('.').all(|i| ident_ok(i, false)))
}

/// Checks `spec` (of the bundle at `bundle`) before anything is made: every error names
/// the field at fault. One function per section of config.json.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<(), SpecError> {
    validate_version_and_root(spec, bundle)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SpecError::invalid("process", "missing"))?;
    validate_process(process)?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| SpecError::invalid("linux", "missing"))?;
    let namespaces = linux.namespaces().as_deref().unwrap_or(&[]);
    let plan = validate_namespaces(spec, linux, process)?;
    validate_uts_and_time(spec, linux, namespaces, &plan)?;
    validate_linux(linux, namespaces)?;
    validate_mounts(spec, linux)?;
    validate_hooks(spec)
}

/// ociVersion, and root.path: a directory reached without a symlink.
fn validate_version_and_root(spec: &Spec, bundle: &Path) -> Result<(), SpecError> {
    check(!spec.version().is_empty(), "ociVersion", "missing")?;
    check(
        is_semver(spec.version()),
        "ociVersion",
        format!(
            "{:?} is not a SemVer 2.0.0 version (such as 1.2.0)",
            spec.version()
        ),
    )?;
    let root = rootfs_path(spec, bundle)?;
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => check_no_symlink(&root)?,
        Ok(_) => {
            return Err(SpecError::invalid(
                "root.path",
                format!("{} is not a directory", root.display()),
            ))
        }
        Err(source) => {
            return Err(SpecError::Path {
                field: "root.path".into(),
                path: root,
                source,
            })
        }
    }
    Ok(())
}

/// process: args, cwd, rlimits, capability names.
fn validate_process(process: &oci_spec::runtime::Process) -> Result<(), SpecError> {
    check(
        process
            .args()
            .as_ref()
            .is_some_and(|a| !a.is_empty() && !a[0].is_empty()),
        "process.args",
        "must name the program to run",
    )?;
    check(
        process.cwd().is_absolute(),
        "process.cwd",
        "must be an absolute path",
    )?;
    for (i, rl) in process.rlimits().iter().flatten().enumerate() {
        check(
            rl.soft() <= rl.hard(),
            format!("process.rlimits[{i}]"),
            format!(
                "{}: soft limit {} exceeds hard limit {}",
                crate::security::resource_name(rl.typ()),
                rl.soft(),
                rl.hard()
            ),
        )?;
    }
    if let Some(caps) = process.capabilities() {
        for set in [
            caps.bounding(),
            caps.effective(),
            caps.inheritable(),
            caps.permitted(),
            caps.ambient(),
        ] {
            for c in set.iter().flatten() {
                crate::security::parse_capability(&c.to_string())
                    .map_err(|e| SpecError::invalid("process.capabilities", e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// linux.namespaces (no duplicates, paths that exist), what needs a mount namespace when
/// there is none, and the id mappings a user namespace needs; returns the namespace plan.
fn validate_namespaces(
    spec: &Spec,
    linux: &oci_spec::runtime::Linux,
    process: &oci_spec::runtime::Process,
) -> Result<NamespacePlan, SpecError> {
    let namespaces = linux.namespaces().as_deref().unwrap_or(&[]);
    let mut seen = HashSet::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let name = crate::namespaces::kind_name(ns.typ());
        check(
            seen.insert(ns.typ()),
            format!("linux.namespaces[{i}]"),
            format!("duplicate {name} namespace"),
        )?;
        if let Some(p) = ns.path() {
            if let Err(source) = std::fs::metadata(p) {
                return Err(SpecError::Path {
                    field: format!("linux.namespaces[{i}].path"),
                    path: p.clone(),
                    source,
                });
            }
        }
    }
    let plan = NamespacePlan::from_spec(namespaces);
    if !has_ns(namespaces, LinuxNamespaceType::Mount) {
        // Without one the container runs in the runtime's mount namespace (the spec allows
        // it), where capsa mounts nothing: what would need a mount is refused.
        let why = "needs a mount namespace (linux.namespaces has none)";
        check(
            spec.mounts().as_ref().is_none_or(|m| m.is_empty()),
            "mounts",
            why,
        )?;
        check(
            linux.masked_paths().as_ref().is_none_or(|p| p.is_empty()),
            "linux.maskedPaths",
            why,
        )?;
        check(
            linux.readonly_paths().as_ref().is_none_or(|p| p.is_empty()),
            "linux.readonlyPaths",
            why,
        )?;
        check(
            !spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            "root.readonly",
            why,
        )?;
    }
    let uid_maps = linux.uid_mappings().as_deref().unwrap_or(&[]);
    let gid_maps = linux.gid_mappings().as_deref().unwrap_or(&[]);
    if plan.new_user() {
        check(
            !uid_maps.is_empty(),
            "linux.uidMappings",
            "a new user namespace needs uid mappings",
        )?;
        check(
            !gid_maps.is_empty(),
            "linux.gidMappings",
            "a new user namespace needs gid mappings",
        )?;
        let mapped = |id: u32| {
            gid_maps
                .iter()
                .any(|m| id >= m.container_id() && (id - m.container_id()) < m.size())
        };
        for gid in process.user().additional_gids().iter().flatten() {
            check(
                mapped(*gid),
                "process.user.additionalGids",
                format!("gid {gid} is not mapped in the user namespace"),
            )?;
        }
    } else {
        check(
            uid_maps.is_empty() && gid_maps.is_empty(),
            "linux.uidMappings",
            "id mappings need a new user namespace",
        )?;
    }
    Ok(plan)
}

/// hostname and domainname (a UTS namespace), linux.timeOffsets (a time namespace).
fn validate_uts_and_time(
    spec: &Spec,
    linux: &oci_spec::runtime::Linux,
    namespaces: &[oci_spec::runtime::LinuxNamespace],
    plan: &NamespacePlan,
) -> Result<(), SpecError> {
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) {
        check(
            plan.creates(LinuxNamespaceType::Uts) || has_ns(namespaces, LinuxNamespaceType::Uts),
            "hostname",
            "unable to set hostname without a private UTS namespace",
        )?;
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) {
        check(
            has_ns(namespaces, LinuxNamespaceType::Uts),
            "domainname",
            "unable to set domainname without a private UTS namespace",
        )?;
    }
    if linux.time_offsets().as_ref().is_some_and(|o| !o.is_empty()) {
        check(
            plan.new_time,
            "linux.timeOffsets",
            "time offsets need a new time namespace",
        )?;
        for clock in linux.time_offsets().iter().flatten().map(|(k, _)| k) {
            check(
                clock == "monotonic" || clock == "boottime",
                format!("linux.timeOffsets.{clock}"),
                "only monotonic and boottime clocks have offsets",
            )?;
        }
    }
    Ok(())
}

/// linux.seccomp, sysctl, rootfsPropagation, cgroupsPath and devices.
fn validate_linux(
    linux: &oci_spec::runtime::Linux,
    namespaces: &[oci_spec::runtime::LinuxNamespace],
) -> Result<(), SpecError> {
    if let Some(seccomp) = linux.seccomp() {
        let notify = seccomp.default_action() == LinuxSeccompAction::ScmpActNotify
            || seccomp
                .syscalls()
                .iter()
                .flatten()
                .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
        check(
            !notify || seccomp.listener_path().is_some(),
            "linux.seccomp.listenerPath",
            "SCMP_ACT_NOTIFY needs a listener to receive the notification fd",
        )?;
        check(
            seccomp.default_action() != LinuxSeccompAction::ScmpActNotify,
            "linux.seccomp.defaultAction",
            "SCMP_ACT_NOTIFY as the default would stop the runtime's own syscalls",
        )?;
    }
    for key in linux.sysctl().iter().flatten().map(|(k, _)| k) {
        let field = format!("linux.sysctl.{key}");
        check(sysctl_name_ok(key), &field, "not a valid sysctl name")?;
        match sysctl_namespace(key) {
            Some(t) => check(
                has_ns(namespaces, t),
                &field,
                format!(
                    "needs a private {} namespace",
                    crate::namespaces::kind_name(t)
                ),
            )?,
            None => {
                return Err(SpecError::invalid(
                    field,
                    "not namespaced: it would change the host",
                ))
            }
        }
    }
    if let Some(p) = linux
        .rootfs_propagation()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        check(
            options::parse_propagation(p).is_some(),
            "linux.rootfsPropagation",
            format!("unknown propagation {p:?}"),
        )?;
    }
    if let Some(p) = linux.cgroups_path() {
        crate::cgroups::container_path(Some(p), "x")
            .map_err(|e| SpecError::invalid("linux.cgroupsPath", e.to_string()))?;
    }
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        check(
            d.path().is_absolute()
                && !d
                    .path()
                    .components()
                    .any(|c| c == std::path::Component::ParentDir),
            format!("linux.devices[{i}].path"),
            "must be an absolute path without \"..\"",
        )?;
    }
    Ok(())
}

/// mounts: absolute destinations, options capsa knows, filesystem types the kernel has.
fn validate_mounts(spec: &Spec, linux: &oci_spec::runtime::Linux) -> Result<(), SpecError> {
    let filesystems = known_filesystems();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let field = format!("mounts[{i}]");
        check(
            m.destination().is_absolute(),
            format!("{field}.destination"),
            format!("{} must be an absolute path", m.destination().display()),
        )?;
        let fstype = m.typ().as_deref().filter(|t| !t.is_empty());
        let opts = options::parse(m.options().as_deref().unwrap_or(&[]), fstype)
            .map_err(|reason| SpecError::invalid(format!("{field}.options"), reason))?;
        if opts.idmap.is_some() {
            check(
                linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
                    && linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()),
                format!("{field}.options"),
                "idmap/ridmap map the mount with linux.uidMappings and linux.gidMappings, which are missing",
            )?;
        }
        if !opts.is_bind() {
            let t = fstype.ok_or_else(|| {
                SpecError::invalid(format!("{field}.type"), "missing (and no bind option)")
            })?;
            check(
                filesystems.contains(t) || t == "cgroup",
                format!("{field}.type"),
                format!("unsupported filesystem type {t:?}"),
            )?;
        }
    }
    Ok(())
}

/// hooks: absolute paths and positive timeouts.
fn validate_hooks(spec: &Spec) -> Result<(), SpecError> {
    if let Some(hooks) = spec.hooks() {
        #[allow(deprecated)]
        let lists = [
            ("prestart", hooks.prestart()),
            ("createRuntime", hooks.create_runtime()),
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
            ("poststart", hooks.poststart()),
            ("poststop", hooks.poststop()),
        ];
        for (name, list) in lists {
            for (i, h) in list.iter().flatten().enumerate() {
                let field = format!("hooks.{name}[{i}]");
                check(
                    h.path().is_absolute(),
                    format!("{field}.path"),
                    "must be an absolute path",
                )?;
                check(
                    h.timeout().is_none_or(|t| t > 0),
                    format!("{field}.timeout"),
                    "must be greater than zero",
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_semver;

    #[test]
    fn oci_versions_are_semver() {
        for ok in [
            "1.0.0",
            "1.0.2-dev",
            "1.2.0",
            "1.1.0-rc.1",
            "1.0.0+build.5",
            "10.20.30",
        ] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in [
            "",
            "1",
            "1.0",
            "1.0.0.0",
            "01.0.0",
            "1.0.x",
            "v1.0.0",
            "1.0.0-",
            "1.0.0-01",
            "not-a-version",
            "1.0.0+",
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
