//! cgroup v1: one directory per mounted hierarchy.

use super::resources::Write;
use super::{fs, CgroupError};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};

/// A mounted v1 hierarchy: its controllers (or `name=...`) and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub controllers: Vec<String>,
    pub mountpoint: PathBuf,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

const NOT_CONTROLLERS: &[&str] = &[
    "rw",
    "ro",
    "relatime",
    "noatime",
    "nosuid",
    "nodev",
    "noexec",
    "clone_children",
    "xattr",
    "noprefix",
    "cpuset_v2_mode",
    "favordynmods",
];

/// The v1 hierarchies in a /proc/self/mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            if r.next()? != "cgroup" {
                return None;
            }
            let superopts = r.nth(1)?;
            let controllers = superopts
                .split(',')
                .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.starts_with("release_agent="))
                .map(str::to_string)
                .collect();
            Some(Hierarchy {
                controllers,
                mountpoint: PathBuf::from(mountpoint),
            })
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Manager {
    path: PathBuf,
    hierarchies: Vec<Hierarchy>,
    /// (mountpoint, sub-cgroup): hierarchies where the directory is a sub-cgroup of `path`
    /// (`exec --cgroup`).
    subs: Vec<(PathBuf, PathBuf)>,
}

impl Manager {
    pub fn new(path: &Path) -> Result<Self, CgroupError> {
        let info = fs::read(Path::new("/proc/self/mountinfo"))?;
        let hierarchies = parse_mountinfo(&info);
        if hierarchies.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        Ok(Manager {
            path: path.to_path_buf(),
            hierarchies,
            subs: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The manager of cgroup `path` on the same hierarchies.
    pub fn at(&self, path: &Path) -> Self {
        Manager {
            path: path.to_path_buf(),
            hierarchies: self.hierarchies.clone(),
            subs: Vec::new(),
        }
    }

    /// This cgroup with the sub-cgroups `sub` in place of its own directories: every
    /// hierarchy for `sub.all`, the one holding each controller named.
    pub fn below(&self, sub: &super::SubCgroups) -> Result<Self, CgroupError> {
        let mut subs: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut set = |mountpoint: &Path, path: &Path| {
            subs.retain(|(m, _)| m != mountpoint);
            subs.push((mountpoint.to_path_buf(), path.to_path_buf()));
        };
        if let Some(all) = &sub.all {
            self.hierarchies
                .iter()
                .for_each(|h| set(&h.mountpoint, all));
        }
        for (controller, path) in &sub.by_controller {
            let h = self
                .hierarchies
                .iter()
                .find(|h| h.has(controller))
                .ok_or_else(|| CgroupError::SubCgroup {
                    reason: format!("unknown controller {controller}"),
                })?;
            set(&h.mountpoint, path);
        }
        Ok(Manager {
            subs,
            ..self.clone()
        })
    }

    fn dir(&self, h: &Hierarchy) -> PathBuf {
        let dir = h
            .mountpoint
            .join(self.path.strip_prefix("/").unwrap_or(&self.path));
        match self.subs.iter().find(|(m, _)| *m == h.mountpoint) {
            Some((_, sub)) => dir.join(sub),
            None => dir,
        }
    }

    fn dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.hierarchies.iter().map(|h| self.dir(h))
    }

    /// The directory of the hierarchy that has `controller`.
    pub fn controller_dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies
            .iter()
            .find(|h| h.has(controller))
            .map(|h| self.dir(h))
    }

    pub fn create(&self) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            let mut dir = h.mountpoint.clone();
            for comp in self.path.components().skip(1) {
                let parent = dir.clone();
                dir.push(comp);
                let created = fs::mkdir(&dir)?;
                // A new cpuset cgroup starts with no cpus and no mems and refuses tasks until
                // they are copied from its parent. A parent another capsa has just made may
                // still be empty too: fill any empty level on the way, not only ours.
                if h.has("cpuset") {
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        if created || fs::read(&dir.join(file))?.trim().is_empty() {
                            let value = fs::read(&parent.join(file))?;
                            fs::write(&dir.join(file), value.trim())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn add(&self, pid: Pid) -> Result<(), CgroupError> {
        self.dirs().try_for_each(|d| fs::add_pid(&d, pid))
    }

    /// Every hierarchy's `tasks` file, open for writing (close-on-exec).
    pub fn task_files(&self) -> Result<Vec<(PathBuf, std::fs::File)>, CgroupError> {
        self.dirs()
            .map(|d| {
                let path = d.join("tasks");
                match std::fs::OpenOptions::new().write(true).open(&path) {
                    Ok(file) => Ok((path, file)),
                    Err(source) => Err(CgroupError::Write {
                        path,
                        value: "0".into(),
                        source,
                    }),
                }
            })
            .collect()
    }

    pub fn procs(&self) -> Result<Vec<Pid>, CgroupError> {
        let mut all = Vec::new();
        for d in self.dirs() {
            all.extend(fs::read_pids(&d)?);
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    pub fn is_frozen(&self) -> bool {
        self.controller_dir("freezer")
            .and_then(|d| std::fs::read_to_string(d.join("freezer.state")).ok())
            .is_some_and(|s| s.trim() != "THAWED")
    }

    /// Freezing is asynchronous: the state reads FREEZING until every task is stopped, and a
    /// task forking meanwhile can leave it there; write again until FROZEN (what runc does).
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let Some(d) = self.controller_dir("freezer") else {
            return Err(CgroupError::ControllerMissing {
                controller: "freezer".into(),
                file: "freezer.state".into(),
            });
        };
        let file = d.join("freezer.state");
        if !frozen {
            return fs::write(&file, "THAWED");
        }
        let mut state = String::new();
        for _ in 0..1000 {
            fs::write(&file, "FROZEN")?;
            state = fs::read(&file)?.trim().to_string();
            if state == "FROZEN" {
                return Ok(());
            }
            std::thread::yield_now();
        }
        let _ = fs::write(&file, "THAWED");
        Err(CgroupError::NotFrozen { state })
    }

    /// Applies writes to the hierarchy of each write's controller. A memory limit below the
    /// current memory+swap limit must be lowered in the other order; retry that way.
    pub fn apply(&self, writes: &[Write]) -> Result<(), CgroupError> {
        let mut i = 0;
        while i < writes.len() {
            let wr = &writes[i];
            let dir = self.controller_dir(wr.controller).ok_or_else(|| {
                CgroupError::ControllerMissing {
                    controller: wr.controller.to_string(),
                    file: wr.file.clone(),
                }
            })?;
            let result = fs::write(&dir.join(&wr.file), &wr.value);
            let swap_next = writes.get(i + 1).filter(|n| {
                wr.file == "memory.limit_in_bytes" && n.file == "memory.memsw.limit_in_bytes"
            });
            match (result, swap_next) {
                (Err(CgroupError::Write { source, .. }), Some(next))
                    if source.raw_os_error() == Some(libc::EINVAL) =>
                {
                    fs::write(&dir.join(&next.file), &next.value)?;
                    fs::write(&dir.join(&wr.file), &wr.value)?;
                    i += 2;
                    continue;
                }
                (r, _) => r?,
            }
            i += 1;
        }
        Ok(())
    }

    pub fn remove(&self) -> Result<(), CgroupError> {
        self.dirs().try_for_each(|d| fs::rmdir(&d))
    }

    /// The cgroup's directory in every hierarchy.
    pub fn hierarchy_dirs(&self) -> Vec<PathBuf> {
        self.dirs().collect()
    }

    pub fn exists(&self) -> bool {
        self.dirs().any(|d| d.exists())
    }

    /// (name under /sys/fs/cgroup, host directory) per hierarchy, for `cgroup` mounts.
    pub fn mount_dirs(&self) -> Vec<(String, PathBuf)> {
        self.hierarchies
            .iter()
            .map(|h| {
                let name = h
                    .mountpoint
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| h.controllers.join(","));
                (name, self.dir(h))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_hierarchies_and_ignores_cgroup2() {
        let text = "\
36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:8 - cgroup cgroup rw,cpu
37 25 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory,clone_children
38 25 0:33 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
39 25 0:34 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
40 25 0:35 / /proc rw - proc proc rw";
        let h = parse_mountinfo(text);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].controllers, vec!["cpu"]);
        assert_eq!(h[1].controllers, vec!["memory"]);
        assert_eq!(h[2].controllers, vec!["name=systemd"]);
        assert_eq!(h[2].mountpoint, PathBuf::from("/sys/fs/cgroup/systemd"));
    }
}
