//! `create`: validate, make the state directory and cgroup, clone init, record the state.
//! Every resource is held by a guard until the end, so a failure at any step leaves nothing.

use super::claim;
use super::lock::DirLock;
use super::state::{self, HookState, Status, StoredState};
use super::{Container, ContainerError, Runtime};
use crate::cgroups::{self, Manager};
use crate::namespaces::NamespacePlan;
use crate::process::{self, InitConfig, SpawnHooks};
use crate::{hooks, spec};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of `create` beyond the bundle's config.json (runc's flags): built with
/// [`CreateOptions::new`] and the chainable setters of the same names as the fields.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CreateOptions {
    /// The bundle directory, holding config.json.
    pub bundle: PathBuf,
    /// Where to write the init's pid once it is created (`--pid-file`).
    pub pid_file: Option<PathBuf>,
    /// The unix socket that receives the pty master when `process.terminal` is true.
    pub console_socket: Option<PathBuf>,
    /// Enter the root with MS_MOVE and chroot instead of pivot_root (`--no-pivot`).
    pub no_pivot: bool,
    /// Keep the caller's session keyring instead of a new one per container.
    pub no_new_keyring: bool,
    /// How many descriptors above 2 the process inherits (`--preserve-fds`).
    pub preserve_fds: u32,
    /// Join this pod: its shared namespaces, a cgroup below its own.
    pub pod: Option<String>,
    /// The process's stdin, stdout and stderr, instead of the caller's own 0, 1 and 2.
    pub stdio: Option<StdioFds>,
    /// How long init may take for each step of its setup before the create fails and init
    /// is killed (hooks' own timeouts aside); `None` is 60 s.
    pub setup_timeout: Option<std::time::Duration>,
}

/// Three descriptors that become a container process's 0, 1 and 2 (a pipe end, a file,
/// /dev/null...). They are duplicated onto 0, 1 and 2 in the container process alone: the
/// caller's own stdio and these descriptors are left as they are (they close when the last
/// clone of this value is dropped). Clones share the descriptors.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StdioFds(Arc<[OwnedFd; 3]>);

impl StdioFds {
    /// The three descriptors, in the order 0, 1, 2.
    pub fn new(
        stdin: impl Into<OwnedFd>,
        stdout: impl Into<OwnedFd>,
        stderr: impl Into<OwnedFd>,
    ) -> Self {
        StdioFds(Arc::new([stdin.into(), stdout.into(), stderr.into()]))
    }

    pub(crate) fn borrow(&self) -> [BorrowedFd<'_>; 3] {
        let [i, o, e] = &*self.0;
        [i.as_fd(), o.as_fd(), e.as_fd()]
    }
}

/// The stdio handed to the process, checked against its terminal: a process with a terminal
/// has the pty as its stdio and cannot also have the given descriptors.
pub(super) fn stdio_for(
    terminal: bool,
    stdio: Option<&StdioFds>,
) -> crate::Result<Option<[BorrowedFd<'_>; 3]>> {
    match stdio {
        Some(_) if terminal => Err(ContainerError::StdioWithTerminal.into()),
        other => Ok(other.map(StdioFds::borrow)),
    }
}

impl CreateOptions {
    /// The options for the bundle at `bundle`, everything else as runc's defaults.
    pub fn new(bundle: impl Into<PathBuf>) -> Self {
        CreateOptions {
            bundle: bundle.into(),
            ..Default::default()
        }
    }

    setters! {
        /// Sets [`CreateOptions::pid_file`].
        pid_file: PathBuf => Some;
        /// Sets [`CreateOptions::console_socket`].
        console_socket: PathBuf => Some;
        /// Sets [`CreateOptions::no_pivot`].
        no_pivot: bool;
        /// Sets [`CreateOptions::no_new_keyring`].
        no_new_keyring: bool;
        /// Sets [`CreateOptions::pod`].
        pod: String => Some;
        /// Sets [`CreateOptions::stdio`].
        stdio: StdioFds => Some;
        /// Sets [`CreateOptions::setup_timeout`].
        setup_timeout: std::time::Duration => Some;
    }

    /// Sets [`CreateOptions::preserve_fds`] (a plain `u32`, so that a literal infers).
    pub fn preserve_fds(mut self, count: u32) -> Self {
        self.preserve_fds = count;
        self
    }
}

/// Removes the half-made state directory unless disarmed.
pub(crate) struct DirGuard(Option<PathBuf>);

