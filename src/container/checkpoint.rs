//! `checkpoint` and `restore` through CRIU, driven by its command line (`criu dump`,
//! `criu pre-dump`, `criu restore`).
//!
//! runc talks to `criu swrk` over CRIU's protobuf RPC; every option runc's flags set has a
//! command-line form (`--external mnt[..]`, `--inherit-fd`, `--manage-cgroups=MODE`,
//! `--cgroup-root`, `--restore-sibling`), so the CLI does the same without a protobuf
//! schema and codec in this crate. What the RPC adds that the CLI lacks (notify callbacks
//! for hooks at restore, lazy pages, a page server) is not offered.
//!
//! What the runtime tells CRIU: the bind mounts of config.json (and, on cgroup v1, the
//! bind of each hierarchy under the cgroup mount) as external mounts, keyed by their
//! destination; init's stdio opened outside the container's mounts as external files (and
//! pipes), inherited at restore from the restoring process's own 0, 1 and 2, as runc does;
//! network and pid namespaces joined by path as external namespaces. Restore happens into a
//! fresh bind of the bundle's rootfs, made in a private mount namespace of criu's own (a
//! restore killed at any point leaves no mount behind), with criu's pid file giving the new
//! init's pid for the state.

use super::state::{self, Status};
use super::{Container, ContainerError, Runtime};
use crate::cgroups::{Manager, MountSource};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How CRIU treats cgroups (`--manage-cgroups=MODE`; runc's `--manage-cgroups-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CgroupsMode {
    /// Restore the cgroup tree; properties only of cgroups CRIU creates (the default).
    #[default]
    Soft,
    /// Restore every cgroup's properties.
    Full,
    /// As full, and fail when a cgroup exists with other properties.
    Strict,
    /// Leave cgroups alone: the restored processes stay in the restoring process's cgroup.
    Ignore,
}

impl CgroupsMode {
    /// The mode of a `--manage-cgroups-mode` value (soft, full, strict, ignore).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "soft" => CgroupsMode::Soft,
            "full" => CgroupsMode::Full,
            "strict" => CgroupsMode::Strict,
            "ignore" => CgroupsMode::Ignore,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            CgroupsMode::Soft => "soft",
            CgroupsMode::Full => "full",
            CgroupsMode::Strict => "strict",
            CgroupsMode::Ignore => "ignore",
        }
    }
}

/// What `checkpoint` does (runc's flags).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckpointOptions {
    /// Where CRIU writes the images (made, mode 0700, when missing).
    pub image_path: PathBuf,
    /// Where CRIU writes its log (dump.log) and work files; the image path when None.
    pub work_path: Option<PathBuf>,
    /// An earlier pre-dump's images, relative to the image path or absolute: only the
    /// memory changed since goes into the new images.
    pub parent_path: Option<PathBuf>,
    /// Keep the container running after the dump (otherwise it is stopped).
    pub leave_running: bool,
    /// Dump established TCP connections.
    pub tcp_established: bool,
    /// Allow unix sockets connected to peers outside the container.
    pub ext_unix_sk: bool,
    /// Dump file locks.
    pub file_locks: bool,
    /// Only a pre-dump of memory (`criu pre-dump`); the container keeps running.
    pub pre_dump: bool,
    /// How CRIU treats the container's cgroups.
    pub manage_cgroups_mode: CgroupsMode,
    /// The criu binary (looked up in PATH when it has no slash).
    pub criu: PathBuf,
}

impl CheckpointOptions {
    /// A checkpoint into `image_path`, with runc's defaults for everything else.
    pub fn new(image_path: impl Into<PathBuf>) -> Self {
        CheckpointOptions {
            image_path: image_path.into(),
            work_path: None,
            parent_path: None,
            leave_running: false,
            tcp_established: false,
            ext_unix_sk: false,
            file_locks: false,
            pre_dump: false,
            manage_cgroups_mode: CgroupsMode::default(),
            criu: PathBuf::from("criu"),
        }
    }
}

