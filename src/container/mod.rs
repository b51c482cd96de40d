//! Containers: creation, lifecycle operations, state on disk.
//!
//! [`Runtime`] is a state root (default /run/capsa) holding one directory per container:
//! `state.json` (written atomically) and, between create and start, `exec.fifo`.

mod abort;
mod checkpoint;
mod claim;
pub(crate) mod create;
mod events;
mod exec;
mod id;
mod lock;
mod ops;
pub(crate) mod pod_record;
mod relay;
mod run;
pub(crate) mod state;
mod validate;

pub use checkpoint::{CgroupsMode, CheckpointError, CheckpointOptions, RestoreOptions};
pub(crate) use create::{CgroupGuard, DirGuard};
pub use create::{CreateOptions, StdioFds};
pub use events::Event;
pub use exec::ExecOptions;
pub use id::validate as validate_id;
pub(crate) use lock::DirLock;
pub use ops::{parse_signal, KillSignal};
pub(crate) use state::live_start_time;
pub(crate) use state::write_atomic;
pub(crate) use state::{derive_status, HookState};
pub use state::{OciState, Status, StoredState};

use crate::cgroups;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};

/// A failure of a container operation (lifecycle, state on disk, signals).
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The id has characters other than letters, digits and _+.-, or is "." or "..".
    #[error("invalid container id {id:?}: use letters, digits and _+.- (not \".\" or \"..\")")]
    InvalidId {
        /// The container's id.
        id: String,
    },
    /// A container of that id exists already.
    #[error("container with id {id} already exists")]
    Exists {
        /// The container's id.
        id: String,
    },
    /// The cgroup of linux.cgroupsPath belongs to another container.
    #[error("linux.cgroupsPath {}: the cgroup is already in use by {by}", path.display())]
    CgroupInUse {
        /// The cgroup directory.
        path: PathBuf,
        /// What holds it: another container, or processes of its own.
        by: String,
    },
    /// The cgroup given is frozen: init would hang in it.
    #[error("linux.cgroupsPath {}: the cgroup is unexpectedly frozen (thaw it first)", path.display())]
    CgroupFrozen {
        /// The cgroup directory.
        path: PathBuf,
    },
    /// No container of that id.
    #[error("container {id} does not exist")]
    NotExist {
        /// The container's id.
        id: String,
    },
    /// The operation needs a running container.
    #[error("container not running")]
    NotRunning,
    /// `events` of a stopped container: there is nothing to report on (runc's words).
    #[error("container with id {id} is not running")]
    NoEvents {
        /// The container's id.
        id: String,
    },
    /// The init was OOM-killed during setup: the memory limit is too low.
    #[error("the container's init was OOM-killed while setting up: linux.resources.memory.limit ({limit}) is too low")]
    SetupOomKilled {
        /// The memory limit, in bytes.
        limit: i64,
        /// The setup error it caused.
        #[source]
        source: Box<crate::Error>,
    },
    /// Exec in a stopped container.
    #[error("cannot exec in a stopped container")]
    ExecStopped,
    /// Exec in a paused container (without `ignore_paused`).
    #[error("cannot exec in a paused container (use --ignore-paused to override)")]
    ExecPaused,
    /// Resume of a container that is not paused.
    #[error("container not paused")]
    NotPaused,
    /// Start of a running container.
    #[error("cannot start an already running container")]
    AlreadyRunning,
    /// Start of a stopped container.
    #[error("cannot start a container that has stopped")]
    StartStopped,
    /// Delete, without force, of a container that is not stopped.
    #[error("cannot delete container {id} that is not stopped: {status}")]
    NotStopped {
        /// The container's id.
        id: String,
        /// Its status.
        status: Status,
    },
    /// Init died after create and before start let it run the container process.
    #[error("container {id} exited before it was started: its init (pid {pid}) is gone{cause}")]
    ExitedBeforeStart {
        /// The container's id.
        id: String,
        /// Init's pid.
        pid: i32,
        /// How it ended (`: killed by signal 9`) when the caller is its parent, else empty.
        cause: String,
    },
    /// The bundle directory cannot be used.
    #[error("bundle {}", path.display())]
    Bundle {
        /// The bundle directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The container's state directory cannot be made or read.
    #[error("state directory {}", path.display())]
    StateDir {
        /// The container's state directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Reading state.json failed.
    #[error("reading {}", path.display())]
    ReadState {
        /// The state.json read.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// state.json does not parse.
    #[error("state file {} is not valid", path.display())]
    CorruptState {
        /// The state.json read.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: serde_json::Error,
    },
    /// Writing state.json failed.
    #[error("writing {}", path.display())]
    WriteState {
        /// The state.json written.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Locking the container's directory failed.
    #[error("locking {}", path.display())]
    Lock {
        /// The directory locked.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Opening or removing the exec fifo (where init waits for start) failed.
    #[error("exec fifo {}", path.display())]
    Fifo {
        /// The exec fifo.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// kill(2) failed.
    #[error("sending signal {signal} to {pid}")]
    Signal {
        /// The signal number.
        signal: i32,
        /// The process signalled.
        pid: i32,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A process of the container outlived SIGKILL for too long.
    #[error("process {pid} did not exit within {}s of SIGKILL", timeout.as_secs())]
    NotKilled {
        /// The process.
        pid: i32,
        /// How long it was waited for.
        timeout: std::time::Duration,
    },
    /// A signal name or number that is not one.
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    /// Waiting for the process failed.
    #[error("waiting for the container process")]
    Wait(#[source] std::io::Error),
    /// Watching for signals during the setup failed.
    #[error("watching for signals during the setup")]
    SetupWatch(#[source] std::io::Error),
    /// A terminating signal came while the container was set up: it was undone.
    #[error("interrupted by {signal} while setting up: the container was removed")]
    Interrupted {
        /// The signal that came.
        signal: nix::sys::signal::Signal,
    },
    /// Writing the pid file failed.
    #[error("pid file {}", path.display())]
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// process.terminal without a console socket.
    #[error("cannot allocate a tty: process.terminal is true but no --console-socket was given")]
    TerminalWithoutSocket,
    /// A console socket without process.terminal.
    #[error("--console-socket was given but process.terminal is false")]
    SocketWithoutTerminal,
    /// Stdio descriptors given for a process that has a terminal.
    #[error("stdio descriptors were given but process.terminal is true: the process's stdio is its terminal")]
    StdioWithTerminal,
    /// Waiting for an init that this process did not create.
    #[error("container {id}: its init (pid {pid}) is not a child of this process, so only its parent can wait for it")]
    NotChild {
        /// The container's id.
        id: String,
        /// The init's pid.
        pid: i32,
    },
    /// Waiting for an init already reaped.
    #[error("container {id}: its init has already been reaped")]
    Reaped {
        /// The container's id.
        id: String,
    },
}

/// A state root: the directory under which containers' state lives.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

/// A container as loaded from its state directory.
#[derive(Debug, Clone)]
pub struct Container {
    dir: PathBuf,
    state: StoredState,
    /// Loaded from a damaged state file (or none): only the pid, its start time and the
    /// cgroup could be salvaged. Its status is unknown and only `delete --force` acts on it.
    damaged: bool,
}

impl Runtime {
    /// A runtime whose state lives under `root` (made on first create).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runtime { root: root.into() }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: &str) -> Result<PathBuf, ContainerError> {
        validate_id(id)?;
        Ok(self.root.join(id))
    }

    /// Loads container `id`; "container ID does not exist" when there is none.
    pub fn load(&self, id: &str) -> crate::Result<Container> {
        let dir = self.dir(id)?;
        let state = StoredState::load(&dir, id)?;
        Ok(Container {
            dir,
            state,
            damaged: false,
        })
    }

    /// Container `id` whose state file is damaged or missing, from what can be salvaged
    /// (see [`Container::is_damaged`]); "does not exist" when there is no state directory.
    pub fn salvage(&self, id: &str) -> crate::Result<Container> {
        let dir = self.dir(id)?;
        if !dir.is_dir() {
            return Err(ContainerError::NotExist { id: id.to_string() }.into());
        }
        Ok(Container::salvaged(dir, id))
    }

    /// Deletes container `id` (see [`Container::delete`]). With `force`, a container whose
    /// state file is damaged or missing is removed too (killing by its cgroup), and a
    /// container that does not exist is not an error. What a create killed before its state
    /// directory appeared left under the id is swept.
    pub fn remove(&self, id: &str, force: bool) -> crate::Result<()> {
        let container = match self.load(id) {
            Ok(c) => c,
            Err(crate::Error::Container(
                ContainerError::NotExist { .. } | ContainerError::CorruptState { .. },
            )) if force => match self.salvage(id) {
                Ok(c) => c,
                Err(crate::Error::Container(ContainerError::NotExist { .. })) => {
                    create::sweep_stale(&self.root, id);
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        match container.delete(force) {
            Ok(()) => {}
            Err(crate::Error::Container(ContainerError::NotExist { .. })) if force => {}
            Err(e) => return Err(e),
        }
        // A create of the same id killed earlier may have left its temporary directory.
        create::sweep_stale(&self.root, id);
        Ok(())
    }

    /// Every container under the root, sorted by id. One whose state file cannot be read is
    /// listed too, with an unknown status: hiding it would hide processes and a cgroup.
    pub fn list(&self) -> crate::Result<Vec<Container>> {
        let names = entry_names(&self.root).map_err(|source| ContainerError::StateDir {
            path: self.root.clone(),
            source,
        })?;
        Ok(names
            .iter()
            .filter(|n| n.as_str() != state::PODS_DIR && validate_id(n).is_ok())
            .filter_map(|n| match self.load(n) {
                Ok(c) => Some(c),
                Err(_) => self.salvage(n).ok(),
            })
            .collect())
    }
}

/// The names in a state directory, sorted; none when it does not exist yet.
pub(crate) fn entry_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

impl Container {
    /// A container from its state directory's damaged (or missing) state file.
    fn salvaged(dir: PathBuf, id: &str) -> Container {
        let found = std::fs::read(dir.join(state::STATE_FILE))
            .map(|t| state::salvage(&t))
            .unwrap_or_default();
        let cgroup_path = claim::cgroup_of(&dir, id)
            .unwrap_or_else(|| PathBuf::from(cgroups::DEFAULT_PARENT).join(id));
        // A pid without its start time could be anyone's by now: only the pair is trusted.
        let (pid, pid_start_time) = match (found.pid, found.pid_start_time) {
            (Some(p), Some(t)) => (p, t),
            _ => (0, 0),
        };
        Container {
            state: StoredState {
                oci_version: String::new(),
                id: id.to_string(),
                pid,
                pid_start_time,
                bundle: PathBuf::new(),
                rootfs: PathBuf::new(),
                created: String::new(),
                annotations: Default::default(),
                cgroup_path,
                hooks: None,
                shared_pid_ns: false,
                process: None,
                seccomp: None,
                no_cgroup: false,
                pod: None,
            },
            dir,
            damaged: true,
        }
    }

    /// Whether the state file was damaged or missing (see [`Runtime::salvage`]).
    pub fn is_damaged(&self) -> bool {
        self.damaged
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// The state as stored at create (not the live status: see [`Container::status`]).
    pub fn stored(&self) -> &StoredState {
        &self.state
    }

    /// The container's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Init's pid while it is the process we started (same start time, not a zombie).
    pub fn live_pid(&self) -> Option<Pid> {
        (state::live_start_time(self.state.pid) == Some(self.state.pid_start_time))
            .then(|| Pid::from_raw(self.state.pid))
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> crate::Result<cgroups::Manager> {
        if self.state.no_cgroup {
            return Ok(cgroups::Manager::None(self.state.cgroup_path.clone()));
        }
        Ok(cgroups::Manager::new(&self.state.cgroup_path)?)
    }

    /// The status, derived from the facts now.
    pub fn status(&self) -> Status {
        if self.damaged {
            return Status::Unknown;
        }
        let alive = self.live_pid().is_some();
        self.status_given(alive, || {
            self.cgroup().map(|c| c.is_frozen()).unwrap_or(false)
        })
    }

    /// The status once it is known whether init lives; `frozen` is asked only when it
    /// decides (a caller that holds the cgroup already answers from it).
    pub(crate) fn status_given(&self, alive: bool, frozen: impl FnOnce() -> bool) -> Status {
        if self.damaged {
            return Status::Unknown;
        }
        // Created: init waits on exec.fifo, so the fifo is there and init has not been
        // executed yet (a start killed after letting init go leaves the fifo behind).
        let fifo = alive
            && self.dir.join(state::EXEC_FIFO).exists()
            && state::not_executed(self.state.pid);
        derive_status(alive, fifo, alive && !fifo && frozen())
    }

    /// The state as `capsa state` shows it (pid 0 once stopped, as runc).
    pub fn oci_state(&self) -> OciState {
        self.oci_state_given(self.status())
    }

    pub(crate) fn oci_state_given(&self, status: Status) -> OciState {
        OciState {
            oci_version: self.state.oci_version.clone(),
            id: self.state.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.state.pid
            },
            status,
            bundle: self.state.bundle.clone(),
            rootfs: self.state.rootfs.clone(),
            created: self.state.created.clone(),
            annotations: self.state.annotations.clone(),
            owner: String::new(),
        }
    }

    fn hook_state(&self, status: Status) -> String {
        HookState {
            oci_version: &self.state.oci_version,
            id: &self.state.id,
            status,
            pid: self.state.pid,
            bundle: &self.state.bundle,
            annotations: &self.state.annotations,
        }
        .to_json()
    }
}
