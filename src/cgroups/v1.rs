//! cgroup v1: one directory per mounted hierarchy.

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
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self, h: &Hierarchy) -> PathBuf {
        h.mountpoint
            .join(self.path.strip_prefix("/").unwrap_or(&self.path))
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
                // A new cpuset cgroup starts with no cpus and no mems and refuses tasks until
                // they are copied from its parent.
                if fs::mkdir(&dir)? && h.has("cpuset") {
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let value = fs::read(&parent.join(file))?;
                        fs::write(&dir.join(file), value.trim())?;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn add(&self, pid: Pid) -> Result<(), CgroupError> {
        self.dirs().try_for_each(|d| fs::add_pid(&d, pid))
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

    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        match self.controller_dir("freezer") {
            Some(d) => fs::write(
                &d.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
            None => Ok(()),
        }
    }

    pub fn remove(&self) -> Result<(), CgroupError> {
        self.dirs().try_for_each(|d| fs::rmdir(&d))
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