/// What `restore` does (runc's flags).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// The bundle whose config.json describes the container (its rootfs, mounts, cgroup).
    pub bundle: PathBuf,
    /// The images a checkpoint wrote.
    pub image_path: PathBuf,
    /// Where CRIU writes restore.log; the image path when None.
    pub work_path: Option<PathBuf>,
    /// File to write the restored process's pid to.
    pub pid_file: Option<PathBuf>,
    /// Restore established TCP connections.
    pub tcp_established: bool,
    /// Allow unix sockets connected to peers outside the container.
    pub ext_unix_sk: bool,
    /// Restore file locks.
    pub file_locks: bool,
    /// How CRIU treats the container's cgroups.
    pub manage_cgroups_mode: CgroupsMode,
    /// The descriptors that replace init's stdio where it was outside the container (a pipe,
    /// a file, /dev/null): the caller's own 0, 1 and 2 when None.
    pub stdio: Option<super::StdioFds>,
    /// The criu binary (looked up in PATH when it has no slash).
    pub criu: PathBuf,
}

impl RestoreOptions {
    /// A restore of the container of `bundle` from `image_path`, with runc's defaults.
    pub fn new(bundle: impl Into<PathBuf>, image_path: impl Into<PathBuf>) -> Self {
        RestoreOptions {
            bundle: bundle.into(),
            image_path: image_path.into(),
            work_path: None,
            pid_file: None,
            tcp_established: false,
            ext_unix_sk: false,
            file_locks: false,
            manage_cgroups_mode: CgroupsMode::default(),
            stdio: None,
            criu: PathBuf::from("criu"),
        }
    }
}

/// Why a checkpoint or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The criu binary could not be run.
    #[error("running {}: is criu installed (Debian's package criu)?", criu.display())]
    CriuMissing {
        /// The binary tried.
        criu: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// criu ran and failed.
    #[error("criu {action} failed ({status}): {message} (log: {})", log.display())]
    CriuFailed {
        /// dump, pre-dump or restore.
        action: &'static str,
        /// How criu exited.
        status: String,
        /// The first error of its log.
        message: String,
        /// Its log file.
        log: PathBuf,
    },
    /// An image or work directory could not be made or opened.
    #[error("{flag} {}", path.display())]
    Directory {
        /// The flag that names it.
        flag: &'static str,
        /// The directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A container with a terminal (refused, as runc refuses it).
    #[error("process.terminal: a container with a terminal cannot be checkpointed or restored")]
    Terminal,
    /// A namespace joined by path that criu cannot hand back.
    #[error("linux.namespaces: the {kind} namespace is joined by path ({}); only network and pid namespaces joined by path can be checkpointed", path.display())]
    JoinedNamespace {
        /// The namespace kind.
        kind: String,
        /// The path it is joined by.
        path: PathBuf,
    },
    /// Reading a file of the checkpoint failed.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Writing a file of the checkpoint failed.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The image directory holds no checkpoint of capsa's.
    #[error("{} is not a checkpoint capsa wrote (no {STDIO_FILE})", path.display())]
    NotACheckpoint {
        /// The image directory.
        path: PathBuf,
    },
    /// criu said it restored, but wrote no pid.
    #[error("criu restored the container but its pid file {} holds no pid", path.display())]
    NoPid {
        /// criu's pid file.
        path: PathBuf,
    },
}

/// Beside CRIU's images: which of init's 0, 1 and 2 restore must hand in (CRIU's key of each).
const STDIO_FILE: &str = "capsa-stdio.json";
/// The key CRIU's images name an external network (pid) namespace by, as runc's.
const EXT_NET: &str = "extRootNetNS";
const EXT_PID: &str = "extRootPidNS";
/// Where criu finds the namespace descriptors restore hands in.
const NS_FD_BASE: i32 = 200;

/// The line of a criu log to quote: the first error (the cause; those after it are the
/// unwinding), else the last line; without its timestamp.
fn log_message(log: &Path, stderr: &[u8]) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let _ = f.read_to_string(&mut text);
    }
    if text.is_empty() {
        text = String::from_utf8_lossy(stderr).into_owned();
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let line = lines
        .iter()
        .find(|l| l.contains("Error"))
        .or(lines.last())
        .map(|l| l.trim())
        .unwrap_or("no output");
    // "(00.041030) Error (...)", or "(00.1)      1: Error (...)" from a restored task: the
    // elapsed time and the pid say nothing to the reader.
    if let Some(at) = line.find("Error (") {
        return line[at..].to_string();
    }
    match line.strip_prefix('(').and_then(|r| r.split_once(") ")) {
        Some((time, rest)) if time.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            rest.trim().to_string()
        }
        _ => line.to_string(),
    }
}

