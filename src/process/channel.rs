//! The typed channel between the runtime and the container's init.
//!
//! ```text
//!  runtime (capsa create)                 stage (only to join namespaces)     init
//!  ----------------------                 -------------------------------     ----
//!  clone ------------------------------------------------------------------->  (born) parent-death
//!                                                                              signal: SIGKILL
//!       or fork ---------------------------> setns... clone(CLONE_PARENT) -->  (born)
//!  <------------------------------------- InitPid{pid}, exit
//!  write uid/gid maps, oom_score_adj,
//!  join the cgroup
//!  Proceed{state} ---------------------------------------------------------->  mounts, devices
//!  <------------------------------------------------------------------------  RunCreateRuntimeHooks
//!  prestart + createRuntime hooks
//!  HooksDone --------------------------------------------------------------->  createContainer hooks,
//!                                                                              pivot_root, ... caps,
//!                                                                              seccomp loaded
//!  <-------------------------------------------------------- SeccompFd + fd  (only with NOTIFY rules)
//!  connect listenerPath, send state + fd
//!  SeccompFdSent ----------------------------------------------------------->
//!  <------------------------------------------------------------------------  Ready
//!  --pid-file
//!  HandOver ---------------------------------------------------------------->  parent-death
//!                                                                              signal cleared
//!  <------------------------------------------------------------------------  HandedOver
//!  exit                                                                        block on exec.fifo
//!  (any step may instead receive Error{cause chain, errno} and fail the create)
//! ```
//! Messages are JSON over a SOCK_SEQPACKET socketpair: one datagram per message, and the
//! peer's exit shows up as end-of-file instead of a hang.

use super::{ProcessError, RemoteError};
use nix::sys::socket::{
    recvmsg, send, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// stage -> runtime: the pid of init (in the runtime's pid namespace), and whether it was
    /// born in its cgroup.
    InitPid { pid: i32, placed: bool },
    /// runtime -> init: ids mapped, cgroup joined; the state JSON for in-container hooks.
    Proceed { state: String },
    /// init -> runtime: mounts are done, run prestart and createRuntime hooks.
    RunCreateRuntimeHooks,
    /// runtime -> init: those hooks succeeded.
    HooksDone,
    /// init -> runtime: everything is set up.
    Ready,
    /// runtime -> init: the state is recorded; init is on its own from now on (it no longer
    /// dies with the runtime) and waits on exec.fifo.
    HandOver,
    /// init -> runtime: the parent-death signal is cleared; the runtime may exit.
    HandedOver,
    /// init or exec -> runtime, with the seccomp user-notification fd attached (SCM_RIGHTS):
    /// hand it to linux.seccomp.listenerPath.
    SeccompFd,
    /// runtime -> init or exec: the listener has the fd.
    SeccompFdSent,
    /// init or stage -> runtime: setup failed.
    Error(RemoteError),
}

impl Message {
    pub fn name(&self) -> &'static str {
        match self {
            Message::InitPid { .. } => "InitPid",
            Message::Proceed { .. } => "Proceed",
            Message::RunCreateRuntimeHooks => "RunCreateRuntimeHooks",
            Message::HooksDone => "HooksDone",
            Message::Ready => "Ready",
            Message::HandOver => "HandOver",
            Message::HandedOver => "HandedOver",
            Message::SeccompFd => "SeccompFd",
            Message::SeccompFdSent => "SeccompFdSent",
            Message::Error(_) => "Error",
        }
    }
}

/// One end of the channel.
pub struct Channel {
    fd: OwnedFd,
    /// A descriptor that arrived with the last message (SCM_RIGHTS), until taken.
    received: std::cell::RefCell<Option<OwnedFd>>,
}

/// Creates both ends (close-on-exec: neither leaks into a hook or the container process).
pub fn pair() -> Result<(Channel, Channel), ProcessError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| ProcessError::Channel(e.into()))?;
    let end = |fd| Channel {
        fd,
        received: std::cell::RefCell::new(None),
    };
    Ok((end(a), end(b)))
}

const MAX_MESSAGE: usize = 64 * 1024;

impl Channel {
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub fn send(&self, msg: &Message) -> Result<(), ProcessError> {
        let bytes = serde_json::to_vec(msg).map_err(ProcessError::Encode)?;
        send(self.fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL)
            .map_err(|e| ProcessError::Channel(e.into()))?;
        Ok(())
    }

