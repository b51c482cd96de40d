//! AppArmor profiles and SELinux labels for the container process.
//!
//! Applied the way runc does it: the label is written to the process's "exec" attribute just
//! before execve, so the transition happens at the exec of the container's process, not
//! while capsa still sets it up. The attribute files are opened through a verified procfs
//! handle (no symlink, no mount crossed). When the host's LSM is not active, asking for a
//! label is an error that says so: silently running unconfined is what a user would not
//! expect.

use super::SecurityError;
use std::path::Path;

/// Which LSM a label is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lsm {
    /// AppArmor.
    AppArmor,
    /// SELinux.
    SeLinux,
}

impl Lsm {
    fn name(self) -> &'static str {
        match self {
            Lsm::AppArmor => "AppArmor",
            Lsm::SeLinux => "SELinux",
        }
    }

    /// Whether the LSM is active on this host.
    pub fn enabled(self) -> bool {
        match self {
            Lsm::AppArmor => std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .map(|s| s.trim() == "Y")
                .unwrap_or(false),
            Lsm::SeLinux => Path::new("/sys/fs/selinux/enforce").exists(),
        }
    }

    /// The "exec" attribute file (relative to /proc/<pid>) and what to write into it. Each
    /// LSM has its own directory (Linux 5.8+, below capsa's minimum kernel); SELinux keeps
    /// the shared file.
    fn attr(self, label: &str) -> (&'static str, String) {
        match self {
            Lsm::AppArmor => ("attr/apparmor/exec", format!("exec {label}")),
            Lsm::SeLinux => ("attr/exec", label.to_string()),
        }
    }
}

/// Checks, before anything is created, that a requested label can be applied.
pub(crate) fn check(lsm: Lsm, label: Option<&str>) -> Result<(), SecurityError> {
    match label {
        Some(l) if !l.is_empty() && !lsm.enabled() => Err(SecurityError::LsmUnavailable {
            lsm: lsm.name(),
            label: l.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Sets the label the next execve transitions to. `proc_dir` is a verified procfs handle.
pub(crate) fn set_exec_label(
    proc_dir: std::os::fd::BorrowedFd,
    lsm: Lsm,
    label: &str,
    pid: i32,
) -> Result<(), SecurityError> {
    check(lsm, Some(label))?;
    let (file, value) = lsm.attr(label);
    let path = Path::new(&pid.to_string()).join(file);
    let err = |source| SecurityError::Lsm {
        lsm: lsm.name(),
        label: label.to_string(),
        source,
    };
    let fd = crate::sys::resolve::open_proc_file(proc_dir, &path, nix::fcntl::OFlag::O_WRONLY)
        .map_err(err)?;
    std::io::Write::write_all(&mut std::fs::File::from(fd), value.as_bytes()).map_err(err)
}
