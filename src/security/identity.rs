//! The process's uid, gids, no_new_privs and session keyring.

use super::SecurityError;
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

fn id_err(what: &'static str, value: impl ToString) -> impl FnOnce(nix::Error) -> SecurityError {
    move |e| SecurityError::Identity {
        what,
        value: value.to_string(),
        source: e.into(),
    }
}

/// Switches to uid/gid with the supplementary groups, keeping the permitted capabilities across
/// the uid change so the spec's sets can be applied afterwards.
pub fn set_identity(uid: u32, gid: u32, additional: &[u32]) -> Result<(), SecurityError> {
    nix::sys::prctl::set_keepcaps(true).map_err(id_err("setting keepcaps", true))?;
    let groups: Vec<Gid> = additional.iter().copied().map(Gid::from_raw).collect();
    // setgroups is refused in a user namespace whose setgroups file says "deny"; with no
    // supplementary groups asked for there is nothing to do.
    match setgroups(&groups) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM) if groups.is_empty() => {}
        Err(e) => return Err(id_err("setting additional gids", format!("{additional:?}"))(e)),
    }
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(id_err("setting gid", gid))?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(id_err("setting uid", uid))?;
    nix::sys::prctl::set_keepcaps(false).map_err(id_err("clearing keepcaps", false))?;
    Ok(())
}

pub fn set_no_new_privs() -> Result<(), SecurityError> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| SecurityError::NoNewPrivs(e.into()))
}

/// Joins a fresh session keyring so the container does not share the caller's keys (what
/// runc does unless --no-new-keyring). Kernels without keyrings are left alone.
pub fn join_session_keyring(name: &str) -> Result<(), SecurityError> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let cname = std::ffi::CString::new(name).map_err(|_| SecurityError::Keyring {
        name: name.to_string(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })?;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, name) reads a valid NUL-terminated string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            cname.as_ptr(),
        )
    };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if matches!(err.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EACCES)) {
            return Ok(());
        }
        return Err(SecurityError::Keyring {
            name: name.to_string(),
            source: err,
        });
    }
    Ok(())
}