/// Runs criu to the end; an error names criu's log and quotes its last error.
fn run_criu(
    mut cmd: Command,
    criu: &Path,
    action: &'static str,
    log: &Path,
) -> Result<(), CheckpointError> {
    log::debug!("running {cmd:?}");
    let out =
        cmd.stderr(Stdio::piped())
            .output()
            .map_err(|source| CheckpointError::CriuMissing {
                criu: criu.to_path_buf(),
                source,
            })?;
    if out.status.success() {
        return Ok(());
    }
    Err(CheckpointError::CriuFailed {
        action,
        status: out.status.to_string(),
        message: log_message(log, &out.stderr),
        log: log.to_path_buf(),
    })
}

/// Makes `path` (and its parents) when missing, mode 0700, and returns it absolute.
fn directory(flag: &'static str, path: &Path) -> Result<PathBuf, CheckpointError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| CheckpointError::Directory {
        flag,
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(err)?;
    std::fs::canonicalize(path).map_err(err)
}

/// An existing directory, absolute.
fn existing_directory(flag: &'static str, path: &Path) -> Result<PathBuf, CheckpointError> {
    let abs = std::fs::canonicalize(path).map_err(|source| CheckpointError::Directory {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    if !abs.is_dir() {
        return Err(CheckpointError::Directory {
            flag,
            path: path.to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    Ok(abs)
}

/// The mounts CRIU must be told about, as (destination in the container, host source): the
/// bind mounts of config.json and the binds of a cgroup mount (each v1 hierarchy, or the v2
/// directory when the container has no cgroup namespace).
fn external_mounts(spec: &Spec, cgroup: &Manager) -> Vec<(PathBuf, PathBuf)> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref());
    let new_cgroupns = crate::namespaces::NamespacePlan::from_spec(namespaces.unwrap_or(&[]))
        .creates(LinuxNamespaceType::Cgroup);
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let typ = m.typ().as_deref();
        let options = m.options().clone().unwrap_or_default();
        let bind = typ == Some("bind")
            || crate::rootfs::options::parse(&options, typ).is_ok_and(|o| o.is_bind());
        if bind {
            if let Some(src) = m.source() {
                out.push((m.destination().clone(), src.clone()));
            }
        } else if matches!(typ, Some("cgroup") | Some("cgroup2")) {
            match cgroup.mount_source() {
                MountSource::V1(hierarchies) => {
                    for (name, dir) in hierarchies {
                        out.push((m.destination().join(name), dir));
                    }
                }
                // Without a cgroup namespace of its own the container sees a bind of its
                // cgroup's directory; with one, a cgroup2 mount CRIU makes itself.
                MountSource::V2(dir) if !new_cgroupns => out.push((m.destination().clone(), dir)),
                MountSource::V2(_) => {}
            }
        }
    }
    out
}

/// The namespaces joined by path: network and pid become CRIU's external namespaces (their
/// key and path); ipc and uts are joined again at restore; any other is refused.
struct Joined {
    external: Vec<(&'static str, &'static str, PathBuf)>,
    rejoin: Vec<(&'static str, PathBuf)>,
}

fn joined_namespaces(spec: &Spec) -> Result<Joined, CheckpointError> {
    let mut joined = Joined {
        external: Vec::new(),
        rejoin: Vec::new(),
    };
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref());
    for ns in namespaces.unwrap_or(&[]) {
        let Some(path) = ns.path() else { continue };
        match ns.typ() {
            LinuxNamespaceType::Network => joined.external.push(("net", EXT_NET, path.clone())),
            LinuxNamespaceType::Pid => joined.external.push(("pid", EXT_PID, path.clone())),
            LinuxNamespaceType::Ipc => joined.rejoin.push(("ipc", path.clone())),
            LinuxNamespaceType::Uts => joined.rejoin.push(("uts", path.clone())),
            t => {
                return Err(CheckpointError::JoinedNamespace {
                    kind: crate::namespaces::kind_name(t).to_string(),
                    path: path.clone(),
                })
            }
        }
    }
    Ok(joined)
}

/// The mount ids of `pid`'s mount namespace.
fn mount_ids(pid: i32) -> Result<Vec<u64>, CheckpointError> {
    let path = PathBuf::from(format!("/proc/{pid}/mountinfo"));
    let text =
        std::fs::read_to_string(&path).map_err(|source| CheckpointError::Read { path, source })?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect())
}

/// CRIU's key for init's descriptor `fd` when it is not the container's own: a pipe (from
/// the runtime's caller) or a file on a mount outside the container. None for what CRIU
/// restores by itself (a file inside, a socket) or a closed descriptor.
fn stdio_key(pid: i32, fd: i32, inside: &[u64]) -> Result<Option<String>, CheckpointError> {
    let link = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
    let target = match std::fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Read { path: link, source }),
    };
    let target = target.to_string_lossy();
    if target.starts_with("pipe:") {
        return Ok(Some(target.into_owned()));
    }
    if target.starts_with("socket:") || target.starts_with("anon_inode:") {
        return Ok(None);
    }
    let info = PathBuf::from(format!("/proc/{pid}/fdinfo/{fd}"));
    let text = std::fs::read_to_string(&info).map_err(|source| CheckpointError::Read {
        path: info.clone(),
        source,
    })?;
    let mnt_id: Option<u64> = text
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok());
    let Some(mnt_id) = mnt_id.filter(|m| !inside.contains(m)) else {
        return Ok(None);
    };
    let ino =
        std::fs::metadata(&link).map_err(|source| CheckpointError::Read { path: link, source })?;
    Ok(Some(format!(
        "file[{mnt_id:x}:{:x}]",
        std::os::unix::fs::MetadataExt::ino(&ino)
    )))
}

