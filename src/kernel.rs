//! The oldest kernel capsa runs on, checked before a container or pod is made.
//!
//! Linux 5.12: mount_setattr(2) (5.12) makes the pod's infra binary and capsa's own
//! re-executed copy read-only mounts nothing can remount; close_range(CLOSE_RANGE_CLOEXEC)
//! (5.11) keeps the runtime's descriptors out of the container in one syscall; openat2
//! with RESOLVE_IN_ROOT (5.6) resolves every path of the rootfs inside it; clone3 with
//! CLONE_INTO_CGROUP (5.7) starts init in its cgroup v2; pidfds (5.3) wait and signal
//! without pid reuse races. See docs/design.md, "Minimum kernel".

use std::sync::OnceLock;

/// The minimum (major, minor) kernel version.
pub const MINIMUM: (u32, u32) = (5, 12);

/// The running kernel's (major, minor), parsed from uname's release ("6.1.0-13-amd64").
pub fn running() -> Option<(u32, u32)> {
    static RUNNING: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *RUNNING.get_or_init(|| {
        let uts = nix::sys::utsname::uname().ok()?;
        parse_release(&uts.release().to_string_lossy())
    })
}

fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Refuses a kernel older than [`MINIMUM`] with an error naming both versions. A release
/// that cannot be parsed is let through: the syscalls themselves then say what is missing.
pub fn check() -> Result<(), KernelError> {
    check_version(running())
}

fn check_version(found: Option<(u32, u32)>) -> Result<(), KernelError> {
    match found {
        Some(found) if found < MINIMUM => Err(KernelError::TooOld { found }),
        _ => Ok(()),
    }
}

/// The kernel is older than capsa needs.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The kernel version is below the minimum.
    #[error(
        "capsa needs Linux {}.{} or later (mount_setattr, close_range, openat2, clone3); \
         this kernel is {}.{}",
        MINIMUM.0, MINIMUM.1, found.0, found.1
    )]
    TooOld {
        /// The running kernel version (major, minor).
        found: (u32, u32),
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_to_major_and_minor() {
        assert_eq!(parse_release("6.1.0-13-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.12.19"), Some((5, 12)));
        assert_eq!(parse_release("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn kernels_below_5_12_are_refused_with_both_versions_named() {
        let err = check_version(Some((5, 11))).unwrap_err().to_string();
        assert!(
            err.contains("Linux 5.12 or later") && err.contains("this kernel is 5.11"),
            "{err}"
        );
        assert!(check_version(Some((4, 19))).is_err());
        assert!(check_version(Some((5, 12))).is_ok());
        assert!(check_version(Some((6, 1))).is_ok());
        assert!(check_version(None).is_ok());
        assert!(check().is_ok(), "the test machine runs a supported kernel");
    }
}
