//! Reading and writing cgroup files, each error naming the file and the value.

use super::CgroupError;
use nix::unistd::Pid;
use std::path::Path;

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

pub fn read_pids(dir: &Path) -> Result<Vec<Pid>, CgroupError> {
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