fn is_terminal(process: Option<&oci_spec::runtime::Process>) -> bool {
    process.and_then(|p| p.terminal()).unwrap_or(false)
}

/// `--external mnt[DEST]:VALUE`, CRIU's form of an external bind mount.
fn mnt_arg(dest: &Path, value: &Path) -> OsString {
    let mut s = OsString::from("mnt[");
    s.push(dest);
    s.push("]:");
    s.push(value);
    s
}

fn common_args(
    cmd: &mut Command,
    images: &Path,
    work: Option<&Path>,
    log: &str,
    tcp: bool,
    ext_unix: bool,
    locks: bool,
) {
    cmd.arg("--images-dir").arg(images);
    if let Some(w) = work {
        cmd.arg("--work-dir").arg(w);
    }
    cmd.args(["--log-file", log, "-v4"]);
    for (on, flag) in [
        (tcp, "--tcp-established"),
        (ext_unix, "--ext-unix-sk"),
        (locks, "--file-locks"),
    ] {
        if on {
            cmd.arg(flag);
        }
    }
}

impl Container {
    /// Checkpoints the running container into `opts.image_path` with CRIU. Unless
    /// `leave_running` (or `pre_dump`), its processes are gone afterwards and its status is
    /// stopped; `delete` removes it as any stopped container. A failure leaves the container
    /// as it was, and the error quotes criu's log and names it.
    pub fn checkpoint(&self, opts: &CheckpointOptions) -> crate::Result<()> {
        let (_lock, c) = self.locked()?;
        if c.status() != Status::Running {
            return Err(ContainerError::NotRunning.into());
        }
        if is_terminal(c.state.process.as_ref()) {
            return Err(CheckpointError::Terminal.into());
        }
        let spec = crate::spec::load(&c.state.bundle)?;
        let joined = joined_namespaces(&spec)?;
        let images = directory("--image-path", &opts.image_path)?;
        let work = match &opts.work_path {
            Some(w) => Some(directory("--work-path", w)?),
            None => None,
        };
        let pid = c.state.pid;
        let inside = mount_ids(pid)?;
        let mut stdio = Vec::new();
        for fd in 0..3 {
            stdio.push(stdio_key(pid, fd, &inside)?);
        }
        let stdio_path = images.join(STDIO_FILE);
        let bytes = serde_json::to_vec(&stdio).unwrap_or_default();
        state::write_atomic(&stdio_path, &bytes, 0o600).map_err(|source| {
            CheckpointError::Write {
                path: stdio_path,
                source,
            }
        })?;

        let action = if opts.pre_dump { "pre-dump" } else { "dump" };
        let log_name = format!("{action}.log");
        let mut cmd = Command::new(&opts.criu);
        cmd.arg(action).arg("--tree").arg(pid.to_string());
        common_args(
            &mut cmd,
            &images,
            work.as_deref(),
            &log_name,
            opts.tcp_established,
            opts.ext_unix_sk,
            opts.file_locks,
        );
        cmd.arg(format!(
            "--manage-cgroups={}",
            opts.manage_cgroups_mode.as_str()
        ));
        if opts.leave_running && !opts.pre_dump {
            cmd.arg("--leave-running");
        }
        if opts.pre_dump || opts.parent_path.is_some() {
            cmd.arg("--track-mem");
        }
        if let Some(parent) = &opts.parent_path {
            cmd.arg("--prev-images-dir").arg(parent);
        }
        for (dest, _) in external_mounts(&spec, &c.cgroup()?) {
            cmd.arg("--external").arg(mnt_arg(&dest, &dest));
        }
        for key in stdio.iter().flatten().filter(|k| k.starts_with("file[")) {
            cmd.arg("--external").arg(key);
        }
        for (kind, key, path) in &joined.external {
            let st = std::fs::metadata(path).map_err(|source| CheckpointError::Read {
                path: path.clone(),
                source,
            })?;
            let ino = std::os::unix::fs::MetadataExt::ino(&st);
            cmd.arg("--external").arg(format!("{kind}[{ino}]:{key}"));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let log = work.as_deref().unwrap_or(&images).join(&log_name);
        run_criu(cmd, &opts.criu, action, &log)?;
        Ok(())
    }
}

/// What a failed restore leaves to undo: the restored processes, if criu left any.
struct KillGuard(Option<Manager>);

impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = super::ops::kill_all_and_wait(&cg);
        }
    }
}

