//! cgroup v1: one directory per mounted hierarchy.

use super::resources::Write;
use super::{fs, CgroupError};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};

const MEMORY_LIMIT: &str = "memory.limit_in_bytes";
const MEMSW: &str = "memory.memsw.limit_in_bytes";
const CFS_PERIOD: &str = "cpu.cfs_period_us";
const CFS_QUOTA: &str = "cpu.cfs_quota_us";

/// Orders a memory limit and a memory+swap limit written together so that memory never
/// exceeds memory+swap on the way (the kernel refuses that with EINVAL): memory+swap first
/// when it is lifted (-1) or grows past the current memory limit, memory first otherwise;
/// runc's rule. `current_limit` reads the cgroup's memory limit (only when both are set).
pub fn memory_order(writes: &mut [&Write], current_limit: impl FnOnce() -> Option<u64>) {
    let find = |f: &str, ws: &[&Write]| ws.iter().position(|w| w.file == f);
    let (Some(mem), Some(swap)) = (find(MEMORY_LIMIT, writes), find(MEMSW, writes)) else {
        return;
    };
    let swap_value = writes[swap].value.parse::<i64>().ok();
    let swap_first = match swap_value {
        Some(-1) => true,
        Some(s) => current_limit().is_some_and(|cur| (s as u64) > cur),
        None => false,
    };
    if swap_first != (swap < mem) {
        writes.swap(mem, swap);
    }
}

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

/// Where the cgroup2 hierarchy of a hybrid host is mounted (/sys/fs/cgroup/unified), if it is.
pub fn parse_unified(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mountpoint = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2"
            && mountpoint.starts_with(super::CGROUP_ROOT))
        .then(|| PathBuf::from(mountpoint))
    })
}