    /// Sends `msg` with `fd` attached.
    pub fn send_with_fd(&self, msg: &Message, fd: BorrowedFd) -> Result<(), ProcessError> {
        let bytes = serde_json::to_vec(msg).map_err(ProcessError::Encode)?;
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| ProcessError::Channel(e.into()))?;
        Ok(())
    }

    /// The descriptor that came with the last message, if any.
    pub fn take_fd(&self) -> Option<OwnedFd> {
        self.received.borrow_mut().take()
    }

    /// The next message; `None` when the peer has gone away.
    pub fn recv(&self) -> Result<Option<Message>, ProcessError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    for c in msg.cmsgs().map_err(|e| ProcessError::Channel(e.into()))? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for fd in fds {
                                // SAFETY: the kernel installed this descriptor for us.
                                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                                *self.received.borrow_mut() = Some(owned);
                            }
                        }
                    }
                    break msg.bytes;
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ProcessError::Channel(e.into())),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(ProcessError::Decode)
    }

    /// Receives a message, turning an `Error` into the remote failure and end-of-file into
    /// "exited before sending {expected}".
    pub fn expect(&self, expected: &'static str) -> Result<Message, ProcessError> {
        match self.recv()? {
            None => Err(ProcessError::PeerExited { expected }),
            Some(Message::Error(e)) => Err(ProcessError::Init(e)),
            Some(m) => Ok(m),
        }
    }

    fn unexpected(expected: &'static str, got: &Message) -> ProcessError {
        ProcessError::Unexpected {
            expected,
            got: got.name(),
        }
    }

    pub fn recv_init_pid(&self) -> Result<(i32, bool), ProcessError> {
        match self.expect("InitPid")? {
            Message::InitPid { pid, placed } => Ok((pid, placed)),
            m => Err(Self::unexpected("InitPid", &m)),
        }
    }

    pub fn wait_for_proceed(&self) -> Result<String, ProcessError> {
        match self.expect("Proceed")? {
            Message::Proceed { state } => Ok(state),
            m => Err(Self::unexpected("Proceed", &m)),
        }
    }

    pub fn wait_for_hooks_done(&self) -> Result<(), ProcessError> {
        match self.expect("HooksDone")? {
            Message::HooksDone => Ok(()),
            m => Err(Self::unexpected("HooksDone", &m)),
        }
    }

    pub fn proceed(&self, state: String) -> Result<(), ProcessError> {
        self.send(&Message::Proceed { state })
    }

    pub fn hooks_done(&self) -> Result<(), ProcessError> {
        self.send(&Message::HooksDone)
    }

    pub fn request_create_runtime_hooks(&self) -> Result<(), ProcessError> {
        self.send(&Message::RunCreateRuntimeHooks)
    }

    pub fn ready(&self) -> Result<(), ProcessError> {
        self.send(&Message::Ready)
    }

    /// Runtime side: hands init over and waits until it has let go of its parent.
    pub fn hand_over(&self) -> Result<(), ProcessError> {
        self.send(&Message::HandOver)?;
        match self.expect("HandedOver")? {
            Message::HandedOver => Ok(()),
            m => Err(Self::unexpected("HandedOver", &m)),
        }
    }

    /// Init side: waits to be handed over, runs `let_go`, and says so.
    pub fn wait_for_hand_over(&self, let_go: impl FnOnce()) -> Result<(), ProcessError> {
        match self.expect("HandOver")? {
            Message::HandOver => {
                let_go();
                self.send(&Message::HandedOver)
            }
            m => Err(Self::unexpected("HandOver", &m)),
        }
    }

    /// Hands the seccomp notification fd to the runtime and waits until it is passed on.
    pub fn send_seccomp_fd(&self, fd: BorrowedFd) -> Result<(), ProcessError> {
        self.send_with_fd(&Message::SeccompFd, fd)?;
        match self.expect("SeccompFdSent")? {
            Message::SeccompFdSent => Ok(()),
            m => Err(Self::unexpected("SeccompFdSent", &m)),
        }
    }

    pub fn error(&self, err: &(dyn std::error::Error + 'static)) {
        // Best effort: if the runtime is gone there is nobody left to tell.
        let _ = self.send(&Message::Error(RemoteError::from_error(err)));
    }
}