impl Runtime {
    /// Restores container `id` from the images a checkpoint wrote, with `opts.bundle`'s
    /// config.json (its rootfs, bind mounts, cgroup). On return the container runs, a child
    /// of the caller (CRIU restores it as its own sibling); `state` shows it running with its
    /// new pid, and `kill`/`delete` work on it as on any container. A failure leaves nothing:
    /// no state, no cgroup, no process, no mount.
    pub fn restore(&self, id: &str, opts: &RestoreOptions) -> crate::Result<Container> {
        let dir = self.dir(id)?;
        // Checked again, under the root's lock, when the state directory is placed.
        if dir.exists() {
            return Err(ContainerError::Exists { id: id.to_string() }.into());
        }
        let super::create::Prepared {
            spec,
            rootfs,
            resources,
            mut stored,
            terminal,
            ..
        } = super::create::prepare(id, &opts.bundle, |_| Ok(()))?;
        if terminal {
            return Err(CheckpointError::Terminal.into());
        }
        let joined = joined_namespaces(&spec)?;
        let images = existing_directory("--image-path", &opts.image_path)?;
        let work = match &opts.work_path {
            Some(w) => Some(directory("--work-path", w)?),
            None => None,
        };
        let stdio_path = images.join(STDIO_FILE);
        let stdio: Vec<Option<String>> = match std::fs::read(&stdio_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|_| CheckpointError::NotACheckpoint {
                path: images.clone(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CheckpointError::NotACheckpoint { path: images }.into())
            }
            Err(source) => {
                return Err(CheckpointError::Read {
                    path: stdio_path,
                    source,
                }
                .into())
            }
        };
        // Namespaces to hand in, opened before anything is made.
        let mut ns_files = Vec::new();
        for (_, key, path) in &joined.external {
            let f = std::fs::File::open(path).map_err(|source| CheckpointError::Read {
                path: path.clone(),
                source,
            })?;
            ns_files.push((*key, OwnedFd::from(f)));
        }

        let (mut dir_guard, _lock, mut claim, cgroup, mut cgroup_guard) =
            self.place_with_cgroup(id, &dir, &spec, &resources, &mut stored)?;
        let mut kill_guard = KillGuard(Some(cgroup.clone()));
        let criu_root = dir.join("criu-root");
        std::fs::create_dir(&criu_root).map_err(|source| ContainerError::StateDir {
            path: criu_root.clone(),
            source,
        })?;
        let pid_path = dir.join("criu.pid");
        let log_name = "restore.log";
        let mut cmd = Command::new(&opts.criu);
        cmd.arg("restore");
        common_args(
            &mut cmd,
            &images,
            work.as_deref(),
            log_name,
            opts.tcp_established,
            opts.ext_unix_sk,
            opts.file_locks,
        );
        cmd.arg("--root")
            .arg(&criu_root)
            .args(["--restore-detached", "--restore-sibling", "--pidfile"])
            .arg(&pid_path)
            .arg(format!(
                "--manage-cgroups={}",
                opts.manage_cgroups_mode.as_str()
            ));
        if !stored.no_cgroup {
            cmd.arg("--cgroup-root").arg(&stored.cgroup_path);
        }
        for (dest, src) in external_mounts(&spec, &cgroup) {
            cmd.arg("--external").arg(mnt_arg(&dest, &src));
        }
        for (fd, key) in stdio.iter().enumerate().take(3) {
            if let Some(key) = key {
                cmd.arg("--inherit-fd").arg(format!("fd[{fd}]:{key}"));
            }
        }
        // The namespace files go to fixed descriptors in criu, far above anything open.
        let mut moves = Vec::new();
        for (i, (key, fd)) in ns_files.iter().enumerate() {
            let target = NS_FD_BASE + i as i32;
            cmd.arg("--inherit-fd").arg(format!("fd[{target}]:{key}"));
            moves.push((fd.as_raw_fd(), target));
        }
        for (kind, path) in &joined.rejoin {
            let mut arg = OsString::from(format!("{kind}:"));
            arg.push(path);
            cmd.arg("--join-ns").arg(arg);
        }
        if let Some(s) = &opts.stdio {
            let [i, o, e] = s.borrow();
            let dup = |fd: BorrowedFd| -> crate::Result<Stdio> {
                Ok(Stdio::from(fd.try_clone_to_owned().map_err(|source| {
                    CheckpointError::Read {
                        path: PathBuf::from("stdio"),
                        source,
                    }
                })?))
            };
            cmd.stdin(dup(i)?).stdout(dup(o)?);
            cmd.stderr(dup(e)?);
        }
        let source =
            CString::new(rootfs.as_os_str().as_bytes()).map_err(|_| CheckpointError::Read {
                path: rootfs.clone(),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        let target =
            CString::new(criu_root.as_os_str().as_bytes()).map_err(|_| CheckpointError::Read {
                path: criu_root.clone(),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec only async-signal-safe syscalls run, on
            // strings and descriptors made before the fork.
            unsafe {
                cmd.pre_exec(move || private_root_bind(&source, &target, &moves));
            }
        }
        let log = work.as_deref().unwrap_or(&images).join(log_name);
        // stderr must stay the caller's (it may be inherited as the container's): criu's
        // messages are in its log.
        run_restore(cmd, &opts.criu, &log, opts.stdio.is_some())?;
        let text = std::fs::read_to_string(&pid_path).unwrap_or_default();
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| CheckpointError::NoPid { path: pid_path })?;
        stored.pid = pid;
        stored.pid_start_time = state::live_start_time(pid).unwrap_or(0);
        stored.save(&dir)?;
        if let Some(p) = &opts.pid_file {
            super::create::write_pid_file(p, Pid::from_raw(pid))?;
        }
        let _ = std::fs::remove_dir(&criu_root);
        kill_guard.0 = None;
        cgroup_guard.disarm();
        claim.disarm();
        dir_guard.disarm();
        Ok(Container {
            dir,
            state: stored,
            damaged: false,
        })
    }

    /// `restore` in the foreground: waits for the restored init while forwarding signals to
    /// it, deletes the container, and returns its exit status (128+N for a signal).
    pub fn restore_foreground(&self, id: &str, opts: &RestoreOptions) -> crate::Result<i32> {
        let set = super::run::blocked_set();
        let old = set
            .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
            .map_err(|e| crate::process::ProcessError::Signals(e.into()))?;
        let result = self.restore(id, opts).and_then(|c| {
            let code = super::run::forward_until_exit(Pid::from_raw(c.stored().pid), &set, None);
            let deleted = c.delete(true);
            let code = code?;
            deleted?;
            Ok(code)
        });
        let _ = old.thread_set_mask();
        result
    }
}

/// criu restore to the end, its stdio the caller's unless given: an error quotes its log.
fn run_restore(
    mut cmd: Command,
    criu: &Path,
    log: &Path,
    stdio_given: bool,
) -> Result<(), CheckpointError> {
    log::debug!("running {cmd:?}");
    if !stdio_given {
        cmd.stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
    }
    let status = cmd
        .status()
        .map_err(|source| CheckpointError::CriuMissing {
            criu: criu.to_path_buf(),
            source,
        })?;
    if status.success() {
        return Ok(());
    }
    Err(CheckpointError::CriuFailed {
        action: "restore",
        status: status.to_string(),
        message: log_message(log, &[]),
        log: log.to_path_buf(),
    })
}

/// In criu's child before exec: a private mount namespace with the rootfs bound (with its
/// submounts) at `target`, so the bind goes away with criu whatever happens; the namespace
/// descriptors moved to their fixed numbers.
fn private_root_bind(
    source: &CString,
    target: &CString,
    moves: &[(i32, i32)],
) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: unshare and mount take no pointers but the NUL-terminated strings we own.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
    }
    for &(from, to) in moves {
        // SAFETY: dup2 of a descriptor we own onto a fixed number; the copy has no
        // close-on-exec flag, so criu inherits it.
        check(unsafe { libc::dup2(from, to) })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_of_a_criu_log_is_quoted_without_its_time() {
        let dir = std::env::temp_dir().join(format!("capsa-criu-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("dump.log");
        std::fs::write(
            &log,
            "(00.000010) Version: 3.17.1\n\
             (00.042217) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n\
             (00.042219) Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed\n\
             (00.042250) Unlock network\n",
        )
        .unwrap();
        assert_eq!(
            log_message(&log, b""),
            "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds"
        );
        std::fs::write(
            &log,
            "(00.2)      1: Error (criu/files-reg.c:2259): Can't open\n",
        )
        .unwrap();
        assert_eq!(
            log_message(&log, b""),
            "Error (criu/files-reg.c:2259): Can't open"
        );
        std::fs::write(&log, "(00.1) done\n\n").unwrap();
        assert_eq!(log_message(&log, b""), "done");
        // No log at all: criu's own stderr, then a word that says so.
        std::fs::remove_file(&log).unwrap();
        assert_eq!(log_message(&log, b"criu: bad option\n"), "criu: bad option");
        assert_eq!(log_message(&log, b""), "no output");
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn cgroup_modes_are_runc_s() {
        for m in ["soft", "full", "strict", "ignore"] {
            assert_eq!(CgroupsMode::parse(m).map(CgroupsMode::as_str), Some(m));
        }
        assert_eq!(CgroupsMode::parse("props"), None);
        assert_eq!(CgroupsMode::default(), CgroupsMode::Soft);
    }

    #[test]
    fn external_mounts_are_the_binds_keyed_by_destination() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind"]},
                {"destination": "/etc/hosts", "source": "/h", "options": ["bind", "ro"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
            ]
        }))
        .unwrap();
        let none = Manager::None(PathBuf::from("/capsa/x"));
        assert_eq!(
            external_mounts(&spec, &none),
            vec![
                (PathBuf::from("/data"), PathBuf::from("/srv/data")),
                (PathBuf::from("/etc/hosts"), PathBuf::from("/h")),
            ]
        );
        assert_eq!(
            mnt_arg(Path::new("/data"), Path::new("/srv/data")),
            OsString::from("mnt[/data]:/srv/data")
        );
    }
}