#[derive(Debug, Clone)]
pub struct Manager {
    path: PathBuf,
    hierarchies: Vec<Hierarchy>,
    /// The cgroup2 mount of a hybrid host. It has no controllers, but the container has a
    /// cgroup there too, as runc gives it one: what runs inside (systemd) looks for it.
    unified: Option<PathBuf>,
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
            unified: parse_unified(&info),
            subs: Vec::new(),
        })
    }

    /// The cgroup's directory in the unified hierarchy of a hybrid host.
    pub fn unified_dir(&self) -> Option<PathBuf> {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        self.unified.as_ref().map(|u| u.join(rel))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The manager of cgroup `path` on the same hierarchies.
    pub fn at(&self, path: &Path) -> Self {
        Manager {
            path: path.to_path_buf(),
            hierarchies: self.hierarchies.clone(),
            unified: self.unified.clone(),
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

    /// The cgroup's directory in every v1 hierarchy.
    fn dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.hierarchies.iter().map(|h| self.dir(h))
    }

    /// Those and its directory in the unified hierarchy.
    fn all_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.dirs().chain(self.unified_dir())
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
        if let Some(unified) = &self.unified {
            let mut dir = unified.clone();
            for comp in self.path.components().skip(1) {
                dir.push(comp);
                fs::mkdir(&dir)?;
            }
        }
        Ok(())
    }

    pub fn add(&self, pid: Pid) -> Result<(), CgroupError> {
        self.all_dirs().try_for_each(|d| fs::add_pid(&d, pid))
    }

    /// The cgroup's unified directory, open for CLONE_INTO_CGROUP.
    pub fn unified_handle(&self) -> Result<Option<std::fs::File>, CgroupError> {
        self.unified_dir()
            .map(|d| {
                std::fs::File::open(&d).map_err(|source| CgroupError::Read { path: d, source })
            })
            .transpose()
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
        for d in self.all_dirs() {
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

    /// Freezing is asynchronous: the state reads FREEZING until every task has stopped, which
    /// a task held back by its CPU quota, or one forking meanwhile, can delay. As runc does,
    /// write FROZEN again until the state says so, and now and then thaw for a moment (10 ms)
    /// so that tasks caught half-way through a fork can finish it; give up (thawed) after
    /// [`fs::FREEZE_TIMEOUT`].
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let Some(d) = self.controller_dir("freezer") else {
            return Err(CgroupError::ControllerMissing {
                controller: "freezer".into(),
                file: "freezer.state".into(),
            });
        };
        let file = d.join("freezer.state");
        if !frozen {
            // Cgroups made below this one may be frozen on their own; a frozen process does
            // not act even on SIGKILL.
            return fs::subtree(&d)
                .iter()
                .try_for_each(|sub| fs::write(&sub.join("freezer.state"), "THAWED"));
        }
        let mut state = String::new();
        let froze = fs::retry_until(fs::FREEZE_TIMEOUT, |n| {
            if n % 50 == 0 {
                fs::write(&file, "THAWED")?;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            fs::write(&file, "FROZEN")?;
            state = fs::read(&file)?.trim().to_string();
            Ok(state == "FROZEN")
        })?;
        if froze {
            return Ok(());
        }
        let _ = fs::write(&file, "THAWED");
        Err(CgroupError::NotFrozen {
            state,
            timeout: fs::FREEZE_TIMEOUT,
        })
    }

    /// Applies writes to the hierarchy of each write's controller, in an order the kernel
    /// accepts given the values the cgroup has now (see [`memory_order`]). A period the
    /// kernel refuses (EINVAL: the current quota over the new period exceeds a parent's
    /// quota) is written again after the quota, as runc does.
    pub fn apply(&self, writes: &[Write]) -> Result<(), CgroupError> {
        let mut writes: Vec<&Write> = writes.iter().collect();
        let memsw = self.controller_dir("memory").map(|d| d.join(MEMSW));
        let swap_accounting = memsw.as_ref().is_some_and(|p| p.exists());
        let lift_swap = Write {
            controller: "memory",
            file: MEMSW.into(),
            value: "-1".into(),
            fallback: None,
        };
        if swap_accounting
            && writes
                .iter()
                .any(|w| w.file == MEMORY_LIMIT && w.value == "-1")
            && !writes.iter().any(|w| w.file == MEMSW)
        {
            // No memory limit and a swap limit left over would refuse it: lift both.
            writes.push(&lift_swap);
        }
        let current_limit = || {
            self.controller_dir("memory")
                .and_then(|d| fs::read(&d.join(MEMORY_LIMIT)).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        memory_order(&mut writes, current_limit);
        let mut period_later: Option<(std::path::PathBuf, &str)> = None;
        for (i, wr) in writes.iter().enumerate() {
            let dir = self.controller_dir(wr.controller).ok_or_else(|| {
                CgroupError::ControllerMissing {
                    controller: wr.controller.to_string(),
                    file: wr.file.clone(),
                }
            })?;
            let wr = wr.resolve(|f| dir.join(f).exists());
            let path = dir.join(&wr.file);
            match fs::write(&path, &wr.value) {
                Err(CgroupError::Write { source, .. })
                    if wr.file == CFS_PERIOD
                        && source.raw_os_error() == Some(libc::EINVAL)
                        && writes[i + 1..].iter().any(|n| n.file == CFS_QUOTA) =>
                {
                    period_later = Some((path, &wr.value));
                }
                other => other?,
            }
            if wr.file == CFS_QUOTA {
                if let Some((path, value)) = period_later.take() {
                    fs::write(&path, value)?;
                }
            }
        }
        Ok(())
    }

    /// Removes the cgroup, and the cgroups made below it, from every hierarchy.
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.all_dirs().try_for_each(|d| fs::rmdir_tree(&d))
    }

    /// The cgroup's directory in every hierarchy, the unified one included.
    pub fn hierarchy_dirs(&self) -> Vec<PathBuf> {
        self.all_dirs().collect()
    }

    pub fn exists(&self) -> bool {
        self.all_dirs().any(|d| d.exists())
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

    fn order(values: (&str, &str), current: u64) -> Vec<String> {
        let (mem, swap) = (
            Write {
                controller: "memory",
                file: MEMORY_LIMIT.into(),
                value: values.0.into(),
                fallback: None,
            },
            Write {
                controller: "memory",
                file: MEMSW.into(),
                value: values.1.into(),
                fallback: None,
            },
        );
        let mut writes = vec![&mem, &swap];
        memory_order(&mut writes, || Some(current));
        writes.iter().map(|w| w.file.clone()).collect()
    }

    #[test]
    fn memory_and_swap_are_written_in_the_order_their_new_values_need() {
        let m = 64 << 20;
        // Lifting, or growing past the current memory limit: memory+swap first.
        assert_eq!(order(("-1", "-1"), m), [MEMSW, MEMORY_LIMIT]);
        assert_eq!(order(("200000000", "400000000"), m), [MEMSW, MEMORY_LIMIT]);
        // Shrinking: memory first.
        assert_eq!(order(("33554432", "50331648"), m), [MEMORY_LIMIT, MEMSW]);
    }

    #[test]
    fn finds_v1_hierarchies_and_the_unified_mount() {
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
        assert_eq!(
            parse_unified(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            parse_unified(&text.replace("cgroup2 cgroup2", "tmpfs tmpfs")),
            None
        );
    }
}
