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
//! Messages are JSON over a SOCK_SEQPACKET socketpair, so the peer's exit shows up as
//! end-of-file instead of a hang. A datagram is limited by the socket's send buffer (about
//! 208 KiB by default) and a spec is not: annotations of any size reach init in the state
//! JSON, so a message goes as a run of chunks, each a datagram with a one-byte header
//! (`MORE` or `LAST`). An Error is cut to [`ERROR_TEXT_MAX`] per level of its chain, so that
//! it fits in the sender's socket buffer and is delivered even while the runtime is itself
//! blocked sending (init failing before it has read Proceed): the runtime, seeing the peer
//! gone, reads the Error that is waiting for it.

use super::{ProcessError, RemoteError};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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
    /// When set, a receive that would wait past it fails with [`ProcessError::Stalled`]
    /// (the runtime's bound on init's setup).
    deadline: std::cell::Cell<Option<(std::time::Instant, std::time::Duration)>>,
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
        deadline: std::cell::Cell::new(None),
    };
    Ok((end(a), end(b)))
}

/// The largest chunk; a smaller one when the socket's send buffer is smaller (a datagram
/// over `sk_sndbuf - 32` bytes fails with EMSGSIZE).
const CHUNK: usize = 32 * 1024;
/// Header byte of a chunk: more chunks of the same message follow.
const MORE: u8 = 1;
/// Header byte of a message's last (or only) chunk.
const LAST: u8 = 0;
/// The largest message accepted: far above any plausible spec, a bound on what a
/// misbehaving peer can make the runtime allocate.
const MAX_MESSAGE: usize = 256 << 20;
/// The longest text of one level of an error's chain sent across (longer is cut, marked).
pub(crate) const ERROR_TEXT_MAX: usize = 4096;
/// The deepest error chain sent across.
const ERROR_DEPTH_MAX: usize = 16;

fn io_err(e: nix::errno::Errno) -> ProcessError {
    ProcessError::Channel(e.into())
}

/// The chunk size for sending on `fd`: at most [`CHUNK`], and at most half the send buffer
/// (which getsockopt reports doubled, as the kernel keeps it).
fn chunk_size(fd: BorrowedFd) -> usize {
    use nix::sys::socket::{getsockopt, sockopt::SndBuf};
    let sndbuf = getsockopt(&fd, SndBuf).unwrap_or(CHUNK * 4);
    (sndbuf / 4).clamp(1024, CHUNK)
}