impl DirGuard {
    pub(crate) fn new(dir: PathBuf) -> Self {
        DirGuard(Some(dir))
    }

    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Removes half-made cgroups, in order (children first), unless disarmed. The process guard
/// has killed its process by the time this runs: guards drop in reverse order of creation.
pub(crate) struct CgroupGuard(Vec<Manager>);

impl CgroupGuard {
    pub(crate) fn new(cgroups: Vec<Manager>) -> Self {
        CgroupGuard(cgroups)
    }

    pub(crate) fn disarm(&mut self) {
        self.0.clear();
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for m in self.0.drain(..) {
            let _ = m.remove();
        }
    }
}

struct CreateHooks<'a> {
    id: &'a str,
    bundle: &'a Path,
    annotations: &'a HashMap<String, String>,
    spec: &'a Spec,
    /// The state directory and its record, completed with init's pid once it is known.
    dir: &'a Path,
    record: &'a mut StoredState,
    pid_file: Option<&'a Path>,
}

impl SpawnHooks for CreateHooks<'_> {
    fn state_json(&mut self, pid: Pid) -> String {
        HookState {
            oci_version: crate::OCI_VERSION,
            id: self.id,
            status: Status::Creating,
            pid: pid.as_raw(),
            bundle: self.bundle,
            annotations: self.annotations,
        }
        .to_json()
    }

    fn spawned(&mut self, pid: Pid) -> crate::Result<()> {
        // Recorded before init does anything: a create killed from here on leaves a state
        // that `delete --force` finds init by (the cgroup may not hold it yet).
        self.record.pid = pid.as_raw();
        self.record.pid_start_time = state::live_start_time(pid.as_raw()).unwrap_or(0);
        self.record.save(self.dir)?;
        Ok(())
    }

    fn ready(&mut self, pid: Pid) -> crate::Result<()> {
        if let Some(p) = self.pid_file {
            write_pid_file(p, pid)?;
        }
        Ok(())
    }

    fn create_runtime(&mut self, state: &str) -> crate::Result<()> {
        let h = self.spec.hooks().as_ref();
        #[allow(deprecated)]
        let ctx = hooks::Context {
            cwd: Some(self.bundle),
            env: None,
        };
        hooks::run_all(
            "prestart",
            h.and_then(|h| h.prestart().as_ref()),
            state,
            ctx,
        )?;
        hooks::run_all(
            "createRuntime",
            h.and_then(|h| h.create_runtime().as_ref()),
            state,
            ctx,
        )?;
        Ok(())
    }
}

/// The connected console socket when the process wants a terminal; `terminal` and
/// `--console-socket` must agree (runc's rule, for create and exec alike).
pub(super) fn console_for(terminal: bool, socket: Option<&Path>) -> crate::Result<Option<OwnedFd>> {
    match (terminal, socket) {
        (true, None) => Err(ContainerError::TerminalWithoutSocket.into()),
        (false, Some(_)) => Err(ContainerError::SocketWithoutTerminal.into()),
        (true, Some(path)) => Ok(Some(crate::console::connect(path)?)),
        (false, None) => Ok(None),
    }
}

/// As [`console_for`], with the runtime's own console socket (`run` or `exec` in the
/// foreground, relaying the pty) standing in for a `--console-socket` not given.
pub(super) fn console_or_own(
    terminal: bool,
    socket: Option<&Path>,
    own: Option<OwnedFd>,
) -> crate::Result<Option<OwnedFd>> {
    match own {
        Some(fd) if terminal && socket.is_none() => Ok(Some(fd)),
        _ => console_for(terminal, socket),
    }
}

/// A requested AppArmor profile or SELinux label needs its LSM: refused before anything is
/// made, rather than running the process unconfined.
pub(super) fn check_lsm(process: Option<&oci_spec::runtime::Process>) -> crate::Result<()> {
    use crate::security::lsm::{check, Lsm};
    if let Some(p) = process {
        check(Lsm::AppArmor, p.apparmor_profile().as_deref())?;
        check(Lsm::SeLinux, p.selinux_label().as_deref())?;
    }
    Ok(())
}

/// Writes a pid file atomically (runc's format: the number, no newline).
pub fn write_pid_file(path: &Path, pid: Pid) -> Result<(), ContainerError> {
    state::write_atomic(path, pid.to_string().as_bytes(), 0o644).map_err(|source| {
        ContainerError::PidFile {
            path: path.to_path_buf(),
            source,
        }
    })
}

