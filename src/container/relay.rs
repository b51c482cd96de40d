//! `run` in the foreground with a terminal and no `--console-socket`: capsa is the console
//! (as runc is). The pty master comes back over a socketpair of our own; a thread copies
//! stdin to it and it to stdout; the caller's terminal is put in raw mode and restored; the
//! caller's window size is copied to the pty at start and on every SIGWINCH.

use crate::console::ConsoleError;
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

fn err(step: &'static str) -> impl FnOnce(nix::Error) -> ConsoleError {
    move |e| ConsoleError::Pty {
        step,
        source: e.into(),
    }
}

/// The two ends of our private console socket: init gets `theirs`.
pub(super) fn socket_pair() -> Result<(OwnedFd, OwnedFd), ConsoleError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(err("creating the console socket pair"))
}

/// Puts the caller's terminal in raw mode; restores it when dropped.
pub(super) struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub(super) fn enter() -> Self {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, t);
        }
    }
}

/// Copies the caller's window size (of stdin, when it is a terminal) to the pty.
pub(super) fn copy_window_size(master: BorrowedFd) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid pointer; TIOCSWINSZ reads it.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Copies stdin -> master and master -> stdout until the pty's last slave is closed (the
/// container is gone). Stdin reaching EOF only stops that direction.
pub(super) fn copy(master: OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let master_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let stdin_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .unwrap_or(PollFlags::empty());
        if !master_ready.is_empty() {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => return, // EIO: every slave end is closed
                Ok(n) => {
                    if write_all(1, &buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        if !stdin_ready.is_empty() {
            match nix::unistd::read(0, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if write_all(master.as_raw_fd(), &buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn write_all(fd: i32, mut data: &[u8]) -> nix::Result<()> {
    // SAFETY: fd is stdout or the master we own, open for the duration of the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// capsa as the container's console: the pty master, the copying thread, the caller's
/// terminal in raw mode. Dropping it (after the container is gone) drains the output and
/// restores the terminal.
pub(super) struct Console {
    pub(super) master: OwnedFd,
    copier: Option<std::thread::JoinHandle<()>>,
    _raw: RawMode,
}

impl Console {
    pub(super) fn attach(socket: &OwnedFd) -> Result<Self, ConsoleError> {
        let master = crate::console::receive_master(socket.as_fd())?;
        copy_window_size(master.as_fd());
        crate::console::clear_onlcr_of(master.as_fd())?;
        let copy_end = master.try_clone().map_err(|source| ConsoleError::Pty {
            step: "duplicating the pty master",
            source,
        })?;
        let raw = RawMode::enter();
        Ok(Console {
            master,
            copier: Some(std::thread::spawn(move || copy(copy_end))),
            _raw: raw,
        })
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(t) = self.copier.take() {
            let _ = t.join(); // ends when the last slave end closes
        }
    }
}
