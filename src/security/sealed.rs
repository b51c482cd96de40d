//! Protection of the runtime binary (CVE-2019-5736).
//!
//! Until its execve, a container's init (and an exec'd process) is this binary, inside the
//! container's namespaces. A process in the container that gets hold of `/proc/<pid>/exe`
//! could reopen it for writing once no capsa process runs it any more, and replace the
//! host's capsa. So `create`, `run` and `exec` first re-execute themselves from a copy that
//! cannot be written:
//! - a detached read-only bind mount of the binary (open_tree + mount_setattr, Linux 5.12+):
//!   no copy, `/proc/<pid>/exe` resolves through a mount that refuses writes (EROFS) and that
//!   no container can remount; the idea of runc 1.2's read-only overlay, without the overlay;
//! - otherwise (no privilege to make mounts), a sealed memfd copy, as crun and runc 1.1 do.
//!
//! Measured here: the bind costs one execveat, 1.6-1.8 ms on this VM (`run` 10.6 ms against
//! 8.8 ms from a read-only install, `exec` 5.8 against 4.2), most of it the exec floor: glibc's
//! start-up alone takes 0.9 ms here (its cache-size probe traps on cpuid). The memfd copy of
//! the 5 MB binary costs about 3 ms more. A binary installed on a read-only mount skips the
//! re-exec ([`is_sealed`]); commands that start nothing in a container (state, list, kill,
//! ...) skip it always.
//! Processes also stay non-dumpable until their execve ([`set_non_dumpable`]), so a
//! container process cannot even open their /proc entries meanwhile.

use super::SecurityError;
use std::ffi::{CStr, CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

fn err(step: &'static str) -> impl FnOnce(std::io::Error) -> SecurityError {
    move |source| SecurityError::Sealing { step, source }
}

/// Whether this process runs from a binary that cannot be written: a write-sealed memfd,
/// or a file on a read-only mount (ours, or a read-only /usr).
pub fn is_sealed() -> bool {
    let Ok(exe) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS on our own descriptor; -1 (EINVAL) for files that are not memfds.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & SEALS == SEALS {
        return true;
    }
    nix::sys::statvfs::fstatvfs(&exe)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// A detached, read-only bind mount of /proc/self/exe, as an O_PATH descriptor.
pub fn read_only_bind() -> Result<OwnedFd, SecurityError> {
    read_only_bind_of(c"/proc/self/exe")
}

/// A detached, read-only bind mount of the file at `path` (symlinks followed), as an O_PATH
/// descriptor: executing it runs the file, and `/proc/<pid>/exe` of the process then resolves
/// through a mount that refuses writes (EROFS) and that nothing else can reach or remount.
pub fn read_only_bind_of(path: &CStr) -> Result<OwnedFd, SecurityError> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: u64 = 1;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    // SAFETY: open_tree with a NUL-terminated path; the result is a new descriptor we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(err("cloning a mount of the binary")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by open_tree and is ours.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on our detached mount with a valid, sized attribute struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(err("making the binary's mount read-only")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(tree)
}

/// Copies /proc/self/exe into a sealed memfd.
pub fn sealed_copy() -> Result<OwnedFd, SecurityError> {
    let exe = std::fs::File::open("/proc/self/exe").map_err(err("opening /proc/self/exe"))?;
    sealed_copy_of(&exe, c"capsa")
}

/// Copies an open file into a write-sealed memfd named `name`.
pub fn sealed_copy_of(file: &std::fs::File, name: &CStr) -> Result<OwnedFd, SecurityError> {
    let len = file
        .metadata()
        .map_err(err("reading the size of the binary"))?
        .len() as usize;
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned below.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(err("creating the memfd")(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by memfd_create and is ours.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut copied = 0;
    while copied < len {
        // SAFETY: sendfile between two descriptors we hold, from the file's current offset.
        let n = unsafe {
            libc::sendfile(
                memfd.as_raw_fd(),
                file.as_raw_fd(),
                std::ptr::null_mut(),
                len - copied,
            )
        };
        match n {
            n if n > 0 => copied += n as usize,
            0 => break,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(err("copying the binary")(e));
                }
            }
        }
    }
    // SAFETY: F_ADD_SEALS on the memfd we own.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(err("sealing the copy")(std::io::Error::last_os_error()));
    }
    Ok(memfd)
}

/// A descriptor to execute `path` from that no process running it can turn into a way to
/// write `path`: a read-only bind of it, or (without the privilege to make mounts) a sealed
/// memfd copy. Used for the pod's infra program, which runs for the pod's whole life in a
/// pid namespace the pod's containers may share (the CVE-2019-5736 class, for capsa-pause).
pub fn protected_executable(path: &Path) -> Result<OwnedFd, SecurityError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        err("naming the binary")(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} holds a NUL byte", path.display()),
        ))
    })?;
    match read_only_bind_of(&c) {
        Ok(fd) => Ok(fd),
        Err(_) => {
            let file = std::fs::File::open(path).map_err(err("opening the binary"))?;
            sealed_copy_of(&file, c"capsa-pause")
        }
    }
}

/// Re-executes this program, with the same arguments and environment, from a read-only bind
/// of itself, or else a sealed copy. Returns only on failure. Call it before opening anything
/// that must survive (everything Rust opens is close-on-exec; inherited descriptors such as
/// --preserve-fds stay).
pub fn reexec_sealed() -> Result<std::convert::Infallible, SecurityError> {
    let memfd = match read_only_bind() {
        Ok(fd) => fd,
        Err(_) => sealed_copy()?,
    };
    // A C string cannot hold a NUL byte: such an argument is an error, never "" (the kernel
    // hands us C strings, so only an environment built in-process could hold one).
    let to_c = |s: OsString, what: &dyn Fn() -> String| {
        CString::new(s.into_vec()).map_err(|_| SecurityError::Nul { what: what() })
    };
    let args = std::env::args_os()
        .enumerate()
        .map(|(i, a)| to_c(a, &|| format!("argument {i}")))
        .collect::<Result<Vec<CString>, _>>()?;
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let name = k.to_string_lossy().into_owned();
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            to_c(kv, &|| format!("environment variable {name}"))
        })
        .collect::<Result<Vec<CString>, _>>()?;
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: execveat of our memfd with NULL-terminated argv/envp arrays whose strings live
    // until the call; AT_EMPTY_PATH executes the descriptor itself.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            memfd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(err("executing the sealed copy")(
        std::io::Error::last_os_error(),
    ))
}

/// Non-dumpable until execve: the process's /proc entries are root's and ptrace-protected,
/// so nothing in the container can open `/proc/<pid>/exe` or /proc/<pid>/fd meanwhile.
/// A failure is an error: a process that stayed dumpable would be open to the container.
pub fn set_non_dumpable() -> Result<(), SecurityError> {
    // SAFETY: PR_SET_DUMPABLE with 0 only changes our own dumpable flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } < 0 {
        return Err(SecurityError::Dumpable(std::io::Error::last_os_error()));
    }
    Ok(())
}
