//! Starting a pod's infra process: cloned with the shared namespaces into the pod's infra
//! cgroup, it names the pod (hostname), brings up loopback, gives up every capability and
//! execs the pause program. The typed channel carries a setup failure back whole; its end is
//! close-on-exec, so EOF means the exec happened.
//!
//! The pause program runs as root for the pod's whole life, as pid 1 of a pid namespace the
//! pod's containers may share: the CVE-2019-5736 class applies to it as to capsa itself. A
//! container that opened /proc/1/exe could keep the handle and, once the infra is gone (or
//! from a container outside the pod it passed the handle to), write the host's file that the
//! next `pod create` runs as root. So the infra never executes the host's file: it executes a
//! detached read-only bind of it (or a sealed memfd copy), and it is non-dumpable from the
//! clone on; capsa-pause makes itself non-dumpable again as its first step after execve,
//! which resets the flag.

use super::PodError;
use crate::cgroups::{Manager, SelfJoin};
use crate::process::channel::{self, Message};
use crate::process::ProcessError;
use crate::security::{self, CapabilitySets};
use crate::sys::clone::{exit_child, ChildGuard, Forked};
use nix::sched::CloneFlags;
use oci_spec::runtime::LinuxNamespaceType;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(super) struct InfraConfig<'a> {
    pub pause: &'a Path,
    pub share: &'a [LinuxNamespaceType],
    pub cgroup: &'a Manager,
    pub hostname: Option<&'a str>,
    /// Checked by the caller: each belongs to a namespace the pod shares.
    pub sysctls: &'a std::collections::BTreeMap<String, String>,
}

/// Clones the infra process; on return it runs the pause program. The guard owns it.
pub(super) fn spawn(cfg: &InfraConfig) -> crate::Result<ChildGuard> {
    let pause =
        CString::new(cfg.pause.as_os_str().as_bytes()).map_err(|_| ProcessError::Executable {
            name: cfg.pause.display().to_string(),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        })?;
    let exe = security::sealed::protected_executable(cfg.pause)?;
    let flags = cfg.share.iter().fold(CloneFlags::empty(), |f, t| {
        f | crate::namespaces::clone_flag(*t)
    });
    let (ours, theirs) = channel::pair()?;
    let join = cfg.cgroup.self_join()?;
    let (forked, placed) =
        crate::process::clone_in_cgroup(flags, false, cfg.cgroup, join.as_ref())?;
    let pid = match forked {
        Forked::Child => {
            drop(ours);
            let err = setup_and_exec(cfg, join.as_ref(), &exe, &pause);
            theirs.error(&err);
            exit_child(1)
        }
        Forked::Parent(pid) => pid,
    };
    drop(theirs);
    drop(join);
    let guard = ChildGuard::new(pid);
    if !placed {
        cfg.cgroup.add(pid)?;
    }
    match ours.recv()? {
        None => Ok(guard),
        Some(Message::Error(e)) => Err(ProcessError::Init(e).into()),
        Some(other) => Err(ProcessError::Unexpected {
            expected: "EOF at exec",
            got: other.name(),
        }
        .into()),
    }
}

/// Runs in the child; returns only with the reason it could not exec.
fn setup_and_exec(
    cfg: &InfraConfig,
    join: Option<&SelfJoin>,
    exe: &OwnedFd,
    pause: &CString,
) -> crate::Error {
    let result = (|| -> crate::Result<()> {
        // Until its execve this process is capsa, in the pod's namespaces.
        security::sealed::set_non_dumpable()?;
        // Into the pod's infra cgroup before anything else, as init does.
        join.map(SelfJoin::enter).transpose()?;
        let _ = nix::unistd::setsid();
        if let Some(h) = cfg.hostname {
            crate::namespaces::set_uts(Some(h), None)?;
        }
        if cfg.share.contains(&LinuxNamespaceType::Network) {
            loopback_up().map_err(PodError::Loopback)?;
        }
        if !cfg.sysctls.is_empty() {
            set_sysctls(cfg.sysctls)?;
        }
        // The pause program needs no privilege at all.
        security::set_no_new_privs()?;
        let none = CapabilitySets::default();
        security::drop_bounding(&none)?;
        security::apply_capabilities(&none)?;
        stdio_to_null().map_err(PodError::Stdio)?;
        crate::process::reset_signals();
        // The channel must survive until exec.
        crate::sys::fds::cloexec_from(3).map_err(crate::process::ProcessError::Cloexec)?;
        Ok(())
    })();
    if let Err(e) = result {
        return e;
    }
    // execveat of the protected descriptor (AT_EMPTY_PATH; the descriptor is close-on-exec,
    // which an ELF program does not mind). argv[0] stays the program's path, for ps.
    let argv = [pause.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: execveat of a descriptor we hold, with NULL-terminated argv/envp arrays whose
    // strings live until the call; it returns only on failure.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    ProcessError::Executable {
        name: pause.to_string_lossy().into_owned(),
        source: std::io::Error::last_os_error(),
    }
    .into()
}

/// Writes each sysctl through a verified /proc (ours, in the pod's new namespaces: net and
/// ipc sysctls are those of the writer's namespaces).
fn set_sysctls(sysctls: &std::collections::BTreeMap<String, String>) -> crate::Result<()> {
    let proc = crate::sys::procfs::ProcRoot::open().map_err(crate::rootfs::RootfsError::from)?;
    for (key, value) in sysctls {
        let err = |source: std::io::Error| PodError::Sysctl {
            key: key.clone(),
            value: value.clone(),
            source,
        };
        let rel = std::path::PathBuf::from("sys").join(key.replace('.', "/"));
        let fd = proc
            .open_file(&rel, nix::fcntl::OFlag::O_WRONLY)
            .map_err(crate::rootfs::RootfsError::from)?;
        std::io::Write::write_all(&mut std::fs::File::from(fd), value.as_bytes()).map_err(err)?;
    }
    Ok(())
}

/// A new network namespace starts with `lo` down; the pod's containers talk over 127.0.0.1.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain datagram socket, owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket and is ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid; the name is NUL-terminated ("lo\0").
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags of the named interface.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn stdio_to_null() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in 0..3 {
        nix::unistd::dup2(null.as_raw_fd(), target)?;
    }
    Ok(())
}
