//! An exclusive flock on a container's state directory: commands that change a container
//! (start, kill, delete, and create while it is being made) serialise on it.

use super::ContainerError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::Path;

pub struct DirLock {
    _lock: Flock<File>,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<Self, ContainerError> {
        let err = |source: std::io::Error| ContainerError::Lock {
            path: dir.to_path_buf(),
            source,
        };
        let mut file = File::open(dir).map_err(err)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(DirLock { _lock: lock }),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(err(e.into())),
            }
        }
    }
}