impl Runtime {
    /// Creates container `id` from `opts.bundle`: on return its init is waiting for `start`.
    ///
    /// Safe from a multithreaded caller: the clone chain then runs in a single-threaded child
    /// (see `process::isolate`), and init is re-parented once that child exits. From a
    /// single-threaded caller init is the caller's own child. Either way the caller's
    /// descriptors are left as they are; `opts.stdio` gives init its 0, 1 and 2, and
    /// [`Container::wait`] collects its exit status.
    pub fn create(&self, id: &str, opts: &CreateOptions) -> crate::Result<Container> {
        crate::process::isolate::single_threaded(|| {
            self.create_with_console(id, opts, None).map(|_| ())
        })?;
        self.load(id)
    }

    /// As `create`, for a process that a terminating signal (SIGTERM, SIGINT, SIGHUP,
    /// SIGQUIT) would otherwise end half-way: one that comes during the create undoes it
    /// instead, and the error is [`ContainerError::Interrupted`] (see `abort`).
    pub fn create_abortable(&self, id: &str, opts: &CreateOptions) -> crate::Result<Container> {
        // The watcher thread of `abortable` is parked in poll(2) when the clone happens: it
        // holds no lock, so the create runs here rather than in a forked child.
        super::abort::abortable(|| self.create_with_console(id, opts, None))
    }

