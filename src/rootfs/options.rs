//! Mount options -> mount(2) flags, propagation and filesystem data. Pure, unit-tested.

use nix::mount::MsFlags;

/// A mount entry's options, split the way mount(2) wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set.
    pub flags: MsFlags,
    /// Propagation changes, applied one by one after the mount.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options ("mode=755", "newinstance"), passed as data.
    pub data: Vec<String>,
    /// podman's `tmpcopyup`: copy the directory's previous content into the new tmpfs.
    pub tmpcopyup: bool,
    /// The recursive options (`rro`, `rnosuid`, ...): mount_setattr(2) attributes set and
    /// cleared on the mount and everything below it.
    pub recursive: RecursiveAttr,
    /// `idmap` / `ridmap`: the mount is id-mapped with its uidMappings/gidMappings.
    pub idmap: Option<Idmap>,
}

/// mount_setattr(2) attributes for a whole mount tree (AT_RECURSIVE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecursiveAttr {
    pub set: u64,
    pub clear: u64,
}

impl RecursiveAttr {
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clear == 0
    }
}

/// Which mounts of a bind an id mapping applies to: `idmap` maps the mount itself (and, as
/// runc 1.2 does, the whole tree of an rbind), `ridmap` always the whole tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idmap {
    Idmap,
    Recursive,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            tmpcopyup: false,
            recursive: RecursiveAttr::default(),
            idmap: None,
        }
    }
}

