//! /proc/self/mountinfo: which mount a path lives on, and its propagation.

use std::path::{Path, PathBuf};

/// A mount of /proc/self/mountinfo: where it is and its optional fields ("shared:N",
/// "master:N", ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Its optional fields.
    pub optional: Vec<String>,
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount `path` lives on: the deepest mount point above it, the last one listed when
/// mounts are stacked (the one on top).
pub fn mount_containing(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    let mut best: Option<MountEntry> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 {
            continue;
        }
        let mountpoint = PathBuf::from(unescape(fields[4]));
        if !path.starts_with(&mountpoint) {
            continue;
        }
        let deeper = best
            .as_ref()
            .is_none_or(|b| mountpoint.components().count() >= b.mountpoint.components().count());
        if deeper {
            best = Some(MountEntry {
                mountpoint,
                optional: fields[6..sep].iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    best
}

/// Mount points of whole procfs and sysfs mounts (their root is the filesystem's root)
/// outside `keep`, deepest first: what a container left in the old root by `--no-pivot`
/// could reach, and what lets the kernel allow a fresh procfs or sysfs mount in a user
/// namespace (runc's msMoveRoot removes the same ones).
pub fn full_pseudo_mounts(mountinfo: &str, keep: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            let (root, mountpoint) = (fields.get(3)?, PathBuf::from(unescape(fields.get(4)?)));
            let pseudo = *fstype == "proc" || *fstype == "sysfs";
            (pseudo && *root == "/" && !mountpoint.starts_with(keep)).then_some(mountpoint)
        })
        .collect();
    // Mounts stacked on one point are listed once each: each unmount takes the upper one.
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// The mount `path` lives on in this process's mount namespace.
pub fn mount_of(path: &Path) -> std::io::Result<Option<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_containing(&text, path))
}

impl MountEntry {
    /// Whether the mount is a member of a peer group (its events propagate to peers).
    pub fn is_shared(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("shared:"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_mount_on_top_and_escapes() {
        let text = "22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n\
                    30 22 0:5 / /a\\040b rw - tmpfs t rw\n\
                    31 30 0:6 / /a\\040b rw master:2 - tmpfs u rw\n";
        let m = mount_containing(text, Path::new("/a b/c")).unwrap();
        assert_eq!(m.mountpoint, Path::new("/a b"));
        assert_eq!(m.optional, ["master:2"]);
        assert!(!m.is_shared());
        let root = mount_containing(text, Path::new("/x")).unwrap();
        assert!(root.is_shared());
    }

    #[test]
    fn whole_procfs_and_sysfs_outside_the_rootfs_deepest_first() {
        let text = "22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n\
                    23 22 0:5 / /proc rw - proc proc rw\n\
                    24 22 0:6 / /sys rw - sysfs sysfs rw\n\
                    25 23 0:5 /sys /proc/sys ro - proc proc rw\n\
                    26 22 0:7 / /srv/x/proc rw - proc proc rw\n\
                    27 22 0:8 / /b/c/proc rw - proc proc rw\n\
                    28 22 0:9 / /tmp rw - tmpfs t rw\n";
        assert_eq!(
            full_pseudo_mounts(text, Path::new("/srv/x")),
            [
                PathBuf::from("/b/c/proc"),
                PathBuf::from("/proc"),
                PathBuf::from("/sys")
            ]
        );
    }
}
