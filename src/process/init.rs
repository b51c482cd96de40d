//! The container's init: everything from the clone to execve, in the order of the design:
//! mounts -> hooks -> pivot_root -> hostname -> sysctls/readonly/masked -> no_new_privs ->
//! user/caps -> cwd -> READY -> handed over -> exec.fifo -> startContainer hooks -> close fds -> execve.

use super::channel::Channel;
use super::{clone, common, InitConfig, ProcessError};
use crate::cgroups::SelfJoin;
use crate::rootfs::{self, RootfsContext};
use crate::{hooks, namespaces, security};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::LinuxNamespaceType;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What is left to do once init is Ready.
struct Ready {
    exec: common::Exec,
    /// /proc/self/fd of the host's procfs, opened before pivot_root, to reopen exec.fifo.
    proc_fd_dir: OwnedFd,
    state: String,
    /// The process's environment (HOME included), for startContainer hooks without an
    /// env of their own: runc's init has it as its own by then.
    env: Vec<String>,
}

/// Init's entry point; never returns.
pub(super) fn run(cfg: &InitConfig, join: Option<&SelfJoin>, chan: &Channel) -> ! {
    match setup(cfg, join, chan) {
        Ok(ready) => {
            // The runtime has gone by now; a failure from here on goes to the container's
            // stderr, which is where `capsa start`'s caller reads it (as with runc).
            if let Err(e) = start(cfg, ready) {
                eprintln!("capsa: {}", common::chain(&e));
            }
            clone::exit_child(127)
        }
        Err(e) => {
            chan.error(&e);
            clone::exit_child(1)
        }
    }
}

fn setup(cfg: &InitConfig, join: Option<&SelfJoin>, chan: &Channel) -> crate::Result<Ready> {
    // Until `create` hands us over, we die with it: a create killed half way must not leave
    // an init blocked on exec.fifo forever with nobody to start or delete it.
    common::die_with_parent(true);
    // Named as `state` expects a waiting init to be (whatever the binary's file was called).
    common::set_name(super::INIT_COMM);
    // Into the container's cgroup before anything is charged; the handles close below.
    join.map(SelfJoin::enter).transpose()?;
    common::reset_signals();
    // The runtime's descriptors are ours alone from the clone on (no CLONE_FILES): marking
    // them here leaves the caller's as they were.
    common::cloexec_inherited(cfg.preserve_fds)?;
    cfg.stdio.as_ref().map(common::install_stdio).transpose()?;
    let mut keep = vec![chan.raw_fd(), cfg.fifo.as_raw_fd()];
    keep.extend(cfg.console_socket.map(|s| s.as_raw_fd()));
    keep.extend(cfg.mount_sources.raw_fds());
    common::close_inherited(3 + cfg.preserve_fds, &super::with_log_fd(keep));
    let state = chan.wait_for_proceed()?;
    // Until execve, nothing in the container may open our /proc entries (CVE-2019-5736).
    // Not before Proceed: a rootless runtime writes our uid_map, which a non-dumpable
    // process's /proc hides from it; until then we are alone in our namespaces.
    security::sealed::set_non_dumpable()?;
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
        common::die_with_parent(true);
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
    let cgroup_source = cfg.cgroup.mount_source();
    let ctx = RootfsContext {
        spec: cfg.spec,
        rootfs: cfg.rootfs,
        bundle: cfg.bundle,
        cgroup: &cgroup_source,
        new_user_ns: cfg.plan.new_user(),
        new_cgroup_ns: cfg.plan.unshare_cgroup,
        sources: cfg.mount_sources,
    };
    // Without a mount namespace of its own, the container is in the runtime's: no mount is
    // made (the spec's validation refused any it would need).
    let own_mount_ns = cfg.plan.has_mount_ns();
    if own_mount_ns {
        drop(rootfs::prepare(&ctx)?);
    }
    if own_mount_ns && log::log_enabled!(log::Level::Debug) {
        for m in cfg.spec.mounts().iter().flatten() {
            log::debug!(
                "init: mounted {} on {} ({})",
                m.source()
                    .as_ref()
                    .map_or("none".into(), |s| s.display().to_string()),
                m.destination().display(),
                m.typ().as_deref().unwrap_or("bind")
            );
        }
        log::debug!("init: rootfs {} prepared", cfg.rootfs.display());
    }
    chan.request_create_runtime_hooks()?;
    chan.wait_for_hooks_done()?;
    let hooks = cfg.spec.hooks().as_ref();
    hooks::run_all(
        "createContainer",
        hooks.and_then(|h| h.create_container().as_ref()),
        &state,
        hooks::Context {
            cwd: Some(cfg.rootfs),
            env: process.env().as_deref(),
        },
    )?;
    let proc_fd_dir = std::fs::File::open("/proc/self/fd")
        .map(OwnedFd::from)
        .map_err(ProcessError::Fifo)?;
    if own_mount_ns {
        rootfs::enter(cfg.rootfs, cfg.no_pivot)?;
        log::debug!(
            "init: {} into the rootfs",
            if cfg.no_pivot { "chroot" } else { "pivot_root" }
        );
    } else {
        rootfs::chroot_only(cfg.rootfs)?;
        log::debug!("init: chroot into the rootfs (no mount namespace of its own)");
    }
    if let Some(socket) = cfg.console_socket {
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        crate::console::setup(socket, size, true, false)?;
    }
    namespaces::set_uts(
        cfg.spec.hostname().as_deref(),
        cfg.spec.domainname().as_deref(),
    )?;
    rootfs::finalize(cfg.spec)?;
    let seccomp = cfg.spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let exec = common::prepare(&process, seccomp, chan)?;
    log::debug!("init: ready, waiting for start on exec.fifo");
    // Again: changing credentials (in prepare) cleared it.
    common::die_with_parent(true);
    chan.ready()?;
    chan.wait_for_hand_over(|| common::die_with_parent(false))?;
    Ok(Ready {
        proc_fd_dir,
        state,
        env: exec
            .env
            .iter()
            .map(|e| e.to_string_lossy().into_owned())
            .collect(),
        exec,
    })
}

/// After Ready: wait for `capsa start` on exec.fifo, run startContainer hooks, execve.
fn start(cfg: &InitConfig, ready: Ready) -> crate::Result<()> {
    let name = cfg.fifo.as_raw_fd().to_string();
    // Blocks until `capsa start` opens the fifo for reading.
    let fd = openat(
        Some(ready.proc_fd_dir.as_raw_fd()),
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
    drop(ready.proc_fd_dir);
    let hooks = cfg.spec.hooks().as_ref();
    // In the process's cwd, entered by now.
    hooks::run_all(
        "startContainer",
        hooks.and_then(|h| h.start_container().as_ref()),
        &ready.state,
        hooks::Context {
            cwd: None,
            env: Some(&ready.env),
        },
    )?;
    log::debug!("init: executing {}", ready.exec.path.to_string_lossy());
    let Err(e) = common::exec(&ready.exec, cfg.preserve_fds);
    drop(fifo);
    Err(e)
}