    /// As `create`; `own_console` is a console socket of the caller's own (`run` in the
    /// foreground acting as the console), used when the process wants a terminal and no
    /// `--console-socket` was given.
    pub(super) fn create_with_console(
        &self,
        id: &str,
        opts: &CreateOptions,
        own_console: Option<OwnedFd>,
    ) -> crate::Result<Container> {
        crate::kernel::check()?;
        let dir = self.dir(id)?;
        let Prepared {
            bundle,
            spec,
            rootfs,
            plan,
            resources,
            annotations,
            mut stored,
            terminal,
        } = prepare(id, &opts.bundle, |spec| match &opts.pod {
            Some(pod) => Ok(self.load_pod(pod)?.adopt(id, spec)?),
            None => Ok(()),
        })?;
        stored.pod = opts.pod.clone();
        let stdio = stdio_for(terminal, opts.stdio.as_ref())?;
        let console_socket = console_or_own(terminal, opts.console_socket.as_deref(), own_console)?;
        let (mut dir_guard, _lock, mut claim, cgroup, mut cgroup_guard) =
            self.place_with_cgroup(id, &dir, &spec, &resources, &mut stored)?;
        log::debug!(
            "namespaces: new {:?}{}, joining {:?}",
            plan.clone_flags,
            if plan.unshare_cgroup {
                " and cgroup"
            } else {
                ""
            },
            plan.joins
        );

        let fifo_path = dir.join(state::EXEC_FIFO);
        nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o622)).map_err(|e| {
            ContainerError::Fifo {
                path: fifo_path.clone(),
                source: e.into(),
            }
        })?;
        // Writable by the container's user, whoever that is (mkfifo's mode is cut by umask).
        std::fs::set_permissions(
            &fifo_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o622),
        )
        .map_err(|source| ContainerError::Fifo {
            path: fifo_path.clone(),
            source,
        })?;
        let fifo: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&fifo_path)
            .map_err(|source| ContainerError::Fifo {
                path: fifo_path.clone(),
                source,
            })?
            .into();

        // Bind sources init may not reach from a user namespace, and id-mapped ones: opened
        // here, with the runtime's credentials (none without a mount namespace: nothing is
        // mounted then).
        let in_user_ns = plan.new_user()
            || plan
                .joins
                .iter()
                .any(|(t, _)| *t == LinuxNamespaceType::User);
        let mount_sources = if plan.has_mount_ns() {
            crate::rootfs::MountSources::open(&spec, &bundle, in_user_ns)?
        } else {
            crate::rootfs::MountSources::default()
        };
        let cfg = InitConfig {
            id,
            spec: &spec,
            bundle: &bundle,
            rootfs: &rootfs,
            plan: &plan,
            cgroup: &cgroup,
            fifo: fifo.as_fd(),
            no_pivot: opts.no_pivot,
            console_socket: console_socket.as_ref().map(|s| s.as_fd()),
            no_new_keyring: opts.no_new_keyring,
            preserve_fds: opts.preserve_fds as i32,
            stdio,
            mount_sources: &mount_sources,
            setup_timeout: opts.setup_timeout.unwrap_or(process::DEFAULT_SETUP_TIMEOUT),
        };
        let mut hooks = CreateHooks {
            id,
            bundle: &bundle,
            annotations: &annotations,
            spec: &spec,
            dir: &dir,
            record: &mut stored,
            pid_file: opts.pid_file.as_deref(),
        };
        let init = process::spawn(&cfg, &mut hooks).map_err(|e| {
            // An init killed while setting up in a cgroup whose OOM counter moved ran out of
            // memory: say so, rather than only "killed by signal 9".
            if cgroup.oom_kills() > 0 {
                let limit = resources
                    .memory()
                    .as_ref()
                    .and_then(|m| m.limit())
                    .unwrap_or(-1);
                ContainerError::SetupOomKilled {
                    limit,
                    source: Box::new(e),
                }
                .into()
            } else {
                e
            }
        })?;
        init.disarm();
        cgroup_guard.disarm();
        claim.disarm();
        dir_guard.disarm();
        Ok(Container {
            dir,
            state: stored,
            damaged: false,
        })
    }

    /// Places the state directory of `id` with its first record (see `place_state_dir`),
    /// then makes the container's cgroup and applies `resources` to it. Rootless, with no
    /// cgroup delegated and no limits asked for, the container goes without one (as runc).
    pub(super) fn place_with_cgroup(
        &self,
        id: &str,
        dir: &Path,
        spec: &Spec,
        resources: &oci_spec::runtime::LinuxResources,
        stored: &mut StoredState,
    ) -> crate::Result<(DirGuard, DirLock, claim::Claim, Manager, CgroupGuard)> {
        let mut cgroup = Manager::new(&stored.cgroup_path)?;
        let (dir_guard, lock, claim) = self.place_state_dir(id, dir, stored, &cgroup)?;
        if let Err(e) = cgroup.create() {
            if !nix::unistd::geteuid().is_root() && cgroups::resources::is_empty(resources) {
                log::debug!("rootless container without a cgroup: {e}");
                cgroup = Manager::None(stored.cgroup_path.clone());
                stored.no_cgroup = true;
                stored.save(dir)?;
            } else {
                return Err(e.into());
            }
        }
        let cgroup_guard = CgroupGuard::new(vec![cgroup.clone()]);
        // Each linux.devices node may be made (init creates it after the clone, already in
        // this cgroup), but opened only as linux.resources.devices allows: runc creates the
        // nodes before it writes the rules and adds none for them, so an "r" rule stays
        // read-only there too.
        let device_nodes: Vec<String> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().as_ref())
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let t = match d.typ() {
                    oci_spec::runtime::LinuxDeviceType::B => "b",
                    // A fifo is made without the devices cgroup's leave.
                    oci_spec::runtime::LinuxDeviceType::P => return None,
                    _ => "c",
                };
                Some(format!("{t} {}:{} m", d.major(), d.minor()))
            })
            .collect();
        cgroup.apply(resources, &device_nodes, true)?;
        log::debug!(
            "cgroup {}: created, linux.resources applied",
            stored.cgroup_path.display()
        );
        Ok((dir_guard, lock, claim, cgroup, cgroup_guard))
    }

    /// Makes the state directory of `id` appear with its first record already in it, and
    /// claims the cgroup, as one step under the root's lock: a create killed at any point
    /// leaves either nothing under the id (a stale temporary directory and claim, swept by
    /// `delete --force`) or a record `delete --force` removes, and no two containers share a
    /// cgroup. The directory is made and locked as `@<id>.<pid>` ('@' is not allowed in
    /// ids) and renamed into place; its lock goes with it.
    fn place_state_dir(
        &self,
        id: &str,
        dir: &Path,
        stored: &StoredState,
        cgroup: &Manager,
    ) -> crate::Result<(DirGuard, DirLock, claim::Claim)> {
        let state_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContainerError::StateDir { path, source }
        };
        std::fs::create_dir_all(&self.root).map_err(state_err(&self.root))?;
        if dir.exists() {
            return Err(ContainerError::Exists { id: id.to_string() }.into());
        }
        let tmp = self.root.join(format!("@{id}.{}", std::process::id()));
        // One left by a killed process that had our pid.
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(state_err(&tmp))?;
        let mut guard = DirGuard::new(tmp.clone());
        let lock = DirLock::acquire(&tmp)?;
        stored.save(&tmp)?;
        let _root = DirLock::acquire(&self.root)?;
        if dir.exists() {
            return Err(ContainerError::Exists { id: id.to_string() }.into());
        }
        // runc 1.1 only warns of a cgroup that has processes (1.2 refuses it): capsa refuses,
        // since deleting the container would kill processes that are not its own.
        let others = if cgroup.exists() {
            cgroup.procs()?
        } else {
            Vec::new()
        };
        if !others.is_empty() {
            let pids: Vec<String> = others.iter().map(|p| p.to_string()).collect();
            return Err(ContainerError::CgroupInUse {
                path: stored.cgroup_path.clone(),
                by: format!("other processes (pids {})", pids.join(", ")),
            }
            .into());
        }
        // init would be cloned into a frozen cgroup and never report back (runc's check).
        if cgroup.is_frozen() {
            return Err(ContainerError::CgroupFrozen {
                path: stored.cgroup_path.clone(),
            }
            .into());
        }
        let claim = claim::claim(&self.root, &stored.cgroup_path, id)?;
        match nix::fcntl::renameat2(
            None,
            &tmp,
            None,
            dir,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST | nix::errno::Errno::ENOTEMPTY) => {
                return Err(ContainerError::Exists { id: id.to_string() }.into())
            }
            Err(e) => return Err(state_err(dir)(e.into()).into()),
        }
        guard = {
            guard.disarm();
            DirGuard::new(dir.to_path_buf())
        };
        Ok((guard, lock, claim))
    }
}

