//! The clone chain that makes a container's init, the channel it talks over, and init itself.
//!
//! No re-exec of capsa: init is a clone of the runtime, so it inherits the parsed spec and
//! needs nothing serialised but a few messages (see [`channel`] for the sequence).

pub mod channel;
mod common;
mod exec;
mod init;
pub(crate) mod isolate;
mod seccomp_listener;

pub(crate) use crate::sys::clone::exit_cause;
pub use crate::sys::clone::{describe_status, exit_code, ChildGuard};
pub(crate) use common::reset_signals;
pub use exec::{spawn_exec, ExecConfig};

/// The descriptor the runtime's log goes to (a `--log` file), or -1.
static LOG_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Names the descriptor the caller's logger writes to (close-on-exec): init and exec'd
/// processes keep it until execve, so what they log (at `--debug`) reaches the log file as
/// runc's init's lines do, instead of being lost with the descriptors they close.
pub fn set_log_fd(fd: Option<BorrowedFd>) {
    use std::os::fd::AsRawFd;
    let raw = fd.map_or(-1, |f| f.as_raw_fd());
    LOG_FD.store(raw, std::sync::atomic::Ordering::Relaxed);
}

/// The descriptors a clone keeps past its cleanup: `keep` and the log's.
pub(crate) fn with_log_fd(mut keep: Vec<i32>) -> Vec<i32> {
    let fd = LOG_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        keep.push(fd);
    }
    keep
}

