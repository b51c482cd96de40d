//! Reading and writing cgroup files, each error naming the file and the value.

use super::CgroupError;
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long freezing a cgroup may take before it is given up (thawed) and reported.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls `attempt` (with its number, from 1) until it returns true or `timeout` has passed
/// (then false), sleeping a little longer after each try, up to a millisecond: a freeze
/// waits on tasks being scheduled, which a CPU quota can hold back for most of its period.
pub fn retry_until(
    timeout: Duration,
    mut attempt: impl FnMut(u32) -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let start = Instant::now();
    for n in 1.. {
        if attempt(n)? {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(Duration::from_micros(100 * u64::from(n.min(10))));
    }
    Ok(false)
}

pub fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

pub fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a pid to cgroup.procs. The kernel can refuse with EINVAL while the task is still
/// being set up by clone; a few retries are what runc and crun do.
pub fn add_pid(dir: &Path, pid: Pid) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.procs");
    let value = pid.to_string();
    let mut attempts = 0;
    loop {
        match std::fs::write(&path, &value) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && attempts < 5 => attempts += 1,
            Err(source) => {
                return Err(CgroupError::Write {
                    path,
                    value,
                    source,
                })
            }
        }
    }
}

/// The processes in `dir`'s cgroup.procs alone (none when the cgroup is gone).
fn read_own_pids(dir: &Path) -> Result<Vec<Pid>, CgroupError> {
    match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(s) => Ok(s
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .map(Pid::from_raw)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Read {
            path: dir.join("cgroup.procs"),
            source,
        }),
    }
}

/// The processes in the cgroup `dir` and in every cgroup below it (a container may make
/// its own, as systemd or a nested runtime does); runc counts them all as the container's.
pub fn read_pids(dir: &Path) -> Result<Vec<Pid>, CgroupError> {
    let mut all = Vec::new();
    for d in subtree(dir) {
        all.extend(read_own_pids(&d)?);
    }
    Ok(all)
}

/// `dir` and the cgroups below it, children before their parent (the order rmdir needs).
/// A cgroup that disappears during the walk is left out.
pub fn subtree(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree(&e.path()));
            }
        }
        out.push(dir.to_path_buf());
    }
    out
}

/// Removes the cgroup `dir` and every cgroup below it, deepest first; each must be empty.
pub fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    subtree(dir).iter().try_for_each(|d| rmdir(d))
}

pub fn rmdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CgroupError::Remove {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

pub fn mkdir(dir: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Create {
            path: dir.to_path_buf(),
            source,
        }),
    }
}