/// What `create` and `restore` read from a bundle before anything is made.
pub(super) struct Prepared {
    pub bundle: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
    pub plan: NamespacePlan,
    pub resources: oci_spec::runtime::LinuxResources,
    pub annotations: HashMap<String, String>,
    /// The first record: everything but init's pid (and the pod, the caller's).
    pub stored: StoredState,
    pub terminal: bool,
}

/// Loads and validates `bundle`'s config.json (after `adjust`, which a pod uses to put in
/// its namespaces) and derives the record of container `id` from it.
pub(super) fn prepare(
    id: &str,
    bundle: &Path,
    adjust: impl FnOnce(&mut Spec) -> crate::Result<()>,
) -> crate::Result<Prepared> {
    let bundle = std::fs::canonicalize(bundle).map_err(|source| ContainerError::Bundle {
        path: bundle.to_path_buf(),
        source,
    })?;
    let mut spec = spec::load(&bundle)?;
    adjust(&mut spec)?;
    super::validate::validate(&spec, &bundle)?;
    check_lsm(spec.process().as_ref())?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let rootfs = std::fs::canonicalize(spec::rootfs_path(&spec, &bundle)?).map_err(|source| {
        spec::SpecError::Path {
            field: "root.path".into(),
            path: spec::rootfs_path(&spec, &bundle).unwrap_or_default(),
            source,
        }
    })?;
    let linux = spec.linux().as_ref();
    let namespaces = linux.and_then(|l| l.namespaces().as_deref()).unwrap_or(&[]);
    let plan = NamespacePlan::from_spec(namespaces);
    let cgroup_path = cgroups::container_path(linux.and_then(|l| l.cgroups_path().as_deref()), id)?;
    let resources = linux
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let annotations = spec.annotations().clone().unwrap_or_default();
    let stored = StoredState {
        oci_version: crate::OCI_VERSION.to_string(),
        id: id.to_string(),
        pid: 0,
        pid_start_time: 0,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: crate::time::now_rfc3339_nanos(),
        annotations: annotations.clone(),
        cgroup_path,
        hooks: spec.hooks().clone(),
        shared_pid_ns: !plan.creates(LinuxNamespaceType::Pid),
        process: spec.process().clone(),
        pod: None,
        seccomp: linux.and_then(|l| l.seccomp().clone()),
        no_cgroup: false,
    };
    Ok(Prepared {
        bundle,
        spec,
        rootfs,
        plan,
        resources,
        annotations,
        stored,
        terminal,
    })
}

/// Sweeps what a create of `id` killed before its state directory appeared left: its
/// temporary directory (no longer locked by a live create) and its cgroup claim.
pub(super) fn sweep_stale(root: &Path, id: &str) {
    let prefix = format!("@{id}.");
    for name in super::entry_names(root).unwrap_or_default() {
        let Some(pid) = name.strip_prefix(&prefix) else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = root.join(&name);
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        if nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    claim::sweep(root, id);
}

use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::CreateOptions;
    use crate::pod::PodOptions;
    use std::path::PathBuf;

    #[test]
    fn setters_set_their_field_and_keep_the_defaults() {
        let o = CreateOptions::new("/b")
            .pid_file("/p")
            .pod("pod1")
            .preserve_fds(2);
        assert_eq!(o.bundle, PathBuf::from("/b"));
        assert_eq!(o.pid_file, Some(PathBuf::from("/p")));
        assert_eq!(o.pod.as_deref(), Some("pod1"));
        assert_eq!(o.preserve_fds, 2);
        assert!(o.console_socket.is_none() && o.stdio.is_none() && !o.no_pivot);
        let p = PodOptions::new()
            .hostname("h")
            .sysctl("net.ipv4.ip_forward", "1");
        assert_eq!(p.hostname.as_deref(), Some("h"));
        assert_eq!(
            p.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
            Some("1")
        );
        assert_eq!(p.share, PodOptions::default().share);
    }
}