use crate::cgroups;
use crate::namespaces::{self, NamespacePlan};
use crate::sys::clone::{self as clone, Forked};
use channel::{Channel, Message};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// A failure making or running the container's process, or in the init's setup.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// clone3 failed.
    #[error("creating the container process")]
    Clone(#[source] std::io::Error),
    /// The sync channel between runtime and init failed.
    #[error("container sync channel")]
    Channel(#[source] std::io::Error),
    /// A sync message did not encode.
    #[error("encoding a sync message")]
    Encode(#[source] serde_json::Error),
    /// A sync message did not decode.
    #[error("decoding a sync message")]
    Decode(#[source] serde_json::Error),
    /// Init did not send what the runtime waited for within the setup bound (it is killed).
    #[error(
        "container init did not send {expected} within {seconds}s: its setup is stuck (killed)"
    )]
    Stalled {
        /// The message waited for.
        expected: &'static str,
        /// The bound, in seconds.
        seconds: u64,
    },
    /// Init exited before sending what the runtime waited for.
    #[error("container init exited before sending {expected}")]
    PeerExited {
        /// The message waited for.
        expected: &'static str,
    },
    /// Init exited before sending what the runtime waited for; its status is known.
    #[error("container init exited before sending {expected} ({status})")]
    InitExited {
        /// The message waited for.
        expected: &'static str,
        /// Init's exit status.
        status: String,
    },
    /// Init sent another message than the one expected.
    #[error("expected {expected} from container init, got {got}")]
    Unexpected {
        /// The message waited for.
        expected: &'static str,
        /// The message that came.
        got: &'static str,
    },
    /// Init's setup failed: the error it sent, whole.
    #[error("unable to start container process")]
    Init(#[source] RemoteError),
    /// Writing a /proc file (uid_map, oom_score_adj, ...) failed.
    #[error("writing {value} to {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// `process.args[0]` is not found in $PATH.
    #[error("exec: {name:?}: executable file not found in $PATH")]
    NotFound {
        /// The name.
        name: String,
    },
    /// `process.args[0]` cannot be executed.
    #[error("exec: {name:?}")]
    Executable {
        /// The path executed.
        name: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// process.cwd cannot be entered.
    #[error("chdir to cwd ({}) set in config.json", cwd.display())]
    Cwd {
        /// The working directory.
        cwd: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Reading the container's /etc/passwd for HOME failed.
    #[error("reading the container's /etc/passwd for the HOME of uid {uid}")]
    Passwd {
        /// The uid.
        uid: u32,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The working directory is outside the container root.
    #[error("current working directory is outside of the container root ({cwd})")]
    CwdOutside {
        /// The working directory.
        cwd: String,
    },
    /// Opening the exec fifo failed.
    #[error("opening exec fifo")]
    Fifo(#[source] std::io::Error),
    /// Setting up signal handling failed.
    #[error("signals")]
    Signals(#[source] std::io::Error),
    /// Opening the container's /proc failed.
    #[error("opening the container's /proc")]
    Proc(#[source] crate::sys::procfs::ProcfsError),
    /// A string for execve holds a NUL byte.
    #[error("{field} holds a NUL byte, which cannot be passed to execve: {value:?}")]
    Nul {
        /// The field.
        field: String,
        /// The string.
        value: String,
    },
    /// Marking descriptors close-on-exec failed.
    #[error("marking descriptors close-on-exec before execve")]
    Cloexec(#[source] std::io::Error),
    /// Handing a stdio descriptor to the process's user failed.
    #[error("giving stdio descriptor {fd} to the process's uid {uid}")]
    StdioOwner {
        /// The descriptor (0, 1 or 2).
        fd: i32,
        /// The process's uid.
        uid: u32,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Making the given descriptors 0, 1 and 2 failed.
    #[error("making the descriptors given as stdio the process's 0, 1 and 2")]
    Stdio(#[source] std::io::Error),
    /// Making the single-threaded child failed.
    #[error("running the clone chain in a single-threaded child")]
    Isolate(#[source] std::io::Error),
    /// The single-threaded child died without a result.
    #[error("the single-threaded child died without a result ({status})")]
    IsolatedChild {
        /// How it died.
        status: String,
    },
    /// Passing the seccomp notification fd failed.
    #[error("passing the seccomp notification fd to {}", path.display())]
    SeccompListener {
        /// The listener socket.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}

/// An error that happened in another process, carried across whole: every level of its
/// cause chain and the errno at the bottom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteError {
    /// This level of the chain, as text.
    pub message: String,
    /// The errno, if this level was a syscall.
    pub errno: Option<i32>,
    /// The next level.
    pub cause: Option<Box<RemoteError>>,
}

impl RemoteError {
    /// Copies an error's whole chain and errno.
    pub fn from_error(err: &(dyn std::error::Error + 'static)) -> Self {
        // One that already crossed a process boundary is passed on whole, errno included.
        if let Some(remote) = err.downcast_ref::<RemoteError>() {
            return remote.clone();
        }
        let errno = err
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.raw_os_error());
        RemoteError {
            message: err.to_string(),
            errno,
            cause: err.source().map(|s| Box::new(RemoteError::from_error(s))),
        }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as _)
    }
}

/// Everything init needs; it reaches init by the clone, not by serialisation.
pub struct InitConfig<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub plan: &'a NamespacePlan,
    pub cgroup: &'a cgroups::Manager,
    /// O_PATH handle of `<state dir>/exec.fifo`.
    pub fifo: BorrowedFd<'a>,
    pub no_pivot: bool,
    /// Connected `--console-socket`, when process.terminal is true.
    pub console_socket: Option<BorrowedFd<'a>>,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
    /// Descriptors to become init's 0, 1 and 2 instead of the runtime's own.
    pub stdio: Option<[BorrowedFd<'a>; 3]>,
    /// Bind sources opened by the runtime for init to attach.
    pub mount_sources: &'a crate::rootfs::MountSources,
    /// How long init may take for each step of its setup, hooks' own timeouts aside.
    pub setup_timeout: std::time::Duration,
}

/// The command name container init carries until it executes the container process.
pub(crate) const INIT_COMM: &str = "capsa";

/// How long init may take for each step of its setup by default: far above what any setup
/// needs (milliseconds), so that only a stuck one (a hung FUSE mount, a stopped init) hits it.
pub const DEFAULT_SETUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The bound on init's steps from HooksDone to Ready, which run the createContainer hooks:
/// the setup bound plus each hook's own timeout; none when a hook has no timeout (the spec
/// lets it run as long as it takes).
fn bound_with_container_hooks(cfg: &InitConfig) -> Option<std::time::Duration> {
    let hooks = cfg
        .spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().clone())
        .unwrap_or_default();
    hooks.iter().try_fold(cfg.setup_timeout, |total, h| {
        h.timeout()
            .map(|t| total + std::time::Duration::from_secs(t.max(0) as u64))
    })
}

/// What the runtime does while init sets up.
pub trait SpawnHooks {
    /// The OCI state JSON for init's pid, handed to hooks.
    fn state_json(&mut self, pid: Pid) -> String;
    /// prestart + createRuntime hooks, in the runtime's namespaces.
    fn create_runtime(&mut self, state: &str) -> crate::Result<()>;
    /// Init exists (its pid is known) and has done nothing yet: record it.
    fn spawned(&mut self, pid: Pid) -> crate::Result<()>;
    /// Init is Ready; once this returns, init is handed over and outlives the runtime.
    fn ready(&mut self, pid: Pid) -> crate::Result<()>;
}

/// Clones with `flags` into `cgroup`. On v2 the child is born there (CLONE_INTO_CGROUP); on v1
/// it moves itself in with `join` ([`cgroups::SelfJoin`]) before anything else, which is the
/// caller's child side to do. Returns whether the runtime is spared writing the child's pid to
/// cgroup.procs afterwards (it is not on a v2 kernel without CLONE_INTO_CGROUP).
pub(crate) fn clone_in_cgroup(
    flags: nix::sched::CloneFlags,
    parent: bool,
    cgroup: &cgroups::Manager,
    join: Option<&cgroups::SelfJoin>,
) -> crate::Result<(Forked, bool)> {
    if let cgroups::Manager::V2(m) = cgroup {
        if let Ok(dir) = std::fs::File::open(m.dir()) {
            if let Ok(forked) = clone::clone_into(flags, parent, Some(dir.as_fd())) {
                return Ok((forked, true));
            }
        }
    }
    // A hybrid host: born in the unified cgroup, the child joins the v1 ones itself. Where
    // CLONE_INTO_CGROUP fails, the runtime places it in all of them.
    if let Some(unified) = join.and_then(cgroups::SelfJoin::unified) {
        if let Ok(forked) = clone::clone_into(flags, parent, Some(unified)) {
            return Ok((forked, true));
        }
        let forked = clone::clone_process(flags, parent).map_err(ProcessError::Clone)?;
        return Ok((forked, false));
    }
    let forked = clone::clone_process(flags, parent).map_err(ProcessError::Clone)?;
    Ok((forked, join.is_some()))
}

fn clone_init(
    cfg: &InitConfig,
    join: Option<&cgroups::SelfJoin>,
    parent: bool,
) -> crate::Result<(Forked, bool)> {
    clone_in_cgroup(cfg.plan.clone_flags, parent, cfg.cgroup, join)
}

/// The stage: joins existing namespaces (user first), prepares a time namespace, then clones
/// init as a sibling (CLONE_PARENT) so init is the runtime's own child, and exits.
fn stage(cfg: &InitConfig, join: Option<&cgroups::SelfJoin>, chan: &Channel) -> ! {
    let result = (|| -> crate::Result<(Forked, bool)> {
        // Before the container's mount namespace can hide /proc from the fallback of
        // close_range; in our own copy of the descriptor table, which init inherits.
        common::cloexec_inherited(cfg.preserve_fds)?;
        // Non-dumpable before joining anything (CVE-2019-5736); init inherits it.
        crate::security::sealed::set_non_dumpable()?;
        namespaces::join_all(&cfg.plan.joins)?;
        if cfg.plan.new_time {
            let offsets = cfg
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.time_offsets().as_ref());
            namespaces::prepare_time_namespace(offsets)?;
        }
        clone_init(cfg, join, true)
    })();
    finish_stage(result, chan, || init::run(cfg, join, chan))
}

/// The end of a stage process: the cloned child goes on with `child`; the stage reports the
/// child's pid (or its own failure) to the runtime and exits.
pub(crate) fn finish_stage(
    result: crate::Result<(Forked, bool)>,
    chan: &Channel,
    child: impl FnOnce() -> std::convert::Infallible,
) -> ! {
    match result {
        Ok((Forked::Child, _)) => match child() {},
        Ok((Forked::Parent(pid), placed)) => {
            let sent = chan.send(&Message::InitPid {
                pid: pid.as_raw(),
                placed,
            });
            clone::exit_child(if sent.is_ok() { 0 } else { 1 })
        }
        Err(e) => {
            chan.error(&e);
            clone::exit_child(1)
        }
    }
}

/// Clones init (through a stage when namespaces are joined), sets it up from the outside
/// (id maps, oom_score_adj, cgroup), drives the channel until init is Ready, and hands it
/// over: until then init dies with the runtime (its parent-death signal), so a runtime
/// killed half way leaves no init behind. The returned guard owns init: dropping it kills it.
pub fn spawn(cfg: &InitConfig, hooks: &mut dyn SpawnHooks) -> crate::Result<ChildGuard> {
    let (rt, child) = channel::pair()?;
    let join = cfg.cgroup.self_join()?;
    let (init, placed) = if cfg.plan.needs_stage() {
        match clone::clone_process(nix::sched::CloneFlags::empty(), false)
            .map_err(ProcessError::Clone)?
        {
            Forked::Child => {
                drop(rt);
                stage(cfg, join.as_ref(), &child)
            }
            Forked::Parent(stage_pid) => {
                let stage_guard = ChildGuard::new(stage_pid);
                rt.set_bound(Some(cfg.setup_timeout));
                let received = rt.recv_init_pid();
                let _ = stage_guard.wait();
                let (pid, in_cgroup) = received?;
                (ChildGuard::new(Pid::from_raw(pid)), in_cgroup)
            }
        }
    } else {
        match clone_init(cfg, join.as_ref(), false)? {
            (Forked::Child, _) => {
                drop(rt);
                init::run(cfg, join.as_ref(), &child)
            }
            (Forked::Parent(pid), in_cgroup) => (ChildGuard::new(pid), in_cgroup),
        }
    };
    drop(child);
    drop(join);
    let driven = hooks
        .spawned(init.pid())
        .and_then(|()| drive(cfg, &rt, &init, placed, hooks))
        .and_then(|()| hooks.ready(init.pid()))
        .and_then(|()| {
            rt.set_bound(Some(cfg.setup_timeout));
            Ok(rt.hand_over()?)
        });
    match driven {
        Ok(()) => Ok(init),
        Err(crate::Error::Process(ProcessError::PeerExited { expected })) => {
            let status = init.wait().map(|s| describe_status(&s)).unwrap_or_default();
            Err(ProcessError::InitExited { expected, status }.into())
        }
        Err(e) => Err(e),
    }
}

fn drive(
    cfg: &InitConfig,
    rt: &Channel,
    init: &ChildGuard,
    placed: bool,
    hooks: &mut dyn SpawnHooks,
) -> crate::Result<()> {
    let pid = init.pid();
    let linux = cfg.spec.linux().as_ref();
    if cfg.plan.new_user() {
        let none = Vec::new();
        namespaces::write_id_maps(
            pid,
            linux
                .and_then(|l| l.uid_mappings().as_ref())
                .unwrap_or(&none),
            linux
                .and_then(|l| l.gid_mappings().as_ref())
                .unwrap_or(&none),
        )?;
    }
    if let Some(adj) = cfg.spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        let path = PathBuf::from(format!("/proc/{pid}/oom_score_adj"));
        std::fs::write(&path, adj.to_string()).map_err(|source| ProcessError::Write {
            path,
            value: adj.to_string(),
            source,
        })?;
    }
    if !placed {
        cfg.cgroup.add(pid)?;
    }
    let state = hooks.state_json(pid);
    rt.proceed(state.clone())?;
    // Every wait on init is bounded: a setup stuck (a frozen or stopped init, a hung mount)
    // fails the create, and the guard kills init, instead of hanging it for ever.
    rt.set_bound(Some(cfg.setup_timeout));
    loop {
        match rt.expect("Ready")? {
            Message::RunCreateRuntimeHooks => {
                rt.set_bound(None);
                hooks.create_runtime(&state)?;
                rt.hooks_done()?;
                rt.set_bound(bound_with_container_hooks(cfg));
            }
            Message::Ready => return Ok(()),
            Message::SeccompFd => {
                let seccomp = linux.and_then(|l| l.seccomp().as_ref());
                seccomp_listener::forward(rt, seccomp, pid, &state)?;
                rt.set_bound(Some(cfg.setup_timeout));
            }
            other => {
                return Err(ProcessError::Unexpected {
                    expected: "Ready",
                    got: other.name(),
                }
                .into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_from_another_process_keeps_its_errno_when_passed_on() {
        let from_child = RemoteError {
            message: "exec: \"/x\"".into(),
            errno: None,
            cause: Some(Box::new(RemoteError {
                message: "No such file or directory".into(),
                errno: Some(libc::ENOENT),
                cause: None,
            })),
        };
        let err = crate::Error::from(ProcessError::Init(from_child));
        let passed_on = crate::Error::Remote(crate::error::Remote {
            kind: crate::ErrorKind::Other,
            error: RemoteError::from_error(&err),
        });
        assert_eq!(passed_on.errno(), Some(libc::ENOENT));
        assert_eq!(passed_on.to_string(), "unable to start container process");
    }
}
