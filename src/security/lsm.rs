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
    AppArmor,
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

    /// The "exec" attribute files to try, newest interface first, and what to write.
    fn attr(self, label: &str) -> (&'static [&'static str], String) {
        match self {
            // Since Linux 5.8 each LSM has its own directory; before, the shared file.
            Lsm::AppArmor => (
                &["attr/apparmor/exec", "attr/exec"],
                format!("exec {label}"),
            ),
            Lsm::SeLinux => (&["attr/exec"], label.to_string()),
        }
    }
}

/// Checks, before anything is created, that a requested label can be applied.
pub fn check(lsm: Lsm, label: Option<&str>) -> Result<(), SecurityError> {
    match label {
        Some(l) if !l.is_empty() && !lsm.enabled() => Err(SecurityError::LsmUnavailable {
            lsm: lsm.name(),
            label: l.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Sets the label the next execve transitions to. `proc_dir` is a verified procfs handle.
pub fn set_exec_label(
    proc_dir: std::os::fd::BorrowedFd,
    lsm: Lsm,
    label: &str,
    pid: i32,
) -> Result<(), SecurityError> {
    check(lsm, Some(label))?;
    let (files, value) = lsm.attr(label);
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    for file in files {
        let path = Path::new(&pid.to_string()).join(file);
        match crate::rootfs::resolve::open_proc_file(proc_dir, &path, nix::fcntl::OFlag::O_WRONLY) {
            Ok(fd) => {
                return std::io::Write::write_all(&mut std::fs::File::from(fd), value.as_bytes())
                    .map_err(|source| SecurityError::Lsm {
                        lsm: lsm.name(),
                        label: label.to_string(),
                        source,
                    });
            }
            Err(e) => last = e,
        }
    }
    Err(SecurityError::Lsm {
        lsm: lsm.name(),
        label: label.to_string(),
        source: last,
    })
}