impl MountOptions {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Flags that need a remount to take effect on a bind mount (the kernel ignores them on
    /// the initial MS_BIND call).
    pub fn bind_remount_flags(&self) -> MsFlags {
        self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }

    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

enum Opt {
    Set(MsFlags),
    Clear(MsFlags),
    Propagation(MsFlags),
    TmpCopyUp,
    /// A recursive attribute: set (true) or cleared (false).
    Recursive(u64, bool),
    Idmap(Idmap),
}

// The mount_setattr(2) attributes (linux/mount.h).
const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;
/// The access-time field: one of RELATIME (0), NOATIME, STRICTATIME.
pub const ATTR_ATIME_MASK: u64 = 0x70;
const ATTR_RELATIME: u64 = 0x0;
const ATTR_NOATIME: u64 = 0x10;
const ATTR_STRICTATIME: u64 = 0x20;
const ATTR_NODIRATIME: u64 = 0x80;
pub const ATTR_IDMAP: u64 = 0x100000;
const ATTR_NOSYMFOLLOW: u64 = 0x200000;

fn lookup(option: &str) -> Option<Opt> {
    use MsFlags as F;
    use Opt::*;
    Some(match option {
        "defaults" => Clear(F::empty()),
        "ro" => Set(F::MS_RDONLY),
        "rw" => Clear(F::MS_RDONLY),
        "suid" => Clear(F::MS_NOSUID),
        "nosuid" => Set(F::MS_NOSUID),
        "dev" => Clear(F::MS_NODEV),
        "nodev" => Set(F::MS_NODEV),
        "exec" => Clear(F::MS_NOEXEC),
        "noexec" => Set(F::MS_NOEXEC),
        "sync" => Set(F::MS_SYNCHRONOUS),
        "async" => Clear(F::MS_SYNCHRONOUS),
        "dirsync" => Set(F::MS_DIRSYNC),
        "remount" => Set(F::MS_REMOUNT),
        "mand" => Set(F::MS_MANDLOCK),
        "nomand" => Clear(F::MS_MANDLOCK),
        "atime" => Clear(F::MS_NOATIME),
        "noatime" => Set(F::MS_NOATIME),
        "diratime" => Clear(F::MS_NODIRATIME),
        "nodiratime" => Set(F::MS_NODIRATIME),
        "relatime" => Set(F::MS_RELATIME),
        "norelatime" => Clear(F::MS_RELATIME),
        "strictatime" => Set(F::MS_STRICTATIME),
        "nostrictatime" => Clear(F::MS_STRICTATIME),
        "lazytime" => Set(F::MS_LAZYTIME),
        "nolazytime" => Clear(F::MS_LAZYTIME),
        "iversion" => Set(F::MS_I_VERSION),
        "noiversion" => Clear(F::MS_I_VERSION),
        "silent" => Set(F::MS_SILENT),
        "loud" => Clear(F::MS_SILENT),
        "bind" => Set(F::MS_BIND),
        "rbind" => Set(F::MS_BIND | F::MS_REC),
        "private" => Propagation(F::MS_PRIVATE),
        "rprivate" => Propagation(F::MS_PRIVATE | F::MS_REC),
        "shared" => Propagation(F::MS_SHARED),
        "rshared" => Propagation(F::MS_SHARED | F::MS_REC),
        "slave" => Propagation(F::MS_SLAVE),
        "rslave" => Propagation(F::MS_SLAVE | F::MS_REC),
        "unbindable" => Propagation(F::MS_UNBINDABLE),
        "runbindable" => Propagation(F::MS_UNBINDABLE | F::MS_REC),
        "tmpcopyup" => TmpCopyUp,
        "rro" => Recursive(ATTR_RDONLY, true),
        "rrw" => Recursive(ATTR_RDONLY, false),
        "rnosuid" => Recursive(ATTR_NOSUID, true),
        "rsuid" => Recursive(ATTR_NOSUID, false),
        "rnodev" => Recursive(ATTR_NODEV, true),
        "rdev" => Recursive(ATTR_NODEV, false),
        "rnoexec" => Recursive(ATTR_NOEXEC, true),
        "rexec" => Recursive(ATTR_NOEXEC, false),
        "rnodiratime" => Recursive(ATTR_NODIRATIME, true),
        "rdiratime" => Recursive(ATTR_NODIRATIME, false),
        "rrelatime" => Recursive(ATTR_RELATIME, true),
        "rnorelatime" => Recursive(ATTR_RELATIME, false),
        "rnoatime" => Recursive(ATTR_NOATIME, true),
        "ratime" => Recursive(ATTR_NOATIME, false),
        "rstrictatime" => Recursive(ATTR_STRICTATIME, true),
        "rnostrictatime" => Recursive(ATTR_STRICTATIME, false),
        "rnosymfollow" => Recursive(ATTR_NOSYMFOLLOW, true),
        "rsymfollow" => Recursive(ATTR_NOSYMFOLLOW, false),
        "idmap" => Idmap(self::Idmap::Idmap),
        "ridmap" => Idmap(self::Idmap::Recursive),
        _ => return None,
    })
}

/// Every flag-like option capsa understands, for `capsa features`.
pub fn known_options() -> Vec<&'static str> {
    [
        "defaults",
        "ro",
        "rw",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "exec",
        "noexec",
        "sync",
        "async",
        "dirsync",
        "remount",
        "mand",
        "nomand",
        "atime",
        "noatime",
        "diratime",
        "nodiratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "lazytime",
        "nolazytime",
        "iversion",
        "noiversion",
        "silent",
        "loud",
        "bind",
        "rbind",
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
        "tmpcopyup",
        "rro",
        "rrw",
        "rnosuid",
        "rsuid",
        "rnodev",
        "rdev",
        "rnoexec",
        "rexec",
        "rnodiratime",
        "rdiratime",
        "rrelatime",
        "rnorelatime",
        "rnoatime",
        "ratime",
        "rstrictatime",
        "rnostrictatime",
        "rnosymfollow",
        "rsymfollow",
        "idmap",
        "ridmap",
    ]
    .to_vec()
}

/// Parses a mount's options. A bind mount has no filesystem to read data options: they are
/// dropped, as runc drops them (a `mode=755` copied from a tmpfs entry changes nothing).
pub fn parse(options: &[String], fstype: Option<&str>) -> Result<MountOptions, String> {
    let mut out = MountOptions::default();
    for option in options {
        match lookup(option) {
            Some(Opt::Set(f)) => out.flags |= f,
            Some(Opt::Clear(f)) => out.flags &= !f,
            Some(Opt::Propagation(f)) => out.propagation.push(f),
            Some(Opt::TmpCopyUp) => out.tmpcopyup = true,
            Some(Opt::Recursive(attr, set)) => {
                let r = &mut out.recursive;
                if set {
                    r.set |= attr;
                    r.clear &= !attr;
                    // mount_setattr(2): an access-time value in attr_set needs the whole
                    // field in attr_clr.
                    if attr & ATTR_ATIME_MASK == attr {
                        r.set &= !ATTR_ATIME_MASK | attr;
                        r.clear |= ATTR_ATIME_MASK;
                    }
                } else {
                    r.set &= !attr;
                    // Clearing one access time leaves the field to the default (relatime),
                    // and the kernel takes the field only as a whole.
                    r.clear |= if attr != 0 && attr & ATTR_ATIME_MASK == attr {
                        ATTR_ATIME_MASK
                    } else {
                        attr
                    };
                }
            }
            Some(Opt::Idmap(i)) => out.idmap = Some(i),
            None => out.data.push(option.clone()),
        }
    }
    if fstype == Some("bind") {
        out.flags |= MsFlags::MS_BIND;
    }
    if out.idmap.is_some() && !out.is_bind() {
        return Err(format!(
            "idmap applies to bind mounts, not {}",
            fstype.unwrap_or("(none)")
        ));
    }
    if out.is_bind() {
        if !out.data.is_empty() {
            log::debug!("data options {:?} dropped for a bind mount", out.data);
            out.data.clear();
        }
        if out.tmpcopyup {
            return Err("tmpcopyup applies to tmpfs mounts, not bind mounts".into());
        }
    } else if out.tmpcopyup && fstype != Some("tmpfs") {
        return Err(format!(
            "tmpcopyup applies to tmpfs mounts, not {}",
            fstype.unwrap_or("(none)")
        ));
    }
    Ok(out)
}

/// Parses `linux.rootfsPropagation`.
pub fn parse_propagation(value: &str) -> Option<MsFlags> {
    match lookup(value) {
        Some(Opt::Propagation(f)) => Some(f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_flags_data_and_propagation() {
        let o = parse(
            &opts(&["nosuid", "noexec", "mode=755", "size=65536k", "rslave"]),
            Some("tmpfs"),
        )
        .unwrap();
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(o.data_string().as_deref(), Some("mode=755,size=65536k"));
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
    }

    #[test]
    fn later_options_override_earlier() {
        let o = parse(&opts(&["ro", "rw", "nodev", "dev"]), Some("tmpfs")).unwrap();
        assert!(o.flags.is_empty());
    }

    #[test]
    fn bind_mounts_need_remount_for_ro() {
        let o = parse(&opts(&["rbind", "ro", "nosuid"]), None).unwrap();
        assert!(o.is_bind());
        assert_eq!(
            o.bind_remount_flags(),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        );
        assert!(parse(&[], Some("bind")).unwrap().is_bind());
    }

    #[test]
    fn data_options_of_a_bind_are_dropped() {
        let o = parse(&opts(&["rbind", "mode=755", "size=1m", "ro"]), None).unwrap();
        assert!(o.data.is_empty());
        assert_eq!(o.bind_remount_flags(), MsFlags::MS_RDONLY);
    }

    #[test]
    fn recursive_options_set_and_clear_mount_attributes() {
        let o = parse(&opts(&["rbind", "rro", "rnosuid", "rexec"]), None).unwrap();
        assert_eq!(o.recursive.set, ATTR_RDONLY | ATTR_NOSUID);
        assert_eq!(o.recursive.clear, ATTR_NOEXEC);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        let o = parse(&opts(&["rro", "rrw"]), Some("tmpfs")).unwrap();
        assert_eq!(
            o.recursive,
            RecursiveAttr {
                set: 0,
                clear: ATTR_RDONLY
            }
        );
        // An access time is a value of a field: the whole field is cleared to set it.
        let o = parse(&opts(&["rnoatime", "rstrictatime"]), Some("tmpfs")).unwrap();
        assert_eq!(o.recursive.set, ATTR_STRICTATIME);
        assert_eq!(o.recursive.clear, ATTR_ATIME_MASK);
        let o = parse(&opts(&["rrelatime"]), Some("tmpfs")).unwrap();
        assert_eq!(
            o.recursive,
            RecursiveAttr {
                set: 0,
                clear: ATTR_ATIME_MASK
            }
        );
        assert!(!o.recursive.is_empty());
        let o = parse(&opts(&["ratime"]), Some("tmpfs")).unwrap();
        assert_eq!(
            o.recursive,
            RecursiveAttr {
                set: 0,
                clear: ATTR_ATIME_MASK
            }
        );
    }

    #[test]
    fn idmap_is_for_binds() {
        assert_eq!(
            parse(&opts(&["idmap"]), Some("bind")).unwrap().idmap,
            Some(Idmap::Idmap)
        );
        assert_eq!(
            parse(&opts(&["rbind", "ridmap"]), None).unwrap().idmap,
            Some(Idmap::Recursive)
        );
        assert!(parse(&opts(&["idmap"]), Some("tmpfs")).is_err());
    }

    #[test]
    fn tmpcopyup_is_for_tmpfs() {
        assert!(parse(&opts(&["tmpcopyup"]), Some("proc")).is_err());
        assert!(
            parse(&opts(&["tmpcopyup"]), Some("tmpfs"))
                .unwrap()
                .tmpcopyup
        );
    }

    #[test]
    fn rootfs_propagation_values() {
        assert_eq!(
            parse_propagation("rprivate"),
            Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC)
        );
        assert_eq!(parse_propagation("ro"), None);
    }
}
