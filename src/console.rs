//! The container's terminal: a pty from the container's own devpts whose master goes back to
//! the caller over `--console-socket` (SCM_RIGHTS), whose slave becomes the process's stdio,
//! controlling terminal and /dev/console. Runs in init after pivot_root, and in an exec'd
//! process inside the container. Nothing is opened or mounted by a path the container could
//! redirect: the ptmx is checked to be a devpts's own, the slave comes from the master
//! (TIOCGPTPEER), and /dev/console is mounted from that descriptor (CVE-2025-52565).

use crate::sys::procfs::{ProcRoot, ProcfsError};
use crate::sys::resolve;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A failure with a container's terminal or its console socket.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Connecting to the console socket failed.
    #[error("connecting to console socket {}", path.display())]
    Connect {
        /// The console socket.
        path: std::path::PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Making the pty failed.
    #[error("{step} for the container's terminal")]
    Pty {
        /// The step that failed.
        step: &'static str,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// /dev/pts/ptmx in the container is not the devpts ptmx it should be (a hostile image's trap).
    #[error("refusing /dev/pts/ptmx for the container's terminal: {why}")]
    NotPtmx {
        /// What was found instead.
        why: String,
    },
    /// Reaching the pty through procfs failed.
    #[error("the container's terminal")]
    Procfs(#[from] ProcfsError),
}

fn pty_err(step: &'static str) -> impl FnOnce(nix::Error) -> ConsoleError {
    move |e| ConsoleError::Pty {
        step,
        source: e.into(),
    }
}

/// Connects to the caller's console socket (in the runtime, before the clone: the path is
/// a host path).
pub(crate) fn connect(path: &Path) -> Result<OwnedFd, ConsoleError> {
    std::os::unix::net::UnixStream::connect(path)
        .map(OwnedFd::from)
        .map_err(|source| ConsoleError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

/// The ioctl wrapper, kept out of the public `console` module (the macro makes a `pub fn`).
mod ioctl {
    nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);
}
use ioctl::set_winsize;

/// DEVPTS_SUPER_MAGIC, and the ptmx node every devpts instance has (fs/devpts/inode.c:
/// inode 2, char 5:2).
const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;
const PTMX_INO: u64 = 2;

fn io_err(step: &'static str) -> impl FnOnce(std::io::Error) -> ConsoleError {
    move |source| ConsoleError::Pty { step, source }
}

/// Opens the container's /dev/pts/ptmx as O_PATH (nothing is opened for real before it is
/// checked) and checks it is the ptmx of a real devpts: a node the image planted, or a
/// /dev/pts that is not devpts, would give us a terminal from somewhere else.
fn verified_ptmx(root: BorrowedFd) -> Result<OwnedFd, ConsoleError> {
    let path = Path::new("/dev/pts/ptmx");
    let fd = resolve::open_in_root(root, path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
        .map_err(io_err("opening /dev/pts/ptmx"))?;
    let fs = nix::sys::statfs::fstatfs(&fd).map_err(pty_err("checking /dev/pts/ptmx"))?;
    if fs.filesystem_type().0 as i64 != DEVPTS_SUPER_MAGIC {
        return Err(ConsoleError::NotPtmx {
            why: format!(
                "it is not on a devpts (filesystem magic {:#x}); is devpts mounted on /dev/pts?",
                fs.filesystem_type().0
            ),
        });
    }
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(pty_err("checking /dev/pts/ptmx"))?;
    let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if !is_char || st.st_rdev != nix::sys::stat::makedev(5, 2) || st.st_ino != PTMX_INO {
        return Err(ConsoleError::NotPtmx {
            why: format!(
                "it is not the devpts ptmx node (mode {:o}, device {}:{}, inode {})",
                st.st_mode,
                nix::sys::stat::major(st.st_rdev),
                nix::sys::stat::minor(st.st_rdev),
                st.st_ino
            ),
        });
    }
    Ok(fd)
}

/// The peer (slave) of a pty master, from the master itself (TIOCGPTPEER, Linux 4.13): never
/// by its /dev/pts/N path, which the container's /dev could point anywhere (CVE-2025-52565).
fn peer_of(master: BorrowedFd) -> Result<OwnedFd, ConsoleError> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(ConsoleError::Pty {
            step: "opening the pty's peer (TIOCGPTPEER)",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the ioctl returned a fresh descriptor that only we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Allocates a pty from the container's own devpts, sends its master over `socket`, and
/// makes its peer our stdio and controlling terminal. With `mount_console` (the container's
/// init, not an exec) the peer is also bind-mounted on /dev/console, from the descriptor,
/// as runc does. With `clear_onlcr` (a runtime that is itself the console, as runc's
/// foreground exec) the pty passes newlines as written, before anything is run on it.
pub(crate) fn setup(
    socket: BorrowedFd,
    size: Option<(u16, u16)>,
    mount_console: bool,
    clear_onlcr: bool,
) -> Result<(), ConsoleError> {
    let root: OwnedFd = std::fs::File::open("/")
        .map_err(io_err("opening /"))?
        .into();
    // The container's procfs, verified: the ptmx handle is reopened and /dev/console is
    // mounted through it.
    let proc = ProcRoot::open()?;
    let ptmx = verified_ptmx(root.as_fd())?;
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(proc.fd_path(ptmx.as_fd()))
        .map_err(io_err("opening /dev/pts/ptmx"))?
        .into();
    drop(ptmx);
    // SAFETY: TIOCSPTLCK reads one int (0: unlock) from the valid pointer.
    if unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCSPTLCK,
            &0 as *const libc::c_int,
        )
    } < 0
    {
        return Err(io_err("unlockpt")(std::io::Error::last_os_error()));
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int to the valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) } < 0 {
        return Err(io_err("reading the pty number")(
            std::io::Error::last_os_error(),
        ));
    }
    // Only a name for the console socket's receiver (runc sends the same): never opened.
    let name = format!("/dev/pts/{number}");
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
    let slave = peer_of(master.as_fd())?;
    if clear_onlcr {
        clear_onlcr_of(slave.as_fd())?;
    }
    if mount_console {
        // /dev/console is the same terminal (as runc and crun do it).
        let console = resolve::ensure(root.as_fd(), Path::new("/dev/console"), false)
            .map_err(io_err("creating /dev/console"))?;
        mount(
            Some(&proc.fd_path(slave.as_fd())),
            &proc.fd_path(console.as_fd()),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(pty_err("bind-mounting the pty on /dev/console"))?;
    }
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

/// Turns off a pty's NL -> CRNL translation, as runc's own console does (ClearONLCR): the
/// caller gets the container's bytes as written, and its terminal (raw) shows them as the
/// container's would.
pub fn clear_onlcr_of(pty: BorrowedFd) -> Result<(), ConsoleError> {
    use nix::sys::termios::{tcgetattr, tcsetattr, OutputFlags, SetArg};
    let mut t = tcgetattr(pty).map_err(pty_err("reading the pty's termios"))?;
    t.output_flags.remove(OutputFlags::ONLCR);
    tcsetattr(pty, SetArg::TCSANOW, &t).map_err(pty_err("clearing ONLCR on the pty"))
}

/// Receives the pty master that init (or an exec'd process) sent over a console socket:
/// the caller's side of `--console-socket`, connected.
pub fn receive_master(ours: BorrowedFd) -> Result<OwnedFd, ConsoleError> {
    let mut name = [0u8; 128];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        ours.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(pty_err("receiving the pty master"))?;
    for cmsg in msg
        .cmsgs()
        .map_err(pty_err("reading the pty master message"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(ConsoleError::Pty {
        step: "receiving the pty master",
        source: std::io::Error::from_raw_os_error(libc::EBADMSG),
    })
}
