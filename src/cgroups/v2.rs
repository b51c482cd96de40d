//! cgroup v2: one directory in the unified hierarchy.

use super::resources::Write;
use super::{fs, CgroupError, CGROUP_ROOT};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Manager {
    path: PathBuf,
    dir: PathBuf,
}

impl Manager {
    pub fn new(path: &Path) -> Self {
        Manager {
            path: path.to_path_buf(),
            dir: Path::new(CGROUP_ROOT).join(path.strip_prefix("/").unwrap_or(path)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the cgroup, enabling every available controller for the children of each
    /// ancestor on the way (a v2 controller is usable only if the parent delegates it).
    pub fn create(&self) -> Result<(), CgroupError> {
        let mut dir = PathBuf::from(CGROUP_ROOT);
        for comp in self.path.components().skip(1) {
            let available = fs::read(&dir.join("cgroup.controllers"))?;
            let enable: Vec<String> = available
                .split_whitespace()
                .map(|c| format!("+{c}"))
                .collect();
            if !enable.is_empty() {
                fs::write(&dir.join("cgroup.subtree_control"), &enable.join(" "))?;
            }
            dir.push(comp);
            fs::mkdir(&dir)?;
        }
        Ok(())
    }

    /// The cgroup's cpu.max now (empty when it cannot be read).
    pub fn cpu_max_now(&self) -> String {
        std::fs::read_to_string(self.dir.join("cpu.max")).unwrap_or_default()
    }

    pub fn apply(&self, writes: &[Write]) -> Result<(), CgroupError> {
        for wr in writes {
            let wr = wr.resolve(|f| self.dir.join(f).exists());
            let path = self.dir.join(&wr.file);
            // v1 refuses a limit below current usage (EBUSY); v2 accepts it and OOM-kills the
            // container. Refuse it the same way on both.
            if wr.file == "memory.max" {
                if let Ok(limit) = wr.value.parse::<u64>() {
                    let usage: u64 = fs::read(&self.dir.join("memory.current"))
                        .map(|s| s.trim().parse().unwrap_or(0))
                        .unwrap_or(0);
                    if limit < usage {
                        return Err(CgroupError::BelowUsage {
                            path,
                            value: wr.value.clone(),
                            usage,
                        });
                    }
                }
            }
            if !path.exists() {
                return Err(CgroupError::ControllerMissing {
                    controller: wr.controller.to_string(),
                    file: wr.file.clone(),
                });
            }
            fs::write(&path, &wr.value)?;
        }
        Ok(())
    }

    pub fn add(&self, pid: Pid) -> Result<(), CgroupError> {
        fs::add_pid(&self.dir, pid)
    }

    pub fn procs(&self) -> Result<Vec<Pid>, CgroupError> {
        fs::read_pids(&self.dir)
    }

    pub fn is_frozen(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
    }

    /// Writes cgroup.freeze and, when freezing, waits (at most [`fs::FREEZE_TIMEOUT`]) for
    /// cgroup.events to say "frozen 1"; one that does not is thawed and reported.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let freeze = self.dir.join("cgroup.freeze");
        fs::write(&freeze, if frozen { "1" } else { "0" })?;
        if !frozen {
            return Ok(());
        }
        let events = self.dir.join("cgroup.events");
        let froze = fs::retry_until(fs::FREEZE_TIMEOUT, |_| {
            Ok(super::stats::keyed(&events, "frozen") == 1)
        })?;
        if froze {
            return Ok(());
        }
        let state = fs::read(&events)?.replace('\n', " ");
        let _ = fs::write(&freeze, "0");
        Err(CgroupError::NotFrozen {
            state,
            timeout: fs::FREEZE_TIMEOUT,
        })
    }

    /// Removes the cgroup and those made below it. cgroup.kill (5.14+) takes every process
    /// of the subtree down at once before the rmdirs.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() && !fs::read_pids(&self.dir)?.is_empty() {
            fs::write(&kill, "1")?;
        }
        fs::rmdir_tree(&self.dir)
    }

    pub fn exists(&self) -> bool {
        self.dir.exists()
    }
}
