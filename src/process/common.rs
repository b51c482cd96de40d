//! What init and exec share: the last steps before execve, in the same order for both.

use super::channel::Channel;
use super::ProcessError;
use crate::security;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxSeccomp, Process};
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A process ready to be executed.
pub(super) struct Exec {
    pub path: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub umask: u32,
}

/// "a: b: c" for an error and its causes, for messages that can only go to stderr.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cur = c.source();
    }
    msg
}

/// Undoes what the runtime process had: blocked signals and ignored ones (Rust ignores
/// SIGPIPE), which would otherwise survive execve into the container.
pub(crate) fn reset_signals() {
    let _ = SigSet::empty().thread_set_mask();
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL runs no code of ours in signal context.
            let _ = unsafe { sigaction(sig, &default) };
        }
    }
}

/// With `on`, the kernel SIGKILLs us when the runtime that cloned us exits; off once the
/// runtime has handed us over. A runtime killed before this is set is seen on the channel
/// instead: its end closes, and init's next send or receive fails, so the window is closed
/// without comparing getppid() (which reads 0 in a new pid namespace). The setting is
/// cleared by the kernel on a change of credentials, so it is set again after them.
pub(super) fn die_with_parent(on: bool) {
    let sig = if on { libc::SIGKILL } else { 0 };
    // SAFETY: PR_SET_PDEATHSIG only sets a flag of our own process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
}

/// Sets our command name (/proc/self/comm, at most 15 bytes).
pub(super) fn set_name(name: &str) {
    let Ok(name) = CString::new(name) else {
        return;
    };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string that outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// Closes every descriptor the runtime had open (its state-dir lock among them) except
/// stdio, the preserved range, and those listed.
pub(super) fn close_inherited(min: i32, keep: &[i32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= min && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor number; init holds no Rust owner for these.
        unsafe { libc::close(fd) };
    }
}

/// chdir into the process's cwd and check that it really is inside the container: a cwd
/// reached through a leaked host fd shows up as "(unreachable)" (CVE-2024-21626).
fn enter_cwd(cwd: &Path) -> Result<(), ProcessError> {
    nix::unistd::chdir(cwd).map_err(|e| ProcessError::Cwd {
        cwd: cwd.to_path_buf(),
        source: e.into(),
    })?;
    let now = nix::unistd::getcwd().map_err(|e| ProcessError::Cwd {
        cwd: cwd.to_path_buf(),
        source: e.into(),
    })?;
    if !now.is_absolute() || now.to_string_lossy().contains("(unreachable)") {
        return Err(ProcessError::CwdOutside {
            cwd: now.display().to_string(),
        });
    }
    Ok(())
}

/// The spec's environment, plus HOME from the container's /etc/passwd (or "/") when unset,
/// as runc does.
fn environment(process: &Process) -> Vec<String> {
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let uid = process.user().uid();
        let home = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|passwd| {
                passwd.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 5 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
                })
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn executable(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).map_err(Into::into)
}

/// Resolves args[0] against the container's PATH, inside the container, as the container's
/// user: a missing executable fails the create, not the start.
fn find_executable(name: &str, env: &[String]) -> Result<PathBuf, ProcessError> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p)
            .map(|_| p)
            .map_err(|source| ProcessError::Executable {
                name: name.to_string(),
                source,
            });
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| executable(p).is_ok())
        .ok_or_else(|| ProcessError::NotFound {
            name: name.to_string(),
        })
}

/// rlimits, no_new_privs, seccomp, capabilities and identity, cwd, environment and the
/// executable: everything about the process itself, after which only execve is left.
///
/// seccomp: without no_new_privs, loading a filter needs CAP_SYS_ADMIN, so it happens before
/// capabilities are dropped; with no_new_privs, as late as possible, so that fewer of our own
/// syscalls run under the container's filter (runc's order). A notification fd goes to the
/// runtime over `chan`, which passes it to the listener.
pub(super) fn prepare(
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
    chan: &Channel,
) -> crate::Result<Exec> {
    // Compiled before anything is restricted (it allocates and reads libseccomp's tables).
    let filter = seccomp
        .map(security::seccomp::Filter::compile)
        .transpose()?;
    let load = |f: &security::seccomp::Filter| -> crate::Result<()> {
        if let Some(fd) = f.load()? {
            chan.send_seccomp_fd(fd.as_fd())?;
        }
        Ok(())
    };
    if let Some(rl) = process.rlimits() {
        security::apply_rlimits(rl)?;
    }
    let nnp = process.no_new_privileges().unwrap_or(false);
    if nnp {
        security::set_no_new_privs()?;
    } else if let Some(f) = &filter {
        load(f)?;
    }
    let caps = match process.capabilities() {
        Some(c) => security::CapabilitySets::from_spec(c)?,
        None => security::CapabilitySets::default(),
    };
    security::drop_bounding(&caps)?;
    let user = process.user();
    security::set_identity(
        user.uid(),
        user.gid(),
        user.additional_gids().as_deref().unwrap_or(&[]),
    )?;
    security::apply_capabilities(&caps)?;
    enter_cwd(process.cwd())?;
    let env = environment(process);
    let args = process.args().clone().unwrap_or_default();
    let path = find_executable(args.first().map(String::as_str).unwrap_or(""), &env)?;
    apply_lsm_labels(process)?;
    if let (Some(f), true) = (&filter, nnp) {
        load(f)?;
    }
    let to_c = |s: &str| CString::new(s.as_bytes()).unwrap_or_default();
    Ok(Exec {
        path: CString::new(path.as_os_str().as_bytes()).unwrap_or_default(),
        args: args.iter().map(|a| to_c(a)).collect(),
        env: env.iter().map(|e| to_c(e)).collect(),
        umask: user.umask().unwrap_or(0o022),
    })
}

/// AppArmor profile and SELinux label, for the execve that follows.
fn apply_lsm_labels(process: &Process) -> crate::Result<()> {
    use security::lsm::{set_exec_label, Lsm};
    let labels = [
        (Lsm::AppArmor, process.apparmor_profile().as_deref()),
        (Lsm::SeLinux, process.selinux_label().as_deref()),
    ];
    if labels.iter().all(|(_, l)| l.is_none_or(str::is_empty)) {
        return Ok(());
    }
    let proc_dir = crate::rootfs::verified_proc().map_err(ProcessError::Proc)?;
    // "self" is a symlink, which the verified open refuses: name our pid in this procfs.
    let pid = nix::unistd::getpid();
    for (lsm, label) in labels {
        if let Some(l) = label.filter(|l| !l.is_empty()) {
            let dir = proc_dir.as_fd();
            set_exec_label(dir, lsm, l, pid.as_raw())?;
        }
    }
    Ok(())
}

/// Sets the umask, marks every descriptor past stdio and the preserved ones close-on-exec
/// (nothing else may reach the container, CVE-2024-21626), and executes. Returns only on error.
pub(super) fn exec(
    exec: &Exec,
    preserve_fds: i32,
) -> Result<std::convert::Infallible, crate::Error> {
    nix::sys::stat::umask(Mode::from_bits_truncate(exec.umask));
    // SAFETY: close_range marks a range of our own descriptors close-on-exec.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 + preserve_fds as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let Err(err) = nix::unistd::execve(&exec.path, &exec.args, &exec.env);
    Err(ProcessError::Executable {
        name: exec.path.to_string_lossy().into_owned(),
        source: err.into(),
    }
    .into())
}