/// `err` as a RemoteError small enough to always be sent: each level's text cut to
/// [`ERROR_TEXT_MAX`] bytes (on a character boundary, marked), at most [`ERROR_DEPTH_MAX`]
/// levels.
pub(crate) fn bounded_error(err: &(dyn std::error::Error + 'static)) -> RemoteError {
    fn cut(mut e: RemoteError, depth: usize) -> RemoteError {
        if e.message.len() > ERROR_TEXT_MAX {
            let mut end = ERROR_TEXT_MAX;
            while !e.message.is_char_boundary(end) {
                end -= 1;
            }
            let dropped = e.message.len() - end;
            e.message.truncate(end);
            e.message
                .push_str(&format!("... [truncated: {dropped} more bytes]"));
        }
        e.cause = match e.cause {
            Some(_) if depth + 1 >= ERROR_DEPTH_MAX => None,
            Some(c) => Some(Box::new(cut(*c, depth + 1))),
            None => None,
        };
        e
    }
    cut(RemoteError::from_error(err), 0)
}

impl Channel {
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub fn send(&self, msg: &Message) -> Result<(), ProcessError> {
        self.send_chunks(msg, None)
    }

    /// Sends `msg` with `fd` attached.
    pub fn send_with_fd(&self, msg: &Message, fd: BorrowedFd) -> Result<(), ProcessError> {
        self.send_chunks(msg, Some(fd))
    }

    /// Sends `msg` as chunks, `fd` (if any) with the first. If the peer has gone, the Error
    /// it may have sent before going is the failure to report, not the broken pipe.
    fn send_chunks(&self, msg: &Message, fd: Option<BorrowedFd>) -> Result<(), ProcessError> {
        let bytes = serde_json::to_vec(msg).map_err(ProcessError::Encode)?;
        let size = chunk_size(self.fd.as_fd());
        let mut pieces = bytes.chunks(size).peekable();
        let mut first = true;
        // An empty message still goes as one (empty) last chunk.
        let empty: &[u8] = &[];
        while let Some(piece) = pieces.next().or(first.then_some(empty)) {
            let header = [if pieces.peek().is_some() { MORE } else { LAST }];
            let fds = fd.filter(|_| first).map(|f| [f.as_raw_fd()]);
            let cmsgs: Vec<ControlMessage> = fds
                .as_ref()
                .map(|f| ControlMessage::ScmRights(f))
                .into_iter()
                .collect();
            let iov = [IoSlice::new(&header), IoSlice::new(piece)];
            loop {
                match sendmsg::<()>(
                    self.fd.as_raw_fd(),
                    &iov,
                    &cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                ) {
                    Ok(_) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e @ (nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET)) => {
                        return Err(match self.recv() {
                            Ok(Some(Message::Error(remote))) => ProcessError::Init(remote),
                            _ => io_err(e),
                        })
                    }
                    Err(e) => return Err(io_err(e)),
                }
            }
            first = false;
        }
        Ok(())
    }

    /// The descriptor that came with the last message, if any.
    pub fn take_fd(&self) -> Option<OwnedFd> {
        self.received.borrow_mut().take()
    }

    /// Bounds every receive from now on: the next message must arrive within `bound`
    /// (None: no bound).
    pub fn set_bound(&self, bound: Option<std::time::Duration>) {
        self.deadline
            .set(bound.map(|b| (std::time::Instant::now() + b, b)));
    }

    /// Waits until a chunk can be read, or fails when the deadline passes first.
    fn wait_readable(&self) -> Result<(), ProcessError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let Some((deadline, bound)) = self.deadline.get() else {
            return Ok(());
        };
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(0) => {
                    return Err(ProcessError::Stalled {
                        expected: "a message",
                        seconds: bound.as_secs(),
                    })
                }
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io_err(e)),
            }
        }
    }

    /// One chunk into `buf` (appended); returns its header, or `None` at end-of-file.
    fn recv_chunk(&self, buf: &mut Vec<u8>) -> Result<Option<u8>, ProcessError> {
        self.wait_readable()?;
        let mut header = [0u8; 1];
        let mut piece = vec![0u8; CHUNK];
        loop {
            let mut iov = [IoSliceMut::new(&mut header), IoSliceMut::new(&mut piece)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    for c in msg.cmsgs().map_err(io_err)? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for fd in fds {
                                // SAFETY: the kernel installed this descriptor for us.
                                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                                *self.received.borrow_mut() = Some(owned);
                            }
                        }
                    }
                    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                        return Err(io_err(nix::errno::Errno::EMSGSIZE));
                    }
                    let n = msg.bytes;
                    if n == 0 {
                        return Ok(None);
                    }
                    if buf.len() + n - 1 > MAX_MESSAGE {
                        return Err(io_err(nix::errno::Errno::EMSGSIZE));
                    }
                    buf.extend_from_slice(&piece[..n - 1]);
                    return Ok(Some(header[0]));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io_err(e)),
            }
        }
    }

    /// The next message; `None` when the peer has gone away.
    pub fn recv(&self) -> Result<Option<Message>, ProcessError> {
        let mut buf = Vec::new();
        loop {
            match self.recv_chunk(&mut buf)? {
                // The peer went away, possibly in the middle of a message.
                None => return Ok(None),
                Some(MORE) => continue,
                Some(_) => break,
            }
        }
        serde_json::from_slice(&buf)
            .map(Some)
            .map_err(ProcessError::Decode)
    }

    /// Receives a message, turning an `Error` into the remote failure and end-of-file into
    /// "exited before sending {expected}".
    pub fn expect(&self, expected: &'static str) -> Result<Message, ProcessError> {
        let received = self.recv().map_err(|e| match e {
            ProcessError::Stalled { seconds, .. } => ProcessError::Stalled { expected, seconds },
            other => other,
        });
        match received? {
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

    /// Init side: waits to be handed over, runs `let_go`, and says so. This exchange comes
    /// after a noNewPrivileges seccomp filter is loaded, so it uses only read(2) and
    /// write(2), which a profile that lets the container's shell run allows (recvmsg and
    /// sendmsg it may deny: containerd's and podman's defaults allow them, a strict
    /// allowlist need not).
    pub fn wait_for_hand_over(&self, let_go: impl FnOnce()) -> Result<(), ProcessError> {
        match self.recv_plain()? {
            None => Err(ProcessError::PeerExited {
                expected: "HandOver",
            }),
            Some(Message::HandOver) => {
                let_go();
                self.send_plain(&Message::HandedOver)
            }
            Some(m) => Err(Self::unexpected("HandOver", &m)),
        }
    }

    /// A message of one chunk, sent with write(2) (no descriptor).
    fn send_plain(&self, msg: &Message) -> Result<(), ProcessError> {
        let mut bytes = vec![LAST];
        bytes.extend(serde_json::to_vec(msg).map_err(ProcessError::Encode)?);
        loop {
            match nix::unistd::write(self.fd.as_fd(), &bytes) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io_err(e)),
            }
        }
    }

    /// A message of one chunk, received with read(2) (a seqpacket read is one datagram).
    fn recv_plain(&self) -> Result<Option<Message>, ProcessError> {
        let mut buf = vec![0u8; CHUNK + 1];
        let n = loop {
            match nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io_err(e)),
            }
        };
        match (n, buf.first()) {
            (0, _) => Ok(None),
            (_, Some(&LAST)) => serde_json::from_slice(&buf[1..n])
                .map(Some)
                .map_err(ProcessError::Decode),
            _ => Err(io_err(nix::errno::Errno::EMSGSIZE)),
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
        let _ = self.send(&Message::Error(bounded_error(err)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_larger_than_the_socket_buffer_arrives_whole() {
        let (a, b) = pair().unwrap();
        let state = "x".repeat(3 << 20);
        let sent = state.clone();
        let t = std::thread::spawn(move || a.proceed(sent).unwrap());
        assert_eq!(b.wait_for_proceed().unwrap(), state);
        t.join().unwrap();
    }

    #[test]
    fn an_error_sent_before_the_peer_left_is_what_a_failed_send_reports() {
        let (rt, init) = pair().unwrap();
        let io = std::io::Error::from_raw_os_error(libc::EINVAL);
        init.error(&io);
        drop(init);
        // Larger than the socket buffer: the send fails part-way with EPIPE.
        match rt.proceed("y".repeat(1 << 20)) {
            Err(ProcessError::Init(e)) => assert_eq!(e.errno, Some(libc::EINVAL)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_error_is_cut_to_a_size_that_always_fits() {
        #[derive(Debug, thiserror::Error)]
        #[error("setting additional gids {0}")]
        struct Long(String, #[source] std::io::Error);
        let long = Long("é".repeat(100_000), std::io::Error::from_raw_os_error(22));
        let e = bounded_error(&long);
        assert!(e.message.len() < ERROR_TEXT_MAX + 64, "{}", e.message.len());
        assert!(e.message.starts_with("setting additional gids é"));
        assert!(e.message.ends_with("[truncated: 195928 more bytes]"), "{e}");
        assert_eq!(e.cause.unwrap().errno, Some(22));
    }
}
