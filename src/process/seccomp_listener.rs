//! Handing a container's seccomp user-notification fd to `linux.seccomp.listenerPath`, as
//! the runtime spec asks: connect, then send the ContainerProcessState JSON with the fd in
//! the same message (SCM_RIGHTS). The runtime does this, not init: the path is a host path,
//! and init has already pivoted into the container's root.

use super::channel::Channel;
use super::ProcessError;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxSeccomp;
use std::io::IoSlice;
use std::os::fd::AsRawFd;

/// Receives the fd that came with a SeccompFd message, passes it on, and tells the process
/// to go on.
pub(super) fn forward(
    chan: &Channel,
    profile: Option<&LinuxSeccomp>,
    pid: Pid,
    state_json: &str,
) -> crate::Result<()> {
    let fd = chan.take_fd().ok_or(ProcessError::Unexpected {
        expected: "a seccomp fd with SeccompFd",
        got: "SeccompFd",
    })?;
    let path = profile
        .and_then(|p| p.listener_path().clone())
        .ok_or_else(|| ProcessError::SeccompListener {
            path: "linux.seccomp.listenerPath".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath",
            ),
        })?;
    let err = |source: std::io::Error| ProcessError::SeccompListener {
        path: path.clone(),
        source,
    };
    let state: serde_json::Value = serde_json::from_str(state_json).unwrap_or_default();
    let message = serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid.as_raw(),
        "metadata": profile.and_then(|p| p.listener_metadata().clone()).unwrap_or_default(),
        "state": state,
    });
    let bytes = serde_json::to_vec(&message).map_err(ProcessError::Encode)?;
    let stream = std::os::unix::net::UnixStream::connect(&path).map_err(err)?;
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &[ControlMessage::ScmRights(&[fd.as_raw_fd()])],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| err(e.into()))?;
    chan.send(&super::channel::Message::SeccompFdSent)?;
    Ok(())
}
