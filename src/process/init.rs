//! The container's init: everything from the clone to execve, in the order of the design:
//! mounts -> hooks -> pivot_root -> hostname -> sysctls/readonly/masked -> no_new_privs ->
//! user/caps -> cwd -> READY -> exec.fifo -> startContainer hooks -> close fds -> execve.

use super::channel::Channel;
use super::{clone, InitConfig, ProcessError};
use crate::rootfs::{self, RootfsContext};
use crate::{hooks, namespaces, security};
use nix::fcntl::{openat, OFlag};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespaceType, Process};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What is left to do once init is Ready.
struct Exec {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    /// /proc/self/fd of the host's procfs, opened before pivot_root, to reopen exec.fifo.
    proc_fd_dir: OwnedFd,
    state: String,
    umask: u32,
}

/// Init's entry point; never returns.
pub(super) fn run(cfg: &InitConfig, chan: &Channel) -> ! {
    match setup(cfg, chan) {
        Ok(exec) => {
            // The runtime has gone by now; a failure from here on goes to the container's
            // stderr, which is where `capsa start`'s caller reads it (as with runc).
            if let Err(e) = start(cfg, exec) {
                let mut msg = e.to_string();
                let mut cur = std::error::Error::source(&e);
                while let Some(c) = cur {
                    msg.push_str(": ");
                    msg.push_str(&c.to_string());
                    cur = c.source();
                }
                eprintln!("capsa: {msg}");
            }
            clone::exit_child(127)
        }
        Err(e) => {
            chan.error(&e);
            clone::exit_child(1)
        }
    }
}

/// Undoes what the runtime process had: blocked signals and ignored ones (Rust ignores
/// SIGPIPE), which would otherwise survive execve into the container.
fn reset_signals() {
    let _ = SigSet::empty().thread_set_mask();
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL runs no code of ours in signal context.
            let _ = unsafe { sigaction(sig, &default) };
        }
    }
}

/// Closes every descriptor the runtime had open (its state-dir lock among them) except
/// stdio, the preserved range, and those listed.
fn close_inherited(min: i32, keep: &[i32]) {
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

fn setup(cfg: &InitConfig, chan: &Channel) -> crate::Result<Exec> {
    reset_signals();
    let mut keep = vec![chan.raw_fd(), cfg.fifo.as_raw_fd()];
    keep.extend(cfg.console_socket.map(|s| s.as_raw_fd()));
    close_inherited(3 + cfg.preserve_fds, &keep);
    let state = chan.wait_for_proceed()?;
    if cfg.plan.new_user()
        || cfg
            .plan
            .joins
            .iter()
            .any(|(t, _)| *t == LinuxNamespaceType::User)
    {
        // Become the namespace's root now that the maps exist: until then our host uid is
        // unmapped there, and files we create would fail with EOVERFLOW.
        security::set_identity(0, 0, &[])?;
    }
    if cfg.plan.unshare_cgroup {
        namespaces::unshare_kind(LinuxNamespaceType::Cgroup)?;
    }
    let _ = nix::unistd::setsid();
    // Device nodes and mount points get exactly the modes asked for; the process's own
    // umask is set just before execve.
    nix::sys::stat::umask(Mode::empty());
    if !cfg.no_new_keyring {
        security::join_session_keyring(&format!("_ses.{}", cfg.id))?;
    }
    let process = cfg.spec.process().as_ref().cloned().unwrap_or_default();
    if let Some(rl) = process.rlimits() {
        security::apply_rlimits(rl)?;
    }
    let cgroup_source = cfg.cgroup.mount_source();
    let ctx = RootfsContext {
        spec: cfg.spec,
        rootfs: cfg.rootfs,
        bundle: cfg.bundle,
        cgroup: &cgroup_source,
        new_user_ns: cfg.plan.new_user(),
        new_cgroup_ns: cfg.plan.unshare_cgroup,
    };
    let root = rootfs::prepare(&ctx)?;
    drop(root);
    chan.request_create_runtime_hooks()?;
    chan.wait_for_hooks_done()?;
    let hooks = cfg.spec.hooks().as_ref();
    hooks::run_all(
        "createContainer",
        hooks.and_then(|h| h.create_container().as_ref()),
        &state,
    )?;
    let proc_fd_dir = std::fs::File::open("/proc/self/fd")
        .map(OwnedFd::from)
        .map_err(ProcessError::Fifo)?;
    rootfs::enter(cfg.rootfs, cfg.no_pivot)?;
    if let Some(socket) = cfg.console_socket {
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        crate::console::setup(socket, size)?;
    }
    namespaces::set_uts(
        cfg.spec.hostname().as_deref(),
        cfg.spec.domainname().as_deref(),
    )?;
    rootfs::finalize(cfg.spec)?;
    if process.no_new_privileges().unwrap_or(false) {
        security::set_no_new_privs()?;
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
    let env = environment(&process);
    let args = process.args().clone().unwrap_or_default();
    let path = find_executable(args.first().map(String::as_str).unwrap_or(""), &env)?;
    let to_c = |s: &str| CString::new(s.as_bytes()).unwrap_or_default();
    let exec = Exec {
        path: CString::new(path.as_os_str().as_bytes()).unwrap_or_default(),
        args: args.iter().map(|a| to_c(a)).collect(),
        env: env.iter().map(|e| to_c(e)).collect(),
        proc_fd_dir,
        state,
        umask: user.umask().unwrap_or(0o022),
    };
    chan.ready()?;
    Ok(exec)
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

/// After Ready: wait for `capsa start` on exec.fifo, run startContainer hooks, execve.
fn start(cfg: &InitConfig, exec: Exec) -> crate::Result<()> {
    let name = cfg.fifo.as_raw_fd().to_string();
    // Blocks until `capsa start` opens the fifo for reading.
    let fd = openat(
        Some(exec.proc_fd_dir.as_raw_fd()),
        name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ProcessError::Fifo(e.into()))?;
    // SAFETY: openat returned a fresh descriptor that only we own.
    let fifo = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::Write::write_all(&mut &fifo, b"0").map_err(ProcessError::Fifo)?;
    // The fifo stays open (close-on-exec) until execve: its end-of-file tells `capsa start`
    // that the container process has been executed, so poststart hooks run after it.
    drop(exec.proc_fd_dir);
    let hooks = cfg.spec.hooks().as_ref();
    hooks::run_all(
        "startContainer",
        hooks.and_then(|h| h.start_container().as_ref()),
        &exec.state,
    )?;
    nix::sys::stat::umask(Mode::from_bits_truncate(exec.umask));
    // Nothing but stdio and the preserved fds may reach the container (CVE-2024-21626).
    // SAFETY: close_range marks a range of our own descriptors close-on-exec.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 + cfg.preserve_fds as u32,
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
