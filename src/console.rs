//! The container's terminal: a pty from the container's own devpts whose master goes back to
//! the caller over `--console-socket` (SCM_RIGHTS), whose slave becomes the process's stdio,
//! controlling terminal and /dev/console. Runs in init after pivot_root.

use crate::rootfs::resolve;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("connecting to console socket {}", path.display())]
    Connect {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} for the container's terminal")]
    Pty {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn pty_err(step: &'static str) -> impl FnOnce(nix::Error) -> ConsoleError {
    move |e| ConsoleError::Pty {
        step,
        source: e.into(),
    }
}

/// Connects to the caller's console socket (in the runtime, before the clone: the path is
/// a host path).
pub fn connect(path: &Path) -> Result<OwnedFd, ConsoleError> {
    std::os::unix::net::UnixStream::connect(path)
        .map(OwnedFd::from)
        .map_err(|source| ConsoleError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// Allocates the pty, sends its master over `socket`, and makes the slave our terminal.
pub fn setup(socket: BorrowedFd, size: Option<(u16, u16)>) -> Result<(), ConsoleError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(pty_err("opening /dev/ptmx"))?;
    grantpt(&master).map_err(pty_err("grantpt"))?;
    unlockpt(&master).map_err(pty_err("unlockpt"))?;
    let name = ptsname_r(&master).map_err(pty_err("ptsname"))?;
    if let Some((height, width)) = size {
        let ws = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize struct from the valid pointer.
        unsafe { set_winsize(master.as_raw_fd(), &ws) }
            .map_err(pty_err("setting the console size"))?;
    }
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .map_err(|source| ConsoleError::Pty {
            step: "opening the pty slave",
            source,
        })?
        .into();
    // /dev/console is the same terminal (as runc and crun do it).
    let root = std::fs::File::open("/")
        .map(OwnedFd::from)
        .map_err(|source| ConsoleError::Pty {
            step: "opening /",
            source,
        })?;
    let console =
        resolve::ensure(root.as_fd(), Path::new("/dev/console"), false).map_err(|source| {
            ConsoleError::Pty {
                step: "creating /dev/console",
                source,
            }
        })?;
    mount(
        Some(name.as_str()),
        &resolve::fd_path(console.as_fd()),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(pty_err("bind-mounting the pty on /dev/console"))?;
    let fds = [master.as_raw_fd()];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(pty_err("sending the pty master over the console socket"))?;
    drop(master);
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target).map_err(pty_err("making the pty stdio"))?;
    }
    // SAFETY: TIOCSCTTY with argument 0 on our own stdin; we are a session leader (setsid).
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(ConsoleError::Pty {
            step: "setting the controlling terminal",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;
