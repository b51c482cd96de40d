//! `exec`: a new process inside a running container.
//!
//! ```text
//!  runtime                      stage                                   exec process
//!  fork ---------------------->  setns into each of init's namespaces
//!                                (user first, mount last)
//!                                clone(CLONE_PARENT [, INTO_CGROUP]) --> (born in the pid ns)
//!                                                                       v1: joins its cgroup
//!  <--------------------------- InitPid{pid, placed}; exit
//!  join cgroup unless placed
//!  Proceed ---------------------------------------------------------->  console, rlimits,
//!                                                                       no_new_privs, user,
//!                                                                       caps, cwd, PATH lookup
//!  <----------------------------------------------------------------  Ready -> execve
//! ```

use super::channel::{self, Channel, Message};
use super::{common, ProcessError};
use crate::cgroups::{self, SelfJoin};
use crate::sys::clone::{self, ChildGuard, Forked};
use crate::{namespaces, security};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;

/// What an exec needs besides the process itself.
pub struct ExecConfig<'a> {
    /// The container's init, whose namespaces are joined.
    pub init: Pid,
    pub process: &'a Process,
    pub cgroup: &'a cgroups::Manager,
    pub console_socket: Option<BorrowedFd<'a>>,
    /// The console socket is the runtime's own (it relays the pty to its caller, as
    /// runc's foreground exec): the pty passes newlines unchanged.
    pub own_console: bool,
    pub preserve_fds: i32,
    /// Descriptors to become the process's 0, 1 and 2 instead of the runtime's own.
    pub stdio: Option<[BorrowedFd<'a>; 3]>,
    /// The container's seccomp profile, which the process gets too.
    pub seccomp: Option<&'a oci_spec::runtime::LinuxSeccomp>,
    /// The container's state JSON, for a seccomp listener.
    pub state_json: String,
}

const KINDS: &[(LinuxNamespaceType, &str)] = &[
    (LinuxNamespaceType::User, "user"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Pid, "pid"),
    (LinuxNamespaceType::Cgroup, "cgroup"),
    (LinuxNamespaceType::Time, "time"),
    (LinuxNamespaceType::Mount, "mnt"),
];

/// The namespaces of `init` that differ from ours, as paths to join (user first, mount last).
fn namespaces_of(init: Pid) -> Vec<(LinuxNamespaceType, PathBuf)> {
    KINDS
        .iter()
        .filter_map(|(t, name)| {
            let theirs = PathBuf::from(format!("/proc/{init}/ns/{name}"));
            let same = std::fs::read_link(&theirs).ok()?
                == std::fs::read_link(format!("/proc/self/ns/{name}")).ok()?;
            (!same).then_some((*t, theirs))
        })
        .collect()
}

fn stage(
    cfg: &ExecConfig,
    joins: &[(LinuxNamespaceType, PathBuf)],
    join: Option<&SelfJoin>,
    chan: &Channel,
) -> ! {
    let result = (|| -> crate::Result<(Forked, bool)> {
        // Before the container's mount namespace is joined: see `process::stage`.
        common::cloexec_inherited(cfg.preserve_fds)?;
        // Non-dumpable before joining the container (CVE-2019-5736); the process inherits it.
        security::sealed::set_non_dumpable()?;
        // A container without a mount namespace of its own shares ours, chrooted: joining
        // gives no root then, so the process takes init's (opened before any join).
        let init_root = if joins.iter().any(|(t, _)| *t == LinuxNamespaceType::Mount) {
            None
        } else {
            Some(crate::rootfs::open_root_of(cfg.init)?)
        };
        namespaces::join_all(joins)?;
        if let Some(root) = init_root {
            crate::rootfs::chroot_into(root.as_fd())?;
        }
        super::clone_in_cgroup(nix::sched::CloneFlags::empty(), true, cfg.cgroup, join)
    })();
    let joined_user = joins.iter().any(|(t, _)| *t == LinuxNamespaceType::User);
    super::finish_stage(result, chan, || run(cfg, join, chan, joined_user))
}

fn run(cfg: &ExecConfig, join: Option<&SelfJoin>, chan: &Channel, joined_user: bool) -> ! {
    match setup(cfg, join, chan, joined_user) {
        Ok(exec) => {
            let Err(e) = common::exec(&exec, cfg.preserve_fds);
            eprintln!("capsa: {}", common::chain(&e));
            clone::exit_child(127)
        }
        Err(e) => {
            chan.error(&e);
            clone::exit_child(1)
        }
    }
}

fn setup(
    cfg: &ExecConfig,
    join: Option<&SelfJoin>,
    chan: &Channel,
    joined_user: bool,
) -> crate::Result<common::Exec> {
    join.map(SelfJoin::enter).transpose()?;
    common::reset_signals();
    cfg.stdio.as_ref().map(common::install_stdio).transpose()?;
    let mut keep = vec![chan.raw_fd()];
    keep.extend(cfg.console_socket.map(|s| s.as_raw_fd()));
    common::close_inherited(3 + cfg.preserve_fds, &super::with_log_fd(keep));
    chan.wait_for_proceed()?;
    if joined_user {
        security::set_identity(0, 0, &[])?;
    }
    let _ = nix::unistd::setsid();
    if let Some(socket) = cfg.console_socket {
        let size = cfg
            .process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        // An exec gets its own pty but leaves the container's /dev/console alone (as runc).
        crate::console::setup(socket, size, false, cfg.own_console)?;
    }
    let exec = common::prepare(cfg.process, cfg.seccomp, chan)?;
    chan.ready()?;
    Ok(exec)
}

/// Starts `cfg.process` inside the container of `cfg.init`. The returned guard owns the new
/// process (our child): dropping it kills it.
pub fn spawn_exec(cfg: &ExecConfig) -> crate::Result<ChildGuard> {
    let joins = namespaces_of(cfg.init);
    let (rt, child) = channel::pair()?;
    let join = cfg.cgroup.self_join()?;
    let stage_pid = match clone::clone_process(nix::sched::CloneFlags::empty(), false)
        .map_err(ProcessError::Clone)?
    {
        Forked::Child => {
            drop(rt);
            stage(cfg, &joins, join.as_ref(), &child)
        }
        Forked::Parent(pid) => pid,
    };
    drop(child);
    drop(join);
    let stage_guard = ChildGuard::new(stage_pid);
    let received = rt.recv_init_pid();
    let _ = stage_guard.wait();
    let (pid, placed) = received?;
    let guard = ChildGuard::new(Pid::from_raw(pid));
    if !placed {
        cfg.cgroup.add(guard.pid())?;
    }
    rt.proceed(String::new())?;
    let mut reply = rt.expect("Ready");
    if let Ok(Message::SeccompFd) = reply {
        super::seccomp_listener::forward(&rt, cfg.seccomp, guard.pid(), &cfg.state_json)?;
        reply = rt.expect("Ready");
    }
    match reply {
        // The process's end of the channel is close-on-exec: end-of-file means it has been
        // executed (or failed trying, and said so on its stderr).
        Ok(Message::Ready) => match rt.recv()? {
            None => Ok(guard),
            Some(other) => Err(ProcessError::Unexpected {
                expected: "end of file",
                got: other.name(),
            }
            .into()),
        },
        Ok(other) => Err(ProcessError::Unexpected {
            expected: "Ready",
            got: other.name(),
        }
        .into()),
        Err(ProcessError::PeerExited { expected }) => {
            let status = guard
                .wait()
                .map(|s| super::describe_status(&s))
                .unwrap_or_default();
            Err(ProcessError::InitExited { expected, status }.into())
        }
        Err(e) => Err(e.into()),
    }
}
